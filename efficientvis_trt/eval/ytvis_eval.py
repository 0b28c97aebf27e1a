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

Speed (measured with `make_synthetic_case`: 300 videos x 100 detections x 36 frames at 360x640,
5 ground-truth tracks per video, 1.07M result masks): `evaluate()` on loaded JSON takes 4.8-5.1 s
of CPU time (13 s wall on a shared 2-core machine running at load ~13). The CLI adds reading the
465 MB results JSON: 11 s CPU in all, 1.9 GB peak memory.
``python -m efficientvis_trt.eval.ytvis_eval --bench`` re-measures it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from efficientvis_trt.errors import EvisError

log = logging.getLogger(__name__)

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

# Compressed COCO RLE: one char per 5 bits, '0' (48) .. 'o' (111); a number's last char has no
# continuation bit (0x20), i.e. lies in '0'..'O'.
_RLE_ALPHABET = bytes(range(48, 112))
_RLE_LAST_CHARS = bytes(range(48, 80))


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
# Parsed input


@dataclass
class _Video:
    id: Any
    height: int
    width: int
    length: int


@dataclass
class _Track:
    """One gt annotation or one result, masks normalised to compressed RLE dicts (None = no mask)."""

    video_id: Any
    category_id: Any
    rles: list
    score: float = 0.0
    ann_id: int = 0
    iscrowd: bool = False
    given_areas: Any = None  # gt 'areas' field (used for avg_area as the reference does)
    where: str = ""
    mask_areas: np.ndarray | None = None  # int64 [n_frames], filled per video
    avg_area: float = 0.0


def _load_json(obj: Any, what: str) -> Any:
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        try:
            with open(path, "rb") as fh:
                return json.load(fh)
        except FileNotFoundError:
            raise EvisError(f"{what} file not found: {path}") from None
        except (OSError, ValueError) as exc:
            raise EvisError(f"{what} file {path} is not readable JSON: {exc}") from None
    return obj


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _hashable(x: Any) -> bool:
    return x is None or isinstance(x, (int, str, float, np.integer))


def _is_score(x: Any) -> bool:
    return isinstance(x, (int, float, np.number)) and not isinstance(x, (bool, np.bool_)) and math.isfinite(x)


def _sort_ids(ids: Sequence, what: str) -> list:
    try:
        return sorted(ids)
    except TypeError:
        raise EvisError(f"{what} ids mix types (e.g. int and string); use one type") from None


def _normalize_segmentations(segs: Any, video: _Video, where: str) -> list:
    """Per-frame masks -> compressed RLE dicts or None, checked against the video's shape."""
    if not isinstance(segs, (list, tuple)):
        raise EvisError(f"{where}: 'segmentations' must be a list with one mask (or null) per frame")
    if len(segs) != video.length:
        raise EvisError(f"{where}: {len(segs)} frames in 'segmentations' but video {video.id} has {video.length}")
    h, w = video.height, video.width
    hw = [h, w]
    # Fast path (results as written by pycocotools + json): compressed-string RLE dicts or null.
    out: list = [seg or None for seg in segs]
    present = [seg for seg in out if seg is not None]
    if all(type(seg) is dict and type(seg.get("counts")) is str and seg.get("size") == hw for seg in present):
        if present and _first_bad_rle_string([seg["counts"] for seg in present]) >= 0:
            pass  # fall through to the slow path, which names the frame
        else:
            return out
    out = [None] * len(segs)
    strs: list[str] = []
    str_frames: list[int] = []
    for f, seg in enumerate(segs):
        if not seg:  # null / [] / {} is "no mask on this frame", as `if seg:` in the reference
            continue
        if type(seg) is dict:
            counts = seg.get("counts")
            size = seg.get("size")
            if size != hw and not _size_matches(size, h, w):
                raise EvisError(f"{where}, frame {f}: RLE size {size!r} is not video {video.id}'s height x width {hw}")
            if type(counts) is str:
                out[f] = seg
                strs.append(counts)
                str_frames.append(f)
                continue
            if isinstance(counts, (bytes, bytearray)):
                try:
                    text = bytes(counts).decode("ascii")
                except UnicodeDecodeError:
                    raise EvisError(f"{where}, frame {f}: bad RLE counts (not a COCO RLE string)") from None
                out[f] = {"size": hw, "counts": text}
                strs.append(text)
                str_frames.append(f)
                continue
            if isinstance(counts, (list, tuple)):
                out[f] = _from_uncompressed(counts, h, w, where, f)
                continue
            raise EvisError(f"{where}, frame {f}: bad RLE, 'counts' must be a string or a list of ints")
        if isinstance(seg, list):
            out[f] = _from_polygons(seg, h, w, where, f)
            continue
        raise EvisError(f"{where}, frame {f}: a mask must be an RLE dict, a polygon list or null")
    if strs:
        bad = _first_bad_rle_string(strs)
        if bad >= 0:
            raise EvisError(f"{where}, frame {str_frames[bad]}: bad RLE counts string (not COCO compressed RLE)")
    return out


