"""fp32 -> fp16 graph: ONNX Runtime's float16 converter with our block list and an overflow guard.

Why these fixes around the converter (onnxruntime.transformers.float16):
- It casts every blocked node's output to fp16 and back to fp32 before the next blocked
  node, so a chain of fp32 nodes (box decoding) would still round through fp16 between
  every step; `graph.fold_cast_pairs` removes those round trips (exactly).
- It appends Casts at the end of the node list; `graph.toposort` restores a valid order.
- It does not look into model-local functions: the MultiLevelRoIAlign body keeps its fp32
  constants, so the node itself must be blocked (its body would mix fp16 inputs with fp32
  constants otherwise). ORT inlines the body with fp32 inputs; TensorRT gets fp32 plugin inputs.
- Constant nodes feeding only blocked nodes are blocked too, so their values stay fp32.

Overflow guard: the fp32 graph is run on the calibration clips with max|x| of every
tensor exposed; producers and consumers of tensors whose max|x| x headroom exceeds the
fp16 maximum are kept fp32. Then the fp16 graph is run the same way and every node that
turns finite inputs into inf/NaN is blocked; repeat until clean.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from efficientvis_trt.errors import EvisError
from efficientvis_trt.precision import graph as G

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
DEFAULT_HEADROOM = 2.0  # flag a tensor when 2 x its calibrated max|x| would overflow fp16
MAX_GUARD_ROUNDS = 6


@dataclass
class OverflowHit:
    """A node kept fp32 because its values do not fit fp16."""

    node: str
    op_type: str
    tensor: str
    max_abs: float
    found_by: str  # "fp32-range" (calibrated max|x|) or "fp16-inf" (inf/NaN in the fp16 graph)

    def to_dict(self) -> dict:
        return {
            "node": self.node,
            "op_type": self.op_type,
            "tensor": self.tensor,
            "max_abs": (None if not math.isfinite(self.max_abs) else float(self.max_abs)),
            "found_by": self.found_by,
        }


@dataclass
class Fp16Result:
    model: onnx.ModelProto
    blocked: list[str]  # every node kept fp32
    rule_blocked: list[str]  # by the rules of docs/precision.md, "FP16 graph"
    overflow: list[OverflowHit] = field(default_factory=list)
    rounds: int = 0


def _blocked_constants(model: onnx.ModelProto, blocked: set[str]) -> set[str]:
    consumers = G.consumer_map(model)
    out = set()
    for n in model.graph.node:
        if (
            n.op_type == "Constant"
            and n.output
            and consumers.get(n.output[0])
            and all(c.name in blocked for c in consumers[n.output[0]])
        ):
            out.add(n.name)
    return out


def convert(model: onnx.ModelProto, block: Sequence[str]) -> onnx.ModelProto:
    """fp16 copy of `model` with the named nodes in fp32; graph inputs/outputs keep their types."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src = onnx.ModelProto()
    src.CopyFrom(model)
    G.ensure_node_names(src)
    blocked = set(block)
    blocked |= _blocked_constants(src, blocked)
    logging.getLogger("onnxruntime.transformers.float16").setLevel(logging.WARNING)
    out = convert_float_to_float16(
        src, keep_io_types=True, op_block_list=[], node_block_list=sorted(blocked), force_fp16_initializers=False
    )
    # The converter leaves stale value_info (fp16 entries for initializers it kept fp32): drop it all.
    del out.graph.value_info[:]
    G.drop_repeated_nodes(out)
    G.toposort(out)
    G.fold_cast_pairs(out)
    G.restore_tensor_names(out)
    G.toposort(out)
    _check_io_unchanged(model, out)
    return out


def _check_io_unchanged(src: onnx.ModelProto, dst: onnx.ModelProto) -> None:
    a = [(v.name, v.type.tensor_type.elem_type) for v in list(src.graph.input) + list(src.graph.output)]
    b = [(v.name, v.type.tensor_type.elem_type) for v in list(dst.graph.input) + list(dst.graph.output)]
    if a != b:
        raise RuntimeError(f"fp16 conversion changed the graph I/O: {a} -> {b}")


