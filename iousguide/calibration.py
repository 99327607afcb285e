"""Calibration presets: crop rectangle and mm/px that turn pixels into millimetres.

Preset file format (TOML, one file per scanner / probe / depth preset)::

    name = "bk5000-8848-depth60"        # required, free text
    spacing_mm = [0.105, 0.105]          # required: mm per pixel, x (column) then y (row)
    crop_px = [x, y, width, height]      # optional: ultrasound image inside the captured frame, source pixels
    flip_x = false                       # optional: mirror left-right after cropping
    flip_y = false                       # optional: mirror top-bottom after cropping
    scanner = "BK 5000"                  # optional, free text
    probe = "8848 T-shaped"              # optional
    depth_mm = 60.0                      # optional: the depth preset this belongs to
    notes = "measured with calibrate ruler, 2026-11-27"   # optional

Precedence (first that applies wins): an explicit preset (``--calibration``) or
``--spacing-mm X[,Y]`` > file metadata (DICOM Ultrasound Regions, PLUS
``ImageToTransducerTransform``, OpenIGTLink matrix) > uncalibrated
(``spacing_mm = None``: no millimetre value is ever produced).
``--spacing-mm`` replaces only the spacing; a crop from file metadata is kept.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from iousguide.errors import CalibrationError
from iousguide.frames import Frame

_KNOWN_KEYS = {"name", "spacing_mm", "crop_px", "flip_x", "flip_y", "scanner", "probe", "depth_mm", "notes"}

#: Values of :attr:`Calibration.source` (also ``spacing_source`` in ``info --json``).
SPACING_SOURCES = ("preset", "cli", "dicom_regions", "plus_transform", "igtl_matrix", "none")


@dataclass(frozen=True)
class Calibration:
    """How to crop a source frame and what one pixel measures.

    Attributes
    ----------
    spacing_mm : (float, float) or None
        mm per pixel in x (columns) and y (rows); None = uncalibrated.
    crop_px : (x, y, width, height) or None
        Ultrasound image inside the source frame, in source pixels.
    source : str
        Where this came from, one of :data:`SPACING_SOURCES`.
    """

    spacing_mm: tuple[float, float] | None
    crop_px: tuple[int, int, int, int] | None = None
    flip_x: bool = False
    flip_y: bool = False
    name: str = ""
    source: str = "none"
    scanner: str = ""
    probe: str = ""
    depth_mm: float | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        if self.spacing_mm is not None:
            sx, sy = _positive_pair(self.spacing_mm, "spacing_mm")
            object.__setattr__(self, "spacing_mm", (sx, sy))
        if self.crop_px is not None:
            object.__setattr__(self, "crop_px", _crop_tuple(self.crop_px, "crop_px"))
        if self.source not in SPACING_SOURCES:
            raise CalibrationError(f"calibration source must be one of {SPACING_SOURCES}, got {self.source!r}")

    @property
    def is_calibrated(self) -> bool:
        return self.spacing_mm is not None

    def with_spacing(self, spacing_mm: tuple[float, float], *, source: str) -> "Calibration":
        return replace(self, spacing_mm=spacing_mm, source=source)

    def to_toml(self) -> str:
        """Serialise to the preset TOML format (round-trips through :func:`load_preset`)."""
        lines = [f"name = {_toml_str(self.name or 'unnamed')}"]
        if self.spacing_mm is None:
            raise CalibrationError("cannot write a preset without spacing_mm")
        lines.append(f"spacing_mm = [{self.spacing_mm[0]!r}, {self.spacing_mm[1]!r}]")
        if self.crop_px is not None:
            lines.append("crop_px = [{}, {}, {}, {}]".format(*self.crop_px))
        lines.append(f"flip_x = {'true' if self.flip_x else 'false'}")
        lines.append(f"flip_y = {'true' if self.flip_y else 'false'}")
        for key in ("scanner", "probe", "notes"):
            value = getattr(self, key)
            if value:
                lines.append(f"{key} = {_toml_str(value)}")
        if self.depth_mm is not None:
            lines.append(f"depth_mm = {float(self.depth_mm)!r}")
        return "\n".join(lines) + "\n"


UNCALIBRATED = Calibration(spacing_mm=None, source="none")


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


#: plausible pixel sizes, mm: above 10 mm/px no structure of the liver is resolved; below 1 um/px
#: is finer than any ultrasound (70 MHz preclinical scanners resolve ~30 um) - a unit slip (m, um)
MIN_PLAUSIBLE_SPACING_MM = 0.001
MAX_PLAUSIBLE_SPACING_MM = 10.0


def plausible_spacing_mm(sx: float, sy: float) -> bool:
    """Whether a pixel size (x, y, mm) is finite and within the plausible ultrasound range."""
    return all(math.isfinite(v) and MIN_PLAUSIBLE_SPACING_MM <= v <= MAX_PLAUSIBLE_SPACING_MM for v in (sx, sy))


def _positive_pair(value: Any, key: str) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    try:
        sx, sy = (float(v) for v in value)
    except (TypeError, ValueError):
        raise CalibrationError(f"{key} must be two numbers [x, y] in mm per pixel, got {value!r}") from None
    if not (math.isfinite(sx) and math.isfinite(sy) and sx > 0 and sy > 0):
        raise CalibrationError(f"{key} must be positive and finite, got {value!r}")
    if not plausible_spacing_mm(sx, sy):
        raise CalibrationError(f"{key} = {value!r} mm/px is implausible for ultrasound (expected "
                               f"{MIN_PLAUSIBLE_SPACING_MM:g}-{MAX_PLAUSIBLE_SPACING_MM:g} mm/px)")
    return sx, sy


def _crop_tuple(value: Any, key: str) -> tuple[int, int, int, int]:
    try:
        items = list(value)
        if len(items) != 4 or any(isinstance(v, bool) or float(v) != int(v) for v in items):
            raise ValueError
        x, y, w, h = (int(v) for v in items)
    except (TypeError, ValueError):
        raise CalibrationError(f"{key} must be four integers [x, y, width, height], got {value!r}") from None
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise CalibrationError(f"{key} must have x, y >= 0 and width, height > 0, got {value!r}")
    return x, y, w, h


def parse_spacing_arg(text: str) -> tuple[float, float]:
    """Parse ``--spacing-mm X[,Y]``."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise CalibrationError(f"--spacing-mm expects X or X,Y in mm per pixel, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise CalibrationError(f"--spacing-mm expects X or X,Y in mm per pixel, got {text!r}")
    return _positive_pair(parts, "--spacing-mm")


