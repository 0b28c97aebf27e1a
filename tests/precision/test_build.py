"""`evis build` for ONNX Runtime: fp16 and int8 graphs of a tiny bundle, calibrated on real video clips."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from helpers import CALIB_CLIPS as CLIPS
from onnx import TensorProto, helper, numpy_helper

from efficientvis_trt.ort_session import make_session, run
from efficientvis_trt.precision import fp16
from efficientvis_trt.precision import graph as G
from efficientvis_trt.precision import int8 as I


@pytest.fixture(scope="module")
def exported(make_tiny_bundle):
    """A tiny random-init bundle as `evis export` writes it (fp32 only); tests copy it before changing it."""
    return make_tiny_bundle()


@pytest.fixture(scope="module")
def bundle_dir(make_tiny_bundle):
    """The tiny bundle with model.fp16.onnx and model.int8.onnx built through the CLI (the suite's shared build)."""
    return make_tiny_bundle(precisions=("fp16", "int8"))


@pytest.fixture(scope="module")
def models(bundle_dir):
    fp32 = onnx.load(str(bundle_dir / "model.onnx"))
    G.ensure_node_names(fp32)
    return {
        "fp32": fp32,
        "fp16": onnx.load(str(bundle_dir / "model.fp16.onnx")),
        "int8": onnx.load(str(bundle_dir / "model.int8.onnx")),
        "roles": G.classify(fp32),
    }


def _io(model):
    return [(v.name, v.type.tensor_type.elem_type) for v in list(model.graph.input) + list(model.graph.output)]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_graph_passes_checker_runs_and_keeps_io_types(models, precision, real_clips):
    m = models[precision]
    onnx.checker.check_model(m, full_check=True)
    assert _io(m) == _io(models["fp32"])
    out = run(make_session(m), real_clips[1])
    assert set(out) == {"logits", "boxes", "mask_logits", "query_out", "boxes_out"}
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in out.values())


def test_fp16_keeps_blocked_nodes_fp32(models):
    m16, roles = models["fp16"], models["roles"]
    types = G.tensor_types(m16)
    by_name = {n.name: n for n in m16.graph.node}
    # The conversion really happened: the backbone convolutions produce fp16.
    convs = [by_name[n] for n in roles.backbone if n in by_name and by_name[n].op_type == "Conv"]
    assert convs and all(types[c.output[0]] == TensorProto.FLOAT16 for c in convs)
    # RoIAlign (custom node: inputs and output), softmax, predictors and box decoding stay fp32.
    assert roles.roi_align and roles.softmax and roles.box_decode and roles.heads
    for name in roles.roi_align:
        node = by_name[name]
        assert all(types[i] == TensorProto.FLOAT for i in node.input) and types[node.output[0]] == TensorProto.FLOAT
    for name in roles.softmax + roles.heads + roles.box_decode:
        node = by_name[name]
        for o in node.output:
            if types.get(o) in (TensorProto.FLOAT, TensorProto.FLOAT16):
                assert types[o] == TensorProto.FLOAT, f"{name} ({node.op_type}) is not fp32"
    exps = [n for n in roles.box_decode if by_name[n].op_type == "Exp"]
    assert exps, "box decoding must include the Exp of the box deltas"
    # The model-local function the custom node relies on is untouched (ORT inlines it in fp32).
    assert [f.SerializeToString() for f in m16.functions] == [f.SerializeToString() for f in models["fp32"].functions]
    # No fp32 -> fp16 -> fp32 round trips left between fp32 nodes.
    producers = G.producer_map(m16)
    for n in m16.graph.node:
        if n.op_type == "Cast" and n.attribute[0].i == TensorProto.FLOAT:
            p = producers.get(n.input[0])
            assert not (p is not None and p.op_type == "Cast" and types.get(p.input[0]) == TensorProto.FLOAT)


def _max_diffs(model_a, model_b, feed):
    a, b = run(make_session(model_a), feed), run(make_session(model_b), feed)
    return {k: float(np.abs(a[k] - b[k]).max()) for k in a}, a


