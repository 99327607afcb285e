"""OpenIGTLink IMAGE client (PLUS Server, 3D Slicer OpenIGTLinkIF): ``igtl://host:port/DeviceName``.

Why not ``pyigtl.OpenIGTLinkClient``: it keeps only the newest message per
device and forgets the rest without a trace, it allocates whatever body size
the peer declares, and it does not check the CRC. This client has its own
receive thread (the :class:`~iousguide.acquisition.live.LiveSource` grab
thread) that parses the 58-byte header itself and uses pyigtl only for the
CRC-64 (C extension of crcmod).

Policy for messages that arrive faster than they are consumed (documented and
tested): **every** IMAGE message of the selected device that passes the checks
is counted as received (``health().grabbed``) and handed to frame listeners
(the recorder records all of them); the consumer gets the newest one
(latest-wins); each one it did not take is counted in ``health().dropped``.
``grabbed == delivered + dropped (+1 waiting)`` holds exactly. Nothing is lost
silently: messages that fail a check are counted by reason in
:meth:`IgtlSource.igtl_stats` (``rejected``: ``crc_mismatch``,
``body_too_large``, ``malformed``, ``unsupported_image``, ``cut_mid_message``),
other message types and other devices are counted in ``skipped``.

Silence is not a loss: Slicer sends an image only when it changes, so a quiet
connection is kept (``health()`` reports no signal after ``stall_timeout_s``);
a closed connection is noticed at once, a dead peer by TCP keep-alive (~5 s).

Safety: a declared body larger than ``max_body_bytes`` (default 64 MiB) is
refused before anything is allocated and the connection is dropped and
reopened (the stream cannot be trusted past a lying header). A bad CRC drops
the message but keeps the connection (the framing is still intact).

Geometry: the IMAGE message's 3x4 matrix (direction x spacing, centre) gives
``spacing_mm`` = norms of the i (column) and j (row) columns, source
``igtl_matrix``; the full IJK-to-world matrix (origin at pixel (0,0,0)) is in
``frame.extra["ijk_to_world"]``. An identity 3x3 part (a sender's default, 1 mm
per pixel) and a spacing outside 0.001-10 mm/px are treated as *uncalibrated*, with a
warning. Pixels are kept as sent (no flip). Time: ``t_source_s`` is the
message timestamp (UNIX seconds); the grab time is ``t_mono_ns``.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from iousguide.acquisition.base import SourceInfo
from iousguide.acquisition.live import ConnectionLost, Grab, LiveSettings, LiveSource
from iousguide.calibration import Calibration, plausible_spacing_mm
from iousguide.errors import SettingsError, SourceError, UnsupportedFormatError
from iousguide.frames import Frame

log = logging.getLogger(__name__)

DEFAULT_PORT = 18944
HEADER = struct.Struct("> H 12s 20s I I Q Q")  # version, type, device, ts sec, ts frac, body size, crc
HEADER_SIZE = HEADER.size  # 58
IMAGE_HEADER = struct.Struct("> H B B B B H H H 12f H H H H H H")  # 72 bytes
EXT_HEADER = struct.Struct("> H H I I")  # header version 2: ext size, meta header size, meta body size, msg id
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
_SCALAR_TYPES = {2: np.int8, 3: np.uint8, 4: np.int16, 5: np.uint16, 6: np.int32, 7: np.uint32, 10: np.float32, 11: np.float64}
_RECV_POLL_S = 0.1
_DISCARD_CHUNK = 1 << 16


def _crc64():
    from pyigtl.messages import CRC64  # crcmod C extension: ~2.7 ms per MB

    return CRC64


def parse_igtl_spec(spec: str) -> tuple[str, int, str, dict[str, str]]:
    """``igtl://host[:port][/DeviceName][?key=value]`` -> (host, port, device, options)."""
    parts = urlsplit(spec)
    if parts.scheme.lower() != "igtl":
        raise UnsupportedFormatError(f"not an OpenIGTLink URL: {spec!r} (expected igtl://host:port/DeviceName)")
    host = parts.hostname
    if not host:
        raise UnsupportedFormatError(f"OpenIGTLink URL without host: {spec!r} (expected igtl://host:port/DeviceName)")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise UnsupportedFormatError(f"bad port in {spec!r}") from None
    device = unquote(parts.path.lstrip("/"))
    if len(device.encode("utf-8")) > 20:
        raise UnsupportedFormatError(f"OpenIGTLink device names have at most 20 bytes, got {device!r}")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return host, port, device, options


