"""Vessel track ids: a lumen whose outline changes shape keeps its id (overlap gate), a step that is
a change of shape teaches no velocity, a vessel that leaves the image plane and comes back in
view keeps its id, and on calcified phantom cases (a lumen merging with the acoustic shadow band)
the official harness counts no id switch.

Detections are given directly to ``Tracker._assign_ids`` (0.1 mm pixels) where the geometry must
be exact; the phantom cases use the official scorer (iousguide.evaluation) against exact truth.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from iousguide.analysis import tracker as tracker_mod
from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.tracker import Tracker, _overlap_fraction
from iousguide.analysis.vessels import VesselDetection


def _circle(x, y, r, n=96):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([x + r * np.cos(t), y + r * np.sin(t)], axis=1)


def _det(contour, diameter_px):
    contour = np.asarray(contour, dtype=np.float64)
    m = np.mean(contour, axis=0)
    return VesselDetection(contour_px=contour, centroid_px=(float(m[0]), float(m[1])),
                           diameter_mm=0.1 * diameter_px, diameter_px=float(diameter_px), kind="unknown",
                           long_axis=False, edge_sigma_mm=0.1, mask_w=None, sheath_ratio=0.0, refined=None)


def _lumen_with_band(x, y, r, band_bottom):
    """A round lumen whose lower half runs into a vertical band down to ``band_bottom`` (a lumen
    merged with an acoustic shadow), as one outline (vertices evenly spaced, so their mean is
    near the area centroid: far below the lumen)."""
    top = _circle(x, y, r, 96)
    top = top[top[:, 1] <= y]  # upper half, x from x + r to x - r
    top = top[np.argsort(-top[:, 0])]
    left = np.stack([np.full(60, x - r), np.linspace(y, band_bottom, 60)], axis=1)
    bottom = np.stack([np.linspace(x - r, x + r, 20), np.full(20, band_bottom)], axis=1)
    right = np.stack([np.full(60, x + r), np.linspace(band_bottom, y, 60)], axis=1)
    return np.vstack([top, left, bottom, right])


def _lens_fraction(d_over_r):
    """Area shared by two equal circles d apart, over one circle's area (exact)."""
    h = d_over_r / 2
    return (2 * np.arccos(h) - 2 * h * np.sqrt(1 - h * h)) / np.pi


@pytest.mark.parametrize("d_over_r", [0.0, 0.5, 1.0, 1.6])
def test_overlap_fraction_matches_the_exact_lens_area(d_over_r):
    a, b = _circle(0, 0, 20), _circle(20 * d_over_r, 0, 20)
    assert _overlap_fraction(a, b) == pytest.approx(_lens_fraction(d_over_r), abs=0.03)
    # a fraction of areas: the same with anisotropic pixels (x and y scaled apart)
    assert _overlap_fraction(a * (1, 3), b * (1, 3)) == pytest.approx(_lens_fraction(d_over_r), abs=0.03)


def test_overlap_fraction_of_the_smaller_outline():
    assert _overlap_fraction(_circle(0, 0, 50), _circle(10, 0, 5)) == pytest.approx(1.0, abs=0.02)
    assert _overlap_fraction(_circle(0, 0, 10), _circle(25, 0, 10)) == 0.0
    assert _overlap_fraction(_circle(0, 0, 10), np.zeros((2, 2))) == 0.0


def _run(frames, prep, settings=None):
    tracker = Tracker(settings or TrackingSettings())
    return tracker, [tracker._assign_ids(dets, prep) for dets in frames]


