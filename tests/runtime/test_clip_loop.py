"""The clip loop end to end on a tiny exported bundle: ORT vs torch, frame geometry, errors, `evis infer`.

One bundle per module (tiny preset, seeded random init, export verification off: the
export tests verify graphs; here the torch backend runs the bundle's own source weights).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import write_video

from efficientvis_trt.cli import main as evis_main
from efficientvis_trt.contract import STATE_OUTPUTS, TrackletState, step
from efficientvis_trt.errors import EvisError
from efficientvis_trt.runtime.postprocess import cxcywh_norm_to_xyxy, decode_rle, sigmoid
from efficientvis_trt.runtime.predictor import Predictor
from efficientvis_trt.video import Letterbox, read_frames, sample_video


@pytest.fixture(scope="module")
def bundle(make_tiny_bundle):
    return make_tiny_bundle()


@pytest.fixture(scope="module")
def ort(bundle):
    return Predictor(bundle, backend="ort", top_k=5)


@pytest.fixture(scope="module")
def bikes15(tmp_path_factory):
    frames = read_frames(sample_video("bikes.mp4"), max_frames=15)
    return write_video(tmp_path_factory.mktemp("v") / "bikes15.mp4", frames)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Small synthetic videos with awkward geometry (random texture so the model sees 'content')."""
    import cv2

    d = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)

    def frames(h, w, n):
        base = cv2.resize(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
        return [np.roll(base, 3 * i, axis=1) for i in range(n)]

    out = {
        "odd_333x517": write_video(d / "odd.avi", frames(333, 517, 7), opencv_mjpeg=True),  # 7 = T + 2: padded clip
        "portrait_517x333": write_video(d / "portrait.avi", frames(517, 333, 6), opencv_mjpeg=True),
        "4k": write_video(d / "uhd.mp4", frames(2160, 3840, 3)),
    }
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames(241, 321, 5)]
    out["gray_video"] = write_video(d / "gray.avi", gray, is_color=False, opencv_mjpeg=True)
    folder = d / "gray_frames"
    folder.mkdir()
    for i, g in enumerate(gray):
        cv2.imwrite(str(folder / f"{i:05d}.png"), g)  # single-channel PNGs: decoded as 2-D arrays
    out["gray_folder"] = folder
    return out


def _video_iou(a: list[dict], b: list[dict]) -> float:
    inter = union = 0
    for sa, sb in zip(a, b, strict=True):
        ma, mb = decode_rle(sa).astype(bool), decode_rle(sb).astype(bool)
        inter += int((ma & mb).sum())
        union += int((ma | mb).sum())
    return inter / union if union else 1.0


# ---- backends -----------------------------------------------------------------------------


def test_ort_tracks_match_torch_on_a_real_video(bundle, ort, bikes15):
    # A random-init model's mask probabilities sit in a narrow band; threshold at their median
    # so masks are half-filled and IoU tests their shape, not just the box.
    first = next(iter(ort.feed(read_frames(bikes15, max_frames=5))))
    thr = float(np.median(sigmoid(first.outputs["mask_logits"])))
    results = {}
    for name in ("ort", "torch"):
        p = Predictor(bundle, backend=name, top_k=5, mask_threshold=thr)
        results[name] = p.predict_video(bikes15)
        assert p.backend.name == {"ort": "onnxruntime", "torch": "torch"}[name]
    a, b = results["ort"], results["torch"]
    assert a.num_frames == b.num_frames == 15 and len(a.tracks) == len(b.tracks) == 5
    for ta, tb in zip(a.tracks, b.tracks):
        assert (ta.query_index, ta.label) == (tb.query_index, tb.label)
        assert ta.score == pytest.approx(tb.score, abs=1e-4)
        np.testing.assert_allclose(ta.boxes, tb.boxes, atol=0.5)
        visible = sum(decode_rle(s).sum() for s in tb.segmentations)
        assert visible > 0.2 * sum((bx[2] - bx[0]) * (bx[3] - bx[1]) for bx in tb.boxes)  # masks are not empty
        assert _video_iou(ta.segmentations, tb.segmentations) > 0.98


