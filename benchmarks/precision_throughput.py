#!/usr/bin/env python
"""What fp16 and int8 graphs cost and buy on ONNX Runtime's CPU provider (tiny and r50).

For each config: export a random-init bundle (`evis export --config X --init random`, random
weights are fine for speed), build its fp16 and int8 graphs (`evis build`), then
- accuracy: outputs of each precision vs fp32 on the second clip of bikes.mp4 (state carried);
- speed: one clip per session, sessions interleaved round by round (order rotated), so a
  busy shared machine slows every precision alike; median and min latency per clip.
The int8 graph as built (Q/DQ + fp16 rest, the TensorRT form) is compared with the same
quantization in ONNX Runtime's CPU-friendly forms (`--variants`): QDQ with fp32 float parts
(inputs only, and with output Q/DQ so ORT fuses QLinearConv) and QOperator.

Writes JSON to WORKDIR/precision_throughput.json and the "Precision" section of
benchmarks/RESULTS.md (between markers; the rest of the file is left alone).

    python benchmarks/precision_throughput.py --configs tiny r50 --variants
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START = "<!-- precision:start -->"
END = "<!-- precision:end -->"
CPU_ROW = "int8 CPU graph (model.int8.cpu.onnx, what ORT-CPU loads)"


def cpu_flags() -> list[str]:
    from efficientvis_trt.cpu_info import cpu_flags as all_flags

    flags = all_flags()
    return [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "f16c", "avx512_fp16") if f in flags]


def real_clips(bundle, fp32_session, video: str, count: int = 2) -> list[dict]:
    """Consecutive clips of a sample video, state carried by the fp32 graph."""
    from efficientvis_trt.contract import TrackletState, letterbox_clip, split_into_clips, step
    from efficientvis_trt.ort_session import run
    from efficientvis_trt.video import read_frames, sample_video

    t = bundle.clip_len
    frames = read_frames(sample_video(video), max_frames=count * t)
    state = TrackletState.initial(bundle.init_state())  # one stream: B = 1
    feeds = []

    def run_fp32(feed: dict) -> dict:
        feeds.append(feed)
        return run(fp32_session, feed)

    for chunk, _ in split_into_clips(frames, t):
        _, state = step(run_fp32, letterbox_clip(chunk, bundle.input_hw, t)[0][None], state)
    return feeds


def accuracy(ref: dict, got: dict) -> dict:
    """Max abs difference per output, relative to the fp32 range, plus decision agreement."""
    from efficientvis_trt.contract import OUTPUT_NAMES

    out = {}
    for k in OUTPUT_NAMES:
        d = float(np.abs(got[k].astype(np.float64) - ref[k]).max())
        out[k] = {"max_abs": d, "rel_to_range": d / max(float(np.ptp(ref[k])), 1e-12)}
    out["top_class_agree"] = float(np.mean(ref["logits"].argmax(-1) == got["logits"].argmax(-1)))
    out["mask_pixel_agree"] = float(np.mean((ref["mask_logits"] > 0) == (got["mask_logits"] > 0)))
    return out


def time_sessions(sessions: dict, feed: dict, rounds: int, warmup: int) -> dict:
    from efficientvis_trt.ort_session import run
    from efficientvis_trt.timing import latency_stats

    names = list(sessions)
    for name in names:
        for _ in range(warmup):
            run(sessions[name], feed)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t = time.perf_counter()
            run(sessions[name], feed)
            times[name].append(time.perf_counter() - t)
    stats = {n: latency_stats(v) for n, v in times.items()}
    return {n: {"median_ms": t.p50_ms, "min_ms": t.min_ms, "runs": t.count} for n, t in stats.items()}


def variant_models(bundle, workdir: Path, config: str, log) -> dict:
    """The shipped int8 quantization in ORT-CPU-friendly forms (same clips, same ranges)."""
    import onnx

    from efficientvis_trt.precision import graph as G
    from efficientvis_trt.precision import int8 as I
    from efficientvis_trt.precision.calibration import build_calibration_set
    from efficientvis_trt.precision.graph_build import read_record

    rec = read_record(bundle)["int8"]
    model = onnx.load(str(bundle.onnx_path("fp32")))
    G.ensure_node_names(model)
    roles = G.classify(model)
    cache = workdir / f"{config}.ranges.json"
    calib = None
    if not cache.is_file():
        log(f"[{config}] calibrating variants on the build's clips (seed {rec['seed']}) ...")
        calib = build_calibration_set(
            bundle.onnx_path("fp32"),
            bundle.init_state(),
            bundle.input_hw,
            bundle.clip_len,
            None,
            len(rec["clips"]),
            rec["seed"],
        )
    out = {}
    r = I.quantize(
        model, calib, roles, rec["fp16"]["kept_fp32"], method=rec["int8"]["method"], keep_fp32=True, cache=cache
    )
    out["int8 QDQ, fp32 rest"] = r.qdq_fp32
    out["int8 QDQ+output Q, fp32 rest"] = I.quantize_for_cpu(
        model, None, roles, cache, rec["int8"]["method"], qoperator=False, output_quant=True
    )
    out["int8 QOperator, fp32 rest"] = I.quantize_for_cpu(
        model, None, roles, cache, rec["int8"]["method"], qoperator=True
    )
    out["int8 QDQ u8 act. asym. (ORT x86 recipe)"] = I.quantize_for_cpu(
        model, None, roles, cache, rec["int8"]["method"], u8_activations=True
    )
    return out


FUSED_OPS = (
    "QLinearConv",
    "QLinearMatMul",
    "MatMulIntegerToFloat",
    "QLinearAdd",
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeLinear",
    "QuantizeLinear",
    "DequantizeLinear",
    "Conv",
    "FusedConv",
    "NchwcConv",
    "MatMul",
    "FusedMatMul",
    "Gemm",
    "Cast",
)


def fused_ops(model) -> dict[str, int]:
    """Op counts after ONNX Runtime's CPU graph optimisations: which Q/DQ patterns became int8 kernels."""
    import collections
    import tempfile

    import onnx

    from efficientvis_trt.ort_session import make_session

    with tempfile.TemporaryDirectory() as tmp:
        make_session(model, optimized_model_path=Path(tmp) / "opt.onnx")
        opt = onnx.load(str(Path(tmp) / "opt.onnx"), load_external_data=False)
    counts = collections.Counter(n.op_type for n in opt.graph.node)
    return {k: counts[k] for k in FUSED_OPS if counts.get(k)}


