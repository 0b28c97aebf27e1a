"""The TensorRT plugin ``efficientvis::MultiLevelRoIAlign``, written in Python, and the choice of path.

Which path a machine takes is decided from the TensorRT version (`select_plugin_path`,
a pure function, unit-tested on every branch) and said aloud by `register_trt_plugin`
(logged) and ``evis plugins``:

* TensorRT >= 10.9: AOT plugin. ``@trtp.aot_impl`` compiles the Triton kernel to PTX for
  the build GPU's compute capability with the attributes baked in; the PTX is embedded in
  the engine, which then runs without Python (trtexec, C++, Triton server).
* TensorRT 10.7-10.8: JIT plugin. ``@trtp.impl`` launches the Triton kernel through torch
  on TensorRT's stream at inference time, so the engine needs Python with torch (CUDA),
  triton and this package, and the plugin registered before deserializing.
* TensorRT < 10.7 (JetPack 6 ships 10.3; 10.6 has Python plugins but its parser prefers the
  model-local function): no plugin is registered; the ONNX parser expands the node's
  model-local function into built-in RoiAlign (ROIAlign_TRT).
* ``@trtp.autotune`` declares the I/O type combinations (`AUTOTUNE_TYPES`); an exception in
  any of our callbacks is recorded (`take_plugin_errors`) because the bindings swallow it.
* No TensorRT: unavailable, with the install hint; using the plugin raises one
  `BackendUnavailable`.

Only one of ``impl`` / ``aot_impl`` is ever registered, so TensorRT never has to be told
which to prefer (with both, plugin creation raises ValueError unless a PREFER_* network
flag or the node attribute ``aot`` says which: tensorrt/plugin/_lib.py, create_plugin).

Attribute types. The ONNX parser turns node attributes into plugin fields by the
creator's field names: ONNX INT -> INT32 field, FLOAT -> FLOAT32 (docs/tensorrt.md, "Plugin paths"). A Python
``int`` / ``float`` annotation declares INT64 / FLOAT64 fields
(tensorrt/plugin/_utils.py ``_built_in_to_plugin_field_type``) and the creator then calls
``int(field.data)`` on a one-element array, which NumPy 2 rejects ("only 0-dimensional
arrays can be converted to Python scalars", seen with TensorRT 10.16 in
Stability-AI/stable-audio-3 PR #49). So every attribute is annotated as a 1-element
``numpy.typing.NDArray[np.int32]`` / ``NDArray[np.float32]``: the creator does
``field.data.astype(int32)``, which accepts INT32 and INT64 fields alike, and
`attrs_from_fields` turns the arrays back into `RoIAlignAttrs`. Attribute order equals the
ONNX node's (`RoIAlignAttrs.onnx_attributes`), because some ``tensorrt.plugin`` versions
pass all attributes positionally to ``aot_impl``.

Importing this module never imports TensorRT, Triton or torch; definitions happen inside
`register_trt_plugin`, which `prepare_plugins` calls once per process.
Every ``tensorrt.plugin`` use here is checked against NVIDIA's bindings of each supported version
(docs/tensorrt.md, "What is proved how"). This module deliberately has no ``from __future__ import
annotations``: ``tensorrt.plugin`` inspects real annotation objects.
"""

import logging
import threading
from dataclasses import dataclass
from typing import Any, Optional

from efficientvis_trt.errors import BackendUnavailable, EvisError
from efficientvis_trt.extras import install_command
from efficientvis_trt.plugins.spec import PLUGIN_ID, RoIAlignAttrs, plugin_scalar
from efficientvis_trt.trt.env import INSTALL_HINT, gpu_info_or_none, installed_version, parse_version

log = logging.getLogger(__name__)

MODES = ("aot", "jit", "builtin-roialign", "unavailable")
MIN_TRT = (10, 3)
JIT_TRT = (10, 6)
AOT_TRT = (10, 9)


@dataclass(frozen=True)
class PluginPath:
    """How MultiLevelRoIAlign runs under TensorRT on this machine, and why."""

    mode: str  # one of MODES
    reason: str
    needs_python_at_load: bool  # engine deserialization needs Python + this package (+ torch, triton)
    trt_version: Optional[str] = None

    @property
    def registers_plugin(self) -> bool:
        return self.mode in ("aot", "jit")


