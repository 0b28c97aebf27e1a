#!/usr/bin/env python
"""Does this CPU's int8 saturate? The int8 graphs' error vs fp32, fused kernels against Q/DQ in float.

On x86 without VNNI, ONNX Runtime's and OpenVINO's uint8 x int8 kernels add pairs of products in
int16, which saturates on full 8-bit weights (docs/precision.md, "Saturation on x86"). This
builds the tiny random-init bundle (seed 0, 4 calibration clips: the test suite's), then a copy
whose CPU form keeps 8-bit weights (the form before the fix: `quantize_for_cpu` with
`seven_bit_weights=False`, nothing else changed), and prints the mean |error| against ORT fp32
over carried bikes.mp4 clips (each row carries its own state) for:

- ORT fused: the CPU provider's default optimisation, which fuses Q/DQ into QLinearConv & co.;
- ORT unfused: `ORT_DISABLE_ALL`, Q/DQ computed in float: the reference a fused kernel should match;
- OpenVINO on the same graph.

    python benchmarks/cpu_int8_saturation.py [--workdir /tmp/evis_saturation]
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUTPUTS = ("logits", "boxes", "query_out")


def carried_outputs(run, canvas: np.ndarray, bundle, clips: int) -> list[dict]:
    from efficientvis_trt.contract import TrackletState, step

    state, outs, t = TrackletState.initial(bundle.init_state()), [], bundle.clip_len
    for k in range(clips):
        out, state = step(run, canvas[None, k * t : (k + 1) * t], state)
        outs.append(out)
    return outs


def ort_runner(path: Path, fused: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    if not fused:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feed: dict(zip(names, session.run(None, feed)))


def openvino_runner(path: Path):
    from efficientvis_trt.runtime.openvino_backend import OpenVINOBackend

    return OpenVINOBackend(path, "int8", threads=2).run


def build_8bit_cpu_form(src: Path, dst: Path) -> None:
    """A copy of `src` rebuilt with the CPU form's weights in 8 bits (the graph before the fix)."""
    from efficientvis_trt.precision import int8 as I
    from efficientvis_trt.precision.graph_build import BuildOptions, build

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    seven_bit = I.quantize_for_cpu

    def eight_bit(*args, **kwargs):
        return seven_bit(*args, **{**kwargs, "seven_bit_weights": False})

    I.quantize_for_cpu = eight_bit
    try:
        build(dst, BuildOptions(precision="int8", calib_clips=4, seed=0, progress=False))
    finally:
        I.quantize_for_cpu = seven_bit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/evis_saturation"))
    p.add_argument("--clips", type=int, default=3)
    args = p.parse_args(argv)

    from efficientvis_trt import capabilities
    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.cpu_info import cpu_model
    from efficientvis_trt.export.exporter import export_bundle
    from efficientvis_trt.measure.machine import library_versions
    from efficientvis_trt.precision.graph_build import BuildOptions, build
    from efficientvis_trt.video import Letterbox, read_frames, sample_video

    now = args.workdir / "tiny"
    if not (now / "model.int8.cpu.onnx").is_file():
        shutil.rmtree(now, ignore_errors=True)
        export_bundle(now, echo=None, config="tiny", init="random", seed=0, verify=False)
        build(now, BuildOptions(precision="int8", calib_clips=4, seed=0, progress=False))
    before = args.workdir / "tiny_8bit_cpu_form"
    build_8bit_cpu_form(now, before)

    bundle = Bundle.open(now)
    frames = read_frames(sample_video("bikes.mp4"), max_frames=args.clips * bundle.clip_len)
    lb = Letterbox(frames[0].shape[:2], bundle.input_hw)
    canvas = np.stack([lb.apply(f) for f in frames])
    ref = carried_outputs(ort_runner(now / "model.onnx", True), canvas, bundle, args.clips)

    def err(run) -> dict[str, float]:
        got = carried_outputs(run, canvas, bundle, args.clips)
        return {k: float(np.mean([np.abs(g[k] - r[k]).mean() for g, r in zip(got, ref)])) for k in OUTPUTS}

    graphs = {
        "CPU form, 8-bit weights (before)": before / "model.int8.cpu.onnx",
        "CPU form, 7-bit weights (now)": now / "model.int8.cpu.onnx",
        "model.int8.onnx (TensorRT form, 8-bit)": now / "model.int8.onnx",
    }
    full = capabilities.cpu_int8_full_range()
    versions = library_versions()
    print(
        f"{cpu_model()}: {full.reason}; onnxruntime {versions.get('onnxruntime')}, openvino "
        f"{versions.get('openvino')}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    )
    print("mean |error| vs ORT fp32 over", args.clips, "carried clips:", ", ".join(OUTPUTS))
    print("| graph | ORT fused | ORT unfused (Q/DQ in float) | fused / unfused (logits) | OpenVINO |")
    print("|---|---|---|---|---|")
    for name, path in graphs.items():
        fused, unfused = err(ort_runner(path, True)), err(ort_runner(path, False))
        try:
            ov = " / ".join(f"{v:.4f}" for v in err(openvino_runner(path)).values())
        except Exception as exc:  # OpenVINO absent or refusing: the row says so
            ov = f"n/a ({type(exc).__name__})"
        cells = [" / ".join(f"{v:.4f}" for v in e.values()) for e in (fused, unfused)]
        print(f"| {name} | {cells[0]} | {cells[1]} | {fused['logits'] / unfused['logits']:.2f}x | {ov} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
