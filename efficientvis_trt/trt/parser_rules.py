"""TensorRT's ONNX parser rules, checked on the ONNX graph alone (no TensorRT, no GPU).

Why: our CPU tests never import a graph into TensorRT, so a graph the parser refuses (the uint8
Reshape of issue #24) passed every API-conformance test. These rules restate what onnx-tensorrt's
parser accepts, per TensorRT version we claim (10.3 .. 11.x), each citing the file and tag it comes
from (docs/tensorrt.md, "Parser rules"). ``check_model`` returns every violation; ``check_bundle``
raises one line naming graph, node, rule and version. ``prepare_for_tensorrt`` is the one rewrite
TensorRT's graph gets (LayerNormalization in explicit fp32 ops); the rules judge its result.

Sources (``S_*`` below): onnx/onnx-tensorrt tag ``release/10.1-GA`` (ModelImporter.cpp,
onnxOpImporters.cpp, docs/operators.md: the newest tag the stored mirror holds, taken as the floor
for 10.3-10.15 because the 10.3 submodule commit 62bdde2 is not stored), and docs/operators.md at the
submodule commits NVIDIA/TensorRT pins for v10.16 (6bde659) and v11.1 (7c51a63). Every row our graphs
use is the same in all three tables; newer tables only add operators.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from efficientvis_trt.errors import EvisError

S_IMPORTER = "onnx-tensorrt release/10.1-GA ModelImporter.cpp"
S_OPS = "onnx-tensorrt release/10.1-GA onnxOpImporters.cpp"
S_DOC = "onnx-tensorrt release/10.1-GA docs/operators.md"
S_DOC_1016 = "onnx-tensorrt docs/operators.md @6bde659 (NVIDIA/TensorRT v10.16 parsers/onnx)"
S_DOC_111 = "onnx-tensorrt docs/operators.md @7c51a63 (NVIDIA/TensorRT v11.1 parsers/onnx)"
S_NVINFER = "NVIDIA/TensorRT v10.3.0 include/NvInfer.h (INormalizationLayer::setComputePrecision)"
S_PLUGIN = "docs/roi-align.md and onnx-tensorrt release/10.1-GA ModelImporter.cpp (plugin fallback)"

PLUGIN_DOMAIN = "efficientvis"
PLUGIN_OP = "MultiLevelRoIAlign"


@dataclass(frozen=True)
class RuleSet:
    """The rules of one span of TensorRT versions."""

    versions: str  # e.g. "10.3-10.15"
    opset: tuple[int, int]  # default-domain opsets the parser documents
    opset_source: str
    uint8_constants: bool  # 11.x: a Constant may produce uint8 (ModelImporter's legalUINT8)


# The versions the project claims (docs/tensorrt.md, "Version matrix"), in three spans.
RULE_SETS: tuple[RuleSet, ...] = (
    RuleSet("10.3-10.15", (9, 20), S_DOC + ' ("inclusive range of opset 9 to opset 20")', False),
    RuleSet("10.16", (9, 24), S_DOC_1016 + ' ("opset 9 to opset 24")', False),
    RuleSet("11.x", (9, 24), S_DOC_111 + ' ("opset 9 to opset 24")', True),
)

# Supported operators and the input types of their data input, from the "Supported Types" column of
# onnx-tensorrt release/10.1-GA docs/operators.md (rows marked Y). The 10.16 and 11.1 tables keep these.
SUPPORTED: dict[str, str] = {
    "Abs": "FP32 FP16 BF16 INT32 INT64",
    "Acos": "FP32 FP16 BF16",
    "Acosh": "FP32 FP16 BF16",
    "Add": "FP32 FP16 BF16 INT32 INT64",
    "And": "BOOL",
    "ArgMax": "FP32 FP16 BF16 INT32 INT64",
    "ArgMin": "FP32 FP16 BF16 INT32 INT64",
    "Asin": "FP32 FP16 BF16",
    "Asinh": "FP32 FP16 BF16",
    "Atan": "FP32 FP16 BF16",
    "Atanh": "FP32 FP16 BF16",
    "AveragePool": "FP32 FP16 BF16",
    "BatchNormalization": "FP32 FP16 BF16",
    "Cast": "FP32 FP16 BF16 INT32 INT64 UINT8 BOOL",
    "CastLike": "FP32 FP16 BF16 INT32 INT64 UINT8 BOOL",
    "Ceil": "FP32 FP16 BF16",
    "Celu": "FP32 FP16 BF16",
    "Clip": "FP32 FP16 BF16",
    "Concat": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Constant": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "ConstantOfShape": "FP32 FP16 BF16 INT32 INF64 BOOL",
    "Conv": "FP32 FP16 BF16",
    "ConvTranspose": "FP32 FP16 BF16",
    "Cos": "FP32 FP16 BF16",
    "Cosh": "FP32 FP16 BF16",
    "CumSum": "FP32 FP16 BF16",
    "DeformConv": "FP32 FP16",
    "DepthToSpace": "FP32 FP16 BF16 INT32 INT64",
    "DequantizeLinear": "INT8 FP8 INT4",
    "Div": "FP32 FP16 BF16 INT32 INT64",
    "Dropout": "FP32 FP16 BF16",
    "Einsum": "FP32 FP16 BF16",
    "Elu": "FP32 FP16 BF16",
    "Equal": "FP32 FP16 BF16 INT32 INT64",
    "Erf": "FP32 FP16 BF16",
    "Exp": "FP32 FP16 BF16",
    "Expand": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "EyeLike": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Flatten": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Floor": "FP32 FP16 BF16",
    "GRU": "FP32 FP16 BF16",
    "Gather": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "GatherElements": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "GatherND": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Gelu": "FP32 FP16 BF16 INT8 INT32 INT64",
    "Gemm": "FP32 FP16 BF16",
    "GlobalAveragePool": "FP32 FP16 BF16",
    "GlobalLpPool": "FP32 FP16 BF16",
    "GlobalMaxPool": "FP32 FP16 BF16",
    "Greater": "FP32 FP16 BF16 INT32 INT64",
    "GreaterOrEqual": "FP32 FP16 BF16 INT32 INT64",
    "GridSample": "FP32 FP16",
    "GroupNormalization": "FP32 FP16 BF16",
    "HardSigmoid": "FP32 FP16 BF16",
    "HardSwish": "FP32 FP16 BF16",
    "Hardmax": "FP32 FP16 BF16",
    "Identity": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "If": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "ImageScaler": "FP32 FP16 BF16",
    "InstanceNormalization": "FP32 FP16 BF16",
    "IsInf": "FP32 FP16 BF16",
    "IsNaN": "FP32 FP16 BF16 INT32 INT64",
    "LRN": "FP32 FP16 BF16",
    "LSTM": "FP32 FP16 BF16",
    "LayerNormalization": "FP32 FP16 BF16",
    "LeakyRelu": "FP32 FP16 BF16",
    "Less": "FP32 FP16 BF16 INT32 INT64",
    "LessOrEqual": "FP32 FP16 BF16 INT32 INT64",
    "Log": "FP32 FP16 BF16",
    "LogSoftmax": "FP32 FP16 BF16",
    "Loop": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "LpNormalization": "FP32 FP16 BF16",
    "LpPool": "FP32 FP16 BF16",
    "MatMul": "FP32 FP16 BF16",
    "Max": "FP32 FP16 BF16 INT32 INT64",
    "MaxPool": "FP32 FP16 BF16",
    "Mean": "FP32 FP16 BF16 FP8 INT32 INT64",
    "MeanVarianceNormalization": "FP32 FP16 BF16",
    "Min": "FP32 FP16 BF16 INT32 INT64",
    "Mish": "FP32 FP16",
    "Mod": "FP32 FP16 BF16 INT32 INT64",
    "Mul": "FP32 FP16 BF16 INT32 INT64",
    "Neg": "FP32 FP16 BF16 INT32 INT64",
    "NonMaxSuppression": "FP32 FP16",
    "NonZero": "FP32 FP16",
    "Not": "BOOL",
    "OneHot": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Or": "BOOL",
    "PRelu": "FP32 FP16 BF16",
    "Pad": "FP32 FP16 BF16 INT32 INT64",
    "ParametricSoftplus": "FP32 FP16 BF16",
    "Pow": "FP32 FP16 BF16",
    "QuantizeLinear": "FP32 FP16 BF16",
    "RNN": "FP32 FP16 BF16",
    "RandomNormal": "FP32 FP16 BF16",
    "RandomNormalLike": "FP32 FP16 BF16",
    "RandomUniform": "FP32 FP16 BF16",
    "RandomUniformLike": "FP32 FP16 BF16",
    "Range": "FP32 FP16 BF16 INT32 INT64",
    "Reciprocal": "FP32 FP16 BF16",
    "ReduceL1": "FP32 FP16 BF16 INT32 INT64",
    "ReduceL2": "FP32 FP16 BF16 INT32 INT64",
    "ReduceLogSum": "FP32 FP16 BF16 INT32 INT64",
    "ReduceLogSumExp": "FP32 FP16 BF16 INT32 INT64",
    "ReduceMax": "FP32 FP16 BF16 INT32 INT64",
    "ReduceMean": "FP32 FP16 BF16 INT32 INT64",
    "ReduceMin": "FP32 FP16 BF16 INT32 INT64",
    "ReduceProd": "FP32 FP16 BF16 INT32 INT64",
    "ReduceSum": "FP32 FP16 BF16 INT32 INT64",
    "ReduceSumSquare": "FP32 FP16 BF16 INT32 INT64",
    "Relu": "FP32 FP16 BF16 INT32 INT64",
    "Reshape": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Resize": "FP32 FP16 BF16",
    "ReverseSequence": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "RoiAlign": "FP32 FP16",
    "Round": "FP32 FP16 BF16",
    "ScaledTanh": "FP32 FP16 BF16",
    "Scan": "FP32 FP16 BF16",
    "Scatter": "FP32 FP16 BF16 INT32 INT64",
    "ScatterElements": "FP32 FP16 BF16 INT32 INT64",
    "ScatterND": "FP32 FP16 BF16 INT32 INT64",
    "Selu": "FP32 FP16 BF16",
    "Shape": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Shrink": "FP32 FP16 BF16 INT32 INT64",
    "Sigmoid": "FP32 FP16 BF16",
    "Sign": "FP32 FP16 BF16 INT32 INT64",
    "Sin": "FP32 FP16 BF16",
    "Sinh": "FP32 FP16 BF16",
    "Size": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Slice": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Softmax": "FP32 FP16 BF16",
    "Softplus": "FP32 FP16 BF16",
    "Softsign": "FP32 FP16 BF16",
    "SpaceToDepth": "FP32 FP16 BF16 INT32 INT64",
    "Split": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Sqrt": "FP32 FP16 BF16",
    "Squeeze": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Sub": "FP32 FP16 BF16 INT32 INT64",
    "Sum": "FP32 FP16 BF16 INT32 INT64",
    "Tan": "FP32 FP16 BF16",
    "Tanh": "FP32 FP16 BF16",
    "ThresholdedRelu": "FP32 FP16 BF16",
    "Tile": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "TopK": "FP32 FP16 BF16 INT32 INT64",
    "Transpose": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Trilu": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Unsqueeze": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Upsample": "FP32 FP16 BF16",
    "Where": "FP32 FP16 BF16 INT32 INT64 BOOL",
    "Xor": "BOOL",
}
# Where an importer's own check is wider than the table, the source wins (cited per entry).
SUPPORTED_BY_SOURCE: dict[str, tuple[str, str]] = {
    # NonZero importer: "Only FLOAT32, FLOAT16, BFLOAT16, INT32, INT64, INT8 or BOOL input is supported"
    "NonZero": ("FP32 FP16 BF16 INT32 INT64 INT8 BOOL", S_OPS + " NonZero importer"),
}

ONNX_TYPE_NAMES = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    6: "INT32",
    7: "INT64",
    9: "BOOL",
    10: "FP16",
    11: "DOUBLE",
    16: "BF16",
}

# Inputs that must be known when the network is built: (op, input index) -> the table's words.
CONSTANT_INPUTS: dict[tuple[str, int], str] = {
    ("Slice", 3): "`axes` must be an initializer",
    ("Squeeze", 1): "`axes` must be an initializer",
    ("Unsqueeze", 1): "`axes` must be a constant tensor",
    ("Pad", 3): "`axes` must be an initializer",
    ("CumSum", 1): "`axis` must be an initializer",
    ("OneHot", 1): "`depth` must be a build-time constant",
    **{
        (op, 1): "`axes` must be an initializer"
        for op in (
            "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
            "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
        )
    },
}  # fmt: skip

RESIZE_MODES = {"nearest", "linear"}
RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}


@dataclass(frozen=True)
class Violation:
    """One rule a node breaks under one span of TensorRT versions."""

    rule: str
    versions: str
    node: str
    op_type: str
    why: str
    source: str

    def line(self, graph: str = "") -> str:
        where = f"{graph}: " if graph else ""
        return (
            f"{where}node '{self.node}' ({self.op_type}) breaks parser rule {self.rule} for TensorRT "
            f"{self.versions}: {self.why} [{self.source}]"
        )


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


class _Graph:
    """Types, producers, consumers and constness of one (inlined, shape-inferred) graph."""

    def __init__(self, model: Any):
        import onnx

        g = model.graph
        self.model = model
        self.inputs = {i.name for i in g.input}
        self.outputs = {o.name for o in g.output}
        self.types: dict[str, int] = {}
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                self.types[vi.name] = vi.type.tensor_type.elem_type
        self.static: set[str] = {t.name for t in g.initializer}
        for t in g.initializer:
            self.types[t.name] = t.data_type
        self.consumers: dict[str, list[Any]] = {}
        for node in g.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        for node in g.node:  # graph order is topological
            if node.op_type == "Constant":
                value = _attr(node, "value")
                if isinstance(value, onnx.TensorProto):
                    self.types[node.output[0]] = value.data_type
                self.static.update(node.output)
            elif node.op_type == "Shape" or all(i in self.static for i in node.input if i):
                self.static.update(node.output)  # shapes are static in our graphs (batch profile aside)

    def type_name(self, tensor: str) -> str | None:
        t = self.types.get(tensor)
        return None if t is None else ONNX_TYPE_NAMES.get(t, f"onnx type {t}")


def _default_opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _inline(model: Any) -> Any:
    """The graph as TensorRT's built-in path sees it: local functions expanded, types inferred."""
    import onnx
    import onnx.inliner

    inlined = onnx.inliner.inline_local_functions(model)
    try:
        return onnx.shape_inference.infer_shapes(inlined, data_prop=True)
    except Exception:  # types then come from what the graph declares
        return inlined


