"""`evis bench`: one table of accuracy and speed per backend x precision."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "measure accuracy (AP, fidelity to FP32) and speed (latency, FPS, memory) per backend x precision"


def _csv_list(allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in items if s not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (comma-separated), got {text!r}")
        return items

    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from efficientvis_trt.contract import BACKENDS, PRECISIONS, RUN_PRECISIONS

    p.add_argument("bundle", type=Path, help="exported bundle folder (evis export)")
    p.add_argument(
        "--backends", type=_csv_list(BACKENDS), default=list(BACKENDS), help=f"default: {','.join(BACKENDS)}"
    )
    p.add_argument(
        "--precisions",
        type=_csv_list(RUN_PRECISIONS),
        default=list(PRECISIONS),
        help=f"from {','.join(RUN_PRECISIONS)} (default: {','.join(PRECISIONS)}; bf16 runs on openvino only)",
    )
    p.add_argument(
        "--data", type=Path, help="YouTube-VIS-format val split (e.g. evis make-synthetic --split val) for AP"
    )
    p.add_argument(
        "--videos", type=Path, nargs="+", help="real videos for end-to-end speed and fidelity (default: bikes.mp4)"
    )
    p.add_argument("--iters", type=int, default=20, help="timed clips for model-only latency (default 20)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: each backend's best available device")
    p.add_argument("--max-frames", type=int, help="frames per real video (default: all)")
    p.add_argument("--max-val-videos", type=int, help="videos of the val split to evaluate (default: all)")
    p.add_argument("--fidelity-thr", type=float, default=0.5, help="FP32 tracks scoring >= this are the reference")
    p.add_argument("--out", type=Path, default=Path("bench_out"), help="folder for bench.md/.csv/.json/.png")


def run(args: argparse.Namespace) -> int:
    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.data.ytvis import resolve_annotations
    from efficientvis_trt.errors import EvisError
    from efficientvis_trt.io_utils import check_writable_dir
    from efficientvis_trt.measure.machine import machine_info
    from efficientvis_trt.measure.report import write_reports
    from efficientvis_trt.measure.runner import BenchSettings, run_bench
    from efficientvis_trt.video import list_videos, sample_video

    Bundle.open(args.bundle)  # fail early, one line, on a bad bundle
    if args.iters < 1:
        raise EvisError("--iters must be >= 1")
    if args.warmup < 0:
        raise EvisError("--warmup must be >= 0")
    if args.data is not None:
        resolve_annotations(args.data, "--data")  # the trainer's rule: annotations.json, or the only JSON
    if args.out.exists() and not args.out.is_dir():
        raise EvisError(f"--out {args.out} exists and is not a folder")
    check_writable_dir(args.out, "--out")
    videos = list_videos(args.videos) if args.videos else [sample_video("bikes.mp4")]
    settings = BenchSettings(
        backends=args.backends,
        precisions=args.precisions,
        data=args.data,
        videos=videos,
        iters=args.iters,
        warmup=args.warmup,
        device=args.device,
        fidelity_threshold=args.fidelity_thr,
        max_frames=args.max_frames,
        max_val_videos=args.max_val_videos,
    )
    rows = run_bench(args.bundle, settings)
    paths = write_reports(rows, machine_info(), args.out, title=f"EfficientVIS-TRT bench: {args.bundle.name}")
    print(paths["markdown"].read_text())
    print("written: " + ", ".join(str(p) for p in paths.values()))
    if rows and not any(r.available for r in rows):
        raise EvisError(f"every bench row failed (first: {rows[0].backend} {rows[0].precision}: {rows[0].reason})")
    return 0
