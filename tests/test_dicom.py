"""DicomSource against the real ultrasound DICOM files, checked with pydicom directly.

Expected values (frame counts, sizes, timing, region spacing, pixels) are read
here with pydicom itself, never through iousguide.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from conftest import shared_file
from iousguide.acquisition import open_source
from iousguide.acquisition.dicom import CACHE_FRAMES, DEFAULT_DICOM_FPS, DicomSource
from iousguide.calibration import Calibration
from iousguide.cli import main
from iousguide.errors import CorruptDataError, IousguideError, UnsupportedFormatError

SHARED_DICOM = [
    "dicom/color3d_jpeg_baseline.dcm",
    "dicom/examples_ybr_color.dcm",
    "dicom/OBXXXX1A_rle_2frame.dcm",
    "dicom/gdcm-US-ALOKA-16.dcm",
    "dicom/JPGLosslessP14SV1_1s_1f_8b.dcm",
    "dicom/US1_UNCR.dcm",
]
PYDICOM_FILES = ["examples_palette.dcm", "examples_jpeg2k.dcm", "examples_rgb_color.dcm", "examples_ybr_color.dcm"]


def dicom_path(name: str) -> Path:
    if name.startswith("dicom/"):
        return shared_file(name)
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available")
    return Path(path)


ALL_FILES = SHARED_DICOM + PYDICOM_FILES


def expected_from_pydicom(path: Path) -> dict:
    """What a reader must report, read with plain pydicom (independent of iousguide)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    channels = 3 if (ds.SamplesPerPixel == 3 or ds.PhotometricInterpretation == "PALETTE COLOR") else 1
    spacing = None
    crop = None
    fitting = []
    for item in ds.get("SequenceOfUltrasoundRegions", []):
        units_cm = item.PhysicalUnitsXDirection == 3 and item.PhysicalUnitsYDirection == 3
        # an off-by-one exclusive max bound is tolerated (clipped); larger overruns are not
        fits = item.RegionLocationMaxX1 <= ds.Columns and item.RegionLocationMaxY1 <= ds.Rows
        if units_cm and item.RegionDataType == 1 and fits:
            fitting.append(item)
    if fitting:
        item = fitting[0]
        spacing = (float(item.PhysicalDeltaX) * 10, float(item.PhysicalDeltaY) * 10)
        x1 = min(item.RegionLocationMaxX1, ds.Columns - 1)
        y1 = min(item.RegionLocationMaxY1, ds.Rows - 1)
        crop = (
            item.RegionLocationMinX0,
            item.RegionLocationMinY0,
            x1 - item.RegionLocationMinX0 + 1,
            y1 - item.RegionLocationMinY0 + 1,
        )
    fps = 1000.0 / float(ds.FrameTime) if frames > 1 and "FrameTime" in ds else None
    return {
        "frames": frames,
        "width": int(ds.Columns),
        "height": int(ds.Rows),
        "channels": channels,
        "spacing": spacing,
        "crop": crop,
        "fps": fps,
        "n_regions": len(ds.get("SequenceOfUltrasoundRegions", [])),
    }


@pytest.mark.parametrize("name", ALL_FILES)
def test_info_matches_pydicom(name, capsys):
    path = dicom_path(name)
    expected = expected_from_pydicom(path)
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "dicom"
    assert info["frames"] == expected["frames"]
    assert (info["width"], info["height"], info["channels"]) == (expected["width"], expected["height"], expected["channels"])
    if expected["spacing"] is None:
        assert info["spacing_mm"] is None and info["spacing_source"] == "none" and info["crop_px"] is None
    else:
        assert info["spacing_mm"] == pytest.approx(expected["spacing"], rel=1e-12)
        assert info["spacing_source"] == "dicom_regions"
        assert tuple(info["crop_px"]) == expected["crop"]
    if expected["fps"] is not None:
        assert info["fps"] == pytest.approx(expected["fps"], rel=1e-6)
        assert info["duration_s"] == pytest.approx(expected["frames"] / expected["fps"], rel=1e-6)
        assert info["variable_rate"] is False
    if expected["n_regions"] == 0:
        assert any("no Sequence of Ultrasound Regions" in w for w in info["warnings"])
    assert info["extra"]["modality"] == "US"
    assert info["extra"]["transfer_syntax"]


