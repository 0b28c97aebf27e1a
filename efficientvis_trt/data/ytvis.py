"""YouTube-VIS 2019/2021 reader and the clip-pair training data set.

Why: training (correspondence learning across two consecutive clips) and evaluation
(category-id mapping, frame lists) must agree on one reading of the JSON, so both go
through `load_ytvis`.

Layout read: a JSON with ``videos`` / ``annotations`` (optional, absent in val/test) /
``categories``; frames under an image root, ``<image_root>/<file_name>``. The root
defaults to the first existing of ``<json dir>/JPEGImages`` (2021 layout and the
synthetic set), ``<json dir>/<json stem>/JPEGImages`` (2019 layout: train.json beside
train/), else ``<json dir>``. Masks may be COCO RLE (compressed string or uncompressed
list counts) or polygons; ``null`` means absent in that frame.

Labels: category ids sorted ascending map to contiguous labels 0..K-1
(`label_to_category_id[label]`, `category_id_to_label[id]`, names in `categories`).

Training sample (`YTVISClipPairs[i]`, one video, clips x T frames at one stride)::

    {"video_id": int, "clips": [clip1, clip2, ...]}   (train.chain_clips clips; 2 by default)
    clip = {"frames":   uint8   [T, H, W, 3]   BGR canvas (letterboxed, pad 114 bottom-right),
            "labels":   int64   [G]            contiguous labels,
            "inst_ids": int64   [G]            annotation ids, same G instances, same order in every clip,
            "boxes":    float32 [G, T, 4]      normalised cxcywh on the canvas, zeros where not valid,
            "masks":    uint8   [G, T, H, W]   0/1 canvas masks, 0 where not valid,
            "valid":    bool    [G, T]         annotated and non-empty on the canvas in that frame}

G = every non-crowd instance valid in at least one of the sample's frames, in ascending
annotation id. Boxes are the tight extent of the canvas mask (pixel edges), so boxes
and masks always agree. Augmentation: horizontal flip (of the image content, the
padding stays bottom-right as at inference), scale jitter (a factor on the letterbox
scale; above 1 the content is randomly cropped to the canvas, below 1 more padding),
random stride 1..max_frame_stride. A video too short for 2T frames at the drawn stride
falls back to stride 1; if still shorter than 2T frames, its last frame is repeated and
the repeats keep that frame's annotation (the object really is in that image, so
marking it absent would teach a false negative).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from efficientvis_trt.errors import EvisError
from efficientvis_trt.video import PAD_VALUE, Letterbox, read_image

_RESIZE_CHANNELS = 64  # OpenCV resizes at most this many mask channels at once reliably


def resolve_annotations(path: str | os.PathLike, what: str = "data") -> Path:
    """The one rule (trainer, bench, evaluation): a YouTube-VIS JSON file, or a folder holding
    `annotations.json` (or exactly one *.json); several candidates are an error, never a guess."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise EvisError(f"{what} not found: {p} (expected a YouTube-VIS folder or JSON file)")
    if (p / "annotations.json").is_file():
        return p / "annotations.json"
    found = sorted(p.glob("*.json"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise EvisError(f"{what} folder {p} has no annotations.json (not a YouTube-VIS data set?)")
    raise EvisError(
        f"{what} folder {p} has several JSON files ({', '.join(f.name for f in found[:4])}); "
        "pass the annotation file itself"
    )


@dataclass(frozen=True)
class YTVISVideo:
    id: int
    width: int
    height: int
    length: int
    file_names: tuple[str, ...]
    frame_paths: tuple[Path, ...]

    @property
    def name(self) -> str:
        """The video's folder name (e.g. 'train_00000' or a YouTube-VIS hex id)."""
        parent = Path(self.file_names[0]).parent.as_posix()
        return parent if parent not in ("", ".") else str(self.id)


@dataclass(frozen=True)
class YTVISAnnotation:
    id: int
    video_id: int
    category_id: int
    label: int
    segmentations: tuple[Any, ...]  # per frame: RLE dict, polygon list, or None
    iscrowd: int


def decode_segmentation(seg: Any, height: int, width: int, where: str = "mask") -> np.ndarray | None:
    """One frame's segmentation (RLE compressed/uncompressed, polygons, or None) -> uint8 [h, w] or None."""
    from pycocotools import mask as mask_util

    if seg is None:
        return None
    try:
        if isinstance(seg, dict):
            counts = seg["counts"]
            if isinstance(counts, list):
                rle = mask_util.frPyObjects(seg, height, width)
            else:
                rle = {
                    "size": list(seg["size"]),
                    "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
                }
        elif isinstance(seg, list):
            polys = [p for p in seg if isinstance(p, list) and len(p) >= 6]
            if not polys:
                return np.zeros((height, width), np.uint8)
            rle = mask_util.merge(mask_util.frPyObjects(polys, height, width))
        else:
            raise TypeError(type(seg).__name__)
        with warnings.catch_warnings():  # pycocotools + numpy 2: harmless copy=False DeprecationWarning
            warnings.simplefilter("ignore", DeprecationWarning)
            mask = mask_util.decode(rle)
    except EvisError:
        raise
    except Exception as exc:  # pycocotools raises assorted types on corrupt input
        raise EvisError(f"{where}: cannot decode segmentation ({type(exc).__name__}: {exc})") from None
    if mask.shape != (height, width):
        raise EvisError(f"{where}: mask is {mask.shape[1]}x{mask.shape[0]}, video is {width}x{height}")
    return mask


class YTVISData:
    """A parsed, validated YouTube-VIS JSON: videos, categories, annotations, frame paths."""

    def __init__(
        self,
        json_path: Path,
        image_root: Path,
        videos: list[YTVISVideo],
        category_ids: list[int],
        categories: list[str],
        annotations: list[YTVISAnnotation],
    ):
        self.json_path = json_path
        self.image_root = image_root
        self.videos = videos
        self.category_ids = category_ids
        self.categories = categories  # names, in label order
        self.label_to_category_id = list(category_ids)  # label -> JSON category id
        self.category_id_to_label = {c: i for i, c in enumerate(category_ids)}
        self.annotations = annotations
        self._by_id = {v.id: v for v in videos}
        self._anns: dict[int, list[YTVISAnnotation]] = {v.id: [] for v in videos}
        for a in sorted(annotations, key=lambda a: a.id):
            self._anns[a.video_id].append(a)

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def video(self, video_id: int) -> YTVISVideo:
        try:
            return self._by_id[video_id]
        except KeyError:
            raise EvisError(f"{self.json_path}: no video with id {video_id}") from None

    def video_frames(self, video: YTVISVideo | int) -> list[Path]:
        """Frame image paths of a video (object or id), in annotation order."""
        v = video if isinstance(video, YTVISVideo) else self.video(video)
        return list(v.frame_paths)

    def annotations_of(self, video: YTVISVideo | int) -> list[YTVISAnnotation]:
        """The video's annotations in ascending id."""
        vid = video.id if isinstance(video, YTVISVideo) else video
        return list(self._anns.get(vid, []))

    def decode_mask(self, ann: YTVISAnnotation, frame: int) -> np.ndarray | None:
        """uint8 [h, w] mask of `ann` in frame `frame`, or None where it is absent."""
        v = self._by_id[ann.video_id]
        return decode_segmentation(
            ann.segmentations[frame], v.height, v.width, f"{self.json_path}: annotation {ann.id} frame {frame}"
        )

    def read_frame(self, video: YTVISVideo, frame: int) -> np.ndarray:
        """BGR uint8 [h, w, 3]; a missing, corrupt or wrong-size image is an EvisError naming it."""
        path = video.frame_paths[frame]
        try:
            img = read_image(path)
        except EvisError as exc:
            raise EvisError(f"video {video.id}: {exc}") from None
        if img.shape[:2] != (video.height, video.width):
            raise EvisError(
                f"frame {path} is {img.shape[1]}x{img.shape[0]} but {self.json_path.name} says "
                f"video {video.id} is {video.width}x{video.height}"
            )
        return img


def _default_image_root(json_path: Path) -> Path:
    for cand in (json_path.parent / "JPEGImages", json_path.parent / json_path.stem / "JPEGImages"):
        if cand.is_dir():
            return cand
    return json_path.parent


def _int(value: Any, where: str, positive: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (positive and value <= 0):
        raise EvisError(f"{where} must be a {'positive ' if positive else ''}integer, got {value!r}")
    return value


def load_ytvis(
    json_path: str | os.PathLike, image_root: str | os.PathLike | None = None, check_files: bool = True
) -> YTVISData:
    """Read and validate a YouTube-VIS 2019/2021 JSON; any defect is one EvisError naming the file."""
    json_path = Path(json_path)
    try:
        raw = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise EvisError(f"YouTube-VIS JSON not found: {json_path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvisError(f"cannot read YouTube-VIS JSON {json_path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise EvisError(f"{json_path} is not valid JSON: {exc}") from None
    where = str(json_path)
    if not isinstance(raw, dict):
        raise EvisError(f"{where}: top level must be an object with videos/annotations/categories")
    for key in ("videos", "categories"):
        if not isinstance(raw.get(key), list):
            raise EvisError(f"{where}: '{key}' missing or not a list (not a YouTube-VIS file?)")
    anns_raw = raw.get("annotations") or []
    if not isinstance(anns_raw, list):
        raise EvisError(f"{where}: 'annotations' must be a list")
    root = Path(image_root) if image_root is not None else _default_image_root(json_path)
    if check_files and not root.is_dir():
        raise EvisError(f"{where}: image root {root} is not a folder")

    videos: list[YTVISVideo] = []
    seen: set[int] = set()
    listing: dict[Path, set[str]] = {}
    for i, v in enumerate(raw["videos"]):
        if not isinstance(v, dict):
            raise EvisError(f"{where}: videos[{i}] is not an object")
        try:
            vid = _int(v["id"], f"{where}: videos[{i}].id")
            w = _int(v["width"], f"{where}: video {vid} width", positive=True)
            h = _int(v["height"], f"{where}: video {vid} height", positive=True)
            names = v["file_names"]
        except KeyError as exc:
            raise EvisError(f"{where}: videos[{i}] lacks {exc}") from None
        if vid in seen:
            raise EvisError(f"{where}: duplicate video id {vid}")
        seen.add(vid)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise EvisError(f"{where}: video {vid} file_names must be a non-empty list of strings")
        if "length" in v and v["length"] != len(names):
            raise EvisError(f"{where}: video {vid} length {v['length']} != {len(names)} file_names")
        paths = tuple(root / n for n in names)
        if check_files:
            for p in paths:
                if p.parent not in listing:
                    listing[p.parent] = set(os.listdir(p.parent)) if p.parent.is_dir() else set()
                if p.name not in listing[p.parent]:
                    raise EvisError(f"{where}: frame file {p} of video {vid} is missing")
        videos.append(YTVISVideo(vid, w, h, len(names), tuple(names), paths))
    by_id = {v.id: v for v in videos}

    cats: dict[int, str] = {}
    for i, c in enumerate(raw["categories"]):
        if not isinstance(c, dict) or "id" not in c:
            raise EvisError(f"{where}: categories[{i}] must be an object with an id")
        cid = _int(c["id"], f"{where}: categories[{i}].id")
        if cid in cats:
            raise EvisError(f"{where}: duplicate category id {cid}")
        cats[cid] = str(c.get("name", cid))
    category_ids = sorted(cats)
    to_label = {c: i for i, c in enumerate(category_ids)}

    annotations: list[YTVISAnnotation] = []
    ann_ids: set[int] = set()
    for i, a in enumerate(anns_raw):
        if not isinstance(a, dict):
            raise EvisError(f"{where}: annotations[{i}] is not an object")
        try:
            aid = _int(a["id"], f"{where}: annotations[{i}].id")
            video_id = _int(a["video_id"], f"{where}: annotation {aid} video_id")
            cid = _int(a["category_id"], f"{where}: annotation {aid} category_id")
            segs = a["segmentations"]
        except KeyError as exc:
            raise EvisError(f"{where}: annotations[{i}] lacks {exc}") from None
        if aid in ann_ids:
            raise EvisError(f"{where}: duplicate annotation id {aid}")
        ann_ids.add(aid)
        v = by_id.get(video_id)
        if v is None:
            raise EvisError(f"{where}: annotation {aid} refers to unknown video {video_id}")
        if cid not in to_label:
            raise EvisError(f"{where}: annotation {aid} has unknown category_id {cid}")
        if not isinstance(segs, list) or len(segs) != v.length:
            n = len(segs) if isinstance(segs, list) else type(segs).__name__
            raise EvisError(f"{where}: annotation {aid} has {n} segmentations, video {video_id} has {v.length} frames")
        if ("height" in a and a["height"] != v.height) or ("width" in a and a["width"] != v.width):
            raise EvisError(
                f"{where}: annotation {aid} is {a.get('width')}x{a.get('height')}, "
                f"video {video_id} is {v.width}x{v.height}"
            )
        for t, s in enumerate(segs):
            if s is None or isinstance(s, list):
                continue
            if not isinstance(s, dict) or "counts" not in s or "size" not in s:
                raise EvisError(f"{where}: annotation {aid} frame {t}: segmentation must be RLE, polygons or null")
            if list(s["size"]) != [v.height, v.width]:
                raise EvisError(
                    f"{where}: annotation {aid} frame {t}: mask size {s['size'][1]}x{s['size'][0]} "
                    f"!= video {video_id} size {v.width}x{v.height}"
                )
        annotations.append(YTVISAnnotation(aid, video_id, cid, to_label[cid], tuple(segs), int(a.get("iscrowd", 0))))
    return YTVISData(json_path, root, videos, category_ids, [cats[c] for c in category_ids], annotations)


# ---- training samples ------------------------------------------------------------------


@dataclass(frozen=True)
class PairPlan:
    """Every random choice of one sample, so a sample can be reproduced or pinned in tests."""

    video_index: int  # into YTVISClipPairs.video_ids
    frame_indices: tuple[int, ...]  # clips x T indices into the video's frames: clip 1, clip 2, ...
    flip: bool = False
    scale: float = 1.0  # factor on the letterbox scale (scale jitter)
    crop: tuple[float, float] = (0.0, 0.0)  # (y, x) fraction of the overflow cut when scale > 1


def pair_frame_indices(
    length: int, clip_len: int, stride: int, start_fraction: float = 0.0, clips: int = 2
) -> tuple[int, ...]:
    """clips*clip_len frame indices at `stride`; stride 1 if it does not fit; last frame repeated if still short.

    `start_fraction` in [0, 1) picks the start among the valid ones.
    """
    need = clips * clip_len
    if (need - 1) * stride + 1 > length:
        stride = 1
    if need > length:
        return tuple(list(range(length)) + [length - 1] * (need - length))
    span = (need - 1) * stride + 1
    start = min(length - span, int(start_fraction * (length - span + 1)))
    return tuple(start + stride * k for k in range(need))


def collate_pairs(batch: list[dict]) -> list[dict]:
    """DataLoader collate: keep samples as a list (G differs per sample, nothing is stacked)."""
    return list(batch)


class YTVISClipPairs(Dataset):
    """`clips` (2: a pair) consecutive T-frame clips of one video per item, letterboxed and augmented (module doc)."""

    def __init__(
        self,
        data: YTVISData | str | os.PathLike,
        clip_len: int,
        input_size: Sequence[int],
        *,
        hflip_prob: float = 0.5,
        scale_jitter: Sequence[float] = (0.8, 1.2),
        max_frame_stride: int = 2,
        augment: bool = True,
        image_root: str | os.PathLike | None = None,
        max_tries: int = 5,
        clips: int = 2,
    ):
        self.data = data if isinstance(data, YTVISData) else load_ytvis(data, image_root)
        if clip_len < 1:
            raise EvisError(f"clip length must be >= 1, got {clip_len}")
        if len(input_size) != 2 or min(input_size) <= 0:
            raise EvisError(f"input size must be [H, W] > 0, got {list(input_size)}")
        if len(scale_jitter) != 2 or not 0 < scale_jitter[0] <= scale_jitter[1]:
            raise EvisError(f"scale_jitter must be [lo, hi] with 0 < lo <= hi, got {list(scale_jitter)}")
        if max_frame_stride < 1 or not 0.0 <= hflip_prob <= 1.0:
            raise EvisError(
                f"need max_frame_stride >= 1 and 0 <= hflip_prob <= 1, got {max_frame_stride}, {hflip_prob}"
            )
        self.clip_len = int(clip_len)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.hflip_prob = float(hflip_prob)
        self.scale_jitter = (float(scale_jitter[0]), float(scale_jitter[1]))
        self.max_frame_stride = int(max_frame_stride)
        self.augment = augment
        self.max_tries = max(1, int(max_tries))
        if clips < 2:
            raise EvisError(f"a training sample needs at least 2 clips, got {clips}")
        self.clips = int(clips)
        # Only videos with at least one non-crowd instance can teach anything.
        self.video_ids = [v.id for v in self.data.videos if any(not a.iscrowd for a in self.data.annotations_of(v))]
        if not self.video_ids:
            raise EvisError(f"{self.data.json_path}: no annotated videos to train on")

    @classmethod
    def from_config(
        cls,
        cfg: Any,
        json_path: str | os.PathLike,
        *,
        image_root: str | os.PathLike | None = None,
        augment: bool = True,
    ) -> YTVISClipPairs:
        """Clip length, canvas size and augmentation from a `Config` (model.clip_len/input_size, train.*)."""
        t = cfg.train
        return cls(
            load_ytvis(json_path, image_root),
            cfg.model.clip_len,
            cfg.model.input_size,
            hflip_prob=t.hflip_prob,
            scale_jitter=t.scale_jitter,
            max_frame_stride=t.max_frame_stride,
            augment=augment,
            clips=t.chain_clips,
        )

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, index: int) -> dict:
        # Seeded from torch's RNG: reproducible under torch.manual_seed and distinct per DataLoader worker.
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return self.sample(index, rng)

    def sample(self, index: int, rng: np.random.Generator) -> dict:
        """A sample drawn with `rng`; retries a few windows to avoid one with no instance."""
        video = self.data.video(self.video_ids[index])
        anns = [a for a in self.data.annotations_of(video) if not a.iscrowd]
        plan = self.plan(index, rng)
        for _ in range(self.max_tries - 1):
            if any(a.segmentations[t] is not None for a in anns for t in plan.frame_indices):
                break
            plan = self.plan(index, rng)
        return self.render(plan)

    def plan(self, index: int, rng: np.random.Generator) -> PairPlan:
        """Draw the random choices of one sample of video `index`."""
        video = self.data.video(self.video_ids[index])
        if not self.augment:
            return PairPlan(index, pair_frame_indices(video.length, self.clip_len, 1, 0.0, self.clips))
        stride = int(rng.integers(1, self.max_frame_stride + 1))
        frames = pair_frame_indices(video.length, self.clip_len, stride, float(rng.random()), self.clips)
        flip = bool(rng.random() < self.hflip_prob)
        scale = float(rng.uniform(*self.scale_jitter))
        crop = (float(rng.random()), float(rng.random()))
        return PairPlan(index, frames, flip, scale, crop)

    def geometry(self, video: YTVISVideo, plan: PairPlan) -> tuple[float, tuple[int, int], tuple[int, int]]:
        """(effective scale, resized content (h, w), crop offset (y, x)) of a plan on a video."""
        src = (video.height, video.width)
        lb = Letterbox(src, self.input_size)
        if plan.scale == 1.0:
            s, (ch, cw) = lb.scale, lb.content_hw  # exactly video.Letterbox
        else:
            s = lb.scale * plan.scale
            ch, cw = max(1, round(src[0] * s)), max(1, round(src[1] * s))
            if plan.scale < 1.0:
                ch, cw = min(ch, self.input_size[0]), min(cw, self.input_size[1])
        oy = round(plan.crop[0] * max(0, ch - self.input_size[0]))
        ox = round(plan.crop[1] * max(0, cw - self.input_size[1]))
        return s, (ch, cw), (oy, ox)

    def render(self, plan: PairPlan) -> dict:
        """Build the sample dict of a plan (deterministic)."""
        import cv2

        video = self.data.video(self.video_ids[plan.video_index])
        anns = [a for a in self.data.annotations_of(video) if not a.iscrowd]
        big_h, big_w = self.input_size
        s, (ch, cw), (oy, ox) = self.geometry(video, plan)
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        vis_h, vis_w = min(big_h, ch - oy), min(big_w, cw - ox)

        def place(img: np.ndarray, fill: int) -> np.ndarray:
            """Resized content -> flip -> crop -> top-left of a canvas filled with `fill`."""
            if plan.flip:
                img = img[:, ::-1]
            out = np.full((big_h, big_w) + img.shape[2:], fill, np.uint8)
            out[:vis_h, :vis_w] = img[oy : oy + vis_h, ox : ox + vis_w]
            return out

        n_frames, n_anns = len(plan.frame_indices), len(anns)
        frames = np.empty((n_frames, big_h, big_w, 3), np.uint8)
        masks = np.zeros((n_anns, n_frames, big_h, big_w), np.uint8)
        annotated = np.zeros((n_anns, n_frames), bool)
        done: dict[int, int] = {}
        for j, t in enumerate(plan.frame_indices):
            if t in done:  # a repeated (padding) frame
                frames[j], masks[:, j], annotated[:, j] = frames[done[t]], masks[:, done[t]], annotated[:, done[t]]
                continue
            done[t] = j
            frames[j] = place(cv2.resize(self.data.read_frame(video, t), (cw, ch), interpolation=interp), PAD_VALUE)
            src = []
            for a in anns:
                m = self.data.decode_mask(a, t)
                src.append(m if m is not None else np.zeros((video.height, video.width), np.uint8))
                annotated[len(src) - 1, j] = m is not None
            for c0 in range(0, n_anns, _RESIZE_CHANNELS):
                chunk = np.stack(src[c0 : c0 + _RESIZE_CHANNELS], -1) * np.uint8(255)
                small = cv2.resize(chunk, (cw, ch), interpolation=interp).reshape(ch, cw, -1)
                placed = place((small >= 128).astype(np.uint8), 0)
                masks[c0 : c0 + chunk.shape[-1], j] = np.moveaxis(placed, -1, 0)

        present = annotated & masks.reshape(n_anns, n_frames, -1).any(-1)
        keep = np.flatnonzero(present.any(1))
        masks, present = masks[keep], present[keep]
        boxes = np.zeros((len(keep), n_frames, 4), np.float32)
        for g, j in zip(*np.nonzero(present)):
            ys = np.flatnonzero(masks[g, j].any(1))
            xs = np.flatnonzero(masks[g, j].any(0))
            x0, x1, y0, y1 = xs[0], xs[-1] + 1, ys[0], ys[-1] + 1
            boxes[g, j] = ((x0 + x1) / 2 / big_w, (y0 + y1) / 2 / big_h, (x1 - x0) / big_w, (y1 - y0) / big_h)
        labels = torch.tensor([anns[k].label for k in keep], dtype=torch.int64)
        inst_ids = torch.tensor([anns[k].id for k in keep], dtype=torch.int64)
        clips = []
        for c in range(self.clips):
            sl = slice(c * self.clip_len, (c + 1) * self.clip_len)
            clips.append(
                {
                    "frames": torch.from_numpy(np.ascontiguousarray(frames[sl])),
                    "labels": labels.clone(),
                    "inst_ids": inst_ids.clone(),
                    "boxes": torch.from_numpy(np.ascontiguousarray(boxes[:, sl])),
                    "masks": torch.from_numpy(np.ascontiguousarray(masks[:, sl])),
                    "valid": torch.from_numpy(np.ascontiguousarray(present[:, sl])),
                }
            )
        return {"video_id": int(video.id), "clips": clips}
