"""The OpenVINO backend against ONNX Runtime on a tiny bundle: parity per precision, no silent downgrade, auto.

Skipped (with the reason) where OpenVINO is not installed; the dev extra installs it. What
runs everywhere: asking for OpenVINO without it is one clear line, and `auto` stays on ORT.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
from helpers import contract_graph, write_video

from efficientvis_trt import capabilities
from efficientvis_trt.contract import STATE_OUTPUTS, TrackletState, step
from efficientvis_trt.errors import BackendUnavailable, EvisError
from efficientvis_trt.export.verify import TOLERANCES, compare
from efficientvis_trt.runtime import openvino_backend as ovb
from efficientvis_trt.runtime.postprocess import decode_rle, sigmoid
from efficientvis_trt.runtime.predictor import Predictor
from efficientvis_trt.video import Letterbox, read_frames, sample_video

OV_OK, OV_WHY = bool(capabilities.openvino()), capabilities.openvino().reason
needs_openvino = pytest.mark.skipif(not OV_OK, reason=f"OpenVINO backend not runnable here: {OV_WHY}")
CLIPS = 3


@pytest.fixture(scope="module")
def bundle(make_tiny_bundle):
    """A tiny random-init bundle with its int8 graph (the suite's shared build)."""
    return make_tiny_bundle(precisions=("int8",) if OV_OK else ())


@pytest.fixture(scope="module")
def clips(bundle):
    from efficientvis_trt.bundle import Bundle

    b = Bundle.open(bundle)
    frames = read_frames(sample_video("bikes.mp4"), max_frames=CLIPS * b.clip_len)
    lb = Letterbox(frames[0].shape[:2], b.input_hw)
    canvas = np.stack([lb.apply(f) for f in frames])
    return [canvas[k * b.clip_len : (k + 1) * b.clip_len] for k in range(CLIPS)], b.init_state()


def _run_clips(backend, clips) -> list[dict[str, np.ndarray]]:
    """Each backend carries its own state over the clips, as in a real video."""
    frames, init_state = clips
    state = TrackletState.initial(init_state)  # one stream: B = 1
    outs = []
    for clip in frames:
        out, state = step(lambda inputs: backend.run(inputs, keep_on_device=STATE_OUTPUTS), clip[None], state)
        outs.append({k: backend.to_host(v) for k, v in out.items()})
        state = state.map(backend.to_host)  # the next clip is fed from the host
    return outs


def _max_abs(a: list[dict], b: list[dict], name: str) -> float:
    return max(float(np.abs(x[name].astype(np.float64) - y[name]).max()) for x, y in zip(a, b))


def _mean_abs(a: list[dict], b: list[dict], name: str) -> float:
    return float(np.mean([np.abs(x[name].astype(np.float64) - y[name]).mean() for x, y in zip(a, b)]))


@pytest.fixture(scope="module")
def ort_fp32(bundle, clips):
    from efficientvis_trt.runtime.backends import OrtBackend

    return _run_clips(OrtBackend(bundle / "model.onnx", "fp32", threads=2), clips)


# ---- everywhere ---------------------------------------------------------------------------


def test_without_openvino_the_backend_says_so_and_auto_stays_on_ort(bundle, monkeypatch, request):
    from efficientvis_trt import capabilities

    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    capabilities.forget()  # probed again without it, and again after the test with it
    request.addfinalizer(capabilities.forget)
    with pytest.raises(BackendUnavailable) as info:
        Predictor(bundle, backend="openvino")
    assert "OpenVINO is not installed" in str(info.value) and "[openvino]" in str(info.value)
    assert "\n" not in str(info.value)
    p = Predictor(bundle, device="cpu")
    assert p.backend.name == "onnxruntime" and "OpenVINO not installed" in p.backend_reason
    with pytest.raises(BackendUnavailable, match="OpenVINO is not installed"):
        Predictor(bundle, precision="bf16", device="cpu")  # bf16 only exists on OpenVINO: say how to get it


@pytest.mark.parametrize(
    "precision, caps, want",
    [
        ("fp32", ["FP32"], "f32"),
        ("bf16", ["FP32", "BF16", "INT8"], "bf16"),
        ("int8", ["FP32", "INT8"], "f32"),  # the Q/DQ nodes run int8, the rest fp32
    ],
)
def test_inference_precision_when_the_device_has_it(precision, caps, want):
    assert ovb.inference_precision(precision, caps) == want


@pytest.mark.parametrize(
    "precision, caps, words",
    [
        ("bf16", ["FP32", "FP16", "INT8"], "no BF16 in its OPTIMIZATION_CAPABILITIES"),
        ("int8", ["FP32"], "no INT8"),
        ("fp16", ["FP32", "FP16", "BF16"], "runs fp32, bf16, int8, not fp16"),
    ],
)
def test_a_precision_the_device_cannot_do_is_an_error(precision, caps, words):
    with pytest.raises(EvisError, match=words) as info:
        ovb.inference_precision(precision, caps)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("backend", ["ort", "torch", "trt"])
def test_bf16_is_openvino_only(bundle, backend):
    with pytest.raises(EvisError, match="bf16 runs on the openvino backend"):
        Predictor(bundle, backend=backend, precision="bf16")


# ---- with OpenVINO ---------------------------------------------------------------------------


@needs_openvino
def test_fp32_matches_onnxruntime_within_the_export_tolerances(bundle, clips, ort_fp32):
    be = ovb.OpenVINOBackend(bundle / "model.onnx", "fp32", threads=2)
    assert (be.name, be.device, be.inference_precision, be.threads) == ("openvino", "cpu", "f32", 2)
    report = compare(ort_fp32, _run_clips(be, clips), TOLERANCES)
    assert report["passed"], report["outputs"]


@needs_openvino
def test_bf16_runs_bf16_and_stays_close_to_fp32(bundle, clips, ort_fp32):
    caps = ovb.device_capabilities(ovb.import_openvino().Core())
    if "BF16" not in caps:  # the other side of the rule, on this machine for real
        with pytest.raises(EvisError, match="no BF16"):
            ovb.OpenVINOBackend(bundle / "model.onnx", "bf16")
        return
    be = ovb.OpenVINOBackend(bundle / "model.onnx", "bf16", threads=2)
    assert be.inference_precision == "bf16"
    got = _run_clips(be, clips)
    for name in ("logits", "boxes", "mask_logits", "query_out"):
        signal = max(float(np.abs(r[name]).max()) for r in ort_fp32)
        d = _max_abs(ort_fp32, got, name)
        assert 0 < d < 0.5 * signal, (name, d, signal)  # really bf16 (not fp32), and still the same answer


@needs_openvino
def test_a_device_without_bf16_refuses_it_rather_than_running_fp32(bundle, monkeypatch):
    monkeypatch.setattr(ovb, "device_capabilities", lambda core, device="CPU": ["FP32", "INT8"])
    with pytest.raises(EvisError, match="no BF16"):
        Predictor(bundle, backend="openvino", precision="bf16")
    with pytest.raises(EvisError, match="no BF16"):
        Predictor(bundle, precision="bf16", device="cpu")


@needs_openvino
def test_int8_is_quantized_and_within_twice_the_error_of_onnxruntime(bundle, clips, ort_fp32):
    """OpenVINO runs its int8 graph quantized (it differs from fp32) and about as close to fp32 as ORT running
    the same graph (mean error: the max over carried clips swings with single queries). Which graph depends on
    the CPU (test below): on an AVX2 EPYC, model.int8.onnx's full 8-bit weights saturated in OpenVINO's kernels
    (mean logits error 8.8x ORT's on it, 2026-12-07), the CPU form's 7-bit weights did not. OpenVINO rounds
    its own way (1.65x ORT's error on a VNNI Xeon), so the claim is "within 2x", not "no more"."""
    from efficientvis_trt.runtime.backends import OrtBackend

    p = Predictor(bundle, backend="openvino", precision="int8", threads=2)
    graph = p.backend.onnx_path
    assert graph.name == ("model.int8.onnx" if capabilities.cpu_int8_full_range() else "model.int8.cpu.onnx")
    assert f"{graph.name} at f32" in p.backend_reason
    ort_int8 = _run_clips(OrtBackend(graph, "int8", threads=2), clips)
    got = _run_clips(p.backend, clips)
    for name in ("logits", "boxes", "mask_logits", "query_out"):
        d = _mean_abs(ort_fp32, got, name)
        assert 0 < d < 2.0 * _mean_abs(ort_fp32, ort_int8, name), (name, d, _mean_abs(ort_fp32, ort_int8, name))


@needs_openvino
@pytest.mark.parametrize("full_range", [True, False])
def test_int8_graph_follows_whether_the_cpu_saturates(bundle, tmp_path, monkeypatch, full_range):
    """Full 8-bit weights only where the CPU's int8 dot products cannot saturate; else the 7-bit CPU form,
    and an older bundle without it runs model.int8.onnx with a warning that says how to rebuild."""
    import json
    import shutil

    from efficientvis_trt.capabilities import Feature

    monkeypatch.setattr(capabilities, "cpu_int8_full_range", lambda: Feature(full_range, "the probe's words"))
    p = Predictor(bundle, backend="openvino", precision="int8", threads=1)
    assert p.backend.onnx_path.name == ("model.int8.onnx" if full_range else "model.int8.cpu.onnx")
    assert ("7-bit weights: the probe's words" in p.backend_reason) is not full_range
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    (old / "model.int8.cpu.onnx").unlink()
    meta = json.loads((old / "metadata.json").read_text())
    meta["files"].pop("model.int8.cpu.onnx")
    (old / "metadata.json").write_text(json.dumps(meta))
    p = Predictor(old, backend="openvino", precision="int8", threads=1)
    assert p.backend.onnx_path.name == "model.int8.onnx"
    assert ("no CPU graph with 7-bit weights" in p.backend_reason) is not full_range


@needs_openvino
def test_the_bundle_files_are_read_not_changed(bundle):
    import onnx

    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bundle.iterdir() if p.is_file()}
    ovb.OpenVINOBackend(bundle / "model.onnx", "fp32")
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bundle.iterdir() if p.is_file()}
    assert before == after
    graph = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    assert graph.functions and any(n.op_type == "MultiLevelRoIAlign" for n in graph.graph.node)  # TRT/ORT's form


