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
    """Draw (colour key, binary mask or None, xyxy box, label) items onto a copy of `frame`.

    A mask is blended only inside its bounding rectangle (one SIMD scan finds it), so the
    cost follows the objects' size, not the frame's.
    """
    import cv2

    out = frame.copy()
    h, w = out.shape[:2]
    scale = max(0.5, min(h, w) / 720.0)
    thick = max(1, int(round(2 * scale)))
    font = max(0.4, 0.5 * scale)  # legible on small frames too
    for key, mask, box, label in items:
        colour = track_colour(key)
        if mask is not None:
            _blend_mask(out, mask, colour, alpha)
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        x1, x2 = max(0, min(x1, w - 1)), max(0, min(x2, w - 1))
        y1, y2 = max(0, min(y1, h - 1)), max(0, min(y2, h - 1))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        if label:
            (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
            ty = y1 - 4 if y1 - th - base - 4 >= 0 else min(h - 1, y1 + th + 4)
            cv2.rectangle(out, (x1, ty - th - base), (min(w - 1, x1 + tw + 4), ty + base // 2), colour, -1)
            cv2.putText(
                out,
                label,
                (x1 + 2, ty - base // 2),
                cv2.FONT_HERSHEY_SIMPLEX,
                font,
                (0, 0, 0),
                thick,
                cv2.LINE_AA,
            )
    return out


def _blend_mask(out: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], alpha: float) -> None:
    """out = out * (1 - alpha) + colour * alpha where `mask` is set, in place, within the mask's bounding box
    (OpenCV for every step: numpy's masked copy and 3-channel broadcast fill are ten times slower)."""
    import cv2

    mask = np.ascontiguousarray(mask).view(np.uint8) if mask.dtype == np.bool_ else np.asarray(mask, np.uint8)
    x, y, bw, bh = cv2.boundingRect(mask)
    if bw == 0 or bh == 0:
        return
    region = out[y : y + bh, x : x + bw]
    paint = np.empty_like(region)
    cv2.rectangle(paint, (0, 0), (bw, bh), colour, -1)
    blended = cv2.addWeighted(region, 1.0 - alpha, paint, alpha, 0.0)
    written = cv2.copyTo(blended, np.ascontiguousarray(mask[y : y + bh, x : x + bw]), region)
    if written is not region and not np.shares_memory(written, region):  # OpenCV had to copy the view
        region[...] = written


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
    from efficientvis_trt.runtime.sources import FrameSource, open_source

    if not isinstance(source, FrameSource):
        source = open_source(source, live=False)

    with OverlayWriter(out_path, source.fps) as writer:
        for f, frame in enumerate(source.frames(max_frames)):
            writer.write(draw_tracks(frame, f, tracks))
    return writer.path


def draw_tracks(
    frame: np.ndarray, index: int, tracks, *, colour_by_label: bool = False, show_score: bool = True
) -> np.ndarray:
    """Frame `index` of a video with the final tracks drawn: coloured by rank (or by class, so that
    two panels of the same video agree), labelled with the class and the video score."""
    from efficientvis_trt.runtime.postprocess import decode_rle, rle_area

    items = []
    for rank, t in enumerate(tracks):
        if index >= len(t.segmentations) or rle_area(t.segmentations[index]) == 0:
            continue
        mask = decode_rle(t.segmentations[index])
        label = f"{t.class_name or t.label}" + (f" {t.score:.2f}" if show_score else "")
        items.append((t.label if colour_by_label else rank, mask, t.boxes[index], label))
    return draw_instances(frame, items)


BANNER_HEIGHT = 28


def titled(frame: np.ndarray, title: str) -> np.ndarray:
    """`frame` under a dark banner that carries `title` in white (never drawn over the picture)."""
    import cv2

    banner = np.full((BANNER_HEIGHT, frame.shape[1], 3), 32, np.uint8)
    cv2.putText(banner, title, (6, BANNER_HEIGHT - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([banner, frame])


def render_comparison(
    source, panels: Sequence[tuple[str, Sequence, bool]], out_path: str | os.PathLike, max_frames: int | None = None
) -> Path:
    """One video with several sets of tracks side by side, each panel under its title.

    `panels`: (title, tracks, show scores) each, e.g. ground truth (no scores) | prediction.
    Tracks are coloured by class in every panel, so the same colour means the same class.
    """
    from efficientvis_trt.runtime.sources import FrameSource, open_source

    if not isinstance(source, FrameSource):
        source = open_source(source, live=False)
    with OverlayWriter(out_path, source.fps) as writer:
        for f, frame in enumerate(source.frames(max_frames)):
            views = [
                titled(draw_tracks(frame, f, tracks, colour_by_label=True, show_score=scores), title)
                for title, tracks, scores in panels
            ]
            writer.write(np.hstack(views))
    return writer.path


__all__ = [
    "OverlayWriter",
    "draw_instances",
    "draw_tracks",
    "render_comparison",
    "render_tracks",
    "titled",
    "track_colour",
]