def render(results: dict) -> str:
    from bench_common import fmt_ms

    env = results["environment"]
    lines = [
        START,
        "## Precision",
        "",
        f"ONNX Runtime {env['onnxruntime']} CPUExecutionProvider on {env['cpu']} ({env['cores']} cores, "
        f"{env['threads']} intra-op threads; CPU flags: {', '.join(env['cpu_flags']) or 'n/a'}), "
        f"{env['date']}. Load average during the run: {env['load_before']} -> {env['load_after']} "
        "(a shared machine: sessions are timed interleaved, so the ratios are fairer than the absolute times).",
        "",
        "Command:",
        "",
        "```",
        env["command"],
        "```",
        "",
        "Random-init bundles (`evis export --config X --init random`), graphs from `evis build --precision "
        f"fp16|int8` ({env['calib_clips']} calibration clips, seed {env['seed']}, minmax). Latency = one clip "
        f"(T frames) through the graph, median of {env['rounds']} interleaved rounds per config "
        "(min in brackets).",
        "",
    ]
    for cfg, r in results["configs"].items():
        lines += [
            f"### {cfg} (clip {r['clip_len']} x {r['input_hw'][0]}x{r['input_hw'][1]})",
            "",
            "| graph | ms / clip | clips/s | vs fp32 | logits max abs diff | boxes max abs diff | "
            "mask logits max abs diff | top-class agree | mask pixel agree |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, t in r["timing"].items():
            acc = r["accuracy"].get(name)
            acc_cells = (
                "| - | - | - | - | - |"
                if acc is None
                else f"| {acc['logits']['max_abs']:.3g} | {acc['boxes']['max_abs']:.3g} | "
                f"{acc['mask_logits']['max_abs']:.3g} | {100 * acc['top_class_agree']:.1f}% | "
                f"{100 * acc['mask_pixel_agree']:.1f}% |"
            )
            lines.append(
                f"| {name} | {fmt_ms(t['median_ms'])} ({fmt_ms(t['min_ms'])}) | {1e3 / t['median_ms']:.2f} | "
                f"{t['vs_fp32']:.2f}x {acc_cells}"
            )
        lines.append("")
        if r.get("ops_after_ort_optimisation"):
            lines.append("Ops after ONNX Runtime's CPU optimisations (which Q/DQ patterns became int8 kernels):")
            lines.append("")
            for name, counts in r["ops_after_ort_optimisation"].items():
                lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            lines.append("")
        lines.append(
            f"INT8/FP32 throughput ratio ({cfg}): ORT-CPU int8 graph `model.int8.cpu.onnx` "
            f"(what `evis infer --backend ort --device cpu --precision int8` runs): "
            f"**{r['int8_cpu_graph_fp32_ratio']:.2f}x**; the TensorRT graph `model.int8.onnx` on ORT-CPU: "
            f"**{r['int8_fp32_ratio']:.2f}x**"
            + (
                f"; best CPU variant ({r['best_cpu_int8']}): **{r['best_cpu_int8_ratio']:.2f}x**"
                if r.get("best_cpu_int8")
                else ""
            )
            + "."
        )
        lines.append("")
    lines += [results.get("notes", "").strip(), END]
    return "\n".join(lines) + "\n"


NOTES = """\
How to read this (see also the "Ops after ..." lists, which show what ONNX Runtime fused):

0. "int8 CPU graph" is `model.int8.cpu.onnx`, which `evis build --precision int8` writes next to
   `model.int8.onnx` from the same calibration (same clips, seed and ranges; no second pass):
   ORT's x86 recipe (uint8 asymmetric activations, int8 symmetric per-channel weights, output
   Q/DQ, fp32 float parts; the variant "QDQ u8 act. asym." of earlier runs). The ONNX Runtime
   backend loads it on the CPU provider and says so in its backend reason; GPU providers and
   TensorRT use `model.int8.onnx`. The activation ranges are the symmetric ones calibrated for
   TensorRT, so a ReLU output uses half of the uint8 range (zero point 128).
1. "int8 (graph as built)" is `model.int8.onnx`, the graph TensorRT gets: symmetric int8 Q/DQ on
   the inputs of the quantized Conv/MatMul/Gemm/Add only, fp16 scales, every other float op fp16
   (RoIAlign, softmax, predictors, box decoding fp32). ONNX Runtime's CPU provider runs it
   correctly (accuracy columns) but fuses none of its Q/DQ into int8 kernels (no QLinearConv after
   optimisation): its CPU int8 fusions need fp32 Q/DQ patterns, and it has few fp16 CPU kernels, so
   the graph runs as dequantize + fp16/fp32 math with hundreds of Casts. Slower than fp32 on CPU.
2. The variants re-express the same node selection for ORT's CPU kernels (same clips, same
   calibration cache; `efficientvis_trt.precision.int8.quantize_for_cpu`), fp32 float side:
   - "QDQ, fp32 rest" (inputs only, the TensorRT placement): ORT turns only the DQ->Conv->Q
     patterns into QLinearConv; the other convs dequantize and run in fp32: still slower.
   - "QDQ+output Q" (ORT's QDQ convention): more QLinearConv, but symmetric int8 activations
     (S8S8) do not get ORT's fast x64 kernels: about break-even.
   - "QOperator" S8S8: slowest; ORT itself warns "Please use QuantFormat.QDQ for activation type
     QInt8 and weight type QInt8. Or it will lead to bad performance on x64".
   - "QDQ u8 act. asym. (ORT x86 recipe)": uint8 asymmetric activations, int8 symmetric
     per-channel weights, output Q/DQ. Every backbone/FPN conv becomes a U8S8 QLinearConv (VNNI on
     this CPU): the only form where int8 beats fp32 on ORT-CPU. TensorRT only takes symmetric
     quantization, so `evis build` writes it as the separate `model.int8.cpu.onnx` (row 0).
   The variants are timed only with `--variants` (not in every run).
3. fp16 on CPU mostly runs fp32 kernels behind Casts (about fp32 speed); its value is on GPUs.
4. Accuracy columns: the fp32 graph vs each graph on the second clip of bikes.mp4 (state carried).
   Random weights make the 6-stage r50 chaotic (boxes leave the image), so these are numeric
   deltas, not AP; int8 error comes from the backbone (quantizing only the backbone gives the
   same deltas in a side experiment), not from the fp16 rest.
5. The machine is shared: absolute times move between runs (r50 fp32 took 8.4 and 5.4 s/clip
   under load, 2.4 s on the quiet machine); each "vs fp32" is against the fp32 timed interleaved with it (with
   `--variants`, a second group re-times fp32 with the variants)."""


def main(argv: list[str] | None = None) -> int:
    from bench_common import ensure_bundle, replace_section

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["tiny", "r50"])
    p.add_argument("--workdir", type=Path, default=ROOT / "bench_out" / "precision")
    p.add_argument("--calib-clips", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=0, help="timed rounds (default: 20 tiny, 5 others)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (default: all cores)")
    p.add_argument("--video", default="bikes.mp4")
    p.add_argument("--variants", action="store_true", help="also time the int8 quantization in ORT-CPU forms")
    p.add_argument("--rebuild", action="store_true", help="rebuild the fp16/int8 graphs of existing bundles")
    p.add_argument("--results-md", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    p.add_argument(
        "--render-only",
        action="store_true",
        help="re-render RESULTS.md from WORKDIR/precision_throughput.json without measuring",
    )
    args = p.parse_args(argv)
    if args.render_only:
        results = json.loads((args.workdir / "precision_throughput.json").read_text())
        results["notes"] = NOTES
        section = render(results)
        print(section)
        if not args.no_write:
            replace_section(args.results_md, START, END, section)
        return 0

    import onnxruntime

    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.cpu_info import cpu_model
    from efficientvis_trt.io_utils import write_json_atomic
    from efficientvis_trt.ort_session import make_session, run

    def log(msg: str) -> None:
        print(msg, flush=True)

    args.workdir.mkdir(parents=True, exist_ok=True)
    threads = args.threads or os.cpu_count() or 1
    env = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "cpu_flags": cpu_flags(),
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
        "load_before": round(os.getloadavg()[0], 1),
        "command": "python benchmarks/precision_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "calib_clips": args.calib_clips,
        "seed": args.seed,
    }
    results: dict = {"environment": env, "configs": {}, "notes": NOTES}
    for cfg in args.configs:
        bundle = Bundle.open(
            ensure_bundle(
                cfg,
                args.workdir,
                args.calib_clips,
                log,
                precisions=("fp16", "int8"),
                seed=args.seed,
                rebuild=args.rebuild,
            )
        )
        rounds = args.rounds or (20 if cfg == "tiny" else 5)
        env["rounds"] = args.rounds or "20 (tiny) / 5 (others)"
        sess32 = make_session(bundle.onnx_path("fp32"), threads=threads)
        feeds = real_clips(bundle, sess32, args.video)
        feed = feeds[1]
        ref = run(sess32, feed)
        models = {
            "fp32": bundle.onnx_path("fp32"),
            "fp16": bundle.onnx_path("fp16"),
            "int8 (graph as built)": bundle.onnx_path("int8"),
            CPU_ROW: bundle.cpu_graph("int8")[0],
        }
        groups = [models]
        if args.variants:
            groups.append({"fp32": models["fp32"], **variant_models(bundle, args.workdir, cfg, log)})
        timing: dict = {}  # row name -> {median_ms, min_ms, runs, vs_fp32}
        acc: dict = {}
        ops: dict = {}
        for gi, group in enumerate(groups):
            sessions = {
                name: (sess32 if name == "fp32" else make_session(m, threads=threads)) for name, m in group.items()
            }
            for name, s in sessions.items():
                if name != "fp32":
                    acc[name] = accuracy(ref, run(s, feed))
                if name.startswith("int8"):
                    ops[name] = fused_ops(group[name])
            log(f"[{cfg}] timing {', '.join(sessions)} ({rounds} rounds) ...")
            t = time_sessions(sessions, feed, rounds, args.warmup)
            base = t["fp32"]["median_ms"]  # ratios within a group: timed interleaved with this fp32
            for name, v in t.items():
                v["vs_fp32"] = base / v["median_ms"]
                timing[name if not (gi and name == "fp32") else "fp32 (re-timed with the variants)"] = v
            del sessions
        r = {
            "clip_len": bundle.clip_len,
            "input_hw": list(bundle.input_hw),
            "timing": timing,
            "accuracy": acc,
            "ops_after_ort_optimisation": ops,
            "int8_fp32_ratio": timing["int8 (graph as built)"]["vs_fp32"],
            "int8_cpu_graph_fp32_ratio": timing[CPU_ROW]["vs_fp32"],
        }
        cpu_forms = {k: v for k, v in timing.items() if k.startswith("int8") and "as built" not in k and k != CPU_ROW}
        if cpu_forms:
            best = max(cpu_forms, key=lambda k: cpu_forms[k]["vs_fp32"])
            r["best_cpu_int8"], r["best_cpu_int8_ratio"] = best, cpu_forms[best]["vs_fp32"]
        results["configs"][cfg] = r
        log(json.dumps({k: round(v["median_ms"], 1) for k, v in timing.items()}))
    env["load_after"] = round(os.getloadavg()[0], 1)
    write_json_atomic(args.workdir / "precision_throughput.json", results)
    section = render(results)
    print(section)
    if not args.no_write:
        replace_section(args.results_md, START, END, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