@needs_openvino
def test_auto_on_a_cpu_prefers_openvino_and_says_why(bundle):
    p = Predictor(bundle, device="cpu")
    assert p.backend.name == "openvino" and p.backend_reason.startswith("openvino: --device cpu")
    p = Predictor(bundle, device="cpu", precision="fp16") if (bundle / "model.fp16.onnx").is_file() else None
    if p is not None:
        assert p.backend.name == "onnxruntime" and "not fp16" in p.backend_reason


@needs_openvino
def test_tracks_match_onnxruntime_on_a_real_video(bundle, tmp_path):
    video = write_video(tmp_path / "bikes15.mp4", read_frames(sample_video("bikes.mp4"), max_frames=15))
    ort = Predictor(bundle, backend="ort", top_k=5)
    first = next(iter(ort.feed(read_frames(video, max_frames=5))))
    thr = float(np.median(sigmoid(first.outputs["mask_logits"])))  # half-filled masks: IoU tests their shape
    a = Predictor(bundle, backend="openvino", top_k=5, mask_threshold=thr).predict_video(video)
    b = Predictor(bundle, backend="ort", top_k=5, mask_threshold=thr).predict_video(video)
    assert a.num_frames == b.num_frames == 15
    assert [(t.query_index, t.label) for t in a.tracks] == [(t.query_index, t.label) for t in b.tracks]
    for ta, tb in zip(a.tracks, b.tracks):
        assert ta.score == pytest.approx(tb.score, abs=1e-4)
        np.testing.assert_allclose(ta.boxes, tb.boxes, atol=0.5)
        inter = sum(int((decode_rle(x) & decode_rle(y)).sum()) for x, y in zip(ta.segmentations, tb.segmentations))
        union = sum(int((decode_rle(x) | decode_rle(y)).sum()) for x, y in zip(ta.segmentations, tb.segmentations))
        assert union > 0 and inter / union > 0.98


