"""TensorRT's ONNX parser rules on CPU (efficientvis_trt/trt/parser_rules.py): our graphs pass, defects are caught."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from efficientvis_trt.errors import EvisError
from efficientvis_trt.trt import parser_rules as R


def _model(nodes, inputs, outputs, inits=(), opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _uint8_reshape_first():
    """The defect of issue #24: uint8 frames Reshaped and Transposed before the Cast."""
    frames = helper.make_tensor_value_info("frames", TensorProto.UINT8, [2, 32, 32, 3])
    out = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 32, 32])
    shape = helper.make_tensor("shape", TensorProto.INT64, [4], [2, 32, 32, 3])
    nodes = [
        helper.make_node("Reshape", ["frames", "shape"], ["r"], name="frames_view"),
        helper.make_node("Transpose", ["r"], ["t"], name="frames_permute", perm=[0, 3, 1, 2]),
        helper.make_node("Cast", ["t"], ["x"], name="to_float", to=TensorProto.FLOAT),
    ]
    return _model(nodes, [frames], [out], [shape])


def test_the_uint8_defect_is_caught_with_one_line_naming_node_rule_and_version():
    found = R.check_model(onnx.shape_inference.infer_shapes(_uint8_reshape_first()))
    rules = {(v.rule, v.node) for v in found}
    assert ("uint8-input", "frames_view") in rules
    assert ("uint8-intermediate", "frames_view") in rules and ("uint8-intermediate", "frames_permute") in rules
    assert {v.versions for v in found} == {rs.versions for rs in R.RULE_SETS}  # every claimed version
    line = found[0].line("model.onnx")
    assert "\n" not in line and "frames_view" in line and "TensorRT 10.3-10.15" in line and "release/10.1-GA" in line
    assert R.frames_cast_first(_uint8_reshape_first()) == ["frames_view"]


def test_cast_first_passes():
    frames = helper.make_tensor_value_info("frames", TensorProto.UINT8, [2, 32, 32, 3])
    out = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 32, 32])
    nodes = [
        helper.make_node("Cast", ["frames"], ["f"], name="to_float", to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["x"], name="permute", perm=[0, 3, 1, 2]),
    ]
    assert R.check_model(_model(nodes, [frames], [out])) == []


def _one(op, inputs, attrs=None, opset=18, in_type=TensorProto.FLOAT, inits=()):
    ins = [helper.make_tensor_value_info(n, in_type, [1, 4, 8, 8]) for n in inputs if n not in {i.name for i in inits}]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node(op, list(inputs), ["y"], name="n", **(attrs or {}))
    return _model([node], ins, [out], inits, opset)


@pytest.mark.parametrize(
    "model, rule",
    [
        (_one("Resize", ["x", "", "s"], {"mode": "cubic"}, inits=[helper.make_tensor("s", 1, [4], [1, 1, 2, 2])]),
         "resize-mode"),
        (_one("Resize", ["x", "", "s"], {"antialias": 1, "mode": "linear"},
              inits=[helper.make_tensor("s", 1, [4], [1, 1, 2, 2])]), "resize-antialias"),
        (_one("ReduceMean", ["x", "axes"]), "constant-input"),  # axes computed at run time (a graph input)
        (_one("NonZero", ["x"], in_type=TensorProto.DOUBLE), "input-type"),
        (_one("Unique", ["x"]), "op-supported"),
        (_one("Relu", ["x"], opset=8), "opset"),
        (_one("LayerNormalization", ["x", "w"], inits=[helper.make_tensor("w", 1, [8], [1.0] * 8)]),
         "layernorm-strongly-typed"),
        (_one("RoiAlign", ["x", "r", "b"], {"output_height": 7, "output_width": 7}), "roialign-sampling"),
        (_one("RoiAlign", ["x", "r", "b"], {"sampling_ratio": 2}, opset=13), "roialign-opset"),
        (_one("ScatterND", ["x", "i", "u"], {"reduction": "add"}), "scatter-reduction"),
    ],
)  # fmt: skip
def test_other_rules_hit(model, rule):
    assert rule in {v.rule for v in R.check_model(model)}


