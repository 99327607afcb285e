"""Calibration helpers and ``iousguide calibrate``.

Truth comes from DICOM files whose Sequence of Ultrasound Regions gives crop and
spacing (read here with pydicom, not through iousguide), and from synthetic
screens drawn here with a known region and tick period.

Tolerance for the ruler: the detector reports a standard error (least-squares
fit of the tick positions, at least the 1/sqrt(12) px quantisation of ticks
drawn at whole pixels); the estimate must lie within 3 standard errors of the
truth (a 3-sigma check, not a value fitted to any one file).
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pydicom
import pytest

from conftest import shared_file
from iousguide.acquisition import open_source
from iousguide.calibration import load_preset
from iousguide.calibration_tools import (
    box_iou,
    detect_region,
    detect_ruler,
    sample_frames,
    spacing_from_points,
    static_median,
)
from iousguide.cli import main
from iousguide.errors import AnalysisError, CalibrationError

SIGMAS = 3.0


def region_truth(path) -> tuple[tuple[int, int, int, int], float]:
    """(crop, mm/px) of the first tissue region, read with pydicom."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    item = next(r for r in ds.SequenceOfUltrasoundRegions if r.RegionDataType == 1)
    x1 = min(item.RegionLocationMaxX1, ds.Columns - 1)
    y1 = min(item.RegionLocationMaxY1, ds.Rows - 1)
    crop = (
        item.RegionLocationMinX0,
        item.RegionLocationMinY0,
        x1 - item.RegionLocationMinX0 + 1,
        y1 - item.RegionLocationMinY0 + 1,
    )
    return crop, float(item.PhysicalDeltaX) * 10.0


def raw_frames(path, count: int) -> list[np.ndarray]:
    with open_source(path) as source:
        source.metadata_calibration = None  # measure the full stored frame
        return sample_frames(source, max_frames=count)


# -- real files ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "dicom/color3d_jpeg_baseline.dcm",  # vertical dotted ruler beside a sector
        "dicom/JPGLosslessP14SV1_1s_1f_8b.dcm",  # 1 cm dots along the fan edge (diagonal)
        "dicom/OBXXXX1A_rle_2frame.dcm",  # dash ticks at the right screen edge
        "dicom/gdcm-US-ALOKA-16.dcm",  # horizontal scale under a dual view
    ],
)
def test_ruler_matches_dicom_regions(name):
    path = shared_file(name)
    _, truth_mm = region_truth(path)
    frames = raw_frames(path, 12)
    median, static = static_median(frames)
    try:
        result = detect_ruler(median, tick_mm=10.0, static_mask=static)
    except AnalysisError:
        result = detect_ruler(frames[0], tick_mm=10.0)  # what the CLI falls back to
    assert len(result.ticks_px) >= 5
    assert 0 < result.spacing_se_mm < 0.01 * result.spacing_mm
    assert abs(result.spacing_mm - truth_mm) <= SIGMAS * result.spacing_se_mm, (result.spacing_mm, truth_mm)


def test_region_temporal_matches_dicom_region():
    path = shared_file("dicom/color3d_jpeg_baseline.dcm")
    truth, _ = region_truth(path)
    result = detect_region(raw_frames(path, 30))
    assert result.method == "temporal"
    assert box_iou(result.crop_px, truth) >= 0.85, (result.crop_px, truth)
    # the box edges are stable: the reported uncertainty bounds the real edge error here
    x, y, w, h = result.crop_px
    edge_error = max(abs(x - truth[0]), abs(y - truth[1]), abs(x + w - truth[0] - truth[2]), abs(y + h - truth[1] - truth[3]))
    assert edge_error <= 20


