"""The per-clip contract: the one place that says what goes into and out of the graph.

Every part that builds, runs or checks the per-clip graph (the PyTorch model, the
exporter, the bundle, the precision builds, every backend, the clip loop, the
benchmarks) reads its names, shapes, dtypes, the state carry and the clip rule from
here (docs/contract.md, "I/O table"). Pure Python + numpy: importing it costs nothing.

Shapes are symbolic: B streams, T clip length, H x W canvas, N queries, C hidden dim,
K classes, S mask side (2 x pooler resolution: 28 for every preset). Every graph is
batched (docs/contract.md, "Batched graph"): B leads every input and output, stays
symbolic in the ONNX graph and in a bundle's table, and each of the B streams is computed
as if it ran alone; one video is B = 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from efficientvis_trt.errors import EvisError

# ---- the I/O table --------------------------------------------------------------------
BATCH_DIM = "B"  # the leading, dynamic stream dimension of every input and output
# What a bundle's metadata says about it (written by the bundle's writer, checked on open).
BATCH_METADATA: dict[str, Any] = {
    "dim": BATCH_DIM,
    "dynamic": True,
    "streams": "independent: each of the B streams is computed as if it ran alone (B = 1 for one video)",
}
IO_TABLE: tuple[dict[str, Any], ...] = (
    {
        "name": "frames",
        "dir": "in",
        "shape": ("B", "T", "H", "W", 3),
        "dtype": "uint8",
        "meaning": "BGR frames as OpenCV decodes them, already letterboxed; "
        "normalisation and layout change happen inside the graph",
    },
    {
        "name": "query_in",
        "dir": "in",
        "shape": ("B", "N", "C"),
        "dtype": "float32",
        "meaning": "tracklet queries carried from the previous clip",
    },
    {
        "name": "boxes_in",
        "dir": "in",
        "shape": ("B", "N", 4),
        "dtype": "float32",
        "meaning": "proposal boxes for this clip (normalised cxcywh)",
    },
    {
        "name": "logits",
        "dir": "out",
        "shape": ("B", "N", "T", "K"),
        "dtype": "float32",
        "meaning": "class logits per instance and frame",
    },
    {
        "name": "boxes",
        "dir": "out",
        "shape": ("B", "N", "T", 4),
        "dtype": "float32",
        "meaning": "refined boxes (normalised cxcywh)",
    },
    {
        "name": "mask_logits",
        "dir": "out",
        "shape": ("B", "N", "T", "S", "S"),
        "dtype": "float32",
        "meaning": "mask logits in the frame of the output box",
    },
    {
        "name": "query_out",
        "dir": "out",
        "shape": ("B", "N", "C"),
        "dtype": "float32",
        "meaning": "queries for the next clip",
    },
    {
        "name": "boxes_out",
        "dir": "out",
        "shape": ("B", "N", 4),
        "dtype": "float32",
        "meaning": "proposals for the next clip",
    },
)
INPUT_NAMES: tuple[str, ...] = tuple(r["name"] for r in IO_TABLE if r["dir"] == "in")
OUTPUT_NAMES: tuple[str, ...] = tuple(r["name"] for r in IO_TABLE if r["dir"] == "out")
DTYPES: dict[str, np.dtype] = {r["name"]: np.dtype(r["dtype"]) for r in IO_TABLE}
INPUT_DTYPES: dict[str, np.dtype] = {n: DTYPES[n] for n in INPUT_NAMES}

# State carry (docs/contract.md, "State carry"): (output of clip k, input of clip k + 1).
STATE_PAIRS: tuple[tuple[str, str], ...] = (("query_out", "query_in"), ("boxes_out", "boxes_in"))
STATE_OUTPUTS: tuple[str, ...] = tuple(o for o, _ in STATE_PAIRS)
# Outputs with a time axis (axis 2 of the graph's, axis 1 of one stream's): what the runtime keeps of a clip.
PER_FRAME_OUTPUTS: tuple[str, ...] = tuple(r["name"] for r in IO_TABLE if r["dir"] == "out" and "T" in r["shape"])


def io_dims(
    clip_len: int, input_hw: Sequence[int], num_queries: int, hidden_dim: int, num_classes: int, mask_size: int = 28
) -> dict[str, int]:
    """The values of the table's symbols for one graph."""
    return {
        "T": int(clip_len),
        "H": int(input_hw[0]),
        "W": int(input_hw[1]),
        "N": int(num_queries),
        "C": int(hidden_dim),
        "K": int(num_classes),
        "S": int(mask_size),
    }


