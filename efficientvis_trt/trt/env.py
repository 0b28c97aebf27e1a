"""TensorRT and CUDA as this process sees them: imports, errors, GPU, versions, plugins.

Everything here is imported lazily and once, and every probe that is not asked to be strict
returns None instead of raising, so `evis doctor` and `evis plugins` can report a machine
without TensorRT. Design: docs/tensorrt.md, "The TensorRT layer".
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Optional

from efficientvis_trt import versions
from efficientvis_trt.errors import BackendUnavailable, EvisError
from efficientvis_trt.extras import CUDA_PYTHON_HINT, TENSORRT_HINT

log = logging.getLogger(__name__)

INSTALL_HINT = TENSORRT_HINT

# The ONNX opsets TensorRT's parser documents (onnx/onnx-tensorrt docs/operators.md: "TensorRT 10.x
# supports operators in the inclusive range of opset 9 to opset 20"). 11.x: no newer statement seen,
# so the same cap; docs/tensorrt.md, "Version matrix".
ONNX_OPSETS = {10: (9, 20), 11: (9, 20)}


# ---- versions -------------------------------------------------------------------------------------


def parse_version(version: str) -> tuple[int, int, int]:
    """``"10.9.0.34"`` -> ``(10, 9, 0)``; ``"11.4"`` -> ``(11, 4, 0)``; garbage -> EvisError (versions.py)."""
    return versions.parse_version(version, "TensorRT version")


def short_version(version: str) -> str:
    """``major.minor.patch`` (the build number does not change engine compatibility)."""
    return ".".join(str(p) for p in parse_version(version))


def onnx_opset_range(trt_version: str) -> tuple[int, int]:
    """The (oldest, newest) default-domain opset this TensorRT's ONNX parser documents."""
    major = parse_version(trt_version)[0]
    return ONNX_OPSETS.get(major, ONNX_OPSETS[max(ONNX_OPSETS)])


def check_onnx_opset(opset: int, trt_version: str, onnx_name: str = "the graph") -> None:
    """Refuse a graph whose opset the parser does not document, with the fix in the message."""
    lo, hi = onnx_opset_range(trt_version)
    if not lo <= int(opset) <= hi:
        raise EvisError(
            f"{onnx_name} uses ONNX opset {opset}; TensorRT {short_version(trt_version)}'s ONNX parser supports "
            f"opsets {lo}..{hi}: re-export with `evis export ... --opset {min(max(int(opset), lo), hi)}`"
        )


# ---- imports ---------------------------------------------------------------------------------------


def import_tensorrt(needs: str = "Runtime"):
    """``tensorrt`` or one BackendUnavailable line; `needs` is the class that must exist.

    "Runtime" to load plans, "Builder" to build them: the PyPI ``tensorrt`` source stub has
    neither, the lean/dispatch runtimes have no builder.
    """
    try:
        import tensorrt as trt
    except (ImportError, OSError):  # OSError: bindings present but libnvinfer missing
        raise BackendUnavailable(INSTALL_HINT) from None
    if not hasattr(trt, needs):
        raise BackendUnavailable(f"{INSTALL_HINT} (the installed `tensorrt` package has no {needs})")
    return trt


def installed_version() -> Optional[str]:
    """``tensorrt.__version__`` when TensorRT imports, else None (never raises)."""
    try:
        return str(import_tensorrt().__version__)
    except BackendUnavailable:
        return None


def tensorrt_available(needs: str = "Builder") -> bool:
    try:
        import_tensorrt(needs)
    except BackendUnavailable:
        return False
    return True


def import_cudart():
    """cuda-python's runtime: ``cuda.bindings.runtime`` (12.6+) or the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime as cudart

        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart

        return cudart
    except ImportError:
        raise BackendUnavailable(CUDA_PYTHON_HINT) from None


def cuda_check(cudart, result, what: str):
    """The one cuda-python error check: result is ``(err, *values)``; raise on an error, return the values.

    No device / too old a driver is BackendUnavailable (the machine cannot do it); any other
    error is an EvisError naming the call.
    """
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != int(cudart.cudaError_t.cudaSuccess):
        name = str(err)
        with contextlib.suppress(Exception):
            got = cudart.cudaGetErrorName(err)[1]
            name = got.decode() if isinstance(got, bytes) else str(got)
        if "NoDevice" in name or "InsufficientDriver" in name:
            raise BackendUnavailable(f"CUDA is not usable here ({what}: {name})")
        raise EvisError(f"CUDA call {what} failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# ---- the GPU ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]
    source: str  # "cuda-python" or "torch"

    @property
    def cc_text(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


def _gpu_from_cudart(device: Optional[int]) -> GpuInfo:
    cudart = import_cudart()
    count = cuda_check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if int(count) < 1:
        raise BackendUnavailable("no CUDA device found: TensorRT engines need an NVIDIA GPU")
    if device is None:
        device = int(cuda_check(cudart, cudart.cudaGetDevice(), "cudaGetDevice"))
    prop = cuda_check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name
    if isinstance(name, (bytes, bytearray)):  # char[256] comes back as bytes, NUL padded
        name = bytes(name).split(b"\x00", 1)[0].decode("utf-8", "replace")
    return GpuInfo(str(name).strip(), (int(prop.major), int(prop.minor)), "cuda-python")


def _gpu_from_torch(device: Optional[int]) -> GpuInfo:
    try:
        import torch
    except ImportError:
        raise BackendUnavailable("neither cuda-python nor torch is installed: no way to see a GPU") from None
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        raise BackendUnavailable(f"no CUDA device (torch {torch.__version__}, {build}, sees none)")
    idx = torch.cuda.current_device() if device is None else device
    major, minor = torch.cuda.get_device_capability(idx)
    return GpuInfo(str(torch.cuda.get_device_name(idx)), (int(major), int(minor)), "torch")


def gpu_info(device: Optional[int] = None) -> GpuInfo:
    """The one GPU probe: cuda-python (what the TensorRT runtime uses), else torch; BackendUnavailable if none."""
    try:
        return _gpu_from_cudart(device)
    except BackendUnavailable as first:
        try:
            return _gpu_from_torch(device)
        except BackendUnavailable as second:
            raise BackendUnavailable(f"{first}; {second}") from None


def gpu_info_or_none(device: Optional[int] = None) -> Optional[GpuInfo]:
    try:
        return gpu_info(device)
    except EvisError:
        return None


def cuda_device_info(device: Optional[int] = None) -> tuple[str, tuple[int, int]]:
    """(GPU name, compute capability): what engine file names are keyed by."""
    info = gpu_info(device)
    return info.name, info.compute_capability


def runtime_available() -> tuple[bool, str]:
    """(True, '') when TensorRT's runtime, cuda-python and a CUDA device are all usable, else (False, why)."""
    try:
        import_tensorrt("Runtime")
        _gpu_from_cudart(None)
    except EvisError as exc:
        return False, str(exc)
    return True, ""


def make_logger(trt, verbose: bool = False):
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


__all__ = [
    "INSTALL_HINT",
    "GpuInfo",
    "check_onnx_opset",
    "cuda_check",
    "cuda_device_info",
    "gpu_info",
    "gpu_info_or_none",
    "import_cudart",
    "import_tensorrt",
    "installed_version",
    "make_logger",
    "onnx_opset_range",
    "parse_version",
    "runtime_available",
    "short_version",
    "tensorrt_available",
]
