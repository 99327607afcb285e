"""Capture cards (UVC frame grabbers) and network streams through OpenCV.

Specs (what :func:`~iousguide.acquisition.open_source` accepts):

* ``device:N[?width=1920&height=1080&fps=60&fourcc=MJPG&api=v4l2]`` -- device
  index N (``/dev/videoN`` on Linux);
* ``/dev/videoN[?...]`` -- the same by path;
* ``rtsp://``, ``udp://``, ``tcp://``, ``http(s)://`` (MJPEG over HTTP),
  ``rtp://``, ``srt://`` -- through OpenCV's FFmpeg backend (the URL is passed
  unchanged; options are keyword arguments).

Devices: the requested pixel format, size and rate are set in that order
(V4L2 needs the format first) and **read back**; each one the device refused
becomes a warning in ``source.warnings`` (and ``iousguide info``) and a log
line. Linux uses ``cv2.CAP_V4L2`` (Windows MSMF, macOS AVFoundation) unless
``api=`` says otherwise.

Frames: stamped with ``time.monotonic_ns()`` right after ``grab()`` returns
(before decoding), ``t_source_s`` from PLUS's line-fit filter over those grab
times; BGR from OpenCV is converted to RGB, and frames whose three channels are
equal become grey (``color="auto"``). Hand-off, counters, no-signal detection
and reconnect come from :class:`~iousguide.acquisition.live.LiveSource`.

Lab set-up (text for the README)
--------------------------------
1. Frame grabber: a UVC device (Epiphan DVI2USB 3.0, Magewell USB Capture
   HDMI/DVI/SDI) on a **USB 3** port (USB 2 gives only 5-6 fps at 1080p).
   Cable from the scanner's video output (HDMI, DVI, VGA or SDI; S-video needs
   a converter) to the grabber; set the scanner's output to its native
   resolution. Linux: the ``uvcvideo`` driver, no install; ``ls /dev/video*``.
2. Check it: ``iousguide info "device:0?width=1920&height=1080&fps=60&fourcc=MJPG"``
   prints the size, rate and pixel format the device *actually* gives and a
   warning for every request it refused; ``actual_fps`` vs ``measured_fps``
   tells whether the USB link keeps up.
3. Network: ``rtsp://``, ``udp://``, ``tcp://``, ``http://`` (MJPEG) URLs from
   streaming boxes or ``ffmpeg``. OpenIGTLink: PLUS Server or 3D Slicer
   (OpenIGTLinkIF module, server mode, port 18944) -> ``igtl://host:18944/Image_Reference``.
4. Record a session: ``iousguide record "device:0?width=1920&height=1080" case.igs.mha
   --duration-s 60 --mp4``; the summary says how many frames were written and
   dropped (with reasons). A crash leaves ``case.igs.mha.partial/``, which
   opens as it is and is finished by ``iousguide.acquisition.plus_writer.recover``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any
from urllib.parse import parse_qs

import cv2
import numpy as np

from iousguide.acquisition.live import ConnectionLost, Grab, LiveSettings, LiveSource
from iousguide.acquisition.registry import STREAM_SCHEMES
from iousguide.errors import SettingsError, SourceError, UnsupportedFormatError

log = logging.getLogger(__name__)

_APIS = {
    "any": cv2.CAP_ANY,
    "v4l2": cv2.CAP_V4L2,
    "dshow": cv2.CAP_DSHOW,
    "msmf": cv2.CAP_MSMF,
    "avfoundation": cv2.CAP_AVFOUNDATION,
    "ffmpeg": cv2.CAP_FFMPEG,
}
_DEVICE_KEYS = {"width", "height", "fps", "fourcc", "api"}
_GREY_TOLERANCE = 6


def default_device_api() -> str:
    if sys.platform.startswith("linux"):
        return "v4l2"
    if sys.platform.startswith("win"):
        return "msmf"
    if sys.platform == "darwin":
        return "avfoundation"
    return "any"


def parse_device_spec(spec: str) -> tuple[int | str, dict[str, Any]]:
    """``device:N?...`` or ``/dev/videoN?...`` -> (index or path, options).

    Options: ``width``, ``height`` (px, int), ``fps`` (float), ``fourcc``
    (4 characters, e.g. MJPG or YUYV), ``api`` (one of v4l2, any, dshow, msmf, avfoundation).
    """
    base, _, query = spec.partition("?")
    options: dict[str, Any] = {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if key not in _DEVICE_KEYS:
            raise SettingsError(f"unknown capture option {key!r} in {spec!r} (known: {', '.join(sorted(_DEVICE_KEYS))})")
        value = values[-1]
        try:
            if key in ("width", "height"):
                options[key] = int(value)
                if options[key] <= 0:
                    raise ValueError
            elif key == "fps":
                options[key] = float(value)
                if not options[key] > 0:
                    raise ValueError
            elif key == "fourcc":
                if len(value) != 4:
                    raise ValueError
                options[key] = value.upper()
            else:
                if value.lower() not in _APIS:
                    raise ValueError
                options[key] = value.lower()
        except ValueError:
            raise SettingsError(f"bad capture option {key}={value!r} in {spec!r}") from None
    if base.lower().startswith("device:"):
        text = base[len("device:"):]
        if not text.isdigit():
            raise UnsupportedFormatError(f"capture device spec must be device:N with N a number, got {spec!r}")
        return int(text), options
    if base.startswith("/dev/"):
        return base, options
    raise UnsupportedFormatError(f"not a capture device spec: {spec!r} (expected device:N or /dev/videoN)")


def _fourcc_text(value: float) -> str:
    code = int(value)
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ") or "?"


def to_frame_pixels(bgr: np.ndarray, *, color: str = "auto") -> np.ndarray:
    """OpenCV image -> Frame pixels: grey (rows, cols) or RGB (rows, cols, 3) uint8.

    ``color``: "auto" (grey when the three channels are equal within a codec
    tolerance on a subsample), "rgb" or "grey". The input is not modified.
    """
    if bgr.dtype != np.uint8:
        bgr = cv2.convertScaleAbs(bgr)
    if bgr.ndim == 2:
        return bgr if color != "rgb" else cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    if bgr.shape[2] == 4:
        bgr = bgr[:, :, :3]
    if color == "grey":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if color == "auto":
        sample = bgr[::8, ::8].astype(np.int16)
        if (
            np.abs(sample[:, :, 0] - sample[:, :, 1]).max() <= _GREY_TOLERANCE
            and np.abs(sample[:, :, 0] - sample[:, :, 2]).max() <= _GREY_TOLERANCE
        ):
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class CaptureSource(LiveSource):
    """A capture device or a network stream, grabbed in a thread.

    Parameters
    ----------
    spec : str
        ``device:N?...``, ``/dev/videoN?...`` or a stream URL (see module doc).
    open_timeout_s : float
        Streams: how long FFmpeg may take to open (also bounds each reopen, at most 2 s).
    read_timeout_s : float
        Streams: a read that gets nothing for this long fails and the stream is reopened.
    color : {"auto", "rgb", "grey"}
        Pixel format of the frames.
    settings : LiveSettings, optional
        Stall/reconnect/no-signal tuning.
    """

    def __init__(
        self,
        spec: str,
        *,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 1.0,
        color: str = "auto",
        settings: LiveSettings | None = None,
    ) -> None:
        if color not in ("auto", "rgb", "grey"):
            raise SettingsError(f"color must be auto, rgb or grey, got {color!r}")
        if open_timeout_s <= 0 or read_timeout_s <= 0:
            raise SettingsError("open_timeout_s and read_timeout_s must be positive")
        super().__init__(spec, settings=settings)
        self.color = color
        self.open_timeout_s = float(open_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        self._capture: cv2.VideoCapture | None = None
        self._actual: dict[str, Any] = {}
        lower = spec.lower()
        if lower.startswith(STREAM_SCHEMES):
            self.is_stream = True
            self.format_name = f"stream/{lower.split(':', 1)[0]}"
            self.target: int | str = spec
            self.options: dict[str, Any] = {}
            self.api = "ffmpeg"
        else:
            self.is_stream = False
            self.target, self.options = parse_device_spec(spec)
            self.api = self.options.get("api", default_device_api())
            self.format_name = f"capture/{self.api}"
            if isinstance(self.target, int) and sys.platform.startswith("linux"):
                path = f"/dev/video{self.target}"
                if not os.path.exists(path):
                    found = sorted(p for p in os.listdir("/dev") if p.startswith("video")) if os.path.isdir("/dev") else []
                    raise SourceError(
                        f"no capture device {path} (present: {', '.join('/dev/' + p for p in found) or 'none'}); "
                        "is the frame grabber plugged in (USB 3 port) and powered?"
                    )
            elif isinstance(self.target, str) and not os.path.exists(self.target):
                raise SourceError(f"no capture device {self.target}; is the frame grabber plugged in?")
        self._open(first=True)
        self._start(connected=True)

    # -- opening -------------------------------------------------------------
    def _open(self, *, first: bool) -> None:
        if self.is_stream:
            open_ms = int(1000 * (self.open_timeout_s if first else min(self.open_timeout_s, 2.0)))
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, open_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(1000 * self.read_timeout_s)]
            capture = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG, params)
            if not capture.isOpened():
                capture.release()
                raise SourceError(
                    f"cannot open stream {self.source_id} within {open_ms / 1000:.1f} s "
                    "(is the sender running, and the URL/port right?)"
                )
        else:
            capture = cv2.VideoCapture(self.target, _APIS[self.api])
            if not capture.isOpened():
                capture.release()
                raise SourceError(f"cannot open capture device {self.target} with API {self.api} (busy or not a video device?)")
            self._apply_settings(capture, warn=first)
            # bound a blocked read so close() and unplug detection stay prompt (ignored by backends without it)
            capture.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(1000 * self.read_timeout_s))
        self._capture = capture
        self._actual = {
            "width": int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "fps": round(float(capture.get(cv2.CAP_PROP_FPS) or 0.0), 3) or None,
            "fourcc": _fourcc_text(capture.get(cv2.CAP_PROP_FOURCC)),
            "backend": capture.getBackendName(),
        }

    def _apply_settings(self, capture: cv2.VideoCapture, *, warn: bool) -> None:
        wanted = self.options
        if "fourcc" in wanted:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*wanted["fourcc"]))
        if "width" in wanted:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, wanted["width"])
        if "height" in wanted:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, wanted["height"])
        if "fps" in wanted:
            capture.set(cv2.CAP_PROP_FPS, wanted["fps"])
        refused = []
        if "fourcc" in wanted:
            got = _fourcc_text(capture.get(cv2.CAP_PROP_FOURCC))
            if got != wanted["fourcc"]:
                refused.append(f"pixel format {wanted['fourcc']} refused (device gives {got})")
        for key, prop in (("width", cv2.CAP_PROP_FRAME_WIDTH), ("height", cv2.CAP_PROP_FRAME_HEIGHT)):
            if key in wanted:
                got = int(capture.get(prop))
                if got != wanted[key]:
                    refused.append(f"{key} {wanted[key]} px refused (device gives {got} px)")
        if "fps" in wanted:
            got_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
            if abs(got_fps - wanted["fps"]) > 0.5:
                refused.append(f"frame rate {wanted['fps']:g} fps refused (device gives {got_fps:g} fps)")
        if warn:
            for text in refused:
                self.warnings.append(f"{self.source_id}: {text}")
                log.warning("%s: %s", self.source_id, text)

    # -- LiveSource hooks --------------------------------------------------------
    def _connect(self) -> None:
        self._open(first=False)

    def _disconnect(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()

    def _grab(self) -> Grab | None:
        capture = self._capture
        if capture is None:
            raise ConnectionLost("not open")
        if not capture.grab():
            raise ConnectionLost("no frame (device unplugged, stream ended or read timed out)")
        t_mono_ns = time.monotonic_ns()
        ok, bgr = capture.retrieve()
        if not ok or bgr is None:
            raise ConnectionLost("frame could not be decoded")
        return Grab(pixels=to_frame_pixels(bgr, color=self.color), t_mono_ns=t_mono_ns)

    # -- reporting -------------------------------------------------------------------
    @property
    def actual_settings(self) -> dict[str, Any]:
        """What the device/stream reports after opening (width, height, fps, fourcc, backend)."""
        return dict(self._actual)

    def info(self):
        extra: dict[str, Any] = {f"actual_{k}": v for k, v in self._actual.items()}
        if self.options:
            extra["requested"] = {k: v for k, v in self.options.items()}
        return self._live_info(first_timeout_s=max(self.open_timeout_s, 2.0), fps=self._actual.get("fps"), extra=extra)
