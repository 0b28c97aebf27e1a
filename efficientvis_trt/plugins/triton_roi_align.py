"""Multi-level RoIAlign as one Triton kernel: PyTorch CUDA path, Triton interpreter, PTX for TensorRT.

One kernel source serves three callers:

* `multi_level_roi_align_triton` (torch tensors): CUDA tensors run the compiled kernel;
  CPU tensors run in Triton's interpreter when ``TRITON_INTERPRET=1`` is set (slow, for
  tests and debugging), otherwise `BackendUnavailable` says what to do.
* `compile_ptx`: PTX for a given compute capability with no GPU present
  (``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))``), used by the
  TensorRT AOT plugin (`trt.plugin`) to embed the kernel in the engine.
* The JIT TensorRT plugin (TensorRT 10.6-10.8) launches it through torch.

Semantics are exactly `efficientvis_trt.model.roi_align.multi_level_roi_align_reference`
(detectron2 level rule, torchvision/ONNX RoIAlign with half-pixel ``aligned``), computed in
fp32 for fp32 and fp16 features alike, with the same fp32 operation order (correctly
rounded ``div_rn``/``sqrt_rn``, FP contraction disabled), so results match the reference to
fp32 rounding of the final sum.

Kernel ABI (what TensorRT's AOT launcher passes, in this order: input pointers, extra
int32 scalars, output pointers; see the ``trtp.aot_impl`` doc page,
https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/tensorrt.plugin/trt_plugin_aot_impl/index.html):
``P2, P3, P4, P5, rois, num_rois, channels, H2, W2, H3, W3, H4, W4, H5, W5, out``. Every
attribute TensorRT cannot pass at run time (output size, sampling ratio, canonical box
size/level, aligned, min level) is a ``tl.constexpr`` baked into the compiled kernel.

Launch geometry (`launch_geometry`): program ``(i, j)`` computes box ``i`` (``b * R + r``)
for channels ``[j * BLOCK_C, (j + 1) * BLOCK_C)`` and all ``P * P`` bins (a ``BIN_BLOCK``
power-of-two tile, masked). So the grid ``(B * R, ceil(C / BLOCK_C), 1)`` covers every
(box, channel, bin) exactly once; `covered_output_indices` mirrors the kernel's index
math so a test can assert it.

Importing this module imports neither Triton nor torch. The kernel is defined at module
level with string annotations (``from __future__ import annotations``: Triton normalises
``"tl.constexpr"``), and ``tl`` is bound when first needed. The interpreter or JIT
wrapper is built per call from the environment at call time, so ``TRITON_INTERPRET``
does not have to be set before import (unlike ``@triton.jit`` at module level). That also
needs the kernel body to call only ``tl`` builtins: Triton's own ``@jit`` helpers
(``tl.zeros``, ``tl.sum``, ...) are wrapped for one mode when triton is first imported.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from efficientvis_trt.errors import BackendUnavailable, EvisError
from efficientvis_trt.extras import install_command
from efficientvis_trt.plugins.spec import RoIAlignAttrs
from efficientvis_trt.versions import at_least

# The PTX entry name is the Python function's name.
KERNEL_NAME = "evis_multi_level_roi_align"
NUM_LEVELS = 4  # the operator contract: P2..P5
NUM_WARPS = 4
MAX_TILE = 4096  # BLOCK_C * BIN_BLOCK elements per program
MAX_BLOCK_C = 32
FEATURE_ARGS = ("f0_ptr", "f1_ptr", "f2_ptr", "f3_ptr")
SCALAR_ARGS = ("num_rois", "channels", "h0", "w0", "h1", "w1", "h2", "w2", "h3", "w3")
CONSTEXPR_ARGS = (
    "OUTPUT_SIZE",
    "SAMPLING_RATIO",
    "CANONICAL_BOX_SIZE",
    "CANONICAL_LEVEL",
    "ALIGNED",
    "MIN_LEVEL",
    "NUM_LEVELS",
    "BLOCK_C",
    "BIN_BLOCK",
)
# Parameters of the compiled kernel (after constexprs are baked in), in ABI order.
RUNTIME_ARGS = FEATURE_ARGS + ("rois_ptr",) + SCALAR_ARGS + ("out_ptr",)

# 3.3 is the first Triton whose ASTSource takes `constexprs=` (python/triton/compiler/compiler.py of the
# 3.3.1 wheel: `def __init__(self, fn, signature, constexprs=None, attrs=None)`), which compile_ptx passes.
MIN_TRITON = (3, 3)
TRITON_HINT = install_command("triton")


def triton_at_floor(version: str | None) -> bool:
    """True when `version` (e.g. "3.3.1", "3.6.0+git") is at least MIN_TRITON."""
    return at_least(version, MIN_TRITON)


tl: Any = None  # triton.language, bound by _require_triton() before the kernel is used


def _require_triton():
    """Import Triton (and bind ``tl`` for the kernel) or raise one clear BackendUnavailable."""
    global tl
    try:
        import triton
        import triton.language as language
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackendUnavailable(f"Triton is not installed ({exc}); {TRITON_HINT}") from exc
    if not triton_at_floor(str(getattr(triton, "__version__", ""))):
        raise BackendUnavailable(f"Triton {triton.__version__} is older than 3.3; {TRITON_HINT}")
    tl = language
    return triton


def triton_version() -> str | None:
    """Version of an importable Triton, or None; never raises."""
    try:
        import triton

        return str(triton.__version__)
    except Exception:
        return None


# --------------------------------------------------------------------------------------
# Launch geometry (pure Python, unit-tested for exact coverage)
# --------------------------------------------------------------------------------------


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


@dataclass(frozen=True)
class KernelConfig:
    """Compile-time tile shape; depends on the attributes only (so the AOT PTX does too)."""

    block_c: int
    bin_block: int
    num_warps: int = NUM_WARPS


def kernel_config(attrs: RoIAlignAttrs) -> KernelConfig:
    bins = int(attrs.output_size) ** 2
    bin_block = _next_pow2(bins)
    block_c = max(1, min(MAX_BLOCK_C, MAX_TILE // bin_block))
    return KernelConfig(block_c=block_c, bin_block=bin_block)


@dataclass(frozen=True)
class LaunchGeometry:
    grid: tuple[int, int, int]
    block_c: int
    bin_block: int
    num_warps: int

    @property
    def threads_per_block(self) -> int:
        return self.num_warps * 32


def launch_geometry(num_boxes: int, channels: int, attrs: RoIAlignAttrs) -> LaunchGeometry:
    """Grid for ``num_boxes = B * R`` boxes and ``channels`` channels: one program per (box, channel block)."""
    cfg = kernel_config(attrs)
    grid = (int(num_boxes), -(-int(channels) // cfg.block_c), 1)
    if grid[0] > 2**31 - 1 or grid[1] > 65535:
        raise EvisError(f"RoIAlign launch grid {grid} exceeds CUDA limits")
    return LaunchGeometry(grid=grid, block_c=cfg.block_c, bin_block=cfg.bin_block, num_warps=cfg.num_warps)


def covered_output_indices(geometry: LaunchGeometry, num_boxes: int, channels: int, output_size: int) -> Iterator[int]:
    """Flat output indices (into ``[B*R, C, P, P]``) each program stores, mirroring the kernel's index math."""
    bins = output_size * output_size
    for box in range(geometry.grid[0]):
        for cblk in range(geometry.grid[1]):
            for ci in range(geometry.block_c):
                c = cblk * geometry.block_c + ci
                if c >= channels:  # c_mask
                    continue
                for b in range(geometry.bin_block):
                    if b >= bins:  # bin_mask
                        continue
                    yield (box * channels + c) * bins + b


