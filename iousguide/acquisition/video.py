"""Video files (mp4, avi, mkv, mov, m4v, webm) decoded with FFmpeg through PyAV.

Why PyAV and not ``cv2.VideoCapture``: OpenCV's FFmpeg backend converts a frame
index or time to a seek target with the container's *average* frame rate, which
is wrong for variable-frame-rate recordings (on the real liver sweep, seeking to
frame 97 returned the frame at 0.43 s instead of 4.27 s). PyAV gives each
frame's exact presentation timestamp, demuxes a packet index without decoding,
and seeks to the previous key frame so we can decode forward to the exact frame.

Frames are decoded one at a time (the file is streamed, never loaded whole).
Grey B-mode video (chroma flat) gives 2-D frames; colour content (Doppler) gives RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iousguide.acquisition.base import IndexedSource, SourceInfo, monotonic_ns
from iousguide.errors import CorruptDataError, SourceError, UnsupportedFormatError
from iousguide.frames import Frame

try:
    import av
except ImportError:  # pragma: no cover - av is a declared dependency
    av = None

# chroma within this many levels of neutral (128) = grey content; codec noise stays below it
_GREY_CHROMA_TOLERANCE = 6
# forward gaps shorter than this are decoded through instead of seeking
_DECODE_THROUGH_FRAMES = 30


def _is_grey(video_frame) -> bool:
    name = video_frame.format.name
    if name in ("gray", "gray8", "grayf32le", "gray16le", "gray10le", "gray12le"):
        return True
    if not name.startswith(("yuv", "yuvj")) or len(video_frame.planes) < 3:
        return False
    for plane in video_frame.planes[1:3]:
        data = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[::4, : plane.width : 4]
        if data.size and int(np.abs(data.astype(np.int16) - 128).max()) > _GREY_CHROMA_TOLERANCE:
            return False
    return True


def _pixels(video_frame) -> np.ndarray:
    if _is_grey(video_frame):
        return video_frame.to_ndarray(format="gray")
    return video_frame.to_ndarray(format="rgb24")


class VideoFileSource(IndexedSource):
    """A video file as a random-access recording.

    ``t_source_s`` is the frame's presentation time in seconds from the first frame.
    """

    format_name = "video"

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        super().__init__(str(path))
        self.path = path
        if av is None:
            raise UnsupportedFormatError("video files need PyAV (pip install av)")
        if not path.is_file():
            raise UnsupportedFormatError(f"no such video file: {path}")
        self.format_name = f"video/{path.suffix.lower().lstrip('.')}"
        self._container = None
        try:
            self._open_container()
            pts = self._packet_index()
        except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
            self._close_container()
            raise CorruptDataError(f"{path}: cannot read as video ({_reason(exc)})") from None
        if len(pts) == 0:
            self._close_container()
            raise CorruptDataError(f"{path}: the video holds no frames")
        self._pts = pts
        self._index_of_pts = {int(p): i for i, p in enumerate(pts)}
        self._times_s = (pts - pts[0]) * self._time_base
        self._next_index = None  # index the decoder yields next, None = unknown
        self._load(0)  # fail at open, not later, when the first frame does not decode
        if self.variable_rate and self._container_fps:
            self.warnings.append(
                f"variable frame rate: per-frame presentation times used "
                f"(container says {self._container_fps:.2f} fps, actual mean {self.nominal_fps:.2f} fps)"
            )

    # -- container ------------------------------------------------------------
    def _open_container(self) -> None:
        self._container = av.open(str(self.path), mode="r")
        if not self._container.streams.video:
            raise ValueError("no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._time_base = float(self._stream.time_base)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self._container_fps = float(rate) if rate else 0.0
        self._codec = self._stream.codec_context.name
        self._decoder = None

    def _close_container(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
            self._container = None

    def _packet_index(self) -> np.ndarray:
        """Sorted presentation timestamps (stream ticks) of every frame, by demuxing only."""
        pts = [p.pts for p in self._container.demux(self._stream) if p.pts is not None and p.size > 0]
        self._container.seek(0, stream=self._stream, backward=True, any_frame=False)
        return np.unique(np.asarray(pts, dtype=np.int64))

    # -- IndexedSource --------------------------------------------------------
    def __len__(self) -> int:
        return len(self._pts)

    @property
    def frame_times_s(self) -> np.ndarray:
        return self._times_s

    def _decoded_frames(self):
        for packet in self._container.demux(self._stream):
            for video_frame in packet.decode():
                yield video_frame

    def _load(self, index: int) -> Frame:
        if not 0 <= index < len(self):
            raise SourceError(f"frame index {index} outside 0..{len(self) - 1} of {self.path}")
        target_pts = int(self._pts[index])
        gap = None if self._next_index is None else index - self._next_index
        if gap is None or gap < 0 or gap > _DECODE_THROUGH_FRAMES:
            try:
                self._container.seek(target_pts, stream=self._stream, backward=True, any_frame=False)
            except av.FFmpegError as exc:
                raise CorruptDataError(f"{self.path}: cannot seek to frame {index} ({_reason(exc)})") from None
            self._decoder = self._decoded_frames()
        try:
            while True:
                video_frame = next(self._decoder)
                if video_frame.pts is None:
                    continue
                if video_frame.pts >= target_pts:
                    break
        except StopIteration:
            self._next_index = None
            raise CorruptDataError(
                f"{self.path}: frame {index} of {len(self)} is missing from the stream (truncated file?)"
            ) from None
        except av.FFmpegError as exc:
            self._next_index = None
            raise CorruptDataError(f"{self.path}: frame {index} cannot be decoded ({_reason(exc)})") from None
        t_mono_ns = monotonic_ns()
        got = self._index_of_pts.get(int(video_frame.pts), index)
        self._next_index = got + 1
        return Frame(
            pixels=np.ascontiguousarray(_pixels(video_frame)),
            index=got,
            t_mono_ns=t_mono_ns,
            t_source_s=float(self._times_s[got]),
            source_id=self.source_id,
        )

    def info(self) -> SourceInfo:
        info = super().info()
        info.extra["container_fps"] = round(self._container_fps, 3)
        info.extra["codec"] = self._codec
        return info

    def close(self) -> None:
        if not self._closed:
            self._decoder = None
            self._close_container()
        super().close()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
