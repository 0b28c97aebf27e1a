"""API conformance against NVIDIA's real TensorRT Python bindings, one subprocess per version (not execution).

The ``tensorrt-cu12-bindings`` wheel of each version (the real ``tensorrt.so`` and ``tensorrt.plugin``,
1.1-1.3 MB) is downloaded once into ~/.cache/efficientvis-trt/ (``EVIS_TRT_CACHE`` overrides) and kept
between runs; three stub C libraries built with gcc give its nine C entry points, all returning NULL.
Each version runs tests/trt/api_conformance.py in its own interpreter, so the stubs never reach this
process (the code here would otherwise believe TensorRT is installed). A wheel that cannot be fetched
fails the check with the reason: nothing is skipped. What is checked: api_conformance.py's docstring;
what it proves and does not: docs/tensorrt.md, "What is proved how".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import REPO_ROOT

# 10.3: JetPack 6 (no Python plugins); 10.8: JIT only; 10.9: first AOT; 10.13: JetPack 7.0/7.1;
# 10.16: JetPack 7.2 / last 10.x; 11.4: newest 11.x (pip index versions tensorrt-cu12-bindings, 2026-12-01).
VERSIONS = ("10.3.0", "10.8.0.43", "10.9.0.34", "10.13.3.9", "10.16.1.11", "11.4.0.106")
STUB_SYMBOLS = {
    "nvinfer": [
        "createInferBuilder_INTERNAL",
        "createInferRuntime_INTERNAL",
        "createInferRefitter_INTERNAL",
        "getPluginRegistry",
        "getBuilderPluginRegistry",
    ],
    "nvinfer_plugin": ["initLibNvInferPlugins"],
    "nvonnxparser": ["createNvOnnxParser_INTERNAL", "createNvOnnxParserRefitter_INTERNAL", "getNvOnnxParserVersion"],
}
CHECKER = Path(__file__).with_name("api_conformance.py")


def cache_dir() -> Path:
    return Path(os.environ.get("EVIS_TRT_CACHE", Path.home() / ".cache" / "efficientvis-trt"))


def _wheel(version: str) -> Path:
    """The cached wheel for this interpreter, downloaded with pip on first use (raises with pip's reason)."""
    folder = cache_dir() / "wheels" / version
    found = sorted(folder.glob("tensorrt_cu12_bindings-*.whl"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(folder)]
    proc = subprocess.run([*cmd, f"tensorrt-cu12-bindings=={version}"], capture_output=True, text=True, timeout=600)
    found = sorted(folder.glob("tensorrt_cu12_bindings-*.whl"))
    if proc.returncode != 0 or not found:
        tail = " ".join((proc.stderr or proc.stdout).split())[-400:]
        raise RuntimeError(f"pip download tensorrt-cu12-bindings=={version} failed (rc {proc.returncode}): {tail}")
    return found[0]


def _site(version: str) -> Path:
    """The wheel unpacked with its package named `tensorrt` (the bindings wheel ships it as tensorrt_bindings)."""
    wheel = _wheel(version)
    site = cache_dir() / "site" / wheel.stem
    if not (site / "tensorrt" / "__init__.py").is_file():
        tmp = site.with_name(site.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        (tmp / "tensorrt_bindings").rename(tmp / "tensorrt")
        try:
            tmp.rename(site)  # atomic; another run that got there first wins, and its copy is the same
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (site / "tensorrt" / "__init__.py").is_file():
                raise
    return site


def _stubs() -> Path:
    """libnvinfer / libnvinfer_plugin / libnvonnxparser .so.10 and .so.11: the nine symbols, returning NULL."""
    folder = cache_dir() / "stubs"
    want = [folder / f"lib{lib}.so.{n}" for lib in STUB_SYMBOLS for n in (10, 11)]
    if all(p.is_file() for p in want):
        return folder
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise RuntimeError("gcc not found: it builds the stub TensorRT libraries")
    folder.mkdir(parents=True, exist_ok=True)
    for lib, symbols in STUB_SYMBOLS.items():
        src = folder / f"{lib}.{os.getpid()}.c"
        src.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in symbols))
        for n in (10, 11):
            out = folder / f"lib{lib}.so.{n}"
            tmp = f"{out}.tmp{os.getpid()}"
            subprocess.run(
                [gcc, "-shared", "-fPIC", "-o", tmp, f"-Wl,-soname,lib{lib}.so.{n}", str(src)],
                check=True,
                capture_output=True,
            )
            os.replace(tmp, out)
    return folder


def _run(version: str, stubs: Path) -> dict:
    """One version's report, or {"error": why} when its wheel could not be fetched or unpacked."""
    try:
        site = _site(version)
    except Exception as exc:
        return {"error": str(exc)}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)]),
        "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(stubs), os.environ.get("LD_LIBRARY_PATH")])),
    }
    proc = subprocess.run(
        [sys.executable, str(CHECKER)], capture_output=True, text=True, timeout=600, env=env, cwd=REPO_ROOT
    )
    for line in proc.stdout.splitlines():
        if line.startswith("CONFORMANCE "):
            return json.loads(line[len("CONFORMANCE ") :])
    return {"error": f"checker exited {proc.returncode} without a report: {proc.stderr[-2000:]}"}


@pytest.fixture(scope="module")
def reports() -> dict:
    """All versions at once (in parallel: the work is mostly imports and waiting on Triton's cache)."""
    try:
        stubs = _stubs()
    except Exception as exc:
        return {v: {"error": f"stub libraries: {exc}"} for v in VERSIONS}
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(VERSIONS, pool.map(lambda v: _run(v, stubs), VERSIONS)))


@pytest.mark.parametrize("version", VERSIONS)
def test_our_tensorrt_code_conforms_to_the_real_bindings(reports, version):
    report = reports[version]
    assert "error" not in report, f"TensorRT {version}: {report.get('error')}"
    assert report["version"] == version
    uses = report["checked"]["uses"]
    assert uses["found"] >= 40 and uses["calls"] >= 15, uses  # the AST walk found our code
    assert not report["problems"], f"TensorRT {version}:\n" + "\n".join(report["problems"])
    assert {"NetworkFromOnnxPath", "CreateConfig", "engine_bytes_from_network"} <= set(
        report["checked"]["polygraphy"]["calls"]
    )
    order = report["checked"]["order"]
    assert order["build"]["calls"][0] == "init_libnvinfer_plugins" and "Builder" in order["build"]["calls"]
    assert order["deserialize"]["calls"][:2] == ["init_libnvinfer_plugins", "Runtime"]
    plugins = report["checked"]["plugins"]
    if plugins["selected"] == "aot":
        assert plugins["registered"]["impl"] == "aot_impl" and plugins["registered"]["autotune"]
        assert plugins["aot_fp32"]["params"] == 5 + plugins["aot_fp32"]["extra_scalars"] + 1
    elif plugins["selected"] == "jit":
        assert plugins["registered"]["impl"] == "impl" and plugins["registered"]["autotune"]
    else:
        assert "not registered" in plugins["registration"]


def test_the_matrix_covers_every_plugin_path_and_the_newest_11x(reports):
    selected = {v: r.get("checked", {}).get("plugins", {}).get("selected") for v, r in reports.items()}
    assert {"aot", "jit", "builtin-roialign"} <= set(selected.values()), selected
    assert any(v.startswith("11.") for v in VERSIONS) and "10.3.0" in VERSIONS