# --------------------------------------------------------------------------------------
# The kernel
# --------------------------------------------------------------------------------------


def evis_multi_level_roi_align(
    f0_ptr,
    f1_ptr,
    f2_ptr,
    f3_ptr,
    rois_ptr,
    num_rois,
    channels,
    h0,
    w0,
    h1,
    w1,
    h2,
    w2,
    h3,
    w3,
    out_ptr,
    OUTPUT_SIZE: tl.constexpr,
    SAMPLING_RATIO: tl.constexpr,
    CANONICAL_BOX_SIZE: tl.constexpr,
    CANONICAL_LEVEL: tl.constexpr,
    ALIGNED: tl.constexpr,
    MIN_LEVEL: tl.constexpr,
    NUM_LEVELS: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BIN_BLOCK: tl.constexpr,
):
    box = tl.program_id(0)  # b * num_rois + r
    cblk = tl.program_id(1)
    img = box // num_rois

    # Box corners; the level rule works in the rois dtype like the reference (w * h, clamp), then fp32.
    roi = rois_ptr + box.to(tl.int64) * 4
    x1 = tl.load(roi)
    y1 = tl.load(roi + 1)
    x2 = tl.load(roi + 2)
    y2 = tl.load(roi + 3)
    area = tl.maximum((x2 - x1) * (y2 - y1), 0.0)
    box_size = tl.sqrt_rn(area.to(tl.float32))
    ratio = tl.div_rn(box_size, tl.full((), CANONICAL_BOX_SIZE, tl.float32)) + 1e-8
    level = tl.floor(CANONICAL_LEVEL + tl.log2(ratio))
    level = tl.minimum(tl.maximum(level, MIN_LEVEL * 1.0), (MIN_LEVEL + NUM_LEVELS - 1) * 1.0)
    li = (level - MIN_LEVEL).to(tl.int32)

    # Per-box level select: feature pointer, size, and scale 1 / 2**(MIN_LEVEL + li) (exact in fp32).
    feat = tl.where(li == 0, f0_ptr, tl.where(li == 1, f1_ptr, tl.where(li == 2, f2_ptr, f3_ptr)))
    height = tl.where(li == 0, h0, tl.where(li == 1, h1, tl.where(li == 2, h2, h3)))
    width = tl.where(li == 0, w0, tl.where(li == 1, w1, tl.where(li == 2, w2, w3)))
    scale = tl.where(
        li == 0,
        1.0 / (1 << MIN_LEVEL),
        tl.where(li == 1, 1.0 / (2 << MIN_LEVEL), tl.where(li == 2, 1.0 / (4 << MIN_LEVEL), 1.0 / (8 << MIN_LEVEL))),
    )

    bx1 = x1.to(tl.float32) * scale
    by1 = y1.to(tl.float32) * scale
    bx2 = x2.to(tl.float32) * scale
    by2 = y2.to(tl.float32) * scale
    roi_w = bx2 - bx1
    roi_h = by2 - by1
    if ALIGNED:
        start_x = bx1 - 0.5
        start_y = by1 - 0.5
    else:  # legacy: boxes at least one pixel
        start_x = bx1
        start_y = by1
        roi_w = tl.maximum(roi_w, 1.0)
        roi_h = tl.maximum(roi_h, 1.0)
    bin_w = tl.div_rn(roi_w, tl.full((), OUTPUT_SIZE * 1.0, tl.float32))
    bin_h = tl.div_rn(roi_h, tl.full((), OUTPUT_SIZE * 1.0, tl.float32))

    bins = tl.arange(0, BIN_BLOCK)
    bin_mask = bins < OUTPUT_SIZE * OUTPUT_SIZE
    ph = bins // OUTPUT_SIZE
    pw = bins % OUTPUT_SIZE
    chans = cblk * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = chans < channels
    plane = (img.to(tl.int64) * channels + chans.to(tl.int64)) * (height * width).to(tl.int64)
    height_f = height.to(tl.float32)
    width_f = width.to(tl.float32)
    samples = tl.full((), SAMPLING_RATIO * 1.0, tl.float32)
    sub_h = tl.div_rn(bin_h, samples)
    sub_w = tl.div_rn(bin_w, samples)
    ph_f = ph.to(tl.float32)
    pw_f = pw.to(tl.float32)

    # tl.full, not tl.zeros: Triton's standard-library helpers (tl.zeros, tl.sum, ...) are @triton.jit
    # functions wrapped when triton is imported, so they break the interpreter unless TRITON_INTERPRET was
    # set before that import. This kernel uses builtins only (checked by tests/test_plugins_triton.py).
    acc = tl.full((BLOCK_C, BIN_BLOCK), 0.0, tl.float32)
    for iy in tl.static_range(SAMPLING_RATIO):
        # Reference _sample_axis order: (start + ph * bin) + (iy + 0.5) * (bin / S)
        y = (start_y + ph_f * bin_h) + (iy + 0.5) * sub_h
        valid_y = (y >= -1.0) & (y <= height_f)
        y = tl.maximum(y, 0.0)
        y_low = tl.minimum(tl.floor(y), height_f - 1.0)
        edge_y = y_low >= height_f - 1.0
        y_high = tl.where(edge_y, y_low, y_low + 1.0)
        y = tl.where(edge_y, y_low, y)
        ly = y - y_low
        hy = 1.0 - ly
        row_low = y_low.to(tl.int32) * width
        row_high = y_high.to(tl.int32) * width
        for ix in tl.static_range(SAMPLING_RATIO):
            x = (start_x + pw_f * bin_w) + (ix + 0.5) * sub_w
            valid_x = (x >= -1.0) & (x <= width_f)
            x = tl.maximum(x, 0.0)
            x_low = tl.minimum(tl.floor(x), width_f - 1.0)
            edge_x = x_low >= width_f - 1.0
            x_high = tl.where(edge_x, x_low, x_low + 1.0)
            x = tl.where(edge_x, x_low, x)
            lx = x - x_low
            hx = 1.0 - lx
            xl = x_low.to(tl.int32)
            xh = x_high.to(tl.int32)

            valid = valid_y & valid_x & bin_mask
            m = c_mask[:, None] & valid[None, :]
            base = feat + plane[:, None]
            v_ll = tl.load(base + (row_low + xl)[None, :], mask=m, other=0.0).to(tl.float32)
            v_lh = tl.load(base + (row_low + xh)[None, :], mask=m, other=0.0).to(tl.float32)
            v_hl = tl.load(base + (row_high + xl)[None, :], mask=m, other=0.0).to(tl.float32)
            v_hh = tl.load(base + (row_high + xh)[None, :], mask=m, other=0.0).to(tl.float32)
            w_ll = (hy * hx)[None, :]
            w_lh = (hy * lx)[None, :]
            w_hl = (ly * hx)[None, :]
            w_hh = (ly * lx)[None, :]
            val = v_ll * w_ll + v_lh * w_lh + v_hl * w_hl + v_hh * w_hh
            acc += tl.where(valid[None, :], val, 0.0)

    res = tl.div_rn(acc, tl.full((), SAMPLING_RATIO * SAMPLING_RATIO * 1.0, tl.float32))
    out_offs = (box.to(tl.int64) * channels + chans.to(tl.int64))[:, None] * (OUTPUT_SIZE * OUTPUT_SIZE) + bins[None, :]
    tl.store(out_ptr + out_offs, res.to(out_ptr.dtype.element_ty), mask=c_mask[:, None] & bin_mask[None, :])


