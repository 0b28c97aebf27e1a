"""How this Python environment was installed, checked before anything runs (`evis doctor`'s first lines).

Three mistakes cost users the most time, and each has one command that fixes it:
- a Jetson (/etc/nv_tegra_release): TensorRT and torch come from JetPack, onnxruntime-gpu from the Jetson
  AI Lab index, not from PyPI;
- onnxruntime and onnxruntime-gpu both installed: they write the same files, so only one provider set is
  left, and uninstalling either breaks the module;
- a plain venv hiding a system TensorRT (JetPack's, or NVIDIA's apt packages): the bindings sit in
  /usr/lib/python3.X/dist-packages, which a venv without --system-site-packages does not see.
Every probe takes its paths and metadata as arguments, so tests drive it without such a machine.
Layout by target: docs/deploy.md.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from efficientvis_trt.extras import install_command

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
JETSON_ORT_INDEX = "https://pypi.jetson-ai-lab.io/jp6/cu126"
JETSON_ORT_COMMAND = f"pip install onnxruntime-gpu --index-url {JETSON_ORT_INDEX}"
# Where Debian/Ubuntu packages (JetPack's python3-libnvinfer, NVIDIA's apt repository) put the bindings.
SYSTEM_TENSORRT_GLOBS = ("/usr/lib/python3*/dist-packages/tensorrt", "/usr/local/lib/python3*/dist-packages/tensorrt")
# ONNX Runtime's distributions that all install the `onnxruntime` module
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")
# L4T (R36.x) -> JetPack, from NVIDIA's Jetson release notes
_JETPACK = {(36, 2): "6.0 DP", (36, 3): "6.0", (36, 4): "6.1/6.2"}


@dataclass(frozen=True)
class Finding:
    name: str  # "jetson", "onnxruntime-twice", "hidden-system-tensorrt", "pypi-tensorrt-on-jetson"
    problem: bool  # True: the install is broken or will misbehave; False: information
    detail: str
    fix: str  # the one command that fixes it ("" when nothing needs fixing)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_distributions() -> list[str]:
    """Normalised names of every distribution this interpreter sees (importlib.metadata)."""
    names = []
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            names.append(_normalise(name))
    return names


def read_l4t_release(path: Path = TEGRA_RELEASE) -> Optional[tuple[int, int, int]]:
    """(36, 4, 3) from '# R36 (release), REVISION: 4.3, ...'; None when the file is absent (not a Jetson)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", text)
    if not m:
        return (0, 0, 0)  # a Tegra release file we cannot read: still a Jetson
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def jetpack_name(l4t: tuple[int, int, int]) -> str:
    return _JETPACK.get(l4t[:2], "unknown (this toolkit targets JetPack 6, L4T R36)")


def ort_distributions(distributions: Iterable[str]) -> list[str]:
    """The ONNX Runtime distributions among `distributions`, in ORT_DISTRIBUTIONS order."""
    have = {_normalise(d) for d in distributions}
    return [d for d in ORT_DISTRIBUTIONS if d in have]


def hidden_system_tensorrt(
    *,
    prefix: str,
    base_prefix: str,
    pyvenv_cfg: Optional[Path],
    candidates: Sequence[str],
    tensorrt_importable: bool,
    python_minor: tuple[int, int],
) -> Optional[Finding]:
    """A system TensorRT this venv cannot see, and the command that lets it (None when there is none)."""
    if tensorrt_importable or prefix == base_prefix or not candidates:
        return None
    if pyvenv_cfg is not None and pyvenv_cfg.is_file():
        cfg = pyvenv_cfg.read_text(errors="replace")
        if re.search(r"^\s*include-system-site-packages\s*=\s*true\s*$", cfg, re.M | re.I):
            return None  # system site is on: the TensorRT found there is for another Python, said below
    ours = f"python{python_minor[0]}.{python_minor[1]}"
    matching = [c for c in candidates if f"/{ours}/" in c]
    if matching:
        cfg_path = pyvenv_cfg if pyvenv_cfg is not None else Path(prefix) / "pyvenv.cfg"
        fix = f"sed -i 's/^include-system-site-packages = false/include-system-site-packages = true/' {cfg_path}"
        return Finding(
            "hidden-system-tensorrt",
            True,
            f"a system TensorRT is at {matching[0]} but this venv ({prefix}) was made without "
            "--system-site-packages, so it cannot import it",
            fix,
        )
    other = re.search(r"python(\d+\.\d+)", candidates[0])
    version = other.group(1) if other else "3"
    return Finding(
        "hidden-system-tensorrt",
        True,
        f"a system TensorRT is at {candidates[0]}, built for Python {version}, not this venv's "
        f"{python_minor[0]}.{python_minor[1]}",
        f"python{version} -m venv --system-site-packages {prefix}",
    )


