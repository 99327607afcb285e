"""The guidance window, offscreen (pytest-qt): overlays at the right pixels, transport, clicks, stale banner.

The clip is rendered by the project's phantom (exact geometry in mm) and written
as a PLUS sequence in a temporary folder. The real Pipeline runs on it with the
phantom's exact truth standing in for the tracker (which another module owns and
tests): the display is checked against known positions, and the preserve test
runs the real guidance planner.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import dataclasses  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("pytestqt")
from PySide6 import QtCore, QtGui  # noqa: E402

from conftest import RECORDINGS, shared_file  # noqa: E402
from iousguide.acquisition import open_source  # noqa: E402
from iousguide.acquisition.base import Source, SourceHealth  # noqa: E402
from iousguide.analysis.results import FrameResult, TumorResult, VesselResult  # noqa: E402
from iousguide.display.view import (  # noqa: E402
    CALIPER_COLOR,
    DETACHMENT_COLOR,
    SEGMENT_COLORS,
    TUMOR_COLOR,
    VESSEL_COLORS,
    GuidanceView,
    source_to_frame_px,
    source_to_view,
    view_to_source,
)
from iousguide.display.window import GuidanceWindow, WindowOptions  # noqa: E402
from iousguide.display.worker import LiveWorker, ReplayWorker  # noqa: E402
from iousguide.errors import SourceTimeout  # noqa: E402
from iousguide.frames import Frame  # noqa: E402

N_FRAMES = 12


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom_clip(tmp_path_factory):
    """(path of a 12-frame calibrated .igs.mha of the abutting-vein phantom, its exact per-frame truth)."""
    from iousguide.acquisition.plus_writer import SequenceWriter
    from iousguide.phantom import case_frames, scenarios

    case = scenarios.build("hepatic_vein_abutting")
    case = dataclasses.replace(case, poses=case.poses[:N_FRAMES])
    frames, truth = case_frames(case)
    path = tmp_path_factory.mktemp("clip") / "abutting.igs.mha"
    with SequenceWriter(path) as writer:
        for frame in frames:
            writer.append(frame)
    return path, truth.by_frame()


def _result_from_truth(truth_frame: dict, frame: Frame) -> FrameResult:
    """The tracker's output as it should be: the phantom's exact tumour and vessels (source pixels)."""
    sx = frame.spacing_mm[0]
    t = truth_frame["tumor"]
    tumor = None
    if t is not None:
        tumor = TumorResult(centroid_px=tuple(t["centroid_px"]), contour_px=np.asarray(t["contour_px"], float),
                            area_px=float(t["area_px"]), area_mm2=t["area_mm2"],
                            equivalent_diameter_mm=t["equivalent_diameter_mm"])
    vessels = []
    for v in truth_frame["vessels"]:
        vessels.append(VesselResult(
            id=int(v["id"]), kind=v["kind"], centroid_px=tuple(v["centroid_px"]),
            contour_px=np.asarray(v["contour_px"], float), diameter_px=v["diameter_mm"] / sx,
            diameter_mm=v["diameter_mm"], distance_mm=v["distance_mm"],
            distance_px=None if v["distance_mm"] is None else v["distance_mm"] / sx,
            closest_px=None if v["closest_px"] is None else (tuple(v["closest_px"][0]), tuple(v["closest_px"][1])),
            uncertainty_mm=0.2))
    return FrameResult(frame=frame.index, t_s=frame.t_source_s, spacing_mm=frame.spacing_mm,
                       status="ok" if tumor is not None else "no_tumor", tumor=tumor, vessels=vessels,
                       min_distance_mm=min((v.distance_mm for v in vessels if v.distance_mm is not None), default=None))


class TruthTracker:
    """Stands in for the tracker (being written by another helper): reports the phantom's truth."""

    def __init__(self, truth: dict[int, dict]) -> None:
        self.truth = truth
        self.seeds: list[tuple[float, float]] = []

    def process(self, frame: Frame) -> FrameResult:
        return _result_from_truth(self.truth[frame.index], frame)

    def seed_tumor(self, x_src: float, y_src: float) -> None:
        self.seeds.append((x_src, y_src))

    def reset(self) -> None:
        pass


def truth_pipeline(truth, *, guidance: bool = False):
    """The real Pipeline (preserve flags, guidance planning) over the phantom's exact detections."""
    from iousguide.pipeline import Pipeline, PipelineSettings

    return Pipeline(PipelineSettings(guidance_enabled=guidance), t0_s=0.0, tracker=TruthTracker(truth))


def _wait(qtbot, predicate, timeout_ms: int = 10_000) -> None:
    qtbot.waitUntil(predicate, timeout=timeout_ms)


def _open_window(qtbot, worker, **options) -> GuidanceWindow:
    window = GuidanceWindow(worker, WindowOptions(**options))
    qtbot.addWidget(window)
    window.resize(1280, 720)
    window.show()
    return window


