"""Typed configuration: dataclasses <-> YAML, with the presets `r50`, `r18` and `tiny`.

Every choice of docs/design.md, "The model" that the paper text does not pin down is a
field here, so a checkpoint says exactly which variant it is.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from efficientvis_trt.errors import EvisError


@dataclass
class BackboneConfig:
    depth: int = 50  # ResNet depth: 18, 34, 50 or 101
    width: int = 64  # stem width; 64 is the standard ResNet, smaller for CPU demos
    norm: str = "frozen_bn"  # "bn" (train from scratch) or "frozen_bn" (ImageNet-initialised)
    pretrained: str | None = None  # torchvision-format ResNet weights file


@dataclass
class PoolerConfig:
    """Multi-level RoIAlign, detectron2 ROIPooler semantics."""

    resolution: int = 14  # one RoIAlign per stage at 14x14 feeds the mask head...
    box_pool_stride: int = 2  # ...and 2x2 average pooling of it gives the 7x7 box features
    sampling_ratio: int = 2  # 14x14 at ratio 2 + 2x2 avg == 7x7 at ratio 4 exactly
    canonical_box_size: float = 224.0
    canonical_level: int = 4
    aligned: bool = True
    min_level: int = 2  # FPN P2..P5 (strides 4..32)
    max_level: int = 5
    impl: str = "reference"  # "reference" (pure PyTorch) or "triton" (CUDA kernel)


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pooler: PoolerConfig = field(default_factory=PoolerConfig)
    hidden_dim: int = 256  # C: FPN width and query width
    num_queries: int = 10  # N
    num_stages: int = 6  # M
    num_classes: int = 40  # K (YouTube-VIS 2019 has 40)
    clip_len: int = 5  # T
    input_size: list[int] = field(default_factory=lambda: [384, 640])  # H, W of the letterboxed canvas
    num_heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.0
    dim_dynamic: int = 64  # DynamicConv bottleneck (256 -> 64 -> 256)
    temporal_window: int = 1  # dynamic conv over frames t-w .. t+w
    temporal_tau: float = 1.0  # softmax temperature of the cosine-similarity weights
    temporal_pos_embed: bool = True  # learned per-frame embedding added to the broadcast queries
    num_cls_layers: int = 1
    num_reg_layers: int = 3
    mask_convs: int = 4
    mask_dim: int = 256
    prior_prob: float = 0.01  # focal-loss bias init of the class logits
    bbox_weights: list[float] = field(default_factory=lambda: [2.0, 2.0, 1.0, 1.0])
    # next clip's proposals: "last" (this clip's last-frame boxes), "velocity" (those moved on by the clip's
    # motion, EfficientVIS._extrapolated) or "init" (the learned boxes)
    carry_boxes: str = "last"
    # the carried boxes' width and height times this (centre kept): a larger RoI still holds an object
    # that moved during the clip gap; must be trained with (docs/training.md, "The carried state")
    carry_box_scale: float = 1.0
    # next clip's queries: "mean" over this clip's frames (the paper's correspondence) or "last" (the
    # last frame's, in step with the last-frame box carried beside it)
    carry_query: str = "mean"
    pixel_mean: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])  # RGB
    pixel_std: list[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])


@dataclass
class TrainConfig:
    lr: float = 2.5e-5
    weight_decay: float = 1e-4
    batch_size: int = 1  # pairs of clips per iteration
    iters: int = 10000
    warmup_iters: int = 200
    lr_steps: list[float] = field(default_factory=lambda: [0.75, 0.9])  # fractions of iters
    lr_gamma: float = 0.1
    clip_grad_norm: float = 1.0
    checkpoint_every: int = 1000
    eval_every: int = 0  # 0 = only at the end
    num_workers: int = 0
    seed: int = 0
    amp: bool = True  # on CUDA only
    # Matching costs and loss weights (docs/design.md, "The model").
    cost_class: float = 2.0
    cost_l1: float = 5.0
    cost_giou: float = 2.0
    loss_class: float = 2.0
    loss_l1: float = 5.0
    loss_giou: float = 2.0
    loss_mask_bce: float = 5.0
    loss_mask_dice: float = 5.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # Augmentation.
    hflip_prob: float = 0.5
    scale_jitter: list[float] = field(default_factory=lambda: [0.8, 1.2])
    max_frame_stride: int = 2
    # Training-only choices (efficientvis_trt/train). Appended, never renamed.
    match_per_stage: bool = True  # deep supervision: Hungarian per stage (Sparse R-CNN) or the last stage's reused
    loss_aux_sem: float = 0.0  # CondInst-style auxiliary semantic-segmentation loss on P3 (0 = off, the paper recipe)
    deterministic: bool = (
        False  # torch.use_deterministic_algorithms while training: bit-exact --resume with >1 CPU thread
    )
    init_proposals: str = "image"  # initial learned proposals: "image" (whole image, Sparse R-CNN) or "grid" (tiles)
    gt_proposals: float = (
        0.0  # weight of an extra clip-1 pass from jittered ground-truth tubes (0 = off; train/trainer.py)
    )
    # mask heads and losses on "all" stages (QueryInst deep supervision) or only the "last": about a third
    # of a tiny step goes to the earlier stages' masks, which inference never reads
    mask_stages: str = "all"
    lr_schedule: str = "step"  # "step" (x lr_gamma at each of lr_steps) or "cosine" (to 0 after warm-up)
    # consecutive clips per training sample, each started from the one before's carried state: 2 is the
    # paper's pair; more teaches the carry of a carry, which every clip after the second sees at inference
    chain_clips: int = 2


@dataclass
class Config:
    name: str = "r50"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # ---- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return _from_dict(cls, data, "config")

    def save_yaml(self, path: str | Path) -> None:
        from efficientvis_trt.io_utils import write_text_atomic

        write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load_yaml(cls, path: str | Path) -> Config:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise EvisError(f"config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise EvisError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise EvisError(f"config file {path} must hold a mapping")
        cfg = cls.from_dict(data)
        cfg.validate()
        return cfg

    def copy(self) -> Config:
        return copy.deepcopy(self)

    def validate(self) -> Config:
        """Reject a config that cannot build, train or export, with one line naming the field."""
        from efficientvis_trt.contract import check_clip_len, check_input_size

        m = self.model
        check_input_size(list(m.input_size) if isinstance(m.input_size, (list, tuple)) else m.input_size)
        for name in (
            "hidden_dim",
            "num_queries",
            "num_stages",
            "num_classes",
            "num_heads",
            "ffn_dim",
            "dim_dynamic",
            "mask_dim",
        ):
            if getattr(m, name) < 1:
                raise EvisError(f"{name} must be >= 1, got {getattr(m, name)}")
        if m.pooler.max_level - m.pooler.min_level != 3:
            raise EvisError(
                f"pooler levels {m.pooler.min_level}..{m.pooler.max_level} must span the 4 FPN levels "
                "P2..P5 the backbone produces"
            )
        check_clip_len(m.clip_len)
        if m.backbone.depth not in (18, 34, 50, 101):
            raise EvisError(f"backbone depth {m.backbone.depth} not supported (18, 34, 50, 101)")
        if m.hidden_dim % m.num_heads:
            raise EvisError(f"hidden_dim {m.hidden_dim} must be divisible by num_heads {m.num_heads}")
        if m.pooler.sampling_ratio <= 0:
            raise EvisError("pooler.sampling_ratio must be > 0 (adaptive sampling does not export to TensorRT)")
        if m.pooler.resolution % m.pooler.box_pool_stride:
            raise EvisError("pooler.resolution must be divisible by pooler.box_pool_stride")
        if m.carry_boxes not in ("last", "velocity", "init"):
            raise EvisError(f"carry_boxes must be 'last', 'velocity' or 'init', got {m.carry_boxes!r}")
        if m.carry_query not in ("mean", "last"):
            raise EvisError(f"carry_query must be 'mean' or 'last', got {m.carry_query!r}")
        if not isinstance(m.carry_box_scale, (int, float)) or not 0.5 <= m.carry_box_scale <= 4.0:
            raise EvisError(f"carry_box_scale must be a number in [0.5, 4], got {m.carry_box_scale!r}")
        if m.pooler.impl not in ("reference", "triton"):
            raise EvisError(f"pooler.impl must be 'reference' or 'triton', got {m.pooler.impl!r}")
        t = self.train
        if t.mask_stages not in ("all", "last"):
            raise EvisError(f"train.mask_stages must be 'all' or 'last', got {t.mask_stages!r}")
        if not isinstance(t.chain_clips, int) or t.chain_clips < 2:
            raise EvisError(f"train.chain_clips must be an integer >= 2, got {t.chain_clips!r}")
        if t.lr_schedule not in ("step", "cosine"):
            raise EvisError(f"train.lr_schedule must be 'step' or 'cosine', got {t.lr_schedule!r}")
        if m.backbone.norm not in ("bn", "frozen_bn"):
            raise EvisError(f"backbone.norm must be 'bn' or 'frozen_bn', got {m.backbone.norm!r}")
        return self


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise EvisError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise EvisError(f"{where}: unknown field(s) {', '.join(unknown)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(hint, value, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = get_origin(hint)
    if origin is Union or (origin is not None and type(None) in get_args(hint)):
        args = [a for a in get_args(hint) if a is not type(None)]
        return None if value is None else _coerce(args[0], value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise EvisError(f"{where}: expected a list, got {value!r}")
        (item,) = get_args(hint)
        return [_coerce(item, v, where) for v in value]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise EvisError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


# ---- presets ---------------------------------------------------------------------


def _r50() -> Config:
    return Config(name="r50")


def _r18() -> Config:
    cfg = Config(name="r18")
    cfg.model.backbone.depth = 18
    return cfg


def _tiny() -> Config:
    """Small enough for tests and CPU demos: one clip forward well under 0.2 s on 2 cores."""
    cfg = Config(name="tiny")
    m = cfg.model
    m.backbone = BackboneConfig(depth=18, width=16, norm="bn")
    m.hidden_dim = 64
    m.num_queries = 10
    m.num_stages = 2
    m.num_classes = 5
    m.clip_len = 5
    m.input_size = [160, 288]
    m.num_heads = 4
    m.ffn_dim = 256
    m.dim_dynamic = 16
    m.mask_dim = 32
    m.mask_convs = 2
    m.pooler.canonical_box_size = 56.0  # keeps the level rule spreading boxes over P2..P5 at this input size
    t = cfg.train
    t.lr = 2e-4
    t.batch_size = 2
    t.iters = 3000
    t.warmup_iters = 100
    t.checkpoint_every = 500
    return cfg


PRESETS = {"r50": _r50, "r18": _r18, "tiny": _tiny}


def get_config(preset_or_path: str | Path | Config) -> Config:
    """A preset name, a YAML path, or a Config (returned as a validated copy)."""
    if isinstance(preset_or_path, Config):
        return preset_or_path.copy().validate()
    key = str(preset_or_path)
    if key in PRESETS:
        return PRESETS[key]().validate()
    if key.endswith((".yaml", ".yml")) or Path(key).is_file():
        return Config.load_yaml(key)
    raise EvisError(f"unknown config {key!r}: use one of {', '.join(PRESETS)} or a YAML file")