def test_fp16_and_int8_close_to_fp32_on_a_real_clip(models, real_clips):
    feed = real_clips[1]  # second clip: carried state, like every clip after the first
    d16, ref = _max_diffs(models["fp16"], models["fp32"], feed)
    d8, _ = _max_diffs(models["int8"], models["fp32"], feed)
    # Signal scale: how much the fp32 outputs change between the two clips.
    other = run(make_session(models["fp32"]), real_clips[0])
    signal = {k: float(np.abs(ref[k] - other[k]).max()) for k in ("logits", "mask_logits", "query_out")}
    assert d16["logits"] < 0.03 and d16["mask_logits"] < 5e-3 and d16["query_out"] < 0.03
    assert d16["boxes"] < 3e-3 and d16["boxes_out"] < 3e-3
    assert d16["query_out"] > 0  # it really is fp16 arithmetic
    assert d8["boxes"] < 0.05 and d8["boxes_out"] < 0.05
    for k in ("logits", "mask_logits", "query_out"):
        assert d16[k] < 0.1 * signal[k], (k, d16[k], signal[k])
        assert d8[k] < 0.5 * signal[k], (k, d8[k], signal[k])
        assert d16[k] < d8[k]  # int8 costs more than fp16, as it should


def _dq_producer(producers, name):
    p = producers.get(name)
    if p is not None and p.op_type == "Cast":  # fp32 consumers read DQ through a Cast
        p = producers.get(p.input[0])
    return p if p is not None and p.op_type == "DequantizeLinear" else None


def test_int8_qdq_placement(models):
    m8, roles = models["int8"], models["roles"]
    placement = I.qdq_placement(m8)
    consts = G.constant_names(models["fp32"])
    by_name32 = {n.name: n for n in models["fp32"].graph.node}
    backbone_compute = [
        n
        for n in roles.backbone
        if by_name32[n].op_type in ("Conv", "MatMul", "Gemm") and G.is_weighted(by_name32[n], consts)
    ]
    assert len(backbone_compute) >= 20
    for name in backbone_compute:  # every backbone conv: activation and weight quantized
        p = placement[name]
        assert p["quantized_inputs"] == [True, True], name
        if p["op_type"] == "Conv":
            assert p["weight_axis"] == 0, name  # per output channel (KCRS axis 0)
    for name in roles.heads + roles.towers + roles.activation_matmuls:
        assert not any(placement[name]["quantized_inputs"]), f"{name} must stay unquantized"
    producers = G.producer_map(m8)
    by_name = {n.name: n for n in m8.graph.node}
    for name in roles.softmax + roles.roi_align:
        assert all(_dq_producer(producers, i) is None for i in by_name[name].input if i), name
    # Nothing that is not quantized reads an int8-rounded activation (residual adds, towers, heads).
    quantized = set(I._quantized_nodes(m8))
    consumers = G.consumer_map(m8)
    for dq in (n for n in m8.graph.node if n.op_type == "DequantizeLinear"):
        users = list(consumers.get(dq.output[0], []))
        while any(u.op_type == "Cast" for u in users):
            users = [v for u in users for v in (consumers.get(u.output[0], []) if u.op_type == "Cast" else [u])]
        assert users and all(u.name in quantized for u in users), (dq.name, [u.name for u in users])
    assert quantized == set(roles.int8_quantize())
    types = G.tensor_types(m8)
    inits = {i.name: numpy_helper.to_array(i) for i in m8.graph.initializer}
    qs = [n for n in m8.graph.node if n.op_type == "QuantizeLinear"]
    assert qs
    for q in qs:  # strongly typed TensorRT: an fp16 scale must match an fp16 input; symmetric: zero point 0
        assert types[q.input[0]] == types[q.input[1]] == TensorProto.FLOAT16
        assert len(q.input) < 3 or not inits[q.input[2]].any()
    for dq in (n for n in m8.graph.node if n.op_type == "DequantizeLinear"):
        assert types[dq.input[1]] == TensorProto.FLOAT16
        if dq.input[0] in inits:  # weights: int8 in [-127, 127] made for the fp16 scale
            w = inits[dq.input[0]]
            assert w.dtype == np.int8 and w.min() >= -127


