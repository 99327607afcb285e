"""apply_guidance: a pure step from tracker results to guidance, with the JSON contract of issue 6."""

from __future__ import annotations

import json
import math

import numpy as np

from iousguide.analysis.results import FrameResult, TumorResult, VesselResult
from iousguide.guidance.apply import apply_guidance
from iousguide.guidance.settings import GuidanceSettings

SPACING = (0.1, 0.1)
CENTRE = (400.0, 300.0)
R_MM = 10.0


def circle_px(cx, cy, r_mm, n=360):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[cx + r_mm / SPACING[0] * np.cos(t), cy + r_mm / SPACING[1] * np.sin(t)]


def vessel(vid, kind, gap_mm, diameter_mm, angle_rad=0.0, uncertainty_mm=0.1):
    d = (R_MM + gap_mm + diameter_mm / 2) / SPACING[0]
    cx, cy = CENTRE[0] + d * math.cos(angle_rad), CENTRE[1] + d * math.sin(angle_rad)
    return VesselResult(id=vid, kind=kind, centroid_px=(cx, cy), contour_px=circle_px(cx, cy, diameter_mm / 2),
                        diameter_px=diameter_mm / SPACING[0], diameter_mm=diameter_mm, distance_mm=gap_mm,
                        uncertainty_mm=uncertainty_mm)


def frame_result(vessels, spacing=SPACING, tumour=True):
    tumor = TumorResult(centroid_px=CENTRE, contour_px=circle_px(*CENTRE, R_MM), area_px=math.pi * 1e4,
                        area_mm2=math.pi * R_MM**2, equivalent_diameter_mm=2 * R_MM) if tumour else None
    return FrameResult(frame=3, t_s=0.1, spacing_mm=spacing, status="ok", tumor=tumor, vessels=vessels,
                       extra={"source_note": "kept"})


def scene():
    return frame_result([
        vessel(1, "hepatic_vein", 0.0, 10.0),                      # abutting major vein
        vessel(2, "portal_pedicle", 2.0, 6.0, angle_rad=math.pi),  # pedicle near the zone
        vessel(3, "unknown", 3.0, 2.0, angle_rad=-math.pi / 2),    # < 3 mm
    ])


def test_input_is_not_modified_and_a_new_result_is_returned():
    result = scene()
    before = json.dumps(result.to_json())
    new = apply_guidance(result, settings=GuidanceSettings())
    assert new is not result and json.dumps(result.to_json()) == before
    assert result.margin_plan is None and all(v.preserve is None and v.heat_sink is None for v in result.vessels)
    assert new.extra["source_note"] == "kept" and new.extra["guidance"]["status"] == "ok"


def test_results_json_contract():
    data = apply_guidance(scene(), settings=GuidanceSettings()).to_json()
    json.dumps(data)  # serialisable
    plan = data["margin_plan"]
    assert {"target_mm", "floor_mm", "segments", "min_margin_mm", "detachment_vessel_ids",
            "sacrifice_vessel_ids", "spared_mm2_vs_10mm"} <= set(plan)
    assert (plan["target_mm"], plan["floor_mm"]) == (5.0, 1.0)
    assert plan["detachment_vessel_ids"] == [1] and plan["sacrifice_vessel_ids"] == []
    abl = data["ablation"]
    assert {"margin_mm", "modality", "zone_contour_px", "predicted_zone_contour_px", "covered"} <= set(abl)
    assert abl["modality"] == "RFA" and abl["margin_mm"] == 5.0 and isinstance(abl["covered"], bool)
    zone_r = np.hypot(*(np.array(abl["zone_contour_px"]) - CENTRE).T) * SPACING[0]
    assert np.all(np.abs(zone_r - 15.0) <= 0.1)
    by_id = {v["id"]: v for v in data["vessels"]}
    for v in by_id.values():
        assert isinstance(v["preserve"], bool)
        assert {"class", "basis", "deficit_mm"} <= set(v["heat_sink"])
    assert by_id[1]["preserve"] and by_id[2]["preserve"] and not by_id[3]["preserve"]
    assert by_id[2]["heat_sink"]["class"] == "high" and by_id[2]["heat_sink"]["deficit_mm"] > 0
    assert by_id[3]["heat_sink"]["class"] == "none"


def test_uncalibrated_frame_gets_no_mm_guidance():
    new = apply_guidance(frame_result([vessel(1, "hepatic_vein", 0.0, 10.0)], spacing=None))
    assert new.margin_plan is None and new.ablation is None
    assert "uncalibrated" in new.extra["guidance"]["reason"]
    data = new.to_json()
    assert "margin_plan" not in data and "heat_sink" not in data["vessels"][0]


def test_no_tumour_gets_no_plan():
    new = apply_guidance(frame_result([], tumour=False))
    assert new.margin_plan is None and new.ablation is None and "no tumour" in new.extra["guidance"]["reason"]


