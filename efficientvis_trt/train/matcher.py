"""Hungarian matching of tracklet queries to ground-truth tracklets (docs/design.md, "The model").

Why one assignment per *tracklet* (not per frame): query i must stand for the same
instance in every frame of the clip (and, carried, in the next clip), so a ground-truth
instance is matched once, with the cost averaged over the frames where it is present.
Frames where it is absent carry no evidence either way and are ignored.

Cost(query n, gt g) = mean over g's valid frames t of
    cost_class * focal_class_cost(logit[n, t, label_g])
  + cost_l1    * |box[n, t] - gt_box[g, t]|_1        (normalised cxcywh)
  + cost_giou  * -GIoU(box[n, t], gt_box[g, t])
as in Sparse R-CNN / Deformable DETR (focal cost = positive focal term - negative focal term).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from efficientvis_trt.model.box_ops import cxcywh_to_xyxy, pairwise_giou

_BIG = 1e8  # cost of an impossible or non-finite pair: never chosen while a finite one exists


def focal_class_cost(logits: Tensor, alpha: float, gamma: float) -> Tensor:
    """Per-class matching cost of sigmoid focal loss: positive term minus negative term, same shape as `logits`."""
    prob = logits.float().sigmoid()
    neg = (1 - alpha) * prob.pow(gamma) * -(1 - prob + 1e-8).log()
    pos = alpha * (1 - prob).pow(gamma) * -(prob + 1e-8).log()
    return pos - neg


class TrackletMatcher:
    """Computes tracklet-level costs and solves the assignment with scipy's linear_sum_assignment."""

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_l1: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        self.cost_class, self.cost_l1, self.cost_giou = cost_class, cost_l1, cost_giou
        self.alpha, self.gamma = focal_alpha, focal_gamma

    @classmethod
    def from_config(cls, train_cfg) -> TrackletMatcher:
        return cls(
            train_cfg.cost_class, train_cfg.cost_l1, train_cfg.cost_giou, train_cfg.focal_alpha, train_cfg.focal_gamma
        )

    @torch.no_grad()
    def cost_matrix(self, logits: Tensor, boxes: Tensor, labels: Tensor, gt_boxes: Tensor, valid: Tensor) -> Tensor:
        """Cost matrix [N, G] of the predictions against the ground-truth tracklets.

        logits [N, T, K], boxes [N, T, 4] and gt_boxes [G, T, 4] normalised cxcywh, labels [G], valid [G, T].

        A gt with no valid frame gets cost _BIG in its whole column.
        """
        n, t, _ = logits.shape
        g = labels.shape[0]
        if g == 0:
            return logits.new_zeros((n, 0))
        boxes, gt_boxes = boxes.float(), gt_boxes.float()
        w = valid.to(boxes.dtype).t()  # [T, G]
        frames = w.sum(0)  # [G]
        cls = focal_class_cost(logits, self.alpha, self.gamma)[:, :, labels.long()]  # [N, T, G]
        l1 = (boxes[:, :, None, :] - gt_boxes.transpose(0, 1)[None]).abs().sum(-1)  # [N, T, G]
        giou = pairwise_giou(
            cxcywh_to_xyxy(boxes).transpose(0, 1), cxcywh_to_xyxy(gt_boxes).transpose(0, 1)
        )  # [T, N, G]
        per_frame = self.cost_class * cls + self.cost_l1 * l1 - self.cost_giou * giou.transpose(0, 1)
        per_frame = torch.where(w[None] > 0, per_frame, torch.zeros_like(per_frame))  # absent frames: no evidence
        cost = per_frame.sum(1) / frames.clamp(min=1)[None]
        cost = torch.where(torch.isfinite(cost), cost, torch.full_like(cost, _BIG))
        return torch.where(frames[None] > 0, cost, torch.full_like(cost, _BIG))

    @torch.no_grad()
    def __call__(
        self,
        logits: Tensor,
        boxes: Tensor,
        labels: Tensor,
        gt_boxes: Tensor,
        valid: Tensor,
        gt_subset: Tensor | None = None,
        free_queries: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Assign queries to gt tracklets of one clip -> (query indices [M], gt indices [M]), sorted by gt.

        Only gts present in at least one frame (and in `gt_subset`, a bool [G] mask, if given)
        are matched; only queries in `free_queries` (bool [N]) may be used, if given.
        """
        device = logits.device
        empty = (torch.zeros(0, dtype=torch.long, device=device),) * 2
        keep_g = valid.any(dim=1)
        if gt_subset is not None:
            keep_g = keep_g & gt_subset.to(device)
        keep_q = (
            torch.ones(logits.shape[0], dtype=torch.bool, device=device)
            if free_queries is None
            else free_queries.to(device)
        )
        g_idx, q_idx = torch.nonzero(keep_g).reshape(-1), torch.nonzero(keep_q).reshape(-1)
        if g_idx.numel() == 0 or q_idx.numel() == 0:
            return empty
        cost = self.cost_matrix(logits[q_idx], boxes[q_idx], labels[g_idx], gt_boxes[g_idx], valid[g_idx])
        rows, cols = linear_sum_assignment(cost.cpu().numpy().astype(np.float64))
        order = np.argsort(cols, kind="stable")
        q = q_idx[torch.as_tensor(rows[order], dtype=torch.long, device=device)]
        g = g_idx[torch.as_tensor(cols[order], dtype=torch.long, device=device)]
        return q, g
