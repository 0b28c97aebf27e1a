"""The multi-level RoIAlign reference against ONNX Runtime's standard RoiAlign (half_pixel)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from efficientvis_trt.model.roi_align import assign_levels, multi_level_roi_align_reference
from efficientvis_trt.ort_session import make_session
from efficientvis_trt.plugins.spec import RoIAlignAttrs

OUT, RATIO, CANON, CANON_LEVEL = 7, 2, 56.0, 4
ATTRS = RoIAlignAttrs(output_size=OUT, sampling_ratio=RATIO, canonical_box_size=CANON, canonical_level=CANON_LEVEL)


def _ort_roi_align(feature: np.ndarray, rois: np.ndarray, batch: np.ndarray, scale: float) -> np.ndarray:
    node = helper.make_node(
        "RoiAlign",
        ["X", "rois", "bi"],
        ["Y"],
        coordinate_transformation_mode="half_pixel",
        mode="avg",
        output_height=OUT,
        output_width=OUT,
        sampling_ratio=RATIO,
        spatial_scale=scale,
    )
    graph = helper.make_graph(
        [node],
        "roi",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("rois", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("bi", TensorProto.INT64, None),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = make_session(model)
    return sess.run(None, {"X": feature, "rois": rois, "bi": batch})[0]


def _numpy_levels(rois: np.ndarray) -> np.ndarray:
    """detectron2's rule, written independently of the torch implementation."""
    out = np.empty(rois.shape[:2], dtype=np.int64)
    for idx in np.ndindex(*rois.shape[:2]):
        x1, y1, x2, y2 = rois[idx]
        size = math.sqrt(max((x2 - x1) * (y2 - y1), 0.0))
        out[idx] = min(max(math.floor(CANON_LEVEL + math.log2(size / CANON + 1e-8)), 2), 5) - 2
    return out