def test_settings_reach_the_outputs():
    s = GuidanceSettings(modality="MWA", ablation_margin_mm=10.0, bioheat=False, no_preserve_ids=frozenset({1}))
    data = apply_guidance(scene(), settings=s).to_json()
    assert data["ablation"]["modality"] == "MWA" and data["ablation"]["margin_mm"] == 10.0
    assert data["ablation"]["covered"] is None and data["ablation"]["predicted_zone_contour_px"] == []
    assert data["margin_plan"]["sacrifice_vessel_ids"] == [1]
    v3 = {v["id"]: v for v in data["vessels"]}[3]
    assert v3["heat_sink"]["deficit_mm"] is None


def test_every_vessel_gets_the_underread_allowance():
    """Three 2.7 mm vessels 7 mm from the tumour (2 mm from a 5 mm-margin zone), u = 0.1 mm: all
    'none', and all flagged borderline 'high' (a thin sheath reads ~0.5 mm small and is often typed
    'hepatic_vein' or 'unknown', so the kind does not exempt one); with the allowance 0 none is."""
    result = frame_result([vessel(1, "hepatic_vein", 7.0, 2.7), vessel(2, "portal_pedicle", 7.0, 2.7, angle_rad=math.pi),
                           vessel(3, "unknown", 7.0, 2.7, angle_rad=math.pi / 2)])
    for allowance, flagged in ((0.5, {1, 2, 3}), (0.0, set())):
        data = apply_guidance(result, settings=GuidanceSettings(bioheat=False, diameter_underread_allowance_mm=allowance)).to_json()
        by_id = {v["id"]: v["heat_sink"] for v in data["vessels"]}
        assert all(h["class"] == "none" for h in by_id.values())
        assert {i for i, h in by_id.items() if h["borderline"]} == flagged, by_id


def test_pipeline_marks_flow_through_apply():
    """Pipeline.set_preserve edits the same settings fields apply_guidance reads."""
    from iousguide.pipeline import Pipeline, PipelineSettings

    pipe = Pipeline(PipelineSettings(guidance=GuidanceSettings(bioheat=False)))
    pipe.set_preserve(3, True)
    pipe.set_preserve(1, False)
    data = apply_guidance(scene(), settings=pipe.settings.guidance).to_json()
    by_id = {v["id"]: v for v in data["vessels"]}
    assert by_id[3]["preserve"] and not by_id[1]["preserve"]
    assert data["margin_plan"]["sacrifice_vessel_ids"] == [1]


from hypothesis import given, settings as hsettings, strategies as st  # noqa: E402


def _blob(rng, cx, cy, r_px, n):
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = r_px * (1 + 0.35 * rng.uniform(-1, 1, n))
    return np.c_[cx + r * np.cos(t), cy + r * np.sin(t)]


@hsettings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_vessels=st.integers(0, 4), bioheat=st.booleans())
def test_any_tracker_like_scene_gives_finite_serialisable_guidance(seed, n_vessels, bioheat):
    """Lumpy tumours and vessels anywhere (touching, overlapping, far, tiny): never raises, never NaN."""
    rng = np.random.default_rng(seed)
    spacing = (float(rng.uniform(0.07, 0.3)),) * 2
    tumour = _blob(rng, 300, 250, rng.uniform(10, 120), int(rng.integers(3, 200)))
    vessels = []
    for vid in range(n_vessels):
        cx, cy = rng.uniform(50, 550, 2)
        contour = _blob(rng, cx, cy, rng.uniform(2, 60), int(rng.integers(3, 80)))
        diameter_mm = float(rng.uniform(0.5, 15))
        vessels.append(VesselResult(
            id=vid, kind=str(rng.choice(["hepatic_vein", "portal_pedicle", "unknown"])), centroid_px=(cx, cy),
            contour_px=contour, diameter_px=diameter_mm / spacing[0], diameter_mm=diameter_mm,
            distance_mm=None if rng.random() < 0.3 else float(rng.uniform(0, 30)),
            uncertainty_mm=None if rng.random() < 0.3 else float(rng.uniform(0, 1))))
    result = FrameResult(frame=0, t_s=0.0, spacing_mm=spacing, status="ok",
                         tumor=TumorResult(centroid_px=(300, 250), contour_px=tumour, area_px=1.0, area_mm2=1.0,
                                           equivalent_diameter_mm=1.0), vessels=vessels)
    new = apply_guidance(result, settings=GuidanceSettings(bioheat=bioheat))
    text = json.dumps(new.to_json(), allow_nan=False)  # raises on NaN / inf
    assert new.margin_plan is not None and new.ablation is not None, new.extra["guidance"]
    assert 0.0 <= new.margin_plan.min_margin_mm <= 5.0 + 1e-6
    assert "heat_sink" in text or not vessels
