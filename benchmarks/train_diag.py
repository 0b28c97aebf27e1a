"""Diagnose a checkpoint on clip pairs of a split: per stage, the matched query's GIoU, size ratio, class prob.

    python benchmarks/train_diag.py RUN/final.pt DATA/train [PAIRS]

No augmentation; clip 2 starts from clip 1's carried state, as in training (issue #27).
"""

import sys

import numpy as np
import torch

from efficientvis_trt.data.ytvis import YTVISClipPairs, load_ytvis
from efficientvis_trt.model.box_ops import box_area, cxcywh_to_xyxy, elementwise_giou
from efficientvis_trt.model.checkpoint import load_checkpoint
from efficientvis_trt.train.losses import SetCriterion
from efficientvis_trt.train.trainer import PairForward, stack_clip

torch.set_num_threads(1)
ckpt, data = sys.argv[1], sys.argv[2]
model, payload = load_checkpoint(ckpt)
model.eval()
cfg = model.config
d = load_ytvis(data + "/annotations.json")
pairs = YTVISClipPairs(
    d, cfg.model.clip_len, cfg.model.input_size, hflip_prob=0.0, scale_jitter=(1, 1), max_frame_stride=1
)
crit = SetCriterion(cfg.train)
pf = PairForward(model, None, all_masks=True)
rng = np.random.default_rng(0)
stats = {}
with torch.no_grad():
    for i in range(int(sys.argv[3]) if len(sys.argv) > 3 else 8):
        s = [pairs.sample(i % len(pairs), rng)]
        f1, t1 = stack_clip(s, 0, "cpu")
        f2, t2 = stack_clip(s, 1, "cpu")
        hw = tuple(f1.shape[2:4])
        st1, st2, *_ = pf(f1, f2)
        a = crit.match(st1, t1, hw, st2, t2)
        for clip, (stages, tg, assigns) in enumerate(((st1, t1, a.clip1), (st2, t2, [a.clip2] * len(st2)))):
            for k, (stg, asg) in enumerate(zip(stages, assigns)):
                q, g = asg[0]
                v = tg[0]["valid"][g].bool()
                h, w = hw
                sc = torch.tensor([w, h, w, h])
                pb = (stg["boxes_xyxy"][0, q] / sc)[v]
                gb = cxcywh_to_xyxy(tg[0]["boxes"][g])[v]
                iou_like = elementwise_giou(pb, gb)
                ratio = (box_area(pb) / box_area(gb).clamp(min=1e-8)).sqrt()
                prob = stg["logits"][0, q].sigmoid()  # [M, T, K]
                lab = tg[0]["labels"][g]
                pc = prob[torch.arange(len(q)), :, lab][v]
                top = stg["logits"][0].sigmoid().amax(-1).mean(-1)  # per query
                key = (clip, k)
                e = stats.setdefault(key, {"giou": [], "ratio": [], "p_gt": [], "rank": []})
                e["giou"] += iou_like.tolist()
                e["ratio"] += ratio.tolist()
                e["p_gt"] += pc.tolist()
                order = top.argsort(descending=True)
                e["rank"] += [int((order == qq).nonzero()) for qq in q]
for (clip, k), e in sorted(stats.items()):
    print(
        f"clip{clip + 1} stage{k}: GIoU {np.mean(e['giou']):.3f}  size ratio median {np.median(e['ratio']):.2f} "
        f"mean {np.mean(e['ratio']):.2f}  p(gt class) {np.mean(e['p_gt']):.3f}  score rank {np.mean(e['rank']):.2f}"
    )
