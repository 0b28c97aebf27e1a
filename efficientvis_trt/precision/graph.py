"""Which nodes of the per-clip graph are heads, box decoding, softmax, RoIAlign, backbone.

Why structure first, names second: node names differ between the dynamo and
TorchScript exporters (and tools like onnxslim rename or drop metadata), but the graph's
outputs are fixed by docs/contract.md. So the head predictors are found by walking back from
`logits`, `boxes`/`boxes_out` and `mask_logits` to the first layer with weights, the box
decoding is everything on that walk from the box outputs, and the backbone is everything
upstream of the RoIAlign feature inputs. Module scopes (dynamo's
`pkg.torch.onnx.name_scopes`, TorchScript's `/stages.1/class_logits/MatMul` names,
weight names) add what structure cannot see: the cls/reg towers.

Also here: graph surgery helpers (topological sort, folding fp32->fp16->fp32 Cast pairs,
absmax instrumentation for the fp16 overflow guard).
"""

from __future__ import annotations

import ast
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import onnx
from onnx import TensorProto, helper

from efficientvis_trt.plugins.spec import DOMAIN, OP_TYPE

WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
QUANTIZABLE_OPS = ("Conv", "MatMul", "Gemm")
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
# Scope fragments of the towers that feed the predictors (higher precision in int8).
TOWER_SCOPES = ("cls_tower", "reg_tower")
HEAD_SCOPES = {"class": (".class_logits",), "box": (".bbox_delta",), "mask": ("mask_head.predictor",)}


# ---- basic graph queries -----------------------------------------------------------


def ensure_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node a unique name (block and exclude lists address nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)
    return model


def drop_repeated_nodes(model: onnx.ModelProto) -> int:
    """Remove each node that repeats an earlier one exactly (name, op, inputs, outputs, attributes).

    onnxruntime < 1.32's fp16 converter inserts one Cast per blocked consumer of an fp16 tensor, each
    with the same name and output (`<tensor>_cast_to_fp32[_node]`), which ORT then refuses to load
    ("two nodes with same node name"); the repeats compute the same thing, so one is kept.
    """
    seen: set[bytes] = set()
    keep = []
    for node in model.graph.node:
        key = node.SerializeToString(deterministic=True)
        if key not in seen:
            seen.add(key)
            keep.append(node)
    dropped = len(model.graph.node) - len(keep)
    if dropped:
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return dropped


def constant_names(model: onnx.ModelProto) -> set[str]:
    """Initializers and Constant-node outputs: inputs that are weights, not activations."""
    names = {i.name for i in model.graph.initializer}
    names.update(n.output[0] for n in model.graph.node if n.op_type == "Constant" and n.output)
    return names


def producer_map(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: n for n in model.graph.node for out in n.output if out}


