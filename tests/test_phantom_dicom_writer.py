"""DICOM US cine writer: read back by pydicom and by iousguide's DICOM source, exact pixels, regions, timing."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from iousguide.acquisition import open_source
from iousguide.acquisition.dicom_writer import write_us_cine
from iousguide.errors import SettingsError
from iousguide.phantom import generate_case


@pytest.mark.parametrize("compression, syntax", [("rle", "1.2.840.10008.1.2.5"), ("none", "1.2.840.10008.1.2.1")])
def test_round_trip_with_regions(tmp_path, compression, syntax):
    frames, _ = generate_case(5, n_frames=3, width_px=160, height_px=120, probe="linear", spacing_mm=0.12)
    pixels = [f.pixels for f in frames]
    path = write_us_cine(tmp_path / "c.dcm", pixels, spacing_mm=(0.12, 0.12), fps=12.5, region_px=(10, 5, 140, 110),
                         compression=compression, seed=5)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1" and int(ds.NumberOfFrames) == 3
    region = ds.SequenceOfUltrasoundRegions[0]
    assert (region.RegionLocationMinX0, region.RegionLocationMaxX1, region.RegionLocationMaxY1) == (10, 149, 114)
    assert region.PhysicalDeltaX == pytest.approx(0.012) and region.PhysicalUnitsXDirection == 3
    assert np.array_equal(ds.pixel_array, np.stack(pixels))
    with open_source(path) as source:
        assert source.calibration.spacing_mm == pytest.approx((0.12, 0.12))
        assert source.calibration.crop_px == (10, 5, 140, 110)
        assert source.nominal_fps == pytest.approx(12.5)
        frame = source.read()
        assert np.array_equal(frame.pixels, pixels[0][5:115, 10:150])


def test_same_input_same_bytes_and_bad_input(tmp_path):
    pixels = [np.full((16, 16), i, np.uint8) for i in range(4)]
    a = write_us_cine(tmp_path / "a.dcm", pixels, spacing_mm=(0.1, 0.1), fps=10, seed=1).read_bytes()
    b = write_us_cine(tmp_path / "b.dcm", pixels, spacing_mm=(0.1, 0.1), fps=10, seed=1).read_bytes()
    assert a == b
    uncal = write_us_cine(tmp_path / "u.dcm", pixels, spacing_mm=None, fps=10)
    assert "SequenceOfUltrasoundRegions" not in pydicom.dcmread(uncal)
    with pytest.raises(SettingsError):
        write_us_cine(tmp_path / "x.dcm", pixels, spacing_mm=(0.1, 0.1), fps=10, region_px=(0, 0, 17, 16))
    with pytest.raises(SettingsError):
        write_us_cine(tmp_path / "x.dcm", [p.astype(np.uint16) for p in pixels], spacing_mm=None, fps=10)
