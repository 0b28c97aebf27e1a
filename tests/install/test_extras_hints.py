"""Install hints name commands that work from this repository, and a missing torch is one line naming its extra."""

from __future__ import annotations

import re

from helpers import REPO_ROOT, run_python

from efficientvis_trt import extras


def test_every_extra_a_hint_names_exists_in_pyproject():
    import tomllib

    declared = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = set(extras.EXTRA_FOR_MODULE.values()) | {"trt-cu12", "trt-cu13", "jetson", "gpu", "train", "demo"}
    assert named <= declared, named - declared
    for text in (extras.TENSORRT_HINT, extras.CUDA_PYTHON_HINT):
        for extra in re.findall(r"\.\[([\w,-]+)\]", text):
            assert set(extra.split(",")) <= declared, extra


def test_no_hint_in_the_package_names_the_unpublished_distribution():
    offenders = []
    for path in (REPO_ROOT / "efficientvis_trt").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"pip install '?efficientvis-trt", line):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{n}")
    assert not offenders, offenders


def test_missing_module_hints():
    assert extras.missing_module_hint("torch.nn") == (
        'torch is not installed: `pip install -e ".[export]"` in this repository '
        "(on Jetson keep NVIDIA's torch from JetPack; see docs/deploy.md)"
    )
    assert '".[train]"' in extras.missing_module_hint("torch", "train")
    assert '".[train]"' in extras.missing_module_hint("scipy.optimize")
    assert '".[gpu]"' in extras.missing_module_hint("onnxruntime")
    assert extras.missing_module_hint("not_a_dependency") is None


def test_evis_export_without_torch_is_one_line_naming_the_export_extra(tmp_path):
    proc = run_python(
        f"""
        import sys
        from efficientvis_trt.cli import main
        sys.exit(main(["export", "--config", "tiny", "--init", "random", "--out", {str(tmp_path / "b")!r}]))
        """,
        block=("torch",),
    )
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("evis export: error: torch is not installed")
    assert 'pip install -e ".[export]"' in lines[0]


def test_the_ort_inference_path_imports_without_torch():
    proc = run_python(
        """
        import sys
        import efficientvis_trt.cli, efficientvis_trt.commands.infer, efficientvis_trt.runtime.load
        import efficientvis_trt.runtime.predictor, efficientvis_trt.runtime.postprocess
        import efficientvis_trt.commands.doctor
        from efficientvis_trt.cli import build_parser
        build_parser()
        print("torch" in sys.modules)
        """,
        block=("torch", "onnxscript", "onnxslim", "scipy", "matplotlib", "skvideo"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
