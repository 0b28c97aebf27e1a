"""Handing freed memory back to the OS between the big steps of an export or a build.

CPython and torch free a model's tensors into glibc's heap, which keeps the pages: after an
r50 export freed its PyTorch model and raw graph, the process still held them, and every
later step (the simplifier, the verification session) stacked on top. `malloc_trim` returns
the free pages, so the peak is that of the largest step, not their sum (docs/build-memory.md).
"""

from __future__ import annotations

import ctypes
import gc
import sys


def release_freed_memory() -> None:
    """Collect garbage and return the allocator's free pages to the OS (glibc; a no-op elsewhere)."""
    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc has it, musl does not
    if trim is not None:
        trim(0)
