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

import math
from typing import Sequence

import torch
from torch import Tensor


def assign_levels(rois: Tensor, canonical_box_size: float, canonical_level: int,
                  min_level: int, max_level: int) -> Tensor:
    """Level index (0 = min_level) of every box, ``[B, R]`` int64."""
    w = rois[..., 2] - rois[..., 0]
    h = rois[..., 3] - rois[..., 1]
    box_size = torch.sqrt((w * h).clamp(min=0.0).float())
    level = torch.floor(canonical_level + torch.log2(box_size / canonical_box_size + 1e-8))
    level = level.clamp(min=min_level, max=max_level)
    return (level - min_level).to(torch.int64)


def _sample_axis(start: Tensor, length: Tensor, pooled: int, sampling_ratio: int, size: int):
    """Sample positions along one axis -> (low index, high index, low weight, high weight, valid)."""
    bin_size = length / pooled                                                   # [B, R]
    steps = (torch.arange(pooled * sampling_ratio, device=start.device, dtype=start.dtype) + 0.5) / sampling_ratio
    pos = start[..., None] + steps * bin_size[..., None]                         # [B, R, P*S]
    valid = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0.0)
    low = pos.floor().clamp(max=size - 1)
    at_edge = low >= size - 1
    high = torch.where(at_edge, low, low + 1)
    pos = torch.where(at_edge, low, pos)
    frac = pos - low
    return low.long(), high.long(), 1.0 - frac, frac, valid


def roi_align_level(feature: Tensor, rois: Tensor, output_size: int, spatial_scale: float,
                    sampling_ratio: int, aligned: bool = True) -> Tensor:
    """Single-level RoIAlign of ``rois [B, R, 4]`` on ``feature [B, C, H, W]`` -> ``[B, R, C, P, P]``."""
    if sampling_ratio <= 0:
        raise ValueError("sampling_ratio must be > 0")
    b, c, height, width = feature.shape
    r = rois.shape[1]
    p, s = output_size, sampling_ratio
    boxes = rois.to(torch.float32) * spatial_scale
    offset = 0.5 if aligned else 0.0
    x1, y1 = boxes[..., 0] - offset, boxes[..., 1] - offset
    bw, bh = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    if not aligned:  # legacy behaviour: boxes at least one pixel
        bw, bh = bw.clamp(min=1.0), bh.clamp(min=1.0)
    xl, xh, wxl, wxh, vx = _sample_axis(x1, bw, p, s, width)     # [B, R, PS]
    yl, yh, wyl, wyh, vy = _sample_axis(y1, bh, p, s, height)

    flat = feature.reshape(b, c, height * width).float()

    def gather(yi: Tensor, xi: Tensor) -> Tensor:
        idx = (yi[..., :, None] * width + xi[..., None, :]).reshape(b, 1, -1)   # [B, 1, R*PS*PS]
        return torch.gather(flat, 2, idx.expand(b, c, idx.shape[-1])).reshape(b, c, r, p * s, p * s)

    w_ll = (wyl[..., :, None] * wxl[..., None, :])[:, None]
    w_lh = (wyl[..., :, None] * wxh[..., None, :])[:, None]
    w_hl = (wyh[..., :, None] * wxl[..., None, :])[:, None]
    w_hh = (wyh[..., :, None] * wxh[..., None, :])[:, None]
    valid = (vy[..., :, None] & vx[..., None, :])[:, None]
    val = (gather(yl, xl) * w_ll + gather(yl, xh) * w_lh + gather(yh, xl) * w_hl + gather(yh, xh) * w_hh)
    val = val * valid
    out = val.reshape(b, c, r, p, s, p, s).mean(dim=(4, 6))       # [B, C, R, P, P]
    return out.permute(0, 2, 1, 3, 4).to(feature.dtype)


def multi_level_roi_align_reference(features: Sequence[Tensor], rois: Tensor, output_size: int,
                                    sampling_ratio: int, canonical_box_size: float = 224.0,
                                    canonical_level: int = 4, aligned: bool = True,
                                    min_level: int = 2) -> Tensor:
    """Pool every box from its FPN level; ``features[i]`` has stride ``2**(min_level + i)``."""
    max_level = min_level + len(features) - 1
    levels = assign_levels(rois, canonical_box_size, canonical_level, min_level, max_level)
    out = None
    for i, feature in enumerate(features):
        pooled = roi_align_level(feature, rois, output_size, 1.0 / 2 ** (min_level + i), sampling_ratio, aligned)
        mask = (levels == i)[..., None, None, None].to(pooled.dtype)
        out = pooled * mask if out is None else out + pooled * mask
    return out


def level_strides(min_level: int, num_levels: int) -> list[int]:
    return [int(math.pow(2, min_level + i)) for i in range(num_levels)]
