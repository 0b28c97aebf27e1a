"""Checkpoints (round trip, clear errors) and torchvision-format ResNet weights."""

from __future__ import annotations

import pytest
import torch

from efficientvis_trt.config import get_config
from efficientvis_trt.errors import EvisError
from efficientvis_trt.model import build_model
from efficientvis_trt.model.checkpoint import load_checkpoint, load_torchvision_resnet, read_checkpoint, save_checkpoint


def test_round_trip_keeps_weights_config_and_names(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model, [f"c{i}" for i in range(5)])
    model, payload = load_checkpoint(path)
    assert payload["class_names"] == ["c0", "c1", "c2", "c3", "c4"]
    assert model.config == tiny_model.config
    for (k, a), (_, b) in zip(tiny_model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob(".*tmp")), "temp file left behind"


def test_corrupt_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(EvisError, match="corrupt"):
        read_checkpoint(bad)
    with pytest.raises(EvisError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(EvisError, match="not an EfficientVIS-TRT checkpoint"):
        read_checkpoint(tmp_path / "other.pt")


def test_missing_key_and_shape_mismatch_name_the_key(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model)
    payload = torch.load(path, weights_only=True)
    del payload["model"]["init_query.weight"]
    torch.save(payload, tmp_path / "missing_key.pt")
    with pytest.raises(EvisError, match="init_query.weight"):
        load_checkpoint(tmp_path / "missing_key.pt")
    payload = torch.load(path, weights_only=True)
    payload["model"]["init_boxes.weight"] = torch.zeros(3, 4)
    torch.save(payload, tmp_path / "bad_shape.pt")
    with pytest.raises(EvisError, match="shape mismatch for 'init_boxes.weight'"):
        load_checkpoint(tmp_path / "bad_shape.pt")


def test_other_architecture_is_rejected(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model)
    other = get_config("tiny")
    other.model.num_stages = 3
    with pytest.raises(EvisError, match="another architecture.*num_stages"):
        load_checkpoint(path, expect_config=other)


def _torchvision_resnet18_state() -> dict[str, torch.Tensor]:
    """The key names and shapes of torchvision's resnet18 weights file, written out independently."""
    state: dict[str, torch.Tensor] = {}

    def bn(prefix, ch):
        for name in ("weight", "bias", "running_mean", "running_var"):
            state[f"{prefix}.{name}"] = torch.rand(ch)
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(0)

    state["conv1.weight"] = torch.randn(64, 3, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for layer, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{layer}.{block}"
            cin = inplanes if block == 0 else planes
            state[f"{p}.conv1.weight"] = torch.randn(planes, cin, 3, 3)
            bn(f"{p}.bn1", planes)
            state[f"{p}.conv2.weight"] = torch.randn(planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            if block == 0 and layer > 1:
                state[f"{p}.downsample.0.weight"] = torch.randn(planes, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes)
        inplanes = planes
    state["fc.weight"] = torch.randn(1000, 512)
    state["fc.bias"] = torch.randn(1000)
    return state


def test_torchvision_weights_load_by_key(tmp_path):
    cfg = get_config("r18")
    model = build_model(cfg)
    state = _torchvision_resnet18_state()
    torch.save(state, tmp_path / "resnet18.pth")
    n = load_torchvision_resnet(model, tmp_path / "resnet18.pth")
    assert n > 0
    assert torch.equal(model.backbone.body.layer3[0].conv2.weight, state["layer3.0.conv2.weight"])
    assert torch.equal(model.backbone.body.bn1.running_var, state["bn1.running_var"])

    del state["layer2.0.downsample.0.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(EvisError, match="layer2.0.downsample.0.weight"):
        load_torchvision_resnet(model, tmp_path / "broken.pth")
    tiny = build_model("tiny")
    with pytest.raises(EvisError, match="shape mismatch"):
        load_torchvision_resnet(tiny, tmp_path / "resnet18.pth")


def test_empty_checkpoint_is_one_line(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(EvisError, match=r"empty.pt is empty \(0 bytes\)") as err:
        load_checkpoint(empty)
    assert "\n" not in str(err.value)


def test_diverged_checkpoint_names_the_tensor(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "ok.pt", tiny_model)
    payload = torch.load(path, weights_only=True)
    key = next(k for k, v in payload["model"].items() if v.is_floating_point())
    payload["model"][key] = torch.full_like(payload["model"][key], float("nan"))
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(EvisError, match=rf"nan.pt has NaN/inf weights in '{key}'"):
        load_checkpoint(tmp_path / "nan.pt")


def test_bad_config_in_checkpoint_names_the_file(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "ok.pt", tiny_model)
    payload = torch.load(path, weights_only=True)
    payload["config"]["model"]["clip_len"] = 0
    torch.save(payload, tmp_path / "badcfg.pt")
    with pytest.raises(EvisError, match=r"checkpoint .*badcfg.pt: bad config \(clip length 0 must be at least 2"):
        load_checkpoint(tmp_path / "badcfg.pt")