@needs_openvino
def test_any_leading_dims_the_graph_declares_are_accepted(tmp_path):
    """Shape-agnostic: a graph with a leading stream dimension (static or dynamic) runs as declared."""

    def graph(lead):
        return contract_graph(tmp_path / f"lead{len(lead)}_{lead[0] if lead else 0}.onnx", lead)

    rng = np.random.default_rng(0)
    for lead, feed_lead in [([], []), ([2], [2]), (["S"], [3])]:
        be = ovb.OpenVINOBackend(graph(lead), "fp32")
        q = rng.standard_normal((*feed_lead, 3, 4)).astype(np.float32)
        out = be.run(
            {
                "frames": rng.integers(0, 255, (*feed_lead, 2, 8, 8, 3), dtype=np.uint8),
                "query_in": q,
                "boxes_in": np.zeros((*feed_lead, 3, 4), np.float32),
            }
        )
        np.testing.assert_array_equal(out["query_out"], -q)
        if lead == [2]:
            with pytest.raises(EvisError, match="has shape"):
                be.run({"frames": np.zeros((1, 2, 8, 8, 3), np.uint8), "query_in": q[:1], "boxes_in": q[:1]})


@needs_openvino
def test_cli_infer_and_bench_rows(bundle, tmp_path, capsys):
    import json

    from efficientvis_trt.cli import main as evis_main
    from efficientvis_trt.measure.runner import BenchSettings, run_bench

    video = write_video(tmp_path / "bikes10.mp4", read_frames(sample_video("bikes.mp4"), max_frames=10))
    out = tmp_path / "infer"
    assert (
        evis_main(
            ["infer", str(bundle), str(video), "--backend", "openvino", "--precision", "int8"]
            + ["--out", str(out), "--no-progress"]
        )
        == 0
    )
    assert "openvino: asked for" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())
    code = evis_main(
        ["infer", str(bundle), str(video), "--backend", "openvino", "--precision", "fp16"]
        + ["--out", str(tmp_path / "no"), "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "not fp16" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "no").exists()

    settings = BenchSettings(
        backends=["openvino"], precisions=["fp32", "bf16", "fp16"], videos=[video], iters=1, warmup=0, max_frames=5
    )
    rows = {r.precision: r for r in run_bench(bundle, settings, progress=False)}
    assert rows["fp32"].available and rows["fp32"].metrics["latency_p50_ms"] > 0
    assert not rows["fp16"].available and "not fp16" in rows["fp16"].reason
    assert rows["bf16"].available == ("BF16" in ovb.device_capabilities(ovb.import_openvino().Core()))
    if rows["bf16"].available:
        assert rows["bf16"].metrics["fidelity_reference"] == "openvino fp32"


@needs_openvino
def test_a_graph_openvino_cannot_read_is_one_line(tmp_path):
    """A custom node without its function body is what OpenVINO meets without the inlining: one clear line."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("MultiLevelRoIAlign", ["x"], ["y"], domain="efficientvis")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("efficientvis", 1)]
    )
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    with pytest.raises(EvisError, match="OpenVINO cannot read custom.onnx: .*No conversion rule") as info:
        ovb.read_inlined(ovb.import_openvino().Core(), path)
    assert "\n" not in str(info.value)
