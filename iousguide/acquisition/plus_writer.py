"""Crash-safe writer of PLUS sequence metafiles (``.igs.mha``).

Design
------
A ``.igs.mha`` header lists every frame's fields *before* the pixel data, so it
cannot be appended to in place. While recording, :class:`SequenceWriter` keeps a
journal folder ``<out>.partial/`` next to the output:

``journal.mhd``
    A MetaIO header written once at the first frame (size, channels, orientation)
    whose ``ElementDataFile`` is ``frames.raw`` and whose ``IousguideFrameLog`` key
    names the log.
``frames.raw``
    Pixels of every frame appended as they come (uncompressed, file orientation),
    after ``header_reserve_bytes`` of (sparse) room kept for the final header
    (``HeaderSize`` in ``journal.mhd``).
``frames.log``
    Per frame, *after* its pixels are written: its PLUS fields
    (``Seq_FrameNNNN_FrameNumber``, ``Timestamp``, ``ImageStatus``,
    ``ImageToTransducerTransform`` when calibrated) and a last
    ``Seq_FrameNNNN_Committed = 1`` line, in a single ``write()``.

Both files are written with ``os.write`` on unbuffered descriptors, so once
:meth:`SequenceWriter.append` returns, the frame is in the kernel and survives a
``kill -9`` of the process (``fsync=True`` also makes it survive a power cut, at a
cost). A frame counts on recovery only when its ``Committed`` line is complete and
its pixels are fully present: a torn last frame is ignored.
``open_source("<out>.partial/journal.mhd")`` (and ``open_sequence`` on the folder)
opens an unfinished recording up to its last complete frame; :func:`recover`
turns it into a normal ``.igs.mha``.

:meth:`SequenceWriter.close` builds the final header from the log. Uncompressed,
when it fits in the reserved room (4 MiB by default, ~12 000 frames), it is written
there, padded to size with ``IousguideHeaderPadding = xxx`` lines (a custom field
PLUS and ITK ignore), and ``frames.raw`` is renamed to ``<out>``: closing costs
milliseconds whatever the size. Otherwise (``compress=True``, a longer recording,
another file system) ``<out>`` is written to a temporary file (header + pixels
copied in the kernel, or one zlib stream), fsynced and renamed into place. The
journal folder is removed last; a crash during ``close()`` leaves it usable.
"""

from __future__ import annotations

import math
import os
import shutil
import zlib
from pathlib import Path

import numpy as np

from iousguide.acquisition.plus import (
    JOURNAL_COMMIT_FIELD,
    JOURNAL_DATA,
    JOURNAL_HEADER,
    JOURNAL_LOG,
    JOURNAL_LOG_KEY,
    from_mf,
    read_journal_frames,
)
from iousguide.errors import CorruptDataError, SettingsError, SourceError
from iousguide.frames import Frame

PARTIAL_SUFFIX = ".partial"
_ORIENTATIONS = ("MF", "MN", "UF", "UN")
_COPY_CHUNK_BYTES = 8 * 1024 * 1024
_PAD = 20  # width reserved for CompressedDataSize so it can be patched in place


