"""benchmarks/plot_training_curve.py (on train_ab's curve and plot): a trainer log's evaluation rows become the plot."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_eval_rows_become_points_and_a_png(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import plot_training_curve as ptc
    finally:
        sys.path.remove(str(BENCHMARKS))
    log = tmp_path / "log.csv"
    log.write_text("iter,loss,elapsed_s,AP,AP50\n20,30.0,60,,\n100,,600,0.25,0.5\n200,,1200,0.3,0.55\n")
    points = ptc.curve(log)
    assert np.allclose(points, [(10.0, 0.25, 0.5, 100), (20.0, 0.3, 0.55, 200)])
    out = tmp_path / "curve.png"
    assert ptc.main(["--out", str(out), f"run={log}"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.csv"
    empty.write_text("iter,loss,elapsed_s,AP,AP50\n20,30.0,60,,\n")
    assert ptc.main(["--out", str(tmp_path / "no.png"), str(empty)]) == 1
