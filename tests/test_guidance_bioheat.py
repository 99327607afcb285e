"""Pennes solver: analytic K0 line source, grid convergence, exact vessel handling (issue 6, section 3)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spl
from scipy.special import k0

from iousguide.errors import AnalysisError
from iousguide.guidance.bioheat import (
    BioheatEstimator,
    PennesParams,
    VesselSink,
    estimate_ablation,
    periodic_size,
    solve_pennes,
)
from iousguide.guidance.settings import GuidanceSettings

PARAMS = PennesParams()


def line_source(grid_mm, field_mm=60.0, power_w_per_m=1.0):
    n = int(round(field_mm / grid_mm))
    n += 1 - n % 2
    q = np.zeros((n, n))
    q[n // 2, n // 2] = power_w_per_m / (grid_mm * 1e-3) ** 2
    return q, n // 2


def analytic(r_mm, power_w_per_m=1.0):
    return power_w_per_m / (2 * np.pi * PARAMS.conductivity_w_per_m_k) * k0(r_mm * 1e-3 / PARAMS.decay_length_m)


def circle_mm(cx, cy, r, n=360):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[cx + r * np.cos(t), cy + r * np.sin(t)]


def test_parameters_come_from_clinical_reference():
    assert PARAMS.beta_w_per_m3_k == pytest.approx(6.4e-3 * 1050 * 3617)
    assert PARAMS.decay_length_m * 1e3 == pytest.approx(4.625, abs=1e-3)
    # CLINICAL.md: h ~ 450 W/(m2 K) at 5 mm, ~230 at 10 mm
    assert PARAMS.wall_h_w_per_m2_k(5.0) == pytest.approx(450, rel=0.02)
    assert PARAMS.wall_h_w_per_m2_k(10.0) == pytest.approx(230, rel=0.02)


def test_line_source_matches_k0_within_2_percent_at_half_mm():
    q, c = line_source(0.5, power_w_per_m=7.0)
    theta = solve_pennes(q, grid_mm=0.5)
    for j in range(2, 50):  # 1 mm .. 24.5 mm along the axes
        r = j * 0.5
        for value in (theta[c, c + j], theta[c - j, c], theta[c, c - j], theta[c + j, c]):
            assert abs(value / analytic(r, 7.0) - 1) < 0.02, r
    for j in range(2, 30):  # diagonals 1.4 mm .. 20.5 mm
        r = j * 0.5 * np.sqrt(2)
        assert abs(theta[c + j, c + j] / analytic(r, 7.0) - 1) < 0.02, r


def test_grid_convergence_second_order():
    errors = []
    for g in (1.0, 0.5, 0.25):
        q, c = line_source(g, field_mm=40.0)
        theta = solve_pennes(q, grid_mm=g)
        j = int(round(3.0 / g))
        errors.append(abs(theta[c, c + j] / analytic(3.0) - 1))
    assert errors[0] > errors[1] > errors[2]
    assert errors[0] / errors[1] > 3.0 and errors[1] / errors[2] > 3.0  # ~4 for a 2nd-order scheme


def test_vessel_correction_equals_a_direct_sparse_solve():
    """The FFT + capacitance solve must equal the same finite-volume system solved directly."""
    g, n = 1.0, 31
    size = periodic_size(n, grid_mm=g, params=PARAMS)
    q = np.zeros((n, n))
    q[15, 15] = 1.0 / (g * 1e-3) ** 2
    yy, xx = np.mgrid[:n, :n]
    lumen = (yy - 15) ** 2 + (xx - 24) ** 2 <= 9
    h = np.where(lumen, 500.0, 0.0)
    fast = solve_pennes(q, grid_mm=g, lumen_h_w_per_m2_k=h)

    k, gm, beta = PARAMS.conductivity_w_per_m_k, g * 1e-3, PARAMS.beta_w_per_m3_k
    idx = np.arange(size * size).reshape(size, size)
    big_l = np.zeros((size, size), bool)
    big_l[:n, :n] = lumen
    big_h = np.zeros((size, size))
    big_h[:n, :n] = h
    diag = np.full(size * size, beta)
    rows, cols, vals = [], [], []
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        nb = np.roll(idx, (-dy, -dx), (0, 1))
        nb_l = np.roll(big_l, (-dy, -dx), (0, 1))
        nb_h = np.roll(big_h, (-dy, -dx), (0, 1))
        tt = ~big_l & ~nb_l
        rows.append(idx[tt]), cols.append(nb[tt]), vals.append(np.full(tt.sum(), -k / gm**2))
        diag[idx[tt]] += k / gm**2
        tw = ~big_l & nb_l
        diag[idx[tw]] += 1.0 / (gm * (gm / (2 * k) + 1.0 / nb_h[tw]))
    diag[big_l.ravel()] = 1.0
    a = sp.csc_matrix(
        (np.r_[diag, np.concatenate(vals)],
         (np.r_[np.arange(size * size), np.concatenate(rows)], np.r_[np.arange(size * size), np.concatenate(cols)])),
        shape=(size * size, size * size),
    )
    big_q = np.zeros((size, size))
    big_q[:n, :n] = q
    direct = spl.spsolve(a, big_q.ravel()).reshape(size, size)[:n, :n]
    assert np.max(np.abs(fast - direct)) < 1e-9 * np.max(np.abs(direct))
    assert np.all(fast <= solve_pennes(q, grid_mm=g) + 1e-12)  # a sink never warms


def test_deficit_converges_with_the_grid():
    deficits = []
    for g in (1.0, 0.5, 0.25):
        s = dataclasses.replace(GuidanceSettings(), bioheat_grid_mm=g, bioheat_field_mm=50.0)
        est = estimate_ablation(circle_mm(0, 0, 12), [VesselSink(1, circle_mm(17, 0, 4), 8.0)],
                                applicator_mm=(0.0, 0.0), settings=s)
        deficits.append(est.deficit_mm[1])
    assert all(d > 0 for d in deficits)
    assert abs(deficits[2] - deficits[1]) < 0.5 * abs(deficits[1] - deficits[0])


def test_free_zone_is_covered_and_vessels_cut_into_it():
    s = GuidanceSettings()
    zone = circle_mm(0, 0, 15)
    free = estimate_ablation(zone, [], applicator_mm=(0, 0), settings=s)
    assert free.covered
    radius = np.hypot(*free.predicted_zone_mm.T)
    assert np.all(radius >= 15.0 - s.bioheat_grid_mm) and np.all(radius <= 15.0 + 2 * s.bioheat_grid_mm)
    near = estimate_ablation(zone, [VesselSink(1, circle_mm(19, 0, 4), 8.0)], applicator_mm=(0, 0), settings=s)
    far = estimate_ablation(zone, [VesselSink(1, circle_mm(29, 0, 4), 8.0)], applicator_mm=(0, 0), settings=s)
    assert not near.covered
    assert near.deficit_mm[1] > far.deficit_mm[1] >= 0.0
    outside = estimate_ablation(zone, [VesselSink(1, circle_mm(80, 0, 4), 8.0)], applicator_mm=(0, 0), settings=s)
    assert outside.deficit_mm[1] is None and outside.covered


def test_zone_larger_than_field_and_source_in_vessel_are_refused():
    with pytest.raises(AnalysisError):
        estimate_ablation(circle_mm(0, 0, 40), [], applicator_mm=(0, 0), settings=GuidanceSettings())
    q, c = line_source(1.0, field_mm=20.0)
    h = np.zeros_like(q)
    h[c, c] = 400.0
    with pytest.raises(AnalysisError):
        solve_pennes(q, grid_mm=1.0, lumen_h_w_per_m2_k=h)


def test_estimator_cache_reuses_an_unchanged_scene():
    est = BioheatEstimator()
    s = GuidanceSettings()
    args = (circle_mm(0, 0, 12), [VesselSink(1, circle_mm(17, 0, 4), 8.0)])
    a = est.estimate(*args, applicator_mm=(0.0, 0.0), settings=s)
    b = est.estimate(*args, applicator_mm=(0.01, 0.0), settings=s)  # below the cache's quantum
    c = est.estimate(*args, applicator_mm=(2.0, 0.0), settings=s)
    assert a is b and c is not a and (est.hits, est.misses) == (1, 2)


RHO_C = 1079.0 * 3540.0  # liver rho c, CLINICAL.md


def transient_analytic(r_mm, t_s, power_w_per_m=1.0):
    """Line source switched on at t = 0 in perfused tissue: q'/(4 pi k) int_0^t exp(-r^2/(4 a tau) - beta tau/(rho c)) / tau."""
    from scipy.integrate import quad

    k, beta = PARAMS.conductivity_w_per_m_k, PARAMS.beta_w_per_m3_k
    alpha, r = k / RHO_C, r_mm * 1e-3
    value = quad(lambda tau: np.exp(-r * r / (4 * alpha * tau) - beta * tau / RHO_C) / tau, 0, t_s, limit=200)[0]
    return power_w_per_m / (4 * np.pi * k) * value