def test_lumen_merged_with_a_shadow_band_keeps_its_id(monkeypatch):
    """A 4 mm lumen tracked for 5 frames, then found merged with a shadow band below it for
    2 frames (one outline whose centroid lies ~9 mm lower, beyond the 6 mm gate), then alone
    again: it keeps its id throughout; without the overlap gate the merged region starts a new
    track, and the lumen alone then has to take its old id back (two switches)."""
    prep = SimpleNamespace(unit_mm=(0.1, 0.1))
    lumen = _det(_circle(200, 100, 20), 40)
    merged = _det(_lumen_with_band(200, 100, 20, 300), 40)
    assert merged.centroid_px[1] - lumen.centroid_px[1] > 60  # > the 6 mm gate
    frames = [[lumen]] * 5 + [[merged]] * 2 + [[lumen]] * 2
    _, out = _run(frames, prep)
    assert len({ids[0].id for ids in out}) == 1
    monkeypatch.setattr(tracker_mod, "TRACK_OVERLAP_FRACTION", 1.01)  # overlap never enough
    _, out = _run(frames, prep)
    assert len({ids[0].id for ids in out}) > 1


def test_a_change_of_shape_teaches_no_velocity():
    """A steady lumen moving 2 px per frame learns that velocity; a step where it merges with a
    band (its centroid jumps by ~9 mm) is not a move: the velocity goes to zero instead of
    pointing down the band."""
    prep = SimpleNamespace(unit_mm=(0.1, 0.1))
    tracker = Tracker(TrackingSettings())
    for k in range(5):
        (t,) = tracker._assign_ids([_det(_circle(200 + 2 * k, 100, 20), 40)], prep)
    assert t.velocity_px[0] == pytest.approx(2.0, abs=0.2) and abs(t.velocity_px[1]) < 0.2
    (t2,) = tracker._assign_ids([_det(_lumen_with_band(210, 100, 20, 300), 40)], prep)
    assert t2 is t and t.velocity_px == (0.0, 0.0)


def test_a_lumen_that_turns_back_keeps_its_id():
    """An oblique vessel's section slides along the image as the probe sweeps, and comes back
    when the sweep turns: 4 mm per frame down for 5 frames (the track learns that velocity),
    then 5 mm back up. The prediction (last place + velocity) lies 9 mm from the lumen, beyond
    the 6 mm gate, while its last place lies 5 mm from it: it is the same track (phantom seed
    8823, a 2 mm band moving 4-7 mm per frame, took a new id at the turn)."""
    prep = SimpleNamespace(unit_mm=(0.1, 0.1))
    tracker = Tracker(TrackingSettings())
    ids = []
    for y in (100, 140, 180, 220, 260, 210):
        (t,) = tracker._assign_ids([_det(_circle(200, y, 20), 40)], prep)
        ids.append(t.id)
    assert len(set(ids)) == 1, ids


def _band(x, y, half_length, half_width, angle_deg, n=96):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    a = np.deg2rad(angle_deg)
    u, w = half_length * np.cos(t), half_width * np.sin(t)
    return np.stack([x + u * np.cos(a) - w * np.sin(a), y + u * np.sin(a) + w * np.cos(a)], axis=1)


@pytest.mark.parametrize("along", [True, False])
def test_a_band_sliding_along_its_length_keeps_its_id(along):
    """A vessel cut along its length (a 4 x 10 mm band at 17 degrees) slides along its own axis
    as the probe sweeps: 8 mm per frame from its first frame (no velocity learnt yet; the moved
    outline shares too little with the last one for the overlap gate). Along the band that is
    the same vessel (phantom seed 8033: a 4 mm band sliding 8 mm per frame took two new ids);
    8 mm across it is not (beyond the 6 mm gate)."""
    prep = SimpleNamespace(unit_mm=(0.1, 0.1))
    tracker = Tracker(TrackingSettings())
    a = np.deg2rad(17.0)
    step = np.array([np.cos(a), np.sin(a)]) if along else np.array([-np.sin(a), np.cos(a)])
    ids = []
    for k in range(3):
        x, y = np.array([200.0, 300.0]) + 80.0 * k * step
        det = _det(_band(x, y, 50, 20, 17.0), 40)
        det.long_axis = True
        (t,) = tracker._assign_ids([det], prep)
        ids.append(t.id)
    assert (len(set(ids)) == 1) == along, ids


