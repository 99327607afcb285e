"""Vessel tracks and lumens on the bundled phantom recordings: a vein abutting a halo lesion is
found, a vein cut by the fan's arc is found and keeps one id, and the id assignment itself (detections
given directly) lets an established track keep its lumen when a fragment of it appears.

Recording checks use the official matching rule (iousguide.evaluation.match_vessels) against the
recording's exact truth; thresholds are the issue-5 targets, not fitted to these clips.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import CALIBRATION, RECORDINGS
from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.tracker import Tracker
from iousguide.analysis.vessels import VesselDetection
from iousguide.evaluation import match_vessels


def _run(name: str, suffix: str, n_frames: int):
    from iousguide.acquisition import open_source
    from iousguide.calibration import load_preset
    from iousguide.phantom import read_truth

    path = RECORDINGS / f"{name}{suffix}"
    if not path.exists():
        pytest.skip(f"bundled recording not available: {path}")
    truth = read_truth(RECORDINGS / f"{name}.truth.jsonl.gz")
    results = []
    with open_source(str(path), calibration=load_preset(CALIBRATION / f"{name}.toml")) as source:
        tracker = Tracker(TrackingSettings())
        for i, frame in enumerate(source):
            if i >= n_frames:
                break
            results.append(json.loads(json.dumps(tracker.process(frame).to_json())))
    return results, truth.frames[:n_frames]


def _matches(results, truth_frames, vessel_id):
    """Per frame: (result vessel or None, truth vessel) for the truth vessel ``vessel_id``."""
    out = []
    for rf, tf in zip(results, truth_frames):
        tvs = tf.get("vessels") or []
        j = next((k for k, tv in enumerate(tvs) if tv["id"] == vessel_id), None)
        if j is None:
            continue
        pairs = dict((jj, ii) for ii, jj in match_vessels(rf["vessels"], tvs))
        out.append((rf["vessels"][pairs[j]] if j in pairs else None, tvs[j]))
    return out


@pytest.fixture(scope="module")
def abutting_vein():
    results, truth = _run("hepatic_vein_abutting", ".mp4", 20)
    pairs = _matches(results, truth, vessel_id=1)
    assert len(pairs) == 20 and all(tv["diameter_mm"] >= 3.0 for _, tv in pairs)
    return pairs


def test_vein_abutting_a_halo_lesion_is_found_and_measured(abutting_vein):
    """hepatic_vein_abutting: the 8-9 mm vein touches the lesion's dark halo; lumen and halo form
    one dark ring-shaped region, which used to be rejected whole as a halo (the vein was found in
    8 of the first 20 frames). Now it is found in most frames, and its diameter is within the
    speckle tolerance of two edges (0.4 mm, as in test_analysis_tracker) in the median: the
    outline does not take in the halo. (The mean error there, ~0.4 mm, is above the 0.3 mm
    target: frames where the outline still reaches into the halo or is trimmed by the opening.)"""
    found = [(rv, tv) for rv, tv in abutting_vein if rv is not None]
    assert len(found) > 0.5 * len(abutting_vein)
    errors = [rv["diameter_mm"] - tv["diameter_mm"] for rv, tv in found]
    assert float(np.median(np.abs(errors))) <= 0.4


def test_vein_abutting_a_halo_lesion_meets_the_recall_target(abutting_vein):
    """hepatic_vein_abutting's 8.75 mm vein touching the halo lesion: found in >= 95 % of the
    frames (it failed while the refined outline took in the halo arc beyond the tissue ridge and
    the official centroid rule did not match it: LUMEN_VISIBLE_FROM_CORE)."""
    found = [rv for rv, _ in abutting_vein if rv is not None]
    assert len(found) >= 0.95 * len(abutting_vein)


def test_vein_cut_by_the_bottom_of_the_fan_is_found_and_keeps_one_id():
    """small_vessels: the only >= 3 mm vein (5-6.5 mm) lies at the bottom corner of the convex
    fan, cut by its arc, in all 150 frames. It was found in pieces (a piece seen once must not
    start a track that then takes turns with the established one: formerly 3 id switches in the
    first 50 frames) and missed in 9 frames (its black surroundings below the view set the
    level); the issue-5 targets: recall >= 0.95, at most one id switch per 100 frames."""
    results, truth = _run("small_vessels", ".mp4", 150)
    matches = _matches(results, truth, vessel_id=4)
    assert len(matches) == 150 and all(tv["diameter_mm"] >= 3.0 and tv.get("clipped") for _, tv in matches)
    found = [rv for rv, _ in matches if rv is not None]
    assert len(found) >= 0.95 * len(matches)
    ids = [rv["id"] for rv in found]
    switches = sum(a != b for a, b in zip(ids, ids[1:]))
    assert switches <= 1  # 1.5 allowed in 150 frames


def _det(x, y, diameter_px):
    theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    contour = np.stack([x + 0.5 * diameter_px * np.cos(theta), y + 0.5 * diameter_px * np.sin(theta)], axis=1)
    return VesselDetection(contour_px=contour, centroid_px=(float(x), float(y)), diameter_mm=0.1 * diameter_px,
                           diameter_px=float(diameter_px), kind="unknown", long_axis=False, edge_sigma_mm=0.1,
                           mask_w=None, sheath_ratio=0.0, refined=None)


def test_fragment_does_not_take_over_an_established_track():
    """Detections given directly (0.1 mm pixels): a 5 mm lumen tracked for 6 frames; then a 3 mm
    fragment appears beside it once (a new track); then one detection between the two, nearer
    the fragment: the established track keeps it, and the fragment's track is dropped."""
    tracker = Tracker(TrackingSettings())
    prep = SimpleNamespace(unit_mm=(0.1, 0.1))
    for _ in range(6):
        (first,) = tracker._assign_ids([_det(100, 100, 50)], prep)
    main, fragment = tracker._assign_ids([_det(100, 100, 50), _det(112, 100, 30)], prep)
    assert main.id == first.id and fragment.id != first.id
    (later,) = tracker._assign_ids([_det(108, 100, 45)], prep)
    assert later.id == first.id
    assert [t.id for t in tracker._tracks] == [first.id]


