"""fp32 -> int8 graph: explicit Q/DQ post-training quantization, the rest in fp16.

What is quantized (docs/precision.md, "INT8 graph"):
- inputs of every Conv/MatMul/Gemm that has weights, except the head predictors
  (class/box/mask) and the cls/reg towers feeding them: weights symmetric int8 per output
  channel (Conv axis 0, MatMul axis 1, Gemm axis 0 with transB), activations symmetric
  int8 per tensor (zero point 0);
- both inputs of the backbone's residual/FPN Adds, so TensorRT can fuse conv + add;
- not the MatMuls of two activations (attention q.k and attn.v, the dynamic-conv/mask
  filters generated from the queries): per-tensor int8 on a softmax output or on per-
  instance generated filters costs accuracy, and these products are small (T=5 or N
  tokens), so they stay fp16;
- no output quantization (TensorRT fuses an op's output with the next op's input Q) and
  no bias quantization (a bias scale = input scale x weight scale underflows fp16).
Softmax, RoIAlign, sigmoid, the predictors and box decoding stay fp32 exactly as in the
fp16 graph; everything else that is not quantized is fp16, as TensorRT's old FP16+INT8
mode ran it. For that the graph is opset >= 19 (QuantizeLinear/DequantizeLinear with fp16
input and scale), every scale is rounded to an fp16 value and the int8 weights are
re-quantized against the rounded scale, so the fp16 scale TensorRT sees (strongly typed:
an fp16 scale must match an fp16 input) is exactly the one the weights were made for.

Scales below the smallest normal fp16 (6.1e-5: channels with max|w| < 7.7e-3) are raised
to it rather than left subnormal; TensorRT requires strictly positive scales.
Every quantized consumer gets its own Q/DQ pair and nothing else reads a dequantized
activation (`unshare_dequantized_inputs`).

Trade-off on ONNX Runtime's CPU provider: its int8 kernels (QLinearConv, ...) are only
fused from fp32 Q/DQ patterns, and it has few fp16 CPU kernels, so this graph runs
correctly but slower than fp32 on a CPU (benchmarks/RESULTS.md, "Precision").
`quantize_for_cpu` re-expresses the same node selection in the forms ORT's CPU kernels
fuse; `evis build --precision int8` writes one of them, ORT's x86 recipe
(`quantize_cpu_graph`: uint8 asymmetric activations, same calibrated ranges), as
model.int8.cpu.onnx, which the ONNX Runtime backend loads on the CPU provider. It is not
what TensorRT gets.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from efficientvis_trt.errors import EvisError
from efficientvis_trt.precision import graph as G
from efficientvis_trt.precision.calibration import CalibrationSet, ClipDataReader

log = logging.getLogger(__name__)

QDQ_OPSET = 19  # fp16 Q/DQ
METHODS = ("minmax", "percentile", "entropy")
FP16_TINY = float(np.finfo(np.float16).tiny)  # smallest normal fp16 (6.1e-5)


@dataclass
class Int8Result:
    model: onnx.ModelProto  # Q/DQ + fp16 rest (the bundle's model.int8.onnx)
    qdq_fp32: onnx.ModelProto | None  # same Q/DQ, float parts fp32 (CPU-friendly)
    quantized_nodes: list[str]
    excluded: dict[str, list[str]]
    ranges: dict[str, list[float]]  # calibrated activation range per tensor
    scales: dict[str, float]  # activation scale per quantized tensor


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    table = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if name not in table:
        raise EvisError(f"unknown calibration method {name!r}: use one of {', '.join(METHODS)}")
    return table[name]


def _ranges_from_cache(path: Path) -> dict[str, list[float]]:
    """Calibrated (low, high) per tensor from onnxruntime's calibration cache."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    out: dict[str, list[float]] = {}
    data = load_tensors_data(path)
    for name, td in data.data.items():
        lo, hi = (np.asarray(v, dtype=np.float64).reshape(-1) for v in td.range_value)
        if lo.size == 1 and hi.size == 1:
            out[name] = [float(lo[0]), float(hi[0])]
    return dict(sorted(out.items()))


