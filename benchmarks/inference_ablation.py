"""Inference-side options on a trained checkpoint: AP on a val split for each, no retraining.

    python benchmarks/inference_ablation.py --split DATA/val/annotations.json [--checkpoint CKPT]

The checkpoint defaults to the shipped tiny model; the split is the val split of a
benchmarks/train_synthetic.py run (its DATA/val). Rows: the defaults, the video
score over only the m best frames (`Predictor(score_frames=m)`), the carried proposal boxes moved
by their last velocity (`model.carry_boxes = "velocity"`), and each clip starting from the learned
proposal boxes with only the queries carried (`model.carry_boxes = "init"`). All rows run the torch backend on the CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from efficientvis_trt.eval.split import evaluate_split
    from efficientvis_trt.model.checkpoint import SHIPPED_TINY_CHECKPOINT, load_checkpoint, save_checkpoint
    from efficientvis_trt.runtime.predictor import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(SHIPPED_TINY_CHECKPOINT))
    parser.add_argument("--split", required=True, help="YouTube-VIS annotations.json of the val split")
    parser.add_argument("--score-frames", type=int, nargs="*", default=[3, 6, 10])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    rows: list[tuple[str, str, dict]] = [("defaults", "", {})]
    rows += [(f"video score over the {m} best frames", "", {"score_frames": m}) for m in args.score_frames]
    rows += [("carried boxes moved by their velocity", "velocity", {})]
    rows += [("carried queries, boxes back to the learned proposals (`carry_boxes: init`)", "init", {})]
    print("| inference | AP | AP50 | AP75 | seconds |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, carry, options in rows:
            checkpoint = args.checkpoint
            if carry:
                model, payload = load_checkpoint(checkpoint)
                model.config.model.carry_boxes = carry
                checkpoint = str(Path(tmp) / f"carry_{carry}.pt")
                save_checkpoint(checkpoint, model, payload["class_names"])
            start = time.perf_counter()
            with Predictor(checkpoint, backend="torch", device="cpu", threads=args.threads, **options) as p:
                s = evaluate_split(p, args.split)
            took = time.perf_counter() - start
            print(f"| {name} | {100 * s['AP']:.1f} | {100 * s['AP50']:.1f} | {100 * s['AP75']:.1f} | {took:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
