"""The MultiLevelRoIAlign operator contract, shared by export, the Triton kernel and the TensorRT plugin.

ONNX node: domain ``efficientvis``, op_type ``MultiLevelRoIAlign``.
Inputs: ``P2, P3, P4, P5`` (each ``[B, C, H_l, W_l]``, stride ``2**l``) and ``rois``
``[B, R, 4]`` (x1, y1, x2, y2 in input pixels). Output ``[B, R, C, P, P]``.
Semantics: `efficientvis_trt.model.roi_align.multi_level_roi_align_reference`.
"""

from __future__ import annotations

from dataclasses import dataclass

DOMAIN = "efficientvis"
OP_TYPE = "MultiLevelRoIAlign"
PLUGIN_NAMESPACE = "efficientvis"
PLUGIN_VERSION = "1"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{OP_TYPE}"


@dataclass(frozen=True)
class RoIAlignAttrs:
    """The node's attributes (ONNX names); TensorRT reads them as plugin fields of the same names."""

    output_size: int = 14
    sampling_ratio: int = 2
    canonical_box_size: float = 224.0
    canonical_level: int = 4
    aligned: int = 1
    min_level: int = 2

    def onnx_attributes(self) -> dict:
        """All attributes written on the node, including the two the TensorRT parser binds by."""
        return {
            "output_size": int(self.output_size),
            "sampling_ratio": int(self.sampling_ratio),
            "canonical_box_size": float(self.canonical_box_size),
            "canonical_level": int(self.canonical_level),
            "aligned": int(self.aligned),
            "min_level": int(self.min_level),
            "plugin_namespace": PLUGIN_NAMESPACE,
            "plugin_version": PLUGIN_VERSION,
        }

    @classmethod
    def from_pooler(cls, pooler) -> RoIAlignAttrs:
        return cls(
            output_size=pooler.resolution,
            sampling_ratio=pooler.sampling_ratio,
            canonical_box_size=float(pooler.canonical_box_size),
            canonical_level=pooler.canonical_level,
            aligned=int(pooler.aligned),
            min_level=pooler.min_level,
        )
