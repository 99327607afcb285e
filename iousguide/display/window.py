"""The guidance window: view + panels + transport + heads-up status.

All analysis runs in a :mod:`iousguide.display.worker` thread; a GUI timer
takes the newest ``(frame, result)`` and paints it. Errors go to the status
line, never to a modal dialog.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from iousguide.acquisition.player import SPEED_MAX, SPEED_MIN
from iousguide.acquisition.plus_writer import partial_path_for
from iousguide.errors import IousguideError
from iousguide.display.view import (
    KIND_SHORT,
    OVERLAY_LABELS,
    OVERLAYS,
    GuidanceView,
)
from iousguide.display.worker import Delivery, LiveWorker, RateMeter, ReplayWorker, percentile_ms

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0)
DISTANCE_HISTORY_S = 20.0

DARK_QSS = """
QWidget { background: #111418; color: #e6e9ed; font-size: 11pt; }
QPushButton, QToolButton { background: #1f252c; border: 1px solid #3a434d; padding: 4px 8px; border-radius: 3px; }
QPushButton:checked, QToolButton:checked { background: #2f5d8a; }
QPushButton:hover { border-color: #6b7785; }
QTableWidget { gridline-color: #2a3038; background: #14181d; }
QHeaderView::section { background: #1f252c; color: #cfd6dd; border: none; padding: 3px; }
QTabBar::tab { background: #1a1f25; padding: 5px 10px; }
QTabBar::tab:selected { background: #2a323b; }
QDoubleSpinBox, QComboBox, QSpinBox { background: #1a1f25; border: 1px solid #3a434d; padding: 2px; }
QSlider::groove:horizontal { height: 6px; background: #2a3038; }
QSlider::handle:horizontal { width: 14px; background: #9fb4c8; margin: -5px 0; border-radius: 3px; }
"""

SHORTCUTS = (
    ("Space", "play / pause (replay) · freeze (live)"),
    ("← / →", "step one frame back / forward"),
    ("Shift+← / Shift+→", "seek 1 s back / forward"),
    ("Home / End", "first / last frame"),
    ("[ / ]", "slower / faster (0.25×–4×)"),
    ("L", "loop on / off"),
    ("F", "freeze the live image"),
    ("S", "snapshot: PNG of the view + results JSON"),
    ("R", "record the live source on / off"),
    ("A", "resection / ablation mode"),
    ("P", "hide / show the side panels"),
    ("1 … 5", "toggle overlays: tumour, vessels, caliper, resection line, heat sink/zone"),
    ("+ / −", "margin target ±0.5 mm"),
    ("Click", "on the tumour: seed / re-seed · on a vessel: preserve / take"),
    ("F1 or ?", "this help"),
    ("Q / Ctrl+Q", "quit"),
)


@dataclass
class WindowOptions:
    """Everything the command line can set."""

    speed: float = 1.0
    loop: bool = False
    stale_ms: float = 250.0
    frames: int | None = None  # unattended: stop after N displayed frames
    screenshot: str | None = None
    stats: str | None = None
    snapshot_dir: str = "."
    record_dir: str = "."
    mode: str = "resection"
    source_label: str = ""
    calibration_label: str = ""
    start_playing: bool = True
    analyse: bool = True
    extra_status: list[str] = field(default_factory=list)


class _Banner(QtWidgets.QLabel):
    def __init__(self, parent: QtWidgets.QWidget, background: str, size_pt: int) -> None:
        super().__init__(parent)
        self.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.setWordWrap(True)
        self.setStyleSheet(
            f"background: {background}; color: white; font-weight: bold; font-size: {size_pt}pt; "
            "padding: 6px 14px; border-radius: 4px;"
        )
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.hide()


class GuidanceWindow(QtWidgets.QMainWindow):
    """The window. ``worker`` is a started-or-not Replay/LiveWorker; it is started here."""

    sigFinished = QtCore.Signal()

    def __init__(self, worker: ReplayWorker | LiveWorker, options: WindowOptions | None = None) -> None:
        super().__init__()
        self.worker = worker
        self.options = options or WindowOptions()
        self.is_live = isinstance(worker, LiveWorker)
        self.setWindowTitle(f"iousguide — {self.options.source_label or 'guidance'}")
        self.setStyleSheet(DARK_QSS)
        self.frozen = False
        self.displayed = RateMeter()
        self.displayed_count = 0
        self.frame_ages_ms: deque[float] = deque(maxlen=100_000)
        self.stale = False
        self.no_signal = False
        self.help_visible = False
        self._last_delivery: Delivery | None = None
        self._pending_paint_t_ns: int | None = None
        self._last_table_ns = 0
        self._distance_history: dict[int, deque] = {}
        self._closing = False
        self._build()
        self.view.image.on_painted = self._on_image_painted
        self.view.set_mode(self.options.mode)
        self.worker.start()
        if not self.is_live and self.options.start_playing:
            self.worker.play()
        self._timer = QtCore.QTimer(self)
        self._timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._on_tick)
        self._timer.start(4)
        self._hud_timer = QtCore.QTimer(self)
        self._hud_timer.timeout.connect(self._update_hud)
        self._hud_timer.start(250)

    # -- layout ---------------------------------------------------------------------------
    def _build(self) -> None:
        central = QtWidgets.QWidget()
        outer = QtWidgets.QVBoxLayout(central)
        outer.setContentsMargins(6, 6, 6, 6)
        outer.setSpacing(4)
        self.hud = QtWidgets.QLabel()
        self.hud.setStyleSheet("font-family: monospace; font-size: 11pt; color: #cfe3ff; background: #0b0d10; padding: 3px;")
        self.hud.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.NoTextInteraction)
        self.hud.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Fixed)
        self.hud.setWordWrap(True)
        outer.addWidget(self.hud)

        splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        view_holder = QtWidgets.QWidget()
        vh = QtWidgets.QVBoxLayout(view_holder)
        vh.setContentsMargins(0, 0, 0, 0)
        self.view = GuidanceView(view_holder)
        self.view.sigClicked.connect(self._on_view_clicked)
        vh.addWidget(self.view)
        self.alarm_banner = _Banner(self.view, "rgba(200, 20, 20, 230)", 20)
        self.info_banner = _Banner(self.view, "rgba(150, 100, 0, 225)", 13)
        self.help_overlay = QtWidgets.QLabel(self)
        self.help_overlay.setStyleSheet(
            "background: rgba(10, 12, 16, 235); color: #f0f3f6; font-size: 12pt; padding: 16px; "
            "border: 1px solid #4a5560; border-radius: 6px;"
        )
        rows = "".join(f"<tr><td><b>{k}</b>&nbsp;&nbsp;</td><td>{v}</td></tr>" for k, v in SHORTCUTS)
        self.help_overlay.setText(f"<h3>Keyboard shortcuts</h3><table>{rows}</table><p>F1 or ? closes this help.</p>")
        self.help_overlay.hide()
        splitter.addWidget(view_holder)
        self.side_panel = self._build_side_panel()
        splitter.addWidget(self.side_panel)
        self.splitter = splitter
        splitter.setStretchFactor(0, 4)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([900, 380])
        outer.addWidget(splitter, 1)
        outer.addWidget(self._build_transport())
        self.status_line = QtWidgets.QLabel("")
        self.status_line.setStyleSheet("color: #ffb0a0; font-size: 11pt;")
        self.status_line.setWordWrap(False)
        self.status_line.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        outer.addWidget(self.status_line)
        self.setCentralWidget(central)
        self._build_shortcuts()
        self.resize(1280, 720)

    def _build_side_panel(self) -> QtWidgets.QWidget:
        tabs = QtWidgets.QTabWidget()
        tabs.setMinimumWidth(240)
        # vessels: table + distance plot
        vessels = QtWidgets.QWidget()
        vl = QtWidgets.QVBoxLayout(vessels)
        vl.setContentsMargins(2, 2, 2, 2)
        self.table = QtWidgets.QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(["id", "kind", "⌀ mm", "dist mm", "keep", "sink"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.cellDoubleClicked.connect(self._on_table_double_clicked)
        vl.addWidget(self.table, 3)
        self.distance_plot = pg.PlotWidget()
        self.distance_plot.setMinimumHeight(140)
        self.distance_plot.setLabel("bottom", "time (s)")
        self.distance_plot.setLabel("left", "distance (mm)")
        self.distance_plot.addLegend(offset=(5, 5))
        self.distance_plot.setMenuEnabled(False)
        self._distance_curves: dict[int, Any] = {}
        vl.addWidget(self.distance_plot, 2)
        self.plot_placeholder = QtWidgets.QLabel("distance over time: needs a calibration (no mm values)")
        self.plot_placeholder.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.plot_placeholder.setWordWrap(True)
        self.plot_placeholder.hide()
        vl.addWidget(self.plot_placeholder, 2)
        self._table_calibrated: bool | None = None
        self.legend = QtWidgets.QLabel(
            "<span style='color:#ffd400'>━ tumour</span> · <span style='color:#00d0ff'>━ hepatic vein</span> · "
            "<span style='color:#c58bff'>━ portal pedicle</span> · dashed = taken<br>"
            "resection line: <span style='color:#33e633'>━ ok</span> <span style='color:#ff9f1a'>━ tight</span> "
            "<span style='color:#ff3333'>━ R1 risk</span> <span style='color:#ff3df2'>✕ detachment</span><br>"
            "ablation: <span style='color:#7cfc00'>┅ planned zone</span> "
            "<span style='color:#ff8c00'>┈ predicted zone</span> · rings = heat sink"
        )
        self.legend.setWordWrap(True)
        self.legend.setStyleSheet("font-size: 10pt;")
        vl.addWidget(self.legend)
        tabs.addTab(vessels, "Vessels")
        # settings
        settings = QtWidgets.QWidget()
        form = QtWidgets.QFormLayout(settings)
        self.mode_combo = QtWidgets.QComboBox()
        self.mode_combo.addItems(["resection", "ablation"])
        self.mode_combo.setCurrentText(self.options.mode)
        self.mode_combo.currentTextChanged.connect(self._on_mode_changed)
        form.addRow("Mode", self.mode_combo)
        self.margin_spin = self._spin(0.5, 30.0, 0.5, "margin_target_mm", 5.0)
        form.addRow("Margin target (mm)", self.margin_spin)
        self.floor_spin = self._spin(0.0, 10.0, 0.5, "margin_floor_mm", 1.0)
        form.addRow("Margin floor (mm)", self.floor_spin)
        self.ablation_spin = self._spin(0.0, 20.0, 1.0, "ablation_margin_mm", 5.0)
        form.addRow("Ablation margin (mm)", self.ablation_spin)
        self.modality_combo = QtWidgets.QComboBox()
        self.modality_combo.addItems(["RFA", "MWA"])
        self.modality_combo.setCurrentText(str(self._guidance_value("modality", "RFA")))
        self.modality_combo.currentTextChanged.connect(lambda text: self._update_guidance(modality=text))
        form.addRow("Modality", self.modality_combo)
        self.stale_spin = QtWidgets.QDoubleSpinBox()
        self.stale_spin.setRange(50, 5000)
        self.stale_spin.setSingleStep(50)
        self.stale_spin.setValue(self.options.stale_ms)
        self.stale_spin.valueChanged.connect(lambda v: setattr(self.options, "stale_ms", float(v)))
        form.addRow("Stale after (ms)", self.stale_spin)
        self.overlay_boxes: dict[str, QtWidgets.QCheckBox] = {}
        for i, name in enumerate(OVERLAYS, start=1):
            box = QtWidgets.QCheckBox(f"{i}  {OVERLAY_LABELS[name]}")
            box.setChecked(True)
            box.toggled.connect(lambda on, n=name: self.view.set_overlay(n, on))
            self.overlay_boxes[name] = box
            form.addRow(box)
        tabs.addTab(settings, "Settings")
        return tabs

    def _guidance_value(self, name: str, default: Any) -> Any:
        pipeline = self.worker.pipeline
        guidance = getattr(getattr(pipeline, "settings", None), "guidance", None)
        return getattr(guidance, name, default) if guidance is not None else default

    def _spin(self, lo: float, hi: float, step: float, key: str, default: float) -> QtWidgets.QDoubleSpinBox:
        spin = QtWidgets.QDoubleSpinBox()
        spin.setRange(lo, hi)
        spin.setSingleStep(step)
        spin.setDecimals(1)
        spin.setValue(float(self._guidance_value(key, default)))
        spin.valueChanged.connect(lambda value, k=key: self._update_guidance(**{k: float(value)}))
        return spin

    def _build_transport(self) -> QtWidgets.QWidget:
        bar = QtWidgets.QWidget()
        h = QtWidgets.QHBoxLayout(bar)
        h.setContentsMargins(0, 0, 0, 0)

        def button(text: str, tip: str, slot, checkable: bool = False) -> QtWidgets.QPushButton:
            b = QtWidgets.QPushButton(text)
            b.setToolTip(tip)
            b.setCheckable(checkable)
            b.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
            b.clicked.connect(slot)
            h.addWidget(b)
            return b

        self.play_button = button("Pause", "play / pause (Space)", self.toggle_play)
        self.step_back_button = button("◀ 1", "step back (←)", lambda: self.step(-1))
        self.step_fwd_button = button("1 ▶", "step forward (→)", lambda: self.step(+1))
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        self.slider.sliderMoved.connect(self.seek)
        h.addWidget(self.slider, 1)
        self.time_label = QtWidgets.QLabel("0.00 / 0.00 s")
        self.time_label.setStyleSheet("font-family: monospace;")
        h.addWidget(self.time_label)
        self.speed_combo = QtWidgets.QComboBox()
        self.speed_combo.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        for s in SPEEDS:
            self.speed_combo.addItem(f"{s:g}×", s)
        self._set_speed_combo(self.options.speed)
        self.speed_combo.activated.connect(lambda i: self.set_speed(self.speed_combo.itemData(i)))
        h.addWidget(self.speed_combo)
        self.loop_button = button("Loop", "loop (L)", lambda on: self.set_loop(on), checkable=True)
        self.loop_button.setChecked(self.options.loop)
        self.freeze_button = button("Freeze", "freeze the live image (F)", self.toggle_freeze, checkable=True)
        self.snapshot_button = button("Snapshot", "PNG + JSON (S)", self.snapshot)
        self.record_button = button("Record", "record the live source (R)", self.toggle_record, checkable=True)
        self.help_button = button("?", "keyboard shortcuts (F1)", self.toggle_help)
        for w in (self.play_button, self.step_back_button, self.step_fwd_button, self.slider, self.time_label,
                  self.speed_combo, self.loop_button):
            w.setVisible(not self.is_live)
        for w in (self.freeze_button, self.record_button):
            w.setVisible(self.is_live)
        if not self.is_live:
            self.slider.setRange(0, max(self.worker.player.frames - 1, 0))
        return bar

    def _build_shortcuts(self) -> None:
        def sc(keys, slot) -> None:
            for key in keys if isinstance(keys, (list, tuple)) else [keys]:
                shortcut = QtGui.QShortcut(QtGui.QKeySequence(key), self)
                shortcut.setContext(QtCore.Qt.ShortcutContext.ApplicationShortcut)
                shortcut.activated.connect(slot)

        sc("Space", lambda: self.toggle_freeze() if self.is_live else self.toggle_play())
        sc(["Right", "."], lambda: self.step(+1))
        sc(["Left", ","], lambda: self.step(-1))
        sc("Shift+Right", lambda: self.seek_relative_s(+1.0))
        sc("Shift+Left", lambda: self.seek_relative_s(-1.0))
        sc("Home", lambda: self.seek(0))
        sc("End", lambda: self.seek(self.worker.player.frames - 1) if not self.is_live else None)
        sc("[", lambda: self.change_speed(-1))
        sc("]", lambda: self.change_speed(+1))
        sc("L", lambda: self.set_loop(not self.loop_button.isChecked()))
        sc("F", self.toggle_freeze)
        sc("S", self.snapshot)
        sc("R", self.toggle_record)
        sc("P", self.toggle_panels)
        sc("A", lambda: self.mode_combo.setCurrentText("ablation" if self.view.mode == "resection" else "resection"))
        for i, name in enumerate(OVERLAYS, start=1):
            sc(str(i), lambda n=name: self.overlay_boxes[n].toggle())
        sc(["+", "="], lambda: self.margin_spin.setValue(self.margin_spin.value() + 0.5))
        sc(["-"], lambda: self.margin_spin.setValue(self.margin_spin.value() - 0.5))
        sc(["F1", "?", "Shift+/"], self.toggle_help)
        sc(["Q", "Ctrl+Q"], self.close)
        sc("Escape", lambda: self.toggle_help() if self.help_visible else None)

    # -- controls ---------------------------------------------------------------------------
    def toggle_play(self) -> None:
        if not self.is_live:
            self.worker.toggle()

    def step(self, delta: int) -> None:
        if not self.is_live:
            self.worker.step(delta)

    def seek(self, index: int) -> None:
        if not self.is_live:
            self.worker.seek(int(index))

    def seek_relative_s(self, delta_s: float) -> None:
        if not self.is_live:
            state = self.worker.state
            self.worker.seek_time(max(0.0, state.t_media_s + delta_s))

    def set_speed(self, speed: float) -> None:
        if self.is_live:
            return
        speed = float(min(max(speed, SPEED_MIN), SPEED_MAX))
        self.worker.set_speed(speed)
        self.options.speed = speed
        self._set_speed_combo(speed)

    def _set_speed_combo(self, speed: float) -> None:
        for i in range(self.speed_combo.count()):
            if abs(self.speed_combo.itemData(i) - speed) < 1e-9:
                self.speed_combo.setCurrentIndex(i)
                return
        self.speed_combo.addItem(f"{speed:g}×", speed)
        self.speed_combo.setCurrentIndex(self.speed_combo.count() - 1)

    def change_speed(self, direction: int) -> None:
        current = self.options.speed
        options = [s for s in SPEEDS if (s > current + 1e-9 if direction > 0 else s < current - 1e-9)]
        if options:
            self.set_speed(min(options) if direction > 0 else max(options))

    def set_loop(self, loop: bool) -> None:
        if self.is_live:
            return
        self.loop_button.setChecked(bool(loop))
        self.worker.set_loop(bool(loop))

    def toggle_freeze(self) -> None:
        if not self.is_live:
            return
        self.frozen = not self.frozen
        self.freeze_button.setChecked(self.frozen)
        self._update_banners()

    def toggle_record(self) -> None:
        if not self.is_live:
            return
        if self.worker.recording:
            self.worker.stop_recording()
            self.record_button.setChecked(False)
            self.set_status(f"recording stopped: writing {self.worker.record_path} …")
            return
        stem = time.strftime("iousguide_live_%Y%m%d_%H%M%S")
        path = Path(self.options.record_dir) / f"{stem}.igs.mha"
        n = 2
        while path.exists() or partial_path_for(path).exists():
            path = Path(self.options.record_dir) / f"{stem}_{n}.igs.mha"
            n += 1
        try:
            self.worker.start_recording(str(path))
        except IousguideError as exc:
            self.record_button.setChecked(False)
            self.set_status(f"cannot record: {exc}")
            return
        self.record_button.setChecked(True)
        self.set_status(f"recording to {path}")

    def toggle_help(self) -> None:
        self.help_visible = not self.help_visible
        self._place_overlays()
        self.help_overlay.setVisible(self.help_visible)
        if self.help_visible:
            self.help_overlay.raise_()

    def _update_guidance(self, **changes: Any) -> None:
        self.worker.update_guidance(**changes)

    def _on_mode_changed(self, mode: str) -> None:
        self.options.mode = mode
        self.view.set_mode(mode)

    def set_status(self, text: str) -> None:
        """One line on the status line (errors and confirmations; never a dialog)."""
        self.status_line.setText(text)

    # -- clicks --------------------------------------------------------------------------
    def _on_view_clicked(self, x_src: float, y_src: float) -> None:
        vessel = self.view.vessel_at(x_src, y_src)
        if vessel is not None:
            self.toggle_preserve(vessel.id, vessel.preserve)
            return
        self.worker.seed_tumor(x_src, y_src)
        self.set_status(f"tumour seeded at ({x_src:.0f}, {y_src:.0f}) source px")

    def toggle_preserve(self, vessel_id: int, current: bool | None) -> None:
        new = not bool(current)
        self.worker.set_preserve(vessel_id, new)
        self.set_status(f"vessel V{vessel_id}: {'preserve' if new else 'take with the specimen'}")

    def _on_table_double_clicked(self, row: int, _col: int) -> None:
        result = self.view.result
        if result is not None and 0 <= row < len(result.vessels):
            vessel = sorted(result.vessels, key=_distance_key)[row]
            self.toggle_preserve(vessel.id, vessel.preserve)

    # -- frame loop ----------------------------------------------------------------------------
    def _on_tick(self) -> None:
        delivery = self.worker.take()
        now_ns = time.monotonic_ns()
        if delivery is not None and not self.frozen:
            self._last_delivery = delivery
            self._pending_paint_t_ns = delivery.frame.t_mono_ns
            self._evaluate_staleness(now_ns)
            self.view.show_frame(delivery.frame, delivery.result, overlays=not (self.stale or self.no_signal))
            self._update_transport(delivery)
            self._update_banners()
            self._update_table(delivery)
            self._record_distances(delivery)
            if now_ns - self._last_table_ns > 200e6:  # the plot at 5 Hz is plenty
                self._last_table_ns = now_ns
                self._update_plot(delivery)
        else:
            was = (self.stale, self.no_signal)
            self._evaluate_staleness(now_ns)
            if (self.stale, self.no_signal) != was:
                self.view.draw_overlays(not (self.stale or self.no_signal))
                self._update_banners()
        if self.worker.error_text and self.status_line.text() != self.worker.error_text:
            self.set_status(self.worker.error_text)
        self._check_unattended()

    def _evaluate_staleness(self, now_ns: int) -> None:
        delivery = self._last_delivery
        if self.frozen:
            self.stale = False
            return
        if self.is_live:
            health = self.worker.health()
            self.no_signal = bool(health is not None and (health.no_signal or health.status in ("no_signal", "reconnecting")))
            if delivery is None:
                self.stale = False
                return
            age_ms = (now_ns - delivery.frame.t_mono_ns) / 1e6
            self.stale = age_ms > self.options.stale_ms
            return
        # replay: stale when the due frame is late (processing behind the recording's timing)
        state = self.worker.state
        if delivery is None or state is None or not state.playing:
            self.stale = False
            return
        behind_s = state.t_media_s - float(self.worker.player.times_s[min(delivery.player.index, state.frames - 1)]) if delivery.player else 0.0
        next_gap_s = self._replay_gap_s(delivery)
        self.stale = (behind_s - next_gap_s) / max(state.speed, 1e-9) * 1000.0 > self.options.stale_ms

    def _replay_gap_s(self, delivery: Delivery) -> float:
        player = self.worker.player
        i = delivery.player.index if delivery.player else 0
        if i + 1 < player.frames:
            return float(player.times_s[i + 1] - player.times_s[i])
        return player.last_interval_s

    def _on_image_painted(self) -> None:
        if self._pending_paint_t_ns is None:
            return
        now_ns = time.monotonic_ns()
        age_ms = (now_ns - self._pending_paint_t_ns) / 1e6
        self._pending_paint_t_ns = None
        self.frame_ages_ms.append(age_ms)
        self.displayed.tick(now_ns)
        self.displayed_count += 1

    def _update_transport(self, delivery: Delivery) -> None:
        if self.is_live or delivery.player is None:
            return
        state = delivery.player
        if not self.slider.isSliderDown():
            self.slider.blockSignals(True)
            self.slider.setValue(state.index)
            self.slider.blockSignals(False)
        t_s = float(self.worker.player.times_s[state.index])
        self.time_label.setText(f"{t_s:6.2f} / {state.duration_s:.2f} s  #{state.index + 1}/{state.frames}")
        self.play_button.setText("Pause" if self.worker.player.playing else "Play")

    def _update_banners(self) -> None:
        frame = self.view.frame
        if self.no_signal:
            self.alarm_banner.setText("NO SIGNAL — guidance withdrawn until the image returns")
        elif self.stale:
            age = self.current_frame_age_ms()
            self.alarm_banner.setText(
                f"STALE IMAGE — {age:.0f} ms old — guidance withdrawn" if age is not None else "STALE IMAGE — guidance withdrawn"
            )
        self.alarm_banner.setVisible(self.no_signal or self.stale)
        info = []
        if frame is not None and frame.spacing_mm is None:
            info.append("UNCALIBRATED: no millimetre values shown\n(start with --calibration\u00a0FILE or --spacing-mm\u00a0X)")
        if self.frozen:
            info.append("FROZEN — live image held (F to resume)")
        result = self.view.result
        if result is not None and result.status in ("no_tumor", "lost") and not (self.stale or self.no_signal):
            info.append("NO TUMOUR LOCKED — click the tumour to seed it" if result.status == "no_tumor"
                        else "TUMOUR LOST — click the tumour to re-seed it")
        if result is not None and result.tumor is not None and result.tumor.assumed_edge and not (self.stale or self.no_signal):
            info.append("TUMOUR OUTLINE PARTLY ASSUMED — its deep part is hidden in an acoustic shadow\n"
                        "(distances from that part are marked *)")
        if result is not None and result.tumor is not None and result.tumor.outline == "learned" and not (
                self.stale or self.no_signal):
            info.append("TUMOUR OUTLINE FROM THE LEARNED LESION MODEL — not an edge measured on this image")
        self.info_banner.setText("\n".join(info))
        self.info_banner.setVisible(bool(info))
        self._place_overlays()

    def current_frame_age_ms(self) -> float | None:
        if self._last_delivery is None:
            return None
        return (time.monotonic_ns() - self._last_delivery.frame.t_mono_ns) / 1e6

    def _place_overlays(self) -> None:
        """Alarm banner (STALE / NO SIGNAL) at the top of the image, info banner at the bottom."""
        w, h = self.view.width(), self.view.height()
        for banner in (self.alarm_banner, self.info_banner):
            metrics = banner.fontMetrics()
            lines = banner.text().split("\n") if banner.text() else [""]
            text_w = max(metrics.horizontalAdvance(line) for line in lines) + 40
            banner.setFixedWidth(max(120, min(text_w, w - 40)))
            banner.adjustSize()
        self.alarm_banner.move(max(0, (w - self.alarm_banner.width()) // 2), 34)
        self.info_banner.move(max(0, (w - self.info_banner.width()) // 2), max(0, h - self.info_banner.height() - 12))
        self.help_overlay.adjustSize()
        self.help_overlay.move(
            max(0, (self.width() - self.help_overlay.width()) // 2), max(0, (self.height() - self.help_overlay.height()) // 2)
        )

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().resizeEvent(event)
        if self.side_panel.isVisible():  # the image keeps at least 70 % of the width
            side = min(400, max(240, int(0.3 * self.width())))
            self.splitter.setSizes([max(1, self.width() - side), side])
        self._place_overlays()

    def toggle_panels(self) -> None:
        """Hide/show the side panels (image full width)."""
        self.side_panel.setVisible(not self.side_panel.isVisible())
        if self.side_panel.isVisible():
            side = min(400, max(240, int(0.3 * self.width())))
            self.splitter.setSizes([max(1, self.width() - side), side])

    # -- panels ------------------------------------------------------------------------------
    def _record_distances(self, delivery: Delivery) -> None:
        result = delivery.result
        if result is None or result.t_s is None:
            return
        for vessel in result.vessels:
            if vessel.distance_mm is None:
                continue
            hist = self._distance_history.setdefault(vessel.id, deque())
            if hist and result.t_s < hist[-1][0]:
                hist.clear()  # seek back / loop: restart the trace
            hist.append((result.t_s, vessel.distance_mm))
            while hist and result.t_s - hist[0][0] > DISTANCE_HISTORY_S:
                hist.popleft()

    def _update_table(self, delivery: Delivery) -> None:
        result = delivery.result
        vessels = sorted(result.vessels, key=_distance_key) if result is not None else []
        calibrated = delivery.frame.spacing_mm is not None
        if calibrated != self._table_calibrated:  # no "mm" anywhere on an uncalibrated source
            self._table_calibrated = calibrated
            self.table.setHorizontalHeaderLabels(
                ["id", "kind", "⌀ mm", "dist mm", "keep", "sink"] if calibrated else ["id", "kind", "⌀", "dist", "keep", "sink"]
            )
            self.distance_plot.setVisible(calibrated)
            self.plot_placeholder.setVisible(not calibrated)
        self.table.setRowCount(len(vessels))
        for row, v in enumerate(vessels):
            hs = (v.heat_sink or {}).get("class", "") if calibrated else ""
            span = (v.heat_sink or {}).get("class_range") if calibrated else None
            if hs and span and span[0] != span[1]:  # uncertainty band reaches another class
                hs = f"{hs} ({span[0]}–{span[1]})"
            cells = [
                f"V{v.id}",
                KIND_SHORT.get(v.kind, v.kind),
                f"{v.diameter_mm:.1f}" if calibrated and v.diameter_mm is not None else "—",
                (f"{v.distance_mm:.1f}" + (f" ±{v.uncertainty_mm:.1f}" if v.uncertainty_mm is not None else "")
                 + (" *" if "tumor_edge_assumed" in v.flags else ""))  # measured from the assumed outline
                if calibrated and v.distance_mm is not None
                else "—",
                "yes" if v.preserve else ("no" if v.preserve is False else "—"),
                hs or "—",
            ]
            for col, text in enumerate(cells):
                item = self.table.item(row, col)
                if item is None:
                    item = QtWidgets.QTableWidgetItem()
                    self.table.setItem(row, col, item)
                item.setText(text)
    def _update_plot(self, delivery: Delivery) -> None:
        """Distance over time for the three nearest vessels."""
        result = delivery.result
        vessels = sorted(result.vessels, key=_distance_key) if result is not None else []
        nearest_ids = [v.id for v in vessels[:3] if v.distance_mm is not None]
        for vid, curve in list(self._distance_curves.items()):
            if vid not in nearest_ids:
                self.distance_plot.removeItem(curve)
                del self._distance_curves[vid]
        for vid in nearest_ids:
            hist = self._distance_history.get(vid)
            if not hist:
                continue
            data = np.asarray(hist)
            curve = self._distance_curves.get(vid)
            if curve is None:
                # one colour per vessel id for the whole session (the nearest-three order changes)
                curve = self.distance_plot.plot(pen=pg.mkPen(pg.intColor(vid, hues=7, minValue=200), width=2),
                                                name=f"V{vid}")
                self._distance_curves[vid] = curve
            curve.setData(data[:, 0], data[:, 1])
        t_last = result.t_s if result is not None and result.t_s is not None else 0.0
        self.distance_plot.setXRange(max(0.0, t_last - DISTANCE_HISTORY_S), max(t_last, 5.0), padding=0.02)
        top_mm = max((max(d for _, d in self._distance_history[v]) for v in nearest_ids if self._distance_history.get(v)),
                     default=10.0)
        self.distance_plot.setYRange(-0.5, max(5.0, top_mm * 1.1), padding=0)  # 0 mm (contact) stays visible

    def _update_hud(self) -> None:
        parts = [f"source: {self.options.source_label}"]
        src_fps = self.source_fps()
        disp = self.displayed.rate_hz()
        proc = self.worker.processed.rate_hz()
        parts.append(
            "fps src/proc/disp: "
            + "/".join("—" if v is None else f"{v:.1f}" for v in (src_fps, proc, disp))
        )
        ages = list(self.frame_ages_ms)[-30:]
        parts.append(f"frame age: {np.median(ages):.0f} ms" if ages else "frame age: —")
        drops = self.worker.dropped
        if not self.is_live:
            drops += self.worker.player.skipped
        else:
            health = self.worker.health()
            if health is not None:
                drops += health.dropped
        parts.append(f"drops: {drops}")
        label = self.options.calibration_label
        if not label:
            frame = self.view.frame
            label = "none (uncalibrated)" if frame is None or frame.spacing_mm is None else (
                f"{frame.spacing_mm[0]:.4g}x{frame.spacing_mm[1]:.4g} mm/px")
        parts.append(f"calibration: {label}")
        counters = self.worker.record_counters() if self.is_live else None
        if counters is not None:
            parts.append(f"● REC {counters['written']} written / {counters['dropped']} dropped")
        if self.is_live and self.worker.last_recording_message and not self.worker.recording:
            if self.status_line.text().startswith("recording stopped"):
                self.set_status(self.worker.last_recording_message)
        self.hud.setText("  |  ".join(parts))

    def source_fps(self) -> float | None:
        if self.is_live:
            health = self.worker.health()
            if health is not None and health.source_fps:
                return float(health.source_fps)
            return self.worker.source_meter.rate_hz()
        return self.worker.source.nominal_fps

    # -- snapshot / stats / unattended -------------------------------------------------------
    def grab_view(self) -> QtGui.QPixmap:
        return self.view.grab()

    def snapshot(self, path: str | None = None) -> Path | None:
        """PNG of the view with its overlays + the frame's results JSON beside it."""
        delivery = self._last_delivery
        if delivery is None:
            self.set_status("snapshot: no frame yet")
            return None
        if path is None:
            stamp = time.strftime("%Y%m%d_%H%M%S")
            path = str(Path(self.options.snapshot_dir) / f"iousguide_snapshot_{stamp}_f{delivery.frame.index}.png")
        png = Path(path)
        try:
            png.parent.mkdir(parents=True, exist_ok=True)
            if not self.grab_view().save(str(png), "PNG"):
                raise OSError(f"could not write {png}")
            data = {"source": self.options.source_label, "frame": delivery.frame.index}
            data["result"] = delivery.result.to_json() if delivery.result is not None else None
            png.with_suffix(".json").write_text(json.dumps(data, indent=1), encoding="utf-8")
        except OSError as exc:
            self.set_status(f"snapshot failed: {exc}")
            return None
        self.set_status(f"snapshot saved: {png} (+ .json)")
        return png

    def stats(self) -> dict[str, Any]:
        ages = list(self.frame_ages_ms)
        return {
            "source_fps": self.source_fps(),
            "displayed_fps": self.displayed.rate_hz(),
            "frame_age_ms_median": percentile_ms(ages, 50),
            "frame_age_ms_p95": percentile_ms(ages, 95),
            "displayed_frames": self.displayed_count,
            "processed_frames": self.worker.processed_count,
            "dropped": self.worker.dropped,
            "skipped": 0 if self.is_live else self.worker.player.skipped,
        }

    def _check_unattended(self) -> None:
        if self._closing:
            return
        frames = self.options.frames
        ended = (not self.is_live) and self.worker.player.ended and self.worker.slot._item is None
        done_frames = frames is not None and self.displayed_count >= frames
        done_end = frames is not None and (ended or self.worker.finished) and self._pending_paint_t_ns is None
        if done_frames or done_end:
            if self.options.screenshot:
                self.grab().save(self.options.screenshot, "PNG")
            self.close()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        self._closing = True
        self._timer.stop()
        self._hud_timer.stop()
        if not self.worker.stop(timeout_s=2.0):
            self.set_status("worker thread did not stop within 2 s")
        if self.options.stats:
            try:
                Path(self.options.stats).write_text(json.dumps(self.stats(), indent=1), encoding="utf-8")
            except OSError:
                pass
        super().closeEvent(event)
        self.sigFinished.emit()


def _distance_key(vessel) -> float:
    d = vessel.distance_mm if vessel.distance_mm is not None else vessel.distance_px
    return float(d) if d is not None else float("inf")
