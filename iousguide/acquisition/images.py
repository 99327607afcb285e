"""Single images and folders of images (png, jpg, tif, bmp) as a recording."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from iousguide.acquisition.base import IndexedSource, monotonic_ns
from iousguide.errors import CorruptDataError, SettingsError, SourceError, UnsupportedFormatError
from iousguide.frames import Frame

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
DEFAULT_FOLDER_FPS = 10.0


def natural_key(name: str) -> list:
    """Sort key so that frame2.png comes before frame10.png."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def to_uint8(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Bring a decoded image to uint8 grey or RGB; returns (pixels, warning or None)."""
    warning = None
    if image.dtype != np.uint8:
        if image.dtype.kind not in "uif":
            raise CorruptDataError(f"unsupported pixel type {image.dtype}")
        data = image.astype(np.float64)
        low, high = float(np.nanmin(data)), float(np.nanmax(data))
        scale = 255.0 / (high - low) if high > low else 0.0
        image = np.clip(np.rint((data - low) * scale), 0, 255).astype(np.uint8)
        warning = "pixel values were not 8-bit; scaled linearly to 0-255 (min-max)"
    if image.ndim == 3:
        if image.shape[2] == 1:
            image = image[:, :, 0]
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        elif image.shape[2] == 3:
            if np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 0], image[:, :, 2]):
                image = image[:, :, 0]
            else:
                image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        else:
            raise CorruptDataError(f"unsupported number of channels: {image.shape[2]}")
    return np.ascontiguousarray(image), warning


class ImageSequenceSource(IndexedSource):
    """One image, or every image in a folder in natural sort order, at a fixed rate.

    Parameters
    ----------
    path : str or Path
        An image file or a folder of images.
    fps : float, optional
        Frame rate (default 10 frames/s); frame ``i`` has ``t_source_s = i / fps``.
    """

    format_name = "images"

    def __init__(self, path: str | Path, *, fps: float | None = None) -> None:
        path = Path(path)
        super().__init__(str(path))
        if fps is not None and not (fps > 0 and np.isfinite(fps)):
            raise SettingsError(f"--fps must be a positive number, got {fps}")
        self._fps = float(fps) if fps else DEFAULT_FOLDER_FPS
        if path.is_dir():
            files = sorted(
                (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                key=lambda p: natural_key(p.name),
            )
            if not files:
                raise UnsupportedFormatError(
                    f"folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            self.format_name = "image_folder"
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise UnsupportedFormatError(f"{path} is not an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files = [path]
            self.format_name = "image"
        else:
            raise UnsupportedFormatError(f"no such file or folder: {path}")
        if fps is None:
            self.warnings.append(f"no frame rate given; {DEFAULT_FOLDER_FPS:g} frames/s assumed (--fps)")
        self.files = files
        self._times_s = np.arange(len(files), dtype=np.float64) / self._fps
        self._load(0)  # fail at open, not later, when the first image is unreadable

    def __len__(self) -> int:
        return len(self.files)

    @property
    def frame_times_s(self) -> np.ndarray:
        return self._times_s

    @property
    def nominal_fps(self) -> float:
        return self._fps

    @property
    def duration_s(self) -> float:
        return len(self.files) / self._fps

    def _load(self, index: int) -> Frame:
        if not 0 <= index < len(self.files):
            raise SourceError(f"frame index {index} outside 0..{len(self.files) - 1} of {self.source_id}")
        file = self.files[index]
        try:
            data = np.fromfile(file, dtype=np.uint8)
        except OSError as exc:
            raise CorruptDataError(f"{file}: cannot read ({exc.strerror})") from None
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        if image is None:
            raise CorruptDataError(f"{file}: not a readable image (corrupt or truncated)")
        pixels, warning = to_uint8(image)
        if warning and warning not in self.warnings:
            self.warnings.append(warning)
        return Frame(
            pixels=pixels,
            index=index,
            t_mono_ns=monotonic_ns(),
            t_source_s=float(self._times_s[index]),
            source_id=str(file),
            extra={"file": file.name},
        )
