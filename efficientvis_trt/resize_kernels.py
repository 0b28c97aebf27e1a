"""The letterbox's two compiled loops (numba, the `fast` extra): the vertical pass and the rounding.

Imported only through `efficientvis_trt.resize.compiled_kernels`, which falls back to the numpy path
when numba is missing. Both loops run on the calling thread (no `parallel`) and release the GIL, so a
decode thread letterboxes while other threads work. docs/host-work.md, "The letterbox", gives the
argument and the figures.

Every float here is float32 on purpose: numba types float32 * float32 as float32 and, without
`fastmath`, emits each multiply and add as its own IEEE operation (LLVM contracts nothing into a fused
multiply-add unless told to), which `round_and_replay` relies on to repeat OpenCV's arithmetic.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def vertical_sums(src, rows, weights, out):
    """out[d] = sum over taps t of weights[d, t] * src[rows[d, t]], in float32: src (H, W*C) uint8,
    rows / weights (h, taps) from OpenCV's table, out (h, W*C) float32. Each source row is read once
    per output row that uses it (1.2x the frame at a 5.7x shrink) and converted to float on the fly:
    no float copy of the frame is ever written."""
    width = src.shape[1]
    for d in range(rows.shape[0]):
        acc = out[d]
        w = weights[d, 0]
        row = src[rows[d, 0]]
        for i in range(width):
            acc[i] = w * np.float32(row[i])
        for t in range(1, rows.shape[1]):
            w = weights[d, t]
            if w != 0:  # padding taps
                row = src[rows[d, t]]
                for i in range(width):
                    acc[i] += w * np.float32(row[i])


@numba.njit(nogil=True, cache=True)
def round_and_replay(sums, src, rows, row_w, cols, col_w, channels, band, out):
    """Round `sums` (h, w*C) half to even into `out` (h, w*C) uint8, any row stride; each value within
    `band` of a half-integer is recomputed instead by OpenCV's own float32 arithmetic, in its order
    (`ResizeArea_Invoker`: per source row, the products with the horizontal weights summed left to
    right; then those row sums, each times its vertical weight, summed top to bottom), exactly as
    `AreaResize.replay` does it. Returns how many values were replayed."""
    limit = np.float32(0.5 - band)
    replayed = 0
    for d in range(sums.shape[0]):
        s = sums[d]
        o = out[d]
        for i in range(s.shape[0]):  # vectorised: the common case
            o[i] = np.uint8(np.int32(np.rint(s[i])))
        for i in range(s.shape[0]):
            v = s[i]
            if abs(v - np.rint(v)) > limit:
                replayed += 1
                j, c = divmod(i, channels)
                total = np.float32(0.0)
                for t in range(rows.shape[1]):
                    row = src[rows[d, t]]
                    row_sum = np.float32(row[cols[j, 0] * channels + c]) * col_w[j, 0]
                    for k in range(1, cols.shape[1]):
                        row_sum = row_sum + np.float32(row[cols[j, k] * channels + c]) * col_w[j, k]
                    weighted = row_w[d, t] * row_sum
                    total = weighted if t == 0 else total + weighted
                o[i] = np.uint8(np.int32(min(max(np.rint(total), np.float32(0.0)), np.float32(255.0))))
    return replayed
