"""Where frames come from: a video file, a folder of frames, a camera or a stream URL.

A file source is checked when it is opened (missing / empty / undecodable -> EvisError
before any inference) and again when it ends: a file that decodes fewer frames than its
container announces is truncated, which is an error rather than a silently short result.
A live source has no length and cannot be decoded twice.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from efficientvis_trt.errors import EvisError

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
# Containers whose frame count can be an estimate (from duration x fps): allow a little slack.
_TRUNCATION_SLACK = 0.02


def is_live_spec(spec: str | os.PathLike | int) -> bool:
    """A camera index (`0`) or a stream URL (`rtsp://...`); an existing file or folder named `0` is a path."""
    if isinstance(spec, int):
        return True
    text = str(spec)
    if text.isdigit() and os.path.exists(text):
        return False
    return text.isdigit() or re.match(rf"^({'|'.join(LIVE_SCHEMES)})://", text, re.IGNORECASE) is not None


@dataclass
class FrameSource:
    """One input: `frames()` yields BGR uint8 frames (a fresh decoder per call for files)."""

    spec: str
    live: bool
    expected_frames: int | None = None  # container's count for files (None when unknown)
    fps: float = 0.0
    size: tuple[int, int] | None = None  # (height, width) when known up front

    @property
    def name(self) -> str:
        return self.spec if self.live else Path(self.spec).name

    @property
    def stem(self) -> str:
        if self.live and self.spec.isdigit():
            return f"camera{self.spec}"
        if self.live and is_live_spec(self.spec):
            return "stream_" + re.sub(r"[^A-Za-z0-9]+", "_", self.spec.split("://", 1)[-1]).strip("_")[:60]
        p = Path(self.spec)
        return p.stem if p.suffix else p.name

    def frames(self, max_frames: int | None = None) -> Iterator[np.ndarray]:
        if self.live:
            yield from _iter_capture(self.spec, max_frames)
            return
        from efficientvis_trt.video import iter_frames

        count = 0
        for frame in iter_frames(self.spec, max_frames):
            count += 1
            yield frame
        expected = self.expected_frames or 0
        wanted = expected if max_frames is None else min(expected, max_frames)
        if wanted and count < wanted * (1.0 - _TRUNCATION_SLACK) - 1:
            raise EvisError(f"video is truncated or corrupt: decoded {count} of {expected} frames: {self.spec}")


def open_source(spec: str | os.PathLike | int, live: bool | None = None) -> FrameSource:
    """Check and describe one input. `live=True` forces the live path (e.g. a file played as a stream)."""
    if live is None:
        live = is_live_spec(spec)
    text = str(spec)
    if live:
        if not (is_live_spec(text) or os.path.isfile(text)):
            raise EvisError(f"live source not found: {text} (use a camera index, a stream URL or a video file)")
        return FrameSource(text, True)
    from efficientvis_trt.video import frame_files, video_info

    if os.path.isdir(text):
        files = frame_files(text)
        return FrameSource(text, False, expected_frames=len(files))
    info = video_info(text)  # missing / empty / undecodable -> EvisError
    size = (info.height, info.width) if info.height > 0 and info.width > 0 else None
    return FrameSource(text, False, expected_frames=info.num_frames or None, fps=info.fps, size=size)


def _iter_capture(spec: str, max_frames: int | None) -> Iterator[np.ndarray]:
    """Frames from a camera index, a URL or a file, read as a stream (no length, no second pass)."""
    import cv2

    from efficientvis_trt.video import to_bgr

    target: int | str = int(spec) if spec.isdigit() else spec
    cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        kind = "camera" if isinstance(target, int) else "stream"
        raise EvisError(f"cannot open {kind} {spec}")
    count = 0
    try:
        while max_frames is None or count < max_frames:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            count += 1
            yield to_bgr(frame)
    finally:
        cap.release()
    if count == 0:
        raise EvisError(f"live source {spec} delivered no frames")


__all__ = ["FrameSource", "open_source", "is_live_spec"]
