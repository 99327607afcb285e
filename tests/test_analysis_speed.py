"""The speed-ups of the refinement and the frame preparation must not change results.

Each fast helper is compared with the plain OpenCV / numpy formulation it replaces, on random
masks of many shapes (blobs, thin structures, masks touching the image edge, empty and full
masks); and refine_region is checked against the analytic truth of a synthetic lumen.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from iousguide.analysis import refine as refine_mod
from iousguide.analysis.imaging import components_with_stats, fill_holes, prepare
from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.synthetic import Disc, Scene, render
from iousguide.analysis.vessels import lumen_candidates

SPACING = 0.1


def _masks(n: int, seed: int = 0):
    """Random uint8 {0, 1} masks: smoothed noise cut at ~half (blobs and holes), of sizes from
    a few pixels to a few hundred, plus the edge cases."""
    rng = np.random.default_rng(seed)
    yield np.zeros((7, 9), np.uint8)
    yield np.ones((7, 9), np.uint8)
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(3, 260, 2))
        noise = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), float(rng.uniform(0.6, 5.0)))
        yield (noise > np.quantile(noise, rng.uniform(0.3, 0.9))).astype(np.uint8)


def test_components_with_stats_equals_opencv_default():
    for mask in _masks(120):
        ref = cv2.connectedComponentsWithStats(mask, connectivity=8)
        got = components_with_stats(mask)
        assert got[0] == ref[0]
        np.testing.assert_array_equal(got[1], ref[1])
        np.testing.assert_array_equal(got[2], ref[2])
        np.testing.assert_allclose(got[3], ref[3], rtol=0, atol=1e-12)


def test_windowed_distance_transforms_equal_whole_image():
    """Equal up to the last bit of float32: OpenCV's own result differs by an ulp between image
    sizes (its float path), never by a chamfer step (0.955 px)."""
    for mask in _masks(120, seed=1):
        ref_in = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
        np.testing.assert_allclose(refine_mod._dist_inside(mask), ref_in, rtol=1e-6, atol=0)
        if not mask.any():
            assert np.isinf(refine_mod._dist_to(mask, 5.0)).all()
            continue
        ref_out = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 3)
        for limit in (1.7, 4.0, 11.3):
            got = refine_mod._dist_to(mask, limit)
            near = ref_out <= limit
            np.testing.assert_allclose(got[near], ref_out[near], rtol=1e-6, atol=0)
            assert (got[~near] > limit * (1 - 1e-6)).all()  # beyond the limit: only known to be beyond it


def test_select_and_fill_equal_plain_formulation():
    rng = np.random.default_rng(2)
    for mask in _masks(80, seed=3):
        if not mask.any():
            continue
        seed_mask = np.zeros(mask.shape, bool)
        ys, xs = np.nonzero(mask)
        pick = rng.integers(0, len(ys), 3)
        seed_mask[ys[pick], xs[pick]] = True
        # plain: label everything with statistics, take the component overlapping the seed most
        n, labels, _, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        overlap = np.bincount(labels[seed_mask], minlength=n)
        overlap[0] = 0
        ref = (labels == int(np.argmax(overlap))).astype(np.uint8)
        got = refine_mod._select(mask.astype(bool), np.flatnonzero(seed_mask), None, False)
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(refine_mod._fill(got, np.flatnonzero(seed_mask), None), fill_holes(ref))


def test_sobel_and_shift_match_reference():
    rng = np.random.default_rng(4)
    img = rng.random((41, 57)).astype(np.float32)
    ys, xs = np.mgrid[0:41, 0:57]
    gx, gy = refine_mod._sobel_at(img, xs.ravel(), ys.ravel())
    np.testing.assert_allclose(gx, (cv2.Sobel(img, cv2.CV_64F, 1, 0, ksize=3) / 8.0).ravel(), atol=1e-12)
    np.testing.assert_allclose(gy, (cv2.Sobel(img, cv2.CV_64F, 0, 1, ksize=3) / 8.0).ravel(), atol=1e-12)
    # a square's pixel-centre outline moved half a pixel outward is its pixel border
    sq = np.zeros((20, 20), np.uint8)
    sq[5:15, 4:12] = 1
    contour = cv2.findContours(sq, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0][0].reshape(-1, 2).astype(float)
    shifted = refine_mod._shift_outward(contour, 0.5)
    area = abs(cv2.contourArea(shifted.astype(np.float32)))
    assert area == pytest.approx(10 * 8, rel=0.03)


def test_refined_lumen_diameter_and_centre():
    """A 5 mm anechoic lumen in speckle: refined at full resolution, its area-equivalent
    diameter within 0.4 mm and its centre within 0.2 mm of the truth (six realisations)."""
    s = TrackingSettings()
    for seed in range(6):
        lumen = Disc((30.0, 22.0), 2.5, echo=0.0)
        img = render(Scene(shape_px=(450, 600), spacing_mm=SPACING, discs=[lumen]), seed=seed)
        prep = prepare(img, spacing_mm=(SPACING, SPACING), settings=s)
        labels, cands = lumen_candidates(prep, settings=s)
        label, bbox, _ = max(cands, key=lambda c: c[2])
        core = labels == label
        before = core.copy()
        ref = refine_mod.refine_region(prep, core, bbox, dark=True, smoothing_mm=s.edge_smoothing_mm,
                                       upsample=s.upsample_for(SPACING), level_fraction=s.edge_level_fraction,
                                       margin_mm=2.5, sectors=12, passes=2)
        assert np.array_equal(core, before)  # input not modified
        assert ref is not None
        pts = ref.contour_px * SPACING
        area = abs(cv2.contourArea(pts.astype(np.float32)))
        assert abs(2 * np.sqrt(area / np.pi) - 5.0) <= 0.4
        m = cv2.moments(pts.astype(np.float32))
        assert np.hypot(m["m10"] / m["m00"] - 30.0, m["m01"] / m["m00"] - 22.0) <= 0.2


@pytest.mark.parametrize("spacing_mm", [0.08, 0.12, 0.15, 0.17, 0.2])
def test_prepare_reduction_equals_separate_resizes(spacing_mm):
    """prepare reduces grey and amplitude in one two-channel INTER_AREA pass where the scale is
    fractional; the working-grid grey must equal OpenCV's own uint8 reduction (whole scales,
    e.g. 0.15 -> 0.3 mm, take OpenCV's integer path, which rounds ties differently)."""
    s = TrackingSettings()
    img = render(Scene(shape_px=(400, 600), spacing_mm=spacing_mm,
                       discs=[Disc((12.0, 10.0), 2.0, echo=0.0), Disc((25.0, 14.0), 4.0, echo=2.0)]), seed=5)
    before = img.copy()
    prep = prepare(img, spacing_mm=(spacing_mm, spacing_mm), settings=s)
    assert np.array_equal(img, before)  # input not modified
    h, w = prep.smooth.shape
    sigma = s.speckle_smoothing_mm / prep.work_px_mm
    if (w, h) != (img.shape[1], img.shape[0]):
        small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        amp = cv2.LUT(img, _lut(s))
        ref_amp = cv2.resize(amp, (w, h), interpolation=cv2.INTER_AREA)
        if img.shape[1] % w or img.shape[0] % h:  # fractional scale: the two-channel pass is used
            both = cv2.resize(cv2.merge([img.astype(np.float32), amp]), (w, h), interpolation=cv2.INTER_AREA)
            np.testing.assert_array_equal(both[:, :, 1], ref_amp)
    else:
        small = img
    ref = cv2.GaussianBlur(small.astype(np.float32) * np.float32(s.display_dynamic_range_db / 255.0), (0, 0),
                           sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    np.testing.assert_array_equal(prep.smooth, ref)


def _lut(settings):
    from iousguide.analysis.imaging import amplitude_lut

    return amplitude_lut(dynamic_range_db=settings.display_dynamic_range_db)


def test_tissue_level_from_one_sort_equals_row_medians():
    """prepare takes the tissue level per row from the sorted field of view (the tissue is the
    top of each sorted row); it must equal the median over the tissue mask computed directly."""
    from iousguide.analysis.imaging import row_median, smooth_profile

    s = TrackingSettings()
    scene = Scene(shape_px=(420, 560), spacing_mm=0.12,
                  discs=[Disc((20.0, 15.0), 3.0, echo=0.0), Disc((40.0, 30.0), 9.0, echo=0.0, radius_y_mm=2.0),
                         Disc((45.0, 12.0), 5.0, echo=0.3)])
    for seed in range(3):
        prep = prepare(render(scene, seed=seed), spacing_mm=(0.12, 0.12), settings=s)
        sigma = 3.0 / prep.work_px_mm
        upper = smooth_profile(row_median(prep.smooth, prep.valid, q=0.9), sigma_px=sigma)
        dark = prep.smooth < (upper[:, None] - 3.0 - s.lumen_contrast_db).astype(np.float32)
        assert dark[prep.valid].any()  # the lumens make dark rows: the split is exercised
        ref = smooth_profile(row_median(prep.smooth, prep.valid & ~dark), sigma_px=sigma)
        np.testing.assert_array_equal(prep.tissue_row, ref)


def test_median_equals_numpy():
    rng = np.random.default_rng(6)
    for n in (1, 2, 3, 12, 13, 500, 1001):
        for dtype in (np.float32, np.float64):
            v = (rng.random(n) * 1e-3).astype(dtype)
            got, ref = refine_mod._median(v), np.median(v)
            assert got == ref and np.asarray(got).dtype == np.asarray(ref).dtype


def test_row_median_equals_numpy():
    """place_edge's per-row tissue median: np.median(axis=1)'s values and dtype (odd and even
    widths, ties, NaN rows)."""
    from iousguide.analysis.tumor_boundary import _row_median

    rng = np.random.default_rng(7)
    for _ in range(300):
        r, c = (int(v) for v in rng.integers(1, 40, 2))
        a = rng.normal(size=(r, c)) * 10.0 ** rng.uniform(-6, 6)
        if rng.random() < 0.3:
            a = np.round(a, 1)
        if rng.random() < 0.2:
            a[rng.integers(r), rng.integers(c)] = np.nan
        got, ref = _row_median(a), np.median(a, axis=1)
        assert got.dtype == ref.dtype
        np.testing.assert_array_equal(got, ref)


def test_place_edge_lumen_contact_equals_whole_roi_distance(monkeypatch):
    """place_edge decides which outline points touch an abutting lumen from distances computed
    only up to the compared one; the outline must equal the one from the ROI's whole distance
    transform, on a hypoechoic lesion abutting a lumen (a distance half a pixel short changes
    the outline here)."""
    from iousguide.analysis import tumor_boundary as tb

    s = TrackingSettings()
    spacing = 0.12
    lesion_c, lesion_r, lumen_r = (30.0, 25.0), 6.0, 3.0
    lumen_c = (lesion_c[0] + lesion_r + lumen_r + 0.2, lesion_c[1])
    scene = Scene(shape_px=(420, 560), spacing_mm=spacing,
                  discs=[Disc(lesion_c, lesion_r, echo=0.35), Disc(lumen_c, lumen_r, echo=0.0)])
    rows, cols = scene.shape_px
    yy, xx = np.mgrid[0:rows, 0:cols]
    lumen = np.hypot(xx * spacing - lumen_c[0], yy * spacing - lumen_c[1]) <= lumen_r
    ang = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    first_r = lesion_r + 0.3  # a first outline a little outside the lesion, near the lumen
    contour = np.stack([(lesion_c[0] + first_r * np.cos(ang)) / spacing,
                        (lesion_c[1] + first_r * np.sin(ang)) / spacing], axis=1)
    whole = lambda mask, limit_px: cv2.distanceTransform(1 - mask, cv2.DIST_L2, 3)  # noqa: E731
    for seed in range(3):
        prep = prepare(render(scene, seed=seed), spacing_mm=(spacing, spacing), settings=s)
        kw = dict(dark=True, exclude_frame=lumen, exclude_power=float(np.median(prep.tissue_power_row)))
        got = tb.place_edge(prep, contour, **kw)
        with monkeypatch.context() as m:
            m.setattr(tb, "_dist_to", whole)
            ref = tb.place_edge(prep, contour, **kw)
            m.setattr(tb, "_dist_to", lambda mask, limit_px: np.full(mask.shape, np.inf, np.float32))
            no_contact = tb.place_edge(prep, contour, **kw)
        np.testing.assert_array_equal(got, ref)
        assert not np.array_equal(got, no_contact)  # the contact rule is exercised here


def test_centre_equals_whole_grid_moments():
    """refine._centre takes the moments of the mask's bounding box and shifts them back: the
    same centroid as the whole grid's binary-image moments, to the last bit."""
    for mask in _masks(150, seed=8):
        if not mask.any():
            continue
        m = cv2.moments(mask, binaryImage=True)
        assert refine_mod._centre(mask) == (m["m10"] / m["m00"], m["m01"] / m["m00"])


def test_percentile_linear_equals_numpy():
    from iousguide.analysis.vessels import percentile_linear

    rng = np.random.default_rng(9)
    for i in range(3000):
        v = rng.normal(size=int(rng.integers(1, 300))) * 10.0 ** rng.uniform(-3, 3)
        if i % 3 == 0:
            v = np.round(v, 1)  # ties
        for q in (75.0, 50.0, 90.0, 10.0, 0.0, 100.0):
            got, ref = percentile_linear(v, q), np.percentile(v, q)
            assert got == ref and type(got) is type(ref)


def test_lumen_on_work_grid_equals_whole_grid_fill():
    """The lumen outline is filled in its bounding box only; the same mask as filling the whole
    working grid, also for outlines leaving the image."""
    from types import SimpleNamespace

    from iousguide.analysis.vessels import _lumen_on_work_grid

    rng = np.random.default_rng(10)
    scale = 0.4
    prep = SimpleNamespace(work_shape=(120, 160),
                           to_work=lambda x, y: ((np.asarray(x) + 0.5) * scale - 0.5, (np.asarray(y) + 0.5) * scale - 0.5))
    for i in range(600):
        n = int(rng.integers(5, 400))
        centre = rng.uniform(-30, 430), rng.uniform(-30, 330)
        theta = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(1, 80) * (rng.uniform(0.5, 1.5, n) if i % 2 else 1.0)
        contour = np.stack([centre[0] + radius * np.cos(theta), centre[1] + radius * np.sin(theta)], axis=1)
        core = rng.random(prep.work_shape) > 0.995
        xw, yw = prep.to_work(contour[:, 0], contour[:, 1])
        whole = np.zeros(prep.work_shape, np.uint8)
        cv2.fillPoly(whole, [np.round(np.stack([xw, yw], axis=1) * 16).astype(np.int32)], 1, shift=4)
        np.testing.assert_array_equal(_lumen_on_work_grid(prep, contour, core), whole.astype(bool) | core)


def _plain_detect(prep, s):
    """detect_vessels_prepared as it was written before the reuse of verdicts and refinements:
    every component of both levels judged, every lifted core refined (and a partial black-level
    outline replaced by its lifted component's, as there)."""
    from iousguide.analysis import vessels as v

    on_ring: set = set()
    labels, candidates = v.lumen_candidates(prep, settings=s, ring_labels=on_ring)
    found, accepted = [], np.zeros(prep.work_shape, bool)
    for label, bbox, _ in candidates:
        core = labels == label
        det = v._lumen_from_core(prep, core, bbox, s, on_ring=label in on_ring)
        if det is not None and not any(v._same_lumen(det, o) for o in found):
            found.append(det)
            accepted |= core
    black = (prep.smooth < v.black_core_level(prep, settings=s)[:, None]) & prep.valid
    lifted = v.lumen_dark_mask(prep, settings=s)
    if np.count_nonzero(lifted) > np.count_nonzero(black):
        ring_l: set = set()
        labels_l, cands_l = v._dark_components(prep, lifted.astype(np.uint8), settings=s, ring_labels=ring_l)
        taken = np.zeros(prep.work_shape, bool)
        for det in found:
            taken |= det.mask_w
        for label, (x, y, bw, bh), _ in cands_l:
            core = labels_l == label
            sub = core[y:y + bh, x:x + bw]
            if np.any(sub & (taken[y:y + bh, x:x + bw] | accepted[y:y + bh, x:x + bw])):
                if v.LIFTED_REPLACES_PARTIAL and v._replace_partial(found, prep, core, sub, (x, y, bw, bh), s,
                                                                    on_ring=label in ring_l):
                    taken = v.lumens_mask(found, prep.work_shape)
                continue
            det = v._lumen_from_core(prep, core, (x, y, bw, bh), s, on_ring=label in ring_l)
            if det is None or np.any(det.mask_w & taken):
                continue
            if det.limit_diameter_mm < v.LIFTED_MIN_DIAMETER_FACTOR * s.vessel_min_diameter_mm \
                    and not np.any(black[y:y + bh, x:x + bw] & sub):
                continue
            found.append(det)
            taken |= det.mask_w
    return found


def test_detect_vessels_reuse_equals_plain(monkeypatch):
    """The lifted level's mask holds the black level's components again: their verdicts and,
    for the very same cores, their refinements are reused. The lumens must be those of the
    plain formulation (every field), with fewer refinements (the reuse is exercised)."""
    from iousguide.analysis import vessels as v
    from iousguide.phantom import generate_case

    s = TrackingSettings()
    assert v.DISPLAY_FLOOR and not v.GREY_LUMENS
    # (with the cores grown into the bottom margin, no lifted core of this frame is a black one
    # again: the reuse is exercised without; the growth itself is the same in both formulations)
    monkeypatch.setattr(v, "LIFTED_INTO_BOTTOM_MARGIN", False)
    frames, _ = generate_case(4242, difficulty="medium", n_frames=1, probe="convex", width_px=1000,
                              height_px=800, spacing_mm=0.12)
    prep = prepare(np.ascontiguousarray(frames[0].gray), spacing_mm=frames[0].spacing_mm, settings=s)
    calls = []
    refine_core = v._lumen_from_core
    monkeypatch.setattr(v, "_lumen_from_core", lambda *a, **k: calls.append(1) or refine_core(*a, **k))
    got = v.detect_vessels_prepared(prep, settings=s)
    n_fast = len(calls)
    ref = _plain_detect(prep, s)
    assert n_fast < len(calls) - n_fast  # cores refined once, not twice
    assert len(got) == len(ref) >= 2

    def fields(d):
        r = d.refined
        return (d.contour_px.tobytes(), d.centroid_px, d.diameter_mm, d.kind, d.long_axis, d.edge_sigma_mm,
                d.mask_w.tobytes(), d.sheath_ratio, d.limit_diameter_mm, r.mask.tobytes(), r.inside_level,
                r.outside_level, r.hole_fraction)

    assert [fields(d) for d in got] == [fields(d) for d in ref]


def test_pad0_equals_numpy_pad():
    from iousguide.analysis.vessels import _pad0

    for i, mask in enumerate(_masks(60, seed=13)):
        for pad in (0, 1, 4):
            for m in (mask, mask[:, ::2]):  # also a strided view
                got = _pad0(m, pad)
                ref = np.pad(m, pad)
                assert got.dtype == ref.dtype
                np.testing.assert_array_equal(got, ref)


def test_axis_ratios_from_one_spectrum_equal_the_public_functions():
    """_measure_lumen takes both axis ratios from one Fourier series of the outline: the same
    values as ellipse_axis_ratio and ellipse_axis_ratio_debiased, each computing its own."""
    from iousguide.analysis import vessels as v

    rng = np.random.default_rng(14)
    for i in range(300):
        n = int(rng.integers(3, 400))
        theta = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(0.5, 8.0) * (1.0 + 0.1 * rng.normal(size=n))
        pts = np.stack([r * np.cos(theta), rng.uniform(0.1, 1.0) * r * np.sin(theta)], axis=1).astype(np.float32)
        if i % 50 == 0:
            pts[:] = pts[0]  # a degenerate outline (no length)
        spectrum = v._outline_spectrum(pts.astype(np.float64))
        assert v._axis_ratio_of(spectrum) == v.ellipse_axis_ratio(pts)
        for sigma in (0.0, 0.4):
            assert v._debiased_axis_ratio_of(spectrum, smoothing_mm=sigma) == \
                v.ellipse_axis_ratio_debiased(pts, smoothing_mm=sigma)


def test_visible_from_does_not_depend_on_uninitialised_memory(monkeypatch):
    """refine._visible_from's polar samples beyond the mask's window are 0, not what the output
    array's memory held: the same result whatever warpPolar's new array contains."""
    rng = np.random.default_rng(15)
    cases = []
    for mask in _masks(40, seed=16):
        if mask.sum() < 4:
            continue
        ys, xs = np.nonzero(mask)
        k = int(rng.integers(0, len(ys)))
        # centres inside the mask, and beyond its window's edge (rays leave the window and come back)
        for centre in ((float(xs[k]), float(ys[k])), (float(xs.min()) - 3.0, float(ys.mean()))):
            cases.append((mask, centre))
    real = cv2.warpPolar
    results = {}
    for fill in (0, 1, 255):
        def prefilled(src, dsize, center, max_radius, flags, dst=None, fill=fill):
            if dst is None:
                dst = np.full((dsize[1], dsize[0]), fill, src.dtype)
            return real(src, dsize, center, max_radius, flags, dst=dst)
        monkeypatch.setattr(cv2, "warpPolar", prefilled)
        results[fill] = [None if got is None else got.tobytes() for got in
                         (refine_mod._visible_from(m, c, 2.0, np.flatnonzero(m)[:5]) for m, c in cases)]
    assert results[0] == results[1] == results[255]
