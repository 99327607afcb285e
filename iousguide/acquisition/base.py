"""The source interface every reader and live input implements.

A source is a context manager that yields :class:`~iousguide.frames.Frame`
objects. Finite recordings are *random access* (``seek``/``seek_time``); live
sources are not. All failures raise :mod:`iousguide.errors` types.

Subclass contract
-----------------
* Recordings subclass :class:`IndexedSource` and implement ``_load(i)`` (decode
  frame ``i`` as a Frame with metadata calibration *not yet applied*),
  ``__len__`` and ``frame_times_s`` (per-frame source times, seconds).
  Sequential decoders may override ``_read_next`` for speed.
* Live sources subclass :class:`Source` and implement ``_read_next(timeout_s)``
  and ``_try_read_next()``, and expose :meth:`health`.
* Every subclass sets ``format_name`` and may set ``metadata_calibration`` and
  append human-readable strings to ``warnings``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import numpy as np

from iousguide.calibration import Calibration, apply_calibration, resolve_calibration
from iousguide.errors import EndOfSource, SourceClosedError, SourceError
from iousguide.frames import Frame


@dataclass
class SourceInfo:
    """What ``iousguide info`` reports. Keys of :meth:`to_json` are a fixed contract."""

    format: str
    frames: int | None
    width: int
    height: int
    channels: int
    fps: float | None
    duration_s: float | None
    variable_rate: bool
    spacing_mm: tuple[float, float] | None
    spacing_source: str
    crop_px: tuple[int, int, int, int] | None
    warnings: list[str] = field(default_factory=list)
    source: str = ""
    calibration_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["spacing_mm"] = list(self.spacing_mm) if self.spacing_mm is not None else None
        data["crop_px"] = list(self.crop_px) if self.crop_px is not None else None
        return data


@dataclass
class SourceHealth:
    """Live health, exposed beside every frame of a live source.

    ``frame_age_ms`` is the age of the newest delivered frame at the time of the
    call (grab to now). Counters are cumulative since open.
    """

    source_fps: float | None = None
    frame_age_ms: float | None = None
    grabbed: int = 0
    delivered: int = 0
    dropped: int = 0
    reconnects: int = 0
    no_signal: bool = False
    status: str = "ok"  # "ok" | "no_signal" | "reconnecting" | "closed"
    message: str = ""


class Source(ABC):
    """Base of every frame source. Use as a context manager."""

    format_name: str = "unknown"

    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        self.warnings: list[str] = []
        #: crop/spacing read from the file itself (DICOM regions, PLUS transform)
        self.metadata_calibration: Calibration | None = None
        self._override_preset: Calibration | None = None
        self._override_spacing: tuple[float, float] | None = None
        self._closed = False

    # -- calibration ---------------------------------------------------------
    def set_calibration(
        self, *, preset: Calibration | None = None, spacing_mm: tuple[float, float] | None = None
    ) -> None:
        """Override the file's own calibration (see :mod:`iousguide.calibration` for precedence)."""
        resolve_calibration(None, preset=preset, spacing_mm=spacing_mm)  # validates the pair
        self._override_preset = preset
        self._override_spacing = spacing_mm

    @property
    def calibration(self) -> Calibration:
        """The calibration in force after precedence."""
        return resolve_calibration(
            self.metadata_calibration, preset=self._override_preset, spacing_mm=self._override_spacing
        )

    def _finish(self, frame: Frame) -> Frame:
        calibration = self.calibration
        if calibration.crop_px is None and not (calibration.flip_x or calibration.flip_y):
            extra = dict(frame.extra)
            extra["spacing_source"] = calibration.source if calibration.spacing_mm is not None else "none"
            if calibration.name:
                extra["calibration_name"] = calibration.name
            return frame.replace(spacing_mm=calibration.spacing_mm, extra=extra)
        return apply_calibration(frame, calibration)

    # -- reading -------------------------------------------------------------
    def read(self, timeout_s: float | None = None) -> Frame:
        """Next frame. Raises :class:`EndOfSource` at the end of a recording and
        :class:`~iousguide.errors.SourceTimeout` when a live source gives nothing within ``timeout_s``."""
        self._check_open()
        return self._finish(self._read_next(timeout_s))

    def try_read(self) -> Frame | None:
        """Next frame if one is ready now, else None (never blocks).
        Raises :class:`EndOfSource` at the end of a recording."""
        self._check_open()
        frame = self._try_read_next()
        return None if frame is None else self._finish(frame)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            try:
                yield self.read()
            except EndOfSource:
                return

    @abstractmethod
    def _read_next(self, timeout_s: float | None) -> Frame: ...

    def _try_read_next(self) -> Frame | None:
        return self._read_next(0.0)

    # -- geometry / timing ---------------------------------------------------
    @property
    def length(self) -> int | None:
        """Number of frames, or None for live sources."""
        return None

    @property
    def nominal_fps(self) -> float | None:
        return None

    @property
    def duration_s(self) -> float | None:
        return None

    @property
    def random_access(self) -> bool:
        return False

    def seek(self, index: int) -> None:
        raise SourceError(f"{self.format_name} source {self.source_id} does not support seeking")

    def seek_time(self, t_s: float) -> None:
        raise SourceError(f"{self.format_name} source {self.source_id} does not support seeking")

    def _describe(
        self,
        first: Frame,
        *,
        frames: int | None,
        fps: float | None,
        duration_s: float | None,
        variable_rate: bool,
        extra: dict[str, Any] | None = None,
    ) -> SourceInfo:
        """SourceInfo from an uncropped first frame plus the calibration in force."""
        calibration = self.calibration
        return SourceInfo(
            format=self.format_name,
            frames=frames,
            width=first.pixels.shape[1],
            height=first.pixels.shape[0],
            channels=1 if first.pixels.ndim == 2 else first.pixels.shape[2],
            fps=fps,
            duration_s=duration_s,
            variable_rate=variable_rate,
            spacing_mm=calibration.spacing_mm,
            spacing_source=calibration.source if calibration.spacing_mm is not None else "none",
            crop_px=calibration.crop_px,
            warnings=list(self.warnings),
            source=self.source_id,
            calibration_name=calibration.name,
            extra=dict(extra or {}),
        )

    def health(self) -> SourceHealth | None:
        """Live health; None for recordings."""
        return None

    @abstractmethod
    def info(self) -> SourceInfo: ...

    # -- lifetime ------------------------------------------------------------
    def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise SourceClosedError(f"source {self.source_id} is closed")

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; explicit close() is the contract
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass


