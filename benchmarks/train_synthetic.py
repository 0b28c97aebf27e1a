"""Proof that training learns: synthetic splits -> train `tiny` on the CPU -> AP on the val split.

    python benchmarks/train_synthetic.py --out /tmp/evis_train          # the recipe: 30 minutes of training
    python benchmarks/train_synthetic.py --out /tmp/evis_train --ship   # ... then ship the weights

Prints and saves (OUT/result.json) AP/AP50/AP75, iterations, wall and CPU time and the
machine. `--ship` copies the trained weights (no optimizer state) to
efficientvis_trt/assets/tiny_synthetic.pt with their provenance in tiny_synthetic.json:
the model `evis demo` uses when it is not asked to train.

The recipe itself lives in efficientvis_trt/train/recipe.py so `evis demo` and
this script train identically; `train_synthetic_recipe` is re-exported here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from efficientvis_trt.train.recipe import Recipe, train_synthetic_recipe

__all__ = ["train_synthetic_recipe", "Recipe", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (data/, run/, result.json)")
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="training budget: iterations are derived from timed steps (default 30 unless --iters)",
    )
    parser.add_argument("--iters", type=int, default=None, help="train exactly this many iterations instead")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-videos", type=int, default=Recipe.train_videos)
    parser.add_argument("--val-videos", type=int, default=Recipe.val_videos)
    parser.add_argument("--lr", type=float, default=Recipe.lr)
    parser.add_argument("--batch-size", type=int, default=Recipe.batch_size)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--resume", action="store_true", help="continue OUT/run/last.pt")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override the recipe: `lr=1e-3` (a Recipe field), `model.num_stages=3`, `train.mask_stages=last`",
    )
    parser.add_argument("--data", default=None, help="synthetic splits folder (default OUT/data; shared by A/B runs)")
    parser.add_argument("--evals", type=int, default=1, help="evaluate at this many evenly spaced points")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--ship",
        action="store_true",
        help="copy the trained weights into the package as the demo's model (with provenance)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    recipe = Recipe(lr=args.lr, batch_size=args.batch_size, train_videos=args.train_videos, val_videos=args.val_videos)
    recipe = apply_overrides(recipe, args.set)
    minutes = args.minutes if args.minutes is not None else DEFAULT_MINUTES
    record_command(Path(args.out), argv if argv is not None else sys.argv[1:])
    final = train_synthetic_recipe(
        args.out,
        minutes_budget=minutes,
        iters=args.iters,
        recipe=recipe,
        device=args.device,
        data_dir=args.data,
        progress=not args.no_progress,
        resume=args.resume,
        evals=args.evals,
    )
    result = json.loads((Path(args.out) / "result.json").read_text())

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}"

    print(f"checkpoint: {final}")
    print(
        f"val AP {fmt(result['AP'])}  AP50 {fmt(result['AP50'])}  AP75 {fmt(result['AP75'])}  "
        f"({result['iterations']} iterations, training {result['train_wall_s'] / 60:.1f} min wall / "
        f"{result['train_cpu_s'] / 60:.1f} min CPU, total {result['total_wall_s'] / 60:.1f} min)"
    )
    print(f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores")
    if args.ship:
        print(f"shipped: {ship(final, result, Path(args.out))}")
    return 0


def apply_overrides(recipe: Recipe, settings: list[str]) -> Recipe:
    """`KEY=VALUE` strings (values read as YAML) -> a new Recipe; `model.`/`train.` prefixes go to its dicts."""
    import contextlib
    import dataclasses

    import yaml

    from efficientvis_trt.errors import EvisError

    model, extra, top = dict(recipe.model), dict(recipe.extra), {}
    fields = {f.name for f in dataclasses.fields(Recipe)}
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep:
            raise EvisError(f"--set {item!r}: expected KEY=VALUE")
        value = yaml.safe_load(raw)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)  # YAML 1.1 reads 1e-3 as a string
        if key.startswith("model."):
            model[key[6:]] = value
        elif key.startswith("train."):
            extra[key[6:]] = value
        elif key in fields:
            top[key] = tuple(value) if isinstance(value, list) else value
        else:
            raise EvisError(f"--set {key}: not a Recipe field (use model.X or train.X for the config)")
    out = dataclasses.replace(recipe, model=model, extra=extra, **top)
    out.config(100)  # fail now, with the field's name, rather than after making the data
    return out


def record_command(out: Path, argv: list[str]) -> None:
    """Append this invocation to OUT/commands.txt: a run resumed with other options keeps its whole history."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / COMMANDS_FILE, "a", encoding="utf-8") as f:
        f.write("python benchmarks/train_synthetic.py " + " ".join(argv) + "\n")


def ship(checkpoint: Path, result: dict, out: Path) -> Path:
    """Weights only (no optimizer state) -> the package's shipped checkpoint, + a provenance JSON beside it.

    The provenance holds every command that trained this run (OUT/commands.txt, in order), the training
    minutes over all of them (the trainer's log counts across resumes) and the result on val."""
    import csv

    from efficientvis_trt.io_utils import file_sha256, write_json_atomic
    from efficientvis_trt.model.checkpoint import SHIPPED_TINY_CHECKPOINT, load_checkpoint, save_checkpoint

    commands = (out / COMMANDS_FILE).read_text(encoding="utf-8").splitlines()
    with open(out / "run" / "log.csv", encoding="utf-8") as f:
        elapsed = [float(row["elapsed_s"]) for row in csv.DictReader(f) if row.get("elapsed_s")]
    model, payload = load_checkpoint(checkpoint)
    save_checkpoint(SHIPPED_TINY_CHECKPOINT, model, payload["class_names"])
    provenance = {
        "command": commands[-1],
        "commands": commands,
        "training_minutes": round(max(elapsed) / 60, 1),
        "sha256": file_sha256(SHIPPED_TINY_CHECKPOINT),
        **{k: v for k, v in result.items() if k not in ("checkpoint", "stats")},
    }
    write_json_atomic(SHIPPED_TINY_CHECKPOINT.with_suffix(".json"), provenance)
    return SHIPPED_TINY_CHECKPOINT


COMMANDS_FILE = "commands.txt"
DEFAULT_MINUTES = 30.0  # the recipe's budget: AP on val after 30 minutes of CPU training

if __name__ == "__main__":
    sys.exit(main())
