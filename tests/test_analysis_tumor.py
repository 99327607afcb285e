"""Tumour: halo rings, follow-by-template, lesion choice and seeds, in speckle with exact geometry.

Scenes come from iousguide.analysis.synthetic (discs of known echogenicity in fully
developed speckle, PSF 0.25 mm axial / 0.6 mm lateral, log compression). Tolerances follow
from the physics, not from a fit: a boundary lies within about 0.4 mm of the true edge, so a
6 mm-radius lesion has Dice >= 1 - 0.4 / 6 ~ 0.93; we ask 0.85 to leave room for the
contour smoothing.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.synthetic import Disc, Scene, render
from iousguide.analysis.tracker import Tracker
from iousguide.analysis.tumor import _column_medians, close_ring, follow_template, lumen_in_place
from iousguide.frames import Frame

SPACING_MM = 0.1


def frames_of(scene: Scene, n: int, seed0: int) -> list[Frame]:
    return [Frame(pixels=render(scene, seed=seed0 + i), index=i, t_mono_ns=i, t_source_s=i / 15,
                  spacing_mm=(scene.spacing_mm, scene.spacing_mm)) for i in range(n)]


def disc_dice(contour_px: np.ndarray, disc: Disc, shape: tuple[int, int], spacing_mm: float) -> float:
    a = np.zeros(shape, np.uint8)
    b = np.zeros(shape, np.uint8)
    cv2.fillPoly(a, [np.round(np.asarray(contour_px) * 8).astype(np.int32)], 1, shift=3)
    cx, cy = (v / spacing_mm for v in disc.center_mm)
    cv2.circle(b, (int(round(cx * 8)), int(round(cy * 8))), int(round(disc.radius_mm / spacing_mm * 8)), 1,
               thickness=-1, shift=3)
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_isoechoic_lesion_with_halo_is_proposed_whole():
    """An isoechoic lesion is visible only by its 1.2 mm dark halo: the whole lesion (halo and
    isoechoic centre) is proposed without a click."""
    halo = Disc((35.0, 28.0), 6.0, echo=0.3)
    centre = Disc((35.0, 28.0), 4.8, echo=1.0)
    scene = Scene(shape_px=(500, 700), spacing_mm=SPACING_MM, discs=[halo, centre])
    tracker = Tracker(TrackingSettings())
    results = [tracker.process(f) for f in frames_of(scene, 4, 100)]
    found = [r for r in results if r.tumor is not None]
    assert len(found) >= 3, [r.status for r in results]
    for r in found:
        assert disc_dice(r.tumor.contour_px, halo, scene.shape_px, SPACING_MM) >= 0.85


def test_the_larger_clearer_lesion_is_chosen_and_a_click_overrides():
    big = Disc((22.0, 28.0), 6.0, echo=0.35)
    small = Disc((52.0, 28.0), 3.5, echo=0.6)
    scene = Scene(shape_px=(500, 750), spacing_mm=SPACING_MM, discs=[big, small])
    frames = frames_of(scene, 6, 200)
    tracker = Tracker(TrackingSettings())
    results = [tracker.process(f) for f in frames[:3]]
    last = results[-1]
    assert last.tumor is not None
    assert disc_dice(last.tumor.contour_px, big, scene.shape_px, SPACING_MM) >= 0.85
    tracker.seed_tumor(small.center_mm[0] / SPACING_MM, small.center_mm[1] / SPACING_MM)
    seeded = [tracker.process(f) for f in frames[3:]]
    assert seeded[0].tumor is not None and seeded[0].tumor.state == "seeded"
    for r in seeded:  # the follow stays on the clicked lesion, it does not jump back
        assert r.tumor is not None
        assert disc_dice(r.tumor.contour_px, small, scene.shape_px, SPACING_MM) >= 0.75


def ring_mask(shape, centre, radius_px, width_px, gap_deg=()):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    r = np.hypot(xx - centre[0], yy - centre[1])
    ang = np.degrees(np.arctan2(yy - centre[1], xx - centre[0])) % 360
    m = (r <= radius_px) & (r > radius_px - width_px)
    for a0, a1 in gap_deg:
        m &= ~((ang >= a0) & (ang < a1))
    return m


def test_close_ring_closes_a_broken_halo_but_not_an_arc():
    shape = (80, 80)
    rel = np.zeros(shape, np.float32)
    valid = np.ones(shape, bool)
    broken = ring_mask(shape, (40, 40), 20, 4, gap_deg=((10, 40), (200, 230)))
    ys, xs = np.nonzero(broken)
    bbox = (int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1)
    before = broken.copy()
    closed = close_ring(broken, bbox, rel=rel, valid=valid, px_mm=0.3, contrast_db=3.0)
    assert closed is not None and np.array_equal(broken, before)
    disc = np.hypot(*np.mgrid[0:80, 0:80] - 40) <= 19
    assert np.count_nonzero(closed & disc) >= 0.95 * np.count_nonzero(disc)
    arc = ring_mask(shape, (40, 40), 20, 4, gap_deg=((0, 230),))
    ys, xs = np.nonzero(arc)
    bbox = (int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1)
    assert close_ring(arc, bbox, rel=rel, valid=valid, px_mm=0.3, contrast_db=3.0) is None
    # a dark inside (a hypoechoic lesion, not an isoechoic centre) is not a halo
    dark_inside = np.where(disc, -6.0, 0.0).astype(np.float32)
    ys, xs = np.nonzero(broken)
    bbox = (int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1)
    assert close_ring(broken, bbox, rel=dark_inside, valid=valid, px_mm=0.3, contrast_db=3.0) is None


def test_follow_template_completes_a_broken_map_only_when_a_real_piece_remains():
    prev = np.zeros((60, 60), bool)
    prev[10:50, 10:50] = True
    half = np.zeros_like(prev)
    half[10:50, 10:30] = True
    out = follow_template(half, prev, px_mm=1.0)
    assert out[30, 40] and out[10, 10] and not out[10, 49]  # eroded previous core added
    assert np.count_nonzero(half) == 800  # input untouched
    speck = np.zeros_like(prev)
    speck[20:25, 20:25] = True
    assert np.array_equal(follow_template(speck, prev, px_mm=1.0), speck)
    assert np.array_equal(follow_template(prev, prev, px_mm=1.0), prev)


def test_lumen_in_place_takes_only_a_lumen_where_the_lesion_was():
    yy, xx = np.mgrid[0:100, 0:100]
    prev = np.hypot(xx - 40, yy - 50) <= 15
    same_place = np.hypot(xx - 43, yy - 50) <= 14   # the lesion section gone black
    elsewhere = np.hypot(xx - 80, yy - 20) <= 12     # a real vessel nearby
    tiny = np.hypot(xx - 40, yy - 50) <= 5          # too small to be the lesion (area change)
    got = lumen_in_place(prev, [elsewhere, same_place], px_mm=0.3, contrast_db=4.0)
    assert got is not None and np.array_equal(got.mask_w, same_place) and got.dark
    assert abs(got.area_mm2 - np.count_nonzero(same_place) * 0.09) < 1e-9 and got.contrast_db == 4.0
    assert lumen_in_place(prev, [elsewhere], px_mm=0.3) is None
    assert lumen_in_place(prev, [tiny], px_mm=0.3) is None


def test_a_very_dark_speckled_lesion_is_a_lesion_and_a_black_disc_a_lumen():
    """A lesion far below the tissue level (a section through a thick halo, 28 dB down) still
    shows speckle above the display's black level; a lumen is black. Both pass the anechoic
    level test, only the lumen is cut out of the lesion map: the lesion is proposed whole and is
    not reported as a vessel, the lumen is."""
    from iousguide.analysis.imaging import prepare
    from iousguide.analysis.tumor import ANECHOIC_MIN_SOLIDITY, anechoic_mask

    lesion = Disc((22.0, 25.0), 6.0, echo=0.04)
    lumen = Disc((50.0, 25.0), 4.0, echo=0.0)
    scene = Scene(shape_px=(500, 720), spacing_mm=SPACING_MM, discs=[lesion, lumen])
    frames = frames_of(scene, 4, 300)
    settings = TrackingSettings()
    prep = prepare(np.ascontiguousarray(frames[0].gray), spacing_mm=frames[0].spacing_mm, settings=settings)
    mask = anechoic_mask(prep, settings=settings, min_solidity=ANECHOIC_MIN_SOLIDITY)
    lx, ly = prep.to_work(lesion.center_mm[0] / SPACING_MM, lesion.center_mm[1] / SPACING_MM)
    vx, vy = prep.to_work(lumen.center_mm[0] / SPACING_MM, lumen.center_mm[1] / SPACING_MM)
    assert mask[int(round(float(vy))), int(round(float(vx)))]
    assert not mask[int(round(float(ly))), int(round(float(lx)))]
    tracker = Tracker(settings)
    results = [tracker.process(f) for f in frames]
    assert results[-1].tumor is not None, [r.status for r in results]
    assert disc_dice(results[-1].tumor.contour_px, lesion, scene.shape_px, SPACING_MM) >= 0.85
    centres = [np.asarray(v.centroid_px) * SPACING_MM for v in results[-1].vessels]
    assert any(np.hypot(*(c - lumen.center_mm)) < 1.0 for c in centres)
    assert not any(np.hypot(*(c - lesion.center_mm)) < lesion.radius_mm for c in centres)


def test_a_dark_disc_with_posterior_enhancement_is_lumen_like_and_not_proposed():
    """A grey lumen (noise lifts it off black) shows posterior enhancement: the tissue right below
    it is brighter than beside it and than above it. Such a dark blob is not proposed as the
    tumour; the same blob without the bright tissue below it, or with an echoic core, is a lesion."""
    from iousguide.analysis.imaging import prepare
    from iousguide.analysis.tumor import lesion_candidates, looks_like_lumen

    settings = TrackingSettings()

    def dark_candidate(discs, seed):
        scene = Scene(shape_px=(500, 700), spacing_mm=SPACING_MM, discs=discs)
        frame = frames_of(scene, 1, seed)[0]
        prep = prepare(np.ascontiguousarray(frame.gray), spacing_mm=frame.spacing_mm, settings=settings)
        cands = [c for c in lesion_candidates(prep, settings=settings) if c.dark]
        best = min(cands, key=lambda c: np.hypot(c.centroid_w[0] * prep.work_px_mm - 35.0,
                                                  c.centroid_w[1] * prep.work_px_mm - 22.0))
        return prep, best, scene

    body = Disc((35.0, 22.0), 4.0, echo=0.3)
    enhancement = Disc((35.0, 30.0), 4.0, echo=1.6, radius_y_mm=3.0)  # 1-6 mm below the lumen
    prep, cand, scene = dark_candidate([enhancement, body], 400)
    assert looks_like_lumen(prep, cand)
    tracker = Tracker(settings)
    results = [tracker.process(f) for f in frames_of(scene, 3, 410)]
    for r in results:  # (the bright band itself may pass for a hyperechoic lesion)
        assert r.tumor is None or disc_dice(r.tumor.contour_px, body, scene.shape_px, SPACING_MM) < 0.1
    prep, cand, _ = dark_candidate([body], 420)
    assert not looks_like_lumen(prep, cand)
    above = Disc((35.0, 14.0), 4.0, echo=1.6, radius_y_mm=3.0)  # bright tissue above as well: no enhancement
    prep, cand, _ = dark_candidate([enhancement, above, body], 430)
    assert not looks_like_lumen(prep, cand)


def test_a_target_lesion_with_a_thick_dark_halo_is_not_lumen_like(monkeypatch):
    """A target lesion whose dark halo is thick (3 mm of a 6 mm radius) fills most of a 1 mm
    erosion of its outline with halo: judged on that, its "core" was dark and, with posterior
    enhancement below it, it passed for a grey lumen and was not proposed (dev seed 8867: no
    tumour in 12 frames). Its centre (LUMEN_LIKE_CORE_DEPTH of its inscribed radius in) is
    echoic tissue: not lumen-like, and the tracker proposes it."""
    from iousguide.analysis import tumor as tumor_mod
    from iousguide.analysis.imaging import prepare
    from iousguide.analysis.tumor import lesion_candidates, looks_like_lumen

    settings = TrackingSettings()
    halo = Disc((35.0, 22.0), 6.0, echo=0.25)
    centre = Disc((35.0, 22.0), 3.0, echo=1.0)
    enhancement = Disc((35.0, 32.0), 6.0, echo=1.6, radius_y_mm=3.0)  # 1-6 mm below the lesion
    scene = Scene(shape_px=(500, 700), spacing_mm=SPACING_MM, discs=[enhancement, halo, centre])
    frame = frames_of(scene, 1, 440)[0]
    prep = prepare(np.ascontiguousarray(frame.gray), spacing_mm=frame.spacing_mm, settings=settings)
    cands = [c for c in lesion_candidates(prep, settings=settings) if c.dark]
    cand = min(cands, key=lambda c: np.hypot(c.centroid_w[0] * prep.work_px_mm - 35.0,
                                              c.centroid_w[1] * prep.work_px_mm - 22.0))
    assert cand.equivalent_diameter_mm > 9.0
    assert not looks_like_lumen(prep, cand)
    monkeypatch.setattr(tumor_mod, "LUMEN_LIKE_CORE_DEPTH", 0.0)
    assert looks_like_lumen(prep, cand)  # the 1 mm erosion: mostly halo
    monkeypatch.undo()
    tracker = Tracker(settings)
    results = [tracker.process(f) for f in frames_of(scene, 3, 450)]
    assert results[-1].tumor is not None
    assert disc_dice(results[-1].tumor.contour_px, halo, scene.shape_px, SPACING_MM) > 0.8


@pytest.mark.parametrize("centre_echo, rim_echo", [(2.5, 0.3), (3.0, 0.5)])
def test_a_target_lesion_with_a_bright_centre_is_outlined_whole(centre_echo, rim_echo, monkeypatch):
    """A target (bull's-eye) lesion: a dark rim around a hyperechoic centre. The centre is a bright
    lesion candidate inside the dark one; proposed as a rival it won and only the centre was
    outlined (Dice with the whole lesion 0.5-0.7). With tracker.BRIGHT_CENTRE_OF_DARK it is
    part of its rim's lesion: the whole lesion is outlined, from the first frame."""
    from iousguide.analysis import tracker as tracker_mod

    rim = Disc((35.0, 22.0), 6.0, echo=rim_echo)
    centre = Disc((35.0, 22.0), 3.5, echo=centre_echo)
    scene = Scene(shape_px=(500, 700), spacing_mm=SPACING_MM, discs=[rim, centre])

    def dices():
        tracker = Tracker(TrackingSettings())
        return [None if r.tumor is None else disc_dice(r.tumor.contour_px, rim, scene.shape_px, SPACING_MM)
                for r in (tracker.process(f) for f in frames_of(scene, 3, 460))]

    found = dices()
    assert all(d is not None and d > 0.9 for d in found), found
    monkeypatch.setattr(tracker_mod, "BRIGHT_CENTRE_OF_DARK", False)
    without = dices()
    assert max(d or 0.0 for d in without) < 0.8, without  # the centre alone


def test_lowpass_contour_keeps_size_and_shape_and_removes_speckle_bumps():
    """The first outline's low-pass: a circle and an ellipse keep their size (a Gaussian would
    shrink them), a 1 mm-wide bump (speckle scale) is mostly removed, the input is untouched."""
    from iousguide.analysis.tumor_boundary import lowpass_contour

    unit = (0.1, 0.1)
    t = np.linspace(0.0, 2 * np.pi, 400, endpoint=False)
    circle = np.stack([200 + 50 * np.cos(t), 150 + 50 * np.sin(t)], axis=1)  # radius 5 mm
    out = lowpass_contour(circle, unit_mm=unit, cutoff_mm=6.0)
    assert np.allclose(np.hypot(out[:, 0] - 200, out[:, 1] - 150), 50.0, atol=0.1)  # 0.01 mm
    ellipse = np.stack([200 + 80 * np.cos(t), 150 + 40 * np.sin(t)], axis=1)
    out = lowpass_contour(ellipse, unit_mm=unit, cutoff_mm=6.0)
    area = abs(cv2.contourArea(out.astype(np.float32)))
    assert abs(area - np.pi * 80 * 40) <= 0.005 * np.pi * 80 * 40
    # a 0.4 mm high, ~1 mm wide bump on the circle
    r = 50 + 4 * np.exp(-0.5 * ((t - 1.0) / (0.5 / 5.0)) ** 2)
    bumpy = np.stack([200 + r * np.cos(t), 150 + r * np.sin(t)], axis=1)
    before = bumpy.copy()
    out = lowpass_contour(bumpy, unit_mm=unit, cutoff_mm=6.0)
    assert np.array_equal(bumpy, before)
    assert np.hypot(out[:, 0] - 200, out[:, 1] - 150).max() - 50 < 0.5 * 4


def test_distance_to_a_vessel_is_not_biased_by_the_outline():
    """A hypoechoic lesion 2 mm from an anechoic vessel, speckle different every frame: the
    tumour-to-vessel distance is a minimum over the outline, so outward speckle bumps of the
    outline would bias it low. The mean reported distance stays within the boundary accuracy
    (0.4 mm, see the module docstring, shared by two edges) of the truth, and the outline's area
    within 10 % of the disc's."""
    lesion = Disc((30.0, 25.0), 6.0, echo=0.3)
    vessel = Disc((30.0 + 6.0 + 2.0 + 3.0, 25.0), 3.0, echo=0.0)
    scene = Scene(shape_px=(500, 700), spacing_mm=SPACING_MM, discs=[lesion, vessel])
    tracker = Tracker(TrackingSettings(tumor_seed_px=(300.0, 250.0), smoothing_alpha=1.0, smoothing_beta=0.0))
    distances, areas = [], []
    for f in frames_of(scene, 8, 500):
        r = tracker.process(f)
        assert r.tumor is not None, r.status
        areas.append(r.tumor.area_mm2)
        near = [v for v in r.vessels if np.hypot(*(np.asarray(v.centroid_px) * SPACING_MM - vessel.center_mm)) < 1.5]
        assert len(near) == 1
        distances.append(near[0].distance_mm)
    assert abs(np.mean(distances) - 2.0) <= 0.4, distances
    assert abs(np.mean(areas) / (np.pi * 36.0) - 1.0) <= 0.10, areas


def test_the_enhancement_below_a_grey_lumen_is_not_a_bright_lesion():
    """A grey lumen the vessel detector misses (echo 0.3, lifted off black) casts posterior
    enhancement: a bright band right below it. behind_lumen tells that band from a hyperechoic
    lesion of the same brightness placed beside the lumen instead of below it."""
    from iousguide.analysis.imaging import prepare
    from iousguide.analysis.tumor import behind_lumen, lesion_candidates, looks_like_lumen

    settings = TrackingSettings()
    body = Disc((35.0, 22.0), 4.0, echo=0.3)
    band = Disc((35.0, 30.0), 4.0, echo=1.8, radius_y_mm=3.0)
    lesion = Disc((55.0, 22.0), 4.0, echo=1.8, radius_y_mm=3.0)
    scene = Scene(shape_px=(500, 750), spacing_mm=SPACING_MM, discs=[band, body, lesion])
    frame = frames_of(scene, 1, 440)[0]
    prep = prepare(np.ascontiguousarray(frame.gray), spacing_mm=frame.spacing_mm, settings=settings)
    cands = lesion_candidates(prep, settings=settings)
    px = prep.work_px_mm

    def nearest(dark, centre_mm):
        pool = [c for c in cands if c.dark == dark]
        return min(pool, key=lambda c: np.hypot(c.centroid_w[0] * px - centre_mm[0], c.centroid_w[1] * px - centre_mm[1]))

    lumen = nearest(True, body.center_mm)
    assert looks_like_lumen(prep, lumen)
    assert behind_lumen(prep, nearest(False, band.center_mm), [lumen])
    assert not behind_lumen(prep, nearest(False, lesion.center_mm), [lumen])
    assert not behind_lumen(prep, nearest(False, band.center_mm), [])


def test_a_place_that_looked_like_a_lumen_is_not_proposed_when_its_enhancement_flickers():
    """Posterior enhancement flickers with speckle from frame to frame; a lumen stays a lumen. A
    dark disc seen with the bright band below it is not proposed on the following frames where
    the band is missing; the same frames without that history propose it (the control)."""
    settings = TrackingSettings()
    body = Disc((35.0, 22.0), 4.0, echo=0.3)
    band = Disc((35.0, 30.0), 4.0, echo=1.6, radius_y_mm=3.0)
    with_band = frames_of(Scene(shape_px=(500, 700), spacing_mm=SPACING_MM, discs=[band, body]), 2, 450)
    plain_scene = Scene(shape_px=(500, 700), spacing_mm=SPACING_MM, discs=[body])
    plain = [Frame(pixels=f.pixels, index=i + 2, t_mono_ns=i + 2, t_source_s=(i + 2) / 15, spacing_mm=f.spacing_mm)
             for i, f in enumerate(frames_of(plain_scene, 4, 460))]

    def on_body(results):
        return [r.tumor is not None and disc_dice(r.tumor.contour_px, body, plain_scene.shape_px, SPACING_MM) > 0.5
                for r in results]

    tracker = Tracker(settings)
    assert not any(on_body([tracker.process(f) for f in with_band + plain]))
    control = Tracker(settings)
    assert any(on_body([control.process(f) for f in plain]))


# --- bright lesions on generated phantom cases -------------------------------------------------
# Development seeds (8200-8899); the first six cases of each appearance at or above 8400, not chosen
# by result. At medium difficulty a hyperechoic lesion is only ~2.5-4 dB brighter than the liver and
# a calcified one hides its deep part in its own shadow, and some sections sit in a vessel's
# enhancement band or near the noise floor, so the tests ask it of half the cases, not of each.

HYPERECHOIC_SEEDS = (8407, 8410, 8414, 8415, 8416, 8429)
CALCIFIED_SEEDS = (8401, 8402, 8403, 8405, 8406, 8413)


def _truth_mask(contour_px, shape) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(np.asarray(contour_px) * 8).astype(np.int32)], 1, shift=3)
    return m.astype(bool)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def _primary(tf: dict):
    return tf.get("tumor") or next((t for t in tf.get("tumors") or [] if t.get("primary")), None)


