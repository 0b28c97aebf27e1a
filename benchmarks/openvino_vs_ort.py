#!/usr/bin/env python
"""OpenVINO beside ONNX Runtime on the CPU: per-clip latency and fidelity to fp32, tiny and r50, one interleaved run.

For each config: a random-init bundle (`evis export --config X --init random`; random weights
are fine for speed) with its int8 graphs (`evis build --precision int8`), then every row opened
exactly as `evis infer --device cpu` opens it (`load_runtime`, both runtimes on the same number
of threads) and timed one clip at a time, rows interleaved round by round with the order
rotated, so a busy shared machine slows every row alike. Fidelity: each row's outputs against
ORT fp32 on the second clip of bikes.mp4 (state carried by ORT fp32 from the first).

Rows: ORT fp32, ORT int8 (its CPU graph model.int8.cpu.onnx), OpenVINO fp32, bf16 (where the
CPU has it), and OpenVINO int8 on each int8 graph: model.int8.onnx (8-bit weights, what the
backend runs on a CPU with VNNI) and the CPU form model.int8.cpu.onnx (7-bit weights, what it
runs on x86 without VNNI, where 8-bit weights saturate; docs/precision.md, "Saturation on x86").

Writes WORKDIR/openvino_vs_ort.json and the "OpenVINO beside ONNX Runtime" section of
benchmarks/RESULTS.md (between markers; the rest of the file is left alone). r50 exports and
builds need several GB, and timings want a quiet machine, so on a shared machine run it as

    flock /tmp/evis-heavy.lock python benchmarks/openvino_vs_ort.py --configs tiny r50
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START = "<!-- openvino-vs-ort:start -->"
END = "<!-- openvino-vs-ort:end -->"
REFERENCE = "ORT fp32"
# row name -> (backend, precision, graph override or None)
ROWS = {
    REFERENCE: ("onnxruntime", "fp32", None),
    "ORT int8 (model.int8.cpu.onnx)": ("onnxruntime", "int8", None),
    "OpenVINO fp32": ("openvino", "fp32", None),
    "OpenVINO bf16": ("openvino", "bf16", None),
    "OpenVINO int8 on model.int8.onnx (8-bit weights)": ("openvino", "int8", "model.int8.onnx"),
    "OpenVINO int8 on model.int8.cpu.onnx (7-bit weights)": ("openvino", "int8", "model.int8.cpu.onnx"),
}


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def second_clip(bundle, video: str) -> dict[str, np.ndarray]:
    """Clip 2 of a sample video with the state ORT fp32 carried out of clip 1."""
    from efficientvis_trt.contract import TrackletState, step
    from efficientvis_trt.ort_session import make_session, run
    from efficientvis_trt.video import Letterbox, read_frames, sample_video

    t = bundle.clip_len
    frames = read_frames(sample_video(video), max_frames=2 * t)
    lb = Letterbox(frames[0].shape[:2], bundle.input_hw)
    canvas = np.stack([lb.apply(f) for f in frames])
    session = make_session(bundle.onnx_path("fp32"), threads=1)
    init = TrackletState.initial(bundle.init_state())  # one stream: B = 1
    _, state = step(lambda inputs: run(session, inputs), canvas[None, :t], init)
    return {"frames": canvas[None, t:], **state.inputs()}


def open_row(bundle, backend: str, precision: str, graph: str | None, threads: int):
    """The backend as `evis infer --device cpu` makes it (or OpenVINO on a given graph file)."""
    from efficientvis_trt.runtime.load import load_runtime
    from efficientvis_trt.runtime.openvino_backend import OpenVINOBackend

    if graph is not None:
        return OpenVINOBackend(bundle.path / graph, precision, threads=threads)
    return load_runtime(bundle, backend, precision, device="cpu", threads=threads).backend


def fidelity(ref: dict, got: dict) -> dict:
    from efficientvis_trt.contract import OUTPUT_NAMES

    out = {}
    for k in OUTPUT_NAMES:
        d = np.abs(got[k].astype(np.float64) - ref[k])
        out[k] = {"max_abs": float(d.max()), "mean_abs": float(d.mean())}
    out["top_class_agree"] = float(np.mean(ref["logits"].argmax(-1) == got["logits"].argmax(-1)))
    out["mask_pixel_agree"] = float(np.mean((ref["mask_logits"] > 0) == (got["mask_logits"] > 0)))
    return out


def measure_config(config: str, args, log) -> dict:
    from bench_common import ensure_bundle

    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.errors import EvisError
    from efficientvis_trt.timing import latency_stats

    bundle = Bundle.open(ensure_bundle(config, args.workdir, args.calib_clips, log))
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = round(os.getloadavg()[0], 1)
    feed = second_clip(bundle, args.video)
    rows, skipped, load_s = {}, {}, {}
    for name, (backend, precision, graph) in ROWS.items():
        t = time.perf_counter()
        try:
            rows[name] = open_row(bundle, backend, precision, graph, args.threads)
        except EvisError as exc:  # e.g. bf16 on a CPU without it: a row that says why
            skipped[name] = str(exc)
            continue
        load_s[name] = time.perf_counter() - t
        log(f"[{config}] {name}: opened in {load_s[name]:.1f} s")
    outputs = {name: be.run(feed) for name, be in rows.items()}  # also the first warm-up
    for _ in range(args.warmup - 1):
        for be in rows.values():
            be.run(feed)
    rounds = args.rounds or (20 if config == "tiny" else 7)
    names = list(rows)
    samples: dict[str, list[float]] = {n: [] for n in names}
    log(f"[{config}] timing {len(names)} rows, {rounds} interleaved rounds ...")
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            rows[name].run(feed)
            samples[name].append(time.perf_counter() - t)
    ref = outputs[REFERENCE]
    stats = {name: latency_stats(samples[name]) for name in names}
    table = {}
    for name in names:
        table[name] = {
            "p50_ms": stats[name].p50_ms,
            "min_ms": stats[name].min_ms,
            "p90_ms": stats[name].p90_ms,
            "runs": stats[name].count,
            "speedup_vs_ort_fp32": stats[REFERENCE].p50_ms / stats[name].p50_ms,
            "load_s": load_s[name],
            "fidelity": fidelity(ref, outputs[name]) if name != REFERENCE else None,
        }
    for be in rows.values():
        be.close()
    return {
        "measured": started,
        "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 1),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "clip_len": bundle.clip_len,
        "input_hw": list(bundle.input_hw),
        "bundle_created": bundle.metadata.get("created", "?"),
        "calib_clips": len(json.loads((bundle.path / "calibration.json").read_text())["int8"]["clips"]),
        "roialign_body_sha256": roialign_body_sha(bundle.onnx_path("fp32")),
        "roialign_body_sha256_int8": roialign_body_sha(bundle.onnx_path("int8")),
        "rounds": rounds,
        "rows": table,
        "not_available": skipped,
        "inline_s": inline_seconds(bundle.onnx_path("fp32")),
    }


def roialign_body_sha(path: Path) -> str:
    """A fingerprint of the RoIAlign function body the graph carries (to tell before/after a body change)."""
    import hashlib

    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return hashlib.sha256(b"".join(f.SerializeToString() for f in model.functions)).hexdigest()[:12]


def inline_seconds(path: Path) -> float:
    """What reading the graph for OpenVINO adds at load time: onnx.load + inline + serialize."""
    import onnx
    import onnx.inliner

    t = time.perf_counter()
    onnx.inliner.inline_local_functions(onnx.load(str(path))).SerializeToString()
    return time.perf_counter() - t


def environment(args, argv) -> dict:
    import onnxruntime
    import openvino

    from efficientvis_trt.cpu_info import cpu_flags, cpu_model
    from efficientvis_trt.runtime.openvino_backend import device_capabilities

    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "cpu_flags": [
            f
            for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
            if f in flags
        ],
        "openvino_capabilities": device_capabilities(openvino.Core()),
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__.split("-")[0],
        "python": platform.python_version(),
        "command": "python benchmarks/openvino_vs_ort.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": git("rev-parse", "--short", "HEAD"),
        "roialign_body_commit": git("log", "-1", "--format=%h", "--", "efficientvis_trt/export/roi_align_onnx.py"),
    }


def render(results: dict) -> str:
    from bench_common import fmt_ms

    env = results["environment"]
    lines = [
        START,
        "## OpenVINO beside ONNX Runtime (CPU)",
        "",
        f"OpenVINO {env['openvino']} and ONNX Runtime {env['onnxruntime']} (CPUExecutionProvider) on {env['cpu']} "
        f"({env['cores']} cores, CPU flags {', '.join(env['cpu_flags']) or 'n/a'}; OpenVINO lists "
        f"{', '.join(env['openvino_capabilities'])}), **both on {env['threads']} threads**; dates and load "
        "averages per table (a shared machine: rows are timed interleaved, so the ratios are fairer than the "
        "absolute times).",
        "",
        "The command behind every table: `flock /tmp/evis-heavy.lock python benchmarks/openvino_vs_ort.py "
        "--configs tiny r50` (each table names the exact one it came from).",
        "",
        f"Run at commit {env['commit']}; the bundles' RoIAlign function body is the one of commit "
        f"{env['roialign_body_commit']} (last change to `efficientvis_trt/export/roi_align_onnx.py`; the body's "
        "fingerprint per config below): after a change there, delete WORKDIR and rerun the command. "
        "Random-init bundles, int8 from `evis build --precision int8` (seed 0). "
        "Every row is opened as `evis infer --device cpu "
        "--backend B --precision P` opens it. Latency: one clip (T frames) through the backend, p50 "
        "(min-p90) of the interleaved rounds (`efficientvis_trt.timing.latency_stats`). "
        "Fidelity: against ORT fp32 on the second clip of bikes.mp4.",
        "",
    ]
    for cfg, r in results["configs"].items():
        lines += [
            f"### {cfg} (clip {r['clip_len']} x {r['input_hw'][0]}x{r['input_hw'][1]}, {r['rounds']} rounds)",
            "",
            f"`{r['command']}`, measured {r['measured']}, load average {r['load_before']} before, "
            f"{r['load_after']} after; peak RSS of the process {r['peak_rss_gb']:.1f} GB. Bundle exported "
            f"{r['bundle_created']}, RoIAlign body sha256 {r['roialign_body_sha256']} (model.onnx), "
            f"{r.get('roialign_body_sha256_int8', '?')} (model.int8.onnx), int8 calibrated on "
            f"{r['calib_clips']} clips.",
            "",
            "| row | ms / clip p50 (min-p90) | vs ORT fp32 | load s | logits max / mean abs diff | "
            "mask logits max / mean | query_out max / mean | top-class agree | mask pixel agree |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, t in r["rows"].items():
            f = t["fidelity"]
            acc = (
                "| - | - | - | - | - |"
                if f is None
                else "| "
                + " | ".join(
                    f"{f[k]['max_abs']:.3g} / {f[k]['mean_abs']:.2g}" for k in ("logits", "mask_logits", "query_out")
                )
                + f" | {100 * f['top_class_agree']:.1f}% | {100 * f['mask_pixel_agree']:.1f}% |"
            )
            lines.append(
                f"| {name} | {fmt_ms(t['p50_ms'])} ({fmt_ms(t['min_ms'])}-{fmt_ms(t['p90_ms'])}) | "
                f"{t['speedup_vs_ort_fp32']:.2f}x | {t['load_s']:.1f} {acc}"
            )
        for name, why in r["not_available"].items():
            lines.append(f"| {name} | not available: {why} | | | | | | | |")
        lines += [
            "",
            f"Reading the fp32 graph for OpenVINO (onnx.load + inline the RoIAlign function + serialize) takes "
            f"{r['inline_s']:.2f} s of the OpenVINO rows' load time, so the graph is inlined in memory at load "
            "time rather than cached in the bundle.",
            "",
        ]
    lines += [NOTES.strip(), END]
    return "\n".join(lines) + "\n"


NOTES = """\
How to read this:
- int8 on OpenVINO runs `model.int8.onnx` (the TensorRT form: symmetric int8 Q/DQ, fp16 rest) where
  the CPU adds int8 products in 32 bits (VNNI, AMX, Arm), and the CPU form `model.int8.cpu.onnx`
  (uint8 activations, 7-bit weights) on x86 without VNNI, where 8-bit weights saturate int16 pair sums
  (docs/precision.md, "Saturation on x86"); each table's CPU flags say which applies, and the two
  int8 rows show both graphs either way.
