"""OpenCV's INTER_AREA downscale, byte for byte, in less time (benchmarks/RESULTS.md, "Host work per frame").

The letterbox shrinks every frame with `cv2.resize(..., INTER_AREA)`, and its bytes are pinned: they
decide the model's outputs, which must stay byte-identical. At a non-integer scale OpenCV runs a scalar
loop over every source byte, the largest host cost per frame.
This module computes the same sums in a cheaper order (float32: a vertical pass, then a horizontal
matrix product) and then repairs the few output values whose exact value lies so close to a rounding
boundary (x.5) that the order of the float additions can decide them, by replaying OpenCV's own float32
arithmetic for those values alone. The vertical pass and the rounding are compiled loops where numba
is installed (`efficientvis_trt/resize_kernels.py`, the `fast` extra) and banded BLAS products and
numpy otherwise: the same bytes either way. docs/host-work.md, "The letterbox", gives the argument and
the figures.

Only OpenCV's general area path is replaced. Integer scales (OpenCV's SIMD fast path), upscaling,
other dtypes and an OpenCV build whose arithmetic differs go to `cv2.resize` itself: each size pair is
checked once against `cv2.resize` on a seeded noise image (which has thousands of near-ties) before
the fast path is used for it. On a GPU, `AreaResize.exact_torch` computes every value in OpenCV's own
order instead (the device letterbox, `video.Letterbox.apply_torch`).
"""

from __future__ import annotations

import math
import os
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from efficientvis_trt.extras import install_command

# OpenBLAS splits a GEMM over threads once m*n*k exceeds 4 * 65536 (GEMM_MULTITHREAD_THRESHOLD x
# SMP_THRESHOLD_MIN in its interface/gemm.c). Every product here stays below that, so the resize runs
# on the calling thread alone and leaves the other cores to the model.
_GEMM_SINGLE_THREAD_MNK = 4 * 65536
# Above this share of near-tie values the replay costs more than OpenCV's own loop.
_MAX_REPLAY_SHARE = 0.05
# Below this many source pixels OpenCV's loop is as fast as the numpy path (640x360 into 224x126:
# 0.9-1.1x measured; 1280x720: 1.5-1.9x; benchmarks/RESULTS.md, "Host work per frame"). The compiled
# path gains at every size the area path takes.
MIN_SOURCE_PIXELS = 500_000
_U = 2.0**-24  # unit roundoff of float32


@dataclass(frozen=True)
class AxisTaps:
    """OpenCV's area table for one axis (`computeResizeAreaTab`, opencv imgproc/src/resize.cpp): for
    each output index, its source indices and float32 weights in OpenCV's summation order, padded to
    `width` taps with weight 0 (adding 0 * x changes no float sum)."""

    src: np.ndarray  # (n_dst, width) int64
    weight: np.ndarray  # (n_dst, width) float32
    dense: np.ndarray  # (n_dst, n_src) float32: the same weights as a matrix

    @property
    def width(self) -> int:
        return self.src.shape[1]


def axis_taps(n_src: int, n_dst: int) -> AxisTaps:
    """The table OpenCV builds, in double precision exactly as it does (Python floats are C doubles)."""
    scale = 1.0 / (n_dst / n_src)  # resize(): scale_x = 1./inv_scale_x, inv_scale_x = dsize/ssize
    rows: list[list[tuple[int, np.float32]]] = []
    for d in range(n_dst):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, n_src - f1)
        s2 = min(math.floor(f2), n_src - 1)
        s1 = min(math.ceil(f1), s2)
        taps = []
        if s1 - f1 > 1e-3:
            taps.append((s1 - 1, np.float32((s1 - f1) / cell)))
        taps.extend((s, np.float32(1.0 / cell)) for s in range(s1, s2))
        if f2 - s2 > 1e-3:
            taps.append((s2, np.float32(min(min(f2 - s2, 1.0), cell) / cell)))
        rows.append(taps)
    width = max(len(t) for t in rows)
    src = np.zeros((n_dst, width), np.int64)
    weight = np.zeros((n_dst, width), np.float32)
    dense = np.zeros((n_dst, n_src), np.float32)
    for d, taps in enumerate(rows):
        for k, (s, w) in enumerate(taps):
            src[d, k], weight[d, k] = s, w
            dense[d, s] = w
        src[d, len(taps) :] = taps[-1][0]
    return AxisTaps(src, weight, dense)


