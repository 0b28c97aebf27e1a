"""YouTube-VIS evaluation: hand-computed cases, malformed input, the `evis eval` CLI.

Expected values come from the definitions (video IoU = summed intersections over summed unions,
101-point interpolated precision, IoU thresholds .50:.05:.95), worked out by hand per case.
A perfect score is 1 - 2e-16, not 1: precision is tp / (tp + fp + eps) as in the reference.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from efficientvis_trt.cli import main
from efficientvis_trt.errors import EvisError
from efficientvis_trt.eval import IOU_THRS, STAT_KEYS, EvalResult, evaluate, evaluate_fidelity

H, W = 300, 300  # large enough for all three area ranges (128^2 = 16384, 256^2 = 65536)


def box(y0: int, x0: int, y1: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def rle(m: np.ndarray | None) -> dict | None:
    if m is None:
        return None
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}


def video(vid: int, n: int, h: int = H, w: int = W) -> dict:
    return {"id": vid, "height": h, "width": w, "length": n, "file_names": [f"v{vid}/{i:05d}.jpg" for i in range(n)]}


def gt_ann(ann_id: int, vid: int, cat: int, masks: list, iscrowd: int = 0) -> dict:
    return {
        "id": ann_id,
        "video_id": vid,
        "category_id": cat,
        "iscrowd": iscrowd,
        "segmentations": [rle(m) for m in masks],
        "areas": [int(m.sum()) if m is not None else None for m in masks],
    }


def det(vid: int, cat: int, score: float, masks: list) -> dict:
    return {"video_id": vid, "category_id": cat, "score": score, "segmentations": [rle(m) for m in masks]}


def dataset(videos: list, anns: list, cats=((1, "person"), (2, "dog"))) -> dict:
    return {"videos": videos, "annotations": anns, "categories": [{"id": c, "name": n} for c, n in cats]}


def interp_ap(tp_flags: list[bool], n_gt: int) -> float:
    """101-point interpolated AP for detections in score order, written out from the definition."""
    tp = np.cumsum(tp_flags)
    fp = np.cumsum([not t for t in tp_flags])
    rec = tp / n_gt
    prec = tp / np.maximum(tp + fp, 1)
    total = 0.0
    for r in np.linspace(0, 1, 101):
        ok = rec >= r
        total += prec[ok].max() if ok.any() else 0.0
    return total / 101


# ------------------------------------------------------------------------------------------ basics


def three_sizes():
    """One video, three tracks: small (10x10), medium (200x200), large (280x280), 3 frames."""
    small = [box(0, 0, 10, 10)] * 3
    medium = [box(50, 50, 250, 250)] * 3
    large = [box(10, 10, 290, 290)] * 3
    return [small, medium, large]


def test_perfect_predictions_score_one_in_every_bucket():
    tracks = three_sizes()
    gt = dataset([video(1, 3)], [gt_ann(i + 1, 1, 1, m) for i, m in enumerate(tracks)])
    res = [det(1, 1, 0.9 - 0.1 * i, m) for i, m in enumerate(tracks)]
    out = evaluate(gt, res)
    assert isinstance(out, EvalResult)
    assert set(out.stats) == set(STAT_KEYS)
    for key in STAT_KEYS:
        expected = 1.0 / 3 if key == "AR1" else 1.0  # maxDets=1 per video & category: 1 of 3 tracks
        assert out.stats[key] == pytest.approx(expected), key
    assert out.per_category["person"] == pytest.approx(1.0)
    assert out.per_category["dog"] == -1.0  # no ground truth for that category


def test_no_predictions_is_zero_and_empty_buckets_are_minus_one():
    gt = dataset([video(1, 2)], [gt_ann(1, 1, 1, [box(0, 0, 10, 10)] * 2)])
    out = evaluate(gt, [])
    assert out.stats["AP"] == 0.0 and out.stats["AR100"] == 0.0 and out.stats["APs"] == 0.0
    # no medium / large ground truth at all -> -1, as the reference
    assert out.stats["APm"] == -1.0 and out.stats["APl"] == -1.0 and out.stats["ARl"] == -1.0


def test_video_iou_is_summed_over_frames_not_averaged():
    # frame 0: identical 300 px masks; frame 1: disjoint 100 px masks -> IoU = 300 / (300 + 200) = 0.6
    g = [box(0, 0, 10, 30), box(0, 0, 10, 10)]
    d = [box(0, 0, 10, 30), box(50, 50, 60, 60)]
    gt = dataset([video(1, 2)], [gt_ann(1, 1, 1, g)])
    out = evaluate(gt, [det(1, 1, 0.5, d)])
    assert out.stats["AP50"] == pytest.approx(1.0)
    assert out.stats["AP75"] == 0.0
    iou = 300 / 500  # a per-frame mean would give 0.5
    assert out.stats["AP"] == pytest.approx(np.mean(iou >= IOU_THRS))


def test_track_missing_frames_counts_them_as_empty():
    # the prediction has the first frame only (400 px, exact); gt has 100 px on two more frames:
    # video IoU = 400 / 600 = 0.667 (a mean over frames would be 0.333)
    g = [box(0, 0, 20, 20), box(0, 0, 10, 10), box(0, 0, 10, 10)]
    d = [box(0, 0, 20, 20), None, None]
    gt = dataset([video(1, 3)], [gt_ann(1, 1, 1, g)])
    out = evaluate(gt, [det(1, 1, 0.5, d)])
    assert out.stats["AP50"] == pytest.approx(1.0) and out.stats["AP75"] == 0.0
    assert out.stats["AP"] == pytest.approx(np.mean(IOU_THRS <= 400 / 600))
    # and a gt with a null frame where the prediction has a mask: union grows by that mask
    g2 = [box(0, 0, 20, 20), None]
    d2 = [box(0, 0, 20, 20), box(0, 0, 20, 20)]
    out2 = evaluate(dataset([video(1, 2)], [gt_ann(1, 1, 1, g2)]), [det(1, 1, 0.5, d2)])
    assert out2.stats["AP"] == pytest.approx(np.mean(IOU_THRS <= 0.5))


def test_random_single_pairs_match_brute_force_iou():
    rng = np.random.default_rng(0)
    h, w, n = 24, 32, 4
    for _ in range(15):
        g = [rng.random((h, w)) < 0.4 if rng.random() < 0.8 else None for _ in range(n)]
        d = [(m ^ (rng.random((h, w)) < 0.15)) if m is not None and rng.random() < 0.9 else None for m in g]
        if all(m is None for m in g):
            continue
        z = np.zeros((h, w), bool)
        inter = sum(((a if a is not None else z) & (b if b is not None else z)).sum() for a, b in zip(g, d))
        union = sum(((a if a is not None else z) | (b if b is not None else z)).sum() for a, b in zip(g, d))
        iou = inter / union if union else 0.0
        gt = dataset([video(7, n, h, w)], [gt_ann(1, 7, 1, g)])
        out = evaluate(gt, [det(7, 1, 0.3, d)])
        assert out.stats["AP"] == pytest.approx(np.mean(iou >= IOU_THRS)), iou


# ------------------------------------------------------------------------------- matching rules


def test_duplicates_only_one_counts():
    a, b = [box(0, 0, 40, 40)] * 2, [box(100, 100, 140, 140)] * 2
    gt = dataset([video(1, 2)], [gt_ann(1, 1, 1, a), gt_ann(2, 1, 1, b)])
    res = [det(1, 1, 0.9, a), det(1, 1, 0.8, a), det(1, 1, 0.7, b)]  # TP, duplicate (FP), TP
    out = evaluate(gt, res)
    expected = interp_ap([True, False, True], 2)  # = (51 * 1 + 50 * 2/3) / 101
    assert expected == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert out.stats["AP"] == pytest.approx(expected)
    assert out.stats["AR100"] == 1.0
    assert out.stats["AR1"] == 0.5  # one detection per video & category -> one of two tracks


def test_two_categories_with_different_ap():
    a, b = [box(0, 0, 40, 40)] * 2, [box(100, 100, 140, 140)] * 2
    gt = dataset([video(1, 2)], [gt_ann(1, 1, 1, a), gt_ann(2, 1, 2, b)])
    wrong = [box(200, 200, 240, 240)] * 2
    res = [det(1, 1, 0.5, a), det(1, 2, 0.9, wrong), det(1, 2, 0.8, b)]  # dog: FP above its TP
    out = evaluate(gt, res)
    assert out.per_category["person"] == pytest.approx(1.0)
    assert out.per_category["dog"] == pytest.approx(interp_ap([False, True], 1))
    assert out.per_category["dog"] == pytest.approx(0.5)
    assert out.stats["AP"] == pytest.approx(np.mean(list(out.per_category.values())))


def test_crowd_region_absorbs_detections():
    person = [box(0, 0, 40, 40)] * 2
    crowd = [box(100, 100, 200, 200)] * 2
    res = [det(1, 1, 0.9, crowd), det(1, 1, 0.8, crowd), det(1, 1, 0.5, person)]
    with_crowd = dataset([video(1, 2)], [gt_ann(1, 1, 1, person), gt_ann(2, 1, 1, crowd, iscrowd=1)])
    out = evaluate(with_crowd, res)
    assert out.stats["AP"] == pytest.approx(1.0)  # both crowd hits ignored, not false positives
    assert out.stats["AR100"] == 1.0  # the crowd track is not a target
    plain = dataset([video(1, 2)], [gt_ann(1, 1, 1, person)])
    out_plain = evaluate(plain, res)
    assert out_plain.stats["AP"] == pytest.approx(interp_ap([False, False, True], 1))


def test_max_dets_truncation_per_video_and_category():
    target = [box(0, 0, 40, 40)] * 2
    miss = [box(200, 200, 240, 240)] * 2
    gt = dataset([video(1, 2)], [gt_ann(1, 1, 1, target)])
    res = [det(1, 1, 0.9 - 0.001 * i, miss) for i in range(11)] + [det(1, 1, 0.1, target)]
    out = evaluate(gt, res)
    assert out.stats["AR10"] == 0.0 and out.stats["AR100"] == 1.0
    # beyond 100 detections per video & category the rest is dropped
    res100 = [det(1, 1, 0.9 - 0.001 * i, miss) for i in range(100)] + [det(1, 1, 0.01, target)]
    assert evaluate(gt, res100).stats["AR100"] == 0.0
    # ... but another category's detections do not count against the 100
    res_other = [det(1, 2, 0.9, miss)] * 100 + [det(1, 1, 0.01, target)]
    assert evaluate(gt, res_other).stats["AR100"] == 1.0


def test_area_ranges_use_average_area_of_annotated_frames():
    # gt 'areas' [22500, None, 22500] -> avg 22500 (medium); counting the null frame as 0 would
    # give 15000 (small)
    g = [box(0, 0, 150, 150), None, box(0, 0, 150, 150)]
    gt = dataset([video(1, 3)], [gt_ann(1, 1, 1, g)])
    out = evaluate(gt, [det(1, 1, 0.5, g)])
    assert out.stats["APm"] == pytest.approx(1.0) and out.stats["APs"] == -1.0


def test_polygon_and_uncompressed_ground_truth_equal_compressed():
    m = box(20, 30, 120, 90)
    flat = m.flatten(order="F")  # uncompressed RLE: column-major runs, starting with background
    edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    counts = np.diff(np.r_[0, edges, flat.size]).tolist()
    poly = [[30, 20, 90, 20, 90, 120, 30, 120]]
    base = gt_ann(1, 1, 1, [m, m])
    variants = []
    for seg in ({"size": [H, W], "counts": counts}, poly):
        ann = copy.deepcopy(base)
        ann["segmentations"] = [seg, seg]
        variants.append(ann)
    res = [det(1, 1, 0.5, [box(20, 30, 110, 90)] * 2)]
    ref = evaluate(dataset([video(1, 2)], [base]), res).stats
    assert evaluate(dataset([video(1, 2)], [variants[0]]), res).stats == ref
    # the polygon rasterises to (almost) the same box; AP50 agrees, AP may differ by a threshold
    poly_stats = evaluate(dataset([video(1, 2)], [variants[1]]), res).stats
    assert poly_stats["AP50"] == ref["AP50"] == pytest.approx(1.0)


def test_inputs_are_not_modified_and_paths_work(tmp_path):
    gt = dataset([video(1, 2)], [gt_ann(1, 1, 1, [box(0, 0, 40, 40)] * 2)])
    res = [det(1, 1, 0.5, [box(0, 0, 40, 30)] * 2)]
    gt0, res0 = copy.deepcopy(gt), copy.deepcopy(res)
    out = evaluate(gt, res)
    assert gt == gt0 and res == res0
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    assert evaluate(tmp_path / "gt.json", str(tmp_path / "res.json")).stats == out.stats


# ---------------------------------------------------------------------------------- malformed


@pytest.fixture
def small_case():
    gt = dataset([video(5, 2)], [gt_ann(1, 5, 1, [box(0, 0, 40, 40)] * 2)])
    res = [det(5, 1, 0.5, [box(0, 0, 40, 40)] * 2)]
    return gt, res


def test_unknown_video_id(small_case):
    gt, res = small_case
    res[0]["video_id"] = 99
    with pytest.raises(EvisError, match="video 99"):
        evaluate(gt, res)


def test_wrong_number_of_frames(small_case):
    gt, res = small_case
    res[0]["segmentations"].append(None)
    with pytest.raises(EvisError, match=r"video 5.*3 frames.*has 2"):
        evaluate(gt, res)


@pytest.mark.parametrize(
    "seg, words",
    [
        ({"size": [H, W], "counts": "!!not rle!!"}, "bad RLE counts"),
        ({"size": [H, W], "counts": "PPPo"}, "bad RLE counts"),  # cut in the middle of a number
        ({"size": [H + 1, W], "counts": "0"}, "size"),
        ({"size": [H, W], "counts": 12}, "bad RLE"),
        ({"size": [H, W], "counts": [5, 7]}, "uncompressed"),
        ("mask", "RLE dict"),
    ],
)
def test_bad_rle_names_video_and_frame(small_case, seg, words):
    gt, res = small_case
    res[0]["segmentations"][1] = seg
    with pytest.raises(EvisError) as info:
        evaluate(gt, res)
    msg = str(info.value)
    assert "video 5" in msg and "frame 1" in msg and words in msg and "\n" not in msg


def test_bad_ground_truth(small_case):
    gt, res = small_case
    bad = copy.deepcopy(gt)
    bad["annotations"][0]["video_id"] = 8
    with pytest.raises(EvisError, match="video 8"):
        evaluate(bad, res)
    bad = copy.deepcopy(gt)
    bad["annotations"].append(copy.deepcopy(bad["annotations"][0]))
    with pytest.raises(EvisError, match="duplicate"):
        evaluate(bad, res)
    with pytest.raises(EvisError, match="score"):
        evaluate(gt, [dict(res[0], score=float("nan"))])


# ----------------------------------------------------------------------------------- fidelity


def test_fidelity_mode():
    a, b = [box(0, 0, 40, 40)] * 3, [box(100, 100, 160, 160)] * 3
    fp32 = [det(3, 1, 0.9, a), det(3, 2, 0.8, b), det(3, 1, 0.2, b)]  # last one below threshold
    assert evaluate_fidelity(fp32, copy.deepcopy(fp32), score_thr=0.5).stats["AP"] == pytest.approx(1.0)
    int8 = [det(3, 1, 0.85, a), det(3, 1, 0.3, b)]  # lost the dog track, kept a weak duplicate
    out = evaluate_fidelity(fp32, int8, score_thr=0.5)
    assert out.per_category["1"] == pytest.approx(1.0)  # the weak track has no fp32 counterpart >= 0.5
    assert out.per_category["2"] == 0.0 and out.stats["AR100"] == pytest.approx(0.5)
    # a lower threshold turns fp32's weak track into ground truth, which int8 then finds
    assert evaluate_fidelity(fp32, int8, score_thr=0.1).per_category["1"] == pytest.approx(1.0)
    with pytest.raises(EvisError, match="video 4"):
        evaluate_fidelity(fp32, [det(4, 1, 0.9, a)])


# ---------------------------------------------------------------------------------------- CLI


def write_case(tmp_path, gt, res):
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    return str(tmp_path / "gt.json"), str(tmp_path / "res.json")


def test_cli_json(tmp_path, capsys, small_case):
    g, r = write_case(tmp_path, *small_case)
    out_file = tmp_path / "out" / "metrics.json"
    assert main(["eval", g, r, "--json", "-o", str(out_file)]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) == set(STAT_KEYS) | {"per_category"}
    assert all(isinstance(payload[k], float) for k in STAT_KEYS)
    assert payload["AP"] == pytest.approx(1.0) and payload["per_category"]["person"] == pytest.approx(1.0)
    assert json.loads(out_file.read_text()) == payload
    assert main(["eval", g, r]) == 0
    table = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000" in table
    assert main(["eval", "--reference", r, r, "--json", "--score-thr", "0.4"]) == 0
    assert json.loads(capsys.readouterr().out)["AP"] == pytest.approx(1.0)


def test_cli_malformed_input_is_one_line_and_nonzero(tmp_path, capsys, small_case):
    gt, res = small_case
    res[0]["video_id"] = 42
    g, r = write_case(tmp_path, gt, res)
    assert main(["eval", g, r]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "video 42" in err and err.startswith("evis eval: error:")
    assert main(["eval", g]) != 0  # one file without --reference
    assert main(["eval", g, str(tmp_path / "missing.json")]) != 0
    assert "not found" in capsys.readouterr().err


def test_cli_subprocess_exit_code(tmp_path, small_case):
    gt, res = small_case
    res[0]["segmentations"] = res[0]["segmentations"][:1]
    g, r = write_case(tmp_path, gt, res)
    proc = subprocess.run(
        [sys.executable, "-m", "efficientvis_trt", "eval", g, r, "--json"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "video 5" in proc.stderr
