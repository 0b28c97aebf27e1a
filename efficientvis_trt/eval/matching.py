"""YouTube-VIS evaluation, part 2: video IoU, greedy matching and accumulation into AP/AR.

Takes parsed input (`parsing.py`) and follows the official evaluator's loops, vectorised; the
rules are in `ytvis_eval.py`'s docstring.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from efficientvis_trt.errors import EvisError
from efficientvis_trt.eval.parsing import _sort_ids, _Track, _Video

STAT_KEYS: tuple[str, ...] = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)
# Same expressions as the reference so that `0.75 == IOU_THRS[5]` holds bit for bit there too.
IOU_THRS: np.ndarray = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS: np.ndarray = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS: tuple[int, ...] = (1, 10, 100)
AREA_LABELS: tuple[str, ...] = ("all", "small", "medium", "large")
AREA_RANGES: tuple[tuple[float, float], ...] = (
    (0**2, 1e5**2),
    (0**2, 128**2),
    (128**2, 256**2),
    (256**2, 1e5**2),
)


# --------------------------------------------------------------------------------------------
# Result type


@dataclass(frozen=True)
class EvalResult:
    """The 12 summary numbers (0-1 floats, -1 = no ground truth in that bucket) and AP per category."""

    stats: dict[str, float]
    per_category: dict[str, float]
    precision: np.ndarray = field(repr=False)  # [T, R, K, A, M], -1 where undefined
    recall: np.ndarray = field(repr=False)  # [T, K, A, M], -1 where undefined
    category_ids: tuple = ()
    num_videos: int = 0
    num_gt: int = 0
    num_dt: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the 12 stat keys plus ``per_category``."""
        out: dict[str, Any] = {k: float(self.stats[k]) for k in STAT_KEYS}
        out["per_category"] = {k: float(v) for k, v in self.per_category.items()}
        return out

    def table(self, per_category: bool = True) -> str:
        """The reference's summary lines (3 decimals), then AP per category."""
        lines = []
        specs = _SUMMARY_SPECS
        for key in STAT_KEYS:
            ap, iou_thr, area, max_dets = specs[key]
            title = "Average Precision" if ap else "Average Recall"
            kind = "(AP)" if ap else "(AR)"
            iou = f"{IOU_THRS[0]:0.2f}:{IOU_THRS[-1]:0.2f}" if iou_thr is None else f"{iou_thr:0.2f}"
            lines.append(
                f" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets:>3d} ] = "
                f"{self.stats[key]:0.3f}"
            )
        if per_category and self.per_category:
            width = max(len(n) for n in self.per_category)
            lines.append("")
            lines.append(f" {'category':<{width}}  AP")
            for name, ap in self.per_category.items():
                lines.append(f" {name:<{width}}  {ap:0.3f}" if ap > -1 else f" {name:<{width}}  -")
        return "\n".join(lines)


# key -> (is AP, IoU threshold or None, area label, maxDets); as the reference's _summarizeDets.
_SUMMARY_SPECS: dict[str, tuple[bool, float | None, str, int]] = {
    "AP": (True, None, "all", 100),
    "AP50": (True, 0.5, "all", 100),
    "AP75": (True, 0.75, "all", 100),
    "APs": (True, None, "small", 100),
    "APm": (True, None, "medium", 100),
    "APl": (True, None, "large", 100),
    "AR1": (False, None, "all", 1),
    "AR10": (False, None, "all", 10),
    "AR100": (False, None, "all", 100),
    "ARs": (False, None, "small", 100),
    "ARm": (False, None, "medium", 100),
    "ARl": (False, None, "large", 100),
}


# --------------------------------------------------------------------------------------------
# Core


def _rle_areas(rles: Sequence[dict]) -> np.ndarray:
    """Mask areas (int64). Chunks of 255: pycocotools' area() overflows on longer lists with numpy 2."""
    if not rles:
        return np.zeros(0, np.int64)
    return np.concatenate([mask_utils.area(list(rles[i : i + 255])).astype(np.int64) for i in range(0, len(rles), 255)])


