"""YouTube-VIS evaluation, part 1: reading and validating ground truth and results.

Everything the evaluator is given is parsed here into `_Video`s and `_Track`s whose masks are
compressed RLE dicts (or None) checked against their video's shape, so the matching
(`matching.py`) never sees malformed input. The rules, and where this is stricter than the
official evaluator, are in `ytvis_eval.py`'s docstring.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from efficientvis_trt.errors import EvisError

log = logging.getLogger(__name__)

# Compressed COCO RLE: one char per 5 bits, '0' (48) .. 'o' (111); a number's last char has no
# continuation bit (0x20), i.e. lies in '0'..'O'.
_RLE_ALPHABET = bytes(range(48, 112))
_RLE_LAST_CHARS = bytes(range(48, 80))


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
    fast = all(type(seg) is dict and type(seg.get("counts")) is str and seg.get("size") == hw for seg in present)
    if fast and not (present and _first_bad_rle_string([seg["counts"] for seg in present]) >= 0):
        return out  # else the slow path below names the bad frame
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