def partial_path_for(path: str | Path) -> Path:
    """The journal folder used while ``path`` is being recorded."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _write_all(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fmt(value: float) -> str:
    """Shortest text that reads back as the same float."""
    return repr(float(value))


class SequenceWriter:
    """Append frames to a PLUS ``.igs.mha`` as they come; crash-safe.

    Parameters
    ----------
    path : str or Path
        Output file, normally ending in ``.igs.mha``.
    orientation : {"MF", "MN", "UF", "UN"}
        Orientation written to the file. Frames are given in MF (the in-memory
        convention); pixels are mirrored accordingly, so a reader converting back
        to MF returns them unchanged.
    spacing_mm : (float, float), optional
        mm/px (x, y) written as each frame's ``ImageToTransducerTransform``. When
        None, each calibrated frame's own ``spacing_mm`` is written; uncalibrated
        frames get no transform.
    compress : bool
        zlib-compress the pixel data (one stream over all frames, as PLUS does)
        when closing. Recording itself always appends raw pixels.
    compress_level : int
        zlib level used by ``close()`` when ``compress`` (1 = fastest).
    fsync : bool
        ``os.fsync`` both journal files after every frame (power-cut safety; slow).
    overwrite : bool
        Replace an existing output file. An existing journal folder is never
        overwritten (it may hold an unrecovered recording).
    header_reserve_bytes : int
        Space kept (sparse) at the start of the data file for the final header.
        When the header fits (about 200-330 bytes per frame: 4 MiB holds ~12 000
        frames) and ``compress`` is False, ``close()`` writes the header there and
        renames the file: no copy, whatever the recording's size. Otherwise it copies.

    Raises
    ------
    SettingsError
        Bad orientation or spacing, existing output or journal.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        orientation: str = "MF",
        spacing_mm: tuple[float, float] | None = None,
        compress: bool = False,
        compress_level: int = 1,
        fsync: bool = False,
        overwrite: bool = False,
        header_reserve_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.path = Path(path)
        self.partial_path = partial_path_for(self.path)
        orientation = str(orientation).upper()
        if orientation not in _ORIENTATIONS:
            raise SettingsError(f"orientation must be one of {', '.join(_ORIENTATIONS)}, got {orientation!r}")
        if spacing_mm is not None:
            try:
                sx, sy = (float(v) for v in spacing_mm)
            except (TypeError, ValueError):
                raise SettingsError(f"spacing_mm must be (x, y) in mm/px, got {spacing_mm!r}") from None
            if not (math.isfinite(sx) and math.isfinite(sy) and sx > 0 and sy > 0):
                raise SettingsError(f"spacing_mm must be positive and finite, got {spacing_mm!r}")
            spacing_mm = (sx, sy)
        if not 0 <= int(header_reserve_bytes) <= 1 << 30:
            raise SettingsError(f"header_reserve_bytes must be 0..1 GiB, got {header_reserve_bytes}")
        if not 0 <= int(compress_level) <= 9:
            raise SettingsError(f"compress_level must be 0..9, got {compress_level}")
        if self.path.exists() and not overwrite:
            raise SettingsError(f"{self.path} already exists (pass overwrite=True to replace it)")
        if self.partial_path.exists():
            raise SettingsError(
                f"{self.partial_path} exists: an unfinished recording is there; recover it "
                f"(iousguide.acquisition.plus_writer.recover) or remove it first"
            )
        if not self.path.parent.is_dir():
            raise SettingsError(f"folder {self.path.parent} does not exist")
        self.orientation = orientation
        self.spacing_mm = spacing_mm
        self.compress = bool(compress)
        self.compress_level = int(compress_level)
        self.fsync = bool(fsync)
        self.header_reserve_bytes = int(header_reserve_bytes)
        self.frames_written = 0
        self._shape: tuple[int, ...] | None = None
        self._frame_bytes = 0
        self._raw_fd = -1
        self._log_fd = -1
        self._closed = False
        self._final: Path | None = None

    # -- writing -------------------------------------------------------------
    def _start(self, pixels: np.ndarray) -> None:
        self.partial_path.mkdir()
        height, width = pixels.shape[:2]
        channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        header = _header_lines(width, height, 0, channels, self.orientation) + [
            f"HeaderSize = {self.header_reserve_bytes}",
            f"{JOURNAL_LOG_KEY} = {JOURNAL_LOG}",
            f"ElementDataFile = {JOURNAL_DATA}",
        ]
        tmp = self.partial_path / (JOURNAL_HEADER + ".tmp")
        tmp.write_text("\n".join(header) + "\n", encoding="ascii")
        os.replace(tmp, self.partial_path / JOURNAL_HEADER)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._raw_fd = os.open(self.partial_path / JOURNAL_DATA, flags, 0o644)
        # room for the final header, so close() can finish the file in place (sparse: no disk used)
        os.ftruncate(self._raw_fd, self.header_reserve_bytes)
        self._log_fd = os.open(self.partial_path / JOURNAL_LOG, flags, 0o644)
        _fsync_dir(self.partial_path)
        self._shape = pixels.shape
        self._frame_bytes = int(pixels.nbytes)

    def append(self, frame: Frame) -> int:
        """Write one frame now; returns its index in the file.

        Raises
        ------
        SettingsError
            The frame's size or channel count differs from the first frame's.
        SourceError
            The writer is closed, or the disk refused the write.
        """
        if self._closed:
            raise SourceError(f"writer for {self.path} is closed")
        pixels = np.asarray(frame.pixels)
        if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
            raise SettingsError(f"frames must be uint8 grey or RGB, got {pixels.dtype} {pixels.shape}")
        if self._shape is None:
            self._start(pixels)
        elif pixels.shape != self._shape:
            raise SettingsError(
                f"frame {frame.index} is {_describe(pixels.shape)} but this recording is {_describe(self._shape)}; "
                "the size is fixed by the first frame"
            )
        stored = np.ascontiguousarray(from_mf(pixels, self.orientation))
        index = self.frames_written
        t_s = frame.t_source_s if frame.t_source_s is not None else frame.t_mono_ns / 1e9
        prefix = f"Seq_Frame{index:04d}_"
        lines = [
            f"{prefix}FrameNumber = {int(frame.index)}",
            f"{prefix}Timestamp = {_fmt(t_s)}",
        ]
        unfiltered = frame.extra.get("t_unfiltered_s")
        if isinstance(unfiltered, (int, float)) and math.isfinite(unfiltered):
            lines.append(f"{prefix}UnfilteredTimestamp = {_fmt(unfiltered)}")
        lines.append(f"{prefix}ImageStatus = OK")
        spacing = self.spacing_mm if self.spacing_mm is not None else frame.spacing_mm
        if spacing is not None:
            sx, sy = spacing
            lines.append(
                f"{prefix}ImageToTransducerTransform = {_fmt(sx)} 0 0 0 0 {_fmt(sy)} 0 0 0 0 1 0 0 0 0 1"
            )
            lines.append(f"{prefix}ImageToTransducerTransformStatus = OK")
        lines.append(f"{prefix}{JOURNAL_COMMIT_FIELD} = 1")
        try:
            _write_all(self._raw_fd, stored.data)
            if self.fsync:
                os.fsync(self._raw_fd)
            _write_all(self._log_fd, ("\n".join(lines) + "\n").encode("ascii"))
            if self.fsync:
                os.fsync(self._log_fd)
        except OSError as exc:
            raise SourceError(f"cannot write frame {index} to {self.partial_path}: {exc.strerror or exc}") from None
        self.frames_written += 1
        return index

    # -- finishing -----------------------------------------------------------
    def close(self) -> Path | None:
        """Assemble the final ``.igs.mha``; returns its path (None if no frame was written)."""
        if self._closed:
            return self._final
        self._closed = True
        for name in ("_raw_fd", "_log_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
        if self._shape is None:
            return None
        self._final = recover(self.partial_path, self.path, compress=self.compress,
                              compress_level=self.compress_level, overwrite=True)
        return self._final

    def __enter__(self) -> "SequenceWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        # also on an exception: what was recorded is kept and assembled
        self.close()


def recover(
    partial: str | Path,
    out: str | Path | None = None,
    *,
    compress: bool = False,
    compress_level: int = 1,
    overwrite: bool = False,
) -> Path:
    """Turn a journal folder (``<out>.partial``) into a normal ``.igs.mha``.

    Parameters
    ----------
    partial : str or Path
        The journal folder left by :class:`SequenceWriter`.
    out : str or Path, optional
        Output file; default: the folder name without ``.partial``.
    compress : bool
        zlib-compress the pixel data (one stream, ``CompressedDataSize`` patched in).

    Returns
    -------
    Path
        The written file. The journal folder is removed after the file is in place.

    Raises
    ------
    CorruptDataError
        The folder is not a journal or holds no complete frame.
    SettingsError
        ``out`` exists and ``overwrite`` is False.
    """
    from iousguide.acquisition.plus import _Header, _ints, _metaio_layout, parse_metaio_header

    partial = Path(partial)
    journal = partial / JOURNAL_HEADER
    if not journal.is_file():
        raise CorruptDataError(f"{partial}: not an unfinished recording (no {JOURNAL_HEADER})")
    if out is None:
        name = partial.name[: -len(PARTIAL_SUFFIX)] if partial.name.endswith(PARTIAL_SUFFIX) else partial.name + ".igs.mha"
        out = partial.with_name(name)
    out = Path(out)
    if out.exists() and not overwrite:
        raise SettingsError(f"{out} already exists")
    header = parse_metaio_header(journal.read_bytes(), path=journal)
    fields = dict(header.fields)
    width, height, _ = _ints(fields.get("DimSize", "0 0 0"), journal, "DimSize")
    fields["DimSize"] = f"{width} {height} 1"
    layout = _metaio_layout(journal, _Header(fields, {}), 0)
    frames, _torn = read_journal_frames(partial / JOURNAL_LOG, frame_bytes=layout.frame_bytes,
                                        data_bytes=layout.data_bytes)
    if not frames:
        raise CorruptDataError(f"{partial}: the recording holds no complete frame")
    n = len(frames)
    lines = _header_lines(width, height, n, layout.channels, fields.get("UltrasoundImageOrientation", "MF"),
                          compressed=compress)
    for index in range(n):
        for key, value in frames[index].items():
            lines.append(f"Seq_Frame{index:04d}_{key} = {value}")
    body = ("\n".join(lines) + "\n").encode("ascii")
    data_path = partial / JOURNAL_DATA
    data_bytes = n * layout.frame_bytes
    reserved = layout.data_offset
    if not compress and reserved > 0:
        padded = _padded_header(body, reserved)
        if padded is not None and _finish_in_place(data_path, padded, reserved + data_bytes, out):
            shutil.rmtree(partial, ignore_errors=True)
            return out
    head = body + _EDF_LINE
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as dst, open(data_path, "rb") as src:
            dst.write(head)
            src.seek(reserved)
            remaining = data_bytes
            if compress:
                compressor = zlib.compressobj(compress_level)
                written = 0
                while remaining:
                    chunk = src.read(min(_COPY_CHUNK_BYTES, remaining))
                    if not chunk:
                        raise CorruptDataError(f"{partial}: frames.raw shrank while recovering")
                    remaining -= len(chunk)
                    packed = compressor.compress(chunk)
                    dst.write(packed)
                    written += len(packed)
                packed = compressor.flush()
                dst.write(packed)
                written += len(packed)
                marker = b"CompressedDataSize = "
                at = head.index(marker) + len(marker)
                dst.seek(at)
                dst.write(str(written).ljust(_PAD).encode("ascii"))
            else:
                dst.flush()
                _copy(src, dst, remaining, partial)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, out)
        _fsync_dir(out.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    shutil.rmtree(partial, ignore_errors=True)
    return out


_EDF_LINE = b"ElementDataFile = LOCAL\n"
_PAD_KEY = b"IousguideHeaderPadding = "
_PAD_LINE_MAX = 900  # PLUS reads header lines with fgets(1000)


def _padded_header(body: bytes, size: int) -> bytes | None:
    """``body`` + padding lines + ``ElementDataFile = LOCAL`` in exactly ``size`` bytes, or None.

    The padding is ``IousguideHeaderPadding = xxx...`` lines of at most 900 bytes
    (an ordinary custom field for PLUS and ITK readers).
    """
    room = size - len(body) - len(_EDF_LINE)
    if room == 0:
        return body + _EDF_LINE
    minimal = len(_PAD_KEY) + 1
    if room < minimal:
        return None
    count = -(-room // _PAD_LINE_MAX)
    sizes = [room // count + (1 if i < room % count else 0) for i in range(count)]
    if min(sizes) < minimal:
        return None
    padding = b"".join(_PAD_KEY + b"x" * (k - minimal) + b"\n" for k in sizes)
    out = body + padding + _EDF_LINE
    return out if len(out) == size else None


def _finish_in_place(data_path: Path, header: bytes, total_bytes: int, out: Path) -> bool:
    """Write ``header`` into the space reserved at the start of the journal's data file,
    cut a torn last frame, and rename the file to ``out`` (no copy). False when the
    rename is impossible (another file system); the journal is then still intact."""
    fd = os.open(data_path, os.O_WRONLY)
    try:
        os.pwrite(fd, header, 0)
        os.ftruncate(fd, total_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(data_path, out)
    except OSError:
        return False
    _fsync_dir(out.parent)
    return True


def _copy(src, dst, n: int, partial: Path) -> None:
    """Copy ``n`` bytes from ``src``'s position to ``dst``'s, in the kernel when possible."""
    in_fd, out_fd = src.fileno(), dst.fileno()
    in_pos, out_pos = src.tell(), dst.tell()
    copied = 0
    use_kernel = hasattr(os, "copy_file_range")
    while copied < n:
        step = min(_COPY_CHUNK_BYTES * 8, n - copied)
        done = 0
        if use_kernel:
            try:
                done = os.copy_file_range(in_fd, out_fd, step, in_pos + copied, out_pos + copied)
            except OSError:
                use_kernel = False
        if not use_kernel:
            chunk = os.pread(in_fd, min(step, _COPY_CHUNK_BYTES), in_pos + copied)
            done = os.pwrite(out_fd, chunk, out_pos + copied) if chunk else 0
        if done <= 0:
            raise CorruptDataError(f"{partial}: frames.raw shrank while recovering")
        copied += done
    dst.seek(out_pos + n)


def _header_lines(width: int, height: int, n: int, channels: int, orientation: str, *,
                  compressed: bool = False) -> list[str]:
    lines = [
        "ObjectType = Image",
        "NDims = 3",
        "AnatomicalOrientation = RAI",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CenterOfRotation = 0 0 0",
        f"CompressedData = {'True' if compressed else 'False'}",
    ]
    if compressed:
        lines.append("CompressedDataSize = " + "0".ljust(_PAD))
    lines += [
        f"DimSize = {width} {height} {n}",
        "ElementNumberOfChannels = " + str(channels),
        "ElementSpacing = 1 1 1",
        "ElementType = MET_UCHAR",
        "Kinds = domain domain list",
        "Offset = 0 0 0",
        "TransformMatrix = 1 0 0 0 1 0 0 0 1",
        f"UltrasoundImageOrientation = {orientation}",
        f"UltrasoundImageType = {'BRIGHTNESS' if channels == 1 else 'RGB_COLOR'}",
    ]
    return lines


def _describe(shape: tuple[int, ...]) -> str:
    kind = "grey" if len(shape) == 2 else f"{shape[2]}-channel"
    return f"{shape[1]}x{shape[0]} {kind}"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["SequenceWriter", "recover", "partial_path_for", "PARTIAL_SUFFIX"]
