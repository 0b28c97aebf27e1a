#!/usr/bin/env python
"""RoIAlign without waste: per-clip latency of whole graphs, with the old and the new RoIAlign.

ONNX Runtime: each graph of the bundle (model.onnx, and model.int8.cpu.onnx when built) runs with
two MultiLevelRoIAlign function bodies, the one it carries and the one of `--before` (a graph
exported before the change, whose body pools every box on every level and picks with Where),
so nothing but the body differs. PyTorch eager: the model (`--config`, random init with the
bundle's seed) with the dense separable RoIAlign against the per-box one. Sessions and models
are timed interleaved (A, B, A, B, ...) on the second clip of bikes.mp4, state carried, and the
outputs of the two forms are compared.

    python benchmarks/roi_align_graphs.py BUNDLE --before OLD/model.onnx --threads 2 --rounds 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def with_body(graph_path: Path, body_source: Path | None) -> bytes:
    """The graph's bytes, its RoIAlign function replaced by the one in `body_source` (None: the current body)."""
    import onnx

    from efficientvis_trt.export.roi_align_onnx import attach_function
    from efficientvis_trt.plugins.spec import DOMAIN, OP_TYPE

    model = onnx.load(str(graph_path))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if body_source is None:
        attach_function(model, opset)
    else:
        src = onnx.load(str(body_source), load_external_data=False)
        fn = next(f for f in src.functions if (f.domain, f.name) == (DOMAIN, OP_TYPE))
        for o in fn.opset_import:  # the graph's opset (int8 graphs are opset 19)
            if o.domain in ("", "ai.onnx"):
                o.version = opset
        keep = [f for f in model.functions if (f.domain, f.name) != (DOMAIN, OP_TYPE)]
        del model.functions[:]
        model.functions.extend([*keep, fn])
    return model.SerializeToString()


def interleaved(runs: dict, rounds: int) -> dict[str, list[float]]:
    """Call each function once per round, order rotated; seconds per call."""
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t)
    return times


def summary(times: dict[str, list[float]]) -> dict[str, float]:
    return {n: 1e3 * statistics.median(v) for n, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--before", required=True, help="a graph carrying the old RoIAlign body (e.g. an older model.onnx)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--torch-rounds", type=int, default=3)
    p.add_argument("--skip-torch", action="store_true")
    args = p.parse_args(argv)

    import onnxruntime as ort
    import torch

    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.ort_session import make_session, run

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from precision_throughput import real_clips

    from efficientvis_trt.cpu_info import cpu_model

    bundle = Bundle.open(args.bundle)
    before = Path(args.before)
    print(
        f"# RoIAlign before/after, {bundle.path.name} ({bundle.clip_len} x {bundle.input_hw[0]}x{bundle.input_hw[1]}), "
        f"{cpu_model()}, {args.threads} threads, onnxruntime {ort.__version__}, torch {torch.__version__}, "
        f"{platform.node()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
    )
    fp32 = make_session(bundle.path / "model.onnx", threads=args.threads)
    feed = real_clips(bundle, fp32, "bikes.mp4", 2)[1]
    del fp32
    graphs = [("fp32", bundle.path / "model.onnx")]
    cpu_int8 = bundle.path / "model.int8.cpu.onnx"
    if cpu_int8.is_file():
        graphs.append(("int8 (ORT CPU graph)", cpu_int8))
    print("| graph | old body ms/clip | per-box body ms/clip | speed-up | max abs diff of outputs |")
    print("|---|---|---|---|---|")
    medians = {}
    for label, path in graphs:
        sessions = {
            "old": make_session(with_body(path, before), threads=args.threads),
            "new": make_session(with_body(path, None), threads=args.threads),
        }
        outs = {k: run(s, feed) for k, s in sessions.items()}  # also the warm-up
        diff = max(float(np.abs(outs["old"][k].astype(np.float64) - outs["new"][k]).max()) for k in outs["old"])
        ms = summary(interleaved({k: (lambda s=s: run(s, feed)) for k, s in sessions.items()}, args.rounds))
        medians[label] = ms
        print(f"| {label} | {ms['old']:,.0f} | {ms['new']:,.0f} | {ms['old'] / ms['new']:.2f}x | {diff:.2e} |")
        del sessions
    if len(medians) == 2:
        (_, a), (_, b) = medians.items()
        print(f"\nint8/fp32 throughput: old body {a['old'] / b['old']:.2f}x, per-box body {a['new'] / b['new']:.2f}x")
    if args.skip_torch:
        return 0

    from efficientvis_trt.config import Config
    from efficientvis_trt.contract import INPUT_NAMES
    from efficientvis_trt.export.model_source import random_init_model
    from efficientvis_trt.model import efficientvis as E
    from efficientvis_trt.model import roi_align as R

    torch.set_num_threads(args.threads)
    cfg = Config.from_dict(bundle.metadata["config"])
    model = random_init_model(cfg, int(bundle.metadata["source"].get("seed", 0))).eval()
    inputs = [torch.from_numpy(np.ascontiguousarray(feed[k])) for k in INPUT_NAMES]
    impls = {"dense": R.multi_level_roi_align_dense, "per-box": R.multi_level_roi_align}

    def clip(impl):
        E.multi_level_roi_align_reference = impl
        try:
            with torch.no_grad():
                return model.forward_clip(*inputs)
        finally:
            E.multi_level_roi_align_reference = R.multi_level_roi_align_reference

    outs = {k: clip(f) for k, f in impls.items()}
    diff = max(float((outs["dense"][k] - outs["per-box"][k]).abs().max()) for k in outs["dense"])
    ms = summary(interleaved({k: (lambda f=f: clip(f)) for k, f in impls.items()}, args.torch_rounds))
    print("\n| PyTorch eager | dense separable ms/clip | per-box ms/clip | speed-up | max abs diff of outputs |")
    print("|---|---|---|---|---|")
    print(f"| fp32 | {ms['dense']:,.0f} | {ms['per-box']:,.0f} | {ms['dense'] / ms['per-box']:.2f}x | {diff:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
