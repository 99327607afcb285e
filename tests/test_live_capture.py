"""Capture devices (hardware tests run only when /dev/video* exists), device specs, timestamp filter."""

from __future__ import annotations

import glob
import time

import numpy as np
import pytest

from iousguide.acquisition import open_source
from iousguide.acquisition.capture import CaptureSource, parse_device_spec, to_frame_pixels
from iousguide.acquisition.live import LiveSettings, TimestampFilter
from iousguide.errors import SettingsError, SourceError, UnsupportedFormatError

pytestmark = pytest.mark.timeout(60)

DEVICES = sorted(glob.glob("/dev/video*"))


# -- timestamp filter (PLUS line fit) -------------------------------------------------
def test_line_fit_removes_jitter_and_keeps_the_rate():
    rng = np.random.default_rng(3)
    period_s = 1 / 60
    filt = TimestampFilter()
    true = 100.0 + np.arange(200) * period_s
    arrival = true + rng.uniform(0, 0.008, size=200)  # USB delivery jitter up to 8 ms
    filtered = np.array([filt.update(i, t)[0] for i, t in enumerate(arrival)])
    raw_error = np.abs(np.diff(arrival) - period_s)[40:]
    filtered_error = np.abs(np.diff(filtered) - period_s)[40:]
    assert filtered_error.mean() < raw_error.mean() / 3
    assert np.all(np.diff(filtered)[40:] > 0)


def test_line_fit_exact_on_a_clean_clock_with_dropped_indices():
    filt = TimestampFilter()
    indices = [0, 1, 2, 4, 5, 8, 9, 10, 11, 15]  # gaps: frames dropped upstream keep their numbers
    for i in indices:
        filtered, flagged = filt.update(i, 5.0 + 0.02 * i)
        assert not flagged
        assert filtered == pytest.approx(5.0 + 0.02 * i, abs=1e-9)


def test_jump_over_half_a_second_is_flagged_and_the_fit_restarts():
    filt = TimestampFilter()
    for i in range(20):
        filt.update(i, i * 0.033)
    t_jump = 20 * 0.033 + 2.0
    filtered, flagged = filt.update(20, t_jump)
    assert flagged and filtered == t_jump
    filtered, flagged = filt.update(21, t_jump + 0.033)
    assert not flagged and filtered == pytest.approx(t_jump + 0.033)


def test_live_settings_are_validated():
    with pytest.raises(SettingsError):
        LiveSettings(stall_timeout_s=0)
    with pytest.raises(SettingsError):
        TimestampFilter(window_frames=1)


# -- device specs -------------------------------------------------------------------
def test_device_spec_options_parsed():
    target, options = parse_device_spec("device:2?width=1920&height=1080&fps=60&fourcc=mjpg&api=v4l2")
    assert target == 2
    assert options == {"width": 1920, "height": 1080, "fps": 60.0, "fourcc": "MJPG", "api": "v4l2"}
    assert parse_device_spec("/dev/video1?fourcc=YUYV") == ("/dev/video1", {"fourcc": "YUYV"})


@pytest.mark.parametrize("spec", ["device:0?width=-3", "device:0?fps=fast", "device:0?fourcc=MJPEG", "device:0?color=1", "device:0?api=gst"])
def test_bad_device_options_are_one_line_settings_errors(spec):
    with pytest.raises(SettingsError):
        parse_device_spec(spec)


def test_bad_device_spec():
    with pytest.raises(UnsupportedFormatError):
        parse_device_spec("device:first")


def test_missing_device_fails_loudly_at_open():
    index = 0
    while f"/dev/video{index}" in DEVICES:
        index += 1
    with pytest.raises(SourceError, match=f"/dev/video{index}"):
        open_source(f"device:{index}")
    with pytest.raises(SourceError, match=f"/dev/video{index}"):
        open_source(f"/dev/video{index}")


def test_bgr_to_rgb_and_grey_detection():
    bgr = np.zeros((16, 16, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's order
    rgb = to_frame_pixels(bgr)
    assert rgb.shape == (16, 16, 3) and rgb[0, 0, 2] == 200 and rgb[0, 0, 0] == 0
    grey = to_frame_pixels(np.dstack([np.full((16, 16), 90, np.uint8)] * 3))
    assert grey.shape == (16, 16) and grey[0, 0] == 90
    assert bgr[0, 0, 0] == 200  # input untouched


# -- real capture hardware ----------------------------------------------------------------
def _require_device() -> str:
    if not DEVICES:
        pytest.skip("no /dev/video* capture device on this machine")
    return DEVICES[0]


@pytest.mark.hardware
def test_hardware_capture_delivers_stamped_frames_and_health():
    device = _require_device()
    with CaptureSource(device) as source:
        frames = [source.read(timeout_s=5) for _ in range(10)]
        health = source.health()
    assert all(f.pixels.dtype == np.uint8 for f in frames)
    assert all(b.t_mono_ns > a.t_mono_ns for a, b in zip(frames, frames[1:]))
    assert health.source_fps is not None and health.source_fps > 0
    stats = source.stats()
    assert stats["grabbed"] == stats["delivered"] + stats["dropped"]


@pytest.mark.hardware
def test_hardware_refused_settings_become_warnings():
    device = _require_device()
    with CaptureSource(f"{device}?width=12345&height=7&fps=999") as source:
        warnings = list(source.warnings)
        actual = source.actual_settings
    assert any("width 12345" in w for w in warnings) and any("999" in w for w in warnings)
    assert actual["width"] != 12345


@pytest.mark.hardware
def test_hardware_close_is_prompt():
    device = _require_device()
    source = CaptureSource(device, settings=LiveSettings(join_timeout_s=2.0))
    source.read(timeout_s=5)
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 3
