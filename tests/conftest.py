"""Shared fixtures: tiny models and real video frames, cached per session to keep the suite fast."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(2)


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
