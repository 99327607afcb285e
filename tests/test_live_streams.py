"""Network streams served on loopback by a real ffmpeg process (UDP, TCP, HTTP MJPEG).

ffmpeg is Debian's binary (``apt-get install ffmpeg``); without it these tests skip visibly.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import numpy as np
import pytest

from iousguide.acquisition import open_source
from iousguide.acquisition.capture import CaptureSource
from iousguide.acquisition.live import LiveSettings
from iousguide.errors import SourceError, SourceTimeout

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg binary not installed (apt-get install ffmpeg)"),
]


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sender_command(protocol: str, port: int) -> tuple[list[str], str]:
    source = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi",
              "-i", "testsrc2=size=320x240:rate=30"]
    if protocol == "udp":
        return source + ["-c:v", "mpeg2video", "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"], f"udp://127.0.0.1:{port}"
    if protocol == "tcp":
        return source + ["-c:v", "mpeg2video", "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"], f"tcp://127.0.0.1:{port}"
    # HTTP multipart MJPEG, what IP cameras and many streaming boxes serve
    return source + ["-c:v", "mjpeg", "-q:v", "5", "-f", "mpjpeg", "-listen", "1", f"http://127.0.0.1:{port}/"], f"http://127.0.0.1:{port}/"


#: Two fresh CI runs (of many) saw the first stream tests of the suite fail to open within the
#: product's 5 s open timeout while their ffmpeg sender was running and silent (exit code -9 from
#: the teardown's kill, empty stderr); the same tests pass alone and in other runs. These tests
#: are about recovery and dropping, not about how fast ffmpeg starts on a busy machine: the
#: sender's listening socket is waited for, and the first open is given longer.
SENDER_READY_TIMEOUT_S = 10.0
STREAM_OPEN_TIMEOUT_S = 15.0


def _wait_listening(port: int, *, timeout_s: float) -> None:
    """Wait until a TCP socket listens on 127.0.0.1:``port`` (read from /proc/net/tcp, so the
    sender's single accept is not used up); returns silently after ``timeout_s`` (the test's own
    open then fails with its message)."""
    want = f"0100007F:{port:04X}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open("/proc/net/tcp") as fh:
                if any(fields[1] == want and fields[3] == "0A"  # local address, state LISTEN
                       for fields in (line.split() for line in list(fh)[1:]) if len(fields) > 3):
                    return
        except OSError:
            return  # no /proc: fall back to the fixed wait above
        time.sleep(0.05)


class Sender:
    def __init__(self, protocol, log_path):
        self.protocol = protocol
        self.port = free_port(socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM)
        self.command, self.url = sender_command(protocol, self.port)
        self.process = None
        self.log_path = log_path  # ffmpeg's stderr: printed with a failing test's report

    def start(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=log)
        time.sleep(0.3)  # let ffmpeg bind/listen
        if self.protocol != "udp":
            _wait_listening(self.port, timeout_s=SENDER_READY_TIMEOUT_S)
        return self

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def report(self) -> str:
        code = None if self.process is None else self.process.returncode
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"ffmpeg {self.protocol} sender on port {self.port}: exit code {code}; stderr: {text[-2000:] or '(empty)'}"


@pytest.fixture
def sender(tmp_path):
    made = []

    def make(protocol):
        s = Sender(protocol, tmp_path / f"ffmpeg-{protocol}-{len(made)}.log").start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill()
        # shown in the report of a failing test only (pytest captures it): why a sender did not
        # serve (one fresh CI run saw every stream fail to open within 5 s; the same tests passed
        # before and after)
        print(s.report())


FAST = LiveSettings(stall_timeout_s=0.5, reconnect_backoff_s=0.1, reconnect_backoff_max_s=0.5)


@pytest.mark.parametrize("protocol", ["udp", "tcp", "http"])
def test_frames_arrive_then_no_signal_then_recovery(sender, protocol):
    s = sender(protocol)
    with CaptureSource(s.url, settings=FAST, read_timeout_s=0.5, open_timeout_s=STREAM_OPEN_TIMEOUT_S) as source:
        assert source.format_name == f"stream/{protocol}"
        frames = [source.read(timeout_s=5) for _ in range(10)]
        assert all(f.pixels.shape == (240, 320, 3) for f in frames)  # testsrc2 is colour: RGB
        assert [f.index for f in frames] == sorted(f.index for f in frames)
        assert frames[-1].extra["health"]["status"] == "ok"
        # timestamps: filtered (line fit) and unfiltered grab times, both monotonic seconds
        assert all(abs(f.t_source_s - f.extra["t_unfiltered_s"]) < 0.5 for f in frames)
        # kill the sender: the source reports no signal
        s.process.kill()
        s.process.wait(5)
        deadline = time.monotonic() + 5
        health = source.health()
        while not health.no_signal and time.monotonic() < deadline:
            source.try_read()
            time.sleep(0.05)
            health = source.health()
        assert health.no_signal, health
        assert health.status in ("no_signal", "reconnecting")
        with pytest.raises(SourceTimeout):
            while True:  # drain what was buffered, then nothing comes
                source.read(timeout_s=0.3)
        # restart on the same port: frames again, counted as a reconnect
        s.start()
        deadline = time.monotonic() + 20
        recovered = None
        while time.monotonic() < deadline:
            try:
                frame = source.read(timeout_s=0.5)
            except SourceTimeout:
                continue
            if frame.extra["health"]["reconnects"] >= 1:
                recovered = frame
                break
        assert recovered is not None, source.health()
        health = source.health()
        assert not health.no_signal and health.status == "ok"
    stats = source.stats()
    assert stats["grabbed"] == stats["delivered"] + stats["dropped"]


def test_open_source_routes_stream_urls(sender):
    s = sender("http")
    with open_source(s.url) as source:
        assert isinstance(source, CaptureSource)
        info = source.info()
    assert info.frames is None and (info.width, info.height) == (320, 240) and info.channels == 3
    assert info.spacing_mm is None and info.spacing_source == "none"


def test_stream_that_is_not_there_fails_fast_with_one_line():
    port = free_port()
    started = time.monotonic()
    with pytest.raises(SourceError, match="cannot open stream"):
        CaptureSource(f"tcp://127.0.0.1:{port}", open_timeout_s=1.0)
    assert time.monotonic() - started < 5


def test_close_does_not_hang_when_sender_vanished(sender):
    s = sender("tcp")
    source = CaptureSource(s.url, settings=FAST, read_timeout_s=0.5, open_timeout_s=STREAM_OPEN_TIMEOUT_S)
    source.read(timeout_s=5)
    s.kill()
    time.sleep(0.2)
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < FAST.join_timeout_s + 0.5
    assert source.health().status == "closed"


def test_consumer_that_keeps_up_drops_nothing_and_slow_one_drops_counted(sender):
    s = sender("http")
    with CaptureSource(s.url, open_timeout_s=STREAM_OPEN_TIMEOUT_S) as source:
        source.read(timeout_s=5)
        for _ in range(20):
            source.read(timeout_s=2)
        fast = source.stats()
        time.sleep(0.5)  # a slow consumer: ~15 frames arrive, only the newest is kept
        before = source.stats()
        frame = source.read(timeout_s=1)
        after = source.stats()
    assert fast["dropped"] <= 2  # a consumer that keeps up; ffmpeg -re may burst two frames at the start
    assert after["dropped"] - before["dropped"] == 0 and before["dropped"] - fast["dropped"] >= 5
    assert frame.extra["grab_seq"] == after["grabbed"] - 1 - after["pending"]
    assert np.asarray(frame.pixels).dtype == np.uint8
