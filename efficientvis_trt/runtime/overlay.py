"""Overlay videos: each track's mask, box, class and score drawn in the track's own colour.

Written frame by frame as frames pass (never a buffered video) into a hidden temp file
beside the target, renamed over it only when complete: an interrupted or failed run
leaves no half-written mp4. OpenCV picks the container from the file extension, so the
temp name keeps `.mp4` at the end (io_utils.atomic_path's `.tmp` suffix would not work).
"""

from __future__ import annotations

import colorsys
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from efficientvis_trt.errors import EvisError
from efficientvis_trt.io_utils import file_mode, temp_prefix

FOURCC = "mp4v"


def track_colour(key: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per track key (golden-ratio hue steps)."""
    hue = (key * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_instances(
    frame: np.ndarray, items: Iterable[tuple[int, np.ndarray | None, Sequence[float], str]], alpha: float = 0.5
) -> np.ndarray:
    """Draw (colour key, binary mask or None, xyxy box, label) items onto a copy of `frame`."""
    import cv2

    out = frame.copy()
    h, w = out.shape[:2]
    scale = max(0.5, min(h, w) / 720.0)
    thick = max(1, int(round(2 * scale)))
    for key, mask, box, label in items:
        colour = track_colour(key)
        if mask is not None and mask.any():
            sel = mask.astype(bool)
            out[sel] = (out[sel] * (1.0 - alpha) + np.array(colour, np.float32) * alpha).astype(np.uint8)
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        x1, x2 = max(0, min(x1, w - 1)), max(0, min(x2, w - 1))
        y1, y2 = max(0, min(y1, h - 1)), max(0, min(y2, h - 1))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        if label:
            (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, thick)
            ty = y1 - 4 if y1 - th - base - 4 >= 0 else min(h - 1, y1 + th + 4)
            cv2.rectangle(out, (x1, ty - th - base), (min(w - 1, x1 + tw + 4), ty + base // 2), colour, -1)
            cv2.putText(
                out,
                label,
                (x1 + 2, ty - base // 2),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.5 * scale,
                (0, 0, 0),
                thick,
                cv2.LINE_AA,
            )
    return out


class OverlayWriter:
    """An mp4 written atomically: `write` frames, then `commit` (rename into place) or `abort`.

    As a context manager it commits on success and aborts on any exception, except a
    KeyboardInterrupt on a live stream (`keep_on_interrupt=True`), where what was
    recorded so far is a valid video worth keeping.
    """

    def __init__(self, path: str | os.PathLike, fps: float, keep_on_interrupt: bool = False):
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.keep_on_interrupt = keep_on_interrupt
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(self.path.stem), suffix=".tmp.mp4", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self._writer = None
        self._size: tuple[int, int] | None = None
        self.frames_written = 0
        self._done = False

    def write(self, frame: np.ndarray) -> None:
        import cv2

        h, w = frame.shape[:2]
        if self._writer is None:
            self._size = (w, h)
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*FOURCC), self.fps, (w, h))
            if not self._writer.isOpened():
                self.abort()
                raise EvisError(f"OpenCV cannot write an mp4 ({FOURCC}) video to {self.path.parent}")
        elif (w, h) != self._size:
            raise EvisError(f"overlay frame size changed mid-video ({w}x{h} vs {self._size[0]}x{self._size[1]})")
        self._writer.write(np.ascontiguousarray(frame))
        self.frames_written += 1

    def commit(self) -> Path:
        if self._done:
            return self.path
        self._done = True
        if self._writer is not None:
            self._writer.release()
        if self.frames_written == 0:
            self.tmp.unlink(missing_ok=True)
            raise EvisError(f"no frames to write into {self.path}")
        self._check_decodes()
        os.chmod(self.tmp, file_mode())  # a temp file is 0600; the output gets the usual mode
        os.replace(self.tmp, self.path)
        return self.path

    def _check_decodes(self) -> None:
        """OpenCV only warns when a write fails (full disk, file size limit): read the file back before it
        replaces anything, so an earlier good overlay is never swapped for a broken one."""
        import cv2

        cap = cv2.VideoCapture(str(self.tmp))
        try:
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
            ok = cap.isOpened() and count == self.frames_written and cap.read()[0]
        finally:
            cap.release()
        if not ok:
            self.tmp.unlink(missing_ok=True)
            raise EvisError(
                f"the overlay {self.path} could not be written completely ({self.frames_written} frames written, "
                f"{count} readable back: disk full or a file size limit?); nothing was replaced"
            )

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        if self._writer is not None:
            self._writer.release()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> OverlayWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None or (self.keep_on_interrupt and exc_type is KeyboardInterrupt and self.frames_written):
            self.commit()
        else:
            self.abort()


def render_tracks(source, tracks, out_path: str | os.PathLike, max_frames: int | None = None) -> Path:
    """Re-decode a video (path, frame folder or FrameSource) and draw the final tracks (what results.json holds).

    Streams: one decoded frame and one frame's masks at a time.
    """
    from efficientvis_trt.runtime.postprocess import decode_rle
    from efficientvis_trt.runtime.sources import FrameSource, open_source

    if not isinstance(source, FrameSource):
        source = open_source(source, live=False)

    with OverlayWriter(out_path, source.fps) as writer:
        for f, frame in enumerate(source.frames(max_frames)):
            items = []
            for rank, t in enumerate(tracks):
                if f >= len(t.segmentations):
                    continue
                mask = decode_rle(t.segmentations[f])
                if not mask.any():
                    continue
                items.append((rank, mask, t.boxes[f], f"{t.class_name or t.label} {t.score:.2f}"))
            writer.write(draw_instances(frame, items))
    return writer.path


__all__ = ["OverlayWriter", "draw_instances", "track_colour", "render_tracks"]
