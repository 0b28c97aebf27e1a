"""Evaluation speed: `evaluate()` on a large random but realistic YouTube-VIS case.

    python benchmarks/eval_speed.py

300 videos x 100 detections x 36 frames at 360x640, 5 ground-truth tracks per video (blob masks,
noisy copies of the ground truth, many weak detections); prints generation time, then the
evaluation's wall and CPU time and its AP (benchmarks/RESULTS.md, "Evaluation speed").
"""

from __future__ import annotations

import time

import numpy as np
from pycocotools import mask as mask_utils

from efficientvis_trt.eval import evaluate
from efficientvis_trt.eval.matching import _rle_areas


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


def main() -> None:
    t = time.perf_counter()
    gt, res = make_synthetic_case()
    print(f"generated 300 videos x 100 dets x 36 frames in {time.perf_counter() - t:.1f}s")
    t, c = time.perf_counter(), time.process_time()
    out = evaluate(gt, res)
    print(
        f"evaluate: {time.perf_counter() - t:.2f}s wall, {time.process_time() - c:.2f}s CPU, AP={out.stats['AP']:.4f}"
    )


if __name__ == "__main__":
    main()
