"""`evis eval`: YouTube-VIS mask AP of a results file, or its drift from a reference run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from efficientvis_trt.errors import EvisError

HELP = (
    "YouTube-VIS mask AP/AR of RESULTS.json against GT.json, with the official evaluator's numbers; "
    "or, with --reference REF.json, how far RESULTS.json drifts from another run (e.g. INT8 vs FP32)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="GT.json RESULTS.json (YouTube-VIS ground truth, then a list of "
        "{video_id, category_id, score, segmentations}); with --reference only RESULTS.json",
    )
    parser.add_argument(
        "--reference",
        metavar="REF.json",
        help="fidelity mode: treat this results file as ground truth (its tracks with "
        "score >= --score-thr; videos, frame counts and sizes come from it)",
    )
    parser.add_argument(
        "--score-thr",
        type=float,
        default=None,
        metavar="T",
        help="with --reference: score a reference track needs to count as ground truth (default 0.5)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object instead of the table: AP, AP50, AP75, APs, APm, APl, AR1, AR10, "
        "AR100, ARs, ARm, ARl as 0-1 floats (like pycocotools' stats; -1 = no ground truth in "
        "that bucket) and per_category {name: AP}",
    )
    parser.add_argument("-o", "--output", metavar="PATH", help="also write that JSON object to PATH")


def run(args: argparse.Namespace) -> int:
    from efficientvis_trt.eval import evaluate, evaluate_fidelity
    from efficientvis_trt.io_utils import check_writable_dir, write_json_atomic

    if args.output:  # before the evaluation: a wrong -o costs nothing
        out = Path(args.output)
        if out.is_dir():
            raise EvisError(f"-o {out} is a folder: give a file path (e.g. {out / 'eval.json'})")
        check_writable_dir(out.parent, "-o", creating=out.name)
    if args.reference is not None:
        if len(args.files) != 1:
            raise EvisError("with --reference give only RESULTS.json (the run to compare)")
        thr = 0.5 if args.score_thr is None else args.score_thr
        result = evaluate_fidelity(args.reference, args.files[0], score_thr=thr)
    else:
        if args.score_thr is not None:
            raise EvisError("--score-thr only applies with --reference")
        if len(args.files) != 2:
            raise EvisError("give GT.json RESULTS.json (or --reference REF.json RESULTS.json)")
        result = evaluate(args.files[0], args.files[1])
    payload = result.to_dict()
    if args.output:
        write_json_atomic(args.output, payload)
    if args.json:
        print(json.dumps(payload))
    else:
        print(result.table())
        print(
            f"({result.num_videos} videos, {result.num_gt} ground-truth tracks, {result.num_dt} "
            f"result tracks evaluated, {result.seconds:.2f}s)",
            file=sys.stderr,
        )
    return 0