def _constexprs(attrs: RoIAlignAttrs, num_levels: int = NUM_LEVELS) -> dict:
    _check_attrs(attrs)
    cfg = kernel_config(attrs)
    return {
        "OUTPUT_SIZE": int(attrs.output_size),
        "SAMPLING_RATIO": int(attrs.sampling_ratio),
        "CANONICAL_BOX_SIZE": float(attrs.canonical_box_size),
        "CANONICAL_LEVEL": int(attrs.canonical_level),
        "ALIGNED": int(bool(attrs.aligned)),
        "MIN_LEVEL": int(attrs.min_level),
        "NUM_LEVELS": int(num_levels),
        "BLOCK_C": cfg.block_c,
        "BIN_BLOCK": cfg.bin_block,
    }


def _check_attrs(attrs: RoIAlignAttrs) -> None:
    if int(attrs.output_size) < 1:
        raise EvisError(f"RoIAlign output_size must be >= 1, got {attrs.output_size}")
    if int(attrs.sampling_ratio) < 1:
        raise EvisError(
            f"RoIAlign sampling_ratio must be >= 1 (adaptive 0 is not supported), got {attrs.sampling_ratio}"
        )
    if float(attrs.canonical_box_size) <= 0:
        raise EvisError(f"RoIAlign canonical_box_size must be > 0, got {attrs.canonical_box_size}")
    if not 0 <= int(attrs.min_level) <= 20:
        raise EvisError(f"RoIAlign min_level out of range: {attrs.min_level}")