def select_plugin_path(
    trt_version: Optional[str] = None, *, triton_available: bool = True, torch_cuda_available: bool = True
) -> PluginPath:
    """The RoIAlign path for a TensorRT version (None = TensorRT not installed); pure function.

    ``triton_available`` / ``torch_cuda_available`` describe the Python environment
    (defaults: present); without what a plugin path needs it falls back to the built-in
    RoiAlign path and says why.
    """
    if trt_version is None:
        return PluginPath("unavailable", INSTALL_HINT, False, None)
    v = parse_version(trt_version)[:2]
    tag = f"TensorRT {trt_version}"
    builtin_tail = (
        "the ONNX parser expands the node's model-local function (standard ops) into built-in "
        "RoiAlign (ROIAlign_TRT); the engine needs nothing extra at load"
    )
    if v < MIN_TRT:
        return PluginPath(
            "unavailable",
            f"{tag} is older than {MIN_TRT[0]}.{MIN_TRT[1]}, the oldest this toolkit "
            f"supports: upgrade TensorRT ({INSTALL_HINT})",
            False,
            trt_version,
        )
    if v < JIT_TRT:
        return PluginPath(
            "builtin-roialign",
            f"{tag} < 10.6 has no Python plugins (JetPack 6 ships 10.3): no plugin is registered and {builtin_tail}",
            False,
            trt_version,
        )
    if not triton_available:
        return PluginPath(
            "builtin-roialign",
            f"{tag} could use the Python plugin but Triton is not installed or older than 3.3 "
            f"({install_command('triton')}): no plugin is registered and {builtin_tail}",
            False,
            trt_version,
        )
    if v == JIT_TRT:
        # 10.6 has Python plugins, but its parser prefers a model-local function over a registered
        # plugin (plugins win from 10.7: onnx-tensorrt docs/Changelog.md, 10.7 GA), and our graphs
        # carry one, so a registered JIT plugin would never be used.
        return PluginPath(
            "builtin-roialign",
            f"{tag}'s ONNX parser prefers the model-local function over a registered plugin (plugins win "
            f"from 10.7): no plugin is registered and {builtin_tail}",
            False,
            trt_version,
        )
    if v < AOT_TRT:
        if not torch_cuda_available:
            return PluginPath(
                "builtin-roialign",
                f"{tag} (10.7-10.8) only has JIT Python plugins, which run the "
                f"Triton kernel through torch, and torch with CUDA is not available: no plugin is "
                f"registered and {builtin_tail}",
                False,
                trt_version,
            )
        return PluginPath(
            "jit",
            f"{tag} has Python plugins but no AOT (from 10.9): JIT plugin running the Triton "
            f"kernel through torch at inference; engines need Python with torch (CUDA), triton and "
            f"efficientvis_trt, with register_trt_plugin() called before deserializing, and cannot "
            f"run in trtexec or C++",
            True,
            trt_version,
        )
    return PluginPath(
        "aot",
        f"{tag} >= 10.9: AOT plugin; the Triton kernel is compiled to PTX for the build GPU "
        f"(Triton needed at build time only) and embedded in the engine, which loads with no Python "
        f"(trtexec, C++, Triton server)",
        False,
        trt_version,
    )


# --------------------------------------------------------------------------------------
# Environment probes (never raise)
# --------------------------------------------------------------------------------------


def triton_available() -> bool:
    """An importable Triton at the floor (3.3: the ASTSource signature compile_ptx uses)."""
    import importlib

    try:
        mod = importlib.import_module("triton")  # importing is the probe: a broken install fails here too
    except Exception:
        return False
    from efficientvis_trt.plugins.triton_roi_align import triton_at_floor

    return triton_at_floor(str(getattr(mod, "__version__", "")))


def torch_cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def detect_plugin_path() -> PluginPath:
    """`select_plugin_path` for this machine's TensorRT, Triton and torch."""
    version = installed_version()
    if version is None:
        return select_plugin_path(None)
    return select_plugin_path(version, triton_available=triton_available(), torch_cuda_available=torch_cuda_available())


# --------------------------------------------------------------------------------------
# Attributes
# --------------------------------------------------------------------------------------


def attrs_from_fields(*values: Any, **named: Any) -> RoIAlignAttrs:
    """`RoIAlignAttrs` from plugin attribute values as ``tensorrt.plugin`` hands them over."""
    return RoIAlignAttrs.from_plugin_fields(*values, **named)


def attrs_to_fields(attrs: RoIAlignAttrs) -> dict:
    """The plugin attribute values (1-element numpy arrays) for ``trtp.op`` / ``network.add_plugin``."""
    return attrs.plugin_fields()


# --------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------

_REGISTERED: Optional[PluginPath] = None


_PLUGIN_ERRORS: list = []  # exceptions raised inside our plugin callbacks, newest last


def take_plugin_errors() -> list:
    """The errors our plugin callbacks raised since the last call (and forget them).

    TensorRT's bindings catch an exception raised inside ``aot_impl`` / ``autotune``, print it and
    let the build return None with no other cause; the build reports these instead.
    """
    out = list(_PLUGIN_ERRORS)
    _PLUGIN_ERRORS.clear()
    return out


