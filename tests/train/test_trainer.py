"""The trainer end to end on tiny synthetic data: it learns, resumes exactly, logs, and rejects bad data."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from efficientvis_trt.config import get_config
from efficientvis_trt.errors import EvisError


def _small_config(**train):
    """tiny at a 64x128 canvas, no augmentation: every sample of a 10-frame video is the same pair."""
    cfg = get_config("tiny")
    cfg.model.input_size = [64, 128]
    t = cfg.train
    t.batch_size, t.warmup_iters, t.checkpoint_every, t.eval_every = 1, 2, 0, 0
    t.hflip_prob, t.scale_jitter, t.max_frame_stride = 0.0, [1.0, 1.0], 1
    for k, v in train.items():
        setattr(t, k, v)
    return cfg


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from efficientvis_trt.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("syn")
    make_synthetic(
        root / "one", "train", 1, 3, frames=10, size=(72, 128), num_classes=3, objects=(2, 2), progress=False
    )
    make_synthetic(root / "two", "train", 2, 0, frames=12, size=(72, 128), num_classes=3, progress=False)
    return root


def _weights(path):
    from efficientvis_trt.model.checkpoint import read_checkpoint

    return read_checkpoint(path)["model"]


@pytest.mark.slow
def test_overfitting_one_video_drives_the_loss_down(tiny_data, tmp_path):
    from efficientvis_trt.train.trainer import train

    cfg = _small_config(lr=1e-3, warmup_iters=5, lr_steps=[1.0])
    run = tmp_path / "run"
    final = train(cfg, tiny_data / "one", run, iters=50, progress=False, log_every=5)
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert final.is_file() and (run / "last.pt").is_file()
    assert [int(r["iter"]) for r in rows] == list(range(5, 51, 5))
    first, last = rows[0], rows[-1]
    # Measured: total 41.9 -> 16.8, class 3.7 -> 0.71, L1 18.8 -> 2.4 (mask BCE rises at first: as the
    # boxes tighten, the targets cut by them hold more foreground).
    assert float(last["loss"]) < float(first["loss"]) / 2, (first["loss"], last["loss"])
    assert float(last["loss_class"]) < float(first["loss_class"]) / 3
    assert float(last["loss_l1"]) < float(first["loss_l1"]) / 4


def test_resume_after_an_interruption_gives_the_same_weights(tiny_data, tmp_path):
    from efficientvis_trt.train.trainer import Trainer

    # Augmentation, the auxiliary head and the jittered gt proposals on: their state must survive the interruption too.
    cfg = _small_config(
        checkpoint_every=2,
        hflip_prob=0.5,
        scale_jitter=[0.8, 1.2],
        max_frame_stride=2,
        loss_aux_sem=1.0,
        gt_proposals=1.0,
        deterministic=True,
    )
    straight = Trainer(cfg, tiny_data / "two", tmp_path / "a", iters=4, progress=False, log_every=1).run()

    broken = Trainer(cfg, tiny_data / "two", tmp_path / "b", iters=4, progress=False, log_every=1)
    real_step, calls = broken.step, []

    def dying_step(samples):
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the iteration-2 checkpoint
        calls.append(1)
        return real_step(samples)

    broken.step = dying_step
    with pytest.raises(KeyboardInterrupt):
        broken.run()
    assert not (tmp_path / "b" / "final.pt").exists()
    at_two = _weights(tmp_path / "b" / "last.pt")
    resumed = Trainer(cfg, tiny_data / "two", tmp_path / "b", iters=4, resume=True, progress=False, log_every=1)
    assert resumed.iteration == 2
    final = resumed.run()

    a, b = _weights(straight), _weights(final)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(at_two[k], b[k]) for k in b)  # iterations 3-4 really trained
    iters = [int(r["iter"]) for r in csv.DictReader((tmp_path / "b" / "log.csv").open())]
    assert iters == [1, 2, 3, 4]  # rows past the checkpoint were dropped, none duplicated
    from efficientvis_trt.model.checkpoint import read_checkpoint

    extra = read_checkpoint(final)["extra"]
    assert extra["iteration"] == 4 and "optimizer" in extra and "rng" in extra
    aux_a, aux_b = read_checkpoint(straight)["extra"]["aux_head"], extra["aux_head"]
    assert aux_a and all(torch.equal(aux_a[k], aux_b[k]) for k in aux_a)


def test_resume_without_checkpoint_and_malformed_data_are_evis_errors(tiny_data, tmp_path):
    from efficientvis_trt.train.trainer import train

    cfg = _small_config()
    with pytest.raises(EvisError, match="no checkpoint"):
        train(cfg, tiny_data / "two", tmp_path / "fresh", iters=1, resume=True, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EvisError, match="annotations.json"):
        train(cfg, empty, tmp_path / "r", iters=1, progress=False)
    with pytest.raises(EvisError):
        train(cfg, tmp_path / "missing", tmp_path / "r", iters=1, progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "annotations.json").write_text(json.dumps({"videos": "nope", "categories": []}))
    with pytest.raises(EvisError, match="videos"):
        train(cfg, bad, tmp_path / "r", iters=1, progress=False)
    noann = tmp_path / "noann"
    noann.mkdir()
    raw = json.loads((tiny_data / "two" / "annotations.json").read_text())
    raw["annotations"] = []
    (noann / "annotations.json").write_text(json.dumps(raw))
    (noann / "JPEGImages").symlink_to(tiny_data / "two" / "JPEGImages")
    with pytest.raises(EvisError, match="no annotated videos"):
        train(cfg, noann, tmp_path / "r", iters=1, progress=False)


def test_cli_reports_bad_data_as_one_line(tmp_path, capsys):
    from efficientvis_trt.cli import main

    code = main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "run"), "--iters", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("evis train: error:") and len(err.strip().splitlines()) == 1


def test_lr_schedule_warms_up_and_steps():
    from efficientvis_trt.train.trainer import lr_factor

    f = [lr_factor(i, 100, 10, [0.5, 0.8], 0.1) for i in range(100)]
    assert f[0] == pytest.approx(0.001) and f[5] == pytest.approx(0.5005)
    assert f[10] == 1.0 and f[49] == 1.0
    assert f[50] == pytest.approx(0.1) and f[80] == pytest.approx(0.01)


def test_cosine_schedule_warms_up_then_falls_to_zero():
    from efficientvis_trt.train.trainer import lr_factor

    f = [lr_factor(i, 110, 10, [0.5], 0.1, schedule="cosine") for i in range(111)]
    assert f[0] == pytest.approx(0.001) and f[10] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.5) and f[110] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # monotone after the warm-up


def test_mask_stages_last_drops_the_earlier_mask_heads(tiny_data):
    from efficientvis_trt.config import get_config
    from efficientvis_trt.errors import EvisError
    from efficientvis_trt.model.efficientvis import EfficientVIS
    from efficientvis_trt.train.trainer import PairForward

    cfg = get_config("tiny")
    cfg.model.num_stages = 3
    model = EfficientVIS(cfg)
    frames = torch.zeros((1, cfg.model.clip_len, *cfg.model.input_size, 3), dtype=torch.uint8)
    stages1, stages2, *_ = PairForward(model, all_masks=False)(frames, frames)
    assert [s["mask_logits"] is None for s in stages1] == [True, True, False]
    assert [s["mask_logits"] is None for s in stages2] == [True, True, False]
    cfg.train.mask_stages = "some"
    with pytest.raises(EvisError, match="mask_stages"):
        cfg.validate()


def test_a_chain_of_three_clips_carries_the_state_twice_and_trains(tiny_data, tmp_path):
    import numpy as np

    from efficientvis_trt.model.efficientvis import EfficientVIS
    from efficientvis_trt.train.trainer import PairForward, Trainer

    cfg = _small_config(chain_clips=3, iters=2)
    model = EfficientVIS(cfg)
    torch.manual_seed(0)
    frames = [torch.randint(0, 255, (1, cfg.model.clip_len, *cfg.model.input_size, 3), dtype=torch.uint8)]
    frames += [frames[0].flip(1), frames[0]]
    _, stages2, *_, later = PairForward(model, all_masks=False)(frames[0], frames[1], None, (frames[2],))
    assert len(later) == 1 and later[0][-1]["boxes_xyxy"].shape == stages2[-1]["boxes_xyxy"].shape
    # Clip 3 saw clip 2's carried state, not clip 1's: same frames as clip 1, other output.
    again = PairForward(model, all_masks=False)(frames[2], frames[0])[0]
    assert not torch.allclose(later[0][-1]["logits"], again[-1]["logits"])

    trainer = Trainer(cfg, tiny_data / "two", tmp_path / "run", progress=False)
    sample = trainer.pairs.sample(0, np.random.default_rng(0))
    assert len(sample["clips"]) == 3
    out = trainer.step([sample])
    assert np.isfinite(out["loss"]) and out["grad_norm"] > 0
    cfg.train.chain_clips = 1
    with pytest.raises(EvisError, match="chain_clips"):
        cfg.validate()


def test_evaluation_runs_and_is_logged(tiny_data, tmp_path):
    from efficientvis_trt.train.trainer import train

    cfg = _small_config()
    run = tmp_path / "run"
    train(cfg, tiny_data / "two", run, iters=1, val_dir=tiny_data / "two", progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["AP"] <= 1.0 and metrics["iteration"] == 1
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert rows[-1]["AP"] != "" and float(rows[-1]["AP"]) == pytest.approx(metrics["AP"], abs=1e-5)
