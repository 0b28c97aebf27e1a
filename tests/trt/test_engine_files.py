"""Engine files and the one deserialize, without TensorRT: names, sidecars, compatibility, rebuild hints.

`deserialize` is driven here by a fake ``tensorrt`` module that only records the calls it gets: it
checks OUR order of calls (plugins before the plan) and OUR messages, not TensorRT. That the real
bindings accept these calls is the API-conformance check's job (test_api_conformance.py).
"""

from __future__ import annotations

import json
import sys
import types

import pytest
from helpers import run_python

from efficientvis_trt.errors import EvisError
from efficientvis_trt.trt import engine as E
from efficientvis_trt.trt import env
from efficientvis_trt.trt import plugin as trt_plugin


def test_engine_path_names_precision_gpu_cc_and_trt_version(tmp_path):
    p = E.engine_path(tmp_path, "int8", "NVIDIA H200", (9, 0), "10.13.0.35")
    assert p == tmp_path / "engines" / "model.int8.NVIDIA_H200.sm90.trt10.13.0.plan"
    assert E.sidecar_path(p).name == "model.int8.NVIDIA_H200.sm90.trt10.13.0.json"
    assert (
        E.timing_cache_path(tmp_path, "Orin (nvgpu)", (8, 7), "10.3.0").name == "timing.Orin_nvgpu.sm87.trt10.3.0.cache"
    )
    assert (
        E.engine_path(tmp_path, "fp16", "NVIDIA GeForce RTX 4090", (8, 9), "11.4").name
        == "model.fp16.NVIDIA_GeForce_RTX_4090.sm89.trt11.4.0.plan"
    )
    with pytest.raises(EvisError):
        E.engine_path(tmp_path, "int4", "x", (9, 0), "10.3")


def test_find_engine_only_finds_this_gpu_and_version(tmp_path):
    target = E.engine_path(tmp_path, "fp16", "NVIDIA H200", (9, 0), "10.13.0")
    assert E.find_engine(tmp_path, "fp16", "NVIDIA H200", (9, 0), "10.13.0.35") is None
    target.parent.mkdir(parents=True)
    target.write_bytes(b"plan")
    assert E.find_engine(tmp_path, "fp16", "NVIDIA H200", (9, 0), "10.13.0.35") == target
    assert E.find_engine(tmp_path, "fp16", "NVIDIA H100 80GB HBM3", (9, 0), "10.13.0") is None
    assert E.find_engine(tmp_path, "fp16", "NVIDIA H200", (9, 0), "11.4.0") is None
    assert E.find_engine(tmp_path, "int8", "NVIDIA H200", (9, 0), "10.13.0") is None


def test_engine_from_another_gpu_or_version_asks_for_a_trt_rebuild():
    meta = {"precision": "int8", "gpu": "NVIDIA H200", "compute_capability": "9.0", "tensorrt_version": "10.13.0.35"}
    E.check_compat(meta, "NVIDIA H200", (9, 0), "10.13.0.40", "m.plan", "B")  # same x.y.z: fine
    with pytest.raises(EvisError, match=r"sm90.*sm87.*evis build B --precision int8 --backend trt"):
        E.check_compat(meta, "Orin", (8, 7), "10.13.0", "m.plan", "B")
    with pytest.raises(EvisError, match=r"TensorRT 10.13.0 vs installed 11.4.0"):
        E.check_compat(meta, "NVIDIA H200", (9, 0), "11.4.0", "m.plan", "B")


def test_versions_parse_in_one_place():
    assert env.parse_version("10.9.0.34") == (10, 9, 0)
    assert env.parse_version(" 11.4 ") == (11, 4, 0)
    assert env.short_version("10.13.3.9.post1") == "10.13.3"
    with pytest.raises(EvisError):
        env.parse_version("unknown")


