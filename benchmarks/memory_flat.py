"""Peak memory of whole-video inference must not grow with video length.

Generates a short and a long synthetic video (moving textured shapes, OpenCV mp4v), then
runs `Predictor.predict_video` on each in a fresh process and reports the peak resident
set size (VmHWM, plus psutil samples during the run). Frames and masks are streamed,
so the long video's peak should sit within a few MB of the short one's; what does grow
is only the results (one RLE per track and frame, bytes each).

    python benchmarks/memory_flat.py                        # tiny random bundle, ORT CPU
    python benchmarks/memory_flat.py --bundle B --long 3000 --overlay
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path


def make_video(path: Path, frames: int, size=(360, 640), fps: float = 25.0) -> Path:
    import cv2
    import numpy as np

    h, w = size
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (18, 32, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(frames):
        frame = np.roll(base, 4 * i, axis=1).copy()
        cx, cy = int(w / 2 + w / 3 * np.sin(i / 20)), int(h / 2 + h / 4 * np.cos(i / 15))
        cv2.circle(frame, (cx, cy), 40, (0, 0, 255), -1)
        cv2.rectangle(frame, ((5 * i) % w, 40), ((5 * i) % w + 60, 120), (0, 255, 0), -1)
        writer.write(frame)
    writer.release()
    return path


CHILD = r"""
import json, sys, threading, time
import psutil

def vm_hwm_mb():
    # Peak RSS of this process image. Not ru_maxrss: Linux carries that over from the forking
    # parent across exec, so a child of a big parent would report the parent's peak.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
from efficientvis_trt.runtime.predictor import Predictor

bundle, video, backend, overlay = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
proc = psutil.Process()
samples = []
stop = threading.Event()
def sample():
    while not stop.is_set():
        samples.append(proc.memory_info().rss)
        time.sleep(0.05)
p = Predictor(bundle, backend=backend, device="cpu")
after_load = proc.memory_info().rss
t = threading.Thread(target=sample, daemon=True); t.start()
frames_done = []
t0 = time.perf_counter()
r = p.predict_video(video, overlay=None if overlay == "-" else overlay, progress=frames_done.append)
wall = time.perf_counter() - t0
stop.set(); t.join()
n = len(samples)
print(json.dumps({
    "frames": r.num_frames, "tracks": len(r.tracks), "wall_s": wall,
    "rss_after_load_mb": after_load / 2**20,
    "peak_rss_mb": vm_hwm_mb(),
    "sampled_peak_first_quarter_mb": max(samples[: max(1, n // 4)]) / 2**20,
    "sampled_peak_last_quarter_mb": max(samples[-max(1, n // 4):]) / 2**20,
    "rss_end_mb": proc.memory_info().rss / 2**20,
    "results_json_mb": len(json.dumps(r.to_ytvis(1))) / 2**20,
}))
"""


def run_child(bundle: Path, video: Path, backend: str, overlay: Path | None) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(bundle), str(video), backend, str(overlay or "-")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="bundle folder (default: export a tiny random-init one)")
    ap.add_argument("--backend", default="ort")
    ap.add_argument("--short", type=int, default=50, help="frames of the short video")
    ap.add_argument("--long", type=int, default=1500, help="frames of the long video")
    ap.add_argument("--overlay", action="store_true", help="also write an overlay video during the run")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="evis-mem-") as tmp:
        tmp = Path(tmp)
        bundle = args.bundle
        if bundle is None:
            from efficientvis_trt.export.exporter import export_bundle

            bundle = export_bundle(tmp / "bundle", config="tiny", init="random", seed=0, verify=False, echo=None)
        rows = {}
        for name, n in (("short", args.short), ("long", args.long)):
            video = make_video(tmp / f"{name}.mp4", n)
            overlay = tmp / f"{name}.overlay.mp4" if args.overlay else None
            rows[name] = run_child(bundle, video, args.backend, overlay)
            r = rows[name]
            print(
                f"{name:>5}: {r['frames']:5d} frames  peak RSS {r['peak_rss_mb']:7.1f} MB  "
                f"(first/last quarter {r['sampled_peak_first_quarter_mb']:.1f}/"
                f"{r['sampled_peak_last_quarter_mb']:.1f} MB, "
                f"after load {r['rss_after_load_mb']:.1f} MB)  results {r['results_json_mb']:.2f} MB  "
                f"{r['frames'] / r['wall_s']:.1f} FPS",
                flush=True,
            )
    short, long_ = rows["short"], rows["long"]
    growth = long_["peak_rss_mb"] - short["peak_rss_mb"]
    ratio = long_["frames"] / short["frames"]
    print(
        f"peak RSS growth for {ratio:.0f}x the frames: {growth:+.1f} MB "
        f"({growth / max(long_['frames'] - short['frames'], 1) * 1024:.2f} KB/frame)"
    )
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "backend": args.backend,
        "overlay": args.overlay,
        "short": short,
        "long": long_,
        "peak_growth_mb": growth,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    # A flat loop grows by the results only (a few hundred bytes per frame); allow generous slack.
    limit = 64 + (long_["results_json_mb"] - short["results_json_mb"]) * 4
    if growth > limit:
        print(f"FAIL: peak RSS grew {growth:.1f} MB (> {limit:.1f} MB)")
        return 1
    print(f"OK: within {limit:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
