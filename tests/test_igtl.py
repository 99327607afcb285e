"""OpenIGTLink client against a real pyigtl.OpenIGTLinkServer on loopback."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

pyigtl = pytest.importorskip("pyigtl")

from iousguide.acquisition import open_source  # noqa: E402
from iousguide.acquisition.igtl import IgtlSource, counter_from_image, image_with_counter, parse_igtl_spec  # noqa: E402
from iousguide.errors import SettingsError, SourceError, SourceTimeout, UnsupportedFormatError  # noqa: E402

pytestmark = pytest.mark.timeout(60)

SPACING = (0.083, 0.117)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def matrix(spacing=SPACING, *, rotate_deg: float = 0.0) -> np.ndarray:
    angle = np.deg2rad(rotate_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rotation @ np.diag([spacing[0], spacing[1], 1.0])
    m[:3, 3] = [5.0, -3.0, 0.0]
    return m


class Streamer:
    """Sends IMAGE messages with a frame counter from a pyigtl server, paced at ``fps``."""

    def __init__(self, server, *, fps=30.0, shape=(120, 160), device="Image_Reference", rotate_deg=0.0):
        self.server, self.fps, self.shape, self.device = server, fps, shape, device
        self.matrix = matrix(rotate_deg=rotate_deg)
        self.counter = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def message(self, counter):
        image = image_with_counter(counter, self.shape)[np.newaxis]
        return pyigtl.ImageMessage(image, ijk_to_world_matrix=self.matrix, device_name=self.device)

    def _run(self):
        while not self._stop.is_set():
            if self.server.is_connected():
                self.server.send_message(self.message(self.counter), wait=True)
                self.counter += 1
            self._stop.wait(1.0 / self.fps)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def server_port():
    port = free_port()
    server = pyigtl.OpenIGTLinkServer(port=port, local_server=True)
    yield server, port
    server.stop()


def read_until(source, predicate, *, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            frame = source.read(timeout_s=0.2)
        except SourceTimeout:
            continue
        if predicate(frame):
            return frame
    raise AssertionError(f"condition not met within {timeout_s} s; health {source.health()}")


def test_spec_parsing():
    assert parse_igtl_spec("igtl://10.0.0.2:18945/Image_Reference")[:3] == ("10.0.0.2", 18945, "Image_Reference")
    assert parse_igtl_spec("igtl://localhost")[:3] == ("localhost", 18944, "")
    with pytest.raises(UnsupportedFormatError):
        parse_igtl_spec("igtl://")
    with pytest.raises(UnsupportedFormatError):
        parse_igtl_spec("igtl://h:1/" + "x" * 21)


@pytest.mark.parametrize("option", ["max_body_mib=inf", "max_body_mib=nan", "max_body_mib=0",
                                    "connect_timeout_s=inf", "connect_timeout_s=nan", "connect_timeout_s=-1",
                                    "crc=2"])
def test_bad_spec_options_are_a_settings_error(option):
    """A bad option in the URL is one SettingsError before any connection (inf and nan too:
    int(inf) raised OverflowError, and a nan timeout passed the positive check)."""
    with pytest.raises(SettingsError, match="igtl://"):
        IgtlSource(f"igtl://127.0.0.1:1/Image?{option}")


def test_refused_connection_is_one_clear_error():
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(SourceError, match=f"127.0.0.1:{port}"):
        IgtlSource(f"igtl://127.0.0.1:{port}/Image", connect_timeout_s=0.5)
    assert time.monotonic() - started < 3


def test_stream_30fps_spacing_orientation_timestamps(server_port):
    server, port = server_port
    streamer = Streamer(server, rotate_deg=30.0).start()
    try:
        with open_source(f"igtl://127.0.0.1:{port}/Image_Reference") as source:
            assert isinstance(source, IgtlSource)
            frames = [source.read(timeout_s=3.0) for _ in range(15)]
            health = source.health()
            info = source.info()
    finally:
        streamer.stop()
    last = frames[-1]
    # spacing = column norms of the rotated matrix (float32 on the wire)
    assert last.spacing_mm == pytest.approx(SPACING, rel=1e-6)
    assert last.extra["spacing_source"] == "igtl_matrix"
    sent = np.asarray(last.extra["ijk_to_world"])
    assert sent[:3, :3] == pytest.approx(matrix(rotate_deg=30.0)[:3, :3], abs=1e-6)
    assert sent[:3, 3] == pytest.approx([5.0, -3.0, 0.0], abs=1e-4)  # origin recovered from the sent centre
    counters = [counter_from_image(f.pixels) for f in frames]
    assert counters == sorted(counters) and len(set(counters)) == len(counters)
    # message time (sender's wall clock) and grab time kept side by side
    assert abs(last.t_source_s - time.time()) < 5
    assert last.t_mono_ns <= time.monotonic_ns()
    assert np.all(np.diff([f.t_source_s for f in frames]) > 0)
    after = source.stats()  # closed: a frame left in the slot is counted as dropped
    assert after["grabbed"] == after["delivered"] + after["dropped"] and after["delivered"] == 15
    assert 5 < health.source_fps < 45  # 30 fps sent; loose: the machine is shared
    assert info.frames is None and info.spacing_source == "igtl_matrix" and (info.width, info.height) == (160, 120)
    assert last.extra["health"]["grabbed"] >= 15


def test_rgb_images_and_uncalibrated_identity(server_port):
    server, port = server_port
    with open_source(f"igtl://127.0.0.1:{port}/Rgb") as source:
        deadline = time.monotonic() + 5
        while not server.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
        image = image_with_counter(7, (60, 80, 3))
        server.send_message(pyigtl.ImageMessage(image[np.newaxis], device_name="Rgb"), wait=True)  # identity matrix
        frame = source.read(timeout_s=3)
    assert frame.pixels.shape == (60, 80, 3)
    assert np.array_equal(frame.pixels, image)  # RGB kept as sent
    assert frame.spacing_mm is None  # identity matrix = sender default, not a calibration
    assert any("identity" in w for w in source.warnings)


def test_a_spacing_in_metres_is_uncalibrated_not_a_crash(server_port):
    """An IJK-to-world matrix in metres (1e-4 m per pixel read as mm/px: a unit slip) is below any
    ultrasound pixel: the frame is uncalibrated, with one warning. (Before, such a matrix passed the
    source's own check and then raised CalibrationError in the consumer.)"""
    server, port = server_port
    with open_source(f"igtl://127.0.0.1:{port}/Metres") as source:
        deadline = time.monotonic() + 5
        while not server.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
        image = image_with_counter(3, (60, 80))
        server.send_message(pyigtl.ImageMessage(image[np.newaxis], device_name="Metres",
                                                ijk_to_world_matrix=np.diag([1e-4, 1e-4, 1e-4, 1.0])), wait=True)
        frame = source.read(timeout_s=3)
        info = source.info()
    assert frame.spacing_mm is None and info.spacing_source != "igtl_matrix"
    assert any("implausible spacing" in w for w in source.warnings)


def test_server_restart_reconnects(server_port):
    server, port = server_port
    streamer = Streamer(server).start()
    with IgtlSource(f"igtl://127.0.0.1:{port}/Image_Reference") as source:
        source.read(timeout_s=3)
        streamer.stop()
        server.stop()
        health = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            health = source.health()
            if health.no_signal:
                break
            source.try_read()
            time.sleep(0.05)
        assert health is not None and health.no_signal, health
        server2 = pyigtl.OpenIGTLinkServer(port=port, local_server=True)
        streamer2 = Streamer(server2).start()
        try:
            frame = read_until(source, lambda f: f.extra["health"]["reconnects"] >= 1, timeout_s=15)
            assert source.health().status == "ok" and not source.health().no_signal
            assert frame.spacing_mm == pytest.approx(SPACING, rel=1e-6)
        finally:
            streamer2.stop()
            server2.stop()


def test_burst_faster_than_consumption_counts_every_message(server_port):
    server, port = server_port
    streamer = Streamer(server)
    with IgtlSource(f"igtl://127.0.0.1:{port}/Image_Reference") as source:
        deadline = time.monotonic() + 5
        while not server.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
        n = 80  # below pyigtl's 100-message outgoing queue, so the server itself loses nothing
        for i in range(n):
            server.send_message(streamer.message(i), wait=False)
        server.send_message(streamer.message(n), wait=True)
        received = []
        deadline = time.monotonic() + 10
        while source.health().grabbed < n + 1 and time.monotonic() < deadline:
            frame = source.try_read()  # a slow consumer: one read per 50 ms
            if frame is not None:
                received.append(counter_from_image(frame.pixels))
            time.sleep(0.05)
        last = source.read(timeout_s=2) if source.pending else None
        if last is not None:
            received.append(counter_from_image(last.pixels))
        health = source.health()
        stats = source.igtl_stats()
    assert stats["received_images"] == n + 1 == health.grabbed
    assert health.grabbed == health.delivered + health.dropped  # nothing waiting, nothing lost silently
    assert health.dropped > 0 and health.delivered == len(received)
    assert received[-1] == n  # latest wins
    assert received == sorted(received)
    assert stats["rejected"] == {} and stats["skipped"] == {}


def test_other_devices_are_skipped_and_counted(server_port):
    server, port = server_port
    with IgtlSource(f"igtl://127.0.0.1:{port}/Wanted") as source:
        deadline = time.monotonic() + 5
        while not server.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
        streamer = Streamer(server, device="Other")
        server.send_message(streamer.message(1), wait=True)
        server.send_message(pyigtl.TransformMessage(np.eye(4), device_name="Probe"), wait=True)
        streamer.device = "Wanted"
        server.send_message(streamer.message(2), wait=True)
        frame = source.read(timeout_s=3)
        stats = source.igtl_stats()
    assert counter_from_image(frame.pixels) == 2
    assert stats["skipped"] == {"IMAGE from other device 'Other'": 1, "TRANSFORM": 1}


def test_close_is_prompt_while_idle_and_after_peer_vanished(server_port):
    server, port = server_port
    source = IgtlSource(f"igtl://127.0.0.1:{port}/Image_Reference")
    server.stop()
    time.sleep(0.2)
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 2
    assert source.health().status == "closed"
    assert not source._thread.is_alive()


def test_info_command_on_a_live_openigtlink_source(server_port, capsys):
    import json

    from iousguide.cli import main

    server, port = server_port
    streamer = Streamer(server).start()
    try:
        assert main(["info", f"igtl://127.0.0.1:{port}/Image_Reference", "--json"]) == 0
    finally:
        streamer.stop()
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "igtl" and info["frames"] is None
    assert (info["width"], info["height"]) == (160, 120)
    assert info["spacing_mm"] == pytest.approx(list(SPACING), rel=1e-6) and info["spacing_source"] == "igtl_matrix"
