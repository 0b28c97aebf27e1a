"""MultiLevelRoIAlign forward + backward at the tiny training shapes: dense separable form vs per-box.

    python benchmarks/roi_align_training.py

Two clips of 5 frames at 128x224 (the training recipe's canvas), tiny's 10 queries and pooler, boxes
of 12-245 px; 12 interleaved rounds, the first two dropped; prints the median per form and the largest
gradient difference.
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from efficientvis_trt.config import get_config
from efficientvis_trt.model import roi_align as R
from efficientvis_trt.plugins.spec import RoIAlignAttrs

torch.set_num_threads(2)
cfg = get_config("tiny").model
h, w = 128, 224
print("tiny", cfg.hidden_dim, cfg.num_queries, cfg.clip_len, cfg.pooler)
g = torch.Generator().manual_seed(0)
B = 2 * cfg.clip_len
feats = [torch.randn(B, cfg.hidden_dim, h >> lvl, w >> lvl, generator=g, requires_grad=True) for lvl in range(2, 6)]
size = torch.exp(torch.empty(B, cfg.num_queries, 1).uniform_(2.5, 5.5, generator=g))
c = torch.rand(B, cfg.num_queries, 2, generator=g) * torch.tensor([w, h])
rois = torch.cat([c - size / 2, c + size / 2], -1)
p = cfg.pooler
attrs = RoIAlignAttrs.from_pooler(p)


def step(fn):
    out = fn(feats, rois, attrs)
    (out * out).sum().backward()


fns = {"dense": R.multi_level_roi_align_dense, "per-box": R.multi_level_roi_align}
t = {k: [] for k in fns}
for _round in range(12):
    for k, fn in fns.items():
        t0 = time.perf_counter()
        step(fn)
        t[k].append(time.perf_counter() - t0)
grads = {}
for k, fn in fns.items():
    for f in feats:
        f.grad = None
    out = fn(feats, rois, attrs)
    (out * out).sum().backward()
    grads[k] = [f.grad.clone() for f in feats]
print(
    {k: f"{1e3 * statistics.median(v[2:]):.1f} ms" for k, v in t.items()},
    "ratio dense/per-box",
    statistics.median(t["dense"][2:]) / statistics.median(t["per-box"][2:]),
)
print("grad max diff", max(float((a - b).abs().max()) for a, b in zip(grads["dense"], grads["per-box"])))
