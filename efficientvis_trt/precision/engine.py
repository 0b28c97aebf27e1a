"""TensorRT engines: naming, building from a precision's ONNX graph, checking, loading.

Why this file exists: TensorRT 11 removed the FP16/INT8 builder flags, so the precision
lives in the ONNX graph (docs/precision.md) and the build is always strongly typed; an engine is
only valid for one GPU (compute capability) and one TensorRT version, so its file name
says both and a mismatch at load time becomes a "rebuild" message instead of a crash.

Written from NVIDIA's documentation (TensorRT cannot be installed on the machines this
was developed on; see docs/tensorrt.md, "Version matrix"). API subset that exists in 10.3 ... 11.x only:
- Builder / NetworkDefinitionCreationFlag.STRONGLY_TYPED (deprecated and ignored in 11, kept
  for API compatibility):
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html
  https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/_static/python-api/infer/Core/Builder.html
- OnnxParser.parse_from_file / num_errors / get_error:
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/parsers/Onnx/pyOnnx.html
- ITimingCache (a cache is only valid for the exact TensorRT version and device):
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/TimingCache.html
- EngineInspector (layer details only with ProfilingVerbosity.DETAILED):
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/EngineInspector.html
  Layer JSON keys ("Layers", "LayerType", "ParameterType", "Inputs"/"Outputs" with
  "Format/Datatype") as parsed by NVIDIA's trt-engine-explorer (tools/experimental/
  trt-engine-explorer/trex/layer.py, activations.py in NVIDIA/TensorRT).

The plan file is the bare `build_serialized_network` output (trtexec and Triton load it);
everything else about the engine goes into a JSON file beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from efficientvis_trt.contract import check_precision
from efficientvis_trt.errors import BackendUnavailable, EvisError
from efficientvis_trt.io_utils import file_sha256, write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)

PLAN_SUFFIX = ".plan"
META_SUFFIX = ".json"
INSTALL_HINT = (
    "TensorRT is not installed: on a machine with an NVIDIA GPU run "
    "`pip install 'efficientvis-trt[trt]'` (or `pip install tensorrt cuda-python "
    "--extra-index-url https://pypi.nvidia.com`; on Jetson use the JetPack TensorRT)"
)


# ---- availability -------------------------------------------------------------------


def import_tensorrt(needs: str = "Builder", hint: str = INSTALL_HINT):
    """Import `tensorrt` or raise BackendUnavailable with `hint` (nothing else happens first).

    `needs`: the class that must be there: "Builder" to build engines, "Runtime" to run plans
    (the `tensorrt` source stub on PyPI has neither; the lean/dispatch runtimes have no builder).
    """
    try:
        import tensorrt as trt
    except (ImportError, OSError):  # OSError: bindings present but libnvinfer missing
        raise BackendUnavailable(hint) from None
    if not hasattr(trt, needs):
        raise BackendUnavailable(f"{hint} (the installed `tensorrt` package has no {needs})")
    return trt


def tensorrt_available() -> bool:
    """True when the full TensorRT builder imports (tests skip on False)."""
    try:
        import_tensorrt()
    except BackendUnavailable:
        return False
    return True


def import_cudart():
    """cuda-python's runtime module: `cuda.bindings.runtime` (12.6+) or the older `cuda.cudart`."""
    try:
        from cuda.bindings import runtime as cudart

        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart

        return cudart
    except ImportError:
        raise BackendUnavailable(
            "cuda-python is not installed: `pip install 'efficientvis-trt[trt]'` (or `pip install cuda-python`)"
        ) from None


