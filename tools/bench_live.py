#!/usr/bin/env python3
"""Benchmark of the live path over loopback: latency, grab-thread CPU, drops, recorder throughput.

An :class:`~iousguide.acquisition.igtl.ImageSender` streams OpenIGTLink IMAGE
messages at 60 fps (1080p and 800x600, grey and RGB) on 127.0.0.1; each image
carries a frame counter in its first pixels and the sender's send time in the
message timestamp. For each size it measures

* **grab-to-consumer latency**: ``monotonic_ns()`` when ``read()`` returns minus
  the frame's ``t_mono_ns`` (grab), median and p95; and **send-to-consumer**
  latency: ``time.time()`` at ``read()`` minus the message timestamp;
* **grab-thread CPU**: ``time.thread_time()`` of the grab thread / wall time;
* **drops with a consumer that keeps up** (goal 0), checked two ways: the
  source's counter and gaps in the pixel counters;
* **drops with a deliberately slow consumer** (sleeps 50 ms per frame): the
  invariant ``grabbed == delivered + dropped`` must hold exactly and the pixel
  counter gaps must equal the dropped count;
* **recorder throughput**: a :class:`~iousguide.acquisition.recorder.Recorder`
  tapping the source for the same duration: offered, written, dropped, MB/s.

Usage: ``python tools/bench_live.py [--seconds 5] [--out-dir /tmp]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from iousguide.acquisition.igtl import IgtlSource, ImageSender, counter_from_image
from iousguide.acquisition.recorder import Recorder

DISTINCT = 64  # pre-packed bodies cycled by the sender; the pixel counter wraps at 64


def _percentiles(values_ms):
    a = np.asarray(values_ms, dtype=float)
    return {"median_ms": round(float(np.median(a)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2)} if len(a) else {}


def _gaps(counters):
    return int(sum((b - a - 1) % DISTINCT for a, b in zip(counters, counters[1:])))


class _SenderProcess:
    """The ImageSender in its own process, so the sender does not share the consumer's GIL."""

    def __init__(self, shape):
        import subprocess

        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", ",".join(str(v) for v in shape)],
            stdout=subprocess.PIPE, text=True,
        )
        self.url = self.process.stdout.readline().strip()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(10)


def serve(shape) -> int:
    import signal

    sender = ImageSender(fps=60, shape=shape, spacing_mm=(0.1, 0.1), distinct_frames=DISTINCT).start()
    print(sender.url, flush=True)
    signal.sigwait({signal.SIGTERM})
    sender.stop()
    return 0


def run_case(shape, seconds, out_dir: Path, *, in_process: bool = False, verify_crc: bool = True) -> dict:
    result: dict = {"shape": list(shape), "fps_sent": 60, "sender": "thread" if in_process else "process", "verify_crc": verify_crc}
    sender_cm = (ImageSender(fps=60, shape=shape, spacing_mm=(0.1, 0.1), distinct_frames=DISTINCT)
                 if in_process else _SenderProcess(shape))
    with sender_cm as sender:
        # -- consumer that keeps up ------------------------------------------------
        source = IgtlSource(sender.url, verify_crc=verify_crc)
        grab_ms, send_ms, counters = [], [], []
        started = time.monotonic()
        source.read(timeout_s=5)  # warm-up frame
        start_stats = source.stats()
        t_wall0 = time.monotonic()
        while time.monotonic() - t_wall0 < seconds:
            frame = source.read(timeout_s=2)
            now_ns, now_unix = time.monotonic_ns(), time.time()
            grab_ms.append((now_ns - frame.t_mono_ns) / 1e6)
            send_ms.append((now_unix - frame.t_source_s) * 1e3)
            counters.append(counter_from_image(frame.pixels))
        wall_s = time.monotonic() - started
        stats = source.stats()
        source.close()
        cpu_s = source.grab_thread_cpu_s()
        result["keeps_up"] = {
            "frames": len(counters),
            "measured_fps": round(source.health().source_fps or 0.0, 1) if source.health().source_fps else None,
            "grab_to_consumer": _percentiles(grab_ms),
            "send_to_consumer": _percentiles(send_ms),
            "dropped_counter": stats["dropped"] - start_stats["dropped"],
            "dropped_pixel_gaps": _gaps(counters),
            "grab_thread_cpu_percent": None if cpu_s is None else round(100 * cpu_s / wall_s, 1),
        }
        # -- deliberately slow consumer ---------------------------------------------
        source = IgtlSource(sender.url, verify_crc=verify_crc)
        counters, dropped_at_delivery = [], []
        source.read(timeout_s=5)
        t_wall0 = time.monotonic()
        while time.monotonic() - t_wall0 < min(seconds, 3):
            frame = source.read(timeout_s=2)
            counters.append(counter_from_image(frame.pixels))
            dropped_at_delivery.append(frame.extra["dropped_total"])  # taken under the hand-off lock
            time.sleep(0.05)
        source.close()
        after = source.stats()
        result["slow_consumer_50ms"] = {
            "grabbed": after["grabbed"],
            "delivered": after["delivered"],
            "dropped": after["dropped"],
            "exact": after["grabbed"] == after["delivered"] + after["dropped"],
            "pixel_gaps_between_deliveries": _gaps(counters),
            "dropped_between_deliveries": dropped_at_delivery[-1] - dropped_at_delivery[0],
        }
        # -- recorder -----------------------------------------------------------------
        source = IgtlSource(sender.url, verify_crc=verify_crc)
        source.read(timeout_s=5)
        out = out_dir / f"bench_{shape[0]}x{shape[1]}x{shape[2] if len(shape) == 3 else 1}.igs.mha"
        if out.exists():
            out.unlink()
        recorder = Recorder(source, out, duration_s=seconds).start()
        recorder.wait(seconds + 10)
        t0 = time.monotonic()
        summary = recorder.stop()
        stop_s = time.monotonic() - t0
        source.close()
        size_mb = out.stat().st_size / 1e6 if out.exists() else 0.0
        result["recorder"] = {
            "offered": summary.offered,
            "written": summary.written,
            "dropped": summary.dropped,
            "drop_reasons": summary.drop_reasons,
            "recorded_fps": round(summary.written / summary.duration_s, 1) if summary.duration_s else None,
            "writer_mb_per_s": summary.writer_mb_per_s,
            "file_mb": round(size_mb, 1),
            "stop_s": round(stop_s, 3),
        }
        out.unlink(missing_ok=True)
    return result


