"""Export: the per-clip ONNX graph, the custom RoIAlign node + local function, the bundle, verification.

One tiny random-init bundle per flavour is exported per module (module-scoped fixtures)
and shared by the tests; the exports themselves are verified (ORT == PyTorch over 3
real-video clips with carried state) or they would have raised.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import AttributeProto

from efficientvis_trt.bundle import Bundle, read_onnx_io
from efficientvis_trt.contract import IO_TABLE, PRECISIONS, TrackletState, io_dims, io_table, step
from efficientvis_trt.errors import EvisError
from efficientvis_trt.export.exporter import export_bundle
from efficientvis_trt.export.roi_align_onnx import LEVEL_INPUTS, attach_function, custom_nodes, node_attributes
from efficientvis_trt.export.verify import TOLERANCES, verify_bundle
from efficientvis_trt.plugins.spec import DOMAIN, OP_TYPE, RoIAlignAttrs

T, HW = 3, (128, 224)
TINY = dict(N=10, C=64, K=5, M=2)


def _tree_digest(path: Path) -> dict[str, str]:
    """Content of a bundle's files (our lock, cache and temporaries aside: they carry no bundle state)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.iterdir())
        if p.is_file() and not p.name.startswith(".evis")
    }


@pytest.fixture(scope="module")
def plugin_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "tiny_plugin"
    export_bundle(out, config="tiny", init="random", seed=0, clip_len=T, size=HW, echo=None)
    return out


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from efficientvis_trt.config import get_config
    from efficientvis_trt.export.model_source import random_init_model
    from efficientvis_trt.model.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, random_init_model(get_config("tiny"), seed=3), class_names=list("abcde"))
    return path


@pytest.fixture(scope="module")
def inline_bundle(tmp_path_factory, tiny_checkpoint) -> Path:
    """The inline flavour at opset 16, exported from a checkpoint (clip_len 5) with a shorter --clip-len;
    opset 16 routes it through the TorchScript exporter, so that route is verified against PyTorch too."""
    out = tmp_path_factory.mktemp("export") / "tiny_inline"
    export_bundle(out, checkpoint=tiny_checkpoint, clip_len=T, size=HW, flavour="inline", opset=16, echo=None)
    return out


# ---- the I/O contract ------------------------------------------------------------------------
def _graph_io(model: onnx.ModelProto) -> list[tuple]:
    rows = []
    for direction, values in (("in", model.graph.input), ("out", model.graph.output)):
        for v in values:
            tt = v.type.tensor_type
            rows.append(
                (
                    v.name,
                    direction,
                    [d.dim_param or d.dim_value for d in tt.shape.dim],
                    onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name,
                )
            )
    return rows


def _expected_io(t, hw, n, c, k) -> list[tuple]:
    return [(r["name"], r["dir"], r["shape"], r["dtype"]) for r in io_table(io_dims(t, hw, n, c, k))]


@pytest.mark.parametrize("fixture", ["plugin_bundle", "inline_bundle"])
def test_io_contract_tiny(request, fixture):
    path = request.getfixturevalue(fixture)
    model = onnx.load(str(path / "model.onnx"))
    assert (
        _graph_io(model)
        == _expected_io(T, HW, TINY["N"], TINY["C"], TINY["K"])
        == [  # docs/contract.md, "I/O table", literally
            ("frames", "in", ["B", 3, 128, 224, 3], "uint8"),
            ("query_in", "in", ["B", 10, 64], "float32"),
            ("boxes_in", "in", ["B", 10, 4], "float32"),
            ("logits", "out", ["B", 10, 3, 5], "float32"),
            ("boxes", "out", ["B", 10, 3, 4], "float32"),
            ("mask_logits", "out", ["B", 10, 3, 28, 28], "float32"),
            ("query_out", "out", ["B", 10, 64], "float32"),
            ("boxes_out", "out", ["B", 10, 4], "float32"),
        ]
    )
    assert [r["name"] for r in IO_TABLE] == [
        "frames",
        "query_in",
        "boxes_in",
        "logits",
        "boxes",
        "mask_logits",
        "query_out",
        "boxes_out",
    ]
    # frames is the only uint8 tensor; everything else float32 (docs/contract.md, "I/O table")
    assert {r[3] for r in _graph_io(model) if r[0] != "frames"} == {"float32"}
    assert read_onnx_io(path / "model.onnx") == [
        dict(name=a, dir=b, shape=c, dtype=d) for a, b, c, d in _graph_io(model)
    ]


