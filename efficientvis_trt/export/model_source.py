"""Where an export's PyTorch model comes from: a checkpoint, or a seeded random init.

Also rebuilds that same model later (for `evis export --verify BUNDLE`) and fingerprints
its weights, so a re-check against a different model is an error, not a false verdict.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from efficientvis_trt.config import Config, ModelConfig, get_config
from efficientvis_trt.errors import EvisError

# Fields that may differ between a checkpoint and the export without touching any weight.
_NON_ARCH_FIELDS = ("input_size",)


@dataclass
class Source:
    model: torch.nn.Module  # EfficientVIS in eval mode
    config: Config  # the config stored in the bundle (input_size = export size)
    class_names: list[str]
    clip_len: int  # T of the exported graph
    meta: dict[str, Any]  # metadata['source']


def _check_clip_len(clip_len: int | None) -> None:
    from efficientvis_trt.contract import check_clip_len

    if clip_len is not None:
        check_clip_len(clip_len, "--clip-len")


def _check_exportable(m: ModelConfig) -> None:
    if not m.pooler.aligned:
        raise EvisError("export supports pooler.aligned=True only (the ONNX function uses RoiAlign half_pixel)")


def random_init_model(cfg: Config, seed: int) -> torch.nn.Module:
    """Seeded random weights for speed tests without a checkpoint (as trtexec runs without real weights).

    Beyond the model's own init, proposals get spread sizes and box deltas are non-zero, so
    the graph's boxes move and the RoIAlign level select hits every FPN level: verification
    then checks the whole graph rather than a constant-box special case.
    """
    from efficientvis_trt.model.efficientvis import EfficientVIS

    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's global RNG
        torch.manual_seed(seed)
        model = EfficientVIS(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        n = cfg.model.num_queries
        centre = torch.rand(n, 2, generator=g) * 0.6 + 0.2
        side = torch.exp(torch.empty(n, 2).uniform_(torch.log(torch.tensor(0.05)).item(), 0.0, generator=g))
        model.init_boxes.weight.copy_(torch.cat([centre, side], dim=1))
        for stage in model.stages:
            stage.bbox_delta.weight.normal_(0.0, 0.02, generator=g)
    return model.eval()


def load_source(
    checkpoint: str | os.PathLike | None = None,
    config: str | Config | None = None,
    init: str = "checkpoint",
    seed: int = 0,
    clip_len: int | None = None,
    size: tuple[int, int] | None = None,
) -> Source:
    """The model to export, with --clip-len/--size applied; every bad combination is one EvisError."""
    from efficientvis_trt.io_utils import file_sha256
    from efficientvis_trt.model.checkpoint import default_class_names, load_checkpoint

    _check_clip_len(clip_len)
    if init not in ("checkpoint", "random"):
        raise EvisError(f"--init must be 'checkpoint' or 'random', got {init!r}")
    if init == "random":
        if checkpoint is not None:
            raise EvisError("give either a CHECKPOINT or --init random (with --config PRESET), not both")
        if config is None:
            raise EvisError("--init random needs --config PRESET (tiny, r18, r50 or a YAML file)")
        cfg = get_config(config)
        if clip_len is not None:
            cfg.model.clip_len = clip_len
        if size is not None:
            cfg.model.input_size = list(size)
        cfg.validate()
        _check_exportable(cfg.model)
        model = random_init_model(cfg, seed)
        return Source(
            model,
            cfg,
            default_class_names(cfg.model.num_classes),
            cfg.model.clip_len,
            {"kind": "random", "seed": int(seed), "sha256": f"random-init seed {seed}", "preset": cfg.name},
        )

    if checkpoint is None:
        raise EvisError("give a CHECKPOINT to export, or --config PRESET --init random")
    path = Path(checkpoint)
    model, payload = load_checkpoint(path)
    cfg: Config = model.config.copy()
    if config is not None:
        want = get_config(config).model
        diff = _architecture_difference(want, cfg.model)
        if diff:
            raise EvisError(f"checkpoint {path} is another architecture than --config {config} ({diff})")
    _check_exportable(cfg.model)
    t = clip_len if clip_len is not None else cfg.model.clip_len
    if cfg.model.temporal_pos_embed and t > cfg.model.clip_len:
        raise EvisError(
            f"--clip-len {t} exceeds the checkpoint's clip_len {cfg.model.clip_len}: its time "
            f"embedding has {cfg.model.clip_len} rows (export T <= {cfg.model.clip_len})"
        )
    if size is not None:
        cfg.model.input_size = list(size)
        cfg.validate()
    return Source(
        model,
        cfg,
        list(payload["class_names"]),
        t,
        {"kind": "checkpoint", "path": str(path.resolve()), "sha256": file_sha256(path)},
    )


def _architecture_difference(a: ModelConfig, b: ModelConfig) -> str:
    da, db = a.__dict__, b.__dict__
    for key in da:
        if key in _NON_ARCH_FIELDS:
            continue
        va, vb = da[key], db.get(key)
        if key == "pooler":
            va, vb = {**va.__dict__, "impl": None}, {**vb.__dict__, "impl": None}
        elif hasattr(va, "__dict__"):
            va, vb = va.__dict__, vb.__dict__
        if va != vb:
            return f"{key}: {da[key]!r} vs checkpoint {db.get(key)!r}"
    return ""


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the state dict (names, shapes, dtypes, bytes) in key order."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def rebuild_model(metadata: dict[str, Any], checkpoint: str | os.PathLike | None = None) -> torch.nn.Module:
    """The PyTorch model a bundle was exported from, checked against the recorded weights fingerprint."""
    from efficientvis_trt.model.checkpoint import load_checkpoint

    src = metadata.get("source", {})
    cfg = Config.from_dict(metadata["config"])
    if checkpoint is not None or src.get("kind") == "checkpoint":
        path = Path(checkpoint if checkpoint is not None else src.get("path", ""))
        if not path.is_file():
            raise EvisError(
                f"the bundle's source checkpoint {path} is not there: pass the checkpoint to verify against"
            )
        model, _ = load_checkpoint(path)
    elif src.get("kind") == "random":
        model = random_init_model(cfg, int(src["seed"]))
    else:
        raise EvisError("the bundle's metadata does not say where its weights came from (source.kind)")
    want = metadata.get("weights_sha256")
    if want and weights_fingerprint(model) != want:
        raise EvisError(
            "the PyTorch model rebuilt for verification has other weights than the exported one "
            "(checkpoint changed, or this torch draws other random numbers); pass the right checkpoint"
        )
    return model.eval()
