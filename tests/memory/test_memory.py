"""Freed memory goes back to the OS between the big steps of export and build (docs/build-memory.md)."""

from __future__ import annotations

import sys

import pytest

from efficientvis_trt.memory import release_freed_memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's (Linux)")
def test_freed_heap_pages_are_returned():
    blocks = [bytearray(4000) for _ in range(50_000)]  # ~200 MB of small blocks: heap, not mmap
    held = _rss_bytes()
    del blocks
    before_trim = _rss_bytes()
    release_freed_memory()
    after = _rss_bytes()
    assert held - after > 150e6, (held, before_trim, after)
    assert after < before_trim


def test_build_time_sessions_have_no_arena():
    from onnx import TensorProto, helper

    from efficientvis_trt.ort_session import make_session

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_model(
        helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    assert make_session(graph, low_memory=True).get_session_options().enable_cpu_mem_arena is False
    assert make_session(graph).get_session_options().enable_cpu_mem_arena is True
