"""How the exporters see MultiLevelRoIAlign: one opaque op per stage instead of its traced internals.

Two routes to the same ONNX node (`efficientvis::MultiLevelRoIAlign`, attributes from
`RoIAlignAttrs.onnx_attributes()`):

* dynamo (torch >= 2.5): a `torch.library.custom_op` with `register_fake`, translated by
  an onnxscript function. On torch 2.13 (docs/design.md, "Tool facts") its tensor parameters
  MUST carry onnxscript type annotations (`FLOAT`), else the exporter fails in its inliner.
* TorchScript (`dynamo=False`): an autograd.Function with `symbolic` (deprecated by torch,
  kept as the fallback).

Eager execution of both calls the PyTorch reference, so exporting changes no number. The
attributes are separate parameters only where torch reads the op's schema off the signature
(the custom op, its fake, the Function); each turns them back into `RoIAlignAttrs` at once.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from efficientvis_trt.model.roi_align import multi_level_roi_align_reference
from efficientvis_trt.plugins.spec import DOMAIN, OP_TYPE, RoIAlignAttrs

# A namespace of our own so the op never collides with a kernel library's registration.
TORCH_OP = "efficientvis_export::multi_level_roi_align"


@torch.library.custom_op(TORCH_OP, mutates_args=())
def multi_level_roi_align_op(
    p2: Tensor,
    p3: Tensor,
    p4: Tensor,
    p5: Tensor,
    rois: Tensor,
    output_size: int,
    sampling_ratio: int,
    canonical_box_size: float,
    canonical_level: int,
    aligned: int,
    min_level: int,
) -> Tensor:
    """rois [B, R, 4] xyxy pixels -> [B, R, C, P, P] (reference semantics)."""
    attrs = RoIAlignAttrs(output_size, sampling_ratio, canonical_box_size, canonical_level, aligned, min_level)
    return multi_level_roi_align_reference([p2, p3, p4, p5], rois, attrs)


@multi_level_roi_align_op.register_fake
def _fake(
    p2: Tensor,
    p3: Tensor,
    p4: Tensor,
    p5: Tensor,
    rois: Tensor,
    output_size: int,
    sampling_ratio: int,
    canonical_box_size: float,
    canonical_level: int,
    aligned: int,
    min_level: int,
) -> Tensor:
    return p2.new_empty((rois.shape[0], rois.shape[1], p2.shape[1], output_size, output_size))


def onnx_translation_table() -> dict:
    """`custom_translation_table` for `torch.onnx.export(..., dynamo=True)`."""
    from efficientvis_trt.export.onnxscript_ops import multi_level_roi_align

    return {torch.ops.efficientvis_export.multi_level_roi_align.default: multi_level_roi_align}


class _SymbolicRoIAlign(torch.autograd.Function):
    """TorchScript-exporter route: `symbolic` writes the custom node directly."""

    @staticmethod
    def forward(ctx, p2, p3, p4, p5, rois, *values):
        return multi_level_roi_align_reference([p2, p3, p4, p5], rois, RoIAlignAttrs(*values))

    @staticmethod
    def symbolic(g, p2, p3, p4, p5, rois, *values):
        attrs = RoIAlignAttrs(*values).onnx_attributes()
        typed = {f"{name}_{_ATTR_SUFFIX[type(v)]}": v for name, v in attrs.items()}  # g.op's name_<type> keywords
        out = g.op(f"{DOMAIN}::{OP_TYPE}", p2, p3, p4, p5, rois, **typed)
        b, r = rois.type().varyingSizes()[:2]  # B*T is dynamic (None) in the batched graph
        c = p2.type().varyingSizes()[1]
        p = attrs["output_size"]
        out.setType(p2.type().with_sizes([b, r, c, p, p]))
        return out


_ATTR_SUFFIX = {int: "i", float: "f", str: "s"}


class ExportRoIAlign(nn.Module):
    """Drop-in for `MultiLevelRoIAlign` during export: the whole multi-level pooling as one op."""

    def __init__(self, attrs: RoIAlignAttrs, route: str):
        super().__init__()
        self.attrs = attrs
        self.route = route

    def forward(self, features: list[Tensor], rois: Tensor) -> Tensor:
        args = (*features, rois, *self.attrs.values())
        if self.route == "dynamo":
            return multi_level_roi_align_op(*args)
        return _SymbolicRoIAlign.apply(*args)
