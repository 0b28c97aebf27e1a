"""`evis doctor`: a real run on this machine (GPU checks skip with reasons where there is none), and failures."""

from __future__ import annotations

import json

import pytest

from efficientvis_trt.cli import main
from efficientvis_trt.commands import doctor


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("doctor")
    rc = main(["doctor", "--out", str(out)])
    data = json.loads((out / "doctor.json").read_text())
    return rc, data


@pytest.mark.slow
def test_doctor_runs_the_chain_and_every_check_says_pass_fail_or_why_skipped(report, capsys):
    rc, data = report
    statuses = {c["name"]: c["status"] for c in data["checks"]}
    assert rc == (0 if data["ok"] else 1)
    assert not data["failed"], [c for c in data["checks"] if c["status"] == "fail"]
    assert statuses["export + ONNX Runtime parity (tiny, random init)"] == "pass"
    assert statuses["ONNX Runtime: 3 carried clips, per-clip latency"] == "pass"
    assert statuses["ONNX parser rules of onnx-tensorrt 10.3 .. 11.x, every graph"] == "pass"  # CPU: no TensorRT needed
    assert len(data["checks"]) == 13 and set(statuses.values()) <= {"pass", "skipped"}
    for c in data["checks"]:
        assert c["detail"], c  # a pass says what it measured, a skip says why
    v = data["versions"]
    for key in ("python", "torch", "onnxruntime", "onnxruntime_providers", "tensorrt", "triton", "cuda-python"):
        assert key in v
    assert data["plugin_path"]["mode"] in ("aot", "jit", "builtin-roialign", "unavailable")
    assert data["plugin_path"]["reason"]
    if data["gpu"] is None:
        gpu_checks = [c for c in data["checks"] if "CUDA" in c["name"] or "TensorRT" in c["name"]]
        assert gpu_checks and all(c["status"] == "skipped" for c in gpu_checks)


def test_a_check_that_could_run_and_failed_makes_the_exit_code_non_zero(monkeypatch, tmp_path, capsys):
    def broken(self):
        raise RuntimeError("the exporter blew up")

    monkeypatch.setattr(doctor.Doctor, "export", broken)
    assert main(["doctor", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "the exporter blew up" in out
    data = json.loads((tmp_path / "doctor.json").read_text())
    assert data["failed"] == ["export + ONNX Runtime parity (tiny, random init)"] and data["ok"] is False
    ort = next(c for c in data["checks"] if c["name"].startswith("ONNX Runtime"))
    assert ort["status"] == "skipped" and "export" in ort["detail"]  # what depends on it says why it did not run


def test_the_cuda_graph_check_skips_an_engine_holding_the_builtin_roialign(monkeypatch, tmp_path):
    from efficientvis_trt.trt import engine

    d = doctor.Doctor(tmp_path)
    monkeypatch.setattr(doctor.Doctor, "_need_fp32_engine", lambda self: None)
    d.engines["fp32"], d.trt_plain = tmp_path / "e.plan", [{}]
    monkeypatch.setattr(engine, "read_sidecar", lambda p: {"plugin_path": {"in_engine": "builtin-roialign"}})
    check = d.run("TensorRT CUDA-graph replay == plain execution", d.cuda_graph)
    assert check.status == "skipped" and "data-dependent" in check.detail


@pytest.mark.slow
def test_doctor_needs_neither_scikit_video_nor_pycocotools(tmp_path):
    """Run with both imports blocked (the lent GPU image has neither): every CPU check still passes."""
    import subprocess
    import sys

    from helpers import REPO_ROOT

    code = (
        "import sys; sys.modules['skvideo'] = None; sys.modules['pycocotools'] = None\n"
        "from efficientvis_trt.cli import main; sys.exit(main(['doctor', '--out', sys.argv[1]]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=REPO_ROOT
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads((tmp_path / "doctor.json").read_text())
    ort = next(c for c in data["checks"] if c["name"].startswith("ONNX Runtime"))
    assert ort["status"] == "pass" and "a generated clip" in ort["detail"]
