"""The ultrasound image in millimetres with the guidance overlays (pyqtgraph).

``GuidanceView.show(frame, result)`` is the whole API the window (and the
tests) use: it draws the frame with ``ImageItem.setRect`` in mm, so every
overlay is drawn in mm. On an uncalibrated frame the view works in pixels,
labels its rulers "px" and never shows a millimetre value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from iousguide.analysis.results import FrameResult, VesselResult
from iousguide.frames import Frame

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False, background="#0b0d10", foreground="#d8dde3")

# -- colours (dark OR theme; each overlay has its own hue) ---------------------------
TUMOR_COLOR = "#ffd400"
VESSEL_COLORS = {"hepatic_vein": "#00d0ff", "portal_pedicle": "#c58bff", "unknown": "#b8b8b8"}
CALIPER_COLOR = "#ffffff"
SEGMENT_COLORS = {"ok": "#33e633", "tight": "#ff9f1a", "r1_risk": "#ff3333"}
DETACHMENT_COLOR = "#ff3df2"
HEAT_SINK_COLORS = {"high": "#ff3333", "moderate": "#ff9f1a", "none": "#33e633"}
ZONE_COLOR = "#7cfc00"
PREDICTED_ZONE_COLOR = "#ff8c00"
KIND_SHORT = {"hepatic_vein": "HV", "portal_pedicle": "PV", "unknown": "?"}

OVERLAYS = ("tumor", "vessels", "caliper", "resection", "ablation")
OVERLAY_LABELS = {
    "tumor": "Tumour contour",
    "vessels": "Vessels",
    "caliper": "Caliper",
    "resection": "Resection line",
    "ablation": "Heat sink / ablation zone",
}


def source_to_frame_px(frame: Frame, points_src: np.ndarray) -> np.ndarray:
    """Vectorised :meth:`Frame.from_source_px`.

    Parameters
    ----------
    frame : Frame
    points_src : ndarray, shape (N, 2)
        (x, y) in source pixels.

    Returns
    -------
    ndarray, shape (N, 2), float
        (x, y) in the displayed (cropped, flipped) frame's pixels.
    """
    pts = np.asarray(points_src, dtype=float).reshape(-1, 2).copy()
    pts[:, 0] -= frame.origin_px[0]
    pts[:, 1] -= frame.origin_px[1]
    flip_x, flip_y = frame.extra.get("flip_xy", (False, False))
    if flip_x:
        pts[:, 0] = frame.pixels.shape[1] - 1 - pts[:, 0]
    if flip_y:
        pts[:, 1] = frame.pixels.shape[0] - 1 - pts[:, 1]
    return pts


def frame_px_to_view(frame: Frame, points_px: np.ndarray) -> np.ndarray:
    """Frame pixels (pixel centres) -> view coordinates: mm when calibrated, px otherwise.

    Pixel ``j`` covers ``[j, j+1) * spacing`` in the view, so its centre is ``(j + 0.5) * spacing``.
    """
    pts = np.asarray(points_px, dtype=float).reshape(-1, 2) + 0.5
    if frame.spacing_mm is not None:
        pts = pts * np.asarray(frame.spacing_mm, dtype=float)
    return pts


def source_to_view(frame: Frame, points_src) -> np.ndarray:
    """Source pixels (N, 2) -> view coordinates (mm when calibrated)."""
    return frame_px_to_view(frame, source_to_frame_px(frame, np.asarray(points_src, dtype=float)))


def view_to_source(frame: Frame, x_view: float, y_view: float) -> tuple[float, float]:
    """A point in view coordinates -> source pixels (inverse of :func:`source_to_view`)."""
    if frame.spacing_mm is not None:
        x_view, y_view = x_view / frame.spacing_mm[0], y_view / frame.spacing_mm[1]
    return frame.to_source_px(x_view - 0.5, y_view - 0.5)


def format_distance(distance_mm: float | None, uncertainty_mm: float | None) -> str:
    """``2.3 ± 0.3 mm`` (or ``2.3 mm`` without an uncertainty; ``""`` without a distance)."""
    if distance_mm is None:
        return ""
    if uncertainty_mm is None:
        return f"{distance_mm:.1f} mm"
    return f"{distance_mm:.1f} ± {uncertainty_mm:.1f} mm"


def nearest_vessel(result: FrameResult | None) -> VesselResult | None:
    """The vessel with the smallest tumour distance (mm, else px), or None."""
    if result is None:
        return None
    best, best_d = None, math.inf
    for vessel in result.vessels:
        d = vessel.distance_mm if vessel.distance_mm is not None else vessel.distance_px
        if d is not None and d < best_d:
            best, best_d = vessel, d
    return best


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _plan_dict(obj: Any) -> dict | None:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "to_json"):
        return obj.to_json()
    return None


def _closed(points: np.ndarray) -> np.ndarray:
    if len(points) and not np.array_equal(points[0], points[-1]):
        return np.vstack([points, points[:1]])
    return points


def _pen(color, width: float = 2.0, style=QtCore.Qt.PenStyle.SolidLine) -> QtGui.QPen:
    pen = pg.mkPen(color=color, width=width)
    pen.setStyle(style)
    pen.setCosmetic(True)
    return pen


class _PaintNotifyingImage(pg.ImageItem):
    """An ImageItem that reports the first paint after each new image (for frame age)."""

    def __init__(self) -> None:
        super().__init__()
        self.on_painted: Callable[[], None] | None = None
        self._new_image = False

    def mark_new(self) -> None:
        self._new_image = True

    def paint(self, painter, *args) -> None:
        super().paint(painter, *args)
        if self._new_image:
            self._new_image = False
            if self.on_painted is not None:
                self.on_painted()


class _Pool:
    """Reusable items of one kind (labels, curves): no allocation churn per frame."""

    def __init__(self, factory: Callable[[], Any], view_box) -> None:
        self._factory = factory
        self._view_box = view_box
        self.items: list[Any] = []
        self.used = 0

    def begin(self) -> None:
        self.used = 0

    def next(self) -> Any:
        if self.used == len(self.items):
            item = self._factory()
            self._view_box.addItem(item)
            self.items.append(item)
        item = self.items[self.used]
        self.used += 1
        item.setVisible(True)
        return item

    def end(self) -> None:
        for item in self.items[self.used :]:
            item.setVisible(False)


@dataclass
class ViewState:
    """What the view currently draws (for tests and the window)."""

    calibrated: bool = False
    overlays_visible: bool = True
    drawn: dict[str, int] = field(default_factory=dict)  # overlay -> number of items drawn


class GuidanceView(pg.PlotWidget):
    """Image + rulers + overlays. Emits ``sigClicked(x_src, y_src)`` in source pixels."""

    sigClicked = QtCore.Signal(float, float)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.setMinimumSize(320, 240)
        plot = self.getPlotItem()
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.showAxis("top")
        plot.hideAxis("bottom")
        plot.showAxis("left")
        for name in ("top", "left"):
            axis = plot.getAxis(name)
            axis.setTextPen("#d8dde3")
            axis.setPen("#8a939c")
            font = QtGui.QFont()
            font.setPointSize(10)
            axis.setStyle(tickFont=font)
        self.view_box = plot.getViewBox()
        self.view_box.invertY(True)
        self.view_box.setAspectLocked(True)
        self.view_box.setMouseEnabled(False, False)
        self.image = _PaintNotifyingImage()
        self.image.setZValue(-10)
        self.view_box.addItem(self.image)
        self.enabled = {name: True for name in OVERLAYS}
        self.mode = "resection"  # or "ablation"
        self.state = ViewState()
        self._frame: Frame | None = None
        self._result: FrameResult | None = None
        self._shape: tuple[int, int] | None = None
        self._spacing: tuple[float, float] | None = None
        self._ruler_units = ""

        vb = self.view_box
        self._tumor = pg.PlotCurveItem(pen=_pen(TUMOR_COLOR, 3))
        self._caliper = pg.PlotCurveItem(pen=_pen(CALIPER_COLOR, 2.5))
        self._caliper_ends = pg.ScatterPlotItem(size=9, pen=pg.mkPen(CALIPER_COLOR, width=2), brush=None, symbol="+")
        self._caliper_label = self._make_label(CALIPER_COLOR, size_pt=13, bold=True)
        self._zone = pg.PlotCurveItem(pen=_pen(ZONE_COLOR, 2, QtCore.Qt.PenStyle.DashLine))
        self._predicted = pg.PlotCurveItem(pen=_pen(PREDICTED_ZONE_COLOR, 2, QtCore.Qt.PenStyle.DotLine))
        self._detach_marks = pg.ScatterPlotItem(size=11, symbol="x", pen=pg.mkPen(DETACHMENT_COLOR, width=2), brush=None)
        self._zone_label = self._make_label(PREDICTED_ZONE_COLOR, size_pt=11, bold=True)
        for item, z in (
            (self._zone, 2),
            (self._predicted, 2),
            (self._tumor, 5),
            (self._caliper, 7),
            (self._caliper_ends, 7),
            (self._detach_marks, 6),
        ):
            item.setZValue(z)
            vb.addItem(item)
        self._vessel_curves = _Pool(lambda: self._z(pg.PlotCurveItem(), 3), vb)
        self._ring_curves = _Pool(lambda: self._z(pg.PlotCurveItem(), 1), vb)
        self._segment_curves = _Pool(lambda: self._z(pg.PlotCurveItem(), 4), vb)
        self._labels = _Pool(lambda: self._z(self._make_label(VESSEL_COLORS["unknown"], add=False), 8), vb)
        self._segment_labels = _Pool(lambda: self._z(self._make_label(DETACHMENT_COLOR, add=False), 8), vb)
        self.scene().sigMouseClicked.connect(self._on_scene_clicked)

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _z(item, z: float):
        item.setZValue(z)
        return item

    def _make_label(self, color: str, *, size_pt: int = 11, bold: bool = False, add: bool = True) -> pg.TextItem:
        label = pg.TextItem(color=color, anchor=(0, 1), fill=pg.mkBrush(0, 0, 0, 170))
        font = QtGui.QFont()
        font.setPointSize(size_pt)
        font.setBold(bold)
        label.setFont(font)
        if add:
            label.setZValue(9)
            self.view_box.addItem(label)
        return label

    def _to_view(self, points_src) -> np.ndarray:
        return source_to_view(self._frame, points_src)

    def map_view_to_widget(self, x_view: float, y_view: float) -> QtCore.QPointF:
        """View (mm or px) -> this widget's pixel coordinates (for tests and screenshots)."""
        scene_pt = self.view_box.mapViewToScene(QtCore.QPointF(x_view, y_view))
        return QtCore.QPointF(self.mapFromScene(scene_pt))

    def map_source_to_widget(self, x_src: float, y_src: float) -> QtCore.QPointF:
        """Source pixels -> this widget's pixel coordinates (needs a shown frame)."""
        x, y = self._to_view([[x_src, y_src]])[0]
        return self.map_view_to_widget(float(x), float(y))

    @property
    def frame(self) -> Frame | None:
        return self._frame

    @property
    def result(self) -> FrameResult | None:
        return self._result

    # -- the API ---------------------------------------------------------------------------
    def show_frame(self, frame: Frame, result: FrameResult | None, *, overlays: bool = True) -> None:
        """Draw ``frame`` and, when ``overlays``, the guidance in ``result``."""
        self._frame, self._result = frame, result
        self.image.mark_new()
        self.image.setImage(frame.pixels, autoLevels=False, levels=(0, 255))
        rows, cols = frame.shape
        if (rows, cols) != self._shape or frame.spacing_mm != self._spacing:
            self._shape, self._spacing = (rows, cols), frame.spacing_mm
            sx, sy = frame.spacing_mm if frame.spacing_mm is not None else (1.0, 1.0)
            self.image.setRect(QtCore.QRectF(0.0, 0.0, cols * sx, rows * sy))
            self.view_box.setRange(xRange=(0, cols * sx), yRange=(0, rows * sy), padding=0.0)
            self._set_ruler_units("mm" if frame.spacing_mm is not None else "px")
        self.state.calibrated = frame.spacing_mm is not None
        self.draw_overlays(overlays)

    # pyqtgraph's PlotWidget has no show(frame, result); keep the name the brief asks for
    def show(self, *args, **kwargs) -> None:  # type: ignore[override]
        if args and isinstance(args[0], Frame):
            self.show_frame(*args, **kwargs)
        else:
            super().show()

    def _set_ruler_units(self, units: str) -> None:
        if units == self._ruler_units:
            return
        self._ruler_units = units
        plot = self.getPlotItem()
        plot.setLabel("top", f"lateral ({units})", color="#d8dde3")
        plot.setLabel("left", f"depth ({units})", color="#d8dde3")

    def set_overlay(self, name: str, enabled: bool) -> None:
        self.enabled[name] = bool(enabled)
        if self._frame is not None:
            self.draw_overlays(self.state.overlays_visible)

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        if self._frame is not None:
            self.draw_overlays(self.state.overlays_visible)

    def draw_overlays(self, visible: bool = True) -> None:
        """(Re)draw every overlay from the current result; ``visible=False`` withdraws them all."""
        self.state.overlays_visible = visible
        drawn = {name: 0 for name in OVERLAYS}
        for pool in (self._vessel_curves, self._ring_curves, self._segment_curves, self._labels, self._segment_labels):
            pool.begin()
        result, frame = self._result, self._frame
        calibrated = frame is not None and frame.spacing_mm is not None
        show = visible and result is not None and frame is not None
        tumor = result.tumor if show else None
        # tumour
        if tumor is not None and self.enabled["tumor"] and len(tumor.contour_px):
            pts = _closed(self._to_view(tumor.contour_px))
            self._tumor.setData(pts[:, 0], pts[:, 1])
            self._tumor.setVisible(True)
            drawn["tumor"] = 1
        else:
            self._tumor.setVisible(False)
        # vessels with labels
        heat_sink_mode = self.mode == "ablation"
        plan = _plan_dict(result.margin_plan) if show else None
        detachment_ids = {
            seg.get("vessel_id") for seg in (plan or {}).get("segments", []) if seg.get("reason") == "detachment"
        } if calibrated else set()
        tumor_centre = self._to_view([tumor.centroid_px])[0] if tumor is not None else None
        if show and self.enabled["vessels"]:
            for vessel in result.vessels:
                color = VESSEL_COLORS.get(vessel.kind, VESSEL_COLORS["unknown"])
                style = QtCore.Qt.PenStyle.SolidLine if vessel.preserve is not False else QtCore.Qt.PenStyle.DashLine
                pts = _closed(self._to_view(vessel.contour_px)) if len(vessel.contour_px) else None
                if pts is not None:
                    curve = self._vessel_curves.next()
                    curve.setPen(_pen(color, 3.0 if vessel.preserve else 2.0, style))
                    curve.setData(pts[:, 0], pts[:, 1])
                label = self._labels.next()
                text = f"V{vessel.id} {KIND_SHORT.get(vessel.kind, '?')}"
                if calibrated and vessel.diameter_mm is not None:
                    text += f" ⌀{vessel.diameter_mm:.1f} mm"
                if vessel.preserve:
                    text += " ✓keep"
                elif vessel.preserve is False:
                    text += " ✗take"
                html = f'<span style="color:{color}">{text}</span>'
                if vessel.id in detachment_ids and not heat_sink_mode:
                    html += f'<br><span style="color:{DETACHMENT_COLOR}">R1vasc detachment: check infiltration</span>'
                label.setHtml(html)
                anchor_pts = pts if pts is not None else self._to_view([vessel.centroid_px])
                centre = self._to_view([vessel.centroid_px])[0]
                gap = 1.5 if calibrated else 8.0  # beside the lumen, never on it
                rows, cols = frame.shape
                width_view = cols * (frame.spacing_mm[0] if calibrated else 1.0)
                # on the side away from the tumour (labels never sit on the tumour or the caliper)
                left = tumor_centre is not None and tumor_centre[0] > centre[0]
                if not left and float(anchor_pts[:, 0].max()) + gap + 0.25 * width_view > width_view:
                    left = True  # no room on the right
                elif left and float(anchor_pts[:, 0].min()) - gap - 0.25 * width_view < 0:
                    left = False  # no room on the left
                if left:
                    label.setAnchor((1, 0.5))
                    label.setPos(float(anchor_pts[:, 0].min()) - gap, float(centre[1]))
                else:
                    label.setAnchor((0, 0.5))
                    label.setPos(float(anchor_pts[:, 0].max()) + gap, float(centre[1]))
                drawn["vessels"] += 1
        # heat-sink rings + ablation zones (ablation mode)
        ablation = _plan_dict(result.ablation) if show else None
        if show and calibrated and heat_sink_mode and self.enabled["ablation"]:
            for vessel in result.vessels:
                hs = vessel.heat_sink or {}
                cls = hs.get("class")
                if cls not in HEAT_SINK_COLORS or cls == "none":
                    continue
                if not len(vessel.contour_px):
                    continue
                # a wide translucent halo along the lumen wall: follows elongated (longitudinal) vessels too
                pts = _closed(self._to_view(vessel.contour_px))
                color = QtGui.QColor(HEAT_SINK_COLORS[cls])
                color.setAlpha(190)
                halo = self._ring_curves.next()
                halo.setPen(_pen(color, 11))
                halo.setData(pts[:, 0], pts[:, 1])
                drawn["ablation"] += 1
            if ablation:
                zone = np.asarray(ablation.get("zone_contour_px") or [], dtype=float).reshape(-1, 2)
                pred = np.asarray(ablation.get("predicted_zone_contour_px") or [], dtype=float).reshape(-1, 2)
                if len(zone):
                    pts = _closed(self._to_view(zone))
                    self._zone.setData(pts[:, 0], pts[:, 1])
                    drawn["ablation"] += 1
                self._zone.setVisible(bool(len(zone)))
                if len(pred):
                    pts = _closed(self._to_view(pred))
                    self._predicted.setData(pts[:, 0], pts[:, 1])
                    drawn["ablation"] += 1
                self._predicted.setVisible(bool(len(pred)))
                covered = ablation.get("covered")
                text = f"{ablation.get('modality', '')} zone +{ablation.get('margin_mm', 0):.0f} mm: " + (
                    "covered (predicted)" if covered else "NOT covered (predicted)" if covered is False else "coverage unknown"
                )
                self._zone_label.setText(text, color=ZONE_COLOR if covered else PREDICTED_ZONE_COLOR)
                if len(zone) or len(pred):  # a fixed place (top-left of the image): never on the anatomy labels
                    self._zone_label.setPos(1.0, 1.0)
                    self._zone_label.setAnchor((0, 0))
                    self._zone_label.setVisible(True)
                else:
                    self._zone_label.setVisible(False)
            else:
                self._zone.setVisible(False)
                self._predicted.setVisible(False)
                self._zone_label.setVisible(False)
        else:
            self._zone.setVisible(False)
            self._predicted.setVisible(False)
            self._zone_label.setVisible(False)
        # resection line (resection mode)
        detach_pts = []
        if show and calibrated and plan and not heat_sink_mode and self.enabled["resection"]:
            for segment in plan.get("segments", []):
                pts = np.asarray(segment.get("contour_px") or [], dtype=float).reshape(-1, 2)
                if len(pts) < 2:
                    continue
                view_pts = self._to_view(pts)
                detachment = segment.get("reason") == "detachment"
                color = SEGMENT_COLORS.get(segment.get("class"), SEGMENT_COLORS["r1_risk"])
                curve = self._segment_curves.next()
                curve.setPen(_pen(color, 4 if detachment else 3))
                curve.setData(view_pts[:, 0], view_pts[:, 1])
                drawn["resection"] += 1
                if detachment:  # marked with crosses; its warning is in the vessel's label
                    step = max(1, len(view_pts) // 6)
                    detach_pts.extend(view_pts[::step].tolist())
                    detach_pts.append(view_pts[-1].tolist())
        if detach_pts:
            arr = np.asarray(detach_pts)
            self._detach_marks.setData(arr[:, 0], arr[:, 1])
            self._detach_marks.setVisible(True)
        else:
            self._detach_marks.setVisible(False)
        # caliper tumour -> nearest vessel (mm only)
        near = nearest_vessel(result) if (show and tumor is not None) else None
        if near is not None and calibrated and self.enabled["caliper"] and near.closest_px is not None and near.distance_mm is not None:
            pts = self._to_view([near.closest_px[0], near.closest_px[1]])
            self._caliper.setData(pts[:, 0], pts[:, 1])
            self._caliper_ends.setData(pts[:, 0], pts[:, 1])
            self._caliper_label.setText(format_distance(near.distance_mm, near.uncertainty_mm), color=CALIPER_COLOR)
            mid = pts.mean(axis=0)
            direction = pts[1] - pts[0]
            normal = np.array([-direction[1], direction[0]])
            norm = float(np.hypot(*normal))
            normal = normal / norm if norm > 0 else np.array([0.0, 1.0])
            if normal[1] < 0:
                normal = -normal  # the label goes below the line (deeper), clear of both ends
            pos = mid + normal * 2.5
            self._caliper_label.setAnchor((0.5, 0.0) if abs(normal[1]) >= abs(normal[0]) else (0.0, 0.5))
            self._caliper_label.setPos(float(pos[0]), float(pos[1]))
            for item in (self._caliper, self._caliper_ends, self._caliper_label):
                item.setVisible(True)
            drawn["caliper"] = 1
        else:
            for item in (self._caliper, self._caliper_ends, self._caliper_label):
                item.setVisible(False)
        for pool in (self._vessel_curves, self._ring_curves, self._segment_curves, self._labels, self._segment_labels):
            pool.end()
        self.state.drawn = drawn

    # -- clicks ---------------------------------------------------------------------------
    def _on_scene_clicked(self, event) -> None:
        if self._frame is None or event.button() != QtCore.Qt.MouseButton.LeftButton:
            return
        point = self.view_box.mapSceneToView(event.scenePos())
        x_src, y_src = view_to_source(self._frame, point.x(), point.y())
        rows, cols = self._frame.shape
        x_fr, y_fr = self._frame.from_source_px(x_src, y_src)
        if 0 <= x_fr < cols and 0 <= y_fr < rows:
            self.sigClicked.emit(float(x_src), float(y_src))

    def vessel_at(self, x_src: float, y_src: float, *, tolerance_px: float = 4.0) -> VesselResult | None:
        """The vessel whose contour contains (or passes within ``tolerance_px`` of) a source point."""
        import cv2

        if self._result is None:
            return None
        best, best_d = None, -math.inf
        for vessel in self._result.vessels:
            contour = np.asarray(vessel.contour_px, dtype=np.float32).reshape(-1, 1, 2)
            if len(contour) < 3:
                continue
            d = cv2.pointPolygonTest(contour, (float(x_src), float(y_src)), True)
            if d >= -tolerance_px and d > best_d:
                best, best_d = vessel, d
        return best
