"""Steady 2-D Pennes bioheat estimate around an ablation applicator (issue 6, section 3).

Model (per unit depth, temperature rise ``theta = T - T_body`` in K)::

    k * laplacian(theta) - w_b rho_b c_b * theta + q = 0     in perfused tissue
    theta = 0                                                in vessel lumens (blood at body temperature)
    -k d(theta)/dn = h * theta,  h = Nu k_b / D              at vessel walls (convective sink)

discretised with finite volumes on a square grid (5-point stencil; a wall face
conducts through half a cell of tissue in series with the film ``1/h``, and the
staircase wall length is rescaled to the vessel's true perimeter).

Solver: the perfused-tissue operator without vessels is translation invariant,
so it is inverted with FFTs on a periodic grid much larger than the decay length
``L = sqrt(k / (w_b rho_b c_b))`` (about 4.6 mm), i.e. effectively infinite
tissue. Vessels are a low-rank change of that operator confined to the lumen's
boundary ring and the wall cells next to it; the Sherman-Morrison-Woodbury
(capacitance-matrix) identity handles them with one dense solve whose size is
the number of boundary cells, plus two FFT pairs. No sparse factorisation per
frame (a SuperLU factorisation of the 121 x 121 problem took ~31 ms here).

The applicator is an *equivalent steady source* (a disc of ``applicator_radius_mm``)
whose power is scaled so that, without vessels, the coagulation isotherm just
covers the planned zone. Only the isotherm with vessels relative to that is
interpreted (ablation deficit toward each vessel, coverage); temperatures are
not a dose prediction. Validated against the analytic K0 line-source solution
and by grid refinement in ``tests/test_guidance_bioheat.py``.

Limits (say them next to the numbers): a 2-D model treats every lumen as a
prism perpendicular to the image plane, so a vessel running *in* the plane acts
as an infinite slab and its sink is overestimated; perfusion is not shut down in
coagulated tissue; the wall h is the laminar lower bound; the equivalent source
reaches unphysical peak temperatures at the applicator (only the isotherm is used).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import scipy.fft
import scipy.linalg
from scipy import ndimage

from iousguide.errors import AnalysisError
from iousguide.guidance import geometry as geo
from iousguide.guidance.settings import GuidanceSettings

try:  # one BLAS thread for the small dense solve: on a busy 2-core machine a multi-threaded OpenBLAS
    # solve of a 560 x 560 system took a median 37 ms instead of 4.5 ms (spin-waiting threads)
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - optional
    ThreadpoolController = None

_BLAS = None


def _single_thread_blas():
    global _BLAS
    if ThreadpoolController is None:
        from contextlib import nullcontext

        return nullcontext()
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


@dataclass(frozen=True)
class PennesParams:
    """Physical parameters in SI units (W, m, K, s)."""

    conductivity_w_per_m_k: float = 0.52
    perfusion_per_s: float = 6.4e-3
    blood_density_kg_per_m3: float = 1050.0
    blood_specific_heat_j_per_kg_k: float = 3617.0
    blood_conductivity_w_per_m_k: float = 0.52
    nusselt: float = 4.36

    @property
    def beta_w_per_m3_k(self) -> float:
        """Perfusion sink coefficient w_b rho_b c_b."""
        return self.perfusion_per_s * self.blood_density_kg_per_m3 * self.blood_specific_heat_j_per_kg_k

    @property
    def decay_length_m(self) -> float:
        """L = sqrt(k / (w_b rho_b c_b))."""
        return float(np.sqrt(self.conductivity_w_per_m_k / self.beta_w_per_m3_k))

    def wall_h_w_per_m2_k(self, diameter_mm: float) -> float:
        """Wall heat-transfer coefficient h = Nu k_b / D."""
        return self.nusselt * self.blood_conductivity_w_per_m_k / (float(diameter_mm) * 1e-3)

    @classmethod
    def from_settings(cls, settings: GuidanceSettings) -> "PennesParams":
        return cls(
            conductivity_w_per_m_k=settings.tissue_conductivity_w_per_m_k,
            perfusion_per_s=settings.perfusion_per_s,
            blood_density_kg_per_m3=settings.blood_density_kg_per_m3,
            blood_specific_heat_j_per_kg_k=settings.blood_specific_heat_j_per_kg_k,
            blood_conductivity_w_per_m_k=settings.blood_conductivity_w_per_m_k,
            nusselt=settings.nusselt,
        )


def periodic_size(n_cells: int, *, grid_mm: float, params: PennesParams) -> int:
    """FFT grid size: the field plus >= 14 decay lengths of tissue before it wraps around."""
    guard = int(np.ceil(14 * params.decay_length_m * 1e3 / grid_mm))
    return int(scipy.fft.next_fast_len(n_cells + guard, real=True))


@lru_cache(maxsize=16)
def _spectrum(size: int, grid_mm: float, params: PennesParams, shift_w_per_m3_k: float = 0.0) -> np.ndarray:
    """Eigenvalues (size, size//2+1) of -k lap + beta + shift on the periodic grid.

    ``shift`` = rho c / dt turns the steady operator into one implicit time step."""
    g = grid_mm * 1e-3
    m = np.arange(size)
    s_row = 4 * np.sin(np.pi * m / size) ** 2
    s_col = 4 * np.sin(np.pi * np.arange(size // 2 + 1) / size) ** 2
    return (
        params.conductivity_w_per_m_k / g**2 * (s_row[:, None] + s_col[None, :])
        + params.beta_w_per_m3_k
        + shift_w_per_m3_k
    )


@lru_cache(maxsize=16)
def _green(size: int, grid_mm: float, params: PennesParams, shift_w_per_m3_k: float = 0.0) -> np.ndarray:
    """Lattice Green's function (size, size): response (K) to 1 W/m^3 in one cell at (0, 0)."""
    g = scipy.fft.irfft2(1.0 / _spectrum(size, grid_mm, params, shift_w_per_m3_k), s=(size, size))
    g.flags.writeable = False
    return g


def _apply_inverse(values: np.ndarray, size: int, grid_mm: float, params: PennesParams,
                   shift_w_per_m3_k: float = 0.0) -> np.ndarray:
    """(-k lap + beta + shift)^-1 applied to a field (n, n) placed at the periodic grid's corner."""
    n0, n1 = values.shape
    spec = scipy.fft.rfft2(values, s=(size, size), workers=1)
    out = scipy.fft.irfft2(spec / _spectrum(size, grid_mm, params, shift_w_per_m3_k), s=(size, size), workers=1)
    return out[:n0, :n1]


class _VesselOperator:
    """Inverse of (free operator + vessels) by Sherman-Morrison-Woodbury; factorised once, applied many times.

    Unknowns of the capacitance system: the lumen's boundary ring (rows replaced by
    theta = 0) and the tissue cells next to it (diagonal changed from a tissue face
    to half a cell of tissue in series with the wall film 1/h).
    """

    def __init__(self, h: np.ndarray, scale: np.ndarray, *, grid_mm: float, params: PennesParams,
                 shift_w_per_m3_k: float = 0.0) -> None:
        n0, n1 = h.shape
        self.shape = (n0, n1)
        self.grid_mm, self.params, self.shift = grid_mm, params, float(shift_w_per_m3_k)
        self.size = periodic_size(max(n0, n1), grid_mm=grid_mm, params=params)
        self.lumen = h > 0
        g = grid_mm * 1e-3
        k = params.conductivity_w_per_m_k
        k_face = k / g**2
        pad_l, pad_h, pad_s = np.pad(self.lumen, 1), np.pad(h, 1), np.pad(scale, 1)
        delta = np.zeros_like(h)
        ring = np.zeros_like(self.lumen)
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            nb_l = pad_l[1 + dy : 1 + dy + n0, 1 + dx : 1 + dx + n1]
            nb_h = pad_h[1 + dy : 1 + dy + n0, 1 + dx : 1 + dx + n1]
            nb_s = pad_s[1 + dy : 1 + dy + n0, 1 + dx : 1 + dx + n1]
            face = ~self.lumen & nb_l
            c_wall = 1.0 / (g * (g / (2 * k) + 1.0 / np.where(face, nb_h, 1.0)))
            delta[face] += nb_s[face] * c_wall[face] - k_face
            ring |= self.lumen & ~nb_l
        edge = np.zeros_like(self.lumen)  # lumen cells on the grid edge also border (outside) tissue
        edge[[0, -1], :] = True
        edge[:, [0, -1]] = True
        ring |= self.lumen & edge
        ring_idx = np.flatnonzero(ring.ravel())
        wall_idx = np.flatnonzero((delta != 0).ravel())
        self.idx = np.r_[ring_idx, wall_idx]
        self.n_ring = ring_idx.size
        self.d_wall = delta.ravel()[wall_idx]
        iy, ix = np.divmod(self.idx, n1)
        # G depends on |dy|, |dx| only (the spectrum is even): a small quadrant table stays in cache
        quadrant = np.ascontiguousarray(_green(self.size, grid_mm, params, self.shift)[:n0, :n1])
        offset = np.abs(np.subtract.outer(iy, iy))
        offset *= n1
        offset += np.abs(np.subtract.outer(ix, ix))
        kmat = quadrant.ravel().take(offset)
        kmat[self.n_ring :] *= self.d_wall[:, None]
        kmat[self.n_ring :, self.n_ring :] += np.eye(wall_idx.size)
        with _single_thread_blas():
            self.lu = scipy.linalg.lu_factor(kmat, check_finite=False, overwrite_a=True)

    @property
    def unknowns(self) -> int:
        return int(self.idx.size)

    def solve(self, rhs_w_per_m3: np.ndarray, *, free_solution: np.ndarray | None = None) -> np.ndarray:
        """theta (K) with vessels for a right-hand side (W/m^3) that is 0 in the lumens."""
        x0 = free_solution if free_solution is not None else _apply_inverse(
            rhs_w_per_m3, self.size, self.grid_mm, self.params, self.shift)
        flat_x0, flat_q = x0.ravel(), np.asarray(rhs_w_per_m3, dtype=float).ravel()
        ring, wall = self.idx[: self.n_ring], self.idx[self.n_ring :]
        rhs = np.r_[flat_x0[ring] - flat_q[ring], self.d_wall * flat_x0[wall]]
        with _single_thread_blas():
            mu = scipy.linalg.lu_solve(self.lu, rhs, check_finite=False)
        density = np.zeros(flat_x0.size)
        np.add.at(density, self.idx, mu)
        theta = x0 - _apply_inverse(density.reshape(self.shape), self.size, self.grid_mm, self.params, self.shift)
        theta[self.lumen] = 0.0
        return theta


def solve_pennes(
    source_w_per_m3: np.ndarray,
    *,
    grid_mm: float,
    params: PennesParams | None = None,
    lumen_h_w_per_m2_k: np.ndarray | None = None,
    wall_scale: np.ndarray | None = None,
    free_solution: np.ndarray | None = None,
) -> np.ndarray:
    """Steady temperature rise on a square grid with optional vessels.

    Parameters
    ----------
    source_w_per_m3 : ndarray, shape (rows, cols)
        Volumetric heat source per cell (W/m^3). Must be 0 inside lumens.
    grid_mm : float
        Cell size (mm).
    params : PennesParams, optional
    lumen_h_w_per_m2_k : ndarray, shape (rows, cols), optional
        > 0 in vessel lumen cells: the wall heat-transfer coefficient h of that
        vessel (W/(m^2 K)); 0 or NaN in tissue.
    wall_scale : ndarray, shape (rows, cols), optional
        Per lumen cell, factor applied to its wall faces' conductance (true
        perimeter / staircase length of its vessel); default 1.
    free_solution : ndarray, shape (rows, cols), optional
        The vessel-free solution for this source if already known (saves two FFTs).

    Returns
    -------
    ndarray, shape (rows, cols), float
        ``T - T_body`` in K (0 in lumens). Tissue outside the grid is perfused
        liver without vessels (the grid is embedded in effectively infinite tissue).
    """
    params = params or PennesParams()
    q = np.asarray(source_w_per_m3, dtype=float)
    n0, n1 = q.shape
    size = periodic_size(max(n0, n1), grid_mm=grid_mm, params=params)
    x0 = _apply_inverse(q, size, grid_mm, params) if free_solution is None else free_solution
    if lumen_h_w_per_m2_k is None:
        return x0
    h = np.nan_to_num(np.asarray(lumen_h_w_per_m2_k, dtype=float))
    if not (h > 0).any():
        return x0
    if np.any(q[h > 0] != 0):
        raise AnalysisError("the applicator lies inside a vessel lumen")
    scale = np.ones_like(h) if wall_scale is None else np.asarray(wall_scale, dtype=float)
    return _VesselOperator(h, scale, grid_mm=grid_mm, params=params).solve(q, free_solution=x0)


def solve_pennes_transient(
    source_w_per_m3: np.ndarray,
    *,
    grid_mm: float,
    duration_s: float,
    time_step_s: float,
    heat_capacity_j_per_m3_k: float,
    params: PennesParams | None = None,
    lumen_h_w_per_m2_k: np.ndarray | None = None,
    wall_scale: np.ndarray | None = None,
) -> np.ndarray:
    """Temperature rise after heating for ``duration_s`` from body temperature (implicit Euler).

    Parameters
    ----------
    source_w_per_m3 : ndarray, shape (rows, cols)
        Constant volumetric source (W/m^3) switched on at t = 0; 0 in lumens.
    grid_mm, params, lumen_h_w_per_m2_k, wall_scale
        As :func:`solve_pennes`.
    duration_s : float
        Heating time (s).
    time_step_s : float
        Implicit Euler step (s); the last step is shortened to end at ``duration_s``.
    heat_capacity_j_per_m3_k : float
        Tissue rho c (J/(m^3 K)).

    Returns
    -------
    ndarray, shape (rows, cols)
        ``T - T_body`` (K) at ``duration_s``. With a constant source the rise grows
        monotonically, so this is also the maximum reached.
    """
    params = params or PennesParams()
    if not (duration_s > 0 and time_step_s > 0 and heat_capacity_j_per_m3_k > 0):
        raise AnalysisError("duration, time step and heat capacity must be positive")
    q = np.asarray(source_w_per_m3, dtype=float)
    h = None if lumen_h_w_per_m2_k is None else np.nan_to_num(np.asarray(lumen_h_w_per_m2_k, dtype=float))
    if h is not None and np.any(q[h > 0] != 0):
        raise AnalysisError("the applicator lies inside a vessel lumen")
    n_full = int(np.floor(duration_s / time_step_s + 1e-9))
    steps = [time_step_s] * n_full
    rest = duration_s - n_full * time_step_s
    if rest > 1e-9 * time_step_s:
        steps.append(rest)
    size = periodic_size(max(q.shape), grid_mm=grid_mm, params=params)
    scale = None if wall_scale is None else np.asarray(wall_scale, dtype=float)
    operators: dict[float, _VesselOperator | None] = {}
    theta = np.zeros_like(q)
    for dt in steps:
        shift = heat_capacity_j_per_m3_k / dt
        if dt not in operators:
            operators[dt] = (
                _VesselOperator(h, np.ones_like(h) if scale is None else scale, grid_mm=grid_mm, params=params,
                                shift_w_per_m3_k=shift)
                if h is not None and (h > 0).any() else None
            )
        rhs = q + shift * theta
        op = operators[dt]
        theta = op.solve(rhs) if op is not None else _apply_inverse(rhs, size, grid_mm, params, shift)
    return theta


@dataclass
class VesselSink:
    """One vessel for the bioheat model: lumen polygon (mm) and diameter (mm)."""

    id: int
    polygon_mm: np.ndarray  # (M, 2)
    diameter_mm: float


@dataclass
class AblationEstimate:
    """Coagulation zone predicted with vessels, relative to the same source without vessels.

    ``mode`` is "steady_equivalent" (source sized so the vessel-free isotherm just
    covers the zone: ``covered_without_vessels`` is then True by construction) or
    "transient" (the user's power per unit length for ``duration_s``)."""

    covered: bool
    predicted_zone_mm: np.ndarray  # (K, 2) polygon, mm
    deficit_mm: dict[int, float | None]
    equivalent_source_w_per_m: float  # source power per unit length used (W/m)
    coagulation_isotherm_c: float
    grid_mm: float
    origin_mm: tuple[float, float]  # centre of cell [0, 0]
    temperature_c: np.ndarray = field(repr=False, default=None)  # (n, n) with vessels
    solve_ms: float = 0.0
    note: str = ""
    mode: str = "steady_equivalent"
    covered_without_vessels: bool = True
    duration_s: float | None = None


def _rasterise(poly_mm: np.ndarray, n: int, origin_mm: np.ndarray, grid_mm: float) -> np.ndarray:
    """Cells whose centre lies inside the polygon (bool (n, n))."""
    import cv2

    shift = 4
    pts = np.round(((poly_mm - origin_mm[None, :]) / grid_mm) * (1 << shift)).astype(np.int32)
    mask = np.zeros((n, n), np.uint8)
    cv2.fillPoly(mask, [pts.reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(bool)


def _bilinear(field: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``field`` at fractional (rows, cols), clamped to the grid."""
    n0, n1 = field.shape
    rows = np.clip(rows, 0.0, n0 - 1.000001)
    cols = np.clip(cols, 0.0, n1 - 1.000001)
    r0 = rows.astype(np.intp)
    c0 = cols.astype(np.intp)
    fr, fc = rows - r0, cols - c0
    flat = np.ascontiguousarray(field).ravel()
    idx = r0 * n1 + c0
    top = flat.take(idx)
    top += (flat.take(idx + 1) - top) * fc
    bottom = flat.take(idx + n1)
    bottom += (flat.take(idx + n1 + 1) - bottom) * fc
    return top + (bottom - top) * fr


def _isotherm_radii(theta: np.ndarray, centre_cell: float, directions: np.ndarray, level_k: float,
                    step_cells: float = 1.0) -> np.ndarray:
    """Distance (cells) along rays from the centre cell at which theta (K) first drops below ``level_k``, (R,)."""
    steps = np.arange(0.0, centre_cell, step_cells)
    rows = centre_cell + steps[None, :] * directions[:, 1:2]
    cols = centre_cell + steps[None, :] * directions[:, 0:1]
    vals = _bilinear(theta, rows, cols)
    below = vals < level_k
    first = np.where(below.any(axis=1), below.argmax(axis=1), len(steps) - 1)
    j = np.maximum(first, 1)
    rr = np.arange(len(directions))
    v0, v1 = vals[rr, j - 1], vals[rr, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip(np.where(v0 != v1, (v0 - level_k) / (v0 - v1), 0.0), 0.0, 1.0)
    out = steps[j - 1] + frac * step_cells
    return np.where(first == 0, 0.0, out)


def _deficits(theta_free, theta_v, rise_k, vessels, lumen_of, centre, n, g, n_rays: int = 240):
    """Per vessel: the largest retreat (mm) of the coagulation front, on rays whose front lies nearest that
    vessel, relative to the vessel-free front (capped at the first lumen wall on the ray)."""
    present = [v for v in vessels if v.id in lumen_of and not geo.points_in_polygon(centre[None, :], v.polygon_mm)[0]]
    deficits: dict[int, float | None] = {v.id: None for v in vessels}
    if not present:
        return deficits
    u = geo.ray_directions(n_rays)
    c = float(n // 2)
    r_free_mm = _isotherm_radii(theta_free, c, u, rise_k) * g
    r_with_mm = _isotherm_radii(theta_v, c, u, rise_k) * g
    r_wall_mm = np.full(n_rays, np.inf)
    for v in present:
        r_wall_mm = np.minimum(r_wall_mm, geo.first_hit_radius(centre, u, v.polygon_mm))
    shortfall_mm = np.maximum(np.minimum(r_free_mm, r_wall_mm) - r_with_mm, 0.0)
    owner = np.zeros(n_rays, dtype=int)
    short = np.flatnonzero(shortfall_mm > 0)
    if len(present) > 1 and short.size:
        # nearest lumen cell of each retreated front point (one distance transform on the grid)
        labels = np.zeros((n, n), dtype=int)
        for k, v in enumerate(present):
            labels[lumen_of[v.id]] = k + 1
        _, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        front = c + r_with_mm[short, None] / g * u[short]  # (x, y) in cells from the grid corner
        col = np.clip(np.round(front[:, 0]).astype(int), 0, n - 1)
        row = np.clip(np.round(front[:, 1]).astype(int), 0, n - 1)
        owner[short] = labels[iy[row, col], ix[row, col]] - 1
    for k, v in enumerate(present):
        mine = owner == k
        deficits[v.id] = float(shortfall_mm[mine].max()) if mine.any() else 0.0
    return deficits


def estimate_ablation(
    zone_mm: np.ndarray,
    vessels: Sequence[VesselSink],
    *,
    applicator_mm: tuple[float, float],
    settings: GuidanceSettings | None = None,
) -> AblationEstimate:
    """Coagulation zone with and without vessels, for an equivalent steady source or a given power and time.

    With ``settings.applicator_power_w_per_m`` None (default) the source is the
    equivalent steady source sized so that, without vessels, the isotherm just
    covers the zone; with a power given, the transient Pennes equation is stepped
    for ``settings.ablation_duration_s`` (a planning computation: ~0.1-1 s).

    Parameters
    ----------
    zone_mm : ndarray, shape (K, 2)
        Planned ablation zone polygon (tumour + ablative margin), (x, y) mm.
    vessels : sequence of VesselSink
        Lumens (mm) with diameters; those outside the field are ignored.
    applicator_mm : (float, float)
        Applicator position (x, y) mm; the field is centred on it.
    settings : GuidanceSettings, optional
        Tissue/blood parameters, isotherm, grid and field size.

    Returns
    -------
    AblationEstimate
        ``covered`` is True when every tissue cell of the zone (shrunk by one grid
        cell, the model's resolution) reaches the isotherm with vessels; ``deficit_mm[id]`` is how much the coagulation
        front retreats toward that vessel (along the ray from the applicator to
        its nearest wall point) compared with no vessels, capped at the wall.
    """
    start_ns = time.perf_counter_ns()
    s = settings or GuidanceSettings()
    params = PennesParams.from_settings(s)
    centre = np.asarray(applicator_mm, dtype=float)
    note = ""
    for g in (float(s.bioheat_grid_mm), 2.0 * float(s.bioheat_grid_mm)):
        n = int(np.round(s.bioheat_field_mm / g))
        n += 1 - n % 2  # odd: the applicator sits on a cell centre
        origin = centre - g * (n // 2)
        q, theta_free = _free_field(n, g, float(s.applicator_radius_mm), params)
        h, scale, lumen_of = _lumens(vessels, q > 0, n, origin, g, params)
        cells = _capacitance_size(h > 0)
        if cells <= s.bioheat_max_boundary_cells:
            break
        note = (
            f"{cells} vessel boundary cells at {g:g} mm exceed {s.bioheat_max_boundary_cells}: "
            f"solved on a {2 * g:g} mm grid"
        )
    transient = s.applicator_power_w_per_m is not None
    if transient:
        rho_c = s.tissue_density_kg_per_m3 * s.tissue_specific_heat_j_per_kg_k
        _, theta_free = _free_field_transient(n, g, float(s.applicator_radius_mm), params, float(s.ablation_duration_s),
                                              float(s.bioheat_time_step_s), rho_c)
        theta_v = (
            solve_pennes_transient(q, grid_mm=g, duration_s=s.ablation_duration_s, time_step_s=s.bioheat_time_step_s,
                                   heat_capacity_j_per_m3_k=rho_c, params=params, lumen_h_w_per_m2_k=h,
                                   wall_scale=scale)
            if lumen_of
            else theta_free
        )
    else:
        theta_v = (
            solve_pennes(q, grid_mm=g, params=params, lumen_h_w_per_m2_k=h, wall_scale=scale, free_solution=theta_free)
            if lumen_of
            else theta_free
        )

    rise_k = s.coagulation_isotherm_c - s.body_temperature_c
    zone = _rasterise(zone_mm, n, origin, g)
    if not zone.any():
        raise AnalysisError("the ablation zone is empty on the bioheat grid")
    if zone[0, :].any() or zone[-1, :].any() or zone[:, 0].any() or zone[:, -1].any():
        raise AnalysisError(
            f"the ablation zone does not fit in the {s.bioheat_field_mm:g} mm bioheat field; enlarge bioheat_field_mm"
        )
    if transient:
        power_w_per_m = float(s.applicator_power_w_per_m)
    else:
        power_w_per_m = rise_k / float(theta_free[zone].min())  # the vessel-free isotherm just covers the zone
    # covered to within one grid cell: every tissue cell of the zone shrunk by one cell reaches the isotherm
    inner = ndimage.binary_erosion(zone)
    tissue_zone = inner & (h <= 0)
    covered = bool(np.all(theta_v[tissue_zone] * power_w_per_m >= rise_k * (1 - 1e-9)))
    covered_free = bool(np.all(theta_free[inner] * power_w_per_m >= rise_k * (1 - 1e-9)))

    deficits = _deficits(theta_free * power_w_per_m, theta_v * power_w_per_m, rise_k, vessels, lumen_of, centre, n, g)
    coag = (theta_v * power_w_per_m >= rise_k).astype(np.uint8)
    predicted = _component_contour(coag, (n // 2, n // 2), origin, g)
    temperature_c = theta_v * power_w_per_m + s.body_temperature_c
    for array in (predicted, temperature_c):  # estimates are shared through the cache: read-only
        array.flags.writeable = False
    return AblationEstimate(
        covered=covered,
        predicted_zone_mm=predicted,
        deficit_mm=deficits,
        equivalent_source_w_per_m=float(power_w_per_m),
        coagulation_isotherm_c=float(s.coagulation_isotherm_c),
        grid_mm=g,
        origin_mm=(float(origin[0]), float(origin[1])),
        temperature_c=temperature_c,
        solve_ms=(time.perf_counter_ns() - start_ns) / 1e6,
        note=note,
        mode="transient" if transient else "steady_equivalent",
        covered_without_vessels=covered_free,
        duration_s=float(s.ablation_duration_s) if transient else None,
    )


def _lumens(vessels, source: np.ndarray, n: int, origin: np.ndarray, g: float, params: PennesParams):
    """Per cell: wall h of the vessel whose lumen it is (0 in tissue), wall-length scale, masks by id."""
    h = np.zeros((n, n))
    scale = np.ones((n, n))
    lumen_of: dict[int, np.ndarray] = {}
    for v in vessels:
        mask = _rasterise(v.polygon_mm, n, origin, g)
        if not mask.any():
            continue
        mask &= ~source
        lumen_of[v.id] = mask
        h[mask] = params.wall_h_w_per_m2_k(v.diameter_mm)
        faces = _wall_faces(mask)
        closed = np.vstack([v.polygon_mm, v.polygon_mm[:1]])
        perimeter = float(np.linalg.norm(np.diff(closed, axis=0), axis=1).sum())
        if faces:
            scale[mask] = min(perimeter / (faces * g), 1.0)
    return h, scale, lumen_of


def _capacitance_size(lumen: np.ndarray) -> int:
    """Number of unknowns of the capacitance system: lumen boundary ring + tissue wall cells."""
    if not lumen.any():
        return 0
    grown = ndimage.binary_dilation(lumen)
    shrunk = ndimage.binary_erosion(lumen, border_value=0)
    return int((grown & ~lumen).sum() + (lumen & ~shrunk).sum())


@lru_cache(maxsize=8)
def _free_field(n: int, grid_mm: float, radius_mm: float, params: PennesParams) -> tuple[np.ndarray, np.ndarray]:
    """Source disc (1 W/m in total) centred on cell (n//2, n//2) and its vessel-free solution (cached)."""
    offsets = grid_mm * (np.arange(n) - n // 2)
    disc = np.hypot(offsets[None, :], offsets[:, None]) <= radius_mm + 1e-9
    q = np.where(disc, 1.0 / (disc.sum() * (grid_mm * 1e-3) ** 2), 0.0)
    theta = solve_pennes(q, grid_mm=grid_mm, params=params)
    q.flags.writeable = False
    theta.flags.writeable = False
    return q, theta


@lru_cache(maxsize=4)
def _free_field_transient(n: int, grid_mm: float, radius_mm: float, params: PennesParams, duration_s: float,
                          time_step_s: float, rho_c_j_per_m3_k: float) -> tuple[np.ndarray, np.ndarray]:
    """Source disc (1 W/m) and its vessel-free temperature rise after ``duration_s`` (cached)."""
    q, _ = _free_field(n, grid_mm, radius_mm, params)
    theta = solve_pennes_transient(q, grid_mm=grid_mm, duration_s=duration_s, time_step_s=time_step_s,
                                   heat_capacity_j_per_m3_k=rho_c_j_per_m3_k, params=params)
    theta.flags.writeable = False
    return q, theta


def _wall_faces(mask: np.ndarray) -> int:
    pad = np.pad(mask, 1)
    inner = pad[1:-1, 1:-1]
    return int(
        (inner & ~pad[1:-1, 2:]).sum() + (inner & ~pad[1:-1, :-2]).sum()
        + (inner & ~pad[2:, 1:-1]).sum() + (inner & ~pad[:-2, 1:-1]).sum()
    )


def _nearest_point(point: np.ndarray, poly: np.ndarray) -> np.ndarray:
    a = poly
    e = np.roll(poly, -1, axis=0) - poly
    t = np.clip(((point[None, :] - a) * e).sum(1) / np.maximum((e * e).sum(1), 1e-18), 0, 1)
    cand = a + t[:, None] * e
    return cand[int(np.argmin(((cand - point[None, :]) ** 2).sum(1)))]


def _component_contour(mask: np.ndarray, seed_rc: tuple[int, int], origin: np.ndarray, g: float) -> np.ndarray:
    """Outer contour (mm) of the mask component containing the seed cell ((0, 2) if none)."""
    import cv2

    if not mask[seed_rc]:
        return np.zeros((0, 2))
    count, labels = cv2.connectedComponents(mask, connectivity=4)
    comp = (labels == labels[seed_rc]).astype(np.uint8)
    contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 2))
    pts = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(float)
    return origin[None, :] + pts * g


class BioheatEstimator:
    """:func:`estimate_ablation` with a small cache keyed on the rasterised geometry.

    A tracked scene that does not move re-uses the last answer; call it from a
    worker thread if the display must never wait (one solve measured in
    ``tools/bench_bioheat.py``).
    """

    def __init__(self, *, max_entries: int = 32) -> None:
        import threading

        self._lock = threading.Lock()  # one estimator may serve a worker thread and the CLI at once
        self._cache: OrderedDict[Any, AblationEstimate] = OrderedDict()
        self.max_entries = int(max_entries)
        self.hits = 0
        self.misses = 0

    def estimate(self, zone_mm, vessels, *, applicator_mm, settings: GuidanceSettings) -> AblationEstimate:
        g = settings.bioheat_grid_mm
        quant = g / 4.0

        def q(a):
            return np.round(np.asarray(a, dtype=float) / quant).astype(np.int64).tobytes()

        key = (
            q(zone_mm), q(applicator_mm),
            tuple((v.id, q(v.polygon_mm), round(float(v.diameter_mm), 2)) for v in vessels),
            settings,
        )
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return hit
            self.misses += 1
        result = estimate_ablation(zone_mm, vessels, applicator_mm=applicator_mm, settings=settings)
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return result
