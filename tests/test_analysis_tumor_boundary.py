"""Tumour edge placement along normals (iousguide.analysis.tumor_boundary) on synthetic speckle
lesions with an analytic outline: a halo lesion with an isoechoic centre and a hypoechoic lesion."""

import cv2
import numpy as np
import pytest

from iousguide.analysis.imaging import prepare
from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.synthetic import Disc, Scene, render
from iousguide.analysis.tumor_boundary import place_edge

SPACING_MM = 0.1
CENTER_MM = (40.0, 30.0)
RADIUS_MM = 8.0


def circle_px(radius_mm: float, n: int = 200) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([CENTER_MM[0] + radius_mm * np.cos(a), CENTER_MM[1] + radius_mm * np.sin(a)], axis=1) / SPACING_MM


def equivalent_radius_mm(contour_px: np.ndarray) -> float:
    return float(np.sqrt(abs(cv2.contourArea(contour_px.astype(np.float32))) / np.pi)) * SPACING_MM


def prep_of(discs, seed):
    img = render(Scene(spacing_mm=SPACING_MM, discs=discs), seed=seed)
    return prepare(img, spacing_mm=(SPACING_MM, SPACING_MM), settings=TrackingSettings())


HALO = [Disc(CENTER_MM, RADIUS_MM, echo=0.25), Disc(CENTER_MM, RADIUS_MM - 1.5, echo=1.0)]
HYPO = [Disc(CENTER_MM, RADIUS_MM, echo=0.4)]


@pytest.mark.parametrize("discs", [HALO, HYPO], ids=["halo", "hypoechoic"])
@pytest.mark.parametrize("seed", [1, 2])
def test_oversized_outline_moves_to_the_true_edge(discs, seed):
    prep = prep_of(discs, seed)
    first = circle_px(RADIUS_MM + 1.0)
    before = first.copy()
    moved = place_edge(prep, first, dark=True)
    np.testing.assert_array_equal(first, before)  # input not mutated
    assert abs(equivalent_radius_mm(moved) - RADIUS_MM) <= 0.25
    # every point lies near the true circle, not only on average
    r = np.hypot(moved[:, 0] * SPACING_MM - CENTER_MM[0], moved[:, 1] * SPACING_MM - CENTER_MM[1])
    assert np.percentile(np.abs(r - RADIUS_MM), 95) <= 0.5


def test_halo_edge_is_its_outer_edge_not_the_centre():
    # a first outline at the inner edge of the halo moves out by at most max_out_mm (0.2 mm);
    # it never jumps inwards to the isoechoic centre
    prep = prep_of(HALO, 3)
    moved = place_edge(prep, circle_px(RADIUS_MM - 0.1), dark=True)
    assert RADIUS_MM - 0.35 <= equivalent_radius_mm(moved) <= RADIUS_MM + 0.25


def test_no_contrast_leaves_the_outline():
    prep = prep_of([], 4)
    first = circle_px(RADIUS_MM)
    moved = place_edge(prep, first, dark=True)
    assert abs(equivalent_radius_mm(moved) - RADIUS_MM) <= 0.05


def test_occult_thin_halo_lesion_is_found_on_most_of_its_sections():
    """Bundled occult_lesion.igs.mha (carries its own calibration): a 6-7 mm isoechoic lesion
    with a 1 mm halo, visible mid-sweep only. Its section flickers around the minimum tumour
    size and solidity in speckle; the proposal hysteresis must keep it. Requirement: the
    reported tumour overlaps the truth (Dice >= 0.5) on at least 60 % of the frames whose true
    section is at least the minimum tumour diameter, and no tumour is reported where there
    is none."""
    import sys

    from conftest import RECORDINGS
    from iousguide.acquisition import open_source
    from iousguide.analysis.tracker import Tracker
    from iousguide.phantom import read_truth

    sys.path.insert(0, str(RECORDINGS.parent / "tools"))
    from eval_tracking import dice, primary_tumor

    path = RECORDINGS / "occult_lesion.igs.mha"
    if not path.exists():
        pytest.skip(f"bundled recording not available: {path}")
    truth = read_truth(RECORDINGS / "occult_lesion.truth.jsonl.gz")
    settings = TrackingSettings()
    last = max(int(tf["frame"]) for tf in truth.frames if primary_tumor(tf)) + 3
    found = big = false = 0
    with open_source(str(path)) as source:
        tracker = Tracker(settings)
        for frame, tf in zip(source, truth.frames):
            if frame.index > last:
                break
            res = tracker.process(frame)
            tt = primary_tumor(tf)
            if tt is None:
                false += res.tumor is not None
                continue
            if tt["equivalent_diameter_mm"] >= settings.tumor_min_diameter_mm:
                big += 1
                found += res.tumor is not None and dice(tt["contour_px"], res.tumor.contour_px, frame.shape) >= 0.5
    assert big >= 5
    assert found >= 0.6 * big, (found, big)
    assert false == 0


