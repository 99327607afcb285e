"""The crash-safe PLUS writer: round trips, file layout, torn frames and a real ``kill -9``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from iousguide.acquisition import open_source
from iousguide.acquisition.plus import open_sequence
from iousguide.acquisition.plus_writer import SequenceWriter, partial_path_for, recover
from iousguide.errors import CorruptDataError, SettingsError
from iousguide.frames import Frame


def _frames(n, *, rgb=False, h=48, w=64, seed=0, t0=1566486001.697, spacing=None):
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if rgb else (h, w)
    return [
        Frame(pixels=rng.integers(0, 256, shape, dtype=np.uint8), index=i, t_mono_ns=5_000_000_000 + i,
              t_source_s=t0 + i * 0.0333 + rng.random() * 1e-3, spacing_mm=spacing)
        for i in range(n)
    ]


def _split(path: Path) -> tuple[str, bytes]:
    data = path.read_bytes()
    end = re.search(rb"ElementDataFile = LOCAL\n", data).end()
    return data[:end].decode("ascii"), data[end:]


@pytest.mark.parametrize("rgb", [False, True])
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("spacing", [None, (0.3148, 0.3148)])
def test_round_trip_pixels_and_timestamps_identical(tmp_path, rgb, compress, spacing):
    frames = _frames(7, rgb=rgb)
    path = tmp_path / "rec.igs.mha"
    with SequenceWriter(path, spacing_mm=spacing, compress=compress) as writer:
        for frame in frames:
            writer.append(frame)
    assert path.is_file() and not partial_path_for(path).exists()
    with open_source(path) as source:
        info = source.info()
        back = list(source)
    assert info.format == "plus_mha" and info.frames == 7 and info.channels == (3 if rgb else 1)
    assert info.spacing_mm == (pytest.approx(spacing) if spacing else None)
    assert info.spacing_source == ("plus_transform" if spacing else "none")
    for a, b in zip(frames, back):
        assert np.array_equal(a.pixels, b.pixels)
        assert b.t_source_s == a.t_source_s  # bit-identical floats
        assert b.extra["frame_number"] == a.index


def test_written_file_is_plain_plus_metaio(tmp_path):
    """Header fields and data layout checked without our reader."""
    frames = _frames(3)
    path = tmp_path / "c.igs.mha"
    with SequenceWriter(path, compress=True, spacing_mm=(0.2, 0.25)) as writer:
        for frame in frames:
            writer.append(frame)
    header, data = _split(path)
    assert header.startswith("ObjectType = Image\nNDims = 3\n")
    assert re.search(r"^DimSize = 64 48 3$", header, re.M)
    assert re.search(r"^ElementType = MET_UCHAR$", header, re.M)
    assert re.search(r"^UltrasoundImageOrientation = MF$", header, re.M)
    size = int(re.search(r"^CompressedDataSize = (\d+) *$", header, re.M).group(1))
    assert size == len(data)
    assert zlib.decompress(data) == b"".join(f.pixels.tobytes() for f in frames)
    for i, frame in enumerate(frames):
        assert float(re.search(rf"^Seq_Frame{i:04d}_Timestamp = (\S+)$", header, re.M).group(1)) == frame.t_source_s
        assert re.search(rf"^Seq_Frame{i:04d}_ImageStatus = OK$", header, re.M)
        matrix = re.search(rf"^Seq_Frame{i:04d}_ImageToTransducerTransform = (.+)$", header, re.M).group(1)
        assert [float(v) for v in matrix.split()] == [0.2, 0, 0, 0, 0, 0.25, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    assert "Committed" not in header


def test_orientation_mirrors_the_stored_pixels(tmp_path):
    frames = _frames(2)
    path = tmp_path / "un.igs.mha"
    with SequenceWriter(path, orientation="UN") as writer:
        for frame in frames:
            writer.append(frame)
    header, data = _split(path)
    assert "UltrasoundImageOrientation = UN" in header
    stored = np.frombuffer(data, np.uint8).reshape(2, 48, 64)
    assert np.array_equal(stored[1], frames[1].pixels[::-1, ::-1])
    with open_source(path) as source:
        assert np.array_equal(source.frame_at(1).pixels, frames[1].pixels)


def test_calibrated_frames_carry_their_own_spacing(tmp_path):
    frames = _frames(2, spacing=(0.11, 0.12))
    path = tmp_path / "s.igs.mha"
    with SequenceWriter(path) as writer:
        for frame in frames:
            writer.append(frame)
    with open_source(path) as source:
        assert source.read().spacing_mm == pytest.approx((0.11, 0.12))


def test_missing_source_time_falls_back_to_grab_time(tmp_path):
    frame = Frame(pixels=np.zeros((4, 5), np.uint8), index=0, t_mono_ns=1_234_567_890_123)
    path = tmp_path / "m.igs.mha"
    with SequenceWriter(path) as writer:
        writer.append(frame)
    with open_source(path) as source:
        assert source.read().t_source_s == pytest.approx(1234.567890123, abs=1e-9)


def test_size_or_channel_change_is_refused(tmp_path):
    with SequenceWriter(tmp_path / "x.igs.mha") as writer:
        writer.append(_frames(1)[0])
        with pytest.raises(SettingsError, match="fixed by the first frame"):
            writer.append(_frames(1, h=40)[0])
        with pytest.raises(SettingsError, match="fixed by the first frame"):
            writer.append(_frames(1, rgb=True)[0])
        writer.append(_frames(1, seed=4)[0])
    with open_source(tmp_path / "x.igs.mha") as source:
        assert len(source) == 2


def test_existing_output_or_journal_is_not_overwritten(tmp_path):
    path = tmp_path / "e.igs.mha"
    path.write_bytes(b"keep me")
    with pytest.raises(SettingsError, match="already exists"):
        SequenceWriter(path)
    other = tmp_path / "f.igs.mha"
    partial_path_for(other).mkdir()
    with pytest.raises(SettingsError, match="unfinished recording"):
        SequenceWriter(other)
    with pytest.raises(SettingsError):
        SequenceWriter(tmp_path / "g.igs.mha", orientation="XY")
    with pytest.raises(SettingsError):
        SequenceWriter(tmp_path / "g.igs.mha", spacing_mm=(0, 1))


def test_no_frames_no_file(tmp_path):
    path = tmp_path / "empty.igs.mha"
    with SequenceWriter(path) as writer:
        pass
    assert writer.close() is None and not path.exists()


def test_torn_last_frame_is_ignored_and_recovered(tmp_path):
    frames = _frames(4, rgb=True)
    path = tmp_path / "t.igs.mha"
    writer = SequenceWriter(path)
    for frame in frames[:3]:
        writer.append(frame)
    partial = partial_path_for(path)
    # simulate a kill in the middle of frame 3: half its pixels, its fields without the commit line
    with open(partial / "frames.raw", "ab") as fh:
        fh.write(frames[3].pixels.tobytes()[:5000])
    with open(partial / "frames.log", "a") as fh:
        fh.write("Seq_Frame0003_FrameNumber = 3\nSeq_Frame0003_Timestamp = 1.5\nSeq_Fra")
    with open_source(partial / "journal.mhd") as source:
        info = source.info()
        back = list(source)
    assert info.frames == 3 and info.extra["unfinished_recording"] is True
    assert info.extra["torn_bytes_ignored"] == 5000
    assert any("unfinished recording" in w for w in info.warnings)
    for a, b in zip(frames, back):
        assert np.array_equal(a.pixels, b.pixels) and a.t_source_s == b.t_source_s
    with open_sequence(partial) as source:  # the folder itself (registry rule for *.partial folders pending)
        assert len(source) == 3
    out = recover(partial)
    assert out == path and not partial.exists()
    assert path.stat().st_size == 4 * 1024 * 1024 + 3 * frames[0].pixels.nbytes  # torn bytes cut
    with open_source(path) as source:
        assert [f.t_source_s for f in source] == [f.t_source_s for f in frames[:3]]


def test_committed_frame_with_missing_pixels_is_not_counted(tmp_path):
    frames = _frames(2)
    path = tmp_path / "p.igs.mha"
    writer = SequenceWriter(path)
    for frame in frames:
        writer.append(frame)
    raw = partial_path_for(path) / "frames.raw"
    os.truncate(raw, raw.stat().st_size - 10)  # pixels of frame 1 incomplete although committed
    with open_source(partial_path_for(path) / "journal.mhd") as source:
        assert len(source) == 1


def test_empty_journal_is_a_clear_error(tmp_path):
    path = tmp_path / "z.igs.mha"
    writer = SequenceWriter(path)
    writer.append(_frames(1)[0])
    partial = partial_path_for(path)
    os.truncate(partial / "frames.log", 0)
    with pytest.raises(CorruptDataError, match="no complete frame"):
        open_source(partial / "journal.mhd")


CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    from iousguide.frames import Frame
    from iousguide.acquisition.plus_writer import SequenceWriter
    path, h, w, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    writer = SequenceWriter(path, spacing_mm=(0.25, 0.25))
    i = 0
    while True:
        rng = np.random.default_rng(i)
        shape = (h, w) if c == 1 else (h, w, c)
        writer.append(Frame(pixels=rng.integers(0, 256, shape, dtype=np.uint8), index=i,
                            t_mono_ns=0, t_source_s=1000.0 + i / 30))
        print(i, flush=True)
        i += 1
    """
)


