"""benchmarks/gpu_check.sh and its python helper, on a CPU: the dry run, the CPU bench path, the summary."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import REPO_ROOT


def test_dry_run_lists_every_step_and_writes_a_summary(tmp_path):
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for step in ("doctor", "cuda_tests", "roi_align_kernel", "torch_bench", "letterbox", "train"):
        assert f"== {step}:" in proc.stdout
    bench = json.loads((tmp_path / "torch_bench.json").read_text())
    assert bench["modes"]["fp32 eager"]["median_ms"] > 0  # the CPU path really ran
    assert (
        bench["modes"]["fp16 CUDA graph"]["status"] == "skipped" and "CUDA" in bench["modes"]["fp16 CUDA graph"]["why"]
    )
    letterbox = json.loads((tmp_path / "letterbox.json").read_text())  # the device path on CPU tensors
    assert all(letterbox["sizes"][s]["byte_identical"] for s in ("720p", "1080p"))
    summary = (tmp_path / "SUMMARY.md").read_text()
    assert "| fp32 eager |" in summary and "TensorRT: not checked" in summary and "| 1080p |" in summary


def test_summary_says_tensorrt_not_available_and_never_invents_figures(tmp_path):
    (tmp_path / "doctor").mkdir()
    doctor = {
        "versions": {
            "python": "3.12",
            "torch": "2.11.0 (CUDA 13.0)",
            "triton": "3.6.0",
            "onnxruntime": "1.2",
            "tensorrt": None,
        },
        "gpu": {"name": "NVIDIA H200", "compute_capability": "9.0"},
        "checks": [{"name": "TensorRT fp32 engine build", "status": "skipped", "detail": "TensorRT not available"}],
    }
    (tmp_path / "doctor" / "doctor.json").write_text(json.dumps(doctor))
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "result.json").write_text(json.dumps({"AP": 12.5, "iterations": 300}))
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "summary", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "SUMMARY.md").read_text()
    assert "TensorRT: not available on this machine" in text and "NVIDIA H200" in text
    assert "AP 12.5" in text and "iterations 300" in text
    assert text.count("not run") == 4  # kernel, torch bench, letterbox, CUDA tests: named as missing, no numbers