def _prep_with_view(valid):
    """A preparation stand-in: 0.1 mm pixels, working grid = frame pixels / 4, field of view."""
    return SimpleNamespace(unit_mm=(0.1, 0.1), valid=valid, to_work=lambda x, y: (x / 4.0, y / 4.0))


def test_vessel_back_in_view_after_a_long_gap_keeps_its_id():
    """A vessel tracked 5 frames, then out of the image plane for twice the settings' missed-frame
    limit (another vessel stays in view), then back at the same place: same id. At a place outside
    the field of view the vanished track is dropped at the settings' limit (a new id when
    something shows there again); so is a fragment seen once."""
    s = TrackingSettings()
    gap = 2 * s.track_max_missed_frames
    assert gap <= tracker_mod.TRACK_KEEP_IN_VIEW_FRAMES
    other = _det(_circle(600, 300, 30), 60)

    def run(valid, x, y, seen):
        vessel = _det(_circle(x, y, 20), 40)
        frames = [[vessel, other]] * seen + [[other]] * gap + [[vessel, other]]
        _, out = _run(frames, _prep_with_view(valid), s)
        return out[0][0].id, out[-1][0].id, out[0][1].id, out[-1][1].id

    valid = np.ones((120, 200), bool)
    first, last, o1, o2 = run(valid, 200, 100, seen=5)
    assert first == last and o1 == o2
    valid[:, :80] = False  # the left part of the frame (x < 320 px) lies outside the fan
    first, last, _, _ = run(valid, 200, 100, seen=5)
    assert first != last
    first, last, _, _ = run(np.ones((120, 200), bool), 200, 100, seen=1)
    assert first != last


@pytest.mark.parametrize("seed", [8201, 8209])
def test_calcified_cases_lumen_beside_the_shadow_keeps_its_id(seed):
    """Dev phantom seeds 8201 and 8209 (calcified lesion, linear and convex, 15 frames): a lumen
    beside the calcification is found merged with its acoustic shadow band on some frames. The
    issue's target (<= 1 id switch per 100 frames) allows none in 15 frames; the official
    harness counted 3 on each before the overlap gate and the clean-move velocity."""
    from iousguide.evaluation import evaluate_results
    from iousguide.phantom import generate_case

    frames, truth = generate_case(seed, difficulty="medium", n_frames=15)
    tracker = Tracker(TrackingSettings())
    results = [json.loads(json.dumps(tracker.process(f).to_json())) for f in frames]
    report = evaluate_results(results, truth)
    assert report["id_switches"] == 0


def test_vessel_back_after_a_long_gap_starts_its_smoothing_afresh():
    """A vessel back in view after more than the missed-frame limit keeps its id, but its diameter
    and distance filters are new: the smoothed diameter is the one measured now, not a blend with
    the value of seconds ago. After a short gap (within the limit) the filters are kept."""
    s = TrackingSettings()
    other = _det(_circle(600, 300, 30), 60)
    valid = np.ones((120, 200), bool)

    def back_after(gap):
        tracker = Tracker(s)
        prep = _prep_with_view(valid)
        for _ in range(5):
            (t, _o) = tracker._assign_ids([_det(_circle(200, 100, 20), 40), other], prep)
            t.diameter_filter.update(t.diameter_mm, 0.0, jump=10.0)
            t.distance_filter = object()  # stands for a filter fed on these frames
        old_filter = t.diameter_filter
        for _ in range(gap):
            tracker._assign_ids([other], prep)
        (t2, _o) = tracker._assign_ids([_det(_circle(200, 100, 18), 36), other], prep)
        return t, t2, old_filter

    t, t2, old_filter = back_after(2 * s.track_max_missed_frames)
    assert t2 is t  # same id
    assert t2.diameter_filter is not old_filter and t2.diameter_filter.value is None
    assert t2.distance_filter is None
    t, t2, old_filter = back_after(s.track_max_missed_frames - 1)
    assert t2 is t and t2.diameter_filter is old_filter and t2.distance_filter is not None
