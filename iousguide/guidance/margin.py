"""Modulated resection margin in the image plane (issue 6, section 1).

The planned cut line is traced along rays from a point inside the tumour, in
millimetres, with exact polygon geometry (no raster):

* in free parenchyma the line runs at exactly ``margin_target_mm`` from the
  tumour (outer boundary of the tumour offset by the target);
* where a *preserved* vessel lies inside that band, the line stops at the vessel
  wall (the vessel is dissected free and kept), so the margin there is the
  tumour-to-vessel gap: a ``preserved_vessel`` segment if the gap is at least
  ``margin_floor_mm``, a ``detachment`` (R1vasc) segment where it is below the
  floor -- allowed only against a major vessel (hepatic vein or portal pedicle
  >= ``major_vessel_min_diameter_mm``) and flagged "check for infiltration";
* a vessel that is not preserved and is closer than the floor cannot get a
  >= 1 mm margin: it must be taken with the specimen (``sacrifice_vessel_ids``).

Each segment's class is decided on the *lower* end of the measurement's
uncertainty band, so it is never "ok" when the band crosses a threshold.
Coordinates out are source pixels; every number in mm. Uncalibrated frames get
no plan (see :func:`iousguide.guidance.apply.apply_guidance`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from iousguide.errors import AnalysisError
from iousguide.guidance import geometry as geo
from iousguide.guidance.settings import GuidanceSettings

REASONS = ("free", "preserved_vessel", "detachment")
CLASSES = ("ok", "tight", "r1_risk")
INFILTRATION_FLAG = "check for infiltration"

_MIN_RAYS, _MAX_RAYS = 360, 4096


@dataclass
class MarginSegment:
    """One run of the cut line with the same reason, vessel and class.

    ``contour_px`` (K, 2) source px, open polyline that shares its last point with
    the next segment's first. ``margin_mm`` is the smallest achievable margin on it.
    """

    contour_px: np.ndarray
    margin_mm: float
    reason: str
    vessel_id: int | None
    cls: str
    target_mm: float
    uncertainty_mm: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "contour_px": [[round(float(x), 1), round(float(y), 1)] for x, y in self.contour_px],
            "margin_mm": round(float(self.margin_mm), 3),
            "reason": self.reason,
            "vessel_id": None if self.vessel_id is None else int(self.vessel_id),
            "class": self.cls,
            "target_mm": round(float(self.target_mm), 3),
            "uncertainty_mm": round(float(self.uncertainty_mm), 3),
        }
        if self.reason == "detachment":
            data["flag"] = INFILTRATION_FLAG
        return data


@dataclass
class MarginPlan:
    """The planned resection line of one frame (JSON keys fixed by issue 6; extra keys added, none renamed).

    Attributes
    ----------
    target_mm, floor_mm : float
        Settings used (mm).
    segments : list of MarginSegment
        The cut line in runs of equal reason / vessel / class (source px).
    min_margin_mm : float
        Smallest achievable margin anywhere on the line (mm).
    detachment_vessel_ids : list of int
        Preserved major vessels the line detaches from (R1vasc, "check for infiltration").
    sacrifice_vessel_ids : list of int
        Vessels not preserved and closer than the floor: taken with the specimen.
    spared_mm2_vs_10mm : float
        Parenchyma area (mm^2, this plane) a uniform ``comparison_margin_mm`` margin would
        remove but this plan keeps; ``spared_pct_vs_10mm`` is it as a % of the parenchyma
        (specimen minus tumour) the uniform margin would remove.
    contour_px : ndarray, shape (N, 2)
        The whole closed line, one point per ray (source px).
    """

    target_mm: float
    floor_mm: float
    segments: list[MarginSegment]
    min_margin_mm: float
    detachment_vessel_ids: list[int]
    sacrifice_vessel_ids: list[int]
    spared_mm2_vs_10mm: float
    spared_pct_vs_10mm: float
    comparison_margin_mm: float
    contour_px: np.ndarray  # (N, 2) closed planned cut line, source px
    preserved_vessel_ids: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    compute_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "target_mm": round(float(self.target_mm), 3),
            "floor_mm": round(float(self.floor_mm), 3),
            "segments": [s.to_json() for s in self.segments],
            "min_margin_mm": round(float(self.min_margin_mm), 3),
            "detachment_vessel_ids": [int(i) for i in self.detachment_vessel_ids],
            "sacrifice_vessel_ids": [int(i) for i in self.sacrifice_vessel_ids],
            "spared_mm2_vs_10mm": round(float(self.spared_mm2_vs_10mm), 2),
            "spared_pct_vs_10mm": round(float(self.spared_pct_vs_10mm), 2),
            "comparison_margin_mm": round(float(self.comparison_margin_mm), 3),
            "preserved_vessel_ids": [int(i) for i in self.preserved_vessel_ids],
            "warnings": list(self.warnings),
            "compute_ms": round(float(self.compute_ms), 2),
        }


def is_major(vessel, *, settings: GuidanceSettings) -> bool:
    """Hepatic vein or portal pedicle at least ``major_vessel_min_diameter_mm`` wide."""
    return (
        vessel.kind in settings.major_vessel_kinds
        and vessel.diameter_mm is not None
        and vessel.diameter_mm >= settings.major_vessel_min_diameter_mm
    )


def is_preserved(vessel, *, settings: GuidanceSettings) -> bool:
    """User marks win; otherwise major vessels are preserved."""
    if vessel.id in settings.preserve_ids:
        return True
    if vessel.id in settings.no_preserve_ids:
        return False
    return is_major(vessel, settings=settings)


def vessel_gap_mm(vessel, tumor_mm: np.ndarray, *, spacing_mm: tuple[float, float]) -> float:
    """Tumour-to-lumen gap (mm): the tracker's ``distance_mm`` if given, else from the contours."""
    if vessel.distance_mm is not None:
        return max(float(vessel.distance_mm), 0.0)
    poly = geo.clean_polygon(geo.to_mm(vessel.contour_px, spacing_mm), tolerance_mm=geo.contour_tolerance_mm(spacing_mm))
    if len(poly) < 3:
        raise AnalysisError(f"vessel {vessel.id} has a degenerate contour ({len(poly)} points)")
    return geo.polygon_gap_mm(tumor_mm, poly)