# ---- the custom node, the local function, the exporter pin -------------------------------------
def test_exporter_pin_and_node_contract(plugin_bundle):
    """Fails loudly if a torch/onnxscript upgrade changes the exporter or the node it writes."""
    meta = json.loads((plugin_bundle / "metadata.json").read_text())
    assert torch.__version__.startswith("2.13")
    assert meta["onnx"]["exporter"] == "dynamo", meta["onnx"].get("exporter_fallback_reason")
    assert meta["onnx"]["exporter_fallback_reason"] is None
    model = onnx.load(str(plugin_bundle / "model.onnx"))
    nodes = custom_nodes(model)
    assert len(nodes) == TINY["M"]
    from efficientvis_trt.config import get_config

    want = RoIAlignAttrs.from_pooler(get_config("tiny").model.pooler).onnx_attributes()
    assert want["plugin_namespace"] == "efficientvis" and want["plugin_version"] == "1"
    types = {
        "output_size": AttributeProto.INT,
        "sampling_ratio": AttributeProto.INT,
        "canonical_box_size": AttributeProto.FLOAT,
        "canonical_level": AttributeProto.INT,
        "aligned": AttributeProto.INT,
        "min_level": AttributeProto.INT,
        "plugin_namespace": AttributeProto.STRING,
        "plugin_version": AttributeProto.STRING,
    }
    for node in nodes:
        assert (node.domain, node.op_type) == (DOMAIN, OP_TYPE) == ("efficientvis", "MultiLevelRoIAlign")
        assert node_attributes(node) == want
        assert {a.name: a.type for a in node.attribute} == types
        assert len(node.input) == 5 and len(node.output) == 1
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 18), (DOMAIN, 1)}
    # nothing else in the graph is custom, and the RoIAlign math is not traced inline
    assert all(n.domain in ("", DOMAIN) for n in model.graph.node)
    assert not any(n.op_type == "RoiAlign" for n in model.graph.node)


def test_local_function_valid(plugin_bundle):
    model = onnx.load(str(plugin_bundle / "model.onnx"))
    funcs = [f for f in model.functions if (f.domain, f.name) == (DOMAIN, OP_TYPE)]
    assert len(funcs) == 1
    fn = funcs[0]
    assert list(fn.input) == ["P2", "P3", "P4", "P5", "rois"] and list(fn.output) == ["pooled"]
    assert {n.domain for n in fn.node} == {""}  # standard ops only
    roi = [n for n in fn.node if n.op_type == "RoiAlign"]
    assert len(roi) == 4
    for n in roi:
        attrs = {a.name: a for a in n.attribute}
        assert attrs["coordinate_transformation_mode"].s == b"half_pixel"
        assert attrs["sampling_ratio"].ref_attr_name == "sampling_ratio"  # bound from the node
        assert attrs["output_height"].ref_attr_name == "output_size"
        assert len(n.input) == 3  # X, rois, batch_indices
    assert {o.domain: o.version for o in fn.opset_import}[""] >= 16
    onnx.checker.check_model(model, full_check=True)
    onnx.checker.check_function(fn)  # context from the function's own opset imports
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dims = {v.name: list(v.type.tensor_type.shape.dim) for v in inferred.graph.value_info}
    for node in custom_nodes(model):
        first, *rest = dims[node.output[0]]
        assert not first.HasField("dim_value")  # B*T: symbolic in the batched graph
        assert [d.dim_value for d in rest] == [TINY["N"], TINY["C"], 14, 14]