def test_faint_hyperechoic_lesions_are_found_whole_and_nothing_else_is_followed():
    """A hyperechoic metastasis 2.5-4 dB brighter than the liver is proposed without a click and
    outlined whole (median Dice >= 0.7 once confirmed: a boundary within ~1 mm on a 6-12 mm
    lesion) in at least half of the cases, and no frame of any case reports an outline that lies
    mostly off the lesion (a wrong tumour is worse than none). Before the coarse bright map none
    of these cases reached it."""
    from iousguide.phantom import generate_case

    good = 0
    for seed in HYPERECHOIC_SEEDS:
        frames, truth = generate_case(seed, difficulty="medium", n_frames=5)
        tracker = Tracker(TrackingSettings())
        dices = []
        for f, tf in zip(frames, truth.frames):
            r = tracker.process(f)
            tt = _primary(tf)
            if r.tumor is None:
                dices.append(0.0)
                continue
            shown = _truth_mask(r.tumor.contour_px, f.shape)
            lesion = _truth_mask(tt["contour_px"], f.shape) if tt else np.zeros_like(shown)
            assert np.count_nonzero(shown & lesion) >= 0.2 * np.count_nonzero(shown), (seed, f.index)
            dices.append(_dice(shown, lesion))
        good += float(np.median(dices[1:])) >= 0.7  # frame 0: a proposal waits for confirmation
    assert good >= len(HYPERECHOIC_SEEDS) // 2, good


