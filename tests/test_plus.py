"""PLUS / Slicer sequence reader on the real shared files and on hand-made edge cases.

Expected values are read independently in the tests: header text with regexes,
pixels with numpy/zlib/pynrrd directly, timestamps from the liver sweep sidecar JSON.
"""

from __future__ import annotations

import json
import re
import tracemalloc
import zlib
from pathlib import Path

import nrrd
import numpy as np
import pytest

from iousguide import cli
from iousguide.acquisition import open_source
from iousguide.acquisition import plus as plus_module
from iousguide.errors import CorruptDataError, IousguideError, UnsupportedFormatError
from conftest import shared_file

PLUS_FILES = [
    "plus/BkCurvilinearScanConvertedData.igs.mha",
    "plus/BoneUltrasound_L14.igs.mha",
    "plus/Prostate10_video.igs.mhd",
    "plus/SegmentationTest_BKMedical_RandomStepperMotionData2_Trimmed_Anonymized.igs.mha",
    "plus/NwirePhantomFreehand.igs.nrrd",
    "liver_sweep/liver_sweep_every7th.igs.mha",
]


# ---------------------------------------------------------------------------
# independent header reading (regex over the raw text)
# ---------------------------------------------------------------------------
def _raw_header(path: Path) -> tuple[str, int]:
    data = path.read_bytes()[:4_000_000]
    if data.startswith(b"NRRD"):
        end = data.index(b"\n\n") + 2
    else:
        match = re.search(rb"ElementDataFile[^\n]*(\n|$)", data)
        end = match.end()
    return data[:end].decode("latin-1"), end


def _expected(path: Path) -> dict:
    text, data_offset = _raw_header(path)
    sep = r"\s*:=\s*" if text.startswith("NRRD") else r"\s*=\s*"
    size_key = r"^sizes:\s*(.+)$" if text.startswith("NRRD") else r"^DimSize\s*=\s*(.+)$"
    sizes = [int(v) for v in re.search(size_key, text, re.M).group(1).split()]
    slots = sizes[2] if len(sizes) > 2 else 1
    indices = sorted({int(m) for m in re.findall(r"^Seq_Frame(\d+)_", text, re.M)})
    status = {int(i): s.strip() for i, s in re.findall(rf"^Seq_Frame(\d+)_(?:Image)?Status{sep}(\S+)", text, re.M)}
    stamps = {int(i): float(v) for i, v in re.findall(rf"^Seq_Frame(\d+)_Timestamp{sep}(\S+)", text, re.M)}
    shown = [i for i in indices if i < slots and status.get(i, "OK") == "OK"] if indices else list(range(slots))
    return {
        "width": sizes[0],
        "height": sizes[1],
        "slots": slots,
        "shown": shown,
        "missing": [i for i in range(slots) if indices and i not in indices],
        "times": [stamps.get(i) for i in shown],
        "data_offset": data_offset,
        "text": text,
    }


@pytest.mark.parametrize("relative", PLUS_FILES)
def test_real_files_match_their_raw_headers(relative):
    path = shared_file(relative)
    expected = _expected(path)
    with open_source(path) as source:
        info = source.info()
        assert info.frames == len(expected["shown"]) == len(source)
        assert (info.width, info.height, info.channels) == (expected["width"], expected["height"], 1)
        frames = list(source)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert [f.extra["plus_frame_index"] for f in frames] == expected["shown"]
    for frame, t in zip(frames, expected["times"]):
        assert frame.pixels.shape == (expected["height"], expected["width"])
        assert frame.pixels.dtype == np.uint8
        assert frame.t_source_s == t  # exact: same decimal text parsed
        # none of these files has an ImageToTransducerTransform: never a mm value
        assert frame.spacing_mm is None
    assert info.spacing_mm is None and info.spacing_source == "none"
    for index in expected["missing"]:
        assert any(f"{index:04d}" in w and "missing" in w for w in info.warnings), info.warnings


def test_frame_counts_from_the_manifest():
    """The counts MANIFEST.md states, as a cross-check of the regex reading."""
    counts = {
        "plus/BoneUltrasound_L14.igs.mha": 21,
        "plus/Prostate10_video.igs.mhd": 9,  # 10 slots in the data, index 0002 has no header fields
        "plus/BkCurvilinearScanConvertedData.igs.mha": 1,
        "plus/SegmentationTest_BKMedical_RandomStepperMotionData2_Trimmed_Anonymized.igs.mha": 6,
        "plus/NwirePhantomFreehand.igs.nrrd": 97,
        "liver_sweep/liver_sweep_every7th.igs.mha": 20,
    }
    for relative, count in counts.items():
        with open_source(shared_file(relative)) as source:
            assert len(source) == count, relative