# -- pixel helpers ----------------------------------------------------------------------------
def _rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)


def _image_of(widget) -> np.ndarray:
    image = widget.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)
    ptr = image.constBits()
    arr = np.frombuffer(ptr, dtype=np.uint8, count=image.sizeInBytes()).reshape(image.height(), image.bytesPerLine())
    return arr[:, : image.width() * 3].reshape(image.height(), image.width(), 3).copy(), image.devicePixelRatio()


def _has_colour_near(rgb: np.ndarray, dpr: float, point: QtCore.QPointF, hex_color: str, *, radius_px: int = 3,
                     tolerance: float = 60.0) -> bool:
    x, y = int(round(point.x() * dpr)), int(round(point.y() * dpr))
    patch = rgb[max(0, y - radius_px) : y + radius_px + 1, max(0, x - radius_px) : x + radius_px + 1].astype(float)
    if patch.size == 0:
        return False
    distance = np.linalg.norm(patch - _rgb(hex_color), axis=2)
    return bool(distance.min() < tolerance)


# -- a hand-made result on a real image ------------------------------------------------------
def _circle(cx: float, cy: float, r: float, n: int = 64) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)


def _handmade(spacing_mm, *, origin_px=(40, 30)) -> tuple[Frame, FrameResult]:
    """A real B-mode frame (liver sweep), cropped (origin 40,30), and results in source pixels."""
    with open_source(shared_file("liver_sweep/liver_sweep_imfusion_h264.mp4")) as source:
        full = source.frame_at(20)
    ox, oy = origin_px
    pixels = np.ascontiguousarray(full.gray[oy : oy + 500, ox : ox + 640])
    frame = Frame(pixels=pixels, index=20, t_mono_ns=time.monotonic_ns(), t_source_s=1.0, spacing_mm=spacing_mm,
                  origin_px=origin_px, source_id="test")
    calibrated = spacing_mm is not None
    s = spacing_mm[0] if calibrated else None
    tumor = TumorResult(centroid_px=(300.0, 250.0), contour_px=_circle(300, 250, 40), area_px=5026.0,
                        area_mm2=5026.0 * s * s if calibrated else None,
                        equivalent_diameter_mm=80 * s if calibrated else None)
    vessel = VesselResult(id=3, kind="hepatic_vein", centroid_px=(420.0, 250.0), contour_px=_circle(420, 250, 20),
                          diameter_px=40.0, diameter_mm=40 * s if calibrated else None,
                          distance_mm=60 * s if calibrated else None, distance_px=60.0,
                          closest_px=((340.0, 250.0), (400.0, 250.0)), uncertainty_mm=0.3 if calibrated else None,
                          preserve=True)
    plan = {
        "target_mm": 5.0,
        "floor_mm": 1.0,
        "segments": [
            {"contour_px": [[300 + 80 * np.cos(a), 250 + 80 * np.sin(a)] for a in np.linspace(2.0, 4.3, 30)],
             "margin_mm": 5.0, "reason": "free", "vessel_id": None, "class": "ok"},
            {"contour_px": [[250.0, 180.0], [250.0, 120.0]], "margin_mm": 0.0, "reason": "detachment",
             "vessel_id": 3, "class": "r1_risk"},
        ],
    }
    result = FrameResult(frame=20, t_s=1.0, spacing_mm=spacing_mm, status="ok" if calibrated else "uncalibrated",
                         tumor=tumor, vessels=[vessel], min_distance_mm=vessel.distance_mm,
                         margin_plan=plan if calibrated else None)
    return frame, result


def _visible_texts(view: GuidanceView) -> list[str]:
    import pyqtgraph as pg

    return [item.textItem.toPlainText() for item in view.view_box.addedItems
            if isinstance(item, pg.TextItem) and item.isVisible()]


# -- tests: the view alone ----------------------------------------------------------------------
def test_qt_binding_keeps_reference_counts(qtbot):
    """PySide6 6.12.0 on Python 3.11 loses a reference to None on every void call; the window then
    aborts with "none_dealloc" after a few thousand frames. Showing frames must not drain None."""
    import gc
    import sys

    view = GuidanceView()
    qtbot.addWidget(view)
    frame, result = _handmade((0.2, 0.2))
    view.show_frame(frame, result)
    gc.collect()
    before = sys.getrefcount(None)
    for _ in range(50):
        view.show_frame(frame, result)
    gc.collect()
    assert sys.getrefcount(None) - before > -50, "the Qt binding drops references to None (PySide6 6.12.0 bug)"


