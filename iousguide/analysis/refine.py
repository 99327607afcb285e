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

from iousguide.analysis.imaging import Prepared, disc, fill_holes, largest_contour


MAX_REFINE_SIDE_PX = 200

#: Pixels below the field of view (``Prepared.valid_bottom_row``) are excluded from a refined
#: region and from the outside level around it (switch for A/B measurements) ...
REFINE_WITHIN_FOV = True
#: ... and a region cut by that edge must reach this fraction of the length it shares with the edge
#: away from it (a lumen cut in half reaches half): a thin band along the edge is the fan's own
#: darker, blurred edge (with the black outside in the ring, its cut used to fail instead).
EDGE_MIN_HEIGHT_FRACTION = 0.3


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
    measured_contour_px : ndarray (M, 2) float64 or None
        The part of the boundary that was measured on the image, in frame pixels, when
        ``contour_px`` was completed beyond it by an assumption (a calcified lesion's deep part
        hidden in its own acoustic shadow); None when all of ``contour_px`` was measured.
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
    measured_contour_px: np.ndarray | None = None


def refine_region(prep: Prepared, coarse: np.ndarray, bbox_w: tuple[int, int, int, int], *, dark: bool,
                  smoothing_mm: float, upsample: int, level_fraction: float, margin_mm: float,
                  exclude_frame: np.ndarray | None = None, fill: bool = True,
                  outside_cap: float | None = None, exclude_fill: float | None = None,
                  sectors: int = 0, band_limit_mm: float | None = None, passes: int = 1,
                  keep_core: bool = False, max_hole_fraction: float | None = None,
                  memo: dict | None = None, along: tuple[float, float] | None = None,
                  visible_from_core: bool = False) -> Refined | None:
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
        lumen next to the region does not darken the tissue gap between them. The skirt is
        not region: a gap to the lumen is measured up to the skirt's outer edge.
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
    max_hole_fraction : float, optional
        For a caller that gives up a region whose first cut has a larger ``hole_fraction`` (a
        ring): such a region is not refined further (no per-direction passes, no boundary). The
        Refined returned then has this ``hole_fraction``, the first cut as ``mask`` and an empty
        ``contour_px`` ((0, 2)); its levels are the first cut's and its edge noise is inf.
    memo : dict, optional
        Filled on a first call with the work that does not depend on ``band_limit_mm``,
        ``max_hole_fraction`` and ``passes`` (smoothing, resampling, the inside level); a
        second call on the same region (same prepared frame and coarse mask objects, the other
        options equal) given the same dict takes it from there: the same result, less work.
        The arrays kept in it are not modified.
    along : (sigma_mm, angle_rad), optional
        A region with straight edges along one direction (a vessel cut along its length): the
        speckle average is stretched to a Gaussian of ``sigma_mm`` along that direction (angle
        from the frame's x axis towards +y), ``smoothing_mm`` across it. Averaging along a
        straight edge does not move its half-power crossing, but it averages out the dark speckle
        pockets (a speckle cell is ~1 mm long laterally) that would otherwise join the region as
        tents on its edge.

    visible_from_core : bool
        Keep only the part of the cut that sees the coarse region's body: a pixel stays when
        the straight segment to its nearest pixel of the coarse region opened by half its
        largest inscribed radius (thin spurs of the coarse region, e.g. into a touching halo,
        removed) lies in the cut (after the ring test of ``max_hole_fraction``, and after every
        per-direction pass). A dark neighbour that touches the object and runs on beyond a
        brighter ridge (a lesion's halo arc around a lumen it touches) is reached only around
        that ridge, so it is not taken in; a convex object is visible from its body everywhere.

    Returns
    -------
    Refined or None
        None when the region vanishes at full resolution.
    """
    # the window, its smoothed power on the refinement grid, the coarse region there and the
    # inside level: the same for a second call on the same region with another band_limit_mm,
    # max_hole_fraction or passes (``memo``)
    key = (id(prep), id(coarse), tuple(bbox_w), dark, smoothing_mm, along, upsample, margin_mm,
           None if exclude_frame is None else id(exclude_frame), exclude_fill)
    if memo is not None and memo.get("key") == key:
        x0, y0, x1, y1, px_mm, sx, sy, out_w, out_h, up, coarse_up, band_px, d_in, inside, off_fov_up = memo["prefix"]
    else:
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
        if along is not None and along[0] > smoothing_mm:
            blurred = cv2.filter2D(roi, -1, _oriented_kernel(smoothing_mm, along[0], along[1], (ux, uy)),
                                   borderType=cv2.BORDER_REFLECT)
        else:
            blurred = cv2.GaussianBlur(roi, (0, 0), sigmaX=smoothing_mm / ux, sigmaY=smoothing_mm / uy,
                                       borderType=cv2.BORDER_REFLECT)
        # refinement grid: ``upsample`` per frame pixel, but no finer than MAX_REFINE_SIDE_PX over
        # the region (a large lumen needs no 0.05 mm grid: its edge is averaged over many pixels)
        factor = min(float(upsample), max(1.0, MAX_REFINE_SIDE_PX / max(x1 - x0, y1 - y0)))
        px_mm = min(ux, uy) / factor
        sx, sy = ux / px_mm, uy / px_mm
        out_w, out_h = max(int(round((x1 - x0) * sx)), 2), max(int(round((y1 - y0) * sy)), 2)
        sx, sy = out_w / (x1 - x0), out_h / (y1 - y0)
        up = cv2.resize(blurred, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        # coarse mask on the refinement grid: working -> frame -> refinement coordinates
        cw = coarse.view(np.uint8) if coarse.dtype == bool else coarse.astype(np.uint8)
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
        # the image below the field of view (below a fan's arc: beyond the depth shown) is
        # neither the region nor its surroundings: excluded like ``exclude_frame`` (a lumen cut
        # by the bottom of the view is closed by it, and its outside level is the tissue's, not
        # black). Not beside the view: a fan's lateral edges are darker than tissue (the
        # aperture's edge), and the black beside them keeps their dark rim from being cut as a lumen
        off_fov_up = None
        if REFINE_WITHIN_FOV:
            below_w = _below_view(prep, bx, by, bw, bh, margin_mm)
            if below_w is not None:
                below_up = cv2.warpAffine(below_w, m, (out_w, out_h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                          borderMode=cv2.BORDER_REPLICATE)
                off_fov_up = below_up.view(bool) if below_up.any() else None
        band_px = max(1.0 / px_mm, 2.0)  # 1 mm
        d_in = _dist_inside(coarse_up)
        rim = (d_in > 0.5 * band_px) & (d_in <= 1.5 * band_px)
        if not rim.any():
            rim = (d_in > 0) & (d_in <= band_px)
        if not rim.any():
            rim = coarse_up.astype(bool)
        inside = float(_median(up[rim]))
        if memo is not None:
            memo["key"] = key
            memo["prefix"] = (x0, y0, x1, y1, px_mm, sx, sy, out_w, out_h, up, coarse_up, band_px, d_in, inside,
                              off_fov_up)
    ux, uy = prep.unit_mm
    if dark and outside_cap is not None and not float(outside_cap) > inside:
        return None  # the outside level is capped at or below the inside: no dark region (as below)
    d_out = _dist_to(coarse_up, max(2.0 * band_px, band_limit_mm / px_mm if band_limit_mm is not None else 0.0))
    ring = (d_out > 1.0 * band_px) & (d_out <= 2.0 * band_px)
    excl_up = None
    if exclude_frame is not None:
        excl_up = cv2.resize(exclude_frame[y0:y1, x0:x1].astype(np.uint8), (out_w, out_h),
                             interpolation=cv2.INTER_NEAREST)
        if excl_up.any():
            ring &= _dist_to(excl_up, band_px) > band_px
        excl_up = excl_up.astype(bool)
    seed_idx = np.flatnonzero(coarse_up)  # the coarse region on the refinement grid (flat indices)
    if off_fov_up is not None:  # (only ever set with REFINE_WITHIN_FOV)
        ring &= _dist_to(off_fov_up.view(np.uint8), band_px) > band_px
        excl_up = off_fov_up if excl_up is None else excl_up | off_fov_up
    if not ring.any():
        ring = ~coarse_up.astype(bool)
        if not ring.any():
            return None
    outside_vals = up[ring]
    if sectors:
        # the darkest neighbour sets the first level (no leak into an adjacent hypoechoic lesion)
        cx, cy = _centre(coarse_up)
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
    unfilled = _select(region, seed_idx, excl_up, False)
    if unfilled is None:
        return None
    mask = _fill(unfilled, seed_idx, excl_up) if fill else unfilled
    hole_fraction = 1.0 - float(np.count_nonzero(unfilled)) / max(float(np.count_nonzero(mask)), 1.0)
    if max_hole_fraction is not None and hole_fraction > max_hole_fraction:
        return Refined(contour_px=np.empty((0, 2)), mask=mask, origin_px=(x0, y0), scale_xy=(sx, sy), px_mm=px_mm,
                       inside_level=inside, outside_level=outside, edge_sigma_mm=float("inf"),
                       hole_fraction=hole_fraction)
    view = None
    if visible_from_core:
        view = _view_point(d_in, coarse_up)
        if view is not None:
            mask = _visible_from(mask, view[0], view[1], seed_idx)
        if mask is None:
            return None
    # (the filled skirt is not added to the region where the region comes near it: a tissue gap
    # of 0.5-1.5 mm between a lesion and a lumen - wider than the image's resolution - would be
    # closed by it and measured as contact; a lesion whose edge reaches the lumen still meets
    # its skirt, where tumor_boundary.place_edge keeps it touching)
    if sectors and dark:
        # further passes: each direction at half power between the lumen and *its* wall (bright
        # sheath, tissue or lesion), within 1 mm of the first boundary so nothing leaks;
        # repeated because each pass moves the boundary closer to the wall it samples
        first = mask
        first_idx = np.flatnonzero(first)
        d_first = _dist_to(first, band_px)
        # the band within 1 mm of the first boundary, and its sectors around the first centre
        band_idx = np.flatnonzero(d_first <= band_px)
        band_up = up.ravel()[band_idx]
        by_, bx_ = np.divmod(band_idx, out_w)
        band_sector = _sector_of(bx_, by_, *_centre(first), sectors)
        for i_pass in range(passes):
            # the wall is what lies right outside the boundary in each direction: a bright
            # sheath the previous cut stopped short of, tissue, or a dark halo (never beyond it)
            if i_pass == 0:
                # from the first boundary: that wall ring lies in the band, sectors known
                near = d_first.ravel()[band_idx] > 0.4 * band_px
                if excl_up is not None:
                    near &= ~excl_up.ravel()[band_idx]
                out_sec = _sector_means_of(band_up[near], band_sector[near], sectors)
            else:
                d_out0 = _dist_to(mask, band_px)
                near = (d_out0 > 0.4 * band_px) & (d_out0 <= 1.0 * band_px)
                if excl_up is not None:
                    near &= ~excl_up
                cx, cy = _centre(mask)
                out_sec = _sector_means(up, near, cx, cy, sectors)
            finite = np.isfinite(out_sec)
            if not finite.any():
                break
            out_sec = np.where(finite, out_sec, _median(out_sec[finite]))
            levels = inside + level_fraction * (np.maximum(out_sec, inside) - inside)
            region2 = np.zeros(up.shape, dtype=np.uint8)
            region2.ravel()[band_idx] = band_up < levels[band_sector]
            mask2 = _select(region2, first_idx, excl_up, fill)
            if mask2 is None:
                break
            if view is not None and i_pass == passes - 1:
                mask2 = _visible_from(mask2, view[0], view[1], first_idx)
                if mask2 is None:
                    break
            mask = mask2
            outside = float(np.mean(out_sec))
    if view is not None and VISIBLE_NECK_OPENING > 0:
        mask = _without_necked_parts(mask, coarse_up, VISIBLE_NECK_OPENING, VISIBLE_NECK_KEEP_MM / px_mm)
    if off_fov_up is not None and _band_along_edge(mask, off_fov_up, band_px,
                                                                        image_bottom=y1 >= prep.amplitude.shape[0]):
        return None
    contour = largest_contour(mask)
    if contour is None or len(contour) < 5:
        return None
    contour = _shift_outward(contour, 0.5)
    # edge noise: residual speckle std in the ring over the gradient at the boundary
    ci = np.clip(np.round(contour).astype(int), 0, [out_w - 1, out_h - 1])
    gx, gy = _sobel_at(up, ci[:, 0], ci[:, 1])
    grad = float(_median(np.hypot(gx, gy))) / px_mm  # power / mm
    noise = float(np.std(outside_vals))
    edge_sigma_mm = noise / grad if grad > 0 else float("inf")
    frame_pts = np.empty_like(contour)
    frame_pts[:, 0] = x0 + (contour[:, 0] + 0.5) / sx - 0.5
    frame_pts[:, 1] = y0 + (contour[:, 1] + 0.5) / sy - 0.5
    return Refined(contour_px=frame_pts, mask=mask, origin_px=(x0, y0), scale_xy=(sx, sy), px_mm=px_mm,
                   inside_level=inside, outside_level=outside, edge_sigma_mm=min(edge_sigma_mm, 10.0),
                   hole_fraction=hole_fraction)


#: ``visible_from_core`` needs a convex coarse region (a round or elliptical lumen, seen from its
#: centre): at least this solidity (area over convex hull area), else the rule is not applied
#: (a crescent-shaped grey lumen at the edge of the fan is not star-shaped from its centre:
#: measured small_vessels frame 88, solidity 0.76, cut and lost; hepatic_vein_abutting's vein
#: core with the spur it has into the touching halo: 0.87)
VISIBLE_MIN_SOLIDITY = 0.8


def _view_point(d_in: np.ndarray, coarse: np.ndarray) -> tuple[tuple[float, float], float] | None:
    """The centre (x, y) and 0.9 x the radius of the coarse region's largest inscribed disc
    (``d_in``: its inside distance; ``coarse``: the region, uint8), or None when the region is not
    convex enough to be seen from one centre (solidity below ``VISIBLE_MIN_SOLIDITY``) or has
    more than one body (its part deeper than half that radius is not one component: two touching
    lumens)."""
    r_max = float(d_in.max())
    if r_max <= 1.0:
        return None
    contour = largest_contour(coarse)
    if contour is None or len(contour) < 3:
        return None
    hull_area = float(cv2.contourArea(cv2.convexHull(contour.astype(np.float32))))
    area = float(cv2.contourArea(contour.astype(np.float32)))
    if hull_area <= 0 or area < VISIBLE_MIN_SOLIDITY * hull_area:
        return None
    deep = (d_in > 0.5 * r_max).view(np.uint8)
    x0, y0, x1, y1 = _window(deep, 1)
    if cv2.connectedComponents(np.ascontiguousarray(deep[y0:y1, x0:x1]), connectivity=8)[0] > 2:
        return None
    iy, ix = np.unravel_index(int(np.argmax(d_in)), d_in.shape)
    return (float(ix), float(iy)), 0.9 * r_max


#: With ``visible_from_core``: what still hangs on the region through a neck (the part of a
#: touching halo right beyond the contact, seen from the centre through it) is cut: the region
#: opened by a disc of this fraction of its largest inscribed radius (an ellipse up to 2.5:1
#: loses < 0.07 x its minor semi-axis at its tips) and the coarse region (a lumen's tapering end
#: where it leaves the plane), plus what lies within ``VISIBLE_NECK_KEEP_MM`` of them (the edge's
#: own speckle raggedness). 0 = off.
VISIBLE_NECK_OPENING = 0.6
VISIBLE_NECK_KEEP_MM = 0.5


def _without_necked_parts(mask: np.ndarray, coarse: np.ndarray, fraction: float, keep_px: float) -> np.ndarray:
    """``mask`` (uint8 {0, 1}) without the parts farther than ``keep_px`` both from its opening by
    a disc of ``fraction`` x its largest inscribed radius and from the ``coarse`` region (uint8:
    what the coarse grid already found dark, e.g. the tapering end of a lumen leaving the plane,
    is kept). The mask itself when the opening is empty; else a new uint8 mask."""
    d_in = _dist_inside(mask)
    r = fraction * float(d_in.max())
    if r <= 1.0:
        return mask
    eroded = (d_in > r).view(np.uint8)
    opened = _dist_to(eroded, r + keep_px + 1.0) <= r
    near = _dist_to((opened | coarse.astype(bool)).view(np.uint8), keep_px + 1.0) <= keep_px
    out = mask & near.view(np.uint8)
    return out if out.any() else mask


def _visible_from(mask: np.ndarray, centre: tuple[float, float], radius_px: float,
                  seed_idx: np.ndarray) -> np.ndarray | None:
    """The pixels of ``mask`` (uint8 {0, 1}) that see the disc of ``radius_px`` around ``centre``
    (x, y) through ``mask``: along the ray from the centre, every point between the disc and the
    pixel lies in ``mask``. On a polar resampling of the mask's window (one sample per pixel of
    radius, per two of arc at the window's far corner), back to the grid by nearest sample and grown
    by one pixel (the resampling must not eat the edge it keeps). Then the component
    overlapping the seed pixels (flat indices) most, holes filled. A new uint8 mask, or None
    when nothing of it overlaps the seeds."""
    win = _window(mask, 2)
    if win is None:
        return None
    x0, y0, x1, y1 = win
    sub = np.ascontiguousarray(mask[y0:y1, x0:x1])
    cx, cy = centre[0] - x0, centre[1] - y0
    h, w = sub.shape
    max_r = float(np.hypot(max(cx, w - cx), max(cy, h - cy))) + 1.0
    n_r = int(np.ceil(max_r))
    n_a = int(np.ceil(np.pi * max_r))  # (a sample every 2 pixels of arc there: the grown back-projection covers)
    flags = cv2.INTER_NEAREST | cv2.WARP_POLAR_LINEAR
    # samples beyond the window are 0 (WARP_FILL_OUTLIERS): without it warpPolar leaves them as
    # whatever memory its new output array held, and a ray that leaves the window and comes back
    # (a centre near its edge) carried that into the result, which then varied from run to run
    polar = cv2.warpPolar(sub, (n_r, n_a), (cx, cy), max_r, flags | cv2.WARP_FILL_OUTLIERS)  # (angles, radii)
    k0 = min(int(radius_px * n_r / max_r), n_r - 1)
    seen = polar.copy()
    seen[:, :k0] = 1
    seen = np.minimum.accumulate(seen, axis=1)
    back = cv2.warpPolar(seen, (w, h), (cx, cy), max_r, flags | cv2.WARP_INVERSE_MAP)
    back = cv2.dilate(back, np.ones((3, 3), np.uint8))
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = sub & back
    return _select(out, seed_idx, None, True)


def _oriented_kernel(across_mm: float, along_mm: float, angle_rad: float,
                     unit_mm: tuple[float, float]) -> np.ndarray:
    """Normalised 2-D Gaussian kernel (float32, odd square) with sigma ``along_mm`` along the
    direction ``angle_rad`` and ``across_mm`` across it, on pixels of ``unit_mm`` (x, y)."""
    ux, uy = unit_mm
    half = int(np.ceil(3.0 * along_mm / min(ux, uy)))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    xm, ym = xx * ux, yy * uy
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    u, v = xm * c + ym * s, -xm * s + ym * c
    k = np.exp(-0.5 * ((u / along_mm) ** 2 + (v / across_mm) ** 2)).astype(np.float32)
    return k / k.sum()


def _median(values: np.ndarray):
    """``np.median`` of a 1-D array without NaN, the same value in the same dtype, without its
    overhead (which dominates for the few values of a sector list): the middle order
    statistic, or the two middle ones added and halved in the array's dtype."""
    n = len(values)
    k = n // 2
    if n % 2:
        return np.partition(values, k)[k]
    part = np.partition(values, [k - 1, k])
    return (part[k - 1] + part[k]) / 2


def _window(mask: np.ndarray, pad: int) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1): the bounding box of a mask's non-zero pixels grown by ``pad`` and
    clipped to the image; None for an empty mask."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return None
    rows, cols = mask.shape
    return max(x - pad, 0), max(y - pad, 0), min(x + w + pad, cols), min(y + h + pad, rows)


def _dist_inside(mask: np.ndarray) -> np.ndarray:
    """``cv2.distanceTransform(mask, DIST_L2, 3)`` of a uint8 mask, computed only over the
    mask's bounding box + 1 pixel (identical: every mask pixel's nearest zero lies there;
    beyond the image edge counts as non-zero in both). float32, the mask's shape."""
    out = np.zeros(mask.shape, np.float32)
    win = _window(mask, 1)
    if win is not None:
        x0, y0, x1, y1 = win
        out[y0:y1, x0:x1] = cv2.distanceTransform(np.ascontiguousarray(mask[y0:y1, x0:x1]), cv2.DIST_L2, 3)
    return out


def _below_view(prep: Prepared, bx: int, by: int, bw: int, bh: int, margin_mm: float) -> np.ndarray | None:
    """Working-grid pixels (uint8 (h, w), 1 = below) under the field of view's bottom in their
    column, or None when none lie near the box (x, y, w, h) grown by ``margin_mm`` (+ 2 px)."""
    h, w = prep.work_shape
    pad = int(np.ceil(margin_mm / prep.work_px_mm)) + 2
    c0, c1 = max(bx - pad, 0), min(bx + bw + pad, w)
    bottom = prep.valid_bottom_row[c0:c1]
    seen = bottom >= 0
    if not seen.any() or int(bottom[seen].min()) >= min(by + bh + pad, h) - 1:
        return None
    below = np.zeros((h, w), np.uint8)
    rows = np.arange(h)[:, None]
    below[:, c0:c1] = (rows > bottom[None, :]) & seen[None, :]
    return below


def _band_along_edge(mask: np.ndarray, off_fov: np.ndarray, band_px: float, *, image_bottom: bool) -> bool:
    """Whether a region (uint8 mask) cut by the field of view's edge (``off_fov`` bool, same
    shape; and the image's bottom below the last row when ``image_bottom``: a fan cut by the
    image's bottom ends there too) is a thin band along it: its height from the edge under
    EDGE_MIN_HEIGHT_FRACTION of the length it shares with the edge (the pixels within ``band_px``
    of the edge per ``band_px``)."""
    region = mask.view(bool) if mask.dtype == np.uint8 else mask.astype(bool)
    inside = np.where(off_fov, 0, 1).astype(np.uint8)
    if image_bottom:
        inside = np.vstack([inside, np.zeros((1, inside.shape[1]), np.uint8)])
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)[:mask.shape[0]][region]
    shared_px = np.count_nonzero(dist <= band_px) / band_px
    return shared_px > 0 and float(dist.max()) < EDGE_MIN_HEIGHT_FRACTION * shared_px