def _plugin_node_rules(model: Any, node: Any, rs: RuleSet) -> Iterable[Violation]:
    """efficientvis::MultiLevelRoIAlign: bound to our plugin (>= 10.7 with it registered), else expanded
    from its model-local function (10.3-10.6, or no Triton). Both must be possible."""
    import onnx

    name = node.name or node.output[0]

    def v(rule: str, why: str) -> Violation:
        return Violation(rule, rs.versions, name, f"{node.domain}::{node.op_type}", why, S_PLUGIN)

    if _text(_attr(node, "plugin_namespace")) != PLUGIN_DOMAIN:
        yield v("plugin-namespace", f"needs plugin_namespace='{PLUGIN_DOMAIN}' so the plugin wins over the function")
    if _text(_attr(node, "plugin_version", "1")) != "1":
        yield v("plugin-version", "plugin_version must be '1' (the version our plugin registers)")
    allowed = {onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT, onnx.AttributeProto.STRING}
    for a in node.attribute:
        if a.type not in allowed:  # plugin fields: INT -> INT32, FLOAT -> FLOAT32, STRING -> char
            yield v("plugin-attribute", f"attribute {a.name} is not INT, FLOAT or STRING")
    if not any(f.domain == node.domain and f.name == node.op_type for f in model.functions):
        yield v(
            "plugin-fallback", "no model-local function of that name: the built-in path (10.3) has nothing to expand"
        )