def test_coordinate_mapping_matches_frame_and_round_trips():
    pixels = np.zeros((100, 200), np.uint8)
    frame = Frame(pixels=pixels, index=0, t_mono_ns=0, spacing_mm=(0.2, 0.25), origin_px=(7, 11),
                  extra={"flip_xy": (True, False)})
    pts = np.array([[10.0, 20.0], [150.5, 60.25]])
    mine = source_to_frame_px(frame, pts)
    for (x, y), (fx, fy) in zip(pts, mine):
        assert frame.from_source_px(x, y) == pytest.approx((fx, fy))
    view_pts = source_to_view(frame, pts)
    assert view_pts[0] == pytest.approx(((200 - 1 - 3 + 0.5) * 0.2, (9 + 0.5) * 0.25))
    for (x, y), (vx, vy) in zip(pts, view_pts):
        assert view_to_source(frame, vx, vy) == pytest.approx((x, y))


def test_overlays_are_drawn_where_the_results_say(qtbot, tmp_path):
    view = GuidanceView()
    qtbot.addWidget(view)
    view.resize(800, 600)
    view.show()
    frame, result = _handmade((0.2, 0.2))
    view.show_frame(frame, result)
    qtbot.wait(50)
    rgb, dpr = _image_of(view)
    QtGui.QImage(rgb.data, rgb.shape[1], rgb.shape[0], rgb.shape[1] * 3, QtGui.QImage.Format.Format_RGB888).save(
        str(tmp_path / "overlays.png"))
    assert view.getPlotItem().getAxis("left").labelText == "depth (mm)"
    # tumour contour: leftmost and top points of the 40 px circle around (300, 250)
    for x_src, y_src in ((260.0, 250.0), (300.0, 210.0), (300.0, 290.0)):
        assert _has_colour_near(rgb, dpr, view.map_source_to_widget(x_src, y_src), TUMOR_COLOR), (x_src, y_src)
    # a point well inside the tumour is not painted in the contour colour
    assert not _has_colour_near(rgb, dpr, view.map_source_to_widget(300, 250), TUMOR_COLOR, radius_px=1)
    # caliper: along the line from the tumour (340, 250) to the vessel (400, 250)
    for x_src in (355.0, 370.0, 385.0):
        assert _has_colour_near(rgb, dpr, view.map_source_to_widget(x_src, 250.0), CALIPER_COLOR, tolerance=40)
    assert "12.0 ± 0.3 mm" in _visible_texts(view)  # 60 px * 0.2 mm/px
    # vessel contour and its label
    assert _has_colour_near(rgb, dpr, view.map_source_to_widget(420.0, 230.0), VESSEL_COLORS["hepatic_vein"])
    assert any(t.startswith("V3 HV ⌀8.0 mm") for t in _visible_texts(view))
    # resection line: the free segment in its class colour, the detachment segment in the detachment colour
    a = 3.0
    assert _has_colour_near(rgb, dpr, view.map_source_to_widget(300 + 80 * np.cos(a), 250 + 80 * np.sin(a)),
                            SEGMENT_COLORS["ok"])
    assert _has_colour_near(rgb, dpr, view.map_source_to_widget(250.0, 150.0), SEGMENT_COLORS["r1_risk"])
    assert _has_colour_near(rgb, dpr, view.map_source_to_widget(250.0, 120.0), DETACHMENT_COLOR, radius_px=6)
    # each overlay switches off
    view.set_overlay("tumor", False)
    view.set_overlay("caliper", False)
    qtbot.wait(20)
    rgb2, _ = _image_of(view)
    assert not _has_colour_near(rgb2, dpr, view.map_source_to_widget(260.0, 250.0), TUMOR_COLOR)
    assert not _has_colour_near(rgb2, dpr, view.map_source_to_widget(370.0, 250.0), CALIPER_COLOR, tolerance=40)
    assert _has_colour_near(rgb2, dpr, view.map_source_to_widget(420.0, 230.0), VESSEL_COLORS["hepatic_vein"])


def test_uncalibrated_frame_shows_no_millimetres(qtbot):
    view = GuidanceView()
    qtbot.addWidget(view)
    view.resize(800, 600)
    view.show()
    frame, result = _handmade(None)
    view.show_frame(frame, result)
    qtbot.wait(30)
    texts = _visible_texts(view)
    assert texts and not any("mm" in t for t in texts), texts
    assert view.getPlotItem().getAxis("left").labelText == "depth (px)"
    assert view.state.drawn["caliper"] == 0 and view.state.drawn["resection"] == 0
    rgb, dpr = _image_of(view)
    assert _has_colour_near(rgb, dpr, view.map_source_to_widget(260.0, 250.0), TUMOR_COLOR)  # positions still shown


