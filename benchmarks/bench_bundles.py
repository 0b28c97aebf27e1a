"""The random-init bundles the benchmarks run on, exported and built once per work folder.

Every benchmark that times bundles keeps them at WORKDIR/CONFIG and reuses them across runs.
A bundle this toolkit can no longer open (an older schema) is exported again, and a missing
graph is built.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def _stderr(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_bundle(
    config: str,
    workdir: Path,
    calib_clips: int,
    log: Callable[[str], None] = _stderr,
    *,
    precisions: Sequence[str] = ("int8",),
    seed: int = 0,
    rebuild: bool = False,
) -> Path:
    """WORKDIR/CONFIG: a random-init bundle (seed 0) with the graphs of `precisions` (int8 with its
    ONNX Runtime CPU form), exported and built where missing, or rebuilt with `rebuild`."""
    from efficientvis_trt.errors import EvisError
    from efficientvis_trt.export.bundle import ONNX_FILES, ORT_CPU_ONNX_FILES, Bundle
    from efficientvis_trt.export.exporter import export_bundle
    from efficientvis_trt.precision.build import BuildOptions, build

    path = Path(workdir) / config
    try:
        files = Bundle.open(path).files
    except EvisError as exc:
        log(f"[{config}] exporting (random init) ..." + (f" ({exc})" if path.exists() else ""))
        export_bundle(path, config=config, init="random", seed=0, verify=False, echo=None)
        files = Bundle.open(path).files
    for precision in precisions:
        missing = ONNX_FILES[precision] not in files or (
            precision in ORT_CPU_ONNX_FILES and ORT_CPU_ONNX_FILES[precision] not in files
        )
        if rebuild or missing:
            log(f"[{config}] building {precision} ({calib_clips} calibration clips) ...")
            t = time.perf_counter()
            build(path, BuildOptions(precision=precision, calib_clips=calib_clips, seed=seed, progress=False))
            log(f"[{config}] {precision} built in {time.perf_counter() - t:.0f} s")
    return path
