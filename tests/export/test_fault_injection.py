"""Kill export, build and infer at every rename of a commit; run two builds at once.

What is proved is docs/bundle.md, "Failure guarantees".

Each run is a real `evis` process whose `os.replace` is wrapped so that the k-th rename
into the target folder first delivers SIGKILL, SIGTERM or SIGINT to the process itself:
every point between two on-disk state changes of a commit is hit once. Afterwards the
bundle (or infer output) must open and be exactly the old or the new state, and after
the next writer runs no temporary of ours is left. The build's transaction is driven
with graphs built once (the calibration itself is not what is being tested), so each
run costs one interpreter start, not a calibration.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import export_small_bundle, interruptible, next_writer, our_temporaries

from efficientvis_trt.bundle import Bundle

REPO = Path(__file__).resolve().parents[2]

# argv: target folder, k (kill at the k-th os.replace into it; 0 = never), signal name, then a mode and its args.
DRIVER = r"""
import os, signal, sys
target, k, sig, mode, *rest = sys.argv[1:]
target, k = os.path.realpath(target), int(k)
real_replace, count = os.replace, [0]
def replace(src, dst, *a, **kw):
    if os.path.realpath(os.fspath(dst)).startswith(target):
        count[0] += 1
        if count[0] == k:
            os.kill(os.getpid(), getattr(signal, sig))
    return real_replace(src, dst, *a, **kw)
os.replace = replace
if mode == "cli":
    from efficientvis_trt.cli import main
    sys.exit(main(rest))
import json
from pathlib import Path
from efficientvis_trt.bundle import Bundle
from efficientvis_trt.precision.graph_build import commit_graphs
precision, graphs = rest
g = json.loads(Path(graphs).read_text())
cpu = Path(g["cpu"]).read_bytes() if g.get("cpu") else None
from efficientvis_trt.cli import _raise_terminated
signal.signal(signal.SIGTERM, _raise_terminated)
try:
    commit_graphs(Bundle.open(target), precision, Path(g["graph"]).read_bytes(), cpu, g["section"])
except KeyboardInterrupt:
    sys.exit(130)
"""


def _run(target: Path, k: int, sig: str, *args: str, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", DRIVER, str(target), str(k), sig, *args]
    proc = subprocess.Popen(
        cmd, env=env, cwd=target.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=interruptible
    )
    if not wait:
        return proc
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err.decode()


def _state(bundle: Path) -> dict:
    """What a reader sees: the verified files and their hashes (opening runs every check)."""
    return {name: rec["sha256"] for name, rec in Bundle.open(bundle).files.items()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An exported bundle (old state) and, from a real int8 + fp16 build of a copy, the graphs to commit."""
    from efficientvis_trt.precision.graph_build import BuildOptions, build, read_record

    root = tmp_path_factory.mktemp("faults")
    old = export_small_bundle(root / "old")
    done = root / "done"
    shutil.copytree(old, done)
    graphs = {}
    for precision in ("fp16", "int8"):
        build(done, BuildOptions(precision=precision, calib_clips=1, seed=0, progress=False))
        record = read_record(Bundle.open(done))
        spec = {"graph": str(done / f"model.{precision}.onnx"), "section": record[precision]}
        if precision == "int8":
            spec["cpu"] = str(done / "model.int8.cpu.onnx")
        graphs[precision] = root / f"{precision}.json"
        graphs[precision].write_text(json.dumps(spec))
    return old, graphs, _state(done)


# A build's commit renames: journal, 3 files in (int8, its CPU form, calibration.json), metadata.json, the cache.
# SIGKILL at every one; the two handled signals alternate over them (their clean-up path is the same code).
BUILD_POINTS = [(k, "SIGKILL") for k in range(1, 7)] + [(k, "SIGTERM" if k % 2 else "SIGINT") for k in range(1, 7)]


