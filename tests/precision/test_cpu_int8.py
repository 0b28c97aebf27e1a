"""`evis build --precision int8` also writes model.int8.cpu.onnx (ORT's CPU form); the ORT CPU backend loads it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from helpers import CALIB_CLIPS as CLIPS
from onnx import TensorProto, numpy_helper

from efficientvis_trt.ort_session import make_session, run
from efficientvis_trt.precision import graph as G

CPU_FILE = "model.int8.cpu.onnx"


@pytest.fixture(scope="module")
def bundle_dir(make_tiny_bundle):
    """A tiny random-init bundle with its int8 graphs built through the CLI (the suite's shared build)."""
    return make_tiny_bundle(precisions=("fp16", "int8"))


def _io(model):
    return [(v.name, v.type.tensor_type.elem_type) for v in list(model.graph.input) + list(model.graph.output)]


def test_cpu_graph_written_and_recorded(bundle_dir):
    from efficientvis_trt.bundle import Bundle

    assert (bundle_dir / CPU_FILE).is_file() and (bundle_dir / "model.int8.onnx").is_file()
    meta = json.loads((bundle_dir / "metadata.json").read_text())
    assert meta["files"]["model.int8.onnx"]["precision"] == "int8"  # TensorRT's graph is still the int8 one
    assert meta["files"][CPU_FILE] | {"bytes": 0, "sha256": ""} == {
        "bytes": 0,
        "sha256": "",
        "role": "graph",
        "precision": "int8",
        "target": "ort-cpu",
    }
    rec = json.loads((bundle_dir / "calibration.json").read_text())["int8"]
    cpu = rec["int8"]["cpu_graph"]
    assert cpu["output_onnx"] == CPU_FILE and "uint8" in cpu["activations"]
    assert all(v["finite"] for v in cpu["check_vs_fp32"].values())
    b = Bundle.open(bundle_dir)
    path, own = b.cpu_graph("int8")
    assert (path.name, own) == (CPU_FILE, True)
    assert b.onnx_path("int8").name == "model.int8.onnx"
    path, own = b.cpu_graph("fp32")
    assert (path.name, own) == ("model.onnx", False)


def test_cpu_graph_is_ort_x86_recipe(bundle_dir):
    m = onnx.load(str(bundle_dir / CPU_FILE))
    onnx.checker.check_model(m, full_check=True)
    assert _io(m) == _io(onnx.load(str(bundle_dir / "model.onnx")))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    types = G.tensor_types(m)
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert qs
    for q in qs:  # activations: uint8, asymmetric allowed, fp32 scale and input
        assert inits[q.input[2]].dtype == np.uint8
        assert types[q.input[0]] == TensorProto.FLOAT and inits[q.input[1]].dtype == np.float32
    weights = [
        inits[d.input[0]]
        for d in m.graph.node
        if d.op_type == "DequantizeLinear" and d.input[0] in inits and inits[d.input[0]].ndim >= 2
    ]
    assert len(weights) >= 20 and all(w.dtype == np.int8 for w in weights)
    assert not any(types.get(t) == TensorProto.FLOAT16 for t in types)  # fp32 rest, no fp16
    # ORT really fuses it into uint8 x int8 kernels.
    make_session(bundle_dir / CPU_FILE, optimized_model_path=bundle_dir.parent / "opt.onnx")
    opt = onnx.load(str(bundle_dir.parent / "opt.onnx"), load_external_data=False)
    assert sum(n.op_type == "QLinearConv" for n in opt.graph.node) >= 20


def test_tensorrt_graph_unchanged_symmetric_int8_fp16_rest(bundle_dir):
    m8 = onnx.load(str(bundle_dir / "model.int8.onnx"))
    types = G.tensor_types(m8)
    inits = {i.name: numpy_helper.to_array(i) for i in m8.graph.initializer}
    qs = [n for n in m8.graph.node if n.op_type == "QuantizeLinear"]
    assert qs
    for q in qs:
        assert types[q.input[0]] == types[q.input[1]] == TensorProto.FLOAT16
        assert len(q.input) < 3 or (inits[q.input[2]].dtype == np.int8 and not inits[q.input[2]].any())
    assert any(types.get(n.output[0]) == TensorProto.FLOAT16 for n in m8.graph.node if n.op_type == "Conv")


def test_cpu_graph_close_to_fp32_on_a_real_clip(bundle_dir, real_clips):
    feed = real_clips[1]
    s32 = make_session(bundle_dir / "model.onnx")
    ref, other = run(s32, feed), run(s32, real_clips[0])
    got = run(make_session(bundle_dir / CPU_FILE), feed)
    assert set(got) == set(ref)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in got.values())
    d = {k: float(np.abs(got[k] - ref[k]).max()) for k in ref}
    assert d["boxes"] < 0.05 and d["boxes_out"] < 0.05
    for k in ("logits", "mask_logits", "query_out"):
        signal = float(np.abs(ref[k] - other[k]).max())
        assert 0 < d[k] < 0.5 * signal, (k, d[k], signal)


