"""Guidance on the bundled phantom scenarios' exact truth geometry (issue 6, "checked when done").

The truth files hold the analytic tumour/vessel contours and distances per frame;
feeding them to apply_guidance checks the planner and the heat-sink rules on
realistic geometry independently of the tracker. Every 10th frame keeps this fast.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from iousguide.analysis.results import FrameResult, TumorResult, VesselResult
from iousguide.guidance.apply import apply_guidance
from iousguide.guidance.settings import GuidanceSettings

RECORDINGS = Path(__file__).resolve().parents[1] / "recordings"
STEP = 10
NO_BIOHEAT = GuidanceSettings(bioheat=False)


def truth_frames(name: str):
    path = RECORDINGS / f"{name}.truth.jsonl.gz"
    if not path.exists():
        pytest.skip(f"bundled recording truth not available: {path}")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    return [r for r in records[1::STEP] if r.get("status") == "ok" and r.get("tumor")]


def as_result(rec) -> FrameResult:
    t = rec["tumor"]
    tumor = TumorResult(centroid_px=tuple(t["centroid_px"]), contour_px=np.array(t["contour_px"], float),
                        area_px=t["area_px"], area_mm2=t["area_mm2"], equivalent_diameter_mm=t["equivalent_diameter_mm"])
    vessels = [
        VesselResult(id=v["id"], kind=v["kind"], centroid_px=tuple(v["centroid_px"]),
                     contour_px=np.array(v["contour_px"], float), diameter_px=0.0, diameter_mm=v["diameter_mm"],
                     distance_mm=v["distance_mm"], uncertainty_mm=0.0)
        for v in rec["vessels"]
    ]
    return FrameResult(frame=rec["frame"], t_s=rec["t_s"], spacing_mm=tuple(rec["spacing_mm"]), status="ok",
                       tumor=tumor, vessels=vessels)


def test_free_parenchyma_gives_a_uniform_5_mm_line():
    frames = truth_frames("free_parenchyma")
    assert frames
    for rec in frames:
        plan = apply_guidance(as_result(rec), settings=NO_BIOHEAT).margin_plan
        assert {(s.reason, s.cls) for s in plan.segments} == {("free", "ok")}, rec["frame"]
        assert plan.min_margin_mm == pytest.approx(5.0, abs=1e-6)


def test_abutting_hepatic_vein_gives_detachment_and_floor_elsewhere():
    frames = truth_frames("hepatic_vein_abutting")
    px_mm = max(frames[0]["spacing_mm"])
    touching = 0
    for rec in frames:
        plan = apply_guidance(as_result(rec), settings=NO_BIOHEAT).margin_plan
        vein = next(v for v in rec["vessels"] if v["kind"] == "hepatic_vein" and v["distance_mm"] is not None
                    and v["distance_mm"] < 5.0)
        for seg in plan.segments:
            if seg.reason != "detachment":
                assert seg.margin_mm >= 1.0 - 1e-9, (rec["frame"], seg.reason, seg.margin_mm)
        if vein["distance_mm"] < 1.0 - px_mm:  # contact / R1vasc range
            touching += 1
            assert plan.detachment_vessel_ids == [vein["id"]], rec["frame"]
        elif vein["distance_mm"] >= 1.0 + px_mm:
            assert plan.detachment_vessel_ids == []
            # the line follows the vein wall: smallest margin = the true gap within one pixel
            assert plan.min_margin_mm == pytest.approx(vein["distance_mm"], abs=px_mm), rec["frame"]
    assert touching >= 3  # the scenario really exercises the detachment


def test_portal_pedicle_is_high_risk_with_a_deficit():
    frames = [r for r in truth_frames("portal_pedicle") if any(v["heat_sink"] and v["heat_sink"]["rfa"] == "high"
                                                                for v in r["vessels"])]
    assert frames
    for rec in frames[::2]:
        new = apply_guidance(as_result(rec), settings=GuidanceSettings())
        for v, truth in zip(new.vessels, rec["vessels"]):
            if truth["heat_sink"] and truth["heat_sink"]["rfa"] == "high" and truth["kind"] == "portal_pedicle":
                assert v.heat_sink["class"] == "high"
                assert v.heat_sink["deficit_mm"] is not None and v.heat_sink["deficit_mm"] > 0


def test_small_vessels_are_no_heat_sink():
    for rec in truth_frames("small_vessels"):
        new = apply_guidance(as_result(rec), settings=NO_BIOHEAT)
        assert {v.heat_sink["class"] for v in new.vessels if v.heat_sink} <= {"none"}


def test_heat_sink_agreement_with_truth_over_scenarios():
    agree = total = 0
    for name in ("free_parenchyma", "hepatic_vein_abutting", "portal_pedicle", "small_vessels"):
        for rec in truth_frames(name):
            for modality in ("RFA", "MWA"):
                new = apply_guidance(as_result(rec), settings=GuidanceSettings(bioheat=False, modality=modality))
                for v, truth in zip(new.vessels, rec["vessels"]):
                    if truth["heat_sink"] is None:
                        continue
                    expected = truth["heat_sink"][modality.lower()]
                    total += 1
                    agree += v.heat_sink["class"] == expected
    assert total > 100
    assert agree / total >= 0.95, (agree, total)