def test_calibration_record(bundle_dir, models):
    record = json.loads((bundle_dir / "calibration.json").read_text())
    sec = record["int8"]
    assert sec["seed"] == 0 and sec["int8"]["method"] == "minmax" and len(sec["clips"]) == CLIPS
    assert {c["video"] for c in sec["clips"]} <= {"bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"}
    assert all(isinstance(c["start_frame"], int) for c in sec["clips"])
    assert any(c["index_in_sequence"] > 0 for c in sec["clips"]), "later clips must run with carried state"
    ranges = sec["int8"]["ranges"]
    assert ranges and all(lo <= hi for lo, hi in ranges.values())
    assert set(sec["int8"]["quantized_nodes"]) == set(I._quantized_nodes(models["int8"]))
    assert {"onnx", "onnxruntime", "efficientvis_trt"} <= set(sec["tool_versions"])
    meta = json.loads((bundle_dir / "metadata.json").read_text())
    assert meta["files"]["model.int8.onnx"]["role"] == "graph" and "precisions" not in meta


def test_calibration_carries_state_and_is_deterministic(bundle_dir):
    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.precision.calibration import build_calibration_set, plan_sequences

    b = Bundle.open(bundle_dir)
    cs = build_calibration_set(b.onnx_path("fp32"), b.init_state(), b.input_hw, b.clip_len, None, 3, 7, progress=False)
    q0 = b.init_state()[0][None]  # calibration clips are batches of one stream
    for rec, feed in zip(cs.clips, cs.feeds):
        carried = not np.array_equal(feed["query_in"], q0)
        assert carried == (rec.index_in_sequence > 0)
        assert feed["frames"].shape == (1, b.clip_len, *b.input_hw, 3) and feed["frames"].dtype == np.uint8
    assert plan_sequences([250, 132, 120], 8, 5, 3) == plan_sequences([250, 132, 120], 8, 5, 3)
    assert plan_sequences([250, 132, 120], 8, 5, 3) != plan_sequences([250, 132, 120], 8, 5, 4)


def test_same_seed_gives_byte_identical_int8_graph(bundle_dir, tmp_path):
    from efficientvis_trt.precision.graph_build import BuildOptions, build

    copy = tmp_path / "again"
    shutil.copytree(bundle_dir, copy)
    before = (copy / "model.int8.onnx").stat().st_mtime_ns
    build(copy, BuildOptions(precision="int8", calib_clips=CLIPS, seed=0, progress=False))
    assert (copy / "model.int8.onnx").stat().st_mtime_ns != before  # really rebuilt
    assert (copy / "model.int8.onnx").read_bytes() == (bundle_dir / "model.int8.onnx").read_bytes()
    a = json.loads((bundle_dir / "calibration.json").read_text())["int8"]
    b = json.loads((copy / "calibration.json").read_text())["int8"]
    assert a["clips"] == b["clips"] and a["int8"]["ranges"] == b["int8"]["ranges"]


