"""`evis demo` end to end on tiny settings: every step runs, the table is complete, a rerun reuses the work."""

from __future__ import annotations

import json

import pytest
from helpers import missing_for

from efficientvis_trt import capabilities
from efficientvis_trt.cli import main
from efficientvis_trt.measure.report import COLUMNS, GPU_ONLY

TINY = [
    "--train-iters",
    "2",
    "--train-videos",
    "2",
    "--val-videos",
    "1",
    "--frames",
    "10",
    "--max-frames",
    "10",
    "--iters",
    "1",
    "--calib-videos",
    "2",
    "--calib-clips",
    "2",
]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    return out


@pytest.mark.slow
def test_demo_writes_every_artifact(demo_dir):
    assert (demo_dir / "run" / "final.pt").is_file()
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "metadata.json", "init_state.npz"):
        assert (demo_dir / "bundle" / name).is_file(), name
    overlay = demo_dir / "bikes.overlay.mp4"
    assert overlay.is_file() and overlay.stat().st_size > 1000
    import cv2

    cap = cv2.VideoCapture(str(overlay))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    for name in ("bench.md", "bench.csv", "bench.json", "bench.png"):
        assert (demo_dir / "bench" / name).is_file(), name
    comparison = demo_dir / "val_00000.truth_vs_prediction.mp4"
    cap = cv2.VideoCapture(str(comparison))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 2 * 320


def test_truth_beside_prediction_differs_where_they_differ(tmp_path):
    """Both halves show the same frame; an object only the truth has is drawn only on the left; titles on top."""
    import cv2
    import numpy as np

    from efficientvis_trt.commands.demo import ground_truth_tracks
    from efficientvis_trt.data.synthetic import make_synthetic
    from efficientvis_trt.runtime.overlay import BANNER_HEIGHT, render_comparison
    from efficientvis_trt.runtime.postprocess import decode_rle

    make_synthetic(tmp_path / "val", "val", 1, seed=3, frames=4, size=(96, 160), objects=(2, 2), progress=False)
    gt = json.loads((tmp_path / "val" / "annotations.json").read_text())
    truth = ground_truth_tracks(gt, 1)
    assert len(truth) == 2 and all(t.score == 1.0 for t in truth)
    path = render_comparison(
        tmp_path / "val" / "JPEGImages" / "val_00000",
        [("ground truth", truth, False), ("prediction", truth[:1], True)],
        tmp_path / "cmp.mp4",
    )
    cap = cv2.VideoCapture(str(path))
    frames = []
    while (item := cap.read())[0]:
        frames.append(item[1].astype(np.int16))
    assert len(frames) == 4 and frames[0].shape == (96 + BANNER_HEIGHT, 2 * 160, 3)
    only_truth = truth[1]
    checked = 0
    for f, frame in enumerate(frames):
        left, right = frame[BANNER_HEIGHT:, :160], frame[BANNER_HEIGHT:, 160:]
        missing = decode_rle(only_truth.segmentations[f]).astype(bool)
        if missing.sum() < 50:
            continue
        drawn = np.zeros(missing.shape, bool)
        for t in truth[:1]:
            drawn |= decode_rle(t.segmentations[f]).astype(bool)
        x1, y1, x2, y2 = (int(v) for v in only_truth.boxes[f])
        near_box = np.zeros(missing.shape, bool)
        near_box[max(0, y1 - 20) : y2 + 20, max(0, x1 - 60) : x2 + 20] = True
        plain = ~missing & ~drawn & ~near_box  # neither panel draws here (box, label) -> the same picture
        only_left = missing & ~drawn
        assert np.abs(left - right)[only_left].mean() > 3 * max(1.0, np.abs(left - right)[plain].mean())
        checked += 1
    assert checked > 0
    titles = [frames[0][:BANNER_HEIGHT, :160], frames[0][:BANNER_HEIGHT, 160:]]
    assert all((t > 200).any() for t in titles)  # white text on the dark banner
    assert np.abs(titles[0] - titles[1]).sum() > 0  # two different titles