def test_a_halo_outline_with_a_lost_arc_is_completed_unless_a_lumen_fills_the_bay():
    """A C-shaped first outline (a halo arc lost in speckle) starts the edge placement from
    its convex hull, and the hull comes back to the true halo edge; with a vessel lumen in
    the bay the outline is kept."""
    from iousguide.analysis.tumor import _hull_if_bay

    prep = prep_of(HALO, 5)
    a = np.linspace(-0.75 * np.pi, 0.75 * np.pi, 150)  # 270 degrees of the true circle ...
    arc = np.stack([CENTER_MM[0] + RADIUS_MM * np.cos(a), CENTER_MM[1] + RADIUS_MM * np.sin(a)], axis=1)
    chord = np.stack([np.full(20, CENTER_MM[0] + 1.0), np.linspace(arc[-1, 1], arc[0, 1], 20)], axis=1)
    c_shape = np.vstack([arc, chord]) / SPACING_MM  # ... closed by a cut through the centre
    start = _hull_if_bay(c_shape, None)
    moved = place_edge(prep, start, dark=True)
    assert abs(equivalent_radius_mm(moved) - RADIUS_MM) <= 0.4
    assert equivalent_radius_mm(c_shape) < RADIUS_MM - 1.0  # the C alone is far too small
    lumen = np.zeros((600, 800), bool)
    cv2.circle(lumen, (int(CENTER_MM[0] / SPACING_MM) - 30, int(CENTER_MM[1] / SPACING_MM)), 15, 1, -1)
    np.testing.assert_array_equal(_hull_if_bay(c_shape, lumen), c_shape)


@pytest.mark.parametrize("gap_mm", [1.2, 0.0])
@pytest.mark.parametrize("seed", [5, 6])
def test_an_outline_reaching_into_a_resolved_gap_to_a_lumen_moves_back_and_contact_stays(gap_mm, seed):
    # a halo lesion beside an anechoic lumen (lateral: the PSF's wide direction); the first
    # outline is too large and reaches the lumen. With a 1.2 mm tissue gap (twice the lateral
    # resolution) the edge is measured outside the lumen's 0.5 mm skirt and the outline moves
    # back to the lesion; in contact it is placed on the lumen (a gap within the skirt is not
    # resolved by the image: contact is 0 mm)
    lumen = Disc((CENTER_MM[0] - RADIUS_MM - gap_mm - 4.5, CENTER_MM[1]), 4.5, echo=0.0)
    prep = prep_of([*HALO, lumen], seed)
    rows, cols = prep.amplitude.shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    lumen_px = np.hypot(xx * SPACING_MM - lumen.center_mm[0], yy * SPACING_MM - lumen.center_mm[1]) <= 4.5
    a = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    left_mm = CENTER_MM[0] - RADIUS_MM - gap_mm + 0.2  # 0.2 mm from the lumen's edge
    right_mm = CENTER_MM[0] + RADIUS_MM + 0.3
    cx, r_first = 0.5 * (left_mm + right_mm), 0.5 * (right_mm - left_mm)
    first = np.stack([cx + r_first * np.cos(a), CENTER_MM[1] + r_first * np.sin(a)], axis=1) / SPACING_MM
    moved = place_edge(prep, first, dark=True, exclude_frame=lumen_px,
                       exclude_power=float(np.mean(prep.tissue_power_row)))
    to_lumen = np.hypot(moved[:, 0] * SPACING_MM - lumen.center_mm[0], moved[:, 1] * SPACING_MM - lumen.center_mm[1]) - 4.5
    if gap_mm > 0:
        assert abs(to_lumen.min() - gap_mm) <= 0.4, to_lumen.min()
    else:  # reaches the lumen (the first outline stopped 0.2 mm short of it)
        assert to_lumen.min() <= 0.1, to_lumen.min()
    assert abs(equivalent_radius_mm(moved) - RADIUS_MM) <= 0.4


