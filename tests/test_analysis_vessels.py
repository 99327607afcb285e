"""Vessel lumens: grey (not anechoic) lumens, radial boundaries, and the speed-ups that must not
change results.

Synthetic scenes (iousguide.analysis.synthetic) give an analytic truth. Tolerance as in
test_analysis_tracker: speckle places an edge to within ~0.2 mm, a diameter (two edges)
to within 0.4 mm. In these scenes tissue sits 42 dB above black on the display scale: an
echo of -20.5 dB (amplitude 0.09) is a "grey" lumen, above the anechoic core level
(0.4 x 42 dB) but below the grey-lumen level (0.5 x 42 dB).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from iousguide.analysis import vessels as vessels_mod
from iousguide.analysis.imaging import prepare
from iousguide.analysis.refine import _sobel_at
from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.synthetic import Disc, Scene, render
from iousguide.analysis.vessel_radial import radial_lumen_boundary
from iousguide.analysis.vessels import detect_vessels, lumen_candidates

TOL_MM = 0.4
SPACING = 0.1
GREY_ECHO = 10 ** (-20.5 / 20)


def _near(dets, x_mm, y_mm):
    best = None
    for d in dets:
        dist = np.hypot(d.centroid_px[0] * SPACING - x_mm, d.centroid_px[1] * SPACING - y_mm)
        if dist < 1.0 and (best is None or dist < best[0]):
            best = (dist, d)
    return None if best is None else best[1]


GREY_DISCS = (Disc((20.0, 20.0), 3.0, echo=GREY_ECHO), Disc((50.0, 35.0), 2.0, echo=GREY_ECHO))


def _grey_image(seed):
    return render(Scene(shape_px=(500, 700), spacing_mm=SPACING, discs=list(GREY_DISCS)), seed=seed)


def test_grey_lumens_found_with_their_diameter(monkeypatch):
    """Over six speckle realisations: most grey lumens found, diameters within the physics
    tolerance in the median (single realisations miss one or err by up to ~0.5 mm)."""
    monkeypatch.setattr(vessels_mod, "GREY_LUMENS", True)  # the tier is off by default
    # (the display-floor estimate would take these grey lumens for the floor and find them
    # in the anechoic tier: off here, so that this test exercises the grey tier)
    monkeypatch.setattr(vessels_mod, "DISPLAY_FLOOR", False)
    found, errors = 0, []
    for seed in range(5, 11):
        dets = detect_vessels(_grey_image(seed), spacing_mm=(SPACING, SPACING), settings=TrackingSettings())
        for disc in GREY_DISCS:
            det = _near(dets, *disc.center_mm)
            if det is not None:
                found += 1
                errors.append(abs(det.diameter_mm - 2 * disc.radius_mm))
    assert found >= 10, f"only {found} of 12 grey lumens found"
    assert float(np.median(errors)) <= TOL_MM


def test_grey_lumens_are_not_anechoic_cores(monkeypatch):
    """Without the grey tier (the default) and the display-floor estimate these lumens are
    missed: the test above exercises the grey tier."""
    monkeypatch.setattr(vessels_mod, "GREY_LUMENS", False)
    monkeypatch.setattr(vessels_mod, "DISPLAY_FLOOR", False)
    dets = detect_vessels(_grey_image(5), spacing_mm=(SPACING, SPACING), settings=TrackingSettings())
    assert all(_near(dets, *d.center_mm) is None for d in GREY_DISCS)


def test_hypoechoic_lesion_is_not_a_grey_lumen(monkeypatch):
    """A -8 dB lesion (speckle inside) is far above the grey-lumen level: no vessel in it."""
    monkeypatch.setattr(vessels_mod, "GREY_LUMENS", True)
    lesion = Disc((35.0, 25.0), 6.0, echo=0.4)
    img = render(Scene(shape_px=(500, 700), spacing_mm=SPACING, discs=[lesion]), seed=6)
    dets = detect_vessels(img, spacing_mm=(SPACING, SPACING), settings=TrackingSettings())
    inside = [d for d in dets if np.hypot(d.centroid_px[0] * SPACING - 35.0, d.centroid_px[1] * SPACING - 25.0) < 6.0]
    assert inside == []


@pytest.mark.xfail(strict=True, reason="known weakness: in fully developed speckle the wall level (the "
                   "brightest sustained stretch of each ray) is biased upward by speckle peaks, so the edge "
                   "lands ~0.5 mm outside per side (1.1 mm on this diameter); the phantom's walls are kinder")
def test_radial_boundary_with_uneven_interior():
    """Lower part of the lumen brighter than half-way to tissue in places: the rays still find
    the wall (an iso-level cut from the dark part would stop inside)."""
    outer = Disc((30.0, 25.0), 4.0, echo=0.04)
    brighter = Disc((30.0, 26.8), 2.0, echo=0.16)
    scene = Scene(shape_px=(500, 600), spacing_mm=SPACING, discs=[outer, brighter])
    img = render(scene, seed=7)
    s = TrackingSettings()
    prep = prepare(img, spacing_mm=(SPACING, SPACING), settings=s)
    labels, cands = lumen_candidates(prep, settings=s)
    assert cands
    label = max(cands, key=lambda c: c[2])[0]
    core = labels == label
    before = core.copy()
    refined = radial_lumen_boundary(prep, core, smoothing_mm=s.edge_smoothing_mm)
    assert np.array_equal(core, before)  # input not modified
    assert refined is not None
    pts = refined.contour_px * SPACING
    area = abs(cv2.contourArea(pts.astype(np.float32)))
    assert abs(2 * np.sqrt(area / np.pi) - 2 * outer.radius_mm) <= TOL_MM


def test_sobel_at_points_equals_cv2_sobel():
    rng = np.random.default_rng(3)
    img = rng.random((37, 53)).astype(np.float32)
    ys, xs = np.mgrid[0:37, 0:53]
    xs, ys = xs.ravel(), ys.ravel()  # every pixel, borders included
    gx, gy = _sobel_at(img, xs, ys)
    ref_x = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    ref_y = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    np.testing.assert_allclose(gx, ref_x[ys, xs], atol=1e-6)
    np.testing.assert_allclose(gy, ref_y[ys, xs], atol=1e-6)


def test_sheath_window_equals_whole_grid():
    portal = Disc((30.0, 25.0), 3.0, echo=0.0, sheath_mm=1.0)
    img = render(Scene(shape_px=(500, 600), spacing_mm=SPACING, discs=[portal]), seed=8)
    s = TrackingSettings()
    prep = prepare(img, spacing_mm=(SPACING, SPACING), settings=s)
    labels, cands = lumen_candidates(prep, settings=s)
    label, bbox, _ = max(cands, key=lambda c: c[2])
    comp = labels == label
    whole = vessels_mod._sheath_contrast_db(prep, comp, s)
    window = vessels_mod._sheath_contrast_db(prep, comp, s, bbox)
    assert window == whole
    assert whole >= s.sheath_contrast_db_portal  # and it is a bright sheath


# --- diameters ----------------------------------------------------------------------------------
def test_long_axis_width_is_the_widest_width():
    """A vessel cut along its length is a band that narrows towards its ends (here an ellipse
    24 x 5 mm): its diameter is the widest width (5 mm), not an average along the band."""
    errors = []
    for seed in (41, 42, 43):
        img = render(Scene(shape_px=(500, 700), spacing_mm=SPACING,
                           discs=[Disc((35.0, 25.0), 12.0, echo=0.0, radius_y_mm=2.5)]), seed=seed)
        det = _near(detect_vessels(img, spacing_mm=(SPACING, SPACING)), 35.0, 25.0)
        assert det is not None and det.long_axis
        errors.append(det.diameter_mm - 5.0)
    assert abs(float(np.median(errors))) <= TOL_MM, errors


def test_smoothing_gain_of_a_circle():
    """The contour smoothing shrinks a circle of radius R by exp(-sigma^2 / (2 R^2))."""
    theta = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    circle = np.stack([2.0 * np.cos(theta), 2.0 * np.sin(theta)], axis=1)
    gain = vessels_mod._smoothing_gain(circle, sigma_mm=0.4)
    assert gain == pytest.approx(np.exp(-0.4 ** 2 / (2 * 2.0 ** 2)), rel=1e-3)
    from iousguide.analysis.refine import smooth_contour
    smoothed = smooth_contour(circle, sigma_mm=0.4, unit_mm=(1.0, 1.0))
    assert np.mean(np.hypot(smoothed[:, 0], smoothed[:, 1])) == pytest.approx(2.0 * gain, rel=2e-3)


def _ellipse(a_mm, b_mm, n=600):
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([a_mm * np.cos(theta), b_mm * np.sin(theta)], axis=1)


def test_reported_outline_keeps_an_ellipse_and_drops_raggedness(monkeypatch):
    """The reported outline is smoothed more than the measured one, with the smoothing's
    first-order shrink undone: an exact 3 x 2 mm ellipse stays within 0.05 mm of itself (area
    within 2 %), and speckle-scale raggedness (0.15 mm, ~0.8 mm period) is removed, so its
    minimum distance to a point outside is no longer pulled in by the spikes."""
    monkeypatch.setattr(vessels_mod, "VESSEL_OUTLINE_SMOOTHING_MM", 1.0)
    settings = TrackingSettings()
    ellipse = _ellipse(3.0, 2.0)
    out = vessels_mod._outline(ellipse, (0.0, 0.0), (1.0, 1.0), settings)
    on = np.hypot(out[:, 0] / 3.0, out[:, 1] / 2.0)
    assert np.max(np.abs(on - 1.0)) * 2.0 < 0.05
    assert abs(cv2.contourArea(out.astype(np.float32)) / (np.pi * 3.0 * 2.0) - 1.0) < 0.02
    theta = np.arctan2(ellipse[:, 1] / 2.0, ellipse[:, 0] / 3.0)
    normal = np.stack([np.cos(theta) / 3.0, np.sin(theta) / 2.0], axis=1)
    normal /= np.hypot(normal[:, 0], normal[:, 1])[:, None]
    ragged = ellipse + 0.15 * np.sin(np.cumsum(np.hypot(*np.diff(ellipse, axis=0, append=ellipse[:1]).T))
                                     * 2 * np.pi / 0.8)[:, None] * normal
    smoothed = vessels_mod._outline(ragged, (0.0, 0.0), (1.0, 1.0), settings)
    point = np.array([0.0, -4.0])  # 2 mm above the ellipse's top
    d_ragged = np.min(np.hypot(*(ragged - point).T))
    d_out = np.min(np.hypot(*(smoothed - point).T))
    assert d_ragged < 1.9  # the spikes pull the minimum in
    assert abs(d_out - 2.0) < 0.03


def _noisy_depth_image(seed, *, discs, shape_px=(500, 400), spacing_mm=0.15, floor_start_mm=30.0,
                       floor_gap_db=(18.0, 4.0)):
    """Speckle with receiver noise lifted by a depth gain: the noise is black down to
    ``floor_start_mm`` and then rises to ``floor_gap_db[1]`` dB under tissue at the bottom."""
    rng = np.random.default_rng(seed)
    rows, cols = shape_px
    scene = Scene(shape_px=shape_px, spacing_mm=spacing_mm, discs=list(discs))
    from iousguide.analysis.synthetic import echo_map
    echo = echo_map(scene)
    scat = (rng.standard_normal(shape_px) + 1j * rng.standard_normal(shape_px)).astype(np.complex64)
    sx, sy = 0.6 / 2.355 / spacing_mm, 0.25 / 2.355 / spacing_mm
    re = cv2.GaussianBlur(np.ascontiguousarray((echo * scat).real), (0, 0), sigmaX=sx, sigmaY=sy)
    im = cv2.GaussianBlur(np.ascontiguousarray((echo * scat).imag), (0, 0), sigmaX=sx, sigmaY=sy)
    power = re ** 2 + im ** 2
    power /= np.mean(power[echo == 1])
    depth = np.arange(rows) * spacing_mm
    gap = np.interp(depth, [0.0, floor_start_mm, depth[-1]], [60.0, floor_gap_db[0], floor_gap_db[1]])
    noise = (rng.standard_normal(shape_px) ** 2 + rng.standard_normal(shape_px) ** 2) / 2
    power = power + noise * (10 ** (-gap / 10))[:, None]
    db = 10 * np.log10(power + 1e-12) - 12.0
    return np.clip((db / 60.0 + 1.0) * 255.0, 0, 255).astype(np.uint8)


def test_deep_lumen_at_the_noise_floor_is_found():
    """A deep lumen filled by the depth-gained noise floor (no black core) is found with its
    diameter, by the level relative to the floor estimated from the frame; a shallow lumen too."""
    deep, shallow = Disc((30.0, 64.0), 3.0, echo=0.0), Disc((30.0, 20.0), 2.5, echo=0.0)
    found, errors = 0, []
    for seed in (1, 2, 3):
        img = _noisy_depth_image(seed, discs=[deep, shallow])
        dets = detect_vessels(img, spacing_mm=(0.15, 0.15), settings=TrackingSettings())
        near = [d for d in dets if np.hypot(d.centroid_px[0] * 0.15 - 30.0, d.centroid_px[1] * 0.15 - 64.0) < 1.5]
        assert any(np.hypot(d.centroid_px[0] * 0.15 - 30.0, d.centroid_px[1] * 0.15 - 20.0) < 1.0 for d in dets)
        if near:
            found += 1
            errors.append(abs(near[0].diameter_mm - 6.0))
    assert found >= 2, "the deep lumen at the noise floor was missed"
    assert float(np.median(errors)) <= 0.6


def test_deep_lumen_needs_the_floor_estimate(monkeypatch):
    """With the floor held at black (the former rule) the same deep lumen has no core: the test
    above exercises the floor estimate."""
    monkeypatch.setattr(vessels_mod, "DISPLAY_FLOOR", False)
    img = _noisy_depth_image(1, discs=[Disc((30.0, 64.0), 3.0, echo=0.0), Disc((30.0, 20.0), 2.5, echo=0.0)])
    dets = detect_vessels(img, spacing_mm=(0.15, 0.15), settings=TrackingSettings())
    assert not any(np.hypot(d.centroid_px[0] * 0.15 - 30.0, d.centroid_px[1] * 0.15 - 64.0) < 1.5 for d in dets)


def test_lesion_above_a_lifted_floor_is_no_lumen():
    """A -6 dB speckled lesion at mid depth, in a frame whose floor is lifted deeper down by a
    lumen at the noise floor, yields no lumen inside it."""
    lesion, deep = Disc((30.0, 40.0), 5.0, echo=10 ** (-6 / 20)), Disc((15.0, 66.0), 3.0, echo=0.0)
    for seed in (4, 5):
        img = _noisy_depth_image(seed, discs=[lesion, deep])
        dets = detect_vessels(img, spacing_mm=(0.15, 0.15), settings=TrackingSettings())
        assert not [d for d in dets if np.hypot(d.centroid_px[0] * 0.15 - 30.0, d.centroid_px[1] * 0.15 - 40.0) < 5.0]


# two overlapping lumens (a small vein overlapping a larger one: no wall between them, a waist
# where they meet) and a single lumen
TOUCHING = (Disc((22.0, 22.0), 3.0), Disc((27.0, 22.0), 2.5))
SINGLE = Disc((50.0, 30.0), 3.5)


def _touching_image(seed):
    return render(Scene(shape_px=(500, 700), spacing_mm=SPACING, discs=[*TOUCHING, SINGLE]), seed=seed)


def _pair_found(dets):
    return all(_near(dets, *disc_.center_mm) is not None for disc_ in TOUCHING)


def _split_each(prep, settings):
    dets = vessels_mod.detect_vessels_prepared(prep, settings=settings)
    return [part for det in dets for part in vessels_mod.split_touching_lumen(det, prep, settings=settings)]


def test_touching_lumens_are_split_into_two():
    """split_touching_lumen: two overlapping anechoic lumens are cut into two lumens, each with its
    own centre and diameter, in most speckle realisations (the notches of a speckled edge vary:
    2 of 3 asked); a single round lumen is never split."""
    s = TrackingSettings()
    split = 0
    for seed in (1, 2, 3):
        dets = _split_each(prepare(_touching_image(seed), spacing_mm=(SPACING, SPACING), settings=s), s)
        if _pair_found(dets):
            split += 1
            for disc_ in TOUCHING:
                assert abs(_near(dets, *disc_.center_mm).diameter_mm - 2 * disc_.radius_mm) <= 2 * TOL_MM
        near_single = [d for d in dets if np.hypot(d.centroid_px[0] * SPACING - SINGLE.center_mm[0],
                                                   d.centroid_px[1] * SPACING - SINGLE.center_mm[1]) < 5.0]
        assert len(near_single) == 1 and abs(near_single[0].diameter_mm - 7.0) <= TOL_MM
    assert split >= 2


def test_touching_lumens_are_one_region_to_the_detector():
    """Detection alone reports the overlapping pair as one region (the split is the tracker's,
    steady in time: the tests above and below exercise it)."""
    for seed in (1, 2, 3):
        assert not _pair_found(detect_vessels(_touching_image(seed), spacing_mm=(SPACING, SPACING),
                                              settings=TrackingSettings()))


def test_touching_lumens_tracked_apart_are_kept_apart():
    """Where the previous frame tracked the two lumens apart, split_touching_steady cuts the region
    holding both centroids at once, at the lower notch depth (every speckle seed here), each part
    round and of its own diameter; a single lumen holding two tracked points (two fragments) is not
    cut, and nothing is split at once without the points."""
    s = TrackingSettings()
    single_pts = [((SINGLE.center_mm[0] - 1.0) / SPACING, SINGLE.center_mm[1] / SPACING),
                  ((SINGLE.center_mm[0] + 1.0) / SPACING, SINGLE.center_mm[1] / SPACING)]
    pair_pts = [(d.center_mm[0] / SPACING, d.center_mm[1] / SPACING) for d in TOUCHING]
    for seed in (1, 2, 3, 4):
        prep = prepare(_touching_image(seed), spacing_mm=(SPACING, SPACING), settings=s)
        dets = vessels_mod.detect_vessels_prepared(prep, settings=s)
        assert not _pair_found(dets)
        out, _ = vessels_mod.split_touching_steady(dets, pair_pts + single_pts, [], prep, settings=s)
        assert _pair_found(out), f"seed {seed}"
        for disc_ in TOUCHING:
            assert abs(_near(out, *disc_.center_mm).diameter_mm - 2 * disc_.radius_mm) <= 2 * TOL_MM
        assert len(out) == len(dets) + 1  # only the pair was split, not the single lumen
        assert vessels_mod.split_touching_steady(dets, [], [], prep, settings=s)[0] == dets


def test_touching_split_starts_only_when_seen_twice(monkeypatch):
    """The steady split (split_touching_steady): a pinched pair found in one frame only is
    reported whole (a flickering notch starts no split) and remembered; found again at the same
    place in the next frame, or moved as a whole (by less than the tracking gate), it is split,
    each part with its own diameter; a remembered pair farther than the gate, or of another shape
    (one part 3 mm off), does not count; the single lumen is never cut."""
    monkeypatch.setattr(vessels_mod, "SPLIT_NOTCH_FRACTION_START", 0.25)
    s = TrackingSettings()
    preps = [prepare(_touching_image(seed), spacing_mm=(SPACING, SPACING), settings=s) for seed in (1, 2)]
    dets = [vessels_mod.detect_vessels_prepared(p, settings=s) for p in preps]
    first, pending = vessels_mod.split_touching_steady(dets[0], [], [], preps[0], settings=s)
    assert first == dets[0] and len(pending) == 1
    gate_px = s.track_gate_mm / SPACING
    far = [tuple((x + 1.2 * gate_px, y) for x, y in pair) for pair in pending]
    unconfirmed, _ = vessels_mod.split_touching_steady(dets[1], [], far, preps[1], settings=s)
    assert unconfirmed == dets[1]
    reshaped = [(pair[0], (pair[1][0] + 3.0 / SPACING, pair[1][1])) for pair in pending]
    assert vessels_mod.split_touching_steady(dets[1], [], reshaped, preps[1], settings=s)[0] == dets[1]
    moved = [tuple((x - 0.5 * gate_px, y + 0.3 * gate_px) for x, y in pair) for pair in pending]
    assert _pair_found(vessels_mod.split_touching_steady(dets[1], [], moved, preps[1], settings=s)[0])
    second, pending2 = vessels_mod.split_touching_steady(dets[1], [], pending, preps[1], settings=s)
    assert _pair_found(second) and len(second) == len(dets[1]) + 1 and len(pending2) == 1
    for disc_ in TOUCHING:
        assert abs(_near(second, *disc_.center_mm).diameter_mm - 2 * disc_.radius_mm) <= 2 * TOL_MM


def test_steady_split_keeps_tracked_pairs_apart_and_never_duplicates(monkeypatch):
    """split_touching_steady: a region holding the two lumens tracked in the previous frame is
    split at once (no confirmation needed); a region whose part would lie on another detection
    (two overlapping regions of one lumen) is kept whole even when confirmed."""
    from dataclasses import replace

    monkeypatch.setattr(vessels_mod, "SPLIT_NOTCH_FRACTION_START", 0.25)
    s = TrackingSettings()
    pair_pts = [(d.center_mm[0] / SPACING, d.center_mm[1] / SPACING) for d in TOUCHING]
    prep = prepare(_touching_image(2), spacing_mm=(SPACING, SPACING), settings=s)
    dets = vessels_mod.detect_vessels_prepared(prep, settings=s)
    tracked, _ = vessels_mod.split_touching_steady(dets, pair_pts, [], prep, settings=s)
    assert _pair_found(tracked) and len(tracked) == len(dets) + 1
    _, pending = vessels_mod.split_touching_steady(dets, [], [], prep, settings=s)
    confirmed, _ = vessels_mod.split_touching_steady(dets, [], pending, prep, settings=s)
    assert len(confirmed) == len(dets) + 1
    small = min((d for d in confirmed if d.split_part), key=lambda d: d.diameter_mm)
    other = replace(small, split_part=False)
    kept, _ = vessels_mod.split_touching_steady([*dets, other], [], pending, prep, settings=s)
    assert kept == [*dets, other]


def _under_echo_image(*, enhanced: bool, seed: int) -> np.ndarray:
    """A tall anechoic oval (5 x 12 mm) hanging under a strong echo (a calcification-like disc,
    +20 dB), with plain tissue under it or, ``enhanced``, tissue 6 dB brighter (posterior
    enhancement behind a lumen)."""
    discs = [Disc((30.0, 10.0), 1.5, echo=10.0)]
    if enhanced:
        discs.append(Disc((30.0, 27.0), 2.5, echo=2.0))
    discs.append(Disc((30.0, 18.5), 2.5, radius_y_mm=6.0, echo=0.0))
    return render(Scene(shape_px=(450, 600), spacing_mm=SPACING, discs=discs), seed=seed)


def test_dark_oval_under_an_echo_is_a_lumen_only_with_enhancement_below(monkeypatch):
    """looks_like_shadow: a tall dark region hanging under a strong echo is an acoustic shadow
    when the tissue under it is plain (darker than elsewhere, or as bright), and a lumen when the
    tissue under it is brighter than at its depth elsewhere (posterior enhancement, or a sheath's
    far wall: SHADOW_ENHANCED_BELOW_DB); without that rule the lumen was rejected as a shadow."""
    s = TrackingSettings()
    for seed in (1, 2, 3):
        plain = detect_vessels(_under_echo_image(enhanced=False, seed=seed), spacing_mm=(SPACING, SPACING), settings=s)
        assert _near(plain, 30.0, 18.5) is None, f"seed {seed}: shadow taken for a lumen"
        enhanced_img = _under_echo_image(enhanced=True, seed=seed)
        lumen = _near(detect_vessels(enhanced_img, spacing_mm=(SPACING, SPACING), settings=s), 30.0, 18.5)
        assert lumen is not None, f"seed {seed}: lumen with enhancement below taken for a shadow"
        assert abs(lumen.diameter_mm - 5.0) <= 2 * TOL_MM
    monkeypatch.setattr(vessels_mod, "SHADOW_ENHANCED_BELOW_DB", float("inf"))
    assert _near(detect_vessels(enhanced_img, spacing_mm=(SPACING, SPACING), settings=s), 30.0, 18.5) is None


def _short_shadow_image(*, tail: bool, seed: int) -> np.ndarray:
    """A tall anechoic oval (5 x 9 mm) whose bottom lies 3.5 mm above the bottom of the image,
    with plain tissue under it or, ``tail``, a band 8 dB darker than tissue down to the bottom
    (a shadow whose black-level part stops short of the view's edge)."""
    discs = []
    if tail:
        discs.append(Disc((30.0, 45.0), 2.5, radius_y_mm=5.0, echo=0.4))
    discs.append(Disc((30.0, 37.0), 2.5, radius_y_mm=4.5, echo=0.0))
    return render(Scene(shape_px=(450, 600), spacing_mm=SPACING, discs=discs), seed=seed)


def test_dark_region_stopping_short_of_the_bottom_over_darker_tissue_is_a_shadow(monkeypatch):
    """looks_like_shadow: a tall dark region ending within twice ``shadow_bottom_margin_mm`` of the
    bottom of the view reaches it when the rows under it stay darker than the tissue
    (SHADOW_DARK_GAP_DB; dev seed 8209: a shadow with two lumens in it, read as one 8 mm lumen). The
    same region over plain tissue is a lumen; without the rule the shadow was taken for one."""
    s = TrackingSettings()
    for seed in (1, 2, 3):
        shadow = detect_vessels(_short_shadow_image(tail=True, seed=seed), spacing_mm=(SPACING, SPACING), settings=s)
        assert _near(shadow, 30.0, 37.0) is None, f"seed {seed}: shadow taken for a lumen"
        lumen = _near(detect_vessels(_short_shadow_image(tail=False, seed=seed), spacing_mm=(SPACING, SPACING),
                                     settings=s), 30.0, 37.0)
        assert lumen is not None, f"seed {seed}: lumen over plain tissue taken for a shadow"
        assert abs(lumen.diameter_mm - 5.0) <= 2 * TOL_MM
    monkeypatch.setattr(vessels_mod, "SHADOW_DARK_GAP_DB", 0.0)
    found = [_near(detect_vessels(_short_shadow_image(tail=True, seed=seed), spacing_mm=(SPACING, SPACING),
                                  settings=s), 30.0, 37.0) for seed in (2, 3)]
    assert all(d is not None for d in found)


# three lumens touching in a row (seed 10620: an 8 mm vein beside two pedicles): one elongated
# region, measured as a band (axis ratio < 1 / LONG_AXIS_ASPECT)
ROW = (Disc((20.0, 22.0), 3.0), Disc((25.5, 22.0), 2.6), Disc((30.5, 22.0), 2.6))


def test_band_holding_tracked_lumens_is_split_on_the_tracked_path(monkeypatch):
    """A region read as a band that holds two or more tracks of the previous frame is touching
    round lumens, not one vessel along its length: split_touching_steady cuts it there, the first
    lumen with its own centre and diameter (3 of 4 speckle seeds here: asked 2), each part holding
    a track; without tracks, or with one, the band stays whole, and off (SPLIT_LONG_AXIS_TRACKED)
    it is never cut."""
    s = TrackingSettings()
    points = [(d.center_mm[0] / SPACING, d.center_mm[1] / SPACING) for d in ROW]
    split = 0
    for seed in (1, 2, 3, 4):
        prep = prepare(render(Scene(shape_px=(500, 700), spacing_mm=SPACING, discs=list(ROW)), seed=seed),
                       spacing_mm=(SPACING, SPACING), settings=s)
        dets = vessels_mod.detect_vessels_prepared(prep, settings=s)
        assert len(dets) == 1 and dets[0].long_axis
        for few in ([], points[:1]):
            assert vessels_mod.split_touching_steady(dets, few, [], prep, settings=s)[0] == dets
        monkeypatch.setattr(vessels_mod, "SPLIT_LONG_AXIS_TRACKED", False)
        assert vessels_mod.split_touching_steady(dets, points, [], prep, settings=s)[0] == dets
        monkeypatch.setattr(vessels_mod, "SPLIT_LONG_AXIS_TRACKED", True)
        out, _ = vessels_mod.split_touching_steady(dets, points, [], prep, settings=s)
        if len(out) == 2:
            split += 1
            first = _near(out, *ROW[0].center_mm)
            assert first is not None and abs(first.diameter_mm - 2 * ROW[0].radius_mm) <= 2 * TOL_MM
            for part in out:
                outline = np.asarray(part.contour_px, np.float32).reshape(-1, 1, 2)
                assert any(cv2.pointPolygonTest(outline, (float(x), float(y)), False) >= 0 for x, y in points)
    assert split >= 2