def plan_margin(
    tumor_contour_px,
    vessels: Sequence,
    *,
    spacing_mm: tuple[float, float],
    settings: GuidanceSettings | None = None,
) -> MarginPlan:
    """Plan the modulated resection line around a tumour in one image plane.

    Parameters
    ----------
    tumor_contour_px : array_like, shape (N, 2)
        Closed tumour polygon, (x, y) source pixels, N >= 3.
    vessels : sequence of VesselResult
        Vessel lumens (``contour_px`` (M, 2) source px, ``id``, ``kind``,
        ``diameter_mm``, ``distance_mm``, ``uncertainty_mm``). Not modified.
    spacing_mm : (float, float)
        Pixel size x, y in mm. Required: there is no plan without calibration.
    settings : GuidanceSettings, optional
        Target, floor, preserve marks, major-vessel rule (defaults: CLINICAL.md).

    Returns
    -------
    MarginPlan
        Segments (source px) with achievable margin (mm), reason and class; the
        vessels needing detachment or sacrifice; parenchyma spared in this plane
        against a uniform ``comparison_margin_mm`` margin (mm^2 and %).

    Raises
    ------
    AnalysisError
        Degenerate tumour polygon or missing spacing.
    """
    start_ns = time.perf_counter_ns()
    settings = settings or GuidanceSettings()
    if spacing_mm is None:
        raise AnalysisError("a margin plan needs a calibrated frame (spacing_mm is None)")
    spacing_mm = (float(spacing_mm[0]), float(spacing_mm[1]))
    target_mm = float(settings.margin_target_mm)
    floor_mm = float(settings.margin_floor_mm)
    tumor_mm = geo.clean_polygon(geo.to_mm(tumor_contour_px, spacing_mm), tolerance_mm=geo.contour_tolerance_mm(spacing_mm))
    if len(tumor_mm) < 3 or geo.polygon_area_mm2(tumor_mm) <= 0:
        raise AnalysisError(f"tumour contour is degenerate ({len(tumor_mm)} points)")
    centre_mm = geo.interior_point(tumor_mm)
    reach_mm = float(np.sqrt(((tumor_mm - centre_mm) ** 2).sum(1)).max())
    outer_mm = reach_mm + max(target_mm, settings.comparison_margin_mm)
    n_rays = int(np.clip(np.ceil(2 * np.pi * outer_mm / settings.ray_spacing_mm), _MIN_RAYS, _MAX_RAYS))
    u = geo.ray_directions(n_rays)

    r_tumor_mm = geo.outer_radius(centre_mm, u, tumor_mm)
    r_tumor_mm = np.where(np.isnan(r_tumor_mm), 0.0, r_tumor_mm)
    r_free_mm, r_wide_mm = geo.offset_outer_radius(centre_mm, u, tumor_mm, [target_mm, settings.comparison_margin_mm])

    preserved_ids: list[int] = []
    warnings: list[str] = []
    sacrifice: list[int] = []
    r_vessel_mm = np.full(n_rays, np.inf)
    vessel_of_ray = np.full(n_rays, -1)
    polys: dict[int, np.ndarray] = {}
    info: dict[int, tuple[bool, float]] = {}  # id -> (major, uncertainty_mm)
    for vessel in vessels:
        poly_mm = geo.clean_polygon(geo.to_mm(vessel.contour_px, spacing_mm), tolerance_mm=geo.contour_tolerance_mm(spacing_mm))
        if len(poly_mm) < 3:
            warnings.append(f"vessel {vessel.id}: degenerate contour, ignored by the planner")
            continue
        preserved = is_preserved(vessel, settings=settings)
        gap_mm = vessel_gap_mm(vessel, tumor_mm, spacing_mm=spacing_mm)
        if not preserved:
            if gap_mm < floor_mm:
                sacrifice.append(int(vessel.id))
            continue
        if geo.points_in_polygon(centre_mm[None, :], poly_mm)[0]:
            warnings.append(f"vessel {vessel.id}: contour contains the tumour centre_mm, ignored by the planner")
            continue
        preserved_ids.append(int(vessel.id))
        polys[int(vessel.id)] = poly_mm
        info[int(vessel.id)] = (is_major(vessel, settings=settings), float(vessel.uncertainty_mm or 0.0))
        hit_mm = geo.first_hit_radius(centre_mm, u, poly_mm)
        closer = hit_mm < r_vessel_mm
        r_vessel_mm = np.where(closer, hit_mm, r_vessel_mm)
        vessel_of_ray = np.where(closer, int(vessel.id), vessel_of_ray)

    constrained = r_vessel_mm < r_free_mm
    r_cut_mm = np.where(constrained, np.maximum(r_vessel_mm, r_tumor_mm), r_free_mm)
    vessel_of_ray = np.where(constrained, vessel_of_ray, -1)
    points_mm = centre_mm[None, :] + r_cut_mm[:, None] * u
    # free rays sit on the exact target_mm offset by construction; measure the others
    margins_mm = np.full(n_rays, target_mm)
    measured = np.flatnonzero(constrained)
    if measured.size:
        margins_mm[measured] = geo.point_polygon_distance(points_mm[measured], tumor_mm)
        margins_mm[measured[r_cut_mm[measured] <= r_tumor_mm[measured] + 1e-9]] = 0.0

    # labels per ray
    reason = np.full(n_rays, "free", dtype=object)
    cls = np.full(n_rays, "ok", dtype=object)
    unc_mm = np.zeros(n_rays)
    near_band = np.zeros(n_rays, dtype=bool)
    for vid, poly_mm in polys.items():
        major, u_vessel_mm = info[vid]
        mine = vessel_of_ray == vid
        unc_mm[mine] = u_vessel_mm
        if u_vessel_mm > 0:  # free line within the vessel's uncertainty of its wall: not "ok"
            lo_mm, hi_mm = poly_mm.min(axis=0) - u_vessel_mm, poly_mm.max(axis=0) + u_vessel_mm
            in_box = np.all((points_mm >= lo_mm) & (points_mm <= hi_mm), axis=1)
            free_idx = np.flatnonzero(~constrained & in_box)
            if free_idx.size:
                dist_mm = geo.point_polygon_distance(points_mm[free_idx], poly_mm)
                near_band[free_idx[dist_mm <= u_vessel_mm]] = True
        below = mine & (margins_mm < floor_mm)
        if np.any(below):
            if major:
                reason[below] = "detachment"
            else:
                reason[below] = "preserved_vessel"
                warnings.append(
                    f"vessel {vid}: preserved but not a major vessel, so a detachment is not allowed; "
                    "take it with the specimen or accept an R1 margin"
                )
        reason[mine & (margins_mm >= floor_mm)] = "preserved_vessel"
    lower_mm = margins_mm - unc_mm
    cls[:] = np.where(lower_mm >= target_mm - 1e-6, "ok", np.where(lower_mm >= floor_mm - 1e-9, "tight", "r1_risk"))
    cls[(cls == "ok") & near_band] = "tight"
    cls[reason == "detachment"] = "r1_risk"
    vessel_label = np.where(reason == "free", -1, vessel_of_ray)

    segments = _segments(points_mm, margins_mm, reason, vessel_label, cls, unc_mm, spacing_mm=spacing_mm, target_mm=target_mm)
    detach = sorted({s.vessel_id for s in segments if s.reason == "detachment"})

    area_tumor_mm2 = geo.polygon_area_mm2(tumor_mm)
    area_plan_mm2 = geo.ring_area_mm2(centre_mm, u, r_cut_mm)
    area_wide_mm2 = geo.ring_area_mm2(centre_mm, u, r_wide_mm)
    spared_mm2 = area_wide_mm2 - area_plan_mm2
    removed_wide_mm2 = area_wide_mm2 - area_tumor_mm2
    return MarginPlan(
        target_mm=target_mm,
        floor_mm=floor_mm,
        segments=segments,
        min_margin_mm=float(margins_mm.min()),
        detachment_vessel_ids=detach,
        sacrifice_vessel_ids=sorted(sacrifice),
        spared_mm2_vs_10mm=float(spared_mm2),
        spared_pct_vs_10mm=float(100.0 * spared_mm2 / removed_wide_mm2) if removed_wide_mm2 > 0 else 0.0,
        comparison_margin_mm=float(settings.comparison_margin_mm),
        contour_px=geo.to_px(points_mm, spacing_mm),
        preserved_vessel_ids=sorted(preserved_ids),
        warnings=sorted(set(warnings)),
        compute_ms=(time.perf_counter_ns() - start_ns) / 1e6,
    )


