"""Engine files: names, lookup, the sidecar JSON, the compatibility check, and the one deserialize.

An engine is valid for one GPU (compute capability) and one TensorRT version, so its file name
says both and a mismatch becomes a one-line "rebuild" message instead of a crash. The plan file is
the bare ``build_serialized_network`` output (trtexec and Triton server load it); everything else
about the engine lives in the JSON beside it. Design: docs/tensorrt.md, "The TensorRT layer".
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from efficientvis_trt.contract import check_precision
from efficientvis_trt.errors import EvisError
from efficientvis_trt.io_utils import write_bytes_atomic, write_json_atomic
from efficientvis_trt.trt import env

PLAN_SUFFIX = ".plan"
META_SUFFIX = ".json"


# ---- naming ----------------------------------------------------------------------------------------


def sanitize_gpu_name(name: str) -> str:
    """'NVIDIA H200' -> 'NVIDIA_H200'; 'Orin (nvgpu)' -> 'Orin_nvgpu'. Only [A-Za-z0-9_-] survive."""
    out = re.sub(r"[^A-Za-z0-9-]+", "_", name.strip()).strip("_")
    return out or "unknown_gpu"


def device_key(gpu_name: str, cc: tuple[int, int], trt_version: str) -> str:
    """The part of a file name that ties it to one GPU and one TensorRT: NVIDIA_H200.sm90.trt10.13.0."""
    major, minor = cc
    return f"{sanitize_gpu_name(gpu_name)}.sm{int(major)}{int(minor)}.trt{env.short_version(trt_version)}"


def engine_dir(bundle: Any) -> Path:
    """`bundle.engine_dir` for a Bundle (the bundle module owns where engines live), else BUNDLE/engines."""
    folder = getattr(bundle, "engine_dir", None)
    return Path(folder) if folder is not None else Path(bundle) / "engines"


def engine_path(bundle: Any, precision: str, gpu_name: str, cc: tuple[int, int], trt_version: str) -> Path:
    """BUNDLE/engines/model.<precision>.<GPU>.sm<cc>.trt<version>.plan (sidecar: same name, .json)."""
    check_precision(precision)
    return engine_dir(bundle) / f"model.{precision}.{device_key(gpu_name, cc, trt_version)}{PLAN_SUFFIX}"


def sidecar_path(plan_path: str | os.PathLike) -> Path:
    plan_path = Path(plan_path)
    if plan_path.name.endswith(PLAN_SUFFIX):
        return plan_path.with_name(plan_path.name[: -len(PLAN_SUFFIX)] + META_SUFFIX)
    return plan_path.with_name(plan_path.name + META_SUFFIX)


def timing_cache_path(bundle: Any, gpu_name: str, cc: tuple[int, int], trt_version: str) -> Path:
    """One timing cache per GPU and TensorRT version (caches do not transfer between them)."""
    return engine_dir(bundle) / f"timing.{device_key(gpu_name, cc, trt_version)}.cache"


def rebuild_hint(bundle_path: str | os.PathLike | None, precision: str) -> str:
    """The command that builds an engine (``--backend trt``: without it `evis build` writes no engine)."""
    target = str(bundle_path) if bundle_path else "BUNDLE"
    return f"rebuild it here with `evis build {target} --precision {precision} --backend trt`"


# ---- finding and reading ---------------------------------------------------------------------------


def read_sidecar(plan_path: str | os.PathLike) -> dict:
    """The engine's JSON, {} when there is none; a corrupt one is one clear line."""
    path = sidecar_path(plan_path)
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except ValueError:
        raise EvisError(f"engine metadata {path} is not valid JSON") from None
    if not isinstance(meta, dict):
        raise EvisError(f"engine metadata {path} is not a JSON object")
    return meta


def list_engines(bundle: Any, precision: str | None = None) -> list[dict]:
    """Sidecars of every engine in the bundle (any GPU/TensorRT), for listings and mismatch messages."""
    folder = engine_dir(bundle)
    if not folder.is_dir():
        return []
    out = []
    for plan in sorted(folder.glob(f"model.{precision or '*'}.*{PLAN_SUFFIX}")):
        try:
            meta = read_sidecar(plan)
        except EvisError:
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
    """The engine for this GPU and TensorRT, or None if it was not built here (detected when not given)."""
    check_precision(precision)
    if gpu_name is None or cc is None:
        gpu_name, cc = env.cuda_device_info()
    if trt_version is None:
        trt_version = env.import_tensorrt().__version__
    path = engine_path(bundle, precision, gpu_name, cc, trt_version)
    return path if path.is_file() else None


