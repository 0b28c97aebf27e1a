"""YouTube-VIS evaluation: mask AP/AR exactly as the official evaluator, plus run-vs-run fidelity.

    from efficientvis_trt.eval import evaluate, evaluate_fidelity
    res = evaluate("valid.json", "results.json")        # -> EvalResult
    res.stats["AP"], res.per_category, print(res.table())
    drift = evaluate_fidelity("fp32.json", "int8.json", score_thr=0.5)

Names resolve lazily, so `evis --help` (which imports the CLI module) never loads numpy or
pycocotools.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AREA_LABELS",
    "AREA_RANGES",
    "EvalResult",
    "IOU_THRS",
    "MAX_DETS",
    "REC_THRS",
    "STAT_KEYS",
    "evaluate",
    "evaluate_fidelity",
    "fidelity_ground_truth",
]


_FIDELITY = ("evaluate_fidelity", "fidelity_ground_truth")


def __getattr__(name: str) -> Any:
    if name in _FIDELITY:
        from efficientvis_trt.eval import fidelity

        return getattr(fidelity, name)
    if name in __all__:
        from efficientvis_trt.eval import ytvis_eval

        return getattr(ytvis_eval, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