def harmonize_scales_fp16(model: onnx.ModelProto) -> int:
    """Round every Q/DQ scale to an fp16 value; re-quantize int8 weights to their rounded scale.

    Returns how many weight elements changed. Exact afterwards: fp16(scale) == scale.
    """
    inits = {i.name: i for i in model.graph.initializer}
    changed = 0
    done: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 2:
            continue
        scale_name = node.input[1]
        if scale_name not in inits or scale_name in done:
            continue
        s32 = numpy_helper.to_array(inits[scale_name]).astype(np.float32)
        s16 = np.maximum(s32, FP16_TINY).astype(np.float16).astype(np.float32)
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:  # a weight: re-quantize it
            wq_init = inits[node.input[0]]
            wq = numpy_helper.to_array(wq_init)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * wq.ndim
            if s32.ndim == 1 and s32.size > 1:
                shape[axis % wq.ndim] = s32.size
            ratio = (s32 / s16).reshape(shape if s32.size > 1 else [])
            info = np.iinfo(wq.dtype)
            lim = min(info.max, -info.min - 1) if info.min < 0 else info.max  # symmetric: -127..127
            new = np.clip(np.rint(wq.astype(np.float64) * ratio), -lim if info.min < 0 else 0, lim).astype(wq.dtype)
            changed += int(np.count_nonzero(new != wq))
            wq_init.CopyFrom(numpy_helper.from_array(new, wq_init.name))
        inits[scale_name].CopyFrom(numpy_helper.from_array(s16.astype(np.float32), scale_name))
        done.add(scale_name)
    return changed


def unshare_dequantized_inputs(model: onnx.ModelProto, quantized: set[str]) -> int:
    """Give nodes that are not quantized their float input back.

    onnxruntime's QDQ quantizer rewires every consumer of a quantized tensor to the
    DequantizeLinear output when only one consumer is quantized (DedicatedQDQPair applies
    to two or more), so residual adds, towers and heads that share an input with a
    quantized layer would silently read int8-rounded values. Returns how many inputs moved.
    """
    producers = G.producer_map(model)
    moved = 0
    for node in model.graph.node:
        if node.name in quantized or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                continue  # a weight's DQ: keep (only quantized nodes read weights through DQ)
            node.input[k] = q.input[0]
            moved += 1
    G.remove_dead_nodes(model)
    return moved


def _block_qdq_of_fp32_nodes(model: onnx.ModelProto, blocked: set[str]) -> set[str]:
    """Q/DQ nodes that only feed fp32 (blocked) nodes stay fp32 too, so scale and input types match."""
    consumers = G.consumer_map(model)
    out = set(blocked)
    changed = True
    while changed:
        changed = False
        for n in model.graph.node:
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.name not in out:
                users = consumers.get(n.output[0], [])
                if users and all(u.name in out for u in users):
                    out.add(n.name)
                    changed = True
    return out


def _excluded(roles: G.GraphRoles) -> dict[str, list[str]]:
    return {
        "heads": roles.heads,
        "towers": sorted(roles.towers),
        "softmax": sorted(roles.softmax),
        "roi_align": sorted(roles.roi_align),
        "activation_matmuls": sorted(roles.activation_matmuls),
    }


