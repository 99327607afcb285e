"""Calibration presets: TOML round trip, validation naming the bad key, precedence on real files."""

from __future__ import annotations

import json

import pytest

from conftest import CALIBRATION, shared_file
from iousguide.acquisition import open_source
from iousguide.calibration import Calibration, load_preset
from iousguide.cli import main
from iousguide.errors import CalibrationError

COLOR3D = "dicom/color3d_jpeg_baseline.dcm"  # regions: crop (84, 31, 512, 384), 0.5104970559477806 mm/px
US1 = "dicom/US1_UNCR.dcm"  # no regions


def test_round_trip(tmp_path):
    original = Calibration(
        spacing_mm=(0.1234567891234, 0.2),
        crop_px=(10, 20, 300, 400),
        flip_x=True,
        name='probe "A" \\ depth',
        source="preset",
        scanner="BK 5000",
        probe="8848",
        depth_mm=60.0,
        notes="line one\nline two",
    )
    path = tmp_path / "p.toml"
    path.write_text(original.to_toml(), encoding="utf-8")
    assert load_preset(path) == original


def test_example_preset_in_repo_loads():
    preset = load_preset(CALIBRATION / "example_capture_1080p.toml")
    assert "EXAMPLE" in preset.name
    x, y, w, h = preset.crop_px
    assert x + w <= 1920 and y + h <= 1080  # fits the 1080p frame it documents
    assert preset.depth_mm == pytest.approx(h * preset.spacing_mm[1])


GOOD = 'name = "p"\nspacing_mm = [0.1, 0.1]\n'


@pytest.mark.parametrize(
    "text, key",
    [
        (GOOD + "spacing = 1\n", "spacing"),  # unknown key
        ('name = "p"\n', "spacing_mm"),  # missing
        ("spacing_mm = [0.1, 0.1]\n", "name"),
        ('name = "p"\nspacing_mm = [0.1, -0.1]\n', "spacing_mm"),
        ('name = "p"\nspacing_mm = [0.1, "a"]\n', "spacing_mm"),
        ('name = "p"\nspacing_mm = [50, 50]\n', "spacing_mm"),  # implausible
        ('name = "p"\nspacing_mm = [1e-300, 1e-300]\n', "spacing_mm"),  # implausibly fine (a unit slip)
        ('name = "p"\nspacing_mm = [0.1, 0.0001]\n', "spacing_mm"),
        (GOOD + "crop_px = [0, 0, 10]\n", "crop_px"),
        (GOOD + "crop_px = [0, 0, 0, 10]\n", "crop_px"),
        (GOOD + "crop_px = [0.5, 0, 10, 10]\n", "crop_px"),
        (GOOD + 'flip_x = "yes"\n', "flip_x"),
        (GOOD + "depth_mm = -3\n", "depth_mm"),
        (GOOD + "probe = 3\n", "probe"),
        ('name = ""\nspacing_mm = [0.1, 0.1]\n', "name"),
    ],
)
def test_bad_key_is_named(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CalibrationError) as info:
        load_preset(path)
    message = str(info.value)
    assert key in message and str(path) in message and "\n" not in message


def test_not_toml_and_missing(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text("name = [unclosed", encoding="utf-8")
    with pytest.raises(CalibrationError, match="not valid TOML"):
        load_preset(path)
    with pytest.raises(CalibrationError, match="not found"):
        load_preset(tmp_path / "absent.toml")


def _preset(tmp_path, **kwargs) -> Calibration:
    calibration = Calibration(source="preset", name="test", **kwargs)
    path = tmp_path / "preset.toml"
    path.write_text(calibration.to_toml(), encoding="utf-8")
    return load_preset(path)


def test_precedence_preset_over_metadata(tmp_path):
    preset = _preset(tmp_path, spacing_mm=(0.2, 0.3), crop_px=(100, 50, 200, 100))
    with open_source(shared_file(COLOR3D), calibration=preset) as source:
        frame = source.read()
        assert frame.spacing_mm == (0.2, 0.3)
        assert frame.shape == (100, 200) and frame.origin_px == (100, 50)
        assert frame.extra["spacing_source"] == "preset"
        info = source.info()
        assert info.spacing_source == "preset" and info.crop_px == (100, 50, 200, 100)
    # a preset without a crop replaces the metadata crop too (the preset wins whole)
    preset = _preset(tmp_path, spacing_mm=(0.2, 0.2))
    with open_source(shared_file(COLOR3D), calibration=preset) as source:
        assert source.read().shape == (480, 640)


def test_precedence_cli_spacing_over_metadata_keeps_crop():
    with open_source(shared_file(COLOR3D), spacing_mm=(0.4, 0.4)) as source:
        frame = source.read()
        assert frame.spacing_mm == (0.4, 0.4)
        assert frame.extra["spacing_source"] == "cli"
        assert frame.origin_px == (84, 31) and frame.shape == (384, 512)


def test_precedence_metadata_then_none():
    with open_source(shared_file(COLOR3D)) as source:
        frame = source.read()
        assert frame.spacing_mm == pytest.approx((0.5104970559477806,) * 2)
        assert frame.extra["spacing_source"] == "dicom_regions"
    with open_source(shared_file(US1)) as source:
        frame = source.read()
        assert frame.spacing_mm is None and not frame.is_calibrated
        assert frame.extra["spacing_source"] == "none"


def test_preset_and_spacing_are_exclusive(tmp_path, capsys):
    preset = _preset(tmp_path, spacing_mm=(0.2, 0.2))
    with pytest.raises(CalibrationError, match="not both"):
        open_source(shared_file(COLOR3D), calibration=preset, spacing_mm=(0.1, 0.1))
    with pytest.raises(SystemExit) as info:  # argparse: mutually exclusive options
        main(["info", str(shared_file(COLOR3D)), "--calibration", str(tmp_path / "preset.toml"), "--spacing-mm", "0.1"])
    assert info.value.code == 2


def test_cli_preset_on_uncalibrated_file(tmp_path, capsys):
    _preset(tmp_path, spacing_mm=(0.25, 0.25))
    assert main(["info", str(shared_file(US1)), "--json", "--calibration", str(tmp_path / "preset.toml")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["spacing_mm"] == [0.25, 0.25] and info["spacing_source"] == "preset"
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nspacing_mm = [0.1, 0.1]\nwidth = 3\n', encoding="utf-8")
    assert main(["info", str(shared_file(US1)), "--calibration", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'width'" in err


def test_crop_outside_frame_is_an_error(tmp_path):
    preset = _preset(tmp_path, spacing_mm=(0.2, 0.2), crop_px=(5000, 5000, 10, 10))
    with open_source(shared_file(US1), calibration=preset) as source:
        with pytest.raises(CalibrationError, match="outside"):
            source.read()
