"""YouTube-VIS reader and clip-pair dataset: formats, sample contract, augmentation geometry, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from efficientvis_trt.data.synthetic import make_synthetic
from efficientvis_trt.data.ytvis import PairPlan, YTVISClipPairs, collate_pairs, load_ytvis, pair_frame_indices
from efficientvis_trt.errors import EvisError
from efficientvis_trt.video import PAD_VALUE, Letterbox, iter_frames

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on numpy 2

H, W = 40, 60  # hand-made video size


# ---- a hand-made data set covering every segmentation format ----------------------------


def _rect(t: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[5:15, 10 + 5 * t : 25 + 5 * t] = 1
    return m


def _uncompressed(mask: np.ndarray) -> dict:
    flat, counts, cur, run = mask.flatten(order="F"), [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def _compressed(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


POLY = [[30.0, 20.0, 50.0, 20.0, 50.0, 35.0, 30.0, 35.0]]


def _write_tiny(root: Path, frames: int = 4) -> Path:
    """root/annotations.json + root/JPEGImages/vid1/0000t.jpg; categories deliberately unsorted."""
    rng = np.random.default_rng(0)
    (root / "JPEGImages" / "vid1").mkdir(parents=True)
    names = []
    for t in range(frames):
        cv2.imwrite(str(root / "JPEGImages" / "vid1" / f"{t:05d}.jpg"), rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        names.append(f"vid1/{t:05d}.jpg")
    segs_a = [_compressed(_rect(0)), _uncompressed(_rect(1)), _compressed(_rect(2))] + [None] * (frames - 3)
    segs_b = [None] + [POLY] * (frames - 1)
    data = {
        "videos": [{"id": 1, "width": W, "height": H, "length": frames, "file_names": names}],
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 9, "name": "bird"}],
        "annotations": [
            {"id": 20, "video_id": 1, "category_id": 3, "segmentations": segs_b, "iscrowd": 0, "height": H, "width": W},
            {"id": 10, "video_id": 1, "category_id": 7, "segmentations": segs_a, "iscrowd": 0, "height": H, "width": W},
        ],
    }
    path = root / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def test_reads_all_segmentation_formats_and_maps_categories(tmp_path: Path) -> None:
    data = load_ytvis(_write_tiny(tmp_path))
    assert data.categories == ["dog", "cat", "bird"]
    assert data.label_to_category_id == [3, 7, 9] and data.category_id_to_label == {3: 0, 7: 1, 9: 2}
    assert data.num_classes == 3
    (video,) = data.videos
    assert (video.id, video.width, video.height, video.length, video.name) == (1, W, H, 4, "vid1")
    assert data.video_frames(video) == [tmp_path / "JPEGImages" / "vid1" / f"{t:05d}.jpg" for t in range(4)]
    assert data.video_frames(1) == data.video_frames(video)
    a, b = data.annotations_of(video)  # ascending annotation id
    assert (a.id, a.label, b.id, b.label) == (10, 1, 20, 0)
    assert np.array_equal(data.decode_mask(a, 0), _rect(0))  # compressed RLE
    assert np.array_equal(data.decode_mask(a, 1), _rect(1))  # uncompressed RLE
    assert data.decode_mask(a, 3) is None and data.decode_mask(b, 0) is None
    poly = data.decode_mask(b, 1)  # polygon
    ys, xs = np.nonzero(poly)
    assert poly.shape == (H, W) and abs(int(poly.sum()) - 20 * 15) < 50
    assert 29 <= xs.min() <= 31 and 49 <= xs.max() <= 51 and 19 <= ys.min() <= 21 and 34 <= ys.max() <= 36


def test_2019_layout_image_root_and_val_json_without_annotations(tmp_path: Path) -> None:
    _write_tiny(tmp_path / "tmp")
    (tmp_path / "train").mkdir()
    shutil.move(str(tmp_path / "tmp" / "JPEGImages"), str(tmp_path / "train" / "JPEGImages"))
    raw = json.loads((tmp_path / "tmp" / "annotations.json").read_text())
    (tmp_path / "train.json").write_text(json.dumps(raw))
    data = load_ytvis(tmp_path / "train.json")
    assert data.image_root == tmp_path / "train" / "JPEGImages"
    assert data.video_frames(1)[0].is_file()
    del raw["annotations"]
    (tmp_path / "valid.json").write_text(json.dumps(raw))
    assert load_ytvis(tmp_path / "valid.json", image_root=tmp_path / "train" / "JPEGImages").annotations == []


@pytest.mark.parametrize(
    "case", ["malformed", "not_ytvis", "missing_frame", "wrong_size_rle", "seg_count", "unknown_category"]
)
def test_bad_json_is_one_evis_error_naming_the_file(tmp_path: Path, case: str) -> None:
    path = _write_tiny(tmp_path)
    raw = json.loads(path.read_text())
    named = path.name
    if case == "malformed":
        path.write_text(path.read_text()[:-20])
    elif case == "not_ytvis":
        path.write_text(json.dumps({"images": []}))
    elif case == "missing_frame":
        (tmp_path / "JPEGImages" / "vid1" / "00002.jpg").unlink()
        named = "00002.jpg"
    elif case == "wrong_size_rle":
        raw["annotations"][1]["segmentations"][0]["size"] = [20, 30]
        path.write_text(json.dumps(raw))
    elif case == "seg_count":
        raw["annotations"][0]["segmentations"].pop()
        path.write_text(json.dumps(raw))
    else:
        raw["annotations"][0]["category_id"] = 99
        path.write_text(json.dumps(raw))
    with pytest.raises(EvisError) as info:
        load_ytvis(path)
    msg = str(info.value)
    assert named in msg and "\n" not in msg


def test_wrong_size_frame_image_names_the_frame(tmp_path: Path) -> None:
    path = _write_tiny(tmp_path)
    bad = tmp_path / "JPEGImages" / "vid1" / "00001.jpg"
    cv2.imwrite(str(bad), np.zeros((H + 2, W, 3), np.uint8))
    ds = YTVISClipPairs(path, 2, [32, 64], augment=False)
    with pytest.raises(EvisError, match="00001.jpg"):
        ds[0]
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(EvisError, match="00001.jpg"):
        ds[0]


def test_short_video_falls_back_to_stride_1_then_repeats_the_last_frame(tmp_path: Path) -> None:
    assert pair_frame_indices(20, 3, 2, 0.0) == (0, 2, 4, 6, 8, 10)
    assert pair_frame_indices(20, 3, 2, 0.999) == (9, 11, 13, 15, 17, 19)
    assert pair_frame_indices(10, 3, 2, 0.0) == (0, 1, 2, 3, 4, 5)  # stride 2 needs 11 frames
    assert pair_frame_indices(4, 3, 2, 0.5) == (0, 1, 2, 3, 3, 3)
    assert pair_frame_indices(20, 3, 2, 0.0, clips=3) == tuple(range(0, 18, 2))
    assert pair_frame_indices(12, 3, 2, 0.0, clips=3) == tuple(range(9))  # stride 2 needs 17 frames
    ds = YTVISClipPairs(_write_tiny(tmp_path), 3, [32, 64], max_frame_stride=2)
    s = ds.sample(0, np.random.default_rng(0))
    c2 = s["clips"][1]
    assert torch.equal(c2["frames"][0], c2["frames"][1]) and torch.equal(c2["frames"][0], c2["frames"][2])
    # Repeats keep their annotation: instance 20 (polygon, present in frame 3) stays valid.
    assert c2["inst_ids"].tolist() == [10, 20]
    assert c2["valid"][1].tolist() == [True, True, True] and c2["valid"][0].tolist() == [False, False, False]
    assert torch.equal(c2["masks"][1, 0], c2["masks"][1, 2]) and c2["masks"][1, 2].any()


# ---- on a generated synthetic set -------------------------------------------------------

CANVAS = [48, 96]  # 64x96 frames -> scale 0.75, content 48x72, 24 padded columns on the right


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    return make_synthetic(
        tmp_path_factory.mktemp("ytvis") / "syn",
        "train",
        3,
        seed=11,
        frames=8,
        size=(64, 96),
        num_classes=5,
        progress=False,
    )


def _check_contract(sample: dict, clip_len: int, canvas: list[int]) -> None:
    ch, cw = canvas
    assert set(sample) == {"video_id", "clips"} and isinstance(sample["video_id"], int)
    c1, c2 = sample["clips"]
    g = len(c1["labels"])
    for c in (c1, c2):
        assert set(c) == {"frames", "labels", "inst_ids", "boxes", "masks", "valid"}
        assert c["frames"].dtype == torch.uint8 and tuple(c["frames"].shape) == (clip_len, ch, cw, 3)
        assert c["labels"].dtype == torch.int64 and tuple(c["labels"].shape) == (g,)
        assert c["inst_ids"].dtype == torch.int64 and tuple(c["inst_ids"].shape) == (g,)
        assert c["boxes"].dtype == torch.float32 and tuple(c["boxes"].shape) == (g, clip_len, 4)
        assert c["masks"].dtype == torch.uint8 and tuple(c["masks"].shape) == (g, clip_len, ch, cw)
        assert c["valid"].dtype == torch.bool and tuple(c["valid"].shape) == (g, clip_len)
        assert set(c["masks"].unique().tolist()) <= {0, 1}
        assert torch.equal(c["valid"], c["masks"].flatten(2).any(-1))  # valid <=> non-empty mask
        assert not c["boxes"][~c["valid"]].any()  # zeros where absent
        assert ((c["boxes"] >= 0) & (c["boxes"] <= 1)).all()
    assert torch.equal(c1["inst_ids"], c2["inst_ids"]) and torch.equal(c1["labels"], c2["labels"])
    assert c1["inst_ids"].tolist() == sorted(c1["inst_ids"].tolist())
    assert (c1["valid"].any(1) | c2["valid"].any(1)).all()  # each instance seen somewhere


def _mask_box(mask: torch.Tensor, canvas: list[int]) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    x0, x1, y0, y1 = xs.min().item(), xs.max().item() + 1, ys.min().item(), ys.max().item() + 1
    return [(x0 + x1) / 2 / canvas[1], (y0 + y1) / 2 / canvas[0], (x1 - x0) / canvas[1], (y1 - y0) / canvas[0]]


def test_sample_contract_and_instance_order(syn: Path) -> None:
    ds = YTVISClipPairs(syn, 3, CANVAS, max_frame_stride=2)
    assert len(ds) == 3
    rng = np.random.default_rng(0)
    total = 0
    for i in range(len(ds)):
        for _ in range(3):
            s = ds.sample(i, rng)
            _check_contract(s, 3, CANVAS)
            total += len(s["clips"][0]["labels"])
            ids = s["clips"][0]["inst_ids"].tolist()
            anns = {a.id: a for a in ds.data.annotations}
            assert all(anns[k].video_id == s["video_id"] for k in ids)
            assert s["clips"][0]["labels"].tolist() == [anns[k].label for k in ids]
            for c in s["clips"]:
                for g, t in zip(*torch.nonzero(c["valid"], as_tuple=True)):
                    assert c["boxes"][g, t].tolist() == pytest.approx(_mask_box(c["masks"][g, t], CANVAS))
    assert total > 0


def test_letterbox_matches_video_letterbox_and_json_boxes(syn: Path) -> None:
    ds = YTVISClipPairs(syn, 3, CANVAS)
    data = ds.data
    video = data.video(ds.video_ids[0])
    s = ds.render(PairPlan(0, tuple(range(6))))
    lb = Letterbox((video.height, video.width), tuple(CANVAS))
    frames = torch.cat([c["frames"] for c in s["clips"]])
    for t in range(6):
        assert np.array_equal(frames[t].numpy(), lb.apply(cv2.imread(str(video.frame_paths[t]))))
    assert (frames[:, :, lb.content_hw[1] :] == PAD_VALUE).all()
    # Every valid canvas box is the JSON bbox scaled by the letterbox factor (within resampling error).
    anns = {a["id"]: a for a in json.loads(syn.read_text())["annotations"]}
    checked = 0
    for c, off in zip(s["clips"], (0, 3)):
        for g, t in zip(*torch.nonzero(c["valid"], as_tuple=True)):
            x, y, w, h = (np.array(anns[int(c["inst_ids"][g])]["bboxes"][off + int(t)]) * lb.scale).tolist()
            expect = [(x + w / 2) / CANVAS[1], (y + h / 2) / CANVAS[0], w / CANVAS[1], h / CANVAS[0]]
            assert c["boxes"][g, t].tolist() == pytest.approx(expect, abs=1.5 / CANVAS[0])
            checked += 1
    assert checked > 0


def test_flip_mirrors_frames_masks_and_boxes_consistently(syn: Path) -> None:
    ds = YTVISClipPairs(syn, 3, CANVAS)
    cw = ds.geometry(ds.data.video(ds.video_ids[1]), PairPlan(1, ()))[1][1]
    plain = ds.render(PairPlan(1, tuple(range(1, 7))))
    flip = ds.render(PairPlan(1, tuple(range(1, 7)), flip=True))
    for a, b in zip(plain["clips"], flip["clips"]):
        assert torch.equal(a["inst_ids"], b["inst_ids"]) and torch.equal(a["valid"], b["valid"])
        assert torch.equal(a["frames"][:, :, :cw].flip(2), b["frames"][:, :, :cw])
        assert (b["frames"][:, :, cw:] == PAD_VALUE).all()  # padding stays bottom-right
        assert torch.equal(a["masks"][..., :cw].flip(-1), b["masks"][..., :cw])
        assert not b["masks"][..., cw:].any()
        v = a["valid"]
        assert v.any()
        expect = a["boxes"].clone()
        expect[..., 0] = cw / CANVAS[1] - expect[..., 0]
        assert torch.allclose(b["boxes"][v], expect[v], atol=1e-6)
        assert not torch.equal(a["boxes"][v], b["boxes"][v])


def test_scale_jitter_crops_or_pads_and_keeps_boxes_on_masks(syn: Path) -> None:
    ds = YTVISClipPairs(syn, 3, CANVAS)
    video = ds.data.video(ds.video_ids[2])
    _, (ch, cw), (oy, ox) = ds.geometry(video, PairPlan(2, (), scale=1.5, crop=(1.0, 0.5)))
    assert (ch, cw) == (72, 108) and (oy, ox) == (72 - 48, 6)
    big = ds.render(PairPlan(2, tuple(range(6)), scale=1.5, crop=(1.0, 0.5)))
    small = ds.render(PairPlan(2, tuple(range(6)), scale=0.5))
    _check_contract(big, 3, CANVAS)
    _check_contract(small, 3, CANVAS)
    assert not (torch.cat([c["frames"] for c in big["clips"]]) == PAD_VALUE).all(-1).all(0).any()
    # Frames and masks take the same crop: frames equal resize-then-crop, boxes equal the moved JSON boxes.
    img = cv2.imread(str(video.frame_paths[4]))
    expect_frame = cv2.resize(img, (cw, ch), interpolation=cv2.INTER_LINEAR)[oy : oy + 48, ox : ox + 96]
    assert np.array_equal(big["clips"][1]["frames"][1].numpy(), expect_frame)
    anns = {a["id"]: a for a in json.loads(syn.read_text())["annotations"]}
    scale, checked = 0.75 * 1.5, 0
    for c, off in zip(big["clips"], (0, 3)):
        for g, t in zip(*torch.nonzero(c["valid"], as_tuple=True)):
            x, y, w, h = (np.array(anns[int(c["inst_ids"][g])]["bboxes"][off + int(t)]) * scale).tolist()
            x, y = x - ox, y - oy
            if x < 1 or y < 1 or x + w > CANVAS[1] - 1 or y + h > CANVAS[0] - 1:
                continue  # cut by the crop
            expect = [(x + w / 2) / CANVAS[1], (y + h / 2) / CANVAS[0], w / CANVAS[1], h / CANVAS[0]]
            assert c["boxes"][g, t].tolist() == pytest.approx(expect, abs=1.5 / CANVAS[0])
            checked += 1
    assert checked > 0
    sf = torch.cat([c["frames"] for c in small["clips"]])
    assert (sf[:, 24:] == PAD_VALUE).all() and (sf[:, :, 36:] == PAD_VALUE).all()
    for c in small["clips"]:
        assert not c["masks"][..., 24:, :].any() and not c["masks"][..., 36:].any()
        assert (c["boxes"][..., 0] + c["boxes"][..., 2] / 2 <= 36 / 96 + 1e-6).all()


def test_random_augmentation_draws_and_reproducibility(syn: Path) -> None:
    ds = YTVISClipPairs(syn, 2, CANVAS, hflip_prob=0.5, scale_jitter=(0.8, 1.2), max_frame_stride=2)
    rng = np.random.default_rng(1)
    plans = [ds.plan(0, rng) for _ in range(200)]
    assert {p.frame_indices[1] - p.frame_indices[0] for p in plans} == {1, 2}
    assert {p.flip for p in plans} == {True, False}
    assert 0.8 <= min(p.scale for p in plans) < 0.85 and 1.15 < max(p.scale for p in plans) <= 1.2
    torch.manual_seed(5)
    a = ds[1]
    torch.manual_seed(5)
    b = ds[1]
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a["clips"], b["clips"]) for k in x)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_pairs)
    batch = next(iter(loader))
    assert isinstance(batch, list) and len(batch) == 2 and batch[0]["clips"][0]["frames"].shape[0] == 2


def test_from_config(syn: Path) -> None:
    from efficientvis_trt.config import get_config

    cfg = get_config("tiny")
    ds = YTVISClipPairs.from_config(cfg, syn)
    assert ds.clip_len == cfg.model.clip_len and list(ds.input_size) == cfg.model.input_size
    assert ds.max_frame_stride == cfg.train.max_frame_stride and ds.data.num_classes == cfg.model.num_classes
    _check_contract(ds.sample(0, np.random.default_rng(0)), cfg.model.clip_len, cfg.model.input_size)


def test_iter_frames_reads_a_frame_folder(syn: Path, tmp_path: Path) -> None:
    folder = syn.parent / "JPEGImages" / "train_00000"
    frames = list(iter_frames(folder))
    assert len(frames) == 8 and frames[0].shape == (64, 96, 3) and frames[0].dtype == np.uint8
    assert np.array_equal(frames[3], cv2.imread(str(folder / "00003.jpg")))
    assert len(list(iter_frames(folder, max_frames=3, stride=2))) == 3
    assert np.array_equal(list(iter_frames(folder, stride=3))[1], frames[3])
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvisError, match="empty"):
        list(iter_frames(tmp_path / "empty"))
