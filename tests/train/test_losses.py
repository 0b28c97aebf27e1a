"""Matching and losses on hand-made cases: each expected value is worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from efficientvis_trt.config import get_config
from efficientvis_trt.model.box_ops import cxcywh_to_xyxy
from efficientvis_trt.train.losses import (
    SetCriterion,
    box_l1_loss,
    dice_loss,
    giou_loss,
    mask_bce_loss,
    mask_targets,
    sigmoid_focal_loss,
)
from efficientvis_trt.train.matcher import TrackletMatcher, focal_class_cost

K = 3


def _logits_for(labels: list[int], n: int, t: int, high: float = 6.0) -> torch.Tensor:
    """[n, t, K] logits: very negative everywhere, `high` at labels[i] for query i (if any)."""
    out = torch.full((n, t, K), -6.0)
    for i, lab in enumerate(labels):
        if lab >= 0:
            out[i, :, lab] = high
    return out


def test_perfect_prediction_is_matched_to_its_gt():
    torch.manual_seed(0)
    t = 3
    gt_boxes = torch.tensor([[[0.3, 0.3, 0.2, 0.2]] * t, [[0.7, 0.6, 0.3, 0.4]] * t])  # [G=2, T, 4]
    labels = torch.tensor([1, 2])
    valid = torch.ones(2, t, dtype=torch.bool)
    boxes = torch.rand(4, t, 4) * 0.3 + torch.tensor([0.35, 0.35, 0.1, 0.1])  # 4 mediocre queries
    boxes[2], boxes[0] = gt_boxes[0], gt_boxes[1]  # ...two perfect ones
    logits = _logits_for([2, -1, 1, -1], 4, t)
    q, g = TrackletMatcher()(logits, boxes, labels, gt_boxes, valid)
    assert g.tolist() == [0, 1]
    assert q.tolist() == [2, 0]


def test_absent_frames_are_ignored_by_the_cost():
    t = 3
    gt = torch.tensor([[[0.5, 0.5, 0.2, 0.2]] * t])
    valid = torch.tensor([[True, True, False]])
    labels = torch.tensor([0])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]] * t, [[0.55, 0.5, 0.2, 0.2]] * t])
    boxes[0, 2] = torch.tensor([0.1, 0.9, 0.05, 0.05])  # query 0 is wrong only where the gt is absent
    logits = _logits_for([0, 0], 2, t)
    matcher = TrackletMatcher()
    cost = matcher.cost_matrix(logits, boxes, labels, gt, valid)
    moved = boxes.clone()
    moved[:, 2] = torch.tensor([0.9, 0.1, 0.5, 0.5])
    assert torch.allclose(cost, matcher.cost_matrix(logits, moved, labels, gt, valid))
    q, g = matcher(logits, boxes, labels, gt, valid)
    assert q.tolist() == [0] and g.tolist() == [0]


def test_gt_without_valid_frames_and_subsets_are_respected():
    t = 2
    gt = torch.tensor([[[0.3, 0.3, 0.2, 0.2]] * t, [[0.7, 0.7, 0.2, 0.2]] * t, [[0.5, 0.5, 0.2, 0.2]] * t])
    valid = torch.tensor([[True, True], [False, False], [True, False]])
    labels = torch.tensor([0, 1, 2])
    boxes = torch.stack([gt[0], gt[1], gt[2]])
    logits = _logits_for([0, 1, 2], 3, t)
    matcher = TrackletMatcher()
    q, g = matcher(logits, boxes, labels, gt, valid)
    assert g.tolist() == [0, 2] and q.tolist() == [0, 2]  # gt 1 is never present: not matched
    free = torch.tensor([False, True, True])
    q, g = matcher(logits, boxes, labels, gt, valid, gt_subset=torch.tensor([True, True, False]), free_queries=free)
    assert g.tolist() == [0] and q.tolist() != [0] and free[q].all()


def test_focal_class_cost_prefers_confident_correct_class():
    cost = focal_class_cost(torch.tensor([4.0, 0.0, -4.0]), 0.25, 2.0)
    assert cost[0] < cost[1] < cost[2]


def test_focal_loss_of_a_known_logit():
    ln2 = math.log(2.0)
    pos = sigmoid_focal_loss(torch.tensor([0.0]), torch.tensor([1.0]), alpha=0.25, gamma=2.0)
    neg = sigmoid_focal_loss(torch.tensor([0.0]), torch.tensor([0.0]), alpha=0.25, gamma=2.0)
    assert pos.item() == pytest.approx(0.25 * 0.25 * ln2, rel=1e-6)
    assert neg.item() == pytest.approx(0.75 * 0.25 * ln2, rel=1e-6)
    # logit 2 with target 1: p = sigmoid(2); loss = alpha (1 - p)^2 * -log p
    p = 1 / (1 + math.exp(-2.0))
    got = sigmoid_focal_loss(torch.tensor([2.0]), torch.tensor([1.0]), 0.25, 2.0).item()
    assert got == pytest.approx(0.25 * (1 - p) ** 2 * -math.log(p), rel=1e-5)


def test_box_losses_of_identical_boxes_are_zero_and_positive_otherwise():
    b = torch.tensor([[0.5, 0.4, 0.2, 0.3], [0.2, 0.7, 0.1, 0.1]])
    assert box_l1_loss(b, b).item() == 0.0
    assert giou_loss(cxcywh_to_xyxy(b), cxcywh_to_xyxy(b)).item() == pytest.approx(0.0, abs=1e-6)
    shifted = b + torch.tensor([0.1, 0.0, 0.0, 0.0])
    assert box_l1_loss(shifted, b).item() == pytest.approx(0.2, abs=1e-6)
    # disjoint boxes: GIoU < 0, so the loss exceeds 1
    a, c = torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[2.0, 0.0, 3.0, 1.0]])
    assert giou_loss(a, c).item() == pytest.approx(1 + 1 / 3, rel=1e-5)


def test_dice_and_bce_of_identical_masks_are_near_zero():
    mask = torch.zeros(2, 28, 28)
    mask[0, 4:20, 6:22] = 1
    mask[1, 10:, :] = 1
    logits = (mask * 2 - 1) * 30.0
    assert dice_loss(logits, mask).item() < 1e-3
    assert mask_bce_loss(logits, mask).item() < 1e-6
    assert dice_loss(-logits, mask).item() > 1.5  # the inverse mask: Dice close to 0 for each


def test_mask_target_cut_by_a_box_equals_the_expected_crop():
    canvas = torch.zeros(1, 64, 96, dtype=torch.uint8)
    canvas[0, 16:32, 8:40] = 1  # rows 16..31, cols 8..39
    exact = mask_targets(canvas, torch.tensor([[8.0, 16.0, 40.0, 32.0]]))
    assert exact.shape == (1, 28, 28) and bool((exact == 1).all())
    # a box twice as tall, starting at the object's top: the upper half of the target is the object
    half = mask_targets(canvas, torch.tensor([[8.0, 16.0, 40.0, 48.0]]))[0]
    assert bool((half[:14] == 1).all()) and bool((half[14:] == 0).all())
    # a box to the right of the object: nothing
    assert mask_targets(canvas, torch.tensor([[50.0, 16.0, 90.0, 32.0]])).sum().item() == 0


def _stage(logits, boxes_norm, hw, mask_logits):
    h, w = hw
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    return {
        "logits": logits[None],
        "boxes_xyxy": (cxcywh_to_xyxy(boxes_norm) * scale)[None],
        "mask_logits": mask_logits[None],
        "query": None,
    }


def test_criterion_perfect_prediction_has_zero_box_loss_and_clip2_keeps_the_assignment():
    cfg = get_config("tiny").train
    hw, t, n = (64, 96), 2, 4
    gt_boxes = torch.tensor([[[0.25, 0.375, 0.25, 0.25]] * t, [[0.75, 0.625, 0.25, 0.25]] * t])
    labels = torch.tensor([0, 2])
    masks = torch.zeros(2, t, *hw, dtype=torch.uint8)
    for g in range(2):
        x1, y1, x2, y2 = (cxcywh_to_xyxy(gt_boxes[g, 0]) * torch.tensor([96, 64, 96, 64])).round().int().tolist()
        masks[g, :, y1:y2, x1:x2] = 1
    clip1 = {"labels": labels, "boxes": gt_boxes, "masks": masks, "valid": torch.ones(2, t, dtype=torch.bool)}
    boxes = torch.rand(n, t, 4) * 0.2 + 0.4
    boxes[1], boxes[3] = gt_boxes[0], gt_boxes[1]
    logits = _logits_for([-1, 0, -1, 2], n, t, high=8.0)
    mask_logits = torch.full((n, t, 28, 28), 30.0)  # the boxes are the masks: all-inside is right
    stages1 = [_stage(logits, boxes, hw, mask_logits)]
    crit = SetCriterion(cfg)
    _, terms, assign = crit(stages1, [clip1], hw)
    assert assign.clip1[0][0][0].tolist() == [1, 3]
    assert terms["loss_l1"].item() == pytest.approx(0.0, abs=1e-5)
    assert terms["loss_giou"].item() == pytest.approx(0.0, abs=1e-5)
    assert terms["loss_mask_dice"].item() < 1e-3

    # Clip 2: gt 0 moves to where query 0 predicts, but query 1 must keep it; gt 1 is absent in clip 1 of
    # a second sample and gets a free query there.
    boxes2 = boxes.clone()
    boxes2[0] = gt_boxes[0]
    boxes2[1] = torch.tensor([0.8, 0.2, 0.1, 0.1])
    stages2 = [_stage(logits, boxes2, hw, mask_logits)]
    _, _, assign = crit(stages1, [clip1], hw, stages2, [clip1])
    q2, g2 = assign.clip2[0]
    assert dict(zip(g2.tolist(), q2.tolist())) == {0: 1, 1: 3}

    clip1_late = dict(clip1, valid=torch.tensor([[True, True], [False, False]]))
    _, _, assign = crit(stages1, [clip1_late], hw, stages2, [clip1])
    q2, g2 = assign.clip2[0]
    pairs = dict(zip(g2.tolist(), q2.tolist()))
    assert pairs[0] == 1 and pairs[1] != 1 and pairs[1] == 3  # the entering gt gets the best free query


def test_a_longer_chain_inherits_the_assignment_clip_to_clip_and_gives_entering_gt_a_free_query():
    cfg = get_config("tiny").train
    hw, t, n = (64, 96), 2, 4
    gt = torch.tensor([[[0.25, 0.375, 0.25, 0.25]] * t, [[0.75, 0.625, 0.25, 0.25]] * t])
    clip = {
        "labels": torch.tensor([0, 2]),
        "boxes": gt,
        "masks": torch.ones(2, t, *hw, dtype=torch.uint8),
        "valid": torch.ones(2, t, dtype=torch.bool),
    }
    only_gt0 = dict(clip, valid=torch.tensor([[True, True], [False, False]]))  # gt 1 enters in clip 3
    logits = _logits_for([0, 0, 2, 2], n, t, high=8.0)

    def stage(on_gt0: int, on_gt1: int) -> dict:
        boxes = torch.full((n, t, 4), 0.1)
        boxes[on_gt0], boxes[on_gt1] = gt[0], gt[1]
        return _stage(logits, boxes, hw, torch.zeros(n, t, 28, 28))

    crit = SetCriterion(cfg)
    # Clip 1 puts gt 0 on query 1; in clips 2 and 3 query 0 sits on gt 0 instead, query 3 on gt 1.
    s1, s2, s3 = [stage(1, 2)], [stage(0, 3)], [stage(0, 3)]
    loss, _, assign = crit(s1, [only_gt0], hw, s2, [only_gt0], later=[(s3, [clip])])
    q3, g3 = assign.later[0][0]
    assert dict(zip(g3.tolist(), q3.tolist())) == {0: 1, 1: 3}  # query 1 keeps gt 0; gt 1 takes a free query
    assert len(assign.later) == 1 and torch.isfinite(loss)
    pair_loss = crit(s1, [only_gt0], hw, s2, [only_gt0])[0]
    assert not torch.isclose(loss, pair_loss)  # the third clip's losses count


def test_criterion_unmatched_queries_are_background_and_loss_decreases_toward_target():
    cfg = get_config("tiny").train
    hw, t, n = (64, 96), 2, 3
    gt_boxes = torch.tensor([[[0.5, 0.5, 0.4, 0.4]] * t])
    clip = {
        "labels": torch.tensor([1]),
        "boxes": gt_boxes,
        "masks": torch.ones(1, t, *hw, dtype=torch.uint8),
        "valid": torch.tensor([[True, False]]),
    }
    boxes = gt_boxes.expand(n, t, 4).clone()
    mask_logits = torch.full((n, t, 28, 28), 30.0)
    crit = SetCriterion(cfg)
    good = _logits_for([1, -1, -1], n, t, high=8.0)
    good[0, 1, 1] = -8.0  # absent frame: background is the right answer
    bad = good.clone()
    bad[0, 1, 1] = 8.0  # class fired where the gt is absent
    bad2 = good.clone()
    bad2[2, 0, 0] = 8.0  # an unmatched query fires
    loss_good = crit([_stage(good, boxes, hw, mask_logits)], [clip], hw)[1]["loss_class"].item()
    loss_bad = crit([_stage(bad, boxes, hw, mask_logits)], [clip], hw)[1]["loss_class"].item()
    loss_bad2 = crit([_stage(bad2, boxes, hw, mask_logits)], [clip], hw)[1]["loss_class"].item()
    assert loss_good < 0.01 < loss_bad and loss_good < 0.01 < loss_bad2


def test_aux_semantic_targets_mark_covered_cells_per_class():
    from efficientvis_trt.train.semantic_aux import SemanticAuxHead, aux_semantic_loss, semantic_targets

    masks = torch.zeros(2, 1, 32, 64, dtype=torch.uint8)
    masks[0, 0, 0:16, 0:16] = 1  # class 2: cells (0..1, 0..1) at stride 8
    masks[1, 0, 16:20, 32:48] = 1  # class 0: half-covered cells (2, 4..5) -> covered >= 0.5
    target = {"masks": masks, "labels": torch.tensor([2, 0])}
    maps = semantic_targets([target], 3)
    assert maps.shape == (1, 3, 4, 8)
    assert maps[0, 2, :2, :2].eq(1).all() and maps[0, 2].sum() == 4
    assert maps[0, 0, 2, 4:6].eq(1).all() and maps[0, 0].sum() == 2 and maps[0, 1].sum() == 0
    head = SemanticAuxHead(8, 3)
    logits = head([torch.zeros(1, 8, 8, 16), torch.randn(1, 8, 4, 8)])
    assert logits.shape == (1, 3, 4, 8)
    good = (maps * 2 - 1) * 10
    assert aux_semantic_loss(good, maps).item() < 1e-3 < aux_semantic_loss(-good, maps).item()


def test_grid_proposals_tile_the_canvas():
    from efficientvis_trt.train.trainer import grid_proposals

    boxes = grid_proposals(10, 224 / 128)  # 2 rows x 5 columns
    assert boxes.shape == (10, 4)
    assert torch.allclose(boxes[:, 2], torch.full((10,), 0.2)) and torch.allclose(boxes[:, 3], torch.full((10,), 0.5))
    area = (boxes[:, 2] * boxes[:, 3]).sum()
    assert area.item() == pytest.approx(1.0)  # exact cover, no overlap
    assert grid_proposals(1, 1.0).tolist() == [[0.5, 0.5, 1.0, 1.0]]


def test_gt_proposal_tubes_follow_the_ground_truth_and_fill_absent_frames():
    from efficientvis_trt.train.trainer import gt_proposal_tubes

    torch.manual_seed(0)
    t = 4
    boxes = torch.zeros(2, t, 4)
    boxes[0] = torch.tensor([0.3, 0.4, 0.2, 0.3])
    boxes[1, 2] = torch.tensor([0.7, 0.6, 0.1, 0.2])
    valid = torch.tensor([[True, True, True, True], [False, False, True, False]])
    targets = [
        {"boxes": boxes, "valid": valid, "labels": torch.tensor([1, 0])},
        {
            "boxes": torch.zeros(0, t, 4),
            "valid": torch.zeros(0, t, dtype=torch.bool),
            "labels": torch.zeros(0, dtype=torch.long),
        },
    ]
    init = torch.tensor([[0.5, 0.5, 1.0, 1.0]]).expand(3, 4)
    tubes, assign = gt_proposal_tubes(targets, init, t, jitter=(0.0, 0.0))
    assert tubes.shape == (2, 3, t, 4)
    assert torch.allclose(tubes[0, 0], boxes[0])
    assert torch.allclose(tubes[0, 1], boxes[1, 2].expand(t, 4))  # absent frames: the nearest present box
    assert torch.equal(tubes[0, 2], init[2].expand(t, 4)) and torch.equal(tubes[1], init[:, None].expand(3, t, 4))
    assert assign[0][0].tolist() == [0, 1] and assign[0][1].tolist() == [0, 1] and assign[1][0].numel() == 0
    noisy, _ = gt_proposal_tubes(targets, init, t)
    shift = (noisy[0, 0, :, :2] - boxes[0, :, :2]).abs() / boxes[0, :, 2:]
    ratio = noisy[0, 0, :, 2:] / boxes[0, :, 2:]
    assert (
        0 < shift.max() <= 0.2 + 1e-6
        and (ratio.log().abs() <= 0.3 + 1e-6).all()
        and not torch.allclose(ratio, torch.ones(t, 2))
    )
