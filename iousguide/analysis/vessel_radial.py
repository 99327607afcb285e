"""Radial-profile boundary of a round lumen whose interior is not uniformly dark.

A lumen filled with grey (flow noise, reverberation, a low dynamic range) can be brighter
in part of its interior than half-way between its darkest part and the tissue, so a single
iso-level cut stops inside it. Along rays from the lumen's centre, the wall is the brightest
point of the profile near the expected radius; the boundary is where the profile, coming
from the lumen, first crosses half-way (in echo power) between the lumen level and that
wall level. One ``cv2.remap`` samples all rays; the rest is vectorised.
"""

from __future__ import annotations

import cv2
import numpy as np

from iousguide.analysis.imaging import Prepared
from iousguide.analysis.refine import Refined

#: number of rays
N_RAYS = 72
#: a crossing counts when the profile stays above the level over this length on average, mm
SUSTAIN_MM = 0.3


def radial_lumen_boundary(prep: Prepared, core_w: np.ndarray, *, smoothing_mm: float,
                          level_fraction: float = 0.5, step_mm: float = 0.03) -> Refined | None:
    """Boundary of the lumen around a core, from radial echo-power profiles.

    Parameters
    ----------
    prep : Prepared
        The prepared frame (not modified).
    core_w : ndarray (h, w) bool
        The lumen core on the working grid (not modified).
    smoothing_mm : float
        Gaussian sigma of the speckle average of the echo power, mm.
    level_fraction : float
        Boundary level between the lumen (0) and wall (1) power.
    step_mm : float
        Radial sampling step, mm.

    Returns
    -------
    Refined or None
        Contour in frame pixels (``N_RAYS`` vertices); None when no wall is found on most rays.
    """
    ys, xs = np.nonzero(core_w)
    if len(xs) < 3:
        return None
    cxw, cyw = float(xs.mean()), float(ys.mean())
    cx, cy = (float(v) for v in prep.to_frame(cxw, cyw))
    r_core_mm = float(np.sqrt(len(xs) / np.pi) * prep.work_px_mm)
    # one speckle-averaged power window serves both passes (the second centre moves little)
    ux, uy = prep.unit_mm
    reach_mm = 1.5 * (2.0 * r_core_mm + 3.0)
    amp = prep.amplitude
    rows, cols = amp.shape
    x0, x1 = max(int(cx - reach_mm / ux) - 3, 0), min(int(cx + reach_mm / ux) + 4, cols)
    y0, y1 = max(int(cy - reach_mm / uy) - 3, 0), min(int(cy + reach_mm / uy) + 4, rows)
    if x1 - x0 < 5 or y1 - y0 < 5:
        return None
    roi = amp[y0:y1, x0:x1]
    power = cv2.GaussianBlur(roi * roi, (0, 0), sigmaX=smoothing_mm / ux, sigmaY=smoothing_mm / uy,
                             borderType=cv2.BORDER_REFLECT)
    window = (power, x0, y0)
    out = _rays(prep, window, cx, cy, r_core_mm, level_fraction=level_fraction, step_mm=step_mm)
    if out is None:
        return None
    # again from the centre of what was found (the core may be off-centre in the lumen)
    contour = out.contour_px
    m = cv2.moments(contour.astype(np.float32))
    if m["m00"] <= 0:
        return out
    r_mm = float(np.sqrt(abs(m["m00"]) * ux * uy / np.pi))
    again = _rays(prep, window, m["m10"] / m["m00"], m["m01"] / m["m00"], r_mm, level_fraction=level_fraction,
                  step_mm=step_mm)
    return again if again is not None else out