@pytest.mark.parametrize("channels", [1, 3])
def test_kill_9_mid_recording_keeps_every_written_frame(tmp_path, channels):
    path = tmp_path / "killed.igs.mha"
    h, w = 120, 160
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(h), str(w), str(channels)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    written = -1
    deadline = time.monotonic() + 60
    try:
        while written < 25 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            written = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        rest, err = proc.stdout.read(), proc.stderr.read()  # lines printed before the kill
    assert proc.returncode == -signal.SIGKILL, err
    assert written >= 25, f"child did not write frames: {err}"
    last_printed = max([written] + [int(v) for v in rest.split()])
    assert not path.exists()  # never closed
    with open_source(partial_path_for(path) / "journal.mhd") as source:
        n = len(source)
        # every frame whose append() returned (and was printed) is there; one more may have been
        # committed between its append() and its print when the kill came
        assert last_printed + 1 <= n <= last_printed + 2, (last_printed, n)
        assert source.calibration.spacing_mm == (0.25, 0.25)
        for frame in source:
            rng = np.random.default_rng(frame.index)
            shape = (h, w) if channels == 1 else (h, w, channels)
            assert np.array_equal(frame.pixels, rng.integers(0, 256, shape, dtype=np.uint8)), frame.index
            assert frame.t_source_s == 1000.0 + frame.index / 30
    out = recover(partial_path_for(path), compress=True)
    with open_source(out) as source:
        assert len(source) == n


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("rgb", [False, True])
def test_itk_reads_what_we_write(tmp_path, compress, rgb):
    """An independent MetaIO reader (ITK, as PLUS and Slicer use) sees the same stored pixels."""
    sitk = pytest.importorskip("SimpleITK")
    frames = _frames(4, rgb=rgb, h=30, w=40)
    path = tmp_path / "itk.igs.mha"
    with SequenceWriter(path, compress=compress, orientation="UN") as writer:
        for frame in frames:
            writer.append(frame)
    image = sitk.ReadImage(str(path))
    assert image.GetSize() == (40, 30, 4)
    assert image.GetNumberOfComponentsPerPixel() == (3 if rgb else 1)
    stored = np.stack([f.pixels[::-1, ::-1] for f in frames])  # UN on disk
    assert np.array_equal(sitk.GetArrayFromImage(image), stored)


