"""Recorder: lossless tap on a live source, replay equality, drops with reasons, kill -9 safety, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyigtl")

from iousguide.acquisition import open_source  # noqa: E402
from iousguide.acquisition.igtl import IgtlSource, ImageSender, counter_from_image, image_with_counter  # noqa: E402
from iousguide.acquisition.recorder import Recorder  # noqa: E402
from iousguide.errors import SettingsError  # noqa: E402
from iousguide.frames import Frame  # noqa: E402

pytestmark = pytest.mark.timeout(60)
SPACING = (0.091, 0.103)


def test_record_then_replay_gives_the_same_pixels_and_times(tmp_path):
    out = tmp_path / "live.igs.mha"
    seen: list[Frame] = []
    with ImageSender(fps=60, shape=(120, 160), spacing_mm=SPACING) as sender:
        with IgtlSource(sender.url) as source:
            source.add_frame_listener(seen.append)
            recorder = Recorder(source, out, max_frames=40).start()
            assert recorder.wait(10)
            summary = recorder.stop()
            source.remove_frame_listener(seen.append)
    assert summary.offered == 40 == summary.written and summary.dropped == 0 and summary.drop_reasons == {}
    assert summary.stopped_because == "max_frames" and Path(summary.path) == out
    assert not Path(summary.partial_path).exists()
    by_time = {f.t_source_s: f for f in seen}
    with open_source(out) as replay:
        frames = list(replay)
    assert len(frames) == 40
    for frame in frames:
        original = by_time[frame.t_source_s]  # identical float timestamp (message time)
        assert np.array_equal(frame.pixels, original.pixels)
        assert frame.spacing_mm == pytest.approx(SPACING, rel=1e-6)  # the OpenIGTLink matrix, kept
    counters = [counter_from_image(f.pixels) for f in frames]
    assert counters == list(range(counters[0], counters[0] + 40))  # consecutive: no frame lost


def test_a_slow_writer_drops_with_reason_and_counts_add_up(tmp_path):
    out = tmp_path / "burst.igs.mha"
    frames = [
        Frame(pixels=image_with_counter(i, (1080, 1920)), index=i, t_mono_ns=time.monotonic_ns(), t_source_s=i / 60)
        for i in range(6)
    ]
    recorder = Recorder(None, out, queue_bytes=1).start()  # queue floor: 4 frames
    queued = [recorder.offer(frames[i % 6].replace(index=i, t_source_s=i / 60)) for i in range(300)]
    summary = recorder.stop()
    assert summary.offered == 300
    assert summary.written + summary.dropped == 300
    assert summary.dropped > 0 and summary.drop_reasons == {"writer_queue_full": summary.dropped}
    assert summary.written == sum(queued)
    with open_source(out) as replay:
        numbers = [f.extra.get("frame_number") for f in replay]
    assert numbers == [i for i, ok in enumerate(queued) if ok]


def test_size_change_is_dropped_with_reason(tmp_path):
    frames = [Frame(pixels=np.full((40, 50), i, np.uint8), index=i, t_mono_ns=i, t_source_s=float(i)) for i in range(5)]
    frames[2] = frames[2].replace(pixels=np.zeros((41, 50), np.uint8))
    recorder = Recorder(frames, tmp_path / "sizes.igs.mha").start()
    assert recorder.wait(10)
    summary = recorder.stop()
    assert (summary.offered, summary.written, summary.drop_reasons) == (5, 4, {"size_changed": 1})
    assert summary.stopped_because == "end_of_source"


def test_duration_limit_and_mp4_sidecar(tmp_path):
    frames = [Frame(pixels=image_with_counter(i, (64, 96, 3)), index=i, t_mono_ns=i, t_source_s=10 + i * 0.1) for i in range(30)]
    out = tmp_path / "clip.igs.mha"
    recorder = Recorder(iter(frames), out, duration_s=1.0, mp4=True, mp4_fps=10).start()
    assert recorder.wait(10)
    summary = recorder.stop()
    assert summary.written == 10 and summary.stopped_because == "duration_s"  # t = 10.0 .. 10.9
    sidecar = json.loads(Path(summary.sidecar_path).read_text())
    assert [f["t_source_s"] for f in sidecar["frames"]] == [10 + i * 0.1 for i in range(10)]
    with open_source(summary.mp4_path) as video:
        assert len(video) == 10 and video.frame_at(0).pixels.shape == (64, 96, 3)


def test_existing_output_refused(tmp_path):
    out = tmp_path / "x.igs.mha"
    out.write_bytes(b"keep me")
    with pytest.raises(SettingsError, match="exists"):
        Recorder([], out)
    assert out.read_bytes() == b"keep me"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "iousguide", *args]


def test_cli_record_from_openigtlink(tmp_path):
    out = tmp_path / "cli.igs.mha"
    with ImageSender(fps=60, shape=(60, 80), spacing_mm=SPACING) as sender:
        result = subprocess.run(_cli("record", sender.url, str(out), "--max-frames", "25"), capture_output=True, text=True, timeout=40)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["written"] == 25 and summary["dropped"] == 0 and summary["source"]["igtl"]["rejected"] == {}
    with open_source(out) as replay:
        assert replay.length == 25


def test_kill_9_mid_recording_leaves_an_openable_recording(tmp_path):
    out = tmp_path / "killed.igs.mha"
    partial = Path(str(out) + ".partial")
    with ImageSender(fps=60, shape=(120, 160), spacing_mm=SPACING) as sender:
        process = subprocess.Popen(_cli("record", sender.url, str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            log = partial / "frames.log"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if log.exists() and log.read_bytes().count(b"Committed") >= 20:
                    break
                time.sleep(0.05)
            else:
                pytest.fail(f"recording did not start: {process.stderr.read1() if process.poll() is not None else 'still running'}")
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)
    assert process.returncode == -signal.SIGKILL
    assert not out.exists() and partial.is_dir()
    with open_source(partial) as replay:
        frames = list(replay)
    assert len(frames) >= 20
    counters = [counter_from_image(f.pixels) for f in frames]
    assert counters == list(range(counters[0], counters[0] + len(frames)))  # every frame up to the last
    assert all(np.diff([f.t_source_s for f in frames]) > 0)
    assert frames[0].spacing_mm == pytest.approx(SPACING, rel=1e-6)
    from iousguide.acquisition.plus_writer import recover

    final = recover(partial)
    with open_source(final) as replay:
        assert replay.length == len(frames)


def test_record_a_file_source_copies_every_frame(tmp_path):
    first = tmp_path / "first.igs.mha"
    frames = [Frame(pixels=image_with_counter(i, (30, 40)), index=i, t_mono_ns=i, t_source_s=100 + i / 25,
                    spacing_mm=SPACING) for i in range(12)]
    summary = Recorder(frames, first).start()
    summary.wait(10)
    summary.stop()
    second = tmp_path / "second.igs.mha"
    from iousguide.cli import main

    assert main(["record", str(first), str(second)]) == 0
    with open_source(first) as a, open_source(second) as b:
        fa, fb = list(a), list(b)
    assert len(fa) == len(fb) == 12
    assert all(np.array_equal(x.pixels, y.pixels) and x.t_source_s == y.t_source_s for x, y in zip(fa, fb))
    assert fb[0].spacing_mm == pytest.approx(SPACING)