def test_ablation_mode_draws_zone_and_heat_sink_ring(qtbot):
    view = GuidanceView()
    qtbot.addWidget(view)
    view.resize(800, 600)
    view.show()
    frame, result = _handmade((0.2, 0.2))
    result.vessels[0].heat_sink = {"class": "high", "basis": "test", "deficit_mm": 2.0}
    result.ablation = {"margin_mm": 5.0, "modality": "RFA", "zone_contour_px": _circle(300, 250, 65).tolist(),
                       "predicted_zone_contour_px": _circle(290, 250, 55).tolist(), "covered": False}
    view.set_mode("ablation")
    view.show_frame(frame, result)
    qtbot.wait(30)
    assert view.state.drawn["ablation"] == 3 and view.state.drawn["resection"] == 0
    assert any("NOT covered" in t for t in _visible_texts(view))
    rgb, dpr = _image_of(view)
    # heat-sink halo (high = red) along the vessel wall, just outside the 20 px lumen radius; none far away
    def reddish_near(x_src, y_src):
        p = view.map_source_to_widget(x_src, y_src)
        x, y = int(round(p.x() * dpr)), int(round(p.y() * dpr))
        patch = rgb[y - 2 : y + 3, x - 2 : x + 3].astype(int)
        return bool(np.any((patch[..., 0] > 170) & (patch[..., 1] < 110) & (patch[..., 2] < 110)))

    assert reddish_near(420.0, 228.0) and reddish_near(442.0, 250.0)
    assert not reddish_near(420.0, 200.0)


# -- tests: the window with a worker -------------------------------------------------------------
def test_replay_window_transport(qtbot, phantom_clip):
    path, truth = phantom_clip
    source = open_source(path)
    worker = ReplayWorker(source, truth_pipeline(truth), speed=1.0)
    window = _open_window(qtbot, worker)
    try:
        _wait(qtbot, lambda: window.displayed_count >= 3)
        assert window.view.frame.spacing_mm is not None
        assert window.view.state.drawn["tumor"] == 1, (window.stale, window.view.frame.index, window.view.state)
        # pause holds the frame
        window.toggle_play()
        _wait(qtbot, lambda: not worker.player.playing)
        held = worker.player.index
        qtbot.wait(300)
        assert worker.player.index == held
        # step forward and back
        window.step(+1)
        _wait(qtbot, lambda: window.view.frame.index == min(held + 1, N_FRAMES - 1))
        window.step(-1)
        _wait(qtbot, lambda: window.view.frame.index == held)
        # seek by index and by time
        window.seek(7)
        _wait(qtbot, lambda: window.view.frame.index == 7)
        assert "#8/12" in window.time_label.text()
        window.seek_relative_s(-1.0)  # 15 fps: 1 s back from 7/15 s clamps to 0
        _wait(qtbot, lambda: window.view.frame.index == 0)
        # speed: media time advances at the chosen rate (0.5x), and 4x plays the clip in a quarter of its time
        window.set_speed(0.5)
        window.toggle_play()
        _wait(qtbot, lambda: worker.player.playing)
        t0_wall = time.monotonic()
        t0_media = worker.player.media_time_s(t0_wall)
        qtbot.wait(300)
        t1_wall = time.monotonic()
        rate = (worker.player.media_time_s(t1_wall) - t0_media) / (t1_wall - t0_wall)
        assert rate == pytest.approx(0.5, rel=0.05)
        window.toggle_play()
        window.seek(0)
        window.set_speed(4.0)
        _wait(qtbot, lambda: window.view.frame.index == 0 and not worker.player.playing)
        start = time.monotonic()
        window.toggle_play()
        _wait(qtbot, lambda: worker.player.ended)
        elapsed_s = time.monotonic() - start
        duration_s = worker.player.duration_s
        assert duration_s / 4 * 0.9 <= elapsed_s <= duration_s / 4 + 0.15
        window.change_speed(-1)
        assert window.options.speed == 2.0
        assert window.speed_combo.currentText() == "2×"
    finally:
        window.close()
        source.close()
    assert not worker.alive


def test_replay_window_on_uncalibrated_real_video_shows_banner(qtbot):
    source = open_source(shared_file("liver_sweep/liver_sweep_imfusion_h264.mp4"))
    worker = ReplayWorker(source, None, analyse=False)
    window = _open_window(qtbot, worker)
    try:
        _wait(qtbot, lambda: window.displayed_count >= 2)
        assert window.info_banner.isVisible()
        assert "UNCALIBRATED" in window.info_banner.text()
        assert window.view.getPlotItem().getAxis("top").labelText == "lateral (px)"
        assert not window.distance_plot.isVisible() and window.plot_placeholder.isVisible()
        headers = [window.table.horizontalHeaderItem(i).text() for i in range(window.table.columnCount())]
        assert not any("mm" in h for h in headers)
    finally:
        window.close()
        source.close()


def test_snapshot_writes_png_and_results_json(qtbot, phantom_clip, tmp_path):
    path, truth = phantom_clip
    source = open_source(path)
    worker = ReplayWorker(source, truth_pipeline(truth))
    window = _open_window(qtbot, worker, snapshot_dir=str(tmp_path))
    try:
        _wait(qtbot, lambda: window.displayed_count >= 1)
        worker.pause()
        window.seek(3)
        _wait(qtbot, lambda: window.view.frame.index == 3 and not worker.player.playing)
        qtbot.wait(50)
        png = window.snapshot()
    finally:
        window.close()
        source.close()
    assert png is not None and png.exists()
    image = QtGui.QImage(str(png))
    assert image.width() > 300 and image.height() > 200
    data = json.loads(png.with_suffix(".json").read_text())
    assert data["result"]["frame"] == data["frame"]
    assert data["result"]["tumor"] is not None
    assert "snapshot saved" in window.status_line.text()


