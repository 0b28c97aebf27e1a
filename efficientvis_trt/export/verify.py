"""Export verification: PyTorch eager vs ONNX Runtime on real-video clips with carried state.

Both backends start from the bundle's clip-0 state and each carries its OWN state
(`contract.step`) into the next clip, so drift that compounds across clips is measured, as the
runtime will see it. ONNX Runtime runs several streams batched (B = `streams`, each the
clips in another order with its own state slot) against PyTorch one stream at a time, so
the check also proves that the batched graph keeps streams apart (docs/contract.md,
"Batched graph"). The clips are read through `efficientvis_trt.video` (letterboxed to the
graph's size), and the frame count is chosen so the last clip is padded by repeating its
last frame (docs/contract.md, "Padding the last clip"): every verification exercises the
padding path too.

Tolerances (fp32 vs fp32; the two differ only by kernel summation order, ~1e-7 relative
per op, compounded over M stages and the carried state). An output passes if
``max|ort - torch| <= atol + rtol * max|torch|``:

* logits, query_out, mask_logits: atol 1e-3, rtol 1e-3. Logits feed a sigmoid whose
  slope is <= 0.25, so 1e-3 is < 2.5e-4 in score, far below any ranking-relevant change;
  queries are LayerNorm outputs of order 1.
* boxes, boxes_out (normalised to the canvas): atol 1e-4, rtol 0: 1e-4 x 640 px is
  0.064 px, well inside a pixel. Boxes decide the RoIAlign level of the next stage and
  clip, so they are held tighter than the rest.

Measured on the presets these are 10-1000x above the observed errors (see the export's
report); a real export bug (wrong level rule, sampling, attribute, layout) is >= 1e-2.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from efficientvis_trt.contract import TrackletState, step
from efficientvis_trt.errors import EvisError

TOLERANCES: dict[str, tuple[float, float]] = {  # name -> (atol, rtol)
    "logits": (1e-3, 1e-3),
    "boxes": (1e-4, 0.0),
    "mask_logits": (1e-3, 1e-3),
    "query_out": (1e-3, 1e-3),
    "boxes_out": (1e-4, 0.0),
}
DEFAULT_VIDEO = "bikes.mp4"
# Streams batched in the ONNX Runtime pass: B > 1 checks that streams stay apart (docs/contract.md, "Batched graph").
VERIFY_STREAMS = 2


def load_clips(
    video: str | os.PathLike | None, clip_len: int, input_hw: tuple[int, int], num_clips: int
) -> tuple[list[tuple[np.ndarray, int]], dict[str, Any]]:
    """`num_clips` letterboxed clips of a real video; `num_clips * T - 1` frames so the last clip is padded."""
    from efficientvis_trt.contract import letterbox_clip, split_into_clips
    from efficientvis_trt.video import Letterbox, read_frames, sample_video

    if num_clips < 1:
        raise EvisError(f"verification needs at least 1 clip, got {num_clips}")
    path = Path(video) if video is not None else sample_video(DEFAULT_VIDEO)
    frames = read_frames(path, max_frames=num_clips * clip_len - 1)
    box = Letterbox(tuple(frames[0].shape[:2]), tuple(input_hw))
    clips = [letterbox_clip(chunk, input_hw, clip_len) for chunk, _ in split_into_clips(frames, clip_len)]
    info = {
        "video": path.name,
        "frames": len(frames),
        "clips": len(clips),
        "padded_frames": len(clips) * clip_len - len(frames),
        "letterbox": box.to_dict(),
    }
    return clips, info


def stream_clips(clips: Sequence[tuple[np.ndarray, int]], streams: int) -> list[list[tuple[np.ndarray, int]]]:
    """The clips as `streams` streams: stream j sees them rotated by j, so at every step each stream has
    a different clip (and its own state), and the padded clip comes at a different step in each."""
    if streams < 1:
        raise EvisError(f"verification needs at least 1 stream, got {streams}")
    n = len(clips)
    return [[clips[(i + j) % n] for i in range(n)] for j in range(streams)]


def run_torch(
    model, clips: Sequence[tuple[np.ndarray, int]], state: tuple[np.ndarray, np.ndarray], progress: bool = False
) -> list[dict[str, np.ndarray]]:
    """Eager PyTorch over one stream's clips (unbatched), carrying its own state."""
    import torch
    from tqdm import tqdm

    carried = TrackletState(*state).map(lambda a: torch.from_numpy(np.array(a)))
    outs = []
    with torch.inference_mode():
        for clip, _ in tqdm(clips, desc="verify: pytorch", unit="clip", disable=not progress, leave=False):
            out, carried = step(lambda inputs: model.forward_clip(**inputs), torch.from_numpy(clip), carried)
            outs.append({k: v.numpy().copy() for k, v in out.items()})
    return outs


def torch_reference(
    model,
    clips: Sequence[tuple[np.ndarray, int]],
    state: tuple[np.ndarray, np.ndarray],
    streams: int = VERIFY_STREAMS,
    progress: bool = False,
) -> list[dict[str, np.ndarray]]:
    """PyTorch outputs of every stream of `stream_clips(clips, streams)`, one stream at a time, concatenated."""
    return [out for lane in stream_clips(clips, streams) for out in run_torch(model, lane, state, progress)]


