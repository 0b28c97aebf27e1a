"""The threaded clip loop: decode + preprocess thread -> model (caller's thread) -> post-process thread.

Why three stages: decoding/letterboxing and mask pasting/RLE are CPU work that would
otherwise sit between two model calls; with bounded queues they overlap with inference
while memory stays bounded (at most `queue_size` clips wait between two stages, whatever
the video length). The model runs in the caller's thread, so a backend (CUDA context,
stream, CUDA graph) is only ever used from one thread.

Host work stays off the model's cores: while a loop runs, OpenCV's own thread pool is
limited to one thread (`opencv_single_threaded`), since its resize/warp would otherwise
spread over every core the model is using; the stages are already threads of their own.

Errors: a worker's exception object is handed over the queue and re-raised in the
caller's thread unchanged, so an EvisError stays the same one-line message. Stopping
(an error anywhere, or the consumer abandoning the iterator) sets one event that every
blocking put/get polls, so no thread waits forever.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

J = TypeVar("J")
M = TypeVar("M")
R = TypeVar("R")

_POLL_S = 0.005
# What a producer thread puts on its queue besides items (shared with `runtime.streams`).
END = object()  # the input has ended


class Failure:
    """The exception a producer thread met, handed to the consumer to raise there."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


def put_until_stopped(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Blocking put that gives up (False) once `stop` is set, so a stopped consumer never strands a producer."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


_CV_LOCK = threading.Lock()
_cv_loops = 0
_cv_saved = 0


@contextlib.contextmanager
def opencv_single_threaded() -> Iterator[None]:
    """OpenCV on one thread for the duration. Its setting is process-wide, so loops running at
    once are counted and the caller's setting comes back when the last one ends."""
    import cv2

    global _cv_loops, _cv_saved
    with _CV_LOCK:
        if _cv_loops == 0:
            _cv_saved = cv2.getNumThreads()
            cv2.setNumThreads(1)
        _cv_loops += 1
    try:
        yield
    finally:
        with _CV_LOCK:
            _cv_loops -= 1
            if _cv_loops == 0:
                cv2.setNumThreads(_cv_saved)


class ThreadedClipLoop(Generic[J, M, R]):
    """Iterate to run `post(infer(job))` for every job of `produce()`, in order, three stages overlapped.

    `produce` runs in a "decode" thread, `infer` in the iterating thread, `post` in a
    "post" thread; results are yielded in the iterating thread as they finish.
    """

    def __init__(
        self,
        produce: Callable[[], Iterable[J]],
        infer: Callable[[J], M],
        post: Callable[[M], R],
        queue_size: int = 2,
        name: str = "evis",
    ):
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.produce, self.infer, self.post = produce, infer, post
        self.queue_size = queue_size
        self.name = name

    def __iter__(self) -> Iterator[R]:
        with opencv_single_threaded():
            yield from self._run()

    def _run(self) -> Iterator[R]:
        stop = threading.Event()
        jobs: queue.Queue = queue.Queue(maxsize=self.queue_size)
        to_post: queue.Queue = queue.Queue(maxsize=self.queue_size)
        done: queue.Queue = queue.Queue()  # bounded in practice: drained after every model call

        def producer() -> None:
            source = None
            try:
                source = iter(self.produce())
                for job in source:
                    if not put_until_stopped(jobs, job, stop):
                        return
                put_until_stopped(jobs, END, stop)
            except BaseException as exc:
                put_until_stopped(jobs, Failure(exc), stop)
            finally:
                close = getattr(source, "close", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        close()  # releases the decoder even when stopped early

        def poster() -> None:
            try:
                while True:
                    try:
                        item = to_post.get(timeout=0.05)
                    except queue.Empty:
                        if stop.is_set():
                            return
                        continue
                    if item is END:
                        done.put(END)
                        return
                    done.put(self.post(item))
            except BaseException as exc:
                done.put(Failure(exc))
                stop.set()

        threads = [
            threading.Thread(target=producer, name=f"{self.name}-decode", daemon=True),
            threading.Thread(target=poster, name=f"{self.name}-post", daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            input_done = False
            while True:
                # Hand over every finished result first (low latency for live consumers).
                while True:
                    try:
                        res = done.get_nowait() if not input_done else done.get(timeout=0.05)
                    except queue.Empty as exc:
                        if input_done and not threads[1].is_alive() and done.empty():
                            raise RuntimeError("post-processing thread ended without a result") from exc
                        break
                    if res is END:
                        return
                    if isinstance(res, Failure):
                        raise res.exc
                    yield res
                if input_done:
                    continue
                try:
                    item = jobs.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if isinstance(item, Failure):
                    raise item.exc
                if item is END:
                    input_done = True
                    if not put_until_stopped(to_post, END, stop):
                        continue  # the post thread failed: its failure is waiting in `done`
                    continue
                out = self.infer(item)
                if not put_until_stopped(to_post, out, stop):
                    continue  # as above: the next drain raises the post thread's error
        finally:
            stop.set()
            decode, post = threads
            # The post thread checks `stop` between items: wait for it, so nothing touches the
            # accumulator or the overlay writer after the run ends. The decoder may be blocked in
            # a live capture read, so it gets a bounded wait (it is a daemon).
            post.join()
            decode.join(timeout=2.0)