def _boxes(rng: np.random.Generator, b: int, r: int, h: int, w: int) -> np.ndarray:
    sizes = rng.choice([2.0, 20.0, 40.0, 80.0, 160.0, 250.0], size=(b, r))
    cx, cy = rng.uniform(-20, w + 20, (b, r)), rng.uniform(-20, h + 20, (b, r))
    aspect = rng.uniform(0.5, 2.0, (b, r))
    bw, bh = sizes * np.sqrt(aspect), sizes / np.sqrt(aspect)
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1).astype(np.float32)
    boxes[0, 0] = [10.0, 12.0, 10.0, 12.0]  # degenerate: zero area
    boxes[0, 1] = [30.0, 30.0, 30.5, 30.25]  # tiny
    boxes[0, 2] = [-40.0, -30.0, 60.0, 50.0]  # partly outside (top-left)
    boxes[0, 3] = [w - 50.0, h - 40.0, w + 80.0, h + 60.0]  # partly outside (bottom-right)
    boxes[1, 0] = [0.0, 0.0, float(w), float(h)]  # whole image
    return boxes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_matches_onnxruntime_roialign(seed):
    rng = np.random.default_rng(seed)
    b, c, h, w, r = 2, 4, 160, 288, 24
    feats = [rng.standard_normal((b, c, h // s, w // s)).astype(np.float32) for s in (4, 8, 16, 32)]
    rois = _boxes(rng, b, r, h, w)
    levels = _numpy_levels(rois)
    assert set(np.unique(levels)) == {0, 1, 2, 3}, "every FPN level must be exercised"
    assert np.array_equal(levels, assign_levels(torch.from_numpy(rois), CANON, CANON_LEVEL, 2, 5).numpy())

    ours = multi_level_roi_align_reference([torch.from_numpy(f) for f in feats], torch.from_numpy(rois), ATTRS).numpy()
    batch = np.repeat(np.arange(b), r)
    expected = np.zeros_like(ours)
    for lvl, feat in enumerate(feats):
        pooled = _ort_roi_align(feat, rois.reshape(-1, 4), batch, 1.0 / 2 ** (lvl + 2)).reshape(ours.shape)
        expected += pooled * (levels == lvl)[..., None, None, None]
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)
    assert np.abs(ours).sum() > 0


def test_zero_area_box_goes_to_lowest_level():
    rois = torch.tensor([[[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 1000.0, 1000.0]]])
    assert assign_levels(rois, 224.0, 4, 2, 5).tolist() == [[0, 3]]


def test_kernel_benchmark_inputs_cover_every_level_and_the_cpu_run_reports(capsys):
    """benchmarks/roi_align_kernel.py (the GPU figure) runs here on the reference and says why not the kernel."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from roi_align_kernel import main, r50_inputs

    feats, rois, a = r50_inputs("cpu", torch.float32)
    levels = assign_levels(rois, a.canonical_box_size, a.canonical_level, 2, 5)
    assert set(levels.unique().tolist()) == {0, 1, 2, 3}
    assert main(["--device", "cpu", "--iters", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "| float32 |" in out and "runs on CUDA" in out


@pytest.mark.parametrize("seed", [0, 1])
def test_per_box_path_equals_dense_form_and_autograd_takes_the_dense_one(seed):
    """Inference pools each box once on its level; training's dense form gives the same numbers and gradients."""
    from efficientvis_trt.model.roi_align import multi_level_roi_align, multi_level_roi_align_dense

    rng = np.random.default_rng(seed)
    b, c, h, w, r = 2, 3, 96, 160, 12
    feats = [torch.from_numpy(rng.standard_normal((b, c, h // s, w // s)).astype(np.float32)) for s in (4, 8, 16, 32)]
    rois = torch.from_numpy(_boxes(rng, b, r, h, w))
    rois[1, 1] = torch.tensor([-300.0, -300.0, -200.0, -250.0])  # entirely outside: pools to 0
    rois[1, 2] = torch.tensor([0.0, 40.0, float(w), 44.0])  # 160x4: wide window on one axis
    per_box = multi_level_roi_align(feats, rois, ATTRS)
    dense = multi_level_roi_align_dense(feats, rois, ATTRS)
    np.testing.assert_allclose(per_box.numpy(), dense.numpy(), atol=1e-5, rtol=0)
    assert float(per_box[1, 1].abs().max()) == 0.0 and float(per_box[1, 2].abs().max()) > 0

    leaves = [f.clone().requires_grad_(True) for f in feats]
    out = multi_level_roi_align_reference(leaves, rois, ATTRS)
    out.square().sum().backward()
    dense_leaves = [f.clone().requires_grad_(True) for f in feats]
    multi_level_roi_align_dense(dense_leaves, rois, ATTRS).square().sum().backward()
    for got, ref in zip(leaves, dense_leaves):
        np.testing.assert_allclose(got.grad.numpy(), ref.grad.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.detach().numpy(), per_box.numpy(), atol=1e-5, rtol=0)


def test_roi_align_level_reads_only_each_boxs_window():
    """A box's result does not depend on pixels its samples never touch (and matches ORT's RoiAlign)."""
    from efficientvis_trt.model.roi_align import roi_align_level

    rng = np.random.default_rng(3)
    feature = rng.standard_normal((2, 2, 40, 60)).astype(np.float32)
    rois = np.array([[4.0, 6.0, 20.0, 18.0], [30.0, 2.0, 58.0, 39.0], [-5.0, -5.0, 3.0, 70.0]], np.float32)
    batch = np.array([0, 1, 1])
    got = roi_align_level(torch.from_numpy(feature), torch.from_numpy(rois), torch.from_numpy(batch), OUT, 1.0, RATIO)
    np.testing.assert_allclose(got.numpy(), _ort_roi_align(feature, rois, batch, 1.0), atol=1e-5, rtol=0)
    far = feature.copy()
    far[0, :, 30:, 40:] = np.nan  # far from box 0 (image 0, x <= 21, y <= 19): a dense pass would spread it
    again = roi_align_level(torch.from_numpy(far), torch.from_numpy(rois), torch.from_numpy(batch), OUT, 1.0, RATIO)
    assert torch.equal(again[0], got[0])