def _size_matches(size: Any, h: int, w: int) -> bool:
    try:
        return len(size) == 2 and int(size[0]) == h and int(size[1]) == w
    except (TypeError, ValueError):
        return False


def _first_bad_rle_string(strs: list[str]) -> int:
    """Index of the first string that is not COCO compressed RLE, or -1 (one C-speed pass)."""
    joined = "".join(strs)
    lasts = "".join([s[-1:] for s in strs])
    try:
        ok = not joined.encode("ascii").translate(None, _RLE_ALPHABET) and not lasts.encode("ascii").translate(
            None, _RLE_LAST_CHARS
        )
    except UnicodeEncodeError:
        ok = False
    if ok:
        return -1
    for i, s in enumerate(strs):
        try:
            if s.encode("ascii").translate(None, _RLE_ALPHABET) or (
                s and s[-1:].encode("ascii").translate(None, _RLE_LAST_CHARS)
            ):
                return i
        except UnicodeEncodeError:
            return i
    return -1  # pragma: no cover - the joined check and the loop agree


def _from_uncompressed(counts: Sequence, h: int, w: int, where: str, f: int) -> dict:
    try:
        arr = np.asarray(counts)
        valid = arr.ndim == 1 and (arr.size == 0 or np.issubdtype(arr.dtype, np.integer))
        valid = valid and (arr.size == 0 or int(arr.min()) >= 0) and int(arr.sum()) == h * w
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise EvisError(
            f"{where}, frame {f}: bad uncompressed RLE (counts must be non-negative ints summing to {h}x{w})"
        )
    rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def _from_polygons(polys: list, h: int, w: int, where: str, f: int) -> dict:
    # As the reference's annToRLE: frPyObjects(polygons) then merge the parts.
    try:
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    except Exception as exc:  # pycocotools raises bare Exception/TypeError/IndexError on bad polygons
        raise EvisError(f"{where}, frame {f}: bad polygon mask ({exc})") from None
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def _parse_videos(raw: Any) -> dict[Any, _Video]:
    if not isinstance(raw, list):
        raise EvisError("ground truth: 'videos' must be a list")
    videos: dict[Any, _Video] = {}
    for i, v in enumerate(raw):
        if not isinstance(v, dict) or "id" not in v:
            raise EvisError(f"ground truth: videos[{i}] has no 'id'")
        vid = v["id"]
        if not (_is_int(vid) or isinstance(vid, str)):
            raise EvisError(f"ground truth: video id {vid!r} must be an int or a string")
        if vid in videos:
            raise EvisError(f"ground truth: video {vid} is listed twice")
        h, w = v.get("height"), v.get("width")
        if not (_is_int(h) and _is_int(w) and h > 0 and w > 0):
            raise EvisError(f"ground truth: video {vid} needs positive int 'height' and 'width'")
        names, length = v.get("file_names"), v.get("length")
        if names is not None and not isinstance(names, list):
            raise EvisError(f"ground truth: video {vid}: 'file_names' must be a list")
        if names is not None and length is not None and len(names) != length:
            raise EvisError(f"ground truth: video {vid}: 'length' {length} != {len(names)} file_names")
        n = len(names) if names is not None else length
        if not _is_int(n) or n < 0:
            raise EvisError(f"ground truth: video {vid} needs 'file_names' or an int 'length'")
        videos[vid] = _Video(vid, int(h), int(w), int(n))
    return videos