#: the growth (mm) allowed to a coarse core by :func:`coarse_band_along_edge`: a refined lumen
#: reaches past its dark core by the core's blurred rim, under a millimetre
COARSE_BAND_GROWTH_MM = 1.0


def coarse_band_along_edge(prep: Prepared, coarse: np.ndarray, bbox_w: tuple[int, int, int, int], *,
                           margin_mm: float) -> bool:
    """Whether a coarse region on the working grid, grown by ``COARSE_BAND_GROWTH_MM``, is
    already a thin band along the bottom of the field of view (the test :func:`refine_region`
    applies to its refined region with ``REFINE_WITHIN_FOV``, on the working grid).

    A refined lumen reaches past its dark core by about the core's blurred rim, so a core that
    is such a band even when grown is refined to one and given up at the end of
    :func:`refine_region`. This is measured, not guaranteed: on development phantom frames
    (8240-8399 x 4) it held for all 353 cores it was true of, and it was true of no core that
    refinement accepted. Asking first spares that refinement: the fan's darker bottom rows
    break into several such cores per frame, each a full refinement (~1 ms) for nothing.
    ``coarse``: (h, w) bool; ``bbox_w``: its bounding box (x, y, w, h); ``margin_mm``: the
    refinement's context around the box (its window reaching the image's bottom makes that
    bottom an edge too, as in :func:`refine_region`)."""
    if not REFINE_WITHIN_FOV:
        return False
    bx, by, bw, bh = bbox_w
    below = _below_view(prep, bx, by, bw, bh, margin_mm)
    if below is None:
        return False
    h, w = prep.work_shape
    pad = int(np.ceil((margin_mm + COARSE_BAND_GROWTH_MM) / prep.work_px_mm)) + 2
    x0, y0, x1, y1 = max(bx - pad, 0), max(by - pad, 0), min(bx + bw + pad, w), min(by + bh + pad, h)
    grown = cv2.dilate(coarse[y0:y1, x0:x1].astype(np.uint8), disc(COARSE_BAND_GROWTH_MM / prep.work_px_mm))
    off = below[y0:y1, x0:x1].astype(bool)
    grown[off] = 0
    if not grown.any():
        return False
    return _band_along_edge(grown, off, max(1.0 / prep.work_px_mm, 2.0), image_bottom=y1 >= h)


