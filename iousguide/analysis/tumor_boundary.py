"""Tumour edge placed along normals at the half-way level between local inside and outside.

The phantom truth (and the clinical definition) puts a lesion's outline at the outer edge of
its halo. A region-wide inside level taken over a rim that includes an isoechoic or
slightly echogenic centre is too bright, so a half-way cut of that level lies too far out
(outlines 4-20 % too large in area). Here each point of a first outline is moved along its
outward normal to the place where the echo power, averaged *along* the outline (not across
it, so the edge stays sharp), crosses half-way between the darkest (brightest for a bright
lesion) level just inside the edge - the halo or the lesion body - and the tissue level just
outside it.
"""

from __future__ import annotations

import cv2
import numpy as np

from iousguide.analysis.imaging import Prepared, disc
from iousguide.analysis.refine import _dist_to

#: profile sampling along the normal, mm (negative = inwards)
PROFILE_STEP_MM = 0.1
PROFILE_IN_MM = 3.0
PROFILE_OUT_MM = 3.5
#: the extreme (halo / body) level is searched this far inside ... outside the first edge, mm
EXTREME_SEARCH_MM = (-3.0, 0.5)
#: tissue level: median of the averaged profile in this range outside the first edge, mm
OUTSIDE_RANGE_MM = (2.0, 3.5)
#: local tissue level: this range beyond a first crossing at the depth's tissue level, mm
NEAR_RANGE_MM = (0.4, 1.8)
#: bright lesion: inside level = mean of the averaged profile over this range of the first outline, mm
PLATEAU_MM = (-2.0, -0.5)
#: bright lesion: the edge is the outermost crossing between these offsets, mm (the first outline
#: is the convex hull of the region cut, which lies on or outside the edge)
BRIGHT_CROSSING_MM = (-0.5, 2.0)
#: bright lesion: no point moves further outwards than this, mm
BRIGHT_MAX_OUT_MM = 2.0
#: dark lesion against a bright wall (a portal pedicle's Glissonian sheath): where the profile,
#: within SHEATH_REACH_MM beyond its crossing at the tissue level, rises SHEATH_MIN_DB or more above
#: the tissue of its depth, the step at the edge is lesion -> wall, not lesion -> tissue, and the
#: edge is half-way between the lesion and the wall (with tissue as the outer level, the blurred
#: wall lifts the profile and the cut lies ~1.5 blur sigmas inside the lesion: every distance to
#: that vessel read long, the unsafe direction); such a point may move out up to SHEATH_MAX_OUT_MM
SHEATH_STEP = True
SHEATH_REACH_MM = 0.7
SHEATH_MIN_DB = 4.0
SHEATH_MAX_OUT_MM = 1.0


