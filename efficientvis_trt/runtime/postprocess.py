"""Per-clip outputs -> per-video tracks in original-frame coordinates.

Masks are pasted through their boxes, thresholded and RLE-encoded as soon as a clip is
done, so memory stays flat in video length: a track holds boxes and RLEs, never frames.
The RLE is computed from the box's region only (never a full-frame mask), and a mask
that cannot reach the threshold is never pasted; docs/host-work.md says where the
milliseconds go.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from efficientvis_trt.video import Letterbox

_EMPTY_MARGIN = 1e-4  # relative: far above the few float32 roundings of one bilinear sample


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def cxcywh_norm_to_xyxy(boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Normalised cxcywh -> canvas-pixel xyxy."""
    h, w = hw
    cx, cy, bw, bh = np.moveaxis(boxes.astype(np.float32), -1, 0)
    return np.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], axis=-1)


def paste_mask_roi(
    prob: np.ndarray, box: np.ndarray, frame_hw: tuple[int, int], threshold: float = 0.5
) -> tuple[np.ndarray, int, int]:
    """Resample an M x M box-relative probability map into the frame through `box` (xyxy, frame pixels).

    Returns (binary uint8 mask of the box's pixel range, its top row, its left column); the
    rest of the frame is 0. Bilinear, pixel-centre aligned: frame pixel centre u+0.5 maps to
    mask coordinate (u + 0.5 - x1) * M / w - 0.5.
    """
    roi, top, left = _paste_roi_bool(prob, box, frame_hw, threshold)
    return roi.view(np.uint8), top, left


