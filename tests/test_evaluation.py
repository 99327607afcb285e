"""The evaluation harness on hand-made results whose scores are known by construction."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from iousguide.cli import main
from iousguide.errors import CorruptDataError
from iousguide.evaluation import dice, evaluate_results, match_vessels, point_in_polygon, rasterize
from iousguide.phantom import CaseTruth, write_truth
from iousguide.phantom.scenarios import TRUTH_FORMAT


def square(x0, y0, size):
    return [[x0, y0], [x0 + size, y0], [x0 + size, y0 + size], [x0, y0 + size]]


def circle(cx, cy, r, n=48):
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [[cx + r * math.cos(t), cy + r * math.sin(t)] for t in a]


def truth_vessel(vid, cx, cy, diameter_mm, distance_mm, spacing=0.5, heat="high"):
    return {"id": vid, "kind": "hepatic_vein", "centroid_px": [cx, cy],
            "contour_px": circle(cx, cy, diameter_mm / spacing / 2), "diameter_mm": diameter_mm,
            "distance_mm": distance_mm, "clipped": False, "heat_sink": {"rfa": heat, "mwa": heat}}


@pytest.fixture
def truth():
    header = {"format": TRUTH_FORMAT, "version": 1, "name": "handmade", "frame_size_px": [100, 100],
              "spacing_mm": [0.5, 0.5]}
    frames = []
    for i in range(4):
        tumor = {"id": 1, "primary": True, "contour_px": square(19.5, 19.5, 20), "centroid_px": [29.5, 29.5],
                 "equivalent_diameter_mm": 11.3 if i < 3 else 2.5}
        frames.append({"frame": i, "status": "ok", "tumor": tumor, "tumors": [tumor], "vessels": [
            truth_vessel(1, 70, 30, 6.0, 5.0),
            truth_vessel(2, 30, 70, 2.0, 4.0, heat="none"),
            truth_vessel(3, 70, 75, 4.0, 12.0, heat="moderate"),
        ]})
    frames.append({"frame": 4, "status": "no_signal", "tumor": None, "tumors": [], "vessels": []})
    return CaseTruth(header=header, frames=frames)


def as_results(truth: CaseTruth) -> list[dict]:
    """Perfect results: the truth itself in the results contract."""
    out = []
    for f in truth.frames:
        vessels = []
        for v in f["vessels"]:
            vessels.append({"id": 100 + v["id"], "kind": v["kind"], "centroid_px": v["centroid_px"],
                            "contour_px": v["contour_px"], "diameter_mm": v["diameter_mm"],
                            "distance_mm": v["distance_mm"], "heat_sink": {"class": v["heat_sink"]["rfa"]}})
        out.append({"frame": f["frame"], "status": f["status"], "tumor": copy.deepcopy(f["tumor"]), "vessels": vessels})
    return out


def test_rasterize_counts_pixel_centres():
    mask = rasterize(square(19.5, 19.5, 20), (100, 100))
    assert mask.sum() == 400 and mask[20, 20] and mask[39, 39] and not mask[40, 40] and not mask[19, 25]
    assert point_in_polygon((29.5, 29.5), square(19.5, 19.5, 20))
    assert not point_in_polygon((45, 29.5), square(19.5, 19.5, 20))
    # a circle of radius 20 px covers ~ pi r^2 pixel centres
    assert abs(rasterize(circle(50, 50, 20, 200), (100, 100)).sum() - math.pi * 400) < 15


def test_perfect_results_score_perfectly(truth):
    report = evaluate_results(as_results(truth), truth)
    assert report["tumor"]["dice_mean"] == 1.0
    assert report["vessels"]["recall_ge3mm"] == 1.0 and report["vessels"]["precision_ge3mm"] == 1.0
    assert report["vessels"]["recall_by_band"]["<3"]["recall"] == 1.0
    assert report["distance_error_mm"]["mae"] == 0.0 and report["distance_error_mm"]["n"] == 12
    assert report["diameter_error_mm"]["mae"] == 0.0 and report["diameter_error_mm"]["n"] == 8
    assert report["id_switches"] == 0
    assert report["heat_sink"]["agreement"] == 1.0
    assert report["no_signal"] == {"lift_frames": 1, "detected": 1, "false_no_signal_frames": 0}


def test_known_errors_are_measured(truth):
    results = as_results(truth)
    # tumour shifted by half its width: Dice 0.5 on every frame
    for r in results[:4]:
        r["tumor"] = {"contour_px": square(29.5, 19.5, 20), "centroid_px": [39.5, 29.5]}
    # distances: +0.2 mm on vessel 1, -0.4 mm on vessel 3 (12 mm, inside 15 mm): MAE 0.3, bias -0.1 over frames
    # vessel 2 (< 3 mm) missed in frames 2 and 3
    for r in results[:4]:
        for v in r["vessels"]:
            if v["id"] == 101:
                v["distance_mm"] += 0.2
                v["diameter_mm"] += 0.5
            if v["id"] == 103:
                v["distance_mm"] -= 0.4
        if r["frame"] >= 2:
            r["vessels"] = [v for v in r["vessels"] if v["id"] != 102]
    # one id switch: vessel 1 gets a new id from frame 3 on
    results[3]["vessels"][0]["id"] = 999
    # one false vessel (5.5 mm) in frame 1, and a wrong heat-sink class on vessel 3 in frame 0
    results[1]["vessels"].append({"id": 7, "centroid_px": [10, 90], "contour_px": circle(10, 90, 4),
                                  "diameter_mm": 5.5, "distance_mm": 20.0})
    results[0]["vessels"][2]["heat_sink"] = {"class": "none"}
    # the lift frame is not recognised, and frame 0 wrongly called no_signal
    results[4]["status"] = "ok"
    report = evaluate_results(results, truth)
    assert report["tumor"]["dice_mean"] == pytest.approx(0.5)
    assert report["tumor"]["frames_sections_ge3mm"] == 3
    band = report["vessels"]["recall_by_band"]
    assert band["<3"] == {"matched": 2, "truth": 4, "recall": 0.5}
    assert band[">5"]["recall"] == 1.0 and band["3-5"]["recall"] == 1.0
    assert report["vessels"]["precision_by_band"][">5"] == {"true_positive": 4, "results": 5, "precision": 0.8}
    dist = report["distance_error_mm"]
    assert dist["n"] == 4 + 2 + 4  # vessel 2 matched only twice
    assert dist["mae"] == pytest.approx((4 * 0.2 + 4 * 0.4) / 10)
    assert dist["bias"] == pytest.approx((4 * 0.2 - 4 * 0.4) / 10)
    assert report["diameter_error_mm"]["mae"] == pytest.approx(4 * 0.5 / 8)
    assert report["id_switches"] == 1
    assert report["heat_sink"]["agreement"] == pytest.approx(9 / 10)
    assert report["heat_sink"]["confusion"]["moderate->none"] == 1
    assert report["no_signal"]["detected"] == 0


def test_missing_frames_and_far_vessels(truth):
    results = as_results(truth)[:2]  # frames 2-4 missing
    report = evaluate_results(results, truth, near_mm=10.0)
    assert report["frames_missing_in_results"] == 3
    assert report["tumor"]["dice_mean"] == pytest.approx(0.5)  # 2 of 4 tumour frames scored 0
    assert report["tumor"]["dice_mean_sections_ge3mm"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["distance_error_mm"]["n"] == 4  # vessel 3 (12 mm) is beyond 10 mm


def test_matching_needs_overlap():
    tv = [truth_vessel(1, 50, 50, 4.0, 1.0)]
    near = [{"id": 1, "centroid_px": [52, 50], "contour_px": circle(52, 50, 4)}]
    far = [{"id": 1, "centroid_px": [60, 50], "contour_px": circle(60, 50, 1.5)}]
    assert match_vessels(near, tv) == [(0, 0)]
    assert match_vessels(far, tv) == []
    assert dice(np.ones((2, 2), bool), np.zeros((2, 2), bool)) == 0.0


def test_cli_prints_table_and_writes_json(truth, tmp_path, capsys):
    truth_path = tmp_path / "handmade.truth.jsonl.gz"
    write_truth(truth_path, truth)
    results_path = tmp_path / "results.jsonl"
    results_path.write_text("\n".join(json.dumps(r) for r in as_results(truth)) + "\n")
    out_json = tmp_path / "report.json"
    assert main(["evaluate", str(results_path), str(truth_path), "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "handmade" in text and "Dice" in text
    report = json.loads(out_json.read_text())["recordings"][0]
    assert report["tumor"]["dice_mean"] == 1.0


def test_cli_bad_inputs_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    truth_path = tmp_path / "t.truth.jsonl.gz"
    assert main(["evaluate", str(bad), str(truth_path)]) == 2
    assert main(["evaluate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("iousguide: error:") == 2
    with pytest.raises(CorruptDataError):
        from iousguide.evaluation import load_results

        load_results(bad)


# ----------------------------------------------------------------------------- visibility of a truth lumen
def _lumen_scene(echo: float, *, seed: int = 3, black_left_px: int = 0):
    """A 4 mm lumen of amplitude ``echo`` (tissue 1) at 12 mm depth in 0.1 mm/px speckle; the
    image's first ``black_left_px`` columns black (outside a fan). -> (gray, contour_px)."""
    from iousguide.analysis.synthetic import Disc, Scene, render

    scene = Scene(shape_px=(300, 400), spacing_mm=0.1, discs=[Disc((20.0, 12.0), 2.0, echo=echo)])
    gray = render(scene, seed=seed)
    gray[:, :black_left_px] = 0
    return gray, circle(200, 120, 20.0)