def test_prostate_raw_pixels_are_read_by_slot_and_missing_index_reported():
    path = shared_file("plus/Prostate10_video.igs.mhd")
    raw = np.fromfile(path.with_name("Prostate10_video.raw"), dtype=np.uint8).reshape(10, 480, 640)
    with open_source(path) as source:
        info = source.info()
        assert info.frames == 9
        assert info.extra["missing_frame_indices"] == [2]
        assert info.extra["element_spacing"] == [0.3, 0.3, 1.0]
        assert any("ElementSpacing" in w and "not used" in w for w in info.warnings)
        assert any("0002" in w for w in info.warnings)
        for frame in source:
            assert np.array_equal(frame.pixels, raw[frame.extra["plus_frame_index"]])
        # frame 2 of the source is slot 3 (FrameNumber 3, t = 2 s)
        third = source.frame_at(2)
        assert third.extra["plus_frame_index"] == 3 and third.extra["frame_number"] == 3
        assert third.t_source_s == 2.0


def test_liver_sweep_timestamps_match_sidecar_and_element_spacing_not_trusted():
    path = shared_file("liver_sweep/liver_sweep_every7th.igs.mha")
    sidecar = json.loads(shared_file("liver_sweep/liver_sweep_imfusion.json").read_text())
    with open_source(path) as source:
        info = source.info()
        times = [f.t_source_s for f in source]
    assert len(times) == 20
    np.testing.assert_allclose(times, sidecar["timestamps_unix_s"][::7], rtol=0, atol=1e-6)
    assert info.spacing_mm is None
    assert info.extra["element_spacing"][:2] == pytest.approx(sidecar["pixel_spacing_mm"], abs=1e-6)
    assert any("ElementSpacing" in w for w in info.warnings)
    assert info.variable_rate  # every 7th frame of a VFR recording: 0.25-0.35 s gaps


@pytest.mark.parametrize(
    "relative", ["liver_sweep/liver_sweep_every7th.igs.mha", "plus/BoneUltrasound_L14.igs.mha"]
)
def test_zlib_pixels_equal_an_independent_decompression(relative):
    path = shared_file(relative)
    expected = _expected(path)
    size = int(re.search(r"CompressedDataSize\s*=\s*(\d+)", expected["text"]).group(1))
    with path.open("rb") as fh:
        fh.seek(expected["data_offset"])
        data = zlib.decompress(fh.read(size))
    w, h = expected["width"], expected["height"]
    cube = np.frombuffer(data, np.uint8).reshape(expected["slots"], h, w)
    with open_source(path) as source:
        order = [len(source) - 1, 0, len(source) // 2, 1, len(source) - 2]  # backward and forward seeks
        for i in order:
            frame = source.frame_at(i)
            assert np.array_equal(frame.pixels, cube[frame.extra["plus_frame_index"]])


def test_nrrd_pixels_equal_pynrrd_full_read():
    path = shared_file("plus/NwirePhantomFreehand.igs.nrrd")
    data, header = nrrd.read(str(path))  # (W, H, N), Fortran order
    with open_source(path) as source:
        assert source.format_name == "plus_nrrd"
        for i in (0, 50, 96, 3):
            assert np.array_equal(source.frame_at(i).pixels, data[:, :, i].T)


@pytest.mark.parametrize("relative", PLUS_FILES)
def test_cli_info_json(relative, capsys):
    path = shared_file(relative)
    assert cli.main(["info", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = _expected(path)
    assert data["frames"] == len(expected["shown"])
    assert (data["width"], data["height"]) == (expected["width"], expected["height"])
    assert data["format"] in ("plus_mha", "plus_nrrd")
    assert data["spacing_mm"] is None and data["spacing_source"] == "none"
    for key in ("orientation_in_file", "compression", "invalid_frames"):
        assert key in data["extra"]


# ---------------------------------------------------------------------------
# hand-made files for the cases the shared data do not cover
# ---------------------------------------------------------------------------
def write_mha(path: Path, fields: list[str], data: bytes, *, frame_fields: list[str] = ()) -> Path:
    lines = ["ObjectType = Image", *fields, *frame_fields, "ElementDataFile = LOCAL"]
    path.write_bytes(("\n".join(lines) + "\n").encode("ascii") + data)
    return path


def _stack(n=3, h=4, w=5, c=1, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, h, w) if c == 1 else (n, h, w, c)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape).astype(dtype) * 1000
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -30000), min(info.max, 60000), shape, dtype=dtype)