def _planted_graph(scale: float) -> onnx.ModelProto:
    """x[4,16] -> MatMul(W1 * scale) -> Relu -> LayerNorm -> MatMul(W2) -> y: W1's product overflows fp16."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((16, 32)) * scale).astype(np.float32)
    w2 = rng.standard_normal((32, 8)).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="big_matmul"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("LayerNormalization", ["r", "g", "b"], ["n"], name="norm", axis=-1),
        helper.make_node("MatMul", ["n", "w2"], ["y"], name="small_matmul"),
    ]
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.ones(32, np.float32), "g"),
        numpy_helper.from_array(np.zeros(32, np.float32), "b"),
    ]
    g = helper.make_graph(
        nodes,
        "planted",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def test_overflow_guard_catches_planted_overflow():
    model = _planted_graph(2e4)
    feeds = [{"x": np.random.default_rng(i).standard_normal((4, 16)).astype(np.float32)} for i in range(2)]
    ref = run(make_session(model), feeds[0])["y"]
    naive = run(make_session(fp16.convert(model, [])), feeds[0])["y"]
    assert not np.isfinite(naive).all() or np.abs(naive - ref).max() > 0.5  # the overflow is real
    res = fp16.convert_with_guard(model, [], feeds)
    assert "big_matmul" in {h.node for h in res.overflow} and "big_matmul" in res.blocked
    assert "small_matmul" not in res.blocked  # the rest is still fp16
    types = G.tensor_types(res.model)
    out_type = {n.name: types[n.output[0]] for n in res.model.graph.node}
    assert out_type["big_matmul"] == out_type["relu"] == TensorProto.FLOAT
    assert out_type["small_matmul"] == TensorProto.FLOAT16
    got = run(make_session(res.model), feeds[0])["y"]
    assert np.isfinite(got).all() and np.abs(got - ref).max() < 0.05


def test_overflow_guard_on_the_tiny_model(models, real_clips):
    """A scaled weight in a stage's FFN: the guard keeps the overflowing nodes fp32 and reports them."""
    m = onnx.ModelProto()
    m.CopyFrom(models["fp32"])
    roles = models["roles"]
    consts = G.constant_names(m)
    consumers = G.consumer_map(m)
    inits = {i.name: i for i in m.graph.initializer}
    backbone = set(roles.backbone)

    def feeds_relu(node):  # through the Reshapes onnxslim puts around a Gemm, or a MatMul's bias Add
        users = consumers[node.output[0]]
        while len(users) == 1 and users[0].op_type in ("Reshape", "Add"):
            users = consumers[users[0].output[0]]
        return any(u.op_type == "Relu" for u in users)

    # An FFN's first Linear in a stage (weighted, followed by ReLU, not a head or tower).
    target = next(
        n
        for n in m.graph.node
        if n.name not in backbone
        and n.op_type in ("Gemm", "MatMul")
        and G.is_weighted(n, consts)
        and n.input[1] in inits
        and n.name not in roles.heads + roles.towers
        and feeds_relu(n)
    )
    w = inits[target.input[1]]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * np.float32(3e4), w.name))
    feeds = real_clips[:1]
    res = fp16.convert_with_guard(m, roles.fp16_block(), feeds)
    assert target.name in {h.node for h in res.overflow} and target.name in res.blocked
    ref = run(make_session(m), feeds[0])
    got = run(make_session(res.model), feeds[0])
    assert all(np.isfinite(v).all() for v in got.values())
    assert np.abs(got["logits"] - ref["logits"]).max() < 0.1 * max(1.0, float(np.abs(ref["logits"]).max()))


def _snapshot(folder):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_trt_backend_without_tensorrt_says_how_to_install_and_writes_nothing(exported, tmp_path, precision):
    """TensorRT is import-blocked in a subprocess, so this runs on GPU machines too."""
    from helpers import run_python

    bundle = tmp_path / "b"
    shutil.copytree(exported, bundle)
    before = _snapshot(bundle)
    argv = ["build", str(bundle), "--precision", precision, "--backend", "trt"]
    code = f"import sys; from efficientvis_trt.cli import main; sys.exit(main({argv!r}))"
    proc = run_python(code, block=("tensorrt",))
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 3, proc.stderr
    assert len(err) == 1 and "TensorRT is not installed" in err[0] and "pip install" in err[0]
    assert _snapshot(bundle) == before  # no graph, no engine, no record, no metadata change


