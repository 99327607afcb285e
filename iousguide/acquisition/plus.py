"""PLUS sequence metafiles (``.igs.mha``, ``.mha``, ``.mhd`` + ``.raw``/``.zraw``),
PLUS NRRD sequences (``.igs.nrrd``) and Slicer volume sequences (``.seq.nrrd``).

:func:`open_sequence` returns a random-access :class:`SequenceSource`.

Decisions (documented, tested in ``tests/test_plus.py``)
--------------------------------------------------------
* **Frames are parsed by index** (``Seq_FrameNNNN_...``), never counted. A data slot
  ``0 <= k < N`` with *no* header fields at all (``Prostate10``: index 0002) has no
  timestamp or status: it is **skipped** and named in ``warnings``. A plain MetaIO
  file with no ``Seq_Frame`` fields at all is read as N frames without timestamps.
* **INVALID frames** (``ImageStatus``/``Status`` other than OK) are **skipped**: they
  are counted in ``warnings`` and ``info().extra["invalid_frames"]``, never shown.
* ``Frame.index`` is the 0-based position among the frames that are shown (so
  ``seek(frame.index)`` works); the file's own slot is ``extra["plus_frame_index"]``
  and PLUS's ``FrameNumber`` is ``extra["frame_number"]``.
* ``t_source_s`` is the frame's ``Timestamp`` (seconds, as stored). Slicer
  ``axis N index values`` are used when there are no per-frame timestamps. Missing
  timestamps are interpolated from neighbours (warning); with none at all, frames
  are paced at 10 frames/s, ``t_source_s`` is None and ``fps`` is reported as unknown.
* **Orientation** (``UltrasoundImageOrientation``, 2 or 3 letters) is converted to MF
  on read: ``U`` as first letter mirrors columns, ``N`` as second mirrors rows;
  transposed orientations (``FM``, ``NU``...) are transposed first. Missing = MF.
* **Spacing** comes only from a per-frame ``ImageToTransducerTransform`` with status
  OK (column norms of its rotation part = mm/px; ``spacing_source = "plus_transform"``).
  ``ElementSpacing`` and NRRD ``space directions`` are *never* used as mm/px: they are
  reported in ``info().extra`` and, when not all 1, in a warning.
* Pixel types: ``MET_UCHAR`` as is. ``MET_CHAR``/``SHORT``/``USHORT``/``INT``/``UINT``/
  ``FLOAT``/``DOUBLE`` are scaled linearly to 0-255 with **one** min-max taken from the
  first shown frame (fixed for the whole file, so brightness does not flicker; values
  outside are clipped), with a warning. Channels 1 (grey), 3 (RGB), 4 (RGBA, alpha dropped).

Memory
------
* Uncompressed data is read **frame by frame** with ``os.pread`` (one frame in memory).
* Compressed data (MetaIO zlib, NRRD gzip) is stream-decompressed with
  ``zlib.decompressobj``. Decoder checkpoints (``decompressobj.copy()`` + input
  offset, ~70 KB each, measured) are kept every >= 16 MiB of output, at most 128 of
  them (<= ~9 MB, reached from ~2 GB of pixels on), so a backward seek re-decodes at
  most one checkpoint interval; decoded frames live in an LRU cache of at most
  8 frames / 32 MiB.
* Per-frame header fields (timestamps, status, transforms) are kept in memory as
  text: about 0.5-1 KB per frame, the one part that grows with the recording length. Files whose pixel data is <= 256 MiB are
  decoded once at open to verify the stream (a truncated or garbage stream is then a
  :class:`CorruptDataError` at open); larger ones are verified as they are read.
* NRRD files whose list axis is not the last one (interleaved frames, some Slicer
  files): raw data is memory-mapped; gzip data is decoded whole, refused above 512 MiB.

Crash-safe recordings (``iousguide.acquisition.plus_writer``) leave a
``<name>.partial/`` folder with ``journal.mhd`` + ``frames.raw`` + ``frames.log`` while
they are being written; :func:`open_sequence` opens the folder or its ``journal.mhd``
up to the last fully written frame.
"""

from __future__ import annotations

import math
import os
import re
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iousguide.acquisition.base import IndexedSource, SourceInfo, monotonic_ns
from iousguide.calibration import Calibration, plausible_spacing_mm
from iousguide.errors import CorruptDataError, IousguideError, UnsupportedFormatError
from iousguide.frames import Frame

# --- limits (refuse before allocating) -------------------------------------
MAX_HEADER_BYTES = 256 * 1024 * 1024
MAX_SIDE_PX = 32768
MAX_FRAME_BYTES = 512 * 1024 * 1024
MAX_FRAMES = 50_000_000
ZLIB_MAX_RATIO = 1100  # deflate cannot expand more than ~1032:1
VERIFY_AT_OPEN_BYTES = 256 * 1024 * 1024
INTERLEAVED_GZIP_LIMIT_BYTES = 512 * 1024 * 1024
CHECKPOINT_MIN_BYTES = 16 * 1024 * 1024
MAX_CHECKPOINTS = 128
CACHE_MAX_FRAMES = 8
CACHE_MAX_BYTES = 32 * 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024
NO_TIMESTAMP_FPS = 10.0

JOURNAL_HEADER = "journal.mhd"
JOURNAL_LOG = "frames.log"
JOURNAL_DATA = "frames.raw"
JOURNAL_LOG_KEY = "IousguideFrameLog"
JOURNAL_COMMIT_FIELD = "Committed"

MET_TYPES = {
    "MET_UCHAR": "u1",
    "MET_CHAR": "i1",
    "MET_USHORT": "u2",
    "MET_SHORT": "i2",
    "MET_UINT": "u4",
    "MET_INT": "i4",
    "MET_ULONG": "u4",
    "MET_LONG": "i4",
    "MET_ULONG_LONG": "u8",
    "MET_LONG_LONG": "i8",
    "MET_FLOAT": "f4",
    "MET_DOUBLE": "f8",
}

