"""Guidance settings: every default from ``shared/reference/CLINICAL.md``, each with its basis.

Nothing here is a validated prediction: the defaults are literature rules of
thumb, every one is a setting, and :data:`BASIS` says where each comes from so
the CLI and the display can show it next to the value.

Example
-------
>>> from iousguide.guidance.settings import GuidanceSettings, basis_of
>>> s = GuidanceSettings(margin_target_mm=10.0, modality="MWA")
>>> s.moderate_distance_mm
15.0
>>> basis_of("margin_floor_mm")[:20]
'>1 mm vs <1 mm: bett'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from iousguide.errors import SettingsError

MODALITIES = ("RFA", "MWA")

#: where every default comes from (CLINICAL.md; "(check)" = secondary source there)
BASIS: dict[str, str] = {
    "margin_target_mm": "5 mm target in free parenchyma: local recurrence rises below 5 mm "
    "(Angelsen et al., World J Surg Oncol 2014;12:127)",
    "margin_floor_mm": ">1 mm vs <1 mm: better survival, meta-analysis of 11,147 resections "
    "(Margonis et al., Ann Surg 2018;267:1047); R1 = tumour < 1 mm from the cut (Vigano et al., Ann Surg Oncol 2016)",
    "major_vessel_min_diameter_mm": "detachment (R1vasc) only against a major vessel: hepatic vein or 1st/2nd-order "
    "portal pedicle (Vigano 2016); 4 mm = lower end of segmental (2nd-order) portal branches 4-7 mm, "
    "third order 2-4 mm (CLINICAL.md vessel sizes, check)",
    "major_vessel_kinds": "R1vasc is allowed against hepatic veins and portal pedicles only (Vigano 2016)",
    "preserve_ids": "user marks: vessels to preserve in addition to the default rule",
    "no_preserve_ids": "user unmarks: vessels not to preserve (taken with the specimen if closer than the floor)",
    "comparison_margin_mm": "uniform 10 mm margin: the conventional wide margin the parenchymal-sparing argument "
    "compares against (CLINICAL.md: 10 mm ablative margin preferred; seed argument)",
    "ablation_margin_mm": "ablative margin >= 5 mm, 10 mm preferred (10 mm for RAS-mutant): -46 % local progression "
    "per +5 mm (Wang et al., CVIR 2013;36:166); < 5 mm HR 2.48 (Odisio et al., Br J Surg 2017;104:760)",
    "modality": "RFA is more flow-sensitive than MWA, MWA is not immune (Primavesi 2018; Yu 2008; Ringe 2015)",
    "heat_sink_min_diameter_mm": "heat sink in 73 % of veins > 3 mm vs 0/20 < 3 mm (Lu et al., AJR 2002;178:47); "
    "transition 2-4 mm",
    "diameter_underread_allowance_mm": "measured, not clinical: a lumen inside a bright sheath thinner than the "
    "image blur reads up to ~0.5 mm small (phantom: 0.5 mm sheath -0.46 to -0.52 mm; README known limits), and "
    "such a vessel is often typed hepatic_vein (a fresh 3.1 mm portal pedicle: on 28 of the 29 frames the detector found it), so for every "
    "vessel the heat-sink band reaches this much wider and one that may be >= 3 mm is flagged borderline (the "
    "class is unchanged; the 3 mm rule is itself a 2-4 mm transition)",
    "high_near_distance_mm": "high: vessel >= 3 mm within 5 mm of the zone edge; MWA coagulation to the vein wall "
    "78 % (<= 3 mm), 56 % (3-6 mm), 39 % (> 6 mm) (Yu et al., JVIR 2008;19:1087)",
    "high_large_diameter_mm": "high: any vessel >= 5 mm within 10 mm of the zone edge (Yu 2008)",
    "high_far_distance_mm": "high: any vessel >= 5 mm within 10 mm of the zone edge (Yu 2008)",
    "moderate_distance_rfa_mm": "moderate: vessel >= 3 mm within 10 mm (RFA) of the zone edge: ablation radius fell "
    "to 37 % at 10 mm from a perfused 5 mm vessel (Ringe et al., PLoS One 2015)",
    "moderate_distance_mwa_mm": "moderate: vessel >= 3 mm within 15 mm (MWA) of the zone edge: 80 % at 15 mm "
    "(Ringe et al., PLoS One 2015)",
    "bioheat": "2-D steady Pennes estimate (physics illustration, not a validated dose prediction)",
    "tissue_conductivity_w_per_m_k": "liver k = 0.52 W/(m K) (CLINICAL.md bioheat table)",
    "perfusion_per_s": "liver perfusion omega_b ~ 6.4e-3 1/s, range to ~1.7e-2 1/s; the most sensitive parameter "
    "(CLINICAL.md, check)",
    "blood_density_kg_per_m3": "blood rho_b ~ 1050 kg/m3 (CLINICAL.md, check)",
    "blood_specific_heat_j_per_kg_k": "blood c_b ~ 3617 J/(kg K) (CLINICAL.md, check)",
    "blood_conductivity_w_per_m_k": "0.52 W/(m K): back-computed from CLINICAL.md h ~ 450 W/(m2 K) at D = 5 mm "
    "with Nu = 4.36 (h = Nu k_b / D)",
    "nusselt": "Nu ~ 4.36, fully developed laminar flow: h = Nu k_b / D, a lower bound (CLINICAL.md)",
    "body_temperature_c": "37 C body and blood temperature (CLINICAL.md)",
    "coagulation_isotherm_c": "coagulation isotherm commonly 50-60 C; 55 C = middle of that range (CLINICAL.md)",
    "bioheat_grid_mm": "0.5 mm grid: the K0 line-source check is < 2 % there (tests/test_guidance_bioheat.py)",
    "bioheat_field_mm": "60 x 60 mm field around the applicator (issue 6 speed goal)",
    "bioheat_max_boundary_cells": "speed bound: above this many vessel boundary cells the estimate runs on a grid "
    "twice as coarse (a dense solve grows with the cube of this count; 600 cells ~ 3 ms on one core)",
    "applicator_radius_mm": "equivalent steady source spread over a disc of this radius (electrode/antenna ~1-2 mm)",
    "applicator_px": "applicator position in source px; default the tumour centroid",
    "applicator_power_w_per_m": "None: equivalent steady source sized to the vessel-free zone; a number: transient "
    "estimate with this power per unit applicator length (W/m, e.g. 50 W over a 3 cm active tip ~ 1667 W/m)",
    "ablation_duration_s": "heating time of the transient estimate (10 min, a typical single ablation cycle)",
    "bioheat_time_step_s": "implicit Euler step of the transient estimate (K0-limit and analytic transient checks "
    "in tests/test_guidance_bioheat.py)",
    "tissue_density_kg_per_m3": "liver rho = 1079 kg/m3 (CLINICAL.md bioheat table)",
    "tissue_specific_heat_j_per_kg_k": "liver c = 3540 J/(kg K) (CLINICAL.md bioheat table)",
    "ray_spacing_mm": "planner resolution: ray spacing along the outer cut line",
}


@dataclass(frozen=True)
class GuidanceSettings:
    """Every guidance threshold, in mm / SI units; defaults from CLINICAL.md (see :data:`BASIS`).

    Attributes
    ----------
    margin_target_mm : float
        Resection margin planned in free parenchyma.
    margin_floor_mm : float
        Hard floor; below it a segment is R1 risk (or an R1vasc detachment).
    preserve_ids, no_preserve_ids : frozenset of int
        Vessel ids the user marks preserved / not preserved (overrides the default rule).
    major_vessel_min_diameter_mm : float
        A hepatic vein or portal pedicle at least this wide is "major": preserved by
        default, and the only kind against which a detachment is allowed.
    ablation_margin_mm : float
        Ablation zone = tumour + this margin (5 mm default, 10 mm option).
    modality : {"RFA", "MWA"}
    bioheat : bool
        Run the 2-D Pennes estimate (deficit per vessel, predicted zone, coverage).
    """

    # resection margin (issue 6 section 1)
    margin_target_mm: float = 5.0
    margin_floor_mm: float = 1.0
    preserve_ids: frozenset = field(default_factory=frozenset)
    no_preserve_ids: frozenset = field(default_factory=frozenset)
    major_vessel_min_diameter_mm: float = 4.0
    major_vessel_kinds: tuple[str, ...] = ("hepatic_vein", "portal_pedicle")
    comparison_margin_mm: float = 10.0
    ray_spacing_mm: float = 0.3
    # ablation and heat sink (section 2)
    ablation_margin_mm: float = 5.0
    modality: str = "RFA"
    heat_sink_min_diameter_mm: float = 3.0
    diameter_underread_allowance_mm: float = 0.5
    high_near_distance_mm: float = 5.0
    high_large_diameter_mm: float = 5.0
    high_far_distance_mm: float = 10.0
    moderate_distance_rfa_mm: float = 10.0
    moderate_distance_mwa_mm: float = 15.0
    # bioheat (section 3)
    bioheat: bool = True
    tissue_conductivity_w_per_m_k: float = 0.52
    perfusion_per_s: float = 6.4e-3
    blood_density_kg_per_m3: float = 1050.0
    blood_specific_heat_j_per_kg_k: float = 3617.0
    blood_conductivity_w_per_m_k: float = 0.52
    nusselt: float = 4.36
    body_temperature_c: float = 37.0
    coagulation_isotherm_c: float = 55.0
    bioheat_grid_mm: float = 0.5
    bioheat_field_mm: float = 60.0
    bioheat_max_boundary_cells: int = 600
    applicator_radius_mm: float = 1.0
    applicator_px: tuple[float, float] | None = None
    applicator_power_w_per_m: float | None = None
    ablation_duration_s: float = 600.0
    bioheat_time_step_s: float = 5.0
    tissue_density_kg_per_m3: float = 1079.0
    tissue_specific_heat_j_per_kg_k: float = 3540.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "preserve_ids", frozenset(int(i) for i in self.preserve_ids))
        object.__setattr__(self, "no_preserve_ids", frozenset(int(i) for i in self.no_preserve_ids))
        both = self.preserve_ids & self.no_preserve_ids
        if both:
            raise SettingsError(f"vessel ids both preserved and not preserved: {sorted(both)}")
        if self.modality not in MODALITIES:
            raise SettingsError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        positive = (
            "margin_target_mm", "major_vessel_min_diameter_mm", "comparison_margin_mm", "ray_spacing_mm",
            "heat_sink_min_diameter_mm", "high_near_distance_mm", "high_large_diameter_mm",
            "high_far_distance_mm", "moderate_distance_rfa_mm", "moderate_distance_mwa_mm",
            "tissue_conductivity_w_per_m_k", "perfusion_per_s", "blood_density_kg_per_m3",
            "blood_specific_heat_j_per_kg_k", "blood_conductivity_w_per_m_k", "nusselt", "bioheat_grid_mm",
            "bioheat_field_mm", "applicator_radius_mm", "bioheat_max_boundary_cells", "ablation_duration_s",
            "bioheat_time_step_s", "tissue_density_kg_per_m3", "tissue_specific_heat_j_per_kg_k",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise SettingsError(f"{name} must be a positive number, got {value!r}")
        power = self.applicator_power_w_per_m
        if power is not None and (isinstance(power, bool) or not isinstance(power, (int, float))
                                  or not math.isfinite(power) or power <= 0):
            raise SettingsError(f"applicator_power_w_per_m must be a positive number or None, got {power!r}")
        for name in ("ablation_margin_mm", "diameter_underread_allowance_mm"):  # 0 = zone is the tumour itself / no allowance
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise SettingsError(f"{name} must be a number >= 0, got {value!r}")
        if not (math.isfinite(self.margin_floor_mm) and self.margin_floor_mm >= 0):
            raise SettingsError(f"margin_floor_mm must be >= 0, got {self.margin_floor_mm!r}")
        if self.margin_floor_mm > self.margin_target_mm:
            raise SettingsError(
                f"margin floor ({self.margin_floor_mm} mm) must not exceed the target ({self.margin_target_mm} mm)"
            )
        if not self.coagulation_isotherm_c > self.body_temperature_c:
            raise SettingsError(
                f"coagulation isotherm ({self.coagulation_isotherm_c} C) must be above body temperature "
                f"({self.body_temperature_c} C)"
            )
        if self.bioheat_grid_mm * 8 > self.bioheat_field_mm:
            raise SettingsError(
                f"bioheat grid {self.bioheat_grid_mm} mm is too coarse for a {self.bioheat_field_mm} mm field"
            )

    @property
    def moderate_distance_mm(self) -> float:
        """Zone-edge distance of the "moderate" rule for the chosen modality."""
        return self.moderate_distance_mwa_mm if self.modality == "MWA" else self.moderate_distance_rfa_mm

    def describe(self) -> list[dict[str, object]]:
        """Every setting with its value and basis, for display or ``--json`` output."""
        return [
            {"name": f.name, "value": _plain(getattr(self, f.name)), "basis": BASIS.get(f.name, "")}
            for f in fields(self)
        ]


def basis_of(name: str) -> str:
    """The documented basis of one setting (empty string if none)."""
    return BASIS.get(name, "")


def _plain(value):
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def settings_table(settings: GuidanceSettings | None = None) -> str:
    """Plain-text table of every guidance setting, its value and basis (for ``--help``-like output)."""
    rows = (settings or GuidanceSettings()).describe()
    width = max(len(r["name"]) for r in rows)
    return "\n".join(f"{r['name']:<{width}}  {r['value']!s:<12}  {r['basis']}" for r in rows)


if __name__ == "__main__":  # python -m iousguide.guidance.settings
    print(settings_table())
