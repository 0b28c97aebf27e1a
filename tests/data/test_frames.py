"""One reader of frame images and one size parser, used by every part that reads frames or sizes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from efficientvis_trt.errors import EvisError
from efficientvis_trt.video import iter_frames, parse_size, read_image


def _gray16(path: Path) -> np.ndarray:
    """A 16-bit grayscale PNG; returns the BGR uint8 frame every reader must give for it."""
    img = (np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300).astype(np.uint16)
    cv2.imwrite(str(path), img)
    return np.repeat((img >> 8).astype(np.uint8)[..., None], 3, axis=2)


def test_grayscale_16bit_and_bgra_images_become_bgr_uint8(tmp_path):
    expected = _gray16(tmp_path / "g16.png")
    assert np.array_equal(read_image(tmp_path / "g16.png"), expected)
    bgra = np.zeros((4, 5, 4), np.uint8)
    bgra[..., 2] = 200
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    got = read_image(tmp_path / "a.png")
    assert got.shape == (4, 5, 3) and got.dtype == np.uint8 and (got[..., 2] == 200).all()


def test_missing_and_corrupt_images_are_one_error_naming_the_file(tmp_path):
    with pytest.raises(EvisError, match="missing.*nope.png"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(EvisError, match="corrupt.*bad.jpg"):
        read_image(tmp_path / "bad.jpg")


def test_calibration_frame_lists_read_like_frame_folders(tmp_path):
    """Calibration used to read explicit frame lists with IMREAD_COLOR only; now the same reader."""
    from efficientvis_trt.precision.calibration import CalibSource

    expected = _gray16(tmp_path / "00000.png")
    folder = next(iter_frames(tmp_path))
    listed = CalibSource("v", str(tmp_path), (str(tmp_path / "00000.png"),)).read(0, 1)[0]
    assert np.array_equal(folder, expected) and np.array_equal(listed, expected)


@pytest.mark.parametrize(
    ("text", "hw"), [("384x640", (384, 640)), ("180X320", (180, 320)), ("96×160", (96, 160)), (" 64 x 32", (64, 32))]
)
def test_parse_size_reads_height_by_width(text, hw):
    assert parse_size(text) == hw


@pytest.mark.parametrize("text", ["384", "384x", "axb", "3x4x5", "0x640", "-32x64", ""])
def test_parse_size_rejects_anything_else_in_one_line(text):
    with pytest.raises(EvisError, match="size"):
        parse_size(text)


def test_the_model_constraint_on_sizes_is_the_configs():
    """Parsing checks the form only; multiples of 32 are the model's rule, checked by Config.validate."""
    from efficientvis_trt.config import get_config

    cfg = get_config("tiny")
    cfg.model.input_size = list(parse_size("128x2"))
    with pytest.raises(EvisError, match="multiples of 32"):
        cfg.validate()
