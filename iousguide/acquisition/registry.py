"""``open_source(spec)``: pick the reader from a path, URL or device spec."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from iousguide.calibration import Calibration
from iousguide.errors import UnsupportedFormatError

VIDEO_SUFFIXES = {".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
SEQUENCE_SUFFIXES = {".mha", ".mhd", ".nrrd"}
STREAM_SCHEMES = ("rtsp://", "rtsps://", "udp://", "tcp://", "http://", "https://", "rtp://", "srt://")

SUPPORTED_FORMATS_TEXT = (
    "video files (.mp4 .avi .mkv .mov .m4v .webm), images and image folders (.png .jpg .tif .bmp), "
    "DICOM ultrasound (.dcm), PLUS/Slicer sequences (.igs.mha .mha .mhd .igs.nrrd .seq.nrrd), "
    "capture devices (device:N, /dev/videoN), streams (rtsp:// udp:// tcp:// http://), "
    "OpenIGTLink (igtl://host:port/Device)"
)


def _make(module: str, cls: str, *args: Any, **kwargs: Any):
    return getattr(importlib.import_module(f"iousguide.acquisition.{module}"), cls)(*args, **kwargs)


def _is_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def open_source(
    spec: str | Path,
    *,
    calibration: Calibration | None = None,
    spacing_mm: tuple[float, float] | None = None,
    fps: float | None = None,
):
    """Open any supported input and return a :class:`~iousguide.acquisition.base.Source`.

    Parameters
    ----------
    spec : str or Path
        File path, folder of images, ``device:N[?width=..&height=..&fps=..&fourcc=MJPG]``,
        ``/dev/videoN``, a stream URL, or ``igtl://host:port/DeviceName``.
    calibration : Calibration, optional
        Explicit preset; overrides file metadata.
    spacing_mm : (x, y), optional
        Explicit mm/px; overrides the spacing from file metadata (keeps its crop).
    fps : float, optional
        Frame rate for image folders and single images (default 10).

    Raises
    ------
    UnsupportedFormatError
        One line naming the supported formats.
    """
    text = str(spec)
    source = _open_raw(text, fps=fps)
    if calibration is not None or spacing_mm is not None:
        try:
            source.set_calibration(preset=calibration, spacing_mm=spacing_mm)
        except Exception:
            source.close()
            raise
    return source


def _open_raw(text: str, *, fps: float | None):
    lower = text.lower()
    if lower.startswith("igtl://"):
        return _make("igtl", "IgtlSource", text)
    if lower.startswith("device:") or lower.startswith("/dev/video"):
        return _make("capture", "CaptureSource", text)
    if lower.startswith(STREAM_SCHEMES):
        return _make("capture", "CaptureSource", text)
    if "://" in lower:
        raise UnsupportedFormatError(f"unsupported URL scheme in {text!r}; supported: {SUPPORTED_FORMATS_TEXT}")
    path = Path(text)
    if not path.exists():
        # a recording whose process was killed: the crash-safe writer's journal folder
        partial = Path(text + ".partial")
        if partial.is_dir() and (partial / "journal.mhd").is_file():
            return _make("plus", "open_sequence", partial)
        raise UnsupportedFormatError(f"no such file or folder: {text}")
    if path.is_dir() and (path / "journal.mhd").is_file():
        return _make("plus", "open_sequence", path)
    if path.is_dir():
        return _make("images", "ImageSequenceSource", path, fps=fps)
    if path.stat().st_size == 0:
        raise UnsupportedFormatError(f"{text} is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return _make("video", "VideoFileSource", path)
    if suffix in IMAGE_SUFFIXES:
        return _make("images", "ImageSequenceSource", path, fps=fps)
    if suffix in SEQUENCE_SUFFIXES:
        return _make("plus", "open_sequence", path)
    if suffix in DICOM_SUFFIXES or _is_dicom(path):
        return _make("dicom", "DicomSource", path)
    raise UnsupportedFormatError(f"{text}: unsupported input; supported: {SUPPORTED_FORMATS_TEXT}")