- bf16 is the fp32 graph at OpenVINO's bf16 inference precision; the backend refuses it on a CPU
  whose OPTIMIZATION_CAPABILITIES lack BF16, and always asks for f32 explicitly for fp32 and int8
  (OpenVINO's own default on a BF16-capable CPU is bf16).
- Random weights make r50 chaotic over carried state (see the precision section), so the fidelity
  columns are numeric deltas, not AP."""


def main(argv: list[str] | None = None) -> int:
    from bench_common import replace_section

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["tiny", "r50"])
    p.add_argument("--workdir", type=Path, default=ROOT / "bench_out" / "openvino")
    p.add_argument("--calib-clips", type=int, default=8)
    p.add_argument("--rounds", type=int, default=0, help="timed rounds (default: 20 tiny, 7 others)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="threads for both runtimes (default 2)")
    p.add_argument("--video", default="bikes.mp4")
    p.add_argument("--results-md", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    p.add_argument("--render-only", action="store_true", help="re-render from WORKDIR/openvino_vs_ort.json")
    p.add_argument("--append", action="store_true", help="add (or replace) these configs in WORKDIR's JSON")
    args = p.parse_args(argv)
    out_json = args.workdir / "openvino_vs_ort.json"
    if args.render_only:
        results = json.loads(out_json.read_text())
    else:
        from efficientvis_trt.io_utils import write_json_atomic

        args.workdir.mkdir(parents=True, exist_ok=True)
        configs = json.loads(out_json.read_text())["configs"] if args.append and out_json.is_file() else {}
        results = {"environment": environment(args, argv), "configs": configs}
        for cfg in args.configs:
            results["configs"][cfg] = measure_config(cfg, args, lambda m: print(m, flush=True))
            results["configs"][cfg]["command"] = results["environment"]["command"]
            write_json_atomic(out_json, results)
    section = render(results)
    print(section)
    if not args.no_write:
        replace_section(args.results_md, START, END, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