@functools.cache
def _kernel(interpret: bool):
    """The kernel wrapped for the interpreter or for compilation (built lazily, cached per mode)."""
    _require_triton()
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(evis_multi_level_roi_align)
    from triton.runtime.jit import JITFunction

    return JITFunction(evis_multi_level_roi_align)


def interpret_requested() -> bool:
    """True when ``TRITON_INTERPRET`` asks for Triton's interpreter (read at call time)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


# --------------------------------------------------------------------------------------
# PyTorch entry point
# --------------------------------------------------------------------------------------


def multi_level_roi_align_triton(features: Sequence[Any], rois: Any, attrs: RoIAlignAttrs) -> Any:
    """Multi-level RoIAlign of ``rois [B, R, 4]`` on ``features`` (1-4 levels, ``[B, C, H_l, W_l]``).

    Returns ``[B, R, C, P, P]`` in the features' dtype (fp32 or fp16; accumulation in fp32).
    CUDA tensors run the compiled kernel; CPU tensors need ``TRITON_INTERPRET=1``.
    """
    import torch

    features = list(features)
    _check_inputs(features, rois)
    b, c = features[0].shape[:2]
    r = rois.shape[1]
    p = int(attrs.output_size)
    out = torch.empty((b, r, c, p, p), dtype=features[0].dtype, device=features[0].device)
    if out.numel() == 0:
        return out
    _launch(features, rois, out, attrs)
    return out


def _check_inputs(features: list, rois: Any) -> None:
    import torch

    if not 1 <= len(features) <= NUM_LEVELS:
        raise EvisError(f"MultiLevelRoIAlign takes 1..{NUM_LEVELS} feature levels, got {len(features)}")
    f0 = features[0]
    if f0.dim() != 4:
        raise EvisError(f"feature maps must be [B, C, H, W], got {tuple(f0.shape)}")
    if f0.dtype not in (torch.float32, torch.float16):
        raise EvisError(f"feature maps must be float32 or float16, got {f0.dtype}")
    for f in features[1:]:
        if f.dim() != 4 or f.shape[:2] != f0.shape[:2] or f.dtype != f0.dtype or f.device != f0.device:
            raise EvisError(
                "all feature levels must share batch, channels, dtype and device "
                f"(got {[tuple(x.shape) for x in features]}, {[x.dtype for x in features]})"
            )
    if rois.dim() != 3 or rois.shape[-1] != 4 or rois.shape[0] != f0.shape[0]:
        raise EvisError(f"rois must be [B, R, 4] with B = {f0.shape[0]}, got {tuple(rois.shape)}")
    if rois.dtype not in (torch.float32, torch.float16):
        raise EvisError(f"rois must be float32 or float16, got {rois.dtype}")
    if rois.device != f0.device:
        raise EvisError(f"rois on {rois.device} but features on {f0.device}")


def _launch(features: list, rois: Any, out: Any, attrs: RoIAlignAttrs) -> None:
    """Run the kernel into ``out [B, R, C, P, P]`` (contiguous) on the current stream."""
    interpret = interpret_requested()
    device = features[0].device
    if not interpret and device.type != "cuda":
        raise BackendUnavailable(
            f"the Triton RoIAlign kernel needs CUDA tensors (got {device}); on a CPU set "
            "TRITON_INTERPRET=1 to run it in Triton's interpreter (slow), or use pooler.impl='reference'"
        )
    _require_triton()
    feats = [f.contiguous() for f in features]
    num_levels = len(feats)
    feats = feats + [feats[0]] * (NUM_LEVELS - num_levels)  # unused slots: never selected
    rois_c = rois.contiguous()
    b, c = feats[0].shape[:2]
    r = rois_c.shape[1]
    geo = launch_geometry(b * r, c, attrs)
    sizes = []
    for f in feats:
        sizes += [int(f.shape[2]), int(f.shape[3])]
    kernel = _kernel(interpret)
    kwargs = dict(_constexprs(attrs, num_levels))
    if not interpret:
        kwargs.update(num_warps=geo.num_warps, enable_fp_fusion=False)
    kernel[geo.grid](*feats, rois_c, r, c, *sizes, out, **kwargs)


# --------------------------------------------------------------------------------------
# PTX for TensorRT (no GPU needed)
# --------------------------------------------------------------------------------------


class PTXKernel(NamedTuple):
    """A compiled kernel: what TensorRT's AOT plugin needs, plus launch facts."""

    kernel_name: str
    ptx: str
    num_warps: int
    shared_mem: int
    block_c: int
    bin_block: int
    target: str  # e.g. "sm_87", "sm_90a"
    ptx_version: str  # PTX ISA of the text, e.g. "8.8" (the driver must support it)