def _blocks(dense: np.ndarray, cols_per_row: int, rows_of_other: int) -> list[tuple[int, int, int, int]]:
    """Output ranges [a, b) with their source span [s0, s1), each as large as one single-threaded
    GEMM allows (m * n * k = rows_of_other * span * cols_per_row * (b - a) below the threshold)."""
    nz = dense != 0
    first = nz.argmax(axis=1)
    last = dense.shape[1] - 1 - nz[:, ::-1].argmax(axis=1)
    out, a, n = [], 0, dense.shape[0]
    while a < n:
        b = a + 1
        while b < n and (b + 1 - a) * (last[b] + 1 - first[a]) * cols_per_row * rows_of_other < _GEMM_SINGLE_THREAD_MNK:
            b += 1
        out.append((a, b, int(first[a]), int(last[b - 1]) + 1))
        a = b
    return out


@lru_cache(maxsize=1)
def compiled_kernels() -> Any | None:
    """`efficientvis_trt.resize_kernels` (numba-compiled on first use), or None: without numba, or with
    NUMBA_DISABLE_JIT=1 (numba would run the loops as Python; the setting also keeps numba's 110-130 MB
    of LLVM out of the process, docs/host-work.md, "The letterbox")."""
    if os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"):
        return None
    try:
        from efficientvis_trt import resize_kernels
    except ImportError:
        return None
    import numba

    return None if numba.config.DISABLE_JIT else resize_kernels


@lru_cache(maxsize=1)
def warm_up() -> None:
    """Compile the letterbox loops now (or load them from numba's cache), so that a video's first frame does
    not pay for it. A no-op without numba."""
    if compiled_kernels() is None:
        return
    r = AreaResize((7, 11), (3, 5), 3)
    src = np.zeros((7, 11, 3), np.uint8)
    r(src, np.empty((3, 5, 3), np.uint8))  # a contiguous output
    r(src, np.empty((3, 6, 3), np.uint8)[:, :5])  # and a canvas's content, rows strided: two signatures


