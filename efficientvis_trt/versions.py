"""Version strings -> comparable tuples: the one parser behind every version check (TensorRT, Triton).

Why one: the package's floors and its engine-compatibility keys compare versions that come as
"10.9.0.34", "11.4", "3.6.0+git..." or "2.5.0a0"; one reading of them keeps every check consistent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from efficientvis_trt.errors import EvisError

_LEADING_NUMBERS = re.compile(r"\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse_version(version: str, what: str = "version") -> tuple[int, int, int]:
    """``"10.9.0.34"`` -> ``(10, 9, 0)``; ``"11.4"`` -> ``(11, 4, 0)``; ``"3.6.0+git"`` -> ``(3, 6, 0)``;
    text without a leading number -> EvisError naming `what`."""
    m = _LEADING_NUMBERS.match(str(version))
    if not m:
        raise EvisError(f"cannot read {what} {version!r}")
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)


def at_least(version: str | None, floor: Sequence[int]) -> bool:
    """True when `version` is at least `floor` (compared on the floor's length); no or unreadable version: False."""
    if not version:
        return False
    try:
        parsed = parse_version(version)
    except EvisError:
        return False
    return parsed[: len(floor)] >= tuple(floor)
