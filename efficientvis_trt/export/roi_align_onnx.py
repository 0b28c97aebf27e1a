"""MultiLevelRoIAlign as an ONNX model-local function built from standard ops only.

Why a function: one graph then serves every backend (docs/contract.md, "RoIAlign node";
docs/roi-align.md, "One op in every backend"). ONNX Runtime, OpenVINO (after inlining) and a
TensorRT without our plugin run the body; TensorRT with the plugin binds the node itself.

The body is parameterised by the node's attributes through ONNX attribute references,
so every stage's node carries its own values and one function serves them all:

* level per box: ``floor(canonical_level + log2(sqrt(max(w*h, 0)) / canonical_box_size
  + 1e-8))`` clamped to ``[min_level, min_level + L - 1]`` (detectron2, as
  `efficientvis_trt.model.roi_align.assign_levels`);
* each box is pooled once, on its own level (docs/roi-align.md, "Per-box pooling"):
  ``NonZero`` picks level ``l``'s boxes (possibly none), ``Gather`` takes them and their
  image index, ``RoiAlign(P_l, rois * 2**-l, spatial_scale=1)`` pools them (scaling by a
  power of two is exact, and it lets the level's scale come from the ``min_level``
  attribute, which a ``spatial_scale`` attribute reference could not do);
* the per-level results are concatenated and put back in box order by a ``Gather`` with
  the inverse of the level-by-level order (``ScatterElements`` of ``0..K-1``).

``aligned`` cannot be referenced into RoiAlign's string ``coordinate_transformation_mode``,
so the body bakes ``half_pixel`` (aligned=1, the only exported setting).
"""

from __future__ import annotations

import math

import onnx
from onnx import AttributeProto, FunctionProto, NodeProto, TensorProto, helper

from efficientvis_trt.plugins.spec import DOMAIN, OP_TYPE, PLUGIN_NAMESPACE, PLUGIN_VERSION, RoIAlignAttrs

NUM_LEVELS = 4  # P2..P5 (the spec's fixed input list)
LEVEL_INPUTS = ("P2", "P3", "P4", "P5")
INT_ATTRS = tuple(n for n, kind in RoIAlignAttrs.kinds().items() if kind is int)
FLOAT_ATTRS = tuple(n for n, kind in RoIAlignAttrs.kinds().items() if kind is float)
STRING_ATTRS = ("plugin_namespace", "plugin_version")
MIN_OPSET = 16  # RoiAlign's coordinate_transformation_mode (half_pixel) appears in opset 16


class _Body:
    """Tiny node builder with unique value names."""

    def __init__(self) -> None:
        self.nodes: list[NodeProto] = []
        self._count = 0

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> list[str]:
        outs = [f"_{op_type.lower()}_{self._count}_{i}" for i in range(n_out)]
        self._count += 1
        node = helper.make_node(op_type, inputs, outs)
        for key, value in attrs.items():
            node.attribute.append(value if isinstance(value, AttributeProto) else helper.make_attribute(key, value))
        self.nodes.append(node)
        return outs

    def one(self, op_type: str, inputs: list[str], **attrs) -> str:
        return self.op(op_type, inputs, **attrs)[0]

    def const(self, value: float | int | list, dtype: int = TensorProto.FLOAT) -> str:
        """A Constant: a scalar for a number, a 1-D tensor for a list."""
        is_list = isinstance(value, (list, tuple))
        vals = list(value) if is_list else [value]
        tensor = helper.make_tensor("v", dtype, [len(vals)] if is_list else [], vals)
        return self.one("Constant", [], value=tensor)

    def ref_constant(self, ref: AttributeProto) -> str:
        """A Constant whose value is the calling node's attribute (an ONNX attribute reference)."""
        return self.one("Constant", [], value=ref)


def _ref(name: str, attr: str, attr_type: int) -> AttributeProto:
    """Attribute `name` of a body node bound to the calling node's attribute `attr`."""
    a = helper.make_attribute_ref(name, attr_type)
    a.ref_attr_name = attr
    return a


