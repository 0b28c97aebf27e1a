"""TensorRT engines with the MultiLevelRoIAlign node, against the PyTorch reference.

The engine tests need TensorRT and a CUDA GPU (torch with CUDA provides the buffers) and skip
otherwise, with the reason. The ONNX file holds one ``efficientvis::MultiLevelRoIAlign`` node with
``plugin_namespace``, parsed after `plugin.prepare_plugins` (``init_libnvinfer_plugins`` + our plugin):
TensorRT >= 10.9 binds it to the AOT plugin (PTX in the engine), 10.7-10.8 to the JIT plugin; on
the built-in path (< 10.7) the model also carries the standard-op function body, which the parser
expands into ROIAlign_TRT. The built-in-path models themselves are checked on ONNX Runtime on any CPU.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from efficientvis_trt.model.roi_align import multi_level_roi_align_reference
from efficientvis_trt.plugins.spec import DOMAIN, OP_TYPE, RoIAlignAttrs
from efficientvis_trt.trt import env
from efficientvis_trt.trt.plugin import prepare_plugins

B, R, C = 2, 6, 8
IMAGE = (256, 320)
ONNX_DTYPE = {torch.float32: TensorProto.FLOAT, torch.float16: TensorProto.FLOAT16}


@pytest.fixture(scope="module")
def plugin_path():
    from efficientvis_trt.trt.plugin import select_plugin_path

    trt = env.import_tensorrt("Builder")
    path = prepare_plugins(trt, env.make_logger(trt))
    assert prepare_plugins(trt, env.make_logger(trt)) is path  # registered once per process
    assert path.mode == select_plugin_path(trt.__version__).mode or path.mode == "builtin-roialign"
    return path


def make_model(attrs: RoIAlignAttrs, dtype, builtin: bool) -> bytes:
    """One MultiLevelRoIAlign node. On the built-in path the node expands to ONNX RoiAlign, which (like
    ROIAlign_TRT) needs rois of the features' type; the function body is fp32, so fp16 features are cast
    to fp32 around the node, as the precision graphs keep RoIAlign in fp32."""
    levels = [(IMAGE[0] >> lvl, IMAGE[1] >> lvl) for lvl in range(2, 6)]
    fdt = ONNX_DTYPE[dtype]
    inputs = [helper.make_tensor_value_info(f"P{lvl + 2}", fdt, [B, C, h, w]) for lvl, (h, w) in enumerate(levels)]
    inputs.append(helper.make_tensor_value_info("rois", TensorProto.FLOAT, [B, R, 4]))
    p = attrs.output_size
    output = helper.make_tensor_value_info("pooled", fdt, [B, R, C, p, p])
    nodes, feats, pooled = [], [f"P{i}" for i in range(2, 6)], "pooled"
    if builtin and fdt != TensorProto.FLOAT:
        nodes += [helper.make_node("Cast", [f], [f"{f}_f32"], to=TensorProto.FLOAT) for f in feats]
        feats, pooled = [f"{f}_f32" for f in feats], "pooled_f32"
    nodes.append(
        helper.make_node(
            OP_TYPE, [*feats, "rois"], [pooled], name="roi_align", domain=DOMAIN, **attrs.onnx_attributes()
        )
    )
    if pooled != "pooled":
        nodes.append(helper.make_node("Cast", [pooled], ["pooled"], to=fdt))
    graph = helper.make_graph(nodes, "one_roi_align", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    if builtin:
        from efficientvis_trt.export.roi_align_onnx import attach_function

        model = attach_function(model, 17)
    return model.SerializeToString()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_builtin_path_models_are_valid_onnx_and_match_the_reference_on_onnxruntime(dtype):
    """What TensorRT's parser gets on the built-in path, run by ONNX Runtime (same RoiAlign type rules)."""
    from efficientvis_trt.ort_session import make_session

    attrs = RoIAlignAttrs(output_size=7, sampling_ratio=2)
    sess = make_session(make_model(attrs, dtype, builtin=True))
    feats, rois = make_inputs(dtype)
    feeds = {f"P{i + 2}": f.numpy() for i, f in enumerate(feats)}
    feeds["rois"] = rois.numpy()
    (got,) = sess.run(["pooled"], feeds)
    assert got.dtype == np.dtype(np.float32 if dtype == torch.float32 else np.float16)
    want = multi_level_roi_align_reference([f.float() for f in feats], rois, attrs).numpy()
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=1e-4 if dtype == torch.float32 else 3e-3)


