"""The Triton RoIAlign kernel against the PyTorch reference.

On CPU the kernel runs in Triton's interpreter. TRITON_INTERPRET is handled per test with
``monkeypatch.setenv`` (restored afterwards, so no other test sees it): the kernel module
wraps its kernel for the interpreter or the compiler at call time, from the environment
at that moment, instead of at import with a module-level ``@triton.jit``. So no
subprocess and no conftest-wide setting is needed, and other tests that import triton
are unaffected. The same tests run on CUDA (compiled kernel, TRITON_INTERPRET unset)
when torch sees a GPU, and are skipped otherwise.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="Triton not installed")

from efficientvis_trt.errors import BackendUnavailable, EvisError
from efficientvis_trt.model.roi_align import assign_levels, multi_level_roi_align_reference
from efficientvis_trt.plugins.spec import RoIAlignAttrs
from efficientvis_trt.plugins.triton_roi_align import _launch, multi_level_roi_align_triton

IMAGE = (512, 640)  # H, W: P2 128x160 ... P5 16x20


@pytest.fixture(params=["interpreter", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request, monkeypatch):
    """The compiled kernel on CUDA (the `cuda` marker skips it elsewhere), the interpreter on the CPU."""
    if request.param == "interpreter":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        return torch.device("cpu")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    return torch.device("cuda")


def make_features(batch=2, channels=6, levels=4, min_level=2, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, channels, IMAGE[0] >> (min_level + i), IMAGE[1] >> (min_level + i), generator=g).to(dtype)
        for i in range(levels)
    ]


def make_rois(batch=2, seed=1):
    """Boxes that hit every level, cross the image border, lie fully outside, or have zero area."""
    g = torch.Generator().manual_seed(seed)
    h, w = IMAGE
    boxes = []
    for _ in range(batch):
        per = []
        for side in (30.0, 80.0, 150.0, 200.0, 260.0, 400.0, 520.0, 700.0):  # levels 2, 2, 3, 3, 4, 4, 5, 5
            cx = float(torch.rand(1, generator=g)) * w
            cy = float(torch.rand(1, generator=g)) * h
            ar = 0.6 + 0.8 * float(torch.rand(1, generator=g))
            per.append([cx - side * ar / 2, cy - side / ar / 2, cx + side * ar / 2, cy + side / ar / 2])
        per += [
            [-60.0, -40.0, 90.0, 70.0],  # partly outside, top-left
            [w - 50.0, h - 30.0, w + 150.0, h + 90.0],  # partly outside, bottom-right
            [w + 100.0, 20.0, w + 300.0, 200.0],  # fully outside: all samples invalid -> zeros
            [100.0, 120.0, 100.0, 220.0],  # zero width
            [50.5, 60.25, 50.5, 60.25],  # a point
            [300.0, 200.0, 250.0, 150.0],  # inverted: negative bins, w*h > 0 for the level rule
        ]
        boxes.append(per)
    return torch.tensor(boxes, dtype=torch.float32)


def reference(features, rois, attrs: RoIAlignAttrs):
    return multi_level_roi_align_reference(features, rois, attrs)


def run_both(device, features, rois, attrs):
    got = multi_level_roi_align_triton([f.to(device) for f in features], rois.to(device), attrs)
    want = reference([f.to(device) for f in features], rois.to(device), attrs)
    assert got.shape == want.shape and got.dtype == want.dtype and got.device.type == device.type
    return got.cpu(), want.cpu()


def test_test_boxes_hit_every_level_and_the_edge_cases():
    rois = make_rois()
    levels = assign_levels(rois, 224.0, 4, 2, 5)
    assert set(levels.unique().tolist()) == {0, 1, 2, 3}


def test_fp32_matches_reference(device):
    attrs = RoIAlignAttrs(output_size=7, sampling_ratio=2)
    got, want = run_both(device, make_features(), make_rois(), attrs)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert got[:, 10].abs().max() == 0  # the box fully outside pools zeros
    assert torch.isfinite(got).all()


def test_fp16_features_match_reference(device):
    attrs = RoIAlignAttrs(output_size=7, sampling_ratio=2)
    got, want = run_both(device, make_features(dtype=torch.float16), make_rois(), attrs)
    assert got.dtype == torch.float16
    # both accumulate in fp32 and round once to fp16: at most one fp16 ulp apart
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-3, atol=1e-3)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # fp16 w*h of the 700 px boxes -> inf
def test_fp16_rois_and_features(device):
    attrs = RoIAlignAttrs(output_size=7, sampling_ratio=2)
    rois = make_rois().clamp(-200, 800).half()  # the level rule computes w*h in fp16, like the reference
    got, want = run_both(device, make_features(dtype=torch.float16), rois, attrs)
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize(
    "attrs",
    [
        RoIAlignAttrs(output_size=14, sampling_ratio=2),  # mask head
        RoIAlignAttrs(output_size=7, sampling_ratio=1),
        RoIAlignAttrs(output_size=5, sampling_ratio=3, canonical_box_size=160.0, canonical_level=3),
        RoIAlignAttrs(output_size=7, sampling_ratio=2, aligned=0),  # legacy: no half-pixel, >= 1 px boxes
    ],
    ids=["P14", "S1", "canonical", "unaligned"],
)
def test_attribute_variants_match_reference(device, attrs):
    got, want = run_both(device, make_features(batch=1, channels=3), make_rois(batch=1), attrs)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_fewer_levels_and_other_min_level(device):
    attrs = RoIAlignAttrs(output_size=7, sampling_ratio=2, min_level=3)
    feats = make_features(batch=1, channels=3, levels=3, min_level=3)
    got, want = run_both(device, feats, make_rois(batch=1), attrs)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_kernel_writes_every_output_element(device):
    """A NaN-filled output buffer has no NaN left: the grid covered all of it."""
    attrs = RoIAlignAttrs(output_size=7, sampling_ratio=2)
    feats = [f.to(device) for f in make_features(batch=2, channels=37)]  # channels not a multiple of BLOCK_C
    rois = make_rois().to(device)
    out = torch.full((2, rois.shape[1], 37, 7, 7), float("nan"), device=device)
    _launch(feats, rois, out, attrs)
    assert not torch.isnan(out).any()
    torch.testing.assert_close(out.cpu(), reference(feats, rois, attrs).cpu(), rtol=0, atol=1e-5)


def test_kernel_calls_only_triton_builtins():
    """Triton's @jit stdlib helpers (tl.zeros, ...) are wrapped at triton import for one mode only."""
    import ast
    import inspect

    import triton.language as tl
    from triton.runtime.jit import JITFunction

    from efficientvis_trt.plugins.triton_roi_align import evis_multi_level_roi_align

    tree = ast.parse(inspect.getsource(evis_multi_level_roi_align))
    used = {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "tl"
    }
    assert {"load", "store", "where"} <= used
    assert not [name for name in used if isinstance(getattr(tl, name), JITFunction)]


