"""One clip loop over PyTorch, ONNX Runtime and TensorRT, carrying the tracklet state as named tensors.

Public names are imported lazily so `import efficientvis_trt.runtime` stays cheap (no
torch, onnxruntime or TensorRT until a backend is made).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Predictor": "efficientvis_trt.runtime.predictor",
    "VideoRun": "efficientvis_trt.runtime.predictor",
    "ClipResult": "efficientvis_trt.runtime.predictor",
    "TrackAccumulator": "efficientvis_trt.runtime.postprocess",
    "VideoResult": "efficientvis_trt.runtime.postprocess",
    "Track": "efficientvis_trt.runtime.postprocess",
    "Instance": "efficientvis_trt.runtime.postprocess",
    "paste_mask": "efficientvis_trt.runtime.postprocess",
    "encode_rle": "efficientvis_trt.runtime.postprocess",
    "decode_rle": "efficientvis_trt.runtime.postprocess",
    "Backend": "efficientvis_trt.runtime.backends",
    "TorchBackend": "efficientvis_trt.runtime.backends",
    "OrtBackend": "efficientvis_trt.runtime.backends",
    "TensorRTBackend": "efficientvis_trt.runtime.trt_backend",
    "load_runtime": "efficientvis_trt.runtime.load",
    "open_source": "efficientvis_trt.runtime.sources",
    "ThreadedClipLoop": "efficientvis_trt.runtime.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'efficientvis_trt.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
