"""The I/O contract (docs/contract.md) of the large presets (r18, r50) through the production exporter.

Separate from test_export.py because tracing a 6-stage model takes 15-50 s per preset on
2 cores. Each preset is exported with random weights at a small size (128x224, T=2) by
the same `export_onnx` + `check_graph` an `evis export` runs (dynamo exporter, local
function, checker full_check, shape inference, node contract), without the
PyTorch-vs-ORT verification (minutes for r50 at full size; the tiny bundle in
test_export.py covers verification, and the same code path serves every preset).
"""

from __future__ import annotations

import onnx
import pytest

from efficientvis_trt.config import get_config
from efficientvis_trt.contract import io_table, model_io_dims
from efficientvis_trt.export.exporter import check_graph, export_onnx
from efficientvis_trt.export.model_source import random_init_model
from efficientvis_trt.export.roi_align_onnx import custom_nodes, node_attributes
from efficientvis_trt.plugins.spec import RoIAlignAttrs

T, HW = 2, (128, 224)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["r18", "r50"])
def test_io_contract_large_presets(preset, tmp_path):
    cfg = get_config(preset)
    cfg.model.clip_len, cfg.model.input_size = T, list(HW)
    m = cfg.model
    model = random_init_model(cfg, seed=0)
    proto, info = export_onnx(model, T, HW, "plugin", 18, "auto")
    assert info["exporter"] == "dynamo"
    want = io_table(model_io_dims(m, T, HW))
    got = [
        (
            v.name,
            d,
            [x.dim_param or x.dim_value for x in v.type.tensor_type.shape.dim],
            onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
        )
        for d, vs in (("in", proto.graph.input), ("out", proto.graph.output))
        for v in vs
    ]
    assert got == [(r["name"], r["dir"], r["shape"], r["dtype"]) for r in want]
    assert got[0] == ("frames", "in", ["B", T, *HW, 3], "uint8")
    assert (m.num_queries, m.hidden_dim, m.num_classes, m.num_stages) == (10, 256, 40, 6)
    attrs = RoIAlignAttrs.from_pooler(m.pooler).onnx_attributes()
    assert [node_attributes(n) for n in custom_nodes(proto)] == [attrs] * m.num_stages
    path = tmp_path / "model.onnx"
    onnx.save(proto, str(path))
    info = check_graph(path, want, "plugin", attrs, m.num_stages, [m.num_queries, m.hidden_dim, 14, 14])
    assert info["nodes"] == 6 and info["local_function"]
