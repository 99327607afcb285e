"""No-signal detection (frozen, black, timeout) and per-frame health, on a real loopback OpenIGTLink peer."""

from __future__ import annotations

import time

import numpy as np
import pytest

pyigtl = pytest.importorskip("pyigtl")

from iousguide.acquisition.igtl import IgtlSource, ImageSender  # noqa: E402
from iousguide.acquisition.live import LiveSettings  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def test_frozen_frames_flagged_after_frozen_after_s():
    settings = LiveSettings(frozen_after_s=0.4)
    with ImageSender(fps=30, distinct_frames=1) as sender:  # the same image again and again
        with IgtlSource(sender.url, settings=settings) as source:
            first = source.read(timeout_s=3)
            assert first.extra["signal"] == "ok"
            deadline = time.monotonic() + 5
            frame = first
            while frame.extra["signal"] != "frozen" and time.monotonic() < deadline:
                frame = source.read(timeout_s=1)
            frozen_after_s = (frame.t_mono_ns - first.t_mono_ns) / 1e9
            health = source.health()
    assert frame.extra["signal"] == "frozen"
    assert 0.4 <= frozen_after_s < 1.5
    assert health.no_signal and health.status == "no_signal" and "frozen" in health.message
    assert frame.extra["health"]["no_signal"] is True


def test_moving_frames_never_frozen_and_health_on_every_frame():
    with ImageSender(fps=30) as sender:
        with IgtlSource(sender.url, settings=LiveSettings(frozen_after_s=0.2)) as source:
            frames = [source.read(timeout_s=3) for _ in range(15)]
            health = source.health()
    assert all(f.extra["signal"] == "ok" for f in frames)
    assert not health.no_signal and health.status == "ok"
    for f in frames:
        h = f.extra["health"]
        assert set(h) >= {"source_fps", "grabbed", "delivered", "dropped", "reconnects", "no_signal", "status"}
        assert f.extra["dropped_total"] == h["dropped"]
        assert h["grabbed"] == h["delivered"] + h["dropped"]  # the slot was just emptied by this delivery
    assert health.frame_age_ms is not None and health.frame_age_ms < 1000


def test_black_frames_flagged():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = pyigtl.OpenIGTLinkServer(port=port, local_server=True)
    try:
        with IgtlSource(f"igtl://127.0.0.1:{port}/Image") as source:
            deadline = time.monotonic() + 5
            while not server.is_connected() and time.monotonic() < deadline:
                time.sleep(0.01)
            black = np.full((1, 60, 80), 3, np.uint8)
            server.send_message(pyigtl.ImageMessage(black, ijk_to_world_matrix=np.diag([0.1, 0.1, 1, 1]), device_name="Image"), wait=True)
            frame = source.read(timeout_s=3)
            health = source.health()
    finally:
        server.stop()
    assert frame.extra["signal"] == "black"
    assert health.no_signal and "black" in health.message


def test_timeout_no_signal_when_peer_stops_sending():
    with ImageSender(fps=30, max_frames=5) as sender:  # sends 5 frames then stays connected, silent
        settings = LiveSettings(stall_timeout_s=0.3, reconnect_after_s=0.4)  # OpenIGTLink keeps quiet connections
        with IgtlSource(sender.url, settings=settings) as source:
            for _ in range(5):
                source.read(timeout_s=3)
            assert not source.health().no_signal
            time.sleep(0.5)
            health = source.health()
            assert source.no_signal_reason == "timeout"
    assert health.no_signal and health.status == "no_signal" and health.frame_age_ms > 300
    assert health.reconnects == 0  # silence alone keeps the connection (Slicer sends only on change)


def test_give_up_after_s_turns_into_device_lost():
    from iousguide.errors import DeviceLostError

    sender = ImageSender(fps=30).start()
    settings = LiveSettings(stall_timeout_s=0.2, reconnect_backoff_s=0.05, reconnect_backoff_max_s=0.1, give_up_after_s=0.6)
    with IgtlSource(sender.url, settings=settings) as source:
        source.read(timeout_s=3)
        sender.stop()  # the server is gone for good
        started = time.monotonic()
        with pytest.raises(DeviceLostError, match="gave up"):
            while time.monotonic() - started < 10:
                source.read(timeout_s=0.2) if source.pending else source.try_read() or time.sleep(0.05)
        assert time.monotonic() - started < 5
        assert source.health().status == "no_signal"


def test_close_wakes_a_reader_blocked_without_timeout():
    import threading

    from iousguide.errors import SourceClosedError

    with ImageSender(fps=30, max_frames=1) as sender:
        source = IgtlSource(sender.url)
        source.read(timeout_s=3)
        outcome = []

        def reader():
            try:
                source.read()  # no timeout: blocks until a frame or close
            except SourceClosedError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(0.2)
        started = time.monotonic()
        source.close()
        thread.join(3)
        assert not thread.is_alive() and len(outcome) == 1
        assert time.monotonic() - started < 2
