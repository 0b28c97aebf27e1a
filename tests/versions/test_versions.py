"""One version parser: TensorRT's build numbers, Triton's local tags and pre-releases read the same way."""

from __future__ import annotations

import pytest

from efficientvis_trt.errors import EvisError
from efficientvis_trt.versions import at_least, parse_version


@pytest.mark.parametrize(
    "text, want",
    [
        ("10.9.0.34", (10, 9, 0)),
        (" 11.4 ", (11, 4, 0)),
        ("3.6.0+git1234", (3, 6, 0)),
        ("2.5.0a0", (2, 5, 0)),
        ("12", (12, 0, 0)),
    ],
)
def test_parse_version_reads_the_leading_numbers(text, want):
    assert parse_version(text) == want


def test_an_unreadable_version_names_what_it_is():
    with pytest.raises(EvisError, match="cannot read Triton version 'dev'"):
        parse_version("dev", "Triton version")


def test_at_least_compares_on_the_floors_length_and_refuses_what_it_cannot_read():
    assert at_least("3.3.0", (3, 3)) and at_least("3.10.1+git", (3, 3)) and at_least("4.0", (3, 3))
    assert not at_least("3.2.9", (3, 3)) and not at_least(None, (3, 3)) and not at_least("nightly", (3, 3))
    assert at_least("10.9.0.34", (10, 9, 0)) and not at_least("10.8.9", (10, 9, 0))
