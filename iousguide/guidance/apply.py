"""Turn one frame's measurements into guidance: :func:`apply_guidance`.

Pure: returns a new :class:`~iousguide.analysis.results.FrameResult` (copies via
``dataclasses.replace``) with ``margin_plan``, ``ablation`` and, per vessel,
``preserve`` and ``heat_sink`` filled in; the input is never modified. An
uncalibrated frame or a frame without a tumour gets ``margin_plan = ablation =
None`` and the reason in ``extra["guidance"]`` -- no millimetre value invented.

Example
-------
>>> from iousguide.guidance.apply import apply_guidance
>>> from iousguide.guidance.settings import GuidanceSettings
>>> new = apply_guidance(result, settings=GuidanceSettings(modality="MWA"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iousguide.analysis.results import FrameResult
from iousguide.errors import AnalysisError
from iousguide.guidance import geometry as geo
from iousguide.guidance.bioheat import AblationEstimate, BioheatEstimator, VesselSink
from iousguide.guidance.heatsink import classify_heat_sink
from iousguide.guidance.margin import MarginPlan, is_preserved, plan_margin, vessel_gap_mm
from iousguide.guidance.settings import GuidanceSettings

_DEFAULT_ESTIMATOR = BioheatEstimator()


def _contour_json(points) -> list[list[float]]:
    return [[round(float(x), 1), round(float(y), 1)] for x, y in np.asarray(points).reshape(-1, 2)]


@dataclass
class AblationPlan:
    """Ablation zone (tumour + margin) and, if the bioheat estimate ran, the predicted zone."""

    margin_mm: float
    modality: str
    zone_contour_px: np.ndarray  # (K, 2) source px
    predicted_zone_contour_px: np.ndarray  # (J, 2) source px; (0, 2) when not estimated
    covered: bool | None  # None when the bioheat estimate did not run
    applicator_px: tuple[float, float] | None = None
    isotherm_c: float | None = None
    bioheat_ms: float | None = None
    note: str = ""
    estimate: AblationEstimate | None = field(default=None, repr=False)  # full field for the display

    def _model(self) -> str:
        return _ablation_model(self.estimate)

    def to_json(self) -> dict[str, Any]:
        return {
            "margin_mm": round(float(self.margin_mm), 3),
            "modality": self.modality,
            "zone_contour_px": _contour_json(self.zone_contour_px),
            "predicted_zone_contour_px": _contour_json(self.predicted_zone_contour_px),
            "covered": self.covered,
            "applicator_px": None if self.applicator_px is None else [round(float(v), 2) for v in self.applicator_px],
            "isotherm_c": self.isotherm_c,
            "bioheat_ms": None if self.bioheat_ms is None else round(float(self.bioheat_ms), 2),
            "model": self._model(),
            "covered_without_vessels": None if self.estimate is None else bool(self.estimate.covered_without_vessels),
            "note": self.note,
        }


def _ablation_model(estimate: AblationEstimate | None) -> str:
    if estimate is None:
        return "none"
    if estimate.mode == "transient":
        return (f"transient 2-D Pennes, {estimate.equivalent_source_w_per_m:g} W/m for {estimate.duration_s:g} s "
                "(estimate, not a dose prediction)")
    return "steady 2-D Pennes, equivalent source sized to the vessel-free zone (estimate, not a dose prediction)"


def _skip(result: FrameResult, reason: str) -> FrameResult:
    extra = dict(result.extra)
    extra["guidance"] = {"status": "skipped", "reason": reason}
    return dataclasses.replace(result, margin_plan=None, ablation=None, extra=extra)


def apply_guidance(
    result: FrameResult,
    *,
    settings: GuidanceSettings | None = None,
    estimator: BioheatEstimator | None = None,
) -> FrameResult:
    """Margin plan, ablation zone, heat-sink risk and bioheat estimate for one frame.

    Parameters
    ----------
    result : FrameResult
        The tracker's result (``tumor.contour_px`` (N, 2) source px, vessels with
        ``contour_px``, ``diameter_mm``, ``distance_mm``, ``uncertainty_mm``;
        ``spacing_mm`` (x, y) mm/px or None). Not modified.
    settings : GuidanceSettings, optional
        Every threshold (defaults and their basis: :mod:`iousguide.guidance.settings`).
    estimator : BioheatEstimator, optional
        Cache for the bioheat estimate (a module-wide one by default); it never
        changes the answer, only avoids recomputing an unchanged scene.

    Returns
    -------
    FrameResult
        A copy with ``margin_plan`` (:class:`MarginPlan`), ``ablation``
        (:class:`AblationPlan`), each vessel's ``preserve`` and ``heat_sink``
        (dict with ``class``, ``basis``, ``deficit_mm``), and
        ``extra["guidance"]`` (status, timings, warnings).
    """
    start_ns = time.perf_counter_ns()
    settings = settings or GuidanceSettings()
    if result.spacing_mm is None:
        return _skip(result, "uncalibrated frame: no margin, zone or heat-sink values without a pixel spacing")
    if result.tumor is None or result.tumor.contour_px is None or len(np.asarray(result.tumor.contour_px)) < 3:
        return _skip(result, "no tumour in this frame")
    spacing = (float(result.spacing_mm[0]), float(result.spacing_mm[1]))
    tumor_mm = geo.clean_polygon(geo.to_mm(result.tumor.contour_px, spacing), tolerance_mm=geo.contour_tolerance_mm(spacing))
    if len(tumor_mm) < 3 or geo.polygon_area_mm2(tumor_mm) <= 0:
        return _skip(result, "tumour contour is degenerate")

    warnings: list[str] = []
    plan: MarginPlan | None
    try:
        plan = plan_margin(result.tumor.contour_px, result.vessels, spacing_mm=spacing, settings=settings)
        warnings.extend(plan.warnings)
    except AnalysisError as exc:
        plan = None
        warnings.append(f"margin plan: {exc}")

    centre_mm = geo.interior_point(tumor_mm)
    # zone outline: vertices every <= 0.5 mm along it (chord error < 0.01 mm; the bioheat grid is 0.5 mm)
    zone_mm = geo.offset_polygon(tumor_mm, settings.ablation_margin_mm,
                                 ray_spacing_mm=max(settings.ray_spacing_mm, 0.5), centre_mm=centre_mm)
    if settings.applicator_px is not None:
        applicator_mm = geo.to_mm([settings.applicator_px], spacing)[0]
    else:
        applicator_mm = centre_mm

    vessels = []
    risks = {}
    sinks = []
    for vessel in result.vessels:
        risk = None
        if vessel.diameter_mm is not None:
            try:
                gap = vessel_gap_mm(vessel, tumor_mm, spacing_mm=spacing)
                # a lumen in a thin bright sheath reads small, and the kind cannot tell a thin sheath
                # (often typed hepatic_vein): every vessel's band reaches the allowance wider
                risk = classify_heat_sink(diameter_mm=vessel.diameter_mm, gap_mm=gap, settings=settings,
                                          uncertainty_mm=vessel.uncertainty_mm,
                                          diameter_allowance_mm=settings.diameter_underread_allowance_mm)
                poly = geo.clean_polygon(geo.to_mm(vessel.contour_px, spacing), tolerance_mm=geo.contour_tolerance_mm(spacing))
                if len(poly) >= 3:
                    sinks.append(VesselSink(int(vessel.id), poly, float(vessel.diameter_mm)))
            except AnalysisError as exc:
                warnings.append(f"vessel {vessel.id}: {exc}")
        risks[vessel.id] = risk
        vessels.append(vessel)

    estimate: AblationEstimate | None = None
    note = ""
    if settings.bioheat:
        try:
            estimate = (estimator or _DEFAULT_ESTIMATOR).estimate(
                zone_mm, sinks, applicator_mm=tuple(applicator_mm), settings=settings
            )
            note = estimate.note
        except AnalysisError as exc:
            note = f"bioheat estimate not run: {exc}"
            warnings.append(note)
    else:
        note = "bioheat estimate disabled"

    new_vessels = []
    for vessel in vessels:
        risk = risks[vessel.id]
        heat_sink = None
        if risk is not None:
            deficit = None if estimate is None else estimate.deficit_mm.get(int(vessel.id))
            heat_sink = dataclasses.replace(risk, deficit_mm=deficit).to_json()
        new_vessels.append(
            dataclasses.replace(vessel, preserve=is_preserved(vessel, settings=settings), heat_sink=heat_sink,
                                flags=list(vessel.flags))
        )

    ablation = AblationPlan(
        margin_mm=float(settings.ablation_margin_mm),
        modality=settings.modality,
        zone_contour_px=_simplify_px(geo.to_px(zone_mm, spacing)),
        predicted_zone_contour_px=(
            _simplify_px(geo.to_px(estimate.predicted_zone_mm, spacing)) if estimate is not None else np.zeros((0, 2))
        ),
        covered=None if estimate is None else bool(estimate.covered),
        applicator_px=tuple(float(v) for v in geo.to_px([applicator_mm], spacing)[0]),
        isotherm_c=float(settings.coagulation_isotherm_c) if estimate is not None else None,
        bioheat_ms=None if estimate is None else estimate.solve_ms,
        note=note,
        estimate=estimate,
    )
    extra = dict(result.extra)
    extra["guidance"] = {
        "status": "ok" if plan is not None else "partial",
        "warnings": sorted(set(warnings)),
        "guidance_ms": round((time.perf_counter_ns() - start_ns) / 1e6, 2),
    }
    return dataclasses.replace(result, vessels=new_vessels, margin_plan=plan, ablation=ablation, extra=extra)


def _simplify_px(points_px: np.ndarray, *, tolerance_px: float = 0.25) -> np.ndarray:
    import cv2

    pts = np.asarray(points_px, dtype=np.float32).reshape(-1, 1, 2)
    if len(pts) < 8:
        return pts.reshape(-1, 2).astype(float)
    return cv2.approxPolyDP(pts, tolerance_px, True).reshape(-1, 2).astype(float)