def model_io_dims(model_config: Any, clip_len: int, input_hw: Sequence[int]) -> dict[str, int]:
    """`io_dims` of a `config.ModelConfig` exported with graph clip length `clip_len` and canvas `input_hw`."""
    m = model_config
    return io_dims(clip_len, input_hw, m.num_queries, m.hidden_dim, m.num_classes, 2 * m.pooler.resolution)


def io_table(dims: Mapping[str, int]) -> list[dict[str, Any]]:
    """IO_TABLE with concrete shapes (what metadata.json stores and the graph must have); B stays "B"."""
    dims = {BATCH_DIM: BATCH_DIM, **dims}
    missing = sorted({d for r in IO_TABLE for d in r["shape"] if isinstance(d, str)} - set(dims))
    if missing:
        raise EvisError(f"I/O table dimension(s) {', '.join(missing)} not given")
    return [{**row, "shape": [dims[d] if isinstance(d, str) else d for d in row["shape"]]} for row in IO_TABLE]


# ---- the clip step ---------------------------------------------------------------------
@dataclass(frozen=True)
class TrackletState:
    """What clip k hands clip k + 1 (docs/contract.md, "State carry"): one value, so it can be followed.

    `queries` [B, N, C] and `boxes` [B, N, 4] (without B for an unbatched call or one stream's
    slot) are whatever the runner takes and gives: numpy, torch, or a backend's device values,
    so a backend can keep the state on its device between clips.
    """

    queries: Any
    boxes: Any

    @classmethod
    def initial(cls, init_state: Sequence[Any], streams: int | None = 1) -> TrackletState:
        """The clip-0 state (one stream's (query [N, C], boxes [N, 4])) for `streams` streams, float32 numpy.

        `streams=None`: one stream without the B dimension. Always fresh copies: nobody shares them.
        """
        if streams is None:
            return cls(*(np.array(a, np.float32) for a in init_state))
        if streams < 1:
            raise EvisError(f"a state needs at least 1 stream, got {streams}")
        return cls(*(np.repeat(np.asarray(a, np.float32)[None], streams, axis=0) for a in init_state))

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, Any]) -> TrackletState:
        """The state a clip's outputs carry into the next clip."""
        return cls(*(outputs[out] for out, _ in STATE_PAIRS))  # fields in STATE_PAIRS order

    def inputs(self) -> dict[str, Any]:
        """The state as the next clip's named inputs."""
        return {inp: value for (_, inp), value in zip(STATE_PAIRS, (self.queries, self.boxes))}

    def map(self, fn: Callable[[Any], Any]) -> TrackletState:
        """`fn` applied to both tensors (to host, to torch, a dtype)."""
        return TrackletState(fn(self.queries), fn(self.boxes))

    @classmethod
    def stack(cls, states: Sequence[TrackletState]) -> TrackletState:
        """Streams' unbatched states as one batch (stream i in slot i)."""
        return cls(np.stack([s.queries for s in states]), np.stack([s.boxes for s in states]))

    def unstack(self) -> list[TrackletState]:
        """Each stream's slot as its own unbatched state (numpy copies: a slot outlives the batch)."""
        return [TrackletState(np.array(q), np.array(b)) for q, b in zip(self.queries, self.boxes)]


ClipRunner = Callable[[dict[str, Any]], Mapping[str, Any]]  # named inputs -> named outputs


def step(run: ClipRunner, frames: Any, state: TrackletState) -> tuple[dict[str, Any], TrackletState]:
    """One clip: `frames` and `state` through `run`; returns (every output `run` gave, the next clip's state).

    `run` is a backend's `run`, a session's, or the model's `forward_clip(**inputs)`. This is the only
    place that pairs the state's outputs with the inputs they feed, so every clip loop carries it alike.
    """
    outputs = dict(run({"frames": frames, **state.inputs()}))
    return outputs, TrackletState.from_outputs(outputs)


