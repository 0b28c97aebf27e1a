"""What precision an engine really computes in, from EngineInspector's JSON: pass, fail or unknown.

The inspector (``ProfilingVerbosity.DETAILED``) lists layers with ``Name``, ``LayerType`` /
``ParameterType`` and ``Inputs`` / ``Outputs`` carrying ``Format/Datatype`` (the keys NVIDIA's
trt-engine-explorer reads: tools/experimental/trt-engine-explorer/trex/layer.py). Layers fused
into a Myelin or kgen region are not listed: only the region and its boundary tensors are. So the
verdict is only as strong as what is visible (docs/tensorrt.md, "What is proved how"):

* pass: at least one compute layer, or one opaque region's boundary, is at the asked reduced
  precision (fp16/int8); for fp32: no reduced-precision tensor anywhere;
* fail: nothing is hidden and no compute layer is at the asked precision (the silent-fp32
  engine), or an fp32 build shows reduced-precision tensors;
* unknown: the evidence that would decide it is inside opaque regions (or no layer is listed).

No majority rule: an fp16 graph keeps its heads fp32 on purpose, so "more fp32 layers than fp16"
says nothing about whether the fp16 part survived.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from efficientvis_trt.errors import EvisError

_DTYPE_TOKENS = (
    ("int8", ("int8",)),
    ("fp8", ("fp8",)),
    ("fp16", ("fp16", "half")),
    ("bf16", ("bfloat16", "bf16")),
    ("fp32", ("fp32", "float")),
)
_RANK = ["int8", "fp8", "fp16", "bf16", "fp32"]
COMPUTE_KINDS = ("convolution", "deconvolution", "matrixmultiply", "fullyconnected", "gemm")
OPAQUE_KINDS = ("myelin", "kgen")  # fused regions: their inner layers are not listed


def tensor_precision(format_datatype: str) -> str | None:
    """'Row major linear FP32' -> 'fp32', 'Channel major FP16 format ...' -> 'fp16', 'Int8 ...' -> 'int8'."""
    text = format_datatype.lower()
    for name, tokens in _DTYPE_TOKENS:
        if any(re.search(rf"(?<![a-z]){re.escape(t)}(?![a-z0-9])", text) for t in tokens):
            return name
    return None


@dataclass
class LayerPrecisionReport:
    """Counts of visible compute layers by their lowest tensor precision, and of opaque regions."""

    num_layers: int = 0
    compute_layers: int = 0
    compute_by_precision: dict[str, int] = field(default_factory=dict)
    opaque_regions: int = 0
    opaque_boundary_precisions: dict[str, int] = field(default_factory=dict)
    any_tensor_precisions: list[str] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _precisions(layer: dict) -> set[str]:
    got = {
        tensor_precision(str(t.get("Format/Datatype", "")))
        for t in list(layer.get("Inputs", [])) + list(layer.get("Outputs", []))
        if isinstance(t, dict)
    }
    got.discard(None)
    return got  # type: ignore[return-value]


def summarize_layers(engine_info: dict | str) -> LayerPrecisionReport:
    info = json.loads(engine_info) if isinstance(engine_info, str) else engine_info
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    if any(isinstance(layer, str) for layer in layers):
        raise EvisError(
            "the engine carries only layer names (built without ProfilingVerbosity.DETAILED): "
            "cannot check its layer precisions"
        )
    report = LayerPrecisionReport(num_layers=len(layers))
    seen: set[str] = set()
    for layer in layers:
        kind = str(layer.get("ParameterType") or layer.get("LayerType") or "").lower()
        precisions = _precisions(layer)
        seen |= precisions
        if not precisions:
            continue
        lowest = min(precisions, key=_RANK.index)
        if any(k in kind for k in OPAQUE_KINDS):
            report.opaque_regions += 1
            report.opaque_boundary_precisions[lowest] = report.opaque_boundary_precisions.get(lowest, 0) + 1
        elif any(k in kind for k in COMPUTE_KINDS):
            report.compute_layers += 1
            report.compute_by_precision[lowest] = report.compute_by_precision.get(lowest, 0) + 1
        else:
            continue
        names = report.examples.setdefault(lowest, [])
        if len(names) < 3:
            names.append(str(layer.get("Name", "?"))[:120])
    report.any_tensor_precisions = sorted(seen, key=_RANK.index)
    return report


@dataclass(frozen=True)
class Verdict:
    verdict: str  # "pass" | "fail" | "unknown"
    why: str

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "why": self.why}


def layer_precision_verdict(report: LayerPrecisionReport, precision: str) -> Verdict:
    """Sound or "unknown", never a wrong pass/fail; see the module docstring for the rules."""
    counts = report.compute_by_precision
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"
    hidden = f"{report.opaque_regions} fused Myelin/kgen region(s) whose inner layers are not listed"
    reduced = {"int8", "fp8", "fp16", "bf16"}
    low = reduced & set(report.any_tensor_precisions)
    if precision == "fp32" and low:
        return Verdict("fail", f"an fp32 build holds {', '.join(sorted(low))} tensors (compute layers: {summary})")
    if report.compute_layers == 0 and report.opaque_regions == 0:
        return Verdict("unknown", "the engine inspector listed no compute layer and no fused region")
    if precision == "fp32":
        return Verdict("pass", f"no reduced-precision tensor in any listed layer (compute layers: {summary})")
    want = {"fp16": {"fp16"}, "int8": {"int8"}}[precision]
    visible_hit = sum(counts.get(k, 0) for k in want)
    boundary_hit = sum(report.opaque_boundary_precisions.get(k, 0) for k in want)
    if visible_hit:
        return Verdict("pass", f"{visible_hit} compute layer(s) run in {precision} (compute layers: {summary})")
    if boundary_hit:
        return Verdict("pass", f"{boundary_hit} fused region(s) have {precision} boundary tensors ({hidden})")
    if report.opaque_regions:
        return Verdict(
            "unknown",
            f"no listed compute layer runs in {precision} (compute layers: {summary}), but {hidden} may",
        )
    return Verdict(
        "fail",
        f"the {precision} build has no {precision} compute layer and nothing hidden (compute layers: {summary}): "
        "the graph's precision was lost",
    )