def _dist_to(mask: np.ndarray, limit_px: float) -> np.ndarray:
    """Distance of every pixel to the nearest non-zero pixel of a uint8 mask, as
    ``cv2.distanceTransform(1 - mask, DIST_L2, 3)`` (3x3 chamfer: axial step 0.955, diagonal
    1.3693) where it is <= ``limit_px``; elsewhere only > ``limit_px`` (large or inf).

    Computed over the mask's bounding box grown by the number of axial steps that cover
    ``limit_px``: a chamfer path to the nearest mask pixel stays within the bounding box of
    its two ends, so the values up to the limit are the whole image's. float32, the mask's
    shape; all inf for an empty mask (as OpenCV's huge value: no mask pixel anywhere).
    """
    win = _window(mask, int(np.ceil(limit_px / 0.955)) + 2)
    if win is None:
        return np.full(mask.shape, np.inf, np.float32)
    x0, y0, x1, y1 = win
    rows, cols = mask.shape
    inv = np.ascontiguousarray(mask[y0:y1, x0:x1] == 0).view(np.uint8)
    d = cv2.distanceTransform(inv, cv2.DIST_L2, 3)
    if (x0, y0, x1, y1) == (0, 0, cols, rows):
        return d
    out = np.full(mask.shape, np.inf, np.float32)
    out[y0:y1, x0:x1] = d
    return out


