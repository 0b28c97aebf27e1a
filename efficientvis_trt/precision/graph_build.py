"""`evis build` as a library: precision graphs for ONNX Runtime, engines for TensorRT.

Why one place: the fp16 and int8 graphs share the calibration clips, the role analysis
and the fp16 overflow guard, and a TensorRT build starts from the same graphs (the
precision lives in the graph, docs/precision.md). A calibration record (calibration.json) holds
everything needed to rebuild a graph bit for bit: clips (video, start frame), seed,
method, calibrated ranges, what was kept in fp32 and why, tool versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from efficientvis_trt.bundle import CALIBRATION_FILE, MODEL_FILE, ONNX_FILES, ORT_CPU_ONNX_FILES
from efficientvis_trt.contract import BUILD_BACKENDS, PRECISIONS
from efficientvis_trt.errors import EvisError
from efficientvis_trt.memory import release_freed_memory

log = logging.getLogger(__name__)

RECORD_SCHEMA = 1
DEFAULT_CLIPS = 16
CHECK_CLIPS = 2
CPU_INT8_FILE = ORT_CPU_ONNX_FILES["int8"]  # ONNX Runtime CPU form of the int8 graph (not for TensorRT)


@dataclass
class BuildOptions:
    precision: str
    backend: str = "ort"
    calib: Sequence[str] | None = None  # videos / folders / YouTube-VIS JSON; None: sample videos
    calib_clips: int = DEFAULT_CLIPS
    calib_method: str = "minmax"
    seed: int = 0
    workspace_gb: float = 4.0
    opt_level: int = 3
    headroom: float = 2.0  # fp16 overflow guard margin
    rebuild_graph: bool = True  # for --backend trt: rebuild an existing fp16/int8 graph
    progress: bool = True
    batch: str = "1:1:1"  # TensorRT optimisation profile of the streams dimension B, MIN:OPT:MAX


def tool_versions() -> dict[str, str]:
    import cv2
    import onnx
    import onnxruntime

    import efficientvis_trt

    return {
        "efficientvis_trt": efficientvis_trt.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "opencv": cv2.__version__,
    }


def read_record(bundle) -> dict:
    """The bundle's calibration record (calibration.json), verified like every bundle file."""
    return bundle.read_json(CALIBRATION_FILE) or {"schema_version": RECORD_SCHEMA}


