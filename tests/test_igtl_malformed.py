"""A hostile/broken OpenIGTLink peer on a raw loopback socket: every bad message rejected and counted."""

from __future__ import annotations

import socket
import struct
import threading
import time
import tracemalloc

import numpy as np
import pytest

pyigtl = pytest.importorskip("pyigtl")

from iousguide.acquisition.igtl import HEADER, HEADER_SIZE, IgtlSource, counter_from_image, image_with_counter  # noqa: E402
from iousguide.acquisition.live import LiveSettings  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def packed_image(counter: int, device: str = "Image") -> bytes:
    image = image_with_counter(counter, (40, 50))[np.newaxis]
    return pyigtl.ImageMessage(image, ijk_to_world_matrix=np.diag([0.1, 0.1, 1, 1]), device_name=device).pack()


def with_header(message: bytes, **changes) -> bytes:
    fields = list(HEADER.unpack_from(message, 0))
    names = ["version", "type", "device", "sec", "frac", "body_size", "crc"]
    for key, value in changes.items():
        fields[names.index(key)] = value
    return HEADER.pack(*fields) + message[HEADER_SIZE:]


class RawPeer:
    """Accepts connections; each connection sends the next scripted list of byte chunks then waits."""

    def __init__(self, scripts):
        self.scripts = list(scripts)
        self.connections = 0
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            script = self.scripts.pop(0) if self.scripts else [("wait",)]
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, script), daemon=True).start()

    def _serve(self, conn, script):
            try:
                for step in script:
                    if step[0] == "send":
                        conn.sendall(step[1])
                    elif step[0] == "close":
                        break
                    elif step[0] == "wait":
                        while not self._stop.is_set():
                            self._stop.wait(0.05)
                    time.sleep(0.02)
            except OSError:
                pass
            finally:
                conn.close()

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self.listener.close()


FAST = LiveSettings(reconnect_backoff_s=0.05, reconnect_backoff_max_s=0.2)


def wait_for(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_wrong_crc_is_rejected_and_the_connection_kept():
    good1, bad, good2 = packed_image(1), packed_image(2), packed_image(3)
    bad = with_header(bad, crc=HEADER.unpack_from(bad, 0)[6] ^ 0x1)
    peer = RawPeer([[("send", good1), ("send", bad), ("send", good2), ("wait",)]])
    try:
        with IgtlSource(f"igtl://127.0.0.1:{peer.port}/Image", settings=FAST) as source:
            assert wait_for(lambda: source.health().grabbed == 2)
            stats = source.igtl_stats()
            frame = source.read(timeout_s=1)
            assert counter_from_image(frame.pixels) == 3
            assert source.health().reconnects == 0 and peer.connections == 1
    finally:
        peer.stop()
    assert stats["rejected"] == {"crc_mismatch": 1}
    assert any("CRC" in w for w in source.warnings)


def test_unknown_type_is_skipped_and_counted():
    body = b"\x00" * 37
    unknown = struct.pack("> H 12s 20s I I Q Q", 1, b"FOOBAR", b"Image", 0, 0, len(body), pyigtl.messages.CRC64(body)) + body
    peer = RawPeer([[("send", unknown), ("send", packed_image(5)), ("wait",)]])
    try:
        with IgtlSource(f"igtl://127.0.0.1:{peer.port}/Image", settings=FAST) as source:
            frame = source.read(timeout_s=3)
            stats = source.igtl_stats()
    finally:
        peer.stop()
    assert counter_from_image(frame.pixels) == 5
    assert stats["skipped"] == {"FOOBAR": 1}


def test_absurd_body_size_refused_without_allocating_then_reconnects():
    absurd = HEADER.pack(1, b"IMAGE", b"Image", 0, 0, 1 << 40, 0)  # 1 TiB declared
    peer = RawPeer([[("send", absurd), ("wait",)], [("send", packed_image(9)), ("wait",)]])
    tracemalloc.start()
    try:
        with IgtlSource(f"igtl://127.0.0.1:{peer.port}/Image", settings=FAST) as source:
            frame = source.read(timeout_s=5)  # comes from the second connection
            stats = source.igtl_stats()
            health = source.health()
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        peer.stop()
    assert counter_from_image(frame.pixels) == 9
    assert stats["rejected"] == {"body_too_large": 1}
    assert health.reconnects == 1
    assert peak_bytes < 16 * 1024 * 1024  # nothing near the declared size was allocated


def test_body_above_configured_cap_refused():
    big = packed_image(1)
    peer = RawPeer([[("send", big), ("wait",)]])
    try:
        with IgtlSource(f"igtl://127.0.0.1:{peer.port}/Image", max_body_bytes=1000, settings=FAST) as source:
            assert wait_for(lambda: source.igtl_stats()["rejected"].get("body_too_large", 0) >= 1)
            assert source.health().grabbed == 0
    finally:
        peer.stop()


def test_connection_cut_mid_message_counted_and_recovered():
    message = packed_image(4)
    peer = RawPeer([
        [("send", packed_image(1)), ("send", message[: HEADER_SIZE + 500]), ("close",)],  # cut inside the body
        [("send", message[:30]), ("close",)],  # cut inside the header
        [("send", packed_image(6)), ("wait",)],
    ])
    try:
        with IgtlSource(f"igtl://127.0.0.1:{peer.port}/Image", settings=FAST) as source:
            frame = None
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                frame = source.read(timeout_s=1)
                if counter_from_image(frame.pixels) == 6:
                    break
            stats = source.igtl_stats()
            health = source.health()
    finally:
        peer.stop()
    assert frame is not None and counter_from_image(frame.pixels) == 6
    assert stats["rejected"] == {"cut_mid_message": 2}
    assert health.reconnects == 2 and health.grabbed == 2


def test_malformed_image_content_rejected():
    message = packed_image(2)
    body = bytearray(message[HEADER_SIZE:])
    struct.pack_into("> H H H", body, 6, 4000, 4000, 1)  # claims 4000x4000 px but carries 50x40
    struct.pack_into("> H H H", body, 66, 4000, 4000, 1)  # (sub-volume = whole image, consistently)
    crc = pyigtl.messages.CRC64(bytes(body))
    bad = with_header(message[:HEADER_SIZE] + bytes(body), crc=crc)
    peer = RawPeer([[("send", bad), ("send", packed_image(3)), ("wait",)]])
    try:
        with IgtlSource(f"igtl://127.0.0.1:{peer.port}/Image", settings=FAST) as source:
            frame = source.read(timeout_s=3)
            stats = source.igtl_stats()
    finally:
        peer.stop()
    assert counter_from_image(frame.pixels) == 3
    assert stats["rejected"] == {"malformed": 1}


def test_crc_check_can_be_turned_off_for_trusted_peers():
    good = packed_image(2)
    bad = with_header(good, crc=HEADER.unpack_from(good, 0)[6] ^ 0x1)
    peer = RawPeer([[("send", bad), ("wait",)]])
    try:
        with IgtlSource(f"igtl://127.0.0.1:{peer.port}/Image?crc=0", settings=FAST) as source:
            frame = source.read(timeout_s=3)
            assert not source.verify_crc and source.igtl_stats()["rejected"] == {}
    finally:
        peer.stop()
    assert counter_from_image(frame.pixels) == 2