#: 3x3 Sobel taps (dx, dy) and weights / 8 for d/dx and d/dy
_SOBEL_DX = np.array([-1, -1, -1, 0, 0, 1, 1, 1])
_SOBEL_DY = np.array([-1, 0, 1, -1, 1, -1, 0, 1])
_SOBEL_WX = np.array([-1.0, -2.0, -1.0, 0.0, 0.0, 1.0, 2.0, 1.0]) / 8.0
_SOBEL_WY = np.array([-1.0, 0.0, 1.0, -2.0, 2.0, -1.0, 0.0, 1.0]) / 8.0


def _sobel_at(img: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 Sobel derivatives / 8 (d/dx, d/dy per pixel) at the given pixels only, with the
    border reflected as ``cv2.Sobel`` does (BORDER_REFLECT_101); float64 arrays of len(xs)."""
    h, w = img.shape
    x = np.abs(np.asarray(xs)[:, None] + _SOBEL_DX)
    y = np.abs(np.asarray(ys)[:, None] + _SOBEL_DY)
    x = np.where(x > w - 1, 2 * (w - 1) - x, x)
    y = np.where(y > h - 1, 2 * (h - 1) - y, y)
    taps = img[y, x].astype(np.float64)  # (N, 8): one gather for all taps
    return taps @ _SOBEL_WX, taps @ _SOBEL_WY


def _centre(mask: np.ndarray) -> tuple[float, float]:
    """Centroid (x, y) of a uint8 {0, 1} mask (the mean of its pixel coordinates).

    The moments of the mask's bounding box, shifted back: the sums are whole numbers, exact in
    float64, so the quotient is the whole image's ``cv2.moments(mask, binaryImage=True)``
    m10 / m00 to the last bit (~4x faster)."""
    x, y, w, h = cv2.boundingRect(mask)
    m = cv2.moments(mask[y:y + h, x:x + w])
    m00 = m["m00"]
    return (m["m10"] + x * m00) / m00, (m["m01"] + y * m00) / m00


def _sector_of(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, sectors: int) -> np.ndarray:
    ang = np.arctan2(ys - cy, xs - cx)  # >= -pi: the index below is >= 0
    return np.minimum(((ang + np.pi) / (2 * np.pi) * sectors).astype(np.int32), sectors - 1)


def _sector_means(values: np.ndarray, where: np.ndarray, cx: float, cy: float, sectors: int) -> np.ndarray:
    """Mean of ``values`` over ``where`` per angular sector around (cx, cy); NaN when too few."""
    idx = np.flatnonzero(where)
    if len(idx) == 0:
        return np.full(sectors, np.nan)
    ys, xs = np.divmod(idx, where.shape[1])
    return _sector_means_of(values.ravel()[idx], _sector_of(xs, ys, cx, cy, sectors), sectors)


def _sector_means_of(values: np.ndarray, k: np.ndarray, sectors: int) -> np.ndarray:
    """Mean of ``values`` per sector index ``k`` (both 1-D); NaN when fewer than 5."""
    sums = np.bincount(k, weights=values, minlength=sectors)
    counts = np.bincount(k, minlength=sectors)
    out = np.full(sectors, np.nan)
    ok = counts >= 5
    out[ok] = sums[ok] / counts[ok]
    return out


def _select(region: np.ndarray, seed_idx: np.ndarray, exclude: np.ndarray | None, fill: bool) -> np.ndarray | None:
    """The connected component of ``region`` (bool or uint8 {0, 1}; not modified) overlapping
    the seed pixels (flat indices) most, as a uint8 mask, holes filled when ``fill``."""
    region = region.view(np.uint8) if region.dtype == bool else region
    if exclude is not None:
        region = region.copy()
        region[exclude] = 0
    n, labels = cv2.connectedComponents(region, connectivity=8, ltype=cv2.CV_32S)
    if n <= 1:
        return None
    overlap = np.bincount(labels.ravel()[seed_idx], minlength=n)
    overlap[0] = 0
    best = int(np.argmax(overlap))
    if overlap[best] == 0:
        return None
    mask = (labels == best).view(np.uint8)
    return _fill(mask, seed_idx, exclude) if fill else mask


def _fill(mask: np.ndarray, seed_idx: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
    """Holes of a selected component filled (a ring closed by an excluded region still encloses)."""
    if exclude is not None and exclude.any():
        # a ring closed by an excluded region (a halo against a vessel) still encloses
        ex = exclude.view(np.uint8)
        mask = fill_holes(mask | ex)
        n2, lab2 = cv2.connectedComponents(mask & (1 - ex), connectivity=8, ltype=cv2.CV_32S)
        if n2 > 1:
            ov = np.bincount(lab2.ravel()[seed_idx], minlength=n2)
            ov[0] = 0
            mask = (lab2 == int(np.argmax(ov))).view(np.uint8)
        return mask
    out = np.zeros_like(mask)
    win = _window(mask, 1)  # holes lie inside the bounding box (+ 1 pixel: same border handling)
    if win is not None:
        x0, y0, x1, y1 = win
        out[y0:y1, x0:x1] = fill_holes(np.ascontiguousarray(mask[y0:y1, x0:x1]))
    return out


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
    seg = np.hypot(*(np.concatenate([mm[1:], mm[:1]]) - mm).T)
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
    nxt = np.concatenate([contour[1:], contour[:1]])
    prev = np.concatenate([contour[-1:], contour[:-1]])
    tangent = nxt - prev
    norm = np.hypot(tangent[:, 0], tangent[:, 1])
    norm[norm == 0] = 1.0
    # findContours traces outer borders counter-clockwise in image coordinates (y down):
    # decide the outward side from the signed area instead of assuming it
    area2 = float(np.sum(contour[:, 0] * nxt[:, 1] - nxt[:, 0] * contour[:, 1]))
    sign = 1.0 if area2 > 0 else -1.0
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1) / norm[:, None] * sign
    return contour + distance_px * normal