def test_two_vessels_side_by_side_keep_their_ids():
    """Two lumens of similar size 6 mm apart, one of them missed for two frames: neither track is
    dropped as a duplicate, and the missed one gets its id back."""
    tracker = Tracker(TrackingSettings())
    prep = SimpleNamespace(unit_mm=(0.1, 0.1))
    for _ in range(4):
        a, b = tracker._assign_ids([_det(100, 100, 40), _det(160, 100, 40)], prep)
    for _ in range(2):
        (a2,) = tracker._assign_ids([_det(100, 100, 40)], prep)
        assert a2.id == a.id
    a3, b3 = tracker._assign_ids([_det(100, 100, 40), _det(160, 100, 40)], prep)
    assert (a3.id, b3.id) == (a.id, b.id)


def test_split_pair_keeps_its_ids_while_reported_merged(monkeypatch):
    """Two touching lumens seen as split parts, then reported as one merged region for longer
    than a track may be missed, then split again: with the steady split the smaller part's
    track is kept inside its pair (moving with it) and both ids come back; without it the
    smaller part comes back with a new id."""
    from dataclasses import replace

    from iousguide.analysis import tracker as tracker_mod

    prep = SimpleNamespace(unit_mm=(0.1, 0.1))
    s = TrackingSettings()

    def run():
        tracker = Tracker(s)
        for k in range(4):
            big, small = tracker._assign_ids([replace(_det(100 + k, 100, 60), split_part=True),
                                              replace(_det(140 + k, 100, 35), split_part=True)], prep)
        for k in range(s.track_max_missed_frames + 4):
            (merged,) = tracker._assign_ids([_det(110 + 4 + k, 100, 80)], prep)
            assert merged.id == big.id
        shift = 4 + s.track_max_missed_frames + 4
        big2, small2 = tracker._assign_ids([replace(_det(100 + shift, 100, 60), split_part=True),
                                            replace(_det(140 + shift, 100, 35), split_part=True)], prep)
        return (big.id, small.id), (big2.id, small2.id)

    monkeypatch.setattr(tracker_mod, "SPLIT_STEADY", True)
    before, after = run()
    assert after == before
    monkeypatch.setattr(tracker_mod, "SPLIT_STEADY", False)
    # (and without the long keep of a vanished track in view, which would keep it too)
    monkeypatch.setattr(tracker_mod, "TRACK_KEEP_IN_VIEW_FRAMES", s.track_max_missed_frames)
    before, after = run()
    assert after[0] == before[0] and after[1] != before[1]
