"""SOURCE + backend name -> a ready backend and what the clip loop needs (T, H x W, clip-0 state, classes).

`auto` prefers TensorRT when this GPU has an engine for the precision, else ONNX Runtime,
and always says which and why. A precision a backend cannot run is an error, never a
silent downgrade; the only fallback is a *device* one (an unspecified device on a machine
whose CUDA provider does not start), and it is said out loud.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from efficientvis_trt.contract import canonical_backend, check_run_precision
from efficientvis_trt.errors import BackendUnavailable, EvisError
from efficientvis_trt.ort_session import ort_graph, provider_name
from efficientvis_trt.runtime.backends import BF16_BACKEND_HINT, Backend, OrtBackend, TorchBackend

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


@dataclass
class RuntimeModel:
    """A backend plus the contract values the clip loop needs."""

    backend: Backend
    clip_len: int
    input_hw: tuple[int, int]
    init_state: tuple[np.ndarray, np.ndarray]
    class_names: list[str]
    reason: str  # why this backend (printed by `evis infer`)
    bundle: Any = None
    notes: list[str] = field(default_factory=list)
    origin: str = ""  # where the model runs when that is not a local path (a served model's URL)


def _is_model(obj: Any) -> bool:
    return hasattr(obj, "forward_clip") and hasattr(obj, "config")


def _is_bundle(obj: Any) -> bool:
    return hasattr(obj, "onnx_path") and hasattr(obj, "init_state") and hasattr(obj, "engine_dir")


def open_bundle(path: str | os.PathLike):
    from efficientvis_trt.bundle import Bundle

    return Bundle.open(path)


def classify_source(source: Any) -> tuple[str, Any]:
    """-> ("model" | "checkpoint" | "bundle", object or path)."""
    if _is_model(source):
        return "model", source
    if _is_bundle(source):
        return "bundle", source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return "bundle", open_bundle(path)
        if path.suffix.lower() in CHECKPOINT_SUFFIXES:
            if not path.is_file():
                raise EvisError(f"checkpoint not found: {path}")
            return "checkpoint", path
        if not path.exists():
            raise EvisError(f"model source not found: {path} (give a bundle folder or a checkpoint .pt)")
        raise EvisError(f"{path} is neither a bundle folder nor a checkpoint (.pt/.pth)")
    raise EvisError(
        f"cannot run {type(source).__name__}: give a bundle folder, a checkpoint .pt or an EfficientVIS model"
    )


def _torch_device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _torch_from(kind: str, obj: Any, precision: str, device: str | None) -> tuple[TorchBackend, Any]:
    from efficientvis_trt.model.checkpoint import default_class_names, load_checkpoint

    if kind == "model":
        names = default_class_names(obj.config.model.num_classes)
        return TorchBackend(obj, _torch_device(device), precision), names
    if kind == "bundle":
        return TorchBackend(_bundle_torch_model(obj), _torch_device(device), precision), obj.class_names
    model, payload = load_checkpoint(obj)
    return TorchBackend(model, _torch_device(device), precision), payload["class_names"]


def _bundle_torch_model(bundle):
    """The PyTorch weights a bundle was exported from: the source its metadata names.

    The rebuilt model is checked against the bundle's weights fingerprint, so the torch
    backend never runs other weights than the graphs hold.
    """
    from efficientvis_trt.export.model_source import rebuild_model

    try:
        return rebuild_model(bundle.metadata)
    except EvisError as exc:
        raise EvisError(f"the torch backend needs the bundle's source weights: {exc} (or use --backend ort)") from None


def _ort_device(device: str | None) -> str:
    if device:
        return "cuda" if device.startswith("cuda") else "cpu"
    from efficientvis_trt import capabilities

    ort, providers = capabilities.onnxruntime()
    if not ort:  # the command line turns this into the line naming the extra
        raise ModuleNotFoundError(ort.reason, name="onnxruntime")
    return "cuda" if "CUDAExecutionProvider" in providers else "cpu"


def _uses_cpu_provider(want: str, providers: Sequence[Any] | None) -> bool:
    if providers:
        return provider_name(providers[0]) == "CPUExecutionProvider"
    return want == "cpu"


def _make_ort(
    bundle, precision: str, device: str | None, providers: Sequence[Any] | None, threads: int | None
) -> tuple[OrtBackend, str, str]:
    """-> (backend, device-fallback note or '', which graph and why or '')."""
    if precision == "bf16":
        raise EvisError(f"ONNX Runtime has no bf16 graph to run: {BF16_BACKEND_HINT}")
    want = _ort_device(device)
    # missing graph -> EvisError that says how to build it
    onnx_path, graph_note = ort_graph(bundle, precision, _uses_cpu_provider(want, providers))
    try:
        return OrtBackend(onnx_path, precision, want, providers=providers, threads=threads), "", graph_note
    except BackendUnavailable as exc:
        if device is None and want == "cuda" and not providers:
            note = f"ONNX Runtime CUDA provider unusable ({exc}); running on the CPU"
            log.warning(note)
            onnx_path, graph_note = ort_graph(bundle, precision, True)
            return OrtBackend(onnx_path, precision, "cpu", threads=threads), note, graph_note
        raise


def _cpu_backend(precision: str, why: str) -> tuple[str, str]:
    """(backend, reason) on a CPU: OpenVINO where it is installed and runs the precision, else ONNX Runtime."""
    from efficientvis_trt import capabilities
    from efficientvis_trt.runtime.openvino_backend import OPENVINO_PRECISIONS

    installed = capabilities.openvino().available
    if precision == "bf16" or (installed and precision in OPENVINO_PRECISIONS):
        # (bf16 without OpenVINO: the backend's own error says how to install it)
        return "openvino", f"openvino: {why}; OpenVINO is installed, the faster CPU runtime (docs/openvino.md)"
    if installed:
        return "onnxruntime", f"onnxruntime: {why}; OpenVINO runs {', '.join(OPENVINO_PRECISIONS)}, not {precision}"
    return "onnxruntime", f"onnxruntime: {why}; OpenVINO not installed"


def _make_openvino(bundle, precision: str, device: str | None, threads: int | None):
    """The OpenVINO backend on the bundle graph its precision runs (docs/openvino.md, "Precisions")."""
    from efficientvis_trt.runtime.openvino_backend import OPENVINO_PRECISIONS, OpenVINOBackend, inference_precision

    if device and device != "cpu":
        raise EvisError("the openvino backend runs on the CPU here: drop --device cuda or use --backend ort or trt")
    if precision not in OPENVINO_PRECISIONS:
        inference_precision(precision, ())  # the one error that says which precisions it runs
    graph = OPENVINO_PRECISIONS[precision][0]
    path, note = bundle.onnx_path(graph), ""
    if graph == "int8":
        path, note = _openvino_int8_graph(bundle)
    return OpenVINOBackend(path, precision, threads=threads), note


def _openvino_int8_graph(bundle) -> tuple[Path, str]:
    """model.int8.onnx (the faster one on OpenVINO) where this CPU's int8 kernels take full 8-bit weights,
    else the CPU form with 7-bit weights, which cannot saturate (docs/openvino.md, "Precisions")."""
    from efficientvis_trt import capabilities

    full = capabilities.cpu_int8_full_range()
    if full:
        return bundle.onnx_path("int8"), ""
    path, own = bundle.cpu_graph("int8")
    if own:
        return path, f"openvino int8: CPU graph {path.name} (7-bit weights: {full.reason})"
    note = (
        f"openvino int8: {full.reason}, and this bundle has no CPU graph with 7-bit weights: "
        f"expect a larger int8 error (rebuild with `evis build {bundle.path} --precision int8`)"
    )
    log.warning(note)
    return path, note


def _find_trt_engine(bundle, precision: str) -> tuple[Path | None, str]:
    """(engine path, '') or (None, why not)."""
    from efficientvis_trt import capabilities
    from efficientvis_trt.trt.engine import find_engine

    usable = capabilities.tensorrt_runtime()
    if not usable:
        return None, usable.reason
    try:
        path = find_engine(bundle, precision)
    except BackendUnavailable as exc:
        return None, str(exc)
    if path is None:
        return None, f"no {precision} TensorRT engine for this GPU/TensorRT in {bundle.engine_dir}"
    return path, ""


def load_runtime(
    source: Any,
    backend: str = "auto",
    precision: str = "fp32",
    device: str | None = None,
    *,
    providers: Sequence[Any] | None = None,
    cuda_graph: bool = False,
    threads: int | None = None,
) -> RuntimeModel:
    """Open SOURCE (bundle folder / Bundle, checkpoint path, or model) on the requested backend.

    A ready `RuntimeModel` (e.g. a served model, efficientvis_trt.serve.client) is used as it is.
    """
    if isinstance(source, RuntimeModel):
        return source
    check_run_precision(precision)
    backend = canonical_backend(backend)
    if device is not None and device != "cpu" and not device.startswith("cuda"):
        raise EvisError(f"unknown device {device!r}: use cpu or cuda")
    kind, obj = classify_source(source)
    notes: list[str] = []

    if kind != "bundle":
        if backend in ("onnxruntime", "tensorrt", "openvino"):
            raise EvisError(
                f"the {backend} backend runs an exported bundle folder, not a "
                f"{'checkpoint' if kind == 'checkpoint' else 'PyTorch model'}: make one with `evis export`"
            )
        be, names = _torch_from(kind, obj, precision, device)
        model = be.model
        m = model.config.model
        q, b = model.initial_state()
        reason = "torch: the source is a PyTorch " + ("checkpoint" if kind == "checkpoint" else "model")
        return RuntimeModel(
            be, m.clip_len, tuple(m.input_size), (q.cpu().numpy(), b.cpu().numpy()), list(names), reason, None, notes
        )

    bundle = obj
    reason = ""
    if device and device.startswith("cuda:") and device != "cuda:0" and backend != "torch":
        # ONNX Runtime and TensorRT here open device 0; never run silently on another GPU than asked.
        raise EvisError(
            f"{device}: the {backend} backend runs on the first visible GPU; "
            f"select it with CUDA_VISIBLE_DEVICES={device.split(':', 1)[1]} and --device cuda"
        )
    if backend == "auto":
        if device == "cpu":
            backend, reason = _cpu_backend(precision, "--device cpu (TensorRT needs a GPU)")
        else:
            engine, why = (
                (None, "no bf16 TensorRT engines") if precision == "bf16" else _find_trt_engine(bundle, precision)
            )
            if engine is not None:
                backend, reason = "tensorrt", f"tensorrt: engine {engine.name} matches this GPU and TensorRT"
            elif _ort_device(device) == "cpu":
                backend, reason = _cpu_backend(precision, f"TensorRT not used ({why})")
            else:
                backend, reason = "onnxruntime", f"onnxruntime: TensorRT not used ({why})"
    if backend == "torch":
        be, names = _torch_from("bundle", bundle, precision, device)
        reason = reason or "torch: asked for"
    elif backend == "onnxruntime":
        be, note, graph_note = _make_ort(bundle, precision, device, providers, threads)
        if note:
            notes.append(note)
        names = bundle.class_names
        reason = (reason or "onnxruntime: asked for") + f" [{', '.join(be.providers)}]"
        if graph_note:
            reason += f"; {graph_note}"
    elif backend == "openvino":
        be, graph_note = _make_openvino(bundle, precision, device, threads)
        names = bundle.class_names
        where = f"{be.ov_device}, {be.onnx_path.name} at {be.inference_precision}, {be.threads} threads"
        reason = (reason or "openvino: asked for") + f" [{where}]"
        if graph_note:
            reason += f"; {graph_note}"
    else:
        if precision == "bf16":
            raise EvisError(f"TensorRT has no bf16 engines here: {BF16_BACKEND_HINT}")
        if device == "cpu":
            raise EvisError("the TensorRT backend runs on a CUDA GPU: drop --device cpu or use --backend ort")
        from efficientvis_trt.runtime.trt_backend import TensorRTBackend
        from efficientvis_trt.trt.engine import rebuild_hint
        from efficientvis_trt.trt.env import import_cudart, import_tensorrt

        import_tensorrt("Runtime")
        import_cudart()
        engine, why = _find_trt_engine(bundle, precision)
        if engine is None:
            raise EvisError(
                f"cannot use TensorRT: {why}; {rebuild_hint(bundle.path, precision).replace('rebuild', 'build')}"
            )
        be = TensorRTBackend(engine, precision, bundle_path=bundle.path, cuda_graph=cuda_graph)
        names = bundle.class_names
        reason = reason or f"tensorrt: asked for (engine {engine.name})"
    q, b = bundle.init_state()
    return RuntimeModel(be, bundle.clip_len, tuple(bundle.input_hw), (q, b), list(names), reason, bundle, notes)


__all__ = ["RuntimeModel", "load_runtime", "classify_source", "open_bundle"]
