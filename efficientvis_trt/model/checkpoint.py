"""Our checkpoint format, and torchvision-format ResNet weights.

A checkpoint is one `torch.save` dict: format tag + version, the full config, class
names, the model weights and optional training state. It loads with
`weights_only=True` (no pickled code), and every failure names the file or key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from efficientvis_trt.config import Config
from efficientvis_trt.errors import EvisError
from efficientvis_trt.io_utils import atomic_path

FORMAT = "efficientvis-trt-checkpoint"
FORMAT_VERSION = 1
# The `tiny` model that `python benchmarks/train_synthetic.py` trains on the synthetic benchmark;
# it ships with the package (provenance in tiny_synthetic.json beside it) so the demo can skip training.
SHIPPED_TINY_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "tiny_synthetic.pt"


def shipped_tiny_checkpoint() -> Path | None:
    """The shipped `tiny` synthetic-benchmark checkpoint, or None if this install lacks it."""
    return SHIPPED_TINY_CHECKPOINT if SHIPPED_TINY_CHECKPOINT.is_file() else None


def default_class_names(num_classes: int) -> list[str]:
    return [f"class_{i}" for i in range(num_classes)]


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, class_names: list[str] | None = None, extra: dict[str, Any] | None = None
) -> Path:
    """Atomically write model weights + config + class names (+ `extra`, e.g. optimizer state)."""
    cfg: Config = model.config
    names = list(class_names) if class_names is not None else default_class_names(cfg.model.num_classes)
    if len(names) != cfg.model.num_classes:
        raise EvisError(f"{len(names)} class names for a model with {cfg.model.num_classes} classes")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "class_names": names,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if extra:
        payload["extra"] = extra
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate the container (not the weights against a model)."""
    path = Path(path)
    if not path.is_file():
        raise EvisError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise EvisError(f"checkpoint {path} is empty (0 bytes): an interrupted copy or save?")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise EvisError(
            f"checkpoint {path} is corrupt or not a torch file ({type(exc).__name__}{': ' + first if first else ''})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise EvisError(f"{path} is not an EfficientVIS-TRT checkpoint (no '{FORMAT}' format tag)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise EvisError(f"checkpoint {path} has format version {version}; this toolkit reads version {FORMAT_VERSION}")
    for key in ("config", "class_names", "model"):
        if key not in payload:
            raise EvisError(f"checkpoint {path} lacks '{key}'")
    return payload


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict with one clear error naming the first missing/unexpected/mismatched key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing:
        raise EvisError(
            f"{source}: missing key '{missing[0]}'" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    if unexpected:
        raise EvisError(
            f"{source}: unexpected key '{unexpected[0]}'"
            + (f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise EvisError(f"{source}: shape mismatch for '{k}': file {tuple(v.shape)} vs model {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=True)


def check_finite_weights(state: dict[str, Any], source: str) -> None:
    """NaN/inf weights (a diverged run) are one error naming the first such tensor, before anything runs on them."""
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        raise EvisError(
            f"{source} has NaN/inf weights in '{bad[0]}'{more}: a diverged training run? use an earlier one"
        )


def load_checkpoint(path: str | os.PathLike, expect_config: Config | None = None):
    """Build the model the checkpoint describes and load its weights.

    Returns (model in eval mode, payload). With `expect_config`, a checkpoint of another
    architecture is an error rather than a silent switch.
    """
    from efficientvis_trt.model.efficientvis import EfficientVIS

    payload = read_checkpoint(path)
    try:
        cfg = Config.from_dict(payload["config"]).validate()
    except EvisError as exc:
        raise EvisError(f"checkpoint {path}: bad config ({exc})") from None
    if expect_config is not None and expect_config.model != cfg.model:
        diff = _first_difference(expect_config.model.__dict__, cfg.model.__dict__)
        raise EvisError(f"checkpoint {path} is another architecture than the requested config ({diff})")
    model = EfficientVIS(cfg)
    if not isinstance(payload["model"], dict):
        raise EvisError(f"checkpoint {path}: 'model' is not a state dict")
    check_finite_weights(payload["model"], f"checkpoint {path}")
    load_state_strict(model, payload["model"], f"checkpoint {path}")
    names = payload["class_names"]
    if len(names) != cfg.model.num_classes:
        raise EvisError(f"checkpoint {path}: {len(names)} class names for {cfg.model.num_classes} classes")
    return model.eval(), payload


def _first_difference(a: dict, b: dict) -> str:
    for k in a:
        if a[k] != b.get(k):
            return f"{k}: {a[k]!r} vs checkpoint {b.get(k)!r}"
    return "configs differ"


def load_torchvision_resnet(model: nn.Module, path: str | os.PathLike) -> int:
    """Load a torchvision `resnetXX-*.pth` into `model.backbone.body` by key (fc.* dropped).

    Returns the number of tensors loaded. A missing key or shape mismatch names the key.
    """
    path = Path(path)
    if not path.is_file():
        raise EvisError(f"torchvision weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EvisError(f"{path} is not a readable torch weights file ({type(exc).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise EvisError(f"{path} does not hold a state dict")
    body = model.backbone.body
    own = body.state_dict()
    mapped = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if not any(k.startswith("layer1.") for k in mapped):
        raise EvisError(f"{path} is not a torchvision ResNet weights file (no 'layer1.*' keys)")
    for k in own:
        if k not in mapped:
            raise EvisError(
                f"{path}: missing key '{k}' for a ResNet-{model.config.model.backbone.depth} "
                f"of width {model.config.model.backbone.width}"
            )
        if tuple(mapped[k].shape) != tuple(own[k].shape):
            raise EvisError(
                f"{path}: shape mismatch for '{k}': file {tuple(mapped[k].shape)} vs model {tuple(own[k].shape)}"
            )
    body.load_state_dict({k: mapped[k] for k in own}, strict=True)
    return len(own)