def test_lumen_contrast_to_noise_tells_anechoic_faint_and_absent_lumens_apart():
    from iousguide.evaluation import FAINT_CNR, lumen_contrast_to_noise

    def cnr(echo, seed=3, **kw):
        gray, contour = _lumen_scene(echo, seed=seed, **kw)
        before = gray.copy()
        value = lumen_contrast_to_noise(gray, contour, spacing_mm=(0.1, 0.1), diameter_mm=4.0)
        assert np.array_equal(gray, before)
        return value

    def mean_cnr(echo):  # one lumen's CNR is itself one noisy sample: the mean over 6 speckle draws
        return float(np.mean([cnr(echo, seed=s) for s in range(6)]))

    anechoic = cnr(0.0)
    assert anechoic > 10 and mean_cnr(0.5) > 2 * FAINT_CNR  # -6 dB: plainly visible
    assert abs(mean_cnr(1.0)) < 0.5 * FAINT_CNR  # the same echo as tissue: nothing there
    assert 0 < mean_cnr(0.9) < FAINT_CNR  # -0.9 dB: within the speckle's own fluctuation at 4 mm
    # black beside the view (a fan's outside) is not tissue: the same lumen scores about the same
    assert cnr(0.0, black_left_px=140) == pytest.approx(anechoic, rel=0.25)
    # too little image around the lumen to tell
    from iousguide.evaluation import lumen_contrast_to_noise as f
    assert f(np.zeros((300, 400), np.uint8), circle(200, 120, 20), spacing_mm=(0.1, 0.1), diameter_mm=4.0) is None


