"""The TensorRT backend against ONNX Runtime on a real engine.

Needs TensorRT, cuda-python and a CUDA GPU; skipped otherwise with the reason (nothing
here fakes TensorRT). Without TensorRT, asking for it is one clear line: test_engine_files.py,
import-blocked so it runs on GPU machines too.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import missing_for

from efficientvis_trt.errors import EvisError

# ---- on a GPU with TensorRT ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trt_bundle(make_tiny_bundle):
    if (why := missing_for("tensorrt")) is not None:
        pytest.skip(why)
    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.trt.build import build_engine

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
    q, b = (s[None] for s in bundle.init_state())
    be = TensorRTBackend(find_engine(bundle, "fp32"), "fp32", bundle_path=trt_bundle)
    try:
        keep = ("query_out", "boxes_out")
        first = be.run({"frames": canvas[:, :5], "query_in": q, "boxes_in": b}, keep_on_device=keep)
        assert isinstance(first["query_out"], TrtDeviceTensor) and isinstance(first["logits"], np.ndarray)
        host_q, host_b = be.to_host(first["query_out"]), be.to_host(first["boxes_out"])
        on_gpu = be.run(
            {"frames": canvas[:, 5:], "query_in": first["query_out"], "boxes_in": first["boxes_out"]},
            keep_on_device=keep,
        )
        with pytest.raises(EvisError, match="stale"):
            be.run({"frames": canvas[:, 5:], "query_in": first["query_out"], "boxes_in": first["boxes_out"]})
        via_host = be.run({"frames": canvas[:, 5:], "query_in": host_q, "boxes_in": host_b})
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
    q, b = (s[None] for s in bundle.init_state())
    engine = find_engine(bundle, "fp32")
    outs = {}
    for graph in (False, True):
        be = TensorRTBackend(engine, "fp32", bundle_path=trt_bundle, cuda_graph=graph)
        state = {"query_in": q, "boxes_in": b}
        got = []
        for i in range(3):
            o = be.run({"frames": canvas[:, 5 * i : 5 * i + 5], **state}, keep_on_device=("query_out", "boxes_out"))
            state = {"query_in": o.pop("query_out"), "boxes_in": o.pop("boxes_out")}
            got.append(o)
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
