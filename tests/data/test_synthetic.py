"""The synthetic YouTube-VIS benchmark: determinism, split separation, format validity, dynamics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_util

from efficientvis_trt.data import synthetic
from efficientvis_trt.data.synthetic import (
    ANNOTATION_FILE,
    IMAGE_DIR,
    MAX_CLASSES,
    class_spec,
    load_backgrounds,
    make_synthetic,
    render_video,
    video_seed,
)
from efficientvis_trt.errors import EvisError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on numpy 2

ARGS = dict(frames=10, size=(64, 96), num_classes=5, progress=False)


@pytest.fixture(scope="module")
def train_set(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("syn") / "train", "train", 6, seed=7, **ARGS)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_dataset(train_set: Path, tmp_path: Path) -> None:
    again = make_synthetic(tmp_path / "again", "train", 6, seed=7, **ARGS)
    a, b = _files(train_set.parent), _files(again.parent)
    assert sorted(a) == sorted(b)
    assert len([k for k in a if k.endswith(".jpg")]) == 6 * 10
    assert all(a[k] == b[k] for k in a)


def test_train_and_val_never_share_a_stream(train_set: Path, tmp_path: Path) -> None:
    val = make_synthetic(tmp_path / "val", "val", 6, seed=7, **ARGS)
    tr, va = json.loads(train_set.read_text()), json.loads(val.read_text())
    assert tr["info"]["split"] == "train" and va["info"]["split"] == "val"
    assert [a["segmentations"] for a in tr["annotations"]] != [a["segmentations"] for a in va["annotations"]]
    first = f"{IMAGE_DIR}/{va['videos'][0]['file_names'][0]}"
    assert (val.parent / first).read_bytes() != (
        train_set.parent / f"{IMAGE_DIR}/{tr['videos'][0]['file_names'][0]}"
    ).read_bytes()
    # Seed streams: (train, S, i) never equals (val, S', j) for any S, S', i, j in a small grid.
    states = {
        (s, i, sp): tuple(video_seed(sp, s, i).generate_state(4))
        for s in range(4)
        for i in range(4)
        for sp in ("train", "val")
    }
    assert len(set(states.values())) == len(states)
    # Backgrounds: the splits draw from disjoint frame ranges of each source.
    bg = synthetic.Background("x", [np.zeros((4, 4, 3), np.uint8)] * 80)
    (a0, a1), (b0, b1) = bg.split_range("train"), bg.split_range("val")
    assert a1 <= b0 and a0 < a1 and b0 < b1


def test_json_is_valid_youtube_vis(train_set: Path) -> None:
    data = json.loads(train_set.read_text())
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4, 5]
    assert [c["name"] for c in data["categories"]] == ["disc", "square", "triangle", "star", "ring"]
    videos = {v["id"]: v for v in data["videos"]}
    assert len(videos) == 6
    for v in videos.values():
        assert v["length"] == len(v["file_names"]) == 10 and (v["width"], v["height"]) == (96, 64)
        for name in v["file_names"]:
            assert (train_set.parent / IMAGE_DIR / name).is_file()
    assert data["annotations"], "no instances generated"
    ids = [a["id"] for a in data["annotations"]]
    assert len(set(ids)) == len(ids)
    for a in data["annotations"]:
        v = videos[a["video_id"]]
        assert 1 <= a["category_id"] <= 5 and a["iscrowd"] == 0
        assert len(a["segmentations"]) == len(a["areas"]) == len(a["bboxes"]) == v["length"]
        assert any(s is not None for s in a["segmentations"])
        for seg, area, bbox in zip(a["segmentations"], a["areas"], a["bboxes"]):
            if seg is None:
                assert area is None and bbox is None
                continue
            assert isinstance(seg["counts"], str) and seg["size"] == [64, 96]
            m = mask_util.decode({"size": seg["size"], "counts": seg["counts"].encode()})
            assert m.shape == (64, 96)
            assert area == float(m.sum()) > 0
            ys, xs = np.nonzero(m)
            assert bbox == [
                float(xs.min()),
                float(ys.min()),
                float(xs.max() - xs.min() + 1),
                float(ys.max() - ys.min() + 1),
            ]


def test_objects_enter_leave_and_occlude(train_set: Path) -> None:
    anns = json.loads(train_set.read_text())["annotations"]
    present = [[s is not None for s in a["segmentations"]] for a in anns]
    assert any(not p[0] and any(p) for p in present), "no object enters"
    assert any(p[0] and not p[-1] for p in present), "no object leaves"
    # Occlusion: rendered visible masks are amodal masks minus what lies in front.
    bgs = [synthetic.Background("flat", [np.full((80, 120, 3), 90, np.uint8)])]
    occluded = 0
    for i in range(8):
        vid = render_video(
            np.random.default_rng(video_seed("train", 1, i)), bgs, "train", 8, (64, 96), 5, objects=(3, 4)
        )
        assert vid.visible.shape == vid.amodal.shape == (len(vid.labels), 8, 64, 96)
        assert not (vid.visible & ~vid.amodal).any()  # visible part of the object only
        assert (vid.visible.sum(0) <= 1).all()  # one owner per pixel
        front = np.argsort(vid.depth)[-1]
        assert (vid.visible[front] == vid.amodal[front]).all()  # nothing occludes the front one
        occluded += int((vid.visible.sum((2, 3)) < vid.amodal.sum((2, 3))).sum())
    assert occluded > 0


def test_fast_objects_move_fast() -> None:
    bgs = [synthetic.Background("flat", [np.full((80, 120, 3), 90, np.uint8)])]
    fastest = 0.0
    for i in range(12):
        vid = render_video(np.random.default_rng(video_seed("train", 2, i)), bgs, "train", 12, (64, 96), 5)
        for k, motion in enumerate(vid.motions):
            if motion != "fast":
                continue
            cx = [np.nonzero(vid.amodal[k, t])[1].mean() for t in range(12) if vid.amodal[k, t].any()]
            if len(cx) > 1:
                fastest = max(fastest, float(np.max(np.abs(np.diff(cx)))))
    assert fastest > 10.0, "no object moved more than 10 px in a frame"


def test_classes_differ_in_shape_or_texture() -> None:
    specs = [class_spec(k)[:2] for k in range(MAX_CLASSES)]
    assert len(set(specs)) == MAX_CLASSES
    assert len({s for s, _ in specs[:5]}) == 5 and len({t for _, t in specs[:5]}) == 5
    with pytest.raises(EvisError):
        class_spec(MAX_CLASSES)


def test_user_backgrounds_frame_folder_and_refusals(tmp_path: Path) -> None:
    import cv2

    folder = tmp_path / "bg"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for t in range(5):
        cv2.imwrite(str(folder / f"{t:03d}.png"), rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    bgs = load_backgrounds([folder], (32, 48), 10, include_samples=False)
    assert [b.name for b in bgs] == ["bg"] and len(bgs[0].frames) == 5
    out = make_synthetic(
        tmp_path / "out",
        "val",
        2,
        0,
        frames=4,
        size=(32, 48),
        backgrounds=[folder],
        include_sample_backgrounds=False,
        progress=False,
    )
    assert json.loads(out.read_text())["info"]["backgrounds"] == ["bg"]
    make_synthetic(
        tmp_path / "out",
        "val",
        1,
        0,
        frames=4,
        size=(32, 48),
        backgrounds=[folder],
        include_sample_backgrounds=False,
        progress=False,
    )  # replacing our own output is fine
    assert len(json.loads(out.read_text())["videos"]) == 1
    with pytest.raises(EvisError, match="refusing"):
        make_synthetic(folder, "val", 1, 0, frames=4, size=(32, 48), backgrounds=[folder], progress=False)
    assert len(list(folder.iterdir())) == 5
    with pytest.raises(EvisError, match="split"):
        make_synthetic(tmp_path / "x", "test", 1, 0, progress=False)
    with pytest.raises(EvisError, match="classes"):
        make_synthetic(tmp_path / "x", "train", 1, 0, num_classes=41, progress=False)
    with pytest.raises(EvisError, match="nope"):
        make_synthetic(tmp_path / "x", "train", 1, 0, backgrounds=[tmp_path / "nope"], progress=False)
    assert not (tmp_path / "x").exists()


def test_cli(tmp_path: Path, capsys) -> None:
    import argparse

    from efficientvis_trt.cli import COMMANDS
    from efficientvis_trt.commands import make_synthetic as synthetic_cli

    assert COMMANDS["make-synthetic"] == synthetic_cli.__name__
    parser = argparse.ArgumentParser()
    synthetic_cli.add_arguments(parser)  # the module alone, so other commands' imports cannot break this test
    out = tmp_path / "cli"
    args = parser.parse_args(
        [
            str(out),
            "--split",
            "train",
            "--videos",
            "2",
            "--seed",
            "3",
            "--frames",
            "4",
            "--size",
            "48x64",
            "--classes",
            "3",
        ]
    )
    assert synthetic_cli.run(args) == 0
    data = json.loads((out / ANNOTATION_FILE).read_text())
    assert len(data["videos"]) == 2 and len(data["categories"]) == 3
    assert data["videos"][0]["width"] == 64 and data["videos"][0]["height"] == 48
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(EvisError, match="HxW"):
        synthetic_cli.run(
            parser.parse_args([str(tmp_path / "bad"), "--split", "val", "--videos", "1", "--size", "big"])
        )
    assert not (tmp_path / "bad").exists()
