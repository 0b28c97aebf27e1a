"""TensorRT engine bookkeeping that needs no TensorRT: names, compatibility messages, layer-JSON parsing.

The layer JSON below follows the format EngineInspector writes with ProfilingVerbosity.DETAILED
(keys as NVIDIA's trt-engine-explorer reads them); it tests our parser, not TensorRT.
The real builds are in trt/test_engine_build.py and run only where TensorRT and a GPU exist.
"""

from __future__ import annotations

import json

import pytest

from efficientvis_trt.errors import BackendUnavailable, EvisError
from efficientvis_trt.precision import engine as E


def test_engine_path_names_precision_gpu_cc_and_trt_version(tmp_path):
    p = E.engine_path(tmp_path, "int8", "NVIDIA H200", (9, 0), "10.13.0.35")
    assert p == tmp_path / "engines" / "model.int8.NVIDIA_H200.sm90.trt10.13.0.plan"
    assert E.engine_metadata_path(p).name == "model.int8.NVIDIA_H200.sm90.trt10.13.0.json"
    assert (
        E.timing_cache_path(tmp_path, "Orin (nvgpu)", (8, 7), "10.3.0").name == "timing.Orin_nvgpu.sm87.trt10.3.0.cache"
    )
    assert (
        E.engine_path(tmp_path, "fp16", "NVIDIA GeForce RTX 4090", (8, 9), "11.4").name
        == "model.fp16.NVIDIA_GeForce_RTX_4090.sm89.trt11.4.plan"
    )
    with pytest.raises(EvisError):
        E.engine_path(tmp_path, "int4", "x", (9, 0), "10.3")


def test_find_engine_only_finds_this_gpu_and_version(tmp_path):
    target = E.engine_path(tmp_path, "fp16", "NVIDIA H200", (9, 0), "10.13.0")
    assert E.find_engine(tmp_path, "fp16", "NVIDIA H200", (9, 0), "10.13.0.35") is None
    target.parent.mkdir(parents=True)
    target.write_bytes(b"plan")
    assert E.find_engine(tmp_path, "fp16", "NVIDIA H200", (9, 0), "10.13.0.35") == target
    assert E.find_engine(tmp_path, "fp16", "NVIDIA H100 80GB HBM3", (9, 0), "10.13.0") is None
    assert E.find_engine(tmp_path, "fp16", "NVIDIA H200", (9, 0), "11.4.0") is None
    assert E.find_engine(tmp_path, "int8", "NVIDIA H200", (9, 0), "10.13.0") is None


def test_engine_from_another_gpu_or_version_asks_for_a_rebuild():
    meta = {"precision": "int8", "gpu": "NVIDIA H200", "compute_capability": "9.0", "tensorrt_version": "10.13.0.35"}
    E.check_engine_compat(meta, "NVIDIA H200", (9, 0), "10.13.0.40", "m.plan", "B")  # same x.y.z: fine
    with pytest.raises(EvisError, match=r"sm90.*sm87.*evis build B --precision int8 --backend trt"):
        E.check_engine_compat(meta, "Orin", (8, 7), "10.13.0", "m.plan", "B")
    with pytest.raises(EvisError, match=r"TensorRT 10.13.0 vs installed 11.4.0"):
        E.check_engine_compat(meta, "NVIDIA H200", (9, 0), "11.4.0", "m.plan", "B")


def _layer(name, kind, dtype_in, dtype_out=None, param=True):
    fmt = {
        "fp32": "Row major linear FP32",
        "fp16": "Channel major FP16 format where channel % 8 == 0",
        "int8": "Thirty-two wide channel vectorized row major Int8 format",
    }
    d = {
        "Name": name,
        "LayerType": "CaskConvolution" if kind == "Convolution" else kind,
        "Inputs": [{"Name": f"{name}_in", "Dimensions": [1, 64, 8, 8], "Format/Datatype": fmt[dtype_in]}],
        "Outputs": [
            {"Name": f"{name}_out", "Dimensions": [1, 64, 8, 8], "Format/Datatype": fmt[dtype_out or dtype_in]}
        ],
    }
    if param:
        d["ParameterType"] = kind
    return d


def _engine(*layers):
    return json.dumps({"Layers": list(layers), "Bindings": ["frames", "logits"]})


def test_layer_precision_check_catches_a_silent_fp32_engine():
    fp32_only = E.summarize_layers(
        _engine(
            _layer("conv1", "Convolution", "fp32"),
            _layer("fc", "MatrixMultiply", "fp32"),
            _layer("relu", "Activation", "fp32"),
        )
    )
    assert fp32_only.compute_layers == 2 and fp32_only.compute_by_precision == {"fp32": 2}
    E.verify_layer_precision(fp32_only, "fp32")
    for asked in ("fp16", "int8"):
        with pytest.raises(EvisError, match="refusing to write"):
            E.verify_layer_precision(fp32_only, asked)


def test_layer_precision_check_accepts_engines_at_the_asked_precision():
    int8 = E.summarize_layers(
        _engine(
            _layer("conv1", "Convolution", "int8", "fp16"),
            _layer("conv2", "Convolution", "int8"),
            _layer("head", "MatrixMultiply", "fp32"),
        )
    )
    assert int8.compute_by_precision == {"int8": 2, "fp32": 1}
    E.verify_layer_precision(int8, "int8")
    with pytest.raises(EvisError):
        E.verify_layer_precision(int8, "fp32")
    fp16 = E.summarize_layers(
        _engine(
            _layer("conv1", "Convolution", "fp16"),
            _layer("myelin", "Myelin", "fp16", param=False),
            _layer("softmax_head", "MatrixMultiply", "fp32"),
        )
    )
    E.verify_layer_precision(fp16, "fp16")
    with pytest.raises(EvisError):
        E.verify_layer_precision(fp16, "int8")


def test_layer_names_only_engine_cannot_be_checked():
    with pytest.raises(EvisError, match="DETAILED"):
        E.summarize_layers(json.dumps({"Layers": ["conv1", "conv2"], "Bindings": []}))


@pytest.mark.skipif(E.tensorrt_available(), reason="TensorRT is installed: the missing-TensorRT path does not apply")
def test_missing_tensorrt_is_one_clear_backend_unavailable(tmp_path):
    with pytest.raises(BackendUnavailable) as info:
        E.build_engine(tmp_path, "fp16", tmp_path / "model.fp16.onnx")
    msg = str(info.value)
    assert "pip install" in msg and "\n" not in msg
    assert not any(tmp_path.iterdir())
    with pytest.raises(BackendUnavailable):
        E.load_engine(tmp_path / "x.plan")