def test_function_matches_reference_at_every_level_and_attribute_set():
    """Two nodes with different attributes in one graph, boxes over all FPN levels, B > 1: ORT == reference."""
    from onnx import TensorProto, helper

    from efficientvis_trt.model.roi_align import assign_levels, multi_level_roi_align_reference
    from efficientvis_trt.ort_session import make_session

    b, r, c, h, w = 2, 24, 4, 128, 224
    sets = [
        RoIAlignAttrs(output_size=14, sampling_ratio=2, canonical_box_size=56.0),
        RoIAlignAttrs(output_size=7, sampling_ratio=1, canonical_box_size=112.0, canonical_level=5),
    ]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [b, c, h >> lvl, w >> lvl])
        for n, lvl in zip(LEVEL_INPUTS, range(2, 6))
    ] + [helper.make_tensor_value_info("rois", TensorProto.FLOAT, [b, r, 4])]
    nodes = [
        helper.make_node(OP_TYPE, list(LEVEL_INPUTS) + ["rois"], [f"out{i}"], domain=DOMAIN, **a.onnx_attributes())
        for i, a in enumerate(sets)
    ]
    outputs = [
        helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, [b, r, c, a.output_size, a.output_size])
        for i, a in enumerate(sets)
    ]
    model = attach_function(
        helper.make_model(helper.make_graph(nodes, "g", inputs, outputs), opset_imports=[helper.make_opsetid("", 18)]),
        18,
    )
    onnx.checker.check_model(model, full_check=True)
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(b, c, h >> lvl, w >> lvl, generator=g) for lvl in range(2, 6)]
    centre = torch.rand(b, r, 2, generator=g) * torch.tensor([w, h])
    side = torch.exp(torch.empty(b, r, 2).uniform_(np.log(3.0), np.log(300.0), generator=g))
    rois = torch.cat([centre - side / 2, centre + side / 2], -1)
    rois[0, 0] = torch.tensor([10.0, 10.0, 10.0, 30.0])  # zero area -> min level
    sess = make_session(model)
    feed = {n: f.numpy() for n, f in zip(LEVEL_INPUTS, feats)} | {"rois": rois.numpy()}
    got = sess.run(None, feed)
    for a, out in zip(sets, got):
        levels = assign_levels(rois, a.canonical_box_size, a.canonical_level, 2, 5)
        assert set(levels.flatten().tolist()) == {0, 1, 2, 3}, "test boxes must hit every level"
        ref = multi_level_roi_align_reference(feats, rois, a)
        assert out.shape == (b, r, c, a.output_size, a.output_size)
        np.testing.assert_allclose(out, ref.numpy(), atol=1e-4, rtol=0)


def test_opset_16_plugin_graph(tmp_path):
    """Opset 16 (the minimum for half_pixel RoiAlign): dynamo cannot write it (it emits 18), TorchScript does;
    the local function imports the same opset as the model. (ORT == PyTorch at opset 16: the inline fixture.)"""
    from efficientvis_trt.config import get_config
    from efficientvis_trt.export.exporter import check_graph, export_onnx
    from efficientvis_trt.export.model_source import random_init_model

    cfg = get_config("tiny")
    cfg.model.clip_len, cfg.model.input_size = 2, [64, 96]
    proto, info = export_onnx(random_init_model(cfg, 0), 2, (64, 96), "plugin", 16, "auto")
    assert info["exporter"] == "torchscript" and "opset >= 18" in info["exporter_fallback_reason"][0]
    assert {o.domain: o.version for o in proto.opset_import} == {"": 16, DOMAIN: 1}
    assert {o.domain: o.version for o in proto.functions[0].opset_import} == {"": 16}
    onnx.save(proto, str(tmp_path / "m.onnx"))
    attrs = RoIAlignAttrs.from_pooler(cfg.model.pooler).onnx_attributes()
    got = check_graph(
        tmp_path / "m.onnx", io_table(io_dims(2, (64, 96), 10, 64, 5)), "plugin", attrs, 2, [10, 64, 14, 14]
    )
    assert got["nodes"] == 2


