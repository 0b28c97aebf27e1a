"""The MultiLevelRoIAlign local function pools each box once, on its own level (docs/roi-align.md).

Dynamic box counts (one graph, several R), levels that get no box, boxes exactly at the level
boundaries, zero-area boxes; ONNX Runtime against the PyTorch per-box path and the dense form.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from efficientvis_trt.export.roi_align_onnx import LEVEL_INPUTS, attach_function, inline_function
from efficientvis_trt.model.roi_align import assign_levels, multi_level_roi_align, multi_level_roi_align_dense
from efficientvis_trt.plugins.spec import DOMAIN, OP_TYPE, RoIAlignAttrs

ort = pytest.importorskip("onnxruntime")

B, C, H, W = 2, 3, 128, 192
ATTRS = RoIAlignAttrs(output_size=7, sampling_ratio=2, canonical_box_size=56.0, canonical_level=4)


def _model(opset: int = 18) -> onnx.ModelProto:
    """One custom node; every dimension symbolic except C, so counts change between runs of one session."""
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", C, f"h{i}", f"w{i}"])
        for i, n in enumerate(LEVEL_INPUTS)
    ] + [helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["B", "R", 4])]
    node = helper.make_node(OP_TYPE, list(LEVEL_INPUTS) + ["rois"], ["out"], domain=DOMAIN, **ATTRS.onnx_attributes())
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", "R", C, 7, 7])
    graph = helper.make_graph([node], "g", inputs, [out])
    return attach_function(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), opset)


@pytest.fixture(scope="module")
def session():
    model = _model()
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def features():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(B, C, H >> lvl, W >> lvl, generator=g) for lvl in range(2, 6)]


def _square_boxes(sides, seed: int = 0) -> torch.Tensor:
    """[B, R, 4] boxes of the given sides (R = len(sides) per image), centres spread over the image."""
    g = torch.Generator().manual_seed(seed)
    side = torch.tensor(sides, dtype=torch.float32).repeat(B, 1)[..., None]
    centre = torch.rand(B, len(sides), 2, generator=g) * torch.tensor([W, H])
    return torch.cat([centre - side / 2, centre + side / 2], -1)


def _run(session, features, rois: torch.Tensor) -> np.ndarray:
    feed = {n: f.numpy() for n, f in zip(LEVEL_INPUTS, features)} | {"rois": rois.numpy()}
    return session.run(None, feed)[0]


def _check(session, features, rois: torch.Tensor, expect_levels: set[int]) -> None:
    levels = assign_levels(rois, ATTRS.canonical_box_size, ATTRS.canonical_level, 2, 5)
    assert set(levels.flatten().tolist()) == expect_levels
    got = _run(session, features, rois)
    per_box = multi_level_roi_align(features, rois, ATTRS).numpy()
    dense = multi_level_roi_align_dense(features, rois, ATTRS).numpy()
    assert got.shape == per_box.shape == (B, rois.shape[1], C, 7, 7)
    np.testing.assert_allclose(got, per_box, atol=1e-5, rtol=0)
    np.testing.assert_allclose(per_box, dense, atol=1e-5, rtol=0)


# canonical 56 at level 4: sides 14 / 28 / 56 / 112 px are exactly the first side of levels 2 / 3 / 4 / 5
@pytest.mark.parametrize(
    "sides, levels",
    [
        ([13.0, 14.0, 27.0, 28.0, 55.0, 56.0, 111.0, 112.0, 150.0], {0, 1, 2, 3}),  # each side of every boundary
        ([30.0, 40.0, 50.0], {1}),  # three empty levels
        ([6.0, 60.0, 100.0], {0, 2}),  # P3 and P5 empty
        ([0.0, 0.0], {0}),  # zero-area boxes only: all on P2
        ([200.0], {3}),  # one box, on P5 only
    ],
)
def test_function_pools_each_level_alone_with_empty_levels(session, features, sides, levels):
    _check(session, features, _square_boxes(sides), levels)


def test_boxes_exactly_on_level_boundaries_take_the_upper_level(session):
    """sqrt(area) == canonical * 2**k lands on level canonical_level + k, in ONNX as in PyTorch.

    Level l's map is the constant l, so a box inside the image pools to the number of its level.
    """
    boxes = torch.tensor(
        [
            [[10.0, 10.0, 38.0, 38.0], [10.0, 10.0, 66.0, 66.0], [20.0, 5.0, 48.0, 117.0], [0.0, 0.0, 112.0, 112.0]],
            [[5.0, 5.0, 33.0, 33.0], [5.0, 5.0, 32.9, 33.0], [30.0, 30.0, 85.9, 86.0], [40.0, 10.0, 152.0, 122.0]],
        ]
    )  # sides 28, 56, 28x112 (sqrt 56), 112 | 28, 27.9x28, 55.9x56, 112
    expected = [[3, 4, 4, 5], [3, 2, 3, 5]]
    assert (assign_levels(boxes, 56.0, 4, 2, 5) + 2).tolist() == expected
    constant = [torch.full((B, C, H >> lvl, W >> lvl), float(lvl)) for lvl in range(2, 6)]
    got = _run(session, constant, boxes)
    np.testing.assert_allclose(got, np.broadcast_to(np.array(expected, np.float32)[..., None, None, None], got.shape))


def test_dynamic_counts_in_one_session(session, features):
    """One session, box counts 1, 7 and 40 per image: the per-level counts are data, not shapes."""
    for r, seed in ((1, 1), (7, 2), (40, 3)):
        g = torch.Generator().manual_seed(seed)
        side = torch.exp(torch.empty(B, r, 2).uniform_(np.log(2.0), np.log(180.0), generator=g))
        centre = torch.rand(B, r, 2, generator=g) * torch.tensor([W, H])
        rois = torch.cat([centre - side / 2, centre + side / 2], -1)
        levels = set(assign_levels(rois, 56.0, 4, 2, 5).flatten().tolist())
        _check(session, features, rois, levels)


def test_no_boxes_at_all(session, features):
    rois = torch.zeros(B, 0, 4)
    assert _run(session, features, rois).shape == (B, 0, C, 7, 7)
    assert multi_level_roi_align(features, rois, ATTRS).shape == (B, 0, C, 7, 7)


def test_body_pools_only_the_levels_boxes():
    """Each RoiAlign reads the rois Gathered by its level's NonZero, and no Where picks among full poolings."""
    fn = _model().functions[0]
    producers = {o: n for n in fn.node for o in n.output}
    roi_nodes = [n for n in fn.node if n.op_type == "RoiAlign"]
    assert len(roi_nodes) == 4 and not any(n.op_type == "Where" for n in fn.node)

    def upstream(name: str, op_type: str) -> bool:
        seen, todo = set(), [name]
        while todo:
            node = producers.get(todo.pop())
            if node is None or node.output[0] in seen:
                continue
            seen.add(node.output[0])
            if node.op_type == op_type:
                return True
            todo.extend(node.input)
        return False

    for n in roi_nodes:
        rois_in, batch_in = n.input[1], n.input[2]
        assert upstream(rois_in, "NonZero") and upstream(batch_in, "NonZero")
        assert producers[batch_in].op_type == "Gather"


@pytest.mark.parametrize("opset", [16, 17, 18])
def test_function_checks_at_every_supported_opset(opset, features):
    model = _model(opset)
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    _check(sess, features, _square_boxes([10.0, 40.0]), {0, 1})


def test_inlined_body_runs_on_openvino_with_empty_levels(features):
    """OpenVINO reads the graph after inlining; the per-level body with empty levels runs there too."""
    ov = pytest.importorskip("openvino", reason="OpenVINO is an optional backend (pip install openvino)")
    model = inline_function(_model())
    compiled = ov.Core().compile_model(ov.Core().read_model(model.SerializeToString(), b""), "CPU")
    rois = _square_boxes([30.0, 40.0, 200.0])  # P2 and P4 empty
    feed = [f.numpy() for f in features] + [rois.numpy()]
    got = compiled(feed)[0]
    ref = multi_level_roi_align(features, rois, ATTRS).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
