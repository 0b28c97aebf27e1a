"""What this machine has, probed once: the one record behind `evis doctor`, `evis plugins`, the automatic
backend choice and the test markers.

Each probe returns a `Feature` (available or not, the version where there is one, and a reason that
says why either way); none raises. Each is computed on first use and kept for the process, so asking
whether OpenVINO is installed does not import torch, and asking twice costs nothing. `capabilities()`
gathers them all in one frozen `Capabilities`. The probes themselves (what "TensorRT usable" means)
stay with the layer that owns them: `trt.env`, `trt.plugin`, `plugins.triton_roi_align`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Optional

from efficientvis_trt.errors import EvisError


@dataclass(frozen=True)
class Feature:
    """One thing this machine has or lacks; `reason` says why either way."""

    available: bool
    reason: str
    version: Optional[str] = None

    def __bool__(self) -> bool:
        return self.available


def _import_version(module: str) -> tuple[Any, Optional[str], str]:
    """(module or None, its __version__ or "installed", why not) for an optional module; never raises."""
    import importlib

    try:
        mod = importlib.import_module(module)  # importing is the probe: a broken install fails here too
    except ModuleNotFoundError as exc:
        from efficientvis_trt.extras import missing_module_hint

        return None, None, missing_module_hint(exc.name or module) or f"{module} is not installed"
    except Exception as exc:
        return None, None, f"{module} does not import: {type(exc).__name__}: {exc}"
    return mod, str(getattr(mod, "__version__", "installed")), ""


@functools.cache
def tensorrt() -> Feature:
    """TensorRT with its builder (what `evis build --backend trt` needs)."""
    from efficientvis_trt.trt import env

    version = env.installed_version()
    if version is None:
        return Feature(False, env.INSTALL_HINT)
    if not env.tensorrt_available("Builder"):
        return Feature(False, f"TensorRT {version} has no builder (a runtime-only install)", version)
    return Feature(True, f"TensorRT {version} with the builder", version)


@functools.cache
def tensorrt_runtime() -> Feature:
    """TensorRT's runtime, cuda-python and a CUDA device, all usable: engines can run here."""
    from efficientvis_trt.trt import env

    ok, why = env.runtime_available()
    version = env.installed_version()
    return Feature(ok, why or f"TensorRT {version}, cuda-python and a CUDA device are usable", version)


@functools.cache
def cuda_python() -> Feature:
    from efficientvis_trt.extras import CUDA_PYTHON_HINT

    for name in ("cuda.bindings", "cuda"):
        mod, version, _ = _import_version(name)
        if mod is not None:
            return Feature(True, f"{name} imports", version)
    return Feature(False, CUDA_PYTHON_HINT)


@functools.cache
def gpu_info():
    """The `trt.env.GpuInfo` of the current device, or None."""
    return gpu()[1]


@functools.cache
def gpu() -> tuple[Feature, Any]:
    """(Feature, GpuInfo or None): cuda-python first (what TensorRT uses), else torch."""
    from efficientvis_trt.trt import env

    try:
        info = env.gpu_info()
    except EvisError as exc:
        return Feature(False, str(exc)), None
    return Feature(True, f"{info.name} (compute capability {info.cc_text}, seen by {info.source})", info.cc_text), info


@functools.cache
def torch() -> Feature:
    mod, version, why = _import_version("torch")
    if mod is None:
        return Feature(False, why)
    cuda = getattr(mod.version, "cuda", None)
    return Feature(True, f"torch {version}", f"{version} (CUDA {cuda})" if cuda else version)


@functools.cache
def torch_cuda() -> Feature:
    """A CUDA device that torch sees (the `cuda` test marker, the JIT plugin, the doctor's torch checks)."""
    mod, version, why = _import_version("torch")
    if mod is None:
        return Feature(False, why)
    try:
        if mod.cuda.is_available():
            return Feature(True, f"torch {version} sees {mod.cuda.device_count()} CUDA device(s)", version)
    except Exception as exc:
        return Feature(False, f"torch {version} cannot query CUDA: {exc}", version)
    build = f"CUDA {mod.version.cuda} build" if mod.version.cuda else "CPU-only build"
    return Feature(False, f"no CUDA device (torch {version}, {build}, sees none)", version)


@functools.cache
def triton() -> Feature:
    """An importable Triton at the floor the kernel compiler needs (`plugins.triton_roi_align.MIN_TRITON`)."""
    from efficientvis_trt.extras import install_command
    from efficientvis_trt.plugins.triton_roi_align import MIN_TRITON, triton_at_floor

    mod, version, why = _import_version("triton")
    if mod is None:
        return Feature(False, f"{why} ({install_command('triton')})")
    floor = ".".join(map(str, MIN_TRITON))
    if not triton_at_floor(version):
        return Feature(False, f"Triton {version} is older than {floor} ({install_command('triton')})", version)
    return Feature(True, f"Triton {version} (>= {floor})", version)


