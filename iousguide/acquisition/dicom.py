"""DICOM ultrasound (single and multi-frame) as a random-access recording.

Frames are decoded one at a time from the open file with
``pydicom.pixels.pixel_array(file, index=i)``, so a long cine is never held
whole in memory; a few decoded frames are cached because scrubbing back and
forth in a compressed cine would otherwise decode the same frame again.

Colour handling (the output is always uint8 grey or uint8 RGB):

* MONOCHROME2 as is; MONOCHROME1 is inverted (bright = echogenic, as displayed);
* RGB as is; YBR_FULL / YBR_FULL_422 -> RGB with ``pydicom.pixels.convert_color_space``;
  YBR_RCT / YBR_ICT (JPEG 2000) come out of the decoder as RGB already;
* PALETTE COLOR -> RGB through ``pydicom.pixels.apply_color_lut`` (the LUT is
  evaluated once for every stored value, then indexed per frame);
* more than 8 bits stored: scaled to 0-255 over the file's VOI window when it
  has one, else over the full stored bit range (the same mapping for every
  frame, never min-max per frame), and a warning says so.

Calibration comes from the Sequence of Ultrasound Regions (see
:func:`regions_calibration`); timing from ``FrameTime``, ``FrameTimeVector`` or
``CineRate``.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iousguide.acquisition.base import IndexedSource, SourceInfo, monotonic_ns
from iousguide.calibration import Calibration
from iousguide.errors import (
    CalibrationError,
    CorruptDataError,
    IousguideError,
    SourceError,
    UnsupportedFormatError,
)
from iousguide.frames import Frame

#: frame rate assumed for a multi-frame file without any timing attribute
DEFAULT_DICOM_FPS = 30.0
#: decoded frames kept in memory (per source)
CACHE_FRAMES = 4
#: refuse frames larger than this before allocating (a lying header must not exhaust memory)
MAX_FRAME_BYTES = 512 * 1024 * 1024

#: pixel-data plugins in order of preference. GDCM comes last: fuzzing showed it
#: segfaults/aborts on corrupt JPEG data (a crash, not an error), while Pillow and
#: pylibjpeg raise. Pillow also decodes JPEG baseline fastest (measured 5.0 ms vs
#: 6.9 pylibjpeg and 10.7 GDCM for a 640x480 colour frame; Pillow = GDCM pixels).
PLUGIN_PREFERENCE = ("pillow", "pylibjpeg", "pydicom", "pyjpegls", "gdcm")
_CM_UNITS = 3
_SPATIAL_FORMATS = {0: "none", 1: "2D", 2: "M-mode", 3: "spectral", 4: "waveform", 5: "graphics"}
_DATA_TYPES = {
    0: "none",
    1: "tissue",
    2: "colour flow",
    3: "PW spectral Doppler",
    4: "CW spectral Doppler",
    5: "Doppler mean trace",
    6: "Doppler mode trace",
    7: "Doppler max trace",
    8: "volume trace",
    10: "ECG trace",
    11: "pulse trace",
    12: "phonocardiogram trace",
    13: "grey bar",
    14: "colour bar",
    15: "integrated backscatter",
    16: "area trace",
    17: "d(area)/dt",
    18: "other physiological input",
}


@dataclass(frozen=True)
class UltrasoundRegion:
    """One item of the Sequence of Ultrasound Regions (0018,6011).

    Bounds are the DICOM inclusive pixel bounds; ``physical_delta_x``/``physical_delta_y`` are in
    the region's physical units (``units_x``/``units_y``, 3 = cm).
    """

    number: int
    spatial_format: int
    data_type: int
    min_x0: int
    min_y0: int
    max_x1: int
    max_y1: int
    units_x: int
    units_y: int
    physical_delta_x: float
    physical_delta_y: float

    @property
    def is_spatial(self) -> bool:
        """Both axes in cm with positive spacing (only then does a pixel measure length)."""
        return (
            self.units_x == _CM_UNITS
            and self.units_y == _CM_UNITS
            and self.physical_delta_x > 0
            and self.physical_delta_y > 0
            and np.isfinite(self.physical_delta_x)
            and np.isfinite(self.physical_delta_y)
        )

    @property
    def area_px(self) -> int:
        return max(self.max_x1 - self.min_x0 + 1, 0) * max(self.max_y1 - self.min_y0 + 1, 0)

    def describe(self) -> str:
        kind = _DATA_TYPES.get(self.data_type, f"type {self.data_type}")
        fmt = _SPATIAL_FORMATS.get(self.spatial_format, f"format {self.spatial_format}")
        return (
            f"region {self.number} ({kind}, {fmt}, x {self.min_x0}..{self.max_x1}, "
            f"y {self.min_y0}..{self.max_y1})"
        )


def read_regions(ds: Any) -> list[UltrasoundRegion]:
    """Parse the Sequence of Ultrasound Regions of a pydicom dataset.

    Items with missing or non-numeric bounds are skipped (they cannot be used).
    """
    regions: list[UltrasoundRegion] = []
    try:
        items = list(ds.get("SequenceOfUltrasoundRegions", None) or [])
    except Exception:
        return regions
    for number, item in enumerate(items):
        try:
            regions.append(
                UltrasoundRegion(
                    number=number,
                    spatial_format=int(item.get("RegionSpatialFormat", 0) or 0),
                    data_type=int(item.get("RegionDataType", 0) or 0),
                    min_x0=int(item.RegionLocationMinX0),
                    min_y0=int(item.RegionLocationMinY0),
                    max_x1=int(item.RegionLocationMaxX1),
                    max_y1=int(item.RegionLocationMaxY1),
                    units_x=int(item.get("PhysicalUnitsXDirection", 0) or 0),
                    units_y=int(item.get("PhysicalUnitsYDirection", 0) or 0),
                    physical_delta_x=float(item.get("PhysicalDeltaX", 0.0) or 0.0),
                    physical_delta_y=float(item.get("PhysicalDeltaY", 0.0) or 0.0),
                )
            )
        except Exception:
            continue
    return regions


def regions_calibration(
    regions: list[UltrasoundRegion], *, rows: int, columns: int
) -> tuple[Calibration | None, list[str]]:
    """Choose the spatial tissue region and turn it into a calibration.

    Parameters
    ----------
    regions : list of UltrasoundRegion
        From :func:`read_regions`.
    rows, columns : int
        Size of the stored image in pixels; regions must fit it.

    Returns
    -------
    calibration : Calibration or None
        Crop = the region's inclusive bounds as (x, y, width, height) in pixels,
        spacing = PhysicalDelta (cm/px) x 10 in mm/px, ``source="dicom_regions"``;
        None when no usable spatial region exists (uncalibrated).
    warnings : list of str
        One line per region that was not used and why.

    Notes
    -----
    Ranking: tissue (data type 1) in 2D format > tissue in another format >
    other spatial data (e.g. colour flow); within a rank the largest area wins.
    A region whose max bound equals the image size (one past the last pixel,
    an exclusive bound written by some scanners) is clipped by one pixel with a
    warning; a region exceeding the image by more is ignored (stored pixels
    were resampled after the regions were written, so the spacing is wrong).
    """
    warnings: list[str] = []
    usable: list[tuple[UltrasoundRegion, tuple[int, int, int, int]]] = []
    for region in regions:
        if not region.is_spatial:
            warnings.append(f"{region.describe()} is not spatial (units not cm): not used for calibration")
            continue
        x0, y0, x1, y1 = region.min_x0, region.min_y0, region.max_x1, region.max_y1
        if x0 < 0 or y0 < 0 or x1 < x0 or y1 < y0 or x0 >= columns or y0 >= rows or x1 > columns or y1 > rows:
            warnings.append(
                f"{region.describe()} does not fit the stored {columns}x{rows} image: ignored "
                "(the pixels were probably resampled after the regions were written)"
            )
            continue
        if x1 == columns or y1 == rows:
            warnings.append(f"{region.describe()} ends one pixel past the {columns}x{rows} image: clipped")
            x1, y1 = min(x1, columns - 1), min(y1, rows - 1)
        usable.append((region, (x0, y0, x1 - x0 + 1, y1 - y0 + 1)))
    if not usable:
        return None, warnings

    def rank(entry: tuple[UltrasoundRegion, tuple[int, int, int, int]]) -> tuple[int, int]:
        region, crop = entry
        tissue = region.data_type == 1
        level = 0 if tissue and region.spatial_format == 1 else 1 if tissue else 2
        return level, -crop[2] * crop[3]

    ordered = sorted(usable, key=rank)  # stable: first region wins a tie
    chosen, crop = ordered[0]
    for region, _ in ordered[1:]:
        warnings.append(f"{region.describe()} is another spatial region: not used (chose region {chosen.number})")
    try:
        calibration = Calibration(
            spacing_mm=(chosen.physical_delta_x * 10.0, chosen.physical_delta_y * 10.0),
            crop_px=crop,
            name=f"dicom-region-{chosen.number}",
            source="dicom_regions",
        )
    except CalibrationError as exc:
        warnings.append(f"{chosen.describe()}: {exc}; file treated as uncalibrated")
        return None, warnings
    return calibration, warnings


def frame_times_from_dataset(ds: Any, n_frames: int) -> tuple[np.ndarray, str, list[str]]:
    """Per-frame relative times (s) from FrameTime, FrameTimeVector or CineRate.

    Returns
    -------
    times_s : ndarray, shape (n_frames,), float64, seconds from the first frame
    timing_source : str
        ``"FrameTime"``, ``"FrameTimeVector"``, ``"CineRate"``, ``"single"`` or ``"default"``.
    warnings : list of str
    """
    warnings: list[str] = []
    if n_frames <= 1:
        return np.zeros(max(n_frames, 0)), "single", warnings
    try:
        vector = ds.get("FrameTimeVector", None)
        if vector is not None:
            deltas_ms = np.asarray([float(v) for v in _as_list(vector)], dtype=np.float64)
            if len(deltas_ms) == n_frames and np.all(np.isfinite(deltas_ms)) and np.all(deltas_ms[1:] > 0):
                deltas_ms = deltas_ms.copy()
                deltas_ms[0] = 0.0
                return np.cumsum(deltas_ms) / 1000.0, "FrameTimeVector", warnings
            warnings.append(
                f"FrameTimeVector has {len(deltas_ms)} entries for {n_frames} frames or non-positive intervals: ignored"
            )
    except Exception:
        warnings.append("FrameTimeVector is unreadable: ignored")
    try:
        frame_time_ms = ds.get("FrameTime", None)
        if frame_time_ms is not None and frame_time_ms != "":
            value = float(frame_time_ms)
            if np.isfinite(value) and value > 0:
                return np.arange(n_frames) * value / 1000.0, "FrameTime", warnings
            warnings.append(f"FrameTime {frame_time_ms!r} ms is not positive: ignored")
    except Exception:
        warnings.append("FrameTime is unreadable: ignored")
    try:
        cine_rate = ds.get("CineRate", None)
        if cine_rate is not None and cine_rate != "":
            value = float(cine_rate)
            if np.isfinite(value) and value > 0:
                return np.arange(n_frames) / value, "CineRate", warnings
            warnings.append(f"CineRate {cine_rate!r} is not positive: ignored")
    except Exception:
        warnings.append("CineRate is unreadable: ignored")
    warnings.append(f"no FrameTime, FrameTimeVector or CineRate; {DEFAULT_DICOM_FPS:g} frames/s assumed")
    return np.arange(n_frames) / DEFAULT_DICOM_FPS, "default", warnings


def _int_attr(ds: Any, name: str, default: int | None = None) -> int:
    try:
        value = ds.get(name, default)
        if value is None or value == "":
            if default is None:
                raise CorruptDataError(f"missing {name}")
            return default
        return int(value)
    except CorruptDataError:
        raise
    except Exception:
        raise CorruptDataError(f"unreadable {name}") from None


class DicomSource(IndexedSource):
    """A DICOM file (US Image / US Multi-frame / Secondary Capture ...) as a recording.

    Parameters
    ----------
    path : str or Path
        The DICOM file.

    Raises
    ------
    UnsupportedFormatError
        Not DICOM, no pixel data (e.g. a structured report), or a transfer
        syntax no installed plugin decodes.
    CorruptDataError
        Truncated file, header inconsistent with the data, corrupt compressed frames.
    """

    format_name = "dicom"

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        super().__init__(str(path))
        self._fh = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's value-validation chatter: not for the user's terminal
                self._open(path)
        except IousguideError:
            self.close()
            raise
        except MemoryError:
            self.close()
            raise CorruptDataError(f"{path}: DICOM header asks for more memory than is available") from None
        except Exception as exc:  # a garbled header trips pydicom in many places; never let that escape
            self.close()
            raise CorruptDataError(f"{path}: unreadable DICOM header ({type(exc).__name__}: {_first_line(exc)})") from None

    # -- opening ---------------------------------------------------------------
    def _open(self, path: Path) -> None:
        import pydicom
        from pydicom.errors import InvalidDicomError

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ds = pydicom.dcmread(str(path), defer_size="64 KB")
        except InvalidDicomError:
            raise UnsupportedFormatError(f"{path}: not a DICOM file (no DICM preamble or valid header)") from None
        except FileNotFoundError:
            raise UnsupportedFormatError(f"no such file: {path}") from None
        except (OSError, MemoryError) as exc:
            raise CorruptDataError(f"{path}: cannot read DICOM file ({type(exc).__name__}: {_first_line(exc)})") from None
        except Exception as exc:  # pydicom raises many types on a truncated/garbled header
            raise CorruptDataError(
                f"{path}: corrupt or truncated DICOM header ({type(exc).__name__}: {_first_line(exc)})"
            ) from None
        self._ds = ds
        messages = [str(w.message) for w in caught]
        if any("end of file" in m.lower() or "truncat" in m.lower() for m in messages):
            raise CorruptDataError(f"{path}: truncated DICOM file ({_first_line(messages[0])})")
        try:
            has_pixels = "PixelData" in ds
        except Exception:
            has_pixels = False
        if not has_pixels and len(ds) == 0:
            raise CorruptDataError(f"{path}: no data elements after the file meta header (truncated?)")
        if not has_pixels:
            sop = str(ds.get("SOPClassUID", "")) if "SOPClassUID" in ds else ""
            name = getattr(ds.get("SOPClassUID", None), "name", "") if sop else ""
            raise UnsupportedFormatError(f"{path}: DICOM file holds no image (no PixelData){' — ' + name if name else ''}")
        try:
            tsyntax = ds.file_meta.TransferSyntaxUID
        except Exception:
            from pydicom.uid import ImplicitVRLittleEndian

            tsyntax = ImplicitVRLittleEndian
        self._tsyntax = tsyntax
        self._compressed = bool(getattr(tsyntax, "is_compressed", False))
        self._plugin = _preferred_plugin(tsyntax) if self._compressed else ""
        self._rows = _int_attr(ds, "Rows")
        self._columns = _int_attr(ds, "Columns")
        self._samples = _int_attr(ds, "SamplesPerPixel", 1)
        self._bits_allocated = _int_attr(ds, "BitsAllocated")
        self._bits_stored = _int_attr(ds, "BitsStored", self._bits_allocated)
        self._signed = _int_attr(ds, "PixelRepresentation", 0) == 1
        try:
            self._photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
        except Exception:
            self._photometric = ""
        try:
            n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        except Exception:
            raise CorruptDataError(f"{path}: unreadable NumberOfFrames") from None
        if self._rows <= 0 or self._columns <= 0 or n_frames <= 0:
            raise CorruptDataError(
                f"{path}: image size {self._columns}x{self._rows} with {n_frames} frames is empty"
            )
        if self._samples not in (1, 3):
            raise UnsupportedFormatError(f"{path}: {self._samples} samples per pixel is not supported (1 or 3)")
        if self._bits_allocated not in (1, 8, 16, 32) or not 1 <= self._bits_stored <= self._bits_allocated:
            raise UnsupportedFormatError(
                f"{path}: BitsAllocated {self._bits_allocated} / BitsStored {self._bits_stored} is not supported"
            )
        frame_bytes = self._rows * self._columns * self._samples * max(self._bits_allocated // 8, 1)
        if frame_bytes > MAX_FRAME_BYTES:
            raise CorruptDataError(f"{path}: frame of {self._columns}x{self._rows}x{self._samples} is implausibly large")
        file_size = path.stat().st_size
        if self._compressed and n_frames * 8 > file_size:  # every encapsulated frame needs an 8-byte item header
            raise CorruptDataError(f"{path}: NumberOfFrames {n_frames} cannot fit in a {file_size}-byte file")
        known = {1: ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"), 3: ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")}
        if self._photometric not in known[self._samples]:
            self.warnings.append(
                f"photometric interpretation {self._photometric or '(none)'} with {self._samples} sample(s) "
                f"is not converted: shown as {'RGB' if self._samples == 3 else 'grey'}"
            )
        if not self._compressed:
            length = self._pixel_data_length(ds)
            expected = (self._rows * self._columns * self._samples * self._bits_allocated + 7) // 8 * n_frames
            if length is None or length < expected or length > file_size:
                raise CorruptDataError(
                    f"{path}: pixel data holds {length if length is not None else 'unknown'} bytes but the header "
                    f"describes {n_frames} frame(s) of {self._columns}x{self._rows}x{self._samples} "
                    f"at {self._bits_allocated} bits ({expected} bytes): truncated or inconsistent"
                )
        self._n_frames = n_frames
        self._times_s, self._timing_source, timing_warnings = frame_times_from_dataset(ds, n_frames)
        self.warnings.extend(timing_warnings)
        self.regions = read_regions(ds)
        calibration, region_warnings = regions_calibration(self.regions, rows=self._rows, columns=self._columns)
        self.metadata_calibration = calibration
        self.warnings.extend(region_warnings)
        if not self.regions:
            self.warnings.append("no Sequence of Ultrasound Regions: uncalibrated")
        self._palette = self._build_palette() if self._photometric == "PALETTE COLOR" else None
        self._grey_scale = self._grey_mapping() if self._samples == 1 and self._palette is None else None
        if self._samples == 3 and self._bits_stored > 8:
            self.warnings.append(f"{self._bits_stored}-bit colour scaled to 8 bits (stored range)")
        try:
            self._fh = open(path, "rb")
        except OSError as exc:
            raise CorruptDataError(f"{path}: cannot read ({exc.strerror})") from None
        # fail at open, not later: decode the first and the last frame
        self._decode(0)
        if n_frames > 1:
            self._decode(n_frames - 1)

    @staticmethod
    def _pixel_data_length(ds: Any) -> int | None:
        try:
            raw = ds.get_item("PixelData")
        except Exception:
            return None
        if raw is None:
            return None
        length = getattr(raw, "length", None)
        if length is None:
            try:
                length = len(raw.value)
            except Exception:
                return None
        return None if length == 0xFFFFFFFF else int(length)

    def _build_palette(self) -> np.ndarray:
        """LUT (n_values, 3) uint8 for every possible stored value."""
        from pydicom.pixels import apply_color_lut

        if self._bits_stored > 16:
            raise UnsupportedFormatError(f"{self.source_id}: {self._bits_stored}-bit palette colour is not supported")
        values = np.arange(2**self._bits_stored, dtype=np.uint16 if self._bits_stored > 8 else np.uint8)
        try:
            lut = np.asarray(apply_color_lut(values, self._ds))
            bits = int(self._ds.RedPaletteColorLookupTableDescriptor[2])
        except Exception as exc:
            raise CorruptDataError(f"{self.source_id}: unusable palette colour lookup table ({exc})") from None
        lut = lut.reshape(-1, 3).astype(np.float64)
        if bits > 8 and lut.max() > 255:
            lut = lut / 257.0
            self.warnings.append("16-bit palette colour entries scaled to 8 bits")
        elif bits > 8:
            self.warnings.append("palette declares 16-bit entries but holds 8-bit values: used as 8-bit")
        if self._bits_stored > 8:
            self.warnings.append(f"{self._bits_stored}-bit palette indices mapped through the colour LUT")
        return np.clip(np.rint(lut), 0, 255).astype(np.uint8)

    def _grey_mapping(self) -> tuple[float, float] | None:
        """(low, high) stored values mapped to 0..255, or None when 8-bit as is."""
        if self._bits_stored <= 8 and not self._signed:
            return None
        try:
            center = self._ds.get("WindowCenter", None)
            width = self._ds.get("WindowWidth", None)
            if center is not None and width is not None:
                center = float(center[0] if hasattr(center, "__len__") and not isinstance(center, str) else center)
                width = float(width[0] if hasattr(width, "__len__") and not isinstance(width, str) else width)
                if np.isfinite(center) and np.isfinite(width) and width > 1:
                    self.warnings.append(
                        f"{self._bits_stored}-bit grey scaled to 8 bits over the file's window "
                        f"(centre {center:g}, width {width:g})"
                    )
                    return center - width / 2.0, center + width / 2.0
        except Exception:
            pass
        if self._signed:
            low, high = -(2.0 ** (self._bits_stored - 1)), 2.0 ** (self._bits_stored - 1) - 1
        else:
            low, high = 0.0, 2.0**self._bits_stored - 1
        self.warnings.append(f"{self._bits_stored}-bit grey scaled to 8 bits over the stored range {low:g}..{high:g}")
        return low, high

    # -- decoding ----------------------------------------------------------------
    def _decode(self, index: int) -> np.ndarray:
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        if self._fh is None:
            raise SourceError(f"source {self.source_id} is closed")
        with self._lock:
            try:
                self._fh.seek(0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    array = self._pixel_array(index)
            except NotImplementedError as exc:
                raise UnsupportedFormatError(
                    f"{self.source_id}: transfer syntax {getattr(self._tsyntax, 'name', self._tsyntax)} "
                    f"cannot be decoded with the installed plugins ({_first_line(exc)})"
                ) from None
            except MemoryError:
                raise CorruptDataError(f"{self.source_id}: frame {index} is too large to decode") from None
            except Exception as exc:
                if _is_missing_plugin(exc):
                    raise UnsupportedFormatError(
                        f"{self.source_id}: transfer syntax {getattr(self._tsyntax, 'name', self._tsyntax)} "
                        f"cannot be decoded with the installed plugins ({_first_line(exc)})"
                    ) from None
                raise CorruptDataError(
                    f"{self.source_id}: frame {index} cannot be decoded ({type(exc).__name__}: {_first_line(exc)})"
                ) from None
        try:
            pixels_u8 = self._to_uint8(np.asarray(array), index)
        except IousguideError:
            raise
        except Exception as exc:
            raise CorruptDataError(
                f"{self.source_id}: frame {index} cannot be converted ({type(exc).__name__}: {_first_line(exc)})"
            ) from None
        self._cache[index] = pixels_u8
        while len(self._cache) > CACHE_FRAMES:
            self._cache.popitem(last=False)
        return pixels_u8

    def _pixel_array(self, index: int) -> np.ndarray:
        """Decode one frame from the open file (caller holds the lock)."""
        from pydicom import pixels

        if self._plugin:
            try:
                return pixels.pixel_array(self._fh, index=index, raw=True, decoding_plugin=self._plugin)
            except Exception as exc:
                if not _is_missing_plugin(exc) and "not available" not in str(exc).lower():
                    raise  # corrupt data: a second decoder would only repeat it (and GDCM prints to stderr)
                self._plugin = ""  # preferred plugin not installed: pydicom's own choice
                self._fh.seek(0)
        return pixels.pixel_array(self._fh, index=index, raw=True)

    def _to_uint8(self, array: np.ndarray, index: int) -> np.ndarray:
        expected = (self._rows, self._columns) if self._samples == 1 else (self._rows, self._columns, 3)
        if array.shape != expected:
            raise CorruptDataError(
                f"{self.source_id}: frame {index} decoded to shape {array.shape}, header says {expected}"
            )
        if self._palette is not None:
            index_values = np.clip(array.astype(np.int64), 0, len(self._palette) - 1)
            return np.ascontiguousarray(self._palette[index_values])
        if self._samples == 3:
            if self._bits_stored > 8:
                array = (array.astype(np.float64) * (255.0 / (2**self._bits_stored - 1))).round()
            rgb = array if array.dtype == np.uint8 else np.clip(array, 0, 255).astype(np.uint8)
            if self._photometric in ("YBR_FULL", "YBR_FULL_422"):
                from pydicom.pixels import convert_color_space

                rgb = convert_color_space(rgb, self._photometric, "RGB")
            return np.ascontiguousarray(rgb)
        if self._grey_scale is None:
            grey = array.astype(np.uint8) if array.dtype != np.uint8 else array
        else:
            low, high = self._grey_scale
            scaled = (array.astype(np.float64) - low) * (255.0 / (high - low))
            grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        if self._photometric == "MONOCHROME1":
            grey = 255 - grey
        return np.ascontiguousarray(grey)

    # -- IndexedSource -------------------------------------------------------------
    def __len__(self) -> int:
        return self._n_frames

    @property
    def frame_times_s(self) -> np.ndarray:
        return self._times_s

    @property
    def nominal_fps(self) -> float | None:
        if self._n_frames == 1 and self._timing_source == "single":
            return None
        return super().nominal_fps

    def _load(self, index: int) -> Frame:
        if not 0 <= index < self._n_frames:
            raise SourceError(f"frame index {index} outside 0..{self._n_frames - 1} of {self.source_id}")
        pixels_u8 = self._decode(index)
        return Frame(
            pixels=pixels_u8,
            index=index,
            t_mono_ns=monotonic_ns(),
            t_source_s=float(self._times_s[index]),
            source_id=self.source_id,
            extra={"photometric": self._photometric},
        )

    def info(self) -> SourceInfo:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return self._info()
            except IousguideError:
                raise
            except Exception as exc:
                raise CorruptDataError(
                    f"{self.source_id}: unreadable DICOM header ({type(exc).__name__}: {_first_line(exc)})"
                ) from None

    def _info(self) -> SourceInfo:
        info = super().info()
        ds = self._ds

        def text(name: str) -> str:
            try:
                return str(ds.get(name, "") or "")
            except Exception:
                return ""

        info.extra.update(
            {
                "modality": text("Modality"),
                "manufacturer": text("Manufacturer"),
                "photometric": self._photometric,
                "transfer_syntax": str(getattr(self._tsyntax, "name", self._tsyntax)),
                "bits_stored": self._bits_stored,
                "timing_source": self._timing_source,
                "regions": len(self.regions),
            }
        )
        return info

    def close(self) -> None:
        fh, self._fh = getattr(self, "_fh", None), None
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass
        cache = getattr(self, "_cache", None)
        if cache is not None:
            cache.clear()
        super().close()


def _preferred_plugin(tsyntax: Any) -> str:
    """Name of the decoding plugin to ask for first ("" = let pydicom choose)."""
    try:
        from pydicom.pixels import get_decoder

        available = set(get_decoder(tsyntax).available_plugins)
    except Exception:
        return ""
    for name in PLUGIN_PREFERENCE:
        if name in available:
            return name
    return ""


def _as_list(value: Any) -> list:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _first_line(exc: BaseException | str, limit: int = 200) -> str:
    """The message on one line: first line, plus the next when the first ends in ':' (pydicom lists causes)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__ if isinstance(exc, BaseException) else ""
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:
        text = f"{text} {lines[1]}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_missing_plugin(exc: BaseException) -> bool:
    """pydicom says a syntax is unsupported or its plugins lack dependencies (not: the data is bad)."""
    text = str(exc).lower()
    if "exceptions were raised by all available plugins" in text:
        return False
    return "is not supported" in text or "missing" in text or "no pixel data decoders" in text or "dependencies" in text
