"""Heat-sink classes at every rule boundary (CLINICAL.md rules; issue 6, section 2)."""

from __future__ import annotations

import pytest

from iousguide.errors import AnalysisError, SettingsError
from iousguide.guidance.heatsink import classify_heat_sink, zone_distance_mm
from iousguide.guidance.settings import GuidanceSettings

RFA = GuidanceSettings(modality="RFA", ablation_margin_mm=5.0)
MWA = GuidanceSettings(modality="MWA", ablation_margin_mm=5.0)


@pytest.mark.parametrize(
    "settings, diameter_mm, zone_mm, expected, rule",
    [
        (RFA, 3.0, 5.0, "high", "high_near"),       # >= 3 mm within 5 mm: both boundaries inclusive
        (RFA, 2.99, 0.0, "none", "small_vessel"),   # < 3 mm: never a heat sink (Lu 2002)
        (RFA, 3.0, 5.01, "moderate", "moderate_rfa"),
        (RFA, 3.0, 10.0, "moderate", "moderate_rfa"),
        (RFA, 3.0, 10.01, "none", "far"),
        (MWA, 3.0, 10.01, "moderate", "moderate_mwa"),  # MWA: 15 mm
        (MWA, 3.0, 15.0, "moderate", "moderate_mwa"),
        (MWA, 3.0, 15.01, "none", "far"),
        (RFA, 5.0, 10.0, "high", "high_large"),     # any vessel >= 5 mm within 10 mm
        (RFA, 4.99, 10.0, "moderate", "moderate_rfa"),
        (RFA, 5.0, 10.01, "none", "far"),
        (MWA, 5.0, 10.01, "moderate", "moderate_mwa"),
        (MWA, 12.0, 0.0, "high", "high_near"),
    ],
)
def test_rule_boundaries(settings, diameter_mm, zone_mm, expected, rule):
    gap_mm = zone_mm + settings.ablation_margin_mm
    risk = classify_heat_sink(diameter_mm=diameter_mm, gap_mm=gap_mm, settings=settings)
    assert (risk.cls, risk.rule) == (expected, rule)
    assert risk.zone_distance_mm == pytest.approx(zone_mm)
    # the basis names the rule's class, the diameter and the distance to the zone edge
    assert risk.basis.startswith(expected)
    assert f"D = {diameter_mm:.1f} mm" in risk.basis and f"{zone_mm:.1f} mm from the" in risk.basis


def test_ten_mm_ablative_margin_moves_the_zone_edge():
    five = classify_heat_sink(diameter_mm=6.0, gap_mm=20.0, settings=GuidanceSettings(ablation_margin_mm=5.0))
    ten = classify_heat_sink(diameter_mm=6.0, gap_mm=20.0, settings=GuidanceSettings(ablation_margin_mm=10.0))
    assert (five.cls, five.zone_distance_mm) == ("none", 15.0)
    assert (ten.cls, ten.zone_distance_mm) == ("high", 10.0)


def test_vessel_inside_the_zone_is_at_distance_zero():
    assert zone_distance_mm(2.0, ablation_margin_mm=5.0) == 0.0
    assert classify_heat_sink(diameter_mm=3.5, gap_mm=0.0).cls == "high"


def test_thresholds_are_settings():
    s = GuidanceSettings(heat_sink_min_diameter_mm=2.0)
    assert classify_heat_sink(diameter_mm=2.5, gap_mm=6.0, settings=s).cls == "high"
    assert classify_heat_sink(diameter_mm=2.5, gap_mm=6.0).cls == "none"


def test_json_form_and_missing_mm():
    data = classify_heat_sink(diameter_mm=6.0, gap_mm=7.0).to_json()
    assert set(data) >= {"class", "basis", "deficit_mm"} and data["deficit_mm"] is None
    with pytest.raises(AnalysisError):
        classify_heat_sink(diameter_mm=None, gap_mm=1.0)