def test_letterboxing_on_the_device_keeps_every_result(bundle, bikes15, videos):
    """`letterbox_on_device` (torch tensors; on CUDA the default of the torch backend) gives the host
    loop's outputs exactly; here on CPU tensors, which run the same arithmetic."""
    import torch

    host = Predictor(bundle, backend="torch", device="cpu", top_k=5, letterbox_on_device=False)
    device = Predictor(bundle, backend="torch", device="cpu", top_k=5, letterbox_on_device=True)
    assert host.letterbox_device is None and device.letterbox_device == "cpu"
    for video in (bikes15, videos["odd_333x517"]):
        a, b = host.predict_video(video), device.predict_video(video)
        assert a.num_frames == b.num_frames and len(a.tracks) == len(b.tracks) == 5
        for ta, tb in zip(a.tracks, b.tracks):
            assert (ta.query_index, ta.label, ta.score) == (tb.query_index, tb.label, tb.score)
            assert np.array_equal(ta.boxes, tb.boxes) and ta.segmentations == tb.segmentations
    run = device.stream(bikes15, max_frames=5)
    job = next(iter(run._produce(device.letterbox_device)))
    assert isinstance(job.canvas, torch.Tensor) and tuple(job.canvas.shape) == (5, *device.input_hw, 3)
    with pytest.raises(EvisError, match="needs the torch backend"):
        Predictor(bundle, backend="ort", letterbox_on_device=True)


def test_state_can_stay_on_the_backend_device(ort, bikes15):
    import onnxruntime as onnxrt

    lb = Letterbox((272, 640), ort.input_hw)
    frames = np.stack([lb.apply(f) for f in read_frames(bikes15, max_frames=10)])[None]  # one stream: B = 1
    init = TrackletState.initial(ort.init_state)
    be = ort.backend
    first, carried = step(lambda inputs: be.run(inputs, keep_on_device=STATE_OUTPUTS), frames[:, :5], init)
    assert isinstance(carried.queries, onnxrt.OrtValue) and isinstance(first["logits"], np.ndarray)
    on_device, _ = step(be.run, frames[:, 5:], carried)
    via_host, _ = step(be.run, frames[:, 5:], carried.map(be.to_host))
    fresh, _ = step(be.run, frames[:, 5:], init)
    for name in ("logits", "boxes", "mask_logits", "query_out"):
        np.testing.assert_array_equal(on_device[name], via_host[name])
    assert not np.allclose(on_device["logits"], fresh["logits"], atol=1e-4)  # the carried state matters
    # The predictor carries exactly that state between clips.
    ort.reset()
    ort.run_clip(frames[0, :5])
    assert isinstance(ort.state.queries, onnxrt.OrtValue)
    np.testing.assert_array_equal(ort.state_to_host().queries, be.to_host(carried.queries)[0])


def test_precision_a_backend_cannot_run_is_an_error(bundle):
    with pytest.raises(EvisError, match="model.fp16.onnx is missing"):
        Predictor(bundle, backend="ort", precision="fp16")
    with pytest.raises(EvisError, match="fp16 PyTorch needs a CUDA device"):
        Predictor(bundle, backend="torch", precision="fp16", device="cpu")
    with pytest.raises(EvisError, match="int8"):
        Predictor(bundle, backend="torch", precision="int8")


def _cpu_runtime() -> str:
    """What `auto` runs on a CPU here (OpenVINO's side of the choice: tests/runtime/test_openvino_backend.py)."""
    from efficientvis_trt import capabilities

    return "openvino" if capabilities.openvino() else "onnxruntime"


def test_auto_says_why(bundle):
    cpu_runtime = _cpu_runtime()
    p = Predictor(bundle)
    assert p.backend.name == cpu_runtime
    assert "TensorRT not used" in p.backend_reason or "--device cpu" in p.backend_reason
    assert Predictor(bundle, device="cpu").backend_reason.startswith(f"{cpu_runtime}: --device cpu")


# ---- geometry: results in original-frame pixels --------------------------------------------


@pytest.mark.parametrize(
    "name, hw, n",
    [
        ("odd_333x517", (333, 517), 7),
        ("portrait_517x333", (517, 333), 6),
        ("gray_video", (241, 321), 5),
        ("gray_folder", (241, 321), 5),
        ("4k", (2160, 3840), 3),
    ],
)
def test_boxes_and_masks_land_in_original_frame_coordinates(bundle, videos, name, hw, n):
    # Threshold 0: every pixel the box covers is "mask", so mask extent == box pixel range exactly.
    p = Predictor(bundle, backend="ort", top_k=3, mask_threshold=0.0)
    run = p.stream(videos[name])
    clips = list(run)
    result = run.result()
    h, w = hw
    t = p.clip_len
    assert (result.height, result.width, result.num_frames) == (h, w, n)
    assert [c.valid for c in clips] == [min(t, n - i) for i in range(0, n, t)]
    assert all(c.outputs["boxes"].shape[1] == c.valid for c in clips)  # padded frames dropped
    lb = Letterbox((h, w), p.input_hw)
    raw = np.concatenate([c.outputs["boxes"] for c in clips], axis=1)  # [N, n, 4] normalised canvas cxcywh
    content_h, content_w = lb.content_hw  # the drawn content, rounded to whole pixels, maps back per axis
    for track in result.tracks:
        assert track.boxes.shape == (n, 4) and len(track.segmentations) == n
        expected = cxcywh_norm_to_xyxy(raw[track.query_index], lb.dst_hw)
        expected[:, 0::2] *= w / content_w
        expected[:, 1::2] *= h / content_h
        expected[:, 0::2] = expected[:, 0::2].clip(0, w)
        expected[:, 1::2] = expected[:, 1::2].clip(0, h)
        np.testing.assert_allclose(track.boxes, expected, rtol=1e-4, atol=1e-2)
        for f in range(n):
            mask = decode_rle(track.segmentations[f])
            assert mask.shape == (h, w)
            x1, y1, x2, y2 = track.boxes[f]
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min()) == (math.floor(x1), math.floor(y1))
            assert (xs.max(), ys.max()) == (math.ceil(x2) - 1, math.ceil(y2) - 1)