def _node_rules(g: _Graph, node: Any, rs: RuleSet, opset: int) -> Iterable[Violation]:
    op = node.op_type
    name = node.name or (node.output[0] if node.output else op)

    def v(rule: str, why: str, source: str) -> Violation:
        return Violation(rule, rs.versions, name, op, why, source)

    if node.domain not in ("", "ai.onnx"):
        yield v("op-domain", f"domain '{node.domain}' has no importer, plugin binding or local function", S_IMPORTER)
        return
    types, source = SUPPORTED_BY_SOURCE.get(op, (SUPPORTED.get(op), S_DOC))
    if types is None:
        yield v("op-supported", "operator not supported by the parser", S_DOC)
        return
    # uint8: only a network input or output (ModelImporter.cpp parseNode: "TensorRT does not support UINT8
    # types for intermediate tensors!"; operators.md: "UINT8 is only supported as network input or output").
    uint8_ok = rs.uint8_constants and op == "Constant"
    for out in node.output:
        if out and g.type_name(out) == "UINT8" and out not in g.outputs and not uint8_ok:
            yield v("uint8-intermediate", f"output {out} is uint8 and not a graph output", S_IMPORTER)
    for inp in node.input:
        if inp in g.inputs and g.type_name(inp) == "UINT8" and op != "Cast":
            yield v("uint8-input", f"uint8 graph input {inp} feeds {op}, not a Cast (cast first)", S_DOC)
    if node.input and node.input[0] and op not in ("Constant", "Shape"):
        t = g.type_name(node.input[0])
        if t is not None and t not in types.split() and not (t == "UINT8" and op == "Cast"):
            yield v("input-type", f"input {node.input[0]} is {t}; the parser takes {types.replace(' ', ', ')}", source)
    if op == "Cast":
        to = ONNX_TYPE_NAMES.get(int(_attr(node, "to", 0)), "?")
        if to not in types.split():
            yield v("cast-type", f"Cast to {to}; the parser casts to {types.replace(' ', ', ')}", S_DOC)
    for (cop, idx), words in CONSTANT_INPUTS.items():
        if op == cop and len(node.input) > idx and node.input[idx] and node.input[idx] not in g.static:
            yield v("constant-input", f"{words} (input {node.input[idx]} is computed at run time)", S_DOC)
    if op == "Resize":
        mode = _text(_attr(node, "mode", "nearest"))
        coord = _text(_attr(node, "coordinate_transformation_mode", "half_pixel"))
        nearest = _text(_attr(node, "nearest_mode", "round_prefer_floor"))
        if mode not in RESIZE_MODES:
            yield v("resize-mode", f"mode {mode} (supported: nearest, linear)", S_DOC)
        if coord not in RESIZE_COORDS:
            yield v("resize-coordinates", f"coordinate_transformation_mode {coord} is not supported", S_DOC)
        if mode == "nearest" and nearest not in RESIZE_NEAREST:
            yield v("resize-nearest", f"nearest_mode {nearest} is not supported", S_DOC)
        if int(_attr(node, "antialias", 0)):
            yield v("resize-antialias", "antialiasing is not supported", S_DOC_1016)
        if _text(_attr(node, "keep_aspect_ratio_policy", "stretch")) != "stretch":
            yield v("resize-aspect", "only keep_aspect_ratio_policy 'stretch' is supported", S_DOC_1016)
    if op == "RoiAlign":
        # RoiAlign importer: coordinate_transformation_mode is read only from opset 16 (else output_half_pixel),
        # sampling_ratio defaults to 1 (ONNX: 0), any mode but "avg" becomes max.
        if opset < 16:
            yield v("roialign-opset", f"opset {opset} < 16: half_pixel is ignored (output_half_pixel used)", S_OPS)
        if _attr(node, "sampling_ratio") is None:
            yield v("roialign-sampling", "sampling_ratio absent: the parser uses 1, ONNX means 0 (adaptive)", S_OPS)
        if _text(_attr(node, "mode", "avg")) not in ("avg", "max"):
            yield v("roialign-mode", "mode must be avg or max", S_OPS)
        if len(node.input) > 1 and g.type_name(node.input[1]) not in (None, g.type_name(node.input[0])):
            yield v("roialign-rois-type", "rois must have the features' type (ROIAlign_TRT)", S_OPS)
    # ScatterElements with a reduction goes to a plugin (scatterPluginHelper in the importer); ScatterND cannot.
    if op == "ScatterND" and _text(_attr(node, "reduction", "none")) != "none":
        yield v("scatter-reduction", "ScatterND `reduction` is not supported", S_DOC)
    if op == "TopK" and int(_attr(node, "sorted", 1)) != 1:
        yield v("topk-sorted", "`sorted` must be 1", S_DOC)
    if op == "LayerNormalization":
        # The importer calls setComputePrecision unconditionally; strongly typed networks reject that call.
        # Not proved guarded in any version we claim: prepare_for_tensorrt rewrites it (docs/tensorrt.md).
        yield v(
            "layernorm-strongly-typed",
            "the importer calls setComputePrecision, which strongly typed networks reject "
            "(run prepare_for_tensorrt: explicit fp32 ops)",
            f"{S_OPS} LayerNormalization importer; {S_NVINFER}",
        )
        if len([o for o in node.output if o]) > 1:
            yield v("layernorm-outputs", "only the first output Y is supported", S_DOC)