def run_stream_case(size, seconds) -> dict | None:
    """HTTP MJPEG from ffmpeg on loopback through CaptureSource (the capture-card code path)."""
    import shutil
    import socket
    import subprocess

    from iousguide.acquisition.capture import CaptureSource

    if shutil.which("ffmpeg") is None:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w, h = size
    process = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate=60",
         "-c:v", "mjpeg", "-q:v", "5", "-f", "mpjpeg", "-listen", "1", f"http://127.0.0.1:{port}/"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        source = CaptureSource(f"http://127.0.0.1:{port}/")
        source.read(timeout_s=5)
        start = source.stats()
        grab_ms = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            frame = source.read(timeout_s=2)
            grab_ms.append((time.monotonic_ns() - frame.t_mono_ns) / 1e6)
        wall_s = time.monotonic() - t0
        end = source.stats()
        fps = source.health().source_fps
        source.close()
        cpu_s = source.grab_thread_cpu_s()
    finally:
        process.kill()
        process.wait(5)
    return {
        "stream": f"http mjpeg {w}x{h} @ 60 fps requested",
        "frames": len(grab_ms),
        "grabbed_fps": round((end["grabbed"] - start["grabbed"]) / wall_s, 1),
        "measured_fps": None if fps is None else round(fps, 1),
        "grab_to_consumer": _percentiles(grab_ms),
        "dropped": end["dropped"] - start["dropped"],
        "grab_thread_cpu_s_per_frame_ms": None if cpu_s is None else round(1000 * cpu_s / max(1, end["grabbed"]), 2),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out-dir", default=None, help="where the recorder writes (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print JSON lines only")
    parser.add_argument("--in-process-sender", action="store_true", help="run the sender as a thread of this process")
    parser.add_argument("--no-crc", action="store_true", help="receive without checking the CRC-64")
    parser.add_argument("--only", default=None, help="one case, e.g. 1080x1920x3")
    parser.add_argument("--no-stream", action="store_true", help="skip the HTTP MJPEG (ffmpeg) cases")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        import signal

        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        return serve(tuple(int(v) for v in args.serve.split(",")))
    cases = [(1080, 1920), (1080, 1920, 3), (600, 800), (600, 800, 3)]
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(args.out_dir) if args.out_dir else Path(tmp)
        for shape in cases:
            if args.only and "x".join(str(v) for v in shape) != args.only:
                continue
            result = run_case(shape, args.seconds, out_dir, in_process=args.in_process_sender, verify_crc=not args.no_crc)
            if args.json:
                print(json.dumps(result))
                continue
            k, s, r = result["keeps_up"], result["slow_consumer_50ms"], result["recorder"]
            name = "x".join(str(v) for v in shape)
            print(f"== {name} @ 60 fps over loopback OpenIGTLink{'' if result['verify_crc'] else ' (CRC not checked)'}")
            print(f"  keeps up: {k['frames']} frames, source {k['measured_fps']} fps; grab->consumer median "
                  f"{k['grab_to_consumer']['median_ms']} ms p95 {k['grab_to_consumer']['p95_ms']} ms; send->consumer median "
                  f"{k['send_to_consumer']['median_ms']} ms p95 {k['send_to_consumer']['p95_ms']} ms")
            print(f"            dropped {k['dropped_counter']} (pixel-counter gaps {k['dropped_pixel_gaps']}); "
                  f"grab thread CPU {k['grab_thread_cpu_percent']} %")
            print(f"  slow consumer (50 ms/frame): grabbed {s['grabbed']} = delivered {s['delivered']} + dropped "
                  f"{s['dropped']}: {'exact' if s['exact'] else 'MISMATCH'}; between first and last delivery: dropped "
                  f"{s['dropped_between_deliveries']}, pixel-counter gaps {s['pixel_gaps_between_deliveries']}")
            print(f"  recorder: offered {r['offered']}, written {r['written']}, dropped {r['dropped']} {r['drop_reasons'] or ''}; "
                  f"{r['recorded_fps']} fps, writer {r['writer_mb_per_s']} MB/s, file {r['file_mb']} MB, stop {r['stop_s']} s")
            sys.stdout.flush()
    if not args.no_stream:
        for size in [(1920, 1080), (800, 600)]:
            result = run_stream_case(size, args.seconds)
            if result is None:
                print("== streams: ffmpeg not installed, skipped")
                break
            if args.json:
                print(json.dumps(result))
                continue
            g = result["grab_to_consumer"]
            print(f"== {result['stream']} (ffmpeg sender, OpenCV FFmpeg decode in the grab thread)")
            print(f"  {result['frames']} frames read, grabbed {result['grabbed_fps']} fps; grab->consumer median {g['median_ms']} ms "
                  f"p95 {g['p95_ms']} ms; dropped {result['dropped']}; grab thread CPU {result['grab_thread_cpu_s_per_frame_ms']} ms/frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
