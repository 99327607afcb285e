"""Phantom physics and truth: speckle statistics, contrast read-back, exact geometry, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from iousguide.phantom import generate_case, heat_sink_class, scenarios
from iousguide.phantom.imaging import ImagingParams, ProbeGeometry, Renderer, slice_maps
from iousguide.phantom.model import HEPATIC_VEIN, PORTAL_PEDICLE, LiverModel, ProbePose, Tumor, VesselBranch
from iousguide.phantom.truth import frame_truth, min_caliper_width

PLAIN = ImagingParams(reflector_density_per_cm3=0.0)
GEOMETRY = ProbeGeometry(kind="linear", width_px=400, height_px=320, spacing_mm=(0.1, 0.1))


def _render_intensity(model, *, params=PLAIN, geometry=GEOMETRY, pose=ProbePose()):
    renderer = Renderer(model, geometry, params)
    maps = slice_maps(model, pose, geometry, 0.0, params)
    return renderer, maps, renderer.envelope_intensity(maps, pose, 0, attenuation=False, noise=False)


@pytest.mark.parametrize("seed", [1, 2])
def test_fully_developed_speckle_is_rayleigh(seed):
    model = LiverModel(vessels=(), tumors=(), seed=seed)
    _, _, intensity = _render_intensity(model)
    envelope = np.sqrt(intensity[40:300, 20:380].astype(np.float64))
    snr = envelope.mean() / envelope.std()
    rayleigh_snr = math.sqrt(math.pi / (4 - math.pi))  # = 1.913
    assert snr == pytest.approx(rayleigh_snr, abs=0.06)
    # mean intensity equals the echogenicity (unit-energy PSF)
    assert intensity[40:300, 20:380].mean() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("contrast_db", [-9.0, -4.0, 3.0, 6.0])
def test_lesion_contrast_is_measured_back(contrast_db):
    tumor = Tumor(id=1, center_mm=(0.0, 0.0, 16.0), radius_mm=8.0, contrast_db=contrast_db, halo_mm=0.0)
    model = LiverModel(vessels=(), tumors=(tumor,), seed=11)
    renderer, maps, intensity = _render_intensity(model)
    inside = maps.labels == 1000 + tumor.id
    from scipy.ndimage import binary_erosion

    core = binary_erosion(inside, iterations=8)
    rows = np.flatnonzero(core.any(axis=1))
    band = np.zeros_like(inside)
    band[rows[0]:rows[-1] + 1, :] = True
    # parenchyma at the same depths, at least 12 px away from the lesion and the image sides
    reference = band & (maps.labels == 0)
    reference[:, :12] = reference[:, -12:] = False
    grow = ~binary_erosion(~inside, iterations=12)
    reference &= ~grow
    measured_db = 10 * math.log10(intensity[core].mean() / intensity[reference].mean())
    assert measured_db == pytest.approx(contrast_db, abs=0.6)
    # and on the displayed (log-compressed) image: grey difference = contrast * 255 / dynamic range
    pose = ProbePose()
    image = renderer.compress(renderer.envelope_intensity(maps, pose, 0, attenuation=True, noise=False))
    grey_diff = image[core].astype(float).mean() - image[reference].astype(float).mean()
    expected = contrast_db * 255 / PLAIN.dynamic_range_db
    assert grey_diff == pytest.approx(expected, abs=0.15 * abs(expected) + 1.0)


def test_psf_kernels_match_the_resolution_settings():
    renderer = Renderer(LiverModel(vessels=(), tumors=(), seed=0), GEOMETRY, PLAIN)

    def fwhm_mm(kernel, spacing):
        k = kernel / kernel.max()
        x = np.arange(len(k)) - len(k) // 2
        fine = np.linspace(x[0], x[-1], 20001)
        values = np.interp(fine, x, k)
        above = fine[values >= 0.5]
        return (above[-1] - above[0]) * spacing

    assert fwhm_mm(renderer.k_axial, 0.1) == pytest.approx(PLAIN.axial_fwhm_mm, abs=0.05)
    assert fwhm_mm(renderer.k_lat_near, 0.1) == pytest.approx(PLAIN.lateral_fwhm_focus_mm, abs=0.06)
    assert fwhm_mm(renderer.k_lat_far, 0.1) == pytest.approx(PLAIN.lateral_fwhm_far_mm, abs=0.08)
    assert 0.2 <= PLAIN.axial_fwhm_mm <= 0.4 and 0.5 <= PLAIN.lateral_fwhm_focus_mm < PLAIN.lateral_fwhm_far_mm <= 1.5


def test_shadow_and_enhancement_follow_attenuation():
    """Rows below a vessel are brighter than beside it; below calcium they are darker."""
    vessel = VesselBranch(id=1, kind=HEPATIC_VEIN, start_mm=(-6.0, -30.0, 10.0), end_mm=(-6.0, 30.0, 10.0),
                          radius_start_mm=3.0, radius_end_mm=3.0, pulse_fraction=0.0)
    model = LiverModel(vessels=(vessel,), tumors=(), seed=5)
    renderer = Renderer(model, GEOMETRY, PLAIN)
    maps = slice_maps(model, ProbePose(), GEOMETRY, 0.0, PLAIN)
    intensity = renderer.envelope_intensity(maps, ProbePose(), 0, noise=False)
    cols_below = slice(int((-6.0 + 20.0 - 1.5) / 0.1), int((-6.0 + 20.0 + 1.5) / 0.1))
    cols_beside = slice(int((6.0 + 20.0 - 1.5) / 0.1), int((6.0 + 20.0 + 1.5) / 0.1))
    deep = slice(170, 300)
    gain_db = 10 * math.log10(intensity[deep, cols_below].mean() / intensity[deep, cols_beside].mean())
    expected = 6.0 * (PLAIN.liver_atten_db_mm - PLAIN.blood_atten_db_mm) * 0.9  # ~6 mm of blood on the path
    assert gain_db > 0.6 * expected


def _sphere_and_tube(gap_mm, radius_v=2.5, kind=PORTAL_PEDICLE, sheath=0.0):
    tumor = Tumor(id=1, center_mm=(0.0, 0.0, 16.0), radius_mm=6.0, halo_mm=0.0)
    x_v = 6.0 + gap_mm + radius_v
    vessel = VesselBranch(id=1, kind=kind, start_mm=(x_v, -30.0, 16.0), end_mm=(x_v, 30.0, 16.0),
                          radius_start_mm=radius_v, radius_end_mm=radius_v, sheath_mm=sheath, pulse_fraction=0.0)
    return LiverModel(vessels=(vessel,), tumors=(tumor,), seed=3)


@pytest.mark.parametrize("gap_mm", [0.4, 1.0, 3.3, 7.0])
def test_truth_distance_and_diameter_are_exact(gap_mm):
    model = _sphere_and_tube(gap_mm)
    pose = ProbePose(y_mm=0.0)
    maps = slice_maps(model, pose, GEOMETRY, 0.0, PLAIN)
    truth = frame_truth(model, pose, GEOMETRY, maps, frame=0, t_s=0.0)
    vessel = truth["vessels"][0]
    assert vessel["distance_mm"] == pytest.approx(gap_mm, abs=0.03)
    assert vessel["diameter_mm"] == pytest.approx(5.0, abs=0.03)
    assert vessel["lumen_diameter_3d_mm"] == pytest.approx(5.0, abs=1e-6)
    assert vessel["axis_angle_deg"] == pytest.approx(90.0, abs=0.01)
    (tx, ty), (vx, vy) = vessel["closest_px"]
    assert math.hypot(tx - vx, ty - vy) * 0.1 == pytest.approx(gap_mm, abs=0.03)
    tumor = truth["tumor"]
    assert tumor["equivalent_diameter_mm"] == pytest.approx(12.0, abs=0.1)
    # off-centre plane: the sphere's section shrinks as sqrt(R^2 - y^2), the gap widens accordingly
    pose = ProbePose(y_mm=3.0)
    truth = frame_truth(model, pose, GEOMETRY, slice_maps(model, pose, GEOMETRY, 0.0, PLAIN), frame=0, t_s=0.0)
    r_section = math.sqrt(36.0 - 9.0)
    assert truth["vessels"][0]["distance_mm"] == pytest.approx(6.0 + gap_mm - r_section, abs=0.03)


def test_overlap_is_zero_distance_and_lumen_displaces_tumour():
    model = _sphere_and_tube(-1.0, kind=HEPATIC_VEIN)
    maps = slice_maps(model, ProbePose(), GEOMETRY, 0.0, PLAIN)
    truth = frame_truth(model, ProbePose(), GEOMETRY, maps, frame=0, t_s=0.0)
    assert truth["vessels"][0]["distance_mm"] == 0.0
    assert not ((maps.labels == 1001) & (maps.labels == 1)).any()


def test_oblique_vessel_section_minor_axis_is_the_diameter():
    angle = math.radians(50)
    d = np.array([math.sin(angle), math.cos(angle), 0.0])
    c = np.array([0.0, 0.0, 16.0])
    vessel = VesselBranch(id=1, kind=HEPATIC_VEIN, start_mm=tuple(c - 20 * d), end_mm=tuple(c + 20 * d),
                          radius_start_mm=2.0, radius_end_mm=2.0, pulse_fraction=0.0)
    model = LiverModel(vessels=(vessel,), tumors=(), seed=3)
    maps = slice_maps(model, ProbePose(), GEOMETRY, 0.0, PLAIN)
    v = frame_truth(model, ProbePose(), GEOMETRY, maps, frame=0, t_s=0.0)["vessels"][0]
    assert v["diameter_mm"] == pytest.approx(4.0, abs=0.04)  # minor axis of the ellipse
    assert v["axis_angle_deg"] == pytest.approx(40.0, abs=0.01)
    assert min_caliper_width(np.array([[0, 0], [10, 0], [10, 3], [0, 3]], float)) == pytest.approx(3.0)


@pytest.mark.parametrize("diameter, distance, rfa, mwa", [
    (2.0, 0.0, "none", "none"),
    (3.0, 10.0, "high", "high"),       # zone edge 5 mm away
    (3.0, 10.5, "moderate", "moderate"),
    (4.0, 15.0, "moderate", "moderate"),
    (4.0, 16.0, "none", "moderate"),    # zone edge 11 mm: RFA band 10, MWA band 15
    (5.0, 15.0, "high", "high"),       # >= 5 mm within 10 mm of the zone
    (6.0, 20.5, "none", "none"),
])
def test_heat_sink_rule(diameter, distance, rfa, mwa):
    assert heat_sink_class(diameter, distance, modality="rfa") == rfa
    assert heat_sink_class(diameter, distance, modality="mwa") == mwa


def test_same_seed_same_pixels_and_truth():
    a_frames, a_truth = generate_case(21, difficulty="hard", n_frames=2, width_px=320, height_px=240)
    b_frames, b_truth = generate_case(21, difficulty="hard", n_frames=2, width_px=320, height_px=240)
    c_frames, _ = generate_case(22, difficulty="hard", n_frames=2, width_px=320, height_px=240)
    for a, b in zip(a_frames, b_frames):
        assert a.pixels.tobytes() == b.pixels.tobytes()
    assert a_truth.frames == b_truth.frames
    assert a_frames[0].pixels.tobytes() != c_frames[0].pixels.tobytes()


@pytest.mark.parametrize("seed, difficulty, probe", [(31, "easy", "linear"), (32, "medium", "convex"),
                                                     (33, 0.9, None)])
def test_generate_case_api(seed, difficulty, probe):
    frames, truth = generate_case(seed, difficulty=difficulty, n_frames=1, probe=probe, width_px=320, height_px=240)
    frame = frames[0]
    assert frame.pixels.shape == (240, 320) and frame.spacing_mm is not None
    assert truth.header["spacing_mm"] == list(frame.spacing_mm)
    assert 0.08 <= frame.spacing_mm[0] <= 0.2
    tf = truth.frames[0]
    assert tf["status"] in ("ok", "no_tumor")
    for item in ([tf["tumor"]] if tf["tumor"] else []) + tf["vessels"]:
        pts = np.asarray(item["contour_px"])
        assert (pts[:, 0] >= -0.5).all() and (pts[:, 0] <= 319.5).all() and (pts[:, 1] <= 239.5).all()
    if probe == "convex":
        assert frame.pixels[0, 0] == 0 and frame.pixels[0, -1] == 0  # outside the fan


def test_probe_lift_frames_are_black_with_no_signal_truth():
    case = scenarios.build("hepatic_vein_abutting")
    lifted = [i for i, p in enumerate(case.poses) if p.lift]
    assert lifted, "the scenario has a probe lift"
    renderer = Renderer(case.model, case.geometry, case.params)
    image, maps = renderer.render(case.poses[lifted[0]], lifted[0] / case.fps, lifted[0])
    assert maps is None and image.mean() < 3
    truth = frame_truth(case.model, case.poses[lifted[0]], case.geometry, maps, frame=lifted[0], t_s=0.0)
    assert truth["status"] == "no_signal" and truth["vessels"] == [] and truth["tumor"] is None


def test_vessels_pulse_and_probe_motion_change_sections():
    case = scenarios.build("hepatic_vein_abutting")
    vein = case.model.vessel(1)
    scales = [vein.pulse(t, case.model.heart_rate_hz) for t in np.linspace(0, 1, 20)]
    assert max(scales) - min(scales) == pytest.approx(2 * vein.pulse_fraction, rel=0.1)
    tilts = [p.tilt_deg for p in case.poses]
    ys = [p.y_mm for p in case.poses]
    assert max(tilts) - min(tilts) > 4 and max(ys) - min(ys) > 6


def test_convex_truth_stays_inside_the_fan():
    case = scenarios.random_case(77, difficulty="medium", n_frames=1, probe="convex", width_px=320, height_px=240)
    renderer = Renderer(case.model, case.geometry, case.params)
    image, maps = renderer.render(case.poses[0], 0.0, 0)
    assert not maps.labels[~case.geometry.fan_mask].any()
    assert not image[~case.geometry.fan_mask].any()
    truth = frame_truth(case.model, case.poses[0], case.geometry, maps, frame=0, t_s=0.0)
    g = case.geometry
    for item in truth["vessels"] + truth["tumors"]:
        pts = np.asarray(item["contour_px"], float)
        u = (pts[:, 0] - (g.width_px - 1) / 2) * g.spacing_mm[0]
        v = pts[:, 1] * g.spacing_mm[1]
        assert (g.fan_field(u, v) < 2 * g.spacing_mm[0]).all()