def _triton_dtype(dtype: Any) -> str:
    """'fp32' / 'fp16' from a torch/numpy/TensorRT dtype or a string."""
    text = str(getattr(dtype, "name", dtype) if not isinstance(dtype, str) else dtype).lower()
    text = text.replace("torch.", "").replace("datatype.", "")
    if text in ("fp32", "float32", "float", "f32"):
        return "fp32"
    if text in ("fp16", "float16", "half", "f16"):
        return "fp16"
    raise EvisError(f"MultiLevelRoIAlign supports float32 and float16 tensors, not {dtype}")


# Lowest PTX ISA that knows each target (PTX ISA release notes, "PTX ISA version" per sm_XX).
# Triton stamps its bundled ptxas's newest ISA (e.g. 9.4) on the text, which a CUDA driver older
# than that toolkit refuses to JIT; the kernel needs nothing newer than the target itself.
_MIN_PTX_ISA = {87: 74, 89: 78, 90: 80, 100: 86, 101: 86, 103: 88, 110: 90, 120: 87, 121: 88}


def min_ptx_version(compute_capability: tuple[int, int]) -> int | None:
    """Conservative PTX ISA (Triton's ``ptx_version`` option, e.g. 80 = 8.0) for a target; None = Triton's default."""
    cc = int(compute_capability[0]) * 10 + int(compute_capability[1])
    if cc in _MIN_PTX_ISA:
        return _MIN_PTX_ISA[cc]
    if cc < 87:
        return 70
    return None