@pytest.mark.slow
def test_bench_table_has_a_row_per_backend_and_precision(demo_dir):
    data = json.loads((demo_dir / "bench" / "bench.json").read_text())
    rows = {(r["backend"], r["precision"]): r for r in data["rows"]}
    assert set(rows) == {(b, p) for b in ("torch", "ort", "trt", "openvino") for p in ("fp32", "fp16", "int8")}
    for key in [("torch", "fp32"), ("ort", "fp32"), ("ort", "fp16"), ("ort", "int8")]:
        row = rows[key]
        assert row["available"], (key, row["reason"])
        for col, _, _ in COLUMNS:
            if col not in GPU_ONLY:
                assert row.get(col) is not None, (key, col)
        assert row["latency_p50_ms"] > 0 and row["model_fps"] > 0 and row["e2e_fps"] > 0
        assert row["e2e_fps"] <= row["model_fps"] and 0 < row["e2e_over_model"] <= 1  # one run, model time in wall
        assert 0.0 <= row["AP"] <= 1.0
    # What this machine has decides the GPU rows: available exactly where the hardware is.
    if missing_for("cuda") is None:
        assert rows[("torch", "fp16")]["available"], rows[("torch", "fp16")]["reason"]
    else:
        assert "CUDA" in rows[("torch", "fp16")]["reason"]
    assert not rows[("torch", "int8")]["available"]
    trt_missing = missing_for("tensorrt")
    for p in ("fp32", "fp16", "int8"):
        row = rows[("trt", p)]
        assert row["available"] == (trt_missing is None), (trt_missing, row["reason"])
        assert row["available"] or row["reason"]
    openvino = capabilities.openvino().available
    for p in ("fp32", "int8"):
        assert rows[("openvino", p)]["available"] == openvino, rows[("openvino", p)]["reason"]
    assert not rows[("openvino", "fp16")]["available"] and "not fp16" in rows[("openvino", "fp16")]["reason"]
    assert "ort_int8_over_fp32_fps" in data["ratios"]


@pytest.mark.slow
def test_second_run_reuses_model_bundle_and_graphs(demo_dir, capsys):
    before = (demo_dir / "bundle" / "model.int8.onnx").stat().st_mtime_ns
    assert main(["demo", "--out", str(demo_dir), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "reusing cached model" in printed and "reusing" in printed.split("== 3/6")[1]
    assert (demo_dir / "bundle" / "model.int8.onnx").stat().st_mtime_ns == before
    assert "ground truth | prediction: " in printed and "left: the ground truth of val_00000" in printed


def test_model_source_prefers_given_then_cached_then_training_when_asked_then_shipped(tmp_path):
    from efficientvis_trt.commands.demo import model_source

    cached, shipped = tmp_path / "run" / "final.pt", tmp_path / "shipped.pt"
    assert model_source(None, cached, shipped, wants_training=False) == "shipped"
    assert model_source(None, cached, shipped, wants_training=True) == "train"
    assert model_source(None, cached, None, wants_training=False) == "train"
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    assert model_source(None, cached, shipped, wants_training=True) == "cached"
    assert model_source(tmp_path / "mine.pt", cached, shipped, wants_training=False) == "given"


def test_shipped_checkpoint_is_the_recipe_model_and_loads():
    """The package ships the recipe's trained tiny model with its provenance (what the demo uses by default)."""
    from efficientvis_trt.io_utils import file_sha256
    from efficientvis_trt.model.checkpoint import SHIPPED_TINY_CHECKPOINT, load_checkpoint, shipped_tiny_checkpoint

    assert shipped_tiny_checkpoint() == SHIPPED_TINY_CHECKPOINT
    provenance = json.loads(SHIPPED_TINY_CHECKPOINT.with_suffix(".json").read_text())
    assert provenance["sha256"] == file_sha256(SHIPPED_TINY_CHECKPOINT)
    assert provenance["command"].startswith("python benchmarks/train_synthetic.py")
    model, payload = load_checkpoint(SHIPPED_TINY_CHECKPOINT)
    assert payload["config"]["model"]["input_size"] == list(provenance["recipe"]["input_size"])
    assert len(payload["class_names"]) == model.config.model.num_classes


def test_the_demo_names_the_shipped_models_ap_and_training_time(tmp_path):
    from efficientvis_trt.commands.demo import shipped_summary
    from efficientvis_trt.model.checkpoint import SHIPPED_TINY_CHECKPOINT

    provenance = json.loads(SHIPPED_TINY_CHECKPOINT.with_suffix(".json").read_text())
    said = shipped_summary(SHIPPED_TINY_CHECKPOINT)
    assert f"{100 * provenance['AP']:.1f} AP" in said and f"after {provenance['iterations']} iterations" in said
    assert shipped_summary(tmp_path / "elsewhere.pt") == "no provenance beside it"
    (tmp_path / "odd.json").write_text("[]")
    assert shipped_summary(tmp_path / "odd.pt") == "its provenance records no AP"