def test_transient_matches_the_analytic_line_source_and_tends_to_steady():
    from iousguide.guidance.bioheat import solve_pennes_transient

    q, c = line_source(0.5, field_mm=40.0)
    theta = solve_pennes_transient(q, grid_mm=0.5, duration_s=60.0, time_step_s=1.0, heat_capacity_j_per_m3_k=RHO_C)
    for j in (3, 4, 8, 12):  # 1.5 .. 6 mm
        assert abs(theta[c, c + j] / transient_analytic(j * 0.5, 60.0) - 1) < 0.02, j
    steady = solve_pennes(q, grid_mm=0.5)
    late = solve_pennes_transient(q, grid_mm=0.5, duration_s=1e5, time_step_s=1e4, heat_capacity_j_per_m3_k=RHO_C)
    assert np.max(np.abs(late - steady)) < 1e-4 * steady.max()
    # the same with a vessel: the capacitance operator is re-used at every step
    h = np.zeros_like(q)
    yy, xx = np.mgrid[: q.shape[0], : q.shape[1]]
    h[(yy - c) ** 2 + (xx - c - 14) ** 2 <= 25] = 450.0
    late_v = solve_pennes_transient(q, grid_mm=0.5, duration_s=1e5, time_step_s=1e4, heat_capacity_j_per_m3_k=RHO_C,
                                    lumen_h_w_per_m2_k=h)
    steady_v = solve_pennes(q, grid_mm=0.5, lumen_h_w_per_m2_k=h)
    assert np.max(np.abs(late_v - steady_v)) < 1e-4 * steady_v.max()