def test_close_finishes_in_place_without_copying(tmp_path):
    frames = _frames(5)
    path = tmp_path / "inplace.igs.mha"
    writer = SequenceWriter(path, header_reserve_bytes=64 * 1024)
    for frame in frames:
        writer.append(frame)
    inode = (partial_path_for(path) / "frames.raw").stat().st_ino
    writer.close()
    assert path.stat().st_ino == inode  # renamed, not copied
    assert path.stat().st_size == 64 * 1024 + 5 * 48 * 64
    header, data = _split(path)
    assert len(header) == 64 * 1024 and "IousguideHeaderPadding = " in header
    assert max(len(line) for line in header.split("\n")) <= 900
    assert data == b"".join(f.pixels.tobytes() for f in frames)
    with open_source(path) as source:
        assert [f.t_source_s for f in source] == [f.t_source_s for f in frames]
        assert not any("Padding" in w for w in source.warnings)


@pytest.mark.parametrize("reserve", [0, 900])
def test_header_larger_than_reserve_falls_back_to_copy(tmp_path, reserve):
    frames = _frames(20)
    path = tmp_path / "copy.igs.mha"
    with SequenceWriter(path, header_reserve_bytes=reserve) as writer:
        for frame in frames:
            writer.append(frame)
    header, data = _split(path)
    assert "IousguideHeaderPadding" not in header
    assert data == b"".join(f.pixels.tobytes() for f in frames)


def test_padded_header_has_exact_size():
    from iousguide.acquisition.plus_writer import _padded_header

    body = b"ObjectType = Image\nNDims = 3\n"
    edf = len(b"ElementDataFile = LOCAL\n")
    assert _padded_header(body, len(body) + edf) == body + b"ElementDataFile = LOCAL\n"
    assert _padded_header(body, len(body) + edf + 5) is None  # no room for even one padding line
    for size in (len(body) + edf + 26, 1000, 4097, 100_000):
        padded = _padded_header(body, size)
        assert len(padded) == size and padded.startswith(body) and padded.endswith(b"ElementDataFile = LOCAL\n")
        assert all(len(line) < 900 for line in padded.split(b"\n"))