def check_compat(
    meta: dict,
    gpu_name: str,
    cc: tuple[int, int],
    trt_version: str,
    plan_path: str | os.PathLike = "",
    bundle_path: str | os.PathLike | None = None,
) -> None:
    """Raise a rebuild message if the sidecar names another GPU or TensorRT version."""
    if not meta:
        return
    built_cc = str(meta.get("compute_capability", ""))
    built_trt = str(meta.get("tensorrt_version", ""))
    problems = []
    if built_cc and built_cc != f"{cc[0]}.{cc[1]}":
        problems.append(
            f"GPU {meta.get('gpu', '?')} (sm{built_cc.replace('.', '')}) vs this {gpu_name} (sm{cc[0]}{cc[1]})"
        )
    if built_trt and env.short_version(built_trt) != env.short_version(trt_version):
        problems.append(f"TensorRT {env.short_version(built_trt)} vs installed {env.short_version(trt_version)}")
    if problems:
        raise EvisError(
            f"engine {Path(plan_path).name or '?'} was built for another setup ({'; '.join(problems)}): "
            + rebuild_hint(bundle_path, str(meta.get("precision", "PRECISION")))
        )


def engine_needs_python_plugin(meta: dict) -> bool:
    """Whether the sidecar says our JIT plugin is inside: then it must be registered before loading.

    An AOT engine carries the kernel as PTX and loads with no Python (tensorrt.plugin aot_impl docs).
    """
    plugin = meta.get("plugin_path") or {}
    return str(plugin.get("in_engine", plugin.get("mode", ""))) == "jit"


def deserialize(path: str | os.PathLike, bundle_path: str | os.PathLike | None = None, *, precision: str | None = None):
    """The one deserialize: checks, plugins, then the plan; returns (engine, runtime, sidecar, logger).

    Keep the runtime (and logger) alive as long as the engine. ``deserialize_cuda_engine`` returns
    None for a plan from another GPU/TensorRT or a corrupt file; that becomes a rebuild message,
    after the sidecar check has ruled out the common cause with a more precise one.
    """
    trt = env.import_tensorrt("Runtime")
    path = Path(path)
    if not path.is_file():
        raise EvisError(f"TensorRT engine not found: {path}")
    meta = read_sidecar(path)
    if precision is not None and meta.get("precision") and meta["precision"] != precision:
        raise EvisError(f"engine {path.name} is {meta['precision']}, not {precision}")
    gpu_name, cc = env.cuda_device_info()
    check_compat(meta, gpu_name, cc, trt.__version__, path, bundle_path)
    logger = env.make_logger(trt)
    from efficientvis_trt.trt.plugin import prepare_plugins

    prepare_plugins(trt, logger, plugin_required=engine_needs_python_plugin(meta))
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise EvisError(
            f"TensorRT {trt.__version__} cannot load engine {path.name} on {gpu_name} (built for another GPU or "
            "TensorRT version, or corrupt; see the TensorRT log above): "
            + rebuild_hint(bundle_path, str(meta.get("precision") or precision or "PRECISION"))
        )
    return engine, runtime, meta, logger


def write_engine(bundle: Any, plan: Path, plan_bytes: bytes, meta: dict, cache: tuple[Path, bytes]) -> None:
    """The one place engine files are written: plan, sidecar and timing cache, all or nothing.

    A Bundle takes them in one transaction (the bundle module owns the engines/ folder and the
    commit: docs/bundle.md, "Transactions and locking"); a bare folder (tests, tools) gets plain
    atomic writes, sidecar last, so a plan without its sidecar is never a finished build.
    """
    if hasattr(bundle, "transaction"):
        root = Path(bundle.path)
        with bundle.transaction() as tx:
            tx.add_file(plan.relative_to(root).as_posix(), plan_bytes, role="engine", precision=meta["precision"])
            tx.add_file(
                sidecar_path(plan).relative_to(root).as_posix(),
                (json.dumps(meta, indent=2) + "\n").encode(),
                role="engine-info",
            )
            tx.add_file(cache[0].relative_to(root).as_posix(), cache[1], role="timing-cache")
        return
    write_bytes_atomic(plan, plan_bytes)
    write_bytes_atomic(cache[0], cache[1])
    write_json_atomic(sidecar_path(plan), meta)