class IgtlSource(LiveSource):
    """Live IMAGE messages from an OpenIGTLink server.

    Parameters
    ----------
    spec : str
        ``igtl://host:port/DeviceName``; without a device name every IMAGE
        message is accepted. Query keys: ``connect_timeout_s``, ``max_body_mib``,
        ``crc=0|1``.
    connect_timeout_s : float
        The constructor keeps trying to connect this long, then raises
        :class:`SourceError` (fail loudly at open).
    max_body_bytes : int
        Larger declared bodies are refused before allocation.
    verify_crc : bool
        Check the CRC-64 of every body (crcmod, about 3 ms per MB, holding the
        GIL: at 1080p RGB x 60 fps that is a whole core; ``?crc=0`` turns it off
        for trusted loopback peers).
    settings : LiveSettings, optional
        Stall/reconnect/no-signal tuning.
    """

    format_name = "igtl"

    def __init__(
        self,
        spec: str,
        *,
        connect_timeout_s: float | None = None,
        max_body_bytes: int | None = None,
        verify_crc: bool = True,
        settings: LiveSettings | None = None,
    ) -> None:
        host, port, device, options = parse_igtl_spec(spec)
        super().__init__(spec, settings=settings)
        try:
            if connect_timeout_s is None:
                connect_timeout_s = float(options.get("connect_timeout_s", 5.0))
            if max_body_bytes is None:
                max_body_bytes = int(float(options.get("max_body_mib", 64)) * 1024 * 1024)
            if "crc" in options:
                if options["crc"] not in ("0", "1"):
                    raise ValueError(f"crc must be 0 or 1, got {options['crc']!r}")
                verify_crc = options["crc"] == "1"
        except (ValueError, OverflowError) as exc:  # OverflowError: max_body_mib=inf
            raise SettingsError(f"bad option in {spec!r}: {exc}") from None
        if max_body_bytes < HEADER_SIZE or not 0 < connect_timeout_s < float("inf"):
            raise SettingsError(f"max_body_bytes and connect_timeout_s must be positive in {spec!r}")
        self.host, self.port, self.device_name = host, port, device
        self.max_body_bytes = int(max_body_bytes)
        self.verify_crc = verify_crc
        self._crc = _crc64() if verify_crc else None
        self._sock: socket.socket | None = None
        self._sock_lock = threading.Lock()
        self._header = bytearray(HEADER_SIZE)
        self._received_images = 0
        self._received_bytes = 0
        self._rejected: dict[str, int] = {}
        self._skipped: dict[str, int] = {}
        self._warned: set[str] = set()
        self._last_spacing: tuple[float, float] | None = None
        deadline = time.monotonic() + connect_timeout_s
        while True:
            try:
                self._connect()
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise SourceError(
                        f"cannot connect to OpenIGTLink server {host}:{port} within {connect_timeout_s:.1f} s: "
                        f"{exc.strerror or exc} (is PLUS Server or Slicer's OpenIGTLinkIF listening there?)"
                    ) from None
                time.sleep(0.1)
        self._start(connected=True)

    # -- connection ------------------------------------------------------------
    def _connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=1.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # a vanished peer (cable pulled, host down) is detected by the kernel within ~5 s
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", 2), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
        sock.settimeout(_RECV_POLL_S)
        with self._sock_lock:
            self._sock = sock

    def _disconnect(self) -> None:
        with self._sock_lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _check_stall(self) -> None:
        """Silence alone keeps the connection: Slicer sends an image only when it changes.

        ``health()`` still reports no signal after ``stall_timeout_s``; a dead
        peer is found by TCP keep-alive, a closed one by the socket.
        """

    def _interrupt(self) -> None:
        with self._sock_lock:
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- counters ----------------------------------------------------------------
    def _count(self, table: dict[str, int], reason: str) -> None:
        with self._cond:
            table[reason] = table.get(reason, 0) + 1

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(text)
            log.warning("%s: %s", self.source_id, text)

    def igtl_stats(self) -> dict[str, Any]:
        """Protocol counters: received IMAGE messages, bytes, rejected and skipped by reason."""
        with self._cond:
            return {
                "received_images": self._received_images,
                "received_bytes": self._received_bytes,
                "rejected": dict(self._rejected),
                "skipped": dict(self._skipped),
            }

    # -- receiving ---------------------------------------------------------------
    def _recv_into(self, view: memoryview, *, idle_ok: bool) -> bool:
        """Fill ``view`` from the socket. False = nothing arrived (only when ``idle_ok``)."""
        sock = self._sock
        if sock is None:
            raise ConnectionLost("not connected")
        total = len(view)
        pos = 0
        last_progress = time.monotonic()
        while pos < total:
            if self._stop.is_set():
                raise ConnectionLost("closing")
            try:
                n = sock.recv_into(view[pos:], total - pos)
            except socket.timeout:
                if pos == 0 and idle_ok:
                    return False
                if time.monotonic() - last_progress > self.settings.reconnect_after_s:
                    self._count(self._rejected, "cut_mid_message")
                    raise ConnectionLost(f"peer stalled mid-message ({pos} of {total} bytes)") from None
                continue
            except OSError as exc:
                if pos and not self._stop.is_set():
                    self._count(self._rejected, "cut_mid_message")
                raise ConnectionLost(str(exc)) from None
            if n == 0:
                if pos and not self._stop.is_set():
                    self._count(self._rejected, "cut_mid_message")
                    raise ConnectionLost(f"connection cut mid-message ({pos} of {total} bytes)")
                raise ConnectionLost("peer closed the connection")
            pos += n
            last_progress = time.monotonic()
        return True

    def _discard(self, size: int) -> None:
        scratch = memoryview(bytearray(min(size, _DISCARD_CHUNK)))
        left = size
        while left > 0:
            chunk = min(left, len(scratch))
            self._recv_into(scratch[:chunk], idle_ok=False)
            left -= chunk

    def _grab(self) -> Grab | None:
        header = memoryview(self._header)
        if not self._recv_into(header, idle_ok=True):
            return None
        version, mtype_raw, device_raw, ts_sec, ts_frac, body_size, crc = HEADER.unpack(header)
        mtype = mtype_raw.rstrip(b"\0 ").decode("ascii", "replace")
        device = device_raw.rstrip(b"\0 ").decode("utf-8", "replace")
        if body_size > self.max_body_bytes:
            self._count(self._rejected, "body_too_large")
            self._warn_once(
                "body_too_large",
                f"refused a {mtype or '?'} message declaring a {body_size} byte body (limit {self.max_body_bytes}); reconnecting",
            )
            raise ConnectionLost(f"declared body of {body_size} bytes exceeds {self.max_body_bytes}")
        if mtype != "IMAGE" or (self.device_name and device != self.device_name):
            self._discard(body_size)
            key = mtype if mtype != "IMAGE" else f"IMAGE from other device {device!r}"
            self._count(self._skipped, key)
            return None
        body = bytearray(body_size)
        self._recv_into(memoryview(body), idle_ok=False)
        t_mono_ns = time.monotonic_ns()  # "grab": the whole message has arrived
        if self._crc is not None and self._crc(body) != crc:
            self._count(self._rejected, "crc_mismatch")
            self._warn_once("crc", "OpenIGTLink message(s) with a wrong CRC were rejected")
            return None
        try:
            pixels, matrix = self._decode_image(version, body)
        except _Rejected as exc:
            self._count(self._rejected, exc.reason)
            self._warn_once(exc.reason, f"IMAGE message rejected: {exc}")
            return None
        spacing = self._spacing_from_matrix(matrix)
        with self._cond:
            self._received_images += 1
            self._received_bytes += HEADER_SIZE + body_size
        t_source_s = ts_sec + ts_frac / 4294967296.0
        return Grab(
            pixels=pixels,
            t_mono_ns=t_mono_ns,
            t_source_s=t_source_s,
            extra={
                "igtl_device": device,
                "igtl_timestamp_s": t_source_s,
                "t_grab_unix_s": time.time(),
                "igtl_spacing_mm": spacing,
                "ijk_to_world": matrix.tolist(),
            },
        )

    def _decode_image(self, header_version: int, body: bytearray) -> tuple[np.ndarray, np.ndarray]:
        start, end = 0, len(body)
        if header_version >= 2:
            if len(body) < EXT_HEADER.size:
                raise _Rejected("malformed", "body shorter than the extended header")
            ext_size, meta_header, meta_body, _msg_id = EXT_HEADER.unpack_from(body, 0)
            start, end = ext_size, len(body) - meta_header - meta_body
        if end - start < IMAGE_HEADER.size or start < 0:
            raise _Rejected("malformed", f"IMAGE content of {end - start} bytes is shorter than its 72-byte header")
        values = IMAGE_HEADER.unpack_from(body, start)
        components, scalar, endian = values[1], values[2], values[3]
        size_i, size_j, size_k = values[5], values[6], values[7]
        directions = np.array(values[8:17], dtype=np.float64).reshape(3, 3).T  # columns t, s, n
        centre = np.array(values[17:20], dtype=np.float64)
        sub_offset, sub_size = values[20:23], values[23:26]
        if scalar not in _SCALAR_TYPES:
            raise _Rejected("unsupported_image", f"unknown scalar type {scalar}")
        if components not in (1, 3, 4):
            raise _Rejected("unsupported_image", f"{components} components (expected 1, 3 or 4)")
        if size_k != 1:
            raise _Rejected("unsupported_image", f"3-D volume ({size_i}x{size_j}x{size_k}); iousguide takes 2-D images")
        if tuple(sub_offset) != (0, 0, 0) or tuple(sub_size) != (size_i, size_j, size_k):
            raise _Rejected("unsupported_image", "sub-volume messages are not supported")
        if size_i == 0 or size_j == 0:
            raise _Rejected("malformed", "empty image")
        dtype = np.dtype(_SCALAR_TYPES[scalar]).newbyteorder(">" if endian == 1 else "<")
        count = size_i * size_j * components
        data_start = start + IMAGE_HEADER.size
        if end - data_start != count * dtype.itemsize:
            raise _Rejected(
                "malformed", f"pixel data is {end - data_start} bytes, {size_i}x{size_j}x{components} needs {count * dtype.itemsize}"
            )
        data = np.frombuffer(body, dtype=dtype, count=count, offset=data_start)
        image = data.reshape(size_j, size_i) if components == 1 else data.reshape(size_j, size_i, components)
        if components == 4:
            image = image[:, :, :3]
        if image.dtype != np.uint8:
            self._warn_once("scalar", f"{dtype.name} pixels are clipped to 0..255 (B-mode is expected as uint8)")
            image = np.clip(image, 0, 255).astype(np.uint8)
        matrix = np.eye(4)
        matrix[:3, :3] = directions
        matrix[:3, 3] = centre - directions @ ((np.array([size_i, size_j, size_k], dtype=np.float64) - 1) / 2)
        return np.ascontiguousarray(image), matrix

    def _spacing_from_matrix(self, matrix: np.ndarray) -> tuple[float, float] | None:
        linear = matrix[:3, :3]
        if np.allclose(linear, np.eye(3), atol=0, rtol=0):
            self._warn_once("identity", "identity IJK-to-world matrix (sender default): treated as uncalibrated")
            return None
        sx, sy = float(np.linalg.norm(linear[:, 0])), float(np.linalg.norm(linear[:, 1]))
        if not plausible_spacing_mm(sx, sy):
            self._warn_once("spacing", f"implausible spacing {sx:g} x {sy:g} mm/px in the IJK-to-world matrix: uncalibrated")
            return None
        return sx, sy

    # -- consumer side -------------------------------------------------------------
    def _finish(self, frame: Frame) -> Frame:
        spacing = frame.extra.get("igtl_spacing_mm")
        self.metadata_calibration = (
            Calibration(spacing_mm=tuple(spacing), source="igtl_matrix") if spacing is not None else None
        )
        return super()._finish(frame)

    def spacing_for(self, frame: Frame) -> tuple[float, float] | None:
        if self._override_preset is not None or self._override_spacing is not None:
            return self.calibration.spacing_mm
        spacing = frame.extra.get("igtl_spacing_mm")
        return None if spacing is None else (float(spacing[0]), float(spacing[1]))

    def info(self) -> SourceInfo:
        first = self.wait_first_frame(5.0)
        spacing = first.extra.get("igtl_spacing_mm")
        if self.metadata_calibration is None and spacing is not None:
            self.metadata_calibration = Calibration(spacing_mm=tuple(spacing), source="igtl_matrix")
        stats = self.igtl_stats()
        return self._live_info(
            first_timeout_s=5.0,
            fps=None,
            extra={"device": self.device_name or "(any)", "rejected": stats["rejected"], "skipped": stats["skipped"]},
        )


