"""TensorRT engine builds from the fp16/int8 graphs. Real builds: they run only where TensorRT and a GPU exist."""

from __future__ import annotations

import json
import shutil

import pytest

from efficientvis_trt.errors import EvisError
from efficientvis_trt.io_utils import file_sha256
from efficientvis_trt.trt import engine as E
from efficientvis_trt.trt import env

pytestmark = pytest.mark.tensorrt


@pytest.fixture(scope="module")
def trt_bundle(make_tiny_bundle):
    return make_tiny_bundle()


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_engine_at_the_asked_precision(trt_bundle, precision):
    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.cli import main

    rc = main(
        [
            "build",
            str(trt_bundle),
            "--precision",
            precision,
            "--backend",
            "trt",
            "--calib-clips",
            "4",
            "--workspace-gb",
            "2",
            "--opt-level",
            "2",
        ]
    )
    assert rc == 0
    gpu, cc = env.cuda_device_info()
    version = env.import_tensorrt().__version__
    path = E.find_engine(trt_bundle, precision)
    assert path is not None and path == E.engine_path(trt_bundle, precision, gpu, cc, version)
    meta = json.loads(E.sidecar_path(path).read_text())
    assert meta["precision"] == precision and meta["gpu"] == gpu
    assert meta["source_onnx_sha256"] == file_sha256(Bundle.open(trt_bundle).onnx_path(precision))
    assert meta["plugin_path"]["selected"] in ("aot", "jit", "builtin-roialign")
    assert meta["plugin_path"]["in_engine"] in ("aot", "jit", "builtin-roialign"), meta["plugin_path"]
    assert meta["layer_precision"]["verdict"] in ("pass", "unknown"), meta["layer_precision"]
    # A bare plan (no header): TensorRT deserializes the file as is.
    engine, _runtime, _meta, _logger = E.deserialize(path, trt_bundle)
    names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
    assert {"frames", "query_in", "boxes_in", "logits", "boxes", "mask_logits", "query_out", "boxes_out"} == names
    assert E.timing_cache_path(trt_bundle, gpu, cc, version).stat().st_size > 0


def test_engine_from_another_gpu_asks_for_rebuild(trt_bundle, tmp_path):
    path = E.find_engine(trt_bundle, "fp16")
    if path is None:
        pytest.skip("the fp16 engine test did not run first")
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    meta = json.loads(E.sidecar_path(path).read_text())
    meta["compute_capability"] = "1.0"
    E.sidecar_path(copy).write_text(json.dumps(meta))
    with pytest.raises(EvisError, match="--backend trt"):
        E.deserialize(copy)
