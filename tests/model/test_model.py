"""The PyTorch model: the per-clip contract (docs/contract.md), determinism, batching and the query carry."""

from __future__ import annotations

import pytest
import torch

from efficientvis_trt.config import get_config
from efficientvis_trt.contract import INPUT_NAMES, OUTPUT_NAMES
from efficientvis_trt.errors import EvisError
from efficientvis_trt.model import build_model


@pytest.mark.parametrize("preset", ["tiny", "r18", "r50"])
def test_output_contract_every_preset(preset):
    cfg = get_config(preset)
    if preset != "tiny":  # full-size presets on a small canvas and short clip keep the test fast
        cfg.model.input_size = [64, 96]
        cfg.model.clip_len = 2
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    m = cfg.model
    t, (h, w), n, c, k = m.clip_len, m.input_size, m.num_queries, m.hidden_dim, m.num_classes
    frames = torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8)
    query, boxes = model.initial_state()
    assert query.shape == (n, c) and boxes.shape == (n, 4)
    with torch.no_grad():
        out = model.forward_clip(frames, query, boxes)
    assert tuple(out) == OUTPUT_NAMES
    expected = {
        "logits": (n, t, k),
        "boxes": (n, t, 4),
        "mask_logits": (n, t, 28, 28),
        "query_out": (n, c),
        "boxes_out": (n, 4),
    }
    for name, shape in expected.items():
        assert tuple(out[name].shape) == shape, name
        assert out[name].dtype == torch.float32, name
        assert torch.isfinite(out[name]).all(), name
    assert INPUT_NAMES == ("frames", "query_in", "boxes_in")


def test_eval_mode_is_deterministic(tiny_model, bikes_canvas_frames):
    frames = torch.from_numpy(bikes_canvas_frames[:5])
    q, b = tiny_model.initial_state()
    with torch.no_grad():
        a = tiny_model.forward_clip(frames, q, b)
        c = tiny_model.forward_clip(frames, q, b)
    for name in OUTPUT_NAMES:
        assert torch.equal(a[name], c[name]), name


def test_batch_of_clips_equals_one_at_a_time(tiny_model, bikes_canvas_frames):
    clips = torch.from_numpy(bikes_canvas_frames[:10]).reshape(2, 5, *bikes_canvas_frames.shape[1:])
    q, b = tiny_model.initial_state()
    q2 = torch.stack([q, q + 0.1])
    b2 = torch.stack([b, b * 0.5 + 0.2])
    with torch.no_grad():
        batched = tiny_model.forward_clip(clips, q2, b2)
        singles = [tiny_model.forward_clip(clips[i], q2[i], b2[i]) for i in range(2)]
    for name in OUTPUT_NAMES:
        for i in range(2):
            torch.testing.assert_close(batched[name][i], singles[i][name], atol=1e-4, rtol=1e-4)


def test_preprocessing_is_inside_and_uses_bgr(tiny_model):
    """Swapping B and R must change the result: the graph takes BGR, not RGB."""
    frames = torch.zeros(5, 160, 288, 3, dtype=torch.uint8)
    frames[..., 0] = 200
    q, b = tiny_model.initial_state()
    with torch.no_grad():
        x_bgr = tiny_model.preprocess(frames[None])
        x_rgb = tiny_model.preprocess(frames.flip(-1)[None])
    assert not torch.allclose(x_bgr, x_rgb)
    # B=200 lands in the third (blue) channel of the normalised RGB tensor.
    assert x_bgr[0, 2].mean() > x_bgr[0, 0].mean()


def test_queries_change_across_stages_and_boxes_refine(tiny_model, bikes_canvas_frames):
    frames = torch.from_numpy(bikes_canvas_frames[None, :5])
    q, b = tiny_model.initial_state()
    with torch.no_grad():
        stages = tiny_model.forward_stages(frames, q[None], b[None], all_masks=True)
    assert len(stages) == tiny_model.config.model.num_stages
    assert all(s["mask_logits"] is not None for s in stages)
    # Different frames give different per-frame queries after the first stage (RoI features differ).
    assert not torch.allclose(stages[0]["query"][0, :, 0], stages[0]["query"][0, :, 1])


def test_carried_boxes_never_collapse(tiny_model):
    xyxy = torch.tensor([[[0.5, 0.5, 0.5, 0.5], [-1.0, -1.0, 2.0, 2.0]]])
    out = tiny_model._carried_boxes(xyxy)
    assert (out[..., 2:] >= 1 / 64 - 1e-7).all()
    assert torch.allclose(out[0, 1], torch.tensor([0.5, 0.5, 1.0, 1.0]))


def test_carry_box_scale_grows_the_carried_box_about_its_centre_within_the_canvas(tiny_model):
    xyxy = torch.tensor([[[0.2, 0.2, 0.4, 0.6], [0.0, 0.0, 0.9, 0.5]]])
    out = tiny_model._carried_boxes(xyxy, 1.5)
    torch.testing.assert_close(out[0, 0], torch.tensor([0.3, 0.4, 0.3, 0.6]))
    torch.testing.assert_close(out[0, 1], torch.tensor([0.45, 0.25, 1.0, 0.75]))  # width capped at the canvas
    cfg = get_config("tiny")
    cfg.model.carry_box_scale = 0.1
    with pytest.raises(EvisError, match="carry_box_scale"):
        cfg.validate()


