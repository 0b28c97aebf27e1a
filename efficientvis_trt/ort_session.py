"""The one place an ONNX Runtime session is made, for the runtime, precision builds, export checks and benchmarks.

Every caller states the same few things (execution providers, intra-op threads, whether
graph optimisations run, deterministic kernels) through `make_session`, so a thread count
or a provider list means the same everywhere and a graph that does not load is one line.
`ort_graph` is the one rule for which of a bundle's graphs a provider gets (the CPU
provider's own int8 form). This module imports nothing from `runtime` or `precision`, so
both can use it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from efficientvis_trt.errors import EvisError

log = logging.getLogger(__name__)

CPU_PROVIDERS = ("CPUExecutionProvider",)


def provider_name(provider: Any) -> str:
    """'CPUExecutionProvider' from either a name or a (name, options) pair."""
    return provider[0] if isinstance(provider, (tuple, list)) else provider


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def make_session(
    model: str | os.PathLike | bytes | Any,
    *,
    providers: Sequence[Any] | None = None,
    threads: int | None = None,
    optimize: bool = True,
    deterministic: bool = False,
    optimized_model_path: str | os.PathLike | None = None,
    low_memory: bool = False,
):
    """An `onnxruntime.InferenceSession` for `model` (a path, serialized bytes or a ModelProto).

    providers: execution providers in preference order (default: the CPU provider only).
    threads: intra-op threads (None or 0: ONNX Runtime's default, one per core).
    optimize: False turns every graph optimisation off (to see the graph as written).
    deterministic: deterministic kernels where ONNX Runtime has a choice (calibration, comparisons).
    optimized_model_path: also write the optimised graph there (to see what ORT fused).
    low_memory: no CPU memory arena, so freed activations go back to the allocator: the peak is
    then the live tensors, not the arena's growth (about 0.5 GB less for r50 at B = 2, at the
    same speed; docs/build-memory.md). For export and build, not for the runtime.
    A graph ONNX Runtime refuses is an `EvisError` naming it.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.use_deterministic_compute = deterministic
    so.enable_cpu_mem_arena = not low_memory
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if threads:
        so.intra_op_num_threads = int(threads)
    if optimized_model_path is not None:
        so.optimized_model_filepath = str(optimized_model_path)
    if hasattr(model, "SerializeToString"):
        source, what = model.SerializeToString(), "the graph"
    elif isinstance(model, (bytes, bytearray)):
        source, what = bytes(model), "the graph"
    else:
        source, what = str(model), str(model)
    try:
        return ort.InferenceSession(source, so, providers=list(providers or CPU_PROVIDERS))
    except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
        raise EvisError(f"ONNX Runtime cannot load {what}: {_first_line(exc)}") from None


def run(session, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One run as a name -> array dict (only the inputs the session declares are fed)."""
    names = {i.name for i in session.get_inputs()}
    out = session.run(None, {k: v for k, v in feed.items() if k in names})
    return dict(zip([o.name for o in session.get_outputs()], out))


def ort_graph(bundle, precision: str, cpu_provider: bool) -> tuple[Path, str]:
    """(graph path, what to say about it): the CPU provider's own form of a precision when the bundle has one.

    ONNX Runtime's CPU provider only fuses uint8-activation Q/DQ into int8 kernels, so for
    int8 it gets model.int8.cpu.onnx (written by `evis build`); GPU providers and TensorRT
    get the bundle's model.int8.onnx. An older bundle without the CPU form falls back, out loud.
    """
    from efficientvis_trt.bundle import ONNX_FILES, ORT_CPU_ONNX_FILES

    if not cpu_provider or precision not in ORT_CPU_ONNX_FILES:
        return bundle.onnx_path(precision), ""
    path, own = bundle.cpu_graph(precision)
    default_name, cpu_name = ONNX_FILES[precision], ORT_CPU_ONNX_FILES[precision]
    if own:
        return path, (
            f"onnxruntime {precision}: CPU graph {path.name} "
            f"(uint8 activations, 7-bit weights; TensorRT uses {default_name})"
        )
    note = (
        f"onnxruntime {precision}: no CPU graph {cpu_name} in this bundle, running {default_name} "
        f"(the TensorRT form, slower than fp32 on ONNX Runtime's CPU provider; rebuild with "
        f"`evis build {bundle.path} --precision int8`)"
    )
    log.warning(note)
    return path, note


__all__ = ["CPU_PROVIDERS", "make_session", "ort_graph", "provider_name", "run"]
