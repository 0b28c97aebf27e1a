"""The straightforward post-processing, kept as the definition the fast path must equal.

`postprocess.encode_masks` skips masks that cannot reach the threshold and encodes RLEs
with fewer copies; this module pastes and encodes every mask the plain way, as the
runtime first did. The tests compare the two byte for byte on real model outputs, and
benchmarks/host_work.py times both in the same run. Nothing in the runtime calls it.
"""

from __future__ import annotations

import numpy as np

from efficientvis_trt.runtime.postprocess import cxcywh_norm_to_xyxy, sigmoid
from efficientvis_trt.video import Letterbox


def paste_mask_roi(
    prob: np.ndarray, box: np.ndarray, frame_hw: tuple[int, int], threshold: float = 0.5
) -> tuple[np.ndarray, int, int]:
    """Mask pasting as first written: one warp of the box's pixels, then a threshold."""
    import cv2

    height, width = frame_hw
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)
    u0, u1 = int(max(np.floor(x1), 0)), int(min(np.ceil(x2), width))
    v0, v1 = int(max(np.floor(y1), 0)), int(min(np.ceil(y2), height))
    if u1 <= u0 or v1 <= v0:
        return np.zeros((0, 0), np.uint8), 0, 0
    m_h, m_w = prob.shape
    affine = np.array(
        [[m_w / bw, 0.0, (u0 + 0.5 - x1) * m_w / bw - 0.5], [0.0, m_h / bh, (v0 + 0.5 - y1) * m_h / bh - 0.5]],
        dtype=np.float64,
    )
    roi = cv2.warpAffine(
        prob.astype(np.float32),
        affine,
        (u1 - u0, v1 - v0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    return (roi >= threshold).astype(np.uint8), v0, u0


def encode_rle_roi(roi: np.ndarray, top: int, left: int, frame_hw: tuple[int, int]) -> dict:
    """ROI RLE as first written: int8 diff of the padded transposed ROI, counts through a Python list."""
    from pycocotools import mask as mask_utils

    height, width = frame_hw
    h, w = roi.shape[:2]
    if h == 0 or w == 0:
        counts = [height * width]
    else:
        padded = np.zeros((w, h + 2), np.int8)
        padded[:, 1:-1] = roi.T != 0
        cols, pos = np.nonzero(np.diff(padded, axis=1))
        idx = (left + cols.astype(np.int64)) * height + top + pos
        same = np.flatnonzero(np.diff(idx) == 0)
        if same.size:
            keep = np.ones(idx.size, bool)
            keep[same] = keep[same + 1] = False
            idx = idx[keep]
        counts = np.diff(np.concatenate([[0], idx, [height * width]])).tolist()
        if len(counts) > 1 and counts[-1] == 0:
            counts.pop()
    rle = mask_utils.frPyObjects({"counts": [int(c) for c in counts], "size": [height, width]}, height, width)
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


def encode_masks(
    probs: np.ndarray, boxes: np.ndarray, frame_hw: tuple[int, int], threshold: float = 0.5
) -> list[list[dict]]:
    """[N][T] RLEs, every map pasted and encoded (the signature of `postprocess.encode_masks`)."""
    n, t = probs.shape[:2]
    return [
        [encode_rle_roi(*paste_mask_roi(probs[i, j], boxes[i, j], frame_hw, threshold), frame_hw) for j in range(t)]
        for i in range(n)
    ]


def clip_rles(
    outputs: dict[str, np.ndarray], valid: int, letterbox: Letterbox, threshold: float = 0.5
) -> list[list[dict]]:
    """[N][valid] RLEs of one clip's outputs, every mask pasted and encoded the reference way."""
    canvas_boxes = cxcywh_norm_to_xyxy(np.asarray(outputs["boxes"][:, :valid]), letterbox.dst_hw)
    paste_boxes = letterbox.boxes_to_source(canvas_boxes, clip=False)
    masks = sigmoid(np.asarray(outputs["mask_logits"][:, :valid], np.float32))
    return encode_masks(masks, paste_boxes, letterbox.src_hw, threshold)
