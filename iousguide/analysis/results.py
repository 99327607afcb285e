"""Per-frame analysis results and their JSON-lines form.

**All coordinates in results are source-frame pixels** (x = column, y = row,
origin at the top-left of the source's full frame, before any crop), as in the
JSON contract. Use ``Frame.to_source_px`` / ``Frame.from_source_px`` to convert.
Every ``*_mm`` value is None when the frame is uncalibrated.

The JSON keys of :meth:`FrameResult.to_json` are a fixed, published contract:
fields may be added, none renamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

STATUSES = ("ok", "uncalibrated", "no_tumor", "lost", "no_signal", "error")
VESSEL_KINDS = ("hepatic_vein", "portal_pedicle", "unknown")


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _pt(point) -> list[float] | None:
    if point is None:
        return None
    return [round(float(point[0]), 2), round(float(point[1]), 2)]


def _contour(points) -> list[list[float]]:
    if points is None:
        return []
    return [[round(float(x), 1), round(float(y), 1)] for x, y in np.asarray(points).reshape(-1, 2)]


@dataclass
class TumorResult:
    """The tracked tumour in one frame (source pixels; mm values None when uncalibrated)."""

    centroid_px: tuple[float, float]
    contour_px: np.ndarray  # (N, 2) float, closed polygon, source pixels
    area_px: float
    area_mm2: float | None
    equivalent_diameter_mm: float | None
    state: str = "tracked"  # "seeded" | "tracked" | "reacquired" | "auto"
    confidence: float | None = None
    # part of the outline is assumed, not seen (a calcified lesion's deep part in its own shadow)
    assumed_edge: bool = False
    # where the outline comes from: "image" (edges found on this frame) or "learned" (the learned
    # lesion model's outline: iousguide/models/README.md)
    outline: str = "image"

    def to_json(self) -> dict[str, Any]:
        return {
            "centroid_px": _pt(self.centroid_px),
            "contour_px": _contour(self.contour_px),
            "area_mm2": _r(self.area_mm2),
            "equivalent_diameter_mm": _r(self.equivalent_diameter_mm),
            "state": self.state,
            "confidence": _r(self.confidence),
            "assumed_edge": bool(self.assumed_edge),
            "outline": self.outline,
        }


@dataclass
class VesselResult:
    """One vessel lumen in one frame with its measurements to the tumour."""

    id: int
    kind: str  # one of VESSEL_KINDS
    centroid_px: tuple[float, float]
    contour_px: np.ndarray  # (N, 2) float, source pixels
    diameter_px: float
    diameter_mm: float | None
    distance_mm: float | None = None  # tumour boundary to lumen edge; 0 when touching
    distance_px: float | None = None
    closest_px: tuple[tuple[float, float], tuple[float, float]] | None = None  # (tumour point, vessel point)
    contact_arc_deg: float | None = None
    uncertainty_mm: float | None = None
    flags: list[str] = field(default_factory=list)  # e.g. "jump"
    # added by guidance (None until then)
    preserve: bool | None = None
    heat_sink: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = {
            "id": int(self.id),
            "kind": self.kind,
            "centroid_px": _pt(self.centroid_px),
            "contour_px": _contour(self.contour_px),
            "diameter_mm": _r(self.diameter_mm),
            "distance_mm": _r(self.distance_mm),
            "closest_px": None if self.closest_px is None else [_pt(self.closest_px[0]), _pt(self.closest_px[1])],
            "contact_arc_deg": _r(self.contact_arc_deg, 1),
            "uncertainty_mm": _r(self.uncertainty_mm),
            "diameter_px": _r(self.diameter_px, 2),
            "distance_px": _r(self.distance_px, 2),
            "flags": list(self.flags),
        }
        if self.preserve is not None:
            data["preserve"] = bool(self.preserve)
        if self.heat_sink is not None:
            data["heat_sink"] = self.heat_sink
        return data


@dataclass
class FrameResult:
    """Everything iousguide found and planned on one frame."""

    frame: int
    t_s: float | None
    spacing_mm: tuple[float, float] | None
    status: str  # one of STATUSES
    tumor: TumorResult | None = None
    vessels: list[VesselResult] = field(default_factory=list)
    min_distance_mm: float | None = None
    processing_ms: float = 0.0
    message: str = ""
    t_mono_ns: int | None = None  # grab time of the frame (latency clock), not serialised
    # added by guidance: objects with to_json(), or plain dicts
    margin_plan: Any = None
    ablation: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "frame": int(self.frame),
            "t_s": _r(self.t_s, 6),
            "spacing_mm": list(self.spacing_mm) if self.spacing_mm is not None else None,
            "status": self.status,
            "tumor": self.tumor.to_json() if self.tumor is not None else None,
            "vessels": [v.to_json() for v in self.vessels],
            "min_distance_mm": _r(self.min_distance_mm),
            "processing_ms": _r(self.processing_ms, 2),
            "message": self.message,
        }
        if self.margin_plan is not None:
            data["margin_plan"] = self.margin_plan.to_json() if hasattr(self.margin_plan, "to_json") else self.margin_plan
        if self.ablation is not None:
            data["ablation"] = self.ablation.to_json() if hasattr(self.ablation, "to_json") else self.ablation
        data.update(self.extra)
        return data