def _check(cudart, result, what: str):
    """cuda-python returns (err, *values): raise on any error code, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != int(cudart.cudaError_t.cudaSuccess):
        name = err
        with contextlib.suppress(Exception):
            name = cudart.cudaGetErrorName(err)[1].decode()
        raise BackendUnavailable(f"CUDA call {what} failed: {name}")
    return values[0] if len(values) == 1 else tuple(values)


def cuda_device_info(device: int | None = None) -> tuple[str, tuple[int, int]]:
    """(GPU name, (major, minor) compute capability) of the current (or given) CUDA device."""
    cudart = import_cudart()
    count = _check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if int(count) < 1:
        raise BackendUnavailable("no CUDA device found: TensorRT engines need an NVIDIA GPU")
    if device is None:
        device = int(_check(cudart, cudart.cudaGetDevice(), "cudaGetDevice"))
    prop = _check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name
    if isinstance(name, (bytes, bytearray)):  # char[256] comes back as bytes, NUL padded
        name = bytes(name).split(b"\x00", 1)[0].decode("utf-8", "replace")
    return str(name).strip(), (int(prop.major), int(prop.minor))


def tensorrt_version() -> str:
    """`major.minor.patch` of the installed TensorRT (the build number does not change compatibility)."""
    trt = import_tensorrt()
    return short_version(trt.__version__)


def short_version(version: str) -> str:
    return ".".join(str(version).split(".")[:3])


# ---- naming ---------------------------------------------------------------------------


def sanitize_gpu_name(name: str) -> str:
    """'NVIDIA H200' -> 'NVIDIA_H200'; 'Orin (nvgpu)' -> 'Orin_nvgpu'. Only [A-Za-z0-9_-] survive."""
    out = re.sub(r"[^A-Za-z0-9-]+", "_", name.strip()).strip("_")
    return out or "unknown_gpu"


def device_key(gpu_name: str, cc: tuple[int, int], trt_version: str) -> str:
    """The part of a file name that ties it to one GPU and one TensorRT: NVIDIA_H200.sm90.trt10.13.0."""
    major, minor = cc
    return f"{sanitize_gpu_name(gpu_name)}.sm{int(major)}{int(minor)}.trt{short_version(trt_version)}"


def _engine_dir(bundle: Any) -> Path:
    """`bundle.engine_dir` for a Bundle, else BUNDLE/engines for a path."""
    engine_dir = getattr(bundle, "engine_dir", None)
    if engine_dir is not None:
        return Path(engine_dir)
    return Path(bundle) / "engines"


def engine_path(bundle: Any, precision: str, gpu_name: str, cc: tuple[int, int], trt_version: str) -> Path:
    """BUNDLE/engines/model.<precision>.<GPU>.sm<cc>.trt<version>.plan (metadata: same name, .json)."""
    check_precision(precision)
    return _engine_dir(bundle) / f"model.{precision}.{device_key(gpu_name, cc, trt_version)}{PLAN_SUFFIX}"


def engine_metadata_path(plan_path: str | os.PathLike) -> Path:
    plan_path = Path(plan_path)
    return (
        plan_path.with_name(plan_path.name[: -len(PLAN_SUFFIX)] + META_SUFFIX)
        if plan_path.name.endswith(PLAN_SUFFIX)
        else plan_path.with_name(plan_path.name + META_SUFFIX)
    )


def timing_cache_path(bundle: Any, gpu_name: str, cc: tuple[int, int], trt_version: str) -> Path:
    """One timing cache per GPU and TensorRT version (caches do not transfer between them)."""
    return _engine_dir(bundle) / f"timing.{device_key(gpu_name, cc, trt_version)}.cache"


def list_engines(bundle: Any, precision: str | None = None) -> list[dict]:
    """Metadata of every engine in the bundle (any GPU/TensorRT), for listing and mismatch messages."""
    out = []
    folder = _engine_dir(bundle)
    if not folder.is_dir():
        return out
    for plan in sorted(folder.glob(f"model.{precision or '*'}.*{PLAN_SUFFIX}")):
        meta_path = engine_metadata_path(plan)
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = {}
        out.append({"path": str(plan), **meta})
    return out


def find_engine(
    bundle: Any,
    precision: str,
    gpu_name: str | None = None,
    cc: tuple[int, int] | None = None,
    trt_version: str | None = None,
) -> Path | None:
    """The engine for this GPU and TensorRT version, or None if it was not built here yet.

    GPU and TensorRT version are detected when not given (BackendUnavailable without them).
    """
    check_precision(precision)
    if gpu_name is None or cc is None:
        gpu_name, cc = cuda_device_info()
    if trt_version is None:
        trt_version = tensorrt_version()
    path = engine_path(bundle, precision, gpu_name, cc, trt_version)
    return path if path.is_file() else None


def rebuild_hint(bundle_path: str | os.PathLike | None, precision: str) -> str:
    target = str(bundle_path) if bundle_path else "BUNDLE"
    return f"rebuild it here with `evis build {target} --precision {precision} --backend trt`"


# ---- layer precision check (pure: parses the inspector's JSON) ----------------------------

_DTYPE_TOKENS = (
    ("int8", ("int8",)),
    ("fp8", ("fp8",)),
    ("fp16", ("fp16", "half")),
    ("bf16", ("bfloat16", "bf16")),
    ("fp32", ("fp32", "float")),
)
# Parameter types of layers that do the heavy math (trex Layer.type: ParameterType, else LayerType).
COMPUTE_KINDS = ("convolution", "deconvolution", "matrixmultiply", "fullyconnected", "gemm", "myelin")


def tensor_precision(format_datatype: str) -> str | None:
    """'Row major linear FP32' -> 'fp32', 'Channel major FP16 format ...' -> 'fp16', 'Int8 ...' -> 'int8'."""
    text = format_datatype.lower()
    for name, tokens in _DTYPE_TOKENS:
        if any(re.search(rf"(?<![a-z]){re.escape(t)}(?![a-z0-9])", text) for t in tokens):
            return name
    return None


@dataclass
class LayerPrecisionReport:
    """What the engine's compute layers run at, from EngineInspector's JSON."""

    num_layers: int = 0
    compute_layers: int = 0
    compute_by_precision: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def summarize_layers(engine_info: dict | str) -> LayerPrecisionReport:
    """Count compute layers by the lowest float/int precision among their input/output tensors."""
    info = json.loads(engine_info) if isinstance(engine_info, str) else engine_info
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    report = LayerPrecisionReport(num_layers=len(layers))
    if any(isinstance(layer, str) for layer in layers):
        raise EvisError(
            "the engine carries only layer names (built without ProfilingVerbosity.DETAILED): "
            "cannot check its layer precisions"
        )
    rank = ["int8", "fp8", "fp16", "bf16", "fp32"]
    for layer in layers:
        kind = str(layer.get("ParameterType") or layer.get("LayerType") or "").lower()
        if not any(k in kind for k in COMPUTE_KINDS):
            continue
        precisions = {
            tensor_precision(str(t.get("Format/Datatype", "")))
            for t in list(layer.get("Inputs", [])) + list(layer.get("Outputs", []))
        }
        precisions.discard(None)
        if not precisions:
            continue
        lowest = min(precisions, key=rank.index)
        report.compute_layers += 1
        report.compute_by_precision[lowest] = report.compute_by_precision.get(lowest, 0) + 1
        names = report.examples.setdefault(lowest, [])
        if len(names) < 3:
            names.append(str(layer.get("Name", "?"))[:120])
    return report


def verify_layer_precision(report: LayerPrecisionReport, precision: str) -> None:
    """Fail when the engine does not run at the asked precision (a silent FP32 engine is a bug)."""
    check_precision(precision)
    counts = report.compute_by_precision
    if report.compute_layers == 0:
        raise EvisError("the engine inspector reported no compute layers: cannot confirm the engine's precision")
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"
    if precision == "fp32":
        low = {k: v for k, v in counts.items() if k in ("int8", "fp8", "fp16", "bf16")}
        if low:
            raise EvisError(f"an fp32 build produced reduced-precision layers ({summary})")
        return
    want = {"fp16": ("fp16",), "int8": ("int8",)}[precision]
    hit = sum(counts.get(k, 0) for k in want)
    if hit == 0:
        raise EvisError(
            f"the {precision} build produced no {precision} compute layer (compute layers by precision: "
            f"{summary}); the graph's precision was lost, refusing to write the engine"
        )
    if precision == "fp16" and counts.get("fp32", 0) > hit:
        raise EvisError(f"the fp16 build runs most compute layers in fp32 ({summary}); refusing to write the engine")


# ---- build ------------------------------------------------------------------------


@dataclass
class EngineBuildResult:
    path: Path
    metadata_path: Path
    metadata: dict


def _make_logger(trt, verbose: bool):
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


def _register_plugin() -> dict:
    """Register the MultiLevelRoIAlign plugin before parsing; say which path TensorRT will use."""
    try:
        from efficientvis_trt.plugins.trt_plugin import register_trt_plugin
    except ImportError as exc:
        # Without the plugin module the parser expands the node's ONNX function (built-in ROIAlign_TRT).
        return {"mode": "builtin-roialign", "reason": f"efficientvis_trt.plugins.trt_plugin not importable ({exc})"}
    path = register_trt_plugin()
    return {"mode": str(getattr(path, "mode", path)), "reason": str(getattr(path, "reason", ""))}


def _parser_errors(parser) -> list[str]:
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        parts = [str(err.desc())]
        for attr in ("node_name", "node_operator"):  # present since 8.6; older parsers only have node()
            fn = getattr(err, attr, None)
            if fn is not None:
                try:
                    value = fn()
                except Exception:
                    value = ""
                if value:
                    parts.append(f"{attr}={value}")
        if len(parts) == 1:
            parts.append(f"node={err.node()}")
        out.append(" ".join(parts))
    return out


def build_engine(
    bundle: Any,
    precision: str,
    onnx_path: str | os.PathLike | None = None,
    *,
    workspace_gb: float = 4.0,
    opt_level: int = 3,
    verbose: bool = False,
    bundle_path: str | os.PathLike | None = None,
) -> EngineBuildResult:
    """Build and check a strongly typed engine from the precision's ONNX graph; write plan + JSON.

    Order matters: TensorRT is imported before anything is touched (a missing install writes
    nothing); the plugin is registered before parsing; the engine's layer precisions are
    checked before the plan is written, so a wrong-precision engine never reaches disk.
    """
    check_precision(precision)
    trt = import_tensorrt()
    gpu_name, cc = cuda_device_info()
    trt_ver = short_version(trt.__version__)
    if onnx_path is None:
        onnx_path = bundle.onnx_path(precision)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EvisError(
            f"{precision} graph not found: {onnx_path} (run `evis build BUNDLE --precision {precision}` "
            "for the ONNX graph first)"
        )
    if not 0 <= int(opt_level) <= 5:
        raise EvisError(f"--opt-level must be 0..5, got {opt_level}")
    if workspace_gb <= 0:
        raise EvisError(f"--workspace-gb must be positive, got {workspace_gb}")

    plugin = _register_plugin()
    log.info(
        "TensorRT %s on %s (sm%d%d); RoIAlign plugin path: %s%s",
        trt.__version__,
        gpu_name,
        cc[0],
        cc[1],
        plugin["mode"],
        f" ({plugin['reason']})" if plugin["reason"] else "",
    )

    logger = _make_logger(trt, verbose)
    builder = trt.Builder(logger)
    # STRONGLY_TYPED: required on 10.x for graph-defined precision, deprecated-and-ignored on 11.x.
    strong = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(1 << int(strong) if strong is not None else 0)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external weights relative to the model file.
    if not parser.parse_from_file(str(onnx_path)):
        errors = _parser_errors(parser)
        raise EvisError(
            f"TensorRT's ONNX parser rejected {onnx_path.name}: "
            + "; ".join(errors[:5])
            + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else "")
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    config.builder_optimization_level = int(opt_level)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector needs it for layer precisions

    cache_path = timing_cache_path(bundle, gpu_name, cc, trt_ver)
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    timing_cache = config.create_timing_cache(cache_bytes)  # keep a reference for the whole build
    if not config.set_timing_cache(timing_cache, ignore_mismatch=False):
        log.warning("timing cache %s does not match this GPU/TensorRT: starting a fresh one", cache_path.name)
        timing_cache = config.create_timing_cache(b"")
        config.set_timing_cache(timing_cache, ignore_mismatch=False)

    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - start
    if plan is None:
        raise EvisError(
            f"TensorRT failed to build the {precision} engine (see the TensorRT log above; try a larger --workspace-gb)"
        )
    plan_bytes = bytes(memoryview(plan))

    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise EvisError("TensorRT built an engine it cannot deserialize")
    inspector = engine.create_engine_inspector()
    layer_json = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    report = summarize_layers(layer_json)
    verify_layer_precision(report, precision)

    path = engine_path(bundle, precision, gpu_name, cc, trt_ver)
    meta = {
        "format": "tensorrt-plan",
        "precision": precision,
        "gpu": gpu_name,
        "compute_capability": f"{cc[0]}.{cc[1]}",
        "tensorrt_version": trt.__version__,
        "strongly_typed": True,
        "plugin_path": plugin,
        "build_time_s": round(build_s, 3),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source_onnx": onnx_path.name,
        "source_onnx_sha256": file_sha256(onnx_path),
        "plan_sha256": hashlib.sha256(plan_bytes).hexdigest(),
        "workspace_gb": workspace_gb,
        "builder_optimization_level": int(opt_level),
        "timing_cache": cache_path.name,
        "layers": report.to_dict(),
    }
    write_bytes_atomic(path, plan_bytes)
    write_json_atomic(engine_metadata_path(path), meta)
    serialized_cache = config.get_timing_cache().serialize()
    write_bytes_atomic(cache_path, bytes(memoryview(serialized_cache)))
    for written in (path, engine_metadata_path(path), cache_path):  # atomic temp files are 0600
        with contextlib.suppress(OSError):
            os.chmod(written, onnx_path.stat().st_mode & 0o777)
    log.info(
        "wrote %s (%.1f MB, built in %.1f s; compute layers %s)",
        path,
        len(plan_bytes) / 1e6,
        build_s,
        report.compute_by_precision,
    )
    return EngineBuildResult(path, engine_metadata_path(path), meta)


# ---- load ---------------------------------------------------------------------------


def check_engine_compat(
    meta: dict,
    gpu_name: str,
    cc: tuple[int, int],
    trt_version: str,
    plan_path: str | os.PathLike = "",
    bundle_path: str | os.PathLike | None = None,
) -> None:
    """Raise a rebuild message if the engine's metadata names another GPU or TensorRT version."""
    if not meta:
        return
    built_cc = str(meta.get("compute_capability", ""))
    built_trt = short_version(str(meta.get("tensorrt_version", "")))
    problems = []
    if built_cc and built_cc != f"{cc[0]}.{cc[1]}":
        problems.append(
            f"GPU {meta.get('gpu', '?')} (sm{built_cc.replace('.', '')}) vs this {gpu_name} (sm{cc[0]}{cc[1]})"
        )
    if built_trt and built_trt != short_version(trt_version):
        problems.append(f"TensorRT {built_trt} vs installed {short_version(trt_version)}")
    if problems:
        raise EvisError(
            f"engine {Path(plan_path).name or '?'} was built for another setup ({'; '.join(problems)}): "
            + rebuild_hint(bundle_path, str(meta.get("precision", "PRECISION")))
        )


def load_engine(path: str | os.PathLike, bundle_path: str | os.PathLike | None = None):
    """Deserialize a plan; a plan from another GPU/TensorRT gives a one-line rebuild message.

    Returns (engine, runtime, metadata); keep the runtime alive as long as the engine.
    """
    trt = import_tensorrt()
    path = Path(path)
    if not path.is_file():
        raise EvisError(f"engine not found: {path}")
    meta_path = engine_metadata_path(path)
    meta: dict = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:
            raise EvisError(f"engine metadata {meta_path} is not valid JSON") from None
    gpu_name, cc = cuda_device_info()
    check_engine_compat(meta, gpu_name, cc, trt.__version__, path, bundle_path)
    if meta.get("plugin_path", {}).get("mode") in ("jit", "aot"):
        # A JIT Python plugin must be registered before deserializing; harmless for AOT.
        _register_plugin()
    logger = _make_logger(trt, False)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise EvisError(
            f"TensorRT {trt.__version__} cannot load engine {path.name} on {gpu_name} "
            f"(built for another GPU or TensorRT version, or corrupt): "
            + rebuild_hint(bundle_path, str(meta.get("precision", "PRECISION")))
        )
    return engine, runtime, meta