def test_transient_power_and_time_mode():
    zone = circle_mm(0, 0, 12)
    weak = GuidanceSettings(applicator_power_w_per_m=300.0, ablation_duration_s=600.0, bioheat_time_step_s=10.0,
                            bioheat_field_mm=40.0)
    strong = dataclasses.replace(weak, applicator_power_w_per_m=3000.0)
    vessels = [VesselSink(1, circle_mm(17, 0, 4), 8.0)]
    w = estimate_ablation(zone, vessels, applicator_mm=(0.0, 0.0), settings=weak)
    s = estimate_ablation(zone, vessels, applicator_mm=(0.0, 0.0), settings=strong)
    assert w.mode == s.mode == "transient" and w.duration_s == 600.0
    assert not w.covered_without_vessels and not w.covered
    assert s.covered_without_vessels
    assert np.hypot(*s.predicted_zone_mm.T).max() > np.hypot(*w.predicted_zone_mm.T).max()


def test_stronger_wall_transfer_means_larger_deficit():
    """h = Nu k_b / D: a larger Nusselt number (faster flow) must cool more, never less."""
    zone = circle_mm(0, 0, 12)
    vessels = [VesselSink(1, circle_mm(17, 0, 4), 8.0)]
    deficits = [
        estimate_ablation(zone, vessels, applicator_mm=(0.0, 0.0), settings=GuidanceSettings(nusselt=nu)).deficit_mm[1]
        for nu in (0.5, 4.36, 40.0)
    ]
    assert deficits[0] < deficits[1] < deficits[2]