def _segments(points_mm, margins_mm, reason, vessel_label, cls, unc_mm, *, spacing_mm, target_mm) -> list[MarginSegment]:
    """Cut the closed ray polyline into runs of equal (reason, vessel, class)."""
    import cv2

    n = len(points_mm)
    key = [(reason[i], int(vessel_label[i]), cls[i]) for i in range(n)]
    changes = [i for i in range(n) if key[i] != key[i - 1]]
    points_px = geo.to_px(points_mm, spacing_mm)
    if not changes:  # one closed run
        runs = [(0, n)]
        closed = True
    else:
        runs = [(changes[j], changes[(j + 1) % len(changes)]) for j in range(len(changes))]
        closed = False
    segments = []
    for start, stop in runs:
        if closed:
            idx = np.r_[np.arange(n), 0]
            run = np.arange(n)
        else:
            length = (stop - start) % n or n
            run = (start + np.arange(length)) % n
            idx = np.r_[run, stop % n]  # share the next run's first point
        poly = points_px[idx].astype(np.float32).reshape(-1, 1, 2)
        simple = cv2.approxPolyDP(poly, 0.25, False).reshape(-1, 2)
        r, v, c = key[run[0]]
        segments.append(
            MarginSegment(
                contour_px=simple.astype(float),
                margin_mm=float(margins_mm[run].min()),
                reason=str(r),
                vessel_id=None if v < 0 else int(v),
                cls=str(c),
                target_mm=target_mm,
                uncertainty_mm=float(unc_mm[run].max()),
            )
        )
    return segments