class AreaResize:
    """`cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA)` for one source size, destination size and
    channel count, on OpenCV's general (non-integer scale) area path. `compiled`: the numba loops
    (default: where numba is installed) or the numpy path; both give the same bytes."""

    def __init__(
        self, src_hw: tuple[int, int], dst_hw: tuple[int, int], channels: int, compiled: bool | None = None
    ) -> None:
        self.src_hw, self.dst_hw, self.channels = tuple(src_hw), tuple(dst_hw), channels
        self.kernels = compiled_kernels() if compiled is not False else None
        if compiled and self.kernels is None:
            raise ImportError(f"the compiled letterbox needs numba: {install_command('fast')}")
        self.y = axis_taps(src_hw[0], dst_hw[0])
        self.x = axis_taps(src_hw[1], dst_hw[1])
        c = channels
        # numpy's vertical pass: V = My @ S over rows, S viewed as (H, W*C); a block of output rows reads
        # a band (the compiled pass reads the rows themselves).
        self._vertical = []
        if self.kernels is None:
            self._vertical = [
                (a, b, s0, s1, np.ascontiguousarray(self.y.dense[a:b, s0:s1]))
                for a, b, s0, s1 in _blocks(self.y.dense, src_hw[1] * c, 1)
            ]
        # Horizontal pass on the channel-interleaved V: a band of columns times kron(Mx_band^T, I_C).
        eye = np.eye(c, dtype=np.float32)
        self._horizontal = [
            (a, b, s0, s1, np.kron(self.x.dense[a:b, s0:s1].T, eye))
            for a, b, s0, s1 in _blocks(self.x.dense, c * c, dst_hw[0])
        ]
        self._row_offsets = (self.y.src * (src_hw[1] * c)).astype(np.intp)
        self._col_offsets = (self.x.src * c).astype(np.intp)
        self._band_rows = max((s1 - s0 for _, _, s0, s1, _ in self._vertical), default=0)
        self._out_cols = dst_hw[1] * c
        self._scratch = threading.local()  # one resizer serves every stream of this frame size
        self._on_device: dict[str, tuple] = {}  # exact_torch's tables, per torch device
        # Both OpenCV's float32 order and this module's sums (compiled loop or BLAS) err from the exact
        # weighted sum (same float32 weights) by at most (taps + 1) * u * 256 per pass, in any order,
        # fused multiply-adds or not: each pass sums at most `taps` nonnegative products totalling <= 255
        # (the standard bound for inner products, Higham, "Accuracy and Stability of Numerical
        # Algorithms", 2nd ed., ch. 3).
        # A value farther than the two errors together from x.5 rounds the same in both; 2x margin.
        self.tie_band = 4.0 * (self.x.width + self.y.width + 2) * _U * 256.0

    def _buffers(self) -> tuple[np.ndarray, list, list, np.ndarray, np.ndarray]:
        """This thread's float32 scratch (allocated once: fresh pages per frame would cost more than
        the work), as the views each product reads and writes: (vertical sums, the numpy vertical
        pass's bands, horizontal products, sums, rounded)."""
        bufs = getattr(self._scratch, "bufs", None)
        if bufs is None:
            width, c = self.src_hw[1] * self.channels, self.channels
            v = np.empty((self.dst_hw[0], width), np.float32)
            o = np.empty((self.dst_hw[0], self._out_cols), np.float32)
            vertical = []
            if self.kernels is None:
                band = np.empty((self._band_rows, width), np.float32)
                vertical = [(s0, s1, w, band[: s1 - s0], v[a:b]) for a, b, s0, s1, w in self._vertical]
            horizontal = [(v[:, c * s0 : c * s1], k, o[:, c * a : c * b]) for a, b, s0, s1, k in self._horizontal]
            bufs = self._scratch.bufs = (v, vertical, horizontal, o, np.empty_like(o))
        return bufs

    def approximate(self, src: np.ndarray) -> np.ndarray:
        """The float32 weighted sums, (h, w*C), within `tie_band / 4` of the exact ones (vertical pass
        first: it shrinks the data most; the order is free here, not in `replay`)."""
        v, vertical, horizontal, o, _ = self._buffers()
        s2 = src.reshape(src.shape[0], -1)
        if self.kernels is not None:
            self.kernels.vertical_sums(s2, self.y.src, self.y.weight, v)
        for s0, s1, w, band, v_rows in vertical:
            np.copyto(band, s2[s0:s1], casting="unsafe")
            np.matmul(w, band, out=v_rows)
        for v_cols, k, o_cols in horizontal:
            np.matmul(v_cols, k, out=o_cols)
        return o

    def replay(self, src: np.ndarray, flat: np.ndarray) -> np.ndarray:
        """OpenCV's float32 arithmetic (`ResizeArea_Invoker`) for the values at flat output indices `flat`
        (of the (h, w*C) layout): per source row, the products with the horizontal weights summed left
        to right; then the rows, each times its weight, summed top to bottom; rounded half to even.
        Every product and sum is one float32 operation, rounded once, like the C loop (no fused multiply-add)."""
        dy, fx = np.divmod(flat, self._out_cols)
        dx, ch = np.divmod(fx, self.channels)
        # flat source offsets of every tap, (n, rows, cols)
        offsets = self._row_offsets[dy][:, :, None] + (self._col_offsets[dx] + ch[:, None])[:, None, :]
        products = np.take(np.ravel(src), offsets).astype(np.float32) * self.x.weight[dx][:, None, :]
        row_sums = products[:, :, 0]
        for k in range(1, self.x.width):  # left to right, as the C loop adds them
            row_sums = row_sums + products[:, :, k]
        weighted = self.y.weight[dy] * row_sums
        total = weighted[:, 0]
        for j in range(1, self.y.width):  # then the rows, top to bottom
            total = total + weighted[:, j]
        return np.clip(np.rint(total), 0, 255)

    def _device_tables(self, device: Any) -> tuple:
        """The tap tables as tensors on `device` (uploaded once per device, not per clip), the weights
        shaped to broadcast over channels (and columns)."""
        tables = self._on_device.get(str(device))
        if tables is None:
            import torch

            xs, xw, ys, yw = (
                torch.as_tensor(a, device=device) for a in (self.x.src, self.x.weight, self.y.src, self.y.weight)
            )
            tables = self._on_device[str(device)] = (xs, xw[:, :, None], ys, yw[:, :, None, None])
        return tables

    def exact_torch(self, frames: Any) -> Any:
        """OpenCV's bytes for a batch of frames (n, H, W, C) uint8 torch tensor, on its own device: every
        value by OpenCV's float32 arithmetic, in its order (each source row's horizontal sums once,
        then the rows), one elementwise operation at a time: eager torch rounds each multiply and add
        to float32 on the CPU and on CUDA alike and fuses none. A few dozen kernels a clip on a GPU,
        far too much arithmetic for a CPU (which takes `__call__`)."""
        import torch

        xs, xw, ys, yw = self._device_tables(frames.device)
        rows = frames.index_select(2, xs[:, 0]).float() * xw[:, 0]  # (n, H, w, C)
        for k in range(1, self.x.width):  # left to right
            rows = rows + frames.index_select(2, xs[:, k]).float() * xw[:, k]
        total = rows.index_select(1, ys[:, 0]) * yw[:, 0]  # (n, h, w, C)
        for j in range(1, self.y.width):  # then the rows, top to bottom
            total = total + rows.index_select(1, ys[:, j]) * yw[:, j]
        return torch.round(total).clamp_(0, 255).to(torch.uint8)

    def __call__(self, src: np.ndarray, out: np.ndarray, max_replay_share: float = _MAX_REPLAY_SHARE) -> bool:
        """Write the resized `src` (C-contiguous uint8) into `out` (h x w [x C] uint8, rows of any
        stride, e.g. the content of a letterbox canvas). On the numpy path: False, with `out` untouched,
        when more than `max_replay_share` of the values are near a tie (the replay would then cost more
        than OpenCV's loop); the compiled replay costs too little for that to matter."""
        rows = _row_view(out, self.dst_hw[0])
        if rows is None:
            raise ValueError(f"output rows of shape {out.shape} are not contiguous")
        o = self.approximate(src)
        if self.kernels is not None:
            s2 = src.reshape(src.shape[0], -1)
            x, y = self.x, self.y
            self.kernels.round_and_replay(o, s2, y.src, y.weight, x.src, x.weight, self.channels, self.tie_band, rows)
            return True
        r = np.rint(o, out=self._buffers()[4])
        dist = np.subtract(o, r, out=o)
        np.abs(dist, out=dist)
        flat = np.flatnonzero(dist > 0.5 - self.tie_band)
        if len(flat) > max_replay_share * r.size:
            return False
        r.ravel()[flat] = self.replay(src, flat)
        # no clip: the weights of each output sum to at most 1, so every value is within [0, 255]
        np.copyto(rows, r, casting="unsafe")
        return True


