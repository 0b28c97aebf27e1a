"""Graph surgery helpers (precision/graph.py) on small hand-made graphs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from efficientvis_trt.ort_session import make_session, run
from efficientvis_trt.precision import fp16
from efficientvis_trt.precision import graph as G


def _two_blocked_consumers() -> onnx.ModelProto:
    """x -> Relu -> h; h feeds two Sigmoids that stay fp32 and a MatMul that goes fp16."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).ravel().tolist())
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
        helper.make_node("Relu", ["m"], ["h"], name="relu"),
        helper.make_node("Sigmoid", ["h"], ["a"], name="sig_a"),
        helper.make_node("Sigmoid", ["h"], ["b"], name="sig_b"),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 4]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "g", [io[0]], [io[1]], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_drop_repeated_nodes_keeps_one_of_each_exact_repeat():
    m = _two_blocked_consumers()
    repeat = onnx.NodeProto()
    repeat.CopyFrom(m.graph.node[1])
    m.graph.node.insert(2, repeat)
    near = helper.make_node("Relu", ["m"], ["h2"], name="relu")  # same name, other output: not a repeat
    m.graph.node.append(near)
    assert G.drop_repeated_nodes(m) == 1
    assert [n.name for n in m.graph.node].count("relu") == 2
    assert G.drop_repeated_nodes(m) == 0


def test_fp16_with_a_tensor_feeding_two_fp32_nodes_loads_and_matches():
    """The case onnxruntime < 1.32's converter gave two Casts one name; the converted graph must load."""
    m = _two_blocked_consumers()
    out = fp16.convert(m, block=["sig_a", "sig_b", "add"])
    onnx.checker.check_model(out, full_check=True)
    names = [n.name for n in out.graph.node]
    assert len(names) == len(set(names))
    assert any(n.op_type == "Cast" for n in out.graph.node)  # really mixed precision
    x = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)
    want = run(make_session(m), {"x": x})["y"]
    got = run(make_session(out), {"x": x})["y"]
    np.testing.assert_allclose(got, want, atol=2e-3)
