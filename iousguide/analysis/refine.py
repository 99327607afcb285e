"""Sub-pixel boundary of a region at full resolution, at a physically chosen level.

A coarse mask from the working grid tells where the object is. Around it, the
full-resolution echo power (amplitude squared: the quantity the point-spread
function blurs linearly) is averaged over speckle, upsampled bilinearly
(``refine_upsample``) and cut at the level ``inside + f * (outside - inside)``
(``f = edge_level_fraction``; 0.5 is where a blurred step crosses its edge). The boundary is
the in/out pixel border of that cut on the upsampled grid, i.e. within
``1 / (2 * refine_upsample)`` frame pixel of the level crossing, not a staircase of
frame-pixel centres.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from iousguide.analysis.imaging import Prepared, disc, fill_holes


MAX_REFINE_SIDE_PX = 200


@dataclass
class Refined:
    """A refined region.

    Attributes
    ----------
    contour_px : ndarray (N, 2) float64
        Closed boundary in frame pixels (x, y).
    mask : ndarray (h, w) uint8
        Region on the refinement grid.
    origin_px : (int, int)
        Frame pixel (x, y) of the refinement ROI's top-left.
    scale_xy : (float, float)
        Refinement pixels per frame pixel in x and y.
    px_mm : float
        Refinement pixel size in (nominal) mm, isotropic.
    inside_level, outside_level : float
        Mean echo power inside and outside used for the boundary level.
    edge_sigma_mm : float
        Boundary position noise: residual speckle std / power gradient at the boundary.
    hole_fraction : float
        Part of the (filled) region that was a hole at the first cut (a ring has a large one).
    """

    contour_px: np.ndarray
    mask: np.ndarray
    origin_px: tuple[int, int]
    scale_xy: tuple[float, float]
    px_mm: float
    inside_level: float
    outside_level: float
    edge_sigma_mm: float
    hole_fraction: float = 0.0


def refine_region(prep: Prepared, coarse: np.ndarray, bbox_w: tuple[int, int, int, int], *, dark: bool,
                  smoothing_mm: float, upsample: int, level_fraction: float, margin_mm: float,
                  exclude_frame: np.ndarray | None = None, fill: bool = True,
                  outside_cap: float | None = None, exclude_fill: float | None = None,
                  sectors: int = 0, band_limit_mm: float | None = None, passes: int = 1,
                  keep_core: bool = False) -> Refined | None:
    """Refine one region of the working grid at full resolution.

    Parameters
    ----------
    prep : Prepared
    coarse : ndarray (h, w) bool or uint8
        The region on the working grid (whole working image).
    bbox_w : (x, y, width, height)
        Bounding box of the region on the working grid.
    dark : bool
        True when the region is darker than its surroundings.
    smoothing_mm : float
        Gaussian sigma of the speckle average at full resolution.
    upsample : int
        Refinement grid pixels per frame pixel (isotropic in mm).
    level_fraction : float
        Boundary level between inside (0) and outside (1) amplitude.
    margin_mm : float
        Context around the bounding box.
    exclude_frame : ndarray (rows, cols) bool, optional
        Frame pixels that never belong to the region (e.g. vessel lumens for a tumour).
    fill : bool
        Fill holes of the region (halo lesions, lumens with noise).
    exclude_fill : float, optional
        Power written into the excluded pixels (and a 0.5 mm skirt) before averaging, so a
        lumen next to the region does not darken the tissue gap between them.
    sectors : int
        When > 0 (lumens): the outside level is taken per angular sector around the region;
        a first cut uses the darkest sector (no leak into a neighbouring dark lesion), a second
        cut uses each sector's own wall level within 1.5 mm of the first boundary.
    keep_core : bool
        The coarse region deeper than 1 mm from its edge always belongs to the object (a halo
        lesion whose ring breaks up in speckle keeps its centre); only the boundary moves.
    passes : int
        Number of per-direction passes after the first cut (with ``sectors``).
    band_limit_mm : float, optional
        The refined region may not extend further than this outside the coarse region.
    outside_cap : float, optional
        Upper bound of the outside power (the tissue power at this depth): a bright wall
        (portal sheath) must not lift the level above tissue, or the region leaks into it.

    Returns
    -------
    Refined or None
        None when the region vanishes at full resolution.
    """
    amp = prep.amplitude
    rows, cols = amp.shape
    ux, uy = prep.unit_mm
    bx, by, bw, bh = bbox_w
    x0f, y0f = prep.to_frame(bx - 0.5, by - 0.5)
    x1f, y1f = prep.to_frame(bx + bw - 0.5, by + bh - 0.5)
    mx, my = margin_mm / ux, margin_mm / uy
    x0, y0 = max(int(np.floor(x0f - mx)), 0), max(int(np.floor(y0f - my)), 0)
    x1, y1 = min(int(np.ceil(x1f + mx)) + 1, cols), min(int(np.ceil(y1f + my)) + 1, rows)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return None
    roi = amp[y0:y1, x0:x1]
    roi = roi * roi  # mean power is what the point-spread function blurs linearly
    if exclude_frame is not None and exclude_fill is not None:
        excl_roi = exclude_frame[y0:y1, x0:x1].astype(np.uint8)
        if excl_roi.any():
            excl_roi = cv2.dilate(excl_roi, disc(0.5 / min(ux, uy))).astype(bool)
            roi[excl_roi] = exclude_fill
    sig_x, sig_y = smoothing_mm / ux, smoothing_mm / uy
    blurred = cv2.GaussianBlur(roi, (0, 0), sigmaX=sig_x, sigmaY=sig_y, borderType=cv2.BORDER_REFLECT)
    # refinement grid: ``upsample`` per frame pixel, but no finer than MAX_REFINE_SIDE_PX over
    # the region (a large lumen needs no 0.05 mm grid: its edge is averaged over many pixels)
    factor = min(float(upsample), max(1.0, MAX_REFINE_SIDE_PX / max(x1 - x0, y1 - y0)))
    px_mm = min(ux, uy) / factor
    sx, sy = ux / px_mm, uy / px_mm
    out_w, out_h = max(int(round((x1 - x0) * sx)), 2), max(int(round((y1 - y0) * sy)), 2)
    sx, sy = out_w / (x1 - x0), out_h / (y1 - y0)
    up = cv2.resize(blurred, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    # coarse mask on the refinement grid: working -> frame -> refinement coordinates
    cw = coarse.astype(np.uint8)
    # affine map refinement (u, v) -> working (x, y)
    fxw, fyw = prep.scale_xy
    ax = fxw / sx
    ay = fyw / sy
    bxw = (x0 - 0.5 + 0.5 / sx + 0.5) * fxw - 0.5 - 0.0  # working x of refinement pixel 0 centre
    byw = (y0 - 0.5 + 0.5 / sy + 0.5) * fyw - 0.5
    m = np.array([[ax, 0.0, bxw], [0.0, ay, byw]], dtype=np.float64)
    coarse_up = cv2.warpAffine(cw, m, (out_w, out_h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if not coarse_up.any():
        return None
    band_px = max(1.0 / px_mm, 2.0)  # 1 mm
    d_in = cv2.distanceTransform(coarse_up, cv2.DIST_L2, 3)
    d_out = cv2.distanceTransform(1 - coarse_up, cv2.DIST_L2, 3)
    rim = (d_in > 0.5 * band_px) & (d_in <= 1.5 * band_px)
    if not rim.any():
        rim = (d_in > 0) & (d_in <= band_px)
    if not rim.any():
        rim = coarse_up.astype(bool)
    ring = (d_out > 1.0 * band_px) & (d_out <= 2.0 * band_px)
    excl_up = None
    if exclude_frame is not None:
        excl_up = cv2.resize(exclude_frame[y0:y1, x0:x1].astype(np.uint8), (out_w, out_h),
                             interpolation=cv2.INTER_NEAREST)
        if excl_up.any():
            ring &= cv2.distanceTransform(1 - excl_up, cv2.DIST_L2, 3) > band_px
        excl_up = excl_up.astype(bool)
    if not ring.any():
        ring = ~coarse_up.astype(bool)
        if not ring.any():
            return None
    inside = float(np.median(up[rim]))
    outside_vals = up[ring]
    coarse_b = coarse_up.astype(bool)
    if sectors:
        # the darkest neighbour sets the first level (no leak into an adjacent hypoechoic lesion)
        ys, xs = np.nonzero(coarse_b)
        cx, cy = float(xs.mean()), float(ys.mean())
        out_sec = _sector_means(up, ring, cx, cy, sectors)
        outside = float(np.nanmin(out_sec)) if np.isfinite(out_sec).any() else float(np.mean(outside_vals))
    else:
        outside = float(np.mean(outside_vals))
    if outside_cap is not None:
        outside = min(outside, float(outside_cap))
    if dark and not outside > inside or (not dark and not inside > outside):
        return None
    # a blurred step crosses half its power at the edge: the level is set in power
    level = inside + level_fraction * (outside - inside)
    region = (up < level) if dark else (up > level)
    if keep_core:
        region |= d_in > band_px  # the coarse interior is the object (an isoechoic lesion centre)
    if band_limit_mm is not None:
        region &= d_out <= band_limit_mm / px_mm
    unfilled = _select(region, coarse_b, excl_up, False)
    if unfilled is None:
        return None
    mask = _fill(unfilled, coarse_b, excl_up) if fill else unfilled
    hole_fraction = 1.0 - float(np.count_nonzero(unfilled)) / max(float(np.count_nonzero(mask)), 1.0)
    if exclude_fill is not None and excl_up is not None and excl_up.any():
        # the filled skirt (0.5 mm around an excluded lumen) hides the last half millimetre
        # between region and lumen: where the region reaches the skirt, it reaches the lumen
        # (a gap below the resolution of the image is not measured as one)
        skirt_px = 0.5 / px_mm + 1.0
        d_ex = cv2.distanceTransform((~excl_up).astype(np.uint8), cv2.DIST_L2, 3)
        skirt = (d_ex > 0) & (d_ex <= skirt_px)
        near_region = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 3) <= skirt_px + 1.0
        mask = mask | (skirt & near_region).astype(np.uint8)
    if sectors and dark:
        # further passes: each direction at half power between the lumen and *its* wall (bright
        # sheath, tissue or lesion), within 1 mm of the first boundary so nothing leaks;
        # repeated because each pass moves the boundary closer to the wall it samples
        first = mask
        first_b = first.astype(bool)
        d_first = cv2.distanceTransform(1 - first, cv2.DIST_L2, 3)
        band_idx = band_sector = None
        for _ in range(passes):
            d_out0 = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 3)
            near = (d_out0 > 0.4 * band_px) & (d_out0 <= 1.0 * band_px)
            if excl_up is not None:
                near &= ~excl_up
            ys, xs = np.nonzero(mask)
            cx, cy = float(xs.mean()), float(ys.mean())
            # the wall is what lies right outside the boundary in each direction: a bright
            # sheath the previous cut stopped short of, tissue, or a dark halo (never beyond it)
            out_sec = _sector_means(up, near, cx, cy, sectors)
            if not np.isfinite(out_sec).any():
                break
            out_sec = np.where(np.isfinite(out_sec), out_sec, np.nanmedian(out_sec))
            levels = inside + level_fraction * (np.maximum(out_sec, inside) - inside)
            if band_idx is None:
                band_idx = np.nonzero(d_first <= band_px)
                band_sector = _sector_of(band_idx[1], band_idx[0], cx, cy, sectors)
            region2 = np.zeros(up.shape, dtype=bool)
            region2[band_idx] = up[band_idx] < levels[band_sector]
            mask2 = _select(region2, first_b, excl_up, fill)
            if mask2 is None:
                break
            mask = mask2
            outside = float(np.mean(out_sec))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    contour = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)
    if len(contour) < 5:
        return None
    contour = _shift_outward(contour, 0.5)
    # edge noise: residual speckle std in the ring over the gradient at the boundary
    ci = np.clip(np.round(contour).astype(int), 0, [out_w - 1, out_h - 1])
    gx, gy = _sobel_at(up, ci[:, 0], ci[:, 1])
    grad = float(np.median(np.hypot(gx, gy))) / px_mm  # power / mm
    noise = float(np.std(outside_vals))
    edge_sigma_mm = noise / grad if grad > 0 else float("inf")
    frame_pts = np.empty_like(contour)
    frame_pts[:, 0] = x0 + (contour[:, 0] + 0.5) / sx - 0.5
    frame_pts[:, 1] = y0 + (contour[:, 1] + 0.5) / sy - 0.5
    return Refined(contour_px=frame_pts, mask=mask, origin_px=(x0, y0), scale_xy=(sx, sy), px_mm=px_mm,
                   inside_level=inside, outside_level=outside, edge_sigma_mm=min(edge_sigma_mm, 10.0),
                   hole_fraction=hole_fraction)


def _sobel_at(img: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 Sobel derivatives / 8 (d/dx, d/dy per pixel) at the given pixels only, with the
    border reflected as ``cv2.Sobel`` does (BORDER_REFLECT_101); float64 arrays."""
    h, w = img.shape
    def at(dx: int, dy: int) -> np.ndarray:
        x = np.abs(xs + dx)
        y = np.abs(ys + dy)
        x = np.where(x > w - 1, 2 * (w - 1) - x, x)
        y = np.where(y > h - 1, 2 * (h - 1) - y, y)
        return img[y, x].astype(np.float64)
    p = {(dx, dy): at(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)}
    gx = (p[1, -1] + 2 * p[1, 0] + p[1, 1] - p[-1, -1] - 2 * p[-1, 0] - p[-1, 1]) / 8.0
    gy = (p[-1, 1] + 2 * p[0, 1] + p[1, 1] - p[-1, -1] - 2 * p[0, -1] - p[1, -1]) / 8.0
    return gx, gy


