"""DDP smoke test: two gloo processes on the CPU train 2 iterations and end with identical weights."""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str, dump: str) -> None:
    """What torchrun would start: the env variables, then the ordinary trainer."""
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    from efficientvis_trt.config import get_config
    from efficientvis_trt.train.trainer import Trainer

    cfg = get_config("tiny")
    cfg.model.input_size = [64, 128]
    cfg.train.batch_size, cfg.train.warmup_iters, cfg.train.checkpoint_every = 1, 1, 0
    trainer = Trainer(cfg, data, out, iters=2, progress=False, log_every=1)
    assert trainer.dist.world_size == world and trainer.dist.rank == rank
    trainer.run()
    torch.save({k: v.detach().clone() for k, v in trainer.model.named_parameters()}, f"{dump}/rank{rank}.pt")


def test_ddp_two_processes_end_with_identical_weights(tmp_path):
    from efficientvis_trt.data.synthetic import make_synthetic
    from efficientvis_trt.model.checkpoint import read_checkpoint

    data = tmp_path / "data"
    make_synthetic(data, "train", 4, 1, frames=10, size=(72, 128), num_classes=3, progress=False)
    out = tmp_path / "run"
    mp.spawn(_worker, args=(2, _free_port(), str(data), str(out), str(tmp_path)), nprocs=2, join=True)

    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys() and len(w0) > 50
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    saved = read_checkpoint(out / "final.pt")
    assert saved["extra"]["world_size"] == 2 and saved["extra"]["iteration"] == 2
    for k, v in w0.items():
        assert torch.equal(saved["model"][k], v), k  # rank 0 wrote the checkpoint
    # ...and the weights did move from the (seeded, shared) initialisation.
    from efficientvis_trt.config import Config
    from efficientvis_trt.model.efficientvis import EfficientVIS

    torch.manual_seed(0)
    init = dict(EfficientVIS(Config.from_dict(saved["config"])).named_parameters())
    assert any(not torch.equal(init[k].detach(), w0[k]) for k in w0)