def check_model(model: Any, rule_sets: Iterable[RuleSet] = RULE_SETS) -> list[Violation]:
    """Every violation of the parser rules in `model` (an onnx.ModelProto), for each span of versions."""
    opset = _default_opset(model)
    found: list[Violation] = []
    custom = [n for n in model.graph.node if n.domain == PLUGIN_DOMAIN and n.op_type == PLUGIN_OP]
    inlined = _inline(model)
    g = _Graph(inlined)
    for rs in rule_sets:
        lo, hi = rs.opset
        if not lo <= opset <= hi:
            found.append(
                Violation("opset", rs.versions, "<model>", "-", f"opset {opset} outside {lo}..{hi}", rs.opset_source)
            )
        for node in custom:
            found.extend(_plugin_node_rules(model, node, rs))
        for node in inlined.graph.node:
            found.extend(_node_rules(g, node, rs, opset))
    return found


def frames_cast_first(model: Any) -> list[str]:
    """Names of the nodes a uint8 graph input feeds other than a Cast (empty: the contract holds)."""
    uint8_inputs = {i.name for i in model.graph.input if i.type.tensor_type.elem_type == 2}
    return [n.name or n.op_type for n in model.graph.node if n.op_type != "Cast" and uint8_inputs & set(n.input)]


def prepare_for_tensorrt(model: Any) -> tuple[Any, int]:
    """A copy of `model` with every LayerNormalization written as explicit fp32 ops; returns (model, count).

    Why: onnx-tensorrt's LayerNormalization importer calls setComputePrecision (release/10.1-GA), which a
    strongly typed network rejects (v10.3.0 NvInfer.h), and the 10.3 importer could not be read to prove
    a guard. Cast to fp32, mean, centred variance, divide by sqrt(var + eps), scale, bias, cast back: the
    precision is in the graph, so no layer call is needed. ONNX Runtime checks the rewrite's numerics.
    """
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    opset = _default_opset(out)
    try:
        typed = onnx.shape_inference.infer_shapes(out)
    except Exception:
        typed = out
    info = _Graph(typed)
    ranks: dict[str, int] = {}
    for vi in list(typed.graph.input) + list(typed.graph.value_info) + list(typed.graph.output):
        if vi.type.tensor_type.HasField("shape"):
            ranks[vi.name] = len(vi.type.tensor_type.shape.dim)
    new_nodes, count, extra_inits = [], 0, []
    for node in g.node:
        if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx"):
            new_nodes.append(node)
            continue
        count += 1
        nodes, inits = _layernorm_fp32(node, info, ranks, opset)
        new_nodes.extend(nodes)
        extra_inits.extend(inits)
    if count:
        del g.node[:]
        g.node.extend(new_nodes)
        g.initializer.extend(extra_inits)
    return out, count


