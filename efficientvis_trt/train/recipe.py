"""The synthetic-data training recipe: make the splits, train `tiny` on the CPU, evaluate on val.

Why a recipe in the package (and not only in benchmarks/): `evis demo` calls it with a
short budget, and benchmarks/train_synthetic.py calls it with the full one, so both train
the same way. The iteration count is either given or derived from a time budget by timing
a few real training steps first (so a slower machine trains fewer iterations, on the same
schedule shape, rather than overrunning the budget).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from efficientvis_trt.config import Config, get_config
from efficientvis_trt.cpu_info import cpu_model
from efficientvis_trt.errors import EvisError
from efficientvis_trt.io_utils import write_json_atomic


@dataclass
class Recipe:
    """Everything the recipe changes from the `tiny` preset, with the reasons."""

    # 128x224 canvas (the data is 180x320): 0.62x the pixels of tiny's 160x288, objects still 25-60 px.
    input_size: tuple[int, int] = (128, 224)
    lr: float = 5e-4  # small transformer + BN backbone from scratch tolerate a high AdamW lr
    batch_size: int = 2
    warmup_iters: int = 100
    lr_steps: tuple[float, ...] = (0.8,)  # used by the "step" schedule only
    lr_gamma: float = 0.1
    # Most AP arrived after the single LR drop of the step schedule; a cosine decay spreads that gain
    # over the run and ends at zero wherever the budget ends (docs/training.md).
    lr_schedule: str = "cosine"
    # Synthetic objects move fast: a box 4 frames later overlaps the first at IoU 0.35 on average, and
    # each query holds one box per clip. 3-frame clips at stride 1, 3 stages, and the mask loss on the last
    # stage only (a third of a step's time) learned fastest in same-seed, same-minutes A/B runs
    # (docs/training.md, "The recipe"; the long run: benchmarks/RESULTS.md, "Training").
    clip_len: int = 3
    max_frame_stride: int = 1
    num_stages: int = 3
    mask_stages: str = "last"
    # Training-only helpers (TrainConfig documents each). From scratch the detector first learns
    # image-independent boxes and reads classes slowly; each helper's AP gain on this data is in
    # benchmarks/RESULTS.md, "Training".
    loss_aux_sem: float = 1.0  # dense per-pixel class loss on P3 (CondInst): backbone signal per pixel
    init_proposals: str = "grid"  # each query starts on its own tile instead of all on the whole image
    gt_proposals: float = 1.0  # + a pass from jittered ground-truth tubes: heads see object RoIs from step one
    # Class weight 5 (preset 2), meant to pull class information into the shared query: 13.7 -> 15.7 AP in
    # one run each, though the class accuracy at the best-placed query did not rise (66 % -> 56 %): seed noise?
    loss_class: float = 5.0
    # 80 videos (~200 object instances) get memorised by colour: pixel-class accuracy 62 % on train
    # vs 24 % on val (chance 20 %); 600 videos cost one minute to generate and force shape/texture.
    train_videos: int = 600
    val_videos: int = 24
    frames: int = 20
    data_seed: int = 0  # train split seed; val uses data_seed + 1
    extra: dict[str, Any] = field(default_factory=dict)  # further TrainConfig overrides
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig overrides

    def config(self, iters: int) -> Config:
        cfg = get_config("tiny")
        cfg.model.input_size = [int(v) for v in self.input_size]
        t = cfg.train
        t.lr, t.batch_size, t.iters = self.lr, self.batch_size, int(iters)
        t.warmup_iters = min(self.warmup_iters, max(1, iters // 5))
        t.lr_steps, t.lr_gamma = list(self.lr_steps), self.lr_gamma
        t.checkpoint_every = max(50, iters // 10)
        t.eval_every = 0
        t.loss_aux_sem, t.init_proposals, t.gt_proposals = self.loss_aux_sem, self.init_proposals, self.gt_proposals
        t.loss_class = self.loss_class
        t.lr_schedule, t.max_frame_stride, t.mask_stages = self.lr_schedule, self.max_frame_stride, self.mask_stages
        cfg.model.clip_len, cfg.model.num_stages = self.clip_len, self.num_stages
        for section, overrides in ((t, self.extra), (cfg.model, self.model)):
            for k, v in overrides.items():
                if not hasattr(section, k):
                    raise EvisError(f"recipe: unknown {type(section).__name__} field {k!r}")
                setattr(section, k, v)
        return cfg.validate()


def machine_description() -> dict[str, Any]:
    """CPU model and core count (for the results record)."""
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def make_split(data_dir: Path, recipe: Recipe, split: str, progress: bool = True) -> Path:
    """One synthetic split of the recipe under `data_dir/split` (kept if already there with the same parameters)."""
    from efficientvis_trt.data.synthetic import make_synthetic

    videos, seed = (
        (recipe.train_videos, recipe.data_seed) if split == "train" else (recipe.val_videos, recipe.data_seed + 1)
    )
    stamp = {"videos": videos, "frames": recipe.frames, "seed": seed}
    stamp_file = data_dir / f"recipe_{split}.json"
    split_dir = data_dir / split
    if (
        stamp_file.is_file()
        and json.loads(stamp_file.read_text()) == stamp
        and (split_dir / "annotations.json").is_file()
    ):
        return split_dir
    make_synthetic(split_dir, split, videos, seed, frames=recipe.frames, progress=progress)
    write_json_atomic(stamp_file, stamp)
    return split_dir


def make_splits(data_dir: Path, recipe: Recipe, progress: bool = True) -> tuple[Path, Path]:
    """The recipe's synthetic train and val splits under `data_dir`."""
    return make_split(data_dir, recipe, "train", progress), make_split(data_dir, recipe, "val", progress)


