"""The training loop: clip pairs -> EfficientVIS -> matching + losses -> AdamW, with exact resume and DDP.

Why it is built this way:

* Exact resume. Everything random is a pure function of (seed, rank, position in the
  sample stream): sample i of the stream is video `DistributedSampler(epoch)[offset]`
  drawn with its own numpy generator seeded by (seed, rank, i); the learning rate is a
  pure function of the iteration. A checkpoint carries weights, AdamW state, grad-scaler
  state, torch RNG state and the iteration, so `--resume` continues bit-for-bit.
* DDP under torchrun with the same command: RANK/WORLD_SIZE/LOCAL_RANK in the
  environment start a process group (nccl on CUDA, gloo on CPU); the whole clip-pair (or chain)
  forward is one module (`PairForward`) wrapped in DistributedDataParallel so its
  gradient hooks see a normal forward; only rank 0 writes files and evaluates.
* AMP (float16 autocast + GradScaler) on CUDA only; losses are computed in float32.
* Optional training-only helpers (TrainConfig, all off by default = the paper recipe):
  `loss_aux_sem` (auxiliary semantic loss on P3, train/semantic_aux.py), `init_proposals="grid"`
  (tiled initial proposals), `gt_proposals` (an extra pass from jittered ground-truth
  tubes, see `gt_proposal_tubes`), `deterministic`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from efficientvis_trt.config import Config, get_config
from efficientvis_trt.contract import TrackletState
from efficientvis_trt.data.ytvis import resolve_annotations
from efficientvis_trt.errors import EvisError
from efficientvis_trt.io_utils import write_json_atomic, write_text_atomic
from efficientvis_trt.train.losses import LOSS_TERMS, SetCriterion

log = logging.getLogger(__name__)

LAST, FINAL = "last.pt", "final.pt"
LOG_FIELDS = (
    "iter",
    "lr",
    "loss",
    *LOSS_TERMS,
    "loss_aux_sem",
    "loss_gt",
    "grad_norm",
    "sec_per_iter",
    "elapsed_s",
    "AP",
    "AP50",
    "AP75",
)
_SHORT = {
    "loss_class": "cls",
    "loss_l1": "l1",
    "loss_giou": "giou",
    "loss_mask_bce": "bce",
    "loss_mask_dice": "dice",
    "loss_aux_sem": "aux",
    "loss_gt": "gt",
}


# ---- data ----------------------------------------------------------------------------


class SampleStream(torch.utils.data.Dataset):
    """Item i = sample at position `start + i` of this rank's endless, reproducible sample stream."""

    def __init__(self, pairs, start: int, length: int, seed: int, rank: int, world_size: int):
        from torch.utils.data.distributed import DistributedSampler

        self.pairs, self.start, self.length, self.seed, self.rank = pairs, start, length, seed, rank
        self.sampler = DistributedSampler(pairs, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self._epoch, self._order = -1, []

    def __len__(self) -> int:
        return self.length

    def index_at(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.sampler))
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._epoch, self._order = epoch, list(iter(self.sampler))
        return self._order[offset]

    def __getitem__(self, i: int) -> dict:
        position = self.start + i
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5A3D1E, self.rank, position]))
        return self.pairs.sample(self.index_at(position), rng)


def stack_clip(samples: list[dict], c: int, device: torch.device) -> tuple[Tensor, list[dict]]:
    """Clip `c` of every sample -> (frames [B, T, H, W, 3] uint8, targets per sample on `device`)."""
    frames = torch.stack([s["clips"][c]["frames"] for s in samples]).to(device, non_blocking=True)
    targets = [
        {k: s["clips"][c][k].to(device, non_blocking=True) for k in ("labels", "boxes", "masks", "valid")}
        for s in samples
    ]
    return frames, targets


# ---- model pieces ----------------------------------------------------------------------