def load_preset(path: str | Path) -> Calibration:
    """Read and validate a preset TOML; a bad or missing key is named in the error."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibrationError(f"calibration preset not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"cannot read calibration preset {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CalibrationError(f"calibration preset {path} is not valid TOML: {exc}") from None
    return calibration_from_mapping(data, where=str(path))


def calibration_from_mapping(data: dict[str, Any], *, where: str = "preset") -> Calibration:
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise CalibrationError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KNOWN_KEYS))})")
    if "name" not in data:
        raise CalibrationError(f"{where}: missing key 'name'")
    if "spacing_mm" not in data:
        raise CalibrationError(f"{where}: missing key 'spacing_mm'")
    if not isinstance(data["name"], str) or not data["name"].strip():
        raise CalibrationError(f"{where}: key 'name' must be a non-empty string")
    try:
        spacing = _positive_pair(data["spacing_mm"], "spacing_mm")
        crop = _crop_tuple(data["crop_px"], "crop_px") if "crop_px" in data else None
    except CalibrationError as exc:
        raise CalibrationError(f"{where}: {exc}") from None
    for key in ("flip_x", "flip_y"):
        if key in data and not isinstance(data[key], bool):
            raise CalibrationError(f"{where}: key {key!r} must be true or false")
    for key in ("scanner", "probe", "notes"):
        if key in data and not isinstance(data[key], str):
            raise CalibrationError(f"{where}: key {key!r} must be a string")
    depth = data.get("depth_mm")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, (int, float)) or depth <= 0):
        raise CalibrationError(f"{where}: key 'depth_mm' must be a positive number")
    return Calibration(
        spacing_mm=spacing,
        crop_px=crop,
        flip_x=bool(data.get("flip_x", False)),
        flip_y=bool(data.get("flip_y", False)),
        name=data["name"],
        source="preset",
        scanner=data.get("scanner", ""),
        probe=data.get("probe", ""),
        depth_mm=float(depth) if depth is not None else None,
        notes=data.get("notes", ""),
    )


def resolve_calibration(
    metadata: Calibration | None,
    *,
    preset: Calibration | None = None,
    spacing_mm: tuple[float, float] | None = None,
) -> Calibration:
    """Apply the documented precedence: preset / --spacing-mm > file metadata > uncalibrated."""
    if preset is not None and spacing_mm is not None:
        raise CalibrationError("give either a calibration preset or --spacing-mm, not both")
    if preset is not None:
        return preset
    base = metadata if metadata is not None else UNCALIBRATED
    if spacing_mm is not None:
        return replace(base, spacing_mm=_positive_pair(spacing_mm, "--spacing-mm"), source="cli")
    return base


def apply_calibration(frame: Frame, calibration: Calibration) -> Frame:
    """Crop ``frame`` to the calibration's rectangle and attach its spacing.

    A crop partly outside the frame is clipped to it; one entirely outside raises
    :class:`CalibrationError`. The frame's ``origin_px`` records where the crop
    starts in source pixels, so results can be reported in source coordinates.
    """
    pixels = frame.pixels
    ox, oy = frame.origin_px
    if calibration.crop_px is not None:
        x, y, w, h = calibration.crop_px
        # crop is in source pixels; the frame may already be offset
        x0, y0 = max(x - ox, 0), max(y - oy, 0)
        x1, y1 = min(x - ox + w, pixels.shape[1]), min(y - oy + h, pixels.shape[0])
        if x1 <= x0 or y1 <= y0:
            raise CalibrationError(
                f"crop {calibration.crop_px} lies outside the {pixels.shape[1]}x{pixels.shape[0]} frame"
            )
        pixels = pixels[y0:y1, x0:x1]
        ox, oy = ox + x0, oy + y0
    extra = dict(frame.extra)
    if calibration.flip_x or calibration.flip_y:
        pixels = pixels[:: -1 if calibration.flip_y else 1, :: -1 if calibration.flip_x else 1]
        extra["flip_xy"] = (calibration.flip_x, calibration.flip_y)
    extra["spacing_source"] = calibration.source if calibration.spacing_mm is not None else "none"
    if calibration.name:
        extra["calibration_name"] = calibration.name
    return frame.replace(
        pixels=np.ascontiguousarray(pixels),
        spacing_mm=calibration.spacing_mm,
        origin_px=(ox, oy),
        extra=extra,
    )
