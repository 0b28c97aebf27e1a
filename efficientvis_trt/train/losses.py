"""Losses of a training sample (two clips of one video), docs/design.md, "The model".

Per clip and per stage (deep supervision, stage losses summed; the two clips averaged):

* class: sigmoid focal loss per (query, frame, class). A matched query's target is its
  gt's class in the frames where that gt is present and background elsewhere; unmatched
  queries are background everywhere.
* box: L1 on normalised cxcywh + (1 - GIoU), on the matched queries' valid frames.
* mask: BCE + Dice on 28x28 targets cut from the full-canvas GT masks by the stage's
  predicted box (detached) with RoIAlign, because the stage's 28x28 mask logits live in
  the coordinates of that box (the model warps them there from the RoI it pooled,
  `warp_to_boxes`; inference pastes them through the same box).

Every sum is divided by the number of (gt, frame) boxes present in the clip (averaged
over ranks under DDP), so the loss scale does not depend on crowding or batch size.

Assignment (the design choices):

* clip 1: one Hungarian assignment per stage (Sparse R-CNN deep supervision: each stage
  is matched on its own predictions), or, with `TrainConfig.match_per_stage = False`,
  the last stage's assignment reused by every stage.
* clip 2 reuses clip 1's *last-stage* assignment in all its stages: clip 2 starts from
  clip 1's last-stage queries, so query i must keep tracking the instance it had.
  Instances absent from clip 1 (entering in clip 2) or left unmatched there are then
  matched on clip 2's last stage among the still-free queries, which teaches free
  queries to pick up new instances at a clip boundary, as they must at inference.
  A longer chain (`train.chain_clips`) continues the same way: clip k + 1 inherits clip k's
  assignment and matches what is still unmatched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from efficientvis_trt.model.box_ops import cxcywh_to_xyxy, elementwise_giou, xyxy_to_cxcywh
from efficientvis_trt.model.roi_align import roi_align_level
from efficientvis_trt.train.matcher import TrackletMatcher

MASK_SIZE = 28
LOSS_TERMS = ("loss_class", "loss_l1", "loss_giou", "loss_mask_bce", "loss_mask_dice")

# One batch element's assignment: (query indices [M], gt indices [M]).
Assignment = tuple[Tensor, Tensor]


# ---- elementary losses (sums; the caller normalises) ------------------------------


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sum over all elements of the RetinaNet focal loss; `alpha < 0` disables the class weighting."""
    logits, targets = logits.float(), targets.float()
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t).pow(gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.sum()


def box_l1_loss(pred_cxcywh: Tensor, gt_cxcywh: Tensor) -> Tensor:
    """Sum of |pred - gt| over boxes [P, 4] (normalised cxcywh)."""
    return (pred_cxcywh.float() - gt_cxcywh.float()).abs().sum()


def giou_loss(pred_xyxy: Tensor, gt_xyxy: Tensor) -> Tensor:
    """Sum of 1 - GIoU over box pairs [P, 4] (xyxy)."""
    return (1 - elementwise_giou(pred_xyxy.float(), gt_xyxy.float())).sum()


def mask_bce_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Sum over masks [P, S, S] of the per-pixel-mean BCE."""
    if logits.numel() == 0:
        return logits.float().sum()
    return (
        F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none").flatten(1).mean(1).sum()
    )


def dice_loss(logits: Tensor, targets: Tensor, eps: float = 1.0) -> Tensor:
    """Sum over masks [P, S, S] of 1 - soft Dice (smoothed by `eps` so empty masks are defined)."""
    prob = logits.float().sigmoid().flatten(1)
    t = targets.float().flatten(1)
    dice = (2 * (prob * t).sum(1) + eps) / (prob.sum(1) + t.sum(1) + eps)
    return (1 - dice).sum()


def mask_targets(gt_masks: Tensor, boxes_xyxy: Tensor, size: int = MASK_SIZE) -> Tensor:
    """Cut [P, size, size] binary targets from canvas masks [P, H, W] by boxes [P, 4] (canvas pixels).

    RoIAlign (aligned, 2x2 samples per bin) then >= 0.5, as detectron2/QueryInst make mask targets.
    """
    if gt_masks.shape[0] == 0:
        return gt_masks.new_zeros((0, size, size), dtype=torch.float32)
    feature = gt_masks[:, None].float()
    index = torch.arange(gt_masks.shape[0], device=gt_masks.device)
    crop = roi_align_level(feature, boxes_xyxy.detach().float(), index, size, 1.0, 2, aligned=True)[:, 0]
    return (crop >= 0.5).float()


# ---- the criterion ----------------------------------------------------------------


@dataclass
class PairAssignment:
    """Assignments of one batch: clip 1 per stage, and the one clip-2 assignment."""

    clip1: list[list[Assignment]]  # [stage][batch element]
    clip2: list[Assignment] | None  # [batch element]
    later: list[list[Assignment]] = field(default_factory=list)  # clips 3..: [clip][batch element]


class SetCriterion(nn.Module):
    """Matching + weighted losses for a batch of clip pairs (see the module docstring)."""

    def __init__(self, train_cfg, match_per_stage: bool | None = None):
        super().__init__()
        self.cfg = train_cfg
        self.matcher = TrackletMatcher.from_config(train_cfg)
        self.match_per_stage = bool(
            getattr(train_cfg, "match_per_stage", True) if match_per_stage is None else match_per_stage
        )
        self.weights = {
            "loss_class": train_cfg.loss_class,
            "loss_l1": train_cfg.loss_l1,
            "loss_giou": train_cfg.loss_giou,
            "loss_mask_bce": train_cfg.loss_mask_bce,
            "loss_mask_dice": train_cfg.loss_mask_dice,
        }

    # ---- matching -------------------------------------------------------------------
    @staticmethod
    def _normalised(stage: dict, image_hw: tuple[int, int]) -> Tensor:
        h, w = image_hw
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=stage["boxes_xyxy"].device)
        return stage["boxes_xyxy"].float() / scale

    def _match_clip(self, stage: dict, targets: list[dict], image_hw: tuple[int, int]) -> list[Assignment]:
        boxes = xyxy_to_cxcywh(self._normalised(stage, image_hw))
        return [
            self.matcher(stage["logits"][b], boxes[b], t["labels"], t["boxes"], t["valid"])
            for b, t in enumerate(targets)
        ]

    @torch.no_grad()
    def match(
        self,
        stages1: list[dict],
        targets1: list[dict],
        image_hw: tuple[int, int],
        stages2: list[dict] | None = None,
        targets2: list[dict] | None = None,
        later: Sequence[tuple[list[dict], list[dict]]] = (),
    ) -> PairAssignment:
        last = self._match_clip(stages1[-1], targets1, image_hw)
        if self.match_per_stage:
            clip1 = [self._match_clip(s, targets1, image_hw) for s in stages1[:-1]] + [last]
        else:
            clip1 = [last] * len(stages1)
        if stages2 is None or targets2 is None:
            return PairAssignment(clip1, None)
        clip2 = self._carried_on(last, stages2, targets2, image_hw)
        chain = [clip2]
        for stages, targets in later:
            chain.append(self._carried_on(chain[-1], stages, targets, image_hw))
        return PairAssignment(clip1, clip2, chain[1:])

    def _carried_on(
        self, before: list[Assignment], stages: list[dict], targets: list[dict], image_hw: tuple[int, int]
    ) -> list[Assignment]:
        """The next clip's assignment: query i keeps the instance it had in `before`; instances not yet
        assigned are matched on this clip's last stage among the still-free queries."""
        out = []
        boxes = xyxy_to_cxcywh(self._normalised(stages[-1], image_hw))
        for b, ((q, g), t) in enumerate(zip(before, targets)):
            n = stages[-1]["logits"].shape[1]
            free = torch.ones(n, dtype=torch.bool, device=q.device)
            free[q] = False
            new_gt = torch.ones(t["labels"].shape[0], dtype=torch.bool, device=q.device)
            new_gt[g] = False
            q2, g2 = self.matcher(
                stages[-1]["logits"][b],
                boxes[b],
                t["labels"],
                t["boxes"],
                t["valid"],
                gt_subset=new_gt,
                free_queries=free,
            )
            out.append((torch.cat([q, q2]), torch.cat([g, g2])))
        return out

    # ---- losses ---------------------------------------------------------------------
    @staticmethod
    def num_boxes(targets: list[dict], device: torch.device) -> Tensor:
        """(gt, frame) boxes present in the clip, averaged over DDP ranks, at least 1."""
        num = torch.tensor(float(sum(int(t["valid"].sum()) for t in targets)), device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(num)
            num = num / torch.distributed.get_world_size()
        return num.clamp(min=1.0)

    def stage_losses(
        self, stage: dict, targets: list[dict], assign: list[Assignment], image_hw: tuple[int, int], num_boxes: Tensor
    ) -> dict[str, Tensor]:
        """Unweighted, normalised loss terms of one stage of one clip."""
        logits = stage["logits"]
        b_, n, t, k = logits.shape
        device = logits.device
        frames = torch.arange(t, device=device)
        target_cls = torch.zeros(logits.shape, dtype=torch.float32, device=device)
        boxes_n = self._normalised(stage, image_hw)  # [B, N, T, 4] xyxy in [0, 1]
        pred_boxes, gt_boxes, pix_boxes, pred_masks, gt_masks = [], [], [], [], []
        for b, ((q, g), tg) in enumerate(zip(assign, targets)):
            if q.numel() == 0:
                continue
            v = tg["valid"][g].bool()  # [M, T]
            target_cls[b, q[:, None], frames[None], tg["labels"][g].long()[:, None]] = v.float()
            pred_boxes.append(boxes_n[b, q][v])
            gt_boxes.append(tg["boxes"][g][v].float())
            pix_boxes.append(stage["boxes_xyxy"][b, q][v])
            if stage.get("mask_logits") is not None:
                pred_masks.append(stage["mask_logits"][b, q][v])
                gt_masks.append(tg["masks"][g][v])
        out = {
            "loss_class": sigmoid_focal_loss(logits, target_cls, self.cfg.focal_alpha, self.cfg.focal_gamma) / num_boxes
        }
        if pred_boxes:
            pb, gb = torch.cat(pred_boxes), torch.cat(gt_boxes)
            out["loss_l1"] = box_l1_loss(xyxy_to_cxcywh(pb), gb) / num_boxes
            out["loss_giou"] = giou_loss(pb, cxcywh_to_xyxy(gb)) / num_boxes
        else:
            zero = stage["boxes_xyxy"].sum() * 0.0
            out["loss_l1"] = out["loss_giou"] = zero
        if pred_masks:
            pm = torch.cat(pred_masks)
            tm = mask_targets(torch.cat(gt_masks), torch.cat(pix_boxes), pm.shape[-1])
            out["loss_mask_bce"] = mask_bce_loss(pm, tm) / num_boxes
            out["loss_mask_dice"] = dice_loss(pm, tm) / num_boxes
        else:
            zero = stage["mask_logits"].sum() * 0.0 if stage.get("mask_logits") is not None else logits.sum() * 0.0
            out["loss_mask_bce"] = out["loss_mask_dice"] = zero
        return out

    def forward(
        self,
        stages1: list[dict],
        targets1: list[dict],
        image_hw: tuple[int, int],
        stages2: list[dict] | None = None,
        targets2: list[dict] | None = None,
        later: Sequence[tuple[list[dict], list[dict]]] = (),
    ) -> tuple[Tensor, dict[str, Tensor], PairAssignment]:
        """-> (total loss, weighted terms summed over stages and averaged over clips (detached), assignment).

        `later`: (stages, targets) of clips 3.. of a longer chain, each carried on from the one before."""
        assignment = self.match(stages1, targets1, image_hw, stages2, targets2, later)
        clips = [(stages1, targets1, assignment.clip1)]
        if assignment.clip2 is not None:
            clips.append((stages2, targets2, [assignment.clip2] * len(stages2)))
            for (stages, targets), assign in zip(later, assignment.later):
                clips.append((stages, targets, [assign] * len(stages)))
        device = stages1[-1]["logits"].device
        terms = {k: torch.zeros((), device=device) for k in LOSS_TERMS}
        for stages, targets, assigns in clips:
            num = self.num_boxes(targets, device)
            for stage, assign in zip(stages, assigns):
                for key, value in self.stage_losses(stage, targets, assign, image_hw, num).items():
                    terms[key] = terms[key] + self.weights[key] * value / len(clips)
        total = sum(terms.values())
        return total, {k: v.detach() for k, v in terms.items()}, assignment
