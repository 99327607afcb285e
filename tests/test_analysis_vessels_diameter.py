"""Lumen diameter of a round cross-section: the axis ratio read from a speckle-ragged outline.

The minor axis of a cross-section is the area's equivalent diameter x sqrt(axis ratio). Boundary
noise only ever adds to the outline's counter-rotating first harmonic, so a round lumen's ratio
reads below 1 and its diameter short; :func:`ellipse_axis_ratio_debiased` removes the noise's
share. Checked on exact ellipses (nothing to remove) and on round vessels rendered by the phantom
(real speckle, real detection).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from iousguide.analysis import vessels as vessels_mod
from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.vessels import detect_vessels, ellipse_axis_ratio, ellipse_axis_ratio_debiased


@pytest.mark.parametrize("ratio", [1.0, 0.8, 0.5, 0.3])
@pytest.mark.parametrize("clockwise", [False, True])
def test_exact_ellipse_ratio_is_unchanged(ratio, clockwise):
    theta = np.linspace(0.0, 2.0 * np.pi, 400, endpoint=False)
    pts = np.stack([2.0 * np.cos(theta + 0.3), 2.0 * ratio * np.sin(theta + 0.3)], axis=1)
    c, s = np.cos(0.7), np.sin(0.7)
    pts = pts @ np.array([[c, s], [-s, c]])
    if clockwise:
        pts = pts[::-1]
    assert ellipse_axis_ratio(pts) == pytest.approx(ratio, abs=0.003)
    assert ellipse_axis_ratio_debiased(pts, smoothing_mm=0.4) == pytest.approx(ratio, abs=0.003)


def _round_vessel_frames(n_frames: int):
    """Rendered frames of straight hepatic veins crossing the image plane at right angles (round
    sections of 3 and 4 mm, no pulsation) in uniform parenchyma, and their truth."""
    from iousguide.phantom.imaging import ImagingParams, ProbeGeometry, Renderer
    from iousguide.phantom.model import LiverModel, ProbePose, VesselBranch
    from iousguide.phantom.truth import frame_truth

    geom = ProbeGeometry(kind="linear", width_px=480, height_px=400, spacing_mm=(0.12, 0.12))
    vessels = []
    for z in (15.0, 30.0, 42.0):
        for x, r in ((-14.0, 1.5), (0.0, 2.0), (14.0, 1.5)):
            vessels.append(VesselBranch(id=len(vessels) + 1, kind="hepatic_vein", start_mm=(x, -60.0, z),
                                        end_mm=(x, 60.0, z), radius_start_mm=r, radius_end_mm=r, pulse_fraction=0.0))
    model = LiverModel(vessels=tuple(vessels), tumors=(), seed=2718)
    renderer = Renderer(model, geom, ImagingParams())
    for i in range(n_frames):
        pose = ProbePose(y_mm=-12.0 + 4.0 * i)
        image, maps = renderer.render(pose, 0.0, i)
        yield image, frame_truth(model, pose, geom, maps, frame=i, t_s=0.0)


def _matched(dets, truth, spacing_mm):
    for tv in truth["vessels"]:
        t = np.asarray(tv["contour_px"], dtype=np.float64)
        c = t.mean(axis=0)
        best = min(dets, key=lambda d: np.hypot(*(np.asarray(d.centroid_px) - c)), default=None)
        if best is not None and np.hypot(*(np.asarray(best.centroid_px) - c)) * spacing_mm < 1.0:
            yield tv, best


def test_round_phantom_lumens_read_round_and_full_size(monkeypatch):
    settings = TrackingSettings()
    sp = 0.12
    plain_ratio, debiased_ratio, err_off, err_on = [], [], [], []
    for image, truth in _round_vessel_frames(3):
        monkeypatch.setattr(vessels_mod, "DIAMETER_RATIO_DEBIASED", False)
        off = detect_vessels(image, spacing_mm=(sp, sp), settings=settings)
        monkeypatch.setattr(vessels_mod, "DIAMETER_RATIO_DEBIASED", True)
        on = detect_vessels(image, spacing_mm=(sp, sp), settings=settings)
        for tv, det in _matched(off, truth, sp):
            pts_mm = np.asarray(det.contour_px) * sp
            plain_ratio.append(ellipse_axis_ratio(pts_mm))
            debiased_ratio.append(ellipse_axis_ratio_debiased(pts_mm, smoothing_mm=settings.vessel_contour_smoothing_mm))
            err_off.append(det.diameter_mm - tv["diameter_mm"])
            # the outline (and so every distance) is the same either way
            twin = [d for _, d in _matched(on, {"vessels": [tv]}, sp)]
            assert len(twin) == 1
            assert np.array_equal(twin[0].contour_px, det.contour_px)
            err_on.append(twin[0].diameter_mm - tv["diameter_mm"])
            area = abs(cv2.contourArea(pts_mm.astype(np.float32)))
            assert twin[0].diameter_mm >= det.diameter_mm - 1e-9  # the ratio only moves towards 1
            assert twin[0].diameter_mm <= 2.0 * np.sqrt(area / np.pi) / vessels_mod._smoothing_gain(
                pts_mm, sigma_mm=settings.vessel_contour_smoothing_mm) * (1 + 1e-6)
    assert len(err_off) >= 20
    # the truth sections are circles: the plain ratio reads them as ellipses, the debiased one less so
    assert np.mean(plain_ratio) < 0.95
    assert np.mean(debiased_ratio) > np.mean(plain_ratio) + 0.02
    # and the diameter's short bias shrinks
    assert np.mean(err_off) < 0.0
    assert abs(np.mean(err_on)) < abs(np.mean(err_off))


def _sheathed_vessel_errors(sheath_mm: float) -> list[float]:
    """Diameter errors (reported - truth, mm) of round portal pedicles (3 and 4 mm lumens, a bright
    +9 dB sheath of ``sheath_mm`` around each, no pulsation) rendered by the phantom, linear probe."""
    from iousguide.phantom.imaging import ImagingParams, ProbeGeometry, Renderer
    from iousguide.phantom.model import LiverModel, ProbePose, VesselBranch
    from iousguide.phantom.truth import frame_truth

    sp = 0.12
    geom = ProbeGeometry(kind="linear", width_px=480, height_px=400, spacing_mm=(sp, sp))
    vessels = [VesselBranch(id=i + 1, kind="portal_pedicle", start_mm=(x, -60.0, z), end_mm=(x, 60.0, z),
                            radius_start_mm=r, radius_end_mm=r, pulse_fraction=0.0, sheath_mm=sheath_mm)
               for i, (x, z, r) in enumerate(((-12.0, 18.0, 1.5), (10.0, 18.0, 2.0), (-10.0, 35.0, 2.0), (12.0, 35.0, 1.5)))]
    model = LiverModel(vessels=tuple(vessels), tumors=(), seed=4711)
    renderer = Renderer(model, geom, ImagingParams())
    errors = []
    for i in range(2):
        pose = ProbePose(y_mm=-5.0 + 6.0 * i)
        image, maps = renderer.render(pose, 0.0, i)
        truth = frame_truth(model, pose, geom, maps, frame=i, t_s=0.0)
        dets = detect_vessels(image, spacing_mm=(sp, sp), settings=TrackingSettings())
        errors += [det.diameter_mm - tv["diameter_mm"] for tv, det in _matched(dets, truth, sp)]
    return errors


def test_a_thick_sheath_does_not_shrink_the_lumen():
    """A 1.4 mm sheath (the phantom's default for large portal pedicles): the lumen reads full size
    (its blurred level reaches the sheath's true level, and the edge is at half power between them)."""
    errors = _sheathed_vessel_errors(1.4)
    assert len(errors) >= 6 and abs(np.mean(errors)) < 0.2, errors


@pytest.mark.xfail(strict=True, reason="known weakness: a bright sheath thinner than the blur (here 0.5 mm) "
                   "never reaches its true level in the image; the edge, at half power between lumen and the "
                   "sheath's blurred peak, lands ~0.25 mm inside per side: 3-6 mm lumens read ~0.5 mm small "
                   "(measured -0.46 to -0.52 mm; small_vessels recording -0.43 to -0.47 mm). A fit of the "
                   "radial power profile (lumen, sheath, tissue blurred by a Gaussian; axial and lateral halves "
                   "apart) was tried on 2026-11-29 and not kept: under a blur wider than the sheath, a thin "
                   "bright sheath and a thicker dimmer one look alike, and they put the lumen edge up to half "
                   "the sheath's thickness apart; the fitted correction scattered 0.10-0.29 mm per vessel "
                   "(0.07-0.10 without it), over-corrected 1.0-1.4 mm sheaths by 0.15-0.31 mm and fitted "
                   "sheaths to veins that have none (+0.10 -> +0.30 mm)")
def test_a_thin_sheath_does_not_shrink_the_lumen():
    errors = _sheathed_vessel_errors(0.5)
    assert len(errors) >= 6 and abs(np.mean(errors)) < 0.2, errors


def _lumen_band_mask() -> np.ndarray:
    mask = np.zeros((64, 51), np.uint8)
    cv2.ellipse(mask, (25, 32), (20, 9), 30, 0, 360, 1, -1)
    return mask


def test_exact_distance_is_the_euclidean_distance_transform():
    from scipy.ndimage import distance_transform_edt

    from iousguide.analysis.imaging import exact_distance_px

    mask = _lumen_band_mask()
    np.testing.assert_allclose(exact_distance_px(mask), distance_transform_edt(mask), atol=1e-5)


def test_exact_distance_does_not_depend_on_where_opencv_writes_it(monkeypatch):
    """OpenCV's exact transform rounds its last bit differently with the output buffer's
    alignment (a long-axis lumen's width is read on its ridge of local maxima, which breaks ties
    on that bit: one phantom lumen measured 1.49 or 1.58 mm from run to run, either side of the
    1.5 mm acceptance limit). Each call here writes it at another offset of a buffer."""
    from iousguide.analysis import imaging

    real = cv2.distanceTransform
    offsets = iter(range(10 ** 6))
    raw: set[bytes] = set()

    def at_offset(src, distance_type, mask_size, *args, **kwargs):
        off = next(offsets) % 16
        buf = np.zeros(src.size + 16, np.float32)
        out = real(src, distance_type, mask_size, dst=buf[off:off + src.size].reshape(src.shape))
        raw.add(out.tobytes())
        return out

    monkeypatch.setattr(imaging.cv2, "distanceTransform", at_offset)
    mask = _lumen_band_mask()
    results = {imaging.exact_distance_px(mask).tobytes() for _ in range(16)}
    print(f"OpenCV's own results over 16 buffer offsets: {len(raw)} different")
    assert len(results) == 1
