"""`evis train`: train EfficientVIS on a YouTube-VIS-format split (single process or torchrun/DDP)."""

from __future__ import annotations

import argparse

HELP = "train EfficientVIS on a YouTube-VIS-format data set (CPU, CUDA, or multi-GPU under torchrun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help="preset (r50, r18, tiny) or YAML file (default tiny; with --resume, OUT/config.yaml)",
    )
    parser.add_argument(
        "--data", required=True, help="training split: folder with annotations.json + JPEGImages/, or the JSON"
    )
    parser.add_argument(
        "--out", required=True, help="run folder: last.pt, final.pt, log.csv, config.yaml, metrics.json"
    )
    parser.add_argument("--iters", type=int, default=None, help="iterations (default: the config's train.iters)")
    parser.add_argument("--resume", action="store_true", help="continue exactly from OUT/last.pt")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun each rank takes cuda:LOCAL_RANK)")
    parser.add_argument(
        "--val", default=None, help="validation split, evaluated every train.eval_every iterations and at the end"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="clip pairs per iteration and process")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW)")
    parser.add_argument("--eval-every", type=int, default=None, help="evaluate every N iterations (0: only at the end)")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="write OUT/last.pt every N iterations")
    parser.add_argument("--workers", type=int, default=None, help="data loader worker processes")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from efficientvis_trt.config import get_config
    from efficientvis_trt.train.trainer import load_metrics, train

    saved = Path(args.out) / "config.yaml"
    if args.config is None:
        args.config = str(saved) if args.resume and saved.is_file() else "tiny"
    cfg = get_config(args.config)
    t = cfg.train
    for name, field in (
        ("batch_size", "batch_size"),
        ("lr", "lr"),
        ("eval_every", "eval_every"),
        ("checkpoint_every", "checkpoint_every"),
        ("workers", "num_workers"),
        ("seed", "seed"),
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(t, field, value)
    final = train(
        cfg,
        args.data,
        args.out,
        iters=args.iters,
        resume=args.resume,
        device=args.device,
        val_dir=args.val,
        progress=not args.no_progress,
    )
    metrics = load_metrics(args.out)
    msg = f"wrote {final}"
    if metrics:
        msg += f" (val AP {metrics.get('AP', float('nan')):.3f}, AP50 {metrics.get('AP50', float('nan')):.3f})"
    if os.environ.get("RANK", "0") == "0":
        print(msg)
    return 0
