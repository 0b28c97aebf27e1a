#!/usr/bin/env python
"""Many streams on ONNX Runtime's CPU provider: solo runs in sequence vs the batched multi-stream runtime.

For each config (random-init bundle exported here, int8 graphs built with `evis build`) and
precision (fp32, int8 = the ORT-CPU graph `evis infer --precision int8` runs), for K in
--streams: K videos of --clips clips each (different parts of bikes.mp4), run
  * solo: one after another through `Predictor.predict_video` (B = 1), and
  * batched: all at once through `MultiStreamRunner(K)` (continuous batching, B <= K),
interleaved (solo, batched, solo, ... with the order flipped every round) so a busy shared
machine slows both alike. frames/s = all frames / wall time; clip latency = the model call
that carried each clip, pooled over every stream (p50/p99 from `efficientvis_trt.timing`).

`--b1 OLD_SRC`: also time the B = 1 cost of the batched graph against the graph exported by
another checkout of this toolkit (OLD_SRC: a source tree, e.g. `git archive` of the commit
before batched graphs), one clip per session, sessions interleaved, state carried.

    flock /tmp/evis-heavy.lock python benchmarks/streams_throughput.py --configs tiny r50 --b1 /tmp/old_src
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_videos(workdir: Path, count: int, frames_each: int) -> list[Path]:
    import cv2

    from efficientvis_trt.video import read_frames, sample_video

    frames = read_frames(sample_video("bikes.mp4"))
    step = max(1, (len(frames) - frames_each) // max(count - 1, 1))
    out = []
    for i in range(count):
        path = workdir / f"bikes_{i}_{frames_each}.avi"
        if not path.is_file():
            chunk = frames[i * step : i * step + frames_each]
            h, w = chunk[0].shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
            for f in chunk:
                writer.write(f)
            writer.release()
        out.append(path)
    return out


def run_solo(predictor, videos) -> tuple[int, float, list[float]]:
    start = time.perf_counter()
    results = [predictor.predict_video(v) for v in videos]
    wall = time.perf_counter() - start
    return sum(r.num_frames for r in results), wall, [s for r in results for s in r.clip_latencies]


def run_batched(predictor, videos, k: int) -> tuple[int, float, list[float]]:
    from efficientvis_trt.runtime.streams import MultiStreamRunner

    runner = MultiStreamRunner(predictor, k)
    start = time.perf_counter()
    results = runner.predict_videos(videos)
    wall = time.perf_counter() - start
    return sum(r.num_frames for r in results), wall, [s for r in results for s in r.clip_latencies]


def measure_streams(bundle: Path, precision: str, videos, streams, rounds: int) -> list[dict]:
    from efficientvis_trt.runtime.predictor import Predictor
    from efficientvis_trt.timing import latency_stats

    predictor = Predictor(bundle, backend="ort", precision=precision, device="cpu")
    predictor.predict_video(videos[0])  # warm-up (session, allocator)
    rows = []
    for k in streams:
        runs: dict[str, list] = {"solo": [], "batched": []}
        for r in range(rounds):
            order = ("solo", "batched") if r % 2 == 0 else ("batched", "solo")
            for mode in order:
                got = run_solo(predictor, videos[:k]) if mode == "solo" else run_batched(predictor, videos[:k], k)
                runs[mode].append(got)
        for mode, got in runs.items():
            fps = [f / w for f, w, _ in got]
            lat = latency_stats([s for _, _, samples in got for s in samples])
            rows.append(
                {
                    "precision": precision,
                    "streams": k,
                    "mode": mode,
                    "fps": float(np.median(fps)),
                    "clip_p50_ms": lat.p50_ms,
                    "clip_p99_ms": lat.p99_ms,
                    "clips": lat.count,
                    "rounds": rounds,
                }
            )
            log(f"  {precision} K={k} {mode}: {rows[-1]['fps']:.2f} frames/s, p50 {lat.p50_ms:.0f} ms")
    predictor.close()
    return rows


# ---- B = 1: the batched graph vs the graph of another checkout ---------------------------------
def export_old(old_src: Path, config: str, workdir: Path) -> Path:
    out = workdir / f"{config}_old"
    if not (out / "model.onnx").is_file():
        log(f"[{config}] exporting with {old_src} (the graph before batched graphs) ...")
        code = (
            "from efficientvis_trt.export.exporter import export_bundle; "
            f"export_bundle({str(out)!r}, config={config!r}, init='random', seed=0, verify=False, echo=None)"
        )
        env = {**os.environ, "PYTHONPATH": str(old_src)}
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=str(old_src))
    return out / "model.onnx"


def measure_b1(new_onnx: Path, old_onnx: Path, clip_len: int, hw, state, rounds: int, clips: int = 3) -> dict:
    """B = 1 per-clip latency of the batched graph against the unbatched one, as exported and with
    today's RoIAlign body put into it (`roi_align_graphs.with_body`): the latter pair differs only
    in the stream dimension."""
    from roi_align_graphs import with_body

    from efficientvis_trt.contract import TrackletState, letterbox_clip, split_into_clips, step
    from efficientvis_trt.ort_session import make_session
    from efficientvis_trt.timing import latency_stats
    from efficientvis_trt.video import read_frames, sample_video

    frames = read_frames(sample_video("bikes.mp4"), max_frames=clips * clip_len)
    canvases = [letterbox_clip(c, hw, clip_len)[0] for c, _ in split_into_clips(frames, clip_len)]
    sessions = {
        "batched (B=1)": make_session(new_onnx),
        "unbatched": make_session(old_onnx),
        "unbatched, same body": make_session(with_body(old_onnx, None)),
    }
    batched = {"batched (B=1)": True, "unbatched": False, "unbatched, same body": False}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(rounds + 1):  # round 0 warms up
        order = list(sessions) if r % 2 == 0 else list(sessions)[::-1]
        for name in order:
            sess, add_b = sessions[name], batched[name]
            names, lap = [o.name for o in sess.get_outputs()], []

            def timed_run(inputs, sess=sess, names=names, lap=lap):
                t0 = time.perf_counter()
                out = sess.run(None, inputs)
                lap.append(time.perf_counter() - t0)
                return dict(zip(names, out))

            carried = TrackletState.initial(state, streams=1 if add_b else None)
            for clip in canvases:
                _, carried = step(timed_run, clip[None] if add_b else clip, carried)
            if r:
                times[name] += lap
    stats = {k: latency_stats(v) for k, v in times.items()}
    return {
        "clips_timed": stats["unbatched"].count,
        "unbatched_p50_ms": stats["unbatched"].p50_ms,
        "unbatched_same_body_p50_ms": stats["unbatched, same body"].p50_ms,
        "batched_b1_p50_ms": stats["batched (B=1)"].p50_ms,
        "ratio_p50": stats["batched (B=1)"].p50_ms / stats["unbatched"].p50_ms,
        "ratio_same_body_p50": stats["batched (B=1)"].p50_ms / stats["unbatched, same body"].p50_ms,
        "unbatched_mean_ms": stats["unbatched"].mean_ms,
        "unbatched_same_body_mean_ms": stats["unbatched, same body"].mean_ms,
        "batched_b1_mean_ms": stats["batched (B=1)"].mean_ms,
    }


def markdown(results: dict) -> str:
    lines = []
    for config, res in results["configs"].items():
        lines.append(f"### {config} (clip {res['clip_len']} x {res['input_hw'][0]}x{res['input_hw'][1]})\n")
        lines.append(
            "| precision | streams K | solo in sequence: frames/s | batched: frames/s | batched / solo "
            "| solo clip p50 / p99 ms | batched clip p50 / p99 ms |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        rows = {(r["precision"], r["streams"], r["mode"]): r for r in res["streams"]}
        for precision in res["precisions"]:
            for k in results["streams"]:
                s, b = rows[(precision, k, "solo")], rows[(precision, k, "batched")]
                lines.append(
                    f"| {precision} | {k} | {s['fps']:.2f} | {b['fps']:.2f} | {b['fps'] / s['fps']:.2f}x "
                    f"| {s['clip_p50_ms']:.0f} / {s['clip_p99_ms']:.0f} "
                    f"| {b['clip_p50_ms']:.0f} / {b['clip_p99_ms']:.0f} |"
                )
        if "b1" in res:
            b1 = res["b1"]
            lines.append(
                f"\nB = 1, fp32: batched graph p50 {b1['batched_b1_p50_ms']:.1f} ms vs unbatched graph "
                f"{b1['unbatched_p50_ms']:.1f} ms per clip (ratio {b1['ratio_p50']:.3f}; means "
                f"{b1['batched_b1_mean_ms']:.1f} vs {b1['unbatched_mean_ms']:.1f} ms; {b1['clips_timed']} clips each); "
                f"against the unbatched graph with today's RoIAlign body {b1['unbatched_same_body_p50_ms']:.1f} ms "
                f"(ratio {b1['ratio_same_body_p50']:.3f}: the stream dimension alone)"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    from bench_common import ensure_bundle

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["tiny"])
    ap.add_argument("--streams", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    ap.add_argument("--clips", type=int, default=2, help="clips per video (default 2)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds per K (default 1)")
    ap.add_argument("--calib-clips", type=int, default=4)
    ap.add_argument("--b1", type=Path, default=None, metavar="OLD_SRC", help="time B = 1 against OLD_SRC's graph")
    ap.add_argument("--b1-rounds", type=int, default=4)
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench_out" / "streams")
    args = ap.parse_args()

    from efficientvis_trt.bundle import Bundle

    args.workdir.mkdir(parents=True, exist_ok=True)
    results = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": os.cpu_count(),
        "streams": args.streams,
        "configs": {},
    }
    for config in args.configs:
        bundle_path = ensure_bundle(config, args.workdir, args.calib_clips, log)
        bundle = Bundle.open(bundle_path)
        res = {"clip_len": bundle.clip_len, "input_hw": list(bundle.input_hw), "precisions": args.precisions}
        videos = make_videos(args.workdir, max(args.streams), args.clips * bundle.clip_len)
        if args.b1 is not None:
            old = export_old(args.b1, config, args.workdir)
            res["b1"] = measure_b1(
                bundle_path / "model.onnx", old, bundle.clip_len, bundle.input_hw, bundle.init_state(), args.b1_rounds
            )
            log(f"[{config}] B=1: {res['b1']}")
            results["configs"][config] = res
            (args.workdir / "streams_throughput.json").write_text(json.dumps(results, indent=2) + "\n")
        res["streams"] = []
        results["configs"][config] = res
        for precision in args.precisions:  # the JSON is rewritten after every stage (a long run keeps its part)
            res["streams"] += measure_streams(bundle_path, precision, videos, args.streams, args.rounds)
            (args.workdir / "streams_throughput.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
