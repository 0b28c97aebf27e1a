"""The CI target checker (.ci/targets.py): its stand-in wheels are real to pip, and its checks catch what they name."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile

import pytest
from helpers import REPO_ROOT
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

spec = importlib.util.spec_from_file_location("ci_targets", REPO_ROOT / ".ci" / "targets.py")
targets = importlib.util.module_from_spec(spec)
sys.modules["ci_targets"] = targets
spec.loader.exec_module(targets)


def _pip_offline(links, *reqs, report):
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index", "-q"]
    cmd += ["--find-links", str(links), "--report", str(report), *reqs]
    return subprocess.run(cmd, capture_output=True, text=True, env=targets.pip_env(), timeout=120)


def test_a_standin_torch_with_a_local_pre_release_version_is_what_pip_resolves(tmp_path):
    wheel = targets.build_wheel("torch", "2.5.0a0+872d972e41.nv24.08", tmp_path, tag="py3-none-any")
    assert wheel.name == "torch-2.5.0a0+872d972e41.nv24.08-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert names == {f"torch-2.5.0a0+872d972e41.nv24.08.dist-info/{n}" for n in ("METADATA", "WHEEL", "RECORD")}
    proc = _pip_offline(tmp_path, "torch==2.5.0a0+872d972e41.nv24.08", report=tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    (item,) = json.loads((tmp_path / "r.json").read_text())["install"]
    assert item["metadata"]["version"] == "2.5.0a0+872d972e41.nv24.08"


def test_the_project_wheel_carries_every_extra_and_resolves_its_self_references(tmp_path):
    wheel = targets.project_wheel(REPO_ROOT / "pyproject.toml", tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read("efficientvis_trt-0.1.0.dist-info/METADATA").decode()
    assert "Provides-Extra: jetson" in meta and "Provides-Extra: trt-cu13" in meta
    assert 'Requires-Dist: torch>=2.4.0a0; extra == "export"' in meta
    assert not any(line.startswith("Requires-Dist: torch") and "extra" not in line for line in meta.splitlines())
    # the stand-in deps of [samples] resolved offline: scikit-video offered as a stand-in too
    targets.build_wheel("scikit-video", "1.1.11", tmp_path)
    for name in ("numpy", "opencv-python-headless", "onnx", "pyyaml", "tqdm", "pycocotools", "psutil"):
        targets.build_wheel(name, "99.0", tmp_path)
    proc = _pip_offline(tmp_path, "efficientvis-trt[samples]", report=tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    plan = {i["metadata"]["name"] for i in json.loads((tmp_path / "r.json").read_text())["install"]}
    assert "scikit-video" in plan and "torch" not in plan and "onnxruntime" not in plan


def test_the_torch_floor_admits_jetpacks_builds_and_newer_torch():
    import tomllib

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (torch,) = [Requirement(r) for r in extras["export"] if r.startswith("torch")]
    for t in targets.TARGETS:
        if t.torch:
            assert torch.specifier.contains(t.torch, prereleases=True), t.torch
    assert torch.specifier.contains("2.14.1") and torch.specifier.contains("3.0.0")
    # the old floor would have replaced JetPack 6.0's torch: the reason for the pre-release spelling
    assert not SpecifierSet(">=2.4").contains("2.4.0a0+3bcc3cddb5.nv24.07", prereleases=True)


def _plan(**versions):
    return {
        "install": [{"metadata": {"name": n, "version": v}, "download_info": {"url": "x"}} for n, v in versions.items()]
    }


@pytest.mark.parametrize(
    "versions, needle",
    [
        ({"torch": "2.9.1"}, "torch replaced"),
        ({"nvidia-cublas": "13.0.0.19"}, "CUDA-13 packages"),
        ({"tensorrt-cu13-libs": "11.4.0.106"}, "CUDA-13 packages"),
        ({"cuda-python": "13.0.1"}, "CUDA-13 packages"),
        ({"onnxruntime": "1.23.2", "onnxruntime-gpu": "1.23.0"}, "two ONNX Runtime"),
        ({"numpy": "2.2.0"}, "cap <2"),
        ({"opencv-python-headless": "5.1.0.95"}, "cap <5"),
    ],
)
def test_check_plan_flags_each_kind_of_wrong_plan(tmp_path, versions, needle):
    jetson = targets.TARGETS[0]
    assert jetson.cuda == 12 and jetson.torch
    torch_wheel = tmp_path / "torch-standin.whl"
    problems = targets.check_plan(jetson, _plan(**versions), torch_wheel)
    assert any(needle in p for p in problems), problems


def test_check_plan_passes_a_good_cuda12_plan(tmp_path):
    jetson = targets.TARGETS[0]
    ok = _plan(**{"numpy": "1.26.4", "nvidia-cublas-cu12": "12.6.4.1", "cuda-python": "12.9.10"})
    assert targets.check_plan(jetson, ok, tmp_path / "t.whl") == []


def test_platform_tags_cover_older_glibc_and_plain_linux():
    tags = targets.platform_tags("aarch64", (2, 35))
    assert tags[0] == "manylinux_2_35_aarch64" and "manylinux_2_17_aarch64" in tags
    assert tags[-2:] == ["manylinux2014_aarch64", "linux_aarch64"]


def test_deploy_files_become_project_requirements():
    reqs, indexes = targets.read_deploy_file(REPO_ROOT / "deploy/requirements/jetson-jp6.txt", "efficientvis-trt")
    assert reqs == ["onnxruntime-gpu>=1.20", "efficientvis-trt[jetson,export]"]
    assert indexes == ["https://pypi.jetson-ai-lab.io/jp6/cu126"]
