"""benchmarks/gpu_check.sh and its python helper, on a CPU: the dry run, the CPU bench path, the summary."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO_ROOT


def _image_shaped_env(tmp_path):
    """The lent GPU image as far as imports go: no scikit-video, no pycocotools (a sitecustomize blocks them)."""
    import os

    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import sys\nsys.modules['skvideo'] = None\nsys.modules['pycocotools'] = None\n"
    )
    import shutil

    from efficientvis_trt.video import sample_video

    carried = tmp_path / "carry" / "videos"  # what `gpu_check.py prepare` carries to the lent machine
    carried.mkdir(parents=True)
    shutil.copy2(sample_video("bikes.mp4"), carried / "bikes.mp4")
    env = dict(os.environ, EVIS_SAMPLE_VIDEOS=str(carried))
    env["PYTHONPATH"] = f"{shim}:{REPO_ROOT}"
    env["PYTHON"] = sys.executable
    return env


@pytest.mark.slow
def test_dry_run_in_an_image_shaped_env_checks_every_step_would_start(tmp_path):
    out = tmp_path / "out"
    env = _image_shaped_env(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u; print(u.find_spec('skvideo'), end=' ')\n"
         "try:\n import pycocotools\nexcept ImportError: print('blocked')"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert probe.stdout.strip() == "None blocked"  # the shim really shapes the env
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "step limits: " in proc.stdout and "(<= 540)" in proc.stdout
    for step in ("doctor", "cuda_tests", "roi_align_kernel", "torch_bench", "letterbox", "train"):
        assert f"== {step} (limit" in proc.stdout
    assert proc.stdout.count("would start: yes") == 6
    assert "preflight train: missing" in proc.stdout and "pycocotools" in proc.stdout  # listed, not fatal
    assert sorted(p.name for p in out.iterdir()) == ["SUMMARY.md", "gpu_check.tar.gz"]  # <= 8 files come back
    import tarfile

    with tarfile.open(out / "gpu_check.tar.gz") as tar:
        names = {n.lstrip("./") for n in tar.getnames()}
        bench = json.loads(tar.extractfile("./torch_bench.json").read())
        letterbox = json.loads(tar.extractfile("./letterbox.json").read())
    assert {"preflight.json", "preflight.log", "doctor.probe.log", "train.probe.log"} <= names
    assert bench["modes"]["fp32 eager"]["median_ms"] > 0  # the CPU path really ran
    assert bench["modes"]["fp16 CUDA graph"]["status"] == "skipped"
    assert all(letterbox["sizes"][s]["byte_identical"] for s in ("720p", "1080p"))  # read the carried video
    summary = (out / "SUMMARY.md").read_text()
    assert "## Preflight" in summary and "| fp32 eager |" in summary


def test_step_limits_over_540_s_refuse_to_start(tmp_path):
    import os

    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path), "--dry-run"],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env={**os.environ, "TRAIN_MINUTES": "3"},
    )  # fmt: skip
    assert proc.returncode == 2 and "> 540 s" in proc.stderr


def test_capturable_roi_align_has_no_host_sync_and_matches_the_default(monkeypatch):
    import torch

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import gpu_check

    from efficientvis_trt.model import build_model

    torch.manual_seed(0)
    model = build_model("tiny").eval()
    m = model.config.model
    frames = torch.randint(0, 256, (m.clip_len, *m.input_size, 3), dtype=torch.uint8)
    q, b = model.initial_state()
    with torch.inference_mode():
        want = model.forward_clip(frames, q, b)
    assert gpu_check.capturable(model) == len(model.stages)

    def host_sync(*a, **k):
        raise AssertionError("host sync in the capturable path")

    monkeypatch.setattr(torch, "nonzero", host_sync)
    monkeypatch.setattr(torch.Tensor, "tolist", host_sync)
    with torch.inference_mode():
        got = model.forward_clip(frames, q, b)
    for k in ("logits", "boxes", "mask_logits"):
        assert torch.allclose(got[k], want[k], atol=1e-4), k


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
    (tmp_path / "train" / "run").mkdir()
    rows = [f"{i},{30 - i / 20:.2f},{i / 10:.1f}" for i in range(20, 320, 20)] + ["300,,31.0"]  # + an eval row
    (tmp_path / "train" / "run" / "log.csv").write_text("iter,loss,elapsed_s\n" + "\n".join(rows) + "\n")
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
    assert "10.00 iterations/s (iterations 20-300); loss 29.00 -> 15.00" in text and "log: down)" in text
    assert (
        text.count("not run") == 5
    )  # preflight, kernel, torch bench, letterbox, CUDA tests: named as missing, no numbers