# ---- errors ------------------------------------------------------------------------------


def test_broken_videos_raise_one_clear_error(ort, tmp_path, bikes15):
    import cv2

    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(1).integers(0, 255, 9000, dtype=np.uint8).tobytes())
    w = cv2.VideoWriter(str(tmp_path / "zero.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    w.release()
    full = write_video(tmp_path / "full.avi", read_frames(bikes15), fourcc="MJPG")
    (tmp_path / "cut.avi").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    cases = {
        "missing.mp4": "not found",
        "junk.mp4": "cannot decode",
        "zero.avi": "no decodable frames",
        "cut.avi": "truncated",
    }
    for name, words in cases.items():
        with pytest.raises(EvisError) as info:
            ort.predict_video(tmp_path / name)
        assert words in str(info.value) and "\n" not in str(info.value), name


def test_worker_errors_surface_unchanged(ort, bikes15, monkeypatch):
    err = EvisError("camera unplugged")

    def frames():
        yield from read_frames(bikes15, max_frames=6)
        raise err

    got = []
    with pytest.raises(EvisError) as info:
        for clip in ort.feed(frames()):
            got.append(clip)
    assert info.value is err and len(got) <= 1

    from efficientvis_trt.runtime import postprocess

    def broken(self, outputs, valid):
        raise EvisError("post-processing broke")

    monkeypatch.setattr(postprocess.TrackAccumulator, "add_clip", broken)
    with pytest.raises(EvisError, match="^post-processing broke$"):
        ort.predict_video(bikes15)


def test_feed_streams_clip_results(ort, bikes15):
    frames = read_frames(bikes15, max_frames=12)
    clips = list(ort.feed(iter(frames)))
    assert [(c.index, c.first_frame, c.valid) for c in clips] == [(0, 0, 5), (1, 5, 5), (2, 10, 2)]
    last = clips[-1]
    assert len(last.instances) == 2 and len(last.instances[0]) == ort.top_k
    inst = last.instances[0][0]
    assert inst.class_name in ort.class_names and decode_rle(inst.segmentation).shape == (272, 640)
    assert last.latency > 0 and last.end_to_end >= last.latency


# ---- evis infer ------------------------------------------------------------------------------


def _infer(capsys, *args) -> tuple[int, str, str]:
    code = evis_main(["infer", *map(str, args), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_results_videos_and_overlays(bundle, bikes15, videos, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, err = _infer(
        capsys,
        bundle,
        bikes15,
        videos["odd_333x517"],
        "--out",
        out_dir,
        "--overlay",
        "--top-k",
        "3",
        "--max-frames",
        "10",
    )
    assert code == 0, err
    assert f"backend: {_cpu_runtime()}" in out and "query" in out and "FPS" in out
    results = json.loads((out_dir / "results.json").read_text())
    assert sorted({r["video_id"] for r in results}) == [1, 2] and len(results) == 6
    assert {tuple(r["segmentations"][0]["size"]) for r in results} == {(272, 640), (333, 517)}
    assert len(results[0]["segmentations"]) == 10 and len(results[-1]["segmentations"]) == 7
    meta = json.loads((out_dir / "videos.json").read_text())
    assert [(v["id"], v["name"], v["length"]) for v in meta["videos"]] == [(1, "bikes15.mp4", 10), (2, "odd.avi", 7)]
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "bikes15.overlay.mp4",
        "odd.overlay.mp4",
        "results.json",
        "videos.json",
    ]
    assert len(read_frames(out_dir / "odd.overlay.mp4")) == 7


def test_cli_failure_leaves_out_dir_untouched(bundle, bikes15, tmp_path, capsys):
    full = write_video(tmp_path / "full.avi", read_frames(bikes15), fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "results.json").write_text("[]\n")  # an earlier run's output
    code, out, err = _infer(capsys, bundle, bikes15, cut, "--out", out_dir, "--overlay")
    assert code == 2
    assert err.strip().startswith("evis infer: error: video is truncated") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert [p.name for p in out_dir.iterdir()] == ["results.json"]  # no new results, no overlay, no staging
    assert (out_dir / "results.json").read_text() == "[]\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".evis-tmp-")]
    (out_dir / "keep.txt").write_text("mine")  # a user's file: the folder is not replaced, before any work
    code, _, err = _infer(capsys, bundle, bikes15, "--out", out_dir)
    assert code == 2 and "'keep.txt', which `evis infer` did not write" in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["keep.txt", "results.json"]
    fresh = tmp_path / "fresh"
    code, _, err = _infer(capsys, bundle, bikes15, tmp_path / "missing.mp4", "--out", fresh)
    assert code == 2 and "video not found" in err and not fresh.exists()


@pytest.mark.parametrize(
    "extra, code, words",
    [
        (["--backend", "trt"], 3, "TensorRT is not installed"),
        (["--backend", "ort", "--device", "cuda"], 3, "CUDAExecutionProvider"),
        (["--backend", "torch", "--precision", "fp16", "--device", "cpu"], 2, "fp16 PyTorch needs a CUDA device"),
        (["--backend", "ort", "--precision", "int8"], 2, "model.int8.onnx is missing"),
    ],
)
def test_cli_backend_errors_are_one_line(bundle, bikes15, tmp_path, capsys, extra, code, words):
    got, out, err = _infer(capsys, bundle, bikes15, "--out", tmp_path / "o", *extra)
    assert got == code and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_cli_live_path_prints_per_clip_latency(bundle, bikes15, tmp_path, capsys):
    code, out, err = _infer(
        capsys, bundle, bikes15, "--live", "--max-frames", "12", "--out", tmp_path / "live", "--overlay"
    )
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("clip ")]
    assert [line.split("  ")[0] for line in lines] == [
        "clip 0: frames 0-4",
        "clip 1: frames 5-9",
        "clip 2: frames 10-11",
    ]
    assert all(" ms  end-to-end " in line for line in lines) and "FPS" in out
    assert not (tmp_path / "live" / "results.json").exists()
    assert len(read_frames(tmp_path / "live" / "bikes15.overlay.mp4")) == 12


def test_one_run_at_a_time_per_predictor(ort, bikes15):
    first = iter(ort.stream(bikes15))
    next(first)
    with pytest.raises(EvisError, match="one video at a time"):
        list(ort.stream(bikes15))
    first.close()
    assert ort.predict_video(bikes15, max_frames=5).num_frames == 5  # free again once the first run ends


def test_cli_runs_a_checkpoint_on_torch(tiny_model, bikes15, tmp_path, capsys):
    from efficientvis_trt.model.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "tiny.pt", tiny_model)
    code, out, err = _infer(capsys, ckpt, bikes15, "--max-frames", "5", "--top-k", "2", "--out", tmp_path / "o")
    assert code == 0, err
    assert out.startswith("backend: torch: the source is a PyTorch checkpoint")
    assert len(json.loads((tmp_path / "o" / "results.json").read_text())) == 2
    code, _, err = _infer(capsys, ckpt, bikes15, "--backend", "ort", "--out", tmp_path / "o2")
    assert code == 2 and "runs an exported bundle folder, not a checkpoint" in err


@pytest.mark.slow
def test_fp16_graph_runs_through_the_same_loop(bundle, bikes15, tmp_path, capsys):
    import shutil

    copy = tmp_path / "b16"
    shutil.copytree(bundle, copy)
    assert evis_main(["build", str(copy), "--precision", "fp16", "--calib-clips", "1"]) == 0
    capsys.readouterr()
    p16 = Predictor(copy, backend="ort", precision="fp16", top_k=3)
    assert p16.backend.precision == "fp16"
    a = p16.predict_video(bikes15, max_frames=10)
    b = Predictor(copy, backend="ort", precision="fp32", top_k=3).predict_video(bikes15, max_frames=10)
    assert [(t.query_index, t.label) for t in a.tracks] == [(t.query_index, t.label) for t in b.tracks]
    for ta, tb in zip(a.tracks, b.tracks):
        assert ta.score == pytest.approx(tb.score, abs=2e-3)
        np.testing.assert_allclose(ta.boxes, tb.boxes, atol=2.0)


def test_render_tracks_takes_a_path(ort, bikes15, tmp_path):
    from efficientvis_trt.runtime.overlay import render_tracks

    result = ort.predict_video(bikes15, max_frames=5)
    out = render_tracks(str(bikes15), result.tracks[:2], tmp_path / "o.mp4", max_frames=5)
    assert len(read_frames(out)) == 5 and out.name == "o.mp4"