def consumer_map(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in model.graph.node:
        for name in n.input:
            if name:
                out[name].append(n)
    return out


def structure_only(model: onnx.ModelProto, max_elements: int = 4096) -> onnx.ModelProto:
    """A copy of `model` whose large initializers keep name, type and shape but no values.

    For analyses that need types and shapes, not weights: ONNX shape inference serialises and
    parses the whole model twice, which for r50 means four transient copies of its 474 MB of
    weights (docs/build-memory.md). Small initializers (shape constants) keep their values.
    """
    light = onnx.ModelProto()
    for field_name in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(light, field_name, getattr(model, field_name))
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g, src = light.graph, model.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    for init in src.initializer:
        count = 1
        for d in init.dims:
            count *= d
        if count <= max_elements and init.data_location != TensorProto.EXTERNAL:
            g.initializer.append(init)
        else:
            g.initializer.add(name=init.name, data_type=init.data_type, dims=init.dims)
    return light


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every named tensor, after ONNX shape inference (functions included)."""
    inferred = onnx.shape_inference.infer_shapes(
        structure_only(model), check_type=False, strict_mode=False, data_prop=False
    )
    types: dict[str, int] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.output) + list(inferred.graph.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in inferred.graph.initializer:
        types[init.name] = init.data_type
    for n in inferred.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def is_roi_align(node: onnx.NodeProto) -> bool:
    return node.domain == DOMAIN and node.op_type == OP_TYPE


def node_scope(node: onnx.NodeProto) -> str:
    """The PyTorch module path a node came from ('stages.1.class_logits'), or '' if unknown."""
    meta = {p.key: p.value for p in node.metadata_props}
    scopes = meta.get("pkg.torch.onnx.name_scopes")
    if scopes:
        try:
            parts = ast.literal_eval(scopes)
            modules = [p for p in parts[:-1] if p]  # the last entry is the op itself
            if modules:
                return modules[-1]
        except (ValueError, SyntaxError):
            pass
    namespace = meta.get("namespace")
    if namespace:
        segs = [s.split(":")[0].strip() for s in namespace.split("/")[:-1]]
        segs = [s for s in segs if s]
        if segs:
            return segs[-1]
    if node.name.startswith("/"):  # TorchScript: /stages.1/class_logits/MatMul
        parts = [p for p in node.name.split("/")[:-1] if p]
        return ".".join(parts)
    return ""


def weight_scope(node: onnx.NodeProto, constants: set[str]) -> str:
    """Module path from a named weight input ('stages.1.mask_head.predictor.weight' -> '...predictor')."""
    for name in node.input[1:]:
        if name in constants and name.endswith((".weight", ".bias")):
            return name.rsplit(".", 1)[0]
    return ""


def full_scope(node: onnx.NodeProto, constants: set[str]) -> str:
    return node_scope(node) or weight_scope(node, constants)


def is_weighted(node: onnx.NodeProto, constants: set[str]) -> bool:
    """A Conv/ConvTranspose/MatMul/Gemm with a constant weight operand."""
    if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
        return False
    if node.op_type == "MatMul":
        return node.input[1] in constants or node.input[0] in constants
    return node.input[1] in constants


def is_activation_matmul(node: onnx.NodeProto, constants: set[str]) -> bool:
    """MatMul of two activations (attention scores/values, dynamic-conv filters made from queries)."""
    return node.op_type == "MatMul" and not (node.input[0] in constants or node.input[1] in constants)


# ---- roles ------------------------------------------------------------------------


@dataclass
class GraphRoles:
    """Node names by role; the rules of docs/precision.md are written in terms of these."""

    roi_align: list[str] = field(default_factory=list)
    softmax: list[str] = field(default_factory=list)
    sigmoid: list[str] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)  # index grids (Range): no fp16 kernel in ONNX Runtime
    class_head: list[str] = field(default_factory=list)
    box_head: list[str] = field(default_factory=list)
    mask_head: list[str] = field(default_factory=list)
    towers: list[str] = field(default_factory=list)
    box_decode: list[str] = field(default_factory=list)
    score: list[str] = field(default_factory=list)
    backbone: list[str] = field(default_factory=list)
    activation_matmuls: list[str] = field(default_factory=list)
    weighted: list[str] = field(default_factory=list)
    residual_adds: list[str] = field(default_factory=list)

    @property
    def heads(self) -> list[str]:
        return sorted(set(self.class_head + self.box_head + self.mask_head))

    def fp16_block(self) -> list[str]:
        """Nodes kept fp32 in the fp16 graph (docs/precision.md): RoIAlign, softmax, sigmoid, index grids
        (Range), predictors, box decoding and the score path from the class predictor to `logits`."""
        return sorted(
            set(self.roi_align + self.softmax + self.sigmoid + self.ranges + self.heads + self.box_decode + self.score)
        )

    def int8_quantize(self) -> list[str]:
        """Conv/MatMul/Gemm with weights, minus heads and towers; plus the backbone's residual adds."""
        keep_out = set(self.heads + self.towers)
        nodes = [n for n in self.weighted if n not in keep_out]
        return sorted(set(nodes + self.residual_adds))

    def to_dict(self) -> dict:
        return {k: sorted(v) for k, v in asdict(self).items()}


def _walk_back(
    model: onnx.ModelProto, outputs: Iterable[str], constants: set[str], producers: dict[str, onnx.NodeProto]
) -> tuple[list[str], list[str]]:
    """From graph outputs back to the first weighted layers: (nodes on the way, weighted nodes reached)."""
    path: list[str] = []
    heads: list[str] = []
    seen: set[str] = set()
    queue = deque(outputs)
    while queue:
        tensor = queue.popleft()
        node = producers.get(tensor)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if is_weighted(node, constants):
            heads.append(node.name)
            continue
        if (
            is_roi_align(node)
            or node.op_type in ("LayerNormalization", "Softmax")
            or is_activation_matmul(node, constants)
        ):
            continue  # the trunk: never part of a head's decoding path
        path.append(node.name)
        queue.extend(i for i in node.input if i and i not in constants)
    return path, heads


_PASS_THROUGH = ("Relu", "LayerNormalization", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity")


def _towers(
    model: onnx.ModelProto, predictors: list[str], constants: set[str], producers: dict[str, onnx.NodeProto]
) -> set[str]:
    """Weighted layers of the Linear-LayerNorm-ReLU towers that feed only one predictor.

    Walk back from each predictor's activation input through the tower's own ops; stop at
    a tensor with several consumers (the stage's query, shared by all heads).
    """
    consumers = consumer_map(model)
    by_name = {n.name: n for n in model.graph.node}
    out: set[str] = set()
    for name in predictors:
        node = by_name.get(name)
        if node is None:
            continue
        tensor = next((i for i in node.input if i and i not in constants), None)
        while tensor is not None and len(consumers.get(tensor, [])) == 1:
            prev = producers.get(tensor)
            if prev is None:
                break
            if is_weighted(prev, constants):
                out.add(prev.name)
            elif prev.op_type not in _PASS_THROUGH:
                break
            tensor = next((i for i in prev.input if i and i not in constants), None)
    return out


def _box_forward(model: onnx.ModelProto, box_nodes: list[str], constants: set[str]) -> set[str]:
    """Nodes computed from box tensors (and constants) alone, plus the RoiAlign/MultiLevelRoIAlign they feed.

    Keeps the rois layout and the level selection in fp32: box coordinates rounded to
    fp16 are off by up to half a pixel at 640 px.
    """
    box_names = set(box_nodes)
    derived: set[str] = {o for n in model.graph.node if n.name in box_names for o in n.output}
    derived |= {i.name for i in model.graph.input if i.name == "boxes_in"}
    out: set[str] = set()
    for n in model.graph.node:  # graph nodes are topologically sorted
        inputs = [i for i in n.input if i and i not in constants]
        if not inputs or n.name in box_names:
            continue
        if is_roi_align(n) or n.op_type == "RoiAlign":
            continue
        if all(i in derived for i in inputs):
            out.add(n.name)
            derived.update(n.output)
    return out


def _upstream(model: onnx.ModelProto, tensors: Iterable[str], producers: dict[str, onnx.NodeProto]) -> set[str]:
    seen: set[str] = set()
    queue = deque(tensors)
    while queue:
        node = producers.get(queue.popleft())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        queue.extend(i for i in node.input if i)
    return seen


def classify(model: onnx.ModelProto) -> GraphRoles:
    """Assign roles to the nodes of an (fp32) per-clip graph. The model must have node names."""
    ensure_node_names(model)
    constants = constant_names(model)
    producers = producer_map(model)
    outputs = {o.name for o in model.graph.output}
    roles = GraphRoles()
    nodes = list(model.graph.node)
    roles.roi_align = [n.name for n in nodes if is_roi_align(n)]
    roles.softmax = [n.name for n in nodes if n.op_type == "Softmax"]
    roles.sigmoid = [n.name for n in nodes if n.op_type == "Sigmoid"]
    roles.ranges = [n.name for n in nodes if n.op_type == "Range"]
    roles.weighted = [n.name for n in nodes if n.op_type in QUANTIZABLE_OPS and is_weighted(n, constants)]
    roles.activation_matmuls = [n.name for n in nodes if is_activation_matmul(n, constants)]

    box_outputs = [o for o in ("boxes", "boxes_out") if o in outputs]
    roles.box_decode, roles.box_head = _walk_back(model, box_outputs, constants, producers)
    if "logits" in outputs:
        roles.score, roles.class_head = _walk_back(model, ["logits"], constants, producers)
    if "mask_logits" in outputs:
        _, roles.mask_head = _walk_back(model, ["mask_logits"], constants, producers)

    # Scopes add predictors the walk cannot reach (pruned-away stages aside) and the towers.
    for n in nodes:
        scope = full_scope(n, constants)
        if not scope or n.op_type not in WEIGHTED_OPS:
            continue
        for role, frags in HEAD_SCOPES.items():
            target = getattr(roles, f"{role}_head")
            if any(scope.endswith(f.lstrip(".")) or f in scope for f in frags) and n.name not in target:
                target.append(n.name)
        if any(t in scope for t in TOWER_SCOPES):
            roles.towers.append(n.name)

    roles.towers = sorted(set(roles.towers) | _towers(model, roles.class_head + roles.box_head, constants, producers))
    # Standard RoiAlign (the `inline` flavour) and everything computed from boxes alone up to
    # the pooling (rois layout, level selection) stay with the box math in fp32.
    roles.roi_align += [n.name for n in nodes if n.op_type == "RoiAlign"]
    roles.box_decode = sorted(set(roles.box_decode) | _box_forward(model, roles.box_decode, constants))

    features = [n.input[0] for n in nodes if n.op_type == "RoiAlign"]
    features += [i for n in nodes if is_roi_align(n) for i in n.input[:-1]]
    backbone = _upstream(model, features, producers)
    roles.backbone = [n.name for n in nodes if n.name in backbone]
    roles.residual_adds = [
        n.name
        for n in nodes
        if n.name in backbone and n.op_type == "Add" and len(n.input) == 2 and not any(i in constants for i in n.input)
    ]
    return roles


# ---- surgery --------------------------------------------------------------------------


def toposort(model: onnx.ModelProto) -> onnx.ModelProto:
    """Reorder graph nodes topologically (converters append Casts at the end); stable otherwise."""
    graph = model.graph
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    nodes = list(graph.node)
    pending = {id(n): len({i for i in n.input if i and i not in available}) for n in nodes}
    waiting: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in nodes:
        for i in set(n.input):
            if i and i not in available:
                waiting[i].append(n)
    index = {id(n): k for k, n in enumerate(nodes)}
    import heapq

    ready = [(index[id(n)], id(n), n) for n in nodes if pending[id(n)] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, _, n = heapq.heappop(ready)
        order.append(n)
        for out in n.output:
            for m in waiting.pop(out, []):
                pending[id(m)] -= 1
                if pending[id(m)] == 0:
                    heapq.heappush(ready, (index[id(m)], id(m), m))
    if len(order) != len(nodes):
        raise RuntimeError("graph has a cycle or a dangling input; cannot sort it")
    copies = [onnx.NodeProto() for _ in order]
    for c, n in zip(copies, order):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)
    return model


def _cast_to(node: onnx.NodeProto) -> int | None:
    for a in node.attribute:
        if a.name == "to":
            return a.i
    return None


def fold_cast_pairs(model: onnx.ModelProto, types: dict[str, int] | None = None) -> int:
    """Remove fp32 -> fp16 -> fp32 Cast round trips between fp32 nodes (exact, keeps fp32 precision).

    The float16 converter casts a blocked node's output to fp16 and back before the next
    blocked node; that round trip would throw away the precision the block list keeps.
    Returns how many round trips were removed.
    """
    types = types if types is not None else tensor_types(model)
    producers = producer_map(model)
    graph_outputs = {o.name for o in model.graph.output}
    folded = 0
    for node in model.graph.node:
        if node.op_type != "Cast" or _cast_to(node) != TensorProto.FLOAT:
            continue
        first = producers.get(node.input[0])
        if first is None or first.op_type != "Cast" or _cast_to(first) != TensorProto.FLOAT16:
            continue
        if types.get(first.input[0]) != TensorProto.FLOAT:
            continue
        source, out = first.input[0], node.output[0]
        if out in graph_outputs:
            node.op_type = "Identity"
            del node.attribute[:]
            node.input[0] = source
        else:
            for other in model.graph.node:
                for k, name in enumerate(other.input):
                    if name == out:
                        other.input[k] = source
        folded += 1
    remove_dead_nodes(model)
    return folded


def restore_tensor_names(model: onnx.ModelProto, suffix: str = "_cast_to_fp16") -> int:
    """Give fp32 tensors back their original names once the converter's Cast round trip is gone.

    The float16 converter renames a blocked node's output X to X_cast_to_fp16 (still fp32)
    and re-creates X with a Cast; after `fold_cast_pairs` X may be unused, and the fp32
    tensor is left with a misleading name. Renames only when X no longer exists.
    """
    names = (
        {i.name for i in model.graph.input}
        | {o for n in model.graph.node for o in n.output}
        | {i for n in model.graph.node for i in n.input}
        | {o.name for o in model.graph.output}
    )
    renames = {}
    for n in model.graph.node:
        if n.op_type == "Cast":
            continue
        for o in n.output:
            if o.endswith(suffix) and o[: -len(suffix)] not in names:
                renames[o] = o[: -len(suffix)]
    for n in model.graph.node:
        for k, i in enumerate(n.input):
            if i in renames:
                n.input[k] = renames[i]
        for k, o in enumerate(n.output):
            if o in renames:
                n.output[k] = renames[o]
    for vi in model.graph.value_info:
        if vi.name in renames:
            vi.name = renames[vi.name]
    return len(renames)


def remove_dead_nodes(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nobody uses (iteratively), and value_info of vanished tensors."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        keep = [n for n in graph.node if any(o in used for o in n.output if o)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    produced = {o for n in graph.node for o in n.output}
    vis = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(vis)
    used = {i for n in graph.node for i in n.input}
    inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)


ABSMAX_PREFIX = "__absmax__"


def add_absmax_outputs(
    model: onnx.ModelProto, tensors: Iterable[str], types: dict[str, int] | None = None
) -> tuple[onnx.ModelProto, dict[str, str]]:
    """Copy of `model` that also outputs max(|x|) of each named tensor (an fp32 scalar each, little memory).

    Memory: the probes are ordered by `move_probes_last`, so each activation is freed as soon as
    its real consumers are done.
    """
    types = types if types is not None else tensor_types(model)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    mapping: dict[str, str] = {}
    probes: set[str] = set()
    for k, name in enumerate(tensors):
        abs_in, abs_out, red_out = name, f"{ABSMAX_PREFIX}abs_{k}", f"{ABSMAX_PREFIX}{k}"
        if types.get(name, TensorProto.FLOAT) != TensorProto.FLOAT:
            # fp16 (exactly representable in fp32): without this Cast, ORT's CPU provider would insert its
            # own around Abs/ReduceMax, new nodes that undo the probe order below.
            abs_in = f"{ABSMAX_PREFIX}f32_{k}"
            m.graph.node.append(
                helper.make_node("Cast", [name], [abs_in], to=TensorProto.FLOAT, name=f"{ABSMAX_PREFIX}Cast_{k}")
            )
            probes.add(f"{ABSMAX_PREFIX}Cast_{k}")
        m.graph.node.append(helper.make_node("Abs", [abs_in], [abs_out], name=f"{ABSMAX_PREFIX}Abs_{k}"))
        # No axes (input from opset 18, attribute before): reduce over all elements either way.
        m.graph.node.append(
            helper.make_node("ReduceMax", [abs_out], [red_out], keepdims=0, name=f"{ABSMAX_PREFIX}ReduceMax_{k}")
        )
        probes.update((f"{ABSMAX_PREFIX}Abs_{k}", f"{ABSMAX_PREFIX}ReduceMax_{k}"))
        m.graph.output.append(helper.make_tensor_value_info(red_out, TensorProto.FLOAT, []))
        mapping[red_out] = name
    move_probes_last(m, probes)
    return m, mapping


def move_probes_last(model: onnx.ModelProto, probe_names: set[str]) -> None:
    """Put the named probe nodes (statistics of a tensor: Abs/ReduceMax, ReduceMin/Reshape...) where ORT frees early.

    ONNX Runtime orders nodes by a reverse depth-first walk from the graph's leaves, highest
    node index first (onnxruntime GraphViewer, ReverseDFSFrom). Probes are leaves; placed at
    the end, in reverse order of the tensors they read, the walk starts at the first tensor's
    probe and reaches each later tensor's probe as soon as that tensor exists, so every
    activation is freed after its last real consumer. In any other order the walk from the
    last probe pulls in the whole graph first and keeps every probed activation alive until
    the end of the run: 9.4 GB instead of 2.5 GB for r50 (docs/build-memory.md, "Where the
    memory went"). Values do not depend on the order.
    """
    nodes = list(model.graph.node)
    keep = [n for n in nodes if n.name not in probe_names]
    probes = [n for n in nodes if n.name in probe_names]
    position = {o: i for i, n in enumerate(keep) for o in n.output}
    from_probe = {o: n for n in probes for o in n.output}
    groups: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in probes:
        tensor = n.input[0]
        while tensor in from_probe:  # a probe reading a probe (Abs -> ReduceMax): group by the real tensor
            tensor = from_probe[tensor].input[0]
        groups[tensor].append(n)
    order = sorted(groups, key=lambda t: position.get(t, -1), reverse=True)
    new_nodes = []
    for n in keep + [n for t in order for n in groups[t]]:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        new_nodes.append(copy)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)


def float_node_outputs(model: onnx.ModelProto, types: dict[str, int] | None = None) -> dict[str, str]:
    """tensor -> producing node name, for every float tensor a top-level node produces."""
    types = types if types is not None else tensor_types(model)
    out = {}
    for n in model.graph.node:
        if n.op_type == "Constant":
            continue
        for o in n.output:
            if o and types.get(o) in FLOAT_TYPES:
                out[o] = n.name
    return out


def bump_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Raise the default-domain opset in place (only additive changes between 18 and 21 matter here).

    Why: QuantizeLinear/DequantizeLinear take fp16 inputs and scales only from opset 19,
    and the int8 graph's non-quantized parts are fp16 (TensorRT's FP16+INT8 mode in graph form).
    """
    imports = list(model.opset_import) + [o for f in model.functions for o in f.opset_import]
    for o in imports:  # functions too: the checker wants their default-domain version to match the model's
        if o.domain in ("", "ai.onnx") and o.version < opset:
            o.version = opset
    return model