def _basic(n, w, h, *, channels=1, etype="MET_UCHAR", orientation="MF", compressed=False, extra=()):
    fields = ["NDims = 3", f"DimSize = {w} {h} {n}", f"ElementType = {etype}",
              f"ElementNumberOfChannels = {channels}", f"CompressedData = {compressed}",
              f"UltrasoundImageOrientation = {orientation}", "Kinds = domain domain list", *extra]
    frame_fields = []
    for i in range(n):
        frame_fields += [f"Seq_Frame{i:04d}_Timestamp = {10 + i * 0.05:.6f}", f"Seq_Frame{i:04d}_ImageStatus = OK"]
    return fields, frame_fields


@pytest.mark.parametrize(
    "orientation, expected",
    [
        ("MF", lambda a: a),
        ("UF", lambda a: a[:, :, ::-1]),
        ("MN", lambda a: a[:, ::-1, :]),
        ("UN", lambda a: a[:, ::-1, ::-1]),
        ("UNA", lambda a: a[:, ::-1, ::-1]),
        ("FM", lambda a: a.transpose(0, 2, 1)),
        ("NU", lambda a: a.transpose(0, 2, 1)[:, ::-1, ::-1]),
    ],
)
def test_orientation_is_converted_to_mf(tmp_path, orientation, expected):
    stack = _stack(3, 4, 6)
    fields, frame_fields = _basic(3, 6, 4, orientation=orientation)
    path = write_mha(tmp_path / "o.igs.mha", fields, stack.tobytes(), frame_fields=frame_fields)
    with open_source(path) as source:
        got = np.stack([f.pixels for f in source])
    assert np.array_equal(got, expected(stack))


def test_image_to_transducer_transform_gives_spacing(tmp_path):
    stack = _stack(2, 40, 50)
    fields, frame_fields = _basic(2, 50, 40, extra=["ElementSpacing = 0.5 0.5 1"])
    for i in range(2):
        frame_fields += [
            f"Seq_Frame{i:04d}_ImageToTransducerTransform = 0.2 0 0 -10 0 0.25 0 -5 0 0 0.2 0 0 0 0 1",
            f"Seq_Frame{i:04d}_ImageToTransducerTransformStatus = OK",
        ]
    path = write_mha(tmp_path / "cal.igs.mha", fields, stack.tobytes(), frame_fields=frame_fields)
    with open_source(path) as source:
        info = source.info()
        frame = source.read()
    assert frame.spacing_mm == pytest.approx((0.2, 0.25))
    assert info.spacing_source == "plus_transform" and frame.extra["spacing_source"] == "plus_transform"
    assert info.extra["transducer_origin_px"] == [50.0, 20.0]
    assert info.extra["element_spacing"] == [0.5, 0.5, 1.0]  # reported, not used


@pytest.mark.parametrize("scale", ["0.0002", "20"])
def test_an_implausible_transform_scale_leaves_frames_uncalibrated(tmp_path, scale):
    """A transform whose pixel size is finer than 1 um or coarser than 10 mm (a unit slip: metres,
    micrometres) is reported and not used, never turned into millimetres."""
    stack = _stack(1, 4, 5)
    fields, frame_fields = _basic(1, 5, 4)
    frame_fields += [f"Seq_Frame0000_ImageToTransducerTransform = {scale} 0 0 0 0 {scale} 0 0 0 0 1 0 0 0 0 1",
                     "Seq_Frame0000_ImageToTransducerTransformStatus = OK"]
    path = write_mha(tmp_path / "unit.igs.mha", fields, stack.tobytes(), frame_fields=frame_fields)
    with open_source(path) as source:
        assert source.read().spacing_mm is None
        assert any("implausible" in w for w in source.warnings)


def test_invalid_transform_status_leaves_frames_uncalibrated(tmp_path):
    stack = _stack(1, 4, 5)
    fields, frame_fields = _basic(1, 5, 4)
    frame_fields += ["Seq_Frame0000_ImageToTransducerTransform = 0.2 0 0 0 0 0.2 0 0 0 0 1 0 0 0 0 1",
                     "Seq_Frame0000_ImageToTransducerTransformStatus = INVALID"]
    path = write_mha(tmp_path / "inv.igs.mha", fields, stack.tobytes(), frame_fields=frame_fields)
    with open_source(path) as source:
        assert source.read().spacing_mm is None
        assert any("ImageToTransducerTransform" in w for w in source.warnings)


