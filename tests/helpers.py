"""Helpers shared by test modules (tests import this, never each other)."""

from __future__ import annotations


def write_video(path, frames, fps=10, fourcc="mp4v", is_color=True, opencv_mjpeg=False):
    """Write frames with OpenCV. FFmpeg's writers round odd sizes down to even; OpenCV's own MJPEG does not."""
    import cv2

    h, w = frames[0].shape[:2]
    if opencv_mjpeg:
        writer = cv2.VideoWriter(
            str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h), is_color
        )
    else:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h), is_color)
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path