def test_cpu_graph_weights_are_seven_bit_so_fused_kernels_match_the_reference(bundle_dir, real_clips):
    """ORT's fused U8S8 kernels saturate int16 pair sums on x86 without VNNI when weights use all 8 bits; the
    CPU graph's 7-bit weights cannot. Unfused (ORT_DISABLE_ALL: Q/DQ computed in float) is the reference:
    on an AVX2 EPYC the fused 8-bit graph's mean logits error vs fp32 was 5.7x the unfused one's, 1.02x with
    7-bit weights (2026-12-07). On a VNNI CPU both agree either way; the weight range is checked everywhere."""
    import onnxruntime as ort

    m = onnx.load(str(bundle_dir / CPU_FILE))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    weights = [inits[d.input[0]] for d in m.graph.node if d.op_type == "DequantizeLinear" and d.input[0] in inits]
    weights = [w for w in weights if w.ndim >= 2]
    # |w| <= 64: two uint8 x int8 products sum to at most 2 * 255 * 64 = 32640, inside int16
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == 64
    feed = real_clips[1]
    ref = run(make_session(bundle_dir / "model.onnx"), feed)
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    unfused = ort.InferenceSession(str(bundle_dir / CPU_FILE), plain, providers=["CPUExecutionProvider"])
    names = [o.name for o in unfused.get_outputs()]
    reference = dict(zip(names, unfused.run(None, feed)))
    fused = run(make_session(bundle_dir / CPU_FILE), feed)
    for k in ("logits", "query_out"):
        err_fused = float(np.abs(fused[k] - ref[k]).mean())
        err_unfused = float(np.abs(reference[k] - ref[k]).mean())
        assert 0 < err_fused < 1.5 * err_unfused, (k, err_fused, err_unfused)


def test_ort_cpu_predictor_picks_cpu_graph(bundle_dir, tmp_path):
    from efficientvis_trt.runtime.load import load_runtime

    rt = load_runtime(bundle_dir, backend="ort", precision="int8", device="cpu")
    assert rt.backend.providers[0] == "CPUExecutionProvider"
    assert "CPU graph model.int8.cpu.onnx" in rt.reason and "TensorRT uses model.int8.onnx" in rt.reason
    sess_inputs = {i.name for i in rt.backend.session.get_inputs()}
    assert sess_inputs == {"frames", "query_in", "boxes_in"}
    # An older bundle without the CPU form: falls back to model.int8.onnx and says so.
    old = tmp_path / "old"
    shutil.copytree(bundle_dir, old)
    (old / CPU_FILE).unlink()
    meta = json.loads((old / "metadata.json").read_text())
    meta["files"].pop(CPU_FILE)
    (old / "metadata.json").write_text(json.dumps(meta))
    rt = load_runtime(old, backend="ort", precision="int8", device="cpu")
    assert "no CPU graph model.int8.cpu.onnx" in rt.reason and "running model.int8.onnx" in rt.reason
    # fp32 on the CPU: nothing to say about graphs.
    assert "CPU graph" not in load_runtime(bundle_dir, backend="ort", precision="fp32", device="cpu").reason


def test_same_seed_gives_byte_identical_cpu_graph(bundle_dir, tmp_path):
    from efficientvis_trt.precision.graph_build import BuildOptions, build

    copy = tmp_path / "again"
    shutil.copytree(bundle_dir, copy)
    build(copy, BuildOptions(precision="int8", calib_clips=CLIPS, seed=0, progress=False))
    assert (copy / CPU_FILE).read_bytes() == (bundle_dir / CPU_FILE).read_bytes()
    assert (copy / "model.int8.onnx").read_bytes() == (bundle_dir / "model.int8.onnx").read_bytes()
