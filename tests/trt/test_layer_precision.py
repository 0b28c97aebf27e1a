"""The layer-precision verdict: sound or "unknown", never a wrong pass/fail.

The layer JSON below follows the format EngineInspector writes with ProfilingVerbosity.DETAILED
(keys as NVIDIA's trt-engine-explorer reads them); it tests our reading of it, not TensorRT.
"""

from __future__ import annotations

import json

import pytest

from efficientvis_trt.errors import EvisError
from efficientvis_trt.trt.layers import layer_precision_verdict, summarize_layers

FMT = {
    "fp32": "Row major linear FP32",
    "fp16": "Channel major FP16 format where channel % 8 == 0",
    "int8": "Thirty-two wide channel vectorized row major Int8 format",
}


def _layer(name, kind, dtype_in, dtype_out=None, param=True):
    d = {
        "Name": name,
        "LayerType": "CaskConvolution" if kind == "Convolution" else kind,
        "Inputs": [{"Name": f"{name}_in", "Dimensions": [1, 64, 8, 8], "Format/Datatype": FMT[dtype_in]}],
        "Outputs": [
            {"Name": f"{name}_out", "Dimensions": [1, 64, 8, 8], "Format/Datatype": FMT[dtype_out or dtype_in]}
        ],
    }
    if param:
        d["ParameterType"] = kind
    return d


def _verdict(precision, *layers):
    return layer_precision_verdict(summarize_layers(json.dumps({"Layers": list(layers)})), precision).verdict


def test_a_silent_fp32_engine_fails_when_nothing_is_hidden():
    layers = (_layer("conv1", "Convolution", "fp32"), _layer("fc", "MatrixMultiply", "fp32"))
    assert _verdict("fp32", *layers) == "pass"
    assert _verdict("fp16", *layers) == "fail"
    assert _verdict("int8", *layers) == "fail"


def test_an_fp16_graph_with_many_fp32_head_layers_passes():
    # The old rule ("more fp32 than fp16 compute layers" -> fail) rejected exactly this correct graph.
    layers = [_layer("backbone", "Convolution", "fp16")] + [
        _layer(f"head{i}", "MatrixMultiply", "fp32") for i in range(5)
    ]
    assert _verdict("fp16", *layers) == "pass"


def test_compute_fused_into_myelin_is_unknown_not_fail():
    # A Myelin region with fp32 boundaries may hold fp16 compute inside: the inspector cannot say.
    layers = (_layer("myelin_region", "Myelin", "fp32", param=False), _layer("head", "MatrixMultiply", "fp32"))
    assert _verdict("fp16", *layers) == "unknown"
    assert _verdict("int8", *layers) == "unknown"
    assert _verdict("fp32", *layers) == "pass"
    # fp16 at a region's boundary is visible evidence
    assert _verdict("fp16", _layer("myelin_region", "Myelin", "fp16", param=False)) == "pass"


def test_int8_and_reduced_precision_in_an_fp32_build():
    int8 = (_layer("conv1", "Convolution", "int8", "fp16"), _layer("head", "MatrixMultiply", "fp32"))
    assert _verdict("int8", *int8) == "pass"
    assert _verdict("fp32", *int8) == "fail"
    assert _verdict("fp32", _layer("softmax", "Softmax", "fp16")) == "fail"  # any fp16 tensor in an fp32 build


def test_nothing_listed_is_unknown_and_names_only_cannot_be_checked():
    assert _verdict("fp16") == "unknown"
    with pytest.raises(EvisError, match="DETAILED"):
        summarize_layers(json.dumps({"Layers": ["conv1", "conv2"], "Bindings": []}))