def _paste_roi_bool(
    prob: np.ndarray, box: np.ndarray, frame_hw: tuple[int, int], threshold: float
) -> tuple[np.ndarray, int, int]:
    """`paste_mask_roi` as a bool array (one warp over the box's pixels, one compare, no other copy)."""
    import cv2

    height, width = frame_hw
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)
    u0, u1 = int(max(np.floor(x1), 0)), int(min(np.ceil(x2), width))
    v0, v1 = int(max(np.floor(y1), 0)), int(min(np.ceil(y2), height))
    if u1 <= u0 or v1 <= v0:
        return np.zeros((0, 0), bool), 0, 0
    m_h, m_w = prob.shape
    affine = np.array(
        [[m_w / bw, 0.0, (u0 + 0.5 - x1) * m_w / bw - 0.5], [0.0, m_h / bh, (v0 + 0.5 - y1) * m_h / bh - 0.5]],
        dtype=np.float64,
    )
    roi = cv2.warpAffine(
        np.asarray(prob, np.float32),
        affine,
        (u1 - u0, v1 - v0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    return np.greater_equal(roi, threshold), v0, u0


def paste_mask(prob: np.ndarray, box: np.ndarray, frame_hw: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """Full-frame binary mask of `paste_mask_roi` (for drawing and tests; the runtime encodes the ROI)."""
    out = np.zeros(frame_hw, dtype=np.uint8)
    roi, top, left = paste_mask_roi(prob, box, frame_hw, threshold)
    out[top : top + roi.shape[0], left : left + roi.shape[1]] = roi
    return out


def encode_rle(mask: np.ndarray) -> dict:
    """COCO RLE with a str `counts` (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


@functools.lru_cache(maxsize=16)
def _empty_counts(height: int, width: int) -> str:
    """The COCO counts string of an all-zero frame (most masks of most frames: computed once per size)."""
    return _counts_string(np.array([height * width], np.uint32), height, width)


def _counts_string(counts: np.ndarray, height: int, width: int) -> str:
    from pycocotools import mask as mask_utils

    rle = mask_utils.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
    return rle["counts"].decode("ascii")


def encode_rle_roi(roi: np.ndarray, top: int, left: int, frame_hw: tuple[int, int]) -> dict:
    """COCO RLE of a frame that is 0 except `roi` placed at (top, left), without building the frame.

    COCO counts alternate zeros/ones column-major, starting with zeros. The run boundaries
    are the rises and falls inside each ROI column, shifted to frame positions; a fall and
    a rise at the same position (a run crossing a column edge of a full-height ROI) cancel.
    """
    roi = np.asarray(roi)
    return _encode_bool_roi(roi if roi.dtype == np.bool_ else roi != 0, top, left, frame_hw)


def _encode_bool_roi(roi: np.ndarray, top: int, left: int, frame_hw: tuple[int, int]) -> dict:
    """`encode_rle_roi` of a bool ROI: the transitions come from one compare over the transposed,
    zero-padded ROI (cv2 transposes and pads uint8 fast), and the counts go to pycocotools as an array."""
    import cv2

    height, width = (int(v) for v in frame_hw)
    size = [height, width]
    h, w = roi.shape[:2]
    if h == 0 or w == 0 or not roi.any():
        return {"size": size, "counts": _empty_counts(height, width)}
    # Column-major ROI with a 0 above and below each column: row c of `cols` is ROI column c.
    cols = cv2.copyMakeBorder(cv2.transpose(roi.view(np.uint8)), 0, 0, 1, 1, cv2.BORDER_CONSTANT, value=0)
    flat = cols.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1])  # between flat[i] and flat[i+1]: never across a padding pair
    col, pos = np.divmod(change, h + 2)  # pos: ROI row where the new run starts (h = past the column's end)
    idx = (col + left) * height + (pos + top)
    if h == height:  # a fall at a column's end and a rise at the next column's start are one position
        same = np.flatnonzero(idx[1:] == idx[:-1])
        if same.size:
            keep = np.ones(idx.size, bool)
            keep[same] = keep[same + 1] = False
            idx = idx[keep]
    counts = np.diff(idx, prepend=0, append=height * width)
    if counts.size > 1 and counts[-1] == 0:  # a run of ones reaching the last pixel
        counts = counts[:-1]
    return {"size": size, "counts": _counts_string(counts.astype(np.uint32), height, width)}


def encode_masks(
    probs: np.ndarray, boxes: np.ndarray, frame_hw: tuple[int, int], threshold: float = 0.5
) -> list[list[dict]]:
    """COCO RLEs of [N, T, M, M] box-relative probability maps pasted through [N, T, 4] xyxy frame boxes.

    A map whose largest value is below the threshold pastes to an empty mask (bilinear
    interpolation with a zero border never exceeds the largest input), so it costs no
    pixel work; the margin covers float rounding in the warp, so the result is exactly
    that of pasting every map.
    """
    n, t = probs.shape[:2]
    hw = (int(frame_hw[0]), int(frame_hw[1]))
    empty = _empty_counts(*hw)
    can_paste = probs.reshape(n, t, -1).max(axis=-1) * (1.0 + _EMPTY_MARGIN) >= threshold
    return [
        [
            _encode_bool_roi(*_paste_roi_bool(probs[i, j], boxes[i, j], hw, threshold), hw)
            if can_paste[i, j]
            else {"size": list(hw), "counts": empty}
            for j in range(t)
        ]
        for i in range(n)
    ]


def decode_rle(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    r = dict(rle)
    if isinstance(r["counts"], str):
        r["counts"] = r["counts"].encode("ascii")
    return mask_utils.decode(r)


def rle_area(rle: dict) -> int:
    from pycocotools import mask as mask_utils

    r = dict(rle)
    if isinstance(r["counts"], str):
        r["counts"] = r["counts"].encode("ascii")
    return int(mask_utils.area(r))


@dataclass
class Track:
    """One video instance: query `query_index` read as class `label`."""

    query_index: int
    label: int
    score: float
    boxes: np.ndarray  # [F, 4] xyxy in original-frame pixels
    frame_scores: np.ndarray  # [F] class probability per frame
    segmentations: list[dict]  # [F] COCO RLE in original-frame coordinates
    class_name: str = ""

    def to_ytvis(self, video_id: int, category_id: int) -> dict:
        return {
            "video_id": video_id,
            "category_id": category_id,
            "score": float(self.score),
            "segmentations": self.segmentations,
        }

    def visible_frames(self) -> int:
        """Frames where the mask is not empty (what the CLI prints)."""
        return sum(1 for s in self.segmentations if rle_area(s) > 0)


@dataclass
class VideoResult:
    video: str
    height: int
    width: int
    num_frames: int
    tracks: list[Track]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, summed over clips; "wall" = elapsed
    clip_latencies: list[float] = field(default_factory=list)  # model-only seconds per clip

    def to_ytvis(self, video_id: int, label_to_category_id: list[int] | None = None) -> list[dict]:
        ids = label_to_category_id
        return [t.to_ytvis(video_id, ids[t.label] if ids else t.label + 1) for t in self.tracks]

    @property
    def fps(self) -> float:
        wall = self.timings.get("wall", 0.0)
        return self.num_frames / wall if wall > 0 else 0.0


@dataclass
class Instance:
    """One (query, class) pair seen in one frame of a streamed clip."""

    query_index: int
    label: int
    class_name: str
    score: float  # running video score: mean class probability over the frames so far
    frame_score: float  # class probability in this frame
    box: np.ndarray  # [4] xyxy in original-frame pixels
    segmentation: dict  # COCO RLE in original-frame coordinates


@dataclass
class ClipPost:
    """One clip after post-processing: real frames only, original-frame coordinates."""

    probs: np.ndarray  # [N, v, K]
    boxes: np.ndarray  # [N, v, 4] xyxy
    rles: list[list[dict]]  # [N][v]


class TrackAccumulator:
    """Accumulates per-query state over clips; `finish` ranks (query, class) pairs by mean probability.

    History is what a whole-video result needs (per frame: N class probabilities, boxes
    and RLE strings, a few KB); with `keep_history=False` (live streams) only running
    sums are kept, so memory does not grow at all; `finish` is then unavailable but
    `ranked` still works.
    """

    def __init__(
        self,
        letterbox: Letterbox,
        mask_threshold: float = 0.5,
        keep_history: bool = True,
        class_names: list[str] | None = None,
        score_frames: int | None = None,
    ):
        if score_frames is not None and score_frames < 1:
            raise ValueError(f"score_frames must be >= 1 or None, got {score_frames}")
        self.score_frames = score_frames
        self._top: np.ndarray | None = None  # [N, K, <= score_frames] the highest per-frame probabilities so far
        self.letterbox = letterbox
        self.mask_threshold = mask_threshold
        self.keep_history = keep_history
        self.class_names = class_names
        self._probs: list[np.ndarray] = []  # [N, t, K] per clip
        self._boxes: list[np.ndarray] = []  # [N, t, 4]
        self._counts: list[list[list[str]]] = []  # per clip: [N][t] RLE counts (the size is the video's)
        self._prob_sum: np.ndarray | None = None  # [N, K]
        self.num_frames = 0

    def add_clip(self, outputs: dict[str, np.ndarray], valid: int) -> ClipPost:
        """Consume one clip's `logits`, `boxes`, `mask_logits`; only the first `valid` frames are real."""
        probs = sigmoid(np.asarray(outputs["logits"][:, :valid], np.float32))
        canvas_boxes = cxcywh_norm_to_xyxy(np.asarray(outputs["boxes"][:, :valid]), self.letterbox.dst_hw)
        boxes = self.letterbox.boxes_to_source(canvas_boxes)
        paste_boxes = self.letterbox.boxes_to_source(canvas_boxes, clip=False)
        masks = sigmoid(np.asarray(outputs["mask_logits"][:, :valid], np.float32))
        rles = encode_masks(masks, paste_boxes, self.letterbox.src_hw, self.mask_threshold)
        clip_sum = probs.sum(axis=1)
        self._prob_sum = clip_sum if self._prob_sum is None else self._prob_sum + clip_sum
        if self.score_frames is not None:
            seen = probs.transpose(0, 2, 1)  # [N, K, v]
            seen = seen if self._top is None else np.concatenate([self._top, seen], axis=2)
            m = self.score_frames
            self._top = seen if seen.shape[2] <= m else -np.partition(-seen, m - 1, axis=2)[..., :m]
        if self.keep_history:
            self._probs.append(probs)
            self._boxes.append(boxes)
            self._counts.append([[r["counts"] for r in per_query] for per_query in rles])
        self.num_frames += valid
        return ClipPost(probs, boxes, rles)

    def running_scores(self) -> np.ndarray:
        """[N, K] video scores so far: the mean class probability over all frames, or over the
        `score_frames` highest frames (so an object seen in only part of a video is not scored down
        for the frames it was absent; docs/runtime.md, "Video scores")."""
        if self._prob_sum is None:
            return np.zeros((0, 0), np.float32)
        if self._top is not None:
            return self._top.mean(axis=2)
        return self._prob_sum / max(self.num_frames, 1)

    def ranked(self, top_k: int = 10, score_threshold: float = 0.0) -> list[tuple[int, int, float]]:
        """The top-k (query, label, score) pairs by running video score, best first."""
        scores = self.running_scores()
        if scores.size == 0:
            return []
        n, k = scores.shape
        order = np.argsort(-scores, axis=None, kind="stable")[: min(top_k, n * k)]
        out = []
        for flat in order:
            q, label = divmod(int(flat), k)
            score = float(scores[q, label])
            if score >= score_threshold:
                out.append((q, label, score))
        return out

    def clip_instances(self, post: ClipPost, top_k: int = 10, score_threshold: float = 0.0) -> list[list[Instance]]:
        """Per real frame of `post`: the instances of the current top-k pairs (for live consumers)."""
        pairs = self.ranked(top_k, score_threshold)
        frames: list[list[Instance]] = []
        for t in range(post.probs.shape[1]):
            frames.append(
                [
                    Instance(
                        q,
                        label,
                        self._name(label),
                        score,
                        float(post.probs[q, t, label]),
                        post.boxes[q, t].copy(),
                        post.rles[q][t],
                    )
                    for q, label, score in pairs
                ]
            )
        return frames

    def _name(self, label: int) -> str:
        names = self.class_names
        return names[label] if names and 0 <= label < len(names) else f"class_{label}"

    def finish(self, top_k: int = 10, score_threshold: float = 0.0) -> list[Track]:
        if not self.keep_history:
            raise RuntimeError("finish() needs keep_history=True")
        if not self._probs:
            return []
        probs = np.concatenate(self._probs, axis=1)  # [N, F, K]
        boxes = np.concatenate(self._boxes, axis=1)
        size = [int(v) for v in self.letterbox.src_hw]
        tracks = []
        for q, label, score in self.ranked(top_k, score_threshold):
            segs = [{"size": list(size), "counts": c} for clip in self._counts for c in clip[q]]
            tracks.append(Track(q, label, score, boxes[q], probs[q, :, label], segs, self._name(label)))
        return tracks