def test_simplify_with_our_shape_inference_gives_onnxslims_graph(tmp_path):
    """`simplify` runs onnxslim without its model-copying shape inference (docs/build-memory.md, "Export"):
    on the dynamo export it must still give the nodes, weights and functions onnxslim gives by itself."""
    import onnxslim

    from efficientvis_trt.config import get_config
    from efficientvis_trt.export.exporter import export_onnx, simplify
    from efficientvis_trt.export.model_source import random_init_model

    cfg = get_config("tiny")
    cfg.model.clip_len, cfg.model.input_size = 2, [64, 96]
    proto, info = export_onnx(random_init_model(cfg, 0), 2, (64, 96), "plugin", 18, "auto")
    assert info["exporter"] == "dynamo"
    onnx.save(proto, str(tmp_path / "raw.onnx"))
    ours, note = simplify(tmp_path / "raw.onnx")
    theirs = onnxslim.slim(str(tmp_path / "raw.onnx"))
    assert note.startswith("onnxslim ") and len(ours.graph.node) < len(proto.graph.node)

    def nodes(m):
        return [
            (n.op_type, list(n.input), list(n.output), [a.SerializeToString() for a in n.attribute])
            for n in m.graph.node
        ]

    assert nodes(ours) == nodes(theirs)
    assert {t.name: t.SerializeToString() for t in ours.graph.initializer} == {
        t.name: t.SerializeToString() for t in theirs.graph.initializer
    }
    assert [f.SerializeToString() for f in ours.functions] == [f.SerializeToString() for f in theirs.functions]


# ---- ORT == PyTorch ---------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["plugin_bundle", "inline_bundle"])
def test_export_verification_report(request, fixture):
    bundle = Bundle.open(request.getfixturevalue(fixture))
    rep = bundle.metadata["verification"]
    assert rep["passed"] and rep["clips"] == 3 and rep["video"] == "bikes.mp4"
    assert rep["padded_frames"] == 1 and rep["frames"] == 3 * T - 1
    for name, (atol, rtol) in TOLERANCES.items():
        row = rep["outputs"][name]
        assert row["max_abs"] <= atol + rtol * row["ref_max_abs"]
        assert row["max_abs"] < 1e-4  # measured ~1e-6: far inside the limits


def test_state_is_carried_and_matters(plugin_bundle):
    """Carried state changes the next clip's outputs (so comparing over 3 clips tests the carry)."""
    from efficientvis_trt.export.verify import load_clips
    from efficientvis_trt.ort_session import make_session, run

    bundle = Bundle.open(plugin_bundle)
    clips, _ = load_clips(None, T, HW, 2)
    sess = make_session(bundle.onnx_path())
    init = TrackletState.initial(bundle.init_state())  # one stream: B = 1
    _, state = step(lambda inputs: run(sess, inputs), clips[0][0][None], init)
    carried, _ = step(lambda inputs: run(sess, inputs), clips[1][0][None], state)
    fresh, _ = step(lambda inputs: run(sess, inputs), clips[1][0][None], init)
    assert np.abs(carried["logits"] - fresh["logits"]).max() > 1e-3
    assert not np.allclose(state.boxes, init.boxes)  # boxes moved: random init has non-zero box deltas


def test_inline_flavour_has_no_custom_domain(inline_bundle, tiny_checkpoint):
    from efficientvis_trt.io_utils import file_sha256

    model = onnx.load(str(inline_bundle / "model.onnx"))
    assert not model.functions
    assert all(o.domain != DOMAIN for o in model.opset_import)
    assert all(n.domain == "" for n in model.graph.node)
    assert sum(n.op_type == "RoiAlign" for n in model.graph.node) == 4 * TINY["M"]
    bundle = Bundle.open(inline_bundle)
    assert bundle.metadata["onnx"]["flavour"] == "inline" and bundle.metadata["onnx"]["opset"] == 16
    assert bundle.metadata["onnx"]["exporter"] == "torchscript"
    assert {o.domain: o.version for o in model.opset_import} == {"": 16}
    assert bundle.metadata["source"] == {
        "kind": "checkpoint",
        "path": str(tiny_checkpoint.resolve()),
        "sha256": file_sha256(tiny_checkpoint),
    }
    assert bundle.class_names == list("abcde")
    assert bundle.clip_len == T and bundle.config.model.clip_len == 5  # checkpoint clip_len kept for its weights