def test_faint_truth_vessels_are_reported_beside_recall(truth):
    # frame images where vessel 1 (6 mm) is drawn anechoic and vessel 3 (4 mm) not at all
    from iousguide.analysis.synthetic import Disc, Scene, render

    scene = Scene(shape_px=(100, 100), spacing_mm=0.5, discs=[Disc((35.0, 15.0), 3.0, echo=0.0)])
    images = {i: render(scene, seed=i) for i in range(5)}
    results = as_results(truth)
    for r in results:  # vessel 3 missed everywhere
        r["vessels"] = [v for v in r["vessels"] if v["id"] != 103]
    plain = evaluate_results(results, truth)
    report = evaluate_results(results, truth, images=images)
    assert "faint_ge3mm" not in plain["vessels"] and "recall_ge3mm_visible" not in plain["vessels"]
    assert report["vessels"]["recall_ge3mm"] == plain["vessels"]["recall_ge3mm"] == 0.5
    assert report["vessels"]["faint_ge3mm"]["truth"] == 4 and report["vessels"]["faint_ge3mm"]["matched"] == 0
    assert report["vessels"]["recall_ge3mm_visible"] == 1.0
    assert {k: v for k, v in report.items() if k != "vessels"} == {k: v for k, v in plain.items() if k != "vessels"}


