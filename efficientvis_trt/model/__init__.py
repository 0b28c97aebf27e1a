"""The EfficientVIS model in PyTorch: `build_model`, checkpoints, and the per-clip contract."""

from __future__ import annotations

from pathlib import Path

from efficientvis_trt.config import Config, get_config


def build_model(preset_or_config: str | Path | Config = "r50"):
    """Build an EfficientVIS model from a preset name (`r50`, `r18`, `tiny`), a YAML path, or a Config."""
    from efficientvis_trt.model.efficientvis import EfficientVIS

    return EfficientVIS(get_config(preset_or_config))


__all__ = ["build_model"]