def test_invalid_frames_are_skipped_and_reported(tmp_path):
    stack = _stack(4, 4, 5)
    fields, frame_fields = _basic(4, 5, 4)
    frame_fields = [f.replace("Seq_Frame0001_ImageStatus = OK", "Seq_Frame0001_ImageStatus = INVALID")
                    for f in frame_fields]
    path = write_mha(tmp_path / "s.igs.mha", fields, stack.tobytes(), frame_fields=frame_fields)
    with open_source(path) as source:
        info = source.info()
        frames = list(source)
    assert len(frames) == 3 and info.extra["invalid_frames"] == 1
    assert any("INVALID" in w and "0001" in w for w in info.warnings)
    assert np.array_equal(frames[1].pixels, stack[2])
    assert frames[1].t_source_s == pytest.approx(10.1)


@pytest.mark.parametrize("etype, dtype, msb", [
    ("MET_USHORT", "<u2", False), ("MET_SHORT", ">i2", True), ("MET_FLOAT", "<f4", False),
])
def test_wider_pixel_types_are_scaled_with_one_fixed_range(tmp_path, etype, dtype, msb):
    stack = _stack(3, 6, 7, dtype=np.dtype(dtype).newbyteorder("="))
    fields, frame_fields = _basic(3, 7, 6, etype=etype, extra=[f"BinaryDataByteOrderMSB = {msb}"])
    path = write_mha(tmp_path / "w.mha", fields, stack.astype(dtype).tobytes(), frame_fields=frame_fields)
    with open_source(path) as source:
        frames = list(source)
        assert any("scaled" in w for w in source.warnings)
    first = stack[0].astype(float)
    low, high = first.min(), first.max()
    for frame, plane in zip(frames, stack):
        expected = np.clip(np.rint((plane.astype(float) - low) * 255 / (high - low)), 0, 255)
        assert frame.pixels.dtype == np.uint8
        assert np.abs(frame.pixels.astype(int) - expected).max() <= 1


def test_rgb_frames(tmp_path):
    stack = _stack(2, 4, 5, c=3)
    fields, frame_fields = _basic(2, 5, 4, channels=3, compressed=True)
    path = write_mha(tmp_path / "rgb.igs.mha", fields, zlib.compress(stack.tobytes()), frame_fields=frame_fields)
    with open_source(path) as source:
        assert source.info().channels == 3
        assert np.array_equal(np.stack([f.pixels for f in source]), stack)


def test_ndims_2_single_frame(tmp_path):
    image = _stack(1, 4, 5)[0]
    path = write_mha(tmp_path / "one.mha", ["NDims = 2", "DimSize = 5 4", "ElementType = MET_UCHAR"],
                     image.tobytes(), frame_fields=["Seq_Frame0000_Timestamp = 3.5"])
    with open_source(path) as source:
        assert len(source) == 1 and source.read().t_source_s == 3.5


def test_detached_zraw(tmp_path):
    stack = _stack(3, 4, 5)
    (tmp_path / "d.zraw").write_bytes(zlib.compress(stack.tobytes()))
    fields, frame_fields = _basic(3, 5, 4, compressed=True)
    header = ["ObjectType = Image", *fields, *frame_fields, "ElementDataFile = d.zraw"]
    path = tmp_path / "d.mhd"
    path.write_text("\n".join(header) + "\n")
    with open_source(path) as source:
        assert np.array_equal(np.stack([f.pixels for f in source]), stack)
        assert source.info().extra["data_file"] == "d.zraw"


def test_compressed_random_access_uses_bounded_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setattr(plus_module, "CHECKPOINT_MIN_BYTES", 3 * 64 * 48)
    monkeypatch.setattr(plus_module, "VERIFY_AT_OPEN_BYTES", 0)  # lazy path
    stack = _stack(60, 48, 64, seed=3)
    fields, frame_fields = _basic(60, 64, 48, compressed=True)
    path = write_mha(tmp_path / "z.igs.mha", fields, zlib.compress(stack.tobytes(), 1), frame_fields=frame_fields)
    rng = np.random.default_rng(1)
    with open_source(path) as source:
        for i in rng.permutation(60).tolist() + [59, 0, 58, 1]:
            assert np.array_equal(source.frame_at(i).pixels, stack[i]), i
        stream = source._reader._stream
        assert stream.checkpoint_every == 3 * 64 * 48
        assert len(stream._checkpoints) <= 60 // 3 + 1
        assert len(source._cache) <= plus_module.CACHE_MAX_FRAMES