def run_onnxruntime(
    onnx_path: str | os.PathLike,
    streams: Sequence[Sequence[tuple[np.ndarray, int]]],
    state: tuple[np.ndarray, np.ndarray],
    progress: bool = False,
) -> list[list[dict[str, np.ndarray]]]:
    """ONNX Runtime (CPU) over B = len(streams) equally long streams in one batch per step.

    Every stream starts from `state` (one stream's [N, C] / [N, 4]) and carries its own
    slot of the state; returns each stream's per-clip outputs (B dimension dropped).
    """
    from tqdm import tqdm

    from efficientvis_trt.ort_session import make_session

    if len({len(s) for s in streams}) != 1:
        raise EvisError("verification streams must have the same number of clips")
    sess = make_session(onnx_path, low_memory=True)
    names = [o.name for o in sess.get_outputs()]
    b = len(streams)
    carried = TrackletState.initial(state, streams=b)
    outs: list[list[dict[str, np.ndarray]]] = [[] for _ in streams]
    steps = range(len(streams[0]))
    for i in tqdm(steps, desc=f"verify: onnxruntime B={b}", unit="clip", disable=not progress, leave=False):
        frames = np.stack([s[i][0] for s in streams])
        out, carried = step(lambda inputs: dict(zip(names, sess.run(None, inputs))), frames, carried)
        for j in range(b):
            outs[j].append({k: v[j] for k, v in out.items()})
    return outs


def compare(
    reference: list[dict[str, np.ndarray]],
    test: list[dict[str, np.ndarray]],
    tolerances: dict[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Max abs / relative error per output over all clips; relative = max abs error / max |reference|."""
    tolerances = tolerances or TOLERANCES
    rows: dict[str, Any] = {}
    for name, (atol, rtol) in tolerances.items():
        ref = np.concatenate([r[name].ravel() for r in reference]).astype(np.float64)
        got = np.concatenate([t[name].ravel() for t in test]).astype(np.float64)
        if ref.shape != got.shape:
            raise EvisError(f"output {name!r}: shapes differ between backends ({ref.shape} vs {got.shape})")
        finite = bool(np.isfinite(got).all() and np.isfinite(ref).all())
        err = float(np.abs(ref - got).max()) if finite else float("inf")
        scale = float(np.abs(ref).max()) if finite else float("inf")
        limit = atol + rtol * scale
        rows[name] = {
            "max_abs": err,
            "max_rel": err / scale if scale > 0 else err,
            "ref_max_abs": scale,
            "atol": atol,
            "rtol": rtol,
            "limit": limit,
            "passed": bool(finite and err <= limit),
        }
    return {"passed": all(r["passed"] for r in rows.values()), "outputs": rows}


def format_report(report: dict[str, Any]) -> str:
    """A small text table of the comparison."""
    head = (
        f"verification ({report.get('reference', 'pytorch')} vs {report.get('backend', 'onnxruntime')}, "
        f"{report.get('clips', '?')} clips of {report.get('video', '?')}, {report.get('frames', '?')} frames, "
        f"{report.get('padded_frames', 0)} padded, state carried):"
    )
    lines = [head, f"  {'output':<12} {'max abs':>10} {'max rel':>10} {'limit':>10}  ok"]
    for name, r in report["outputs"].items():
        lines.append(
            f"  {name:<12} {r['max_abs']:>10.3g} {r['max_rel']:>10.3g} {r['limit']:>10.3g}  "
            f"{'yes' if r['passed'] else 'NO'}"
        )
    lines.append(f"  => {'PASSED' if report['passed'] else 'FAILED'}")
    return "\n".join(lines)


def verify_model(
    model,
    onnx_path: str | os.PathLike,
    state: tuple[np.ndarray, np.ndarray],
    clip_len: int,
    input_hw: tuple[int, int],
    num_clips: int = 3,
    video: str | os.PathLike | None = None,
    reference: list[dict[str, np.ndarray]] | None = None,
    progress: bool = True,
    streams: int = VERIFY_STREAMS,
) -> dict[str, Any]:
    """Compare `model` (eager, one stream at a time) with `onnx_path` (ONNX Runtime, `streams` streams batched).

    `reference` reuses earlier PyTorch outputs (of the same `streams`).
    """
    t0 = time.perf_counter()
    clips, info = load_clips(video, clip_len, input_hw, num_clips)
    lanes = stream_clips(clips, streams)
    if reference is None:
        reference = torch_reference(model, clips, state, streams, progress)
    test = [out for lane in run_onnxruntime(onnx_path, lanes, state, progress) for out in lane]
    report = {
        **info,
        "streams": streams,
        "reference": "pytorch eager (reference RoIAlign), one stream at a time",
        "backend": f"onnxruntime CPUExecutionProvider, {streams} streams batched (B={streams})",
        "onnx": Path(onnx_path).name,
        **compare(reference, test),
    }
    report["seconds"] = round(time.perf_counter() - t0, 2)
    report["_reference_outputs"] = reference  # stripped before writing metadata
    return report


def public_report(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if not k.startswith("_")}


def verify_bundle(
    path: str | os.PathLike,
    num_clips: int = 3,
    video: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    streams: int = VERIFY_STREAMS,
) -> dict[str, Any]:
    """Re-check an existing bundle's model.onnx against the PyTorch model it came from.

    The model is rebuilt from metadata['source'] (the checkpoint path, or the random-init
    seed) and must match the recorded weights fingerprint. Returns the report dict; the
    caller decides what a failure means (the CLI exits with an error).
    """
    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.export.model_source import rebuild_model

    bundle = Bundle.open(path)
    model = rebuild_model(bundle.metadata, checkpoint)
    report = verify_model(
        model,
        bundle.onnx_path("fp32"),
        bundle.init_state(),
        bundle.clip_len,
        bundle.input_hw,
        num_clips,
        video,
        streams=streams,
    )
    return public_report(report)