def test_layernorm_rewrite_is_explicit_fp32_and_matches_onnx_runtime():
    import onnxruntime as ort

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 5, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 5, 8])
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT16, [8], rng.normal(size=8).astype(np.float16).tolist())
    b = helper.make_tensor("b", TensorProto.FLOAT16, [8], rng.normal(size=8).astype(np.float16).tolist())
    node = helper.make_node("LayerNormalization", ["x", "w", "b"], ["y"], name="ln", epsilon=1e-5)
    model = _model([node], [x], [y], [w, b], opset=18)
    prepared, count = R.prepare_for_tensorrt(model)
    assert count == 1 and not any(n.op_type == "LayerNormalization" for n in prepared.graph.node)
    assert R.check_model(prepared) == []
    casts = [n for n in prepared.graph.node if n.op_type == "Cast"]
    assert [helper.get_attribute_value(c.attribute[0]) for c in casts] == [1, 1, 1, TensorProto.FLOAT16]
    feed = {"x": (rng.normal(size=(2, 5, 8)) * 30).astype(np.float16)}
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]  # noqa: E731
    assert np.max(np.abs(run(prepared).astype(np.float32) - run(model).astype(np.float32))) < 1e-2


def test_plugin_node_needs_namespace_and_its_function():
    node = helper.make_node("MultiLevelRoIAlign", ["x"], ["y"], name="roi", domain="efficientvis")
    m = _model([node], [helper.make_tensor_value_info("x", 1, [1])], [helper.make_tensor_value_info("y", 1, None)])
    m.opset_import.append(helper.make_opsetid("efficientvis", 1))
    rules = {v.rule for v in R.check_model(m)}
    assert {"plugin-namespace", "plugin-fallback"} <= rules


def test_every_graph_of_a_tiny_bundle_passes_and_frames_feed_only_a_cast(make_tiny_bundle):
    path = make_tiny_bundle(precisions=("fp16", "int8"))
    checked = R.check_bundle(path)
    assert set(checked) == {"model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8.cpu.onnx"}
    for name in checked:
        model = onnx.load(str(path / name), load_external_data=False)
        assert R.frames_cast_first(model) == []
        frames_users = [n for n in model.graph.node if "frames" in n.input]
        assert [n.op_type for n in frames_users] == ["Cast"]
    # the plugin node is there and was judged (namespace, function), not skipped
    model = onnx.load(str(path / "model.onnx"))
    assert any(n.domain == R.PLUGIN_DOMAIN for n in model.graph.node)
    # without the LayerNorm rewrite the raw graph breaks the strongly typed rule: the rewrite is what passes
    assert {v.rule for v in R.check_model(model)} == {"layernorm-strongly-typed"}


def test_check_bundle_fails_with_one_line(tmp_path):
    onnx.save(_uint8_reshape_first(), str(tmp_path / "model.onnx"))
    with pytest.raises(EvisError) as err:
        R.check_bundle(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("model.onnx: node 'frames_view'") and "more)" in msg


def test_build_engine_refuses_a_graph_the_parser_would_refuse_before_tensorrt_is_imported(tmp_path, monkeypatch):
    from efficientvis_trt.trt import engine_build as B
    from efficientvis_trt.trt import env

    def no_tensorrt(*a, **k):
        raise AssertionError("TensorRT was imported before the parser rules ran")

    monkeypatch.setattr(env, "import_tensorrt", no_tensorrt)
    onnx.save(_uint8_reshape_first(), str(tmp_path / "model.onnx"))
    with pytest.raises(EvisError, match=r"model.onnx: node 'frames_view' .* rule uint8-"):
        B.build_engine(tmp_path, "fp32", tmp_path / "model.onnx")
