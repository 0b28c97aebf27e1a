"""Measure every backend x precision of a bundle: accuracy, fidelity to FP32, latency, throughput, memory.

One row per (backend, precision), in the order asked. A combination that cannot run here
(backend not installed, graph not built, precision the device cannot do) is still a row,
marked "not available" with the reason: nothing is silently dropped.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from efficientvis_trt.errors import EvisError

log = logging.getLogger(__name__)

BACKENDS = ("torch", "ort", "trt")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class BenchSettings:
    backends: list[str] = field(default_factory=lambda: list(BACKENDS))
    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS))
    data: Path | None = None                  # synthetic (YouTube-VIS format) val split: accuracy
    videos: list[Path] = field(default_factory=list)  # real videos: end-to-end speed and fidelity to FP32
    iters: int = 20                           # timed model-only clips
    warmup: int = 3
    device: str = "cpu"
    fidelity_threshold: float = 0.5
    max_frames: int | None = None             # per real video
    max_val_videos: int | None = None


@dataclass
class BenchRow:
    backend: str
    precision: str
    available: bool
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "available": self.available,
                "reason": self.reason, **self.metrics}


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, q))


def measure_latency(predictor, clip_frames: list[np.ndarray], iters: int, warmup: int) -> dict[str, float]:
    """Model-only latency per clip after warm-up, state carried between iterations as in a real video."""
    from efficientvis_trt.video import Letterbox

    letterbox = Letterbox(clip_frames[0].shape[:2], predictor.input_hw)
    canvas = [letterbox.apply(f) for f in clip_frames]
    predictor.reset()
    for _ in range(warmup):
        predictor.run_clip(canvas)
    samples = [predictor.run_clip(canvas)[1] for _ in range(iters)]
    t = len(canvas)
    p50 = percentile_ms(samples, 50)
    out = {"latency_p50_ms": p50, "latency_p90_ms": percentile_ms(samples, 90),
           "latency_p99_ms": percentile_ms(samples, 99), "model_fps": t / (p50 / 1000.0)}
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
    metrics = {"e2e_fps": frames / wall if wall else 0.0, "e2e_frames": frames}
    for k, v in stages.items():
        metrics[f"{k}_ms_per_frame"] = 1000.0 * v / max(frames, 1)
    return metrics, results


def evaluate_split(predictor, data_dir: Path, max_videos: int | None) -> dict[str, float]:
    """AP/AP50/AP75 of `predictor` on a YouTube-VIS-format split through the same evaluator as `evis eval`."""
    from efficientvis_trt.data.ytvis import load_ytvis
    from efficientvis_trt.eval import evaluate

    json_path = annotations_path(data_dir)
    data = load_ytvis(json_path)
    videos = data.videos[:max_videos] if max_videos else data.videos
    results: list[dict] = []
    for video in videos:
        folder = data.video_frames(video)[0].parent
        results += predictor.predict_video(folder).to_ytvis(video.id, list(data.label_to_category_id))
    gt = subset_ground_truth(json_path, {v.id for v in videos})
    stats = evaluate(gt, results).stats
    return {"AP": stats["AP"], "AP50": stats["AP50"], "AP75": stats["AP75"]}


def annotations_path(data_dir: Path) -> Path:
    data_dir = Path(data_dir)
    if data_dir.is_file():
        return data_dir
    candidates = sorted(data_dir.glob("*.json"))
    if not candidates:
        raise EvisError(f"no YouTube-VIS JSON in {data_dir}")
    return candidates[0]


def subset_ground_truth(json_path: Path, video_ids: set[int]) -> dict:
    import json

    gt = json.loads(Path(json_path).read_text())
    gt["videos"] = [v for v in gt["videos"] if v["id"] in video_ids]
    gt["annotations"] = [a for a in gt.get("annotations", []) if a["video_id"] in video_ids]
    return gt


def fidelity(reference: list[dict], results: list[dict], threshold: float) -> float | str:
    """AP of `results` against the FP32 tracks scoring >= threshold; a string where undefined."""
    from efficientvis_trt.eval import evaluate_fidelity

    if not any(r["score"] >= threshold for r in reference):
        return f"n/a (no FP32 track scores >= {threshold})"
    return float(evaluate_fidelity(reference, results, threshold).stats["AP"])


def run_bench(bundle_path: Path, settings: BenchSettings,
              make_predictor: Callable[..., Any] | None = None, progress: bool = True) -> list[BenchRow]:
    """Every backend x precision, FP32 of each backend first so later rows have their reference."""
    from efficientvis_trt.bench.memory import PeakRSS
    from efficientvis_trt.video import read_frames

    if make_predictor is None:
        from efficientvis_trt.runtime.predictor import Predictor

        def make_predictor(backend: str, precision: str):
            return Predictor(bundle_path, backend=backend, precision=precision, device=settings.device)

    clip_source = settings.videos[0] if settings.videos else None
    rows: list[BenchRow] = []
    references: dict[str, list[dict]] = {}
    order = [(b, p) for b in settings.backends for p in sorted(settings.precisions, key=PRECISIONS.index)]
    try:
        from tqdm import tqdm

        bar = tqdm(order, desc="bench", unit="row", disable=not progress)
    except ImportError:  # pragma: no cover
        bar = order
    for backend, precision in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"{backend} {precision}")
        try:
            predictor = make_predictor(backend, precision)
        except EvisError as exc:
            rows.append(BenchRow(backend, precision, False, str(exc)))
            continue
        row = BenchRow(backend, precision, True)
        with PeakRSS() as mem:
            if clip_source is not None:
                clip = read_frames(clip_source, max_frames=predictor.clip_len)
                while len(clip) < predictor.clip_len:
                    clip.append(clip[-1])
                row.metrics.update(measure_latency(predictor, clip, settings.iters, settings.warmup))
                metrics, results = run_videos(predictor, settings.videos, settings.max_frames)
                row.metrics.update(metrics)
                row.metrics["e2e_over_model"] = metrics["e2e_fps"] / row.metrics["model_fps"]
                if precision == "fp32":
                    references[backend] = results
                reference = references.get(backend) or next(iter(references.values()), None)
                row.metrics["fidelity_AP"] = (fidelity(reference, results, settings.fidelity_threshold)
                                              if reference is not None else "n/a (no FP32 reference row)")
            if settings.data is not None:
                row.metrics.update(evaluate_split(predictor, settings.data, settings.max_val_videos))
        row.metrics["peak_host_mb"] = mem.peak_mb
        rows.append(row)
        close = getattr(predictor, "close", None)
        if callable(close):
            close()
    return rows
