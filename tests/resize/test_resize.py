"""The letterbox's area resize: byte for byte OpenCV's INTER_AREA, on every path."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from efficientvis_trt import resize
from efficientvis_trt.resize import AreaResize, area_resizer, checked_resizer, compiled_kernels, resize_area

NEEDS_NUMBA = pytest.mark.skipif(compiled_kernels() is None, reason="numba is not installed (the fast extra)")
# Every exactness test runs on both paths: the compiled loops and the numpy fallback.
PATHS = pytest.mark.parametrize("compiled", [pytest.param(True, marks=NEEDS_NUMBA), False], ids=["compiled", "numpy"])


def _opencv(src: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return cv2.resize(src, hw[::-1], interpolation=cv2.INTER_AREA)


def _frames(rng: np.random.Generator, hw: tuple[int, int], channels: int) -> list[np.ndarray]:
    """Noise, flat steps (where exact ties are common) and blocky edges."""
    noise = rng.integers(0, 256, (*hw, channels), dtype=np.uint8)
    blocks = np.repeat(np.repeat(noise[::4, ::4], 4, 0), 4, 1)[: hw[0], : hw[1]]
    return [noise, (noise // 85 * 85).astype(np.uint8), np.ascontiguousarray(blocks)]


@pytest.fixture
def no_size_floor(monkeypatch):
    """The fast path for small test images too."""
    monkeypatch.setattr(resize, "MIN_SOURCE_PIXELS", 0)
    checked_resizer.cache_clear()
    yield
    checked_resizer.cache_clear()


@pytest.fixture
def numpy_only(monkeypatch):
    """As if numba were not installed."""
    monkeypatch.setattr(resize, "compiled_kernels", lambda: None)
    checked_resizer.cache_clear()
    yield
    checked_resizer.cache_clear()


@PATHS
def test_equals_opencv_on_random_sizes_and_contents(compiled):
    rng = np.random.default_rng(0)
    checked = 0
    while checked < 40:
        sh, sw = (int(v) for v in rng.integers(10, 200, 2))
        dh, dw = int(rng.integers(1, sh + 1)), int(rng.integers(1, sw + 1))
        if not resize._opencv_area_path((sh, sw), (dh, dw)):
            continue
        channels = int(rng.choice([1, 3, 4]))
        r = AreaResize((sh, sw), (dh, dw), channels, compiled=compiled)
        for src in _frames(rng, (sh, sw), channels):
            out = np.empty((dh, dw, channels), np.uint8)
            assert r(src, out, max_replay_share=1.0)
            assert np.array_equal(out, _opencv(src, (dh, dw)).reshape(out.shape)), ((sh, sw), (dh, dw), channels)
        checked += 1


REPLAY_SIZES = [((360, 640), (126, 224)), ((97, 131), (23, 40)), ((64, 300), (64, 77))]


@pytest.mark.parametrize("src_hw, dst_hw", REPLAY_SIZES)
def test_the_replay_alone_is_opencvs_arithmetic(src_hw, dst_hw):
    """Replaying every value, not only the near-ties, gives OpenCV's bytes: the replay is its arithmetic."""
    rng = np.random.default_rng(1)
    r = AreaResize(src_hw, dst_hw, 3, compiled=False)
    for src in _frames(rng, src_hw, 3):
        every = np.arange(dst_hw[0] * dst_hw[1] * 3)
        got = r.replay(src, every).reshape(*dst_hw, 3).astype(np.uint8)
        assert np.array_equal(got, _opencv(src, dst_hw))


@NEEDS_NUMBA
@pytest.mark.parametrize("src_hw, dst_hw", REPLAY_SIZES)
def test_the_compiled_replay_alone_is_opencvs_arithmetic(src_hw, dst_hw):
    """The compiled rounding with a band of 1 replays every value: OpenCV's bytes, and the count says so."""
    rng = np.random.default_rng(1)
    r = AreaResize(src_hw, dst_hw, 3, compiled=True)
    x, y = r.x, r.y
    for src in _frames(rng, src_hw, 3):
        got = np.zeros((*dst_hw, 3), np.uint8)
        sums = np.full((dst_hw[0], dst_hw[1] * 3), 0.5, np.float32)  # rounded alone, 0 or 1 everywhere
        s2, rows = src.reshape(src_hw[0], -1), got.reshape(dst_hw[0], -1)
        replayed = r.kernels.round_and_replay(sums, s2, y.src, y.weight, x.src, x.weight, 3, 1.0, rows)
        assert replayed == got.size and np.array_equal(got, _opencv(src, dst_hw))