def _layernorm_fp32(node: Any, info: _Graph, ranks: dict[str, int], opset: int) -> tuple[list[Any], list[Any]]:
    """One LayerNormalization as explicit fp32 ops (nodes, new initializers); the output name is kept."""
    from onnx import TensorProto, helper

    p = f"{node.name or node.output[0]}/fp32"
    x, dtype = node.input[0], info.types.get(node.input[0], TensorProto.FLOAT)
    axis = int(_attr(node, "axis", -1))
    eps = float(_attr(node, "epsilon", 1e-5))
    rank = ranks.get(x)
    if rank is None and axis != -1:
        raise EvisError(f"LayerNormalization {node.name}: rank of {x} unknown and axis {axis} != -1")
    if axis < 0 and rank is not None:
        axis += rank
    axes = list(range(axis, rank)) if rank is not None else [-1]
    axes_name, eps_name = f"{p}/axes", f"{p}/eps"
    inits = [
        helper.make_tensor(axes_name, TensorProto.INT64, [len(axes)], axes),
        helper.make_tensor(eps_name, TensorProto.FLOAT, [], [eps]),
    ]
    nodes: list[Any] = []

    def mk(op: str, inputs: list[str], tag: str, **attrs: Any) -> str:
        name = f"{p}/{tag}"
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def f32(t: str, tag: str) -> str:
        return t if info.types.get(t, TensorProto.FLOAT) == TensorProto.FLOAT else mk("Cast", [t], tag, to=1)

    def mean(t: str, tag: str) -> str:
        if opset >= 18:
            return mk("ReduceMean", [t, axes_name], tag, keepdims=1)
        return mk("ReduceMean", [t], tag, axes=axes, keepdims=1)

    xf = f32(x, "x")
    centred = mk("Sub", [xf, mean(xf, "mean")], "centred")
    var = mean(mk("Mul", [centred, centred], "square"), "var")
    y = mk("Div", [centred, mk("Sqrt", [mk("Add", [var, eps_name], "var_eps")], "std")], "normed")
    if len(node.input) > 1 and node.input[1]:
        y = mk("Mul", [y, f32(node.input[1], "scale")], "scaled")
    if len(node.input) > 2 and node.input[2]:
        y = mk("Add", [y, f32(node.input[2], "bias")], "biased")
    if dtype != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [y], [node.output[0]], name=f"{p}/out", to=dtype))
    else:
        nodes[-1].output[0] = node.output[0]
    return nodes, inits