def _lesion_beside_pedicle(gap_mm: float, seed: int, *, sheath_mm: float = 1.2, lumen_mm: float = 4.0):
    """A hypoechoic lesion with a portal-like vessel (anechoic lumen in a bright sheath) to its
    left (lateral: the PSF's wide direction), ``gap_mm`` of tissue between lesion and sheath; the
    vessel paints over the lesion, as a pedicle carves a lesion pressed against it. Returns the
    prepared frame, the lumen's frame pixels and the lumen disc."""
    centre_x = CENTER_MM[0] - RADIUS_MM - gap_mm - sheath_mm - lumen_mm + (0.6 if gap_mm == 0 else 0.0)
    vessel = Disc((centre_x, CENTER_MM[1]), lumen_mm, echo=0.0, sheath_mm=sheath_mm, sheath_echo=3.0)
    prep = prep_of([*HYPO, vessel], seed)
    rows, cols = prep.amplitude.shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    lumen_px = np.hypot(xx * SPACING_MM - vessel.center_mm[0], yy * SPACING_MM - vessel.center_mm[1]) <= lumen_mm
    return prep, lumen_px, vessel


@pytest.mark.parametrize("seed", [7, 8])
def test_a_lesion_pressed_against_a_bright_sheath_reaches_it(seed):
    # the lesion is pressed 0.6 mm into a pedicle (its sheath carves it): its true edge there is
    # the sheath's outer edge, 1.2 mm from the lumen. Cut at half-way to the *tissue* level, the
    # blurred sheath lifts the profile and the edge lies 0.2-0.3 mm (this PSF; ~0.5 mm on the phantom) inside the lesion - the distance
    # to the vessel read long (the unsafe direction); half-way to the wall it lies on the edge
    import iousguide.analysis.tumor_boundary as tb

    prep, lumen_px, vessel = _lesion_beside_pedicle(0.0, seed)
    first = circle_px(RADIUS_MM)
    tissue = float(np.mean(prep.tissue_power_row))

    def to_lumen_mm(sheath_step: bool) -> float:
        old = tb.SHEATH_STEP
        tb.SHEATH_STEP = sheath_step
        try:
            moved = place_edge(prep, first, dark=True, exclude_frame=lumen_px, exclude_power=tissue)
        finally:
            tb.SHEATH_STEP = old
        d = np.hypot(moved[:, 0] * SPACING_MM - vessel.center_mm[0], moved[:, 1] * SPACING_MM - vessel.center_mm[1])
        return float(d.min() - vessel.radius_mm)

    assert abs(to_lumen_mm(True) - 1.2) <= 0.25
    assert to_lumen_mm(False) >= 1.2 + 0.15  # (the rule is what fixes it: 1.39-1.49 mm without it)


@pytest.mark.parametrize("seed", [9, 10])
def test_a_tissue_gap_to_a_bright_sheath_is_kept(seed):
    # 1.5 mm of tissue between the lesion and the sheath: the edge stays on the lesion
    prep, lumen_px, vessel = _lesion_beside_pedicle(1.5, seed)
    moved = place_edge(prep, circle_px(RADIUS_MM), dark=True, exclude_frame=lumen_px,
                       exclude_power=float(np.mean(prep.tissue_power_row)))
    d = np.hypot(moved[:, 0] * SPACING_MM - vessel.center_mm[0], moved[:, 1] * SPACING_MM - vessel.center_mm[1])
    assert abs(float(d.min() - vessel.radius_mm) - (1.2 + 1.5)) <= 0.35
    assert abs(equivalent_radius_mm(moved) - RADIUS_MM) <= 0.3


