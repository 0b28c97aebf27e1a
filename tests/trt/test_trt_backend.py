"""The TensorRT backend against ONNX Runtime on a real engine.

Needs TensorRT, cuda-python and a CUDA GPU; skipped otherwise with the reason (nothing
here fakes TensorRT). Without TensorRT, asking for it is one clear line: test_engine_files.py,
import-blocked so it runs on GPU machines too.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from helpers import missing_for

from efficientvis_trt.contract import STATE_OUTPUTS, TrackletState, step
from efficientvis_trt.errors import EvisError

# ---- on a GPU with TensorRT ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trt_bundle(make_tiny_bundle):
    if (why := missing_for("tensorrt")) is not None:
        pytest.skip(why)
    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.trt.engine_build import build_engine

    out = make_tiny_bundle()
    build_engine(Bundle.open(out), "fp32", bundle_path=out)
    return out


@pytest.fixture(scope="module")
def bikes15(tmp_path_factory):
    from helpers import write_video

    from efficientvis_trt.video import read_frames, sample_video

    return write_video(
        tmp_path_factory.mktemp("v") / "bikes15.mp4", read_frames(sample_video("bikes.mp4"), max_frames=15)
    )


@pytest.mark.tensorrt
def test_trt_tracks_match_onnxruntime(trt_bundle, bikes15):
    from efficientvis_trt.runtime.postprocess import decode_rle
    from efficientvis_trt.runtime.predictor import Predictor

    trt_p = Predictor(trt_bundle, backend="trt", top_k=5, mask_threshold=0.0)
    assert trt_p.backend.name == "tensorrt" and trt_p.backend.device == "cuda"
    a = trt_p.predict_video(bikes15)
    b = Predictor(trt_bundle, backend="ort", device="cpu", top_k=5, mask_threshold=0.0).predict_video(bikes15)
    assert a.num_frames == b.num_frames == 15
    assert [(t.query_index, t.label) for t in a.tracks] == [(t.query_index, t.label) for t in b.tracks]
    for ta, tb in zip(a.tracks, b.tracks):
        assert ta.score == pytest.approx(tb.score, abs=1e-3)
        np.testing.assert_allclose(ta.boxes, tb.boxes, atol=1.0)
        inter = sum(int((decode_rle(x) & decode_rle(y)).sum()) for x, y in zip(ta.segmentations, tb.segmentations))
        union = sum(int((decode_rle(x) | decode_rle(y)).sum()) for x, y in zip(ta.segmentations, tb.segmentations))
        assert union == 0 or inter / union > 0.98
    trt_p.close()


def _canvas(bundle_path, n):
    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.video import Letterbox, read_frames, sample_video

    b = Bundle.open(bundle_path)
    frames = read_frames(sample_video("bikes.mp4"), max_frames=n)
    lb = Letterbox(frames[0].shape[:2], b.input_hw)
    return b, np.stack([lb.apply(f) for f in frames])


@pytest.mark.tensorrt
def test_state_stays_on_the_gpu_and_stale_handles_are_refused(trt_bundle):
    from efficientvis_trt.runtime.trt_backend import TensorRTBackend, TrtDeviceTensor
    from efficientvis_trt.trt.engine import find_engine

    bundle, canvas = _canvas(trt_bundle, 10)
    canvas = canvas[None]  # one stream: B = 1
    init = TrackletState.initial(bundle.init_state())
    be = TensorRTBackend(find_engine(bundle, "fp32"), "fp32", bundle_path=trt_bundle)
    keep = functools.partial(be.run, keep_on_device=STATE_OUTPUTS)
    try:
        first, carried = step(keep, canvas[:, :5], init)
        assert isinstance(carried.queries, TrtDeviceTensor) and isinstance(first["logits"], np.ndarray)
        host = carried.map(be.to_host)
        on_gpu, _ = step(keep, canvas[:, 5:], carried)
        with pytest.raises(EvisError, match="stale"):
            step(be.run, canvas[:, 5:], carried)
        via_host, _ = step(be.run, canvas[:, 5:], host)
        for name in ("logits", "boxes", "mask_logits"):
            np.testing.assert_array_equal(on_gpu[name], via_host[name])
    finally:
        be.close()


@pytest.mark.tensorrt
def test_cuda_graph_replay_equals_plain_enqueue(trt_bundle):
    from efficientvis_trt.runtime.trt_backend import TensorRTBackend
    from efficientvis_trt.trt.engine import find_engine

    bundle, canvas = _canvas(trt_bundle, 15)
    canvas = canvas[None]  # one stream: B = 1
    engine = find_engine(bundle, "fp32")
    outs = {}
    for graph in (False, True):
        be = TensorRTBackend(engine, "fp32", bundle_path=trt_bundle, cuda_graph=graph)
        run = functools.partial(be.run, keep_on_device=STATE_OUTPUTS)
        state = TrackletState.initial(bundle.init_state())
        got = []
        for i in range(3):
            o, state = step(run, canvas[:, 5 * i : 5 * i + 5], state)
            got.append({k: v for k, v in o.items() if k not in STATE_OUTPUTS})
        if graph:
            assert be.graph_status in ("on",) or be.graph_status.startswith("capture failed")
        be.close()
        outs[graph] = got
    for plain, replay in zip(outs[False], outs[True]):
        for name in plain:
            np.testing.assert_allclose(plain[name], replay[name], rtol=0, atol=1e-5)


@pytest.mark.tensorrt
def test_auto_picks_tensorrt_and_a_bad_plan_says_rebuild(trt_bundle, tmp_path):
    from efficientvis_trt.runtime.predictor import Predictor
    from efficientvis_trt.runtime.trt_backend import TensorRTBackend

    p = Predictor(trt_bundle)
    assert p.backend.name == "tensorrt" and p.backend_reason.startswith("tensorrt:")
    p.close()
    bad = tmp_path / "bad.plan"
    bad.write_bytes(b"not a plan" * 100)
    with pytest.raises(EvisError, match="rebuild"):
        TensorRTBackend(bad, "fp32")
