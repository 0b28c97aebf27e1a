#!/usr/bin/env python
"""Frames/s through Triton Inference Server against concurrent streams (1, 2, 4, 8): tiny and r50, ORT fp32 and int8.

The server is the one the tests run: `tritonserver` 2.51 from the nvidia-pytriton wheel, on
127.0.0.1, serving the repository `evis serve` writes; its model is `evis_python`, the
python backend running the bundle's graph with ONNX Runtime on this CPU (in the numpy<2
server environment), dynamic batching up to 8 streams. The clients are K threads, each a
`Predictor` whose backend is the served model (its own gRPC connection, its own held
state) over its own F-frame cut of bikes.mp4, all started together: frames/s = K x F /
wall time until the last stream ends; clip latency = one request's round trip as its
stream sees it (p50 / p99 over every clip of every stream). For scale, the same video
runs alone on local ONNX Runtime (`Predictor(bundle, backend="ort")`, same graph).

Interleaved: every round runs every (precision, K) cell and the local run once, in an
order rotated per round, so a busy shared machine slows all of them alike; the tables give
the median over rounds. Bundles are random-init exports (`evis export --init random`)
with an int8 build (`evis build --precision int8`); random weights are fine for speed.

Writes WORKDIR/serve_throughput.json and the "Serving through Triton" section of
benchmarks/RESULTS.md (between markers; the rest of the file is left alone).

    python benchmarks/serve_throughput.py --configs tiny r50
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START = "<!-- serve:start -->"
END = "<!-- serve:end -->"
DEFAULT_FRAMES = {"tiny": 20, "r50": 10}


def make_videos(workdir: Path, count: int, frames: int) -> list[Path]:
    """`count` different cuts of bikes.mp4, `frames` frames each."""
    import cv2

    from efficientvis_trt.video import read_frames, sample_video

    src = read_frames(sample_video("bikes.mp4"))
    out = []
    for i in range(count):
        path = workdir / f"bikes_{frames}f_{i}.mp4"
        if not path.is_file():
            start = (i * 7) % max(1, len(src) - frames)
            h, w = src[0].shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
            for f in src[start : start + frames]:
                writer.write(f)
            writer.release()
        out.append(path)
    return out


def served_run(served, videos: list[Path]) -> dict:
    """K client streams at once (one thread, connection and state each); frames/s and clip latencies."""
    from efficientvis_trt.runtime.predictor import Predictor
    from efficientvis_trt.serve.client import remote_runtime

    predictors = [Predictor(remote_runtime(served), top_k=10) for _ in videos]
    results: list = [None] * len(videos)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(videos) + 1)

    def stream(i: int) -> None:
        barrier.wait()
        try:
            results[i] = predictors[i].predict_video(videos[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(videos))]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for p in predictors:
        p.close()
    if errors:
        raise errors[0]
    frames = sum(r.num_frames for r in results)
    return {"fps": frames / wall, "latencies": [x for r in results for x in r.clip_latencies], "frames": frames}


def local_run(bundle: Path, precision: str, video: Path) -> dict:
    from efficientvis_trt.runtime.predictor import Predictor

    with Predictor(bundle, backend="ort", precision=precision, device="cpu", top_k=10) as p:
        start = time.perf_counter()
        r = p.predict_video(video)
        wall = time.perf_counter() - start
    return {"fps": r.num_frames / wall, "latencies": list(r.clip_latencies), "frames": r.num_frames}


def bench_config(config: str, args, log) -> dict:
    from bench_common import ensure_bundle

    from efficientvis_trt.serve.client import connect
    from efficientvis_trt.serve.local_server import LocalTritonServer, ensure_server_env
    from efficientvis_trt.serve.repository import MODEL_NAMES, write_repository
    from efficientvis_trt.timing import latency_stats

    workdir = Path(args.workdir)
    bundle = ensure_bundle(config, workdir, args.calib_clips, log)
    frames = args.frames or DEFAULT_FRAMES[config]
    videos = make_videos(workdir, max(args.streams), frames)
    env = ensure_server_env(say=log)
    servers, served = {}, {}
    try:
        for precision in args.precisions:
            repo = workdir / f"repo_{config}_{precision}"
            write_repository(bundle, repo, precision=precision, backends=("python",), max_batch_size=8)
            servers[precision] = LocalTritonServer(repo, MODEL_NAMES["python"], env=env, lifetime_s=3600).start()
            served[precision] = connect(servers[precision].url(args.protocol), args.protocol)
            served_run(served[precision], videos[:1])  # warm-up: sessions, shared memory, connections
        cells = [(p, k) for p in args.precisions for k in args.streams] + [(p, "local") for p in args.precisions]
        runs: dict[str, list[dict]] = {f"{p}/{k}": [] for p, k in cells}
        for r in range(args.rounds):
            order = cells[r % len(cells) :] + cells[: r % len(cells)]
            for precision, k in order:
                if k == "local":
                    res = local_run(bundle, precision, videos[0])
                else:
                    res = served_run(served[precision], videos[:k])
                runs[f"{precision}/{k}"].append(res)
                log(f"[{config}] round {r + 1} {precision} {k}: {res['fps']:.2f} frames/s")
    finally:
        for s in servers.values():
            s.stop()
    table = {}
    for key, rs in runs.items():
        lat = latency_stats([x for res in rs for x in res["latencies"]])
        table[key] = {
            "fps_median": statistics.median(res["fps"] for res in rs),
            "fps_runs": [round(res["fps"], 3) for res in rs],
            "clip_p50_ms": lat.p50_ms,
            "clip_p99_ms": lat.p99_ms,
            "clips": lat.count,
        }
    return {"frames_per_stream": frames, "table": table}


def markdown(report: dict) -> str:
    lines = [
        START,
        "## Serving through Triton (python backend, ONNX Runtime on this CPU)",
        "",
        f"`{report['command']}` on {report['date']}: {report['machine']}, load average "
        f"{report['load'][0]:.1f} at the start and {report['load'][1]:.1f} at the end (2 cores: above 2, other "
        "work shared the machine).",
        "",
        "The server is `tritonserver` 2.51 from the nvidia-pytriton wheel on 127.0.0.1, model `evis_python`: "
        "Triton's **python backend running the bundle's graph with ONNX Runtime on this 2-core CPU** (no "
        "TensorRT, no GPU), dynamic batching up to 8 streams, each dynamic batch one call of the batched graph. "
        "K client streams run at once, each its own thread, "
        "gRPC connection and held state, each on its own cut of bikes.mp4; frames/s = all frames / wall time "
        "until the last stream ends; clip latency is one request's round trip as its stream sees it. "
        "`local` is one such video alone on local ONNX Runtime (same graph) for scale. Median over "
        f"{report['rounds']} interleaved rounds (order rotated per round). Random-init weights (speed only).",
        "",
    ]
    for config, res in report["configs"].items():
        lines += [
            f"### {config} ({res['frames_per_stream']} frames per stream)",
            "",
            "| precision | streams | frames/s | vs local alone | clip p50 ms | clip p99 ms | frames/s per run |",
            "|---|---|---|---|---|---|---|",
        ]
        for precision in report["precisions"]:
            base = res["table"][f"{precision}/local"]["fps_median"]
            for k in [*report["streams"], "local"]:
                row = res["table"][f"{precision}/{k}"]
                label = "local alone" if k == "local" else str(k)
                lines.append(
                    f"| {precision} | {label} | {row['fps_median']:.2f} | {row['fps_median'] / base:.2f}x | "
                    f"{row['clip_p50_ms']:.0f} | {row['clip_p99_ms']:.0f} | {', '.join(map(str, row['fps_runs']))} |"
                )
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    from bench_common import replace_section

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "r50"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--streams", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--frames", type=int, default=None, help="frames per stream (default: tiny 20, r50 10)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calib-clips", type=int, default=4)
    parser.add_argument("--protocol", default="grpc", choices=("grpc", "http"))
    parser.add_argument("--workdir", default="bench_out/serve")
    parser.add_argument("--no-results-md", action="store_true", help="do not update benchmarks/RESULTS.md")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    load0 = os.getloadavg()[0]
    configs: dict[str, dict] = {}
    for config in args.configs:  # the report is rewritten after each config: a long run keeps what it measured
        configs[config] = bench_config(config, args, log)
        report = {
            "command": "python benchmarks/serve_throughput.py " + " ".join(sys.argv[1:]),
            "date": datetime.date.today().isoformat(),
            "machine": _machine(),
            "load": [load0, os.getloadavg()[0]],
            "rounds": args.rounds,
            "streams": args.streams,
            "precisions": args.precisions,
            "configs": configs,
        }
        (Path(args.workdir) / "serve_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
        text = markdown(report)
        print(text)
        if not args.no_results_md:
            replace_section(ROOT / "benchmarks" / "RESULTS.md", START, END, text)
    return 0


def _machine() -> str:
    from efficientvis_trt.cpu_info import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores"


if __name__ == "__main__":
    sys.exit(main())
