"""Auxiliary semantic-segmentation loss on P3, for training only (CondInst, Tian et al. 2020, does the same).

Why: a query-based detector trained from scratch first learns image-independent "mean"
boxes; its backbone gets only a handful of set-matched signals per image. A per-pixel
class loss on the FPN gives the backbone dense supervision from the same GT masks, so
RoI features become discriminative much sooner. The head hangs off the backbone's output
(captured by a forward hook), is not part of EfficientVIS, and never reaches export.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AUX_LEVEL = 1  # index into the FPN list [P2, P3, P4, P5]: P3, stride 8
AUX_STRIDE = 8


class SemanticAuxHead(nn.Module):
    """Two 3x3 convs + a 1x1 class predictor on P3 (sigmoid per class, focal-initialised bias)."""

    def __init__(self, channels: int, num_classes: int, prior_prob: float = 0.01):
        super().__init__()
        self.tower = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.predictor = nn.Conv2d(channels, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.predictor.bias, -float(torch.log(torch.tensor((1 - prior_prob) / prior_prob))))

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.predictor(self.tower(features[AUX_LEVEL]))


def semantic_targets(targets: list[dict], num_classes: int, stride: int = AUX_STRIDE) -> Tensor:
    """Per-class binary maps at 1/stride: [B*T, K, H/stride, W/stride], frame order b-major as the backbone sees them.

    A cell is class k if at least half of it is covered by a visible mask of class k.
    """
    maps = []
    for t in targets:
        masks, labels = t["masks"], t["labels"].long()
        g, frames, h, w = masks.shape
        cls = torch.zeros(frames, num_classes, h, w, dtype=torch.float32, device=masks.device)
        if g:
            onehot = F.one_hot(labels, num_classes).to(torch.float32)  # [G, K]
            per = masks.to(torch.float32)[:, :, None] * onehot[:, None, :, None, None]  # [G, T, K, H, W]
            cls = per.amax(dim=0)
        maps.append((F.avg_pool2d(cls, stride) >= 0.5).to(torch.float32))
    return torch.cat(maps)


def aux_semantic_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss summed over cells and classes, divided by the number of foreground cells (>= 1)."""
    from efficientvis_trt.train.losses import sigmoid_focal_loss

    return sigmoid_focal_loss(logits, targets, alpha, gamma) / targets.sum().clamp(min=1.0)
