"""The checks around an engine build that need no GPU: timing cache, batch profile, plugin path bound,
surfaced plugin errors, and the layering (runtime never imports the precision package).

Fake TensorRT objects here stand in only for what a build would hand to OUR functions; that the real
bindings have these attributes and methods is proved by test_api_conformance.py.
"""

from __future__ import annotations

import ast
import logging
import types
from pathlib import Path

import pytest
from helpers import REPO_ROOT, run_python

from efficientvis_trt.errors import EvisError
from efficientvis_trt.trt.engine_build import (
    BatchProfile,
    build_failure,
    plugin_in_network,
    profile_shapes,
    set_timing_cache,
)

# ---- timing cache ------------------------------------------------------------------------------------


class _Config:
    def __init__(self, corrupt: str = "", mismatch: bool = False):
        self.corrupt, self.mismatch, self.set = corrupt, mismatch, []

    def create_timing_cache(self, blob: bytes):
        if blob and self.corrupt == "raise":
            raise RuntimeError("Timing cache is corrupted")
        if blob and self.corrupt == "none":
            return None
        return ("cache", bytes(blob))

    def set_timing_cache(self, cache, ignore_mismatch):
        assert cache is not None and ignore_mismatch is False
        self.set.append(cache)
        return not (self.mismatch and cache[1])


@pytest.mark.parametrize("corrupt", ["raise", "none"])
def test_a_corrupt_timing_cache_is_one_clear_line_and_a_fresh_cache(tmp_path, caplog, corrupt):
    path = tmp_path / "timing.X.sm90.trt10.13.0.cache"
    path.write_bytes(b"\x00garbage")
    config = _Config(corrupt=corrupt)
    with caplog.at_level(logging.WARNING):
        cache = set_timing_cache(config, path)
    assert cache == ("cache", b"") and config.set == [cache]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and path.name in lines[0] and "unreadable" in lines[0] and "empty one" in lines[0]


def test_a_timing_cache_from_another_gpu_is_replaced_and_a_good_one_is_used(tmp_path, caplog):
    path = tmp_path / "t.cache"
    path.write_bytes(b"saved")
    with caplog.at_level(logging.WARNING):
        assert set_timing_cache(_Config(mismatch=True), path) == ("cache", b"")
    assert "another GPU or TensorRT" in caplog.text
    assert set_timing_cache(_Config(), path) == ("cache", b"saved")
    assert set_timing_cache(_Config(), tmp_path / "missing.cache") == ("cache", b"")


# ---- batch profile ----------------------------------------------------------------------------------


def test_batch_profile_parses_and_checks_its_order():
    assert BatchProfile.parse("1:4:8") == BatchProfile(1, 4, 8)
    assert BatchProfile.parse("2") == BatchProfile(2, 2, 2)
    assert BatchProfile().text == "1:1:1"
    for bad in ("4:2:8", "0:1:1", "a:b:c", "1:2"):
        with pytest.raises(EvisError, match="MIN"):
            BatchProfile.parse(bad)


def test_profile_shapes_cover_every_input_with_a_dynamic_leading_dimension():
    inputs = {"frames": (-1, 5, 64, 96, 3), "query_in": (-1, 10, 32), "boxes_in": (-1, 10, 4)}
    shapes = profile_shapes(inputs, BatchProfile(1, 4, 8))
    assert shapes["frames"] == ((1, 5, 64, 96, 3), (4, 5, 64, 96, 3), (8, 5, 64, 96, 3))
    assert set(shapes) == set(inputs)
    assert profile_shapes(inputs, None)["query_in"] == ((1, 10, 32),) * 3  # default 1:1:1
    static = {"frames": (5, 64, 96, 3)}
    assert profile_shapes(static, None) == {} and profile_shapes(static, BatchProfile()) == {}
    with pytest.raises(EvisError, match="static"):
        profile_shapes(static, BatchProfile(1, 2, 4))
    with pytest.raises(EvisError, match="leading"):
        profile_shapes({"frames": (1, -1, 64)}, None)


# ---- what the parser bound ---------------------------------------------------------------------------


def _fake_trt_network(layers):
    """A network of (type, plugin_name, namespace) layers, shaped like the bindings' objects."""
    trt = types.SimpleNamespace(
        LayerType=types.SimpleNamespace(PLUGIN_V2="V2", PLUGIN_V3="V3", CONVOLUTION="CONV"),
        PluginCapabilityType=types.SimpleNamespace(CORE="CORE"),
        IPluginV3Layer=type("IPluginV3Layer", (), {}),
        IPluginV2Layer=type("IPluginV2Layer", (), {}),
    )

    def make(kind, name, ns):
        core = types.SimpleNamespace(plugin_name=name, plugin_namespace=ns)
        v3 = types.SimpleNamespace(get_capability_interface=lambda cap: core)
        v2 = types.SimpleNamespace(plugin_type=name, plugin_namespace=ns)
        layer = type("ILayer", (), {})()
        layer.type = kind
        layer.plugin = v3 if kind == "V3" else v2
        return layer

    made = [make(*spec) for spec in layers]
    network = types.SimpleNamespace(num_layers=len(made), get_layer=lambda i: made[i])
    return trt, network


