"""`evis infer`: run a bundle (or checkpoint) over videos or a live stream.

Writes DIR/results.json (YouTube-VIS results, video ids 1..n in argument order),
DIR/videos.json (ids -> paths) and, with --overlay, DIR/<stem>.overlay.mp4. All of it
appears only when every video succeeded: overlays are staged in a hidden folder inside
DIR and the JSON files are written atomically last, so a failure leaves DIR as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HELP = "run a bundle (or a checkpoint) over videos or a live stream: YouTube-VIS results, overlays, timings"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from efficientvis_trt.contract import BACKEND_CHOICES, RUN_PRECISIONS

    # One positional list, split in `run`: a second positional with nargs="*" would take zero items right
    # after SOURCE, and a VIDEO given after the options would then be refused.
    parser.add_argument(
        "paths",
        metavar="SOURCE VIDEO",
        nargs="+",
        help="SOURCE: bundle folder from `evis export` (or a checkpoint .pt, torch backend only; optional with "
        "--server); then VIDEO...: video files or frame folders, or live sources: camera index (0) or stream URL "
        "(an existing file or folder named like a number is a path, not a camera)",
    )
    parser.add_argument(
        "--backend",
        default="auto",
        choices=BACKEND_CHOICES,
        help="auto: TensorRT if this GPU has an engine for the precision, else OpenVINO on the CPU "
        "where it is installed, else ONNX Runtime",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=RUN_PRECISIONS,
        help="bf16: OpenVINO on a CPU that has it (default: %(default)s)",
    )
    parser.add_argument("--device", default=None, choices=("cpu", "cuda"), help="default: the best available")
    parser.add_argument("--out", default="infer_out", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument("--overlay", action="store_true", help="also write DIR/<video-stem>.overlay.mp4")
    parser.add_argument(
        "--score-thr",
        type=float,
        default=0.0,
        metavar="S",
        help="drop tracks whose video score is below S (default: %(default)s)",
    )
    parser.add_argument("--top-k", type=int, default=10, metavar="K", help="tracks per video (default: %(default)s)")
    parser.add_argument("--mask-thr", type=float, default=0.5, metavar="P", help="mask probability threshold")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="only the first N frames")
    parser.add_argument(
        "--live",
        action="store_true",
        help="treat VIDEO as a live stream (per-clip latency, no results.json), even a file",
    )
    parser.add_argument(
        "--streams",
        type=int,
        default=1,
        metavar="K",
        help="run up to K videos at once through the batched graph, a finished video's slot refilled by the "
        "next (default: %(default)s, one after another); also writes DIR/<stem>.results.json per video",
    )
    parser.add_argument("--cuda-graph", action="store_true", help="TensorRT: replay the clip as a CUDA graph")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from efficientvis_trt.serve.client import add_server_arguments

    add_server_arguments(parser)


def _fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _timing_line(result) -> str:
    from efficientvis_trt.timing import latency_stats

    t = result.timings
    model = ""
    if result.clip_latencies:
        lat = latency_stats(result.clip_latencies, result.num_frames)
        model = f" (clip p50 {_fmt_s(lat.p50_ms / 1000)}, p90 {_fmt_s(lat.p90_ms / 1000)}; {lat.fps:.1f} FPS)"
    parts = [
        f"decode {_fmt_s(t.get('decode', 0))}",
        f"preprocess {_fmt_s(t.get('preprocess', 0))}",
        f"model {_fmt_s(t.get('model', 0))}{model}",
        f"postprocess {_fmt_s(t.get('postprocess', 0))}",
    ]
    if "overlay" in t:
        parts.append(f"overlay {_fmt_s(t['overlay'])}")
    return f"  timing: {', '.join(parts)}; wall {_fmt_s(t.get('wall', 0))} = {result.fps:.1f} FPS"


def _print_video(video_id: int, source, result) -> None:
    clips = len(result.clip_latencies)
    print(
        f"[{video_id}] {source.spec}: {result.width}x{result.height}, {result.num_frames} frames, {clips} clips, "
        f"{len(result.tracks)} tracks"
    )
    if result.tracks:
        width = max(5, *(len(t.class_name) for t in result.tracks))
        print(f"  {'query':>5}  {'class':<{width}}  {'score':>6}  frames")
        for t in result.tracks:
            print(
                f"  {t.query_index:>5}  {t.class_name:<{width}}  {t.score:6.3f}  "
                f"{t.visible_frames()}/{result.num_frames}"
            )
    print(_timing_line(result))


def _overlay_names(sources) -> list[str]:
    names, seen = [], set()
    for i, src in enumerate(sources, 1):
        name = f"{src.stem}.overlay.mp4"
        if name in seen:
            name = f"{src.stem}-{i}.overlay.mp4"
        seen.add(name)
        names.append(name)
    return names


OUTPUT_FILES = ("videos.json", "results.json")
RESULTS_SUFFIX = ".results.json"  # --streams: one video's results, as `evis infer BUNDLE VIDEO` writes them


def _video_record(video_id: int, src, result, overlay_names: list[str] | None) -> dict:
    """One entry of videos.json."""
    record = {
        "id": video_id,
        "path": os.path.abspath(src.spec),
        "name": src.name,
        "width": result.width,
        "height": result.height,
        "length": result.num_frames,
    }
    if overlay_names is not None:
        record["overlay"] = overlay_names[video_id - 1]
    return record


def _write_results(staging: Path, predictor, args, videos: list[dict], results: list[dict], **model_extra) -> None:
    """videos.json (what ran, on what) and results.json into the staging folder of an `evis infer --out`."""
    model = {
        "source": predictor.runtime.origin or os.path.abspath(str(args.source)),
        "backend": predictor.backend.name,
        "precision": args.precision,
        "device": predictor.backend.device,
        **model_extra,
    }
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(predictor.class_names)]
    (staging / "videos.json").write_text(
        json.dumps({"videos": videos, "categories": categories, "model": model}, indent=2) + "\n"
    )
    # Compact: a results file is mostly RLE strings, and YouTube-VIS tools read it whole.
    (staging / "results.json").write_text(json.dumps(results, separators=(",", ":")) + "\n")


def check_infer_out(out: Path, live: bool) -> Path:
    """`--out` must be writable and absent, empty, or an earlier `evis infer` output (replaced whole).

    Checked before any model is loaded; a folder holding anything else is refused, so a
    replacement can never delete a user's files.
    """
    from efficientvis_trt.errors import EvisError
    from efficientvis_trt.io_utils import TEMP_TAG, check_writable_dir

    if out.exists() and not out.is_dir():
        raise EvisError(f"--out {out} exists and is not a folder")
    if out.is_dir() and not live:
        foreign = [
            p.name
            for p in out.iterdir()
            if not (
                p.name in OUTPUT_FILES
                or p.name.endswith((".overlay.mp4", RESULTS_SUFFIX))
                or p.name.startswith(TEMP_TAG)
            )
        ]
        if foreign:
            raise EvisError(
                f"--out {out} holds {foreign[0]!r}, which `evis infer` did not write: "
                "choose an empty or new folder (an earlier infer output is replaced whole)"
            )
    check_writable_dir(out if out.is_dir() else out.parent, "--out", creating=None if out.is_dir() else out.name)
    return out


def run(args: argparse.Namespace) -> int:
    from efficientvis_trt.errors import EvisError
    from efficientvis_trt.runtime.sources import is_live_spec, open_source

    if args.top_k < 1:
        raise EvisError(f"--top-k must be >= 1, got {args.top_k}")
    if args.max_frames is not None and args.max_frames < 1:
        raise EvisError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.streams < 1:
        raise EvisError(f"--streams must be >= 1, got {args.streams}")
    args.source, args.videos = args.paths[0], args.paths[1:]
    served_bundle = None
    if args.server:  # the clips run on a Triton server (docs/serving.md); SOURCE may be the first video
        from efficientvis_trt.serve.client import split_server_args

        served_bundle = split_server_args(args)
    if not args.videos:
        raise EvisError("give at least one VIDEO after SOURCE")
    live = args.live or any(is_live_spec(v) for v in args.videos)
    if live and len(args.videos) > 1 and args.streams < len(args.videos):
        raise EvisError(
            f"{len(args.videos)} live sources run at once and never end: give --streams {len(args.videos)} "
            "(or one VIDEO with a camera index, URL or --live)"
        )
    if args.streams > 1 and args.cuda_graph:
        raise EvisError("--cuda-graph replays one fixed-shape clip: it cannot run with --streams > 1")
    if not 0.0 <= args.score_thr <= 1.0:  # also refuses nan
        raise EvisError(f"--score-thr must be in [0, 1] (a video score is a mean probability), got {args.score_thr}")
    if not 0.0 <= args.mask_thr <= 1.0:
        raise EvisError(f"--mask-thr must be in [0, 1], got {args.mask_thr}")
    out = check_infer_out(Path(args.out), live)
    # Check every input before any inference: a missing or undecodable file fails fast, nothing written.
    sources = [open_source(v, live=live) for v in args.videos]

    from efficientvis_trt.runtime.predictor import Predictor

    source = args.source
    if args.server:
        from efficientvis_trt.serve.client import server_runtime

        source = server_runtime(args, served_bundle)

    predictor = Predictor(
        source,
        backend=args.backend,
        precision=args.precision,
        device=args.device,
        top_k=args.top_k,
        score_threshold=args.score_thr,
        mask_threshold=args.mask_thr,
        cuda_graph=args.cuda_graph,
    )
    try:
        print(
            f"backend: {predictor.backend_reason} ({args.precision}, T={predictor.clip_len}, "
            f"canvas {predictor.input_hw[0]}x{predictor.input_hw[1]}"
            + (f", letterbox on {predictor.letterbox_device}" if predictor.letterbox_device else "")
            + ")"
        )
        for note in predictor.runtime.notes:
            print(f"note: {note}")
        if live and len(sources) > 1:
            return _run_live_streams(predictor, sources, out, args)
        if live:
            return _run_live(predictor, sources[0], out, args)
        if args.streams > 1:
            return _run_streams(predictor, sources, out, args)
        return _run_files(predictor, sources, out, args)
    finally:
        predictor.close()


def _run_files(predictor, sources, out: Path, args) -> int:
    from tqdm import tqdm

    from efficientvis_trt.io_utils import atomic_dir

    overlay_names = _overlay_names(sources) if args.overlay else []
    # All or nothing: the whole output folder is built beside --out and swapped in at the end.
    with atomic_dir(out) as staging:
        results, videos = [], []
        for video_id, src in enumerate(sources, 1):
            total = src.expected_frames
            if total and args.max_frames:
                total = min(total, args.max_frames)
            with tqdm(
                total=total or None,
                unit="frame",
                desc=src.name,
                file=sys.stderr,
                leave=False,
                disable=args.no_progress,
                dynamic_ncols=True,
            ) as bar:
                overlay = staging / overlay_names[video_id - 1] if args.overlay else None
                result = predictor.predict_video(src, args.max_frames, overlay=overlay, progress=bar.update)
            _print_video(video_id, src, result)
            results.extend(result.to_ytvis(video_id))
            videos.append(_video_record(video_id, src, result, overlay_names if args.overlay else None))
        _write_results(staging, predictor, args, videos, results)
    print(
        f"wrote {out / 'results.json'} ({len(results)} tracks, {len(sources)} videos)"
        + (f" and {len(overlay_names)} overlay video(s)" if overlay_names else "")
    )
    return 0


def _run_live(predictor, src, out: Path, args) -> int:
    overlay = None
    if args.overlay:
        out.mkdir(parents=True, exist_ok=True)
        overlay = out / f"{src.stem}.overlay.mp4"
    run = predictor.stream(src, max_frames=args.max_frames, keep_history=False, live=True, overlay=overlay)
    frames = 0
    latencies = []
    for clip in run:
        frames += clip.valid
        latencies.append(clip.latency)
        last = clip.instances[-1] if clip.instances else []
        shown = ", ".join(f"{i.class_name} {i.score:.2f}" for i in last[:3])
        print(
            f"clip {clip.index}: frames {clip.first_frame}-{clip.first_frame + clip.valid - 1}  "
            f"model {clip.latency * 1000:.1f} ms  end-to-end {clip.end_to_end * 1000:.1f} ms"
            + (f"  [{shown}]" if shown else ""),
            flush=True,
        )
    from efficientvis_trt.timing import fps, latency_stats

    lat = latency_stats(latencies, frames)
    print(
        f"live: {frames} frames in {lat.count} clips, model p50 {_fmt_s(lat.p50_ms / 1000)}, "
        f"p90 {_fmt_s(lat.p90_ms / 1000)}, {fps(frames, run.timings.get('wall', 0.0)):.1f} FPS"
        + (f"; overlay {overlay}" if overlay else "")
    )
    return 0


# ---- --streams K: many videos at once through the batched graph (docs/multi-stream.md) ----------------------
def _stream_bars(sources, args):
    """Per-stream progress: one bar per video while it runs, plus the total frames."""
    from tqdm import tqdm

    bars: dict[int, object] = {}
    positions: dict[int, int] = {}  # stream -> its bar's row (a finished stream's row is reused)
    totals = [min(s.expected_frames or 0, args.max_frames or 1 << 60) or None for s in sources]
    grand = sum(t for t in totals if t) or None
    total_bar = tqdm(
        total=grand,
        unit="frame",
        desc="all streams",
        file=sys.stderr,
        leave=False,
        disable=args.no_progress,
        dynamic_ncols=True,
        position=0,
    )

    def update(event) -> None:
        from efficientvis_trt.runtime.streams import StreamClip

        if isinstance(event, StreamClip):
            bar = bars.get(event.stream)
            if bar is None:
                row = positions[event.stream] = min(set(range(1, len(bars) + 2)) - set(positions.values()))
                bar = bars[event.stream] = tqdm(
                    total=totals[event.stream],
                    unit="frame",
                    desc=f"[{event.stream + 1}] {sources[event.stream].name}",
                    file=sys.stderr,
                    leave=False,
                    disable=args.no_progress,
                    dynamic_ncols=True,
                    position=row,
                )
            bar.update(event.clip.valid)
            total_bar.update(event.clip.valid)
        else:
            bar = bars.pop(event.stream, None)
            positions.pop(event.stream, None)
            if bar is not None:
                bar.close()

    def close() -> None:
        for bar in bars.values():
            bar.close()
        total_bar.close()

    return update, close


def _run_streams(predictor, sources, out: Path, args) -> int:
    from efficientvis_trt.io_utils import atomic_dir
    from efficientvis_trt.runtime.streams import MultiStreamRunner, StreamDone
    from efficientvis_trt.timing import fps

    overlay_names = _overlay_names(sources) if args.overlay else []
    result_names = [name.replace(".overlay.mp4", RESULTS_SUFFIX) for name in _overlay_names(sources)]
    runner = MultiStreamRunner(predictor, args.streams)
    update, close_bars = _stream_bars(sources, args)

    def on_event(event) -> None:
        update(event)
        if isinstance(event, StreamDone):
            from tqdm import tqdm

            with tqdm.external_write_mode(file=sys.stdout):
                _print_video(event.stream + 1, sources[event.stream], event.result)

    # All or nothing, as for one video at a time: the output folder is built beside --out and swapped in.
    with atomic_dir(out) as staging:
        overlays = [staging / name for name in overlay_names] if args.overlay else None
        try:
            per_video = runner.predict_videos(sources, args.max_frames, overlays=overlays, on_event=on_event)
        finally:
            close_bars()
        results, videos = [], []
        for video_id, (src, result) in enumerate(zip(sources, per_video), 1):
            results.extend(result.to_ytvis(video_id))
            # what `evis infer BUNDLE VIDEO` alone writes as its results.json (video id 1)
            (staging / result_names[video_id - 1]).write_text(
                json.dumps(result.to_ytvis(1), separators=(",", ":")) + "\n"
            )
            record = _video_record(video_id, src, result, overlay_names if args.overlay else None)
            videos.append({**record, "results": result_names[video_id - 1]})
        _write_results(staging, predictor, args, videos, results, streams=args.streams)
    frames = sum(r.num_frames for r in per_video)
    wall = runner.timings.get("wall", 0.0)
    sizes = runner.batch_sizes
    mean_batch = sum(sizes) / max(len(sizes), 1)
    print(
        f"streams: {len(sources)} videos, up to {args.streams} at once, {frames} frames in {_fmt_s(wall)} = "
        f"{fps(frames, wall):.1f} FPS total ({len(sizes)} model calls, mean batch {mean_batch:.2f})"
    )
    print(
        f"wrote {out / 'results.json'} ({len(results)} tracks, {len(sources)} videos), "
        f"{len(result_names)} per-video results"
        + (f" and {len(overlay_names)} overlay video(s)" if overlay_names else "")
    )
    return 0


def _run_live_streams(predictor, sources, out: Path, args) -> int:
    from efficientvis_trt.runtime.streams import MultiStreamRunner, StreamClip
    from efficientvis_trt.timing import fps

    overlays = None
    if args.overlay:
        out.mkdir(parents=True, exist_ok=True)
        overlays = [out / name for name in _overlay_names(sources)]
    runner = MultiStreamRunner(predictor, args.streams)
    frames = [0] * len(sources)
    for event in runner.run(sources, args.max_frames, live=True, overlays=overlays):
        if isinstance(event, StreamClip):
            clip = event.clip
            frames[event.stream] += clip.valid
            last = clip.instances[-1] if clip.instances else []
            shown = ", ".join(f"{i.class_name} {i.score:.2f}" for i in last[:3])
            print(
                f"[{event.stream + 1}] clip {clip.index}: frames {clip.first_frame}-{clip.first_frame + clip.valid - 1}"
                f"  model {clip.latency * 1000:.1f} ms (batch {event.batch})"
                f"  end-to-end {clip.end_to_end * 1000:.1f} ms" + (f"  [{shown}]" if shown else ""),
                flush=True,
            )
        else:
            print(f"[{event.stream + 1}] {event.name}: ended, {frames[event.stream]} frames, {event.fps:.1f} FPS")
    wall = runner.timings.get("wall", 0.0)
    print(f"live: {len(sources)} streams, {sum(frames)} frames, {fps(sum(frames), wall):.1f} FPS total")
    return 0
