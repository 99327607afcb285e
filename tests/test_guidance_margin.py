"""Margin planner on exact synthetic geometry: circles at known mm distances (issue 6, section 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from iousguide.analysis.results import VesselResult
from iousguide.errors import AnalysisError, SettingsError
from iousguide.guidance.margin import INFILTRATION_FLAG, plan_margin
from iousguide.guidance.settings import BASIS, GuidanceSettings

SPACING = (0.1, 0.1)  # mm/px
PX_MM = SPACING[0]  # "one pixel" tolerance in mm
CENTRE = (400.0, 300.0)
R_TUMOR_MM = 10.0


def circle_px(cx, cy, r_mm, *, spacing=SPACING, n=720):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[cx + r_mm / spacing[0] * np.cos(t), cy + r_mm / spacing[1] * np.sin(t)]


def tumour(spacing=SPACING):
    return circle_px(*CENTRE, R_TUMOR_MM, spacing=spacing)


def vessel(vid, kind, *, gap_mm, diameter_mm, angle_rad=0.0, uncertainty_mm=0.0, spacing=SPACING, known_distance=True):
    """A circular lumen whose edge is exactly gap_mm from the tumour edge."""
    d_mm = R_TUMOR_MM + gap_mm + diameter_mm / 2
    cx = CENTRE[0] + d_mm * math.cos(angle_rad) / spacing[0]
    cy = CENTRE[1] + d_mm * math.sin(angle_rad) / spacing[1]
    return VesselResult(
        id=vid, kind=kind, centroid_px=(cx, cy),
        contour_px=circle_px(cx, cy, diameter_mm / 2, spacing=spacing, n=360),
        diameter_px=diameter_mm / spacing[0], diameter_mm=diameter_mm,
        distance_mm=gap_mm if known_distance else None, uncertainty_mm=uncertainty_mm,
    )


def radius_mm(points_px, spacing=SPACING):
    p = np.asarray(points_px, dtype=float)
    return np.hypot((p[:, 0] - CENTRE[0]) * spacing[0], (p[:, 1] - CENTRE[1]) * spacing[1])


def all_points(plan, reason=None, cls=None):
    """Points of matching segments (without the last one, which each segment shares with the next)."""
    segs = [s for s in plan.segments if (reason is None or s.reason == reason) and (cls is None or s.cls == cls)]
    if len(plan.segments) > 1:
        return np.vstack([s.contour_px[:-1] for s in segs]) if segs else np.zeros((0, 2))
    return np.vstack([s.contour_px for s in segs]) if segs else np.zeros((0, 2))


@pytest.mark.parametrize("spacing", [(0.1, 0.1), (0.08, 0.13)])
def test_free_parenchyma_gives_uniform_target_line(spacing):
    plan = plan_margin(tumour(spacing), [], spacing_mm=spacing, settings=GuidanceSettings())
    assert [(s.reason, s.cls, s.vessel_id) for s in plan.segments] == [("free", "ok", None)]
    r = radius_mm(plan.contour_px, spacing)
    assert np.all(np.abs(r - (R_TUMOR_MM + 5.0)) <= min(spacing)), (r.min(), r.max())
    assert plan.min_margin_mm == pytest.approx(5.0, abs=min(spacing))
    # spared parenchyma vs a uniform 10 mm margin: pi((R+10)^2 - (R+5)^2), % of pi((R+10)^2 - R^2)
    spared = math.pi * ((R_TUMOR_MM + 10) ** 2 - (R_TUMOR_MM + 5) ** 2)
    assert plan.spared_mm2_vs_10mm == pytest.approx(spared, rel=5e-3)
    assert plan.spared_pct_vs_10mm == pytest.approx(100 * spared / (math.pi * ((R_TUMOR_MM + 10) ** 2 - R_TUMOR_MM**2)), rel=5e-3)
    assert plan.detachment_vessel_ids == [] and plan.sacrifice_vessel_ids == []


def test_target_setting_moves_the_line():
    plan = plan_margin(tumour(), [], spacing_mm=SPACING, settings=GuidanceSettings(margin_target_mm=10.0))
    r = radius_mm(plan.contour_px)
    assert np.all(np.abs(r - 20.0) <= PX_MM)
    assert plan.spared_mm2_vs_10mm == pytest.approx(0.0, abs=2.0)


def test_abutting_hepatic_vein_becomes_detachment_and_floor_holds_elsewhere():
    hv = vessel(1, "hepatic_vein", gap_mm=0.0, diameter_mm=10.0)
    plan = plan_margin(tumour(), [hv], spacing_mm=SPACING, settings=GuidanceSettings())
    detach = [s for s in plan.segments if s.reason == "detachment"]
    assert detach and all(s.vessel_id == 1 and s.cls == "r1_risk" for s in detach)
    assert all(s.to_json()["flag"] == INFILTRATION_FLAG for s in detach)
    assert plan.detachment_vessel_ids == [1] and plan.sacrifice_vessel_ids == []
    assert plan.min_margin_mm == pytest.approx(0.0, abs=PX_MM)
    for s in plan.segments:
        if s.reason != "detachment":
            assert s.margin_mm >= 1.0 - 1e-9, s
    # the detachment is where the vein touches: its points lie on the vein's near side
    pts = all_points(plan, "detachment")
    assert np.all(pts[:, 0] > CENTRE[0])
    # away from the vein the line is the 5 mm line
    free = all_points(plan, "free")
    assert np.all(np.abs(radius_mm(free) - 15.0) <= PX_MM)


def test_preserved_vessel_in_band_tightens_line_to_its_wall():
    hv = vessel(1, "hepatic_vein", gap_mm=2.5, diameter_mm=8.0, angle_rad=math.pi / 2)
    plan = plan_margin(tumour(), [hv], spacing_mm=SPACING, settings=GuidanceSettings())
    tight = [s for s in plan.segments if s.reason == "preserved_vessel"]
    assert tight and all(s.vessel_id == 1 for s in tight)
    assert min(s.margin_mm for s in tight) == pytest.approx(2.5, abs=PX_MM)
    assert all(s.cls == "tight" for s in tight)
    assert plan.detachment_vessel_ids == [] and plan.min_margin_mm == pytest.approx(2.5, abs=PX_MM)
    # the line touches the vessel wall exactly where the vessel is closest
    closest = np.array([CENTRE[0], CENTRE[1] + 12.5 / SPACING[1]])
    pts = all_points(plan, "preserved_vessel")
    assert np.min(np.hypot(*(pts - closest).T)) * PX_MM <= PX_MM


def test_vessel_beyond_band_does_not_change_the_line():
    far = vessel(1, "hepatic_vein", gap_mm=6.0, diameter_mm=10.0)
    plan = plan_margin(tumour(), [far], spacing_mm=SPACING, settings=GuidanceSettings())
    assert {s.reason for s in plan.segments} == {"free"}
    assert np.all(np.abs(radius_mm(plan.contour_px) - 15.0) <= PX_MM)


def test_contact_with_unpreserved_vessel_means_sacrifice():
    small = vessel(2, "portal_pedicle", gap_mm=0.5, diameter_mm=2.0)  # below the major diameter
    unmarked = vessel(3, "hepatic_vein", gap_mm=0.0, diameter_mm=9.0, angle_rad=math.pi)
    settings = GuidanceSettings(no_preserve_ids=frozenset({3}))
    plan = plan_margin(tumour(), [small, unmarked], spacing_mm=SPACING, settings=settings)
    assert plan.sacrifice_vessel_ids == [2, 3]
    assert plan.detachment_vessel_ids == []
    assert {s.reason for s in plan.segments} == {"free"}  # line goes through / around them at 5 mm
    assert np.all(np.abs(radius_mm(plan.contour_px) - 15.0) <= PX_MM)


def test_major_diameter_is_a_setting():
    pedicle = vessel(1, "portal_pedicle", gap_mm=0.0, diameter_mm=4.5)
    default = plan_margin(tumour(), [pedicle], spacing_mm=SPACING, settings=GuidanceSettings())
    stricter = plan_margin(tumour(), [pedicle], spacing_mm=SPACING,
                           settings=GuidanceSettings(major_vessel_min_diameter_mm=5.0))
    assert default.detachment_vessel_ids == [1] and default.sacrifice_vessel_ids == []
    assert stricter.detachment_vessel_ids == [] and stricter.sacrifice_vessel_ids == [1]


def test_user_preserved_minor_vessel_in_contact_is_not_a_detachment():
    minor = vessel(4, "unknown", gap_mm=0.0, diameter_mm=3.0)
    plan = plan_margin(tumour(), [minor], spacing_mm=SPACING, settings=GuidanceSettings(preserve_ids=frozenset({4})))
    assert plan.detachment_vessel_ids == [] and plan.sacrifice_vessel_ids == []
    assert any(s.reason == "preserved_vessel" and s.cls == "r1_risk" for s in plan.segments)
    assert any("not a major vessel" in w for w in plan.warnings)


def test_uncertainty_band_crossing_the_floor_is_not_tight():
    certain = vessel(1, "hepatic_vein", gap_mm=1.05, diameter_mm=8.0, uncertainty_mm=0.0)
    unsure = vessel(1, "hepatic_vein", gap_mm=1.05, diameter_mm=8.0, uncertainty_mm=0.1)
    c = plan_margin(tumour(), [certain], spacing_mm=SPACING, settings=GuidanceSettings())
    u = plan_margin(tumour(), [unsure], spacing_mm=SPACING, settings=GuidanceSettings())
    closest = lambda plan: min((s for s in plan.segments if s.vessel_id == 1), key=lambda s: s.margin_mm)  # noqa: E731
    assert closest(c).cls == "tight"
    assert closest(u).cls == "r1_risk"
    assert closest(u).margin_mm == pytest.approx(1.05, abs=PX_MM)


def test_uncertainty_band_crossing_the_target_is_not_ok():
    # vessel wall 5.2 mm away: the 5 mm line passes 0.2 mm from it
    sure = vessel(1, "hepatic_vein", gap_mm=5.2, diameter_mm=8.0, uncertainty_mm=0.1)
    unsure = vessel(1, "hepatic_vein", gap_mm=5.2, diameter_mm=8.0, uncertainty_mm=0.3)
    s = plan_margin(tumour(), [sure], spacing_mm=SPACING, settings=GuidanceSettings())
    u = plan_margin(tumour(), [unsure], spacing_mm=SPACING, settings=GuidanceSettings())
    assert {seg.cls for seg in s.segments} == {"ok"}
    assert any(seg.cls == "tight" and seg.reason == "free" for seg in u.segments)
    near = all_points(u, "free", "tight")
    assert len(near) and np.all(near[:, 0] > CENTRE[0])  # only the part of the line next to the vessel


def test_distance_from_contours_when_tracker_gives_none():
    hv = vessel(1, "hepatic_vein", gap_mm=0.5, diameter_mm=8.0, known_distance=False)
    plan = plan_margin(tumour(), [hv], spacing_mm=SPACING, settings=GuidanceSettings(no_preserve_ids=frozenset({1})))
    assert plan.sacrifice_vessel_ids == [1]


def test_inputs_are_not_modified():
    t = tumour()
    hv = vessel(1, "hepatic_vein", gap_mm=0.0, diameter_mm=10.0)
    t_copy, c_copy = t.copy(), hv.contour_px.copy()
    plan_margin(t, [hv], spacing_mm=SPACING, settings=GuidanceSettings())
    assert np.array_equal(t, t_copy) and np.array_equal(hv.contour_px, c_copy)
    assert hv.preserve is None and hv.heat_sink is None


def test_json_keys_follow_the_contract():
    hv = vessel(1, "hepatic_vein", gap_mm=0.0, diameter_mm=10.0)
    data = plan_margin(tumour(), [hv], spacing_mm=SPACING, settings=GuidanceSettings()).to_json()
    assert {"target_mm", "floor_mm", "segments", "min_margin_mm", "detachment_vessel_ids",
            "sacrifice_vessel_ids", "spared_mm2_vs_10mm"} <= set(data)
    for seg in data["segments"]:
        assert {"contour_px", "margin_mm", "reason", "vessel_id", "class"} <= set(seg)
        assert seg["reason"] in ("free", "preserved_vessel", "detachment")
        assert seg["class"] in ("ok", "tight", "r1_risk")


def test_no_plan_without_spacing_and_bad_settings_are_refused():
    with pytest.raises(AnalysisError):
        plan_margin(tumour(), [], spacing_mm=None)
    with pytest.raises(SettingsError):
        GuidanceSettings(margin_floor_mm=6.0)
    with pytest.raises(SettingsError):
        GuidanceSettings(modality="HIFU")
    with pytest.raises(SettingsError):
        GuidanceSettings(preserve_ids=frozenset({1}), no_preserve_ids=frozenset({1}))


def test_every_numeric_default_has_a_basis():
    for item in GuidanceSettings().describe():
        assert item["basis"], item["name"]
    assert "Angelsen" in BASIS["margin_target_mm"] and "Margonis" in BASIS["margin_floor_mm"]


@pytest.mark.parametrize("orientation", [1, -1])
def test_offset_line_is_exact_on_non_convex_shapes(orientation):
    """The free line lies exactly at the target from a lobulated (non-convex) tumour, either winding."""
    from iousguide.guidance import geometry as geo

    t = np.linspace(0, 2 * np.pi, 400, endpoint=False) * orientation
    r = 10 + 2.5 * np.cos(5 * t)
    poly_mm = np.c_[r * np.cos(t), r * np.sin(t)]
    plan = plan_margin(poly_mm / 0.1 + 300, [], spacing_mm=(0.1, 0.1), settings=GuidanceSettings())
    d = geo.point_polygon_distance(geo.to_mm(plan.contour_px, (0.1, 0.1)), geo.to_mm(poly_mm / 0.1 + 300, (0.1, 0.1)))
    assert np.all(np.abs(d - 5.0) <= 0.06)  # polygon simplification tolerance: half a pixel (0.05 mm)
    assert not geo.points_in_polygon(geo.to_mm(plan.contour_px, (0.1, 0.1)), poly_mm + 30).any()


from hypothesis import given, settings as hsettings, strategies as st  # noqa: E402


@hsettings(max_examples=40, deadline=None)
@given(
    gap_mm=st.floats(0.0, 8.0),
    diameter_mm=st.floats(2.0, 12.0),
    angle_rad=st.floats(0.0, 2 * math.pi),
    kind=st.sampled_from(["hepatic_vein", "portal_pedicle", "unknown"]),
    mark=st.sampled_from([None, True, False]),
)
def test_planner_invariants_for_any_single_vessel(gap_mm, diameter_mm, angle_rad, kind, mark):
    v = vessel(7, kind, gap_mm=gap_mm, diameter_mm=diameter_mm, angle_rad=angle_rad)
    s = GuidanceSettings(preserve_ids=frozenset({7}) if mark is True else frozenset(),
                         no_preserve_ids=frozenset({7}) if mark is False else frozenset())
    plan = plan_margin(tumour(), [v], spacing_mm=SPACING, settings=s)
    major = kind != "unknown" and diameter_mm >= s.major_vessel_min_diameter_mm
    preserved = mark if mark is not None else major
    # the smallest margin is the gap when the vessel is preserved inside the band, else the target
    expected = min(gap_mm, 5.0) if preserved else 5.0
    assert plan.min_margin_mm == pytest.approx(expected, abs=PX_MM)
    assert all(0.0 <= seg.margin_mm <= 5.0 + 1e-6 for seg in plan.segments)
    assert plan.sacrifice_vessel_ids == ([7] if not preserved and gap_mm < 1.0 else [])
    assert plan.detachment_vessel_ids == ([7] if preserved and major and gap_mm < 1.0 - PX_MM else plan.detachment_vessel_ids)
    if not (preserved and major):
        assert plan.detachment_vessel_ids == []
    for seg in plan.segments:
        if seg.reason == "free":
            assert seg.margin_mm == pytest.approx(5.0)
        if seg.cls == "ok":
            assert seg.margin_mm >= 5.0 - 1e-6
        if seg.margin_mm < 1.0:
            assert seg.cls == "r1_risk"
    # never cut into the tumour
    assert np.all(radius_mm(plan.contour_px) >= R_TUMOR_MM - PX_MM)
