"""The bench table: real numbers through the real code paths, unavailable rows with their reason."""

from __future__ import annotations

import json

import numpy as np
import pytest

from efficientvis_trt.measure.report import COLUMNS, markdown_table, ratios, write_reports
from efficientvis_trt.measure.runner import BenchRow, fidelity
from efficientvis_trt.runtime.postprocess import encode_rle


def test_fidelity_of_identical_runs_is_one_and_undefined_without_reference():
    mask = np.zeros((4, 4), np.uint8)
    mask[1:3, 1:3] = 1
    seg = encode_rle(mask)
    results = [{"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [seg, seg]}]
    assert fidelity(results, results, 0.5) == pytest.approx(1.0)
    assert "n/a" in fidelity([{**results[0], "score": 0.1}], results, 0.5)


def _rows() -> list[BenchRow]:
    full = {key: 0.5 for key, _, _ in COLUMNS if key not in ("device_mb", "gpu_compute_ms")}
    return [
        BenchRow("ort", "fp32", True, metrics={**full, "model_fps": 10.0}),
        BenchRow("ort", "int8", True, metrics={**full, "model_fps": 25.0, "AP": 0.45}),
        BenchRow("trt", "fp32", False, 'TensorRT is not installed: pip install -e ".[trt-cu13]"'),
    ]


def test_table_has_every_row_every_column_and_the_reason(tmp_path):
    rows = _rows()
    table = markdown_table(rows)
    lines = table.splitlines()
    assert len(lines) == 2 + len(rows)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[2:4]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(header)
        assert all(c and c != "—" for c in cells), line  # every column filled on available rows
        assert "n/a (CPU)" in cells  # GPU-only columns say why they are empty
    assert "not available: TensorRT is not installed" in lines[4]
    r = ratios(rows)
    assert r["ort_int8_over_fp32_fps"] == pytest.approx(2.5)
    assert r["ort_int8_ap_drop_points"] == pytest.approx(5.0)

    from efficientvis_trt.measure.machine import machine_info

    paths = write_reports(rows, machine_info(), tmp_path)
    data = json.loads(paths["json"].read_text())
    assert [r["backend"] for r in data["rows"]] == ["ort", "ort", "trt"]
    assert data["rows"][2]["reason"].startswith("TensorRT")
    assert paths["csv"].read_text().count("\n") == 4
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
