"""One check of a loaded graph's I/O against the contract (`ContractIO`), the same words on every backend.

The TensorRT backend runs the same `_check_io` on an engine's tensors; it needs a GPU, so here
ONNX Runtime and OpenVINO (where installed) load hand-made graphs that break one rule each.
"""

from __future__ import annotations

import pytest
from helpers import contract_graph

from efficientvis_trt.errors import EvisError


def _ort(path):
    from efficientvis_trt.runtime.backends import OrtBackend

    return OrtBackend(path, "fp32", threads=1)


def _openvino(path):
    from efficientvis_trt import capabilities

    if not (found := capabilities.openvino()):
        pytest.skip(found.reason)
    from efficientvis_trt.runtime.openvino_backend import OpenVINOBackend

    return OpenVINOBackend(path, "fp32")


@pytest.mark.parametrize("load", [_ort, _openvino], ids=["onnxruntime", "openvino"])
@pytest.mark.parametrize(
    "broken, words",
    [
        ({}, None),
        ({"frames_type": "FLOAT"}, "input 'frames' is"),
        ({"logits_type": "FLOAT16"}, "output 'logits' is"),
        ({"drop_output": "boxes_out"}, "does not have the per-clip I/O"),
    ],
    ids=["contract", "float-frames", "fp16-output", "missing-output"],
)
def test_a_graph_off_the_contract_is_refused_when_loaded(tmp_path, load, broken, words):
    path = contract_graph(tmp_path / "g.onnx", **broken)
    if words is None:
        assert load(path).input_shapes["frames"] == (2, 8, 8, 3)  # the intact graph loads and keeps its shapes
        return
    with pytest.raises(EvisError, match=words):
        load(path)
