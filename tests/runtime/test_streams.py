"""Many videos through the batched graph at once (`--streams`, `MultiStreamRunner`): each equals its solo run.

One tiny random-init bundle per module (export verification off: the export tests verify graphs).
Three videos of different lengths (3, 1 and 2 clips, each with a padded last clip) through 2 slots.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import write_video

from efficientvis_trt.cli import main as evis_main
from efficientvis_trt.errors import EvisError
from efficientvis_trt.runtime.postprocess import decode_rle
from efficientvis_trt.runtime.predictor import Predictor
from efficientvis_trt.runtime.streams import MultiStreamRunner, StreamClip, StreamDone
from efficientvis_trt.video import read_frames, sample_video

LENGTHS = (13, 4, 7)  # frames; T = 5 -> 3, 1 and 2 clips


@pytest.fixture(scope="module")
def bundle(make_tiny_bundle):
    return make_tiny_bundle()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    frames = read_frames(sample_video("bikes.mp4"), max_frames=40)
    starts = (0, 20, 30)  # different content per video
    return [write_video(d / f"v{n}.mp4", frames[s : s + n]) for s, n in zip(starts, LENGTHS)]


@pytest.fixture(scope="module")
def predictor(bundle):
    return Predictor(bundle, backend="ort", top_k=3)


@pytest.fixture(scope="module")
def solo(predictor, videos):
    """Each video run alone (B = 1): its per-clip outputs and its whole-video result."""
    out = []
    for v in videos:
        run = predictor.stream(v)
        out.append(([c.outputs for c in run], run.result()))
    return out


def _mask_iou(a: dict, b: dict) -> float:
    ma, mb = decode_rle(a).astype(bool), decode_rle(b).astype(bool)
    union = int((ma | mb).sum())
    return int((ma & mb).sum()) / union if union else 1.0


def test_clips_equal_solo_runs_and_slots_are_refilled(predictor, videos, solo):
    solo = [clips for clips, _ in solo]
    runner = MultiStreamRunner(predictor, 2)
    events = list(runner.run(videos))
    clips = {i: [e.clip.outputs for e in events if isinstance(e, StreamClip) and e.stream == i] for i in range(3)}
    for i, want in enumerate(solo):
        assert len(clips[i]) == len(want) == -(-LENGTHS[i] // predictor.clip_len)
        for got, ref in zip(clips[i], want, strict=True):
            for name, value in ref.items():  # same tolerance as the backend parity tests (ORT vs torch)
                np.testing.assert_allclose(got[name], value, atol=1e-5, err_msg=f"video {i} {name}")
    assert max(runner.batch_sizes) == 2 and sum(runner.batch_sizes) == sum(len(c) for c in solo)
    order = [(type(e).__name__, e.stream) for e in events]
    # The short video (1 clip) ends first, its slot goes to the third video while the long one still runs.
    assert order.index(("StreamDone", 1)) < order.index(("StreamClip", 2)) < order.index(("StreamDone", 0))
    assert runner.batch_sizes[:3] == [2, 2, 2]  # the refilled slot joins at once: batches stay full
    done = [e for e in events if isinstance(e, StreamDone)]
    assert [e.result.num_frames for e in sorted(done, key=lambda e: e.stream)] == list(LENGTHS)
    assert all(e.fps > 0 for e in done)


def test_predict_videos_equals_predict_video(predictor, videos, solo):
    batched = MultiStreamRunner(predictor, 2).predict_videos(videos)
    for a, b in zip([result for _, result in solo], batched, strict=True):
        assert (a.num_frames, len(a.tracks)) == (b.num_frames, len(b.tracks))
        for ta, tb in zip(a.tracks, b.tracks):
            assert (ta.query_index, ta.label) == (tb.query_index, tb.label)
            assert ta.score == pytest.approx(tb.score, abs=1e-4)
            np.testing.assert_allclose(ta.boxes, tb.boxes, atol=0.5)
    # The predictor is free again: a single-stream run works after a multi-stream one.
    assert predictor.predict_video(videos[1]).num_frames == LENGTHS[1]


def _infer(capsys, *args) -> tuple[int, str, str]:
    code = evis_main(["infer", *map(str, args), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_streams_2_of_3_videos_each_equal_its_solo_run(bundle, videos, solo, tmp_path, capsys):
    out = tmp_path / "streams"
    code, text, err = _infer(capsys, bundle, *videos, "--streams", "2", "--out", out, "--top-k", "3", "--overlay")
    assert code == 0, err
    assert "streams: 3 videos, up to 2 at once" in text and "FPS total" in text
    assert sum(line.startswith("[") and "FPS" not in line for line in text.splitlines()) == 3  # one line per video
    combined = json.loads((out / "results.json").read_text())
    meta = json.loads((out / "videos.json").read_text())
    assert [v["length"] for v in meta["videos"]] == list(LENGTHS) and meta["model"]["streams"] == 2
    for video_id, (video, (_, alone)) in enumerate(zip(videos, solo), 1):
        want = alone.to_ytvis(1)  # what `evis infer BUNDLE VIDEO` alone writes as its results.json
        mine = json.loads((out / f"{video.stem}.results.json").read_text())
        assert mine == [{**r, "video_id": 1} for r in combined if r["video_id"] == video_id]
        assert len(mine) == len(want) == 3
        for a, b in zip(mine, want):
            assert (a["video_id"], a["category_id"]) == (b["video_id"], b["category_id"])
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)
            assert len(a["segmentations"]) == LENGTHS[video_id - 1]
            assert min(_mask_iou(x, y) for x, y in zip(a["segmentations"], b["segmentations"])) > 0.98
        assert len(read_frames(out / f"{video.stem}.overlay.mp4")) == LENGTHS[video_id - 1]


def test_live_sources_run_as_streams(bundle, videos, tmp_path, capsys):
    code, text, err = _infer(capsys, bundle, videos[0], videos[2], "--live", "--streams", "2", "--out", tmp_path / "o")
    assert code == 0, err
    lines = text.splitlines()
    for tag, n in (("[1]", LENGTHS[0]), ("[2]", LENGTHS[2])):
        assert sum(line.startswith(f"{tag} clip ") for line in lines) == -(-n // 5)
        assert any(line.startswith(tag) and f"ended, {n} frames" in line for line in lines)
    assert "live: 2 streams" in text and not (tmp_path / "o" / "results.json").exists()
    code, _, err = _infer(capsys, bundle, videos[0], videos[2], "--live", "--out", tmp_path / "o")
    assert code == 2 and "give --streams 2" in err and len(err.strip().splitlines()) == 1


def test_bad_streams_and_broken_videos_are_one_line_and_write_nothing(bundle, videos, tmp_path, capsys):
    code, _, err = _infer(capsys, bundle, *videos, "--streams", "0", "--out", tmp_path / "a")
    assert code == 2 and "--streams must be >= 1" in err and not (tmp_path / "a").exists()
    full = write_video(tmp_path / "full.avi", read_frames(videos[0]), fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    out = tmp_path / "out"
    code, _, err = _infer(capsys, bundle, videos[1], "--out", out)  # an earlier output, replaced only whole
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = _infer(capsys, bundle, videos[1], cut, videos[2], "--streams", "2", "--out", out, "--overlay")
    assert code == 2 and "video is truncated" in err and len(err.strip().splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(EvisError, match="--streams must be >= 1"):
        MultiStreamRunner(Predictor(bundle, backend="ort"), 0)