def _resample_closed(points_mm: np.ndarray, step_mm: float) -> np.ndarray:
    closed = np.vstack([points_mm, points_mm[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    total = float(s[-1])
    if total <= 0:
        return points_mm.copy()
    n = max(int(round(total / step_mm)), 8)
    t = np.linspace(0.0, total, n, endpoint=False)
    return np.stack([np.interp(t, s, closed[:, 0]), np.interp(t, s, closed[:, 1])], axis=1)


def _row_median(values: np.ndarray) -> np.ndarray:
    """``np.median(values, axis=1)`` of a 2-D float array, the same values and dtype with less
    work: the middle order statistic(s) of each sorted row (the two middle ones added and
    halved, as np.median's mean of them does; sorting a short row is faster than partitioning
    it); an array holding NaN goes to np.median itself."""
    n = values.shape[1]
    if n == 0 or np.isnan(values).any():
        return np.median(values, axis=1)
    k = n // 2
    part = np.sort(values, axis=1)
    if n % 2:
        return part[:, k]
    return (part[:, k - 1] + part[:, k]) / 2


def _circular_mean(values: np.ndarray, half: int, axis: int = 0) -> np.ndarray:
    if half <= 0:
        return values
    n = values.shape[axis]
    half = min(half, (n - 1) // 2)
    pad = np.concatenate([np.take(values, np.arange(n - half, n), axis=axis), values,
                          np.take(values, np.arange(half), axis=axis)], axis=axis)
    c = np.cumsum(pad, axis=axis, dtype=np.float64)
    c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
    k = 2 * half + 1
    return (np.take(c, np.arange(k, n + k), axis=axis) - np.take(c, np.arange(n), axis=axis)) / k


def place_edge(prep: Prepared, contour_px: np.ndarray, *, dark: bool, level_fraction: float = 0.5,
               radial_sigma_mm: float = 0.15, tangential_mm: float = 3.0, max_shift_mm: float = 2.0, max_out_mm: float = 0.2, min_contrast_db: float = 3.0,
               exclude_frame: np.ndarray | None = None, exclude_power: float | None = None,
               bright_crossing_mm: tuple[float, float] = BRIGHT_CROSSING_MM,
               bright_max_out_mm: float = BRIGHT_MAX_OUT_MM,
               plateau_mm: tuple[float, float] = PLATEAU_MM,
               hold_frame: np.ndarray | None = None, reach_touching: bool = True) -> np.ndarray:
    """Move a closed lesion outline to the local half-way level along its normals.

    Parameters
    ----------
    prep : Prepared
        The prepared frame (its full-resolution ``amplitude`` is read, never written).
    contour_px : ndarray (N, 2) float
        First outline in frame pixels (x, y), closed (last point not repeated).
    dark : bool
        True for a hypoechoic lesion or a halo (the edge is a dark-to-tissue step).
    level_fraction : float
        Edge level between the inside extreme (0) and the outside tissue (1), in power.
    radial_sigma_mm : float
        Gaussian sigma of the power average (small: the edge stays sharp across the outline).
    tangential_mm : float
        Length of outline over which profiles are averaged (speckle reduction along the edge).
    max_shift_mm : float
        No point moves further inwards than this.
    max_out_mm : float
        No point moves further outwards than this (the first outline already reaches the
        tissue; beyond it lie abutting lumens and bright portal sheaths, not lesion).
    min_contrast_db : float
        A profile moves its point only when tissue and the inside extreme (averaged over
        0.5 mm around it) differ by this much (the lesion map's contrast).
    exclude_frame : ndarray (rows, cols) bool, optional
        Frame pixels (vessel lumens) whose power is replaced by ``exclude_power`` (with a 0.5 mm
        skirt) so a lumen next to the lesion is not taken for its halo.
    exclude_power : float, optional
    bright_crossing_mm : (float, float)
        Bright lesion: the edge is the outermost crossing between these offsets from the first
        outline, mm (default: a convex-hull first outline, on or outside the edge).
    bright_max_out_mm : float
        Bright lesion: no point moves further outwards than this, mm.
    plateau_mm : (float, float)
        Bright lesion: its level is the mean of the profile over these offsets, mm.
    hold_frame : ndarray (rows, cols) bool, optional
        Frame pixels where a point of the first outline does not move (its neighbours' moves
        still reach it through the smoothing along the outline).
    reach_touching : bool
        A point of the first outline within the skirt of an excluded lumen stays touching it
        (moved onto the lumen) unless its profile measured a gap (a dark lesion). False: no
        point is drawn onto a lumen.

    Returns
    -------
    ndarray (M, 2) float64
        The moved outline in frame pixels, resampled at about 0.25 mm; the input contour
        (as float64) when it cannot be measured.
    """
    pts = np.asarray(contour_px, dtype=np.float64)
    if len(pts) < 8:
        return pts.copy()
    ux, uy = prep.unit_mm
    amp = prep.amplitude
    rows, cols = amp.shape
    tissue_power = prep.tissue_power_row
    p_mm = _resample_closed(pts * (ux, uy), 0.25)
    n = len(p_mm)
    # outward normals: rotate the central-difference tangent; flip when they point inwards
    tan = np.roll(p_mm, -1, axis=0) - np.roll(p_mm, 1, axis=0)
    nrm = np.stack([tan[:, 1], -tan[:, 0]], axis=1)
    nrm /= np.maximum(np.hypot(*nrm.T), 1e-9)[:, None]
    area2 = float(np.sum(p_mm[:, 0] * np.roll(p_mm[:, 1], -1) - np.roll(p_mm[:, 0], -1) * p_mm[:, 1]))
    if area2 < 0:
        nrm = -nrm
    # region of interest around the outline
    reach = PROFILE_OUT_MM + 2.0
    x0 = max(int(np.floor(pts[:, 0].min() - reach / ux)), 0)
    y0 = max(int(np.floor(pts[:, 1].min() - reach / uy)), 0)
    x1 = min(int(np.ceil(pts[:, 0].max() + reach / ux)) + 1, cols)
    y1 = min(int(np.ceil(pts[:, 1].max() + reach / uy)) + 1, rows)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return pts.copy()
    power = amp[y0:y1, x0:x1].astype(np.float32) ** 2
    touching = np.zeros(n, dtype=bool)
    if exclude_frame is not None and exclude_power is not None:
        ex = exclude_frame[y0:y1, x0:x1].astype(np.uint8)
        if ex.any():
            # points of the first outline that reach an abutting lumen (within its 0.5 mm skirt)
            # stay there when their edge is not measured outside the skirt: the lesion touches
            # the lumen, and a gap below the image resolution is not measured as one
            # (distances only up to the one compared: over the lumens' bounding box grown by it)
            touch_mm = 0.5 + 2.0 * max(ux, uy)
            d_ex = _dist_to(ex, touch_mm / min(ux, uy) + 1.0)
            px_i = np.clip(np.round(p_mm[:, 0] / ux - x0).astype(int), 0, x1 - x0 - 1)
            py_i = np.clip(np.round(p_mm[:, 1] / uy - y0).astype(int), 0, y1 - y0 - 1)
            touching = d_ex[py_i, px_i] * min(ux, uy) <= touch_mm
            ex = cv2.dilate(ex, disc(0.5 / min(ux, uy))).astype(bool)
            power[ex] = exclude_power
    power = cv2.GaussianBlur(power, (0, 0), sigmaX=max(radial_sigma_mm / ux, 0.3),
                             sigmaY=max(radial_sigma_mm / uy, 0.3), borderType=cv2.BORDER_REFLECT)
    t = np.arange(-PROFILE_IN_MM, PROFILE_OUT_MM + 1e-9, PROFILE_STEP_MM)
    sx = (p_mm[:, 0:1] + t[None, :] * nrm[:, 0:1]) / ux - x0
    sy = (p_mm[:, 1:2] + t[None, :] * nrm[:, 1:2]) / uy - y0
    prof = cv2.remap(power, sx.astype(np.float32), sy.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    inside_img = (sx >= 0) & (sx <= x1 - x0 - 1) & (sy >= 0) & (sy <= y1 - y0 - 1)
    prof_avg = _circular_mean(prof.astype(np.float64), int(round(0.5 * tangential_mm / 0.25)), axis=0)
    sign = 1.0 if dark else -1.0
    q = sign * prof_avg  # dark edge: q rises from the inside extreme to tissue
    ext_sel = (t >= EXTREME_SEARCH_MM[0]) & (t <= EXTREME_SEARCH_MM[1])
    out_sel = (t >= OUTSIDE_RANGE_MM[0]) & (t <= OUTSIDE_RANGE_MM[1])
    i_ext0 = int(np.argmax(ext_sel))
    min_ratio = 10.0 ** (min_contrast_db / 10.0)
    half_ext = int(round(0.25 / PROFILE_STEP_MM))
    n_t = len(t)
    rows_k = np.arange(n)
    # inside extreme: darkest (brightest) place of the averaged profile, level averaged over 0.5 mm
    j = i_ext0 + np.argmin(q[:, ext_sel], axis=1)
    csum = np.concatenate([np.zeros((n, 1)), np.cumsum(q, axis=1)], axis=1)
    a0, a1 = np.maximum(j - half_ext, 0), np.minimum(j + half_ext + 1, n_t)
    lo = (csum[rows_k, a1] - csum[rows_k, a0]) / (a1 - a0)
    if not dark:
        # a bright body is speckled: its brightest averaged place is biased high (the cut then
        # lies too far in); its mean level over a plateau inside the first outline is not
        pl = (t >= plateau_mm[0]) & (t <= plateau_mm[1])
        lo = np.mean(q[:, pl], axis=1)
        j = np.full(n, int(np.argmax(t >= bright_crossing_mm[0])))
    hi = _row_median(q[:, out_sel])
    walled = None
    if tissue_power is not None:
        # the tissue level right outside the edge, not 2-3.5 mm beyond a first outline that may
        # already lie outside the lesion, where a bright sheath or another structure begins:
        # a first crossing at the tissue level of the point's depth (row median), then the
        # median of the profile NEAR_RANGE_MM beyond that crossing; of the two tissue estimates
        # the one closer to the lesion level is kept for a dark lesion (a bright sheath or
        # wall beyond is not tissue), the darker one for a bright lesion
        ty = np.clip(np.interp((p_mm[:, 1] / uy + 0.5) * prep.scale_xy[1] - 0.5,
                               np.arange(len(tissue_power)), tissue_power), 1e-12, None)
        lev0 = lo + level_fraction * (sign * ty - lo)
        ab0 = (q >= lev0[:, None]) & (np.arange(n_t)[None, :] >= j[:, None])
        found = ab0.any(axis=1)
        c0 = t[np.argmax(ab0, axis=1)]
        # the window's samples: first index with t >= c0 + NEAR_RANGE_MM[0], up to c0 + NEAR_RANGE_MM[1]
        start = np.searchsorted(t, c0 + NEAR_RANGE_MM[0], side="left")
        stop = np.searchsorted(t, c0 + NEAR_RANGE_MM[1], side="right")
        count = stop - start
        use = found & (count >= 5)
        if use.any():
            width = int(count[use].max())
            cols_k = np.minimum(start[:, None] + np.arange(width)[None, :], n_t - 1)
            win = q[rows_k[:, None], cols_k]
            full = use & (count == width)
            hi_near = np.empty(n)
            if full.any():
                hi_near[full] = _row_median(win[full])
            for k in np.nonzero(use & ~full)[0]:  # windows cut short by the profile's end
                hi_near[k] = np.median(q[k, start[k]:stop[k]])
            hi[use] = np.minimum(hi[use], hi_near[use]) if dark else np.maximum(hi[use], hi_near[use])
        if dark and SHEATH_STEP:
            # the wall right beyond the tissue-level crossing: its brightest averaged level
            cols = np.arange(n_t)[None, :]
            first = np.searchsorted(t, c0, side="left")[:, None]
            stop_wall = np.searchsorted(t, c0 + SHEATH_REACH_MM, side="right")[:, None]
            wall = np.where((cols >= first) & (cols < stop_wall), q, -np.inf).max(axis=1)
            walled = found & (wall >= ty * 10.0 ** (SHEATH_MIN_DB / 10.0))
            hi = np.where(walled, np.maximum(hi, wall), hi)
    p_lo, p_hi = sign * lo, sign * hi  # powers
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(dark, p_hi / p_lo, p_lo / p_hi)
    ok = inside_img[:, out_sel].all(axis=1) & (np.minimum(p_lo, p_hi) > 0) & (ratio >= min_ratio)
    level = lo + level_fraction * (hi - lo)
    # edge: first crossing of the level outwards from the extreme
    above = (q >= level[:, None]) & (np.arange(n_t)[None, :] >= j[:, None])
    m = np.argmax(above, axis=1)
    if not dark:
        # a bright body darkens with depth (its own attenuation) and has dark speckle: the edge
        # is the outermost crossing (bright inside, tissue outside) in BRIGHT_CROSSING_MM
        lim = t <= bright_crossing_mm[1]
        cross = above[:, 1:] & ~above[:, :-1] & lim[None, 1:]
        has = cross.any(axis=1)
        last = n_t - 2 - np.argmax(cross[:, ::-1], axis=1)
        m = np.where(has, last + 1, m)
    ok &= above[rows_k, m] & (m > 0)
    m = np.maximum(m, 1)
    ok &= t[m] <= OUTSIDE_RANGE_MM[0]
    r0, r1 = q[rows_k, m - 1], q[rows_k, m]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(r1 != r0, (level - r0) / (r1 - r0), 0.0)
    offsets = np.where(ok, t[m - 1] + frac * PROFILE_STEP_MM, np.nan)
    good = np.isfinite(offsets)
    if good.sum() < max(8, 0.3 * n):
        return pts.copy()
    idx = np.arange(n)
    offsets = np.interp(idx, idx[good], offsets[good], period=n)
    out_limit = np.full(n, max_out_mm if dark else max(max_out_mm, bright_max_out_mm))
    if walled is not None:
        out_limit[walled] = max(max_out_mm, SHEATH_MAX_OUT_MM)
    in_limit = np.full(n, max_shift_mm)
    if hold_frame is not None:  # (after the wall's allowance: a held point does not move at all)
        hx = np.clip(np.round(p_mm[:, 0] / ux).astype(int), 0, cols - 1)
        hy = np.clip(np.round(p_mm[:, 1] / uy).astype(int), 0, rows - 1)
        held = hold_frame[hy, hx]
        out_limit[held] = 0.0
        in_limit[held] = 0.0
    offsets = np.clip(offsets, -in_limit, out_limit)
    offsets = _circular_mean(offsets, int(round(0.5 * tangential_mm / 0.25)))
    if reach_touching and touching.any():
        # a touching point stays unless its own profile measured the edge further from the
        # lumen than the skirt: that gap is resolved (tissue seen between lesion and lumen) and
        # is measured; a point whose offset was not measured (interpolated from its neighbours)
        # or whose edge lies within the skirt keeps touching
        tk = np.flatnonzero(touching)
        moved_t = p_mm[tk] + offsets[tk, None] * nrm[tk]
        mx_i = np.clip(np.round(moved_t[:, 0] / ux - x0).astype(int), 0, x1 - x0 - 1)
        my_i = np.clip(np.round(moved_t[:, 1] / uy - y0).astype(int), 0, y1 - y0 - 1)
        keep = ~good[tk] | (d_ex[my_i, mx_i] * min(ux, uy) <= touch_mm)
        # ... and reaches the lumen: the skirt filled with tissue power stopped the first
        # outline up to 0.5 mm short of it, a gap the image does not resolve (contact is 0 mm)
        to_lumen_mm = d_ex[py_i[tk], px_i[tk]] * min(ux, uy)
        offsets[tk[keep]] = np.maximum(offsets[tk[keep]], to_lumen_mm[keep])
    moved = p_mm + offsets[:, None] * nrm
    return moved / (ux, uy)


def lowpass_contour(contour_px: np.ndarray, *, unit_mm: tuple[float, float], cutoff_mm: float,
                    step_mm: float = 0.25) -> np.ndarray:
    """Closed outline without its detail shorter than ``cutoff_mm`` (wavelength along the outline).

    A flat-top low-pass of the outline's Fourier series: harmonics whose wavelength along the
    outline is at least twice ``cutoff_mm`` pass unchanged (a Gaussian also attenuates them a
    little, which shrinks every convex outline), those shorter than ``cutoff_mm`` are removed, with
    a raised-cosine step in between (no ringing). Bumps at the speckle scale go, the lesion's
    size and its lobes stay.

    Parameters
    ----------
    contour_px : ndarray (N, 2) float
        Closed outline in frame pixels (x, y), last point not repeated.
    unit_mm : (float, float)
        Pixel size x, y, mm.
    cutoff_mm : float
        Wavelength along the outline under which detail is removed, mm.
    step_mm : float
        Resampling step along the outline, mm.

    Returns
    -------
    ndarray (M, 2) float64
        New array, frame pixels, resampled every ``step_mm``; the input (as float64) when it has
        fewer than 8 points or no length.
    """
    pts = np.asarray(contour_px, dtype=np.float64).reshape(-1, 2)
    unit = np.asarray(unit_mm, dtype=np.float64)
    if len(pts) < 8:
        return pts.copy()
    mm = _resample_closed(pts * unit, step_mm)
    n = len(mm)
    length_mm = float(np.sum(np.hypot(*(np.roll(mm, -1, axis=0) - mm).T)))
    if length_mm <= 0 or n < 8:
        return pts.copy()
    k = np.abs(np.fft.fftfreq(n, d=1.0 / n))  # harmonic number
    with np.errstate(divide="ignore"):
        wavelength = np.where(k > 0, length_mm / np.maximum(k, 1e-12), np.inf)
    # 1 at >= 2 x cutoff, 0 at <= cutoff, raised cosine in frequency between
    f = np.clip((cutoff_mm / wavelength - 0.5) / 0.5, 0.0, 1.0)
    gain = 0.5 * (1.0 + np.cos(np.pi * f))
    out = np.real(np.fft.ifft(np.fft.fft(mm, axis=0) * gain[:, None], axis=0))
    return out / unit
