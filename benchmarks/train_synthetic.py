"""Proof that training learns: synthetic splits -> train `tiny` on the CPU -> AP on the val split.

    python benchmarks/train_synthetic.py --out /tmp/evis_train            # the full recipe (about 30 min)
    python benchmarks/train_synthetic.py --out /tmp/evis_demo --minutes 3 # what `evis demo` runs

Prints and saves (OUT/result.json) AP/AP50/AP75, iterations, wall and CPU time and the
machine. The recipe itself lives in efficientvis_trt/train/recipe.py so `evis demo` and
this script train identically; `train_synthetic_recipe` is re-exported here.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from efficientvis_trt.train.recipe import Recipe, train_synthetic_recipe  # noqa: E402

__all__ = ["train_synthetic_recipe", "Recipe", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (data/, run/, result.json)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="time budget: iterations are derived from timed steps (default: --iters)")
    parser.add_argument("--iters", type=int, default=None, help="iterations (default 3000 unless --minutes is given)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-videos", type=int, default=Recipe.train_videos)
    parser.add_argument("--val-videos", type=int, default=Recipe.val_videos)
    parser.add_argument("--lr", type=float, default=Recipe.lr)
    parser.add_argument("--batch-size", type=int, default=Recipe.batch_size)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--resume", action="store_true", help="continue OUT/run/last.pt")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    recipe = Recipe(lr=args.lr, batch_size=args.batch_size, train_videos=args.train_videos, val_videos=args.val_videos)
    iters = args.iters if args.iters is not None or args.minutes is not None else DEFAULT_ITERS
    final = train_synthetic_recipe(args.out, minutes_budget=args.minutes or 0.0, iters=iters, recipe=recipe,
                                   device=args.device, progress=not args.no_progress, resume=args.resume)
    result = json.loads((Path(args.out) / "result.json").read_text())
    fmt = lambda v: "n/a" if v is None else f"{100 * v:.1f}"  # noqa: E731
    print(f"checkpoint: {final}")
    print(f"val AP {fmt(result['AP'])}  AP50 {fmt(result['AP50'])}  AP75 {fmt(result['AP75'])}  "
          f"({result['iterations']} iterations, training {result['train_wall_s'] / 60:.1f} min wall / "
          f"{result['train_cpu_s'] / 60:.1f} min CPU, total {result['total_wall_s'] / 60:.1f} min)")
    print(f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores")
    return 0


DEFAULT_ITERS = 3000

if __name__ == "__main__":
    sys.exit(main())
