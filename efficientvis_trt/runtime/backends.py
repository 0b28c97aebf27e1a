"""Backends: a dict of named arrays in, a dict of named arrays out (DESIGN §3 names)."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from efficientvis_trt.errors import BackendUnavailable, EvisError


class Backend(Protocol):
    name: str
    precision: str

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One clip: `frames`, `query_in`, `boxes_in` -> the five DESIGN §3 outputs."""
        ...


class TorchBackend:
    """Eager PyTorch: fp32 on CPU or CUDA, fp16 (autocast) on CUDA."""

    name = "torch"

    def __init__(self, model, device: str = "cpu", precision: str = "fp32"):
        import torch

        if precision not in ("fp32", "fp16"):
            raise EvisError(f"the torch backend runs fp32 or fp16, not {precision} (int8 is an ONNX/TensorRT graph)")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("CUDA was asked for but torch sees no CUDA device")
        if precision == "fp16" and not device.startswith("cuda"):
            raise EvisError("fp16 PyTorch needs a CUDA device (--device cuda); on CPU use fp32 or ONNX Runtime")
        self.torch = torch
        self.device = torch.device(device)
        self.precision = precision
        self.model = model.to(self.device).eval()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16,
                                                    enabled=self.precision == "fp16"):
            out = self.model.forward_clip(*(torch.from_numpy(np.ascontiguousarray(inputs[k])).to(self.device)
                                            for k in ("frames", "query_in", "boxes_in")))
        return {k: v.float().cpu().numpy() for k, v in out.items()}
