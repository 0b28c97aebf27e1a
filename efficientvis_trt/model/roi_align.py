"""Multi-level RoIAlign: the pure-PyTorch reference every other implementation must match.

Semantics (the contract shared with the ONNX function body, the Triton kernel and the
TensorRT plugin):

* ``features``: FPN levels ``min_level..max_level`` (P2..P5), each ``[B, C, H_l, W_l]``
  with stride ``2**l`` relative to the input image.
* ``rois``: ``[B, R, 4]`` boxes ``(x1, y1, x2, y2)`` in input-image pixels; box ``r`` of
  image ``b`` is pooled from image ``b`` only (no batch-index tensor needed).
* Level per box (detectron2 ``assign_boxes_to_levels``):
  ``floor(canonical_level + log2(sqrt(area) / canonical_box_size + 1e-8))`` clamped to
  ``[min_level, max_level]``; zero-area boxes land on ``min_level``.
* RoIAlign per box on its level, torchvision/ONNX semantics: ``aligned=True`` shifts by
  -0.5 pixel (ONNX ``half_pixel``); ``sampling_ratio`` samples per bin and axis; bilinear
  interpolation, samples outside ``[-1, H] x [-1, W]`` contribute 0; average over samples.
* Output: ``[B, R, C, P, P]``, dtype of the features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def assign_levels(
    rois: Tensor, canonical_box_size: float, canonical_level: int, min_level: int, max_level: int
) -> Tensor:
    """Level index (0 = min_level) of every box, ``[B, R]`` int64."""
    w = rois[..., 2] - rois[..., 0]
    h = rois[..., 3] - rois[..., 1]
    box_size = torch.sqrt((w * h).clamp(min=0.0).float())
    level = torch.floor(canonical_level + torch.log2(box_size / canonical_box_size + 1e-8))
    level = level.clamp(min=min_level, max=max_level)
    return (level - min_level).to(torch.int64)


def _sample_axis(start: Tensor, length: Tensor, pooled: int, sampling_ratio: int, size: int):
    """Sample positions along one axis -> (low index, high index, low weight, high weight, valid)."""
    bin_size = length / pooled  # [K]
    # Same arithmetic order as the ONNX/torchvision kernels: start + ph*bin + (iy + 0.5)*bin/S.
    bins = torch.arange(pooled, device=start.device, dtype=start.dtype)[:, None] * bin_size[..., None, None]
    subs = (torch.arange(sampling_ratio, device=start.device, dtype=start.dtype) + 0.5) * (
        bin_size[..., None, None] / sampling_ratio
    )
    pos = (start[..., None, None] + bins + subs).reshape(*start.shape, pooled * sampling_ratio)  # [K, P*S]
    valid = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0.0)
    low = pos.floor().clamp(max=size - 1)
    at_edge = low >= size - 1
    high = torch.where(at_edge, low, low + 1)
    pos = torch.where(at_edge, low, pos)
    frac = pos - low
    return low.long(), high.long(), 1.0 - frac, frac, valid


def _axis_weights(start: Tensor, length: Tensor, pooled: int, sampling_ratio: int, size: int) -> Tensor:
    """[..., P, size]: how much each pixel row (or column) contributes to each output bin.

    RoIAlign's bilinear sampling is separable: bin (py, px) = sum_y sum_x Wy[py, y] Wx[px, x] F[y, x],
    with the sample average, the 2-tap bilinear weights and the out-of-range rule folded into
    W. Two small matmuls then replace a gather per sample (1.5x faster forward + backward at
    tiny training shapes, and no scatter-add backward over the feature map).
    """
    low, high, w_low, w_high, valid = _sample_axis(start, length, pooled, sampling_ratio, size)
    keep = valid.to(w_low.dtype)
    weights = torch.zeros(*low.shape, size, dtype=w_low.dtype, device=low.device)
    weights.scatter_add_(-1, low[..., None], (w_low * keep)[..., None])
    weights.scatter_add_(-1, high[..., None], (w_high * keep)[..., None])
    return weights.reshape(*low.shape[:-1], pooled, sampling_ratio, size).sum(-2) / sampling_ratio


def _box_weights(
    rois: Tensor, output_size: int, spatial_scale: float, sampling_ratio: int, aligned: bool, height: int, width: int
) -> tuple[Tensor, Tensor]:
    """(Wy [..., P, H], Wx [..., P, W]) of boxes [..., 4] on a feature map of that size."""
    if sampling_ratio <= 0:
        raise ValueError("sampling_ratio must be > 0")
    boxes = rois.to(torch.float32) * spatial_scale
    offset = 0.5 if aligned else 0.0
    bw, bh = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    if not aligned:  # legacy behaviour: boxes at least one pixel
        bw, bh = bw.clamp(min=1.0), bh.clamp(min=1.0)
    wy = _axis_weights(boxes[..., 1] - offset, bh, output_size, sampling_ratio, height)
    wx = _axis_weights(boxes[..., 0] - offset, bw, output_size, sampling_ratio, width)
    return wy, wx


def roi_align_level(
    feature: Tensor,
    rois: Tensor,
    batch_index: Tensor,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool = True,
) -> Tensor:
    """Single-level RoIAlign of flat ``rois [K, 4]`` (image ``batch_index [K]``) on ``feature [B, C, H, W]``.

    Returns ``[K, C, P, P]``.
    """
    height, width = feature.shape[-2:]
    wy, wx = _box_weights(rois, output_size, spatial_scale, sampling_ratio, aligned, height, width)
    maps = feature.float()[batch_index.long()]  # [K, C, H, W]
    out = wy[:, None] @ maps @ wx[:, None].transpose(-1, -2)  # [K, C, P, P]
    return out.to(feature.dtype)


def multi_level_roi_align_reference(
    features: Sequence[Tensor],
    rois: Tensor,
    output_size: int,
    sampling_ratio: int,
    canonical_box_size: float = 224.0,
    canonical_level: int = 4,
    aligned: bool = True,
    min_level: int = 2,
) -> Tensor:
    """Pool every box from its FPN level; ``features[i]`` has stride ``2**(min_level + i)``.

    ``rois [B, R, 4]`` -> ``[B, R, C, P, P]``. Each level pools only its own boxes: the
    weights of boxes on other levels are zeroed, and a level without boxes is skipped.
    """
    b, r = rois.shape[:2]
    c = features[0].shape[1]
    max_level = min_level + len(features) - 1
    levels = assign_levels(rois, canonical_box_size, canonical_level, min_level, max_level)
    out = features[0].new_zeros((b, r, c, output_size, output_size), dtype=torch.float32)
    for i, feature in enumerate(features):
        on_level = levels == i
        if not bool(on_level.any()):
            continue
        height, width = feature.shape[-2:]
        wy, wx = _box_weights(rois, output_size, 1.0 / 2 ** (min_level + i), sampling_ratio, aligned, height, width)
        wy = wy * on_level[..., None, None].to(wy.dtype)
        rows = torch.einsum("brph,bchw->brcpw", wy, feature.float())  # per image: no per-box copies
        out = out + torch.einsum("brcpw,brqw->brcpq", rows, wx)
    return out.to(features[0].dtype)
