"""Issue #27's diagnosis test: the recipe's trainer memorises a handful of synthetic videos.

A correct detector trained on 3 videos and scored on the same 3 should reach a high AP quickly;
the issue asks for > 70 AP within 10 minutes of CPU training. It takes those 10 minutes, so it
runs only when asked: `EVIS_OVERFIT_TEST=1 python -m pytest -q tests/train/test_overfit.py`
(EVIS_OVERFIT_MINUTES changes the budget). docs/training.md, "Overfitting test", records what it
measures at present.
"""

from __future__ import annotations

import os

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("EVIS_OVERFIT_TEST") != "1", reason="10-minute training run: set EVIS_OVERFIT_TEST=1"
    ),
]


def test_recipe_overfits_three_videos(tmp_path):
    from efficientvis_trt.data.synthetic import make_synthetic
    from efficientvis_trt.train.recipe import Recipe, seconds_per_iteration
    from efficientvis_trt.train.trainer import load_metrics, train

    minutes = float(os.environ.get("EVIS_OVERFIT_MINUTES", "10"))
    videos = tmp_path / "videos"
    make_synthetic(videos, "train", 3, 0, frames=20, progress=False)
    # The recipe, minus the augmentation that would stop it memorising the clips.
    recipe = Recipe(extra={"hflip_prob": 0.0, "scale_jitter": [1.0, 1.0], "max_frame_stride": 1})
    per_iter = seconds_per_iteration(recipe, videos, tmp_path / "calibration")
    iters = max(20, int(0.9 * minutes * 60.0 / per_iter))
    cfg = recipe.config(iters)
    run = tmp_path / "run"
    train(cfg, videos, run, iters=iters, val_dir=videos, progress=False)
    ap = load_metrics(run)["AP"]
    assert ap > 0.70, f"AP {100 * ap:.1f} on the 3 training videos after {iters} iterations ({minutes} min)"