def test_uncompressed_frames_are_read_one_at_a_time(tmp_path):
    n, h, w = 200, 120, 160
    stack = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None], (n, h, w))
    fields, frame_fields = _basic(n, w, h)
    path = write_mha(tmp_path / "big.igs.mha", fields, np.ascontiguousarray(stack).tobytes(), frame_fields=frame_fields)
    tracemalloc.start()
    try:
        with open_source(path) as source:
            for frame in source:
                assert frame.pixels[0, 0] == frame.index
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * h * w, peak  # the whole file is 200 frames; we hold a few at most


def _write_nrrd(path: Path, stack: np.ndarray, *, list_first: bool, encoding: str, times=None, status=None):
    # stack (N, H, W): NRRD axis 0 is fastest -> data (W, H, N) or (N, W, H, 1) in Fortran order
    if list_first:
        data = stack.transpose(0, 2, 1)[..., None]  # (N, W, H, 1)
        header = {"kinds": ["list", "domain", "domain", "domain"], "encoding": encoding}
        if times is not None:
            header["axis 0 index type"] = "numeric"
            header["axis 0 index values"] = " ".join(str(t) for t in times)
    else:
        data = stack.transpose(2, 1, 0)  # (W, H, N)
        header = {"kinds": ["domain", "domain", "list"], "encoding": encoding}
        if times is not None:
            header["axis 2 index type"] = "numeric"
            header["axis 2 index values"] = " ".join(str(t) for t in times)
    if status:
        for i, value in enumerate(status):
            header[f"Seq_Frame{i:04d}_Status"] = value
            header[f"Seq_Frame{i:04d}_Timestamp"] = str(100 + i)
    nrrd.write(str(path), np.asfortranarray(data), header, index_order="F")
    return path


@pytest.mark.parametrize("list_first", [True, False])
@pytest.mark.parametrize("encoding", ["raw", "gzip"])
def test_slicer_sequences_list_axis_first_or_last(tmp_path, list_first, encoding):
    stack = _stack(4, 6, 8, seed=5)
    times = [0.0, 0.04, 0.1, 0.13]
    path = _write_nrrd(tmp_path / "s.seq.nrrd", stack, list_first=list_first, encoding=encoding, times=times)
    with open_source(path) as source:
        assert source.format_name == "slicer_seq_nrrd"
        frames = list(source)
    assert np.array_equal(np.stack([f.pixels for f in frames]), stack)
    assert [f.t_source_s for f in frames] == times


def test_plus_nrrd_status_invalid_skipped(tmp_path):
    stack = _stack(3, 4, 5)
    path = _write_nrrd(tmp_path / "p.igs.nrrd", stack, list_first=False, encoding="gzip",
                       status=["OK", "INVALID", "OK"])
    with open_source(path) as source:
        frames = list(source)
    assert source.format_name == "plus_nrrd"
    assert [f.t_source_s for f in frames] == [100.0, 102.0]
    assert np.array_equal(frames[1].pixels, stack[2])