def _rays(prep: Prepared, window: tuple[np.ndarray, int, int], cx: float, cy: float, r_core_mm: float, *,
          level_fraction: float, step_mm: float) -> Refined | None:
    ux, uy = prep.unit_mm
    power, x0, y0 = window
    r_max_mm = 2.0 * r_core_mm + 3.0
    radii_mm = np.arange(0.0, r_max_mm, step_mm, dtype=np.float32)
    theta = np.linspace(0.0, 2 * np.pi, N_RAYS, endpoint=False).astype(np.float32)
    map_x = (cx - x0 + np.cos(theta)[:, None] * radii_mm[None, :] / ux).astype(np.float32)
    map_y = (cy - y0 + np.sin(theta)[:, None] * radii_mm[None, :] / uy).astype(np.float32)
    prof = cv2.remap(power, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    inner = radii_mm <= 0.5 * r_core_mm
    inside = float(np.nanmedian(prof[:, inner])) if inner.any() else float(np.nanmedian(prof[:, :2]))
    # profiles averaged over a sustained length (a single bright speckle is not the wall)
    win = max(int(round(SUSTAIN_MM / step_mm)), 1)
    filled = np.where(np.isfinite(prof), prof, np.nan)
    csum = np.nancumsum(np.concatenate([np.zeros((N_RAYS, 1), np.float32), filled], axis=1), axis=1)
    ahead = np.full(prof.shape, np.nan, np.float64)
    ahead[:, :prof.shape[1] - win + 1] = (csum[:, win:] - csum[:, :-win]) / win  # mean of [i, i + win)
    ahead[~np.isfinite(prof)] = np.nan
    # the wall: the brightest sustained stretch between half the core radius and beyond it
    search = (radii_mm >= 0.5 * r_core_mm) & (radii_mm <= 1.6 * r_core_mm + 2.0)
    seg = np.where(np.isfinite(ahead[:, search]), ahead[:, search], -np.inf)
    k_wall = np.argmax(seg, axis=1)
    wall = seg[np.arange(N_RAYS), k_wall]
    ok = np.isfinite(wall) & (wall > inside * 1.5)
    if ok.mean() < 0.75:
        return None
    level = inside + level_fraction * (wall - inside)
    first = int(np.argmax(search))
    r_edge = np.full(N_RAYS, np.nan)
    rays = np.nonzero(ok)[0]
    sub = seg[rays]
    # the edge: the first sustained rise above the level (at or before the wall), then linear
    # interpolation of the sustained profile between the two samples around the crossing
    above = sub >= level[rays, None]
    k = np.argmax(above, axis=1)
    good = above[np.arange(len(rays)), k] & (k >= 1)
    j = np.clip(k - 1, 0, sub.shape[1] - 2)
    a = sub[np.arange(len(rays)), j]
    b = sub[np.arange(len(rays)), j + 1]
    frac = np.clip((level[rays] - a) / np.where(b - a > 0, b - a, 1.0), 0.0, 1.0)
    # the sustained mean at i covers [i, i + win): its crossing lies half a window before the edge
    r_edge[rays[good]] = radii_mm[first + j[good]] + (frac[good] + 0.5 * (win - 1)) * step_mm
    valid = np.isfinite(r_edge)
    if valid.mean() < 0.75:
        return None
    # fill missing rays and remove speckle spikes: circular median over 5 neighbouring rays
    angles = np.arange(N_RAYS)
    r_edge = np.interp(angles, angles[valid], r_edge[valid], period=N_RAYS)
    stack = np.stack([np.roll(r_edge, k) for k in (-2, -1, 0, 1, 2)])
    r_edge = np.median(stack, axis=0)
    contour = np.stack([cx + np.cos(theta) * r_edge / ux, cy + np.sin(theta) * r_edge / uy], axis=1)
    # a mask on a grid of step_mm... kept coarse: 0.05 mm or the frame pixel, whichever is finer
    px_mm = min(0.05, ux, uy)
    sx, sy = ux / px_mm, uy / px_mm
    ox, oy = int(np.floor(contour[:, 0].min())) - 1, int(np.floor(contour[:, 1].min())) - 1
    w = int(np.ceil((contour[:, 0].max() - ox + 2) * sx))
    h = int(np.ceil((contour[:, 1].max() - oy + 2) * sy))
    mask = np.zeros((h, w), np.uint8)
    grid = np.stack([(contour[:, 0] - ox + 0.5) * sx - 0.5, (contour[:, 1] - oy + 0.5) * sy - 0.5], axis=1)
    cv2.fillPoly(mask, [np.round(grid * 16).astype(np.int32)], 1, shift=4)
    # edge noise: the spread of the boundary radius about its smooth version, mm
    smooth_r = np.real(np.fft.ifft(np.fft.fft(r_edge) * (np.abs(np.fft.fftfreq(N_RAYS)) <= 3 / N_RAYS)))
    edge_sigma_mm = float(np.std(r_edge - smooth_r))
    return Refined(contour_px=contour, mask=mask, origin_px=(ox, oy), scale_xy=(sx, sy), px_mm=px_mm,
                   inside_level=inside, outside_level=float(np.median(wall[ok])), edge_sigma_mm=edge_sigma_mm,
                   hole_fraction=0.0)
