"""Per-clip outputs -> per-video tracks in original-frame coordinates.

Masks are pasted through their boxes, thresholded and RLE-encoded as soon as a clip is
done, so memory stays flat in video length: a track holds boxes and RLEs, never frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from efficientvis_trt.video import Letterbox


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def cxcywh_norm_to_xyxy(boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Normalised cxcywh -> canvas-pixel xyxy."""
    h, w = hw
    cx, cy, bw, bh = np.moveaxis(boxes.astype(np.float32), -1, 0)
    return np.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], axis=-1)


def paste_mask(prob: np.ndarray, box: np.ndarray, frame_hw: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """Resample an M x M box-relative probability map into the frame through `box` (xyxy, frame pixels).

    Bilinear, pixel-centre aligned: frame pixel centre u+0.5 maps to mask coordinate
    (u + 0.5 - x1) * M / w - 0.5. Only the box's pixel range is touched.
    """
    import cv2

    height, width = frame_hw
    out = np.zeros((height, width), dtype=np.uint8)
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)
    u0, u1 = int(max(np.floor(x1), 0)), int(min(np.ceil(x2), width))
    v0, v1 = int(max(np.floor(y1), 0)), int(min(np.ceil(y2), height))
    if u1 <= u0 or v1 <= v0:
        return out
    m_h, m_w = prob.shape
    affine = np.array([[m_w / bw, 0.0, (u0 + 0.5 - x1) * m_w / bw - 0.5],
                       [0.0, m_h / bh, (v0 + 0.5 - y1) * m_h / bh - 0.5]], dtype=np.float64)
    roi = cv2.warpAffine(prob.astype(np.float32), affine, (u1 - u0, v1 - v0),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    out[v0:v1, u0:u1] = roi >= threshold
    return out


def encode_rle(mask: np.ndarray) -> dict:
    """COCO RLE with a str `counts` (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_rle(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    r = dict(rle)
    if isinstance(r["counts"], str):
        r["counts"] = r["counts"].encode("ascii")
    return mask_utils.decode(r)


@dataclass
class Track:
    """One video instance: query `query_index` read as class `label`."""

    query_index: int
    label: int
    score: float
    boxes: np.ndarray            # [F, 4] xyxy in original-frame pixels
    frame_scores: np.ndarray     # [F] class probability per frame
    segmentations: list[dict]    # [F] COCO RLE in original-frame coordinates

    def to_ytvis(self, video_id: int, category_id: int) -> dict:
        return {"video_id": video_id, "category_id": category_id, "score": float(self.score),
                "segmentations": self.segmentations}


@dataclass
class VideoResult:
    video: str
    height: int
    width: int
    num_frames: int
    tracks: list[Track]
    timings: dict[str, float] = field(default_factory=dict)     # seconds per stage, summed over clips
    clip_latencies: list[float] = field(default_factory=list)   # model-only seconds per clip

    def to_ytvis(self, video_id: int, label_to_category_id: list[int] | None = None) -> list[dict]:
        ids = label_to_category_id
        return [t.to_ytvis(video_id, ids[t.label] if ids else t.label + 1) for t in self.tracks]


class TrackAccumulator:
    """Accumulates per-query state over clips; `finish` ranks (query, class) pairs by mean probability."""

    def __init__(self, letterbox: Letterbox, mask_threshold: float = 0.5):
        self.letterbox = letterbox
        self.mask_threshold = mask_threshold
        self._probs: list[np.ndarray] = []     # [N, t, K] per clip
        self._boxes: list[np.ndarray] = []     # [N, t, 4]
        self._rles: list[list[list[dict]]] = []  # per clip: [N][t]
        self.num_frames = 0

    def add_clip(self, outputs: dict[str, np.ndarray], valid: int) -> None:
        """Consume one clip's `logits`, `boxes`, `mask_logits`; only the first `valid` frames are real."""
        probs = sigmoid(outputs["logits"][:, :valid].astype(np.float32))
        canvas_boxes = cxcywh_norm_to_xyxy(outputs["boxes"][:, :valid], self.letterbox.dst_hw)
        boxes = self.letterbox.boxes_to_source(canvas_boxes)
        masks = sigmoid(outputs["mask_logits"][:, :valid].astype(np.float32))
        hw = self.letterbox.src_hw
        rles = [[encode_rle(paste_mask(masks[n, t], boxes[n, t], hw, self.mask_threshold)) for t in range(valid)]
                for n in range(masks.shape[0])]
        self._probs.append(probs)
        self._boxes.append(boxes)
        self._rles.append(rles)
        self.num_frames += valid

    def finish(self, top_k: int = 10, score_threshold: float = 0.0) -> list[Track]:
        if not self._probs:
            return []
        probs = np.concatenate(self._probs, axis=1)          # [N, F, K]
        boxes = np.concatenate(self._boxes, axis=1)
        video_scores = probs.mean(axis=1)                     # [N, K]
        n, k = video_scores.shape
        order = np.argsort(-video_scores, axis=None, kind="stable")[: min(top_k, n * k)]
        tracks = []
        for flat in order:
            q, label = divmod(int(flat), k)
            score = float(video_scores[q, label])
            if score < score_threshold:
                continue
            segs = [seg for clip in self._rles for seg in clip[q]]
            tracks.append(Track(q, label, score, boxes[q], probs[q, :, label], segs))
        return tracks