def test_click_on_vessel_toggles_preserve_and_changes_the_plan(qtbot, phantom_clip):
    """Real guidance: clicking the abutting vein flips its preserve flag and the margin plan changes."""
    pytest.importorskip("iousguide.guidance.apply")
    path, truth = phantom_clip
    source = open_source(path)
    worker = ReplayWorker(source, truth_pipeline(truth, guidance=True), speed=1.0)
    window = _open_window(qtbot, worker, start_playing=False)
    try:
        _wait(qtbot, lambda: window.view.result is not None, 20_000)
        result = window.view.result
        if result.tumor is None or not result.vessels or result.margin_plan is None:
            pytest.fail(f"guidance made no plan on the truth of frame 0 ({result.status}: {result.message})")
        vessel = min(result.vessels, key=lambda v: v.distance_mm if v.distance_mm is not None else 1e9)
        before_preserve = bool(vessel.preserve)
        before_plan = json.dumps(result.to_json().get("margin_plan"), sort_keys=True)
        inside = np.asarray(vessel.contour_px, float).mean(axis=0)
        point = window.view.map_source_to_widget(float(inside[0]), float(inside[1])).toPoint()
        assert window.view.vessel_at(float(inside[0]), float(inside[1])).id == vessel.id
        old = window.view.result
        qtbot.mouseClick(window.view.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=point)
        _wait(qtbot, lambda: window.view.result is not old, 20_000)
        assert window.view.frame.index == 0
        after = {v.id: v for v in window.view.result.vessels}
        assert vessel.id in after
        assert bool(after[vessel.id].preserve) is (not before_preserve)
        after_plan = json.dumps(window.view.result.to_json().get("margin_plan"), sort_keys=True)
        assert after_plan != before_plan
        assert f"V{vessel.id}" in window.status_line.text()
    finally:
        window.close()
        source.close()


class GatedLiveSource(Source):
    """A live source over real frames that delivers only while ``gate`` is set (a stall otherwise)."""

    format_name = "test-live"

    def __init__(self, frames: list[Frame]) -> None:
        super().__init__("test-live://gated")
        self.frames = frames
        self.gate = threading.Event()
        self.gate.set()
        self.count = 0
        self.report_no_signal = False

    def _read_next(self, timeout_s):
        if not self.gate.wait(timeout_s if timeout_s is not None else None):
            raise SourceTimeout("no frame")
        time.sleep(1 / 30)
        frame = self.frames[self.count % len(self.frames)]
        self.count += 1
        return frame.replace(t_mono_ns=time.monotonic_ns(), index=self.count % len(self.frames))

    def health(self) -> SourceHealth:
        if self.report_no_signal and not self.gate.is_set():
            return SourceHealth(source_fps=None, delivered=self.count, no_signal=True, status="no_signal")
        return SourceHealth(source_fps=30.0, delivered=self.count, status="ok")

    def info(self):  # pragma: no cover - not used
        raise NotImplementedError


def test_stalled_live_source_withdraws_overlays_and_they_come_back(qtbot, phantom_clip):
    path, truth = phantom_clip
    with open_source(path) as recording:
        frames = [recording.frame_at(i) for i in range(N_FRAMES)]
        calibration = recording.calibration
    source = GatedLiveSource(frames)
    source.metadata_calibration = calibration  # as a scanner stream with its spacing would
    worker = LiveWorker(source, truth_pipeline(truth))
    window = _open_window(qtbot, worker, stale_ms=250.0)
    try:
        assert window.freeze_button.isVisible() and not window.play_button.isVisible()
        _wait(qtbot, lambda: window.displayed_count >= 5 and window.view.state.drawn.get("tumor") == 1)
        assert not window.alarm_banner.isVisible()
        assert window.view._tumor.isVisible()
        source.gate.clear()  # the source stalls
        _wait(qtbot, lambda: window.alarm_banner.isVisible(), 3000)
        assert "STALE" in window.alarm_banner.text()
        assert not window.view.state.overlays_visible
        assert not window.view._tumor.isVisible() and not window.view._caliper.isVisible()
        shown = window.displayed_count
        source.gate.set()  # fresh frames again
        _wait(qtbot, lambda: not window.alarm_banner.isVisible() and window.displayed_count > shown + 2, 3000)
        assert window.view.state.overlays_visible and window.view._tumor.isVisible()
        # freeze holds the image, says so, and does not go stale
        window.toggle_freeze()
        held = window.view.frame
        qtbot.wait(400)
        assert window.view.frame is held and "FROZEN" in window.info_banner.text()
        assert not window.alarm_banner.isVisible()
        stats = window.stats()
    finally:
        window.close()
    assert not worker.alive
    assert stats["source_fps"] == 30.0 and stats["displayed_fps"] > 5
    assert stats["frame_age_ms_median"] is not None and stats["frame_age_ms_p95"] >= stats["frame_age_ms_median"]