@pytest.mark.parametrize("version", ["10.3.0", "10.16.1.11", "11.4.0.106"])
def test_opsets_the_parser_does_not_document_are_refused_with_the_fix(version):
    env.check_onnx_opset(18, version)
    env.check_onnx_opset(20, version)
    with pytest.raises(EvisError, match=r"opset 23.*supports opsets 9\.\.20.*--opset 20"):
        env.check_onnx_opset(23, version, "model.onnx")


# ---- the one deserialize, against a recording fake ---------------------------------------------------


class _FakeTrt(types.ModuleType):
    """Records calls in order; `deserialize_cuda_engine` returns what `plan_result` says."""

    def __init__(self, plan_result=None):
        super().__init__("tensorrt")
        self.__version__ = "10.13.0.35"
        self.calls: list[str] = []
        fake = self

        class Logger:
            WARNING, VERBOSE = 2, 4

            def __init__(self, severity=2):
                fake.calls.append("Logger")

        class Runtime:
            def __init__(self, logger):
                fake.calls.append("Runtime")

            def deserialize_cuda_engine(self, data):
                fake.calls.append("deserialize_cuda_engine")
                return plan_result

        self.Logger, self.Runtime = Logger, Runtime

    def init_libnvinfer_plugins(self, logger, namespace):
        self.calls.append(f"init_libnvinfer_plugins({namespace!r})")
        return True


@pytest.fixture
def fake_trt(monkeypatch):
    fake = _FakeTrt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(env, "cuda_device_info", lambda device=None: ("NVIDIA H200", (9, 0)))
    monkeypatch.setattr(trt_plugin, "_PLUGIN_PATH", [])
    return fake


def _plan(tmp_path, meta: dict | None):
    plan = tmp_path / "engines" / "model.fp16.NVIDIA_H200.sm90.trt10.13.0.plan"
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(b"not a real plan")
    if meta is not None:
        E.sidecar_path(plan).write_text(json.dumps(meta))
    return plan


def test_deserialize_initialises_tensorrt_plugins_before_the_plan_and_says_rebuild_with_backend_trt(fake_trt, tmp_path):
    plan = _plan(tmp_path, {"precision": "fp16", "compute_capability": "9.0", "tensorrt_version": "10.13.0"})
    with pytest.raises(EvisError) as info:
        E.deserialize(plan, tmp_path, precision="fp16")
    msg = str(info.value)
    assert f"evis build {tmp_path} --precision fp16 --backend trt" in msg and "\n" not in msg
    calls = fake_trt.calls
    assert "init_libnvinfer_plugins('')" in calls, calls
    assert calls.index("init_libnvinfer_plugins('')") < calls.index("deserialize_cuda_engine")


def test_deserialize_refuses_another_precision_and_a_corrupt_sidecar(fake_trt, tmp_path):
    plan = _plan(tmp_path, {"precision": "int8"})
    with pytest.raises(EvisError, match="is int8, not fp16"):
        E.deserialize(plan, tmp_path, precision="fp16")
    E.sidecar_path(plan).write_text("{not json")
    with pytest.raises(EvisError, match="not valid JSON"):
        E.deserialize(plan, tmp_path)
    assert "deserialize_cuda_engine" not in fake_trt.calls


def test_an_engine_holding_our_jit_plugin_fails_clearly_when_the_plugin_is_not_registered(fake_trt, tmp_path):
    # The fake has no tensorrt.plugin: registration fails; the sidecar says the engine holds the JIT plugin.
    plan = _plan(tmp_path, {"precision": "fp16", "plugin_path": {"selected": "jit", "in_engine": "jit"}})
    with pytest.raises(EvisError, match="holds the efficientvis::MultiLevelRoIAlign JIT plugin"):
        E.deserialize(plan, tmp_path)
    with pytest.raises(EvisError, match="JIT plugin"):  # and again: the cached registration result is checked too
        E.deserialize(plan, tmp_path)
    assert "deserialize_cuda_engine" not in fake_trt.calls
    # An AOT engine carries its PTX: it is handed to TensorRT without the Python plugin.
    E.sidecar_path(plan).write_text(json.dumps({"precision": "fp16", "plugin_path": {"in_engine": "aot"}}))
    with pytest.raises(EvisError, match="cannot load engine"):
        E.deserialize(plan, tmp_path)
    assert "deserialize_cuda_engine" in fake_trt.calls