def test_zero_ablative_margin_is_the_tumour_edge_and_negative_is_refused():
    from iousguide.errors import SettingsError

    risk = classify_heat_sink(diameter_mm=4.0, gap_mm=5.0, settings=GuidanceSettings(ablation_margin_mm=0.0))
    assert (risk.cls, risk.zone_distance_mm) == ("high", 5.0)
    with pytest.raises(SettingsError):
        GuidanceSettings(ablation_margin_mm=-1.0)


@pytest.mark.parametrize(
    "diameter_mm, zone_mm, uncertainty_mm, expected, class_range",
    [
        (4.0, 9.8, 0.5, "moderate", ("none", "moderate")),  # 0.2 mm inside the 10 mm RFA rule
        (4.0, 5.3, 0.5, "moderate", ("moderate", "high")),  # 0.3 mm outside the 5 mm high rule
        (2.8, 2.0, 0.5, "none", ("none", "high")),         # 3 mm diameter rule within the band
        (4.0, 7.5, 0.5, "moderate", ("moderate", "moderate")),  # well inside one class
        (8.0, 30.0, 1.0, "none", ("none", "none")),
    ],
)
def test_uncertainty_band_reports_borderline_without_changing_the_class(
    diameter_mm, zone_mm, uncertainty_mm, expected, class_range
):
    gap_mm = zone_mm + RFA.ablation_margin_mm
    plain = classify_heat_sink(diameter_mm=diameter_mm, gap_mm=gap_mm, settings=RFA)
    risk = classify_heat_sink(diameter_mm=diameter_mm, gap_mm=gap_mm, settings=RFA, uncertainty_mm=uncertainty_mm)
    assert risk.cls == plain.cls == expected
    assert risk.class_range == class_range
    assert risk.borderline == (class_range[0] != class_range[1])
    assert ("borderline" in risk.basis) == risk.borderline
    assert risk.to_json()["borderline"] == risk.borderline
    assert plain.class_range is None and not plain.borderline


def test_a_diameter_allowance_widens_only_the_severe_end():
    """A lumen in a thin bright sheath reads ~0.5 mm small (README known limits): a 2.7 mm reading
    2 mm from the zone edge is 'none', and with u = 0.2 mm it stays clear of the 3 mm rule; with the
    0.5 mm allowance the band reaches 3.4 mm and the vessel is flagged borderline 'high'. The class,
    and the band's mild end, are unchanged; a vessel well below 3 mm is not flagged."""
    gap_mm = 2.0 + RFA.ablation_margin_mm
    plain = classify_heat_sink(diameter_mm=2.7, gap_mm=gap_mm, settings=RFA, uncertainty_mm=0.2)
    wide = classify_heat_sink(diameter_mm=2.7, gap_mm=gap_mm, settings=RFA, uncertainty_mm=0.2,
                              diameter_allowance_mm=0.5)
    assert plain.cls == wide.cls == "none"
    assert plain.class_range == ("none", "none") and not plain.borderline
    assert wide.class_range == ("none", "high") and wide.borderline
    assert "thin bright sheath" in wide.basis and "could be high" in wide.basis
    alone = classify_heat_sink(diameter_mm=2.7, gap_mm=gap_mm, settings=RFA, diameter_allowance_mm=0.5)
    assert alone.class_range == ("none", "high")  # the allowance alone fills the band
    small = classify_heat_sink(diameter_mm=2.0, gap_mm=gap_mm, settings=RFA, uncertainty_mm=0.2,
                               diameter_allowance_mm=0.5)
    assert not small.borderline
    with pytest.raises(AnalysisError):
        classify_heat_sink(diameter_mm=2.7, gap_mm=gap_mm, settings=RFA, diameter_allowance_mm=-0.1)


def test_the_allowance_is_a_setting():
    with pytest.raises(SettingsError):
        GuidanceSettings(diameter_underread_allowance_mm=-0.5)
    assert GuidanceSettings(diameter_underread_allowance_mm=0.0).diameter_underread_allowance_mm == 0.0