def test_over_tolerance_fails_and_writes_nothing(tmp_path, monkeypatch):
    import efficientvis_trt.export.verify as verify

    monkeypatch.setattr(verify, "TOLERANCES", {"logits": (-1.0, 0.0)})  # impossible: every run "differs"
    out = tmp_path / "b"
    with pytest.raises(EvisError, match="verification failed.*logits.*nothing written"):
        export_bundle(
            out,
            config="tiny",
            init="random",
            clip_len=2,
            size=(64, 96),
            exporter="torchscript",
            num_clips=1,
            simplify_graph=False,
            echo=None,
        )
    assert not out.exists() and _siblings(out) == []


def test_simplified_graph_that_fails_verification_is_not_kept(tmp_path, monkeypatch):
    """If the simplifier changes the numbers, the un-simplified graph ships and metadata says why."""
    from onnx import helper

    import efficientvis_trt.export.exporter as exporter

    def bad_simplify(graph):  # the exporter passes the raw graph's path (docs/build-memory.md, "Export")
        bad = onnx.load(graph) if isinstance(graph, str) else graph
        producer = next(n for n in bad.graph.node if "logits" in n.output)
        producer.output[list(producer.output).index("logits")] = "logits_pre"
        one = helper.make_node(
            "Constant", [], ["one"], value=helper.make_tensor("v", onnx.TensorProto.FLOAT, [], [1.0])
        )
        bad.graph.node.extend([one, helper.make_node("Add", ["logits_pre", "one"], ["logits"])])
        return bad, "broken-simplifier 1.0"

    monkeypatch.setattr(exporter, "simplify", bad_simplify)
    out = tmp_path / "b"
    export_bundle(
        out, config="tiny", init="random", clip_len=2, size=(64, 96), exporter="torchscript", num_clips=1, echo=None
    )
    meta = Bundle.open(out).metadata
    assert meta["onnx"]["simplifier"] is None
    assert "broken-simplifier 1.0 output failed verification" in meta["onnx"]["simplifier_note"]
    assert meta["verification"]["passed"]
    assert not any(n.output[0] == "logits_pre" for n in onnx.load(str(out / "model.onnx")).graph.node)


# ---- clips and padding ---------------------------------------------------------------------------
def test_video_length_not_multiple_of_clip_len(plugin_bundle, tmp_path):
    """A 5-frame video with T=3: 2 clips, the last padded with 1 repeated frame; graph == PyTorch on it."""
    import cv2

    from efficientvis_trt.video import read_frames, sample_video

    frames = read_frames(sample_video("bikes.mp4"), max_frames=5)
    path = tmp_path / "short.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (frames[0].shape[1], frames[0].shape[0]))
    for f in frames:
        writer.write(f)
    writer.release()
    assert len(read_frames(path)) == 5
    rep = verify_bundle(plugin_bundle, num_clips=3, video=path)
    assert (rep["frames"], rep["clips"], rep["padded_frames"]) == (5, 2, 1)
    assert rep["passed"]


