"""Whole-video inference: frames -> letterbox -> clips (last one padded) -> backend with carried state -> tracks.

The same loop serves every backend; the tracklet state lives only in the named tensors
`query_in`/`boxes_in` fed back from `query_out`/`boxes_out`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from efficientvis_trt.errors import EvisError
from efficientvis_trt.runtime.postprocess import Track, TrackAccumulator, VideoResult
from efficientvis_trt.video import Letterbox, iter_frames


def iter_clips(frames: Iterable[np.ndarray], clip_len: int) -> Iterator[tuple[list[np.ndarray], int]]:
    """Group frames into clips of `clip_len`; the last is padded by repeating its last frame.

    Yields (frames, number of real frames).
    """
    buf: list[np.ndarray] = []
    for frame in frames:
        buf.append(frame)
        if len(buf) == clip_len:
            yield buf, clip_len
            buf = []
    if buf:
        valid = len(buf)
        yield buf + [buf[-1]] * (clip_len - valid), valid


@dataclass
class ClipOutput:
    """One finished clip of a stream: raw outputs for its real frames and the model time."""

    index: int
    valid: int
    outputs: dict[str, np.ndarray]
    latency: float


class Predictor:
    """Run a model over whole videos, clip by clip.

    `source` is an EfficientVIS module or a checkpoint path (PyTorch backend).
    """

    def __init__(self, source, backend: str = "torch", precision: str = "fp32", device: str = "cpu",
                 top_k: int = 10, score_threshold: float = 0.0, mask_threshold: float = 0.5):
        self.top_k, self.score_threshold, self.mask_threshold = top_k, score_threshold, mask_threshold
        self.backend, self.clip_len, self.input_hw, self.init_state, self.class_names = _resolve(
            source, backend, precision, device)
        self.reset()

    # ---- state ----------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new video: the learned clip-0 state."""
        query, boxes = self.init_state
        self.state = {"query_in": np.asarray(query, np.float32), "boxes_in": np.asarray(boxes, np.float32)}

    def run_clip(self, canvas_frames: list[np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        """One letterboxed clip through the backend; carries the state. Returns (outputs, seconds)."""
        inputs = {"frames": np.stack(canvas_frames), **self.state}
        start = time.perf_counter()
        out = self.backend.run(inputs)
        latency = time.perf_counter() - start
        self.state = {"query_in": out["query_out"], "boxes_in": out["boxes_out"]}
        return out, latency

    # ---- whole video ----------------------------------------------------------------
    def predict_video(self, path: str | os.PathLike, max_frames: int | None = None) -> VideoResult:
        self.reset()
        timings = {"decode": 0.0, "preprocess": 0.0, "model": 0.0, "postprocess": 0.0}
        latencies: list[float] = []
        letterbox: Letterbox | None = None
        acc: TrackAccumulator | None = None
        frames = iter_frames(path, max_frames)
        canvas: list[np.ndarray] = []

        def timed_frames():
            nonlocal letterbox
            while True:
                t0 = time.perf_counter()
                try:
                    frame = next(frames)
                except StopIteration:
                    return
                t1 = time.perf_counter()
                if letterbox is None:
                    letterbox = Letterbox(frame.shape[:2], self.input_hw)
                out = letterbox.apply(frame)
                timings["decode"] += t1 - t0
                timings["preprocess"] += time.perf_counter() - t1
                yield out

        for canvas, valid in iter_clips(timed_frames(), self.clip_len):
            out, latency = self.run_clip(canvas)
            latencies.append(latency)
            timings["model"] += latency
            t0 = time.perf_counter()
            if acc is None:
                acc = TrackAccumulator(letterbox, self.mask_threshold)
            acc.add_clip(out, valid)
            timings["postprocess"] += time.perf_counter() - t0
        assert acc is not None and letterbox is not None  # iter_frames raises on a video with no frames
        t0 = time.perf_counter()
        tracks = acc.finish(self.top_k, self.score_threshold)
        timings["postprocess"] += time.perf_counter() - t0
        h, w = letterbox.src_hw
        return VideoResult(str(path), h, w, acc.num_frames, tracks, timings, latencies)

    def feed(self, frames: Iterable[np.ndarray]) -> Iterator[ClipOutput]:
        """Streaming: letterboxed clips of `frames` as they fill (no padding until the stream ends)."""
        letterbox = None
        for index, (clip, valid) in enumerate(iter_clips(frames, self.clip_len)):
            if letterbox is None:
                letterbox = Letterbox(clip[0].shape[:2], self.input_hw)
            out, latency = self.run_clip([letterbox.apply(f) for f in clip])
            yield ClipOutput(index, valid, {k: v[:, :valid] if k in ("logits", "boxes", "mask_logits") else v
                                            for k, v in out.items()}, latency)


def _resolve(source, backend: str, precision: str, device: str):
    """-> (backend object, clip_len, input_hw, init_state, class_names)."""
    from efficientvis_trt.model.checkpoint import default_class_names, load_checkpoint
    from efficientvis_trt.runtime.backends import TorchBackend

    if backend != "torch":
        raise EvisError(f"backend {backend!r} needs a bundle; see `evis infer`")
    if isinstance(source, (str, os.PathLike)):
        model, payload = load_checkpoint(source)
        names = payload["class_names"]
    else:
        model, names = source, default_class_names(source.config.model.num_classes)
    m = model.config.model
    query, boxes = model.initial_state()
    return (TorchBackend(model, device, precision), m.clip_len, tuple(m.input_size),
            (query.numpy(), boxes.numpy()), names)


__all__ = ["Predictor", "iter_clips", "Track", "VideoResult", "ClipOutput"]
