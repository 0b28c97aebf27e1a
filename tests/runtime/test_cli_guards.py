"""Argument and output checks that run before any work: one line, non-zero exit, nothing written."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from efficientvis_trt.cli import main
from efficientvis_trt.errors import EvisError


def _one_line_error(capsys, argv, *needles) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("thr", ["2", "nan", "-0.1"])
def test_score_thr_bounds(capsys, tmp_path, thr):
    _one_line_error(
        capsys, ["infer", str(tmp_path), "v.mp4", "--score-thr", thr, "--out", str(tmp_path / "o")], "[0, 1]"
    )
    assert not (tmp_path / "o").exists()


def test_infer_out_with_foreign_files_is_refused_before_work(capsys, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    _one_line_error(capsys, ["infer", str(tmp_path / "nobundle"), "v.mp4", "--out", str(out)], "'mine.txt'")
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_output_paths_that_cannot_be_written(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    _one_line_error(capsys, ["eval", "gt.json", "r.json", "-o", str(tmp_path)], "is a folder")
    _one_line_error(capsys, ["eval", "gt.json", "r.json", "-o", str(tmp_path / "file" / "e.json")], "is a file")
    _one_line_error(
        capsys, ["make-synthetic", str(tmp_path / "file"), "--split", "val", "--videos", "1"], "not a folder"
    )
    _one_line_error(capsys, ["demo", "--out", str(tmp_path / "file" / "d")], "is a file")
    _one_line_error(
        capsys, ["export", "--config", "tiny", "--init", "random", "--out", str(tmp_path / "file" / "b")], "is a file"
    )


def test_export_bounds_name_the_limit(capsys, tmp_path):
    args = ["export", "--config", "tiny", "--init", "random", "--out", str(tmp_path / "b")]
    _one_line_error(capsys, [*args, "--clip-len", "100000"], "limit of 64")
    _one_line_error(capsys, [*args, "--size", "4096x4096"], "limit of 2048")
    _one_line_error(capsys, [*args, "--video", str(tmp_path / "none.mp4")], "not found")
    assert not (tmp_path / "b").exists()


def test_existing_digit_folder_is_a_path_not_a_camera(tmp_path, monkeypatch):
    from efficientvis_trt.runtime.sources import is_live_spec

    monkeypatch.chdir(tmp_path)
    assert is_live_spec("0")
    (tmp_path / "0").mkdir()
    assert not is_live_spec("0") and is_live_spec(0)


def test_overlay_that_does_not_read_back_never_replaces_a_good_one(tmp_path):
    from efficientvis_trt.runtime.overlay import OverlayWriter

    frames = [np.full((64, 96, 3), i * 20, np.uint8) for i in range(6)]
    path = tmp_path / "v.overlay.mp4"
    with OverlayWriter(path, 10) as w:
        for f in frames:
            w.write(f)
    good = path.read_bytes()
    w = OverlayWriter(path, 10)
    for f in frames:
        w.write(f)
    w._writer.release()
    with open(w.tmp, "r+b") as fh:  # what a full disk or `ulimit -f` leaves: a cut file
        fh.truncate(os.path.getsize(w.tmp) // 3)
    with pytest.raises(EvisError, match="could not be written completely.*nothing was replaced"):
        w.commit()
    assert path.read_bytes() == good and not w.tmp.exists()


def test_calibration_phase_never_costs_a_clip():
    from efficientvis_trt.precision.calibration import plan_sequences

    for seed in range(30):  # a 12-frame folder holds 2 clips of 5 whatever the seed
        assert sum(k for _, _, k in plan_sequences([12], 2, 5, seed)) == 2


def test_ground_truth_of_unknown_category_warns(caplog):
    from efficientvis_trt.eval import evaluate

    rle = {"size": [4, 4], "counts": "04"}  # an empty 4x4 mask in uncompressed-count form is not needed here
    gt = {
        "videos": [{"id": 1, "width": 4, "height": 4, "length": 1}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {"id": 1, "video_id": 1, "category_id": 1, "segmentations": [None]},
            {"id": 2, "video_id": 1, "category_id": 7, "segmentations": [rle]},
        ],
    }
    with caplog.at_level(logging.WARNING):
        evaluate(gt, [])
    assert "ground truth: 1 track(s) of categories not in 'categories' ignored" in caplog.text


def test_bench_fails_when_every_row_fails(capsys, tmp_path, make_tiny_bundle):
    from helpers import SMALL_BUNDLE

    bundle = make_tiny_bundle(**SMALL_BUNDLE)
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.json", "b.json"):
        (data / name).write_text(json.dumps({"videos": []}))
    base = ["bench", str(bundle), "--out", str(tmp_path / "bench")]
    _one_line_error(capsys, [*base, "--data", str(data)], "several JSON files")
    assert main([*base, "--backends", "trt", "--precisions", "fp32", "--iters", "1", "--warmup", "0"]) == 2
    err = capsys.readouterr().err
    assert "every bench row failed" in err.splitlines()[-1]  # the lines before are the progress bar
    assert Path(tmp_path / "bench" / "bench.md").is_file()  # the table saying why is still written