@functools.cache
def onnxruntime() -> tuple[Feature, tuple[str, ...]]:
    """(Feature, the execution providers this ONNX Runtime offers)."""
    from efficientvis_trt.extras import install_command

    mod, version, why = _import_version("onnxruntime")
    if mod is None:
        return Feature(False, f"{why} ({install_command('cpu')} or {install_command('gpu')})"), ()
    providers = tuple(mod.get_available_providers())
    return Feature(True, f"ONNX Runtime {version}: {', '.join(providers)}", version), providers


@functools.cache
def openvino() -> Feature:
    mod, version, why = _import_version("openvino")  # why: the install hint if missing, the error if broken
    return Feature(mod is not None, why or f"OpenVINO {version}", version)


# x86 instructions that add uint8 x int8 products in 32 bits (docs/precision.md, "Saturation on x86").
_EXACT_INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.cache
def cpu_int8_full_range() -> Feature:
    """Whether full 8-bit int8 weights run unsaturated on this CPU's int8 kernels.

    x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) multiply uint8 activations by int8 weights with
    vpmaddubsw, which sums pairs of products in int16 and saturates when both are large; ONNX Runtime's
    and OpenVINO's int8 kernels both use it there. ONNX Runtime's quantization guide names 7-bit weights
    (`reduce_range`) as the remedy on such CPUs (onnxruntime.ai/docs/performance/model-optimizations/
    quantization.html). Non-x86 CPUs (Jetson's Arm cores) do not pair-sum in int16.
    """
    import platform

    from efficientvis_trt.cpu_info import cpu_flags

    return int8_full_range_of(platform.machine(), cpu_flags())


def int8_full_range_of(machine: str, flags: set[str]) -> Feature:
    """`cpu_int8_full_range` for a given machine name and set of CPU flags (empty: unreadable)."""
    machine = machine.lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return Feature(True, f"{machine or 'this'} CPU: int8 dot products do not saturate")
    have = [f for f in _EXACT_INT8_DOT_FLAGS if f in flags]
    if have:
        return Feature(True, f"x86 with {', '.join(have)}: int8 dot products in 32 bits")
    seen = "no VNNI or AMX in its CPU flags" if flags else "its CPU flags unreadable, so assumed"
    return Feature(False, f"x86 without VNNI ({seen}): uint8 x int8 pairs saturate in int16 on full 8-bit weights")


@functools.cache
def polygraphy() -> Feature:
    mod, version, why = _import_version("polygraphy")
    return Feature(mod is not None, why or f"Polygraphy {version}", version)


@functools.cache
def plugin_path():
    """The `trt.plugin.PluginPath` this machine's TensorRT, Triton and torch take, with its reason."""
    from efficientvis_trt.trt.plugin import select_plugin_path

    version = tensorrt_runtime().version
    if version is None:
        return select_plugin_path(None)
    return select_plugin_path(version, triton_available=triton().available, torch_cuda_available=torch_cuda().available)


@dataclass(frozen=True)
class Capabilities:
    """Everything above, in one frozen record (`capabilities()`)."""

    torch: Feature
    torch_cuda: Feature
    onnxruntime: Feature
    onnxruntime_providers: tuple[str, ...]
    openvino: Feature
    tensorrt: Feature
    tensorrt_runtime: Feature
    cuda_python: Feature
    gpu: Feature
    gpu_info: Any  # trt.env.GpuInfo or None
    triton: Feature
    polygraphy: Feature
    plugin_path: Any  # trt.plugin.PluginPath


@functools.cache
def capabilities() -> Capabilities:
    """The whole record (every probe run once); the commands that report a machine use this."""
    ort, providers = onnxruntime()
    gpu_feature, info = gpu()
    return Capabilities(
        torch=torch(),
        torch_cuda=torch_cuda(),
        onnxruntime=ort,
        onnxruntime_providers=providers,
        openvino=openvino(),
        tensorrt=tensorrt(),
        tensorrt_runtime=tensorrt_runtime(),
        cuda_python=cuda_python(),
        gpu=gpu_feature,
        gpu_info=info,
        triton=triton(),
        polygraphy=polygraphy(),
        plugin_path=plugin_path(),
    )


_PROBES = (
    tensorrt,
    tensorrt_runtime,
    cuda_python,
    gpu_info,
    gpu,
    torch,
    torch_cuda,
    triton,
    onnxruntime,
    openvino,
    cpu_int8_full_range,
    polygraphy,
    plugin_path,
    capabilities,
)


def forget() -> None:
    """Probe again on next use (a test that changed what is importable in this process)."""
    for probe in _PROBES:
        probe.cache_clear()


__all__ = ["Capabilities", "Feature", "capabilities", "forget"]