def _fill_mask_areas(tracks: Sequence[_Track], n_frames: int) -> None:
    """Per-frame mask areas for many tracks with one pycocotools call."""
    flat = [r for t in tracks for r in t.rles if r is not None]
    areas = _rle_areas(flat)
    pos = 0
    for t in tracks:
        present = np.fromiter((r is not None for r in t.rles), bool, n_frames)
        a = np.zeros(n_frames, np.int64)
        k = int(present.sum())
        a[present] = areas[pos : pos + k]
        pos += k
        t.mask_areas = a


def _gt_avg_area(t: _Track) -> float:
    # Reference: mean of the truthy entries of the annotation's 'areas' field.
    src = t.given_areas if t.given_areas is not None else t.mask_areas.tolist()
    vals = [a for a in src if a]
    if not vals:
        return 0
    try:
        return np.array(vals).mean()
    except (TypeError, ValueError):
        raise EvisError(f"{t.where}: 'areas' must hold numbers or null") from None


def _dt_avg_area(t: _Track) -> float:
    # Reference: np.array(nonzero uint32 areas).mean(): an exact integer sum over a count.
    nz = t.mask_areas[t.mask_areas > 0]
    return float(nz.sum()) / nz.size if nz.size else 0


_EMPTY_RLES: dict[tuple[int, int], dict] = {}


def _empty_rle(h: int, w: int) -> dict:
    rle = _EMPTY_RLES.get((h, w))
    if rle is None:
        rle = mask_utils.frPyObjects({"size": [h, w], "counts": [h * w]}, h, w)
        _EMPTY_RLES[(h, w)] = rle
    return rle