def _absmax_over(
    model: onnx.ModelProto,
    tensors: dict[str, str],
    feeds: Sequence[dict],
    types: dict[str, int] | None = None,
    desc: str = "fp16 range scan",
) -> dict[str, float]:
    """max over feeds of max|x| for each tensor (inf/NaN kept as inf)."""
    from tqdm import tqdm

    from efficientvis_trt.ort_session import make_session, run

    if not tensors:
        return {}
    inst, mapping = G.add_absmax_outputs(model, list(tensors), types)
    session = make_session(inst, deterministic=True)
    result = {t: 0.0 for t in tensors}
    for feed in tqdm(feeds, desc=desc, unit="clip", leave=False, disable=len(feeds) < 2):
        out = run(session, feed)
        for key, tensor in mapping.items():
            v = float(np.asarray(out[key], dtype=np.float64))
            v = math.inf if not math.isfinite(v) else v
            result[tensor] = max(result[tensor], v)
    return result


def fp32_overflow_scan(
    model: onnx.ModelProto,
    feeds: Sequence[dict],
    headroom: float = DEFAULT_HEADROOM,
    absmax: dict[str, float] | None = None,
) -> list[OverflowHit]:
    """Tensors of the fp32 graph whose calibrated max|x| x headroom exceeds the fp16 maximum.

    `absmax`: max|x| per tensor already measured (e.g. while building the calibration set).
    """
    types = G.tensor_types(model)
    outputs = G.float_node_outputs(model, types)
    ops = {n.name: n.op_type for n in model.graph.node}
    if absmax is not None and set(outputs) <= set(absmax):
        ranges = {t: absmax[t] for t in outputs}
    else:
        ranges = _absmax_over(model, outputs, feeds, types)
    return [
        OverflowHit(outputs[t], ops[outputs[t]], t, v, "fp32-range")
        for t, v in ranges.items()
        if v * headroom > FP16_MAX
    ]


def fp16_inf_scan(model16: onnx.ModelProto, feeds: Sequence[dict]) -> list[OverflowHit]:
    """Nodes of the fp16 graph whose output is inf/NaN although all their float inputs are finite."""
    types = G.tensor_types(model16)
    outputs = G.float_node_outputs(model16, types)
    ranges = _absmax_over(model16, outputs, feeds, types, "fp16 inf/NaN scan")
    producers = G.producer_map(model16)
    hits = []
    for tensor, v in ranges.items():
        if math.isfinite(v):
            continue
        node = producers[tensor]
        inputs_bad = any(not math.isfinite(ranges.get(i, 0.0)) for i in node.input if i in ranges)
        if not inputs_bad:
            hits.append(OverflowHit(node.name, node.op_type, tensor, v, "fp16-inf"))
    return hits


def convert_with_guard(
    model: onnx.ModelProto,
    rule_block: Sequence[str],
    feeds: Sequence[dict] | None,
    headroom: float = DEFAULT_HEADROOM,
    extra_block: Sequence[str] = (),
    fp32_absmax: dict[str, float] | None = None,
) -> Fp16Result:
    """Convert to fp16, keeping rule-blocked nodes and every overflowing node in fp32."""
    G.ensure_node_names(model)
    names = {n.name for n in model.graph.node}
    consumers = G.consumer_map(model)
    blocked = set(rule_block) | set(extra_block)
    hits: list[OverflowHit] = []
    if feeds:
        for hit in fp32_overflow_scan(model, feeds, headroom, fp32_absmax):
            hits.append(hit)
            blocked.add(hit.node)
            blocked.update(c.name for c in consumers.get(hit.tensor, []))  # they must read it in fp32
    rounds = 0
    while True:
        model16 = convert(model, sorted(blocked))
        rounds += 1
        if not feeds:
            break
        new = []
        for hit in fp16_inf_scan(model16, feeds):
            # A converter Cast that overflows: the consumers of its output must take the fp32 value.
            if hit.node in names:
                targets = {hit.node}
            else:
                cast_consumers = G.consumer_map(model16).get(hit.tensor, [])
                targets = {c.name for c in cast_consumers if c.name in names}
            targets -= blocked
            if targets:
                new.append(hit)
                blocked |= targets
        hits.extend(new)
        if not new:
            break
        if rounds >= MAX_GUARD_ROUNDS:
            raise EvisError(
                f"fp16 overflow guard did not converge after {rounds} rounds "
                f"(still overflowing: {', '.join(h.node for h in new[:5])})"
            )
    if hits:
        log.warning(
            "fp16 overflow guard kept %d node(s) in fp32: %s",
            len({h.node for h in hits}),
            ", ".join(sorted({h.node for h in hits}))[:400],
        )
    return Fp16Result(model16, sorted(blocked & names), sorted(set(rule_block) & names), hits, rounds)