@PATHS
def test_the_fast_sums_stay_inside_the_error_bound_the_tie_band_assumes(compiled):
    rng = np.random.default_rng(2)
    r = AreaResize((720, 1280), (126, 224), 3, compiled=compiled)
    src = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    exact = r.y.dense.astype(np.float64) @ src.reshape(720, -1).astype(np.float64)
    exact = np.einsum("dx,yxc->ydc", r.x.dense.astype(np.float64), exact.reshape(126, 1280, 3))
    err = np.abs(r.approximate(src).astype(np.float64) - exact.reshape(126, -1)).max()
    assert 0 < err <= r.tie_band / 4


def test_a_720p_video_frame_takes_the_fast_path_and_keeps_every_byte():
    from efficientvis_trt.video import read_frames, sample_video

    frames = read_frames(sample_video("bikes.mp4"), max_frames=4)
    assert area_resizer((720, 1280), (126, 224), 3) is not None
    for f in frames:
        big = cv2.resize(f, (1280, 720), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(resize_area(big, (224, 126)), _opencv(big, (126, 224)))


@pytest.mark.parametrize(
    "src_hw, dst_hw, why",
    [
        ((720, 1280), (360, 640), "integer scales: OpenCV's SIMD fast path"),
        ((720, 1280), (1000, 1000), "upscaling: not the area path"),
        ((720, 1280), (720, 1280), "same size: a copy"),
    ],
)
def test_other_cases_are_opencvs_own_resize(src_hw, dst_hw, why):
    assert area_resizer(src_hw, dst_hw, 3) is None, why
    src = np.random.default_rng(3).integers(0, 256, (*src_hw, 3), dtype=np.uint8)
    assert np.array_equal(resize_area(src, dst_hw[::-1]), _opencv(src, dst_hw))


@pytest.mark.usefixtures("numpy_only")
def test_without_numba_small_frames_keep_opencvs_own_resize():
    assert area_resizer((360, 640), (126, 224), 3) is None, "the numpy path does not gain there"
    assert area_resizer((720, 1280), (126, 224), 3).kernels is None
    with pytest.raises(ImportError, match="needs numba"):
        AreaResize((720, 1280), (126, 224), 3, compiled=True)


@pytest.mark.parametrize("how", ["numba blocked", "NUMBA_DISABLE_JIT=1"])
def test_without_numba_or_with_its_jit_off_the_letterbox_is_the_numpy_path_and_opencvs_bytes(how):
    """A process with no numba (or with numba's JIT off, where its loops would run as Python) letterboxes
    with numpy and never loads numba."""
    from helpers import run_python

    code = (
        "import sys, cv2, numpy as np\n"
        "from efficientvis_trt.resize import area_resizer, resize_area\n"
        "src = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)\n"
        "assert area_resizer((720, 1280), (126, 224), 3).kernels is None\n"
        "want = cv2.resize(src, (224, 126), interpolation=cv2.INTER_AREA)\n"
        "assert np.array_equal(resize_area(src, (224, 126)), want)\n"
        "assert 'numba' not in sys.modules\n"
    )
    if how == "numba blocked":
        proc = run_python(code, block=("numba",))
    else:
        proc = run_python(code, env={"NUMBA_DISABLE_JIT": "1"})
    assert proc.returncode == 0, proc.stderr


@NEEDS_NUMBA
def test_warm_up_compiles_both_output_layouts_before_any_frame():
    """A contiguous canvas and a canvas's strided content are two numba signatures: both ready up front
    (a fresh interpreter, so nothing else has compiled them)."""
    from helpers import run_python

    code = (
        "from efficientvis_trt import resize, resize_kernels as k\n"
        "assert not k.round_and_replay.signatures\n"
        "resize.warm_up()\n"
        "assert len(k.vertical_sums.signatures) == 1\n"
        "assert {sig[-1].layout for sig in k.round_and_replay.signatures} == {'C', 'A'}\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr


@NEEDS_NUMBA
def test_with_numba_small_frames_take_the_compiled_path():
    r = area_resizer((360, 640), (126, 224), 3)
    assert r is not None and r.kernels is not None


@pytest.fixture(params=[pytest.param(True, marks=NEEDS_NUMBA), False], ids=["compiled", "numpy"])
def either_path(request, monkeypatch):
    """`resize_area` on one path: the compiled loops, or numpy with no size floor."""
    if not request.param:
        monkeypatch.setattr(resize, "compiled_kernels", lambda: None)
    monkeypatch.setattr(resize, "MIN_SOURCE_PIXELS", 0)
    checked_resizer.cache_clear()
    yield request.param
    checked_resizer.cache_clear()


def test_any_output_view_gray_four_channels_and_other_dtypes(either_path):
    rng = np.random.default_rng(4)
    src = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    canvas = np.zeros((40, 64, 3), np.uint8)
    resize_area(src, (50, 28), out=canvas[:28, :50])  # not contiguous: the content of a wider canvas
    assert np.array_equal(canvas[:28, :50], _opencv(src, (28, 50)))
    assert not canvas[28:].any() and not canvas[:, 50:].any()
    for other in (src[..., 0].copy(), rng.integers(0, 256, (90, 160, 4), dtype=np.uint8), src.astype(np.float32)):
        assert np.array_equal(resize_area(other, (50, 28)), _opencv(other, (28, 50)))
    assert (area_resizer((90, 160), (28, 50), 1).kernels is not None) == either_path


@pytest.mark.usefixtures("no_size_floor")
def test_an_opencv_that_rounds_differently_keeps_opencvs_own_resize(monkeypatch):
    real = cv2.resize
    monkeypatch.setattr(cv2, "resize", lambda *a, **k: real(*a, **k) ^ np.uint8(1))
    assert area_resizer((90, 160), (28, 50), 3) is None


def test_too_many_near_ties_leave_the_output_untouched():
    r = AreaResize((90, 160), (28, 50), 3, compiled=False)
    src = (np.random.default_rng(5).integers(0, 256, (90, 160, 3)) // 85 * 85).astype(np.uint8)
    out = np.zeros((28, 50, 3), np.uint8)
    assert not r(src, out, max_replay_share=0.0) and not out.any()


@pytest.mark.parametrize("src_hw", [(720, 1280), (1080, 1920), (2160, 3840)])
def test_every_matrix_product_is_small_enough_for_one_blas_thread(src_hw):
    r = AreaResize(src_hw, (126, 224), 3, compiled=False)
    width = src_hw[1] * 3
    vertical = [(b - a) * (s1 - s0) * width for a, b, s0, s1, _ in r._vertical]
    horizontal = [126 * 9 * (b - a) * (s1 - s0) for a, b, s0, s1, _ in r._horizontal]
    assert max(vertical + horizontal) < resize._GEMM_SINGLE_THREAD_MNK
    assert len(r._vertical) < 126 or src_hw[0] > 1080  # blocks of several rows where they fit


@PATHS
def test_one_resizer_serves_several_threads_at_once(compiled):
    r = AreaResize((720, 1280), (126, 224), 3, compiled=compiled)
    rng = np.random.default_rng(6)
    srcs = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(3)]
    wants = [_opencv(s, (126, 224)) for s in srcs]
    bad: list[int] = []

    def work(i: int) -> None:
        out = np.empty((126, 224, 3), np.uint8)
        for _ in range(4):
            if not (r(srcs[i], out) and np.array_equal(out, wants[i])):
                bad.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


@pytest.mark.parametrize("src_hw, dst_hw", [((272, 640), (122, 288)), ((97, 131), (23, 40)), ((720, 1280), (126, 224))])
def test_the_torch_path_computes_opencvs_bytes_for_every_value(src_hw, dst_hw):
    """The device letterbox's arithmetic (`exact_torch`), run here on CPU tensors: a batch of frames."""
    import torch

    rng = np.random.default_rng(7)
    batch = np.stack(_frames(rng, src_hw, 3))
    got = AreaResize(src_hw, dst_hw, 3).exact_torch(torch.from_numpy(batch))
    assert got.dtype == torch.uint8 and tuple(got.shape) == (3, *dst_hw, 3)
    for src, out in zip(batch, got.numpy()):
        assert np.array_equal(out, _opencv(src, dst_hw))


@pytest.mark.cuda
def test_the_device_letterbox_on_cuda_is_the_hosts_byte_for_byte():
    import torch

    from efficientvis_trt.video import Letterbox, read_frames, sample_video

    frames = [cv2.resize(f, (1280, 720)) for f in read_frames(sample_video("bikes.mp4"), max_frames=5)]
    lb = Letterbox((720, 1280), (128, 224))
    assert lb.on_device()
    got = lb.apply_torch(torch.from_numpy(np.stack(frames)).cuda()).cpu().numpy()
    assert np.array_equal(got, np.stack([lb.apply(f) for f in frames]))
