"""Video files (mp4, avi, mkv, mov, m4v, webm) through OpenCV's FFmpeg backend.

Frames are decoded one at a time (the file is streamed, never loaded whole).
Per-frame presentation times come from a packet index built by demuxing the
container with PyAV (no decoding, ~0.2 ms per frame), because variable-frame-rate
recordings exist and the container's average rate misleads; when PyAV cannot
read the container the index falls back to OpenCV's per-frame ``POS_MSEC``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from iousguide.acquisition.base import IndexedSource, SourceInfo, monotonic_ns
from iousguide.errors import CorruptDataError, SourceError, UnsupportedFormatError
from iousguide.frames import Frame

# B-mode stored as colour video has (nearly) equal channels; chroma noise of the codec stays below this
_GREY_TOLERANCE = 6


def _pts_index_pyav(path: Path) -> np.ndarray | None:
    """Presentation times (s, from the first frame) of every video packet, or None."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            base = float(stream.time_base) if stream.time_base else None
            if base is None:
                return None
            pts = [packet.pts for packet in container.demux(stream) if packet.pts is not None and packet.size > 0]
    except Exception:  # PyAV raises many types for odd files; OpenCV gets its chance next
        return None
    if not pts:
        return None
    times = np.sort(np.asarray(pts, dtype=np.float64)) * base
    return times - times[0]


def _pts_index_opencv(path: Path) -> np.ndarray:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        times = []
        while capture.grab():
            times.append(capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
    finally:
        capture.release()
    array = np.asarray(times, dtype=np.float64)
    return array - array[0] if len(array) else array


def _to_frame_pixels(bgr: np.ndarray) -> np.ndarray:
    if bgr.ndim == 2:
        return bgr
    if bgr.shape[2] == 4:
        bgr = bgr[:, :, :3]
    sample = bgr[::4, ::4].astype(np.int16)
    if (
        np.abs(sample[:, :, 0] - sample[:, :, 1]).max() <= _GREY_TOLERANCE
        and np.abs(sample[:, :, 0] - sample[:, :, 2]).max() <= _GREY_TOLERANCE
    ):
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class VideoFileSource(IndexedSource):
    """A video file as a random-access recording.

    ``t_source_s`` is the frame's presentation time in seconds from the first frame.
    Grey B-mode video gives 2-D frames; colour content (Doppler) gives RGB frames.
    """

    format_name = "video"

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        super().__init__(str(path))
        self.path = path
        if not path.is_file():
            raise UnsupportedFormatError(f"no such video file: {path}")
        self._capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not self._capture.isOpened():
            self._capture.release()
            raise CorruptDataError(f"{path}: cannot open as video (corrupt, truncated or not a video container)")
        self.format_name = f"video/{path.suffix.lower().lstrip('.')}"
        self._container_fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        times = _pts_index_pyav(path)
        if times is None:
            times = _pts_index_opencv(path)
        if len(times) == 0:
            self._capture.release()
            raise CorruptDataError(f"{path}: the video holds no decodable frames")
        self._times_s = times
        self._decoder_next = 0  # index the capture will decode next
        first_ok, _ = self._capture.read()
        if not first_ok:
            self._capture.release()
            raise CorruptDataError(f"{path}: the first frame cannot be decoded")
        self._decoder_next = 1
        self._rewind()
        if self.variable_rate and self._container_fps:
            self.warnings.append(
                f"variable frame rate: per-frame presentation times used "
                f"(container says {self._container_fps:.2f} fps, actual mean {self.nominal_fps:.2f} fps)"
            )

    def _rewind(self) -> None:
        self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._decoder_next = 0

    def __len__(self) -> int:
        return len(self._times_s)

    @property
    def frame_times_s(self) -> np.ndarray:
        return self._times_s

    def _load(self, index: int) -> Frame:
        if not 0 <= index < len(self):
            raise SourceError(f"frame index {index} outside 0..{len(self) - 1} of {self.path}")
        if index != self._decoder_next:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            self._decoder_next = index
        ok, bgr = self._capture.read()
        t_mono_ns = monotonic_ns()
        if not ok or bgr is None:
            raise CorruptDataError(f"{self.path}: frame {index} of {len(self)} cannot be decoded (truncated or corrupt)")
        self._decoder_next = index + 1
        return Frame(
            pixels=_to_frame_pixels(bgr),
            index=index,
            t_mono_ns=t_mono_ns,
            t_source_s=float(self._times_s[index]),
            source_id=self.source_id,
        )

    def info(self) -> SourceInfo:
        info = super().info()
        info.extra["container_fps"] = round(self._container_fps, 3)
        info.extra["codec"] = _fourcc_text(self._capture.get(cv2.CAP_PROP_FOURCC))
        return info

    def close(self) -> None:
        if not self._closed:
            self._capture.release()
        super().close()


def _fourcc_text(value: float) -> str:
    code = int(value)
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00") or "?"