def test_eval_tool_places_a_cropped_flipped_frame_in_source_pixels():
    # tools/eval_tracking.py scores visibility on the source frame (truth and results are in source pixels)
    import sys
    from pathlib import Path

    from iousguide.frames import Frame

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from eval_tracking import source_image

    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4) + 1
    frame = Frame(pixels=pixels, index=0, t_mono_ns=0, origin_px=(5, 2), extra={"flip_xy": (True, False)})
    canvas = source_image(frame)
    assert canvas.shape == (5, 9) and not canvas[:2].any() and not canvas[:, :5].any()
    for y in range(3):
        for x in range(4):
            sx, sy = frame.to_source_px(x, y)
            assert canvas[int(sy), int(sx)] == pixels[y, x]


def test_eval_tool_splits_the_distance_error_by_outline():
    """tools/eval_tracking.py's distance_sources: with the tracker's tumour outline replaced by the
    true one, the frame's measurement is the true-tumour figure exactly, and with both true
    outlines the error is the phantom's own (its truth is measured on exact boundaries)."""
    import sys
    from dataclasses import replace
    from pathlib import Path

    from iousguide.analysis.tracker import Tracker
    from iousguide.phantom import generate_case

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from eval_tracking import primary_tumor, score_case, summarize

    frames, case = generate_case(8801, difficulty="medium", n_frames=4)
    tracker = Tracker()
    results = [tracker.process(f) for f in frames]
    spacing = frames[0].spacing_mm[0]
    own = summarize([score_case(frames, case, results, spacing_mm=spacing)])["distance_sources"]
    assert own["measured"]["n"] == own["true_tumor"]["n"] == own["true_vessel"]["n"] > 0
    for r, tf in zip(results, case.frames):
        if r.tumor is not None and primary_tumor(tf) is not None:
            r.tumor = replace(r.tumor, contour_px=np.asarray(primary_tumor(tf)["contour_px"], float))
    swapped = summarize([score_case(frames, case, results, spacing_mm=spacing)])["distance_sources"]
    assert swapped["measured"] == swapped["true_tumor"] == own["true_tumor"]
    assert swapped["true_vessel"]["mae_mm"] < 0.1


def test_cli_given_the_recording_scores_faint_vessels_from_its_frames(truth, tmp_path, capsys):
    # a real mp4 beside its truth: vessel 1 drawn anechoic, vessel 3 (4 mm) not drawn at all
    import cv2

    from iousguide.analysis.synthetic import Disc, Scene, render

    scene = Scene(shape_px=(100, 100), spacing_mm=0.5, discs=[Disc((35.0, 15.0), 3.0, echo=0.0)])
    video = tmp_path / "case.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (100, 100))
    for i in range(len(truth.frames)):
        writer.write(cv2.cvtColor(render(scene, seed=i), cv2.COLOR_GRAY2BGR))
    writer.release()
    write_truth(tmp_path / "case.truth.jsonl.gz", truth)
    results = [dict(r, vessels=[v for v in r["vessels"] if v["id"] != 103]) for r in as_results(truth)]
    results_path = tmp_path / "results.jsonl"
    results_path.write_text("\n".join(json.dumps(r) for r in results) + "\n")
    out_json = tmp_path / "report.json"
    assert main(["evaluate", str(results_path), str(video), "--json", str(out_json)]) == 0
    assert "visible" in capsys.readouterr().out
    vessels = json.loads(out_json.read_text())["recordings"][0]["vessels"]
    assert vessels["recall_ge3mm"] == 0.5
    assert vessels["faint_ge3mm"] == {"matched": 0, "truth": 4, "cnr_below": 2.0}
    assert vessels["recall_ge3mm_visible"] == 1.0
    # given the truth file, there are no pixels: no visibility fields
    assert main(["evaluate", str(results_path), str(tmp_path / "case.truth.jsonl.gz"), "--json", str(out_json)]) == 0
    assert "faint_ge3mm" not in json.loads(out_json.read_text())["recordings"][0]["vessels"]