def reference_frame(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` decoded by pydicom's own defaults (YBR -> RGB), palette applied by pydicom."""
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array = pydicom.pixels.pixel_array(ds, index=index)  # pydicom's defaults: YBR -> RGB
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        rgb = apply_color_lut(array, ds).astype(np.float64)
        return np.rint(rgb / 257.0).astype(np.uint8) if rgb.max() > 255 else rgb.astype(np.uint8)
    return array


@pytest.mark.parametrize("name", ALL_FILES)
def test_pixels_match_pydicom(name):
    path = dicom_path(name)
    with DicomSource(path) as source:
        last = len(source) - 1
        for index in sorted({0, last}):
            frame = source.frame_at(index)
            raw = source._load(index)  # full frame, metadata crop not applied
            ref = reference_frame(path, index)
            assert raw.pixels.dtype == np.uint8
            assert raw.pixels.shape == ref.shape[:2] + ((3,) if ref.ndim == 3 else ())
            assert np.abs(raw.pixels.astype(int) - ref.astype(int)).max() <= 1
            cal = source.calibration
            if cal.crop_px is not None:
                x, y, w, h = cal.crop_px
                assert frame.shape == (h, w) and frame.origin_px == (x, y)
                assert np.array_equal(frame.pixels, raw.pixels[y : y + h, x : x + w])
                assert frame.spacing_mm == cal.spacing_mm
            else:
                assert frame.spacing_mm is None


def test_color3d_timing_and_random_access():
    path = shared_file("dicom/color3d_jpeg_baseline.dcm")
    frame_time_ms = float(pydicom.dcmread(path, stop_before_pixels=True).FrameTime)
    with open_source(path) as source:
        assert len(source) == 120
        frames = [source.read() for _ in range(5)]
        assert [f.t_source_s for f in frames] == pytest.approx([i * frame_time_ms / 1000 for i in range(5)])
        source.seek_time(2.0)
        frame = source.read()
        assert frame.index == int(2.0 / (frame_time_ms / 1000) + 1e-6)
        again = source.frame_at(frame.index)
        assert np.array_equal(again.pixels, frame.pixels)
        for index in (119, 3, 77, 50, 10, 100):
            source.frame_at(index)
        assert len(source._cache) <= CACHE_FRAMES
        assert frame.spacing_mm == pytest.approx((0.5104970559477806, 0.5104970559477806))


def test_cine_is_decoded_lazily():
    """Reading a 120-frame cine must not hold it whole (decoded: 120 x 640 x 480 x 3 = 110 MB)."""
    import tracemalloc

    path = shared_file("dicom/color3d_jpeg_baseline.dcm")
    with DicomSource(path) as source:
        frame_bytes = source._load(0).pixels.nbytes
        tracemalloc.start()
        try:
            for index in range(0, len(source), 2):
                source.frame_at(index)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 20 * frame_bytes, f"peak {peak / 1e6:.1f} MB while reading 60 frames of {frame_bytes / 1e6:.1f} MB"


def test_regions_reported_not_trusted():
    ybr = dicom_path("examples_ybr_color.dcm")
    with DicomSource(ybr) as source:
        assert source.metadata_calibration is None
        assert any("does not fit" in w and "320x240" in w for w in source.warnings)
        assert source.frame_at(0).spacing_mm is None
    with DicomSource(shared_file("dicom/gdcm-US-ALOKA-16.dcm")) as source:
        assert source.calibration.crop_px == (32, 24, 304, 392)
        assert any("another spatial region" in w for w in source.warnings)
        assert any("not spatial" in w for w in source.warnings)
        assert any("16-bit" in w for w in source.warnings)
    with DicomSource(shared_file("dicom/OBXXXX1A_rle_2frame.dcm")) as source:
        assert any("ECG" in w and "not spatial" in w for w in source.warnings)
        assert any("frames/s assumed" in w for w in source.warnings)


def test_cli_spacing_overrides_regions(capsys):
    path = shared_file("dicom/color3d_jpeg_baseline.dcm")
    assert main(["info", str(path), "--json", "--spacing-mm", "0.3"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["spacing_mm"] == [0.3, 0.3] and info["spacing_source"] == "cli"
    assert info["crop_px"] == [84, 31, 512, 384]  # --spacing-mm keeps the metadata crop


# -- generated files ------------------------------------------------------------------------
def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    timing: dict | None = None,
    regions: list[dict] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    window: tuple[float, float] | None = None,
) -> Path:
    """A small US multi-frame file. pixels: (frames, rows, cols[, 3]) uint8/uint16."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[path.name])  # deterministic: fuzz seeds repeat
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Manufacturer = "iousguide test"
    frames, rows, cols = pixels.shape[:3]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 3 if pixels.ndim == 4 else 1
    if pixels.ndim == 4:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = frames
    for key, value in (timing or {}).items():
        setattr(ds, key, value)
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if regions is not None:
        items = []
        for spec in regions:
            item = Dataset()
            for key, value in spec.items():
                setattr(item, key, value)
            items.append(item)
        ds.SequenceOfUltrasoundRegions = items
    data = np.ascontiguousarray(pixels).tobytes()
    if meta.TransferSyntaxUID.is_compressed:
        size = len(data) // frames
        ds.PixelData = encapsulate([data[i * size : (i + 1) * size] for i in range(frames)])
    else:
        ds.PixelData = data
    ds.save_as(path, enforce_file_format=True)
    return path


def region(x0, y0, x1, y1, delta_cm=0.01, units=3, data_type=1, spatial_format=1) -> dict:
    return {
        "RegionSpatialFormat": spatial_format,
        "RegionDataType": data_type,
        "RegionFlags": 0,
        "RegionLocationMinX0": x0,
        "RegionLocationMinY0": y0,
        "RegionLocationMaxX1": x1,
        "RegionLocationMaxY1": y1,
        "PhysicalUnitsXDirection": units,
        "PhysicalUnitsYDirection": units,
        "PhysicalDeltaX": delta_cm,
        "PhysicalDeltaY": delta_cm,
    }


def test_frame_time_vector_gives_variable_rate(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 255, (4, 8, 10), dtype=np.uint8)
    path = write_dicom(tmp_path / "ftv.dcm", pixels, timing={"FrameTimeVector": [0, 20, 60, 20]})
    with DicomSource(path) as source:
        assert source.frame_times_s == pytest.approx([0.0, 0.02, 0.08, 0.10])
        assert source.variable_rate
        frames = list(source)
        assert [f.t_source_s for f in frames] == pytest.approx([0.0, 0.02, 0.08, 0.10])
        assert np.array_equal(frames[2].pixels, pixels[2])


def test_cine_rate_and_default_rate(tmp_path):
    pixels = np.zeros((3, 6, 6), np.uint8)
    with DicomSource(write_dicom(tmp_path / "cine.dcm", pixels, timing={"CineRate": 25})) as source:
        assert source.nominal_fps == pytest.approx(25.0)
        assert not any("assumed" in w for w in source.warnings)
    with DicomSource(write_dicom(tmp_path / "none.dcm", pixels)) as source:
        assert source.nominal_fps == pytest.approx(DEFAULT_DICOM_FPS)
        assert any("assumed" in w for w in source.warnings)


def test_monochrome1_16bit_scaled_and_inverted(tmp_path):
    stored = np.array([[[0, 1024, 4095]]], dtype=np.uint16)  # 12 bits stored
    path = write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1", bits_stored=12)
    with DicomSource(path) as source:
        pixels = source.frame_at(0).pixels
        # full 12-bit range -> 0..255, then inverted (MONOCHROME1: low = white)
        assert pixels.tolist() == [[255, 255 - round(1024 * 255 / 4095), 0]]
        assert any("12-bit grey scaled" in w for w in source.warnings)
    path = write_dicom(tmp_path / "win.dcm", stored, bits_stored=12, window=(1024, 2048))
    with DicomSource(path) as source:
        assert source.frame_at(0).pixels.tolist() == [[0, 128, 255]]
        assert any("window" in w for w in source.warnings)


def test_region_rules_on_generated_files(tmp_path):
    pixels = np.zeros((1, 40, 60), np.uint8)
    regions = [
        region(0, 0, 59, 9, data_type=10, units=0),  # ECG strip
        region(0, 10, 29, 39, delta_cm=0.02, data_type=2),  # colour flow, spatial
        region(30, 10, 59, 39, delta_cm=0.03),  # tissue 2D: chosen despite equal size
        region(0, 0, 200, 39),  # does not fit
    ]
    with DicomSource(write_dicom(tmp_path / "r.dcm", pixels, regions=regions)) as source:
        cal = source.metadata_calibration
        assert cal.crop_px == (30, 10, 30, 30)
        assert cal.spacing_mm == pytest.approx((0.3, 0.3))
        assert cal.source == "dicom_regions"
        text = " | ".join(source.warnings)
        assert "not spatial" in text and "another spatial region" in text and "does not fit" in text
        assert source.frame_at(0).shape == (30, 30)


def test_multiframe_rgb_and_ybr_full(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 255, (2, 5, 7, 3), dtype=np.uint8)
    with DicomSource(write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB")) as source:
        assert np.array_equal(source.frame_at(1).pixels, rgb[1])
    from pydicom.pixels import convert_color_space

    ybr = convert_color_space(rgb[0], "RGB", "YBR_FULL")[None]
    with DicomSource(write_dicom(tmp_path / "ybr.dcm", ybr, photometric="YBR_FULL")) as source:
        assert np.abs(source.frame_at(0).pixels.astype(int) - rgb[0]).max() <= 2


# -- bad input ------------------------------------------------------------------------------
def run_cli_error(args, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("iousguide: error:"), err
    assert "Traceback" not in err
    return err


def test_truncated_files(tmp_path, capsys):
    for name, keep in (
        ("dicom/US1_UNCR.dcm", 500_000),  # native RGB cut inside the pixel data
        ("dicom/color3d_jpeg_baseline.dcm", 3_000_000),  # JPEG cine cut mid-stream
        ("dicom/color3d_jpeg_baseline.dcm", 300),  # cut in the header
    ):
        data = shared_file(name).read_bytes()[:keep]
        path = tmp_path / f"cut_{keep}.dcm"
        path.write_bytes(data)
        with pytest.raises(CorruptDataError):
            DicomSource(path)
        err = run_cli_error(["info", str(path)], capsys)
        assert "truncated" in err


def test_garbage_empty_and_non_image(tmp_path, capsys):
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(np.random.default_rng(3).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(UnsupportedFormatError):
        DicomSource(garbage)
    assert "not a DICOM file" in run_cli_error(["info", str(garbage)], capsys)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    run_cli_error(["info", str(empty)], capsys)
    report = tmp_path / "sr.dcm"
    ds = pydicom.dcmread(write_dicom(tmp_path / "tmp.dcm", np.zeros((1, 4, 4), np.uint8)))
    del ds.PixelData
    ds.save_as(report, enforce_file_format=True)
    with pytest.raises(UnsupportedFormatError, match="no image"):
        DicomSource(report)
    run_cli_error(["info", str(report)], capsys)


def test_header_lies_about_size(tmp_path):
    path = write_dicom(tmp_path / "small.dcm", np.zeros((2, 8, 8), np.uint8))
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 50
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(CorruptDataError, match="pixel data holds"):
        DicomSource(path)


def test_frame_count_that_cannot_fit_is_refused_before_allocating(tmp_path):
    path = write_dicom(tmp_path / "rle.dcm", np.zeros((2, 8, 8), np.uint8), transfer_syntax="1.2.840.10008.1.2.5")
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 10**9
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(CorruptDataError, match="NumberOfFrames"):
        DicomSource(path)


def test_unknown_colour_space_is_reported(tmp_path):
    pixels = np.random.default_rng(5).integers(0, 255, (1, 4, 6, 3), dtype=np.uint8)
    with DicomSource(write_dicom(tmp_path / "p.dcm", pixels, photometric="YBR_PARTIAL_420")) as source:
        assert any("YBR_PARTIAL_420" in w and "not converted" in w for w in source.warnings)
        assert np.array_equal(source.frame_at(0).pixels, pixels[0])


def test_unsupported_transfer_syntax_and_corrupt_stream(tmp_path, capsys):
    pixels = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
    mpeg = write_dicom(tmp_path / "mpeg.dcm", pixels, transfer_syntax="1.2.840.10008.1.2.4.100")
    with pytest.raises(UnsupportedFormatError, match="MPEG2"):
        DicomSource(mpeg)
    run_cli_error(["info", str(mpeg)], capsys)
    # a JPEG baseline cine whose compressed frames were overwritten with noise
    source_file = shared_file("dicom/color3d_jpeg_baseline.dcm")
    bad = tmp_path / "noise.dcm"
    shutil.copy(source_file, bad)
    data = bytearray(bad.read_bytes())
    start = len(data) - 200_000  # inside the last frames' JPEG streams
    data[start : start + 150_000] = np.random.default_rng(4).integers(0, 255, 150_000, dtype=np.uint8).tobytes()
    bad.write_bytes(bytes(data))
    with pytest.raises(IousguideError):
        with DicomSource(bad) as src:
            for index in range(len(src) - 10, len(src)):
                src.frame_at(index)


# -- fuzzing ----------------------------------------------------------------------------------
def _seed_file() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        pixels = np.arange(3 * 6 * 8, dtype=np.uint8).reshape(3, 6, 8)
        path = write_dicom(
            Path(folder) / "seed.dcm",
            pixels,
            timing={"FrameTime": 40},
            regions=[region(1, 1, 6, 4, delta_cm=0.02), region(0, 0, 7, 0, data_type=10, units=0)],
        )
        return path.read_bytes()


SEED = _seed_file()


def exercise(data: bytes) -> None:
    """Open, describe and read every frame; only IousguideError may come out."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.dcm"
        path.write_bytes(data)
        try:
            with open_source(path) as source:
                source.info()
                for frame in source:
                    assert frame.pixels.dtype == np.uint8
                if source.calibration.spacing_mm is not None:
                    assert source.calibration.source == "dicom_regions"
        except IousguideError:
            pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.integers(133, len(SEED)),
)
def test_fuzz_header_bytes(edits, cut):
    data = bytearray(SEED)
    for position, value in edits:
        data[position] = value
    exercise(bytes(data[:cut]))


# regressions found by the fuzzer and by hand (kept as plain tests)
@pytest.mark.parametrize(
    "edits, cut",
    [
        ([], 140),  # only the preamble and a partial meta group
        ([], len(SEED) - 10),  # pixel data cut short
    ],
)
def test_fuzz_regressions(edits, cut):
    data = bytearray(SEED)
    for position, value in edits:
        data[position] = value
    exercise(bytes(data[:cut]))


def _replace(data: bytes, old: bytes, new: bytes) -> bytes:
    position = data.find(old)
    assert position >= 0, old
    return data[:position] + new + data[position + len(old) :]


def test_fuzz_findings_transfer_syntax_and_vr():
    # found by fuzzing: a TransferSyntaxUID that is a valid UID but not a transfer
    # syntax made pydicom raise ValueError; an unknown VR on SOPClassUID raised
    # NotImplementedError when the element was read.
    not_a_syntax = _replace(SEED, b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.1\x00\x00\x00")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ts.dcm"
        path.write_bytes(not_a_syntax)
        with pytest.raises(CorruptDataError, match="transfer syntax"):
            DicomSource(path)
    exercise(_replace(SEED, b"\x08\x00\x16\x00UI", b"\x08\x00\x16\x00UM"))
    no_pixels = _replace(SEED, b"\xe0\x7f\x10\x00", b"\xe0\x7f\x11\x00")  # PixelData tag renamed
    exercise(_replace(no_pixels, b"\x08\x00\x16\x00UI", b"\x08\x00\x16\x00HI"))


def test_calibration_object_from_regions_is_a_calibration():
    with DicomSource(shared_file("dicom/JPGLosslessP14SV1_1s_1f_8b.dcm")) as source:
        cal = source.metadata_calibration
    assert isinstance(cal, Calibration)
    assert cal.crop_px == (14, 38, 997, 721)
    assert cal.spacing_mm == pytest.approx((0.25476696592378157, 0.25476696592378157))


def test_gdcm_is_the_last_resort_decoder():
    """GDCM crashed (segfault) on fuzzed JPEG frames: it must only be used when nothing else decodes."""
    from pydicom.pixels import get_decoder

    from iousguide.acquisition.dicom import _preferred_plugin

    for name in ALL_FILES:
        path = dicom_path(name)
        with DicomSource(path) as source:
            if not source._compressed:
                assert source._plugin == ""
                continue
            available = set(get_decoder(source._tsyntax).available_plugins)
            assert source._plugin == _preferred_plugin(source._tsyntax)
            if available - {"gdcm"}:
                assert source._plugin != "gdcm", (name, available)