def check_graph(path: str | os.PathLike, prepare: bool = True) -> list[Violation]:
    """Violations of one ONNX file as TensorRT would receive it (after `prepare_for_tensorrt`)."""
    import onnx

    model = onnx.load(str(path))
    if prepare:
        model, _ = prepare_for_tensorrt(model)
    return check_model(model)


def check_bundle(bundle_path: str | os.PathLike) -> list[str]:
    """Run the rules over every graph the bundle holds; raise one line on the first violation.

    TensorRT graphs (fp32/fp16/int8) get every rule; the ONNX Runtime CPU form (uint8 asymmetric Q/DQ,
    never given to TensorRT) gets the uint8-input rule (frames feed only a Cast). Returns what was checked.
    """
    import onnx

    from efficientvis_trt.bundle import ONNX_FILES, ORT_CPU_ONNX_FILES

    root = Path(bundle_path)
    checked: list[str] = []
    for name in ONNX_FILES.values():
        if (root / name).is_file():
            problems = check_graph(root / name)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise EvisError(problems[0].line(name) + more)
            checked.append(name)
    for name in ORT_CPU_ONNX_FILES.values():
        if (root / name).is_file():
            bad = frames_cast_first(onnx.load(str(root / name), load_external_data=False))
            if bad:
                raise EvisError(
                    f"{name}: node '{bad[0]}' takes the uint8 input before a Cast (rule uint8-input) [{S_DOC}]"
                )
            checked.append(name)
    if not checked:
        raise EvisError(f"no ONNX graph in {root} to check")
    return checked


__all__ = [
    "RULE_SETS",
    "RuleSet",
    "Violation",
    "check_bundle",
    "check_graph",
    "check_model",
    "frames_cast_first",
    "prepare_for_tensorrt",
]