class _Rejected(Exception):
    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


def image_with_counter(counter: int, shape: tuple[int, ...]) -> np.ndarray:
    """A moving test image whose first 4 pixels hold ``counter`` (uint32, big-endian).

    Shape (rows, cols) or (rows, cols, 3), uint8. Used by tests, the benchmark
    and :class:`ImageSender`; :func:`counter_from_image` reads the counter back.
    """
    rows, cols = shape[:2]
    ramp = ((np.arange(cols, dtype=np.int64) + 3 * counter) % 256).astype(np.uint8)
    image = np.broadcast_to(ramp, (rows, cols)).copy()
    if len(shape) == 3:
        image = np.stack([image, image[::-1], 255 - image], axis=2)
    stamp = np.frombuffer(int(counter % (1 << 32)).to_bytes(4, "big"), dtype=np.uint8)
    if image.ndim == 3:
        image[0, :4, :] = stamp[:, None]
    else:
        image[0, :4] = stamp
    return image


def counter_from_image(pixels: np.ndarray) -> int:
    """The counter written by :func:`image_with_counter`."""
    first = pixels[0, :4, 0] if pixels.ndim == 3 else pixels[0, :4]
    return int.from_bytes(bytes(np.asarray(first, dtype=np.uint8)), "big")


class ImageSender:
    """A minimal OpenIGTLink IMAGE server (one client at a time) for tests, benchmarks and demos.

    Sends :func:`image_with_counter` frames at ``fps`` (None = as fast as the
    socket takes them) with the IJK-to-world matrix ``diag(spacing_mm)``;
    the header timestamp is ``time.time()`` at send. Messages are packed with
    pyigtl. With ``distinct_frames`` set, that many bodies are packed once and
    cycled (the counter wraps), so the sender's CPU does not limit 1080p at 60 fps.

    Parameters
    ----------
    port : int
        0 picks a free port (see :attr:`port`).
    shape : tuple
        (rows, cols) grey or (rows, cols, 3) RGB.
    spacing_mm : (float, float)
        mm/px in x and y written into the matrix.
    max_frames : int, optional
        Stop sending after this many frames (per connection).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        device_name: str = "Image",
        shape: tuple[int, ...] = (480, 640),
        spacing_mm: tuple[float, float] = (0.1, 0.1),
        fps: float | None = 30.0,
        max_frames: int | None = None,
        distinct_frames: int | None = None,
    ) -> None:
        self.device_name = device_name
        self.shape = tuple(shape)
        self.spacing_mm = spacing_mm
        self.fps = fps
        self.max_frames = max_frames
        self.distinct_frames = distinct_frames
        self.sent = 0
        self.send_times_s: dict[int, float] = {}
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(1)
        self._listener.settimeout(0.1)
        self.host, self.port = self._listener.getsockname()[:2]
        self._stop = threading.Event()
        self._bodies: dict[int, tuple[bytes, int]] = {}
        self._client: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name="igtl-image-sender", daemon=True)

    @property
    def url(self) -> str:
        return f"igtl://{self.host}:{self.port}/{self.device_name}"

    def start(self) -> "ImageSender":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        client = self._client
        if client is not None:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5.0)
        self._listener.close()

    def __enter__(self) -> "ImageSender":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _body(self, counter: int) -> tuple[bytes, int]:
        key = counter % self.distinct_frames if self.distinct_frames else counter
        cached = self._bodies.get(key)
        if cached is not None:
            return cached
        import pyigtl

        image = image_with_counter(key, self.shape)
        matrix = np.diag([self.spacing_mm[0], self.spacing_mm[1], 1.0, 1.0])
        packed = pyigtl.ImageMessage(image[np.newaxis], ijk_to_world_matrix=matrix, device_name=self.device_name).pack()
        body, crc = packed[HEADER_SIZE:], HEADER.unpack_from(packed, 0)[6]
        if self.distinct_frames:
            self._bodies[key] = (body, crc)
        return body, crc

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            self._client = client
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            period = 1.0 / self.fps if self.fps else 0.0
            next_t = time.monotonic()
            sent_here = 0
            try:
                while not self._stop.is_set() and (self.max_frames is None or sent_here < self.max_frames):
                    body, crc = self._body(self.sent)
                    now = time.time()
                    header = HEADER.pack(1, b"IMAGE", self.device_name.encode("utf-8"), int(now),
                                         int((now % 1.0) * 4294967296.0) & 0xFFFFFFFF, len(body), crc)
                    self.send_times_s[self.sent] = now
                    client.sendall(header + body if len(body) < 65536 else header)
                    if len(body) >= 65536:
                        client.sendall(body)
                    self.sent += 1
                    sent_here += 1
                    if period:
                        next_t += period
                        delay = next_t - time.monotonic()
                        if delay > 0:
                            self._stop.wait(delay)
                        else:
                            next_t = time.monotonic()
                while not self._stop.is_set() and self.max_frames is not None:
                    self._stop.wait(0.05)  # keep the connection open after the last frame
            except OSError:
                pass
            finally:
                self._client = None
                client.close()
