"""The MultiLevelRoIAlign operator contract, shared by export, the Triton kernel and the TensorRT plugin.

ONNX node: domain ``efficientvis``, op_type ``MultiLevelRoIAlign``.
Inputs: ``P2, P3, P4, P5`` (each ``[B, C, H_l, W_l]``, stride ``2**l``) and ``rois``
``[B, R, 4]`` (x1, y1, x2, y2 in input pixels). Output ``[B, R, C, P, P]``.
Semantics: `efficientvis_trt.model.roi_align.multi_level_roi_align_reference`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from efficientvis_trt.errors import EvisError

DOMAIN = "efficientvis"
OP_TYPE = "MultiLevelRoIAlign"
PLUGIN_NAMESPACE = "efficientvis"
PLUGIN_VERSION = "1"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{OP_TYPE}"


@dataclass(frozen=True)
class RoIAlignAttrs:
    """The node's attributes, the one value every implementation takes (reference, export, Triton kernel,
    TensorRT plugin), so the list is written once: here. Field order is the node's attribute order, and
    TensorRT reads them as plugin fields of the same names."""

    output_size: int = 14
    sampling_ratio: int = 2
    canonical_box_size: float = 224.0
    canonical_level: int = 4
    aligned: int = 1
    min_level: int = 2

    @classmethod
    def kinds(cls) -> dict[str, type]:
        """name -> int or float, in field order (how the node stores each attribute)."""
        return {f.name: _KINDS[str(f.type)] for f in fields(cls)}

    def values(self) -> tuple:
        """The attributes in field order, typed as the node stores them (the custom op's trailing arguments)."""
        return tuple(kind(getattr(self, name)) for name, kind in self.kinds().items())

    def onnx_attributes(self) -> dict[str, Any]:
        """All attributes written on the node, including the two the TensorRT parser binds by."""
        return {
            **dict(zip(self.kinds(), self.values())),
            "plugin_namespace": PLUGIN_NAMESPACE,
            "plugin_version": PLUGIN_VERSION,
        }

    @classmethod
    def from_onnx_attributes(cls, attrs: Mapping[str, Any]) -> RoIAlignAttrs:
        """The value a node's attribute dict holds (the binding attributes and unknown names are ignored)."""
        return cls(**{name: kind(attrs[name]) for name, kind in cls.kinds().items() if name in attrs})

    def plugin_fields(self) -> dict[str, Any]:
        """The plugin attribute values (1-element int32/float32 arrays) for ``trtp.op`` / ``network.add_plugin``."""
        import numpy as np

        dtypes = {int: np.int32, float: np.float32}
        return {name: np.array([v], dtype=dtypes[type(v)]) for name, v in zip(self.kinds(), self.values())}

    @classmethod
    def from_plugin_fields(cls, *values: Any, **named: Any) -> RoIAlignAttrs:
        """The value from plugin attribute values, in field order or by field name, as ``tensorrt.plugin``
        hands them over (1-element arrays, numpy scalars or numbers)."""
        kinds = cls.kinds()
        if named:
            if values or set(named) != set(kinds):
                raise EvisError(f"MultiLevelRoIAlign takes the attributes {list(kinds)}, got {list(named)}")
            values = tuple(named[name] for name in kinds)
        if len(values) != len(kinds):
            raise EvisError(f"MultiLevelRoIAlign takes {len(kinds)} attributes, got {len(values)}")
        return cls(*(plugin_scalar(v, kind) for v, kind in zip(values, kinds.values())))

    @classmethod
    def from_pooler(cls, pooler: Any) -> RoIAlignAttrs:
        """The value a `config.PoolerConfig` describes."""
        return cls(
            output_size=pooler.resolution,
            sampling_ratio=pooler.sampling_ratio,
            canonical_box_size=float(pooler.canonical_box_size),
            canonical_level=pooler.canonical_level,
            aligned=int(pooler.aligned),
            min_level=pooler.min_level,
        )


_KINDS = {"int": int, "float": float}  # field annotations are strings (postponed evaluation)


def plugin_scalar(value: Any, kind: type) -> Any:
    """A plugin field (1-element numpy array, numpy scalar or Python number) -> int/float."""
    import numpy as np

    arr = np.asarray(value).reshape(-1)
    if arr.size != 1:
        raise EvisError(f"MultiLevelRoIAlign attribute must be a scalar, got {value!r}")
    return kind(arr[0].item())