def build_function(opset: int) -> FunctionProto:
    """The model-local function `efficientvis::MultiLevelRoIAlign` (standard ops, attribute-parameterised)."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} < {MIN_OPSET}")
    b = _Body()
    rois = "rois"
    shape = b.one("Shape", [rois])  # [B, R, 4]
    br = b.one("Slice", [shape, b.const([0], TensorProto.INT64), b.const([2], TensorProto.INT64)])
    flat = b.one("Reshape", [rois, b.const([-1, 4], TensorProto.INT64)])  # [K, 4]
    k = b.one("ReduceProd", [br], keepdims=0)  # K = B*R (scalar)
    r = b.one(
        "Squeeze",
        [
            b.one("Slice", [shape, b.const([1], TensorProto.INT64), b.const([2], TensorProto.INT64)]),
            b.const([0], TensorProto.INT64),
        ],
    )
    arange = b.one("Range", [b.const(0, TensorProto.INT64), k, b.const(1, TensorProto.INT64)])
    batch_idx = b.one("Div", [arange, b.one("Max", [r, b.const(1, TensorProto.INT64)])])  # image of each box

    x1, y1, x2, y2 = (
        b.op("Split", [flat], n_out=4, axis=1, num_outputs=4)
        if opset >= 18
        else b.op("Split", [flat, b.const([1, 1, 1, 1], TensorProto.INT64)], n_out=4, axis=1)
    )
    area = b.one("Relu", [b.one("Mul", [b.one("Sub", [x2, x1]), b.one("Sub", [y2, y1])])])
    size = b.one("Sqrt", [area])
    canon_size = b.ref_constant(_ref("value_float", "canonical_box_size", AttributeProto.FLOAT))
    ratio = b.one("Add", [b.one("Div", [size, canon_size]), b.const(1e-8)])
    log2 = b.one("Div", [b.one("Log", [ratio]), b.const(math.log(2.0))])
    canon_level = b.one(
        "Cast", [b.ref_constant(_ref("value_int", "canonical_level", AttributeProto.INT))], to=TensorProto.FLOAT
    )
    min_level = b.one(
        "Cast", [b.ref_constant(_ref("value_int", "min_level", AttributeProto.INT))], to=TensorProto.FLOAT
    )
    max_level = b.one("Add", [min_level, b.const(float(NUM_LEVELS - 1))])
    level = b.one("Floor", [b.one("Add", [canon_level, log2])])
    level = b.one("Clip", [level, min_level, max_level])
    index_flat = b.one("Reshape", [b.one("Sub", [level, min_level]), b.const([-1], TensorProto.INT64)])  # [K]

    roi_attrs = dict(
        output_height=_ref("output_height", "output_size", AttributeProto.INT),
        output_width=_ref("output_width", "output_size", AttributeProto.INT),
        sampling_ratio=_ref("sampling_ratio", "sampling_ratio", AttributeProto.INT),
        spatial_scale=1.0,
        mode="avg",
        coordinate_transformation_mode="half_pixel",
    )
    # Each level pools only its own boxes: NonZero picks them (possibly none), RoiAlign pools them.
    order, pooled = [], []
    for i, feat in enumerate(LEVEL_INPUTS):
        on_level = b.one("NonZero", [b.one("Equal", [index_flat, b.const(float(i))])])  # [1, n_i]
        sel = b.one("Reshape", [on_level, b.const([-1], TensorProto.INT64)])  # [n_i]
        scale = b.one("Pow", [b.const(2.0), b.one("Neg", [b.one("Add", [min_level, b.const(float(i))])])])
        level_rois = b.one("Mul", [b.one("Gather", [flat, sel], axis=0), scale])
        level_batch = b.one("Gather", [batch_idx, sel], axis=0)
        pooled.append(b.one("RoiAlign", [feat, level_rois, level_batch], **roi_attrs))  # [n_i, C, P, P]
        order.append(sel)
    # Back to box order: box order[j] is row j of `stacked`, so row k of the output is stacked[inverse[k]].
    order_all = b.one("Concat", order, axis=0)  # [K], a permutation of 0..K-1
    stacked = b.one("Concat", pooled, axis=0)  # [K, C, P, P], level by level
    inverse = b.one("ScatterElements", [arange, order_all, arange], axis=0)
    out = b.one("Gather", [stacked, inverse], axis=0)
    cpp = b.one("Slice", [b.one("Shape", [out]), b.const([1], TensorProto.INT64), b.const([4], TensorProto.INT64)])
    # allowzero: a 0 in [B, R] is a size (R = 0 boxes), not "copy this dimension"
    b.nodes.append(helper.make_node("Reshape", [out, b.one("Concat", [br, cpp], axis=0)], ["pooled"], allowzero=1))

    fn = helper.make_function(
        DOMAIN,
        OP_TYPE,
        list(LEVEL_INPUTS) + ["rois"],
        ["pooled"],
        b.nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=list(INT_ATTRS + FLOAT_ATTRS),
        doc_string="Multi-level RoIAlign (detectron2 level rule, aligned=1) from standard ops; "
        "semantics: efficientvis_trt.model.roi_align.multi_level_roi_align_reference",
    )
    # The TensorRT binding attributes are optional in the body (defaults), so a node without them still runs.
    for name, default in (("plugin_namespace", PLUGIN_NAMESPACE), ("plugin_version", PLUGIN_VERSION)):
        fn.attribute_proto.append(helper.make_attribute(name, default))
    return fn


def attach_function(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Add (or replace) the local function and make sure the domain is imported."""
    keep = [f for f in model.functions if not (f.domain == DOMAIN and f.name == OP_TYPE)]
    del model.functions[:]
    model.functions.extend(keep + [build_function(opset)])
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return model


def inline_function(model: onnx.ModelProto) -> onnx.ModelProto:
    """The `inline` flavour: every custom node replaced by the function body, no custom domain left."""
    from onnx import inliner

    model = inliner.inline_local_functions(model)
    keep = [o for o in model.opset_import if o.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    del model.functions[:]
    return model


def custom_nodes(model: onnx.ModelProto) -> list[NodeProto]:
    """The graph's MultiLevelRoIAlign nodes (top-level graph)."""
    return [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == OP_TYPE]


def node_attributes(node: NodeProto) -> dict:
    return {
        a.name: (a.s.decode() if a.type == AttributeProto.STRING else helper.get_attribute_value(a))
        for a in node.attribute
    }
