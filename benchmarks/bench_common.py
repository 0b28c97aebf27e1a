"""What the benchmark scripts share: their bundles, their tables' number format, their RESULTS.md sections.

Every benchmark that times bundles keeps them at WORKDIR/CONFIG and reuses them across runs
(`ensure_bundle`): a bundle this toolkit can no longer open (an older schema) is exported
again, and a missing graph is built. A script that writes its table into RESULTS.md replaces
only the part between its own two markers (`replace_section`).
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
    from efficientvis_trt.bundle import ONNX_FILES, ORT_CPU_ONNX_FILES, Bundle
    from efficientvis_trt.errors import EvisError
    from efficientvis_trt.export.exporter import export_bundle
    from efficientvis_trt.precision.graph_build import BuildOptions, build

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


def fmt_ms(v: float) -> str:
    """Milliseconds as the tables print them: thousands separated from 100 ms, one decimal below."""
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def replace_section(path: Path, start: str, end: str, section: str) -> None:
    """Put `section` (which begins with `start` and ends with `end`) in place of the text between the
    two markers in `path`, or append it when the markers are not there; written atomically."""
    from efficientvis_trt.io_utils import write_text_atomic

    text = path.read_text() if path.is_file() else "# Measured results\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    write_text_atomic(path, text)