class SlowPipeline:
    """Wraps a pipeline and takes ``delay_s`` longer per frame while ``slow`` is set (an overloaded analysis)."""

    def __init__(self, inner, delay_s: float) -> None:
        self.inner, self.delay_s, self.slow = inner, delay_s, threading.Event()
        self.settings = inner.settings

    def process(self, frame):
        if self.slow.is_set():
            time.sleep(self.delay_s)
        return self.inner.process(frame)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_replay_falling_behind_goes_stale_and_recovers(qtbot, phantom_clip):
    path, truth = phantom_clip
    source = open_source(path)
    pipeline = SlowPipeline(truth_pipeline(truth), delay_s=0.5)
    worker = ReplayWorker(source, pipeline, speed=0.5, loop=True)
    window = _open_window(qtbot, worker, stale_ms=250.0)
    try:
        _wait(qtbot, lambda: window.view.state.drawn.get("tumor") == 1 and window.displayed_count >= 3)
        assert not window.alarm_banner.isVisible()
        pipeline.slow.set()  # each frame now arrives ~0.5 s after it was due (0.13 s apart at 0.5x)
        _wait(qtbot, lambda: window.alarm_banner.isVisible(), 5000)
        assert "STALE" in window.alarm_banner.text() and not window.view._tumor.isVisible()
        pipeline.slow.clear()
        _wait(qtbot, lambda: not window.alarm_banner.isVisible() and window.view._tumor.isVisible(), 5000)
    finally:
        window.close()
        source.close()


def test_no_signal_banner_from_source_health(qtbot, phantom_clip):
    path, truth = phantom_clip
    with open_source(path) as recording:
        frames = [recording.frame_at(i) for i in range(N_FRAMES)]
        calibration = recording.calibration
    source = GatedLiveSource(frames)
    source.metadata_calibration = calibration
    source.report_no_signal = True
    window = _open_window(qtbot, LiveWorker(source, truth_pipeline(truth)), stale_ms=5000.0)
    try:
        _wait(qtbot, lambda: window.view.state.drawn.get("tumor") == 1)
        source.gate.clear()
        _wait(qtbot, lambda: window.alarm_banner.isVisible(), 3000)  # long before the 5 s stale threshold
        assert "NO SIGNAL" in window.alarm_banner.text() and not window.view._tumor.isVisible()
        source.gate.set()
        _wait(qtbot, lambda: not window.alarm_banner.isVisible() and window.view._tumor.isVisible(), 3000)
    finally:
        window.close()


def test_keyboard_shortcuts_and_click_to_seed(qtbot, phantom_clip):
    path, truth = phantom_clip
    source = open_source(path)
    pipeline = truth_pipeline(truth)
    worker = ReplayWorker(source, pipeline)
    window = _open_window(qtbot, worker, start_playing=False)
    try:
        _wait(qtbot, lambda: window.view.frame is not None and window.view.frame.index == 0)
        window.activateWindow()
        qtbot.keyClick(window, QtCore.Qt.Key.Key_Right)
        _wait(qtbot, lambda: window.view.frame.index == 1)
        qtbot.keyClick(window, QtCore.Qt.Key.Key_End)
        _wait(qtbot, lambda: window.view.frame.index == N_FRAMES - 1)
        qtbot.keyClick(window, QtCore.Qt.Key.Key_Left)
        _wait(qtbot, lambda: window.view.frame.index == N_FRAMES - 2)
        qtbot.keyClick(window, QtCore.Qt.Key.Key_BracketRight)
        assert window.options.speed == 2.0
        qtbot.keyClick(window, QtCore.Qt.Key.Key_L)
        assert window.loop_button.isChecked()
        qtbot.keyClick(window, QtCore.Qt.Key.Key_1)
        assert not window.overlay_boxes["tumor"].isChecked() and not window.view.enabled["tumor"]
        qtbot.keyClick(window, QtCore.Qt.Key.Key_1)
        qtbot.keyClick(window, QtCore.Qt.Key.Key_A)
        assert window.view.mode == "ablation"
        qtbot.keyClick(window, QtCore.Qt.Key.Key_Space)
        _wait(qtbot, lambda: worker.player.playing)
        qtbot.keyClick(window, QtCore.Qt.Key.Key_Space)
        _wait(qtbot, lambda: not worker.player.playing)
        # a click away from every vessel seeds the tumour there (source pixels)
        x_src, y_src = 100.0, 400.0
        assert window.view.vessel_at(x_src, y_src) is None
        point = window.view.map_source_to_widget(x_src, y_src).toPoint()
        qtbot.mouseClick(window.view.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=point)
        tracker = pipeline.tracker
        _wait(qtbot, lambda: len(tracker.seeds) == 1)
        sx, sy = tracker.seeds[0]
        assert abs(sx - x_src) <= 2.0 and abs(sy - y_src) <= 2.0  # within 2 px of the click
        assert "seeded" in window.status_line.text()
    finally:
        start = time.monotonic()
        window.close()
        close_s = time.monotonic() - start
        source.close()
    assert not worker.alive and close_s < 2.0