# Bounds of the per-clip graph, checked before any work: T frames of H x W x 3 uint8 in, and
# activations that grow with T x H x W (a 100000-frame clip would ask for ~14 GB).
MIN_CLIP_LEN = 2  # temporal attention and the dynamic conv need frames
MAX_CLIP_LEN = 64
MAX_INPUT_SIDE = 2048  # pixels per canvas side; sides are multiples of 32 (the FPN stride)


def check_clip_len(clip_len: Any, what: str = "clip length") -> int:
    """`clip_len` if it is an integer in [MIN_CLIP_LEN, MAX_CLIP_LEN], else one line naming the limit."""
    if not isinstance(clip_len, int) or isinstance(clip_len, bool):
        raise EvisError(f"{what} must be an integer, got {clip_len!r}")
    if clip_len < MIN_CLIP_LEN:
        raise EvisError(
            f"{what} {clip_len} must be at least {MIN_CLIP_LEN} (temporal attention and dynamic conv need frames)"
        )
    if clip_len > MAX_CLIP_LEN:
        raise EvisError(f"{what} {clip_len} is above the limit of {MAX_CLIP_LEN} frames per clip")
    return clip_len


def check_input_size(hw: Any, what: str = "input size") -> tuple[int, int]:
    """(H, W) if both are integers, multiples of 32, in [32, MAX_INPUT_SIDE]; else one line naming the limit."""
    if (
        not isinstance(hw, (list, tuple))
        or len(hw) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in hw)
    ):
        raise EvisError(f"{what} must be [H, W] (two integers), got {hw!r}")
    h, w = hw
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise EvisError(f"{what} {h}x{w} must be positive multiples of 32 (the FPN stride)")
    if max(h, w) > MAX_INPUT_SIDE:
        raise EvisError(f"{what} {h}x{w} is above the limit of {MAX_INPUT_SIDE} pixels per side")
    return int(h), int(w)


# ---- precisions and backends ---------------------------------------------------------------
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")  # the bundle's graphs
# What a backend may be asked to run: the graph precisions plus bf16, which is no graph of its own but
# the fp32 graph at OpenVINO's bf16 inference precision (docs/openvino.md, "Precisions"). Row order too.
RUN_PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")
# The backend vocabulary: short names on every command line; `Backend.name` is the long form.
BACKENDS: tuple[str, ...] = ("torch", "ort", "trt", "openvino")
BUILD_BACKENDS: tuple[str, ...] = ("ort", "trt")  # the ones `evis build` builds for
BACKEND_LONG_NAMES: dict[str, str] = {"torch": "torch", "ort": "onnxruntime", "trt": "tensorrt", "openvino": "openvino"}
BACKEND_ALIASES: dict[str, str] = {
    **BACKEND_LONG_NAMES,
    **{long: long for long in BACKEND_LONG_NAMES.values()},
    "pytorch": "torch",
}
BACKEND_CHOICES: tuple[str, ...] = ("auto", *BACKENDS, "onnxruntime", "tensorrt")  # what --backend accepts


def check_precision(precision: str, what: str = "precision") -> str:
    """`precision` if it is one of PRECISIONS, else one line naming them."""
    if precision not in PRECISIONS:
        raise EvisError(f"unknown {what} {precision!r}: use one of {', '.join(PRECISIONS)}")
    return precision


def check_run_precision(precision: str) -> str:
    """`precision` if a backend may be asked to run it (RUN_PRECISIONS), else one line naming them."""
    if precision not in RUN_PRECISIONS:
        raise EvisError(f"unknown precision {precision!r}: use one of {', '.join(RUN_PRECISIONS)}")
    return precision