def test_a_calcified_lesion_is_completed_into_its_shadow_and_a_hyperechoic_one_is_not():
    """Calcium shadows what lies below it: where the bright top of a calcified lesion has a
    posterior shadow, the outline is completed into it and then covers the lesion better than the
    bright top alone; a hyperechoic lesion (no calcium) casts no shadow and is never completed."""
    from iousguide.analysis.imaging import prepare
    from iousguide.analysis.tumor import lesion_candidates, refine_tumor, shadowed_extent
    from iousguide.phantom import generate_case

    s = TrackingSettings()

    def bright_on_lesion(seed):
        frames, truth = generate_case(seed, difficulty="medium", n_frames=1)
        f, tt = frames[0], _primary(truth.frames[0])
        prep = prepare(np.ascontiguousarray(f.gray), spacing_mm=f.spacing_mm, settings=s)
        lesion = _truth_mask(tt["contour_px"], f.shape)
        lesion_w = cv2.resize(lesion.astype(np.uint8), prep.work_shape[::-1], interpolation=cv2.INTER_NEAREST)
        cands = [c for c in lesion_candidates(prep, settings=s) if not c.dark
                 and np.count_nonzero(c.mask_w & lesion_w.astype(bool)) > 0.5 * np.count_nonzero(c.mask_w)]
        return prep, f, lesion, cands

    completed = set()
    for seed in CALCIFIED_SEEDS:
        prep, f, lesion, cands = bright_on_lesion(seed)
        for c in cands:
            if shadowed_extent(prep, c, shadow_db=s.tumor_contrast_db) is None:
                continue
            completed.add(seed)
            top = cv2.resize(c.mask_w.astype(np.uint8), f.shape[::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
            refined = refine_tumor(prep, c, settings=s)
            outline = _truth_mask(refined.contour_px, f.shape)
            assert _dice(outline, lesion) > _dice(top, lesion) + 0.1, seed
            # what was seen is kept apart from what is assumed, and lies within the completed outline
            assert refined.measured_contour_px is not None, seed
            measured = _truth_mask(refined.measured_contour_px, f.shape)
            assert np.count_nonzero(measured & ~outline) <= 0.02 * np.count_nonzero(measured), seed
            assert np.count_nonzero(outline) > 1.1 * np.count_nonzero(measured), seed
            assert _dice(outline, lesion) > _dice(measured, lesion), seed
    # each calcium focus shadows only its own few columns: a lesion with a few foci shadows a fifth
    # of its width or more, which two thirds of the cases show (a third when 40 % was asked)
    assert len(completed) >= 2 * len(CALCIFIED_SEEDS) // 3, completed
    for seed in HYPERECHOIC_SEEDS[:3]:
        prep, _, _, cands = bright_on_lesion(seed)
        assert all(shadowed_extent(prep, c, shadow_db=s.tumor_contrast_db) is None for c in cands), seed


def test_calcium_shadow_needs_a_bright_echo_above_and_darkness_down_to_the_bottom():
    """A dark piece of a band that runs from below a bright (calcium) echo down to the bottom of
    the image is a shadow; the same band with no echo above it, or a hypoechoic lesion with a
    bright echo above it and normal tissue below, is not."""
    from iousguide.analysis.imaging import prepare
    from iousguide.analysis.tumor import calcium_shadow

    s = TrackingSettings()
    calcium = Disc((40.0, 20.0), 3.0, echo=4.0, radius_y_mm=1.0)
    band = Disc((40.0, 51.5), 2.5, echo=0.3, radius_y_mm=30.0)  # from 21.5 mm to past the bottom (60 mm)
    lesion = Disc((40.0, 26.0), 4.0, echo=0.3)
    cases = {"shadow": ([band, calcium], True), "band alone": ([band], False),
             "lesion under an echo": ([lesion, calcium], False)}
    for name, (discs, expected) in cases.items():
        scene = Scene(shape_px=(600, 800), spacing_mm=SPACING_MM, discs=discs)
        prep = prepare(render(scene, seed=7), spacing_mm=(SPACING_MM, SPACING_MM), settings=s)
        sigma = s.tumor_smoothing_mm / prep.work_px_mm
        smooth = cv2.GaussianBlur(prep.smooth, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
        rel = smooth - prep.tissue_row[:, None].astype(np.float32)
        # the dark piece the lesion map would cut: the band's (or lesion's) part 21.5-30 mm deep
        ys, xs = np.mgrid[0:prep.work_shape[0], 0:prep.work_shape[1]]
        fx, fy = prep.to_frame(xs.astype(float), ys.astype(float))
        dark = discs[0]
        ry = dark.radius_y_mm or dark.radius_mm
        inside = ((fx * SPACING_MM - dark.center_mm[0]) / dark.radius_mm) ** 2 + \
                 ((fy * SPACING_MM - dark.center_mm[1]) / ry) ** 2 <= 1
        piece = inside & (fy * SPACING_MM <= 30.0)
        yy, xx = np.nonzero(piece)
        bbox = (int(xx.min()), int(yy.min()), int(np.ptp(xx)) + 1, int(np.ptp(yy)) + 1)
        sub = piece[bbox[1]:bbox[1] + bbox[3], bbox[0]:bbox[0] + bbox[2]]
        assert calcium_shadow(prep, rel, sub, bbox, contrast_db=s.tumor_contrast_db) is expected, name


def test_a_bright_patch_at_the_bottom_of_the_image_is_not_proposed_but_the_same_higher_up_is():
    """At the bottom of the field of view the row's tissue level rests on few rows, the noise
    floor and the last TGC rows: a bright lesion-sized patch reaching within
    shadow_bottom_margin_mm (3 mm) of it is not proposed automatically; the same patch 10 mm
    higher is."""
    from iousguide.analysis.imaging import prepare
    from iousguide.analysis.tumor import lesion_candidates, plausible_auto

    s = TrackingSettings()
    for centre_y_mm, proposed in ((54.5, False), (44.5, True)):  # bottom edge 2 mm / 12 mm above 60 mm
        bright = Disc((40.0, centre_y_mm), 3.5, echo=2.0)
        scene = Scene(shape_px=(600, 800), spacing_mm=SPACING_MM, discs=[bright])
        prep = prepare(render(scene, seed=11), spacing_mm=(SPACING_MM, SPACING_MM), settings=s)
        cands = [c for c in lesion_candidates(prep, settings=s) if not c.dark]
        x, y = prep.to_work(40.0 / SPACING_MM, centre_y_mm / SPACING_MM)
        on = [c for c in cands if c.mask_w[int(round(y)), int(round(x))]]
        assert on, centre_y_mm  # found either way (a click still seeds it)
        assert any(plausible_auto(c, settings=s) for c in on) is proposed, centre_y_mm


def test_an_outline_completed_into_a_shadow_is_reported_as_assumed():
    """A surgeon must know when part of the tumour outline was not seen: frames whose outline was
    completed into a calcium shadow say so (``assumed_edge``, the message), a vessel measured
    from the assumed part is flagged ``tumor_edge_assumed``, and an outline that was all seen
    (hyperechoic lesions) never is."""
    from iousguide.phantom import generate_case

    assumed_frames = 0
    for seed in CALCIFIED_SEEDS:
        frames, _ = generate_case(seed, difficulty="medium", n_frames=4)
        tracker = Tracker(TrackingSettings())
        for f in frames:
            r = tracker.process(f)
            if r.tumor is None or not r.tumor.assumed_edge:
                assert not any("tumor_edge_assumed" in v.flags for v in r.vessels)
                continue
            assumed_frames += 1
            assert r.to_json()["tumor"]["assumed_edge"] is True
            assert "outline assumed" in r.message
    assert assumed_frames >= 2, assumed_frames
    for seed in HYPERECHOIC_SEEDS[:3]:
        frames, _ = generate_case(seed, difficulty="medium", n_frames=3)
        tracker = Tracker(TrackingSettings())
        for f in frames:
            r = tracker.process(f)
            assert r.tumor is None or not r.tumor.assumed_edge, seed
            assert not any("tumor_edge_assumed" in v.flags for v in r.vessels), seed


def test_a_point_off_the_measured_outline_is_told_apart():
    """_off_measured: a point on the measured outline (or within 0.5 mm of it) is measured; a point
    on the assumed completion, further away, is not (anisotropic pixels counted in mm)."""
    from iousguide.analysis.tracker import _off_measured

    square = np.array([[0, 0], [100, 0], [100, 100], [0, 100]], dtype=float)  # frame px
    unit = (0.1, 0.2)
    assert not _off_measured((50, 0), square, unit)
    assert not _off_measured((50, 102), square, unit)      # 0.4 mm below the bottom edge
    assert _off_measured((50, 103), square, unit)          # 0.6 mm below
    assert not _off_measured((104, 50), square, unit)      # 0.4 mm right of the right edge
    assert _off_measured((106, 50), square, unit)          # 0.6 mm right


# --- proposal and follow rules on generated phantom cases (development seeds 8500-8599) ----------

def _on_lesion(r, tt, shape) -> float:
    """Dice of the reported outline with the true primary lesion (0 when either is missing)."""
    if r.tumor is None or tt is None:
        return 0.0
    return _dice(_truth_mask(r.tumor.contour_px, shape), _truth_mask(tt["contour_px"], shape))


def test_a_clear_dark_lesion_is_reported_on_its_first_frame():
    """A solid dark lesion with 1.25 x the map's contrast at its edge, and nothing else as clear in
    the image, is reported on the first frame it is seen (before: 1.5 x, which most hypoechoic
    metastases at medium difficulty, ~4-4.5 dB, missed, so every clip lost its first frame). The
    first six hypoechoic development cases at or above 8500 (not chosen by result), one frame each:
    at least two are reported at once (none before), and every report lies on the lesion."""
    from iousguide.phantom import generate_case

    reported = 0
    for seed in (8501, 8506, 8509, 8514, 8517, 8528):
        frames, truth = generate_case(seed, difficulty="medium", n_frames=1)
        r = Tracker(TrackingSettings()).process(frames[0])
        if r.tumor is not None:
            reported += 1
            assert _on_lesion(r, _primary(truth.frames[0]), frames[0].shape) >= 0.8, seed
    assert reported >= 2, reported


def test_a_closed_halo_ring_is_proposed_where_a_lumen_was_remembered():
    """Development seed 8577 (a target lesion): its first section is small and its dark core alone
    shows, with enhancement below, so it looks like a grey lumen and the place is remembered as
    one. On the next frames the halo closes around an echoic centre - a lumen has none - so the
    memory is dropped and the lesion proposed (before, it stayed unproposed for ten frames)."""
    from iousguide.phantom import generate_case

    frames, truth = generate_case(8577, difficulty="medium", n_frames=10)
    tracker = Tracker(TrackingSettings())
    dices = [_on_lesion(tracker.process(f), _primary(tf), f.shape) for f, tf in zip(frames, truth.frames)]
    assert sum(d >= 0.8 for d in dices[3:8]) >= 3, [round(d, 2) for d in dices]


def test_a_lost_automatic_follow_yields_to_a_clearly_better_lesion():
    """Development seed 8505: a faint bright blob is proposed before the target lesion comes into
    view and is then lost. A lost automatic follow is not waited for where a proposal with 1.5 x
    its score persists elsewhere: the target lesion is followed by the end of the clip (before,
    the tracker reacquired another faint blob near the lost one and never took the lesion)."""
    from iousguide.phantom import generate_case

    frames, truth = generate_case(8505, difficulty="medium", n_frames=10)
    tracker = Tracker(TrackingSettings())
    dices = [_on_lesion(tracker.process(f), _primary(tf), f.shape) for f, tf in zip(frames, truth.frames)]
    assert min(dices[-3:]) >= 0.8, [round(d, 2) for d in dices]


def test_a_long_bright_band_is_not_proposed_and_a_bright_disc_is():
    """A specular interface (liver capsule, fascia, diaphragm, a vessel wall) is a long bright band,
    a hyperechoic metastasis a compact blob. A bright band 4.5 times longer than wide is not
    proposed without a click (before, it was: on the real liver sweep such bands were every
    bright proposal); a bright disc of about the same area is, and a click still seeds the band."""
    band = Disc((35.0, 25.0), 9.0, echo=2.5, radius_y_mm=2.0)
    disc = Disc((35.0, 25.0), 4.2, echo=2.5)
    for lesion, proposed in ((band, False), (disc, True)):
        scene = Scene(shape_px=(500, 700), spacing_mm=SPACING_MM, discs=[lesion])
        tracker = Tracker(TrackingSettings())
        results = [tracker.process(f) for f in frames_of(scene, 3, 500)]
        assert any(r.tumor is not None for r in results) == proposed, (lesion, [r.status for r in results])
    scene = Scene(shape_px=(500, 700), spacing_mm=SPACING_MM, discs=[band])
    tracker = Tracker(TrackingSettings(tumor_seed_px=(350.0, 250.0)))
    r = tracker.process(frames_of(scene, 1, 510)[0])
    assert r.tumor is not None and r.tumor.state == "seeded"


def test_lesion_candidates_given_the_frames_lumens_equal_those_computing_them():
    """The tracker computes the frame's anechoic mask once and hands it to lesion_candidates (and
    uses it again in its follow): the candidates are the same as when lesion_candidates computes
    it, on a frame with a lumen and one without, and the mask handed in is left unchanged."""
    from iousguide.analysis.imaging import prepare
    from iousguide.analysis.tumor import ANECHOIC_MIN_SOLIDITY, anechoic_mask, lesion_candidates

    settings = TrackingSettings()
    lumen = Disc((30.0, 20.0), 3.0, echo=0.0)
    lesion = Disc((20.0, 25.0), 5.0, echo=10 ** (-8 / 20))
    for seed, discs in ((600, [lumen, lesion]), (601, [lesion])):
        frame = frames_of(Scene(shape_px=(400, 600), spacing_mm=SPACING_MM, discs=discs), 1, seed)[0]
        prep = prepare(np.ascontiguousarray(frame.gray), spacing_mm=frame.spacing_mm, settings=settings)
        lumens = anechoic_mask(prep, settings=settings, min_solidity=ANECHOIC_MIN_SOLIDITY)
        kept = lumens.copy()
        given = lesion_candidates(prep, settings=settings, lumen_mask_w=lumens)
        computed = lesion_candidates(prep, settings=settings)
        assert np.array_equal(lumens, kept)
        assert given and len(given) == len(computed)
        for a, b in zip(given, computed):
            assert np.array_equal(a.mask_w, b.mask_w) and a.dark == b.dark and a.contrast_db == b.contrast_db

def _gap_distances(gap_mm: float, seed0: int) -> list[float]:
    """Reported distances (mm) of a target lesion (isoechoic centre, 2 mm dark halo, as the
    hepatic_vein_abutting phantom) from an anechoic 9 mm vein beside it (lateral: the PSF's
    wide direction) with a tissue gap of ``gap_mm``, speckle new every frame."""
    lesion = [Disc((30.0, 25.0), 7.0, echo=0.22), Disc((30.0, 25.0), 5.0, echo=1.0)]
    vessel = Disc((30.0 - 7.0 - gap_mm - 4.5, 25.0), 4.5, echo=0.0)
    scene = Scene(shape_px=(500, 600), spacing_mm=SPACING_MM, discs=[*lesion, vessel])
    tracker = Tracker(TrackingSettings(tumor_seed_px=(300.0, 250.0), smoothing_alpha=1.0, smoothing_beta=0.0))
    distances = []
    for f in frames_of(scene, 6, seed0):
        r = tracker.process(f)
        assert r.tumor is not None, r.status
        near = [v for v in r.vessels if np.hypot(*(np.asarray(v.centroid_px) * SPACING_MM - vessel.center_mm)) < 1.5]
        assert len(near) == 1
        distances.append(near[0].distance_mm)
    return distances


def test_a_tissue_gap_to_an_abutting_vein_is_measured_and_contact_stays_contact():
    """A 1.2 mm tissue gap between a halo lesion and a vein (twice the lateral resolution) is
    measured, not closed into contact: the vein's excluded lumen and its 0.5 mm skirt filled
    with tissue power are not lesion. Each frame's distance lies within the boundary accuracy
    (0.4 mm per edge, two edges) of the gap; a lesion touching the vein is still reported at
    (nearly) zero distance (within one edge's accuracy)."""
    gap = _gap_distances(1.2, 700)
    assert all(abs(d - 1.2) <= 0.6 for d in gap), gap
    contact = _gap_distances(0.0, 800)
    assert all(d <= 0.4 for d in contact), contact


def test_followed_lesion_is_kept_as_its_section_shrinks(monkeypatch):
    """A hypoechoic lesion seeded at 6 mm, then its section shrinking as the image plane leaves it
    (6 -> 2.2 mm over 9 frames, area change per frame within tumor_max_area_change): followed
    down to the sections under tumor_min_diameter_mm (4 mm; a proposal still needs that), with
    its outline on the disc (Dice >= 0.7 for these small sections: 0.4 mm of edge error on a 3 mm
    disc alone gives ~0.75). With the follow asking for the proposal's size it is lost there."""
    from iousguide.analysis import tracker as tracker_mod

    radii_mm = [3.0, 2.8, 2.5, 2.2, 1.95, 1.7, 1.5, 1.3, 1.1]
    discs = [Disc((30.0, 25.0), r, echo=0.3) for r in radii_mm]
    frames = [Frame(pixels=render(Scene(shape_px=(500, 700), spacing_mm=SPACING_MM, discs=[d]), seed=900 + i),
                    index=i, t_mono_ns=i, t_source_s=i / 15, spacing_mm=(SPACING_MM, SPACING_MM))
              for i, d in enumerate(discs)]
    small = [i for i, d in enumerate(discs) if 2.5 <= 2 * d.radius_mm < TrackingSettings().tumor_min_diameter_mm]
    assert len(small) == 4  # 3.9, 3.4, 3.0 and 2.6 mm

    def run():
        tracker = Tracker(TrackingSettings(tumor_seed_px=(300.0, 250.0)))
        return [tracker.process(f) for f in frames]

    results = run()
    for i in small:
        assert results[i].tumor is not None, (2 * discs[i].radius_mm, results[i].status)
        assert disc_dice(results[i].tumor.contour_px, discs[i], (500, 700), SPACING_MM) >= 0.7
    # (the follow measures a blurred small section a little larger than it is: with the proposal's
    # size it still held the 3.9 and 3.4 mm sections, and lost the smaller ones)
    monkeypatch.setattr(tracker_mod, "FOLLOW_MIN_DIAMETER_FRACTION", 1.0)
    as_proposal = run()
    assert any(as_proposal[i].tumor is None for i in small)


@hypothesis_settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 12), nan_rate=st.sampled_from([0.0, 0.02]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_column_medians_equal_numpy_median_per_segment(seed, k, nan_rate, dtype):
    # calcium_shadow's one-sort column medians must give exactly what np.median gave per column
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 6, (40, 15)).astype(dtype)
    values[rng.random(values.shape) < nan_rate] = np.nan
    before = values.copy()
    cols = rng.integers(0, 15, k)
    starts = rng.integers(0, 39, k)
    stops = np.array([rng.integers(s + 1, 41) for s in starts])
    got = _column_medians(values, cols, starts, stops)
    want = np.array([np.median(values[a:b, c]) for c, a, b in zip(cols, starts, stops)], dtype=dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)  # NaN where a segment holds NaN, bit-equal elsewhere
    np.testing.assert_array_equal(values, before)
