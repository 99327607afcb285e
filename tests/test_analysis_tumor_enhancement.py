"""Posterior acoustic enhancement below a lumen is a gain of the beams behind it, not a lesion.

A faint hyperechoic lesion lying in (or beside) the bright band below a vessel used to merge with
that band down to the bottom of the view on the coarse bright map and was never proposed. The
band's gain is measured along the beams below the lumen and taken out of the coarse map.
"""

from __future__ import annotations

import cv2
import numpy as np

from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.tumor import beam_slopes, posterior_enhancement_db


def test_beam_slopes_are_vertical_for_a_linear_view_and_follow_the_sides_of_a_fan():
    rect = np.zeros((200, 300), bool)
    rect[10:190, 20:280] = True
    left, right = beam_slopes(rect)
    assert abs(left) < 1e-6 and abs(right) < 1e-6
    # a fan from an apex 100 px above the image at column 150, opening +-30 degrees
    yy, xx = np.mgrid[0:200, 0:300].astype(np.float64)
    ang = np.degrees(np.arctan2(xx - 150.0, yy + 100.0))
    fan = (np.abs(ang) <= 30.0) & (np.hypot(xx - 150.0, yy + 100.0) <= 290.0)
    left, right = beam_slopes(fan)
    t = np.tan(np.radians(30.0))
    assert abs(left + t) < 0.03 and abs(right - t) < 0.03, (left, right)
    assert beam_slopes(np.zeros((50, 50), bool)) is None


def test_enhancement_is_the_gain_of_the_beams_below_a_lumen_only():
    """A +3 dB band from a lumen down to the bottom (with a +3 dB lesion on part of it) gives
    ~3 dB along the band below the lumen and 0 above it, beside it and elsewhere; rel is not
    modified."""
    rng = np.random.default_rng(3)
    h, w, px = 240, 200, 0.2
    rel = rng.normal(0.0, 0.5, (h, w)).astype(np.float32)
    lumen = np.zeros((h, w), bool)
    cv2.circle(lumen.view(np.uint8), (100, 40), 15, 1, -1)
    rel[56:, 85:116] += 3.0
    rel[150:180, 80:120] += 3.0  # a lesion further down the same beams: the median ignores it
    before = rel.copy()
    valid = np.ones((h, w), bool) & ~lumen
    gain = posterior_enhancement_db(rel, lumen, valid=valid, fov=np.ones((h, w), bool), px_mm=px)
    assert np.array_equal(rel, before)
    assert abs(float(np.median(gain[70:, 90:111])) - 3.0) < 0.4
    assert float(np.max(gain[:40])) == 0.0 or float(np.max(gain[:25])) == 0.0  # nothing above the lumen
    assert float(np.max(gain[:25])) == 0.0
    assert float(np.max(gain[:, :80])) == 0.0 and float(np.max(gain[:, 122:])) == 0.0
    assert np.isclose(posterior_enhancement_db(rel, np.zeros_like(lumen), valid=valid, fov=valid, px_mm=px), 0.0)


#: development cases (phantom seeds, medium difficulty) whose hyperechoic lesion lies right below or
#: beside a vessel, in or against its enhancement band: none of their frames had a tumour before
BELOW_VESSEL_SEEDS = (8204, 8210, 8253)


def _mask(contour_px, shape) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(np.asarray(contour_px) * 8).astype(np.int32)], 1, shift=3)
    return m.astype(bool)


