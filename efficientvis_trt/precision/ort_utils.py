"""ONNX Runtime helpers shared by calibration, conversion checks and benchmarks (CPU)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def make_session(model: str | os.PathLike | bytes | Any, threads: int = 0, optimize: bool = True):
    """A CPU session with deterministic kernels; `model` is a path, serialized bytes or a ModelProto."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.use_deterministic_compute = True
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = str(model)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def run(session, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One run as a name -> array dict (only the inputs the session declares are fed)."""
    names = {i.name for i in session.get_inputs()}
    out = session.run(None, {k: v for k, v in feed.items() if k in names})
    return dict(zip([o.name for o in session.get_outputs()], out))
