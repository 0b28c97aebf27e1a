"""Many videos at once through the batched graph: one state slot per stream, continuous batching.

Up to K streams are active; each has its own decoder thread (a `VideoRun` producing
letterboxed clips), its own tracklet state (query [N, C], boxes [N, 4] on the host) and
its own `TrackAccumulator`. Every model call takes the next clip of every active stream
that has one, stacks them into a batch (B = number of such streams, at most K), runs
the graph once and hands each stream its slot of the outputs; slot i of the carried
`TrackletState` becomes stream i's state for its next clip. When a video ends its slot is
refilled by the next video at the following step (continuous batching), so a short
video never waits for a long one, and every stream's numbers are those of running it
alone (the graph treats the B streams independently; docs/contract.md, "Batched graph").

Which streams a step takes: every active file stream must have its next clip decoded
(files advance together, so batches stay full); a live stream joins whenever a clip of
it is ready, so a camera never stalls the files and the files never stall a camera.

The three stages are the single-stream ones (`pipeline.ThreadedClipLoop`): the
scheduler below is its producer (a batch per step), the model runs in the caller's
thread, and one post-processing thread runs each stream's `VideoRun._post` in order.
See docs/multi-stream.md.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from efficientvis_trt.contract import PER_FRAME_OUTPUTS, TrackletState
from efficientvis_trt.errors import EvisError
from efficientvis_trt.runtime.pipeline import END, Failure, ThreadedClipLoop, put_until_stopped
from efficientvis_trt.runtime.postprocess import VideoResult
from efficientvis_trt.runtime.predictor import ClipJob, ClipResult, Predictor, VideoRun
from efficientvis_trt.runtime.sources import FrameSource, open_source
from efficientvis_trt.timing import fps

_POLL_S = 0.002


class _Stream:
    """One video in a slot: its decoder thread, its state slot and its `VideoRun` (post-processing, tracks)."""

    def __init__(self, index: int, run: VideoRun, init_state: tuple[np.ndarray, np.ndarray], queue_size: int):
        self.index = index
        self.run = run
        self.live = bool(run.source is not None and run.source.live)
        self.state = TrackletState.initial(init_state, streams=None)
        self.jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self.head: Any = None  # the next decoded item (ClipJob, END or Failure) not yet scheduled
        self.stop = threading.Event()
        self.started: float | None = None  # when its first clip reached the model (its FPS counts from there)
        self.overlay = None
        self.thread = threading.Thread(target=self._decode, name=f"evis-stream{index}-decode", daemon=True)

    def _put(self, item: Any) -> bool:
        return put_until_stopped(self.jobs, item, self.stop)

    def _decode(self) -> None:
        jobs = None
        try:
            jobs = self.run._produce()
            for job in jobs:
                if not self._put(job):
                    return
            self._put(END)
        except BaseException as exc:
            self._put(Failure(exc))
        finally:
            if jobs is not None:
                with contextlib.suppress(Exception):
                    jobs.close()  # releases the decoder even when stopped early

    def poll(self) -> Any:
        """The next decoded item without waiting (None when the decoder has not got one yet)."""
        if self.head is None:
            with contextlib.suppress(queue.Empty):
                self.head = self.jobs.get_nowait()
        return self.head

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2.0)  # a live read may block; the thread is a daemon


@dataclass
class _Step:
    """One model call: the clips of the streams it batches, and the streams whose input ended before it."""

    items: list[tuple[_Stream, ClipJob]]
    ended: list[_Stream]


@dataclass
class StreamClip:
    """A finished clip of stream `stream` (the video's index in the input order)."""

    stream: int
    name: str
    clip: ClipResult
    batch: int  # how many streams shared the model call


@dataclass
class StreamDone:
    """Stream `stream` ended: its whole-video result (no tracks for a live stream) and its own FPS."""

    stream: int
    name: str
    source: FrameSource | None
    result: VideoResult
    fps: float = field(default=0.0)


class MultiStreamRunner:
    """Run many inputs through one `Predictor`'s backend, up to `streams` at once (see the module docstring).

    `run()` yields `StreamClip` / `StreamDone` events as they happen; `predict_videos()`
    returns the whole-video results in input order. One run at a time per predictor.
    """

    def __init__(self, predictor: Predictor, streams: int):
        if int(streams) < 1:
            raise EvisError(f"--streams must be >= 1, got {streams}")
        self.p = predictor
        self.streams = int(streams)
        self.timings: dict[str, float] = {}  # of the last run: wall, model, steps, batched clips
        self.batch_sizes: list[int] = []

    # ---- the three stages --------------------------------------------------------------
    def _open(self, index: int, spec: Any, max_frames: int | None, live: bool | None, overlay: Any) -> _Stream:
        source = spec if isinstance(spec, FrameSource) else open_source(spec, live)
        keep_history = not source.live
        run = VideoRun(self.p, source, max_frames=max_frames, keep_history=keep_history, live=source.live, overlay=None)
        run._started = True
        stream = _Stream(index, run, self.p.init_state, self.p.queue_size)
        if overlay is not None and source.live:  # files get the final tracks afterwards (a second decoding pass)
            from efficientvis_trt.runtime.overlay import OverlayWriter

            run.overlay_path = overlay
            stream.overlay = OverlayWriter(overlay, source.fps, keep_on_interrupt=True)
            run._overlay = stream.overlay
        stream.thread.start()
        return stream

    def _schedule(
        self, specs: Sequence[Any], max_frames: int | None, live: bool | None, overlays: Sequence[Any], stop
    ) -> Iterator[_Step]:
        pending = list(range(len(specs)))
        active: list[_Stream] = []
        opened: list[_Stream] = []  # closed (decoders stopped) by this generator's end

        def refill() -> None:
            while pending and len(active) < self.streams:
                i = pending.pop(0)
                stream = self._open(i, specs[i], max_frames, live, overlays[i])
                active.append(stream)
                opened.append(stream)
                self._opened.append(stream)

        try:
            refill()
            while active:
                ended: list[_Stream] = []
                while not stop.is_set():
                    for s in list(active):
                        head = s.poll()
                        if isinstance(head, Failure):
                            raise head.exc
                        if head is END:  # its slot goes to the next input at once: batches stay full
                            active.remove(s)
                            ended.append(s)
                            refill()
                    heads = [s.head for s in active]
                    files_ready = all(h is not None for s, h in zip(active, heads) if not s.live)
                    if not active or (files_ready and any(h is not None for h in heads)):
                        break
                    time.sleep(_POLL_S)
                else:
                    return
                items = [(s, s.head) for s in active if s.head is not None]
                for s in active:
                    s.head = None  # taken (a live stream that had nothing ready stays empty)
                yield _Step(items, ended)
        finally:
            for s in opened:
                s.close()

    def _infer(self, step: _Step) -> tuple[_Step, list[dict[str, np.ndarray]], float]:
        if not step.items:
            return step, [], 0.0
        now = time.perf_counter()
        for s, _ in step.items:
            s.started = now if s.started is None else s.started
        frames = np.stack([job.canvas for _, job in step.items])
        state = TrackletState.stack([s.state for s, _ in step.items])
        out, carried, latency = self.p.run_batch(frames, state)
        per_stream = []
        for i, ((s, _), slot) in enumerate(zip(step.items, carried.unstack())):
            s.state = slot
            per_stream.append({k: out[k][i] for k in PER_FRAME_OUTPUTS})
            s.run.latencies.append(latency)
            s.run.timings["model"] += latency
        self.timings["model"] = self.timings.get("model", 0.0) + latency
        self.batch_sizes.append(len(step.items))
        return step, per_stream, latency

    def _post(self, item: tuple[_Step, list[dict[str, np.ndarray]], float]) -> list[StreamClip | StreamDone]:
        step, outs, latency = item
        events: list[StreamClip | StreamDone] = []
        for s in step.ended:
            wall = time.perf_counter() - (s.started or time.perf_counter())
            s.run.timings["wall"] = wall
            if s.overlay is not None:
                s.overlay.commit()
                s.overlay = None
            s.run._complete()
            result = s.run.result()
            events.append(StreamDone(s.index, s.run.name, s.run.source, result, fps(result.num_frames, wall)))
        for (s, job), out in zip(step.items, outs):
            clip = s.run._post((job, out, latency))
            events.append(StreamClip(s.index, s.run.name, clip, len(step.items)))
        return events

    # ---- running -----------------------------------------------------------------------
    def run(
        self,
        sources: Sequence[str | os.PathLike | int | FrameSource],
        max_frames: int | None = None,
        *,
        live: bool | None = None,
        overlays: Sequence[str | os.PathLike | None] | None = None,
    ) -> Iterator[StreamClip | StreamDone]:
        """Events of every input, as they happen. `overlays[i]` streams input i's overlay when it is live."""
        if not sources:
            raise EvisError("no inputs to run")
        overlays = list(overlays) if overlays is not None else [None] * len(sources)
        if len(overlays) != len(sources):
            raise EvisError(f"{len(overlays)} overlay paths for {len(sources)} inputs")
        if self.p._active is not None:
            raise EvisError(f"this Predictor is already running {self.p._active.name}: one run at a time")
        stop = threading.Event()
        self.p._active = self  # type: ignore[assignment]  # the backend belongs to this run now
        self.name = f"{len(sources)} streams"
        self.timings, self.batch_sizes = {}, []
        self._opened: list[_Stream] = []
        start = time.perf_counter()
        loop = ThreadedClipLoop(
            lambda: self._schedule(sources, max_frames, live, overlays, stop),
            self._infer,
            self._post,
            self.p.queue_size,
            name="evis-streams",
        )
        events_of_steps = iter(loop)
        failure: type[BaseException] | None = None
        try:
            for events in events_of_steps:
                yield from events
        except BaseException as exc:
            failure = type(exc)
            raise
        finally:
            stop.set()
            events_of_steps.close()  # stops the scheduler and the post thread now, not at garbage collection
            for s in self._opened:  # live overlays of streams that did not end: kept on Ctrl-C, else dropped
                if s.overlay is not None:
                    if failure is KeyboardInterrupt and s.overlay.frames_written > 0:
                        s.overlay.commit()
                    else:
                        s.overlay.abort()
            self.p._active = None
            self.timings["wall"] = time.perf_counter() - start

    def predict_videos(
        self,
        sources: Sequence[str | os.PathLike | FrameSource],
        max_frames: int | None = None,
        *,
        overlays: Sequence[str | os.PathLike | None] | None = None,
        on_event: Callable[[StreamClip | StreamDone], None] | None = None,
    ) -> list[VideoResult]:
        """Whole-video results in input order; `overlays[i]`: an mp4 of input i's final tracks."""
        from efficientvis_trt.runtime.overlay import render_tracks

        results: dict[int, VideoResult] = {}
        done: dict[int, StreamDone] = {}
        for event in self.run(sources, max_frames, live=False):
            if on_event is not None:
                on_event(event)
            if isinstance(event, StreamDone):
                results[event.stream] = event.result
                done[event.stream] = event
        for i, path in enumerate(overlays or []):
            if path is not None:
                t0 = time.perf_counter()
                render_tracks(done[i].source, results[i].tracks, path, max_frames)
                results[i].timings["overlay"] = time.perf_counter() - t0
        return [results[i] for i in range(len(sources))]


__all__ = ["MultiStreamRunner", "StreamClip", "StreamDone"]