def test_verification_runs_any_number_of_streams(plugin_bundle):
    """ONNX Runtime over B = 3 streams in one batch equals three B = 1 runs; verification passes at B = 1 and 3."""
    from efficientvis_trt.export.verify import load_clips, run_onnxruntime, stream_clips

    bundle = Bundle.open(plugin_bundle)
    clips, _ = load_clips(None, T, HW, 3)
    streams = stream_clips(clips, 3)
    assert [lane[0][0] is clips[j][0] for j, lane in enumerate(streams)] == [True] * 3  # rotated: differ per step
    batched = run_onnxruntime(bundle.onnx_path(), streams, bundle.init_state())
    for lane, got in zip(streams, batched, strict=True):
        (alone,) = run_onnxruntime(bundle.onnx_path(), [lane], bundle.init_state())
        for a, b in zip(got, alone, strict=True):
            for name in a:
                np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert not np.allclose(batched[0][1]["logits"], batched[1][1]["logits"], atol=1e-4)  # the streams differ
    for n in (1, 3):
        rep = verify_bundle(plugin_bundle, num_clips=2, streams=n)
        assert rep["passed"] and rep["streams"] == n and f"B={n}" in rep["backend"]


# ---- atomicity -------------------------------------------------------------------------------------
def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".evis-tmp-*"))