def _video_ious(dts: list[_Track], gts: list[_Track], video: _Video) -> np.ndarray:
    """[D, G] video IoU: sum_f |d&g| / sum_f |d|g|, one pycocotools call per frame.

    A null frame is an empty mask. With crowd=1 pycocotools returns |d&g| / |d|, so the per-frame
    intersection is round(iou * |d|), exactly; sums of integer pixel counts are exact in float64,
    so the final ratio is bit-identical to the reference's.
    """
    D, G = len(dts), len(gts)
    d_area = np.stack([t.mask_areas for t in dts])  # [D, F]
    g_area = np.stack([t.mask_areas for t in gts])  # [G, F]
    frames = np.flatnonzero((d_area > 0).any(0) & (g_area > 0).any(0))
    empty = _empty_rle(video.height, video.width)
    crowd = [1] * G
    ratio = np.zeros((len(frames), D, G))
    for i, f in enumerate(frames):
        ratio[i] = mask_utils.iou([t.rles[f] or empty for t in dts], [t.rles[f] or empty for t in gts], crowd)
    inter = np.rint(ratio * d_area[:, frames].T[:, :, None]).astype(np.int64).sum(0)
    union = d_area.sum(1)[:, None] + g_area.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def _match(
    ious: np.ndarray,
    gt_ignore: np.ndarray,
    gt_crowd: np.ndarray,
    gt_id_nonzero: np.ndarray,
    dt_out_of_range: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of score-sorted dts to gts at every IoU threshold (reference semantics).

    Returns (matched, ignored), both [T, D] bool, `matched` meaning the reference's dtm != 0.
    """
    T, (D, G) = len(IOU_THRS), ious.shape
    order = np.argsort(gt_ignore, kind="stable")  # non-ignored first, as the reference
    ious = ious[:, order]
    g_ig = gt_ignore[order]
    g_crowd = gt_crowd[order]
    g_nz = gt_id_nonzero[order]
    n_reg = int(G - g_ig.sum())
    thr = np.minimum(IOU_THRS, 1 - 1e-10)[:, None]  # [T, 1]
    matched = np.zeros((T, D), bool)
    ignored = np.zeros((T, D), bool)
    taken = np.zeros((T, G), bool)  # matched, non-crowd gts
    rows = np.arange(T)
    candidates = np.flatnonzero((ious >= thr.min()).any(axis=1)) if G else ()
    for d in candidates:
        row = ious[d]
        elig = (row[None, :] >= thr) & ~taken  # [T, G]
        vals = np.where(elig, row[None, :], -1.0)
        # best eligible regular gt, ties to the later one; only if none, best eligible ignored gt
        m = np.full(T, -1)
        if n_reg:
            has = elig[:, :n_reg].any(1)
            m = np.where(has, n_reg - 1 - np.argmax(vals[:, :n_reg][:, ::-1], axis=1), m)
        if n_reg < G:
            has_i = elig[:, n_reg:].any(1) & (m < 0)
            m = np.where(has_i, G - 1 - np.argmax(vals[:, n_reg:][:, ::-1], axis=1), m)
        hit = m >= 0
        if not hit.any():
            continue
        t_hit, g_hit = rows[hit], m[hit]
        matched[t_hit, d] = g_nz[g_hit]
        ignored[t_hit, d] = g_ig[g_hit]
        taken[t_hit, g_hit] = ~g_crowd[g_hit]
    ignored |= ~matched & dt_out_of_range[None, :]
    return matched, ignored


def _out_of_range(avg: np.ndarray) -> np.ndarray:
    """[A, N] bool: avg area outside each (inclusive) area range."""
    lo = np.array([r[0] for r in AREA_RANGES])[:, None]
    hi = np.array([r[1] for r in AREA_RANGES])[:, None]
    return (avg[None, :] < lo) | (avg[None, :] > hi)


def _run(
    videos: Mapping[Any, _Video],
    cat_ids: list,
    cat_names: Mapping,
    gt_tracks: list[_Track],
    dt_tracks: list[_Track],
    t0: float,
) -> EvalResult:
    K, A, T, R, M = len(cat_ids), len(AREA_RANGES), len(IOU_THRS), len(REC_THRS), len(MAX_DETS)
    cat_index = {c: k for k, c in enumerate(cat_ids)}
    vid_order = _sort_ids(list(videos), "video")
    gt_by_vid: dict[Any, list[_Track]] = {v: [] for v in vid_order}
    dt_by_vid: dict[Any, list[_Track]] = {v: [] for v in vid_order}
    for t in gt_tracks:
        gt_by_vid[t.video_id].append(t)
    for t in dt_tracks:
        dt_by_vid[t.video_id].append(t)

    max_det = MAX_DETS[-1]
    # per kept detection, in (video, category, rank) order
    d_cat, d_rank, d_score, d_matched, d_ignored = [], [], [], [], []
    # per gt: category index and ignore flag per area range
    g_cat, g_ignore = [], []
    n_dt = 0
    for vid in vid_order:
        video = videos[vid]
        gts, dts = gt_by_vid[vid], dt_by_vid[vid]
        # group per category; keep the 100 best-scored dts (stable) of each, as the reference
        gt_groups: dict[Any, list[_Track]] = {}
        for t in gts:
            gt_groups.setdefault(t.category_id, []).append(t)
        dt_groups: dict[Any, list[_Track]] = {}
        for t in dts:
            dt_groups.setdefault(t.category_id, []).append(t)
        kept: dict[Any, list[_Track]] = {}
        for c, group in dt_groups.items():
            order = np.argsort(-np.array([t.score for t in group], np.float64), kind="stable")
            kept[c] = [group[i] for i in order[:max_det]]
        _fill_mask_areas([t for g in kept.values() for t in g] + gts, video.length)
        for t in gts:
            t.avg_area = _gt_avg_area(t)
        for g in kept.values():
            for t in g:
                t.avg_area = _dt_avg_area(t)
        for c in sorted(set(gt_groups) | set(kept), key=cat_index.__getitem__):
            k = cat_index[c]
            g_list = gt_groups.get(c, [])
            d_list = kept.get(c, [])
            g_avg = np.array([t.avg_area for t in g_list], np.float64)
            g_crowd = np.array([t.iscrowd for t in g_list], bool)
            g_ig = g_crowd[None, :] | _out_of_range(g_avg)  # [A, G]
            g_cat.extend([k] * len(g_list))
            g_ignore.append(g_ig)
            if not d_list:
                continue
            n_dt += len(d_list)
            d_avg = np.array([t.avg_area for t in d_list], np.float64)
            d_out = _out_of_range(d_avg)  # [A, D]
            matched = np.zeros((A, T, len(d_list)), bool)
            ignored = np.zeros((A, T, len(d_list)), bool)
            if g_list:
                ious = _video_ious(d_list, g_list, video)
                g_nz = np.array([t.ann_id != 0 for t in g_list], bool)
                for a in range(A):
                    matched[a], ignored[a] = _match(ious, g_ig[a], g_crowd, g_nz, d_out[a])
            else:
                ignored[:] = d_out[:, None, :]
            d_cat.extend([k] * len(d_list))
            d_rank.extend(range(len(d_list)))
            d_score.extend(t.score for t in d_list)
            d_matched.append(matched)
            d_ignored.append(ignored)

    d_cat_a = np.array(d_cat, np.int64)
    d_rank_a = np.array(d_rank, np.int64)
    d_score_a = np.array(d_score, np.float64)
    d_matched_a = np.concatenate(d_matched, axis=2) if d_matched else np.zeros((A, T, 0), bool)
    d_ignored_a = np.concatenate(d_ignored, axis=2) if d_ignored else np.zeros((A, T, 0), bool)
    g_cat_a = np.array(g_cat, np.int64)
    g_ignore_a = np.concatenate(g_ignore, axis=1) if g_ignore else np.zeros((A, 0), bool)
    npig = np.zeros((K, A), np.int64)
    for a in range(A):
        npig[:, a] = np.bincount(g_cat_a[~g_ignore_a[a]], minlength=K)[:K]

    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    by_cat = np.argsort(d_cat_a, kind="stable")  # keeps (video, rank) order inside a category
    bounds = np.searchsorted(d_cat_a[by_cat], np.arange(K + 1))
    for k in range(K):
        block = by_cat[bounds[k] : bounds[k + 1]]
        for mi, m in enumerate(MAX_DETS):
            sel = block[d_rank_a[block] < m]
            order = np.argsort(-d_score_a[sel], kind="stable")
            sel = sel[order]
            for a in range(A):
                if npig[k, a] == 0:
                    continue
                dtm = d_matched_a[a][:, sel]
                dig = d_ignored_a[a][:, sel]
                tp_sum = np.cumsum(dtm & ~dig, axis=1).astype(np.float64)
                fp_sum = np.cumsum(~dtm & ~dig, axis=1).astype(np.float64)
                nd = tp_sum.shape[1]
                rc = tp_sum / npig[k, a]
                pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
                recall[:, k, a, mi] = rc[:, -1] if nd else 0
                q = np.zeros((T, R))
                if nd:
                    env = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                    for t in range(T):
                        inds = np.searchsorted(rc[t], REC_THRS, side="left")
                        ok = inds < nd
                        q[t, ok] = env[t, inds[ok]]
                precision[:, :, k, a, mi] = q

    stats = {key: _summarize(precision, recall, *_SUMMARY_SPECS[key]) for key in STAT_KEYS}
    per_cat: dict[str, float] = {}
    names = [cat_names.get(c, str(c)) for c in cat_ids]
    dup = {n for n in names if names.count(n) > 1}
    for k, c in enumerate(cat_ids):
        s = precision[:, :, k, 0, MAX_DETS.index(100)]
        v = s[s > -1]
        name = f"{names[k]} ({c})" if names[k] in dup else names[k]
        per_cat[name] = float(np.mean(v)) if v.size else -1.0
    return EvalResult(
        stats=stats,
        per_category=per_cat,
        precision=precision,
        recall=recall,
        category_ids=tuple(cat_ids),
        num_videos=len(vid_order),
        num_gt=len(gt_tracks),
        num_dt=n_dt,
        seconds=time.perf_counter() - t0,
    )


def _summarize(
    precision: np.ndarray, recall: np.ndarray, ap: bool, iou_thr: float | None, area: str, max_dets: int
) -> float:
    a = AREA_LABELS.index(area)
    m = MAX_DETS.index(max_dets)
    s = precision if ap else recall
    if iou_thr is not None:
        s = s[np.where(iou_thr == IOU_THRS)[0]]
    s = s[:, :, :, a, m] if ap else s[:, :, a, m]
    v = s[s > -1]
    return float(np.mean(v)) if v.size else -1.0
