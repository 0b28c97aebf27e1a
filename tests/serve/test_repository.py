"""`evis serve`: the model repository, checked against Triton's own ModelConfig schema (no server needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from efficientvis_trt.bundle import Bundle
from efficientvis_trt.cli import main as evis_main
from efficientvis_trt.errors import EvisError
from efficientvis_trt.serve.client import is_retryable, parse_server
from efficientvis_trt.serve.repository import (
    MARKER_FILE,
    MODEL_NAMES,
    STATEFUL_SUFFIX,
    ServedContract,
    read_config,
    write_repository,
)


@pytest.fixture(scope="module")
def repo(tiny_random_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("repo") / "models"
    report = write_repository(tiny_random_bundle, out, max_batch_size=4, server_state=True, queue_delay_us=1500)
    return out, report


def _io(bundle: Bundle) -> dict[str, dict]:
    return {r["name"]: r for r in bundle.metadata["io"]}


def test_every_config_round_trips_through_tritons_schema(repo, tiny_random_bundle):
    out, report = repo
    bundle = Bundle.open(tiny_random_bundle)
    io = _io(bundle)
    written = sorted(p.parent.name for p in out.glob("*/config.pbtxt"))
    assert (
        written
        == sorted(report.models)
        == sorted([MODEL_NAMES["python"], MODEL_NAMES["onnxruntime"], MODEL_NAMES["onnxruntime"] + STATEFUL_SUFFIX])
    )
    for name in written:
        text = (out / name / "config.pbtxt").read_text()
        cfg = read_config(out / name / "config.pbtxt")
        assert cfg.name == name
        assert text_format.MessageToString(cfg) == text  # nothing Triton's parser would drop or reorder
        stateful = name.endswith(STATEFUL_SUFFIX)
        tensors = {t.name: t for t in [*cfg.input, *cfg.output]}
        expected = {n for n in io if not (stateful and n in ("query_in", "boxes_in", "query_out", "boxes_out"))}
        assert set(tensors) == expected
        assert cfg.max_batch_size == 4
        for tname, t in tensors.items():
            assert io[tname]["shape"][0] == "B"  # the batched graph's stream dimension is Triton's batch dimension
            assert list(t.dims) == list(io[tname]["shape"])[1:], tname
            want = mc.TYPE_UINT8 if io[tname]["dtype"] == "uint8" else mc.TYPE_FP32
            assert t.data_type == want, tname
        assert (out / name / "1" / "model.onnx").read_bytes() == (tiny_random_bundle / "model.onnx").read_bytes()


def test_python_model_batches_dynamically_and_onnxruntime_model_is_the_platform(repo):
    out, _ = repo
    py = read_config(out / MODEL_NAMES["python"] / "config.pbtxt")
    assert py.backend == "python" and py.max_batch_size == 4
    assert py.dynamic_batching.max_queue_delay_microseconds == 1500
    assert py.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert (out / MODEL_NAMES["python"] / "1" / "model.py").read_text().startswith('"""Triton python-backend model')
    ort = read_config(out / MODEL_NAMES["onnxruntime"] / "config.pbtxt")
    assert ort.platform == "onnxruntime_onnx" and ort.default_model_filename == "model.onnx"
    assert ort.max_batch_size == 4 and ort.dynamic_batching.max_queue_delay_microseconds == 1500


def test_stateful_model_keeps_the_state_in_the_server_from_the_clip0_files(repo, tiny_random_bundle):
    out, _ = repo
    name = MODEL_NAMES["onnxruntime"] + STATEFUL_SUFFIX
    cfg = read_config(out / name / "config.pbtxt")
    pairs = {(s.input_name, s.output_name) for s in cfg.sequence_batching.state}
    assert pairs == {("query_in", "query_out"), ("boxes_in", "boxes_out")}
    query, boxes = Bundle.open(tiny_random_bundle).init_state()
    for state, arr in zip(cfg.sequence_batching.state, (query, boxes)):
        assert list(state.dims) == list(arr.shape)
        init = state.initial_state[0]
        raw = (out / name / "initial_state" / init.data_file).read_bytes()
        assert np.array_equal(np.frombuffer(raw, "<f4").reshape(arr.shape), arr)


def test_parameters_carry_the_contract_a_client_needs(repo, tiny_random_bundle):
    out, _ = repo
    bundle = Bundle.open(tiny_random_bundle)
    cfg = read_config(out / MODEL_NAMES["python"] / "config.pbtxt")
    # the JSON form the server returns (gRPC's as_json: int64 dims as strings)
    served = ServedContract.from_config(json_format.MessageToDict(cfg, preserving_proto_field_name=True), "test")
    query, boxes = bundle.init_state()
    assert served.fingerprint == bundle.metadata["weights_sha256"]
    assert (served.clip_len, served.input_hw, served.class_names) == (
        bundle.clip_len,
        bundle.input_hw,
        bundle.class_names,
    )
    assert np.array_equal(served.init_query, query) and np.array_equal(served.init_boxes, boxes)
    marker = json.loads((out / MARKER_FILE).read_text())
    assert marker["evis_fingerprint"] == served.fingerprint and set(marker["models"]) == {
        p.parent.name for p in out.glob("*/config.pbtxt")
    }