@pytest.mark.parametrize("existing", [False, True])
def test_failure_after_model_written_leaves_nothing(plugin_bundle, tmp_path, monkeypatch, existing):
    import efficientvis_trt.bundle as bundle_module

    out = tmp_path / "bundle"
    if existing:
        shutil.copytree(plugin_bundle, out)
    before = _tree_digest(out) if existing else None
    seen = {}

    def boom(tx):
        seen["model_written"] = "model.onnx" in tx._staged and tx._staged["model.onnx"].is_file()
        raise RuntimeError("injected failure")

    monkeypatch.setattr(bundle_module.Transaction, "_commit", boom)
    with pytest.raises(RuntimeError, match="injected"):
        export_bundle(
            out,
            config="tiny",
            init="random",
            clip_len=2,
            size=(64, 96),
            verify=False,
            exporter="torchscript",
            simplify_graph=False,
            echo=None,
        )
    assert seen["model_written"]
    if existing:
        assert _tree_digest(out) == before
        Bundle.open(out)
        assert _temporaries(out) == []
    else:
        assert not out.exists()
    assert _siblings(out) == []


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGINT"])
def test_killed_export_keeps_existing_bundle(plugin_bundle, tmp_path, signal_name):
    """A real process killed while verifying (model.onnx already in its temp folder)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers import interruptible, next_writer

    out = tmp_path / "bundle"
    shutil.copytree(plugin_bundle, out)
    before = _tree_digest(out)
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "efficientvis_trt",
            "export",
            "--config",
            "tiny",
            "--init",
            "random",
            "--clip-len",
            "2",
            "--size",
            "64x96",
            "--exporter",
            "torchscript",
            "--no-simplify",
            "--num-clips",
            "120",
            "--out",
            str(out),
        ],
        env=env,
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=interruptible,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if any(out.glob(".evis-tmp-*-model.onnx.*")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "export finished or died before it could be interrupted"
        time.sleep(0.1)  # inside verification: 120 clips (all of bikes.mp4) take seconds even on a quiet machine
        proc.send_signal(getattr(signal, signal_name))
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert _tree_digest(out) == before
    Bundle.open(out)
    if signal_name == "SIGKILL":  # nothing ran on the way out: the next writer removes what it left
        next_writer(out)
    assert _temporaries(out) == []


# ---- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(config="tiny", init="random", clip_len=1), "at least 2"),
        (dict(config="tiny", init="random", size=(100, 224)), "multiples of 32"),
        (dict(config="tiny", init="random", size="128x2"), "multiples of 32"),
        (dict(config="tiny", init="random", size="big"), "HxW"),
        (dict(config="tiny", init="random", opset=15), "opset"),
        (dict(config="tiny", init="random", flavour="fused"), "flavour"),
        (dict(init="random"), "--config"),
        (dict(), "CHECKPOINT"),
        (dict(checkpoint="/nonexistent/model.pt"), "not found"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, kwargs, message):
    out = tmp_path / "b"
    with pytest.raises(EvisError, match=message) as err:
        export_bundle(out, echo=None, **kwargs)
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_bad_checkpoints(tmp_path, tiny_checkpoint):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02 not a torch file" * 10)
    with pytest.raises(EvisError, match="corrupt"):
        export_bundle(tmp_path / "b", checkpoint=corrupt, echo=None)
    with pytest.raises(EvisError, match="another architecture"):
        export_bundle(tmp_path / "b", checkpoint=tiny_checkpoint, config="r18", echo=None)
    with pytest.raises(EvisError, match="time embedding"):
        export_bundle(tmp_path / "b", checkpoint=tiny_checkpoint, clip_len=6, echo=None)
    with pytest.raises(EvisError, match="not both"):
        export_bundle(tmp_path / "b", checkpoint=tiny_checkpoint, config="tiny", init="random", echo=None)
    assert not (tmp_path / "b").exists()


def test_cli_errors_are_one_line(capsys):
    from efficientvis_trt.cli import main

    assert main(["export", "--config", "tiny", "--init", "random"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["export", "--config", "tiny", "--init", "random", "--out", "x", "--clip-len", "1"]) == 2
    err = capsys.readouterr().err
    assert "at least 2" in err and err.count("\n") == 1


def test_cli_verify(plugin_bundle, capsys):
    """`evis export --verify`: rebuilds the PyTorch model from the metadata (seed + weights fingerprint) and
    compares again over 3 real-video clips, state carried in both backends."""
    from efficientvis_trt.cli import main

    before = (plugin_bundle / "metadata.json").read_bytes()
    assert main(["export", "--verify", str(plugin_bundle)]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "3 clips of bikes.mp4" in out
    for name in TOLERANCES:
        assert name in out
    assert (plugin_bundle / "metadata.json").read_bytes() == before  # a check never rewrites the bundle


# ---- Bundle ---------------------------------------------------------------------------------------
def test_bundle_api(plugin_bundle, tmp_path):
    from efficientvis_trt.export.model_source import load_source

    b = Bundle.open(plugin_bundle)
    assert b.path == plugin_bundle
    assert (b.clip_len, b.input_hw, b.num_queries, b.hidden_dim, b.num_classes) == (T, HW, 10, 64, 5)
    assert b.class_names == [f"class_{i}" for i in range(5)] and b.config.name == "tiny"
    from efficientvis_trt.export.exporter import DEFAULT_OPSET
    from efficientvis_trt.video import PAD_VALUE

    assert b.metadata["onnx"]["opset"] == DEFAULT_OPSET and b.metadata["source"]["sha256"] == "random-init seed 0"
    assert b.metadata["letterbox"]["pad_value"] == PAD_VALUE  # the value the runtime's letterbox pads with
    assert {"torch", "onnx", "onnxruntime", "efficientvis_trt"} <= set(b.metadata["versions"])
    q, bx = b.init_state()
    assert q.shape == (10, 64) and bx.shape == (10, 4) and q.dtype == bx.dtype == np.float32
    ref_q, ref_b = load_source(config="tiny", init="random", seed=0, clip_len=T, size=HW).model.initial_state()
    np.testing.assert_array_equal(q, ref_q.numpy())
    np.testing.assert_array_equal(bx, ref_b.numpy())
    assert b.onnx_path() == plugin_bundle / "model.onnx" == b.onnx_path("fp32")
    assert b.available_precisions() == ["fp32"] and PRECISIONS == ("fp32", "fp16", "int8")
    assert b.engine_dir == plugin_bundle / "engines"
    with pytest.raises(EvisError, match=r"evis build .* --precision fp16"):
        b.onnx_path("fp16")
    with pytest.raises(EvisError, match="unknown precision"):
        b.onnx_path("bf16")

    copy = tmp_path / "copy"
    shutil.copytree(plugin_bundle, copy)
    c = Bundle.open(copy)
    (copy / "model.int8.onnx").write_bytes((copy / "model.onnx").read_bytes())
    assert c.available_precisions() == ["fp32"]  # a file the metadata does not list is not part of the bundle
    with c.transaction() as tx:
        tx.add_file("model.int8.onnx", copy / "model.onnx", role="graph", precision="int8")
        tx.metadata["note"] = "kept"
    assert c.available_precisions() == ["fp32", "int8"] and c.onnx_path("int8").name == "model.int8.onnx"
    fp16 = onnx.load(str(copy / "model.onnx"))
    fp16.graph.input[1].type.tensor_type.elem_type = onnx.TensorProto.FLOAT16  # a converter that changed I/O types
    with pytest.raises(EvisError, match=r"model.fp16.onnx.*query_in"), c.transaction() as tx:
        tx.add_file("model.fp16.onnx", fp16.SerializeToString(), role="graph", precision="fp16")
    again = Bundle.open(copy)
    assert again.metadata["note"] == "kept" and again.metadata["verification"]["passed"]  # other fields kept
    assert again.available_precisions() == ["fp32", "int8"] and not list(copy.glob(".evis-tmp-*"))


def _corrupt(kind: str, path: Path) -> None:
    meta_path = path / "metadata.json"
    meta = json.loads(meta_path.read_text())
    if kind == "no model":
        (path / "model.onnx").unlink()
    elif kind == "no state":
        (path / "init_state.npz").unlink()
    elif kind == "no metadata":
        meta_path.unlink()
        return
    elif kind == "schema":
        meta["schema_version"] = 99
    elif kind == "io table":
        meta["io"][0]["dtype"] = "float32"
    elif kind == "truncated model":
        data = (path / "model.onnx").read_bytes()
        (path / "model.onnx").write_bytes(data[: len(data) // 2])
    elif kind == "state shape":
        np.savez(path / "init_state.npz", query=np.zeros((10, 32), np.float32), boxes=np.zeros((10, 4), np.float32))
        data = (path / "init_state.npz").read_bytes()  # recorded as if a writer had made it: the shape check fires
        meta["files"]["init_state.npz"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    elif kind == "swapped same size":
        data = bytearray((path / "model.onnx").read_bytes())
        data[-1] ^= 1
        (path / "model.onnx").write_bytes(bytes(data))
    elif kind == "bad input_size":
        meta["input_size"] = ["128", 224]
    elif kind == "other graph":
        from onnx import TensorProto, helper

        io = io_table(io_dims(T + 1, HW, 10, 64, 5))  # a graph exported with another clip length
        vi = [
            helper.make_tensor_value_info(
                r["name"], TensorProto.UINT8 if r["dtype"] == "uint8" else TensorProto.FLOAT, r["shape"]
            )
            for r in io
        ]
        graph = helper.make_graph([], "g", vi[:3], vi[3:])
        onnx.save(helper.make_model(graph), str(path / "model.onnx"))
    elif kind == "not json":
        meta_path.write_text("{broken")
        return
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "kind, names, message",
    [
        ("no model", "model.onnx", "missing"),
        ("no state", "init_state.npz", "missing"),
        ("no metadata", "metadata.json", "missing"),
        ("not json", "metadata.json", "JSON"),
        ("schema", "metadata.json", "schema_version"),
        ("io table", "metadata.json", "frames"),
        ("truncated model", "model.onnx", "truncated"),
        ("state shape", "init_state.npz", "query"),
        ("other graph", "model.onnx", "replaced"),
        ("swapped same size", "model.onnx", "sha256 differs"),
        ("bad input_size", "metadata.json", "input_size"),
    ],
)
def test_bundle_open_errors(plugin_bundle, tmp_path, kind, names, message):
    copy = tmp_path / "b"
    shutil.copytree(plugin_bundle, copy)
    _corrupt(kind, copy)
    with pytest.raises(EvisError, match=message) as err:
        Bundle.open(copy)
    assert names in str(err.value) and "\n" not in str(err.value)


def test_bundle_open_not_a_folder(tmp_path):
    with pytest.raises(EvisError, match="not a folder"):
        Bundle.open(tmp_path / "nothing")