@pytest.mark.parametrize("k, sig", BUILD_POINTS)
def test_build_killed_at_every_rename(built, tmp_path, k, sig):
    old, graphs, _ = built
    bundle = tmp_path / "b"
    shutil.copytree(old, bundle)
    before = _state(bundle)
    code, err = _run(bundle, k, sig, "build", "int8", str(graphs["int8"]))
    assert code != 0, err
    after = _state(bundle)  # opens: a journal left by the kill is rolled forward here
    new = {n for n in after if n not in before}
    assert after.items() >= before.items() and new in (
        set(),
        {"model.int8.onnx", "model.int8.cpu.onnx", "calibration.json"},
    )
    if sig != "SIGKILL":  # the signal handler ran the clean-up: nothing of ours is left even now
        assert our_temporaries(bundle) == []
    next_writer(bundle)
    assert our_temporaries(bundle) == [] and _state(bundle) == after


def test_two_builds_at_once_keep_both(built, tmp_path):
    """fp16 and int8 committed concurrently: both graphs and both calibration sections survive."""
    old, graphs, _ = built
    bundle = tmp_path / "b"
    shutil.copytree(old, bundle)
    procs = [_run(bundle, 0, "SIGKILL", "build", p, str(graphs[p]), wait=False) for p in ("fp16", "int8")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    b = Bundle.open(bundle)
    assert b.available_precisions() == ["fp32", "fp16", "int8"]
    assert {"fp16", "int8"} <= set(b.read_json("calibration.json")) and our_temporaries(bundle) == []


EXPORT_ARGS = ["--config", "tiny", "--init", "random", "--clip-len", "2", "--size", "64x96", "--seed", "5"]
EXPORT_ARGS += ["--exporter", "torchscript", "--no-simplify", "--no-verify"]


# An export's commit renames: journal, model.onnx and init_state.npz in, metadata.json, the cache.
@pytest.mark.parametrize("k, sig", [(1, "SIGKILL"), (2, "SIGTERM"), (3, "SIGKILL"), (4, "SIGINT"), (5, "SIGTERM")])
def test_reexport_killed_at_every_rename(built, tmp_path, k, sig):
    old, _, _ = built
    bundle = tmp_path / "b"
    shutil.copytree(old, bundle)
    before = _state(bundle)
    code, err = _run(bundle, k, sig, "cli", "export", *EXPORT_ARGS, "--out", str(bundle))
    assert code != 0, err
    after = _state(bundle)
    assert set(after) == set(before)  # old or new: the same two files, each verified against its record
    meta = Bundle.open(bundle).metadata
    assert meta["source"]["seed"] == (0 if after == before else 5)
    next_writer(bundle)
    assert our_temporaries(bundle) == []


def test_sigterm_during_export_cleans_up(tmp_path):
    """SIGTERM (timeout, docker stop) runs the same clean-up as Ctrl-C: exit 143, no temporaries, no folder."""
    out = tmp_path / "new"
    code, err = _run(out, 1, "SIGTERM", "cli", "export", *EXPORT_ARGS, "--out", str(out))
    assert code == 143 and "terminated" in err
    assert not out.exists()


def test_infer_killed_while_swapping_its_output(built, tmp_path):
    """infer --out is swapped in whole: a kill between its two renames leaves the old output (restored next run)."""
    import numpy as np
    from helpers import write_video

    from efficientvis_trt.io_utils import clean_stale_temporaries

    old, _, _ = built
    first_video = write_video(tmp_path / "v.mp4", [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(3)])
    other_video = write_video(tmp_path / "w.mp4", [np.full((48, 64, 3), 30 * i, np.uint8) for i in range(4)])
    out = tmp_path / "o"
    args = ["cli", "infer", str(old), "--backend", "ort", "--device", "cpu", "--no-progress", "--out", str(out)]
    code, err = _run(out, 0, "SIGKILL", *args, str(first_video))
    assert code == 0, err
    first = (out / "results.json").read_bytes()
    # the one counted rename is the new folder over --out: k=1 stops the run between its two renames
    for sig in ("SIGKILL", "SIGINT", "SIGTERM"):
        code, err = _run(out, 1, sig, *args, str(other_video))
        assert code != 0, err
        if sig == "SIGKILL":
            assert not out.exists()  # moved aside, not yet replaced: what the next run's clean-up restores
            clean_stale_temporaries(tmp_path)
        assert (out / "results.json").read_bytes() == first
        assert json.loads((out / "videos.json").read_text())["videos"][0]["length"] == 3
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".evis-tmp-")]
