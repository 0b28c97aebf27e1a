"""One check of a loaded graph's I/O against the contract (`ContractIO`), the same words on every backend.

The TensorRT backend runs the same `_check_io` on an engine's tensors; it needs a GPU, so here
ONNX Runtime and OpenVINO (where installed) load hand-made graphs that break one rule each.
"""

from __future__ import annotations

import pytest

from efficientvis_trt.contract import OUTPUT_NAMES
from efficientvis_trt.errors import EvisError


def _graph(path, *, frames_type: str = "UINT8", logits_type: str = "FLOAT", drop_output: str | None = None):
    """The contract's names around trivial ops; one rule broken as asked."""
    import onnx
    from onnx import TensorProto, helper

    t, h, w, n, c = 2, 8, 8, 3, 4
    ins = [
        helper.make_tensor_value_info("frames", getattr(TensorProto, frames_type), [t, h, w, 3]),
        helper.make_tensor_value_info("query_in", TensorProto.FLOAT, [n, c]),
        helper.make_tensor_value_info("boxes_in", TensorProto.FLOAT, [n, 4]),
    ]
    nodes = [
        helper.make_node("Cast", ["frames"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], keepdims=0),
        helper.make_node("Cast", ["m"], ["logits"], to=getattr(TensorProto, logits_type)),
        helper.make_node("Identity", ["boxes_in"], ["boxes"]),
        helper.make_node("Identity", ["f"], ["mask_logits"]),
        helper.make_node("Neg", ["query_in"], ["query_out"]),
        helper.make_node("Identity", ["boxes_in"], ["boxes_out"]),
    ]
    types = {"logits": getattr(TensorProto, logits_type)}
    outs = [
        helper.make_tensor_value_info(k, types.get(k, TensorProto.FLOAT), None)
        for k in OUTPUT_NAMES
        if k != drop_output
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", ins, outs), opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(path))
    return path


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
    path = _graph(tmp_path / "g.onnx", **broken)
    if words is None:
        assert load(path).input_shapes["frames"] == (2, 8, 8, 3)  # the intact graph loads and keeps its shapes
        return
    with pytest.raises(EvisError, match=words):
        load(path)