class IndexedSource(Source):
    """A finite recording with random access by frame index.

    Subclasses implement ``__len__``, ``_load(index)`` and ``frame_times_s``.
    Frame times start wherever the format says (PLUS: UNIX seconds); relative
    times for seeking are ``frame_times_s - frame_times_s[0]``.
    """

    def __init__(self, source_id: str) -> None:
        super().__init__(source_id)
        self._position = 0

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _load(self, index: int) -> Frame:
        """Decode frame ``index`` (0 <= index < len) without calibration applied."""

    @property
    @abstractmethod
    def frame_times_s(self) -> np.ndarray:
        """Per-frame source times in seconds, shape (len,), non-decreasing."""

    @property
    def length(self) -> int:
        return len(self)

    @property
    def random_access(self) -> bool:
        return True

    @property
    def position(self) -> int:
        """Index of the frame the next ``read()`` returns."""
        return self._position

    def relative_times_s(self) -> np.ndarray:
        times = np.asarray(self.frame_times_s, dtype=float)
        return times - times[0] if len(times) else times

    @property
    def duration_s(self) -> float | None:
        """Time from the first frame's start to the last frame's end (one nominal interval added)."""
        times = self.relative_times_s()
        if len(times) == 0:
            return 0.0
        if len(times) == 1:
            fps = self.nominal_fps
            return 1.0 / fps if fps else 0.0
        return float(times[-1] + np.median(np.diff(times)))

    @property
    def nominal_fps(self) -> float | None:
        times = self.relative_times_s()
        if len(times) < 2:
            return None
        span = times[-1] - times[0]
        return float((len(times) - 1) / span) if span > 0 else None

    @property
    def variable_rate(self) -> bool:
        """True when frame intervals differ by more than 10 % from their median."""
        times = self.relative_times_s()
        if len(times) < 3:
            return False
        intervals = np.diff(times)
        median = float(np.median(intervals))
        if median <= 0:
            return False
        return bool(np.max(np.abs(intervals - median)) > 0.1 * median + 1e-6)

    def _read_next(self, timeout_s: float | None) -> Frame:
        if self._position >= len(self):
            raise EndOfSource(f"end of {self.source_id} ({len(self)} frames)")
        frame = self._load(self._position)
        self._position += 1
        return frame

    def frame_at(self, index: int) -> Frame:
        """Random access without moving the read position (calibration applied)."""
        self._check_open()
        if not 0 <= index < len(self):
            raise SourceError(f"frame index {index} outside 0..{len(self) - 1} of {self.source_id}")
        return self._finish(self._load(index))

    def seek(self, index: int) -> None:
        if not 0 <= index <= len(self):
            raise SourceError(f"seek to frame {index} outside 0..{len(self)} of {self.source_id}")
        self._position = int(index)

    def seek_time(self, t_s: float) -> None:
        """Seek to the last frame whose relative time is <= ``t_s`` (seconds from the first frame)."""
        times = self.relative_times_s()
        index = int(np.searchsorted(times, t_s + 1e-9, side="right") - 1)
        self.seek(min(max(index, 0), max(len(self) - 1, 0)))

    def index_at_time(self, t_s: float) -> int:
        times = self.relative_times_s()
        return int(min(max(np.searchsorted(times, t_s + 1e-9, side="right") - 1, 0), max(len(self) - 1, 0)))

    def info(self) -> SourceInfo:
        self._check_open()
        if len(self) == 0:
            raise SourceError(f"{self.source_id} holds no frames")
        first = self._load(0)  # full source frame: width/height are before any crop
        return self._describe(
            first,
            frames=len(self),
            fps=self.nominal_fps,
            duration_s=self.duration_s,
            variable_rate=self.variable_rate,
        )


def monotonic_ns() -> int:
    """The latency clock (never wall time)."""
    return time.monotonic_ns()
