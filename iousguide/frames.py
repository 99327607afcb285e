"""The one frame type that crosses every boundary in iousguide."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np


def _freeze(array: np.ndarray) -> np.ndarray:
    if array.flags.writeable:
        array = array.view()
        array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class Frame:
    """One ultrasound image with its geometry and times.

    Attributes
    ----------
    pixels : ndarray, shape (rows, cols) uint8 grey, or (rows, cols, 3) uint8 **RGB**
        Read-only. Colour is kept when the source is colour (Doppler, screen capture).
    index : int
        Frame index in the source (0-based, the source's own numbering).
    t_mono_ns : int
        ``time.monotonic_ns()`` when the frame was grabbed/decoded (latency clock).
    t_source_s : float or None
        The source's own time of the frame in seconds (presentation time,
        DICOM frame time, PLUS timestamp, OpenIGTLink message time).
    spacing_mm : (float, float) or None
        Pixel size (x = column, y = row) in mm; None when uncalibrated.
        Nothing downstream may produce a millimetre value when it is None.
    origin_px : (int, int)
        Position (x, y) of ``pixels[0, 0]`` in the source's full frame, in source
        pixels; non-zero after cropping to the ultrasound region.
    source_id : str
        Where the frame came from (path or URL).
    extra : mapping
        Format-specific metadata (read-only), e.g. ``{"image_status": "OK"}``.
    """

    pixels: np.ndarray
    index: int
    t_mono_ns: int
    t_source_s: float | None = None
    spacing_mm: tuple[float, float] | None = None
    origin_px: tuple[int, int] = (0, 0)
    source_id: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        px = np.asarray(self.pixels)
        if px.ndim not in (2, 3) or (px.ndim == 3 and px.shape[2] not in (3,)):
            raise ValueError(f"Frame pixels must be (rows, cols) or (rows, cols, 3), got {px.shape}")
        if px.dtype != np.uint8:
            raise ValueError(f"Frame pixels must be uint8, got {px.dtype}")
        object.__setattr__(self, "pixels", _freeze(px))
        if self.spacing_mm is not None:
            sx, sy = (float(v) for v in self.spacing_mm)
            if not (np.isfinite(sx) and np.isfinite(sy) and sx > 0 and sy > 0):
                raise ValueError(f"spacing_mm must be positive and finite, got {self.spacing_mm}")
            object.__setattr__(self, "spacing_mm", (sx, sy))
        object.__setattr__(self, "origin_px", (int(self.origin_px[0]), int(self.origin_px[1])))
        if not isinstance(self.extra, MappingProxyType):
            object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def is_color(self) -> bool:
        return self.pixels.ndim == 3

    @property
    def is_calibrated(self) -> bool:
        return self.spacing_mm is not None

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return self.pixels.shape[0], self.pixels.shape[1]

    @cached_property
    def gray(self) -> np.ndarray:
        """Grey view for analysis, shape (rows, cols) uint8, read-only."""
        if not self.is_color:
            return self.pixels
        import cv2

        return _freeze(cv2.cvtColor(np.ascontiguousarray(self.pixels), cv2.COLOR_RGB2GRAY))

    def replace(self, **changes: Any) -> "Frame":
        """A new frame with some fields changed (metadata is never dropped)."""
        return dataclasses.replace(self, **changes)

    def to_source_px(self, x: float, y: float) -> tuple[float, float]:
        """Pixel coordinates in this frame -> coordinates in the source's full frame.

        Honours a crop (``origin_px``) and a calibration flip (``extra["flip_xy"]``).
        """
        flip_x, flip_y = self.extra.get("flip_xy", (False, False))
        if flip_x:
            x = self.pixels.shape[1] - 1 - x
        if flip_y:
            y = self.pixels.shape[0] - 1 - y
        return x + self.origin_px[0], y + self.origin_px[1]

    def from_source_px(self, x: float, y: float) -> tuple[float, float]:
        """Coordinates in the source's full frame -> pixel coordinates in this frame."""
        x, y = x - self.origin_px[0], y - self.origin_px[1]
        flip_x, flip_y = self.extra.get("flip_xy", (False, False))
        if flip_x:
            x = self.pixels.shape[1] - 1 - x
        if flip_y:
            y = self.pixels.shape[0] - 1 - y
        return x, y