def _record(where: str, exc: BaseException) -> None:
    _PLUGIN_ERRORS.append(f"{where}: {type(exc).__name__}: {' '.join(str(exc).split())[:400]}")


def register_trt_plugin() -> PluginPath:
    """Register ``efficientvis::MultiLevelRoIAlign`` for this TensorRT (idempotent) and return the path taken.

    Call before parsing an ONNX model or deserializing an engine. Raises BackendUnavailable
    when TensorRT is missing or too old.
    """
    global _REGISTERED
    if _REGISTERED is not None:
        return _REGISTERED
    path = detect_plugin_path()
    if path.mode == "unavailable":
        raise BackendUnavailable(f"MultiLevelRoIAlign under TensorRT: {path.reason}")
    if path.registers_plugin:
        import tensorrt.plugin as trtp

        if not _already_defined(PLUGIN_ID):
            _define_plugin(trtp, aot=(path.mode == "aot"))
    log.info("MultiLevelRoIAlign: %s path. %s", path.mode, path.reason)
    _REGISTERED = path
    return path


def _already_defined(plugin_id: str) -> bool:
    """Whether ``tensorrt.plugin`` already holds a definition (registering twice raises there)."""
    try:
        from tensorrt.plugin import _lib as trtp_lib  # private: the QDP registry of this process

        return plugin_id in getattr(trtp_lib, "QDP_REGISTRY", {})
    except Exception:
        return False


def _define_plugin(trtp, aot: bool) -> None:
    """``@trtp.register`` plus exactly one of ``@trtp.aot_impl`` / ``@trtp.impl`` (see the module doc)."""
    from typing import Union

    import numpy as np
    import numpy.typing as npt

    I32 = npt.NDArray[np.int32]
    F32 = npt.NDArray[np.float32]

    # Output shape/dtype from the inputs: [B, R, C, P, P] in the features' dtype.
    # Reference: tensorrt.plugin.register doc page and samples/python/quickly_deployable_plugins.
    @trtp.register(PLUGIN_ID)
    def multi_level_roi_align_desc(
        P2: trtp.TensorDesc,
        P3: trtp.TensorDesc,
        P4: trtp.TensorDesc,
        P5: trtp.TensorDesc,
        rois: trtp.TensorDesc,
        output_size: I32,
        sampling_ratio: I32,
        canonical_box_size: F32,
        canonical_level: I32,
        aligned: I32,
        min_level: I32,
    ) -> trtp.TensorDesc:
        p = plugin_scalar(output_size, int)
        for other in (P3, P4, P5):
            if other.dtype != P2.dtype:
                raise EvisError(f"MultiLevelRoIAlign: feature levels differ in dtype ({P2.dtype} vs {other.dtype})")
        return trtp.from_shape_expr((rois.shape_expr[0], rois.shape_expr[1], P2.shape_expr[1], p, p), dtype=P2.dtype)

    # Supported type combinations (every NVIDIA AOT sample defines one: samples/python/
    # quickly_deployable_plugins/qdp_defs.py). I/O order: P2..P5, rois, output. The kernel takes
    # fp32 or fp16 features (all levels alike, output alike) with rois either fp32 or the features' type.
    @trtp.autotune(PLUGIN_ID)
    def multi_level_roi_align_autotune(
        P2: trtp.TensorDesc,
        P3: trtp.TensorDesc,
        P4: trtp.TensorDesc,
        P5: trtp.TensorDesc,
        rois: trtp.TensorDesc,
        output_size: I32,
        sampling_ratio: I32,
        canonical_box_size: F32,
        canonical_level: I32,
        aligned: I32,
        min_level: I32,
        outputs: tuple[trtp.TensorDesc],
    ) -> list[trtp.AutoTuneCombination]:
        try:
            return [trtp.AutoTuneCombination(types, "LINEAR") for types in AUTOTUNE_TYPES]
        except BaseException as exc:
            _record("autotune", exc)
            raise

    if aot:
        # Schema (tensorrt.plugin.aot_impl doc page): inputs, attributes, outputs, tactic ->
        # (kernel_name, ptx, KernelLaunchParams, SymIntExprs). The return annotation is required.
        # Kernel parameter order: input pointers, extra int32 scalars, output pointers.
        @trtp.aot_impl(PLUGIN_ID)
        def multi_level_roi_align_aot(
            P2,
            P3,
            P4,
            P5,
            rois,
            output_size,
            sampling_ratio,
            canonical_box_size,
            canonical_level,
            aligned,
            min_level,
            outputs,
            tactic,
        ) -> tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]:
            try:
                return _aot_kernel(
                    trtp, P2, P3, P4, P5, rois, output_size, sampling_ratio, canonical_box_size, canonical_level,
                    aligned, min_level,
                )  # fmt: skip
            except BaseException as exc:  # the bindings swallow it: keep the cause for the build's message
                _record("aot_impl", exc)
                raise
    else:
        # JIT (TensorRT 10.6-10.8): Python at inference; torch wraps TensorRT's buffers and stream,
        # as in NVIDIA's samples/python/quickly_deployable_plugins/qdp_defs.py.
        @trtp.impl(PLUGIN_ID)
        def multi_level_roi_align_impl(
            P2,
            P3,
            P4,
            P5,
            rois,
            output_size,
            sampling_ratio,
            canonical_box_size,
            canonical_level,
            aligned,
            min_level,
            outputs,
            stream,
        ) -> None:
            import torch

            from efficientvis_trt.plugins.triton_roi_align import _launch

            attrs = attrs_from_fields(
                output_size, sampling_ratio, canonical_box_size, canonical_level, aligned, min_level
            )
            try:
                with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
                    feats = [torch.as_tensor(t, device="cuda") for t in (P2, P3, P4, P5)]
                    boxes = torch.as_tensor(rois, device="cuda")
                    out = torch.as_tensor(outputs[0], device="cuda")
                    _launch(feats, boxes, out, attrs)
            except BaseException as exc:  # the bindings print and swallow it: keep the cause
                _record("impl", exc)
                raise