def _sector_of(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, sectors: int) -> np.ndarray:
    ang = np.arctan2(ys - cy, xs - cx)
    return np.clip(((ang + np.pi) / (2 * np.pi) * sectors).astype(np.int32), 0, sectors - 1)


def _sector_means(values: np.ndarray, where: np.ndarray, cx: float, cy: float, sectors: int) -> np.ndarray:
    """Mean of ``values`` over ``where`` per angular sector around (cx, cy); NaN when too few."""
    ys, xs = np.nonzero(where)
    if len(xs) == 0:
        return np.full(sectors, np.nan)
    k = _sector_of(xs, ys, cx, cy, sectors)
    sums = np.bincount(k, weights=values[ys, xs], minlength=sectors)
    counts = np.bincount(k, minlength=sectors)
    out = np.full(sectors, np.nan)
    ok = counts >= 5
    out[ok] = sums[ok] / counts[ok]
    return out


def _select(region: np.ndarray, seed: np.ndarray, exclude: np.ndarray | None, fill: bool) -> np.ndarray | None:
    """The connected component of ``region`` overlapping ``seed`` most (uint8 mask), holes filled."""
    region = region.astype(np.uint8)
    if exclude is not None:
        region[exclude] = 0
    n, labels, _, _ = cv2.connectedComponentsWithStats(region, connectivity=8)
    if n <= 1:
        return None
    overlap = np.bincount(labels[seed], minlength=n)
    overlap[0] = 0
    best = int(np.argmax(overlap))
    if overlap[best] == 0:
        return None
    mask = (labels == best).astype(np.uint8)
    return _fill(mask, seed, exclude) if fill else mask


