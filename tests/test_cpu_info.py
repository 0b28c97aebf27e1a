"""cpu_info: the one reader of the CPU's name and flags."""

from __future__ import annotations

import builtins
import io
import platform

import pytest

from efficientvis_trt import cpu_info

CPUINFO = "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\n"


@pytest.fixture
def fake_cpuinfo(monkeypatch):
    real_open = builtins.open

    def fake(path, *args, **kwargs):
        if path == "/proc/cpuinfo":
            return io.StringIO(CPUINFO)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake)


def test_reads_the_model_name_and_the_flags(fake_cpuinfo):
    assert cpu_info.cpu_model() == "Test CPU 9000"
    assert cpu_info.cpu_flags() == {"fpu", "avx2", "avx512_vnni"}


def test_an_unreadable_cpuinfo_gives_no_flags_and_the_platforms_name(monkeypatch):
    def refuse(path, *args, **kwargs):
        raise PermissionError(path)

    monkeypatch.setattr(builtins, "open", refuse)
    assert cpu_info.cpu_flags() == set()
    assert cpu_info.cpu_model() == (platform.processor() or platform.machine() or "unknown")