def _row_view(a: np.ndarray, rows: int) -> np.ndarray | None:
    """`a` as (rows, -1) without a copy (its rows may be strided), or None where that needs a copy."""
    view = a.reshape(rows, -1)  # a view where the strides allow it, else a copy
    return view if np.may_share_memory(view, a) else None


def _opencv_area_path(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> bool:
    """Whether cv::resize takes its general area path for this pair (resize() in imgproc/src/resize.cpp:
    INTER_AREA with both scales >= 1 and not both within DBL_EPSILON of an integer)."""
    if tuple(src_hw) == tuple(dst_hw) or min(dst_hw) < 1:
        return False
    scales = [1.0 / (d / s) for s, d in zip(src_hw, dst_hw)]
    if min(scales) < 1:
        return False
    return not all(abs(s - round(s)) < sys.float_info.epsilon for s in scales)


@lru_cache(maxsize=64)
def checked_resizer(src_hw: tuple[int, int], dst_hw: tuple[int, int], channels: int) -> AreaResize | None:
    """The exact resizer for this size pair, or None where `cv2.resize` must run: not OpenCV's general
    area path, or an OpenCV build whose arithmetic differs from the replay on a seeded noise image
    (checked once per size pair, then cached)."""
    if not _opencv_area_path(src_hw, dst_hw) or not 1 <= channels <= 4:
        return None
    import cv2

    resizer = AreaResize(src_hw, dst_hw, channels)
    probe = np.random.default_rng(0).integers(0, 256, (*src_hw, channels), dtype=np.uint8)
    probe[: src_hw[0] // 2, : src_hw[1] // 2] //= 64  # flat steps as well as noise: exact ties happen there
    want = cv2.resize(probe, dst_hw[::-1], interpolation=cv2.INTER_AREA).reshape(*dst_hw, channels)
    got = np.empty_like(want)
    if not resizer(probe, got, max_replay_share=1.0) or not np.array_equal(got, want):
        return None
    return resizer


def area_resizer(src_hw: tuple[int, int], dst_hw: tuple[int, int], channels: int) -> AreaResize | None:
    """`checked_resizer` where it is faster than `cv2.resize` on the CPU (the numpy path from
    `MIN_SOURCE_PIXELS`, the compiled one at any size)."""
    if compiled_kernels() is None and src_hw[0] * src_hw[1] < MIN_SOURCE_PIXELS:
        return None
    return checked_resizer(src_hw, dst_hw, channels)


def resize_area(src: np.ndarray, dst_wh: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Exactly `cv2.resize(src, dst_wh, interpolation=cv2.INTER_AREA)`, written into `out` when given
    (any view of the right shape, e.g. the content of a letterbox canvas), faster where it can be."""
    import cv2

    w, h = dst_wh
    shape = (h, w) if src.ndim == 2 else (h, w, src.shape[2])
    resizer = None
    if src.dtype == np.uint8 and src.ndim in (2, 3):
        resizer = area_resizer(tuple(src.shape[:2]), (h, w), 1 if src.ndim == 2 else src.shape[2])
    if out is None:
        out = np.empty(shape, src.dtype)
    if out.shape != shape:
        raise ValueError(f"output of shape {out.shape} for a resize to {shape}")
    fast = resizer is not None and out.dtype == np.uint8 and _row_view(out, h) is not None
    if fast and resizer(np.ascontiguousarray(src), out):
        return out
    if out.flags.c_contiguous and out.dtype == src.dtype:
        cv2.resize(src, (w, h), dst=out, interpolation=cv2.INTER_AREA)
    else:
        out[...] = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA)
    return out