def install_findings(
    *,
    release_file: Path = TEGRA_RELEASE,
    distributions: Optional[Iterable[str]] = None,
    prefix: Optional[str] = None,
    base_prefix: Optional[str] = None,
    system_tensorrt: Optional[Sequence[str]] = None,
    tensorrt_importable: Optional[bool] = None,
    python_minor: Optional[tuple[int, int]] = None,
) -> list[Finding]:
    """Every finding about this environment's install; each argument left None is read from this machine."""
    dists = list(installed_distributions() if distributions is None else (_normalise(d) for d in distributions))
    prefix = sys.prefix if prefix is None else prefix
    base_prefix = sys.base_prefix if base_prefix is None else base_prefix
    if system_tensorrt is None:
        system_tensorrt = sorted(p for g in SYSTEM_TENSORRT_GLOBS for p in glob.glob(g))
    if tensorrt_importable is None:
        tensorrt_importable = importlib.util.find_spec("tensorrt") is not None
    python_minor = tuple(sys.version_info[:2]) if python_minor is None else python_minor  # type: ignore[assignment]
    out: list[Finding] = []

    l4t = read_l4t_release(release_file)
    orts = ort_distributions(dists)
    if l4t is not None:
        jp = jetpack_name(l4t)
        detail = (
            f"Jetson, L4T R{l4t[0]}.{l4t[1]}.{l4t[2]} (JetPack {jp}): TensorRT and torch come from JetPack, "
            "onnxruntime-gpu from the Jetson AI Lab index"
        )
        fix = ""
        if "onnxruntime-gpu" not in orts:
            fix = JETSON_ORT_COMMAND
        elif "cuda-python" not in dists:
            fix = install_command("jetson")
        out.append(Finding("jetson", bool(fix), detail + ("" if fix else "; all present"), fix))
        pypi_trt = sorted(d for d in dists if re.fullmatch(r"tensorrt(-cu1[23])?(-libs|-bindings)?", d))
        if pypi_trt:
            out.append(
                Finding(
                    "pypi-tensorrt-on-jetson",
                    True,
                    f"PyPI's TensorRT ({', '.join(pypi_trt)}) is for x86/SBSA GPUs and shadows JetPack's",
                    f"pip uninstall -y {' '.join(pypi_trt)}",
                )
            )

    if len(orts) > 1:
        keep = "onnxruntime-gpu" if "onnxruntime-gpu" in orts else orts[-1]
        again = JETSON_ORT_COMMAND if l4t is not None and keep == "onnxruntime-gpu" else f"pip install {keep}"
        out.append(
            Finding(
                "onnxruntime-twice",
                True,
                f"{' and '.join(orts)} are installed together: they write the same files, so only one set of "
                "execution providers is left and removing either breaks `import onnxruntime`",
                f"pip uninstall -y {' '.join(orts)} && {again}",
            )
        )

    pyvenv = Path(prefix) / "pyvenv.cfg"
    hidden = hidden_system_tensorrt(
        prefix=prefix,
        base_prefix=base_prefix,
        pyvenv_cfg=pyvenv,
        candidates=list(system_tensorrt),
        tensorrt_importable=bool(tensorrt_importable),
        python_minor=tuple(python_minor),  # type: ignore[arg-type]
    )
    if hidden is not None:
        out.append(hidden)
    return out


__all__ = [
    "Finding",
    "hidden_system_tensorrt",
    "install_findings",
    "installed_distributions",
    "jetpack_name",
    "ort_distributions",
    "read_l4t_release",
]
