import numpy as np
import pytest

from iousguide.calibration import Calibration, apply_calibration
from iousguide.errors import CalibrationError
from iousguide.frames import Frame


def make(pixels=None, **kw):
    pixels = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30) if pixels is None else pixels
    return Frame(pixels=pixels, index=0, t_mono_ns=1, **kw)


def test_frame_is_read_only_and_does_not_alias_caller_array_writes():
    src = np.zeros((4, 5), np.uint8)
    frame = make(src)
    with pytest.raises(ValueError):
        frame.pixels[0, 0] = 1
    with pytest.raises(Exception):
        frame.index = 3  # frozen


def test_frame_rejects_bad_pixels_and_spacing():
    with pytest.raises(ValueError):
        make(np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError):
        make(np.zeros((4, 5, 2), np.uint8))
    with pytest.raises(ValueError):
        make(spacing_mm=(0.1, -0.1))
    with pytest.raises(ValueError):
        make(spacing_mm=(float("nan"), 0.1))


def test_gray_view_of_rgb():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    frame = make(rgb)
    assert frame.is_color
    assert frame.gray.shape == (2, 2)
    assert 70 <= int(frame.gray[0, 0]) <= 80  # ITU-R 601 luma of red = 0.299*255


def test_replace_keeps_metadata():
    frame = make(spacing_mm=(0.1, 0.2), t_source_s=1.5, extra={"a": 1})
    other = frame.replace(index=7)
    assert other.spacing_mm == (0.1, 0.2) and other.t_source_s == 1.5 and other.extra["a"] == 1


def test_crop_and_flip_map_back_to_source_pixels():
    frame = make()
    cal = Calibration(spacing_mm=(0.1, 0.1), crop_px=(5, 3, 10, 8), flip_x=True, source="preset", name="t")
    out = apply_calibration(frame, cal)
    assert out.shape == (8, 10)
    assert out.origin_px == (5, 3)
    assert out.spacing_mm == (0.1, 0.1)
    # pixel (0, 0) of the flipped crop is source column 5 + 9 = 14, row 3
    assert out.to_source_px(0, 0) == (14, 3)
    assert int(out.pixels[0, 0]) == int(frame.pixels[3, 14])
    x, y = out.from_source_px(14, 3)
    assert (x, y) == (0, 0)


def test_crop_outside_frame_is_an_error():
    with pytest.raises(CalibrationError):
        apply_calibration(make(), Calibration(spacing_mm=(0.1, 0.1), crop_px=(100, 100, 5, 5), source="preset"))
