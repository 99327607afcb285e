"""Heat-sink risk of one vessel for an ablation plan (issue 6, section 2).

Zone = tumour + ablative margin; the distance that the rules use is from the
zone edge to the vessel lumen, i.e. ``max(gap - ablation_margin_mm, 0)`` where
``gap`` is the tumour-to-lumen distance (exact for an offset zone). Rules
(CLINICAL.md; every threshold a setting, boundaries inclusive):

* ``high``: vessel >= 3 mm within 5 mm of the zone edge, or any vessel >= 5 mm
  within 10 mm (Lu 2002; Yu 2008);
* ``moderate``: vessel >= 3 mm within 10 mm (RFA) or 15 mm (MWA) (Ringe 2015);
* ``none`` otherwise (including every vessel < 3 mm: Lu 2002).

The class is judged on the measured values. When the measurement's uncertainty is
given, the rules are also applied at both ends of its band (diameter ± u with gap ∓ u):
``class_range`` holds the least and the most severe class within the band and
``borderline`` is true when they differ, so a vessel sitting on a rule boundary is shown
as such instead of being silently rounded to one side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from iousguide.errors import AnalysisError
from iousguide.guidance.settings import GuidanceSettings

HEAT_SINK_CLASSES = ("none", "moderate", "high")


@dataclass(frozen=True)
class HeatSinkRisk:
    """One vessel's class with the rule that fired and the numbers it used."""

    cls: str
    rule: str
    basis: str
    diameter_mm: float
    zone_distance_mm: float
    deficit_mm: float | None = None
    class_range: tuple[str, str] | None = None

    @property
    def borderline(self) -> bool:
        """True when the uncertainty band reaches another class."""
        return self.class_range is not None and self.class_range[0] != self.class_range[1]

    def to_json(self) -> dict[str, Any]:
        return {
            "class": self.cls,
            "basis": self.basis,
            "deficit_mm": None if self.deficit_mm is None else round(float(self.deficit_mm), 2),
            "rule": self.rule,
            "diameter_mm": round(float(self.diameter_mm), 3),
            "zone_distance_mm": round(float(self.zone_distance_mm), 3),
            "class_range": None if self.class_range is None else list(self.class_range),
            "borderline": self.borderline,
        }


def zone_distance_mm(gap_mm: float, *, ablation_margin_mm: float) -> float:
    """Distance from the edge of (tumour + margin) to a vessel ``gap_mm`` from the tumour (0 inside)."""
    return max(float(gap_mm) - float(ablation_margin_mm), 0.0)


def classify_heat_sink(
    *, diameter_mm: float, gap_mm: float, settings: GuidanceSettings | None = None,
    uncertainty_mm: float | None = None, diameter_allowance_mm: float = 0.0,
) -> HeatSinkRisk:
    """Heat-sink class of one vessel.

    Parameters
    ----------
    diameter_mm : float
        Lumen diameter (mm).
    gap_mm : float
        Tumour boundary to lumen edge (mm), 0 when touching.
    settings : GuidanceSettings, optional
        Ablative margin, modality and rule thresholds.
    uncertainty_mm : float, optional
        Measurement uncertainty (mm, >= 0) of both the diameter and the gap; when given,
        ``class_range`` and ``borderline`` are filled (the class itself is unchanged).
    diameter_allowance_mm : float
        One-sided (mm, >= 0): the lumen may be up to this much wider than measured, a known
        under-read (a lumen inside a thin bright sheath reads small); only the band's severe end
        reaches further. With it > 0 the band is filled even without ``uncertainty_mm``.

    Returns
    -------
    HeatSinkRisk
        ``cls`` in :data:`HEAT_SINK_CLASSES`, the rule name, a one-line basis naming
        rule, diameter and zone-edge distance, and the numbers themselves.
    """
    s = settings or GuidanceSettings()
    if diameter_mm is None or gap_mm is None:
        raise AnalysisError("heat-sink risk needs a diameter and a distance in mm (calibrated frame)")
    allowance = float(diameter_allowance_mm)
    if not (allowance >= 0.0 and math.isfinite(allowance)):
        raise AnalysisError(f"diameter_allowance_mm must be a number >= 0, got {diameter_allowance_mm!r}")
    risk = _classify(float(diameter_mm), float(gap_mm), s)
    if uncertainty_mm is None and allowance == 0.0:
        return risk
    u = 0.0 if uncertainty_mm is None else abs(float(uncertainty_mm))
    least = _classify(max(float(diameter_mm) - u, 0.0), float(gap_mm) + u, s).cls
    most = _classify(float(diameter_mm) + u + allowance, max(float(gap_mm) - u, 0.0), s).cls
    risk = replace(risk, class_range=(least, most))
    if risk.borderline:
        other = most if most != risk.cls else least
        band = f"±{u:.1f} mm" + (f" and diameter +{allowance:.1f} mm (a thin bright sheath reads small)" if allowance > 0 else "")
        risk = replace(risk, basis=f"{risk.basis}; borderline: within {band} it could be {other}")
    return risk


def _classify(diameter: float, gap_mm: float, s: GuidanceSettings) -> HeatSinkRisk:
    dist = zone_distance_mm(gap_mm, ablation_margin_mm=s.ablation_margin_mm)
    where = f"D = {diameter:.1f} mm, {dist:.1f} mm from the {s.ablation_margin_mm:g} mm-margin zone edge"
    if diameter >= s.heat_sink_min_diameter_mm and dist <= s.high_near_distance_mm:
        return HeatSinkRisk(
            "high", "high_near",
            f"high: vessel >= {s.heat_sink_min_diameter_mm:g} mm within {s.high_near_distance_mm:g} mm of the zone "
            f"edge ({where}; Yu 2008, Lu 2002)",
            diameter, dist,
        )
    if diameter >= s.high_large_diameter_mm and dist <= s.high_far_distance_mm:
        return HeatSinkRisk(
            "high", "high_large",
            f"high: vessel >= {s.high_large_diameter_mm:g} mm within {s.high_far_distance_mm:g} mm of the zone "
            f"edge ({where}; Yu 2008)",
            diameter, dist,
        )
    if diameter >= s.heat_sink_min_diameter_mm and dist <= s.moderate_distance_mm:
        return HeatSinkRisk(
            "moderate", f"moderate_{s.modality.lower()}",
            f"moderate: vessel >= {s.heat_sink_min_diameter_mm:g} mm within {s.moderate_distance_mm:g} mm "
            f"({s.modality}) of the zone edge ({where}; Ringe 2015)",
            diameter, dist,
        )
    if diameter < s.heat_sink_min_diameter_mm:
        return HeatSinkRisk(
            "none", "small_vessel",
            f"none: vessel < {s.heat_sink_min_diameter_mm:g} mm ({where}; Lu 2002: no heat sink in 0/20 veins "
            f"< 3 mm)",
            diameter, dist,
        )
    return HeatSinkRisk(
        "none", "far",
        f"none: farther than {s.moderate_distance_mm:g} mm ({s.modality}) from the zone edge ({where})",
        diameter, dist,
    )
