"""The fast post-processing equals the plain reference byte for byte, on real model outputs and edge cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from efficientvis_trt.contract import TrackletState, step
from efficientvis_trt.runtime import postprocess_reference as reference
from efficientvis_trt.runtime.postprocess import TrackAccumulator, encode_masks, encode_rle_roi
from efficientvis_trt.video import Letterbox


def _clip_outputs(model, canvas: np.ndarray, clip_len: int) -> list[dict[str, np.ndarray]]:
    """Per-clip logits/boxes/mask_logits of `model` over letterboxed frames, the state carried."""
    state = TrackletState(*model.initial_state())
    outs = []
    with torch.inference_mode():
        for start in range(0, len(canvas) - clip_len + 1, clip_len):
            clip = torch.from_numpy(canvas[start : start + clip_len])
            out, state = step(lambda inputs: model.forward_clip(**inputs), clip, state)
            outs.append({k: out[k].numpy() for k in ("logits", "boxes", "mask_logits")})
    return outs


@pytest.fixture(scope="module")
def recorded(tiny_model, bikes_canvas_frames):
    """Real outputs on bikes.mp4: the shipped model (small boxes, few masks) and a random init (large boxes)."""
    from efficientvis_trt.config import get_config
    from efficientvis_trt.model.checkpoint import load_checkpoint, shipped_tiny_checkpoint

    clip_len = get_config("tiny").model.clip_len
    runs = {"random": _clip_outputs(tiny_model, bikes_canvas_frames, clip_len)}
    shipped = shipped_tiny_checkpoint()
    if shipped is not None:
        model, _ = load_checkpoint(shipped)
        runs["shipped"] = _clip_outputs(model.eval(), bikes_canvas_frames, model.config.model.clip_len)
    # Half of every random-init mask above 0.5: frame-sized boxes with real pixel work (the stress case).
    median = float(np.median(np.concatenate([o["mask_logits"].ravel() for o in runs["random"]])))
    runs["stress"] = [dict(o, mask_logits=o["mask_logits"] - median) for o in runs["random"]]
    return runs


@pytest.mark.parametrize(("frame_hw", "threshold"), [((272, 640), 0.5), ((720, 1280), 0.5), ((101, 333), 0.3)])
def test_accumulator_rles_equal_the_reference(recorded, frame_hw, threshold):
    assert "shipped" in recorded, "the package ships its tiny model; without it this test compares less"
    lb = Letterbox(frame_hw, (128, 224))
    pasted = 0
    for name, clips in recorded.items():
        acc = TrackAccumulator(lb, mask_threshold=threshold)
        for i, outputs in enumerate(clips):
            valid = 3 if i == len(clips) - 1 else outputs["boxes"].shape[1]  # the last clip as if padded
            post = acc.add_clip(outputs, valid)
            want = reference.clip_rles(outputs, valid, lb, threshold)
            assert post.rles == want, (name, frame_hw, threshold, i)
            empty = reference.encode_rle_roi(np.zeros((0, 0), np.uint8), 0, 0, frame_hw)["counts"]
            pasted += sum(r["counts"] != empty for row in want for r in row)
        tracks = acc.finish(top_k=5)
        # What results.json holds is plain JSON of these: byte-identical when the RLEs are.
        assert json.dumps([t.to_ytvis(1, 1) for t in tracks])
    assert pasted > 0  # some masks are non-empty, so the comparison covers real pasting


def test_masks_just_below_and_above_the_threshold():
    """The skip of masks that cannot reach the threshold never drops a pixel the reference keeps."""
    hw = (64, 96)
    rng = np.random.default_rng(1)
    n, t = 6, 4
    probs = rng.random((n, t, 28, 28)).astype(np.float32) * 0.4
    for i, peak in enumerate([0.5, np.nextafter(np.float32(0.5), 0), 0.49999, 0.50001, 1.0, 0.0]):
        probs[i, :, 14, 14] = peak
    boxes = np.tile(np.array([10.0, 5.0, 50.0, 40.0], np.float32), (n, t, 1))
    boxes[:, 1] = [-30.0, -30.0, 120.0, 90.0]  # one box larger than the frame on every side
    got = encode_masks(probs, boxes, hw, 0.5)
    for i in range(n):
        for j in range(t):
            want = reference.encode_rle_roi(*reference.paste_mask_roi(probs[i, j], boxes[i, j], hw, 0.5), hw)
            assert got[i][j] == want, (i, j)


def test_roi_rle_equals_the_reference_on_random_rois():
    rng = np.random.default_rng(2)
    for trial in range(300):
        height, width = (int(v) for v in rng.integers(1, 40, 2))
        h, w = int(rng.integers(0, height + 1)), int(rng.integers(0, width + 1))
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        roi = (rng.random((h, w)) < [0.0, 0.3, 0.9, 1.0][trial % 4]).astype(np.uint8)
        got = encode_rle_roi(roi, top, left, (height, width))
        assert got == reference.encode_rle_roi(roi, top, left, (height, width)), trial


def test_results_json_is_byte_identical_to_the_reference_path(monkeypatch, tmp_path):
    """Whole videos through the Predictor: the results JSON with the fast post-processing equals the reference's."""
    import cv2

    from efficientvis_trt.model.checkpoint import shipped_tiny_checkpoint
    from efficientvis_trt.runtime import postprocess
    from efficientvis_trt.runtime.predictor import Predictor
    from efficientvis_trt.video import read_frames, sample_video

    assert shipped_tiny_checkpoint() is not None, "the package ships its tiny model"
    frames = [cv2.resize(f, (1280, 720)) for f in read_frames(sample_video("bikes.mp4"), max_frames=8)]
    texts = []
    with Predictor(shipped_tiny_checkpoint(), backend="torch", device="cpu", mask_threshold=0.3) as predictor:
        for encode in (postprocess.encode_masks, reference.encode_masks):
            monkeypatch.setattr(postprocess, "encode_masks", encode)
            result = predictor.stream(iter(frames)).result()
            texts.append(json.dumps(result.to_ytvis(1), separators=(",", ":")))
    assert texts[0] == texts[1]
    assert any(postprocess.rle_area(s) > 0 for t in result.tracks for s in t.segmentations)  # real masks compared