def build_engine(model: bytes):
    trt = env.import_tensorrt("Builder")
    logger = trt.Logger(trt.Logger.WARNING)
    prepare_plugins(trt, logger)  # init_libnvinfer_plugins: ROIAlign_TRT must be in the registry
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        pytest.fail("ONNX parse failed: " + "; ".join(errors))
    num_layers = network.num_layers
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 28)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "engine build failed"
    return bytes(plan), num_layers


def run_engine(plan: bytes, feeds: dict, out: torch.Tensor) -> torch.Tensor:
    trt = env.import_tensorrt("Runtime")
    logger = trt.Logger(trt.Logger.WARNING)
    prepare_plugins(trt, logger)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    assert engine is not None
    context = engine.create_execution_context()
    for name, tensor in feeds.items():
        context.set_tensor_address(name, tensor.data_ptr())
    context.set_tensor_address("pooled", out.data_ptr())
    stream = torch.cuda.Stream()
    torch.cuda.synchronize()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return out


def make_inputs(dtype):
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(B, C, IMAGE[0] >> lvl, IMAGE[1] >> lvl, generator=g).to(dtype) for lvl in range(2, 6)]
    sides = torch.tensor([20.0, 90.0, 150.0, 260.0, 330.0, 0.0])  # levels 2, 2, 3, 4, 4, zero area -> 2
    cx = torch.rand(B, R, generator=g) * IMAGE[1]
    cy = torch.rand(B, R, generator=g) * IMAGE[0]
    s = sides.expand(B, R)
    rois = torch.stack([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], -1)
    rois[1, 4] = torch.tensor([-80.0, -60.0, 600.0, 500.0])  # level 5, partly outside
    return feats, rois


@pytest.mark.tensorrt
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_engine_matches_reference(plugin_path, dtype):
    attrs = RoIAlignAttrs(output_size=7, sampling_ratio=2)
    plan, num_layers = build_engine(make_model(attrs, dtype, builtin=not plugin_path.registers_plugin))
    if plugin_path.registers_plugin:
        assert num_layers == 1, "the node was not bound to the plugin"
    feats, rois = make_inputs(dtype)
    feeds = {f"P{i + 2}": f.cuda().contiguous() for i, f in enumerate(feats)}
    feeds["rois"] = rois.cuda().contiguous()
    out = torch.full((B, R, C, 7, 7), float("nan"), dtype=dtype, device="cuda")
    got = run_engine(plan, feeds, out).cpu()
    want = multi_level_roi_align_reference([f.float() for f in feats], rois, attrs)
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5 if plugin_path.registers_plugin else 1e-4)
    else:
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-3, atol=2e-3)


@pytest.mark.tensorrt
@pytest.mark.cuda
def test_aot_engine_loads_without_python_plugin(plugin_path, tmp_path):
    if plugin_path.mode != "aot":
        pytest.skip(f"path is {plugin_path.mode}, not aot: {plugin_path.reason}")
    plan, _ = build_engine(make_model(RoIAlignAttrs(output_size=7), torch.float32, builtin=False))
    engine_file = tmp_path / "roi_align.plan"
    engine_file.write_bytes(plan)
    code = textwrap.dedent(f"""
        import sys, tensorrt as trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(open({str(engine_file)!r}, 'rb').read())
        assert engine is not None
        assert not any(m.startswith('efficientvis_trt') or m == 'triton' for m in sys.modules)
        print('ok')
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
