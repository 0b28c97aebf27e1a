"""Evaluating a predictor on a YouTube-VIS split: the one path for `evis bench --data`, the trainer and the demo.

Why one function: each caller used to find the annotation file and read the frames its own way
(one trainer listed the frame folder, which is unsafe when a folder holds frames the JSON does not
name or names them in another order). Here frames are read in the JSON's `file_names` order, so a
result has exactly one segmentation per annotated frame, and the annotation file is found by
`data.ytvis.resolve_annotations` (docs/runtime.md, "Evaluating a split").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from efficientvis_trt.errors import EvisError


def predict_split(
    predictor: Any, split: str | os.PathLike, max_videos: int | None = None, progress: bool = False
) -> tuple[dict, list[dict]]:
    """Run `predictor` over a split (folder or JSON) -> (ground truth of the videos run, YouTube-VIS results)."""
    from tqdm import tqdm

    from efficientvis_trt.data.ytvis import load_ytvis, resolve_annotations

    json_path = resolve_annotations(split, "evaluation data")
    data = load_ytvis(json_path)
    names = getattr(predictor, "class_names", None)
    if names is not None and len(names) != data.num_classes:
        raise EvisError(f"{json_path} has {data.num_classes} classes, the model {len(names)}")
    videos = data.videos[:max_videos] if max_videos else data.videos
    results: list[dict] = []
    for video in tqdm(videos, desc="eval", leave=False, disable=not progress, dynamic_ncols=True):
        frames = (data.read_frame(video, t) for t in range(video.length))
        results += predictor.predict_video(frames).to_ytvis(video.id, list(data.label_to_category_id))
    return subset_ground_truth(json_path, {v.id for v in videos}), results


def evaluate_split(
    predictor: Any, split: str | os.PathLike, max_videos: int | None = None, progress: bool = False
) -> dict[str, float]:
    """Every YouTube-VIS stat (AP, AP50, AP75, ... in 0-1) of `predictor` on a split, as `evis eval` scores it."""
    from efficientvis_trt.eval import evaluate

    gt, results = predict_split(predictor, split, max_videos, progress)
    return {k: float(v) for k, v in evaluate(gt, results).stats.items()}


def subset_ground_truth(json_path: str | os.PathLike, video_ids: set[int]) -> dict:
    """The ground truth restricted to the videos actually run (so a capped run scores fairly)."""
    gt = json.loads(Path(json_path).read_text())
    gt["videos"] = [v for v in gt["videos"] if v["id"] in video_ids]
    gt["annotations"] = [a for a in gt.get("annotations", []) if a["video_id"] in video_ids]
    return gt