def test_a_config_triton_would_reject_is_an_error(tmp_path):
    bad = tmp_path / "config.pbtxt"
    bad.write_text('name: "x"\nmax_batch_size: 4\ndynamic_batching { max_queue_delay: 5 }\n')  # no such field
    with pytest.raises(EvisError, match="not a valid Triton model config"):
        read_config(bad)
    bad.write_text('name: "x"\ninput { name: "a" data_type: TYPE_FLOAT32 dims: 3 }\n')  # no such enum value
    with pytest.raises(EvisError, match="not a valid Triton model config"):
        read_config(bad)


def test_tensorrt_model_uses_the_bundles_engine_else_says_what_to_build(repo, tiny_random_bundle, tmp_path):
    _, report = repo
    assert not any(n.startswith(MODEL_NAMES["tensorrt"]) for n in report.models)
    assert any("evis_tensorrt not written" in n and "evis build" in n and "--backend trt" in n for n in report.notes)
    # an engine as `evis build --backend trt` leaves it (plan + metadata JSON); only its file is served here
    bundle = tmp_path / "bundle"
    import shutil

    shutil.copytree(tiny_random_bundle, bundle)
    engines = bundle / "engines"
    engines.mkdir()
    plan = engines / "model.fp32.NVIDIA_H200.sm90.trt10.13.0.plan"
    plan.write_bytes(b"not really a plan")
    meta = {
        "precision": "fp32",
        "compute_capability": "9.0",
        "plugin_path": {"selected": "aot", "in_engine": "aot"},
        "batch_profile": {"min": 1, "opt": 2, "max": 2},
    }
    (engines / "model.fp32.NVIDIA_H200.sm90.trt10.13.0.json").write_text(json.dumps(meta))
    out = tmp_path / "repo"
    report = write_repository(bundle, out, backends=("tensorrt",), max_batch_size=8)
    cfg = read_config(out / MODEL_NAMES["tensorrt"] / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and cfg.default_model_filename == "model.plan"
    assert cfg.max_batch_size == 2 and any("--batch 1:8:8" in n for n in report.notes)  # what the profile accepts
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert (out / MODEL_NAMES["tensorrt"] / "1" / "model.plan").read_bytes() == b"not really a plan"
    # a JIT-plugin engine runs Python inside TensorRT: Triton's TensorRT backend cannot load it
    (engines / "model.fp32.NVIDIA_H200.sm90.trt10.13.0.json").write_text(
        json.dumps({**meta, "plugin_path": {"selected": "jit", "in_engine": "jit"}})
    )
    report = write_repository(bundle, out, backends=("tensorrt", "python"))
    assert not (out / MODEL_NAMES["tensorrt"]).exists()  # the repository was replaced whole
    assert any("JIT" in n for n in report.notes)


def test_repo_is_replaced_whole_and_a_foreign_folder_is_refused(tiny_random_bundle, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    assert evis_main(["serve", str(tiny_random_bundle), "--repo", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a repository written by `evis serve`" in err
    assert (foreign / "keep.txt").read_text() == "x"
    assert evis_main(["serve", str(tiny_random_bundle), "--repo", str(tmp_path / "r"), "--precision", "int8"]) == 2
    assert "evis build" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert evis_main(["serve", str(tiny_random_bundle), "--repo", str(tmp_path / "r"), "--models", "python"]) == 0
    printed = capsys.readouterr().out
    assert "evis_python" in printed and "docker run" in printed
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted([MARKER_FILE, "evis_python"])


def test_client_side_checks_need_no_server(tiny_random_bundle, tmp_path, capsys):
    assert parse_server("grpc://localhost:8001/") == "localhost:8001"
    for bad in ("localhost", "host:port", ":8001", "h:70000"):
        with pytest.raises(EvisError, match="HOST:PORT"):
            parse_server(bad)
    assert is_retryable(ConnectionRefusedError(111, "Connection refused"))
    from tritonclient.utils import InferenceServerException

    assert is_retryable(InferenceServerException("failed to connect", status="StatusCode.UNAVAILABLE"))
    assert not is_retryable(InferenceServerException("unexpected shape", status="StatusCode.INVALID_ARGUMENT"))
    assert not is_retryable(InferenceServerException("evis_python: another bundle", status="400"))
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    code = evis_main(["infer", str(tiny_random_bundle), str(video), "--server", "127.0.0.1:1", "--backend", "trt"])
    assert code == 2 and "with --server the server's model runs" in capsys.readouterr().err
