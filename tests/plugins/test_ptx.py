"""PTX of the RoIAlign kernel for TensorRT's AOT plugin, compiled here with no GPU (Triton's GPUTarget)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("triton", reason="Triton not installed")

from efficientvis_trt.errors import EvisError
from efficientvis_trt.plugins.spec import RoIAlignAttrs
from efficientvis_trt.plugins.triton_roi_align import (
    KERNEL_NAME,
    RUNTIME_ARGS,
    _strip_scratch_params,
    compile_ptx,
    min_ptx_version,
    ptx_entry_params,
)


@pytest.mark.parametrize(
    "cc, target, isa", [((8, 7), r"sm_87", "7.4"), ((9, 0), r"sm_90a?", "8.0")], ids=["orin-sm87", "hopper-sm90"]
)
def test_ptx_for_orin_and_hopper(cc, target, isa):
    attrs = RoIAlignAttrs()  # the model's mask pooler: 14x14, sampling 2
    k = compile_ptx(attrs, "fp32", compute_capability=cc)
    name, ptx = k[0], k[1]  # (kernel_name, ptx, ...) as the AOT plugin returns them
    assert name == KERNEL_NAME
    assert re.search(rf"^\s*\.visible\s+\.entry\s+{name}\s*\(", ptx, re.MULTILINE)
    assert re.search(rf"^\s*\.target\s+{target}\s*$", ptx, re.MULTILINE)
    assert re.search(rf"^\s*\.version\s+{re.escape(isa)}\s*$", ptx, re.MULTILINE)  # loadable by older drivers
    assert k.ptx_version == isa and re.fullmatch(target, k.target)
    # TensorRT passes input pointers, extra int32 scalars, output pointers - and nothing else
    params = ptx_entry_params(ptx, name)
    assert len(params) == len(RUNTIME_ARGS) == 16
    kinds = ["u64" if ".u64" in p else "u32" for p in params]
    assert kinds == ["u64"] * 5 + ["u32"] * 10 + ["u64"]
    assert f"{name}_param_16" not in ptx and f"{name}_param_17" not in ptx
    assert f".reqntid {k.num_warps * 32}" in ptx  # block_x in the launch params must match
    assert k.shared_mem >= 0 and k.block_c * k.bin_block <= 4096


def test_fp16_features_with_fp32_rois_compile():
    k = compile_ptx(RoIAlignAttrs(output_size=7), "float16", (9, 0), rois_dtype="float32")
    assert k.kernel_name == KERNEL_NAME
    assert "cvt.f32.f16" in k.ptx  # fp16 features widened: fp32 accumulation
    assert "cvt.rn.f16.f32" in k.ptx  # one rounding to fp16 at the store
    assert re.search(r"st\.global(\.\S+)?\.b16", k.ptx) and re.search(r"ld\.global(\.\S+)?\.b32", k.ptx)  # fp32 rois


def test_attributes_are_baked_into_the_kernel():
    a = compile_ptx(RoIAlignAttrs(), "fp32", (9, 0)).ptx  # cached from the test above
    b = compile_ptx(RoIAlignAttrs(sampling_ratio=1), "fp32", (9, 0)).ptx
    assert a != b  # no run-time attribute parameters
    assert len(ptx_entry_params(b, KERNEL_NAME)) == 16


def test_min_ptx_version_table():
    assert min_ptx_version((8, 7)) == 74 and min_ptx_version((9, 0)) == 80
    assert min_ptx_version((12, 0)) == 87 and min_ptx_version((11, 0)) == 90
    assert min_ptx_version((7, 5)) == 70
    assert min_ptx_version((13, 5)) is None  # unknown future GPU: Triton's default


def test_unknown_dtype_is_a_user_error():
    with pytest.raises(EvisError, match="float32 and float16"):
        compile_ptx(RoIAlignAttrs(), "int8", (9, 0))


SYNTHETIC = """\
.version 8.0
.target sm_90a
.visible .entry k(
\t.param .u64 .ptr .global .align 1 k_param_0,
\t.param .u32 k_param_1,
\t.param .u64 .ptr .global .align 1 k_param_2,
\t.param .u64 .ptr .global .align 1 k_param_3,
\t.param .u64 .ptr .global .align 1 k_param_4
)
.reqntid 128
{
\tld.param.b64 %rd1, [k_param_0];
\tld.param.b32 %r1, [k_param_1];
\tld.param.b64 %rd2, [k_param_2];
\tret;
}
"""


def test_strip_scratch_params_keeps_the_body_and_drops_unused_tail():
    out = _strip_scratch_params(SYNTHETIC, "k", 3)
    assert ptx_entry_params(out, "k") == [
        "\t.param .u64 .ptr .global .align 1 k_param_0".strip(),
        ".param .u32 k_param_1",
        ".param .u64 .ptr .global .align 1 k_param_2",
    ]
    assert out.split(".reqntid")[1] == SYNTHETIC.split(".reqntid")[1]
    assert _strip_scratch_params(out, "k", 3) == out


def test_strip_scratch_params_refuses_to_drop_a_used_parameter():
    used = SYNTHETIC.replace("\tret;", "\tld.param.b64 %rd3, [k_param_3];\n\tret;")
    with pytest.raises(EvisError, match="uses parameter k_param_3"):
        _strip_scratch_params(used, "k", 3)
    with pytest.raises(EvisError, match="expected at least"):
        _strip_scratch_params(SYNTHETIC, "k", 6)


def test_the_triton_floor_is_the_version_whose_astsource_takes_constexprs():
    """compile_ptx passes ASTSource(constexprs=...): the installed Triton must take it, and it is >= the floor.

    The same file runs at the floor itself with Triton 3.3.1 first on PYTHONPATH (docs/tensorrt.md).
    """
    import inspect

    import triton
    from triton.compiler import ASTSource

    from efficientvis_trt.plugins.triton_roi_align import MIN_TRITON, triton_at_floor

    assert MIN_TRITON == (3, 3)
    assert "constexprs" in inspect.signature(ASTSource.__init__).parameters
    assert triton_at_floor(triton.__version__)
    assert triton_at_floor("3.3.0") and triton_at_floor("3.10.1+git") and not triton_at_floor("3.2.0")
    assert not triton_at_floor(None)