def test_without_tensorrt_build_and_load_are_one_clear_line_and_write_nothing(tmp_path):
    """Import-blocked, so it runs (and means the same) on a machine that has TensorRT. The build gets a graph
    that passes the parser rules (they run before TensorRT is looked for), kept outside the output folder."""
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    proc = run_python(
        f"""
        from pathlib import Path
        import onnx
        from onnx import TensorProto, helper
        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        )
        onnx_path = Path({str(graphs)!r}) / "model.fp16.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(onnx_path))
        from efficientvis_trt.errors import BackendUnavailable
        from efficientvis_trt.trt.engine_build import build_engine
        from efficientvis_trt.trt.engine import deserialize
        from efficientvis_trt.runtime.trt_backend import TensorRTBackend
        out = Path({str(out)!r})
        for name, call in [
            ("build", lambda: build_engine(out, "fp16", onnx_path)),
            ("load", lambda: deserialize(out / "x.plan")),
            ("backend", lambda: TensorRTBackend(out / "model.plan", "fp32")),
        ]:
            try:
                call()
                print(name, "no error")
            except BackendUnavailable as exc:
                print(name, "BackendUnavailable", str(exc).replace(chr(10), " "))
        print("files", sorted(p.name for p in out.iterdir()))
        """,
        block=("tensorrt", "cuda", "polygraphy"),
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("build", "load", "backend"):
        assert f"{name} BackendUnavailable TensorRT is not installed" in proc.stdout, proc.stdout
    assert 'pip install -e ".[trt-cu13]"' in proc.stdout and "pip install efficientvis-trt" not in proc.stdout
    assert "files []" in proc.stdout


def test_engine_files_go_into_the_bundle_in_one_transaction(tmp_path, make_tiny_bundle):
    """Plan, sidecar and timing cache are listed in the bundle's metadata with their hashes, and verify on open."""
    from helpers import SMALL_BUNDLE

    from efficientvis_trt.bundle import Bundle

    bundle = Bundle.open(make_tiny_bundle(**SMALL_BUNDLE))
    plan = E.engine_path(bundle, "fp16", "NVIDIA H200", (9, 0), "10.13.0")
    cache = E.timing_cache_path(bundle, "NVIDIA H200", (9, 0), "10.13.0")
    E.write_engine(bundle, plan, b"plan bytes", {"precision": "fp16", "gpu": "NVIDIA H200"}, (cache, b"cache"))
    files = Bundle.open(bundle.path).files
    roles = {name: rec["role"] for name, rec in files.items() if name.startswith("engines/")}
    assert roles == {
        f"engines/{plan.name}": "engine",
        f"engines/{E.sidecar_path(plan).name}": "engine-info",
        f"engines/{cache.name}": "timing-cache",
    }
    assert E.read_sidecar(plan)["precision"] == "fp16" and plan.read_bytes() == b"plan bytes"
    assert E.find_engine(bundle, "fp16", "NVIDIA H200", (9, 0), "10.13.0.35") == plan
    # a bare folder (tests, tools): plain atomic writes of the same three files
    bare = tmp_path / "bare" / "engines" / plan.name
    E.write_engine(tmp_path / "bare", bare, b"p", {"precision": "fp16"}, (bare.with_suffix(".cache"), b"c"))
    assert sorted(p.name for p in bare.parent.iterdir()) == sorted(
        [bare.name, E.sidecar_path(bare).name, bare.with_suffix(".cache").name]
    )