def test_record_live_source_with_counters(qtbot, phantom_clip, tmp_path):
    path, truth = phantom_clip
    with open_source(path) as recording:
        frames = [recording.frame_at(i) for i in range(N_FRAMES)]
        calibration = recording.calibration
    source = GatedLiveSource(frames)
    source.metadata_calibration = calibration
    worker = LiveWorker(source, truth_pipeline(truth))
    window = _open_window(qtbot, worker, record_dir=str(tmp_path))
    try:
        _wait(qtbot, lambda: window.displayed_count >= 2)
        qtbot.keyClick(window, QtCore.Qt.Key.Key_R)
        assert window.record_button.isChecked() and worker.recording
        _wait(qtbot, lambda: (worker.record_counters() or {}).get("written", 0) >= 8)
        window._update_hud()
        assert "● REC" in window.hud.text()
        qtbot.keyClick(window, QtCore.Qt.Key.Key_R)
        assert not worker.recording
        _wait(qtbot, lambda: worker.last_recording_message.startswith("recorded"), 20_000)
        first_message = worker.last_recording_message
        qtbot.keyClick(window, QtCore.Qt.Key.Key_R)  # a second recording, still running when the window closes
        _wait(qtbot, lambda: (worker.record_counters() or {}).get("written", 0) >= 3)
    finally:
        window.close()
    assert len(list(tmp_path.glob("iousguide_live_*.igs.mha"))) == 2, "closing finishes a running recording"
    assert not list(tmp_path.glob("*.partial"))
    files = sorted(tmp_path.glob("iousguide_live_*.igs.mha"))
    with open_source(files[0]) as recorded:
        n = len(recorded)
        first = recorded.frame_at(0)
    assert n >= 8 and f"recorded {n} frames to {files[0]}" == first_message
    assert first.spacing_mm == pytest.approx(calibration.spacing_mm)
    assert any(np.array_equal(first.pixels, f.pixels) for f in frames)  # lossless


def test_layout_at_1366x768_and_help_overlay(qtbot, phantom_clip):
    path, truth = phantom_clip
    source = open_source(path)
    window = _open_window(qtbot, ReplayWorker(source, truth_pipeline(truth)))
    try:
        window.resize(1366, 768)
        _wait(qtbot, lambda: window.displayed_count >= 1)
        qtbot.wait(50)
        qtbot.wait(600)  # the heads-up line has filled in
        window.resize(1366, 768)
        qtbot.wait(50)
        assert (window.width(), window.height()) == (1366, 768), "layout wider/taller than a 1366x768 screen"
        assert window.view.width() >= 800 and window.view.height() >= 450
        bottom = window.status_line.mapTo(window, QtCore.QPoint(0, window.status_line.height())).y()
        assert bottom <= window.height()
        assert window.snapshot_button.mapTo(window, QtCore.QPoint(0, 0)).x() + window.snapshot_button.width() <= 1366
        qtbot.keyClick(window, QtCore.Qt.Key.Key_F1)
        assert window.help_overlay.isVisible() and "Keyboard shortcuts" in window.help_overlay.text()
        qtbot.keyClick(window, QtCore.Qt.Key.Key_F1)
        assert not window.help_overlay.isVisible()
        window.resize(700, 500)  # small: still shows the image
        qtbot.wait(30)
        assert window.view.width() >= 300 and window.view.height() >= 200
    finally:
        window.close()
        source.close()


@pytest.mark.parametrize("name", sorted(p.name for p in RECORDINGS.glob("*") if p.suffix in (".mha", ".mp4", ".nrrd", ".dcm")) or ["<none>"])
def test_window_opens_on_each_bundled_recording(qtbot, name):
    if name == "<none>":
        pytest.skip(f"no bundled recordings in {RECORDINGS} yet")
    source = open_source(RECORDINGS / name)
    from iousguide.pipeline import Pipeline

    window = _open_window(qtbot, ReplayWorker(source, Pipeline(t0_s=float(source.frame_times_s[0]))))
    try:
        _wait(qtbot, lambda: window.displayed_count >= 2, 20_000)
        assert window.view.frame is not None and window.view.result is not None
        assert not window.worker.error_text
    finally:
        window.close()
        source.close()
    assert not window.worker.alive, "closing the window must stop the worker thread"