def compare_outputs(ref_session, test_session, feeds: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Max abs difference and reference max|x| per output over `feeds` (one fp32 reference run each)."""
    from efficientvis_trt.ort_session import run

    out: dict[str, dict[str, float]] = {}
    for feed in feeds:
        ref, got = run(ref_session, feed), run(test_session, feed)
        for name, r in ref.items():
            g = got[name]
            if g.dtype != r.dtype or g.shape != r.shape:
                raise EvisError(
                    f"output {name} is {g.dtype}{list(g.shape)}, the fp32 graph gives {r.dtype}{list(r.shape)}"
                )
            d = out.setdefault(name, {"max_abs_diff": 0.0, "ref_max_abs": 0.0, "finite": True})
            d["max_abs_diff"] = max(d["max_abs_diff"], float(np.max(np.abs(g.astype(np.float64) - r))))
            d["ref_max_abs"] = max(d["ref_max_abs"], float(np.max(np.abs(r))))
            d["finite"] = d["finite"] and bool(np.isfinite(g).all())
    return out


def build_graph(bundle, precision: str, opts: BuildOptions) -> dict[str, Any]:
    """Write model.fp16.onnx or model.int8.onnx into the bundle and its calibration record section."""
    import onnx

    from efficientvis_trt.ort_session import make_session
    from efficientvis_trt.precision import fp16
    from efficientvis_trt.precision import graph as G
    from efficientvis_trt.precision import int8 as I
    from efficientvis_trt.precision.calibration import build_calibration_set

    if precision not in ("fp16", "int8"):
        raise EvisError(f"no graph to build for {precision}")
    if opts.calib_method not in I.METHODS:
        raise EvisError(f"unknown --calib-method {opts.calib_method!r}: use one of {', '.join(I.METHODS)}")
    start = time.perf_counter()
    src_path = bundle.onnx_path("fp32")
    model = onnx.load(str(src_path))
    G.ensure_node_names(model)
    roles = G.classify(model)
    if not roles.roi_align:
        log.warning("no MultiLevelRoIAlign/RoiAlign node found: is this an EfficientVIS per-clip graph?")

    # One fp32 pass both carries the state and measures max|x| for the fp16 overflow guard.
    calib = build_calibration_set(
        model,
        bundle.init_state(),
        bundle.input_hw,
        bundle.clip_len,
        opts.calib,
        opts.calib_clips,
        opts.seed,
        progress=opts.progress,
        absmax_tensors=list(G.float_node_outputs(model)),
    )
    r16 = fp16.convert_with_guard(
        model, roles.fp16_block(), calib.feeds, headroom=opts.headroom, fp32_absmax=calib.absmax
    )
    section: dict[str, Any] = {
        "precision": precision,
        "seed": opts.seed,
        "clip_len": bundle.clip_len,
        "input_hw": list(bundle.input_hw),
        "sources": calib.sources,
        "clips": [vars(c) for c in calib.clips],
        "source_onnx": src_path.name,
        "source_onnx_sha256": bundle.files[MODEL_FILE]["sha256"],
        "roles": {k: v for k, v in roles.to_dict().items() if k not in ("backbone", "weighted")},
        "fp16": {
            "kept_fp32_by_rule": r16.rule_blocked,
            "kept_fp32": r16.blocked,
            "overflow": [h.to_dict() for h in r16.overflow],
            "headroom": opts.headroom,
            "guard_rounds": r16.rounds,
        },
        "tool_versions": tool_versions(),
    }
    # One built graph in memory at a time (docs/build-memory.md, "Precision builds"): each graph is
    # checked and serialized, then let go, before the next is made, and the fp32 reference
    # session is opened from the bundle's file once the fp32 ModelProto is gone.
    fp16_model, r16.model = r16.model, None
    cpu_data = None
    if precision == "fp16":
        data = _checked_bytes(fp16_model)
        del fp16_model
    else:
        del fp16_model  # the int8 graph's float parts take only the guard's verdict (r16.blocked)
        with tempfile.TemporaryDirectory(prefix="evis-int8-ranges-") as tmp:
            cache = Path(tmp) / "ranges.json"  # one calibration, shared by both int8 graphs
            r8 = I.quantize(model, calib, roles, r16.blocked, method=opts.calib_method, cache=cache)
            section["int8"] = {
                "method": opts.calib_method,
                "format": "QDQ",
                "activations": "int8 symmetric per-tensor",
                "weights": "int8 symmetric per-channel (Conv axis 0, MatMul axis 1, Gemm output axis)",
                "quantized_nodes": r8.quantized_nodes,
                "excluded": r8.excluded,
                "ranges": r8.ranges,
                "scales": r8.scales,
                "opset": I.QDQ_OPSET,
                "float_parts": "fp16 (blocked nodes fp32)",
            }
            data = _checked_bytes(r8.model)
            del r8
            cpu_data = _checked_bytes(I.quantize_cpu_graph(model, roles, cache, method=opts.calib_method))
    del model
    release_freed_memory()
    check_feeds = calib.feeds[-CHECK_CLIPS:]
    ref_session = make_session(src_path, deterministic=True, low_memory=True)
    section["check_vs_fp32"] = _finite_check(ref_session, data, check_feeds, f"the {precision} graph")
    if cpu_data is not None:
        cpu_check = _finite_check(ref_session, cpu_data, check_feeds, "the int8 CPU graph")
        section["int8"]["cpu_graph"] = {
            "output_onnx": CPU_INT8_FILE,
            "output_onnx_sha256": hashlib.sha256(cpu_data).hexdigest(),
            "for": "ONNX Runtime CPUExecutionProvider (TensorRT uses model.int8.onnx)",
            "format": "QDQ with output Q/DQ (ORT fuses QLinearConv/QLinearAdd)",
            "activations": "uint8 asymmetric per-tensor (ranges: this section's calibration)",
            "weights": "int8 symmetric per-channel, 7-bit range [-64, 64] (no int16 saturation on x86 without VNNI)",
            "float_parts": "fp32",
            "check_vs_fp32": cpu_check,
        }
    del ref_session

    out_name = ONNX_FILES[precision]
    section["output_onnx"] = out_name
    section["output_onnx_sha256"] = hashlib.sha256(data).hexdigest()
    section["build_time_s"] = round(time.perf_counter() - start, 2)
    commit_graphs(bundle, precision, data, cpu_data, section)
    return section


def commit_graphs(bundle, precision: str, data: bytes, cpu_data: bytes | None, section: dict[str, Any]) -> None:
    """One bundle transaction: the graph(s) and this precision's calibration section, or nothing.

    The record is re-read under the bundle's lock, so two builds (fp16 and int8) at once
    both keep their sections; a bundle re-exported while this build ran is refused.
    """
    with bundle.transaction() as tx:
        current = tx.bundle.files.get(MODEL_FILE, {}).get("sha256")
        if current != section["source_onnx_sha256"]:
            raise EvisError(
                f"{bundle.path} was re-exported while this build ran (its model.onnx changed): "
                f"run `evis build {bundle.path} --precision {precision}` again"
            )
        tx.add_file(ONNX_FILES[precision], data, role="graph", precision=precision)
        if cpu_data is not None:
            tx.add_file(CPU_INT8_FILE, cpu_data, role="graph", precision=precision, target="ort-cpu")
        record = read_record(tx.bundle)
        record["schema_version"] = RECORD_SCHEMA
        record[precision] = section
        tx.add_file(CALIBRATION_FILE, (json.dumps(record, indent=2) + "\n").encode(), role="calibration")


def _checked_bytes(model) -> bytes:
    """The ONNX checker's full check (types and shapes), then deterministic bytes: what the bundle stores."""
    import onnx

    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString(deterministic=True)


def _finite_check(ref_session, graph: bytes, feeds, what: str) -> dict[str, Any]:
    """Compare a built graph with fp32 on `feeds`; inf/NaN in any output is an error naming them."""
    from efficientvis_trt.ort_session import make_session

    check = compare_outputs(ref_session, make_session(graph, deterministic=True, low_memory=True), feeds)
    bad = [k for k, v in check.items() if not v["finite"]]
    if bad:
        raise EvisError(f"{what} produces inf/NaN in {', '.join(bad)} on the calibration clips")
    return check


def build(bundle_path: str | os.PathLike, opts: BuildOptions) -> dict[str, Any]:
    """Build what `evis build` asks for; returns a summary for the CLI."""
    from efficientvis_trt.bundle import Bundle
    from efficientvis_trt.trt import env

    if opts.precision not in PRECISIONS:
        raise EvisError(f"unknown --precision {opts.precision!r}: use one of {', '.join(PRECISIONS)}")
    if opts.backend not in BUILD_BACKENDS:
        raise EvisError(f"unknown --backend {opts.backend!r}: use one of {', '.join(BUILD_BACKENDS)}")
    from efficientvis_trt.trt.engine_build import BatchProfile

    batch = BatchProfile.parse(opts.batch)  # a bad profile is one line before anything is read or written
    if opts.backend != "trt" and batch != BatchProfile():
        raise EvisError(
            f"--batch {batch.text} is a TensorRT optimisation profile: add --backend trt "
            "(ONNX Runtime runs the batched graph at any B as it is)"
        )
    if opts.backend == "trt":
        env.import_tensorrt("Builder")  # before anything is read or written: one clear line when missing
        env.cuda_device_info()
    bundle = Bundle.open(bundle_path)
    summary: dict[str, Any] = {"bundle": str(bundle.path), "precision": opts.precision, "backend": opts.backend}
    if opts.precision != "fp32":
        have = ONNX_FILES[opts.precision] in bundle.files
        if opts.backend == "ort" or not have or opts.rebuild_graph:
            summary["graph"] = build_graph(bundle, opts.precision, opts)
    summary["onnx"] = str(bundle.onnx_path(opts.precision))
    if opts.backend == "trt":
        from efficientvis_trt.trt.engine_build import build_engine

        result = build_engine(
            bundle,
            opts.precision,
            workspace_gb=opts.workspace_gb,
            opt_level=opts.opt_level,
            bundle_path=bundle.path,
            batch=batch,
        )
        summary["engine"] = str(result.path)
        summary["engine_metadata"] = result.metadata
    return summary
