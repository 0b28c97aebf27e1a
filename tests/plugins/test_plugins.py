"""MultiLevelRoIAlign plugins without a GPU: path selection, launch geometry, attributes, imports, CLI.

Numerics of the Triton kernel: test_triton_kernel.py; PTX: test_ptx.py;
TensorRT engines: ../trt/test_plugin_engines.py (skipped without TensorRT and a CUDA GPU).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from efficientvis_trt.errors import EvisError
from efficientvis_trt.plugins.spec import RoIAlignAttrs
from efficientvis_trt.plugins.triton_roi_align import covered_output_indices, kernel_config, launch_geometry
from efficientvis_trt.trt.plugin import PluginPath, attrs_from_fields, attrs_to_fields, select_plugin_path

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- version -> path


@pytest.mark.parametrize(
    "version, mode, python_at_load",
    [
        ("11.4.1", "aot", False),
        ("10.16.0.72", "aot", False),
        ("10.13.3.9", "aot", False),  # JetPack 7.0/7.1 (Thor)
        ("10.9.0.34", "aot", False),
        ("10.8.0.43", "jit", True),
        ("10.7.0", "jit", True),
        ("10.6.0.26", "builtin-roialign", False),  # parser prefers the model-local function on 10.6
        ("10.5.0", "builtin-roialign", False),
        ("10.3.0.30", "builtin-roialign", False),  # JetPack 6
        ("10.0.1", "unavailable", False),
        ("8.6.1", "unavailable", False),
    ],
)
def test_select_plugin_path_by_version(version, mode, python_at_load):
    path = select_plugin_path(version)
    assert isinstance(path, PluginPath)
    assert path.mode == mode
    assert path.needs_python_at_load is python_at_load
    assert path.trt_version == version
    assert version in path.reason
    assert path.registers_plugin is (mode in ("aot", "jit"))


def test_select_plugin_path_reasons_say_what_matters():
    assert "no Python" in select_plugin_path("10.9.0").reason
    jit = select_plugin_path("10.7.0").reason
    assert "torch" in jit and "before deserializing" in jit
    assert "JetPack 6" in select_plugin_path("10.3.0").reason
    assert "ROIAlign_TRT" in select_plugin_path("10.3.0").reason
    assert "10.7" in select_plugin_path("10.6.0").reason and "prefers" in select_plugin_path("10.6.0").reason


def test_select_plugin_path_without_tensorrt_gives_install_hint():
    path = select_plugin_path(None)
    assert path.mode == "unavailable" and not path.needs_python_at_load
    assert "pip install" in path.reason and "not installed" in path.reason
    assert select_plugin_path() == path


def test_select_plugin_path_falls_back_when_python_side_is_missing():
    no_triton = select_plugin_path("10.9.0", triton_available=False)
    assert no_triton.mode == "builtin-roialign" and "Triton is not installed" in no_triton.reason
    no_torch = select_plugin_path("10.7.0", torch_cuda_available=False)
    assert no_torch.mode == "builtin-roialign" and "torch" in no_torch.reason
    # AOT needs no torch at all
    assert select_plugin_path("10.10.0", torch_cuda_available=False).mode == "aot"


# ---------------------------------------------------------------- launch geometry


@pytest.mark.parametrize(
    "num_boxes, channels, output_size",
    [
        (1, 1, 1),
        (3, 5, 7),
        (10, 33, 7),
        (4, 256, 7),
        (2, 17, 14),
        (3, 64, 3),
        (6, 40, 5),
    ],
)
def test_launch_grid_covers_every_box_channel_bin_exactly_once(num_boxes, channels, output_size):
    geo = launch_geometry(num_boxes, channels, RoIAlignAttrs(output_size=output_size))
    assert geo.grid[0] == num_boxes and geo.grid[2] == 1
    assert geo.bin_block >= output_size * output_size
    assert geo.bin_block & (geo.bin_block - 1) == 0 and geo.block_c & (geo.block_c - 1) == 0  # tl.arange needs 2**k
    counts = Counter(covered_output_indices(geo, num_boxes, channels, output_size))
    total = num_boxes * channels * output_size * output_size
    assert len(counts) == total
    assert set(counts) == set(range(total))
    assert set(counts.values()) == {1}


def test_kernel_config_depends_on_attributes_only():
    assert kernel_config(RoIAlignAttrs(output_size=7)) == kernel_config(RoIAlignAttrs(output_size=7, sampling_ratio=3))
    cfg = kernel_config(RoIAlignAttrs(output_size=14))
    assert cfg.bin_block == 256 and cfg.block_c * cfg.bin_block <= 4096


# ---------------------------------------------------------------- attributes as TensorRT hands them over


def test_attrs_from_plugin_fields_accept_int32_int64_arrays_and_scalars():
    want = RoIAlignAttrs(
        output_size=7, sampling_ratio=2, canonical_box_size=224.0, canonical_level=4, aligned=1, min_level=2
    )
    as_arrays32 = attrs_to_fields(want)
    assert all(v.shape == (1,) for v in as_arrays32.values())
    assert as_arrays32["output_size"].dtype == np.int32 and as_arrays32["canonical_box_size"].dtype == np.float32
    assert attrs_from_fields(**as_arrays32) == want
    as_arrays64 = {k: v.astype(np.int64 if v.dtype.kind == "i" else np.float64) for k, v in as_arrays32.items()}
    assert attrs_from_fields(**as_arrays64) == want
    assert attrs_from_fields(7, 2, 224.0, 4, 1, 2) == want
    assert attrs_from_fields(np.int32(7), np.int64(2), np.float32(224.0), 4, True, 2) == want
    with pytest.raises(EvisError):
        attrs_from_fields(np.array([7, 7]), 2, 224.0, 4, 1, 2)
    with pytest.raises(EvisError, match="takes the attributes"):
        attrs_from_fields(output_size=7, sampling_ratio=2)


def test_plugin_attribute_order_matches_onnx_node():
    # some tensorrt.plugin versions hand all attributes to aot_impl positionally, in field order
    onnx_names = [k for k in RoIAlignAttrs().onnx_attributes() if not k.startswith("plugin_")]
    assert list(attrs_to_fields(RoIAlignAttrs())) == onnx_names


# ---------------------------------------------------------------- imports and the missing-backend story


def _run_python(code: str, block: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter from the repo root, optionally making some top-level modules unimportable."""
    blocker = ""
    if block:
        blocker = textwrap.dedent(f"""
            import sys
            class _Block:
                def find_spec(self, name, path=None, target=None):
                    if name.split('.')[0] in {block!r}:
                        raise ImportError('blocked for the test: ' + name)
            sys.meta_path.insert(0, _Block())
        """)
    return subprocess.run(
        [sys.executable, "-c", blocker + textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_importing_plugins_imports_neither_tensorrt_nor_triton():
    proc = _run_python("""
        import sys
        import efficientvis_trt.plugins, efficientvis_trt.plugins.spec, efficientvis_trt.commands.plugins
        import efficientvis_trt.trt.plugin, efficientvis_trt.plugins.triton_roi_align
        print(sorted(m for m in ('tensorrt', 'triton', 'torch') if m in sys.modules))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_everything_degrades_to_one_clear_error_without_tensorrt_and_triton():
    proc = _run_python(
        """
        import torch
        from efficientvis_trt.errors import BackendUnavailable
        from efficientvis_trt.plugins.spec import RoIAlignAttrs
        from efficientvis_trt.plugins import triton_roi_align
        from efficientvis_trt.trt import plugin as trt_plugin
        print('path', trt_plugin.detect_plugin_path().mode)
        for name, call in [
            ('register', trt_plugin.register_trt_plugin),
            ('ptx', lambda: triton_roi_align.compile_ptx(RoIAlignAttrs(), 'fp32')),
            ('kernel', lambda: triton_roi_align.multi_level_roi_align_triton(
                [torch.zeros(1, 2, 8, 8)] * 4, torch.zeros(1, 1, 4), RoIAlignAttrs())),
        ]:
            try:
                call()
                print(name, 'no error')
            except BackendUnavailable as exc:
                print(name, 'BackendUnavailable', str(exc).replace(chr(10), ' '))
        from efficientvis_trt.cli import main
        main(['plugins'])
    """,
        block=("tensorrt", "triton"),
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "path unavailable" in out
    for name in ("register", "ptx", "kernel"):
        assert f"{name} BackendUnavailable" in out, out
    assert "pip install" in out
    assert "Triton: not installed" in out and "PTX: not checked" in out


def test_register_without_tensorrt_raises_backend_unavailable():
    proc = _run_python(
        """
        from efficientvis_trt.errors import BackendUnavailable
        from efficientvis_trt.trt.plugin import register_trt_plugin
        try:
            register_trt_plugin()
        except BackendUnavailable as exc:
            print("BackendUnavailable", exc)
        """,
        block=("tensorrt",),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("BackendUnavailable") and "pip install" in proc.stdout


# ---------------------------------------------------------------- evis plugins


def test_evis_plugins_reports_this_machine(capsys):
    from efficientvis_trt.cli import main

    assert main(["plugins", "--no-ptx-check"]) == 0
    out = capsys.readouterr().out
    assert "RoIAlign path:" in out and "why:" in out
    assert "TensorRT:" in out and "Triton:" in out and "CUDA device:" in out
    assert "PTX: not checked" in out


def test_evis_plugins_json_and_ptx_check(capsys):
    pytest.importorskip("triton", reason="Triton not installed")
    from efficientvis_trt.cli import main

    assert main(["plugins", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] in ("aot", "jit", "builtin-roialign", "unavailable")
    assert report["triton"]["installed"] is True
    ptx = {e["target"]: e for e in report["ptx"]}
    assert set(ptx) == {"sm_90", "sm_87"}
    assert all(e["ok"] for e in ptx.values()), ptx
    assert ptx["sm_87"]["ptx_target"] == "sm_87" and ptx["sm_90"]["ptx_target"].startswith("sm_90")