# ---------------------------------------------------------------------------
# bad input: one clear line, typed error
# ---------------------------------------------------------------------------
def _bad_cases(tmp_path: Path) -> dict[str, tuple[Path, type]]:
    stack = _stack(3, 4, 5)
    fields, frame_fields = _basic(3, 5, 4)
    cases = {}
    cases["header lies (more frames than data)"] = (
        write_mha(tmp_path / "lie.mha", [f.replace("DimSize = 5 4 3", "DimSize = 5 4 30") for f in fields],
                  stack.tobytes(), frame_fields=frame_fields), CorruptDataError)
    cases["truncated raw"] = (write_mha(tmp_path / "trunc.mha", fields, stack.tobytes()[:-7],
                                        frame_fields=frame_fields), CorruptDataError)
    zfields, _ = _basic(3, 5, 4, compressed=True)
    packed = zlib.compress(stack.tobytes())
    cases["truncated zlib"] = (write_mha(tmp_path / "tz.mha", zfields, packed[: len(packed) // 2],
                                         frame_fields=frame_fields), CorruptDataError)
    cases["garbage zlib"] = (write_mha(tmp_path / "gz.mha", zfields, bytes(range(256)) * 4,
                                       frame_fields=frame_fields), CorruptDataError)
    cases["short zlib stream"] = (write_mha(tmp_path / "sz.mha", zfields, zlib.compress(stack.tobytes()[:20]),
                                            frame_fields=frame_fields), CorruptDataError)
    cases["absurd DimSize"] = (write_mha(tmp_path / "huge.mha", [f.replace("DimSize = 5 4 3", "DimSize = 30000 30000 90000") for f in fields],
                                         stack.tobytes(), frame_fields=frame_fields), CorruptDataError)
    cases["absurd DimSize compressed"] = (write_mha(tmp_path / "hugez.mha", [f.replace("DimSize = 5 4 3", "DimSize = 4000 4000 90000") for f in zfields],
                                                    packed, frame_fields=frame_fields), CorruptDataError)
    no_edf = tmp_path / "noedf.mha"
    no_edf.write_text("ObjectType = Image\nNDims = 3\nDimSize = 5 4 3\nElementType = MET_UCHAR\n")
    cases["missing ElementDataFile"] = (no_edf, CorruptDataError)
    detached = tmp_path / "det.mhd"
    detached.write_text("ObjectType = Image\nNDims = 3\nDimSize = 5 4 3\nElementType = MET_UCHAR\nElementDataFile = nowhere.raw\n")
    cases["ElementDataFile not found"] = (detached, CorruptDataError)
    png = tmp_path / "image.mha"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    cases["png renamed .mha"] = (png, CorruptDataError)
    nrrd_as_mha = tmp_path / "n.mha"
    nrrd_as_mha.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 2\nsizes: 2 2\nencoding: raw\n\n" + bytes(4))
    cases["nrrd renamed .mha"] = (nrrd_as_mha, UnsupportedFormatError)
    text_nrrd = tmp_path / "t.nrrd"
    text_nrrd.write_text("hello, not a nrrd\n")
    cases["not a nrrd"] = (text_nrrd, CorruptDataError)
    bad_sizes = tmp_path / "bs.nrrd"
    bad_sizes.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 5 4 x\nencoding: raw\n\n" + bytes(60))
    cases["nrrd bad sizes"] = (bad_sizes, CorruptDataError)
    ntrunc = tmp_path / "nt.nrrd"
    ntrunc.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 5 4 3\nkinds: domain domain list\nencoding: raw\n\n" + bytes(50))
    cases["nrrd truncated"] = (ntrunc, CorruptDataError)
    cases["unsupported type"] = (write_mha(tmp_path / "ty.mha", [f.replace("MET_UCHAR", "MET_STRING") for f in fields],
                                           stack.tobytes(), frame_fields=frame_fields), UnsupportedFormatError)
    cases["all frames invalid"] = (write_mha(tmp_path / "allinv.mha", fields, stack.tobytes(),
                                             frame_fields=[f.replace("= OK", "= INVALID") for f in frame_fields]),
                                   CorruptDataError)
    return cases


def test_bad_files_raise_typed_errors(tmp_path):
    for name, (path, error) in _bad_cases(tmp_path).items():
        with pytest.raises(error) as caught:
            with open_source(path) as source:
                for _ in source:
                    pass
        message = str(caught.value)
        assert "\n" not in message and path.name in message, (name, message)


def test_cli_bad_file_is_one_line_exit_2(tmp_path, capsys):
    path, _ = _bad_cases(tmp_path)["truncated zlib"]
    assert cli.main(["info", str(path), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("iousguide: error:") and "truncated" in err and "\n" not in err


def test_open_sequence_refuses_other_extensions(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("ObjectType = Image\n")
    with pytest.raises(UnsupportedFormatError):
        plus_module.open_sequence(path)
    with pytest.raises(IousguideError):
        plus_module.open_sequence(tmp_path)  # a folder that is not a recording journal


@pytest.mark.parametrize("relative", [
    "liver_sweep/liver_sweep_every7th.igs.mha",
    "plus/BoneUltrasound_L14.igs.mha",
    "plus/Prostate10_video.igs.mhd",
])
def test_pixels_equal_itk_metaio_reader(relative):
    """ITK's MetaIO reader (independent of ours) gives the same pixels for every shown slot."""
    sitk = pytest.importorskip("SimpleITK")
    path = shared_file(relative)
    cube = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # (slots, rows, cols); these files are MF
    with open_source(path) as source:
        for frame in source:
            assert np.array_equal(frame.pixels, cube[frame.extra["plus_frame_index"]])