def canonical_backend(name: str) -> str:
    """'ort' -> 'onnxruntime', 'trt' -> 'tensorrt'; 'auto' stays; anything else is one line."""
    if name == "auto":
        return name
    try:
        return BACKEND_ALIASES[name]
    except KeyError:
        raise EvisError(
            f"unknown backend {name!r}: use auto, torch, ort (onnxruntime), trt (tensorrt) or openvino"
        ) from None


# ---- clips ---------------------------------------------------------------------------------
FrameT = TypeVar("FrameT")


def pad_clip(frames: Sequence[FrameT], clip_len: int) -> tuple[list[FrameT], int]:
    """(frames padded to `clip_len` by repeating the last one, number of real frames).

    docs/contract.md, "Padding the last clip": the graph's T is fixed, so a short clip
    repeats its last frame (the model sees a still scene, not a black one) and every
    consumer drops the outputs of the padded frames (`drop_padded`).
    """
    if clip_len < 1:
        raise EvisError(f"clip length must be >= 1, got {clip_len}")
    if not len(frames):
        raise EvisError("an empty clip cannot be padded")
    if len(frames) > clip_len:
        raise EvisError(f"a clip of {len(frames)} frames is longer than the clip length {clip_len}")
    real = len(frames)
    return list(frames) + [frames[-1]] * (clip_len - real), real


def split_into_clips(frames: Iterable[FrameT], clip_len: int) -> Iterator[tuple[list[FrameT], int]]:
    """Non-overlapping clips of `clip_len` frames, streamed; yields (frames, number of real frames).

    Only the last clip can be short; it is padded by `pad_clip`. No frames, no clips.
    """
    if clip_len < 1:
        raise EvisError(f"clip length must be >= 1, got {clip_len}")
    buf: list[FrameT] = []
    for frame in frames:
        buf.append(frame)
        if len(buf) == clip_len:
            yield buf, clip_len
            buf = []
    if buf:
        yield pad_clip(buf, clip_len)


def drop_padded(outputs: Mapping[str, np.ndarray], real: int) -> dict[str, np.ndarray]:
    """One stream's per-frame outputs of a clip (B dimension taken off) with the padded frames cut (time is axis 1)."""
    return {k: outputs[k][:, :real] for k in PER_FRAME_OUTPUTS}


def letterbox_clip(frames: Sequence[np.ndarray], input_hw: Sequence[int], clip_len: int) -> tuple[np.ndarray, int]:
    """Letterbox frames onto the graph's canvas and pad to `clip_len`: ([T, H, W, 3] uint8, real frames).

    Each frame gets the letterbox of its own size, so a clip cut from a folder of mixed
    sizes still sits on the canvas as `video.Letterbox` places it.
    """
    from efficientvis_trt.video import Letterbox

    if not len(frames):
        raise EvisError("an empty clip cannot be letterboxed")
    boxes: dict[tuple[int, int], Letterbox] = {}
    canvas = []
    for f in frames:
        hw = tuple(f.shape[:2])
        if hw not in boxes:
            boxes[hw] = Letterbox(hw, tuple(input_hw))
        canvas.append(boxes[hw].apply(f))
    padded, real = pad_clip(canvas, clip_len)
    return np.ascontiguousarray(np.stack(padded)), real


__all__ = [
    "BATCH_DIM",
    "BATCH_METADATA",
    "IO_TABLE",
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "DTYPES",
    "INPUT_DTYPES",
    "STATE_PAIRS",
    "STATE_OUTPUTS",
    "PER_FRAME_OUTPUTS",
    "TrackletState",
    "ClipRunner",
    "step",
    "io_dims",
    "model_io_dims",
    "io_table",
    "MIN_CLIP_LEN",
    "MAX_CLIP_LEN",
    "MAX_INPUT_SIDE",
    "check_clip_len",
    "check_input_size",
    "PRECISIONS",
    "RUN_PRECISIONS",
    "BACKENDS",
    "BUILD_BACKENDS",
    "BACKEND_LONG_NAMES",
    "BACKEND_ALIASES",
    "BACKEND_CHOICES",
    "check_precision",
    "check_run_precision",
    "canonical_backend",
    "pad_clip",
    "split_into_clips",
    "drop_padded",
    "letterbox_clip",
]
