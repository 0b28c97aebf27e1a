"""A real Triton Inference Server on 127.0.0.1: the tritonserver of the nvidia-pytriton wheel, python backend.

The server side runs in its own numpy<2 environment (made once and cached, a minute or
two with PyPI; if it cannot be made these tests FAIL with the reason). One server per
module on free loopback ports, run under `timeout` so it stops by itself, killed in
teardown. Tiny bundle, short videos: about a minute once the environment is cached.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc
import tritonclient.http
from helpers import write_video

from efficientvis_trt.cli import main as evis_main
from efficientvis_trt.errors import EvisError
from efficientvis_trt.runtime.predictor import Predictor
from efficientvis_trt.serve.client import RetryPolicy, ServerModel, connect, remote_runtime
from efficientvis_trt.serve.repository import MODEL_NAMES, write_repository
from efficientvis_trt.video import read_frames, sample_video

LENGTHS = (7, 10, 12, 15)  # frames: different lengths, three of them with a padded last clip


@pytest.fixture(scope="module")
def server_env():
    from efficientvis_trt.serve.local_server import ensure_server_env

    try:
        return ensure_server_env(say=lambda msg: print(msg))
    except EvisError as exc:  # not a skip: CI must be able to make it (PyPI only)
        pytest.fail(f"cannot make the Triton server environment: {exc}")


@pytest.fixture(scope="module")
def server(server_env, tiny_random_bundle, tmp_path_factory):
    from efficientvis_trt.serve.local_server import LocalTritonServer

    repo = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(tiny_random_bundle, repo, backends=("python",), max_batch_size=4, queue_delay_us=20000)
    srv = LocalTritonServer(repo, MODEL_NAMES["python"], env=server_env, lifetime_s=600)
    srv.start(timeout_s=120)
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    frames = read_frames(sample_video("bikes.mp4"), max_frames=max(LENGTHS) + 9)
    return [write_video(d / f"bikes{n}.mp4", frames[i * 3 : i * 3 + n]) for i, n in enumerate(LENGTHS)]


@pytest.fixture(scope="module")
def local_results(tiny_random_bundle, videos):
    with Predictor(tiny_random_bundle, backend="ort", top_k=5) as p:
        return [p.predict_video(v).to_ytvis(1) for v in videos]


def _served_run(served: ServerModel, video, retry_s: float = 30.0):
    with Predictor(remote_runtime(served, retry=RetryPolicy(total_s=retry_s)), top_k=5) as p:
        result = p.predict_video(video)
        return result, p.backend


def test_four_concurrent_client_streams_equal_local_results(server, tiny_random_bundle, videos, local_results):
    from efficientvis_trt.bundle import Bundle

    bundle = Bundle.open(tiny_random_bundle)
    served = {proto: connect(server.url(proto), proto, bundle=bundle) for proto in ("grpc", "http")}
    assert {s.name for s in served.values()} == {MODEL_NAMES["python"]}
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def stream(i: int) -> None:
        try:
            results[i] = _served_run(served["grpc" if i % 2 else "http"], videos[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(videos))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    stats = tritonclient.http.InferenceServerClient(server.http_url)
    batches = stats.get_inference_statistics(MODEL_NAMES["python"])["model_stats"][0]["batch_stats"]
    assert max(int(b["batch_size"]) for b in batches) > 1  # requests of different streams ran as one batch
    for i, want in enumerate(local_results):
        result, backend = results[i]
        assert result.num_frames == LENGTHS[i]
        assert backend.requests == len(result.clip_latencies) == -(-LENGTHS[i] // bundle.clip_len)
        assert result.to_ytvis(1) == want  # same tracks, scores and RLE masks as local ONNX Runtime


def test_cli_through_the_server_writes_the_local_results_and_overlays(
    server, tiny_random_bundle, videos, tmp_path, capsys
):
    three = [str(v) for v in videos[:3]]
    common = ["--top-k", "5", "--no-progress"]
    assert evis_main(["infer", str(tiny_random_bundle), *three, "--backend", "ort", "--overlay",
                      "--out", str(tmp_path / "local"), *common]) == 0  # fmt: skip
    # no BUNDLE: the served model's config carries clip length, canvas, classes and the clip-0 state
    assert evis_main(["infer", *three, "--server", server.http_url, "--protocol", "http", "--overlay",
                      "--out", str(tmp_path / "served"), *common]) == 0  # fmt: skip
    assert "triton: model evis_python" in capsys.readouterr().out
    # the multi-stream runner with the server as its backend: 2 streams' clips go as one request of batch 2
    assert evis_main(["infer", str(tiny_random_bundle), *three, "--server", server.grpc_url, "--streams", "2",
                      "--out", str(tmp_path / "streams"), *common]) == 0  # fmt: skip
    local = json.loads((tmp_path / "local" / "results.json").read_text())
    assert len(local) > 0
    for name in ("served", "streams"):
        assert json.loads((tmp_path / name / "results.json").read_text()) == local, name
    meta = json.loads((tmp_path / "served" / "videos.json").read_text())
    assert meta["model"]["backend"] == "triton" and meta["model"]["source"].startswith("http://127.0.0.1:")
    for v in videos[:3]:
        name = f"{v.stem}.overlay.mp4"
        a, b = read_frames(tmp_path / "local" / name), read_frames(tmp_path / "served" / name)
        assert len(a) == len(b) > 0 and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_killed_mid_video_client_retries_and_resumes(server, videos, local_results, protocol):
    served = connect(server.url(protocol), protocol)
    video, want = videos[-1], local_results[-1]
    replies, killed = threading.Event(), threading.Event()
    killed_after: list[int] = []

    with Predictor(remote_runtime(served, retry=RetryPolicy(total_s=60, first_s=0.1)), top_k=5) as p:
        backend = p.backend
        real_infer = backend._infer

        def counting_infer(arrays):
            out = real_infer(arrays)
            if backend.requests == 1:
                replies.set()  # one clip done: the next one meets a dead server
                killed.wait(timeout=60)
            return out

        backend._infer = counting_infer

        def crash_and_restart() -> None:
            replies.wait(timeout=60)
            server.kill()
            killed_after.append(backend.requests)
            killed.set()
            time.sleep(1.0)
            server.start(timeout_s=120)

        chaos = threading.Thread(target=crash_and_restart)
        chaos.start()
        try:
            result = p.predict_video(video)
        finally:
            chaos.join(timeout=180)
    clips = -(-LENGTHS[-1] // p.clip_len)
    assert killed_after and killed_after[0] < clips, "the server was not killed mid-video"
    assert backend.retries >= 1  # at least one clip met the dead server and was resent
    assert backend.requests == len(result.clip_latencies) == clips  # nothing lost, nothing duplicated
    assert result.to_ytvis(1) == want  # resumed from the held state: as if never interrupted


def _raw_request(client_module, client, inputs, fingerprint=None):
    tensors = []
    for name, arr, dtype in inputs:
        t = client_module.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr)
        tensors.append(t)
    params = {"evis_fingerprint": fingerprint} if fingerprint else None
    return client.infer(MODEL_NAMES["python"], tensors, parameters=params)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_bad_requests_get_a_clear_error_and_the_server_keeps_serving(server, tiny_random_bundle, protocol):
    from tritonclient.utils import InferenceServerException

    from efficientvis_trt.bundle import Bundle

    module = {"grpc": tritonclient.grpc, "http": tritonclient.http}[protocol]
    client = module.InferenceServerClient(server.url(protocol))
    bundle = Bundle.open(tiny_random_bundle)
    q, b = (s[None] for s in bundle.init_state())
    h, w = bundle.input_hw
    frames = np.zeros((1, bundle.clip_len, h, w, 3), np.uint8)
    fingerprint = bundle.metadata["weights_sha256"]
    good = [("frames", frames, "UINT8"), ("query_in", q, "FP32"), ("boxes_in", b, "FP32")]
    bad_cases = {
        "unexpected shape": [("frames", frames[:, :, :-1], "UINT8"), *good[1:]],
        "data-type": [("frames", frames.astype(np.float32), "FP32"), *good[1:]],
        # a state of another config (more queries): Triton checks it against config.pbtxt
        "unexpected shape for input 'query_in'": [good[0], ("query_in", np.concatenate([q, q], 1), "FP32"), good[2]],
        "NaN or infinite": [good[0], ("query_in", np.full_like(q, np.nan), "FP32"), good[2]],
    }
    for words, inputs in bad_cases.items():
        with pytest.raises(InferenceServerException, match=words):
            _raw_request(module, client, inputs, fingerprint)
    # a state of another bundle with the same shapes: only the fingerprint tells
    with pytest.raises(InferenceServerException, match="belongs to another bundle"):
        _raw_request(module, client, good, fingerprint="0" * 64)
    assert client.is_server_live() and client.is_model_ready(MODEL_NAMES["python"])
    reply = _raw_request(module, client, good, fingerprint)
    assert reply.as_numpy("query_out").shape == q.shape and np.isfinite(reply.as_numpy("logits")).all()


def test_client_with_another_bundles_state_fails_at_once_with_one_line(server, tiny_random_bundle, tmp_path):
    from dataclasses import replace
    from types import SimpleNamespace

    from efficientvis_trt.bundle import Bundle

    served = connect(server.grpc_url, "grpc")
    other = replace(served, contract=replace(served.contract, fingerprint="f" * 64))
    start = time.monotonic()
    p = Predictor(remote_runtime(other, retry=RetryPolicy(total_s=60)), top_k=5)
    with p, pytest.raises(EvisError, match="refused a clip: .*another bundle") as info:
        p.predict_video(sample_video("bikes.mp4"), max_frames=5)
    assert time.monotonic() - start < 30  # not retried for the whole budget: the server's answer is final
    assert "\n" not in str(info.value)
    # and a bundle whose weights the server does not serve is refused before any clip (as another export of
    # the same config would be: same shapes, other weights_sha256)
    bundle = Bundle.open(tiny_random_bundle)
    other_bundle = SimpleNamespace(path=tmp_path / "other", metadata={**bundle.metadata, "weights_sha256": "0" * 64})
    with pytest.raises(EvisError, match="serves other weights"):
        connect(server.grpc_url, "grpc", bundle=other_bundle)
