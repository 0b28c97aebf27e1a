"""Runtime building blocks without a model: RLE, the threaded clip loop, frame sources, overlays, lazy imports."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from helpers import write_video

from efficientvis_trt.errors import EvisError
from efficientvis_trt.runtime.pipeline import ThreadedClipLoop
from efficientvis_trt.runtime.postprocess import (
    Track,
    TrackAccumulator,
    decode_rle,
    encode_rle,
    encode_rle_roi,
    paste_mask,
    paste_mask_roi,
)
from efficientvis_trt.runtime.sources import is_live_spec, open_source
from efficientvis_trt.video import Letterbox, read_frames, sample_video

# ---- RLE straight from the box region ---------------------------------------------------


def test_roi_rle_equals_full_frame_rle():
    rng = np.random.default_rng(0)
    cases = 0
    for trial in range(400):
        h, w = (int(v) for v in rng.integers(1, 48, 2))
        prob = rng.random((28, 28)).astype(np.float32)
        if trial % 3 == 0:
            prob[:] = 1.0  # full box: runs cross column edges when the box spans the frame height
        x1, x2 = sorted(rng.uniform(-8, w + 8, 2))
        y1, y2 = sorted(rng.uniform(-8, h + 8, 2))
        box = np.array([x1, y1, x2, y2])
        full = paste_mask(prob, box, (h, w))
        roi_rle = encode_rle_roi(*paste_mask_roi(prob, box, (h, w)), (h, w))
        assert roi_rle == encode_rle(full), (trial, h, w, box)
        assert np.array_equal(decode_rle(roi_rle), full)
        cases += int(full.any())
    assert cases > 100  # most cases have a non-empty mask


def test_roi_rle_of_a_full_frame_mask():
    roi = np.ones((5, 7), np.uint8)
    rle = encode_rle_roi(roi, 0, 0, (5, 7))
    assert decode_rle(rle).all() and rle == encode_rle(np.ones((5, 7), np.uint8))


def test_accumulator_scores_boxes_and_masks_in_source_pixels():
    lb = Letterbox((100, 300), (64, 96))  # scale 0.32: canvas content 32x96, padded below
    acc = TrackAccumulator(lb, mask_threshold=0.5, class_names=["a", "b"])
    n, t = 2, 3
    logits = np.full((n, t, 2), -4.0, np.float32)
    logits[1, :, 0] = 2.0  # query 1 is class "a" with p = 0.88
    boxes = np.tile(np.array([0.5, 0.25, 0.5, 0.25], np.float32), (n, t, 1))  # canvas centre-top quarter
    masks = np.full((n, t, 28, 28), 10.0, np.float32)
    acc.add_clip({"logits": logits, "boxes": boxes, "mask_logits": masks}, valid=2)  # 1 padded frame dropped
    tracks = acc.finish(top_k=1)
    assert acc.num_frames == 2 and len(tracks) == 1
    track = tracks[0]
    assert (track.query_index, track.label, track.class_name) == (1, 0, "a")
    assert track.score == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-5)
    # canvas box x 24..72, y 8..24 -> source pixels / 0.32 = x 75..225, y 25..75
    np.testing.assert_allclose(track.boxes[0], [75, 25, 225, 75], atol=1e-3)
    mask = decode_rle(track.segmentations[0])
    ys, xs = np.nonzero(mask)
    assert mask.shape == (100, 300)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (75, 224, 25, 74)


def test_live_accumulator_keeps_no_history():
    lb = Letterbox((64, 64), (64, 64))
    acc = TrackAccumulator(lb, keep_history=False)
    out = {
        "logits": np.zeros((2, 4, 3), np.float32),
        "boxes": np.full((2, 4, 4), 0.5, np.float32),
        "mask_logits": np.zeros((2, 4, 28, 28), np.float32),
    }
    for _ in range(5):
        post = acc.add_clip(out, 4)
    assert acc._probs == [] and acc._counts == [] and acc.num_frames == 20
    assert len(acc.clip_instances(post, top_k=3)) == 4 and len(acc.ranked(top_k=3)) == 3
    with pytest.raises(RuntimeError):
        acc.finish()


@pytest.mark.parametrize("keep_history", [True, False])
def test_video_score_over_the_top_frames(keep_history):
    lb = Letterbox((64, 64), (64, 64))
    rng = np.random.default_rng(3)
    top, mean = TrackAccumulator(lb, keep_history=keep_history, score_frames=4), TrackAccumulator(lb)
    clips = [rng.normal(size=(3, 5, 2)).astype(np.float32) for _ in range(3)]
    for logits in clips:
        out = {
            "logits": logits,
            "boxes": np.full((3, 5, 4), 0.5, np.float32),
            "mask_logits": np.zeros((3, 5, 28, 28), np.float32),
        }
        top.add_clip(out, 5)
        mean.add_clip(out, 5)
    probs = 1 / (1 + np.exp(-np.concatenate(clips, axis=1)))  # [N, 15, K]
    np.testing.assert_allclose(top.running_scores(), np.sort(probs, axis=1)[:, -4:].mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(mean.running_scores(), probs.mean(axis=1), rtol=1e-5)
    with pytest.raises(ValueError):
        TrackAccumulator(lb, score_frames=0)


def test_track_ytvis_record():
    seg = encode_rle(np.eye(4, dtype=np.uint8))
    track = Track(3, 1, 0.5, np.zeros((1, 4)), np.array([0.5]), [seg], "b")
    assert track.to_ytvis(7, 2) == {"video_id": 7, "category_id": 2, "score": 0.5, "segmentations": [seg]}
    assert track.visible_frames() == 1


# ---- the threaded loop ----------------------------------------------------------------


def test_loop_keeps_order_and_runs_stages_in_their_threads():
    seen: dict[str, set] = {"produce": set(), "infer": set(), "post": set()}

    def produce():
        for i in range(20):
            seen["produce"].add(threading.current_thread().name)
            yield i

    def infer(x):
        seen["infer"].add(threading.current_thread().name)
        return x * 10

    def post(x):
        seen["post"].add(threading.current_thread().name)
        time.sleep(0.001)
        return x + 1

    out = list(ThreadedClipLoop(produce, infer, post, queue_size=2, name="t"))
    assert out == [i * 10 + 1 for i in range(20)]
    assert seen["produce"] == {"t-decode"} and seen["post"] == {"t-post"}
    assert seen["infer"] == {threading.current_thread().name}


@pytest.mark.parametrize("stage", ["produce", "infer", "post"])
def test_loop_reraises_the_original_error_and_stops_threads(stage):
    err = EvisError(f"boom in {stage}")
    before = {t.name for t in threading.enumerate()}

    def produce():
        for i in range(100):
            if stage == "produce" and i == 3:
                raise err
            yield i

    def infer(x):
        if stage == "infer" and x == 3:
            raise err
        return x

    def post(x):
        if stage == "post" and x == 3:
            raise err
        return x

    got = []
    with pytest.raises(EvisError) as info:
        for r in ThreadedClipLoop(produce, infer, post, queue_size=2, name=f"err-{stage}"):
            got.append(r)
    assert info.value is err and str(info.value) == f"boom in {stage}"
    assert got == list(range(len(got))) and len(got) <= 3
    time.sleep(0.2)
    assert not [t for t in threading.enumerate() if t.name.startswith(f"err-{stage}") and t.name not in before]


def test_abandoning_the_loop_releases_the_producer():
    closed = threading.Event()

    def produce():
        try:
            yield from range(10_000)
        finally:
            closed.set()

    loop = iter(ThreadedClipLoop(produce, lambda x: x, lambda x: x, queue_size=1, name="abandon"))
    assert next(loop) == 0
    loop.close()
    assert closed.wait(3.0)
    time.sleep(0.1)
    assert not [t for t in threading.enumerate() if t.name.startswith("abandon")]


def test_results_stream_before_the_input_ends():
    pulled = []

    def produce():
        for i in range(50):
            pulled.append(i)
            yield i

    loop = iter(ThreadedClipLoop(produce, lambda x: x, lambda x: x, queue_size=2))
    assert next(loop) == 0
    assert len(pulled) < 50  # bounded queues: the producer cannot run ahead of the consumer
    assert list(loop) == list(range(1, 50))


# ---- sources -----------------------------------------------------------------------------


def test_live_specs():
    assert is_live_spec("0") and is_live_spec(1) and is_live_spec("rtsp://cam/stream") and is_live_spec("HTTP://x")
    assert not is_live_spec("video.mp4") and not is_live_spec("/data/0/clip.mp4")


def test_source_errors_are_one_line(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    for name, words in (("missing.mp4", "not found"), ("empty.mp4", "empty"), ("junk.mp4", "cannot decode")):
        with pytest.raises(EvisError) as info:
            open_source(tmp_path / name)
        assert words in str(info.value) and "\n" not in str(info.value)


def test_truncated_video_is_an_error(tmp_path):
    frames = read_frames(sample_video("bikes.mp4"), max_frames=20)
    path = write_video(tmp_path / "full.avi", frames, fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert len(list(open_source(path).frames())) == 20
    src = open_source(cut)  # the header still opens ...
    with pytest.raises(EvisError, match="truncated"):
        list(src.frames())  # ... but the data ends early
    assert len(list(src.frames(max_frames=5))) == 5  # asking for fewer frames than remain is fine


def test_file_through_the_live_path(tmp_path):
    frames = read_frames(sample_video("bikes.mp4"), max_frames=4)
    path = write_video(tmp_path / "cam.mp4", frames)
    src = open_source(path, live=True)
    assert src.live and src.expected_frames is None
    got = list(src.frames())
    assert len(got) == 4 and got[0].shape == (272, 640, 3)
    with pytest.raises(EvisError, match="cannot open"):
        list(open_source("rtsp://127.0.0.1:1/none", live=True).frames())


# ---- overlay writer --------------------------------------------------------------------


def test_overlay_writer_is_atomic(tmp_path):
    from efficientvis_trt.runtime.overlay import OverlayWriter, draw_instances

    frame = np.zeros((90, 160, 3), np.uint8)
    target = tmp_path / "v.overlay.mp4"
    with pytest.raises(KeyError), OverlayWriter(target, 10) as w:
        w.write(frame)
        raise KeyError("fail mid-video")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp file
    mask = np.zeros((90, 160), np.uint8)
    mask[10:40, 20:80] = 1
    drawn = draw_instances(frame, [(0, mask, (20, 10, 80, 40), "person 0.90")])
    assert drawn[20:30, 30:70].any() and not frame.any()
    with OverlayWriter(target, 10) as w:
        for _ in range(3):
            w.write(drawn)
    assert [p.name for p in tmp_path.iterdir()] == ["v.overlay.mp4"]
    assert len(read_frames(target)) == 3


def test_runtime_import_is_light():
    code = (
        "import sys, efficientvis_trt.runtime as r, efficientvis_trt.runtime.trt_backend, "
        "efficientvis_trt.commands.infer; r.Predictor; "
        "print(','.join(m for m in ('torch', 'tensorrt', 'onnxruntime', 'cuda') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_loop_keeps_opencv_on_one_thread_and_restores_it():
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        seen = list(ThreadedClipLoop(lambda: range(3), lambda x: x, lambda x: cv2.getNumThreads()))
        assert seen == [1, 1, 1]
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)


def test_mask_blend_matches_the_plain_formula_inside_the_mask_only():
    from efficientvis_trt.runtime.overlay import draw_instances, track_colour

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    mask = np.zeros((90, 160), bool)
    mask[20:60, 30:100] = rng.random((40, 70)) < 0.6
    drawn = draw_instances(frame, [(3, mask, (0, 0, 0, 0), "")])
    plain = (frame * 0.5 + np.array(track_colour(3), np.float32) * 0.5).astype(np.int16)
    diff = np.abs(drawn.astype(np.int16) - np.where(mask[..., None], plain, frame))
    diff[:3, :3] = 0  # the degenerate box at the corner
    assert diff.max() <= 1 and (drawn[mask] != frame[mask]).any()
    assert (
        draw_instances(frame, [(1, np.zeros((90, 160), np.uint8), (0, 0, 0, 0), "")])[10:].tolist()
        == frame[10:].tolist()
    )


@pytest.mark.parametrize("src_hw", [(720, 1280), (272, 640), (300, 100), (50, 60), (1000, 300)])
def test_letterbox_into_a_clip_is_the_padded_resize(src_hw):
    import cv2

    from efficientvis_trt.video import PAD_VALUE

    frame = np.random.default_rng(0).integers(0, 256, (*src_hw, 3), dtype=np.uint8)
    lb = Letterbox(src_hw, (128, 224))
    h, w = lb.content_hw
    want = np.full((128, 224, 3), PAD_VALUE, np.uint8)
    want[:h, :w] = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if lb.scale < 1 else cv2.INTER_LINEAR)
    clip = np.zeros((2, 128, 224, 3), np.uint8)
    lb.apply(frame, out=clip[1])
    assert np.array_equal(lb.apply(frame), want) and np.array_equal(clip[1], want) and not clip[0].any()


def test_put_until_stopped_gives_up_on_a_full_queue_once_stopped():
    import queue
    import threading

    from efficientvis_trt.runtime.pipeline import put_until_stopped

    q, stop = queue.Queue(maxsize=1), threading.Event()
    assert put_until_stopped(q, 1, stop)
    threading.Timer(0.1, stop.set).start()
    assert not put_until_stopped(q, 2, stop)  # full: it waits, then the stop releases it
    assert q.get_nowait() == 1 and q.empty()
