"""The one capability record: every probe has a reason, is run once, and the record is what the markers,
`evis plugins`, `evis doctor` and the automatic backend choice read."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from helpers import REPO_ROOT, missing_for, run_python

from efficientvis_trt import capabilities
from efficientvis_trt.capabilities import Capabilities, Feature


def test_the_record_is_frozen_and_every_feature_says_why():
    caps = capabilities.capabilities()
    assert capabilities.capabilities() is caps  # probed once per process
    with pytest.raises(dataclasses.FrozenInstanceError):
        caps.torch = Feature(False, "no")  # type: ignore[misc]
    for field in dataclasses.fields(Capabilities):
        value = getattr(caps, field.name)
        if isinstance(value, Feature):
            assert value.reason and "\n" not in value.reason, field.name
            assert bool(value) is value.available
    assert caps.plugin_path.mode in ("aot", "jit", "builtin-roialign", "unavailable") and caps.plugin_path.reason


def test_the_markers_read_the_record():
    caps = capabilities.capabilities()
    assert (missing_for("cuda") is None) is caps.torch_cuda.available
    assert (missing_for("tensorrt") is None) is (caps.tensorrt.available and caps.tensorrt_runtime.available)


def test_evis_plugins_reports_the_record(capsys):
    from efficientvis_trt.cli import main

    assert main(["plugins", "--json", "--no-ptx-check"]) == 0
    report = json.loads(capsys.readouterr().out)
    caps = capabilities.capabilities()
    assert report["path"] == caps.plugin_path.mode and report["reason"] == caps.plugin_path.reason
    assert report["triton"]["version"] == caps.triton.version
    assert report["cuda"]["available"] is caps.gpu.available


def test_without_tensorrt_and_openvino_each_probe_says_how_to_install():
    proc = run_python(
        """
        from efficientvis_trt import capabilities as c
        print(c.tensorrt().available, c.tensorrt_runtime().available, c.openvino().available)
        print(c.tensorrt().reason)
        print(c.openvino().reason)
        print(c.plugin_path().mode)
        """,
        block=("tensorrt", "openvino"),
    )
    assert proc.returncode == 0, proc.stderr
    flags, trt_reason, ov_reason, mode = proc.stdout.strip().splitlines()
    assert flags == "False False False"
    assert "TensorRT is not installed" in trt_reason and "trt-cu13" in trt_reason
    assert "OpenVINO is not installed" in ov_reason and "[openvino]" in ov_reason
    assert mode == "unavailable"


def test_a_broken_openvino_says_it_does_not_import_not_that_it_is_missing(tmp_path):
    (tmp_path / "openvino").mkdir()
    (tmp_path / "openvino" / "__init__.py").write_text("raise ImportError('libopenvino.so.2540: cannot open')\n")
    path = os.pathsep.join([str(tmp_path), str(REPO_ROOT)])
    code = "from efficientvis_trt import capabilities as c; print(c.openvino().reason)"
    proc = run_python(code, env={"PYTHONPATH": path})
    assert proc.returncode == 0, proc.stderr
    reason = proc.stdout.strip()
    assert "does not import" in reason and "libopenvino.so.2540" in reason and "not installed" not in reason


def test_auto_on_a_cpu_reads_openvino_from_the_record(tiny_random_bundle):
    from efficientvis_trt.runtime.predictor import Predictor

    with Predictor(tiny_random_bundle, device="cpu") as p:
        want = "openvino" if capabilities.openvino().available else "onnxruntime"
        assert p.backend.name == want


@pytest.mark.parametrize(
    "machine, flags, full",
    [
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, True),
        ("x86_64", {"avx2", "avx_vnni"}, True),
        ("AMD64", {"amx_int8"}, True),
        ("x86_64", {"avx2", "avx512f", "avx512bw"}, False),  # AVX-512 without VNNI still pair-sums in int16
        ("x86_64", set(), False),  # flags unreadable: assume the worst
        ("aarch64", set(), True),  # Jetson's Arm cores
    ],
)
def test_int8_full_range_reads_vnni_from_the_cpu_flags(machine, flags, full):
    got = capabilities.int8_full_range_of(machine, flags)
    assert got.available is full and got.reason
    assert ("saturate in int16" in got.reason) is not full