def test_a_hyperechoic_lesion_below_a_vessel_is_proposed_and_outlined():
    """Proposed without a click and outlined (median Dice >= 0.7 over the frames showing it, a
    missed frame counting 0) in at least two of the three cases; no frame reports an outline lying
    mostly off the lesion."""
    from iousguide.analysis.tracker import Tracker
    from iousguide.phantom import generate_case

    good = 0
    for seed in BELOW_VESSEL_SEEDS:
        frames, truth = generate_case(seed, difficulty="medium", n_frames=8)
        tracker = Tracker(TrackingSettings())
        dices = []
        for f, tf in zip(frames, truth.frames):
            r = tracker.process(f)
            tt = tf.get("tumor") or next((t for t in tf.get("tumors") or [] if t.get("primary")), None)
            if tt is None:
                continue
            lesion = _mask(tt["contour_px"], f.shape)
            if r.tumor is None:
                dices.append(0.0)
                continue
            shown = _mask(r.tumor.contour_px, f.shape)
            assert np.count_nonzero(shown & lesion) >= 0.2 * np.count_nonzero(shown), (seed, f.index)
            dices.append(2.0 * np.count_nonzero(shown & lesion) / (shown.sum() + lesion.sum()))
        good += float(np.median(dices)) >= 0.7
    assert good >= 2, good


def _follow_after_first_report(frames, truth) -> tuple[int, list[float]]:
    """Run a fresh tracker over a phantom case: (frames lost, Dice of each reported outline) over
    the frames showing the (primary) tumour from its first report on. The classical maps only (the
    learned lesion model's follow would hide what a classical follow rule changes)."""
    from iousguide.analysis.tracker import Tracker

    tracker = Tracker(TrackingSettings(learned_lesions=False))
    lost, dices, started = 0, [], False
    for f, tf in zip(frames, truth.frames):
        r = tracker.process(f)
        tt = tf.get("tumor") or next((t for t in tf.get("tumors") or [] if t.get("primary")), None)
        started = started or r.tumor is not None
        if started and tt is not None:
            if r.tumor is None:
                lost += 1
                continue
            lesion, shown = _mask(tt["contour_px"], f.shape), _mask(r.tumor.contour_px, f.shape)
            dices.append(2.0 * np.count_nonzero(shown & lesion) / (shown.sum() + lesion.sum()))
    return lost, dices


#: development cases (phantom seeds, medium difficulty) with a calcified lesion whose bright foci
#: change from frame to frame: the follow lost them on a third of the frames
CALCIFIED_FLICKER_SEEDS = (8209, 8238, 8271)


def test_a_calcified_lesion_is_followed_through_its_flickering_foci():
    """A calcified lesion's bright foci change size and place between frames while the lesion's
    extent (its deep part assumed round in its shadow) does not: once found, the lesion is
    reported on at least 85 % of the later frames showing it in at least two of the three cases,
    and no reported outline lies mostly off the lesion."""
    from iousguide.analysis.tracker import Tracker
    from iousguide.phantom import generate_case

    good = 0
    for seed in CALCIFIED_FLICKER_SEEDS:
        frames, truth = generate_case(seed, difficulty="medium", n_frames=15)
        tracker = Tracker(TrackingSettings())
        shown_frames, present, started = 0, 0, False
        for f, tf in zip(frames, truth.frames):
            r = tracker.process(f)
            tt = tf.get("tumor") or next((t for t in tf.get("tumors") or [] if t.get("primary")), None)
            if r.tumor is not None:
                lesion = _mask(tt["contour_px"], f.shape) if tt else np.zeros(f.shape, bool)
                shown = _mask(r.tumor.contour_px, f.shape)
                assert np.count_nonzero(shown & lesion) >= 0.2 * np.count_nonzero(shown), (seed, f.index)
            started = started or r.tumor is not None
            if started and tt is not None:
                present += 1
                shown_frames += r.tumor is not None
        good += present > 0 and shown_frames >= 0.85 * present
    assert good >= 2, good


#: development cases (medium) in which a calcified lesion was followed onto one small focus: taken
#: as the lesion's outline, the focus became the reference the next frames could not match
CALCIFIED_FOCUS_SEEDS = (8359, 8808, 10118)


