"""Whole-video PyTorch inference: the query carry, padding of the last clip, original-frame coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from efficientvis_trt.contract import TrackletState, split_into_clips, step
from efficientvis_trt.errors import EvisError
from efficientvis_trt.runtime.postprocess import cxcywh_norm_to_xyxy, decode_rle, paste_mask
from efficientvis_trt.runtime.predictor import Predictor
from efficientvis_trt.video import Letterbox, read_frames, sample_video


def _write_video(path, frames, fps=10):
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    return path


@pytest.fixture(scope="module")
def bikes_video_2t(tmp_path_factory):
    frames = read_frames(sample_video("bikes.mp4"), max_frames=10)
    return _write_video(tmp_path_factory.mktemp("v") / "bikes10.mp4", frames)


def test_query_carry_equals_manual_two_clips(tiny_model, bikes_video_2t):
    t = tiny_model.config.model.clip_len
    frames = read_frames(bikes_video_2t)
    assert len(frames) == 2 * t
    lb = Letterbox(frames[0].shape[:2], tuple(tiny_model.config.model.input_size))
    canvas = torch.from_numpy(np.stack([lb.apply(f) for f in frames]))
    init = TrackletState(*tiny_model.initial_state())
    with torch.no_grad():
        first, carried = step(lambda inputs: tiny_model.forward_clip(**inputs), canvas[:t], init)
        second, _ = step(lambda inputs: tiny_model.forward_clip(**inputs), canvas[t:], carried)
        fresh, _ = step(lambda inputs: tiny_model.forward_clip(**inputs), canvas[t:], init)

    predictor = Predictor(tiny_model, top_k=50)
    clips = list(predictor.feed(iter(frames)))
    assert [c.valid for c in clips] == [t, t]
    for name in ("logits", "boxes", "mask_logits"):
        np.testing.assert_allclose(clips[0].outputs[name], first[name].numpy(), atol=1e-5)
        np.testing.assert_allclose(clips[1].outputs[name], second[name].numpy(), atol=1e-5)
    # The carry matters: clip 2 from the initial state is a different answer.
    assert not np.allclose(fresh["logits"].numpy(), second["logits"].numpy(), atol=1e-4)

    # predict_video reaches the same per-frame boxes in original-frame pixels.
    result = predictor.predict_video(bikes_video_2t)
    assert result.num_frames == 2 * t and (result.height, result.width) == (272, 640)
    track = result.tracks[0]
    manual = np.concatenate([first["boxes"][track.query_index].numpy(), second["boxes"][track.query_index].numpy()])
    expected = lb.boxes_to_source(cxcywh_norm_to_xyxy(manual, lb.dst_hw))
    np.testing.assert_allclose(track.boxes, expected, atol=1e-3)
    assert len(track.segmentations) == 2 * t
    assert decode_rle(track.segmentations[0]).shape == (272, 640)


def test_last_clip_is_padded_and_trimmed(tiny_model, tmp_path):
    frames = read_frames(sample_video("bikes.mp4"), max_frames=7)
    clips = list(split_into_clips(frames, 5))
    assert [v for _, v in clips] == [5, 2]
    assert all(c is clips[1][0][1] for c in clips[1][0][1:])  # padding repeats the last real frame
    video = _write_video(tmp_path / "seven.mp4", frames)
    result = Predictor(tiny_model).predict_video(video)
    assert result.num_frames == 7
    assert all(len(t.segmentations) == 7 and t.boxes.shape == (7, 4) for t in result.tracks)
    assert len(result.clip_latencies) == 2


def test_tracks_are_ranked_and_scored_by_mean_probability(tiny_model, bikes_video_2t):
    result = Predictor(tiny_model, top_k=7).predict_video(bikes_video_2t)
    scores = [t.score for t in result.tracks]
    assert len(scores) == 7 and scores == sorted(scores, reverse=True)
    for t in result.tracks:
        assert t.score == pytest.approx(float(t.frame_scores.mean()), rel=1e-5)


def test_score_frames_scores_a_track_by_its_best_frames(tiny_model, bikes_video_2t):
    result = Predictor(tiny_model, top_k=7, score_frames=2).predict_video(bikes_video_2t)
    for t in result.tracks:
        assert t.score == pytest.approx(float(np.sort(t.frame_scores)[-2:].mean()), rel=1e-5)
    with pytest.raises(EvisError, match="score frames must be >= 1"):
        Predictor(tiny_model, score_frames=0)


def test_paste_mask_lands_inside_its_box():
    prob = np.ones((28, 28), np.float32)
    mask = paste_mask(prob, np.array([10.0, 20.0, 50.0, 40.0]), (64, 80))
    ys, xs = np.nonzero(mask)
    assert xs.min() >= 10 and xs.max() <= 50 and ys.min() >= 20 and ys.max() <= 40
    assert abs(int(mask.sum()) - 40 * 20) <= 2 * (40 + 20)
    # A left-half mask fills the left half of the box.
    half = np.zeros((28, 28), np.float32)
    half[:, :14] = 1
    m = paste_mask(half, np.array([0.0, 0.0, 40.0, 40.0]), (40, 40))
    assert m[:, :19].all() and not m[:, 21:].any()


def test_mask_of_a_box_leaving_the_frame_is_not_squeezed_into_it():
    """The mask covers the whole predicted box: its off-frame half must stay off-frame."""
    from efficientvis_trt.runtime.postprocess import TrackAccumulator

    lb = Letterbox((100, 200), (96, 192))  # content 96x192, scale 0.96
    acc = TrackAccumulator(lb, keep_history=True)
    # One query, one frame: a box centred on x=0 (half outside), whose object fills the box's left half.
    box = np.array([[[0.0, 0.5, 100.0 / 192, 0.5]]], np.float32)  # normalised cxcywh on the canvas
    logits = np.full((1, 1, 28, 28), -20.0, np.float32)
    logits[..., :14] = 20.0
    acc.add_clip({"logits": np.zeros((1, 1, 1), np.float32), "boxes": box, "mask_logits": logits}, valid=1)
    track = acc.finish(top_k=1)[0]
    assert decode_rle(track.segmentations[0]).sum() == 0
    assert track.boxes[0, 0] == 0.0  # the reported box is clipped to the frame


def test_letterbox_maps_boxes_with_the_drawn_content_size():
    lb = Letterbox((144, 176), (160, 288))
    (ch, cw) = lb.content_hw
    corner = lb.boxes_to_source(np.array([[0.0, 0.0, cw, ch]], np.float32))
    np.testing.assert_allclose(corner, [[0, 0, 176, 144]], atol=1e-3)
