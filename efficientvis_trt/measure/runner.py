"""Measure every backend x precision of a bundle: accuracy, fidelity to FP32, latency, throughput, memory.

One row per (backend, precision), in the order asked. A combination that cannot run here
(backend not installed, graph not built, precision the device cannot do) is still a row,
marked "not available" with the reason: nothing is silently dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from efficientvis_trt.contract import BACKENDS, PRECISIONS, RUN_PRECISIONS, split_into_clips
from efficientvis_trt.errors import EvisError

log = logging.getLogger(__name__)


@dataclass
class BenchSettings:
    backends: list[str] = field(default_factory=lambda: list(BACKENDS))
    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS))  # bf16 where asked
    data: Path | None = None  # synthetic (YouTube-VIS format) val split: accuracy
    videos: list[Path] = field(default_factory=list)  # real videos: end-to-end speed and fidelity to FP32
    iters: int = 20  # timed model-only clips
    warmup: int = 3
    device: str | None = None  # None: each backend's best device (TensorRT needs CUDA)
    fidelity_threshold: float = 0.5
    max_frames: int | None = None  # per real video
    max_val_videos: int | None = None


@dataclass
class BenchRow:
    backend: str
    precision: str
    available: bool
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "available": self.available,
            "reason": self.reason,
            **self.metrics,
        }


def measure_latency(predictor, clip_frames: list[np.ndarray], iters: int, warmup: int) -> dict[str, float]:
    """Model-only latency per clip after warm-up, state carried between iterations as in a real video."""
    from efficientvis_trt.timing import latency_stats
    from efficientvis_trt.video import Letterbox

    letterbox = Letterbox(clip_frames[0].shape[:2], predictor.input_hw)
    canvas = [letterbox.apply(f) for f in clip_frames]
    predictor.reset()
    for _ in range(warmup):
        predictor.run_clip(canvas)
    samples = [predictor.run_clip(canvas)[1] for _ in range(iters)]
    out: dict[str, Any] = latency_stats(samples, len(canvas) * iters).metrics("latency")
    out.update(predictor_device_metrics(predictor))
    return out


def predictor_device_metrics(predictor) -> dict[str, Any]:
    """GPU-only columns: device memory and compute time apart from copies, where the backend reports them."""
    backend = predictor.backend
    report = getattr(backend, "device_report", None)
    if callable(report):
        return report()
    return {}


def run_videos(predictor, videos: list[Path], max_frames: int | None) -> tuple[dict[str, Any], list[dict]]:
    """End-to-end (file -> results) over real videos; returns metrics and YouTube-VIS results (ids 1..n)."""
    from efficientvis_trt.timing import fps

    frames = 0
    wall = 0.0
    stages = {"decode": 0.0, "preprocess": 0.0, "model": 0.0, "postprocess": 0.0}
    results: list[dict] = []
    for vid, path in enumerate(videos, start=1):
        start = time.perf_counter()
        result = predictor.predict_video(path, max_frames=max_frames)
        wall += time.perf_counter() - start
        frames += result.num_frames
        for k in stages:
            stages[k] += result.timings.get(k, 0.0)
        results += result.to_ytvis(vid)
    # Model and end-to-end FPS of the same frames in the same run: the model time is part of the wall
    # time, so e2e/model <= 1 by construction (docs/runtime.md, "Timing").
    metrics = {
        "model_fps": fps(frames, stages["model"]),
        "e2e_fps": fps(frames, wall),
        "e2e_over_model": stages["model"] / wall if wall else 0.0,
        "e2e_frames": frames,
    }
    for k, v in stages.items():
        metrics[f"{k}_ms_per_frame"] = 1000.0 * v / max(frames, 1)
    return metrics, results


def fidelity(reference: list[dict], results: list[dict], threshold: float) -> float | str:
    """AP of `results` against the FP32 tracks scoring >= threshold; a string where undefined."""
    from efficientvis_trt.eval import evaluate_fidelity

    if not any(r["score"] >= threshold for r in reference):
        return f"n/a (no FP32 track scores >= {threshold})"
    return float(evaluate_fidelity(reference, results, threshold).stats["AP"])


def _fidelity_of(
    backend: str, results: list[dict], references: dict[str, list[dict]], threshold: float
) -> tuple[float | str, str]:
    """Fidelity against this backend's FP32 tracks, else the first FP32 row measured; -> (AP, which)."""
    if backend in references:
        return fidelity(references[backend], results, threshold), f"{backend} fp32"
    if references:
        other = next(iter(references))
        return fidelity(references[other], results, threshold), f"{other} fp32"
    return "n/a (no FP32 reference row)", "none"


def run_bench(
    bundle_path: Path, settings: BenchSettings, make_predictor: Callable[..., Any] | None = None, progress: bool = True
) -> list[BenchRow]:
    """Every backend x precision, FP32 of each backend first so later rows have their reference."""
    from efficientvis_trt.eval.split import evaluate_split
    from efficientvis_trt.measure.memory import PeakRSS
    from efficientvis_trt.video import read_frames

    if make_predictor is None:
        from efficientvis_trt.runtime.predictor import Predictor

        def make_predictor(backend: str, precision: str):
            return Predictor(bundle_path, backend=backend, precision=precision, device=settings.device)

    clip_source = settings.videos[0] if settings.videos else None
    rows: list[BenchRow] = []
    references: dict[str, list[dict]] = {}
    order = [(b, p) for b in settings.backends for p in sorted(settings.precisions, key=RUN_PRECISIONS.index)]
    from tqdm import tqdm

    bar = tqdm(order, desc="bench", unit="row", disable=not progress)
    for backend, precision in bar:
        bar.set_postfix_str(f"{backend} {precision}")
        try:
            predictor = make_predictor(backend, precision)
        except EvisError as exc:
            rows.append(BenchRow(backend, precision, False, str(exc)))
            continue
        row = BenchRow(backend, precision, True, metrics={"device": str(getattr(predictor.backend, "device", "cpu"))})
        try:
            with PeakRSS() as mem:
                if clip_source is not None:
                    clip, _ = next(
                        split_into_clips(read_frames(clip_source, max_frames=predictor.clip_len), predictor.clip_len)
                    )
                    row.metrics.update(measure_latency(predictor, clip, settings.iters, settings.warmup))
                    metrics, results = run_videos(predictor, settings.videos, settings.max_frames)
                    row.metrics.update(metrics)
                    if precision == "fp32":
                        references[backend] = results
                    row.metrics["fidelity_AP"], row.metrics["fidelity_reference"] = _fidelity_of(
                        backend, results, references, settings.fidelity_threshold
                    )
                if settings.data is not None:
                    stats = evaluate_split(predictor, settings.data, settings.max_val_videos)
                    row.metrics.update({k: stats[k] for k in ("AP", "AP50", "AP75")})
            row.metrics["peak_host_mb"] = mem.peak_mb
        except EvisError as exc:  # a row that fails mid-way is reported, not allowed to sink the table
            row = BenchRow(backend, precision, False, f"failed while measuring: {exc}")
        finally:
            close = getattr(predictor, "close", None)
            if callable(close):
                close()
        rows.append(row)
    return rows