def test_carry_query_last_carries_the_last_frames_query_not_the_mean(tiny_model, monkeypatch):
    b, n, t, c = 1, 3, 4, 8
    query = torch.randn(b, n, t, c)
    last = {"query": query, "logits": None, "mask_logits": None, "boxes_xyxy": torch.rand(b, n, t, 4) * 50}
    boxes_in = torch.rand(b, n, 4)
    out = tiny_model.outputs_from_last_stage(last, boxes_in, (100, 100))
    torch.testing.assert_close(out["query_out"], query.mean(dim=2))  # the default
    monkeypatch.setattr(tiny_model.config.model, "carry_query", "last")
    out = tiny_model.outputs_from_last_stage(last, boxes_in, (100, 100))
    torch.testing.assert_close(out["query_out"], query[:, :, -1])
    cfg = get_config("tiny")
    cfg.model.carry_query = "first"
    with pytest.raises(EvisError, match="carry_query"):
        cfg.validate()


def test_velocity_carry_moves_the_box_to_the_next_clips_centre(tiny_model):
    # A box moving +0.02 in x per frame over 5 frames: the next clip's centre frame is 3 frames on.
    t = torch.arange(5, dtype=torch.float32)
    xyxy = torch.stack([0.2 + 0.02 * t, 0.3 + 0 * t, 0.4 + 0.02 * t, 0.5 + 0 * t], dim=-1)[None, None]
    moved = tiny_model._extrapolated(xyxy)
    torch.testing.assert_close(moved[0, 0], torch.tensor([0.34, 0.3, 0.54, 0.5]))


def test_bad_inputs_give_one_line_errors(tiny_model):
    q, b = tiny_model.initial_state()
    with pytest.raises(EvisError, match="uint8"):
        tiny_model.forward_clip(torch.zeros(5, 160, 288, 3), q, b)
    with pytest.raises(EvisError, match="multiples of 32"):
        tiny_model.forward_clip(torch.zeros(5, 150, 288, 3, dtype=torch.uint8), q, b)
    with pytest.raises(EvisError, match="query_in"):
        tiny_model.forward_clip(torch.zeros(5, 160, 288, 3, dtype=torch.uint8), q[:3], b)


def test_config_rejects_bad_sizes():
    cfg = get_config("tiny")
    cfg.model.input_size = [150, 288]
    with pytest.raises(EvisError, match="multiples of 32"):
        cfg.validate()
    cfg = get_config("tiny")
    cfg.model.clip_len = 1
    with pytest.raises(EvisError, match="at least 2"):
        cfg.validate()


def test_mask_warp_is_identity_on_the_same_box_and_shifts_with_the_box():
    """Mask logits leave a stage in the frame of its output boxes (warp_to_boxes)."""
    from efficientvis_trt.model.efficientvis import warp_to_boxes

    torch.manual_seed(0)
    grid = torch.randn(3, 28, 28)
    src = torch.tensor([[10.0, 20.0, 66.0, 76.0]]).expand(3, 4)  # 2 px per cell
    assert torch.allclose(warp_to_boxes(grid, src, src), grid, atol=1e-4)
    shifted = src + torch.tensor([6.0, 0.0, 6.0, 0.0])  # 3 cells to the right
    out = warp_to_boxes(grid, src, shifted)
    assert torch.allclose(out[..., :25], grid[..., 3:], atol=1e-4)
    assert torch.allclose(out[..., 25:], grid[..., 27:].expand(-1, -1, 3), atol=1e-4)  # border repeats


def test_mask_warp_matches_cutting_the_mask_with_the_new_box():
    """Cut an object by box A, warp to box B inside A: the same as cutting it by B."""
    from efficientvis_trt.model.efficientvis import warp_to_boxes
    from efficientvis_trt.train.losses import mask_targets

    canvas = torch.zeros(1, 96, 128, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(96), torch.arange(128), indexing="ij")
    canvas[0] = ((yy - 50) ** 2 + (xx - 60) ** 2 < 20**2).to(torch.uint8)  # a disc
    a = torch.tensor([[20.0, 12.0, 110.0, 90.0]])
    b = torch.tensor([[38.0, 28.0, 84.0, 74.0]])
    warped = warp_to_boxes(mask_targets(canvas, a), a, b) >= 0.5
    direct = mask_targets(canvas, b) >= 0.5
    iou = (warped & direct).sum() / (warped | direct).sum()
    assert iou > 0.9
    assert not torch.equal(mask_targets(canvas, a), mask_targets(canvas, b))  # the test is not vacuous


def test_box_loss_gradient_reaches_every_stages_box_head_and_the_proposals():
    """Issue #27: the only detaches on the box path are the proposals between stages (Sparse R-CNN);
    a box loss on stage k must reach stage k's regression head, and stage 1's the learned proposals."""
    torch.manual_seed(0)
    cfg = get_config("tiny")
    cfg.model.input_size = [64, 128]
    cfg.model.num_stages = 3
    model = build_model(cfg).train()
    frames = torch.randint(0, 255, (1, 3, 64, 128, 3), dtype=torch.uint8)
    q0, b0 = model.init_query.weight[None], model.init_boxes.weight[None]
    for k in range(3):
        model.zero_grad(set_to_none=True)
        stages = model.forward_stages(frames, q0, b0)
        stages[k]["boxes_xyxy"].sum().backward()
        for i, stage in enumerate(model.stages):
            grad = stage.bbox_delta.bias.grad
            reached = grad is not None and bool(grad.abs().sum() > 0)
            assert reached == (i == k), (k, i)  # later stages see detached boxes, earlier ones no loss
        proposals = model.init_boxes.weight.grad
        assert (proposals is not None and bool(proposals.abs().sum() > 0)) == (k == 0)