def seconds_per_iteration(recipe: Recipe, train_dir: Path, scratch: Path, device: str = "cpu", steps: int = 4) -> float:
    """Time real training steps (after one warm-up step) of this recipe on this machine."""
    import numpy as np

    from efficientvis_trt.train.trainer import Trainer

    trainer = Trainer(recipe.config(1000), train_dir, scratch, device=device, progress=False)
    rng = np.random.default_rng(0)
    batches = [
        [trainer.pairs.sample(int(rng.integers(len(trainer.pairs))), rng) for _ in range(recipe.batch_size)]
        for _ in range(steps + 1)
    ]
    trainer.step(batches[0])
    start = time.perf_counter()
    for b in batches[1:]:
        trainer.step(b)
    return (time.perf_counter() - start) / steps


def train_synthetic_recipe(
    out_dir: str | os.PathLike,
    minutes_budget: float = 25.0,
    *,
    iters: int | None = None,
    recipe: Recipe | None = None,
    device: str = "cpu",
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
    resume: bool = False,
    evals: int = 1,
) -> Path:
    """Make the synthetic splits, train `tiny` for `iters` (or what fits `minutes_budget`), evaluate on val.

    -> the final checkpoint (OUT/run/final.pt). OUT/result.json records AP/AP50/AP75, the
    iteration count, wall and CPU time and the machine. `evals` > 1 also evaluates at that many
    evenly spaced points (OUT/run/log.csv: the AP-vs-minutes curve; evaluation time is not counted
    in the training minutes but is in the wall time).
    """
    from efficientvis_trt.train.trainer import load_metrics, train

    recipe = recipe or Recipe()
    out = Path(out_dir)
    data = Path(data_dir) if data_dir is not None else out / "data"
    wall0, cpu0 = time.perf_counter(), time.process_time()
    train_dir, val_dir = make_splits(data, recipe, progress)
    data_s = time.perf_counter() - wall0
    if iters is None:
        if minutes_budget <= 0:
            raise EvisError(f"minutes_budget must be > 0, got {minutes_budget}")
        per_iter = seconds_per_iteration(recipe, train_dir, out / "calibration", device)
        # Evaluation and checkpoints take roughly 10 % on top of the steps.
        iters = max(20, int(0.9 * (minutes_budget * 60.0 - (time.perf_counter() - wall0)) / per_iter))
    cfg = recipe.config(iters)
    if evals > 1:
        cfg.train.eval_every = max(1, iters // evals)
    run = out / "run"
    t0, c0 = time.perf_counter(), time.process_time()
    final = train(
        cfg,
        train_dir,
        run,
        iters=iters,
        device=device,
        val_dir=val_dir,
        progress=progress,
        resume=resume and (run / "last.pt").is_file(),
    )
    train_wall, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    metrics = load_metrics(run)
    result = {
        "AP": metrics.get("AP"),
        "AP50": metrics.get("AP50"),
        "AP75": metrics.get("AP75"),
        "iterations": iters,
        "train_wall_s": round(train_wall, 1),
        "train_cpu_s": round(train_cpu, 1),
        "total_wall_s": round(time.perf_counter() - wall0, 1),
        "total_cpu_s": round(time.process_time() - cpu0, 1),
        "data_s": round(data_s, 1),
        "checkpoint": str(final),
        "recipe": asdict(recipe),
        "machine": machine_description(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "stats": metrics,
    }
    write_json_atomic(out / "result.json", result)
    return final
