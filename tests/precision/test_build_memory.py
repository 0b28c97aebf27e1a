"""Builds that fit small machines (docs/build-memory.md): same numbers, activations freed early.

The probes (absmax for the fp16 guard, ReduceMin/ReduceMax for int8 calibration) are ordered so
that ONNX Runtime frees each activation early; these tests pin that the numbers are exactly
those of the unordered graphs, and that ORT really runs each probe soon after its tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from efficientvis_trt.ort_session import make_session, run
from efficientvis_trt.precision import graph as G
from efficientvis_trt.precision import int8 as I

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small tiny-config bundle (2 frames, 96x160), its fp32 model and 3 calibration clips with carried state."""
    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.export.exporter import export_bundle
    from efficientvis_trt.precision.calibration import build_calibration_set

    out = tmp_path_factory.mktemp("buildmem") / "tiny"
    export_bundle(out, config="tiny", init="random", seed=0, clip_len=2, size=(96, 160), verify=False, echo=None)
    bundle = Bundle.open(out)
    model = onnx.load(str(out / "model.onnx"))
    G.ensure_node_names(model)
    calib = build_calibration_set(
        model, bundle.init_state(), bundle.input_hw, bundle.clip_len, None, 3, 0, progress=False
    )
    return model, calib


def test_structure_only_keeps_every_type(tiny):
    model, _ = tiny
    full = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=False)
    expected = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in list(full.graph.input) + list(full.graph.output) + list(full.graph.value_info)
    }
    got = G.tensor_types(model)
    assert expected and all(got[k] == v for k, v in expected.items())
    light = G.structure_only(model)
    assert light.ByteSize() < model.ByteSize() / 10  # the weights are not copied


def test_absmax_probes_give_exactly_the_tensors_max_abs(tiny):
    model, calib = tiny
    tensors = list(G.float_node_outputs(model))[::7]  # a spread sample, outputs of the graph included
    probed, mapping = G.add_absmax_outputs(model, tensors)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    types = G.tensor_types(model)
    known = {o.name for o in exposed.graph.output}
    for t in tensors:
        if t not in known:
            exposed.graph.output.append(onnx.helper.make_tensor_value_info(t, types[t], None))
    got, want = run(make_session(probed), calib.feeds[1]), run(make_session(exposed), calib.feeds[1])
    for key, tensor in mapping.items():
        assert float(got[key]) == float(np.abs(want[tensor]).max())


def _execution_order(model: onnx.ModelProto, feed: dict, tmp: Path, optimize: bool) -> list[str]:
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp / "prof")
    so.intra_op_num_threads = 1
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    session.run(None, {k: v for k, v in feed.items() if k in names})
    events = json.loads(Path(session.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    return [e["name"][: -len("_kernel_time")] for e in sorted(kernels, key=lambda e: e["ts"])]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_onnxruntime_runs_each_probe_right_after_its_tensor(tiny, tmp_path, precision):
    """Without the ordering most probes run at the very end (every probed activation alive); with it, at once.

    fp16: the guard's scan of the fp16 graph, where ORT would insert Casts of its own around fp16 probes.
    """
    from efficientvis_trt.precision import fp16 as F

    model, calib = tiny
    if precision == "fp16":
        model = F.convert(model, G.classify(model).fp16_block())
    tensors = list(G.float_node_outputs(model))
    probed, _ = G.add_absmax_outputs(model, tensors)
    producer = {o: n.name for n in model.graph.node for o in n.output}

    def gaps(graph: onnx.ModelProto) -> list[int]:
        """Kernels run between each tensor's producer and its probe."""
        position = {name: i for i, name in enumerate(_execution_order(graph, calib.feeds[0], tmp_path, True))}
        return [
            position[f"{G.ABSMAX_PREFIX}ReduceMax_{k}"] - position[producer[t]]
            for k, t in enumerate(tensors)
            if producer[t] in position
        ]

    unordered = onnx.ModelProto()  # the same probes appended in tensor order, as before
    unordered.CopyFrom(probed)
    real = [n for n in unordered.graph.node if not n.name.startswith(G.ABSMAX_PREFIX)]
    by_name = {n.name: n for n in unordered.graph.node}
    ops = ("Cast", "Abs", "ReduceMax")
    probes = [
        by_name[f"{G.ABSMAX_PREFIX}{op}_{k}"]
        for k in range(len(tensors))
        for op in ops
        if f"{G.ABSMAX_PREFIX}{op}_{k}" in by_name
    ]
    nodes = [onnx.NodeProto() for _ in real + probes]
    for dst, src in zip(nodes, real + probes):
        dst.CopyFrom(src)
    del unordered.graph.node[:]
    unordered.graph.node.extend(nodes)

    ordered, control = gaps(probed), gaps(unordered)
    assert len(ordered) > 100 and len(control) > 100  # (ORT fuses slightly differently in the two graphs)
    assert np.median(ordered) <= 3, f"probes run late: median gap {np.median(ordered)}"
    assert np.median(control) > 100, "the control should show probes waiting for much of the graph"


def test_streaming_calibration_gives_the_plain_calibrators_ranges(tiny, tmp_path):
    """I.calibrate (probes reordered, augmented copy dropped) == onnxruntime's MinMaxCalibrater as it comes."""
    import contextlib
    import io

    from onnxruntime.quantization import calibrate as C

    from efficientvis_trt.precision.calibration import ClipDataReader

    model, calib = tiny
    path = tmp_path / "fp32.onnx"
    onnx.save(model, str(path))
    roles = G.classify(model)
    tensors = I.calibration_tensors(model, roles.int8_quantize())
    I.calibrate(path, calib, "minmax", tmp_path / "ours.json", tmp_path, tensors=tensors)

    plain = C.MinMaxCalibrater(
        path,
        op_types_to_calibrate=["Conv", "MatMul", "Gemm", "Add"],
        augmented_model_path=str(tmp_path / "a.onnx"),
        symmetric=True,
    )
    select = plain.select_tensors_to_calibrate
    plain.select_tensors_to_calibrate = lambda m: ({t for t in select(m)[0] if t in tensors}, select(m)[1])
    plain.augment_graph()
    plain.create_inference_session()
    for k in range(len(calib)):
        reader = ClipDataReader(calib)
        reader.set_range(k, k + 1)
        with contextlib.redirect_stdout(io.StringIO()):
            plain.collect_data(reader)
    C.save_tensors_data(plain.compute_data(), tmp_path / "plain.json")
    ours = I._ranges_from_cache(tmp_path / "ours.json")
    theirs = I._ranges_from_cache(tmp_path / "plain.json")
    assert len(ours) > 20 and ours == theirs