def test_cli_replay_unattended_writes_screenshot_and_stats(phantom_clip, tmp_path):
    import subprocess
    import sys

    path, _ = phantom_clip
    shot, stats = tmp_path / "shot.png", tmp_path / "stats.json"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run(
        [sys.executable, "-m", "iousguide", "replay", str(path), "--frames", "3",
         "--screenshot", str(shot), "--stats", str(stats)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(stats.read_text())
    assert {"source_fps", "displayed_fps", "frame_age_ms_median", "frame_age_ms_p95"} <= set(data)
    assert data["source_fps"] == pytest.approx(15.0, rel=0.01)
    assert 1 <= data["displayed_frames"] <= 3  # N frames, or fewer when the pipeline is slower than the clip
    assert QtGui.QImage(str(shot)).width() > 300
    bad = subprocess.run([sys.executable, "-m", "iousguide", "replay", str(path), "--speed", "8"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "speed" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    bad = subprocess.run([sys.executable, "-m", "iousguide", "replay", str(path), "--tumor-seed", "nan,5"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "--tumor-seed" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_cli_live_on_a_real_openigtlink_server(phantom_clip, tmp_path):
    """`iousguide live igtl://...` against a real pyigtl server on loopback streaming the phantom at 15 fps."""
    import socket
    import subprocess
    import sys

    pyigtl = pytest.importorskip("pyigtl")
    path, _ = phantom_clip
    with open_source(path) as recording:
        images = [recording.frame_at(i).pixels for i in range(N_FRAMES)]
        spacing = recording.calibration.spacing_mm
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = pyigtl.OpenIGTLinkServer(port=port, local_server=True)
    stop = threading.Event()
    matrix = np.diag([spacing[0], spacing[1], 1.0, 1.0])

    def stream() -> None:
        i = 0
        while not stop.is_set():
            if server.is_connected():
                server.send_message(pyigtl.ImageMessage(images[i % N_FRAMES][np.newaxis], ijk_to_world_matrix=matrix,
                                                        device_name="Image_Reference"), wait=True)
                i += 1
            stop.wait(1 / 15)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    stats = tmp_path / "live.json"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "iousguide", "live", f"igtl://127.0.0.1:{port}/Image_Reference", "--frames", "15",
             "--stats", str(stats), "--screenshot", str(tmp_path / "live.png")],
            capture_output=True, text=True, timeout=120, env=dict(os.environ, QT_QPA_PLATFORM="offscreen"),
        )
    finally:
        stop.set()
        thread.join(5)
        server.stop()
    assert proc.returncode == 0, proc.stderr
    data = json.loads(stats.read_text())
    assert data["displayed_frames"] >= 15
    assert data["source_fps"] == pytest.approx(15.0, rel=0.25)
    assert data["frame_age_ms_median"] is not None and data["frame_age_ms_median"] > 0
    assert QtGui.QImage(str(tmp_path / "live.png")).width() > 300


class AssumedEdgeTracker(TruthTracker):
    """The truth, with the tumour's outline marked partly assumed (a calcium shadow) on odd frames
    and the nearest vessel measured from that part."""

    def process(self, frame: Frame) -> FrameResult:
        result = _result_from_truth(self.truth[frame.index], frame)
        if frame.index % 2 and result.tumor is not None:
            result.tumor.assumed_edge = True
            measured = [v for v in result.vessels if v.distance_mm is not None]
            if measured:
                min(measured, key=lambda v: v.distance_mm).flags.append("tumor_edge_assumed")
        return result


def test_an_assumed_tumour_edge_is_shown_as_such(qtbot, phantom_clip):
    """Part of the outline not seen (hidden in an acoustic shadow) is said on screen, and the
    distance measured from it is starred in the table; frames whose outline was all seen show neither."""
    from iousguide.pipeline import Pipeline, PipelineSettings

    path, truth = phantom_clip
    pipeline = Pipeline(PipelineSettings(guidance_enabled=False), t0_s=0.0, tracker=AssumedEdgeTracker(truth))
    worker = ReplayWorker(open_source(path), pipeline, speed=1.0)
    window = _open_window(qtbot, worker)
    try:
        _wait(qtbot, lambda: window.displayed_count >= 2)
        window.toggle_play()
        _wait(qtbot, lambda: not worker.player.playing)
        for index in (3, 4):
            window.seek(index)
            _wait(qtbot, lambda: window.view.frame is not None and window.view.frame.index == index)
            qtbot.wait(50)
            distances = [window.table.item(r, 3).text() for r in range(window.table.rowCount())]
            assumed = index % 2 == 1
            assert ("PARTLY ASSUMED" in window.info_banner.text()) == assumed, (index, window.info_banner.text())
            assert sum(t.endswith("*") for t in distances) == (1 if assumed else 0), (index, distances)
    finally:
        window.close()
