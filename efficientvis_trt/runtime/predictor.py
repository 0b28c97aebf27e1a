"""Whole-video inference: frames -> letterbox -> clips (last one padded) -> backend with carried state -> tracks.

The same loop serves every backend, `evis infer`, evaluation and benchmarks. The
tracklet state is one `contract.TrackletState`, carried by `contract.step`; the predictor
asks the backend to keep it on its device, so on a GPU the state never makes a host round
trip between clips. Every graph is batched
(docs/contract.md, "Batched graph"): one video is a batch of one stream (B = 1); many
videos at once go through `runtime.streams.MultiStreamRunner`, which drives a `Predictor`.

Decoding and post-processing run in their own threads (`pipeline.ThreadedClipLoop`),
overlapped with the model; memory is flat in video length because frames and masks
are streamed (tracks keep only boxes, scores and RLEs).
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from efficientvis_trt.contract import STATE_OUTPUTS, TrackletState, drop_padded, split_into_clips, step
from efficientvis_trt.errors import EvisError
from efficientvis_trt.resize import warm_up as warm_up_letterbox
from efficientvis_trt.runtime.pipeline import ThreadedClipLoop
from efficientvis_trt.runtime.postprocess import Instance, Track, TrackAccumulator, VideoResult
from efficientvis_trt.runtime.sources import FrameSource, open_source
from efficientvis_trt.video import Letterbox

STAGES = ("decode", "preprocess", "model", "postprocess")


@dataclass
class ClipJob:
    """A letterboxed clip on its way to the model (plus the original frames when an overlay is streamed)."""

    index: int
    first_frame: int
    valid: int
    canvas: Any  # [T, H, W, 3] uint8: numpy, or a torch tensor already on the model's device
    letterbox: Letterbox
    originals: list[np.ndarray] | None
    decoded_at: float  # perf_counter when the clip's last real frame was decoded


@dataclass
class ClipResult:
    """One finished clip of a stream, as a live consumer wants it.

    `instances[t]` lists, for real frame t of the clip, the current top-k (query, class)
    pairs with their box and mask in original-frame pixels; `score` is the running video
    score (mean class probability so far), so labels settle as the stream goes on.
    """

    index: int
    first_frame: int
    valid: int
    latency: float  # model seconds
    outputs: dict[str, np.ndarray]  # logits/boxes/mask_logits, real frames only
    instances: list[list[Instance]] = field(default_factory=list)
    end_to_end: float = 0.0  # seconds from the clip's last frame decoded to this result

    @property
    def frame_indices(self) -> range:
        return range(self.first_frame, self.first_frame + self.valid)


class Predictor:
    """Run a model over whole videos (or live streams), clip by clip.

    `source`: an exported bundle folder (or `Bundle`), a checkpoint `.pt`, or an
    EfficientVIS module. `backend`: auto | torch | ort | trt | openvino (auto: TensorRT if
    this GPU has an engine, else OpenVINO on a CPU where it is installed, else ONNX Runtime;
    a checkpoint/model always runs on torch).
    `device`: cpu | cuda | None (best available).
    `letterbox_on_device`: letterbox on the model's device (torch tensors, byte for byte the host's;
    docs/host-work.md, "On a GPU"); None: where the backend is torch on CUDA.
    """

    def __init__(
        self,
        source: Any,
        backend: str = "auto",
        precision: str = "fp32",
        device: str | None = None,
        *,
        top_k: int = 10,
        score_threshold: float = 0.0,
        mask_threshold: float = 0.5,
        score_frames: int | None = None,
        queue_size: int = 2,
        providers=None,
        cuda_graph: bool = False,
        threads: int | None = None,
        letterbox_on_device: bool | None = None,
    ):
        from efficientvis_trt.runtime.load import load_runtime

        if top_k < 1:
            raise EvisError(f"top-k must be >= 1, got {top_k}")
        if not 0.0 <= mask_threshold <= 1.0:
            raise EvisError(f"mask threshold must be in [0, 1], got {mask_threshold}")
        if score_frames is not None and score_frames < 1:
            raise EvisError(f"score frames must be >= 1 (or None for every frame), got {score_frames}")
        self.top_k, self.score_threshold, self.mask_threshold = top_k, score_threshold, mask_threshold
        self.score_frames = score_frames  # video score over the m best frames (docs/runtime.md, "Video scores")
        self.queue_size = queue_size
        rt = load_runtime(
            source, backend, precision, device, providers=providers, cuda_graph=cuda_graph, threads=threads
        )
        self.runtime = rt
        self.backend = rt.backend
        self.clip_len, self.input_hw, self.init_state = rt.clip_len, tuple(rt.input_hw), rt.init_state
        self.class_names = rt.class_names
        self.backend_reason = rt.reason
        self.precision = precision
        if letterbox_on_device is None:
            letterbox_on_device = self.backend.name == "torch" and self.backend.device == "cuda"
        elif letterbox_on_device and self.backend.name != "torch":
            raise EvisError(f"letterboxing on the device needs the torch backend, not {self.backend.name}")
        self.letterbox_device: str | None = str(self.backend.torch_device) if letterbox_on_device else None
        warm_up_letterbox()  # its compiled loops, before any video is timed
        self._active: VideoRun | None = None
        self.reset()

    # ---- state ----------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new video: the learned clip-0 state, as a batch of one stream ([1, N, C] / [1, N, 4])."""
        self.state: TrackletState = TrackletState.initial(self.init_state)

    def state_to_host(self) -> TrackletState:
        """The carried state of the one stream as numpy [N, C] / [N, 4] (a device-to-host copy)."""
        return self.state.map(lambda v: self.backend.to_host(v)[0])

    def run_clip(self, canvas_frames: Any) -> tuple[dict[str, np.ndarray], float]:
        """One letterboxed clip [T, H, W, 3] (an array, a list of frames, or a torch tensor on the model's
        device) through the backend as B = 1, carrying the state on the device.

        Returns (per-frame outputs without the B dimension, seconds).
        """
        frames = np.stack(canvas_frames) if isinstance(canvas_frames, (list, tuple)) else canvas_frames
        run = functools.partial(self.backend.run, keep_on_device=STATE_OUTPUTS)
        start = time.perf_counter()
        out, self.state = step(run, frames[None], self.state)
        latency = time.perf_counter() - start
        return {k: v[0] for k, v in out.items() if k not in STATE_OUTPUTS}, latency

    def run_batch(self, frames: np.ndarray, state: TrackletState) -> tuple[dict[str, np.ndarray], TrackletState, float]:
        """B streams' clips in one call: frames [B, T, H, W, 3], `state` [B, N, C] / [B, N, 4].

        Everything comes back to the host with its B dimension (the caller splits out each
        stream's slot). Returns (outputs, next state, seconds).
        """
        start = time.perf_counter()
        out, state = step(self.backend.run, frames, state)
        return out, state, time.perf_counter() - start

    # ---- streaming -------------------------------------------------------------------
    def stream(
        self,
        source: str | os.PathLike | int | FrameSource | Iterable[np.ndarray],
        *,
        max_frames: int | None = None,
        keep_history: bool = True,
        live: bool | None = None,
        overlay: str | os.PathLike | None = None,
    ) -> VideoRun:
        """A run over one input; iterate it for `ClipResult`s, then call `.result()`.

        `source` is a video file, a frame folder, a camera index / stream URL, a
        `FrameSource`, or any iterable of BGR frames. `overlay` streams an overlay video of
        the running tracks (for live inputs; files get the final tracks via `predict_video`).
        """
        return VideoRun(self, source, max_frames=max_frames, keep_history=keep_history, live=live, overlay=overlay)

    def feed(self, frames: Iterable[np.ndarray], keep_history: bool = False) -> Iterator[ClipResult]:
        """Streaming over in-memory/live frames: yields each clip's result as soon as it is post-processed.

        Clips fill as frames arrive; the last one is padded only when the iterable ends.
        """
        yield from self.stream(iter(frames), keep_history=keep_history)

    def predict_video(
        self,
        path: str | os.PathLike | FrameSource,
        max_frames: int | None = None,
        *,
        overlay: str | os.PathLike | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> VideoResult:
        """Whole video -> tracks (top-k (query, class) pairs by mean probability).

        `overlay`: write an mp4 of the final tracks (a second decoding pass, streamed).
        `progress(n)`: called with the number of frames each finished clip adds.
        """
        run = self.stream(path, max_frames=max_frames, keep_history=True, live=False)
        for clip in run:
            if progress is not None:
                progress(clip.valid)
        result = run.result()
        if overlay is not None:
            from efficientvis_trt.runtime.overlay import render_tracks

            t0 = time.perf_counter()
            render_tracks(run.source, result.tracks, overlay, max_frames)
            result.timings["overlay"] = time.perf_counter() - t0
        return result

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoRun:
    """One input through the threaded clip loop; see `Predictor.stream`."""

    def __init__(
        self,
        predictor: Predictor,
        source,
        *,
        max_frames: int | None,
        keep_history: bool,
        live: bool | None,
        overlay: str | os.PathLike | None,
    ):
        self.p = predictor
        if isinstance(source, FrameSource):
            self.source: FrameSource | None = source
            self._frames = lambda: source.frames(max_frames)
        elif isinstance(source, (str, os.PathLike, int)):
            self.source = open_source(source, live)
            self._frames = lambda: self.source.frames(max_frames)
        else:
            self.source = None
            it = iter(source)
            self._frames = lambda: it if max_frames is None else itertools.islice(it, max_frames)
        self.name = self.source.spec if self.source is not None else "<frames>"
        self.keep_history = keep_history
        self.overlay_path = Path(overlay) if overlay is not None else None
        self.timings = {k: 0.0 for k in STAGES}
        self.latencies: list[float] = []
        self.acc: TrackAccumulator | None = None
        self.letterbox: Letterbox | None = None
        self._overlay = None
        self._started = False
        self._finished = False

    # the three stages ------------------------------------------------------------------
    def _produce(self, device: str | None = None) -> Iterator[ClipJob]:
        """Decode, group into clips (docs/contract.md, "Padding the last clip") and letterbox each frame
        straight into its clip's array (no canvas per frame, no stacking); with `device`, copy the
        clip's frames there and letterbox them on it (`Letterbox.apply_torch`), where it can."""
        p, timings = self.p, self.timings
        keep_originals = self.overlay_path is not None
        frames = iter(self._frames())
        decoded_at = [0.0]  # perf_counter when the latest frame was decoded
        staging = None  # [T, H, W, 3] uint8 host tensor (pinned for CUDA) the frames go to the device from

        def timed_frames() -> Iterator[np.ndarray]:
            while True:
                t0 = time.perf_counter()
                try:
                    frame = next(frames)
                except StopIteration:
                    return
                decoded_at[0] = time.perf_counter()
                timings["decode"] += decoded_at[0] - t0
                yield frame

        first = 0
        try:
            for index, (chunk, valid) in enumerate(split_into_clips(timed_frames(), p.clip_len)):
                t0 = time.perf_counter()
                if self.letterbox is None:
                    self.letterbox = Letterbox(chunk[0].shape[:2], p.input_hw)
                    if device is not None and self.letterbox.on_device():
                        staging = self.letterbox.device_staging(p.clip_len, device)
                if staging is not None:
                    clip = self.letterbox.apply_staged(chunk, staging, device)
                else:
                    clip = np.empty((p.clip_len, *p.input_hw, 3), np.uint8)
                    for t, frame in enumerate(chunk):
                        self.letterbox.apply(frame, out=clip[t])
                timings["preprocess"] += time.perf_counter() - t0
                originals = list(chunk[:valid]) if keep_originals else None
                yield ClipJob(index, first, valid, clip, self.letterbox, originals, decoded_at[0])
                first += valid
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def _infer(self, job: ClipJob) -> tuple[ClipJob, dict[str, np.ndarray], float]:
        out, latency = self.p.run_clip(job.canvas)
        self.latencies.append(latency)
        self.timings["model"] += latency
        return job, out, latency

    def _post(self, item: tuple[ClipJob, dict[str, np.ndarray], float]) -> ClipResult:
        job, out, latency = item
        p = self.p
        t0 = time.perf_counter()
        if self.acc is None:
            self.acc = TrackAccumulator(
                job.letterbox, p.mask_threshold, self.keep_history, p.class_names, score_frames=p.score_frames
            )
        trimmed = drop_padded(out, job.valid)
        post = self.acc.add_clip(trimmed, job.valid)
        instances = self.acc.clip_instances(post, p.top_k, p.score_threshold)
        if self._overlay is not None and job.originals is not None:
            self._draw_live(job, instances)
        self.timings["postprocess"] += time.perf_counter() - t0
        return ClipResult(
            job.index, job.first_frame, job.valid, latency, trimmed, instances, time.perf_counter() - job.decoded_at
        )

    def _draw_live(self, job: ClipJob, instances: list[list[Instance]]) -> None:
        from efficientvis_trt.runtime.overlay import draw_instances
        from efficientvis_trt.runtime.postprocess import decode_rle

        for frame, frame_instances in zip(job.originals, instances):
            items = [
                (i.query_index, decode_rle(i.segmentation), i.box, f"{i.class_name} {i.score:.2f}")
                for i in frame_instances
            ]
            self._overlay.write(draw_instances(frame, items))

    # running ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[ClipResult]:
        if self._started:
            raise EvisError("a VideoRun can only be iterated once")
        if self.p._active is not None:
            raise EvisError(
                f"this Predictor is already running {self.p._active.name}: one video at a time "
                "(the carried state belongs to one stream); use a second Predictor"
            )
        self._started = True
        self.p._active = self
        self.p.reset()
        self._overlay = None
        if self.overlay_path is not None:
            from efficientvis_trt.runtime.overlay import OverlayWriter

            fps = self.source.fps if self.source is not None else 0.0
            self._overlay = OverlayWriter(self.overlay_path, fps, keep_on_interrupt=True)
        start = time.perf_counter()
        produce = functools.partial(self._produce, self.p.letterbox_device)
        loop = ThreadedClipLoop(produce, self._infer, self._post, self.p.queue_size)
        try:
            if self._overlay is not None:
                with self._overlay:
                    yield from loop
            else:
                yield from loop
        finally:
            self.timings["wall"] = time.perf_counter() - start
            self.p._active = None
        self._complete()

    def _complete(self) -> None:
        """The input ended: the run is finished (an input without a single frame is an error)."""
        if self.acc is None:
            raise EvisError(f"no frames in {self.name}")
        self._finished = True

    def result(self) -> VideoResult:
        """The whole-video result (after iterating; needs keep_history=True)."""
        if not self._started:
            for _ in self:
                pass
        if not self._finished or self.acc is None or self.letterbox is None:
            raise EvisError(f"the run over {self.name} did not finish")
        tracks: list[Track] = self.acc.finish(self.p.top_k, self.p.score_threshold) if self.keep_history else []
        h, w = self.letterbox.src_hw
        return VideoResult(self.name, h, w, self.acc.num_frames, tracks, dict(self.timings), list(self.latencies))


__all__ = ["Predictor", "VideoRun", "ClipResult", "Track", "VideoResult"]