# I/O type combinations the kernel supports (see the autotune definition): '|' ties the choices together.
AUTOTUNE_TYPES = (
    "FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16",
    "FP16, FP16, FP16, FP16, FP32, FP16",
)


def _aot_kernel(
    trtp, P2, P3, P4, P5, rois, output_size, sampling_ratio, canonical_box_size, canonical_level, aligned, min_level
):
    """(kernel name, PTX, launch params, extra scalars) for the AOT plugin; see `_define_plugin`."""
    from efficientvis_trt.plugins.triton_roi_align import compile_ptx

    attrs = attrs_from_fields(output_size, sampling_ratio, canonical_box_size, canonical_level, aligned, min_level)
    gpu = gpu_info_or_none()
    if gpu is None:
        raise BackendUnavailable(
            "MultiLevelRoIAlign AOT plugin: cannot read the CUDA device's compute "
            "capability (install cuda-python or torch with CUDA)"
        )
    kernel = compile_ptx(attrs, P2.dtype, gpu.compute_capability, rois_dtype=rois.dtype)
    launch = trtp.KernelLaunchParams()
    launch.grid_x = rois.shape_expr[0] * rois.shape_expr[1]  # one program per box
    launch.grid_y = trtp.cdiv(P2.shape_expr[1], kernel.block_c)  # channel blocks
    launch.block_x = kernel.num_warps * 32
    launch.shared_mem = kernel.shared_mem
    dims = [rois.shape_expr[1], P2.shape_expr[1]]
    for level in (P2, P3, P4, P5):
        dims += [level.shape_expr[2], level.shape_expr[3]]
    extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(d) for d in dims])
    return kernel.kernel_name, kernel.ptx, launch, extra


# ---- before every parse and deserialize ----------------------------------------------------------

_PLUGIN_LOCK = threading.Lock()
_PLUGIN_PATH: list = []  # the PluginPath registered in this process (at most one)


def prepare_plugins(trt, logger, *, plugin_required: bool = False):
    """Call before EVERY parse and EVERY deserialize; returns the `PluginPath` this process registered.

    ``trt.init_libnvinfer_plugins(logger, "")`` registers TensorRT's built-in plugins (ROIAlign_TRT
    among them): they are not registered at import (plugin/api/inferPlugin.cpp in NVIDIA/TensorRT),
    so without it the parser's RoiAlign importer fails ("ROIAlign plugin was not found in the plugin
    registry") and a plan holding ROIAlign_TRT fails to deserialize in a fresh process. Polygraphy's
    trt loader does the same before parsing and deserializing (polygraphy/backend/trt/loader.py).
    Our Python plugin is registered once per process (a second ``@trtp.register`` raises).
    `plugin_required`: the engine to load holds our JIT plugin (Python runs it at inference), so not
    registering it is an error; an AOT engine carries its PTX and loads without Python.
    """
    trt.init_libnvinfer_plugins(logger, "")
    with _PLUGIN_LOCK:
        if not _PLUGIN_PATH:
            try:
                path = register_trt_plugin()
            except (ImportError, BackendUnavailable) as exc:
                path = PluginPath("builtin-roialign", f"the Python plugin cannot be registered here ({exc})", False)
            _PLUGIN_PATH.append(path)
        path = _PLUGIN_PATH[0]
    if plugin_required and path.mode != "jit":
        raise EvisError(
            "this engine holds the efficientvis::MultiLevelRoIAlign JIT plugin, which needs Python with torch "
            f"(CUDA), triton and efficientvis_trt at load, but this process did not register it: {path.reason}"
        )
    return path