NRRD_TYPES = {
    **{k: "i1" for k in ("signed char", "int8", "int8_t")},
    **{k: "u1" for k in ("uchar", "unsigned char", "uint8", "uint8_t")},
    **{k: "i2" for k in ("short", "short int", "signed short", "signed short int", "int16", "int16_t")},
    **{k: "u2" for k in ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t")},
    **{k: "i4" for k in ("int", "signed int", "int32", "int32_t")},
    **{k: "u4" for k in ("uint", "unsigned int", "uint32", "uint32_t")},
    **{k: "i8" for k in ("longlong", "long long", "long long int", "signed long long",
                         "signed long long int", "int64", "int64_t")},
    **{k: "u8" for k in ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t")},
    "float": "f4",
    "double": "f8",
}

_COMPONENT_KINDS = {"vector", "covariant-vector", "normal", "rgb-color", "rgba-color", "3-color", "4-color",
                    "hsv-color", "xyz-color", "complex", "2-vector", "3-vector", "4-vector",
                    "3-gradient", "3-normal", "scalar"}
_LIST_KINDS = {"list", "time", "point"}
_SPACE_KINDS = {"domain", "space"}

_FRAME_FIELD = re.compile(r"^Seq_Frame(\d{1,9})_(.+)$")


# ---------------------------------------------------------------------------
# parsed description of a file
# ---------------------------------------------------------------------------
@dataclass
class _Layout:
    """Where the pixels are and how they are laid out (element strides)."""

    width: int
    height: int
    channels: int
    dtype: np.dtype
    n_slots: int
    data_path: Path
    data_offset: int
    data_bytes: int  # bytes available after data_offset in data_path
    compression: str | None  # None | "zlib" | "gzip"
    compressed_size: int | None = None
    # element strides (slot, row, col, channel); None = contiguous C order per slot
    strides: tuple[int, int, int, int] | None = None

    @property
    def frame_elems(self) -> int:
        return self.width * self.height * self.channels

    @property
    def frame_bytes(self) -> int:
        return self.frame_elems * self.dtype.itemsize


@dataclass
class _Header:
    fields: dict[str, str]
    frames: dict[int, dict[str, str]]
    warnings: list[str] = field(default_factory=list)


def _err(path: Path, message: str) -> CorruptDataError:
    return CorruptDataError(f"{path.name}: {message}")


def _ints(text: str, path: Path, key: str) -> list[int]:
    try:
        values = [int(float(v)) if re.fullmatch(r"[+-]?\d+(\.0*)?", v) else int(v) for v in text.split()]
    except ValueError:
        raise _err(path, f"{key} must be integers, got {text[:80]!r}") from None
    return values


def _floats(text: str) -> list[float] | None:
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        return None
    return values


def _bool(text: str | None) -> bool | None:
    if text is None:
        return None
    low = text.strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    return None


# ---------------------------------------------------------------------------
# MetaIO header
# ---------------------------------------------------------------------------
def read_metaio_header(path: Path) -> tuple[bytes, int]:
    """Header bytes (up to and including the ``ElementDataFile`` line) and the data offset.

    Raises
    ------
    CorruptDataError
        No ``ElementDataFile`` line within :data:`MAX_HEADER_BYTES`, or not a text header.
    """
    buffer = bytearray()
    pattern = re.compile(rb"(?:^|\n)[ \t]*ElementDataFile[ \t]*=[^\n]*(?:\n|$)")
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(64 * 1024)
            if not buffer:
                first_line = chunk[:4096].split(b"\n", 1)[0]
                if b"=" not in first_line or b"\x00" in first_line:
                    raise _err(path, "not a MetaIO header (the first line is not 'Key = Value')")
            search_from = max(0, len(buffer) - 4096)
            buffer += chunk
            match = pattern.search(buffer, search_from)
            if match and (buffer[match.end() - 1 : match.end()] == b"\n" or not chunk):
                return bytes(buffer[: match.end()]), match.end()
            if not chunk:
                break
            if len(buffer) > MAX_HEADER_BYTES:
                raise _err(path, f"no ElementDataFile line in the first {MAX_HEADER_BYTES // 2**20} MiB")
    raise _err(path, "header has no ElementDataFile line (missing or truncated header)")


def parse_metaio_header(text: bytes | str, *, path: Path | str = "header") -> _Header:
    """Parse a MetaIO ``Key = Value`` header into global and per-frame fields.

    Parameters
    ----------
    text : bytes or str
        Header text (lines up to and including ``ElementDataFile``).
    path : Path or str
        Only used in error messages.

    Returns
    -------
    _Header
        ``fields`` (global keys, last one wins), ``frames`` (index -> {name: value}).

    Raises
    ------
    CorruptDataError
        A line that is not ``Key = Value``, an empty header, a first line other
        than ``ObjectType``/``NDims``.
    """
    path = Path(path)
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    fields: dict[str, str] = {}
    frames: dict[int, dict[str, str]] = {}
    warnings: list[str] = []
    lines = text.split("\n")
    seen_any = False
    for number, raw in enumerate(lines, start=1):
        line = raw.strip().strip("\x00")
        if not line:
            continue
        if "=" not in line:
            raise _err(path, f"header line {number} is not 'Key = Value': {line[:60]!r}")
        key, value = line.split("=", 1)
        key, value = key.strip(), value.strip()
        if not key:
            raise _err(path, f"header line {number} has an empty key")
        if not seen_any and key not in ("ObjectType", "NDims", "Comment", "ObjectSubType"):
            raise _err(path, f"not a MetaIO header (first key is {key[:40]!r}, expected ObjectType)")
        seen_any = True
        match = _FRAME_FIELD.match(key)
        if match:
            index = int(match.group(1))
            frames.setdefault(index, {})[match.group(2)] = value
        else:
            fields[key] = value
        if key == "ElementDataFile":
            break
    if not seen_any:
        raise _err(path, "empty MetaIO header")
    return _Header(fields=fields, frames=frames, warnings=warnings)


def _metaio_layout(path: Path, header: _Header, data_offset: int) -> _Layout:
    f = header.fields
    object_type = f.get("ObjectType", "Image")
    if object_type.lower() != "image":
        raise UnsupportedFormatError(f"{path.name}: MetaIO ObjectType {object_type[:40]!r} is not an image")
    if "NDims" not in f:
        raise _err(path, "header has no NDims")
    ndims = _ints(f["NDims"], path, "NDims")
    if len(ndims) != 1 or ndims[0] not in (2, 3, 4):
        raise UnsupportedFormatError(f"{path.name}: NDims = {f['NDims'][:20]} (supported: 2, 3)")
    ndims_value = ndims[0]
    if "DimSize" not in f:
        raise _err(path, "header has no DimSize")
    dims = _ints(f["DimSize"], path, "DimSize")
    if len(dims) != ndims_value:
        raise _err(path, f"DimSize has {len(dims)} values but NDims = {ndims_value}")
    if any(d < 0 for d in dims):
        raise _err(path, f"DimSize has a negative value: {f['DimSize'][:60]}")
    kinds = f.get("Kinds", "").split()
    if ndims_value == 2:
        width, height, n_slots = dims[0], dims[1], 1
    elif ndims_value == 3:
        width, height, n_slots = dims
    else:  # 4-D: W H 1 N (2-D frames written with a Z axis)
        if dims[2] != 1:
            raise UnsupportedFormatError(f"{path.name}: 3-D volumes per frame (DimSize {f['DimSize']}) are not supported")
        width, height, n_slots = dims[0], dims[1], dims[3]
    if kinds and len(kinds) == ndims_value and ndims_value == 3 and kinds[-1].lower() not in _LIST_KINDS:
        if kinds[-1].lower() in _SPACE_KINDS and n_slots > 1:
            raise UnsupportedFormatError(f"{path.name}: a 3-D volume (Kinds = {f['Kinds']}) is not a frame sequence")
    etype = f.get("ElementType", "").strip().upper()
    if etype not in MET_TYPES:
        raise UnsupportedFormatError(
            f"{path.name}: ElementType {etype[:30] or '(missing)'} is not supported "
            f"(supported: {', '.join(sorted(MET_TYPES))})"
        )
    channels_list = _ints(f.get("ElementNumberOfChannels", "1"), path, "ElementNumberOfChannels")
    if len(channels_list) != 1 or channels_list[0] not in (1, 3, 4):
        raise UnsupportedFormatError(
            f"{path.name}: ElementNumberOfChannels = {f.get('ElementNumberOfChannels')} (supported: 1, 3, 4)"
        )
    channels = channels_list[0]
    msb = _bool(f.get("BinaryDataByteOrderMSB", f.get("ElementByteOrderMSB", "False")))
    dtype = np.dtype(MET_TYPES[etype]).newbyteorder(">" if msb else "<")
    binary = _bool(f.get("BinaryData", "True"))
    if binary is False:
        raise UnsupportedFormatError(f"{path.name}: ASCII pixel data (BinaryData = False) is not supported")
    compressed = _bool(f.get("CompressedData", "False"))
    if compressed is None:
        raise _err(path, f"CompressedData = {f.get('CompressedData', '')[:20]!r} is not True/False")
    _check_dims(path, width, height, channels, dtype, n_slots)

    element_file = f.get("ElementDataFile", "")
    if not element_file:
        raise _err(path, "ElementDataFile is empty")
    if element_file.upper() == "LOCAL":
        data_path = path
        offset = data_offset
    else:
        if element_file.upper().startswith("LIST") or "%" in element_file or " " in element_file.strip():
            raise UnsupportedFormatError(f"{path.name}: multi-file ElementDataFile {element_file[:60]!r} is not supported")
        data_path = (path.parent / element_file).resolve()
        if not data_path.is_file():
            raise _err(path, f"ElementDataFile {element_file!r} not found next to the header")
        offset = 0
        header_size = f.get("HeaderSize")
        if header_size is not None:
            hs = _ints(header_size, path, "HeaderSize")
            if len(hs) != 1 or hs[0] < -1:
                raise _err(path, f"HeaderSize = {header_size[:20]!r} is invalid")
            if hs[0] == -1 and not compressed:
                offset = max(0, data_path.stat().st_size - n_slots * width * height * channels * dtype.itemsize)
            elif hs[0] > 0:
                offset = hs[0]
    available = data_path.stat().st_size - offset
    if available < 0:
        raise _err(path, "data starts beyond the end of the file")
    layout = _Layout(width, height, channels, dtype, n_slots, data_path, offset, available,
                     "zlib" if compressed else None)
    if compressed:
        size_text = f.get("CompressedDataSize")
        if size_text is not None:
            sizes = _ints(size_text, path, "CompressedDataSize")
            if len(sizes) != 1 or sizes[0] <= 0:
                raise _err(path, f"CompressedDataSize = {size_text[:20]!r} is invalid")
            if sizes[0] > available:
                raise _err(path, f"truncated: CompressedDataSize = {sizes[0]} but only {available} bytes follow the header")
            layout.compressed_size = sizes[0]
        else:
            layout.compressed_size = available
    return layout


def _check_dims(path: Path, width: int, height: int, channels: int, dtype: np.dtype, n_slots: int) -> None:
    if width <= 0 or height <= 0:
        raise _err(path, f"image size {width}x{height} is empty")
    if width > MAX_SIDE_PX or height > MAX_SIDE_PX:
        raise _err(path, f"image size {width}x{height} px is implausible (limit {MAX_SIDE_PX} px per side)")
    if n_slots > MAX_FRAMES:
        raise _err(path, f"{n_slots} frames is implausible (limit {MAX_FRAMES})")
    frame_bytes = width * height * channels * dtype.itemsize
    if frame_bytes > MAX_FRAME_BYTES:
        raise _err(path, f"one frame would take {frame_bytes} bytes (limit {MAX_FRAME_BYTES})")


def _check_data_size(path: Path, layout: _Layout, warnings: list[str]) -> None:
    """Refuse a header that lies about the data size (before any allocation)."""
    expected = layout.n_slots * layout.frame_bytes
    if layout.compression is None:
        if layout.strides is None and layout.data_bytes < expected:
            raise _err(
                path,
                f"truncated data: header declares {layout.n_slots} frames of {layout.width}x{layout.height}x"
                f"{layout.channels} {layout.dtype.name} ({expected} bytes) but only {layout.data_bytes} bytes are present",
            )
        if layout.data_bytes > expected and layout.data_path != path:
            warnings.append(f"data file has {layout.data_bytes - expected} bytes more than the header declares; ignored")
    else:
        compressed = layout.compressed_size or layout.data_bytes
        if compressed <= 0:
            raise _err(path, "compressed data is empty")
        if expected > ZLIB_MAX_RATIO * compressed + 1024:
            raise _err(
                path,
                f"header declares {expected} bytes of pixels but {compressed} compressed bytes cannot hold that "
                f"(deflate expands at most ~1032:1)",
            )


# ---------------------------------------------------------------------------
# NRRD header
# ---------------------------------------------------------------------------
def read_nrrd_header(path: Path) -> tuple[list[str], int]:
    """Header lines (text) and the byte offset where the data starts."""
    buffer = bytearray()
    with path.open("rb") as fh:
        first = fh.read(8)
        if not first.startswith(b"NRRD000"):
            raise _err(path, "not a NRRD file (no NRRD000x magic line)")
        buffer += first
        blank = re.compile(rb"\r?\n\r?\n")
        search_from = 0
        while True:
            match = blank.search(buffer, search_from)
            search_from = max(0, len(buffer) - 4)
            if match:
                text = bytes(buffer[: match.start()]).decode("latin-1")
                return text.replace("\r\n", "\n").split("\n"), match.end()
            chunk = fh.read(1024 * 1024)
            if not chunk:
                break
            buffer += chunk
            if len(buffer) > MAX_HEADER_BYTES:
                raise _err(path, f"no end of NRRD header in the first {MAX_HEADER_BYTES // 2**20} MiB")
    raise _err(path, "NRRD header has no blank line before the data (truncated?)")


def parse_nrrd_header(lines: list[str], *, path: Path | str = "header") -> dict[str, Any]:
    """Parse NRRD header lines with pynrrd; any failure becomes :class:`CorruptDataError`."""
    import warnings as _warnings

    import nrrd

    path = Path(path)
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            return dict(nrrd.read_header([*lines, ""]))
    except IousguideError:
        raise
    except Exception as exc:  # pynrrd raises NRRDError, ValueError, IndexError... on bad headers
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _err(path, f"bad NRRD header: {message[:160]}") from None


def _nrrd_layout(path: Path, header: dict[str, Any], data_offset: int) -> tuple[_Layout, dict[str, Any]]:
    """Layout of a NRRD sequence; also returns {'list_axis', 'space_directions', 'axis_values'}."""
    notes: dict[str, Any] = {}
    try:
        sizes = [int(s) for s in np.asarray(header["sizes"]).ravel()]
        dimension = int(header.get("dimension", len(sizes)))
    except KeyError:
        raise _err(path, "NRRD header has no 'sizes'") from None
    except (TypeError, ValueError, OverflowError):
        raise _err(path, "NRRD 'sizes' is not a list of integers") from None
    if dimension != len(sizes) or not 2 <= dimension <= 5:
        raise UnsupportedFormatError(f"{path.name}: NRRD dimension {dimension} with {len(sizes)} sizes is not supported")
    if any(s <= 0 for s in sizes):
        raise _err(path, f"NRRD sizes {sizes} has a non-positive value")
    type_name = str(header.get("type", "")).strip().lower()
    if type_name not in NRRD_TYPES:
        raise UnsupportedFormatError(f"{path.name}: NRRD type {type_name[:30] or '(missing)'} is not supported")
    dtype = np.dtype(NRRD_TYPES[type_name])
    if dtype.itemsize > 1:
        endian = str(header.get("endian", "little")).strip().lower()
        if endian not in ("little", "big"):
            raise _err(path, f"NRRD endian {endian[:20]!r} is invalid")
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    kinds_raw = header.get("kinds")
    kinds = [str(k).strip().lower() for k in kinds_raw] if kinds_raw is not None else []
    if kinds and len(kinds) != dimension:
        raise _err(path, f"NRRD kinds has {len(kinds)} entries for dimension {dimension}")
    if not kinds:  # PLUS: treat the last axis as time
        kinds = ["domain"] * (dimension - 1) + ["list"] if dimension >= 3 else ["domain"] * dimension
    list_axes = [i for i, k in enumerate(kinds) if k in _LIST_KINDS]
    comp_axes = [i for i, k in enumerate(kinds) if k in _COMPONENT_KINDS or k.endswith("-color") or k.endswith("-vector")]
    space_axes = [i for i, k in enumerate(kinds) if i not in list_axes and i not in comp_axes]
    if len(list_axes) > 1 or len(comp_axes) > 1:
        raise UnsupportedFormatError(f"{path.name}: NRRD kinds {kinds} (more than one list/component axis)")
    # drop singleton spatial axes until two remain (Slicer stores 2-D frames as I J 1)
    while len(space_axes) > 2:
        singles = [a for a in space_axes if sizes[a] == 1]
        if not singles:
            raise UnsupportedFormatError(f"{path.name}: 3-D volumes per frame (sizes {sizes}) are not supported")
        space_axes.remove(singles[-1])
    if len(space_axes) != 2:
        raise UnsupportedFormatError(f"{path.name}: NRRD kinds {kinds} do not describe 2-D frames")
    channels = sizes[comp_axes[0]] if comp_axes else 1
    if channels not in (1, 3, 4):
        raise UnsupportedFormatError(f"{path.name}: {channels} components per pixel (supported: 1, 3, 4)")
    n_slots = sizes[list_axes[0]] if list_axes else 1
    width, height = sizes[space_axes[0]], sizes[space_axes[1]]
    _check_dims(path, width, height, channels, dtype, n_slots)
    # element strides: axis 0 varies fastest
    strides_by_axis, acc = [], 1
    for s in sizes:
        strides_by_axis.append(acc)
        acc *= s
    s_slot = strides_by_axis[list_axes[0]] if list_axes else 0
    s_col, s_row = strides_by_axis[space_axes[0]], strides_by_axis[space_axes[1]]
    s_ch = strides_by_axis[comp_axes[0]] if comp_axes else 0
    frame_elems = width * height * channels
    contiguous = (
        (not list_axes or s_slot == frame_elems)
        and s_row == width * channels
        and s_col == channels
        and (not comp_axes or s_ch == 1)
    )
    notes["list_axis"] = list_axes[0] if list_axes else None
    encoding = str(header.get("encoding", "raw")).strip().lower()
    if encoding in ("gz", "gzip"):
        compression = "gzip"
    elif encoding == "raw":
        compression = None
    else:
        raise UnsupportedFormatError(f"{path.name}: NRRD encoding {encoding[:20]!r} is not supported (raw, gzip)")
    data_path, offset = path, data_offset
    data_file = header.get("data file") or header.get("datafile")
    if data_file:
        data_file = str(data_file).strip()
        if data_file.upper().startswith("LIST") or " " in data_file:
            raise UnsupportedFormatError(f"{path.name}: multi-file NRRD data ({data_file[:60]!r}) is not supported")
        data_path = (path.parent / data_file).resolve()
        if not data_path.is_file():
            raise _err(path, f"NRRD data file {data_file!r} not found")
        offset = 0
    for key in ("line skip", "lineskip"):
        if key in header and int(header[key]) != 0:
            raise UnsupportedFormatError(f"{path.name}: NRRD 'line skip' is not supported")
    for key in ("byte skip", "byteskip"):
        if key in header:
            skip = int(header[key])
            if skip == -1 and compression is None:
                offset = max(0, data_path.stat().st_size - n_slots * frame_elems * dtype.itemsize)
            elif skip > 0:
                offset += skip
            elif skip < -1:
                raise _err(path, f"NRRD byte skip {skip} is invalid")
    available = data_path.stat().st_size - offset
    if available < 0:
        raise _err(path, "data starts beyond the end of the file")
    layout = _Layout(width, height, channels, dtype, n_slots, data_path, offset, available, compression,
                     compressed_size=available if compression else None,
                     strides=None if contiguous else (s_slot, s_row, s_col, s_ch))
    if not contiguous and compression is None and available < acc * dtype.itemsize:
        raise _err(path, f"truncated data: {acc * dtype.itemsize} bytes declared, {available} present")
    if not contiguous and compression is not None and acc * dtype.itemsize > INTERLEAVED_GZIP_LIMIT_BYTES:
        raise UnsupportedFormatError(
            f"{path.name}: gzip NRRD with the list axis first ({acc * dtype.itemsize} bytes) would have to be "
            f"decoded whole; limit {INTERLEAVED_GZIP_LIMIT_BYTES // 2**20} MiB"
        )
    directions = header.get("space directions")
    if directions is not None:
        try:
            rows = [None if (np.asarray(r).dtype == object or np.isnan(np.asarray(r, float)).all())
                    else [float(v) for v in np.asarray(r, float).ravel()] for r in directions]
            notes["space_directions"] = rows
        except (TypeError, ValueError):
            notes["space_directions"] = str(directions)[:200]
    if list_axes:
        values = header.get(f"axis {list_axes[0]} index values")
        if values is not None:
            notes["axis_values"] = str(values)
            notes["axis_type"] = str(header.get(f"axis {list_axes[0]} index type", "")).strip().lower()
    return layout, notes


# ---------------------------------------------------------------------------
# pixel readers
# ---------------------------------------------------------------------------
class _RawReader:
    """Contiguous uncompressed frames: one ``os.pread`` per frame."""

    def __init__(self, layout: _Layout) -> None:
        self.layout = layout
        self._fd = os.open(layout.data_path, os.O_RDONLY)

    def read(self, slot: int) -> bytes:
        size = self.layout.frame_bytes
        offset = self.layout.data_offset + slot * size
        data = os.pread(self._fd, size, offset)
        if len(data) != size:
            raise CorruptDataError(
                f"{self.layout.data_path.name}: truncated data at frame slot {slot} ({len(data)} of {size} bytes)"
            )
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _StridedReader:
    """Interleaved frames (NRRD list axis not last): memory map (raw) or whole decode (gzip, bounded)."""

    def __init__(self, layout: _Layout) -> None:
        self.layout = layout
        total_elems = int(np.prod([layout.n_slots, layout.frame_elems]))
        if layout.compression is None:
            self._array = np.memmap(layout.data_path, dtype=layout.dtype, mode="r", offset=layout.data_offset,
                                    shape=(total_elems,))
        else:
            stream = _ZlibStream(layout, total_bytes=total_elems * layout.dtype.itemsize)
            self._array = np.frombuffer(stream.read_range(0, total_elems * layout.dtype.itemsize), dtype=layout.dtype)
            stream.close()

    def read_array(self, slot: int) -> np.ndarray:
        s_slot, s_row, s_col, s_ch = self.layout.strides
        item = self.layout.dtype.itemsize
        base = self._array[slot * s_slot:]
        view = np.lib.stride_tricks.as_strided(
            base,
            shape=(self.layout.height, self.layout.width, self.layout.channels),
            strides=(s_row * item, s_col * item, max(s_ch, 1) * item),
            writeable=False,
        )
        return np.array(view)

    def close(self) -> None:
        self._array = None


class _ZlibStream:
    """Sequential zlib/gzip decoding with checkpoints for cheap backward seeks.

    A checkpoint is ``(decompressobj.copy(), input offset)`` taken at multiples of
    ``checkpoint_every`` output bytes. Memory: the decoder state plus at most
    :data:`MAX_CHECKPOINTS` decoder copies (about 70 KB each with their unread
    input), independent of the recording length.
    """

    def __init__(self, layout: _Layout, *, total_bytes: int) -> None:
        self.layout = layout
        self.total_bytes = total_bytes
        self._fh = layout.data_path.open("rb")
        self._end = layout.data_offset + (layout.compressed_size or layout.data_bytes)
        self._wbits = zlib.MAX_WBITS | 32  # zlib or gzip header, auto-detected
        frame_bytes = max(layout.frame_bytes, 1)
        interval = max(CHECKPOINT_MIN_BYTES, -(-total_bytes // MAX_CHECKPOINTS))
        self.checkpoint_every = max(1, interval // frame_bytes) * frame_bytes
        self._d = zlib.decompressobj(self._wbits)
        self._in_pos = layout.data_offset
        self._tail = b""
        self._out_pos = 0
        self._checkpoints: dict[int, tuple[Any, int]] = {0: (self._d.copy(), self._in_pos)}

    def _restore(self, out_pos: int) -> None:
        decoder, in_pos = self._checkpoints[out_pos]
        self._d = decoder.copy()
        self._in_pos = in_pos
        self._tail = b""
        self._out_pos = out_pos

    def _fail(self, message: str) -> CorruptDataError:
        return CorruptDataError(f"{self.layout.data_path.name}: {message}")

    def _truncated(self) -> CorruptDataError:
        return self._fail(
            f"truncated compressed data: the stream ends after {self._out_pos} of {self.total_bytes} bytes"
        )

    def _produce(self, n: int, out: bytearray | None) -> None:
        """Decode the next ``n`` bytes, appended to ``out`` (discarded when None)."""
        remaining = n
        while remaining > 0:
            if not self._tail:
                if self._in_pos >= self._end:
                    raise self._truncated()
                self._fh.seek(self._in_pos)
                self._tail = self._fh.read(min(READ_CHUNK_BYTES, self._end - self._in_pos))
                if not self._tail:
                    raise self._truncated()
                self._in_pos += len(self._tail)
            before = len(self._tail)
            try:
                chunk = self._d.decompress(self._tail, min(remaining, 4 * 1024 * 1024))
            except zlib.error as exc:
                raise self._fail(f"corrupt compressed data ({exc})") from None
            self._tail = self._d.unconsumed_tail
            if out is not None:
                out += chunk
            remaining -= len(chunk)
            self._out_pos += len(chunk)
            if self._d.eof and remaining > 0:
                unused = self._d.unused_data
                if unused[:2] == b"\x1f\x8b":  # another gzip member follows
                    self._d = zlib.decompressobj(self._wbits)
                    self._tail = unused + self._tail
                else:
                    raise self._truncated()
            elif not chunk and self._tail and len(self._tail) == before:
                raise self._fail("corrupt compressed data (decoder made no progress)")

    def _advance(self, target: int, out: bytearray | None) -> None:
        every = self.checkpoint_every
        while self._out_pos < target:
            boundary = (self._out_pos // every + 1) * every
            self._produce(min(target, boundary) - self._out_pos, out)
            if self._out_pos % every == 0 and self._out_pos not in self._checkpoints:
                self._checkpoints[self._out_pos] = (self._d.copy(), self._in_pos - len(self._tail))

    def read_range(self, start: int, n: int) -> bytes:
        """Decoded bytes ``[start, start + n)`` of the stream."""
        best = max(p for p in self._checkpoints if p <= start)
        if start < self._out_pos or best > self._out_pos:
            self._restore(best)
        self._advance(start, None)
        out = bytearray()
        self._advance(start + n, out)
        return bytes(out)

    def verify(self) -> int:
        """Decode the whole stream once (keeping checkpoints); returns surplus bytes found (capped)."""
        if self._out_pos > 0:
            self._restore(0)
        self._advance(self.total_bytes, None)
        surplus = 0
        try:
            while not self._d.eof and surplus < 1024 * 1024:
                if not self._tail:
                    if self._in_pos >= self._end:
                        break
                    self._fh.seek(self._in_pos)
                    self._tail = self._fh.read(min(READ_CHUNK_BYTES, self._end - self._in_pos))
                    self._in_pos += len(self._tail)
                chunk = self._d.decompress(self._tail, 1024 * 1024)
                self._tail = self._d.unconsumed_tail
                if not chunk and not self._tail and self._in_pos >= self._end:
                    break
                surplus += len(chunk)
        except zlib.error:
            pass
        self._restore(0)
        return surplus

    def close(self) -> None:
        self._fh.close()
        self._checkpoints.clear()


class _ZlibReader:
    def __init__(self, layout: _Layout) -> None:
        self.layout = layout
        self._stream = _ZlibStream(layout, total_bytes=layout.n_slots * layout.frame_bytes)

    def read(self, slot: int) -> bytes:
        size = self.layout.frame_bytes
        return self._stream.read_range(slot * size, size)

    def close(self) -> None:
        self._stream.close()


# ---------------------------------------------------------------------------
# orientation and pixel conversion
# ---------------------------------------------------------------------------
def parse_orientation(text: str | None) -> tuple[str, bool]:
    """Normalise ``UltrasoundImageOrientation`` to two letters; returns (letters, known)."""
    if not text:
        return "MF", False
    letters = text.strip().upper()[:2]
    if len(letters) == 2 and (
        (letters[0] in "MU" and letters[1] in "FN") or (letters[0] in "FN" and letters[1] in "MU")
    ):
        return letters, True
    return "MF", False


def to_mf(pixels: np.ndarray, orientation: str) -> np.ndarray:
    """Convert an image stored in ``orientation`` (e.g. ``"UN"``) to MF.

    Parameters
    ----------
    pixels : ndarray, shape (rows, cols) or (rows, cols, channels)
        Image as stored in the file. Not modified.
    orientation : str
        Two letters: +x direction (M/U, or F/N when transposed), then +y.

    Returns
    -------
    ndarray
        A view (or transposed view) of ``pixels`` in MF orientation.
    """
    first, second = orientation[0], orientation[1]
    if first in "FN":  # transposed: +x runs along depth
        pixels = pixels.swapaxes(0, 1)
        first, second = second, first
    if first == "U":
        pixels = pixels[:, ::-1]
    if second == "N":
        pixels = pixels[::-1]
    return pixels


def from_mf(pixels: np.ndarray, orientation: str) -> np.ndarray:
    """Inverse of :func:`to_mf` for the non-transposed orientations MF, MN, UF, UN."""
    if orientation[0] not in "MU" or orientation[1] not in "FN":
        raise ValueError(f"orientation {orientation!r} is not one of MF, MN, UF, UN")
    return to_mf(pixels, orientation)  # mirroring is its own inverse


def _spacing_from_transform(text: str) -> tuple[float, float, float, float] | None:
    """(sx, sy, ox_px, oy_px) from a 16-number ImageToTransducerTransform, or None.

    sx, sy are the norms of the first two columns of the rotation-scale part (mm/px);
    the origin follows from the translation ``-o * s``.
    """
    values = _floats(text)
    if values is None or len(values) != 16 or not all(math.isfinite(v) for v in values):
        return None
    sx = math.sqrt(values[0] ** 2 + values[4] ** 2 + values[8] ** 2)
    sy = math.sqrt(values[1] ** 2 + values[5] ** 2 + values[9] ** 2)
    if not (sx > 0 and sy > 0):
        return None
    return sx, sy, -values[3] / sx, -values[7] / sy


# ---------------------------------------------------------------------------
# the source
# ---------------------------------------------------------------------------
class SequenceSource(IndexedSource):
    """A PLUS / Slicer sequence as a random-access recording (see module docstring)."""

    format_name = "plus_mha"

    def __init__(
        self,
        path: Path,
        *,
        layout: _Layout,
        frames: dict[int, dict[str, str]],
        format_name: str,
        warnings: list[str],
        extra: dict[str, Any],
        axis_times: list[float] | None = None,
        plain: bool = False,
    ) -> None:
        super().__init__(str(path))
        self.format_name = format_name
        self.warnings.extend(warnings)
        self._layout = layout
        self._extra = extra
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._reader: Any = None
        self._scale: tuple[float, float] | None = None
        path_name = path.name

        n = layout.n_slots
        out_of_range = sorted(i for i in frames if i >= n)
        if out_of_range:
            self.warnings.append(
                f"header has fields for frame index {out_of_range[0]:04d}"
                + (f" and {len(out_of_range) - 1} more" if len(out_of_range) > 1 else "")
                + f" beyond the {n} frames in DimSize/sizes; ignored"
            )
        slots: list[int] = []
        missing: list[int] = []
        invalid: list[int] = []
        for slot in range(n):
            fields = frames.get(slot)
            if fields is None:
                if plain:
                    slots.append(slot)
                else:
                    missing.append(slot)
                continue
            status = fields.get("ImageStatus", fields.get("Status", "OK"))
            if status.strip().upper() != "OK":
                invalid.append(slot)
                continue
            slots.append(slot)
        if missing:
            self.warnings.append(
                f"frame index {_list_indices(missing)} missing from the header (no timestamp or status); skipped"
            )
        if invalid:
            self.warnings.append(f"{len(invalid)} frame(s) with image status INVALID skipped: {_list_indices(invalid)}")
        if not slots:
            raise CorruptDataError(
                f"{path_name}: holds no frames with valid images ({n} in the data, {len(invalid)} INVALID, "
                f"{len(missing)} without header fields)"
            )
        self._slots = np.asarray(slots, dtype=np.int64)
        self._frames = {s: frames.get(s, {}) for s in slots}
        self._extra.update(invalid_frames=len(invalid), missing_frame_indices=missing[:50],
                           slots_in_data=n)

        # --- times ---------------------------------------------------------
        stamps = np.full(len(slots), np.nan)
        bad_stamps = 0
        for i, slot in enumerate(slots):
            text = self._frames[slot].get("Timestamp")
            if text is None:
                continue
            try:
                value = float(text)
            except ValueError:
                bad_stamps += 1
                continue
            if math.isfinite(value):
                stamps[i] = value
            else:
                bad_stamps += 1
        if np.isnan(stamps).all() and axis_times is not None and len(axis_times) == n:
            stamps = np.asarray([axis_times[s] for s in slots], dtype=float)
            self._extra["times_from"] = "slicer_axis_index_values"
        known = ~np.isnan(stamps)
        self._has_times = bool(known.any())
        self._t_source = stamps.copy()
        if not known.any():
            self._times = self._slots.astype(float) / NO_TIMESTAMP_FPS
            self.warnings.append(
                f"no per-frame timestamps; replay paced at {NO_TIMESTAMP_FPS:g} frames/s and the rate is reported unknown"
            )
        else:
            times = stamps.copy()
            if not known.all():
                times[~known] = np.interp(self._slots[~known], self._slots[known], stamps[known])
                self.warnings.append(
                    f"{int((~known).sum())} frame(s) without a valid Timestamp; times interpolated from neighbours"
                )
            if len(times) > 1 and np.any(np.diff(times) < 0):
                self.warnings.append("timestamps go backwards in places; replay times made non-decreasing")
                times = np.maximum.accumulate(times)
            self._times = times
        if bad_stamps:
            self._extra["unparseable_timestamps"] = bad_stamps

        # --- calibration from ImageToTransducerTransform --------------------
        spacings = []
        for slot in slots:
            fields = self._frames[slot]
            text = fields.get("ImageToTransducerTransform")
            if text is None:
                continue
            if fields.get("ImageToTransducerTransformStatus", "OK").strip().upper() != "OK":
                continue
            parsed = _spacing_from_transform(text)
            if parsed is not None:
                spacings.append(parsed)
        if spacings:
            sx, sy, ox, oy = spacings[0]
            if not plausible_spacing_mm(sx, sy):
                self.warnings.append(
                    f"ImageToTransducerTransform gives {sx:.4g} x {sy:.4g} mm/px, implausible for ultrasound; not used"
                )
            else:
                self.metadata_calibration = Calibration(spacing_mm=(sx, sy), source="plus_transform",
                                                        name="ImageToTransducerTransform")
                self._extra["transducer_origin_px"] = [round(ox, 3), round(oy, 3)]
                others = np.asarray([(s[0], s[1]) for s in spacings])
                if np.any(np.abs(others - (sx, sy)) > 1e-6 * max(sx, sy)):
                    self.warnings.append(
                        "ImageToTransducerTransform spacing changes during the recording (depth changed?); "
                        "the first frame's spacing is used for all frames"
                    )
        if self.metadata_calibration is None and any("ImageToTransducerTransform" in f for f in self._frames.values()):
            self.warnings.append("ImageToTransducerTransform present but not usable (INVALID or malformed); uncalibrated")

        # --- pixel reader ----------------------------------------------------
        if layout.strides is not None:
            self._reader = _StridedReader(layout)
        elif layout.compression is None:
            self._reader = _RawReader(layout)
        else:
            self._reader = _ZlibReader(layout)
            total = layout.n_slots * layout.frame_bytes
            if total <= VERIFY_AT_OPEN_BYTES:
                try:
                    surplus = self._reader._stream.verify()
                except CorruptDataError:
                    self._reader.close()
                    raise
                if surplus:
                    self.warnings.append(f"compressed stream holds {surplus}+ bytes more than the header declares; ignored")
            else:
                self._extra["verified_at_open"] = False

    # -- IndexedSource ------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slots)

    @property
    def frame_times_s(self) -> np.ndarray:
        return self._times

    @property
    def nominal_fps(self) -> float | None:
        return super().nominal_fps if self._has_times else None

    @property
    def duration_s(self) -> float | None:
        return super().duration_s if self._has_times else None

    @property
    def variable_rate(self) -> bool:
        return super().variable_rate if self._has_times else False

    def _pixels(self, slot: int) -> np.ndarray:
        cached = self._cache.get(slot)
        if cached is not None:
            self._cache.move_to_end(slot)
            return cached
        layout = self._layout
        with self._lock:
            if self._reader is None:
                from iousguide.errors import SourceClosedError

                raise SourceClosedError(f"source {self.source_id} is closed")
            if isinstance(self._reader, _StridedReader):
                array = self._reader.read_array(slot)
            else:
                data = self._reader.read(slot)
                array = np.frombuffer(data, dtype=layout.dtype).reshape(layout.height, layout.width, layout.channels)
        array = self._to_uint8(array)
        if layout.channels == 1:
            array = array[:, :, 0]
        elif layout.channels == 4:
            array = array[:, :, :3]
        orientation = self._extra.get("orientation_in_file", "MF")
        array = np.ascontiguousarray(to_mf(array, orientation))
        array.flags.writeable = False
        if layout.compression is not None or layout.strides is not None:
            self._cache[slot] = array
            while len(self._cache) > CACHE_MAX_FRAMES or (
                len(self._cache) > 1 and len(self._cache) * array.nbytes > CACHE_MAX_BYTES
            ):
                self._cache.popitem(last=False)
        return array

    def _to_uint8(self, array: np.ndarray) -> np.ndarray:
        if array.dtype == np.uint8:
            return array
        data = array.astype(np.float64)
        if self._scale is None:
            finite = data[np.isfinite(data)]
            low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            self._scale = (low, 255.0 / (high - low) if high > low else 0.0)
            self.warnings.append(
                f"{self._layout.dtype.name} pixels scaled to 0-255 with the first frame's range "
                f"[{low:g}, {high:g}] (fixed for the whole file; values outside are clipped)"
            )
        low, scale = self._scale
        data = np.nan_to_num(data, nan=low)
        return np.clip(np.rint((data - low) * scale), 0, 255).astype(np.uint8)

    def _load(self, index: int) -> Frame:
        slot = int(self._slots[index])
        pixels = self._pixels(slot)
        fields = self._frames[slot]
        extra: dict[str, Any] = {"plus_frame_index": slot, "image_status": "OK"}
        number = fields.get("FrameNumber")
        if number is not None:
            try:
                extra["frame_number"] = int(float(number))
            except (ValueError, OverflowError):  # not a number, or inf: no frame number rather than a crash
                pass
        if "UnfilteredTimestamp" in fields:
            try:
                extra["t_unfiltered_s"] = float(fields["UnfilteredTimestamp"])
            except ValueError:
                pass
        transforms = {}
        for name, value in fields.items():
            if name.endswith("Transform") and fields.get(name + "Status", "OK").strip().upper() == "OK":
                numbers = _floats(value)
                if numbers is not None and len(numbers) == 16:
                    transforms[name] = tuple(numbers)
        if transforms:
            extra["transforms"] = transforms
        t_source = float(self._t_source[index]) if not math.isnan(self._t_source[index]) else None
        if t_source is None and self._has_times:
            t_source = float(self._times[index])
        return Frame(
            pixels=pixels,
            index=index,
            t_mono_ns=monotonic_ns(),
            t_source_s=t_source,
            source_id=self.source_id,
            extra=extra,
        )

    def info(self) -> SourceInfo:
        info = super().info()
        info.warnings = list(self.warnings)
        info.extra.update(self._extra)
        info.extra["compression"] = self._layout.compression or "none"
        info.extra["element_type"] = self._layout.dtype.name
        return info

    def close(self) -> None:
        if self._reader is not None:
            with self._lock:
                self._reader.close()
                self._reader = None
        self._cache.clear()
        super().close()


def _list_indices(indices: list[int], limit: int = 10) -> str:
    text = ", ".join(f"{i:04d}" for i in indices[:limit])
    return text + (f" ... ({len(indices)} in all)" if len(indices) > limit else "")


# ---------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------
def open_sequence(path: str | Path) -> SequenceSource:
    """Open a PLUS/Slicer sequence file (or an unfinished recording folder).

    Parameters
    ----------
    path : str or Path
        ``.igs.mha``, ``.mha``, ``.mhd`` (data in ``ElementDataFile``), ``.igs.nrrd``,
        ``.seq.nrrd``, or a recording's ``<name>.partial`` folder / its ``journal.mhd``.

    Returns
    -------
    SequenceSource
        ``format_name`` is ``"plus_mha"``, ``"plus_nrrd"`` or ``"slicer_seq_nrrd"``.

    Raises
    ------
    UnsupportedFormatError
        Not a sequence file, or a variant not supported (named in the message).
    CorruptDataError
        Header and data disagree, truncated or corrupt data, absurd sizes.
    """
    path = Path(path)
    if path.is_dir():
        journal = path / JOURNAL_HEADER
        if journal.is_file():
            return _open_metaio(journal)
        raise UnsupportedFormatError(f"{path}: folder is not an unfinished recording (no {JOURNAL_HEADER})")
    if not path.is_file():
        raise UnsupportedFormatError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise UnsupportedFormatError(f"{path} is empty (0 bytes)")
    suffix = path.suffix.lower()
    try:
        if suffix in (".mha", ".mhd"):
            return _open_metaio(path)
        if suffix == ".nrrd":
            return _open_nrrd(path)
    except OSError as exc:
        raise CorruptDataError(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    except MemoryError:
        raise CorruptDataError(f"{path.name}: not enough memory to read it") from None
    raise UnsupportedFormatError(f"{path.name}: not a sequence file (.igs.mha .mha .mhd .igs.nrrd .seq.nrrd)")


def _open_metaio(path: Path) -> SequenceSource:
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(b"NRRD000"):
        raise UnsupportedFormatError(f"{path.name}: this is a NRRD file with a MetaIO extension; rename it to .nrrd")
    header_bytes, data_offset = read_metaio_header(path)
    header = parse_metaio_header(header_bytes, path=path)
    warnings = list(header.warnings)
    journal_log = header.fields.get(JOURNAL_LOG_KEY)
    if journal_log is not None:
        return _open_journal(path, header, journal_log)
    layout = _metaio_layout(path, header, data_offset)
    _check_data_size(path, layout, warnings)
    return _make_source(path, layout, header.fields, header.frames, "plus_mha", warnings, {})


def _make_source(path: Path, layout: _Layout, fields: dict[str, str], frames: dict[int, dict[str, str]],
                 format_name: str, warnings: list[str], extra: dict[str, Any],
                 axis_times: list[float] | None = None) -> SequenceSource:
    orientation_text = fields.get("UltrasoundImageOrientation", fields.get("ultrasound image orientation"))
    orientation, known = parse_orientation(orientation_text)
    if orientation_text is None:
        warnings.append("no UltrasoundImageOrientation in the header; assumed MF")
    elif not known:
        warnings.append(f"UltrasoundImageOrientation {orientation_text[:10]!r} not understood; assumed MF")
    extra["orientation_in_file"] = orientation
    image_type = fields.get("UltrasoundImageType", fields.get("ultrasound image type"))
    if image_type:
        extra["image_type"] = image_type
        if image_type.strip().upper() not in ("BRIGHTNESS", "RGB_COLOR"):
            warnings.append(f"UltrasoundImageType {image_type[:20]} is not B-mode; shown as an image anyway")
    spacing_text = fields.get("ElementSpacing")
    if spacing_text is not None:
        values = _floats(spacing_text)
        extra["element_spacing"] = values if values is not None else spacing_text[:80]
        if values is None or any(abs(v - 1.0) > 1e-9 for v in values):
            warnings.append(
                f"ElementSpacing = {spacing_text[:60]} is not used as mm/px (PLUS ignores it; "
                "pass --spacing-mm or a calibration preset if it is right)"
            )
    if layout.data_path != path:
        extra["data_file"] = layout.data_path.name
    plain = not frames
    if plain and format_name == "plus_mha":
        warnings.append("no per-frame Seq_Frame fields (plain MetaIO image, not a PLUS sequence)")
    return SequenceSource(path, layout=layout, frames=frames, format_name=format_name,
                          warnings=warnings, extra=extra, axis_times=axis_times, plain=plain)


def _open_nrrd(path: Path) -> SequenceSource:
    lines, data_offset = read_nrrd_header(path)
    header = parse_nrrd_header(lines, path=path)
    layout, notes = _nrrd_layout(path, header, data_offset)
    warnings: list[str] = []
    if layout.strides is None:
        _check_data_size(path, layout, warnings)
    elif layout.compression is not None:
        _check_data_size(path, layout, warnings)
    frames: dict[int, dict[str, str]] = {}
    fields: dict[str, str] = {}
    for key, value in header.items():
        match = _FRAME_FIELD.match(str(key))
        if match:
            frames.setdefault(int(match.group(1)), {})[match.group(2)] = str(value).strip()
        elif isinstance(value, str):
            fields[str(key)] = value.strip()
    axis_times = None
    slicer = "axis_values" in notes or "DataNodeClassName" in fields or path.name.lower().endswith(".seq.nrrd")
    if "axis_values" in notes and notes.get("axis_type", "numeric") in ("numeric", ""):
        values = _floats(notes["axis_values"])
        if values is not None and len(values) == layout.n_slots:
            axis_times = values
        else:
            warnings.append("Slicer 'index values' do not match the number of frames; ignored")
    extra: dict[str, Any] = {}
    directions = notes.get("space_directions")
    if directions is not None:
        extra["space_directions"] = directions
        flat = [v for row in directions if isinstance(row, list) for v in row] if isinstance(directions, list) else []
        norms = [float(np.linalg.norm(row)) for row in directions if isinstance(row, list)] if isinstance(directions, list) else []
        if not flat or any(abs(n - 1.0) > 1e-9 for n in norms):
            warnings.append(
                "NRRD 'space directions' are not used as mm/px (only an ImageToTransducerTransform is trusted; "
                "pass --spacing-mm or a calibration preset)"
            )
    if notes.get("list_axis") not in (None, len(np.asarray(header["sizes"]).ravel()) - 1):
        extra["list_axis_first"] = True
    format_name = "slicer_seq_nrrd" if slicer and not frames else "plus_nrrd"
    return _make_source(path, layout, fields, frames, format_name, warnings, extra, axis_times=axis_times)


# ---------------------------------------------------------------------------
# unfinished recordings (written by plus_writer.SequenceWriter)
# ---------------------------------------------------------------------------
def read_journal_frames(log_path: Path, *, frame_bytes: int, data_bytes: int) -> tuple[dict[int, dict[str, str]], int]:
    """Committed per-frame fields of an unfinished recording.

    A frame counts when its block of ``Seq_FrameNNNN_...`` lines ends with its
    ``Seq_FrameNNNN_Committed`` line (written after its pixels) and its pixels are
    fully present in the data file. Returns (frames, torn_bytes_ignored).
    """
    frames: dict[int, dict[str, str]] = {}
    pending: dict[int, dict[str, str]] = {}
    try:
        text = log_path.read_bytes().decode("latin-1")
    except FileNotFoundError:
        text = ""
    complete = text[: text.rfind("\n") + 1]
    expected = 0
    for line in complete.split("\n"):
        if not line.strip() or "=" not in line:
            continue
        key, value = line.split("=", 1)
        match = _FRAME_FIELD.match(key.strip())
        if not match:
            break
        index, name = int(match.group(1)), match.group(2)
        if index != expected:
            break
        if name == JOURNAL_COMMIT_FIELD:
            if (index + 1) * frame_bytes > data_bytes:
                break
            frames[index] = pending.pop(index, {})
            expected += 1
        else:
            pending.setdefault(index, {})[name] = value.strip()
    torn = max(0, data_bytes - len(frames) * frame_bytes)
    return frames, torn


def _open_journal(path: Path, header: _Header, log_name: str) -> SequenceSource:
    folder = path.parent
    fields = dict(header.fields)
    # the journal header declares 0 frames; the count comes from the log
    dims = _ints(fields.get("DimSize", ""), path, "DimSize")
    if len(dims) != 3:
        raise _err(path, "recording journal has no 'DimSize = W H 0'")
    fields["DimSize"] = f"{dims[0]} {dims[1]} 1"
    layout = _metaio_layout(path, _Header(fields, {}), 0)
    frames, torn = read_journal_frames(folder / log_name, frame_bytes=layout.frame_bytes, data_bytes=layout.data_bytes)
    if not frames:
        raise CorruptDataError(f"{folder.name}: unfinished recording holds no complete frame")
    layout.n_slots = len(frames)
    warnings = [
        f"unfinished recording (the writer did not close it): {len(frames)} complete frame(s) recovered"
        + (f", {torn} trailing bytes of a torn frame ignored" if torn else "")
    ]
    extra = {"unfinished_recording": True, "torn_bytes_ignored": torn}
    return _make_source(path, layout, fields, frames, "plus_mha", warnings, extra)