def _quantize_static(
    model: onnx.ModelProto,
    calib: CalibrationSet | None,
    roles: G.GraphRoles,
    method: str,
    cache: Path,
    *,
    qoperator: bool = False,
    output_quant: bool = False,
    percentile: float = 99.999,
    u8_activations: bool = False,
    seven_bit_weights: bool = False,
) -> onnx.ModelProto:
    """onnxruntime's quantize_static with our node selection; ranges come from / go to `cache`."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    calibrate_method = _method(method)
    src = onnx.ModelProto()
    src.CopyFrom(model)
    G.ensure_node_names(src)
    G.bump_opset(src, QDQ_OPSET)
    to_quantize = roles.int8_quantize()
    if not to_quantize:
        raise EvisError("found no Conv/MatMul/Gemm with weights to quantize in this graph")
    extra = {
        "ActivationSymmetric": not u8_activations,
        "WeightSymmetric": True,  # zero point 0 (TensorRT)
        "DedicatedQDQPair": not output_quant,  # a Q/DQ pair per quantized consumer (unshare_dequantized_inputs)
        "QuantizeBias": False,  # TensorRT keeps biases in float
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
        "CalibPercentile": percentile,
        "CalibTensorRangeSymmetric": not u8_activations,
    }
    if not output_quant:  # inputs only: TensorRT fuses an op's output with the next op's input Q
        extra["OpTypesToExcludeOutputQuantization"] = ["Conv", "MatMul", "Gemm", "Add"]
    with tempfile.TemporaryDirectory(prefix="evis-int8-") as tmp:
        src_path, out_path = Path(tmp) / "fp32.onnx", Path(tmp) / "qdq.onnx"
        onnx.save(src, str(src_path))
        tensors = calibration_tensors(src, to_quantize)
        del src  # quantize_static and the calibrator read the file (one copy of the model less)
        _quiet_quantizer()
        if not cache.is_file():
            if calib is None:
                raise EvisError("no calibration clips and no calibration cache to quantize with")
            calibrate(src_path, calib, method, cache, Path(tmp), percentile, tensors=tensors)
        quantize_static(
            str(src_path),
            str(out_path),
            None,
            quant_format=QuantFormat.QOperator if qoperator else QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "MatMul", "Gemm", "Add"],
            per_channel=True,
            reduce_range=seven_bit_weights,  # weights in [-64, 64]: see quantize_cpu_graph
            activation_type=QuantType.QUInt8 if u8_activations else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=to_quantize,
            nodes_to_exclude=sorted({n for v in _excluded(roles).values() for n in v}),
            calibrate_method=calibrate_method,
            extra_options=extra,
            calibration_cache_path=str(cache),
        )
        return onnx.load(str(out_path))


def calibration_tensors(model: onnx.ModelProto, nodes: Sequence[str]) -> set[str]:
    """Activation inputs and outputs of the nodes to quantize: the only ranges the quantizer reads."""
    constants = G.constant_names(model)
    wanted = set(nodes)
    return {
        t
        for n in model.graph.node
        if n.name in wanted
        for t in list(n.input) + list(n.output)
        if t and t not in constants
    }


def entropy_threshold(hist: np.ndarray, edges: np.ndarray, lowest, highest, num_quantized_bins: int = 128):
    """KL-divergence threshold of a symmetric histogram: onnxruntime's search, vectorised per candidate.

    Same candidates, bin merging (float counts truncated into an int64 array, as there),
    smoothing and KL as `onnxruntime.quantization.calibrate.HistogramCollector.get_entropy_threshold`
    (itself the TensorRT 2017 entropy calibration), without its Python loops over the
    quantized bins: ~1 s -> a few ms per tensor at 2048 bins. Returns (low, high).
    """
    from onnxruntime.quantization.calibrate import entropy
    from onnxruntime.quantization.quant_utils import smooth_distribution

    hist = np.asarray(hist, dtype=np.int64)
    num_bins = hist.size
    zero = num_bins // 2
    nq = num_quantized_bins
    cum = np.concatenate([[0], np.cumsum(hist)])
    best, best_pair = np.inf, None
    for i in range(nq // 2, zero + 1):
        start, end = zero - i, min(zero + i + 1, num_bins)
        sliced = hist[start:end]
        size = sliced.size
        p = sliced.copy()
        p[0] += cum[start]
        p[-1] += cum[num_bins] - cum[end]
        merged = size // nq
        body = nq * merged
        quantized = sliced[:body].reshape(nq, merged).sum(axis=1)
        quantized[-1] += sliced[body:].sum()
        norm = (p[:body] != 0).reshape(nq, merged).sum(axis=1)
        per_bin = np.where(norm != 0, quantized / np.maximum(norm, 1), 0.0)
        q = np.zeros(size, dtype=np.int64)
        q[:body] = np.repeat(np.trunc(per_bin).astype(np.int64), merged)
        ps, qs = smooth_distribution(p), smooth_distribution(q)
        div = np.inf if ps is None or qs is None else float(entropy(ps, qs))
        if div < best or best_pair is None:
            best, best_pair = div, (edges[start], edges[end])
    low, high = best_pair
    low = lowest if low < lowest else low
    high = highest if high > highest else high
    return low, high


def _entropy_data(calibrator):
    """TensorsData for an EntropyCalibrater from its histograms, with the vectorised search."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData

    out = {}
    for name, (hist, edges, lowest, highest, _thr) in calibrator.collector.histogram_dict.items():
        low, high = entropy_threshold(hist, edges, lowest, highest, calibrator.collector.num_quantized_bins)
        out[name] = (np.asarray(low, dtype=edges.dtype), np.asarray(high, dtype=edges.dtype), hist, edges)
    return TensorsData(CalibrationMethod.Entropy, out)


