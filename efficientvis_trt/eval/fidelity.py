"""YouTube-VIS evaluation, part 3: fidelity, the AP of one run measured against another.

A reference run (e.g. FP32) becomes ground truth: its tracks scoring >= a threshold are the
annotations, every video it ran is listed. Then the other run is scored as usual, so 1.0 means
the same tracks and masks at every IoU threshold; no annotations are needed.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from efficientvis_trt.errors import EvisError
from efficientvis_trt.eval.matching import EvalResult, _rle_areas, _run
from efficientvis_trt.eval.parsing import (
    _hashable,
    _is_int,
    _is_score,
    _load_json,
    _normalize_segmentations,
    _parse_ground_truth,
    _parse_results,
    _sort_ids,
    _Video,
)


def fidelity_ground_truth(
    reference: Sequence | str | os.PathLike,
    score_thr: float = 0.5,
    categories: Sequence[Mapping] | Mapping | None = None,
    results: Sequence | None = None,
) -> dict:
    """A YouTube-VIS ground-truth dict made from a results list (e.g. an FP32 run).

    Tracks with score >= `score_thr` become annotations of their category; every video in the
    reference is listed (frame count from its tracks, height x width from its RLE ``size``), so a
    video where the reference found nothing confident still counts the other run's tracks as FPs.
    `results` (the run to be compared), if given, adds its category ids and supplies the frame
    size of videos where the reference has no mask at all.
    """
    ref = _load_json(reference, "reference results")
    if isinstance(ref, dict) and isinstance(ref.get("annotations"), list):
        ref = ref["annotations"]
    if not isinstance(ref, list):
        raise EvisError("reference results must be a JSON list of {video_id, category_id, score, segmentations}")
    if not isinstance(score_thr, (int, float)) or not math.isfinite(score_thr):
        raise EvisError(f"score threshold must be a finite number, got {score_thr!r}")
    info: dict[Any, dict] = {}
    for i, r in enumerate(ref):
        if not isinstance(r, dict):
            raise EvisError(f"reference[{i}] is not an object")
        vid = r.get("video_id")
        where = f"reference[{i}] (video {vid})"
        if not (_is_int(vid) or isinstance(vid, str)):
            raise EvisError(f"{where}: 'video_id' must be an int or a string")
        segs = r.get("segmentations")
        if not isinstance(segs, (list, tuple)):
            raise EvisError(f"{where}: 'segmentations' must be a list with one mask (or null) per frame")
        v = info.setdefault(vid, {"length": len(segs), "size": None})
        if len(segs) != v["length"]:
            raise EvisError(f"{where}: {len(segs)} frames but other tracks of video {vid} have {v['length']}")
        if v["size"] is None:
            v["size"] = _first_rle_size(segs, where)
    others = [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []
    for r in others:
        v = info.get(r.get("video_id")) if _hashable(r.get("video_id")) else None
        if v is not None and v["size"] is None:
            v["size"] = _first_rle_size(r.get("segmentations") or [], f"results (video {r.get('video_id')})")
    videos = []
    for vid in _sort_ids(list(info), "video"):
        h, w = info[vid]["size"] or (1, 1)  # no mask anywhere in this video: any shape will do
        videos.append({"id": vid, "height": h, "width": w, "length": info[vid]["length"]})
    if categories is None:
        ids = {r.get("category_id") for r in ref} | {r.get("category_id") for r in others}
        if not all(_hashable(c) for c in ids):
            raise EvisError("category_id values must be ints or strings")
        cat_list = [{"id": c, "name": str(c)} for c in _sort_ids(list(ids), "category")]
    elif isinstance(categories, Mapping):
        cat_list = [{"id": c, "name": str(n)} for c, n in categories.items()]
    else:
        cat_list = [dict(c) for c in categories]
    vid_map = {v["id"]: _Video(v["id"], v["height"], v["width"], v["length"]) for v in videos}
    anns = []
    for i, r in enumerate(ref):
        score = r.get("score")
        where = f"reference[{i}] (video {r.get('video_id')})"
        if not _is_score(score):
            raise EvisError(f"{where}: 'score' must be a finite number, got {score!r}")
        if score < score_thr:
            continue
        rles = _normalize_segmentations(r["segmentations"], vid_map[r["video_id"]], where)
        flat = [x for x in rles if x is not None]
        it = iter(_rle_areas(flat).tolist())
        anns.append(
            {
                "id": len(anns) + 1,
                "video_id": r["video_id"],
                "category_id": r.get("category_id"),
                "iscrowd": 0,
                "segmentations": rles,
                "areas": [next(it) if x is not None else None for x in rles],
            }
        )
    return {"videos": videos, "categories": cat_list, "annotations": anns}


def _first_rle_size(segs: Sequence, where: str) -> tuple[int, int] | None:
    for s in segs:
        if isinstance(s, dict) and s.get("size") is not None:
            try:
                h, w = int(s["size"][0]), int(s["size"][1])
            except (TypeError, ValueError, IndexError, KeyError):
                raise EvisError(f"{where}: bad RLE size {s['size']!r}") from None
            if h <= 0 or w <= 0:
                raise EvisError(f"{where}: bad RLE size {s['size']!r}")
            return h, w
    return None


def evaluate_fidelity(
    reference: Sequence | str | os.PathLike,
    results: Sequence | str | os.PathLike,
    score_thr: float = 0.5,
    categories: Sequence[Mapping] | Mapping | None = None,
) -> EvalResult:
    """AP of `results` measured against another run (`reference`, e.g. FP32) taken as ground truth.

    Use it to see how far e.g. INT8 drifts from FP32 on videos without annotations: 1.0 means the
    same tracks and masks at every IoU threshold. See `fidelity_ground_truth` for the rules.
    """
    t0 = time.perf_counter()
    res_data = _load_json(results, "results")
    gt = fidelity_ground_truth(reference, score_thr, categories, results=res_data)
    videos, cat_ids, cat_names, gt_tracks = _parse_ground_truth(gt)
    dt_tracks = _parse_results(res_data, videos, set(cat_ids), gt_what="the reference")
    return _run(videos, cat_ids, cat_names, gt_tracks, dt_tracks, t0)
