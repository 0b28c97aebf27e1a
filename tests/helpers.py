"""Helpers shared by test modules (tests import this, never each other)."""

from __future__ import annotations

import functools


def interruptible() -> None:
    """A `preexec_fn` for child processes that are sent SIGINT: the signal back to its default, so the
    child's Python raises KeyboardInterrupt for it. A test run started in the background by a shell
    inherits SIGINT ignored (POSIX), and Python then leaves it ignored."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


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


REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def run_python(code: str, block: tuple[str, ...] = (), timeout: float = 300, env: dict | None = None):
    """Run code in a fresh interpreter from the repo root, with some top-level modules made unimportable.

    Blocking `tensorrt` (and friends) lets the no-TensorRT paths run on a machine that has TensorRT.
    """
    import os
    import subprocess
    import sys
    import textwrap

    blocker = ""
    if block:
        blocker = textwrap.dedent(f"""
            import sys
            class _Block:
                def find_spec(self, name, path=None, target=None):
                    if any(name == b or name.startswith(b + '.') for b in {tuple(block)!r}):
                        raise ModuleNotFoundError('blocked for the test: ' + name, name=name)
            sys.meta_path.insert(0, _Block())
        """)
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", blocker + textwrap.dedent(code)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@functools.cache
def missing_for(marker: str) -> str | None:
    """Why this machine cannot run what the `tensorrt` or `cuda` marker asks for, or None when it can.

    The one definition behind the markers (tests/conftest.py) and behind tests that assert what the
    machine has (a row is available exactly where this says so).
    """
    from efficientvis_trt import capabilities

    if marker == "cuda":
        return None if capabilities.torch_cuda() else f"needs a CUDA device: {capabilities.torch_cuda().reason}"
    if marker != "tensorrt":
        raise ValueError(f"unknown hardware marker {marker!r}")
    if not (runtime := capabilities.tensorrt_runtime()):
        return f"needs TensorRT and an NVIDIA GPU: {runtime.reason}"
    if not (builder := capabilities.tensorrt()):
        return f"needs the TensorRT builder: {builder.reason}"
    return None


# conftest's `make_tiny_bundle(precisions=...)` builds its fp16/int8 graphs on this many real calibration
# clips (seed 0): the suite tests parity and determinism, not accuracy.
CALIB_CLIPS = 4

# The cheapest real bundle: tiny, T=2, 64x96 canvas, TorchScript exporter, no simplifier, no verification.
# Tests that only need such a bundle ask conftest's `make_tiny_bundle(**SMALL_BUNDLE)`; tests of the export
# itself (where it writes, what it refuses) call `export_small_bundle`.
SMALL_BUNDLE = {"clip_len": 2, "size": (64, 96), "exporter": "torchscript", "simplify_graph": False}


def export_small_bundle(out):
    """Export the SMALL_BUNDLE flavour into `out` (the export itself is what the caller tests)."""
    from efficientvis_trt.export.exporter import export_bundle

    return export_bundle(out, config="tiny", init="random", seed=0, verify=False, echo=None, **SMALL_BUNDLE)


def next_writer(bundle) -> None:
    """Open and close one write transaction on `bundle`: what a killed writer left behind is rolled
    forward or removed by the next writer (docs/bundle.md)."""
    from efficientvis_trt.bundle import Bundle

    with Bundle.open(bundle).transaction():
        pass


def our_temporaries(folder) -> list[str]:
    """Names of our temporaries (`.evis-tmp-*`) and commit journals left in `folder` and its engines/."""
    from pathlib import Path

    folder = Path(folder)
    found = [p for p in folder.glob(".evis-tmp-*")] + [p for p in folder.glob("engines/.evis-tmp-*")]
    found += [p for p in folder.glob(".evis-commit.json")]
    return sorted(str(p.relative_to(folder)) for p in found)


def contract_graph(path, lead=(), *, frames_type="UINT8", logits_type="FLOAT", drop_output=None):
    """A trivial ONNX graph with the per-clip contract's names (T=2, 8x8, N=3, C=4), for backend I/O tests.

    `lead`: leading dims of every input (a number or a name each); `frames_type` / `logits_type`: the
    TensorProto type of `frames` and `logits`; `drop_output`: an output left out. query_out = -query_in.
    """
    import onnx
    from onnx import TensorProto, helper

    from efficientvis_trt.contract import OUTPUT_NAMES

    t, h, w, n, c = 2, 8, 8, 3, 4
    ins = [
        helper.make_tensor_value_info("frames", getattr(TensorProto, frames_type), [*lead, t, h, w, 3]),
        helper.make_tensor_value_info("query_in", TensorProto.FLOAT, [*lead, n, c]),
        helper.make_tensor_value_info("boxes_in", TensorProto.FLOAT, [*lead, n, 4]),
    ]
    nodes = [
        helper.make_node("Cast", ["frames"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], keepdims=0),
        helper.make_node("Cast", ["m"], ["logits"], to=getattr(TensorProto, logits_type)),
        helper.make_node("Identity", ["boxes_in"], ["boxes"]),
        helper.make_node("Identity", ["f"], ["mask_logits"]),
        helper.make_node("Neg", ["query_in"], ["query_out"]),
        helper.make_node("Identity", ["boxes_in"], ["boxes_out"]),
    ]
    types = {"logits": getattr(TensorProto, logits_type)}
    outs = [
        helper.make_tensor_value_info(k, types.get(k, TensorProto.FLOAT), None)
        for k in OUTPUT_NAMES
        if k != drop_output
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", ins, outs), opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(path))
    return path