def _fill(mask: np.ndarray, seed: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
    """Holes of a selected component filled (a ring closed by an excluded region still encloses)."""
    if exclude is not None and exclude.any():
        # a ring closed by an excluded region (a halo against a vessel) still encloses
        ex = exclude.astype(np.uint8)
        mask = fill_holes(mask | ex)
        n2, lab2, _, _ = cv2.connectedComponentsWithStats(mask & (1 - ex), connectivity=8)
        if n2 > 1:
            ov = np.bincount(lab2[seed], minlength=n2)
            ov[0] = 0
            mask = (lab2 == int(np.argmax(ov))).astype(np.uint8)
        return mask
    return fill_holes(mask)


def smooth_contour(contour_px: np.ndarray, *, sigma_mm: float, unit_mm: tuple[float, float]) -> np.ndarray:
    """Low-pass a closed contour along its length (speckle-scale raggedness is noise).

    Parameters
    ----------
    contour_px : ndarray (N, 2) float
        Closed contour in frame pixels.
    sigma_mm : float
        Gaussian sigma along the arc length, in (nominal) mm.
    unit_mm : (float, float)
        Pixel size x, y.

    Returns
    -------
    ndarray (M, 2) float64
        Smoothed contour resampled every ~``sigma_mm / 4`` (at most 720 points), frame pixels.
    """
    pts = np.asarray(contour_px, dtype=np.float64).reshape(-1, 2)
    unit = np.asarray(unit_mm, dtype=np.float64)
    mm = pts * unit
    seg = np.hypot(*(np.roll(mm, -1, axis=0) - mm).T)
    total = float(seg.sum())
    if total <= 0 or len(pts) < 8 or sigma_mm <= 0:
        return pts
    n = int(min(max(total / (sigma_mm / 4.0), 32), 720))
    s_cum = np.concatenate([[0.0], np.cumsum(seg)])
    closed = np.vstack([mm, mm[:1]])
    t = np.linspace(0.0, total, n, endpoint=False)
    res = np.stack([np.interp(t, s_cum, closed[:, 0]), np.interp(t, s_cum, closed[:, 1])], axis=1)
    sigma_n = sigma_mm / (total / n)
    freqs = np.fft.fftfreq(n)
    gain = np.exp(-2.0 * (np.pi * freqs * sigma_n) ** 2)
    out = np.real(np.fft.ifft(np.fft.fft(res, axis=0) * gain[:, None], axis=0))
    return out / unit


def _shift_outward(contour: np.ndarray, distance_px: float) -> np.ndarray:
    """Move the pixel-centre boundary of a mask half a pixel outward (to the in/out border)."""
    prev = np.roll(contour, 1, axis=0)
    nxt = np.roll(contour, -1, axis=0)
    tangent = nxt - prev
    norm = np.hypot(tangent[:, 0], tangent[:, 1])
    norm[norm == 0] = 1.0
    # findContours traces outer borders counter-clockwise in image coordinates (y down):
    # decide the outward side from the signed area instead of assuming it
    area2 = float(np.sum(contour[:, 0] * np.roll(contour[:, 1], -1) - np.roll(contour[:, 0], -1) * contour[:, 1]))
    sign = 1.0 if area2 > 0 else -1.0
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1) / norm[:, None] * sign
    return contour + distance_px * normal
