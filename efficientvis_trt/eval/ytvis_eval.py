"""YouTube-VIS mask AP with the official evaluator's definitions, vectorised.

Half of what this toolkit reports is accuracy per precision (FP32/FP16/INT8), so the numbers
here must be the ones the official evaluator (youtubevos/cocoapi ``ytvos.py`` +
``ytvoseval.py``) would print. Every rule below follows that code; only the loops are ours:

* video mask IoU = sum over frames of |D & G| / sum over frames of |D | G|; a null frame is an
  empty mask; IoU is 0 when the union is empty. ``iscrowd`` does not change the IoU (the
  reference computes plain IoU for crowd tracks too); it makes the track an ignore region that
  may absorb any number of detections.
* area ranges use a track's *average* area: the mean of the non-zero, non-null entries of the
  ground truth's ``areas`` field, and of the results' per-frame mask areas (0 when none).
  Ranges are all [0, 1e5^2], small [0, 128^2], medium [128^2, 256^2], large [256^2, 1e5^2],
  inclusive at both ends.
* per (video, category): detections sorted by score (stable), the top 100 kept; greedy matching
  per IoU threshold (.50:.05:.95), ties to the later ground truth, non-ignored first; unmatched
  detections outside the area range are ignored; 101-point interpolated precision; maxDets
  1/10/100; -1 where a category has no non-ignored ground truth, and a summary of -1 when all
  entries are -1.
* quirks kept on purpose so numbers agree on any input: ground truth ``id`` 0 matches but then
  counts as unmatched (the reference stores matches by id, 0 meaning none); detections of
  categories not in the ground truth's ``categories`` are dropped (with a warning).

Checked against the reference code (scratch copy, not shipped) on 600 random cases: crowd
tracks, null frames, polygon / uncompressed ground truth, several categories, score and IoU
ties, >100 detections per video, id-0 ground truth, string video ids, fidelity mode: every stat,
per-category AP and the full precision/recall arrays were bit-identical (max |diff| = 0).

Stricter than the reference on purpose (one-line `EvisError` naming the video instead of an
assert, a crash, or silently wrong numbers): unknown video ids, a track whose frame count is not
the video's, masks whose RLE ``size`` is not the video's height x width, RLE strings with
characters outside the format or cut mid-number, uncompressed counts that do not add up to h*w,
non-finite scores, duplicate ground-truth ids.
Extensions: results may also use uncompressed RLE or polygons (the reference only takes
compressed RLE there); a ground truth without ``areas`` uses its mask areas.

Speed: ``python benchmarks/eval_speed.py`` measures it on a synthetic case of a full data set's size;
the figures are in benchmarks/RESULTS.md, "Evaluation speed".

Layout: `parsing.py` (reading and validation), `matching.py` (video IoU, matching,
accumulation, `EvalResult`), `fidelity.py` (one run against another); `evaluate` here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

from efficientvis_trt.eval.matching import (
    AREA_LABELS,
    AREA_RANGES,
    IOU_THRS,
    MAX_DETS,
    REC_THRS,
    STAT_KEYS,
    EvalResult,
    _run,
)
from efficientvis_trt.eval.parsing import _load_json, _parse_ground_truth, _parse_results

__all__ = ["AREA_LABELS", "AREA_RANGES", "EvalResult", "IOU_THRS", "MAX_DETS", "REC_THRS", "STAT_KEYS", "evaluate"]


def evaluate(gt: Mapping | str | os.PathLike, results: Sequence | str | os.PathLike) -> EvalResult:
    """YouTube-VIS segm AP/AR of `results` against ground truth `gt` (dicts/lists or JSON paths).

    Inputs are not modified. Raises `EvisError` (naming the video) for malformed input.
    """
    t0 = time.perf_counter()
    gt_data = _load_json(gt, "ground truth")
    res_data = _load_json(results, "results")
    videos, cat_ids, cat_names, gt_tracks = _parse_ground_truth(gt_data)
    dt_tracks = _parse_results(res_data, videos, set(cat_ids))
    return _run(videos, cat_ids, cat_names, gt_tracks, dt_tracks, t0)
