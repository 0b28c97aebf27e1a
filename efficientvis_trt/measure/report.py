"""The bench table as Markdown, CSV and JSON, and the accuracy-vs-speed plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from efficientvis_trt.io_utils import atomic_path, write_json_atomic, write_text_atomic
from efficientvis_trt.measure.runner import BenchRow

# (key, header, format); GPU-only columns read "n/a (CPU)" on CPU rows.
COLUMNS: list[tuple[str, str, str]] = [
    ("AP", "AP", "pct"),
    ("AP50", "AP50", "pct"),
    ("AP75", "AP75", "pct"),
    ("fidelity_AP", "AP vs FP32", "pct"),
    ("latency_p50_ms", "p50 ms/clip", "f1"),
    ("latency_p90_ms", "p90", "f1"),
    ("latency_p99_ms", "p99", "f1"),
    ("model_fps", "model FPS", "f1"),
    ("e2e_fps", "e2e FPS", "f1"),
    ("e2e_over_model", "e2e/model", "f2"),
    ("decode_ms_per_frame", "decode ms/f", "f2"),
    ("preprocess_ms_per_frame", "pre ms/f", "f2"),
    ("model_ms_per_frame", "model ms/f", "f2"),
    ("postprocess_ms_per_frame", "post ms/f", "f2"),
    ("peak_host_mb", "peak host MB", "f0"),
    ("device_mb", "device MB", "f0"),
    ("gpu_compute_ms", "GPU compute ms/clip", "f2"),
]
GPU_ONLY = {"device_mb", "gpu_compute_ms"}


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if kind == "pct":
        return "n/a" if value < 0 else f"{100.0 * value:.1f}"
    return f"{value:.{int(kind[1:])}f}"


def cell(row: BenchRow, key: str, kind: str) -> str:
    if not row.available:
        return "—"
    if key in row.metrics:
        return _fmt(row.metrics[key], kind)
    if key in GPU_ONLY and row.metrics.get("device", "cpu") == "cpu":
        return "n/a (CPU)"
    return "—"


def markdown_table(rows: list[BenchRow]) -> str:
    head = ["backend", "precision", "status"] + [h for _, h, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        status = "ok" if r.available else f"not available: {r.reason}"
        lines.append(
            "| " + " | ".join([r.backend, r.precision, status] + [cell(r, k, f) for k, _, f in COLUMNS]) + " |"
        )
    return "\n".join(lines)


def ratios(rows: list[BenchRow]) -> dict[str, float]:
    """The headline ratios: INT8/FP32 throughput and INT8's AP drop per backend, e2e/model FPS."""
    out: dict[str, float] = {}
    by = {(r.backend, r.precision): r.metrics for r in rows if r.available}
    for backend in {r.backend for r in rows}:
        fp32, int8 = by.get((backend, "fp32")), by.get((backend, "int8"))
        if fp32 and int8 and "model_fps" in fp32 and "model_fps" in int8:
            out[f"{backend}_int8_over_fp32_fps"] = int8["model_fps"] / fp32["model_fps"]
        if fp32 and int8 and isinstance(fp32.get("AP"), float) and isinstance(int8.get("AP"), float):
            out[f"{backend}_int8_ap_drop_points"] = 100.0 * (fp32["AP"] - int8["AP"])
    return out


def write_reports(
    rows: list[BenchRow], machine: dict, out_dir: Path, title: str = "EfficientVIS-TRT bench"
) -> dict[str, Path]:
    from efficientvis_trt.measure.machine import machine_line

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    extra = ratios(rows)
    ratio_lines = "\n".join(f"- {k}: {v:.2f}" for k, v in sorted(extra.items())) or "- (no INT8/FP32 pair measured)"
    md = (
        f"# {title}\n\nMachine: {machine_line(machine)}\n\n{table}\n\nRatios:\n{ratio_lines}\n\n"
        "AP columns in percent (YouTube-VIS AP); 'AP vs FP32' = AP of this row's tracks on the real videos "
        "against the same backend's FP32 tracks (else the first FP32 row; JSON `fidelity_reference` says which); "
        "p50/p90/p99 = model-only latency per clip after warm-up; model FPS and e2e FPS (file to results JSON) "
        "come from the same run over the videos; ms/f = milliseconds per frame per stage.\n"
    )
    paths = {
        "markdown": out_dir / "bench.md",
        "csv": out_dir / "bench.csv",
        "json": out_dir / "bench.json",
        "plot": out_dir / "bench.png",
    }
    write_text_atomic(paths["markdown"], md)
    buf = io.StringIO()
    keys = ["backend", "precision", "available", "reason"] + [k for k, _, _ in COLUMNS]
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow(r.as_dict())
    write_text_atomic(paths["csv"], buf.getvalue())
    write_json_atomic(paths["json"], {"machine": machine, "rows": [r.as_dict() for r in rows], "ratios": extra})
    plot(rows, paths["plot"])
    return paths


def plot(rows: list[BenchRow], path: Path) -> None:
    """Accuracy vs FPS, one point per available backend x precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    markers = {"torch": "o", "ort": "s", "trt": "^", "openvino": "D"}
    colors = {"fp32": "tab:blue", "fp16": "tab:orange", "bf16": "tab:purple", "int8": "tab:green"}
    plotted = 0
    for r in rows:
        if not r.available:
            continue
        fps = r.metrics.get("model_fps")
        acc = r.metrics.get("AP") if isinstance(r.metrics.get("AP"), float) else r.metrics.get("fidelity_AP")
        if not isinstance(fps, float) or not isinstance(acc, float):
            continue
        ax.scatter(fps, 100 * acc, marker=markers.get(r.backend, "o"), color=colors.get(r.precision, "k"), s=60)
        ax.annotate(
            f"{r.backend} {r.precision}", (fps, 100 * acc), textcoords="offset points", xytext=(5, 4), fontsize=8
        )
        plotted += 1
    ax.set_xlabel("model-only frames/s")
    ax.set_ylabel("AP (synthetic val; else fidelity to FP32), %")
    ax.set_title("Accuracy vs speed per backend x precision")
    ax.grid(alpha=0.3)
    if not plotted:
        ax.text(0.5, 0.5, "no measurable rows", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