def test_calibration_sources_files_folders_and_frame_folders(tmp_path):
    import cv2

    from efficientvis_trt.errors import EvisError
    from efficientvis_trt.precision.calibration import expand_sources
    from efficientvis_trt.video import read_frames, sample_video

    frames_dir = tmp_path / "data" / "JPEGImages" / "vid0"  # YouTube-VIS style frame folder
    frames_dir.mkdir(parents=True)
    for i, f in enumerate(read_frames(sample_video("carphone_pristine.mp4"), max_frames=12)):
        cv2.imwrite(str(frames_dir / f"{i:05d}.jpg"), f)
    shutil.copy(sample_video("bikes.mp4"), tmp_path / "data" / "bikes.mp4")
    found = expand_sources([tmp_path / "data"])
    assert sorted(s.name for s in found) == ["data/JPEGImages/vid0", "data/bikes.mp4"]
    folder = next(s for s in found if s.name.endswith("vid0"))
    assert folder.num_frames() == 12
    clip = folder.read(5, 5)
    assert len(clip) == 5 and clip[0].shape == (144, 176, 3)
    assert len(folder.read(10, 5)) == 2  # the end of the video
    assert [s.name for s in expand_sources(None)] == ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"]
    with pytest.raises(EvisError, match="not found"):
        expand_sources([tmp_path / "missing.mp4"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvisError, match="no videos"):
        expand_sources([tmp_path / "empty"])


def test_calibration_methods_give_different_ranges(bundle_dir, models, real_clips, tmp_path):
    """entropy/percentile really clip outliers (onnxruntime's default histogram would make entropy == minmax)."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    from efficientvis_trt.precision.calibration import CalibrationSet

    calib = CalibrationSet(feeds=list(real_clips), clips=[], seed=0)
    needed = I.calibration_tensors(models["fp32"], models["roles"].int8_quantize())
    ranges = {}
    for method in I.METHODS:
        cache = tmp_path / f"{method}.json"
        I.calibrate(bundle_dir / "model.onnx", calib, method, cache, tmp_path, tensors=needed)
        data = load_tensors_data(cache).data
        ranges[method] = {
            k: float(np.max(np.abs(np.asarray(v.range_value, dtype=np.float64)))) for k, v in data.items()
        }
    assert set(ranges["entropy"]) == set(ranges["minmax"]) == needed
    for method in ("entropy", "percentile"):
        tighter = [k for k in ranges["minmax"] if ranges[method][k] < 0.999 * ranges["minmax"][k]]
        assert len(tighter) > len(ranges["minmax"]) // 4, method
        assert all(ranges[method][k] <= ranges["minmax"][k] * 1.001 for k in ranges["minmax"]), method


def test_vectorised_entropy_search_matches_onnxruntime():
    from onnxruntime.quantization.calibrate import HistogramCollector

    rng = np.random.default_rng(1)
    ref = HistogramCollector(
        "entropy", symmetric=True, num_bins=512, num_quantized_bins=128, percentile=99.9, scenario="same"
    )
    for k in range(4):
        data = np.concatenate(
            [rng.standard_normal(30000), rng.standard_normal(40) * 25 * k, rng.exponential(2.0, 5000) * k]
        ).astype(np.float32)
        thr = np.float32(np.abs(data).max())
        hist, edges = np.histogram(data, 512, range=(-thr, thr))
        h = (hist, edges.astype(np.float32), np.float32(data.min()), np.float32(data.max()), thr)
        want = ref.get_entropy_threshold(h, 128)
        got = I.entropy_threshold(*h[:4], 128)
        assert (float(got[0]), float(got[1])) == (float(want[0]), float(want[1]))


@pytest.mark.parametrize("graph", ["model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8.cpu.onnx"])
def test_every_precision_runs_streams_batched_as_if_alone(bundle_dir, real_clips, graph):
    """B = 3 streams (different clips and states) in one call equal three B = 1 runs, at every precision."""
    third = {**real_clips[1], "query_in": real_clips[0]["query_in"], "boxes_in": real_clips[0]["boxes_in"]}
    streams = [real_clips[0], real_clips[1], third]
    session = make_session(bundle_dir / graph)
    alone = [run(session, feed) for feed in streams]
    batched = run(session, {k: np.concatenate([f[k] for f in streams]) for k in streams[0]})
    assert not np.allclose(alone[1]["logits"], alone[2]["logits"], atol=1e-4)  # the streams differ
    for name, got in batched.items():
        assert got.shape[0] == 3
        for i, ref in enumerate(alone):
            np.testing.assert_allclose(got[i], ref[name][0], rtol=1e-5, atol=1e-5, err_msg=f"{graph} {name} stream {i}")


@pytest.mark.parametrize(
    "batch, backend, words",
    [
        ("1:8:4", "trt", "1 <= MIN <= OPT <= MAX"),
        ("two", "trt", "--batch must be MIN:OPT:MAX"),
        ("1:4:8", "ort", "is a TensorRT optimisation profile: add --backend trt"),
    ],
)
def test_build_batch_profile_is_checked_before_anything_is_written(exported, tmp_path, capsys, batch, backend, words):
    from efficientvis_trt.cli import main

    bundle = tmp_path / "b"
    shutil.copytree(exported, bundle)
    before = _snapshot(bundle)
    rc = main(["build", str(bundle), "--precision", "fp32", "--backend", backend, "--batch", batch])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert _snapshot(bundle) == before