def test_the_metadata_says_what_the_parser_bound_not_what_was_registered():
    # TensorRT 10.6 case: a JIT plugin registered, the parser expanded the local function anyway.
    trt, net = _fake_trt_network([("CONV", "", ""), ("V3", "ROIAlign_TRT", ""), ("V3", "ROIAlign_TRT", "")])
    assert plugin_in_network(trt, net, "jit")["in_engine"] == "builtin-roialign"
    trt, net = _fake_trt_network([("V2", "ROIAlign_TRT", "")])
    assert plugin_in_network(trt, net, "builtin-roialign")["in_engine"] == "builtin-roialign"
    trt, net = _fake_trt_network([("V3", "MultiLevelRoIAlign", "efficientvis")])
    got = plugin_in_network(trt, net, "aot")
    assert got["in_engine"] == "aot" and "1 efficientvis::MultiLevelRoIAlign" in got["how"]
    trt, net = _fake_trt_network([("CONV", "", "")])
    assert plugin_in_network(trt, net, "aot")["in_engine"] == "unknown"
    broken = types.SimpleNamespace(num_layers=1, get_layer=lambda i: 1 / 0)
    assert plugin_in_network(trt, broken, "aot")["in_engine"] == "unknown"


# ---- errors raised inside our plugin callbacks ----------------------------------------------------------


def _capture_definitions():
    """A stand-in for `tensorrt.plugin` that keeps the decorated functions (no validation: conformance does that)."""
    got: dict = {}

    def deco(kind):
        return lambda plugin_id: lambda fn: got.setdefault(kind, fn)

    trtp = types.SimpleNamespace(
        register=deco("register"),
        aot_impl=deco("aot_impl"),
        impl=deco("impl"),
        autotune=deco("autotune"),
        TensorDesc=object,
        KernelLaunchParams=object,
        SymIntExprs=object,
        AutoTuneCombination=lambda types, layouts: (types, layouts),
    )
    return trtp, got


def test_an_exception_inside_aot_impl_is_the_build_failure_message(monkeypatch):
    from efficientvis_trt.trt import plugin as trt_plugin

    monkeypatch.setattr(trt_plugin, "gpu_info_or_none", lambda: None)  # no GPU: aot_impl raises
    trtp, got = _capture_definitions()
    trt_plugin._define_plugin(trtp, aot=True)
    assert set(got) == {"register", "autotune", "aot_impl"}
    trt_plugin.take_plugin_errors()
    attrs = trt_plugin.attrs_to_fields(trt_plugin.RoIAlignAttrs())
    desc = types.SimpleNamespace(dtype="float32", shape_expr=[1, 2, 3, 4])
    with pytest.raises(EvisError):
        got["aot_impl"](desc, desc, desc, desc, desc, *attrs.values(), [desc], 0)
    errors = trt_plugin.take_plugin_errors()
    assert len(errors) == 1 and "compute capability" in errors[0]
    msg = str(build_failure("fp16", "", errors))
    assert "RoIAlign plugin failed in aot_impl" in msg and "compute capability" in msg and "workspace" not in msg
    assert "--workspace-gb" in str(build_failure("fp16", "", []))
    assert trt_plugin.take_plugin_errors() == []


def test_autotune_declares_every_type_combination_the_kernel_takes():
    from efficientvis_trt.trt import plugin as trt_plugin

    trtp, got = _capture_definitions()
    trt_plugin._define_plugin(trtp, aot=False)
    combos = got["autotune"](*([None] * 5), *([None] * 6), (None,))
    types_ = [c[0].replace(" ", "").split(",") for c in combos]
    assert all(len(t) == 6 for t in types_)  # P2..P5, rois, output
    assert ["FP32|FP16"] * 6 in types_  # all fp32 or all fp16
    assert ["FP16"] * 4 + ["FP32", "FP16"] in types_  # fp16 features with fp32 rois
    assert all(c[1] == "LINEAR" for c in combos)


# ---- layering ---------------------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_runtime_never_imports_the_precision_package():
    runtime = REPO_ROOT / "efficientvis_trt" / "runtime"
    offenders = {
        p.name: sorted(m for m in _imports(p) if m.startswith("efficientvis_trt.precision"))
        for p in runtime.rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}, offenders
    # and at run time: with the precision package unimportable, the runtime and its TensorRT backend import
    proc = run_python(
        "import efficientvis_trt.runtime.load, efficientvis_trt.runtime.trt_backend, efficientvis_trt.trt.engine\n"
        "print('ok')",
        block=("efficientvis_trt.precision",),
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_tensorrt_is_imported_only_by_the_trt_layer():
    """One home for `import tensorrt` (the plugin module needs `tensorrt.plugin` for its definitions)."""
    allowed = {"efficientvis_trt/trt/env.py", "efficientvis_trt/trt/plugin.py"}
    found = set()
    for p in (REPO_ROOT / "efficientvis_trt").rglob("*.py"):
        if any(m == "tensorrt" or m.startswith("tensorrt.") for m in _imports(p)):
            found.add(p.relative_to(REPO_ROOT).as_posix())
    assert found <= allowed, found - allowed


def test_on_tensorrt_10_3_the_builtin_roialign_is_known_by_its_layer_name():
    # 10.3's bindings return None for a V3 plugin layer's `plugin` (pyPlugin.cpp): the name must tell.
    trt, net = _fake_trt_network([("CONV", "", ""), ("V3", "ROIAlign_TRT", "")])
    layer = net.get_layer(1)
    layer.plugin, layer.name = None, "node_of__roialign_41_0"
    got = plugin_in_network(trt, net, "builtin-roialign")
    assert got["in_engine"] == "builtin-roialign" and "layer name" in got["how"]
    layer.name = "some_conv"
    assert plugin_in_network(trt, net, "builtin-roialign")["in_engine"] == "unknown"
