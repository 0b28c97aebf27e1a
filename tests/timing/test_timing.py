"""One definition of latency percentiles and FPS for `evis infer`, `evis bench` and benchmarks/."""

from __future__ import annotations

import numpy as np
import pytest

from efficientvis_trt.errors import EvisError
from efficientvis_trt.timing import fps, latency_stats, time_calls


def test_percentiles_interpolate_between_ranks_and_fps_counts_frames_over_summed_time():
    samples = [0.001 * k for k in range(1, 11)]  # 1..10 ms
    s = latency_stats(samples, frames=50)
    assert (s.count, s.min_ms) == (10, pytest.approx(1.0))
    assert s.p50_ms == pytest.approx(5.5) and s.p90_ms == pytest.approx(9.1) and s.p99_ms == pytest.approx(9.91)
    assert s.mean_ms == pytest.approx(5.5)
    assert s.fps == pytest.approx(50 / 0.055)
    assert s.metrics()["latency_p90_ms"] == s.p90_ms


def test_one_sample_is_every_percentile_and_bad_samples_are_one_clear_error():
    s = latency_stats([0.02])
    assert s.p50_ms == s.p99_ms == pytest.approx(20.0) and s.fps == 0.0  # frames unknown
    for bad in ([], [0.1, float("nan")], [-0.1]):
        with pytest.raises(EvisError):
            latency_stats(bad)
    assert fps(10, 0.0) == 0.0


def test_time_calls_warms_up_untimed_and_syncs_before_every_clock_read():
    calls, syncs = [], []
    out = time_calls(lambda: calls.append(1), iters=4, warmup=2, sync=lambda: syncs.append(len(calls)))
    assert len(out) == 4 and all(t >= 0 for t in out)
    assert len(calls) == 6 and syncs == [2, 3, 4, 5, 6]
    with pytest.raises(EvisError):
        time_calls(lambda: None, iters=0)


def test_infer_prints_the_same_p90_as_the_bench_for_the_same_samples():
    from efficientvis_trt.commands.infer import _timing_line
    from efficientvis_trt.runtime.postprocess import VideoResult

    samples = list(np.linspace(0.1, 1.0, 10))  # 100..1000 ms: nearest-rank p90 would say 1000 ms
    result = VideoResult("v", 4, 4, 50, [], {"model": sum(samples), "wall": 10.0}, samples)
    line = _timing_line(result)
    expected = latency_stats(samples, 50)
    assert f"p90 {expected.p90_ms:.0f} ms" in line and "p90 910 ms" in line
    assert f"{expected.fps:.1f} FPS" in line