class PairForward(nn.Module):
    """The clips of a sample in one forward (so DDP sees one normal forward per step).

    Clip 1 starts from the learned initial state; clip k + 1 from clip k's query_out (gradients
    flow through it) and boxes_out (detached), as the runtime carries them. A pair is the paper's
    recipe; `train.chain_clips` > 2 adds clips 3.. (`later`), so the heads also learn from a state
    that was carried more than once, as every clip after the second is at inference. With an
    `aux_head`, the backbone's FPN output of clips 1 and 2 is captured by a forward hook and
    also returns the auxiliary semantic logits ([B*T, K, H/8, W/8] per clip, else None).
    """

    def __init__(self, model: nn.Module, aux_head: nn.Module | None = None, all_masks: bool = True):
        super().__init__()
        self.model = model
        self.aux_head = aux_head
        self.all_masks = all_masks
        self._features: list[list[Tensor]] = []
        self._capturing = False
        self._hook = model.backbone.register_forward_hook(self._capture) if aux_head is not None else None

    def _capture(self, _module: nn.Module, _inputs: Any, out: list[Tensor]) -> None:
        if self._capturing:  # only inside our forward: evaluation must not pile up features
            self._features.append(out)

    def close(self) -> None:
        """Detach the hook from the model (it outlives training otherwise)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def forward(self, frames1: Tensor, frames2: Tensor, gt_tubes: Tensor | None = None, later: tuple = ()):
        """-> (stages1, stages2, aux1, aux2, gt_stages, later_stages): `gt_stages` is clip 1's stages run a
        second time on the same features from the proposals `gt_tubes` [B, N, T, 4] (None if not given);
        `later_stages` the stages of each clip in `later` (frames of clips 3.., each carried on)."""
        m = self.model
        b, hw = frames1.shape[0], tuple(frames1.shape[2:4])
        self._features, self._capturing = [], self.aux_head is not None
        query0 = m.init_query.weight[None].expand(b, -1, -1)
        boxes0 = m.init_boxes.weight[None].expand(b, -1, -1)
        features1 = m.backbone(m.preprocess(frames1))
        masks = self.all_masks
        stages1 = m.forward_stages(frames1, query0, boxes0, all_masks=masks, features=features1)
        gt_stages = None
        if gt_tubes is not None:
            gt_stages = m.forward_stages(frames1, query0, gt_tubes, all_masks=masks, features=features1)
        chain, boxes_in = [stages1], boxes0
        for frames in (frames2, *later):
            carry = TrackletState.from_outputs(m.outputs_from_last_stage(chain[-1][-1], boxes_in, hw))
            boxes_in = carry.boxes.detach()
            chain.append(m.forward_stages(frames, carry.queries, boxes_in, all_masks=masks))
        aux = (None, None)
        if self.aux_head is not None:
            aux = tuple(self.aux_head(f) for f in self._features[:2])
        self._features, self._capturing = [], False
        return stages1, chain[1], aux[0], aux[1], gt_stages, chain[2:]


def gt_proposal_tubes(
    targets: list[dict],
    init_boxes: Tensor,
    clip_len: int,
    jitter: tuple[float, float] = (0.2, 0.3),
    generator: torch.Generator | None = None,
) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """Training-only proposals: query i < G starts on ground-truth tube i, jittered; the rest on `init_boxes`.

    Why: from scratch, the matched queries of the normal pass sit on loose boxes for
    thousands of iterations, so the heads rarely see an object's RoI features and learn
    class and mask slowly. A second pass from noisy ground-truth tubes (as Faster R-CNN
    adds ground truth to its proposals, and DN-DETR denoises noised boxes) gives them
    well-placed RoIs from the first step, with a fixed assignment (query i <-> tube i).
    Jitter: centre +-`jitter[0]` x size, size x exp(+-`jitter[1]`), per frame. A frame where
    the object is absent gets its nearest present frame's box (a tube, as the model expects).

    -> (boxes [B, N, T, 4] normalised cxcywh, per-element (query indices, gt indices)).
    """
    n = init_boxes.shape[0]
    tubes, assignment = [], []
    frames = torch.arange(clip_len)
    for tg in targets:
        valid = tg["valid"].bool().cpu()
        present = torch.nonzero(valid.any(dim=1)).reshape(-1)[:n]
        boxes = init_boxes.detach().cpu().float()[:, None, :].expand(n, clip_len, 4).clone()
        if present.numel():
            gt, v = tg["boxes"].detach().cpu().float()[present], valid[present]  # [G, T, 4], [G, T]
            gap = (frames[:, None] - frames[None, :]).abs()[None].float() + (~v[:, None, :]) * 1e6
            gt = torch.gather(gt, 1, gap.argmin(-1)[..., None].expand(-1, -1, 4))  # nearest present frame
            u = torch.rand(gt.shape, generator=generator) * 2 - 1
            cxcy = gt[..., :2] + u[..., :2] * jitter[0] * gt[..., 2:]
            wh = gt[..., 2:] * torch.exp(u[..., 2:] * jitter[1])
            boxes[: present.numel()] = torch.cat([cxcy.clamp(0.0, 1.0), wh.clamp(1.0 / 64, 1.0)], dim=-1)
        tubes.append(boxes)
        assignment.append((torch.arange(present.numel()), present))
    device = init_boxes.device
    return torch.stack(tubes).to(device), [(q.to(device), g.to(device)) for q, g in assignment]


def grid_proposals(n: int, aspect: float) -> Tensor:
    """`n` normalised cxcywh boxes tiling the canvas (rows x cols chosen for the aspect W/H), row-major.

    Why: whole-image proposals give every query the same RoI features at the start, so
    the detector first learns image-independent boxes; tiles give each query its own
    region from step one. The layout covers the canvas with the fewest spare tiles, then the
    squarest tiles in pixels; spare tiles of the last row are dropped.
    """

    def score(rows: int) -> tuple[int, float]:
        cols = math.ceil(n / rows)
        return rows * cols - n, abs(math.log(aspect * rows / cols))

    rows = min(range(1, n + 1), key=score)
    cols = math.ceil(n / rows)
    boxes = [[(c + 0.5) / cols, (r + 0.5) / rows, 1.0 / cols, 1.0 / rows] for r in range(rows) for c in range(cols)]
    return torch.tensor(boxes[:n], dtype=torch.float32)


def lr_factor(
    iteration: int,
    total: int,
    warmup: int,
    steps: list[float],
    gamma: float,
    warmup_factor: float = 0.001,
    schedule: str = "step",
) -> float:
    """Linear warmup from `warmup_factor`, then x`gamma` at each fraction in `steps` of `total`,
    or (`schedule="cosine"`) a half cosine from 1 after the warm-up to 0 at `total`."""
    if schedule == "cosine":
        progress = min(1.0, max(0, iteration - warmup) / max(1, total - warmup))
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        factor = gamma ** sum(iteration >= int(round(s * total)) for s in steps)
    if iteration < warmup:
        alpha = iteration / max(1, warmup)
        factor *= warmup_factor * (1 - alpha) + alpha
    return factor


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> DistInfo:
    """Start a process group when launched by torchrun (RANK and WORLD_SIZE set)."""
    import torch.distributed as dist

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, False)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local, True)


# ---- log -------------------------------------------------------------------------------


class CsvLog:
    """RUN/log.csv: one row per logging interval and per evaluation; resume drops rows past the checkpoint."""

    def __init__(self, path: Path, resume_iter: int | None):
        self.path = path
        if resume_iter is not None and path.is_file():
            rows = [r for r in csv.DictReader(io.StringIO(path.read_text())) if int(r.get("iter") or 0) <= resume_iter]
        else:
            rows = []
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(path, buf.getvalue())

    def write(self, row: dict[str, Any]) -> None:
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=LOG_FIELDS, extrasaction="ignore").writerow(
            {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        )
        with open(self.path, "a") as f:
            f.write(buf.getvalue())


# ---- evaluation ------------------------------------------------------------------------


def evaluate_model(model: nn.Module, val_json: Path, device: str = "cpu", progress: bool = True) -> dict[str, float]:
    """Score the model on a YouTube-VIS split through the same path as `evis bench --data`; -> stats in 0-1."""
    from efficientvis_trt.eval.split import evaluate_split
    from efficientvis_trt.runtime.predictor import Predictor

    was_training = model.training
    try:
        return evaluate_split(Predictor(model, device=device), val_json, progress=progress)
    finally:
        model.train(was_training)


# ---- the trainer -----------------------------------------------------------------------


class Trainer:
    """Holds model, optimizer and data for one run; `run()` trains to `iters` and returns RUN/final.pt."""

    def __init__(
        self,
        cfg: Config | str,
        data_dir: str | os.PathLike,
        out_dir: str | os.PathLike,
        iters: int | None = None,
        resume: bool = False,
        device: str = "cpu",
        val_dir: str | os.PathLike | None = None,
        progress: bool = True,
        log_every: int = 20,
    ):
        from efficientvis_trt.data.ytvis import YTVISClipPairs, load_ytvis
        from efficientvis_trt.model.efficientvis import EfficientVIS

        cfg = get_config(cfg)
        self.out = Path(out_dir)
        self.progress, self.log_every = progress, max(1, int(log_every))
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EvisError("--device cuda asked for, but torch sees no CUDA device")
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise EvisError(f"device must be cpu or cuda, got {device!r}")
        # Data first (the number of classes comes from it), so bad input fails before any process group.
        train_json = resolve_annotations(data_dir, "training data")
        data = load_ytvis(train_json)
        if data.num_classes < 1:
            raise EvisError(f"{train_json} has no categories")
        self.class_names = list(data.categories)
        self.val_json = resolve_annotations(val_dir, "validation data") if val_dir is not None else None
        self.dist = setup_distributed(device)
        if device.startswith("cuda") and self.dist.owns_group:
            device = f"cuda:{self.dist.local_rank}"
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        self.device = torch.device(device)
        cfg.model.num_classes = data.num_classes
        if iters is not None:
            if iters < 1:
                raise EvisError(f"--iters must be >= 1, got {iters}")
            cfg.train.iters = int(iters)
        t = cfg.train
        if t.batch_size < 1 or t.lr <= 0:
            raise EvisError(f"need batch size >= 1 and lr > 0, got {t.batch_size} and {t.lr}")
        self.cfg = cfg.validate()

        resume_payload = None
        if resume:
            from efficientvis_trt.model.checkpoint import read_checkpoint

            last = self.out / LAST
            if not last.is_file():
                raise EvisError(f"--resume: no checkpoint {last} to resume from")
            resume_payload = read_checkpoint(last)
            saved = Config.from_dict(resume_payload["config"])
            if saved.model != cfg.model:
                raise EvisError(
                    f"--resume: {last} is another architecture than the requested config "
                    "(different preset, data classes or model fields)"
                )
            if "extra" not in resume_payload or "iteration" not in resume_payload["extra"]:
                raise EvisError(f"--resume: {last} carries no training state")

        torch.manual_seed(t.seed)
        self.model = EfficientVIS(cfg).to(self.device)
        if cfg.model.backbone.pretrained and resume_payload is None:
            from efficientvis_trt.model.checkpoint import load_torchvision_resnet

            load_torchvision_resnet(self.model, cfg.model.backbone.pretrained)
        if t.init_proposals == "grid":
            h, w = cfg.model.input_size
            with torch.no_grad():
                self.model.init_boxes.weight.copy_(grid_proposals(cfg.model.num_queries, w / h))
        elif t.init_proposals != "image":
            raise EvisError(f"train.init_proposals must be 'image' or 'grid', got {t.init_proposals!r}")
        self.model.train()
        self.aux_head = None
        if t.loss_aux_sem > 0:
            from efficientvis_trt.train.semantic_aux import SemanticAuxHead

            self.aux_head = SemanticAuxHead(cfg.model.hidden_dim, cfg.model.num_classes).to(self.device).train()
        self.pair_forward = PairForward(self.model, self.aux_head, all_masks=t.mask_stages == "all")
        self.net: nn.Module = self.pair_forward
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # Multi-level RoIAlign pools only the FPN levels some box falls on, so a level's
            # convs can go unused in an iteration: let DDP look for them.
            self.net = DDP(self.pair_forward, device_ids=ids, find_unused_parameters=True)
        self.criterion = SetCriterion(t)
        params = [p for p in self.trained_parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        self.amp = bool(t.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.iteration, self.elapsed = 0, 0.0
        self.last_eval: dict[str, float] | None = None
        # Its own stream (the DataLoader draws from the global one once per run, not per step),
        # saved with the checkpoint so a resumed run jitters exactly as an uninterrupted one.
        self.gt_jitter = torch.Generator().manual_seed(t.seed * 1000 + 7 + self.dist.rank)
        if resume_payload is not None:
            self._load_state(resume_payload)

        self.pairs = YTVISClipPairs(
            data,
            cfg.model.clip_len,
            cfg.model.input_size,
            hflip_prob=t.hflip_prob,
            scale_jitter=t.scale_jitter,
            max_frame_stride=t.max_frame_stride,
            clips=t.chain_clips,
        )
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            cfg.save_yaml(self.out / "config.yaml")
            self.log = CsvLog(self.out / "log.csv", self.iteration if resume else None)

    def trained_parameters(self) -> list[nn.Parameter]:
        """Model parameters, then the auxiliary head's (a fixed order: the optimizer state depends on it)."""
        params = list(self.model.parameters())
        if self.aux_head is not None:
            params += list(self.aux_head.parameters())
        return params

    # ---- state -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything `--resume` needs beyond the weights (all weights_only-loadable)."""
        t = self.cfg.train
        rng = {"torch": torch.get_rng_state(), "gt_jitter": self.gt_jitter.get_state()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "iteration": self.iteration,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {
                "kind": f"warmup_{t.lr_schedule}",
                "last_iter": self.iteration,
                "total": t.iters,
                "warmup": t.warmup_iters,
                "steps": list(t.lr_steps),
                "gamma": t.lr_gamma,
            },
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "elapsed_s": self.elapsed,
            "world_size": self.dist.world_size,
            "last_eval": self.last_eval or {},
            "aux_head": {k: v.detach().cpu() for k, v in self.aux_head.state_dict().items()} if self.aux_head else {},
        }

    def _load_state(self, payload: dict[str, Any]) -> None:
        from efficientvis_trt.model.checkpoint import load_state_strict

        extra = payload["extra"]
        load_state_strict(self.model, payload["model"], f"checkpoint {self.out / LAST}")
        if self.aux_head is not None:
            if not extra.get("aux_head"):
                raise EvisError(f"--resume: {self.out / LAST} has no auxiliary head but loss_aux_sem > 0")
            self.aux_head.load_state_dict(extra["aux_head"])
        self.optimizer.load_state_dict(extra["optimizer"])
        if extra.get("scaler"):
            self.scaler.load_state_dict(extra["scaler"])
        torch.set_rng_state(extra["rng"]["torch"])
        if "gt_jitter" in extra["rng"]:
            self.gt_jitter.set_state(extra["rng"]["gt_jitter"])
        if "cuda" in extra["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(extra["rng"]["cuda"], self.device)
        self.iteration = int(extra["iteration"])
        self.elapsed = float(extra.get("elapsed_s", 0.0))
        self.last_eval = extra.get("last_eval") or None
        if int(extra.get("world_size", 1)) != self.dist.world_size:
            log.warning(
                "resuming a %s-process run with %s processes: the sample order changes",
                extra.get("world_size"),
                self.dist.world_size,
            )

    def save(self, name: str) -> Path:
        from efficientvis_trt.model.checkpoint import save_checkpoint

        return save_checkpoint(self.out / name, self.model, self.class_names, extra=self.state())

    # ---- one step ----------------------------------------------------------------------
    def step(self, samples: list[dict]) -> dict[str, float]:
        t = self.cfg.train
        lr = t.lr * lr_factor(self.iteration, t.iters, t.warmup_iters, t.lr_steps, t.lr_gamma, schedule=t.lr_schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        frames1, targets1 = stack_clip(samples, 0, self.device)
        frames2, targets2 = stack_clip(samples, 1, self.device)
        later = [stack_clip(samples, c, self.device) for c in range(2, len(samples[0]["clips"]))]
        hw = tuple(frames1.shape[2:4])
        gt_tubes = gt_assign = None
        if t.gt_proposals > 0:
            gt_tubes, gt_assign = gt_proposal_tubes(
                targets1, self.model.init_boxes.weight, frames1.shape[1], generator=self.gt_jitter
            )
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            stages1, stages2, aux1, aux2, gt_stages, later_stages = self.net(
                frames1, frames2, gt_tubes, tuple(f for f, _ in later)
            )
        loss, terms, _ = self.criterion(
            stages1, targets1, hw, stages2, targets2, later=list(zip(later_stages, (tg for _, tg in later)))
        )
        if gt_stages is not None:
            num = self.criterion.num_boxes(targets1, self.device)
            gt_loss = sum(
                self.criterion.weights[k] * v
                for stage in gt_stages
                for k, v in self.criterion.stage_losses(stage, targets1, gt_assign, hw, num).items()
            )
            terms["loss_gt"] = (t.gt_proposals * gt_loss).detach()
            loss = loss + t.gt_proposals * gt_loss
        if aux1 is not None:
            from efficientvis_trt.train.semantic_aux import aux_semantic_loss, semantic_targets

            k = self.cfg.model.num_classes
            aux = (
                sum(
                    aux_semantic_loss(a.float(), semantic_targets(tg, k), t.focal_alpha, t.focal_gamma)
                    for a, tg in ((aux1, targets1), (aux2, targets2))
                )
                / 2
            )
            terms["loss_aux_sem"] = (t.loss_aux_sem * aux).detach()
            loss = loss + t.loss_aux_sem * aux
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        max_norm = t.clip_grad_norm if t.clip_grad_norm > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trained_parameters(), max_norm)
        self.scaler.step(self.optimizer)  # skips the update if the gradients are not finite
        self.scaler.update()
        self.iteration += 1
        out = {k: float(v) for k, v in terms.items()}
        out.update(loss=float(loss.detach()), grad_norm=float(grad_norm), lr=lr)
        return out

    # ---- the loop ----------------------------------------------------------------------
    def run(self) -> Path:
        from tqdm import tqdm

        from efficientvis_trt.data.ytvis import collate_pairs

        t = self.cfg.train
        total, start = t.iters, self.iteration
        final = self.out / FINAL
        if start >= total:
            log.info("already at iteration %d of %d", start, total)
        b = t.batch_size
        stream = SampleStream(self.pairs, start * b, (total - start) * b, t.seed, self.dist.rank, self.dist.world_size)
        loader = torch.utils.data.DataLoader(
            stream,
            batch_size=b,
            shuffle=False,
            num_workers=t.num_workers,
            collate_fn=collate_pairs,
            persistent_workers=False,
            prefetch_factor=2 if t.num_workers > 0 else None,
        )
        bar = tqdm(
            total=total,
            initial=start,
            desc="train",
            disable=not (self.progress and self.dist.is_main),
            dynamic_ncols=True,
        )
        # Some multi-threaded CPU kernels (index/scatter backward) accumulate in a varying order;
        # the deterministic kernels make two runs (and a resumed run) bit-identical.
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        if t.deterministic:
            torch.use_deterministic_algorithms(True)
        window: dict[str, float] = {}
        count, window_time, tick = 0, 0.0, time.perf_counter()
        try:
            for samples in loader:
                out = self.step(samples)
                now = time.perf_counter()
                self.elapsed += now - tick
                window_time += now - tick
                tick = now
                for k, v in out.items():
                    window[k] = window.get(k, 0.0) + v
                count += 1
                bar.update(1)
                bar.set_postfix(
                    {"loss": f"{out['loss']:.3f}", **{_SHORT[k]: f"{v:.3f}" for k, v in out.items() if k in _SHORT}}
                )
                it = self.iteration
                if self.dist.is_main and (it % self.log_every == 0 or it == total):
                    row = {k: v / count for k, v in window.items()}
                    row.update(iter=it, lr=out["lr"], elapsed_s=self.elapsed, sec_per_iter=window_time / count)
                    self.log.write(row)
                    window, count, window_time = {}, 0, 0.0
                if t.checkpoint_every > 0 and it % t.checkpoint_every == 0 and it < total and self.dist.is_main:
                    self.save(LAST)
                if self.val_json is not None and t.eval_every > 0 and it % t.eval_every == 0 and it < total:
                    self._evaluate(bar)
                    tick = time.perf_counter()
        finally:
            bar.close()
            torch.use_deterministic_algorithms(was_deterministic)
        if self.dist.is_main:
            if self.val_json is not None:
                self._evaluate(bar)
            self.save(LAST)
            self.save(FINAL)
            if self.last_eval:
                write_json_atomic(self.out / "metrics.json", {"iteration": self.iteration, **self.last_eval})
        self._barrier()
        self.pair_forward.close()
        if self.dist.owns_group:
            torch.distributed.destroy_process_group()
        return final

    def _barrier(self) -> None:
        if self.dist.world_size > 1:
            torch.distributed.barrier()

    def _evaluate(self, bar) -> None:
        if self.dist.is_main:
            bar.write(f"evaluating on {self.val_json} at iteration {self.iteration} ...")
            stats = evaluate_model(self.model, self.val_json, str(self.device), self.progress)
            self.last_eval = stats
            self.log.write(
                {
                    "iter": self.iteration,
                    "elapsed_s": self.elapsed,
                    **{k: stats.get(k, float("nan")) for k in ("AP", "AP50", "AP75")},
                }
            )
            bar.write(
                f"iteration {self.iteration}: AP {stats.get('AP', float('nan')):.3f} "
                f"AP50 {stats.get('AP50', float('nan')):.3f} AP75 {stats.get('AP75', float('nan')):.3f}"
            )
        self._barrier()


def train(
    cfg: Config | str,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    iters: int | None = None,
    resume: bool = False,
    device: str = "cpu",
    val_dir: str | os.PathLike | None = None,
    progress: bool = True,
    log_every: int = 20,
) -> Path:
    """Train on a YouTube-VIS split; -> RUN/final.pt. See the module docstring for resume and DDP."""
    return Trainer(cfg, data_dir, out_dir, iters, resume, device, val_dir, progress, log_every).run()


def load_metrics(out_dir: str | os.PathLike) -> dict[str, float]:
    """RUN/metrics.json (the last evaluation), or {} if there was none."""
    p = Path(out_dir) / "metrics.json"
    return json.loads(p.read_text()) if p.is_file() else {}