def compile_ptx(
    attrs: RoIAlignAttrs,
    dtype: Any,
    compute_capability: tuple[int, int] = (9, 0),
    rois_dtype: Any = None,
    ptx_version: int | None = None,
) -> PTXKernel:
    """PTX of the kernel for ``compute_capability`` with ``attrs`` baked in; works with no GPU.

    ``dtype`` is the features' (and output's) dtype, ``rois_dtype`` defaults to it. The
    PTX entry takes exactly `RUNTIME_ARGS` (Triton's trailing scratch pointers removed,
    see `_strip_scratch_params`). ``ptx_version`` (e.g. 80 for ISA 8.0) defaults to the
    lowest ISA that knows the target (`min_ptx_version`), so older drivers can load it;
    Triton's ptxas assembles the text during compilation, which validates that choice.
    """
    cc = (int(compute_capability[0]), int(compute_capability[1]))
    return _compile_ptx_cached(
        attrs,
        _triton_dtype(dtype),
        cc,
        _triton_dtype(rois_dtype if rois_dtype is not None else dtype),
        ptx_version if ptx_version is not None else min_ptx_version(cc),
    )


@functools.lru_cache(maxsize=64)
def _compile_ptx_cached(
    attrs: RoIAlignAttrs, fdt: str, cc: tuple[int, int], rdt: str, ptx_version: int | None
) -> PTXKernel:
    triton = _require_triton()
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    constexprs = _constexprs(attrs)
    signature = {name: f"*{fdt}" for name in FEATURE_ARGS}
    signature["rois_ptr"] = f"*{rdt}"
    signature.update({name: "i32" for name in SCALAR_ARGS})
    signature["out_ptr"] = f"*{fdt}"
    signature.update({name: "constexpr" for name in CONSTEXPR_ARGS})
    src = ASTSource(fn=_kernel(False), signature=signature, constexprs=constexprs)
    cfg = kernel_config(attrs)
    options = {"num_warps": cfg.num_warps, "enable_fp_fusion": False}
    if ptx_version is not None:
        options["ptx_version"] = int(ptx_version)
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", cc[0] * 10 + cc[1], 32), options=options)
    except Exception as exc:
        raise EvisError(f"Triton could not compile the RoIAlign kernel for sm_{cc[0]}{cc[1]}: {exc}") from exc
    meta = compiled.metadata
    for field in ("global_scratch_size", "profile_scratch_size"):
        if int(getattr(meta, field, 0) or 0) != 0:
            raise EvisError(
                f"the RoIAlign kernel unexpectedly needs Triton {field}={getattr(meta, field)}; "
                "TensorRT's AOT launcher cannot provide it"
            )
    ptx = _strip_scratch_params(compiled.asm["ptx"], meta.name, len(RUNTIME_ARGS))
    target = re.search(r"^\s*\.target\s+(\S+)", ptx, re.MULTILINE)
    version = re.search(r"^\s*\.version\s+(\S+)", ptx, re.MULTILINE)
    return PTXKernel(
        kernel_name=meta.name,
        ptx=ptx,
        num_warps=int(meta.num_warps),
        shared_mem=int(meta.shared),
        block_c=cfg.block_c,
        bin_block=cfg.bin_block,
        target=target.group(1).rstrip(",") if target else "?",
        ptx_version=version.group(1) if version else "?",
    )