def _parse_categories(raw: Any) -> tuple[list, dict]:
    if not isinstance(raw, list):
        raise EvisError("ground truth: 'categories' must be a list")
    names: dict = {}
    for i, c in enumerate(raw):
        if not isinstance(c, dict) or "id" not in c:
            raise EvisError(f"ground truth: categories[{i}] has no 'id'")
        names[c["id"]] = str(c.get("name", c["id"]))  # the reference indexes by id: last one wins
    return _sort_ids(list(names), "category"), names


def _parse_ground_truth(data: Any) -> tuple[dict[Any, _Video], list, dict, list[_Track]]:
    if not isinstance(data, dict):
        raise EvisError("ground truth must be a JSON object with 'videos', 'annotations', 'categories'")
    for key in ("videos", "annotations", "categories"):
        if key not in data:
            raise EvisError(f"ground truth has no '{key}'")
    videos = _parse_videos(data["videos"])
    cat_ids, cat_names = _parse_categories(data["categories"])
    cat_set = set(cat_ids)
    anns = data["annotations"]
    if not isinstance(anns, list):
        raise EvisError("ground truth: 'annotations' must be a list")
    tracks: list[_Track] = []
    seen_ids: set = set()
    dropped_gt = 0
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise EvisError(f"ground truth: annotations[{i}] is not an object")
        vid = ann.get("video_id")
        where = f"ground truth annotations[{i}] (video {vid})"
        if not _hashable(vid) or vid not in videos:
            raise EvisError(f"{where}: unknown video id {vid!r}, not in 'videos'")
        ann_id = ann.get("id", i + 1)
        if not _is_int(ann_id):
            raise EvisError(f"{where}: 'id' must be an int")
        if ann_id in seen_ids:
            raise EvisError(f"{where}: duplicate annotation id {ann_id}")
        seen_ids.add(ann_id)
        if not _hashable(ann.get("category_id")) or ann.get("category_id") not in cat_set:
            dropped_gt += 1
            continue  # the reference only loads annotations of listed categories (said below)
        if "segmentations" not in ann:
            raise EvisError(f"{where}: no 'segmentations'")
        rles = _normalize_segmentations(ann["segmentations"], videos[vid], where)
        areas = ann.get("areas")
        if areas is not None and not isinstance(areas, (list, tuple)):
            raise EvisError(f"{where}: 'areas' must be a list")
        tracks.append(
            _Track(
                video_id=vid,
                category_id=ann["category_id"],
                rles=rles,
                ann_id=int(ann_id),
                iscrowd=bool(ann.get("iscrowd", 0)),
                given_areas=areas,
                where=where,
            )
        )
    if dropped_gt:
        log.warning("ground truth: %d track(s) of categories not in 'categories' ignored", dropped_gt)
    return videos, cat_ids, cat_names, tracks


