"""`RoIAlignAttrs`: the one value the RoIAlign attributes travel as, and the framework signatures pinned to it."""

from __future__ import annotations

import ast
import inspect
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from efficientvis_trt.errors import EvisError
from efficientvis_trt.plugins.spec import PLUGIN_NAMESPACE, PLUGIN_VERSION, RoIAlignAttrs

NAMES = [f.name for f in fields(RoIAlignAttrs)]
ODD = RoIAlignAttrs(
    output_size=5, sampling_ratio=3, canonical_box_size=160.0, canonical_level=3, aligned=0, min_level=1
)


def test_values_and_onnx_attributes_keep_field_order_and_types():
    assert list(RoIAlignAttrs.kinds()) == NAMES
    assert ODD.values() == (5, 3, 160.0, 3, 0, 1)
    assert [type(v) for v in RoIAlignAttrs(canonical_box_size=224).values()] == [int, int, float, int, int, int]
    attrs = ODD.onnx_attributes()
    assert list(attrs) == [*NAMES, "plugin_namespace", "plugin_version"]
    assert (attrs["plugin_namespace"], attrs["plugin_version"]) == (PLUGIN_NAMESPACE, PLUGIN_VERSION)
    assert RoIAlignAttrs.from_onnx_attributes(attrs) == ODD
    assert RoIAlignAttrs.from_onnx_attributes({"output_size": 7}) == RoIAlignAttrs(output_size=7)  # defaults fill in


def test_plugin_fields_round_trip_as_one_element_arrays():
    got = ODD.plugin_fields()
    assert list(got) == NAMES
    assert {k: (v.dtype, v.shape) for k, v in got.items()} == {
        k: (np.dtype(np.float32 if k == "canonical_box_size" else np.int32), (1,)) for k in NAMES
    }
    assert RoIAlignAttrs.from_plugin_fields(*got.values()) == ODD
    assert RoIAlignAttrs.from_plugin_fields(5, np.int64(3), np.array([160.0]), 3, 0, np.array([1])) == ODD
    with pytest.raises(EvisError, match="takes 6 attributes"):
        RoIAlignAttrs.from_plugin_fields(5, 3)
    with pytest.raises(EvisError, match="scalar"):
        RoIAlignAttrs.from_plugin_fields(np.array([5, 6]), 3, 160.0, 3, 0, 1)


def test_from_pooler_reads_the_config():
    from efficientvis_trt.config import PoolerConfig

    pooler = PoolerConfig(resolution=7, sampling_ratio=1, canonical_box_size=112, canonical_level=5, aligned=False)
    assert RoIAlignAttrs.from_pooler(pooler) == RoIAlignAttrs(7, 1, 112.0, 5, 0, 2)


# Where a framework reads the op's parameters off a signature, the list cannot be the value; it must
# still be the value's fields, in order, or the node, the plugin and the kernel disagree.
def test_torch_op_signatures_are_the_fields():
    from efficientvis_trt.export import torch_ops

    for fn in (torch_ops.multi_level_roi_align_op._init_fn, torch_ops._fake):
        assert list(inspect.signature(fn).parameters)[5:] == NAMES


def _args_after_rois(tree: ast.AST, names: set[str]) -> dict[str, list[str]]:
    """Each named function's parameters between `rois` and the trailing non-attribute ones."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in names:
            args = [a.arg for a in node.args.args]
            out[node.name] = [a for a in args[args.index("rois") + 1 :] if a not in ("outputs", "tactic", "stream")]
    return out


def test_onnxscript_and_tensorrt_plugin_signatures_are_the_fields():
    root = Path(__file__).resolve().parents[2] / "efficientvis_trt"
    script = _args_after_rois(ast.parse((root / "export/onnxscript_ops.py").read_text()), {"multi_level_roi_align"})
    assert script == {"multi_level_roi_align": NAMES}
    plugin_src = (root / "trt/plugin.py").read_text()
    plugin_fns = {
        "multi_level_roi_align_desc",
        "multi_level_roi_align_autotune",
        "multi_level_roi_align_aot",
        "multi_level_roi_align_impl",
        "_aot_kernel",
    }
    got = _args_after_rois(ast.parse(plugin_src), plugin_fns)
    assert got == dict.fromkeys(plugin_fns, NAMES)