def test_region_when_the_image_fills_the_frame():
    """The liver sweep is a cropped convex fan filling (almost) the whole frame; truth:
    bounding box of the pixels that are ever brighter than black in the clip."""
    path = shared_file("liver_sweep/liver_sweep_imfusion_h264.mp4")
    with open_source(path) as source:
        frames = sample_frames(source, max_frames=20)
    brightest = np.max([f if f.ndim == 2 else f.max(axis=2) for f in frames], axis=0)
    ys, xs = np.nonzero(brightest > 10)
    truth = (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    result = detect_region(frames)
    assert result.method == "temporal"
    assert box_iou(result.crop_px, truth) >= 0.9, (result.crop_px, truth)


def test_region_single_image_falls_back_and_says_so():
    path = shared_file("dicom/JPGLosslessP14SV1_1s_1f_8b.dcm")
    truth, _ = region_truth(path)
    result = detect_region(raw_frames(path, 1))
    assert result.method == "brightness"
    assert any("single still image" in note for note in result.notes)
    # the sector fills only part of the region's rectangle: the box must lie inside it
    x, y, w, h = result.crop_px
    inside_w = min(x + w, truth[0] + truth[2]) - max(x, truth[0])
    inside_h = min(y + h, truth[1] + truth[3]) - max(y, truth[1])
    assert max(inside_w, 0) * max(inside_h, 0) / (w * h) >= 0.95
    assert w * h >= 0.3 * truth[2] * truth[3]


# -- synthetic screens with known truth ------------------------------------------------------
def synthetic_screen(
    *,
    frames: int,
    fan: bool,
    period_px: float,
    seed: int,
    noise_sd: float = 0.0,
    black: int = 0,
    x_period_px: float | None = None,
):
    """Frames of a 640x480 'scanner screen': static text, a dotted depth ruler drawn at
    whole pixels with ``period_px`` spacing, and a speckle image that changes each frame.
    Returns (frames RGB, true region box, true ruler tick count)."""
    rng = np.random.default_rng(seed)
    rows, cols = 480, 640
    ui = np.zeros((rows, cols, 3), np.uint8)
    cv2.putText(ui, "GEN 5.0MHz", (8, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (220, 220, 220), 2)
    cv2.putText(ui, "12cm  G60", (8, 460), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (200, 200, 0), 1)
    cv2.rectangle(ui, (600, 60), (620, 200), (128, 128, 128), -1)  # grey bar
    ticks = []
    y = 70.0
    while y < 440:
        ticks.append(int(round(y)))
        y += period_px
    for ty in ticks:
        ui[ty : ty + 2, 575:577] = 255
    if x_period_px:  # a horizontal scale under the image (non-square pixels: another period)
        x = 100.0
        while x < 560:
            ui[440:442, int(round(x)) : int(round(x)) + 2] = 255
            x += x_period_px
    mask = np.zeros((rows, cols), np.uint8)
    if fan:
        cv2.ellipse(mask, (300, 40), (400, 400), 90, -38, 38, 1, -1)
        mask[:45] = 0
    else:
        mask[80:420, 120:520] = 1
    ys, xs = np.nonzero(mask)
    truth = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
    out = []
    for _ in range(frames):
        speckle = np.clip(rng.rayleigh(40.0, (rows, cols)), 0, 255).astype(np.uint8)
        speckle = cv2.GaussianBlur(speckle, (3, 3), 0)
        frame = ui.copy()
        frame[mask == 1] = speckle[mask == 1][:, None]
        if noise_sd or black:  # a capture card: limited-range black level and analogue noise
            noisy = frame.astype(np.float32) * (219 / 255) + black + rng.normal(0, noise_sd, frame.shape)
            frame = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        out.append(frame)
    return out, truth, len(ticks)


@pytest.mark.parametrize(
    "fan, period_px, seed, noise_sd, black",
    [(True, 17.3, 1, 0.0, 0), (False, 23.71, 2, 0.0, 0), (True, 31.05, 3, 0.0, 0), (True, 21.4, 7, 2.0, 16)],
)
def test_synthetic_region_and_ruler(fan, period_px, seed, noise_sd, black):
    frames, truth, n_ticks = synthetic_screen(
        frames=15, fan=fan, period_px=period_px, seed=seed, noise_sd=noise_sd, black=black
    )
    region = detect_region(frames)
    assert region.method == "temporal"
    assert box_iou(region.crop_px, truth) >= 0.95, (region.crop_px, truth)
    median, static = static_median(frames)
    ruler = detect_ruler(median, tick_mm=10.0, static_mask=static)
    truth_mm = 10.0 / period_px
    assert len(ruler.ticks_px) == n_ticks
    assert abs(ruler.spacing_mm - truth_mm) <= SIGMAS * ruler.spacing_se_mm
    extent_mm = 10.0 * (n_ticks - 1)
    by_depth = detect_ruler(median, depth_mm=extent_mm, static_mask=static)
    assert abs(by_depth.spacing_mm - truth_mm) <= SIGMAS * by_depth.spacing_se_mm


def test_ruler_not_fooled_by_calliper_dots_or_text():
    frames, _, n_ticks = synthetic_screen(frames=1, fan=False, period_px=18.2, seed=8)
    screen = frames[0].copy()
    for k in range(25):  # a dotted calliper line: 25 dots 5 px apart, diagonal
        screen[150 + 3 * k : 152 + 3 * k, 200 + 4 * k : 202 + 4 * k] = 255
    for k in range(12):  # a row of small marks 9 px apart but only roughly aligned
        jitter = int(np.random.default_rng(k).integers(-2, 3))
        screen[30 + jitter : 32 + jitter, 300 + 9 * k : 302 + 9 * k] = 255
    screen[80:420, 120:520] = 0  # no speckle: only drawn marks compete
    result = detect_ruler(screen, tick_mm=10.0)
    assert len(result.ticks_px) == n_ticks
    assert abs(result.spacing_mm - 10 / 18.2) <= SIGMAS * result.spacing_se_mm


class _LiveScreen:
    """Minimal live-source stand-in (Source interface subset): frames, then silence."""

    random_access = False
    length = None
    source_id = "live-test"

    def __init__(self, frames):
        self.frames = list(frames)

    def read(self, timeout_s=None):
        from iousguide.errors import SourceTimeout

        if not self.frames:
            raise SourceTimeout("no frame")
        from iousguide.frames import Frame

        return Frame(pixels=self.frames.pop(0), index=0, t_mono_ns=0)


def test_sampling_a_live_source_stops_on_timeout():
    frames, truth, _ = synthetic_screen(frames=6, fan=True, period_px=20.0, seed=9)
    sampled = sample_frames(_LiveScreen(frames), max_frames=30, timeout_s=0.01)
    assert len(sampled) == 6
    assert box_iou(detect_region(sampled).crop_px, truth) >= 0.95
    with pytest.raises(AnalysisError, match="no frame"):
        sample_frames(_LiveScreen([]), max_frames=5, timeout_s=0.01)


def test_frozen_image_uses_fallback():
    frames, _, _ = synthetic_screen(frames=1, fan=False, period_px=20.0, seed=4)
    result = detect_region(frames * 5)  # five identical frames: nothing changes
    assert result.method == "brightness" and any("frozen" in note for note in result.notes)


def test_no_ruler_and_bad_arguments():
    blank = np.zeros((100, 120), np.uint8)
    with pytest.raises(AnalysisError):
        detect_ruler(blank, tick_mm=10)
    with pytest.raises(CalibrationError):
        detect_ruler(blank, tick_mm=10, depth_mm=50)
    with pytest.raises(CalibrationError):
        detect_ruler(blank)
    with pytest.raises(CalibrationError):
        detect_ruler(blank, tick_mm=-1)
    with pytest.raises(AnalysisError):
        detect_region([])
    with pytest.raises(AnalysisError):
        detect_region([blank])


def test_inputs_not_mutated():
    frames, _, _ = synthetic_screen(frames=3, fan=True, period_px=20.0, seed=5)
    copies = [f.copy() for f in frames]
    detect_region(frames)
    detect_ruler(frames[0], tick_mm=10)
    assert all(np.array_equal(a, b) for a, b in zip(frames, copies))


def test_points_error_model():
    result = spacing_from_points((10, 10), (310, 410), distance_mm=50.0)
    assert result.distance_px == pytest.approx(500.0)
    assert result.spacing_mm == pytest.approx(0.1)
    # both ends off by 0.5 px along the line in opposite directions: 50/499 .. 50/501
    assert result.spacing_se_mm == pytest.approx(50.0 / 499 - 0.1, rel=0.01)
    with pytest.raises(CalibrationError):
        spacing_from_points((1, 1), (1, 2), distance_mm=5)
    with pytest.raises(CalibrationError):
        spacing_from_points((1, 1), (100, 2), distance_mm=0)


# -- CLI ----------------------------------------------------------------------------------------
def cli_json(args, capsys) -> dict:
    assert main(args + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("crop_px", "spacing_mm", "error_estimate"):
        assert key in data
    return data


def test_cli_ruler_writes_usable_preset(tmp_path, capsys):
    frames, truth, _ = synthetic_screen(frames=8, fan=True, period_px=19.4, seed=6)
    folder = tmp_path / "capture"
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"f{i:02d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    out = tmp_path / "preset.toml"
    data = cli_json(["calibrate", "ruler", str(folder), "--tick-mm", "10", "--out", str(out)], capsys)
    se_x, se_y = data["error_estimate"]["spacing_se_mm"]
    assert abs(data["spacing_mm"][0] - 10 / 19.4) <= SIGMAS * se_x
    assert data["spacing_mm"][1] == data["spacing_mm"][0]  # one (vertical) ruler: isotropic
    assert box_iou(data["crop_px"], truth) >= 0.95
    preset = load_preset(out)
    assert preset.spacing_mm == tuple(data["spacing_mm"]) and preset.crop_px == tuple(data["crop_px"])
    with open_source(folder, calibration=preset) as source:
        frame = source.read()
        x, y, w, h = preset.crop_px
        assert frame.origin_px == (x, y) and frame.shape == (h, w)
        assert frame.spacing_mm == preset.spacing_mm


def test_cli_ruler_non_square_pixels(tmp_path, capsys):
    frames, _, _ = synthetic_screen(frames=6, fan=True, period_px=19.1, x_period_px=20.4, seed=10)
    folder = tmp_path / "capture"
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"f{i:02d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    data = cli_json(["calibrate", "ruler", str(folder), "--tick-mm", "10"], capsys)
    se_x, se_y = data["error_estimate"]["spacing_se_mm"]
    assert abs(data["spacing_mm"][0] - 10 / 20.4) <= SIGMAS * se_x
    assert abs(data["spacing_mm"][1] - 10 / 19.1) <= SIGMAS * se_y
    data = cli_json(["calibrate", "ruler", str(folder), "--tick-mm", "10", "--isotropic"], capsys)
    assert data["spacing_mm"][0] == data["spacing_mm"][1]


def test_cli_ruler_on_dual_scale_dicom(capsys):
    """ALOKA: a vertical depth scale and a horizontal scale; both must match the regions' spacing."""
    path = shared_file("dicom/gdcm-US-ALOKA-16.dcm")
    _, truth_mm = region_truth(path)
    data = cli_json(["calibrate", "ruler", str(path), "--tick-mm", "10", "--no-crop"], capsys)
    assert data["crop_px"] is None
    for spacing, se in zip(data["spacing_mm"], data["error_estimate"]["spacing_se_mm"]):
        assert abs(spacing - truth_mm) <= SIGMAS * se


def test_cli_dicom_and_region(tmp_path, capsys):
    path = shared_file("dicom/color3d_jpeg_baseline.dcm")
    truth, truth_mm = region_truth(path)
    data = cli_json(["calibrate", "dicom", str(path), "--out", str(tmp_path / "d.toml")], capsys)
    assert tuple(data["crop_px"]) == truth and data["spacing_mm"] == [truth_mm, truth_mm]
    assert load_preset(tmp_path / "d.toml").crop_px == truth
    data = cli_json(["calibrate", "dicom", str(shared_file("dicom/US1_UNCR.dcm"))], capsys)
    assert data["spacing_mm"] is None and data["crop_px"] is None
    data = cli_json(["calibrate", "region", str(path), "--frames", "10"], capsys)
    assert box_iou(data["crop_px"], truth) >= 0.85 and data["spacing_mm"] is None
    assert data["error_estimate"]["edge_px"] >= 0


def test_cli_points(capsys, tmp_path):
    path = shared_file("dicom/US1_UNCR.dcm")
    data = cli_json(
        ["calibrate", "points", str(path), "--p1", "100,100", "--p2", "100,300", "--distance-mm", "40",
         "--crop", "10,10,600,400", "--out", str(tmp_path / "p.toml")],
        capsys,
    )
    assert data["spacing_mm"] == [0.2, 0.2] and data["crop_px"] == [10, 10, 600, 400]
    assert data["error_estimate"]["spacing_se_mm"] == pytest.approx(40 / 199 - 0.2, rel=0.01)
    assert load_preset(tmp_path / "p.toml").spacing_mm == (0.2, 0.2)


def cli_error(args, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("iousguide: error:"), err
    return err


def test_cli_bad_input(tmp_path, capsys):
    truncated = tmp_path / "cut.dcm"
    truncated.write_bytes(shared_file("dicom/US1_UNCR.dcm").read_bytes()[:400_000])
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\x00\x01not dicom" * 500)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    for path in (truncated, garbage, empty):
        for method in (["dicom"], ["region"], ["ruler", "--tick-mm", "10"]):
            cli_error(["calibrate", method[0], str(path), *method[1:]], capsys)
        cli_error(["info", str(path)], capsys)
    us1 = str(shared_file("dicom/US1_UNCR.dcm"))
    assert "outside" in cli_error(
        ["calibrate", "points", us1, "--p1", "5000,1", "--p2", "1,1", "--distance-mm", "3"], capsys
    )
    assert "--p1" in cli_error(["calibrate", "points", us1, "--p1", "5;1", "--p2", "1,1", "--distance-mm", "3"], capsys)
    assert "spacing" in cli_error(["calibrate", "region", us1, "--out", str(tmp_path / "x.toml")], capsys)
    assert "--frames" in cli_error(["calibrate", "region", us1, "--frames", "0"], capsys)
    cli_error(["calibrate", "ruler", us1, "--tick-mm", "-2"], capsys)
    cli_error(["calibrate"], capsys)
    with pytest.raises(SystemExit) as info:  # argparse: one of --tick-mm / --depth-mm required
        main(["calibrate", "ruler", us1])
    assert info.value.code == 2