def test_a_focus_followed_in_a_calcified_lesion_is_completed_by_its_extent(monkeypatch):
    """When only one shadowing focus is found where a calcified lesion was, the lesion is its last
    extent around that focus, not the focus: with the completion (SHADOWED_FOLLOW_EXTENT) the mean
    Dice over the frames after the lesion is first reported is at least 0.5 in each case and 0.1
    above the follow without it. (The coarse-map hysteresis is off here: it keeps some of these
    lesions followed on their own blob, and the focus path is not reached.)"""
    from iousguide.analysis import tracker as tracker_module
    from iousguide.phantom import generate_case

    monkeypatch.setattr(tracker_module, "BRIGHT_FOLLOW_HYSTERESIS", False)

    def mean_dice(frames, truth) -> float:  # a lost frame counts as Dice 0
        lost, dices = _follow_after_first_report(frames, truth)
        return float(sum(dices) / (len(dices) + lost)) if dices or lost else 0.0

    for seed in CALCIFIED_FOCUS_SEEDS:
        frames, truth = generate_case(seed, difficulty="medium", n_frames=12)
        monkeypatch.setattr(tracker_module, "SHADOWED_FOLLOW_EXTENT", True)
        on = mean_dice(frames, truth)
        monkeypatch.setattr(tracker_module, "SHADOWED_FOLLOW_EXTENT", False)
        off = mean_dice(frames, truth)
        assert on >= 0.5 and on >= off + 0.1, (seed, on, off)


#: development cases (medium) with a faint hyperechoic or calcified lesion whose coarse-map blob
#: failed the proposal's shape tests on single frames while it was followed (lost, re-acquired)
FAINT_BRIGHT_FOLLOW_SEEDS = (8858, 10117, 10301)


def test_a_faint_bright_lesion_being_followed_is_kept_on_weaker_shape_tests(monkeypatch):
    """Hysteresis (tracker.BRIGHT_FOLLOW_HYSTERESIS): a coarse bright blob on the lesion being
    followed needs fewer bright directions and less solidity than a new proposal. With it, no
    frame after the first report is lost in these cases and every reported outline overlaps the
    lesion (Dice >= 0.6); without it, at least one frame of each case is lost."""
    from iousguide.analysis import tracker as tracker_module
    from iousguide.phantom import generate_case

    for seed in FAINT_BRIGHT_FOLLOW_SEEDS:
        frames, truth = generate_case(seed, difficulty="medium", n_frames=12)
        monkeypatch.setattr(tracker_module, "BRIGHT_FOLLOW_HYSTERESIS", True)
        lost_on, dices_on = _follow_after_first_report(frames, truth)
        monkeypatch.setattr(tracker_module, "BRIGHT_FOLLOW_HYSTERESIS", False)
        lost_off, _ = _follow_after_first_report(frames, truth)
        assert lost_on == 0 and min(dices_on) >= 0.6, (seed, lost_on, dices_on)
        assert lost_off >= 1, (seed, lost_off)


#: development cases (hard) with a faint hypoechoic lesion whose contrast hovers at the map's cut
#: while it is followed (lost for single frames, then re-acquired)
FAINT_DARK_FOLLOW_SEEDS = (8839, 10103, 10116)


def test_a_faint_dark_lesion_being_followed_is_found_on_a_lower_cut(monkeypatch):
    """Hysteresis (tumor.DARK_FOLLOW_HYSTERESIS): when the dark map holds nothing on the lesion
    being followed, a lower cut near its last mask is offered to the follow (only to it). With it
    fewer frames after the first report are lost in each case, and every reported outline lies on
    the lesion (Dice >= 0.3)."""
    from iousguide.analysis import tumor as tumor_module
    from iousguide.phantom import generate_case

    for seed in FAINT_DARK_FOLLOW_SEEDS:
        frames, truth = generate_case(seed, difficulty="hard", n_frames=12)
        monkeypatch.setattr(tumor_module, "DARK_FOLLOW_HYSTERESIS", True)
        lost_on, dices_on = _follow_after_first_report(frames, truth)
        monkeypatch.setattr(tumor_module, "DARK_FOLLOW_HYSTERESIS", False)
        lost_off, _ = _follow_after_first_report(frames, truth)
        assert lost_on < lost_off and min(dices_on) >= 0.3, (seed, lost_on, lost_off, dices_on)
