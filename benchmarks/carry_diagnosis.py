"""Where a checkpoint loses AP across a video: one clip started fresh against the same clip carried on.

    python benchmarks/carry_diagnosis.py --split DATA/val/annotations.json [--checkpoint CKPT]

For a few windows of `clip_len` frames it scores (a) the whole-video run (state carried clip to clip
from frame 0), cut to the window, and (b) the window run on its own from the learned initial state.
If (a) is well below (b), the carried state, not detection, is what limits the model (issue #27;
benchmarks/RESULTS.md, "Training"). Scores in (a) are the whole video's track scores, as the evaluator
sees them. torch backend on the CPU.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def window(gt: dict, results: list[dict], start: int, stop: int) -> tuple[dict, list[dict]]:
    """Ground truth and results cut to frames [start, stop) of every video; instances absent there dropped."""
    gt = copy.deepcopy(gt)
    for video in gt["videos"]:
        video["file_names"], video["length"] = video["file_names"][start:stop], stop - start
    kept = []
    for ann in gt["annotations"]:
        for key in ("segmentations", "areas", "bboxes"):
            ann[key] = ann[key][start:stop]
        if any(ann["bboxes"]):
            kept.append(ann)
    gt["annotations"] = kept
    cut = [dict(r, segmentations=r["segmentations"][start:stop]) for r in results]
    return gt, cut


def main(argv: list[str] | None = None) -> int:
    from efficientvis_trt.data.ytvis import load_ytvis
    from efficientvis_trt.eval import evaluate
    from efficientvis_trt.eval.split import predict_split
    from efficientvis_trt.model.checkpoint import SHIPPED_TINY_CHECKPOINT
    from efficientvis_trt.runtime.predictor import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(SHIPPED_TINY_CHECKPOINT))
    parser.add_argument("--split", required=True, help="YouTube-VIS annotations.json of the val split")
    parser.add_argument("--starts", type=int, nargs="*", default=[0, 3, 9, 17], help="first frame of each window")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    def ap(stats: dict) -> str:
        return f"{100 * stats['AP']:.1f} | {100 * stats['AP50']:.1f}"

    with Predictor(args.checkpoint, backend="torch", device="cpu", threads=args.threads) as predictor:
        gt, carried = predict_split(predictor, args.split)
        clip_len = predictor.clip_len
        data = load_ytvis(args.split)
        print(f"whole videos: AP {ap(evaluate(gt, carried).stats)} (AP | AP50)\n")
        print("| frames | carried from frame 0: AP | AP50 | on its own: AP | AP50 |\n|---|---|---|---|---|")
        for start in args.starts:
            stop = start + clip_len
            fresh = []
            for video in data.videos:
                frames = (data.read_frame(video, t) for t in range(start, stop))
                fresh += predictor.predict_video(frames).to_ytvis(video.id, list(data.label_to_category_id))
            cut_gt, cut = window(gt, carried, start, stop)
            print(f"| {start}-{stop - 1} | {ap(evaluate(cut_gt, cut).stats)} | {ap(evaluate(cut_gt, fresh).stats)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
