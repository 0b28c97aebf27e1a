"""What machine a figure was measured on: CPU/GPU model, cores, memory, library versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from datetime import datetime, timezone
from typing import Any

from efficientvis_trt.cpu_info import cpu_model

_LIBRARIES = (
    "efficientvis-trt",
    "torch",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "numpy",
    "opencv-python-headless",
    "numba",
    "triton",
    "tensorrt",
    "cuda-python",
)


def gpu_info() -> dict[str, Any] | None:
    """The CUDA device as torch sees it, or None (no torch CUDA, no GPU)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(0)
        return {
            "name": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "memory_gb": round(props.total_memory / 2**30, 1),
        }
    except Exception:
        return None


def library_versions() -> dict[str, str]:
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def machine_info() -> dict[str, Any]:
    import psutil

    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu_info(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "libraries": library_versions(),
    }


def machine_line(info: dict[str, Any]) -> str:
    gpu = info["gpu"]["name"] if info.get("gpu") else "no GPU"
    libs = ", ".join(f"{k} {v}" for k, v in info["libraries"].items())
    return (
        f"{info['cpu']} ({info['cores_usable']} usable cores, {info['memory_gb']} GiB), {gpu}; "
        f"Python {info['python']}; {libs}; {info['date']}"
    )
