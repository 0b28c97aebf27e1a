"""What CPU this is: its model name and feature flags, read once here for every record and probe.

Figures name the CPU they were measured on (measure/, train/, benchmarks/), and the int8 probe in
capabilities.py decides on the flags (docs/precision.md, "Saturation on x86"), so both live in the
lowest layer.
"""

from __future__ import annotations

import platform


def _cpuinfo_field(name: str) -> str | None:
    """The first `name : value` line of /proc/cpuinfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC"), else what `platform` knows."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    return set((_cpuinfo_field("flags") or "").split())