def calibrate(
    model_path: Path,
    calib: CalibrationSet,
    method: str,
    cache: Path,
    workdir: Path,
    percentile: float = 99.999,
    tensors: set[str] | None = None,
) -> None:
    """Activation ranges over the clips -> `cache` (onnxruntime's calibration cache format).

    Our own loop over onnxruntime's calibrators, one clip at a time (histograms merge
    incrementally, so memory stays at one clip's tensors), because quantize_static cannot
    set the histogram size: with its default 128 bins for 128 quantized bins the entropy
    search has a single candidate and degenerates to min/max. `tensors` limits the work to
    the tensors the quantizer will read (the entropy search costs ~1 s per tensor in Python).
    """
    import contextlib
    import io

    from onnxruntime.quantization import calibrate as C
    from tqdm import tqdm

    common = dict(
        op_types_to_calibrate=["Conv", "MatMul", "Gemm", "Add"],
        augmented_model_path=str(workdir / "augmented.onnx"),
        symmetric=True,
    )
    if method == "minmax":
        calibrator = C.MinMaxCalibrater(Path(model_path), **common)
    elif method == "percentile":
        calibrator = C.PercentileCalibrater(Path(model_path), num_bins=2048, percentile=percentile, **common)
    elif method == "entropy":
        calibrator = C.EntropyCalibrater(Path(model_path), num_bins=2048, num_quantized_bins=128, **common)
    else:
        raise EvisError(f"unknown calibration method {method!r}: use one of {', '.join(METHODS)}")
    if tensors is not None:
        select = calibrator.select_tensors_to_calibrate

        def only_needed(model):
            found, value_infos = select(model)
            return {t for t in found if t in tensors}, value_infos

        calibrator.select_tensors_to_calibrate = only_needed
    augmented_path = Path(common["augmented_model_path"])
    original = {n.name for n in calibrator.model.graph.node}
    calibrator.augment_graph()
    # The calibrator's probes (ReduceMin/ReduceMax + Reshape) sit before each tensor's first
    # consumer, where ORT's execution order keeps every probed activation alive to the end of
    # the run; moved to where ORT frees early they give the same ranges in a fraction of the
    # memory (docs/build-memory.md, "Calibration, one clip at a time").
    G.move_probes_last(calibrator.model, {n.name for n in calibrator.model.graph.node} - original)
    onnx.save(calibrator.model, str(augmented_path))
    calibrator.model = onnx.ModelProto()  # the augmented copy is on disk; compute_data does not read it
    calibrator.create_inference_session()
    augmented_path.unlink()
    for k in tqdm(
        range(len(calib)), desc=f"int8 calibration ({method})", unit="clip", leave=False, disable=len(calib) < 2
    ):
        reader = ClipDataReader(calib)
        reader.set_range(k, k + 1)
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
            calibrator.collect_data(reader)
    with contextlib.redirect_stdout(io.StringIO()):
        data = _entropy_data(calibrator) if method == "entropy" else calibrator.compute_data()
    C.save_tensors_data(data, cache)


def quantize_for_cpu(
    model: onnx.ModelProto,
    calib: CalibrationSet | None,
    roles: G.GraphRoles,
    cache: Path,
    method: str = "minmax",
    qoperator: bool = False,
    output_quant: bool = True,
    u8_activations: bool = False,
    seven_bit_weights: bool = False,
) -> onnx.ModelProto:
    """The same node selection with fp32 float parts, in the layouts ONNX Runtime's CPU kernels fuse.

    For measuring int8 on a CPU (benchmarks/precision_throughput.py), not for TensorRT:
    QOperator (QLinearConv, ...) or QDQ with output Q/DQ, which ORT fuses into QLinearConv;
    `u8_activations`: asymmetric uint8 activations, ORT's recommended x86 recipe (TensorRT
    cannot take it: it only supports symmetric quantization); `seven_bit_weights`: weights in
    [-64, 64], so x86 CPUs without VNNI cannot saturate (quantize_cpu_graph).
    """
    return _quantize_static(
        model,
        calib,
        roles,
        method,
        cache,
        qoperator=qoperator,
        output_quant=output_quant,
        u8_activations=u8_activations,
        seven_bit_weights=seven_bit_weights,
    )


