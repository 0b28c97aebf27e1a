"""``evis plugins``: which MultiLevelRoIAlign path TensorRT would take on this machine, and why."""

from __future__ import annotations

import argparse
import json
import time

HELP = "show which RoIAlign path (AOT/JIT plugin, built-in RoiAlign) TensorRT would take here, and why"

PTX_TARGETS = ((9, 0), (8, 7))  # datacenter Hopper, Jetson Orin


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-ptx-check",
        action="store_true",
        help="skip compiling the Triton kernel to PTX for sm_90 and sm_87 (a few seconds)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _cuda(caps) -> dict:
    gpu = caps.gpu_info
    if gpu is None:
        return {"available": False, "detail": caps.gpu.reason}
    return {"available": True, "name": gpu.name, "compute_capability": gpu.cc_text}


def _trt(caps) -> dict:
    version = caps.tensorrt_runtime.version
    if version is None:
        return {"installed": False, "detail": caps.tensorrt.reason}
    return {"installed": True, "version": version}


def _ptx_checks() -> list[dict]:
    from efficientvis_trt.errors import EvisError
    from efficientvis_trt.plugins.spec import RoIAlignAttrs
    from efficientvis_trt.plugins.triton_roi_align import compile_ptx

    results = []
    for cc in PTX_TARGETS:
        entry = {"target": f"sm_{cc[0]}{cc[1]}"}
        start = time.perf_counter()
        try:
            k = compile_ptx(RoIAlignAttrs(), "fp32", cc)
            entry.update(
                ok=True, kernel=k.kernel_name, ptx_target=k.target, ptx_isa=k.ptx_version, ptx_bytes=len(k.ptx)
            )
        except EvisError as exc:
            entry.update(ok=False, error=str(exc))
        except Exception as exc:  # a broken Triton install must not crash the report
            entry.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        entry["seconds"] = round(time.perf_counter() - start, 2)
        results.append(entry)
    return results


def run(args: argparse.Namespace) -> int:
    from efficientvis_trt.capabilities import capabilities

    caps = capabilities()
    trt_info = _trt(caps)
    tv = caps.triton.version
    cuda = _cuda(caps)
    path = caps.plugin_path
    report = {
        "path": path.mode,
        "reason": path.reason,
        "needs_python_at_load": path.needs_python_at_load,
        "tensorrt": trt_info,
        "triton": {"installed": tv is not None, "version": tv},
        "cuda": cuda,
    }
    if tv is not None and not args.no_ptx_check:
        report["ptx"] = _ptx_checks()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0

    print(f"RoIAlign path: {path.mode}")
    print(f"  why: {path.reason}")
    print(f"  engine needs Python at load: {'yes' if path.needs_python_at_load else 'no'}")
    print(f"TensorRT: {trt_info['version'] if trt_info['installed'] else 'not installed'}")
    print(f"Triton: {tv if tv else 'not installed'}")
    if cuda["available"]:
        print(f"CUDA device: {cuda['name']} (compute capability {cuda['compute_capability']})")
    else:
        print(f"CUDA device: none ({cuda.get('detail', '')})")
    if "ptx" in report:
        for entry in report["ptx"]:
            if entry["ok"]:
                print(
                    f"PTX {entry['target']}: ok ({entry['seconds']} s): .entry {entry['kernel']}, "
                    f".target {entry['ptx_target']}, PTX ISA {entry['ptx_isa']}"
                )
            else:
                print(f"PTX {entry['target']}: FAILED ({entry['error']})")
    elif tv is None:
        print("PTX: not checked (Triton not installed)")
    else:
        print("PTX: not checked (--no-ptx-check)")
    return 0