def _parse_results(
    data: Any,
    videos: Mapping[Any, _Video],
    cat_set: set,
    what: str = "results",
    gt_what: str = "the ground truth",
) -> list[_Track]:
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if not isinstance(data, list):
        raise EvisError(f"{what} must be a JSON list of {{video_id, category_id, score, segmentations}}")
    tracks: list[_Track] = []
    dropped = 0
    for i, r in enumerate(data):
        if not isinstance(r, dict):
            raise EvisError(f"{what}[{i}] is not an object")
        vid = r.get("video_id")
        where = f"{what}[{i}] (video {vid})"
        if not _hashable(vid) or vid not in videos:
            raise EvisError(f"{where}: unknown video id {vid!r}, not in {gt_what}")
        score = r.get("score")
        if not _is_score(score):
            raise EvisError(f"{where}: 'score' must be a finite number, got {score!r}")
        if "segmentations" not in r:
            raise EvisError(f"{where}: no 'segmentations'")
        if not _hashable(r.get("category_id")) or r.get("category_id") not in cat_set:
            dropped += 1
            continue
        rles = _normalize_segmentations(r["segmentations"], videos[vid], where)
        tracks.append(
            _Track(video_id=vid, category_id=r["category_id"], rles=rles, score=float(score), ann_id=i + 1, where=where)
        )
    if dropped:
        log.warning("%s: %d track(s) of categories not in the ground truth ignored", what, dropped)
    return tracks


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


# --------------------------------------------------------------------------------------------
# Public API


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


# --------------------------------------------------------------------------------------------
# Benchmark (python -m efficientvis_trt.eval.ytvis_eval --bench)


def make_synthetic_case(
    n_videos: int = 300,
    n_dets: int = 100,
    n_frames: int = 36,
    n_gts: int = 5,
    n_cats: int = 40,
    height: int = 360,
    width: int = 640,
    seed: int = 0,
    pool: int = 600,
) -> tuple[dict, list]:
    """A random but realistic case (blob masks, noisy copies of gt, many weak dets) for timing."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]

    def blob() -> dict:
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(8, height / 3), rng.uniform(8, width / 3)
        m = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)
        rle = mask_utils.encode(np.asfortranarray(m))
        return {"size": [height, width], "counts": rle["counts"].decode("ascii")}

    masks = [blob() for _ in range(pool)]
    videos, anns, results = [], [], []
    for v in range(1, n_videos + 1):
        videos.append(
            {
                "id": v,
                "width": width,
                "height": height,
                "length": n_frames,
                "file_names": [f"{v}/{f:05d}.jpg" for f in range(n_frames)],
            }
        )
        gt_seqs = []
        for _ in range(n_gts):
            seq = [masks[i] for i in rng.integers(0, pool, n_frames)]
            seq = [None if rng.random() < 0.1 else s for s in seq]
            c = int(rng.integers(1, n_cats + 1))
            gt_seqs.append((c, seq))
            areas = _rle_areas([s for s in seq if s]).tolist()
            it = iter(areas)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "video_id": v,
                    "category_id": c,
                    "iscrowd": 0,
                    "segmentations": seq,
                    "areas": [next(it) if s else None for s in seq],
                }
            )
        for d in range(n_dets):
            if d < 2 * n_gts:
                c, seq = gt_seqs[d % n_gts]
                seq = [masks[int(rng.integers(0, pool))] if rng.random() < 0.3 else s for s in seq]
                if rng.random() < 0.2:
                    c = int(rng.integers(1, n_cats + 1))
            else:
                c = int(rng.integers(1, n_cats + 1))
                seq = [masks[i] for i in rng.integers(0, pool, n_frames)]
            results.append({"video_id": v, "category_id": c, "score": float(rng.random()), "segmentations": seq})
    cats = [{"id": c, "name": f"class{c}"} for c in range(1, n_cats + 1)]
    return {"videos": videos, "annotations": anns, "categories": cats}, results


def _bench() -> None:  # pragma: no cover - manual timing
    t = time.perf_counter()
    gt, res = make_synthetic_case()
    print(f"generated 300 videos x 100 dets x 36 frames in {time.perf_counter() - t:.1f}s")
    t, c = time.perf_counter(), time.process_time()
    out = evaluate(gt, res)
    print(
        f"evaluate: {time.perf_counter() - t:.2f}s wall, {time.process_time() - c:.2f}s CPU, AP={out.stats['AP']:.4f}"
    )


if __name__ == "__main__":  # pragma: no cover
    import sys

    if "--bench" in sys.argv:
        _bench()
