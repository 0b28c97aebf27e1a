"""MultiLevelRoIAlign: the Triton kernel against the PyTorch reference at the r50 shapes.

    python benchmarks/roi_align_kernel.py                 # CUDA: kernel and reference, fp32 and fp16
    python benchmarks/roi_align_kernel.py --device cpu    # the reference only (the kernel needs CUDA)

Shapes: one r50 clip as the exported graph pools it per stage: T=5 frames x N=10 boxes, FPN
P2-P5 of a 384x640 canvas at C=256, 14x14 bins, sampling ratio 2, boxes spread over all four
levels (some partly outside the image). Times are the median of `--iters` timed calls after
warm-up (on a GPU the device is synchronised around each call); agreement is the max abs difference.
Prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from efficientvis_trt.config import get_config
from efficientvis_trt.model.roi_align import multi_level_roi_align_reference
from efficientvis_trt.plugins.spec import RoIAlignAttrs


def r50_inputs(device: str, dtype: torch.dtype, frames: int = 5, boxes: int = 10, seed: int = 0):
    """FPN levels [T, 256, H/s, W/s] of a 384x640 canvas and boxes [T, N, 4] covering every level."""
    cfg = get_config("r50").model
    h, w = cfg.input_size
    g = torch.Generator().manual_seed(seed)
    feats = [
        torch.randn(frames, cfg.hidden_dim, h // 2**lvl, w // 2**lvl, generator=g).to(device, dtype)
        for lvl in range(2, 6)
    ]
    size = torch.exp(torch.empty(frames, boxes, 1).uniform_(3.0, 6.2, generator=g))  # 20..490 px: P2..P5
    aspect = torch.exp(torch.empty(frames, boxes, 1).uniform_(-0.7, 0.7, generator=g))
    wh = torch.cat([size * aspect.sqrt(), size / aspect.sqrt()], -1)
    centre = torch.rand(frames, boxes, 2, generator=g) * torch.tensor([w + 40.0, h + 40.0]) - 20.0
    rois = torch.cat([centre - wh / 2, centre + wh / 2], -1).to(device)
    return feats, rois, RoIAlignAttrs.from_pooler(cfg.pooler)


def time_call(fn, iters: int, warmup: int, cuda: bool) -> float:
    """Median milliseconds per call (efficientvis_trt.timing; on CUDA the device is synchronised per call)."""
    from efficientvis_trt.timing import latency_stats, time_calls

    return latency_stats(time_calls(fn, iters, warmup, sync=torch.cuda.synchronize if cuda else None)).p50_ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda asked for, but torch sees no CUDA device", file=sys.stderr)
        return 2
    machine = torch.cuda.get_device_name() if cuda else (platform.processor() or "CPU")
    print(
        f"# MultiLevelRoIAlign, r50 shapes (5 x 10 boxes, 4 levels of 384x640, C=256, 14x14, ratio 2) on {machine}, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n"
    )
    print("| dtype | reference ms | Triton kernel ms | speed-up | max abs diff |")
    print("|---|---|---|---|---|")
    for dtype in (torch.float32, torch.float16) if cuda else (torch.float32,):
        feats, rois, a = r50_inputs(args.device, dtype)

        def reference(feats=feats, rois=rois, a=a):
            return multi_level_roi_align_reference(feats, rois, a)

        ref_ms = time_call(reference, args.iters, args.warmup, cuda)
        if cuda:
            from efficientvis_trt.plugins.triton_roi_align import multi_level_roi_align_triton

            def kernel(feats=feats, rois=rois, a=a):
                return multi_level_roi_align_triton(feats, rois, a)

            kernel_ms = time_call(kernel, args.iters, args.warmup, True)
            diff = (multi_level_roi_align_triton(feats, rois, a).float() - reference().float()).abs().max().item()
            print(f"| {str(dtype)[6:]} | {ref_ms:.3f} | {kernel_ms:.3f} | {ref_ms / kernel_ms:.1f}x | {diff:.2e} |")
        else:
            print(
                f"| {str(dtype)[6:]} | {ref_ms:.3f} | n/a: the kernel runs on CUDA (CPU only has the interpreter) | | |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