def _entry_params(ptx: str, name: str) -> tuple[re.Match, list[str]]:
    m = re.search(r"\.entry\s+" + re.escape(name) + r"\s*\((.*?)\)", ptx, re.DOTALL)
    if not m:
        raise EvisError(f"PTX has no .entry {name}")
    params = [p.strip() for p in m.group(1).split(",") if p.strip()]
    return m, params


def _strip_scratch_params(ptx: str, name: str, keep: int) -> str:
    """Drop the entry parameters after the first ``keep`` (Triton >= 3.3 appends unused scratch pointers).

    Triton kernels end with ``global_scratch`` (3.3+) and ``profile_scratch`` (3.5+)
    pointer parameters that its own launcher fills. TensorRT's AOT launcher passes only
    inputs, extra scalars and outputs (trt_plugin_aot_impl doc page), so a kernel
    declaring more parameters would make the driver read past TensorRT's argument array.
    We compile with zero scratch (checked by the caller) and verify the dropped parameters
    are never referenced, so removing them changes no instruction; if a TensorRT version
    passed more arguments, extra arguments are ignored by ``cuLaunchKernel``.
    """
    m, params = _entry_params(ptx, name)
    if len(params) < keep:
        raise EvisError(f"PTX entry {name} has {len(params)} parameters, expected at least {keep}")
    if len(params) == keep:
        return ptx
    dropped = [p.split()[-1] for p in params[keep:]]
    body = ptx[m.end() :]
    for pname in dropped:
        if re.search(r"\b" + re.escape(pname) + r"\b", body):
            raise EvisError(f"PTX entry {name} uses parameter {pname}; cannot drop it for TensorRT")
    inner = ",\n".join("\t" + p for p in params[:keep])
    return ptx[: m.start(1)] + "\n" + inner + "\n" + ptx[m.end(1) :]


def ptx_entry_params(ptx: str, name: str) -> list[str]:
    """The parameter declarations of ``.entry name`` (for tests and diagnostics)."""
    return _entry_params(ptx, name)[1]
