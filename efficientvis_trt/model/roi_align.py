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

Two implementations of these semantics (docs/roi-align.md, "Per-box pooling"):

* `multi_level_roi_align` (inference, export verification): each box pooled once, on its
  own level, from the window of feature pixels its samples touch;
* `multi_level_roi_align_dense` (training): per level, every box through dense separable
  weights (zero for boxes of other levels), two einsums per image and no per-box copies;
  more arithmetic, but a cheaper backward at training shapes (benchmarks/RESULTS.md,
  "RoIAlign without waste").

`multi_level_roi_align_reference` picks between them: dense while autograd records, per
box otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from efficientvis_trt.plugins.spec import RoIAlignAttrs


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
    W. Two small matmuls then replace a gather per sample (faster forward + backward at training
    shapes, and no scatter-add backward over the feature map: benchmarks/RESULTS.md, "Training").
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


def _axis_window(start: Tensor, length: Tensor, pooled: int, sampling_ratio: int, size: int) -> tuple:
    """Axis weights on the pixels each box's samples touch: (weights [K, P, n], first [K], extent [K]).

    Box k's samples touch pixels ``first[k] .. first[k] + extent[k] - 1``; its weights
    there are ``weights[k, :, :extent[k]]`` (zero beyond), the same sums as `_axis_weights`
    on those pixels. ``n`` is the largest extent.
    """
    low, high, w_low, w_high, valid = _sample_axis(start, length, pooled, sampling_ratio, size)
    k = low.shape[0]
    first = torch.where(valid, low, size).amin(-1) if k else low.new_zeros((0,))
    last = torch.where(valid, high, -1).amax(-1) if k else low.new_zeros((0,))
    first = torch.where(last >= 0, first, 0)  # no valid sample: a 1-pixel window, all weights 0
    extent = torch.where(last >= 0, last - first, 0) + 1
    n = int(extent.max()) if k else 1
    keep = valid.to(w_low.dtype)
    weights = torch.zeros(*low.shape, n, dtype=w_low.dtype, device=low.device)
    weights.scatter_add_(-1, (low - first[:, None]).clamp(0, n - 1)[..., None], (w_low * keep)[..., None])
    weights.scatter_add_(-1, (high - first[:, None]).clamp(0, n - 1)[..., None], (w_high * keep)[..., None])
    return weights.reshape(k, pooled, sampling_ratio, n).sum(-2) / sampling_ratio, first, extent


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

    Returns ``[K, C, P, P]``. Each box reads only the window of pixels its samples touch
    (a view of the map, ``[C, n_y, n_x]``), contracted with the window's separable weights:
    ``Wy @ window @ Wx^T``, the dense form's order of sums without its zero terms.
    """
    if sampling_ratio <= 0:
        raise ValueError("sampling_ratio must be > 0")
    height, width = feature.shape[-2:]
    boxes = rois.to(torch.float32) * spatial_scale
    offset = 0.5 if aligned else 0.0
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if not aligned:  # legacy behaviour: boxes at least one pixel
        bw, bh = bw.clamp(min=1.0), bh.clamp(min=1.0)
    wy, y0, ny = _axis_window(boxes[:, 1] - offset, bh, output_size, sampling_ratio, height)
    wx, x0, nx = _axis_window(boxes[:, 0] - offset, bw, output_size, sampling_ratio, width)
    maps = feature.float()
    if boxes.shape[0] == 0:
        return maps.new_zeros((0, maps.shape[1], output_size, output_size)).to(feature.dtype)
    wx_t = wx.transpose(1, 2)
    pooled = [
        (wy[k, :, :h] @ maps[b, :, y : y + h, x : x + w]) @ wx_t[k, :w]
        for k, (b, y, h, x, w) in enumerate(
            zip(batch_index.tolist(), y0.tolist(), ny.tolist(), x0.tolist(), nx.tolist(), strict=True)
        )
    ]
    return torch.stack(pooled).to(feature.dtype)  # [K, C, P, P]


def multi_level_roi_align(features: Sequence[Tensor], rois: Tensor, attrs: RoIAlignAttrs) -> Tensor:
    """Pool every box once, from its own FPN level; ``features[i]`` has stride ``2**(min_level + i)``.

    ``rois [B, R, 4]`` -> ``[B, R, C, P, P]``: per level, the level's boxes (possibly none)
    through `roi_align_level`, then back into box order, as the ONNX function body does.
    """
    output_size, sampling_ratio, min_level = attrs.output_size, attrs.sampling_ratio, attrs.min_level
    b, r = rois.shape[:2]
    c = features[0].shape[1]
    max_level = min_level + len(features) - 1
    flat = rois.reshape(-1, 4)
    levels = assign_levels(rois, attrs.canonical_box_size, attrs.canonical_level, min_level, max_level).reshape(-1)
    batch = torch.arange(b, device=rois.device).repeat_interleave(r)
    order, pooled = [], []
    for i, feature in enumerate(features):
        sel = torch.nonzero(levels == i).reshape(-1)
        if sel.numel() == 0:
            continue
        scale = 1.0 / 2 ** (min_level + i)
        pooled.append(
            roi_align_level(feature, flat[sel], batch[sel], output_size, scale, sampling_ratio, bool(attrs.aligned))
        )
        order.append(sel)
    if not pooled:  # no boxes at all
        return features[0].new_zeros((b, r, c, output_size, output_size))
    stacked = torch.cat(pooled).float()
    inverse = torch.empty_like(levels)
    inverse[torch.cat(order)] = torch.arange(levels.numel(), device=levels.device)
    return stacked[inverse].reshape(b, r, c, output_size, output_size).to(features[0].dtype)


def multi_level_roi_align_dense(
    features: Sequence[Tensor], rois: Tensor, attrs: RoIAlignAttrs, skip_empty_levels: bool = True
) -> Tensor:
    """`multi_level_roi_align` in the dense separable form (training: cheaper backward).

    Each level runs every box through dense weights over the whole map, zeroed for boxes
    of other levels; a level without boxes is skipped unless `skip_empty_levels` is False,
    which leaves no host sync (no nonzero, no .tolist(), no bool of a tensor): CUDA-graph capturable.
    """
    output_size, sampling_ratio, min_level = attrs.output_size, attrs.sampling_ratio, attrs.min_level
    b, r = rois.shape[:2]
    c = features[0].shape[1]
    max_level = min_level + len(features) - 1
    levels = assign_levels(rois, attrs.canonical_box_size, attrs.canonical_level, min_level, max_level)
    out = features[0].new_zeros((b, r, c, output_size, output_size), dtype=torch.float32)
    for i, feature in enumerate(features):
        on_level = levels == i
        if skip_empty_levels and not bool(on_level.any()):
            continue
        height, width = feature.shape[-2:]
        scale = 1.0 / 2 ** (min_level + i)
        wy, wx = _box_weights(rois, output_size, scale, sampling_ratio, bool(attrs.aligned), height, width)
        wy = wy * on_level[..., None, None].to(wy.dtype)
        rows = torch.einsum("brph,bchw->brcpw", wy, feature.float())  # per image: no per-box copies
        out = out + torch.einsum("brcpw,brqw->brcpq", rows, wx)
    return out.to(features[0].dtype)


def multi_level_roi_align_reference(features: Sequence[Tensor], rois: Tensor, attrs: RoIAlignAttrs) -> Tensor:
    """The PyTorch MultiLevelRoIAlign: dense separable while autograd records, else once per box on its level."""
    dense = torch.is_grad_enabled() and (rois.requires_grad or any(f.requires_grad for f in features))
    impl = multi_level_roi_align_dense if dense else multi_level_roi_align
    return impl(features, rois, attrs)