def _learned_candidate(prep):
    """A stand-in for the lesion model's candidate: its working-grid box around the disc."""
    from iousguide.analysis.tumor import TumorCandidate

    (x0, x1), (y0, y1) = ((prep.to_work((CENTER_MM[0] + s * RADIUS_MM) / SPACING_MM, 0)[0] for s in (-1, 1)),
                          (prep.to_work(0, (CENTER_MM[1] + s * RADIUS_MM) / SPACING_MM)[1] for s in (-1, 1)))
    box = (int(x0), int(y0), int(x1 - x0) + 1, int(y1 - y0) + 1)
    return TumorCandidate(mask_w=np.zeros(prep.work_shape, bool), bbox_w=box, area_mm2=0.0, centroid_w=(0.0, 0.0),
                          dark=False, contrast_db=5.0, solidity=1.0, touches_border=False, learned=True)


@pytest.mark.parametrize("echo", [1.6, 2.0])
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("offset_mm", [-0.8, 0.8])
def test_a_learned_outline_moves_to_a_bright_lesions_edge(echo, seed, offset_mm):
    # the lesion model's outline (its 0.5 iso-line on a 0.8 mm grid) lies up to ~1 mm off a
    # hyperechoic lesion's edge: moved to the half-power edge seen in the image
    from iousguide.analysis.tumor import place_learned_bright_edge

    prep = prep_of([Disc(CENTER_MM, RADIUS_MM, echo=echo)], seed)
    start = circle_px(RADIUS_MM + offset_mm)
    moved = place_learned_bright_edge(prep, start, _learned_candidate(prep), settings=TrackingSettings())
    assert abs(equivalent_radius_mm(moved) - RADIUS_MM) <= 0.3 < abs(offset_mm)


@pytest.mark.parametrize("seed", [7, 8])
def test_a_learned_outline_is_left_alone_near_a_lumen(seed):
    # a hyperechoic lesion 0.5 mm from a portal pedicle's 1.2 mm bright sheath: the sheath's blur
    # lifts the tissue level beside it and the edge search would move the outline in there (the
    # distance to the pedicle read ~0.5 mm long on these seeds); within 2 mm of the lumen the
    # model's outline stays, elsewhere it is still moved (a start 0.8 mm too large shrinks)
    from iousguide.analysis.tumor import place_learned_bright_edge

    centre_x = CENTER_MM[0] - RADIUS_MM - 0.5 - 1.2 - 4.0
    vessel = Disc((centre_x, CENTER_MM[1]), 4.0, echo=0.0, sheath_mm=1.2, sheath_echo=3.0)
    prep = prep_of([Disc(CENTER_MM, RADIUS_MM, echo=1.8), vessel], seed)
    rows, cols = prep.amplitude.shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    lumen_px = np.hypot(xx * SPACING_MM - centre_x, yy * SPACING_MM - CENTER_MM[1]) <= 4.0

    def to_lumen_mm(contour):
        return float(np.hypot(contour[:, 0] * SPACING_MM - centre_x, contour[:, 1] * SPACING_MM - CENTER_MM[1]).min()
                     - 4.0)

    start = circle_px(RADIUS_MM)
    moved = place_learned_bright_edge(prep, start, _learned_candidate(prep), settings=TrackingSettings(),
                                      vessel_mask_frame=lumen_px)
    assert abs(to_lumen_mm(moved) - to_lumen_mm(start)) <= 0.1
    big = circle_px(RADIUS_MM + 0.8)
    shrunk = place_learned_bright_edge(prep, big, _learned_candidate(prep), settings=TrackingSettings(),
                                       vessel_mask_frame=lumen_px)
    assert equivalent_radius_mm(shrunk) < RADIUS_MM + 0.5
