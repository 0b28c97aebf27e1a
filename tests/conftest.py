"""Shared fixtures (tiny models, tiny bundles, real frames, cached per session) and the GPU gating.

The markers declared in pyproject.toml are implemented here, once: a test marked `tensorrt` runs
where TensorRT, cuda-python and an NVIDIA GPU are usable and skips with the reason elsewhere; a
test marked `cuda` needs a CUDA device that torch sees (docs/contributing.md, "Running the tests").
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from helpers import CALIB_CLIPS, missing_for

os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(2)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in ("tensorrt", "cuda"):
        if item.get_closest_marker(marker) is not None and (why := missing_for(marker)) is not None:
            pytest.skip(why)


@pytest.fixture(scope="session")
def make_tiny_bundle(tmp_path_factory):
    """`make_tiny_bundle(precisions=(), **export_options)` -> a fresh copy of a tiny random-init bundle.

    Each distinct set of options is exported once per session (unverified: the export tests verify their
    own), and each asked precision is built into it once, through `evis build` (CALIB_CLIPS clips, seed 0);
    every call returns its own copy, so a test may build into it or break it.
    """
    from efficientvis_trt.cli import main
    from efficientvis_trt.export.exporter import export_bundle

    made: dict[tuple, object] = {}

    def make(precisions=(), **options):
        opts = {"config": "tiny", "init": "random", "seed": 0, "verify": False, **options}
        key = tuple(sorted(opts.items()))
        if key not in made:
            src = tmp_path_factory.mktemp("tiny_export") / "bundle"
            export_bundle(src, echo=None, **opts)
            made[key] = src
        built = made[key]
        for n, precision in enumerate(precisions):
            step = (*key, ("precisions", tuple(precisions[: n + 1])))
            if step not in made:
                out = tmp_path_factory.mktemp(f"tiny_{precision}") / "bundle"
                shutil.copytree(built, out)
                argv = ["build", str(out), "--precision", precision, "--calib-clips", str(CALIB_CLIPS)]
                assert main([*argv, "--seed", "0"]) == 0, f"evis build {precision} failed"
                made[step] = out
            built = made[step]
        out = tmp_path_factory.mktemp("tiny_bundle") / "bundle"
        shutil.copytree(built, out)
        return out

    return make


@pytest.fixture(scope="session")
def tiny_model():
    from efficientvis_trt.model import build_model

    torch.manual_seed(0)
    return build_model("tiny").eval()


@pytest.fixture(scope="session")
def bikes_canvas_frames():
    """The first 15 frames of bikes.mp4, letterboxed to the tiny canvas."""
    from efficientvis_trt.config import get_config
    from efficientvis_trt.video import Letterbox, read_frames, sample_video

    frames = read_frames(sample_video("bikes.mp4"), max_frames=15)
    lb = Letterbox(frames[0].shape[:2], tuple(get_config("tiny").model.input_size))
    return np.stack([lb.apply(f) for f in frames])


@pytest.fixture(scope="module")
def real_clips(bundle_dir):
    """Two consecutive clips of bikes.mp4 (not calibration clips), state carried by the fp32 graph.

    Uses the requesting module's own `bundle_dir` fixture.
    """
    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.contract import TrackletState, step
    from efficientvis_trt.ort_session import make_session, run
    from efficientvis_trt.video import Letterbox, read_frames, sample_video

    b = Bundle.open(bundle_dir)
    t = b.clip_len
    frames = read_frames(sample_video("bikes.mp4"), max_frames=2 * t)
    lb = Letterbox(frames[0].shape[:2], b.input_hw)
    canvas = np.stack([lb.apply(f) for f in frames])
    state = TrackletState.initial(b.init_state())  # one stream: B = 1
    s32 = make_session(bundle_dir / "model.onnx")
    feeds = []

    def run_fp32(feed):
        feeds.append(feed)
        return run(s32, feed)

    for k in range(2):
        _, state = step(run_fp32, canvas[None, k * t : (k + 1) * t], state)
    return feeds


@pytest.fixture(scope="session")
def tiny_random_bundle(make_tiny_bundle):
    """A tiny bundle (seeded random init, export verification off), exported once per session; treat as read-only."""
    return make_tiny_bundle()
