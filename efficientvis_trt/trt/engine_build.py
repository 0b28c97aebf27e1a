"""Build a strongly typed engine from a precision's ONNX graph and check it before it reaches disk.

TensorRT 11 removed the FP16/INT8 builder flags, so the precision lives in the ONNX graph and the
build is always strongly typed (docs/precision.md). What Polygraphy does here (docs/tensorrt.md,
"Polygraphy"): the network from the ONNX file with TensorRT's plugin library initialised
(``NetworkFromOnnxPath``), the builder config (``CreateConfig``: workspace, optimisation level,
DETAILED profiling verbosity, the optional batch profile) and the engine bytes
(``engine_bytes_from_network``). What stays ours: the timing cache (Polygraphy passes a corrupt one
on unchecked), the opset cap, our plugin's registration, the plugin path really bound by the parser,
the surfaced ``aot_impl`` error, the layer-precision verdict and the file names.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from efficientvis_trt.errors import EvisError
from efficientvis_trt.io_utils import file_sha256
from efficientvis_trt.plugins.spec import PLUGIN_NAMESPACE
from efficientvis_trt.trt import engine as E
from efficientvis_trt.trt import env
from efficientvis_trt.trt.layers import layer_precision_verdict, summarize_layers

log = logging.getLogger(__name__)

BUILTIN_ROIALIGN = "ROIAlign_TRT"  # TensorRT's built-in plugin the parser maps ONNX RoiAlign to


# ---- the optional batch profile ---------------------------------------------------------------------


@dataclass(frozen=True)
class BatchProfile:
    """An optimisation profile for a leading dynamic stream/batch dimension of every input (min <= opt <= max)."""

    min: int = 1
    opt: int = 1
    max: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise EvisError(f"batch profile must satisfy 1 <= MIN <= OPT <= MAX, got {self.text}")

    @property
    def text(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """``"1:4:8"`` -> BatchProfile(1, 4, 8); one number N means N:N:N."""
        parts = str(text).split(":")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise EvisError(f"--batch must be MIN:OPT:MAX (e.g. 1:4:8), got {text!r}") from None
        if len(nums) == 1:
            nums = nums * 3
        if len(nums) != 3:
            raise EvisError(f"--batch must be MIN:OPT:MAX (e.g. 1:4:8), got {text!r}")
        return cls(*nums)

    def to_dict(self) -> dict:
        return {"min": self.min, "opt": self.opt, "max": self.max}


def profile_shapes(inputs: dict[str, tuple[int, ...]], batch: BatchProfile | None) -> dict[str, tuple]:
    """name -> (min, opt, max) shapes for inputs whose leading dimension is dynamic (-1); {} for static graphs."""
    dynamic = {n: s for n, s in inputs.items() if len(s) and int(s[0]) < 0}
    bad = {n: s for n, s in inputs.items() if any(int(d) < 0 for d in s[1:])}
    if bad:
        raise EvisError(f"only the leading (stream/batch) dimension may be dynamic; got {bad}")
    if not dynamic:
        if batch is not None and batch != BatchProfile():
            raise EvisError(f"--batch {batch.text} needs a graph with a dynamic leading dimension; this one is static")
        return {}
    if batch is None:
        batch = BatchProfile()
    return {n: tuple((b, *map(int, s[1:])) for b in (batch.min, batch.opt, batch.max)) for n, s in dynamic.items()}


# ---- timing cache -------------------------------------------------------------------------------------


def set_timing_cache(config, cache_path: Path):
    """Load the cache file into `config`; an unreadable or mismatching one is one clear line and a fresh cache.

    ITimingCache is only valid for the exact TensorRT version and device
    (https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/TimingCache.html).
    Returns the cache object: keep a reference for the whole build.
    """
    blob = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = None
    problem = ""
    if blob:
        try:
            cache = config.create_timing_cache(blob)
        except Exception as exc:  # the bindings raise on a corrupt blob in some versions
            problem = f"unreadable ({type(exc).__name__}: {exc})"
        if cache is None and not problem:
            problem = "unreadable (corrupt)"
        if cache is not None and not config.set_timing_cache(cache, ignore_mismatch=False):
            problem, cache = "made for another GPU or TensorRT version", None
    if problem:
        log.warning("timing cache %s is %s: building with an empty one, which replaces it", cache_path.name, problem)
    if cache is None:
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise EvisError("TensorRT could not create an empty timing cache")
    return cache


# ---- what the parser bound ---------------------------------------------------------------------------


def _v3_core(trt, layer):
    """The core interface of a V3 plugin layer, or None where the bindings cannot give it (10.3)."""
    plugin = getattr(layer, "plugin", None)
    if plugin is None:
        return None
    return plugin.get_capability_interface(trt.PluginCapabilityType.CORE)


def _builtin_roialign_layer_name(name: str) -> bool:
    """A layer the parser made from our function body's RoiAlign: unnamed ONNX nodes become layers named
    "node_of_<first output>" (onnx-tensorrt release/10.1-GA importerUtils.cpp getNodeName), and the body's
    RoiAlign outputs are named "_roialign_<n>_0" (export/roi_align_onnx.py)."""
    low = name.lower()
    return "roialign" in low and "multilevel" not in low


def plugin_in_network(trt, network, selected: str) -> dict:
    """What the parsed network holds for RoIAlign: our plugin (aot/jit), ROIAlign_TRT, or unknown.

    The ONNX parser decides (TensorRT 10.6 prefers the model-local function over a registered
    plugin; plugins win from 10.7: onnx-tensorrt docs/Changelog.md), so ask the network, not the
    version table. `network.get_layer` returns ILayer; the subclass is set the way Polygraphy does
    (polygraphy/backend/trt/util.py, str_from_network).
    """
    ours = builtin = by_name = 0
    try:
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type == trt.LayerType.PLUGIN_V3:
                layer.__class__ = trt.IPluginV3Layer
                core = _v3_core(trt, layer)
                if core is None:  # TensorRT 10.3: the bindings return None here (pyPlugin.cpp, fixed in 10.8)
                    if _builtin_roialign_layer_name(str(getattr(layer, "name", ""))):
                        builtin += 1
                        by_name += 1
                    continue
                name, namespace = str(core.plugin_name), str(core.plugin_namespace)
            elif layer.type == trt.LayerType.PLUGIN_V2:
                layer.__class__ = trt.IPluginV2Layer
                name, namespace = str(layer.plugin.plugin_type), str(layer.plugin.plugin_namespace)
            else:
                continue
            if namespace == PLUGIN_NAMESPACE:
                ours += 1
            elif name == BUILTIN_ROIALIGN:
                builtin += 1
    except Exception as exc:  # introspection only: never fail a build on it
        return {"in_engine": "unknown", "how": f"could not inspect the network's plugin layers ({exc})"}
    if ours:
        mode = selected if selected in ("aot", "jit") else "plugin"
        return {"in_engine": mode, "how": f"{ours} efficientvis::MultiLevelRoIAlign plugin layer(s) in the network"}
    if builtin:
        how = f"{builtin} {BUILTIN_ROIALIGN} layer(s) in the network"
        if by_name:
            how += f" ({by_name} known by layer name: this TensorRT's bindings hide a V3 plugin's name)"
        return {"in_engine": "builtin-roialign", "how": how}
    return {"in_engine": "unknown", "how": "neither our plugin nor ROIAlign_TRT found among the network's layers"}


# ---- build -------------------------------------------------------------------------------------------


@dataclass
class EngineBuildResult:
    path: Path
    metadata_path: Path
    metadata: dict


def _onnx_opset(onnx_path: Path) -> int | None:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _network_inputs(network) -> dict[str, tuple[int, ...]]:
    return {
        network.get_input(i).name: tuple(int(d) for d in network.get_input(i).shape) for i in range(network.num_inputs)
    }


def _polygraphy(what: str, call, *args, **kwargs):
    """Run a Polygraphy loader; its PolygraphyException becomes one EvisError line."""
    from polygraphy.exception import PolygraphyException

    try:
        return call(*args, **kwargs)
    except PolygraphyException as exc:
        first = " ".join(str(exc).split())[:600]
        raise EvisError(f"{what}: {first}") from None


def build_engine(
    bundle: Any,
    precision: str,
    onnx_path: str | os.PathLike | None = None,
    *,
    workspace_gb: float = 4.0,
    opt_level: int = 3,
    verbose: bool = False,
    bundle_path: str | os.PathLike | None = None,
    batch: BatchProfile | None = None,
) -> EngineBuildResult:
    """Build and check a strongly typed engine from the precision's ONNX graph; write plan + sidecar.

    Order matters: TensorRT is imported before anything is touched (a missing install writes
    nothing); plugins are prepared before parsing; the layer-precision verdict comes before the
    plan is written, so an engine that lost its precision never reaches disk.
    `batch`: optimisation profile for a leading dynamic stream/batch dimension (None: static graph).
    """
    E.check_precision(precision)
    from efficientvis_trt.trt import parser_rules

    if onnx_path is None:
        onnx_path = bundle.onnx_path(precision)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EvisError(
            f"{precision} graph not found: {onnx_path} (run `evis build BUNDLE --precision {precision}` "
            "for the ONNX graph first)"
        )
    # The graph as TensorRT will get it (LayerNorm in explicit fp32 ops), judged by the parser rules
    # before TensorRT is imported: a refused graph is one line here, not a parser log on a GPU machine.
    import onnx

    prepared, _ = parser_rules.prepare_for_tensorrt(onnx.load(str(onnx_path)))
    problems = parser_rules.check_model(prepared)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise EvisError(problems[0].line(onnx_path.name) + more)
    trt = env.import_tensorrt("Builder")
    try:
        from polygraphy.backend.trt import CreateConfig, NetworkFromOnnxPath, Profile, engine_bytes_from_network
    except ImportError:
        raise EvisError(f"Polygraphy is not installed: {env.INSTALL_HINT}") from None
    gpu_name, cc = env.cuda_device_info()
    trt_version = str(trt.__version__)
    if not 0 <= int(opt_level) <= 5:
        raise EvisError(f"--opt-level must be 0..5, got {opt_level}")
    if workspace_gb <= 0:
        raise EvisError(f"--workspace-gb must be positive, got {workspace_gb}")
    opset = _onnx_opset(onnx_path)
    if opset is not None:
        env.check_onnx_opset(opset, trt_version, onnx_path.name)

    logger = env.make_logger(trt, verbose)
    from efficientvis_trt.trt import plugin as trt_plugin

    selected = trt_plugin.prepare_plugins(trt, logger)
    log.info(
        "TensorRT %s on %s (sm%d%d); RoIAlign plugin path: %s (%s)",
        trt_version,
        gpu_name,
        cc[0],
        cc[1],
        selected.mode,
        selected.reason,
    )
    trt_plugin.take_plugin_errors()  # errors from an earlier build are not this build's cause
    # parse_from_file resolves external weights relative to the model file; Polygraphy calls
    # init_libnvinfer_plugins before parsing as well.
    with tempfile.TemporaryDirectory(prefix="evis-trt-graph-") as tmp:
        parse_path = Path(tmp) / onnx_path.name  # the prepared graph; weights inline (parsed before the dir goes)
        onnx.save(prepared, str(parse_path))
        builder, network, parser = _polygraphy(
            f"TensorRT's ONNX parser rejected {onnx_path.name}",
            NetworkFromOnnxPath(str(parse_path), strongly_typed=True),
        )
    bound = plugin_in_network(trt, network, selected.mode)
    shapes = profile_shapes(_network_inputs(network), batch)
    profiles = None
    if shapes:
        profile = Profile()
        for name, (lo, mid, hi) in shapes.items():
            profile.add(name, min=lo, opt=mid, max=hi)
        profiles = [profile]
    create_config = CreateConfig(
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(workspace_gb * (1 << 30))},
        builder_optimization_level=int(opt_level),
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED,  # the inspector needs it for layer precisions
        profiles=profiles,
    )
    config = _polygraphy("TensorRT builder config", create_config, builder, network)
    cache_path = E.timing_cache_path(bundle, gpu_name, cc, trt_version)
    timing_cache = set_timing_cache(config, cache_path)  # noqa: F841 - must outlive the build

    start = time.perf_counter()
    try:
        plan = engine_bytes_from_network((builder, network, parser), config=config)
    except Exception as exc:
        plan, failure = None, " ".join(str(exc).split())[:300]
    else:
        failure = ""
    build_s = time.perf_counter() - start
    if not plan:
        raise build_failure(precision, failure, trt_plugin.take_plugin_errors())
    plan_bytes = bytes(memoryview(plan))

    engine, _runtime, _meta, _logger = _deserialize_fresh(trt, logger, plan_bytes)
    layer_json = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    report = summarize_layers(layer_json)
    verdict = layer_precision_verdict(report, precision)
    if verdict.verdict == "fail":
        raise EvisError(f"layer-precision check failed: {verdict.why}; refusing to write the engine")
    if verdict.verdict == "unknown":
        log.warning("layer-precision check: unknown (%s)", verdict.why)

    path = E.engine_path(bundle, precision, gpu_name, cc, trt_version)
    meta = {
        "format": "tensorrt-plan",
        "precision": precision,
        "gpu": gpu_name,
        "compute_capability": f"{cc[0]}.{cc[1]}",
        "tensorrt_version": trt_version,
        "strongly_typed": True,
        "plugin_path": {"selected": selected.mode, "reason": selected.reason, **bound},
        "batch_profile": (batch or BatchProfile()).to_dict() if shapes else None,  # the profile really used
        "dynamic_inputs": sorted(shapes),
        "build_time_s": round(build_s, 3),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source_onnx": onnx_path.name,
        "source_onnx_sha256": file_sha256(onnx_path),
        "source_onnx_opset": opset,
        "plan_sha256": hashlib.sha256(plan_bytes).hexdigest(),
        "workspace_gb": workspace_gb,
        "builder_optimization_level": int(opt_level),
        "timing_cache": cache_path.name,
        "layers": report.to_dict(),
        "layer_precision": verdict.to_dict(),
        "built_with": "polygraphy",
    }
    cache_bytes = bytes(memoryview(config.get_timing_cache().serialize()))
    E.write_engine(bundle, path, plan_bytes, meta, (cache_path, cache_bytes))
    log.info(
        "wrote %s (%.1f MB, built in %.1f s; layer precision %s)", path, len(plan_bytes) / 1e6, build_s, verdict.verdict
    )
    return EngineBuildResult(path, E.sidecar_path(path), meta)


def build_failure(precision: str, failure: str, plugin_errors: list[str]) -> EvisError:
    """The one line for a build that returned no plan: our plugin's own error first, when it raised one.

    Exceptions inside ``aot_impl`` are caught and printed by the bindings; the build then returns
    None with no other cause (tensorrt/plugin/_plugin_class.py, get_launch_params).
    """
    if plugin_errors:
        return EvisError(
            f"TensorRT failed to build the {precision} engine: the RoIAlign plugin failed in {plugin_errors[-1]}"
        )
    return EvisError(
        f"TensorRT failed to build the {precision} engine ({failure or 'no plan returned'}; see the TensorRT log "
        "above; a larger --workspace-gb helps when it reports out-of-memory tactics)"
    )


def _deserialize_fresh(trt, logger, plan_bytes: bytes):
    """Deserialize the bytes just built (same process: plugins already prepared, called again all the same)."""
    from efficientvis_trt.trt.plugin import prepare_plugins

    prepare_plugins(trt, logger)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise EvisError("TensorRT built an engine it cannot deserialize (see the TensorRT log above)")
    return engine, runtime, {}, logger