def test_interpreter_works_when_triton_was_imported_first():
    """TRITON_INTERPRET set after `import triton` (as under pytest with other triton users) still works."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent("""
        import os
        import torch, triton                       # imported with TRITON_INTERPRET unset
        assert os.environ.get("TRITON_INTERPRET") is None
        os.environ["TRITON_INTERPRET"] = "1"
        from efficientvis_trt.model.roi_align import multi_level_roi_align_reference
        from efficientvis_trt.plugins.spec import RoIAlignAttrs
        from efficientvis_trt.plugins.triton_roi_align import multi_level_roi_align_triton
        torch.manual_seed(0)
        feats = [torch.randn(1, 2, 64 >> i, 64 >> i) for i in range(4)]
        rois = torch.tensor([[[3.0, 5.0, 40.0, 30.0], [-10.0, 0.0, 250.0, 240.0]]])
        got = multi_level_roi_align_triton(feats, rois, RoIAlignAttrs(output_size=7))
        want = multi_level_roi_align_reference(feats, rois, RoIAlignAttrs(output_size=7))
        print(float((got - want).abs().max()))
    """)
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) <= 1e-5


def test_cpu_tensors_without_interpreter_say_what_to_do(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendUnavailable, match="TRITON_INTERPRET=1"):
        multi_level_roi_align_triton(make_features(batch=1, channels=1), make_rois(batch=1), RoIAlignAttrs())


def test_bad_inputs_are_user_errors(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    feats = make_features(batch=1, channels=2)
    with pytest.raises(EvisError, match="rois must be"):
        multi_level_roi_align_triton(feats, torch.zeros(2, 3, 4), RoIAlignAttrs())
    with pytest.raises(EvisError, match="share batch"):
        multi_level_roi_align_triton(feats[:3] + [feats[3].half()], torch.zeros(1, 3, 4), RoIAlignAttrs())
    with pytest.raises(EvisError, match="sampling_ratio"):
        multi_level_roi_align_triton(feats, torch.zeros(1, 3, 4), RoIAlignAttrs(sampling_ratio=0))
    empty = multi_level_roi_align_triton(feats, torch.zeros(1, 0, 4), RoIAlignAttrs(output_size=7))
    assert empty.shape == (1, 0, 2, 7, 7)
