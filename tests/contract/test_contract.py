"""The per-clip contract: the PyTorch model, the exported graph and `efficientvis_trt.contract` agree."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from efficientvis_trt import contract
from efficientvis_trt.contract import (
    BATCH_DIM,
    INPUT_NAMES,
    IO_TABLE,
    OUTPUT_NAMES,
    PER_FRAME_OUTPUTS,
    STATE_PAIRS,
    drop_padded,
    io_table,
    letterbox_clip,
    model_io_dims,
    pad_clip,
    split_into_clips,
)
from efficientvis_trt.errors import EvisError

T, HW = 2, (64, 96)


@pytest.fixture(scope="module")
def tiny():
    from efficientvis_trt.config import get_config
    from efficientvis_trt.export.model_source import random_init_model

    return random_init_model(get_config("tiny"), seed=0).eval()


@pytest.fixture(scope="module")
def tiny_graph(tiny) -> onnx.ModelProto:
    from efficientvis_trt.export.exporter import export_onnx

    proto, _ = export_onnx(tiny, T, HW, "plugin", 18, "auto")
    return proto


def _table() -> list[dict]:
    from efficientvis_trt.config import get_config

    return io_table(model_io_dims(get_config("tiny").model, T, HW))


def test_table_is_consistent():
    assert tuple(r["name"] for r in IO_TABLE) == INPUT_NAMES + OUTPUT_NAMES
    for out, inp in STATE_PAIRS:  # a carried output has its input's shape and dtype
        o, i = (next(r for r in IO_TABLE if r["name"] == n) for n in (out, inp))
        assert (o["dir"], i["dir"], o["shape"], o["dtype"]) == ("out", "in", i["shape"], i["dtype"])
    assert PER_FRAME_OUTPUTS == ("logits", "boxes", "mask_logits")
    assert all(r["shape"][0] == BATCH_DIM for r in IO_TABLE)
    with pytest.raises(EvisError, match="dimension"):
        io_table({"T": 2})


def _with_streams(shape: list, streams: int) -> list[int]:
    return [streams if d == BATCH_DIM else d for d in shape]


def test_pytorch_model_matches_table(tiny):
    table = [{**r, "shape": _with_streams(r["shape"], 3)} for r in _table()]  # B = 3 streams
    feeds = {r["name"]: torch.zeros(r["shape"], dtype=getattr(torch, r["dtype"])) for r in table if r["dir"] == "in"}
    with torch.inference_mode():
        out = tiny.forward_clip(*(feeds[n] for n in INPUT_NAMES))
    assert tuple(out) == OUTPUT_NAMES
    for r in table:
        if r["dir"] == "out":
            assert list(out[r["name"]].shape) == r["shape"], r["name"]
            assert str(out[r["name"]].dtype) == f"torch.{r['dtype']}", r["name"]


def test_exported_graph_matches_table(tiny_graph):
    rows = []
    for direction, values in (("in", tiny_graph.graph.input), ("out", tiny_graph.graph.output)):
        for v in values:
            tt = v.type.tensor_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
            rows.append((v.name, direction, [d.dim_param or d.dim_value for d in tt.shape.dim], dtype))
    assert rows == [(r["name"], r["dir"], r["shape"], r["dtype"]) for r in _table()]
    assert all(r["shape"][0] == BATCH_DIM for r in _table())  # every input and output leads with the streams


def test_split_pads_last_clip_by_repeating_its_last_frame():
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(7)]
    clips = list(split_into_clips(frames, 3))
    assert [real for _, real in clips] == [3, 3, 1]
    assert [int(f[0, 0, 0]) for f in clips[1][0]] == [3, 4, 5]
    assert [int(f[0, 0, 0]) for f in clips[2][0]] == [6, 6, 6]
    assert [real for _, real in split_into_clips(frames[:6], 3)] == [3, 3]
    assert list(split_into_clips([], 3)) == []
    with pytest.raises(EvisError, match="clip length must be >= 1"):
        list(split_into_clips(frames, 0))
    with pytest.raises(EvisError, match="longer than the clip length 2"):
        pad_clip(frames[:3], 2)


def test_drop_padded_keeps_real_frames_of_per_frame_outputs():
    out = {"logits": np.arange(2 * 3 * 1).reshape(2, 3, 1), "boxes": np.zeros((2, 3, 4)), "query_out": np.zeros(5)}
    out["mask_logits"] = np.zeros((2, 3, 2, 2))
    kept = drop_padded(out, 2)
    assert set(kept) == set(PER_FRAME_OUTPUTS)
    assert kept["logits"].shape == (2, 2, 1) and kept["logits"][:, :, 0].tolist() == [[0, 1], [3, 4]]


def test_letterbox_clip_pads_and_letterboxes_each_size():
    from efficientvis_trt.video import Letterbox

    a, b = np.full((20, 40, 3), 10, np.uint8), np.full((40, 20, 3), 200, np.uint8)
    clip, real = letterbox_clip([a, b], (32, 32), 3)
    assert clip.shape == (3, 32, 32, 3) and clip.dtype == np.uint8 and real == 2
    assert np.array_equal(clip[0], Letterbox((20, 40), (32, 32)).apply(a))
    assert np.array_equal(clip[1], Letterbox((40, 20), (32, 32)).apply(b))
    assert np.array_equal(clip[2], clip[1])


def test_vocabularies():
    assert contract.PRECISIONS == ("fp32", "fp16", "int8")
    assert set(contract.BUILD_BACKENDS) <= set(contract.BACKENDS)
    assert [contract.canonical_backend(b) for b in contract.BACKEND_CHOICES] == [
        "auto",
        "torch",
        "onnxruntime",
        "tensorrt",
        "openvino",
        "onnxruntime",
        "tensorrt",
    ]
    with pytest.raises(EvisError, match="unknown backend 'tf'"):
        contract.canonical_backend("tf")
    with pytest.raises(EvisError, match="use one of fp32, fp16, int8"):
        contract.check_precision("bf16")  # no bf16 graph: a run precision only (OpenVINO's)
    assert contract.check_run_precision("bf16") == "bf16"
    with pytest.raises(EvisError, match="use one of fp32, fp16, bf16, int8"):
        contract.check_run_precision("fp8")


# ---- the clip step ---------------------------------------------------------------------------
def _fake_graph(calls: list):
    """A 'graph' whose state outputs differ from its inputs in ways a swapped or stale carry shows."""

    def run(inputs):
        calls.append(inputs)
        q, b = inputs["query_in"], inputs["boxes_in"]
        return {"logits": inputs["frames"].sum() + q.sum(), "query_out": q + 1.0, "boxes_out": b * 2.0}

    return run


def test_step_feeds_the_state_by_name_and_carries_the_right_outputs():
    calls: list = []
    state = contract.TrackletState(np.zeros((1, 3, 2), np.float32), np.ones((1, 3, 4), np.float32))
    frames = np.full((1, 2, 4, 4, 3), 7, np.uint8)
    for _ in range(3):
        out, state = contract.step(_fake_graph(calls), frames, state)
    assert [sorted(c) for c in calls] == [sorted(INPUT_NAMES)] * 3
    assert calls[0]["frames"] is frames
    np.testing.assert_array_equal(state.queries, np.full((1, 3, 2), 3.0))  # 0 + 1 + 1 + 1
    np.testing.assert_array_equal(state.boxes, np.full((1, 3, 4), 8.0))  # 1 * 2 * 2 * 2
    np.testing.assert_array_equal(calls[2]["query_in"], np.full((1, 3, 2), 2.0))  # clip 2 saw clip 1's state
    assert out["query_out"] is state.queries and out["boxes_out"] is state.boxes  # every output comes back
    assert set(out) == {"logits", *contract.STATE_OUTPUTS}


def test_state_names_follow_the_pairs():
    state = contract.TrackletState("q", "b")
    assert state.inputs() == {inp: v for (_, inp), v in zip(STATE_PAIRS, ("q", "b"))}
    assert contract.TrackletState.from_outputs({out: v for (out, _), v in zip(STATE_PAIRS, ("q", "b"))}) == state
    with pytest.raises(KeyError):
        contract.TrackletState.from_outputs({"logits": 0})


def test_initial_state_is_fresh_float32_per_stream():
    query, boxes = np.arange(6, dtype=np.float64).reshape(3, 2), np.ones((3, 4), np.float32)
    one = contract.TrackletState.initial((query, boxes))
    assert one.queries.shape == (1, 3, 2) and one.boxes.shape == (1, 3, 4)
    assert one.queries.dtype == one.boxes.dtype == np.float32
    many = contract.TrackletState.initial((query, boxes), streams=4)
    assert many.queries.shape == (4, 3, 2) and all(np.array_equal(s, query) for s in many.queries)
    many.boxes[0] += 1  # copies: the bundle's state and the other streams are untouched
    assert np.array_equal(boxes, np.ones((3, 4))) and np.array_equal(many.boxes[1], boxes)
    bare = contract.TrackletState.initial((query, boxes), streams=None)
    assert bare.queries.shape == (3, 2) and bare.boxes is not boxes
    with pytest.raises(EvisError, match="at least 1 stream"):
        contract.TrackletState.initial((query, boxes), streams=0)


def test_streams_stack_and_unstack_by_slot():
    a = contract.TrackletState(np.zeros((3, 2), np.float32), np.zeros((3, 4), np.float32))
    b = a.map(lambda x: x + 1)
    batch = contract.TrackletState.stack([a, b])
    assert batch.queries.shape == (2, 3, 2) and batch.boxes.shape == (2, 3, 4)
    slots = batch.unstack()
    assert len(slots) == 2 and np.array_equal(slots[1].boxes, b.boxes) and np.array_equal(slots[0].queries, a.queries)
    slots[0].queries[:] = 9  # a slot is its own copy: it outlives the batch's buffers
    assert not batch.queries[0].any()


def test_step_over_the_model_equals_calling_it_by_name(tiny):
    def run(inputs):
        return tiny.forward_clip(**inputs)

    frames = torch.randint(0, 255, (2, T, *HW, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    q, b = tiny.initial_state()
    with torch.inference_mode():
        _, state = contract.step(run, frames[0], contract.TrackletState(q, b))
        out, _ = contract.step(run, frames[1], state)
        first = tiny.forward_clip(frames[0], q, b)
        want = tiny.forward_clip(frames[1], first["query_out"], first["boxes_out"])
    for name in OUTPUT_NAMES:
        torch.testing.assert_close(out[name], want[name], rtol=0, atol=0)