def quantize_cpu_graph(
    model: onnx.ModelProto, roles: G.GraphRoles, cache: Path, method: str = "minmax"
) -> onnx.ModelProto:
    """The bundle's model.int8.cpu.onnx: ORT's x86 recipe from the TensorRT graph's calibration cache.

    uint8 asymmetric activations, int8 symmetric per-channel weights, QDQ with output Q/DQ
    and fp32 float parts: the form ONNX Runtime's CPU provider fuses into U8S8 QLinearConv/
    QLinearAdd. Same node selection and the same calibrated ranges (`cache`, written by
    `quantize`; no second calibration pass). Not for TensorRT, which takes symmetric only.

    The weights use 7 bits ([-64, 64]): on x86 CPUs without VNNI the U8S8 kernels add pairs of
    products in int16, which saturates on full 8-bit weights (capabilities.cpu_int8_full_range;
    measured: 5.7x the error vs fp32 on an AVX2 EPYC, docs/precision.md, "Saturation on x86"). A
    bundle is built once and run on any CPU, so the CPU form is always the one that cannot saturate.
    """
    if not Path(cache).is_file():
        raise EvisError(f"no calibration cache at {cache}: run quantize() first")
    return quantize_for_cpu(
        model,
        None,
        roles,
        Path(cache),
        method,
        qoperator=False,
        output_quant=True,
        u8_activations=True,
        seven_bit_weights=True,
    )


def quantize(
    model: onnx.ModelProto,
    calib: CalibrationSet,
    roles: G.GraphRoles,
    fp16_block: Sequence[str],
    method: str = "minmax",
    keep_fp32: bool = False,
    percentile: float = 99.999,
    cache: Path | None = None,
) -> Int8Result:
    """Calibrate on `calib` (full input dicts with carried state) and write explicit Q/DQ.

    `cache`: keep onnxruntime's calibration ranges there (an existing file is reused, no calibration).
    """
    from efficientvis_trt.precision import fp16

    excluded = _excluded(roles)
    with tempfile.TemporaryDirectory(prefix="evis-int8-cache-") as tmp:
        cache_path = Path(cache) if cache is not None else Path(tmp) / "ranges.json"
        qdq = _quantize_static(model, calib, roles, method, cache_path, percentile=percentile)
        ranges = _ranges_from_cache(cache_path) if cache_path.is_file() else {}
    G.ensure_node_names(qdq)
    unshare_dequantized_inputs(qdq, set(roles.int8_quantize()))
    harmonize_scales_fp16(qdq)
    quantized = _quantized_nodes(qdq)
    scales = _activation_scales(qdq)
    qdq_fp32 = None
    if keep_fp32:
        qdq_fp32 = onnx.ModelProto()
        qdq_fp32.CopyFrom(qdq)
    blocked = _block_qdq_of_fp32_nodes(qdq, set(fp16_block))
    mixed = fp16.convert(qdq, sorted(blocked))
    used = {r for r in ranges if r in scales}
    return Int8Result(
        mixed,
        qdq_fp32,
        quantized,
        excluded,
        {k: ranges[k] for k in sorted(used)},
        scales,
    )


def _quiet_quantizer() -> None:
    """onnxruntime.quantization logs a pre-processing hint per call on the root logger; keep the CLI quiet."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    if not any(isinstance(f, _Drop) for f in root.filters):
        root.addFilter(_Drop())


def _quantized_nodes(qdq: onnx.ModelProto) -> list[str]:
    """Compute nodes with a DequantizeLinear on an input (what is actually quantized)."""
    producers = G.producer_map(qdq)
    out = []
    for n in qdq.graph.node:
        if n.op_type in ("Conv", "MatMul", "Gemm", "Add") and any(
            (p := producers.get(i)) is not None and p.op_type == "DequantizeLinear" for i in n.input
        ):
            out.append(n.name)
    return sorted(out)


def _activation_scales(qdq: onnx.ModelProto) -> dict[str, float]:
    inits = {i.name: i for i in qdq.graph.initializer}
    out = {}
    for n in qdq.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[1] in inits:
            s = numpy_helper.to_array(inits[n.input[1]])
            if s.size == 1:
                out[n.input[0]] = float(s.reshape(()))
    return dict(sorted(out.items()))


def qdq_placement(model: onnx.ModelProto) -> dict[str, dict]:
    """node -> {inputs quantized: [bool...], weight per-channel axis} for compute nodes (tests, reports)."""
    producers = G.producer_map(model)
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type not in ("Conv", "MatMul", "Gemm", "Add", "ConvTranspose"):
            continue
        flags, axis = [], None
        for i in n.input[:2]:
            p = producers.get(i)
            # fp32 nodes read a DQ through a Cast in the mixed graph: look through it
            if p is not None and p.op_type == "Cast":
                p = producers.get(p.input[0])
            is_dq = p is not None and p.op_type == "DequantizeLinear"
            flags.append(is_dq)
            if is_dq and p.input[0] in inits:
                axis = next((a.i for a in p.attribute if a.name == "axis"), None)
        out[n.name] = {"op_type": n.op_type, "quantized_inputs": flags, "weight_axis": axis}
    return out
