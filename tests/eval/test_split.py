"""Evaluating a predictor on a split: frames in the JSON's order, one rule for the annotation file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from efficientvis_trt.data.ytvis import load_ytvis, resolve_annotations
from efficientvis_trt.errors import EvisError
from efficientvis_trt.eval.split import evaluate_split, predict_split
from efficientvis_trt.runtime.postprocess import Track, VideoResult, encode_rle


@pytest.fixture(scope="module")
def val_split(tmp_path_factory) -> Path:
    from efficientvis_trt.data.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("split") / "val"
    make_synthetic(out, "val", 2, seed=5, frames=6, size=(96, 160), progress=False)
    return out


class GroundTruthPredictor:
    """Answers every video with its own ground truth: AP must come out exactly 1.0."""

    def __init__(self, data_dir: Path):
        self.data = load_ytvis(resolve_annotations(data_dir))
        self.calls = 0
        self.frames: list[list[np.ndarray]] = []

    def predict_video(self, frames, max_frames=None):
        video = self.data.videos[self.calls]  # videos run in JSON order
        self.calls += 1
        self.frames.append(list(frames))
        assert len(self.frames[-1]) == video.length  # every annotated frame
        tracks = []
        for ann in self.data.annotations_of(video):
            segs = []
            for t in range(video.length):
                m = self.data.decode_mask(ann, t)
                segs.append(encode_rle(m if m is not None else np.zeros((video.height, video.width), np.uint8)))
            tracks.append(Track(ann.id, ann.label, 1.0, np.zeros((video.length, 4)), np.ones(video.length), segs))
        return VideoResult(video.name, video.height, video.width, video.length, tracks)


def test_perfect_results_score_one(val_split):
    predictor = GroundTruthPredictor(val_split)
    stats = evaluate_split(predictor, val_split)
    assert predictor.calls == 2
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)


def test_a_wrong_class_scores_zero(val_split):
    predictor = GroundTruthPredictor(val_split)
    original = predictor.predict_video

    def shifted(frames, max_frames=None):
        result = original(frames, max_frames)
        for t in result.tracks:
            t.label = (t.label + 1) % predictor.data.num_classes
        return result

    predictor.predict_video = shifted
    assert evaluate_split(predictor, val_split)["AP"] < 0.5


def test_frames_come_in_file_names_order_not_the_folder_listing(val_split, tmp_path):
    """A JSON that names its frames out of name order, in a folder holding an extra frame, is read as named."""
    import shutil

    split = tmp_path / "split"
    shutil.copytree(val_split, split)
    raw = json.loads((split / "annotations.json").read_text())
    video = raw["videos"][0]
    order = list(range(len(video["file_names"])))[::-1]
    video["file_names"] = [video["file_names"][i] for i in order]
    for ann in raw["annotations"]:
        if ann["video_id"] == video["id"]:
            for key in ("segmentations", "bboxes", "areas"):
                if key in ann:
                    ann[key] = [ann[key][i] for i in order]
    first = split / "JPEGImages" / video["file_names"][0]
    cv2.imwrite(str(first.parent / "zzz_unannotated.jpg"), np.zeros((video["height"], video["width"], 3), np.uint8))
    (split / "annotations.json").write_text(json.dumps(raw))

    predictor = GroundTruthPredictor(split)
    gt, results = predict_split(predictor, split, max_videos=1)
    expected = [cv2.imread(str(split / "JPEGImages" / name)) for name in video["file_names"]]
    assert all(np.array_equal(a, b) for a, b in zip(predictor.frames[0], expected, strict=True))
    assert [v["id"] for v in gt["videos"]] == [video["id"]] and all(r["video_id"] == video["id"] for r in results)


def test_a_class_count_mismatch_is_one_error(val_split):
    predictor = GroundTruthPredictor(val_split)
    predictor.class_names = ["only-one"]
    with pytest.raises(EvisError, match="classes"):
        evaluate_split(predictor, val_split)


def test_one_rule_for_the_annotation_file(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    assert resolve_annotations(tmp_path) == tmp_path / "a.json"  # the folder's only JSON
    assert resolve_annotations(tmp_path / "a.json") == tmp_path / "a.json"  # the file itself
    (tmp_path / "metadata.json").write_text("{}")
    with pytest.raises(EvisError, match="several JSON"):  # never the first of several
        resolve_annotations(tmp_path)
    (tmp_path / "annotations.json").write_text("{}")
    assert resolve_annotations(tmp_path) == tmp_path / "annotations.json"
    with pytest.raises(EvisError, match="no annotations.json"):
        resolve_annotations(_empty(tmp_path))
    with pytest.raises(EvisError, match="not found"):
        resolve_annotations(tmp_path / "missing")


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def test_the_evaluation_speed_benchmark_builds_a_case_the_evaluator_scores():
    """benchmarks/eval_speed.py (moved out of the package) at a tiny scale: a valid case, a sane AP."""
    import importlib.util

    from efficientvis_trt.eval import evaluate

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "eval_speed.py"
    spec = importlib.util.spec_from_file_location("eval_speed", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    gt, results = mod.make_synthetic_case(
        n_videos=2, n_dets=12, n_frames=3, n_gts=2, n_cats=3, height=24, width=32, pool=8
    )
    assert len(gt["videos"]) == 2 and len(results) == 24
    assert 0.0 < evaluate(gt, results).stats["AP"] <= 1.0  # noisy copies of the ground truth match some
