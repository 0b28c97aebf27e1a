"""`evis doctor`'s install findings: Jetson, two ONNX Runtimes at once, a venv hiding a system TensorRT.

Each probe is driven with injected paths and distribution lists, so these run on any machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from efficientvis_trt.commands.doctor import format_table
from efficientvis_trt.trt import install_checks as ic

JP62 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 2025\n"


def findings(tmp_path: Path, **kw):
    """install_findings with nothing read from this machine unless a test sets it."""
    base = {
        "release_file": tmp_path / "no_tegra_release",
        "distributions": ["numpy", "onnxruntime"],
        "prefix": "/usr",
        "base_prefix": "/usr",
        "system_tensorrt": [],
        "tensorrt_importable": False,
        "python_minor": (3, 10),
    }
    base.update(kw)
    return {f.name: f for f in ic.install_findings(**base)}


def test_a_clean_cpu_install_has_no_findings(tmp_path):
    assert findings(tmp_path) == {}


def test_l4t_release_is_read_and_named():
    assert ic.jetpack_name((36, 4, 3)) == "6.1/6.2"
    assert ic.jetpack_name((36, 3, 0)) == "6.0"
    assert ic.read_l4t_release(Path("/nonexistent/nv_tegra_release")) is None


def test_jetson_without_onnxruntime_gpu_names_the_jetson_ai_lab_index(tmp_path):
    rel = tmp_path / "nv_tegra_release"
    rel.write_text(JP62)
    assert ic.read_l4t_release(rel) == (36, 4, 3)
    f = findings(tmp_path, release_file=rel, distributions=["numpy", "cuda-python"])["jetson"]
    assert f.problem and "JetPack 6.1/6.2" in f.detail and "R36.4.3" in f.detail
    assert f.fix == "pip install onnxruntime-gpu --index-url https://pypi.jetson-ai-lab.io/jp6/cu126"


def test_jetson_with_everything_is_a_note_not_a_problem(tmp_path):
    rel = tmp_path / "nv_tegra_release"
    rel.write_text(JP62)
    got = findings(tmp_path, release_file=rel, distributions=["onnxruntime-gpu", "cuda_python", "numpy"])
    assert set(got) == {"jetson"} and not got["jetson"].problem and got["jetson"].fix == ""


def test_jetson_missing_cuda_python_names_the_jetson_extra(tmp_path):
    rel = tmp_path / "nv_tegra_release"
    rel.write_text(JP62)
    f = findings(tmp_path, release_file=rel, distributions=["onnxruntime-gpu"])["jetson"]
    assert f.problem and f.fix == 'pip install -e ".[jetson]"'


def test_pypi_tensorrt_on_a_jetson_is_flagged_for_removal(tmp_path):
    rel = tmp_path / "nv_tegra_release"
    rel.write_text(JP62)
    dists = ["onnxruntime-gpu", "cuda-python", "tensorrt_cu13", "tensorrt-cu13-bindings", "tensorrt-cu13-libs"]
    f = findings(tmp_path, release_file=rel, distributions=dists)["pypi-tensorrt-on-jetson"]
    assert f.problem and f.fix == "pip uninstall -y tensorrt-cu13 tensorrt-cu13-bindings tensorrt-cu13-libs"


@pytest.mark.parametrize(
    "dists, fix",
    [
        (
            ["onnxruntime", "onnxruntime_gpu"],
            "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu",
        ),
        (
            ["onnxruntime", "onnxruntime-openvino"],
            "pip uninstall -y onnxruntime onnxruntime-openvino && pip install onnxruntime-openvino",
        ),
    ],
)
def test_two_onnxruntime_distributions_are_one_problem_with_one_fix(tmp_path, dists, fix):
    f = findings(tmp_path, distributions=dists)["onnxruntime-twice"]
    assert f.problem and "same files" in f.detail and f.fix == fix


def test_two_onnxruntimes_on_a_jetson_reinstall_from_the_jetson_index(tmp_path):
    rel = tmp_path / "nv_tegra_release"
    rel.write_text(JP62)
    f = findings(tmp_path, release_file=rel, distributions=["onnxruntime", "onnxruntime-gpu", "cuda-python"])
    assert f["onnxruntime-twice"].fix.endswith("&& " + ic.JETSON_ORT_COMMAND)


def _venv(tmp_path: Path, system_site: bool) -> Path:
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text(
        f"home = /usr/bin\ninclude-system-site-packages = {'true' if system_site else 'false'}\nversion = 3.10.12\n"
    )
    return venv


def test_a_plain_venv_hiding_the_system_tensorrt_gets_the_pyvenv_fix(tmp_path):
    venv = _venv(tmp_path, system_site=False)
    sys_trt = ["/usr/lib/python3.10/dist-packages/tensorrt"]
    f = findings(tmp_path, prefix=str(venv), system_tensorrt=sys_trt)["hidden-system-tensorrt"]
    assert f.problem and "--system-site-packages" in f.detail and sys_trt[0] in f.detail
    assert f.fix == (
        f"sed -i 's/^include-system-site-packages = false/include-system-site-packages = true/' {venv / 'pyvenv.cfg'}"
    )
    # the fix really flips what the probe reads
    cfg = venv / "pyvenv.cfg"
    cfg.write_text(cfg.read_text().replace("= false", "= true"))
    assert "hidden-system-tensorrt" not in findings(tmp_path, prefix=str(venv), system_tensorrt=sys_trt)


def test_a_venv_on_another_python_than_the_system_tensorrt_is_told_which_python(tmp_path):
    venv = _venv(tmp_path, system_site=False)
    f = findings(
        tmp_path,
        prefix=str(venv),
        system_tensorrt=["/usr/lib/python3.10/dist-packages/tensorrt"],
        python_minor=(3, 12),
    )["hidden-system-tensorrt"]
    assert f.fix == f"python3.10 -m venv --system-site-packages {venv}" and "Python 3.10" in f.detail


@pytest.mark.parametrize(
    "kw",
    [
        {"tensorrt_importable": True},  # the venv sees a TensorRT (its own or the system's)
        {"prefix": "/usr"},  # not a venv at all
        {"system_tensorrt": []},  # no system TensorRT to hide
    ],
)
def test_no_hidden_tensorrt_finding_when_nothing_is_hidden(tmp_path, kw):
    venv = _venv(tmp_path, system_site=False)
    args = {"prefix": str(venv), "system_tensorrt": ["/usr/lib/python3.10/dist-packages/tensorrt"], **kw}
    assert "hidden-system-tensorrt" not in findings(tmp_path, **args)


def test_this_machine_is_probed_without_arguments():
    got = ic.install_findings()
    assert all(isinstance(f, ic.Finding) and f.detail for f in got)
    assert "numpy" in ic.installed_distributions()


def test_doctor_table_prints_each_problem_and_its_fix():
    report = {
        "install": [
            {
                "name": "onnxruntime-twice",
                "problem": True,
                "detail": "two",
                "fix": "pip uninstall -y a && pip install b",
            }
        ],
        "install_problems": ["onnxruntime-twice"],
        "versions": {"python": "3.11", "onnxruntime_providers": []},
        "gpu": None,
        "plugin_path": {"mode": "unavailable", "reason": "r"},
        "checks": [{"name": "x", "status": "pass", "seconds": 0.1, "detail": "d"}],
    }
    text = format_table(report)
    assert "PROBLEM  install: two" in text and "fix: pip uninstall -y a && pip install b" in text
    assert "install problems: onnxruntime-twice" in text


def test_a_doctor_check_missing_an_optional_module_is_skipped_with_its_install_line(tmp_path):
    from efficientvis_trt.commands.doctor import Doctor

    def needs_torch() -> str:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    def needs_unknown() -> str:
        raise ModuleNotFoundError("No module named 'mystery'", name="mystery")

    d = Doctor(tmp_path)
    check = d.run("export", needs_torch)
    assert check.status == "skipped" and 'pip install -e ".[export]"' in check.detail
    assert d.run("other", needs_unknown).status == "fail"  # a module we do not provide is a real failure
