"""Per-clip latency statistics: the one definition behind every p50/p90/p99 and FPS the toolkit reports.

Why one module: `evis infer`, `evis bench` and the scripts in benchmarks/ used to compute
percentiles in different ways (interpolated, nearest-rank, median of a separate run), so the
same samples could print different figures. Everything now goes through `latency_stats`
(docs/runtime.md, "Timing"): samples are seconds per call measured with `time.perf_counter`,
percentiles interpolate linearly between closest ranks (numpy's default), FPS is frames over
summed seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from efficientvis_trt.errors import EvisError


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-call latencies; milliseconds, except `total_s`."""

    count: int
    mean_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    total_s: float
    frames: int  # frames those calls produced (0: not counted)

    @property
    def fps(self) -> float:
        """Frames per second of summed call time (0.0 when frames or time are unknown)."""
        return fps(self.frames, self.total_s)

    def metrics(self, prefix: str = "latency") -> dict[str, float]:
        """Flat `{prefix}_p50_ms ...` keys, as the bench table and its JSON name them."""
        return {
            f"{prefix}_mean_ms": self.mean_ms,
            f"{prefix}_p50_ms": self.p50_ms,
            f"{prefix}_p90_ms": self.p90_ms,
            f"{prefix}_p99_ms": self.p99_ms,
        }


def latency_stats(seconds: Sequence[float], frames: int = 0) -> LatencyStats:
    """Statistics of per-call latencies given in seconds; `frames` is what all the calls produced together."""
    samples = np.asarray(list(seconds), dtype=np.float64)
    if samples.size == 0:
        raise EvisError("no latency samples to summarise (nothing was run)")
    if not np.all(np.isfinite(samples)) or np.any(samples < 0):
        raise EvisError("latency samples must be finite and >= 0")
    p50, p90, p99 = np.percentile(samples, (50, 90, 99)) * 1000.0
    return LatencyStats(
        count=int(samples.size),
        mean_ms=float(samples.mean() * 1000.0),
        min_ms=float(samples.min() * 1000.0),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        total_s=float(samples.sum()),
        frames=int(frames),
    )


def fps(frames: int, seconds: float) -> float:
    """Frames per second; 0.0 when nothing was timed."""
    return frames / seconds if seconds > 0 else 0.0


def time_calls(
    fn: Callable[[], object], iters: int, warmup: int = 0, sync: Callable[[], object] | None = None
) -> list[float]:
    """Seconds per call of `fn` after `warmup` untimed calls; `sync` (e.g. torch.cuda.synchronize) runs before
    each clock read, so asynchronous device work is inside the measured interval."""
    if iters < 1:
        raise EvisError(f"iterations must be >= 1, got {iters}")
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    out = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        out.append(time.perf_counter() - start)
    return out
