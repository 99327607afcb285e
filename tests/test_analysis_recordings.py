"""End-to-end tracking on real files: a bundled phantom recording scored by the phantom
harness against its truth (thresholds = the targets of issue 5, not tuned), and the real
liver sweep (every frame, no error).
"""

from __future__ import annotations

import json

import pytest

from conftest import CALIBRATION, RECORDINGS, shared_file
from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.tracker import Tracker

N_FRAMES = 50  # the first 3.3 s keep the test fast


def _recording(name: str):
    path = RECORDINGS / name
    if not path.exists():
        pytest.skip(f"bundled recording not available: {path}")
    return path


@pytest.fixture(scope="module")
def two_lesions_report():
    from iousguide.acquisition import open_source
    from iousguide.calibration import load_preset
    from iousguide.evaluation import evaluate_results
    from iousguide.phantom import read_truth

    path = _recording("two_lesions_screen.mp4")
    preset = load_preset(CALIBRATION / "two_lesions_screen.toml")
    truth = read_truth(RECORDINGS / "two_lesions_screen.truth.jsonl.gz")
    truth.frames = [f for f in truth.frames if int(f["frame"]) < N_FRAMES]
    results = []
    with open_source(str(path), calibration=preset) as source:
        tracker = Tracker(TrackingSettings())
        for i, frame in enumerate(source):
            if i >= N_FRAMES:
                break
            results.append(json.loads(json.dumps(tracker.process(frame).to_json())))
    return evaluate_results(results, truth)


def test_vessels_meet_the_targets_on_a_bundled_recording(two_lesions_report):
    v = two_lesions_report["vessels"]
    assert v["recall_ge3mm"] >= 0.95
    assert v["precision_ge3mm"] >= 0.9
    assert two_lesions_report["diameter_error_mm"]["mae"] <= 0.3
    assert two_lesions_report["id_switches_per_100_frames"] <= 1.0
    assert two_lesions_report["no_signal"]["false_no_signal_frames"] == 0


def test_tumour_and_distances_meet_the_targets_on_a_bundled_recording(two_lesions_report):
    # met since the learned lesion model outlines the hyperechoic lesion (2026-11-28: Dice 0.966,
    # distance MAE 0.23 / p95 0.61 mm; with the classical outline MAE 0.34 / p95 0.83 mm)
    assert two_lesions_report["tumor"]["dice_mean"] >= 0.9
    d = two_lesions_report["distance_error_mm"]
    assert d["mae"] <= 0.3 and d["p95"] <= 0.8


def test_real_liver_sweep_runs_through_every_frame():
    from iousguide.acquisition import open_source

    path = shared_file("liver_sweep/liver_sweep_imfusion_h264.mp4")
    statuses = []
    with open_source(str(path), spacing_mm=(0.3148, 0.3148)) as source:
        tracker = Tracker(TrackingSettings())
        for frame in source:
            res = tracker.process(frame)
            statuses.append(res.status)
            assert res.status != "error", res.message
            for v in res.vessels:
                assert v.diameter_mm is not None and 0 < v.diameter_mm < 30
    assert len(statuses) == 140
    # a healthy volunteer: every reported tumour is false. 15 of 140 frames on 2026-11-29 (13 since
    # dark bands are not proposed); a rule
    # letting the learned lesion model out-propose the classical maps without the focal test made
    # it 32 (the model sees the liver's bright structures as lesions)
    assert statuses.count("ok") <= 20, statuses.count("ok")


@pytest.mark.parametrize("min_contrast_db, reported", [(None, False), (0.0, True)])
def test_a_faint_lesion_of_the_model_alone_is_not_proposed_on_the_real_sweep(monkeypatch, min_contrast_db, reported):
    """The learned lesion model proposes on its own only a focal lesion whose echo differs from the
    tissue around it by the lesion map's contrast (3 dB). On the real healthy-liver sweep it sees a
    focal 9.6 mm component at 2.3 dB on frames 12-14: with the contrast test it is not proposed;
    without it (threshold 0 dB) it is, and was then followed as lost on 10 more frames."""
    import iousguide.analysis.tracker as tracker_module
    from iousguide.acquisition import open_source

    monkeypatch.setattr(tracker_module, "LEARNED_ALONE_MIN_CONTRAST_DB", min_contrast_db)
    path = shared_file("liver_sweep/liver_sweep_imfusion_h264.mp4")
    outlines = []
    with open_source(str(path), spacing_mm=(0.3148, 0.3148)) as source:
        tracker = Tracker(TrackingSettings())
        for frame in source:
            if frame.index > 14:
                break
            res = tracker.process(frame)
            outlines.append(None if res.tumor is None else res.tumor.outline)
    assert ("learned" in outlines) == reported, outlines
