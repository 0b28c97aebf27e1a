"""TensorRT engines with the MultiLevelRoIAlign node, against the PyTorch reference.

Needs TensorRT and a CUDA GPU (torch with CUDA provides the buffers); skipped otherwise,
with the reason. The ONNX file holds one ``efficientvis::MultiLevelRoIAlign`` node with
``plugin_namespace``, parsed by TensorRT's ONNX parser after `register_trt_plugin()`:
TensorRT >= 10.9 binds it to the AOT plugin (PTX in the engine), 10.6-10.8 to the JIT
plugin; below 10.6 the model also carries the standard-op function body, which the
parser expands into built-in RoiAlign.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

try:
    import tensorrt as trt
except Exception as exc:  # the PyPI source stub without builder libraries fails here too
    pytest.skip(f"TensorRT not installed ({exc})", allow_module_level=True)
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU (TensorRT needs one to build engines)", allow_module_level=True)

from onnx import TensorProto, helper  # noqa: E402

from efficientvis_trt.model.roi_align import multi_level_roi_align_reference  # noqa: E402
from efficientvis_trt.plugins.spec import DOMAIN, OP_TYPE, RoIAlignAttrs  # noqa: E402
from efficientvis_trt.plugins.trt_plugin import register_trt_plugin, select_plugin_path  # noqa: E402

pytestmark = pytest.mark.tensorrt

B, R, C = 2, 6, 8
IMAGE = (256, 320)
ONNX_DTYPE = {torch.float32: TensorProto.FLOAT, torch.float16: TensorProto.FLOAT16}


@pytest.fixture(scope="module")
def plugin_path():
    path = register_trt_plugin()
    assert register_trt_plugin() is path  # idempotent
    assert path.mode == select_plugin_path(trt.__version__).mode or path.mode == "builtin-roialign"
    return path


def make_model(attrs: RoIAlignAttrs, dtype, with_function: bool) -> bytes:
    levels = [(IMAGE[0] >> lvl, IMAGE[1] >> lvl) for lvl in range(2, 6)]
    fdt = ONNX_DTYPE[dtype]
    inputs = [helper.make_tensor_value_info(f"P{lvl + 2}", fdt, [B, C, h, w]) for lvl, (h, w) in enumerate(levels)]
    inputs.append(helper.make_tensor_value_info("rois", TensorProto.FLOAT, [B, R, 4]))
    p = attrs.output_size
    output = helper.make_tensor_value_info("pooled", fdt, [B, R, C, p, p])
    node = helper.make_node(
        OP_TYPE,
        ["P2", "P3", "P4", "P5", "rois"],
        ["pooled"],
        name="roi_align",
        domain=DOMAIN,
        **attrs.onnx_attributes(),
    )
    graph = helper.make_graph([node], "one_roi_align", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    if with_function:
        from efficientvis_trt.export.roi_align_onnx import attach_function

        model = attach_function(model, 17)
    return model.SerializeToString()


def build_engine(model: bytes):
    logger = trt.Logger(trt.Logger.WARNING)
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
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_engine_matches_reference(plugin_path, dtype):
    attrs = RoIAlignAttrs(output_size=7, sampling_ratio=2)
    use_function = plugin_path.mode == "builtin-roialign"
    plan, num_layers = build_engine(make_model(attrs, dtype, with_function=use_function))
    if plugin_path.registers_plugin:
        assert num_layers == 1, "the node was not bound to the plugin"
    feats, rois = make_inputs(dtype)
    feeds = {f"P{i + 2}": f.cuda().contiguous() for i, f in enumerate(feats)}
    feeds["rois"] = rois.cuda().contiguous()
    out = torch.full((B, R, C, 7, 7), float("nan"), dtype=dtype, device="cuda")
    got = run_engine(plan, feeds, out).cpu()
    want = multi_level_roi_align_reference(feats, rois, 7, 2)
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5 if plugin_path.registers_plugin else 1e-4)
    else:
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-3, atol=2e-3)


def test_aot_engine_loads_without_python_plugin(plugin_path, tmp_path):
    if plugin_path.mode != "aot":
        pytest.skip(f"path is {plugin_path.mode}, not aot: {plugin_path.reason}")
    plan, _ = build_engine(make_model(RoIAlignAttrs(output_size=7), torch.float32, with_function=False))
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
