"""Tumour: lesion map, segmentation from a seed, automatic candidates, refinement.

A lesion differs from liver tissue at the same depth: darker (hypoechoic, or the
hypoechoic halo of target and isoechoic-with-halo lesions) or brighter
(hyperechoic). On the working grid, pixels whose speckle-averaged level differs
from the tissue level of their row by more than ``tumor_contrast_db`` (in either
direction) form the lesion map; lumens are removed (solid anechoic blobs from the
dark map, detected vessels from the bright map), thin rims are opened away, holes are
filled and broken halo rings closed, so a halo ring becomes the whole lesion; a faint
hyperechoic lesion is cut whole from a coarser bright map (:func:`coarse_bright_candidates`), and
the shadow below a calcified one is not a lesion (:func:`calcium_shadow`) but hides its deep part,
outlined as round (:func:`shadowed_extent`). The
tracker follows the lesion by overlap with the previous outline (see
:func:`follow_template`, :func:`lumen_in_place`). The chosen component is refined at full resolution at the half-power level
between its rim and the surrounding tissue; a dark lesion's edge is then placed along its
normals at the local half-way level between halo (or body) and tissue
(:mod:`iousguide.analysis.tumor_boundary`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from iousguide.analysis.imaging import Prepared, components_with_stats, disc, fill_holes
from iousguide.analysis.refine import Refined, refine_region
from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.tumor_boundary import lowpass_contour, place_edge
from iousguide.analysis.vessels import black_core_level, looks_like_shadow


@dataclass
class TumorCandidate:
    """A lesion component on the working grid.

    Attributes
    ----------
    mask_w : ndarray (h, w) bool
    bbox_w : (x, y, width, height)
    area_mm2 : float
        Area in (nominal) mm^2 on the working grid.
    centroid_w : (float, float)
    dark : bool
        True for a hypoechoic lesion or halo, False for hyperechoic.
    contrast_db : float
        Edge contrast, dB: |mean level in the component's outer 1.5 mm - mean level in the
        ring 1-3 mm outside it|. Slow texture variations of the parenchyma have little of it.
    solidity : float
        Area over convex-hull area.
    touches_border : bool
        Touches the edge of the field of view.
    threshold_db : float
        Map threshold (dB from tissue) the component was cut at.
    ring : bool
        A broken halo ring closed to the lesion it surrounds.
    elongation : float
        Axis ratio (long over short axis, from the second moments; 1 for a disc) of the
        component (1.0 for the learned model's dark ones: not measured).
    near_bottom : bool
        A bright component reaching the noisy bottom of the field of view (noise floor, the last
        TGC rows; also marked ``touches_border``): not lesion-like at all.
    hysteresis : bool
        Found only by the lower cut made for a dark lesion being followed (``DARK_FOLLOW_FRACTION``):
        for that follow only, never a proposal or a rival.
    learned : bool
        A component of the learned lesion model's probability map
        (:func:`iousguide.analysis.learned_lesion.learned_lesion_candidates`): its outline is the
        model's, not refined on the image's edges.
    peak_probability : float
        The model's highest lesion probability in it (0 for the classical candidates).
    """

    mask_w: np.ndarray
    bbox_w: tuple[int, int, int, int]
    area_mm2: float
    centroid_w: tuple[float, float]
    dark: bool
    contrast_db: float
    solidity: float
    touches_border: bool
    threshold_db: float = 3.0
    ring: bool = False
    elongation: float = 1.0
    near_bottom: bool = False
    hysteresis: bool = False
    learned: bool = False
    peak_probability: float = 0.0

    @property
    def equivalent_diameter_mm(self) -> float:
        return float(2.0 * np.sqrt(self.area_mm2 / np.pi))

    def score(self) -> float:
        return self.contrast_db * np.sqrt(self.area_mm2) * self.solidity


def lesion_candidates(prep: Prepared, *, settings: TrackingSettings,
                      vessel_mask_w: np.ndarray | None = None,
                      lumen_mask_w: np.ndarray | None = None,
                      min_diameter_mm: float | None = None,
                      follow_w: np.ndarray | None = None, follow_dark: bool = False) -> list[TumorCandidate]:
    """Hypo-, hyperechoic and halo lesion components of a prepared frame.

    Pixels whose speckle-averaged level (sigma ``tumor_smoothing_mm``) differs from the
    tissue of their row by more than ``tumor_contrast_db`` (dark: hypoechoic lesion, halo,
    target rim; bright: hyperechoic, calcified). Cut out of the dark map: solid anechoic blobs
    (lumens: no speckle; :func:`anechoic_mask`), not every detected vessel, so a halo arc taken
    for a lumen stays lesion. Cut out of the bright map: detected lumens, and bright bands along
    the beam or right below a lumen (posterior enhancement). A dark component that is an open
    ring (a halo broken by speckle) is closed to its convex hull when it surrounds most
    directions of its centre and its inside is tissue-like (:func:`close_ring`). Faint
    hyperechoic lesions come from a coarser, lower-contrast bright map, kept only where a blob
    is lesion-shaped and brighter than the tissue all around it
    (:func:`coarse_bright_candidates`); such a blob replaces the fine map's pieces of it. A
    dark component under a bright echo that goes on down is a calcium shadow
    (:func:`calcium_shadow`) and dropped; a bright one reaching within ``shadow_bottom_margin_mm``
    of the bottom of the field of view is marked as touching the border (never proposed
    automatically).

    Parameters
    ----------
    prep : Prepared
    settings : TrackingSettings
    vessel_mask_w : ndarray (h, w) bool, optional
        Vessel lumens on the working grid (never lesion).
    lumen_mask_w : ndarray (h, w) bool, optional
        This frame's ``anechoic_mask(prep, min_solidity=ANECHOIC_MIN_SOLIDITY)`` when the caller
        already has it (the tracker uses it again in its follow); computed when None. Not modified.
    min_diameter_mm : float, optional
        Smallest equivalent diameter of a component of the fine map (default
        ``settings.tumor_min_diameter_mm``; the tracker asks for less while it follows a lesion).
    follow_w : ndarray (h, w) bool, optional
        The last mask of the lesion being followed (working grid; hysteresis, not modified). A
        bright one (``follow_dark`` False): a coarse blob on it is kept on the weaker tests of
        :func:`coarse_bright_candidates`. A dark one: when no dark component of the map overlaps it
        (IoU >= ``DARK_FOLLOW_IOU``), the dark map is cut again at ``DARK_FOLLOW_FRACTION`` of the
        contrast and the components overlapping it are added, marked ``hysteresis``.
    follow_dark : bool
        The followed lesion is dark.

    Returns
    -------
    list of TumorCandidate
        Components of at least the minimum size.
    """
    px = prep.work_px_mm
    sigma = settings.tumor_smoothing_mm / px
    smooth = cv2.GaussianBlur(prep.smooth, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    tissue = prep.tissue_row[:, None].astype(np.float32)
    rel = smooth - tissue  # dB contrast to tissue
    c = settings.tumor_contrast_db
    valid = prep.valid
    # bright map: detected lumens and the blur skirt around them are not lesion
    r_skirt = disc(settings.tumor_smoothing_mm / px)
    if vessel_mask_w is not None and vessel_mask_w.any():
        lumen_b = vessel_mask_w
        skirt_b = cv2.dilate(vessel_mask_w.astype(np.uint8), r_skirt).astype(bool)
    else:
        lumen_b = skirt_b = np.zeros_like(valid)
    # dark map: only solid anechoic blobs are lumens (a lesion keeps speckle, a lumen has none);
    # a halo arc the vessel detector took for a lumen stays lesion (the tracker then drops the
    # "lumens" inside the lesion outline), and a lumen the detector missed is still cut out
    lumen_d = (anechoic_mask(prep, settings=settings, min_solidity=ANECHOIC_MIN_SOLIDITY)
               if lumen_mask_w is None else lumen_mask_w)
    skirt_d = cv2.dilate(lumen_d.astype(np.uint8), r_skirt).astype(bool) if lumen_d.any() else np.zeros_like(valid)
    out: list[TumorCandidate] = []
    min_d_mm = settings.tumor_min_diameter_mm if min_diameter_mm is None else min_diameter_mm
    min_area = np.pi * (0.5 * min_d_mm / px) ** 2
    max_area = np.pi * (0.5 * settings.tumor_max_diameter_mm / px) ** 2
    border = valid & ~cv2.erode(valid.astype(np.uint8), disc(1.0 / px)).astype(bool)
    # the edge of the image is an edge of the view too (a linear image fills it: the erosion above,
    # whose default border value is 'inside', never marks its sides): a candidate cut there is seen
    # in part, its shape and surroundings unknown, and is not proposed automatically
    edge = border | (valid & ~cv2.erode(valid.astype(np.uint8), disc(1.0 / px), borderType=cv2.BORDER_CONSTANT,
                                        borderValue=0).astype(bool)) if IMAGE_EDGE_IS_BORDER else border
    r_open = 0.4 / px  # thinner than the thinnest halo (~1 mm) so a halo ring survives
    # (polarity, map threshold dB, only components overlapping this mask); a hysteresis pass for
    # a dark lesion being followed is added after the dark pass when that pass lost it
    passes: list[tuple[bool, float, np.ndarray | None]] = [(True, c, None), (False, c, None)]
    k_pass = 0
    while k_pass < len(passes):
        dark, thr, near_w = passes[k_pass]
        k_pass += 1
        near_area = np.count_nonzero(near_w) if near_w is not None else 0
        skirt = skirt_d if dark else skirt_b
        lumen_p = lumen_d if dark else lumen_b
        m = (rel < -thr) if dark else (rel > thr)
        m = (m & valid & ~skirt).astype(np.uint8)
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, disc(r_open))
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, disc(1.0 / px))
        if dark and skirt.any():
            # a halo ring closed by an abutting vessel is still a ring
            m = fill_holes(m | skirt.astype(np.uint8)) & ~skirt.astype(np.uint8)
            m = cv2.morphologyEx(m, cv2.MORPH_OPEN, disc(r_open))
        else:
            m = fill_holes(m)
        n, labels, stats, cents = components_with_stats(m)
        for label in range(1, n):
            area = int(stats[label, cv2.CC_STAT_AREA])
            if area < min_area or area > max_area:
                continue
            x, y, w, h = (int(v) for v in stats[label, :4])
            in_box = labels[y:y + h, x:x + w] == label  # the component lies within its box
            if near_w is not None and _box_iou(in_box, (x, y), near_w, near_area) < DARK_FOLLOW_IOU:
                continue
            if np.count_nonzero(in_box & lumen_p[y:y + h, x:x + w]) > 0.02 * area:
                continue  # encloses a lumen: a bright sheath or the blur around a vessel, not a lesion
            comp = np.zeros_like(valid)
            comp[y:y + h, x:x + w] = in_box
            sub = in_box.astype(np.uint8)
            contours, _ = cv2.findContours(sub, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            hull_area = cv2.contourArea(cv2.convexHull(np.vstack(contours))) if contours else area
            solidity = min(area / hull_area, 1.0) if hull_area > 0 else 0.0
            lab = labels
            ring = False
            if dark and solidity < RING_SOLIDITY:
                closed = close_ring(comp, (x, y, w, h), rel=rel, valid=valid & ~skirt, px_mm=px,
                                    contrast_db=c)
                if closed is not None:
                    comp = closed
                    area = int(np.count_nonzero(comp))
                    ys, xs = np.nonzero(comp)
                    x, y = int(xs.min()), int(ys.min())
                    w, h = int(xs.max()) - x + 1, int(ys.max()) - y + 1
                    cents[label] = (xs.mean(), ys.mean())
                    lab = np.where(comp, label, np.where(labels == label, 0, labels))
                    solidity, ring = 1.0, True
                    sub = comp[y:y + h, x:x + w].astype(np.uint8)
            # a closed ring's contrast is its halo's (the ring pixels) against the tissue outside
            contrast_db = _edge_contrast_db(rel, labels if ring else lab, label, (x, y, w, h), px=px,
                                            exclude=skirt)
            touches = bool((edge[y:y + h, x:x + w] & comp[y:y + h, x:x + w]).any())  # (x, y, w, h): comp's box
            bottom = not dark and _near_bottom(prep, sub.astype(bool), (x, y, w, h),
                                               margin_mm=settings.shadow_bottom_margin_mm)
            if bottom:
                touches = True  # the noisy fan bottom (noise floor, last TGC rows): not proposed
            if not dark and skirt.any() and _below_vessel(skirt, (x, y, w, h), px=px):
                continue  # posterior enhancement behind a lumen, not a lesion
            if not dark and _beam_band(sub.astype(bool)):
                continue  # a bright band along the beam: posterior enhancement, not a lesion
            if dark and not ring and looks_like_shadow(prep, sub.astype(bool), (x, y, w, h),
                                                       margin_mm=settings.shadow_bottom_margin_mm):
                continue
            if dark and not ring and calcium_shadow(prep, rel, sub.astype(bool), (x, y, w, h), contrast_db=c):
                continue
            out.append(TumorCandidate(mask_w=comp, bbox_w=(x, y, w, h), area_mm2=area * px * px,
                                      centroid_w=(float(cents[label, 0]), float(cents[label, 1])), dark=dark,
                                      contrast_db=contrast_db, solidity=float(solidity), touches_border=touches,
                                      threshold_db=thr, ring=ring,
                                      elongation=elongation_of(sub.astype(np.uint8)),
                                      near_bottom=bottom, hysteresis=near_w is not None))
        if (dark and near_w is None and DARK_FOLLOW_HYSTERESIS and follow_dark and follow_w is not None
                and follow_w.shape == valid.shape and follow_w.any()):
            follow_area = np.count_nonzero(follow_w)
            if not any(_box_iou(cand.mask_w[cand.bbox_w[1]:cand.bbox_w[1] + cand.bbox_w[3],
                                            cand.bbox_w[0]:cand.bbox_w[0] + cand.bbox_w[2]],
                                cand.bbox_w[:2], follow_w, follow_area) >= DARK_FOLLOW_IOU for cand in out if cand.dark):
                passes.insert(k_pass, (True, DARK_FOLLOW_FRACTION * c, follow_w))
    coarse = coarse_bright_candidates(prep, settings=settings, lumen_w=lumen_b | lumen_d, border_w=border, edge_w=edge,
                                      follow_w=None if follow_dark else follow_w)
    for cb in coarse:
        # a faint hyperechoic lesion is found whole on the coarse map and in pieces on the fine one:
        # the coarse blob replaces its pieces unless they already cover most of it (the fine map
        # outlines a clear lesion more closely)
        pieces = [cand for cand in out if not cand.dark and np.count_nonzero(cand.mask_w & cb.mask_w)]
        covered = np.zeros_like(valid)
        for cand in pieces:
            covered |= cand.mask_w
        if np.count_nonzero(covered & cb.mask_w) >= BRIGHT_FINE_COVERAGE * np.count_nonzero(cb.mask_w):
            continue
        out = [cand for cand in out if not any(cand is p for p in pieces)] + [cb]
    return out


#: hysteresis for a dark lesion being followed (lesion_candidates ``follow_w``, ``follow_dark``):
#: when no dark component of the map overlaps its last mask (IoU >= DARK_FOLLOW_IOU), the map is cut
#: again at this fraction of tumor_contrast_db for the components overlapping that mask (marked
#: ``hysteresis``; the tracker takes them only when the regular candidates give no follow). A faint
#: lesion's contrast hovers at the cut, and the follow lost it on single frames
DARK_FOLLOW_HYSTERESIS = True
DARK_FOLLOW_FRACTION = 0.67
DARK_FOLLOW_IOU = 0.3

#: a calcium shadow has an echo >= tumor_contrast_db above tissue within this distance (mm) above
#: its top in at least ``CALCIUM_ABOVE_FRACTION`` of its columns ...
CALCIUM_ABOVE_MM = 5.0
CALCIUM_ABOVE_FRACTION = 0.3
#: ... and stays >= half tumor_contrast_db darker than tissue from its bottom down to the bottom of
#: the field of view in at least ``SHADOW_BELOW_FRACTION`` of the columns that have >= 3 mm below it
SHADOW_BELOW_FRACTION = 0.6
#: ... or reaches within this distance (mm) of the bottom in half its columns
SHADOW_REACH_MM = 10.0


def calcium_shadow(prep: Prepared, rel: np.ndarray, comp: np.ndarray, bbox: tuple[int, int, int, int], *,
                   contrast_db: float) -> bool:
    """Whether a dark component is the acoustic shadow of a calcified region above it.

    Calcium reflects and absorbs nearly all the sound: right above its shadow lies a bright
    echo, and the shadow goes on down to the bottom of the image (a hypoechoic lesion has tissue
    of normal brightness below it, a lumen brighter tissue); where the noise floor hides its
    lower end, it still reaches within ``SHADOW_REACH_MM`` of the bottom.

    Parameters
    ----------
    prep : Prepared
    rel : ndarray (h, w) float32
        Speckle-averaged level minus the row's tissue level, dB (working grid).
    comp : ndarray (bh, bw) bool
        The component inside its bounding box.
    bbox : (x, y, bw, bh)
    contrast_db : float
        The lesion map's contrast (dB).

    Returns
    -------
    bool
    """
    x, y, w, h = bbox
    px = prep.work_px_mm
    has = comp.any(axis=0)
    cols = np.nonzero(has)[0]
    if not len(cols):
        return False
    top = y + np.argmax(comp, axis=0)[cols]
    reach = int(np.ceil(CALCIUM_ABOVE_MM / px))
    rr = top[:, None] - np.arange(1, reach + 1)[None, :]
    ok = rr >= 0
    above = np.where(ok, rel[np.maximum(rr, 0), (x + cols)[:, None]], -np.inf)
    if np.count_nonzero(above.max(axis=1) >= contrast_db) < CALCIUM_ABOVE_FRACTION * len(cols):
        return False
    lowest = y + (h - 1 - np.argmax(comp[::-1, :], axis=0))[cols]
    bottom = prep.valid_bottom_row[x + cols]
    if np.count_nonzero((bottom >= 0) & (lowest >= bottom - SHADOW_REACH_MM / px)) >= 0.5 * len(cols):
        return True  # it reaches (nearly) down to the bottom: the noise floor may hide its lower end
    need = int(np.ceil(3.0 / px))
    tall = bottom - lowest >= need
    n = int(np.count_nonzero(tall))
    if not n:
        return False
    below = _column_medians(rel, x + cols[tall], lowest[tall] + 1, bottom[tall] + 1)
    dark = int(np.count_nonzero(below <= -0.5 * contrast_db))
    return bool(dark >= SHADOW_BELOW_FRACTION * n)


def _column_medians(values: np.ndarray, cols: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """``np.median(values[starts[i]:stops[i], cols[i]])`` for every i, in one sort (a loop of
    medians cost ~1 ms per candidate on a large real frame): same dtype and value as np.median
    (the mean of the two middle values, NaN when a segment holds NaN). ``values`` (h, w) float,
    ``cols``, ``starts``, ``stops`` (k,) int with ``starts < stops``; returns (k,) of ``values``'
    dtype."""
    r0, r1 = int(starts.min()), int(stops.max())
    block = values[r0:r1, cols]  # (rows, k) copy
    rows = np.arange(r0, r1)[:, None]
    inside = (rows >= starts[None, :]) & (rows < stops[None, :])
    has_nan = (np.isnan(block) & inside).any(axis=0)
    block[~inside] = np.inf
    block.sort(axis=0)
    count = stops - starts
    k = np.arange(len(cols))
    lo, hi = block[(count - 1) // 2, k], block[count // 2, k]
    med = (lo + hi) / block.dtype.type(2)  # (in the values' float dtype, as np.median's mean)
    med[has_nan] = np.nan
    return med


def _near_bottom(prep: Prepared, comp: np.ndarray, bbox: tuple[int, int, int, int], *, margin_mm: float) -> bool:
    """Whether a component (inside its bounding box on the working grid) comes within
    ``margin_mm`` of the bottom of the field of view in any of its columns."""
    x, y, w, h = bbox
    bottom = prep.valid_bottom_row[x:x + w]
    lowest = y + (h - 1 - np.argmax(comp[::-1, :], axis=0))
    return bool(np.any(comp.any(axis=0) & (bottom >= 0) & (lowest >= bottom - margin_mm / prep.work_px_mm)))


#: a candidate reaching within 1 mm of the image's own edge touches the border of the view (as one
#: reaching the edge of a fan does)
IMAGE_EDGE_IS_BORDER = True

#: fine-map pieces covering this fraction of a coarse bright blob are kept instead of it
BRIGHT_FINE_COVERAGE = 0.7


#: the coarse bright map: speckle averaged over this scale (sigma, mm) ...
BRIGHT_COARSE_SMOOTHING_MM = 1.5
#: ... and cut at this fraction of ``tumor_contrast_db`` above the tissue of the row
BRIGHT_COARSE_FRACTION = 0.5
#: a coarse bright component's mean is ``BRIGHT_RING_MIN_DB`` above the tissue 1-4 mm around it
#: in at least this many of 8 directions (a lesion is a blob; posterior enhancement continues
#: below a lumen, a band at the fan bottom has no tissue below it)
BRIGHT_ALL_AROUND = 7
BRIGHT_RING_MIN_DB = 1.0
#: ... is solid and not elongated (axis ratio)
BRIGHT_MIN_SOLIDITY = 0.85
BRIGHT_MAX_ELONGATION = 2.5
#: a coarse bright blob right below a lumen is a lesion only when brighter than the tissue around it in
#: every direction (the enhancement band, once its beam gain is taken out, may leave a piece right
#: behind the lumen; such a piece is not darker below it)
BRIGHT_BELOW_LUMEN_ALL_AROUND = 8
#: hysteresis: a coarse blob overlapping the bright lesion being followed (IoU >= BRIGHT_FOLLOW_IOU
#: with its last mask) needs less to be kept than a new one to be proposed: this many of the 8
#: directions and this solidity. A faint lesion's blob passes 6 or 7 directions, or a solidity
#: of 0.85, by chance from frame to frame, and the follow lost it for a frame. Not for a blob
#: right below a lumen: relaxed there, the follow kept the posterior enhancement between a lesion
#: and the lumen above it as lesion (dev seeds 8819, 8893: distance errors 5-6 mm on more frames)
BRIGHT_FOLLOW_IOU = 0.3
BRIGHT_FOLLOW_ALL_AROUND = 5
BRIGHT_FOLLOW_MIN_SOLIDITY = 0.75
#: posterior enhancement is measured from this far (mm) below a lumen's lowest pixel in its column ...
ENHANCEMENT_START_MM = 1.0
#: ... over at least this length (mm) of valid tissue
ENHANCEMENT_MIN_LENGTH_MM = 5.0


def beam_slopes(valid: np.ndarray) -> tuple[float, float] | None:
    """Beam direction at the two sides of the field of view: (left, right) slopes dx/dy.

    A linear probe's beams run down the columns (0, 0); a convex probe's fan out from an apex
    above the image, and its straight side edges are its outermost beams. Each side edge is
    fitted by a line over the middle 20-80 % of the valid rows (the top and bottom arcs
    excluded); a beam at any other place of a row has the slope interpolated linearly along
    that row (exact for beams from one apex). None when fewer than 10 rows are valid.

    Parameters
    ----------
    valid : ndarray (h, w) bool
        Field of view on the working grid.

    Returns
    -------
    (float, float) or None
    """
    rows = np.nonzero(valid.any(axis=1))[0]
    if len(rows) < 10:
        return None
    sel = rows[int(0.2 * len(rows)):int(0.8 * len(rows)) + 1]
    sub = valid[sel]
    left = np.argmax(sub, axis=1).astype(np.float64)
    right = (valid.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1)).astype(np.float64)
    t = sel - sel.mean()
    tt = float(np.dot(t, t))
    if tt <= 0:
        return 0.0, 0.0
    return float(np.dot(t, left - left.mean()) / tt), float(np.dot(t, right - right.mean()) / tt)


def posterior_enhancement_db(rel: np.ndarray, lumen_w: np.ndarray, *, valid: np.ndarray, fov: np.ndarray,
                             px_mm: float) -> np.ndarray | float:
    """Posterior acoustic enhancement below lumens, per pixel (dB, >= 0).

    Blood attenuates about three times less than liver: every beam that crossed a lumen is
    brighter by the same few dB all the way down. For each column holding lumen pixels, the beam
    through its lowest lumen pixel is followed down (straight down for a linear probe, fanning
    out for a convex one: :func:`beam_slopes`); the enhancement is the median level (dB from the
    row's tissue) of the valid tissue on that beam from ``ENHANCEMENT_START_MM`` below the lumen
    to the bottom of the view (a median: a lesion further down the same beam covers only part of
    it). It is written along that beam (and the pixel beside it, so diverging beams leave no
    gap), 0 elsewhere, where a beam has fewer than ``ENHANCEMENT_MIN_LENGTH_MM`` of tissue below
    the lumen, or where the median is negative.

    Parameters
    ----------
    rel : ndarray (h, w) float32
        Speckle-averaged level minus the row's tissue level, dB (working grid).
    lumen_w : ndarray (h, w) bool
        Lumens on the working grid.
    valid : ndarray (h, w) bool
        Tissue pixels (the field of view without the lumens and their blur skirt).
    fov : ndarray (h, w) bool
        The field of view (for the beam directions).
    px_mm : float
        Working-grid pixel size, mm.

    Returns
    -------
    ndarray (h, w) float32, or 0.0 when no column holds a lumen
        New array; ``rel`` is not modified.
    """
    band = _posterior_enhancement_rows(rel, lumen_w, valid=valid, fov=fov, px_mm=px_mm)
    if band is None:
        return 0.0
    r0, gain_rows = band
    out = np.zeros(rel.shape, np.float32)
    out[r0:] = gain_rows
    return out


def _posterior_enhancement_rows(rel: np.ndarray, lumen_w: np.ndarray, *, valid: np.ndarray, fov: np.ndarray,
                                px_mm: float) -> tuple[int, np.ndarray] | None:
    """:func:`posterior_enhancement_db` as (r0, its rows r0..h-1): every row above r0 is 0 (no
    beam starts above it), so a caller subtracts only these rows and no full-frame map is made.

    Returns
    -------
    (int, ndarray (h - r0, w) float32) or None when no column holds a lumen (the map is 0.0)
        New array.
    """
    has = lumen_w.any(axis=0)
    slopes = beam_slopes(fov) if has.any() else None
    if slopes is None:
        return None
    h, w = rel.shape
    cols = np.nonzero(has)[0]
    lowest = h - 1 - np.argmax(lumen_w[::-1, cols], axis=0)
    start = lowest + int(round(ENHANCEMENT_START_MM / px_mm))
    # the beam's slope at (column, lowest row): interpolated between the side edges of that row
    row_ok = fov[np.minimum(lowest, h - 1)]
    left = np.argmax(row_ok, axis=1).astype(np.float64)
    right = (w - 1 - np.argmax(row_ok[:, ::-1], axis=1)).astype(np.float64)
    frac = np.clip((cols - left) / np.maximum(right - left, 1.0), 0.0, 1.0)
    slope = slopes[0] + (slopes[1] - slopes[0]) * frac
    # only the rows from the first beam's start down can be on a beam
    r0 = min(int(start.min()), h)
    out = np.zeros((h - r0, w), np.float32)
    if r0 >= h:
        return r0, out
    rr = np.arange(r0, h)[:, None]
    xx = np.rint(cols[None, :] + slope[None, :] * (rr - lowest[None, :])).astype(np.int64)
    on = (rr >= start[None, :]) & (xx >= 0) & (xx < w)
    xc = np.clip(xx, 0, w - 1)
    below = on & valid[rr, xc]
    n = np.count_nonzero(below, axis=0)
    enough = n >= ENHANCEMENT_MIN_LENGTH_MM / px_mm
    if not enough.any():
        return r0, out
    idx = np.nonzero(enough)[0]
    below, n = below[:, idx], n[idx]
    # the median of each beam's tissue values: sorted with the other rows pushed to the end
    vals = np.where(below, rel[rr, xc[:, idx]], np.inf)
    vals.sort(axis=0)
    lo = np.take_along_axis(vals, ((n - 1) // 2)[None, :], axis=0)[0]
    hi = np.take_along_axis(vals, (n // 2)[None, :], axis=0)[0]
    gain = np.maximum(0.5 * (lo + hi), 0.0).astype(np.float32)
    # beams written in increasing gain (column-major): where two meet, the larger mostly stays
    order = np.argsort(gain, kind="stable")
    sel = idx[order]
    on_t = on[:, sel].T
    g = np.broadcast_to(gain[order][:, None], on_t.shape)[on_t]
    r_on = np.broadcast_to(np.arange(h - r0)[None, :], on_t.shape)[on_t]
    x_on = xc[:, sel].T[on_t]
    out[r_on, x_on] = g
    side = np.zeros_like(out)  # the pixel beside each beam pixel too: neighbouring beams may diverge by one
    side[r_on, np.minimum(x_on + 1, w - 1)] = g
    return r0, np.maximum(out, side, out=out)


def coarse_bright_candidates(prep: Prepared, *, settings: TrackingSettings, lumen_w: np.ndarray,
                             border_w: np.ndarray, edge_w: np.ndarray | None = None,
                             follow_w: np.ndarray | None = None) -> list[TumorCandidate]:
    """Faint hyperechoic lesions: bright blobs of a coarser, lower-contrast map.

    A hyperechoic metastasis may be only 2-4 dB brighter than the liver; in speckle averaged
    over ``tumor_smoothing_mm`` much of it stays under ``tumor_contrast_db`` and it breaks into
    pieces that flicker from frame to frame. Averaged over ``BRIGHT_COARSE_SMOOTHING_MM`` it is
    cut whole at ``BRIGHT_COARSE_FRACTION`` x the contrast. Such a low cut also passes slow
    texture, posterior enhancement and the noisy fan bottom, so a component is kept only when
    it is lesion-shaped (solid, compact, away from the field-of-view border and its bottom,
    not below or around a lumen) and brighter than the tissue around it in (almost) every
    direction.

    Parameters
    ----------
    prep : Prepared
    settings : TrackingSettings
    lumen_w : ndarray (h, w) bool
        Lumens (detected vessels, anechoic blobs) on the working grid.
    border_w : ndarray (h, w) bool
        The field of view's border band on the working grid (a blob touching it is dropped).
    edge_w : ndarray (h, w) bool, optional
        The border band with the image's own edges (a blob touching it is kept, marked
        ``touches_border``); None: ``border_w``.
    follow_w : ndarray (h, w) bool, optional
        The last mask of the bright lesion being followed: a blob overlapping it (IoU >=
        ``BRIGHT_FOLLOW_IOU``), unless right below a lumen, needs only ``BRIGHT_FOLLOW_ALL_AROUND``
        directions and ``BRIGHT_FOLLOW_MIN_SOLIDITY``.

    Returns
    -------
    list of TumorCandidate
        Bright candidates (``threshold_db`` = the coarse cut level), new masks.
    """
    px = prep.work_px_mm
    sigma_mm = max(BRIGHT_COARSE_SMOOTHING_MM, settings.tumor_smoothing_mm)
    sigma = sigma_mm / px
    smooth = cv2.GaussianBlur(prep.smooth, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    rel = smooth - prep.tissue_row[:, None].astype(np.float32)
    cut = BRIGHT_COARSE_FRACTION * settings.tumor_contrast_db
    valid = prep.valid
    skirt = cv2.dilate(lumen_w.astype(np.uint8), disc(sigma)).astype(bool) if lumen_w.any() else np.zeros_like(valid)
    tissue = valid & ~skirt
    # the posterior enhancement below a lumen is a gain of the whole beam below it, not a blob: taken
    # out, a faint lesion in (or beside) that band is no longer merged with it down to the fan bottom
    band = _posterior_enhancement_rows(rel, lumen_w, valid=tissue, fov=valid, px_mm=px)
    if band is not None:  # rel is this function's own array: the rows below the first beam start, in place
        rel[band[0]:] -= band[1]
    m = ((rel > cut) & tissue).astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, disc(1.0 / px))
    m = fill_holes(m)
    min_area = np.pi * (0.5 * settings.tumor_min_diameter_mm / px) ** 2
    max_area = np.pi * (0.5 * settings.tumor_max_diameter_mm / px) ** 2
    n, labels, stats, cents = components_with_stats(m)
    out: list[TumorCandidate] = []
    follow_area = np.count_nonzero(follow_w) if follow_w is not None and follow_w.shape == valid.shape else 0
    for label in range(1, n):
        area = int(stats[label, cv2.CC_STAT_AREA])
        if area < min_area or area > max_area:
            continue
        x, y, w, h = (int(v) for v in stats[label, :4])
        sub = labels[y:y + h, x:x + w] == label  # the full-grid mask only for the blobs kept
        if (border_w[y:y + h, x:x + w] & sub).any() or (lumen_w[y:y + h, x:x + w] & sub).any():
            continue
        below_lumen = bool(lumen_w.any()) and _below_vessel(skirt, (x, y, w, h), px=px)
        followed = (follow_area > 0 and not below_lumen
                    and _box_iou(sub, (x, y), follow_w, follow_area) >= BRIGHT_FOLLOW_IOU)
        contours, _ = cv2.findContours(sub.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        hull_area = cv2.contourArea(cv2.convexHull(np.vstack(contours))) if contours else area
        solidity = min(area / hull_area, 1.0) if hull_area > 0 else 0.0
        if solidity < (BRIGHT_FOLLOW_MIN_SOLIDITY if followed else BRIGHT_MIN_SOLIDITY):
            continue
        elongation = elongation_of(sub.astype(np.uint8))
        if elongation > BRIGHT_MAX_ELONGATION:
            continue
        if _near_bottom(prep, sub, (x, y, w, h), margin_mm=settings.shadow_bottom_margin_mm):
            continue  # the fan bottom (noise floor, the last TGC rows)
        comp = np.zeros_like(valid)
        comp[y:y + h, x:x + w] = sub
        around = _all_around(rel, comp, (x, y, w, h), valid=tissue, px=px)
        if around < (BRIGHT_FOLLOW_ALL_AROUND if followed else BRIGHT_ALL_AROUND):
            continue
        if below_lumen and around < BRIGHT_BELOW_LUMEN_ALL_AROUND:
            continue  # what is left of the posterior enhancement right behind a lumen
        lab = comp.astype(np.int32)
        contrast_db = _edge_contrast_db(rel, lab, 1, (x, y, w, h), px=px, exclude=skirt)
        out.append(TumorCandidate(mask_w=comp, bbox_w=(x, y, w, h), area_mm2=area * px * px,
                                  centroid_w=(float(cents[label, 0]), float(cents[label, 1])), dark=False,
                                  contrast_db=contrast_db, solidity=float(solidity),
                                  touches_border=edge_w is not None and bool((edge_w[y:y + h, x:x + w] & sub).any()),
                                  threshold_db=cut, elongation=elongation))
    return out


def elongation_of(sub: np.ndarray) -> float:
    """Axis ratio (long over short, >= 1) of a binary component (uint8) from its second moments;
    inf for a line one pixel thin."""
    mom = cv2.moments(sub, binaryImage=True)
    if mom["m00"] <= 0:
        return float("inf")
    mu20, mu02, mu11 = mom["mu20"] / mom["m00"], mom["mu02"] / mom["m00"], mom["mu11"] / mom["m00"]
    lam = np.linalg.eigvalsh(np.array([[mu20, mu11], [mu11, mu02]]))
    return float(np.sqrt(lam[1] / lam[0])) if lam[0] > 0 else float("inf")


def _all_around(rel: np.ndarray, comp: np.ndarray, bbox: tuple[int, int, int, int], *, valid: np.ndarray,
                px: float, sectors: int = 8) -> int:
    """How many of ``sectors`` directions around a bright component (working grid) have tissue
    1-4 mm outside it at least ``BRIGHT_RING_MIN_DB`` dB darker than the component's mean
    (``rel``: level minus the row's tissue, dB; a direction with fewer than 5 valid tissue
    pixels does not count)."""
    x, y, w, h = bbox
    pad = int(np.ceil(4.0 / px)) + 1
    y0, y1 = max(y - pad, 0), min(y + h + pad, rel.shape[0])
    x0, x1 = max(x - pad, 0), min(x + w + pad, rel.shape[1])
    c = comp[y0:y1, x0:x1].astype(np.uint8)
    d_out = cv2.distanceTransform(1 - c, cv2.DIST_L2, 3)
    sub = rel[y0:y1, x0:x1]
    ring = (d_out > 1.0 / px) & (d_out <= 4.0 / px) & valid[y0:y1, x0:x1]
    inside = float(np.mean(sub[c.astype(bool)]))
    ys, xs = np.nonzero(ring)
    if not len(xs):
        return 0
    m = cv2.moments(c, binaryImage=True)
    cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
    k = np.clip(((np.arctan2(ys - cy, xs - cx) + np.pi) / (2 * np.pi) * sectors).astype(int), 0, sectors - 1)
    vals = sub[ys, xs]
    count = 0
    for i in range(sectors):
        sel = k == i
        if np.count_nonzero(sel) >= 5 and inside - float(np.mean(vals[sel])) >= BRIGHT_RING_MIN_DB:
            count += 1
    return count



#: anechoic blobs less solid than this (crescents, rings: a halo seen black) stay lesion
ANECHOIC_MIN_SOLIDITY = 0.75
#: a dark component less solid than this is tested as an open halo ring
RING_SOLIDITY = 0.7


def anechoic_mask(prep: Prepared, *, settings: TrackingSettings, min_solidity: float = 0.0) -> np.ndarray:
    """Anechoic blobs of the working grid (lumen-like: no speckle), as the vessel detector
    defines a lumen core: below ``lumen_core_fraction`` of the tissue level on the display's dB
    scale and ``lumen_contrast_db`` under it, opened by 0.5 mm (isolated dark speckle is not a
    lumen). A hypoechoic lesion or halo keeps speckle above this level, but a thick halo on a
    dark display may not: with ``min_solidity`` > 0 only solid blobs are kept (a lumen is a
    disc, oval or band; a halo seen black is a crescent or a ring around echoic tissue) whose
    core is black on the display (a lesion-sized blob with speckle above the black level in
    much of its core is tissue: a dark lesion or a section through a thick halo).

    Parameters
    ----------
    prep : Prepared
    settings : TrackingSettings

    Returns
    -------
    ndarray (h, w) bool
        New array.
    """
    core_level = black_core_level(prep, settings=settings).astype(np.float32)[:, None]
    m = ((prep.smooth < core_level) & prep.valid).astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, disc(0.5 / prep.work_px_mm))
    if min_solidity > 0:
        # a lumen is solid (a disc, an oval, a band); a crescent or a ring is a halo seen dark.
        # And a lumen is black inside on the display; a dark lesion (or a section through a
        # thick halo) keeps speckle above the black level in much of its core
        black_amp = float(10.0 ** ((settings.black_level / 255.0 - 1.0) * settings.display_dynamic_range_db / 20.0))
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        keep = np.zeros_like(m)
        for cnt in contours:
            area = cv2.contourArea(cnt)
            hull = cv2.contourArea(cv2.convexHull(cnt))
            if hull > 0 and area / hull >= min_solidity and not _speckled_core(
                    prep, cnt, black_amp=black_amp, min_diameter_mm=settings.tumor_min_diameter_mm):
                cv2.drawContours(keep, [cnt], -1, 1, thickness=cv2.FILLED)
        m &= keep
    return m.astype(bool)


#: a blob whose core has at least this fraction of its frame pixels above the black level
#: has speckle: tissue (a dark lesion), not a lumen
SPECKLED_MIN_FRACTION = 0.4


def _speckled_core(prep: Prepared, contour_w: np.ndarray, *, black_amp: float, min_diameter_mm: float) -> bool:
    """Whether the core of a dark blob (working-grid contour; the blob eroded by 30 % of its
    equivalent radius) shows echo above the black level in at least ``SPECKLED_MIN_FRACTION``
    of its full-resolution pixels. Lumens on a display are black inside (detected lumens of
    >= 5 mm on the development cases: >= 72 % of their core black, 97 % of them >= 97 %);
    a dark lesion section keeps speckle (median 44 % black)."""
    px = prep.work_px_mm
    area = cv2.contourArea(contour_w)
    if 2.0 * np.sqrt(area / np.pi) * px < min_diameter_mm:
        return False  # below the smallest tumour: a lumen however it looks
    x, y, w, h = cv2.boundingRect(contour_w)
    sub = np.zeros((h, w), np.uint8)
    cv2.drawContours(sub, [contour_w - np.array([x, y])], -1, 1, thickness=cv2.FILLED)
    k = max(int(round(0.3 * np.sqrt(area / np.pi))), 1)
    core = cv2.erode(sub, disc(k))
    if not core.any():
        return False
    fx0, fy0 = prep.to_frame(x - 0.5, y - 0.5)
    fx1, fy1 = prep.to_frame(x + w - 0.5, y + h - 0.5)
    rows, cols = prep.amplitude.shape
    c0, r0 = max(int(np.floor(fx0 + 0.5)), 0), max(int(np.floor(fy0 + 0.5)), 0)
    c1, r1 = min(int(np.ceil(fx1 + 0.5)), cols), min(int(np.ceil(fy1 + 0.5)), rows)
    if c1 <= c0 or r1 <= r0:
        return False
    core_f = cv2.resize(core, (c1 - c0, r1 - r0), interpolation=cv2.INTER_NEAREST).astype(bool)
    vals = prep.amplitude[r0:r1, c0:c1][core_f]
    return bool(vals.size and np.count_nonzero(vals > black_amp) >= SPECKLED_MIN_FRACTION * vals.size)


def close_ring(comp_w: np.ndarray, bbox_w: tuple[int, int, int, int], *, rel: np.ndarray, valid: np.ndarray,
               px_mm: float, contrast_db: float, sectors: int = 24, min_coverage: float = 0.6) -> np.ndarray | None:
    """The lesion a broken dark ring (halo) surrounds: its convex hull, or None if not a ring.

    A halo ring is accepted when its pixels lie in at least ``min_coverage`` of ``sectors``
    directions around the hull centre, at a similar distance (ring-like: the spread of the
    per-sector distance is under 35 % of its median), and the hull's interior away from the
    ring is not dark lesion itself (mean contrast above ``-contrast_db``: an isoechoic or
    target centre).

    Parameters
    ----------
    comp_w : ndarray (h, w) bool
        Dark component on the working grid.
    bbox_w : (x, y, w, h)
    rel : ndarray (h, w) float
        Level minus tissue, dB.
    valid : ndarray (h, w) bool
        Pixels that may belong to a lesion (field of view, no lumen).
    px_mm : float
        Working pixel size, mm.
    contrast_db : float

    Returns
    -------
    ndarray (h, w) bool or None
    """
    x, y, w, h = bbox_w
    sub = comp_w[y:y + h, x:x + w].astype(np.uint8)
    contours, _ = cv2.findContours(sub, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    hull = cv2.convexHull(np.vstack(contours))
    hull_mask = np.zeros_like(sub)
    cv2.fillConvexPoly(hull_mask, hull, 1)
    m = cv2.moments(hull_mask, binaryImage=True)
    if m["m00"] <= 0:
        return None
    cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
    ys, xs = np.nonzero(sub)
    ang = np.arctan2(ys - cy, xs - cx)
    k = np.clip(((ang + np.pi) / (2 * np.pi) * sectors).astype(int), 0, sectors - 1)
    dist = np.hypot(xs - cx, ys - cy)
    counts = np.bincount(k, minlength=sectors)
    if np.count_nonzero(counts) < min_coverage * sectors:
        return None
    per = np.array([np.median(dist[k == i]) for i in range(sectors) if counts[i]])
    if np.std(per) > 0.35 * np.median(per):
        return None
    interior = hull_mask.astype(bool) & (cv2.distanceTransform(1 - sub, cv2.DIST_L2, 3) > 1.0 / px_mm)
    if np.count_nonzero(interior) < 4:
        return None
    if float(np.mean(rel[y:y + h, x:x + w][interior])) < -contrast_db:
        return None
    out = np.zeros_like(comp_w, dtype=bool)
    out[y:y + h, x:x + w] = hull_mask.astype(bool)
    return out & valid | comp_w


def _beam_band(comp: np.ndarray) -> bool:
    """Whether a component (inside its bounding box) is a band along the beam: taller than
    1.5 x its width and elongated (axis ratio >= 2) within 15 degrees of vertical."""
    h, w = comp.shape
    if h <= 1.5 * w:
        return False
    m = cv2.moments(comp.astype(np.uint8), binaryImage=True)
    if m["m00"] <= 0:
        return False
    mu20, mu02, mu11 = m["mu20"] / m["m00"], m["mu02"] / m["m00"], m["mu11"] / m["m00"]
    lam = np.linalg.eigvalsh(np.array([[mu20, mu11], [mu11, mu02]]))
    tilt_deg = abs(np.degrees(0.5 * np.arctan2(2 * mu11, mu02 - mu20)))
    return bool(lam[0] > 0 and lam[1] / lam[0] >= 4.0 and tilt_deg <= 15.0)


def _below_vessel(vessels: np.ndarray, bbox: tuple[int, int, int, int], *, px: float) -> bool:
    """Whether a bright region hangs right below a lumen (posterior acoustic enhancement)."""
    x, y, w, h = bbox
    band = int(np.ceil(3.0 / px))
    above = vessels[max(y - band, 0):y + max(h // 4, 1), x:x + w]
    return bool(above.any(axis=0).mean() >= 0.3) if above.size else False


def _edge_contrast_db(rel: np.ndarray, labels: np.ndarray, label: int, bbox: tuple[int, int, int, int], *,
                      px: float, exclude: np.ndarray) -> float:
    x, y, w, h = bbox
    pad = int(np.ceil(3.0 / px)) + 1
    y0, y1 = max(y - pad, 0), min(y + h + pad, rel.shape[0])
    x0, x1 = max(x - pad, 0), min(x + w + pad, rel.shape[1])
    comp = (labels[y0:y1, x0:x1] == label).astype(np.uint8)
    d_out = cv2.distanceTransform(1 - comp, cv2.DIST_L2, 3)
    d_in = cv2.distanceTransform(comp, cv2.DIST_L2, 3)
    ring = (d_out > 1.0 / px) & (d_out <= 3.0 / px) & (labels[y0:y1, x0:x1] == 0) & ~exclude[y0:y1, x0:x1]
    rim = (d_in > 0) & (d_in <= 1.5 / px)
    if not ring.any() or not rim.any():
        return 0.0
    sub = rel[y0:y1, x0:x1]
    return float(abs(np.mean(sub[rim]) - np.mean(sub[ring])))


#: a new automatic proposal is at least this many times the minimum tumour size (equivalent
#: diameter; a pending one only 1 x)
AUTO_SIZE_FACTOR = 1.1
#: a bright candidate longer than this many times its width (axis ratio) is not proposed: a
#: metastasis is a compact blob (a calcified one's bright top a crescent, <= ~3.5 on the development
#: seeds 8500-8599, mostly < 2.5); a specular interface (liver capsule, fascia, diaphragm, a
#: vessel wall) is a long band (3.3-6.6 for every bright proposal on the real liver sweep)
AUTO_BRIGHT_MAX_ELONGATION = 3.0
#: a dark candidate longer than this many times its width is not proposed either: a dark band is
#: a vessel in long axis or an acoustic shadow (on a convex fan a calcified lesion's shadow stripes
#: run along the slanted beams, which the column-wise calcium_shadow test does not follow: fresh
#: 10768, a 1.5 x 35 mm stripe proposed and followed); a dark metastasis is compact
AUTO_DARK_MAX_ELONGATION = 4.0


def plausible_auto(candidate: TumorCandidate, *, settings: TrackingSettings, contrast_scale: float = 1.0) -> bool:
    """Whether a candidate may be proposed without a seed (compact, inside the view, contrasted;
    a bright one not longer than ``AUTO_BRIGHT_MAX_ELONGATION`` x its width).

    ``contrast_scale`` < 1 lowers the edge-contrast requirement (hysteresis for a candidate
    that was already proposed on the previous frame); the hysteresis also keeps a pending
    candidate that is only just above the minimum tumour size (not ``AUTO_SIZE_FACTOR`` x) or a little less
    solid (0.7, not 0.8): a small lesion's section flickers around both limits in speckle."""
    hyst = contrast_scale < 1.0
    if not candidate.dark and candidate.elongation > AUTO_BRIGHT_MAX_ELONGATION:
        return False  # a specular interface (capsule, fascia, diaphragm, vessel wall), not a lesion
    if candidate.dark and candidate.elongation > AUTO_DARK_MAX_ELONGATION:
        return False  # a dark band: a vessel along its length or a shadow, not a lesion
    return (not candidate.touches_border and candidate.solidity >= (0.7 if hyst else 0.8)
            and candidate.contrast_db >= contrast_scale * min(settings.tumor_contrast_db, candidate.threshold_db)
            and settings.tumor_min_diameter_mm * (1.0 if hyst else AUTO_SIZE_FACTOR) <= candidate.equivalent_diameter_mm)


#: a dark candidate whose core is this far under the tissue (dB) ...
LUMEN_LIKE_CORE_DB = -4.0
#: ... the core being the candidate's pixels at least this fraction of its largest inscribed
#: radius (and >= 1 mm) from its edge (0: the 1 mm erosion, as before this switch)
LUMEN_LIKE_CORE_DEPTH = 0.5
#: ... and whose posterior band is this much brighter than beside it (dB) looks like a lumen
LUMEN_LIKE_ENHANCEMENT_DB = 1.0
#: ... or this many times as much brighter than beside it (the tissue above it not as much);
#: dark lesions of the development seeds 8200-8299 (hypoechoic, target, halo: 95 plausible
#: candidates) showed at most 1.0 dB either way, missed lumens (>= 4.5 mm) mostly 1.5-5 dB
LUMEN_LIKE_STRONG_FACTOR = 1.5


def looks_like_lumen(prep: Prepared, candidate: TumorCandidate, *,
                     enhancement_db: float = LUMEN_LIKE_ENHANCEMENT_DB, either: bool = False) -> bool:
    """Whether a dark candidate looks like a vessel lumen the vessel detector missed (a grey
    lumen deep in the image, where noise lifts it off black): its core is clearly darker than
    tissue (at least ``-LUMEN_LIKE_CORE_DB`` dB under it) *and* it shows posterior acoustic
    enhancement - blood attenuates about three times less than liver, so the tissue 1-6 mm below
    a lumen is brighter than the tissue beside it at the same depth and than the tissue 1-6 mm
    above it (by ~0.5 dB per mm of lumen), while a solid lesion attenuates like liver or more. A lesion with an echoic core (target,
    isoechoic with halo) is never lumen-like, whatever lies below it. In a convex image the tissue
    above a deep lumen is brighter than its row's median, so the comparison with above may fail:
    an enhancement of ``LUMEN_LIKE_STRONG_FACTOR`` x ``enhancement_db`` beside it is then enough,
    unless the tissue above is as much brighter than beside it (a bright structure, not a band
    below the candidate).

    Parameters
    ----------
    prep : Prepared
    candidate : TumorCandidate
    enhancement_db : float
        Posterior enhancement (dB) that counts.
    either : bool
        Enough that one of the two comparisons shows it (a stricter test, for proposals
        reported on their first frame).

    Returns
    -------
    bool
    """
    if not candidate.dark:
        return False
    px = prep.work_px_mm
    rel = prep.smooth - prep.tissue_row[:, None].astype(np.float32)
    m = candidate.mask_w.astype(np.uint8)
    x, y, w, h = candidate.bbox_w
    if LUMEN_LIKE_CORE_DEPTH > 0:
        # the centre: a target lesion's thick dark halo fills much of a 1 mm erosion, its echoic
        # centre is deeper in; a lumen is as dark at its centre as anywhere
        sub = np.pad(m[y:y + h, x:x + w], 1)
        dist = cv2.distanceTransform(sub, cv2.DIST_L2, 3)[1:-1, 1:-1]
        depth_px = min(max(1.0 / px, LUMEN_LIKE_CORE_DEPTH * float(dist.max())), float(dist.max()))
        core = np.zeros(m.shape, bool)
        core[y:y + h, x:x + w] = dist >= depth_px
    else:
        core = cv2.erode(m, disc(1.0 / px)).astype(bool)
    if not core.any():
        core = m.astype(bool)
    if float(np.median(rel[core])) > LUMEN_LIKE_CORE_DB:
        return False
    y0, y1 = y + h - 1 + int(round(1.0 / px)), y + h - 1 + int(round(6.0 / px))
    if y0 >= rel.shape[0]:
        return False
    band = slice(y0, min(y1, rel.shape[0]))
    below, vb = rel[band, x:x + w], prep.valid[band, x:x + w]
    side = np.concatenate([rel[band, max(x - w, 0):x], rel[band, x + w:x + 2 * w]], axis=1)
    vs = np.concatenate([prep.valid[band, max(x - w, 0):x], prep.valid[band, x + w:x + 2 * w]], axis=1)
    a0, a1 = max(y - int(round(6.0 / px)), 0), max(y - int(round(1.0 / px)), 0)
    above, va = rel[a0:a1, x:x + w], prep.valid[a0:a1, x:x + w]
    if min(np.count_nonzero(vb), np.count_nonzero(vs), np.count_nonzero(va)) <= 10:
        return False
    # brighter below than beside (same depth) and than above (same columns: a convex fan's
    # off-axis columns are deeper along their beams, so beside alone is biased there)
    below_db = float(np.median(below[vb]))
    side_db = below_db - float(np.median(side[vs]))
    above_db = below_db - float(np.median(above[va]))
    vs_side, vs_above = side_db >= enhancement_db, above_db >= enhancement_db
    if either:
        return vs_side or vs_above
    if vs_side and vs_above:
        return True
    # a deep lumen in a convex image: the tissue above it is brighter than its row's median
    # (rows run across beams of different depths), so the comparison with above fails there.
    # LUMEN_LIKE_STRONG_FACTOR x the enhancement that counts beside it is enough, unless the
    # tissue above is as much brighter than beside it (a bright structure across the lesion's
    # depth, not a band below it)
    strong = LUMEN_LIKE_STRONG_FACTOR * enhancement_db
    if side_db < strong:
        return False
    side_above = np.concatenate([rel[a0:a1, max(x - w, 0):x], rel[a0:a1, x + w:x + 2 * w]], axis=1)
    vsa = np.concatenate([prep.valid[a0:a1, max(x - w, 0):x], prep.valid[a0:a1, x + w:x + 2 * w]], axis=1)
    if np.count_nonzero(vsa) <= 10:
        return False
    return float(np.median(above[va])) - float(np.median(side_above[vsa])) < strong


def behind_lumen(prep: Prepared, candidate: TumorCandidate, lumens: list[TumorCandidate]) -> bool:
    """Whether a bright candidate hangs right below one of ``lumens`` (dark candidates that look
    like lumens the vessel detector missed, :func:`looks_like_lumen`): the posterior acoustic
    enhancement of that lumen, not a hyperechoic lesion (the lesion map already drops the
    enhancement below *detected* lumens).

    Parameters
    ----------
    prep : Prepared
    candidate : TumorCandidate
    lumens : list of TumorCandidate

    Returns
    -------
    bool
    """
    if candidate.dark or not lumens:
        return False
    mask = np.zeros(prep.work_shape, dtype=bool)
    for c in lumens:
        mask |= c.mask_w
    return _below_vessel(mask, candidate.bbox_w, px=prep.work_px_mm)


#: a proposal is reported on its first frame with this many times the map's contrast at its edge
#: (and solid, with no rival of half its score): most dark metastases at medium difficulty show
#: 4-4.5 dB, which 1.5 x (4.5 dB) missed, so every clip lost its first frame
STRONG_CONTRAST = 1.25
STRONG_RIVAL = 2.0


def competes(candidate: TumorCandidate, *, settings: TrackingSettings) -> bool:
    """Whether a candidate is lesion-like enough to compete with a proposal reported on its first
    frame (:func:`strong_auto`): :func:`plausible_auto` without its border and shape tests. A
    structure cut by the edge of the view or longer than a lesion is not proposed, but while it is
    in view the image does not show one clear lesion. A bright blob at the noisy bottom of the
    view (``near_bottom``) is noise, not a lesion-like structure, and does not compete."""
    if candidate.near_bottom:
        return False
    return plausible_auto(replace(candidate, touches_border=False, elongation=1.0), settings=settings)


def strong_auto(candidate: TumorCandidate, plausible: list[TumorCandidate], *, settings: TrackingSettings) -> bool:
    """Whether an automatic proposal is clear enough to report on its first frame:
    ``STRONG_CONTRAST`` x the contrast required, solid, and at least ``STRONG_RIVAL`` x the score
    of every other plausible candidate (no competing lesion to choose from)."""
    if candidate.contrast_db < STRONG_CONTRAST * min(settings.tumor_contrast_db, candidate.threshold_db):
        return False
    if candidate.solidity < 0.9:
        return False
    return all(c is candidate or candidate.score() >= STRONG_RIVAL * c.score() for c in plausible)


def lumen_in_place(previous_w: np.ndarray, lumens_w: list[np.ndarray], *, px_mm: float,
                   min_iou: float = 0.5, max_area_change: float = 2.0,
                   contrast_db: float = 0.0) -> TumorCandidate | None:
    """The followed lesion seen as a "lumen": a detected lumen overlapping last frame's lesion
    by IoU >= ``min_iou`` with an area within ``max_area_change`` of it (a lesion section
    that went black, e.g. through its halo; a real vessel does not appear in its place).

    Parameters
    ----------
    previous_w : ndarray (h, w) bool
        Last frame's lesion on the working grid.
    lumens_w : list of ndarray (h, w) bool
        This frame's detected lumens.
    px_mm : float
        Working pixel size, mm.
    contrast_db : float
        Edge contrast carried over from the followed lesion (the candidate's confidence).

    Returns
    -------
    TumorCandidate or None
    """
    best, best_iou = None, min_iou
    prev_area = np.count_nonzero(previous_w)
    for m in lumens_w:
        area = np.count_nonzero(m)
        if not area or max(area, prev_area) > max_area_change * min(area, prev_area):
            continue
        overlap = iou(m, previous_w)
        if overlap >= best_iou:
            best, best_iou = m, overlap
    if best is None:
        return None
    ys, xs = np.nonzero(best)
    bbox = (int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1)
    return TumorCandidate(mask_w=best.copy(), bbox_w=bbox, area_mm2=float(len(xs)) * px_mm * px_mm,
                          centroid_w=(float(xs.mean()), float(ys.mean())), dark=True, contrast_db=float(contrast_db),
                          solidity=1.0, touches_border=False)


def follow_template(mask_w: np.ndarray, previous_w: np.ndarray, *, px_mm: float,
                    shrink_ratio: float = 0.75, min_ratio: float = 0.25, erode_mm: float = 1.0,
                    exclude_w: np.ndarray | None = None, exclude_margin_mm: float = 0.0) -> np.ndarray:
    """This frame's lesion pieces completed by the previous outline when the map broke up.

    Between two frames a lesion barely changes; when the pieces found near the previous
    outline cover less than ``shrink_ratio`` (but at least ``min_ratio``) of its area, the
    previous mask eroded by ``erode_mm`` is added (the boundary refinement then places the
    edge on this frame's echo levels).

    Parameters
    ----------
    mask_w, previous_w : ndarray (h, w) bool
        This frame's pieces and the previous lesion on the working grid.
    px_mm : float
        Working pixel size, mm.
    exclude_w : ndarray (h, w) bool, optional
        This frame's vessel lumens: never added (with ``exclude_margin_mm`` around them), so a
        vessel that moved against the lesion is not swallowed by last frame's outline.

    Returns
    -------
    ndarray (h, w) bool
        New array.
    """
    area, prev_area = np.count_nonzero(mask_w), np.count_nonzero(previous_w)
    if prev_area == 0 or not (min_ratio * prev_area <= area < shrink_ratio * prev_area):
        return mask_w.copy()
    core = cv2.erode(previous_w.astype(np.uint8), disc(erode_mm / px_mm)).astype(bool)
    if exclude_w is not None and exclude_w.any():
        excl = exclude_w.astype(np.uint8)
        if exclude_margin_mm > 0:
            excl = cv2.dilate(excl, disc(exclude_margin_mm / px_mm))
        core &= ~excl.astype(bool)
    return mask_w | core


def _box_iou(sub: np.ndarray, origin: tuple[int, int], mask_w: np.ndarray, mask_area: int) -> float:
    """IoU of a component given inside its bounding box (``sub`` (h, w) bool at ``origin`` (x, y)
    of the working grid; it has no pixel outside that box) with a full-grid mask of ``mask_area``
    pixels: the intersection is counted in the box only."""
    x, y = origin
    h, w = sub.shape
    inter = np.count_nonzero(sub & mask_w[y:y + h, x:x + w])
    union = np.count_nonzero(sub) + mask_area - inter
    return inter / union if union else 0.0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (0 when their shapes differ: a mask kept from
    before a change of the working grid, e.g. a new calibration, overlaps nothing)."""
    if a.shape != b.shape:
        return 0.0
    inter = np.count_nonzero(a & b)
    union = np.count_nonzero(a | b)
    return inter / union if union else 0.0


def refine_tumor(prep: Prepared, candidate: TumorCandidate, *, settings: TrackingSettings,
                 vessel_mask_frame: np.ndarray | None = None) -> Refined | None:
    """Full-resolution sub-pixel boundary of a lesion candidate (vessel lumens excluded).

    The region-wide cut of :func:`refine_region` gives a first outline; the edge is then placed
    along its normals at the local half-way level between the lesion and the tissue right
    outside it (:func:`place_edge`). A dark lesion (hypoechoic, or a halo): the region-wide
    inside level includes an isoechoic centre and puts the edge too far out; an outline with a
    deep bay starts from its convex hull. A bright lesion starts from the convex hull of the cut
    (dark speckle and the lesion's own attenuation, which darkens its deep part, leave bays the
    region-wide level cannot bridge) and its inside level is the mean over a plateau inside the
    outline, not its brightest place (biased high in speckle)."""
    x, y, w, h = candidate.bbox_w
    tissue_power = float(np.mean(prep.tissue_power_row[y:y + h]))
    refined = refine_region(prep, candidate.mask_w, candidate.bbox_w, dark=candidate.dark,
                            smoothing_mm=settings.tumor_smoothing_mm,
                            upsample=max(1, settings.upsample_for(min(prep.unit_mm)) - 1),
                            level_fraction=settings.edge_level_fraction, margin_mm=3.0,
                            exclude_frame=vessel_mask_frame, fill=True, exclude_fill=tissue_power,
                            band_limit_mm=1.0, keep_core=True)
    if refined is None:
        return refined
    contour = _hull_if_bay(refined.contour_px, vessel_mask_frame, solidity=BAY_SOLIDITY if candidate.dark else None)
    # the edge is placed along the normals of a first outline without its speckle-scale bumps:
    # the offsets are averaged along the outline, so a bump of the first outline would survive
    # them, and the distance to a vessel (a minimum over the outline) would pick it
    contour = lowpass_contour(contour, unit_mm=prep.unit_mm, cutoff_mm=EDGE_START_CUTOFF_MM)
    contour = place_edge(prep, contour, dark=candidate.dark, level_fraction=settings.edge_level_fraction,
                         min_contrast_db=settings.tumor_contrast_db, exclude_frame=vessel_mask_frame, exclude_power=tissue_power)
    if not candidate.dark:
        hidden = shadowed_extent(prep, candidate, shadow_db=settings.tumor_contrast_db)
        if hidden is not None:  # the deep part is assumed, not seen: keep what was measured
            return replace(refined, contour_px=_hull_with(contour, hidden), measured_contour_px=contour)
    return replace(refined, contour_px=contour)


#: place_learned_bright_edge: the edge is looked for this far (mm) either side of the model's
#: outline (its RMS offset from the true outline on hyperechoic dev lesions: 0.55 mm) ...
LEARNED_EDGE_MM = 1.0
#: ... the lesion's level is the mean over this band inside that outline (mm; clear of its edge) ...
LEARNED_PLATEAU_MM = (-2.5, -1.0)
#: ... and the outline is left where the model put it within this distance (mm) of a detected
#: lumen: beyond a portal pedicle's lumen lies its bright sheath, which the edge search takes for
#: lesion (dev 8830: a pedicle 1.2 mm from the lesion read 0 mm), or whose blur lifts the tissue
#: level so the edge moves in (synthetic lesion 0.5 mm from a 1.2 mm sheath: read 0.5 mm long,
#: the unsafe direction). Growing only held there: dev figures within 0.005 mm of these
LEARNED_EDGE_HOLD_MM = 2.0


def place_learned_bright_edge(prep: Prepared, contour_px: np.ndarray, candidate: TumorCandidate, *,
                              settings: TrackingSettings,
                              vessel_mask_frame: np.ndarray | None = None) -> np.ndarray:
    """A bright lesion's learned outline moved to the edge seen in the image.

    The lesion model's outline is its 0.5 iso-line on a 0.8 mm output grid: right on average,
    0.55 mm RMS off the true outline on hyperechoic dev lesions (larger where the lesion is
    shrinking out of the plane). Each point is moved along its normal to the half-power level
    between the lesion (the mean over ``LEARNED_PLATEAU_MM`` inside) and the tissue outside it,
    the outermost such crossing within ``LEARNED_EDGE_MM`` either side (:func:`place_edge`); a
    point whose profile shows no edge of ``tumor_contrast_db`` follows its neighbours. Within
    ``LEARNED_EDGE_HOLD_MM`` of a detected lumen it stays where the model put it (up to the
    averaging of the moves along the outline), and an outline
    near a lumen is not drawn onto it (a bright lesion's contact with a lumen is not inferred
    from the lumen's skirt as a dark lesion's is: the sheath between them is bright too).

    Parameters
    ----------
    prep : Prepared
    contour_px : ndarray (N, 2) float
        The model's outline, frame pixels (x, y), closed; not modified.
    candidate : TumorCandidate
        The model's candidate (its box sets the tissue level filled into lumens).
    settings : TrackingSettings
    vessel_mask_frame : ndarray (rows, cols) bool, optional
        Detected lumens in frame pixels.

    Returns
    -------
    ndarray (M, 2) float64
        New outline, frame pixels.
    """
    _, y, _, h = candidate.bbox_w
    tissue_power = float(np.mean(prep.tissue_power_row[y:y + h]))
    hold = None
    if vessel_mask_frame is not None and vessel_mask_frame.any() and LEARNED_EDGE_HOLD_MM > 0:
        hold = cv2.dilate(vessel_mask_frame.view(np.uint8) if vessel_mask_frame.dtype == bool
                          else vessel_mask_frame.astype(np.uint8),
                          disc(LEARNED_EDGE_HOLD_MM / min(prep.unit_mm))).astype(bool)
    start = lowpass_contour(contour_px, unit_mm=prep.unit_mm, cutoff_mm=EDGE_START_CUTOFF_MM)
    return place_edge(prep, start, dark=False, level_fraction=settings.edge_level_fraction,
                      min_contrast_db=settings.tumor_contrast_db, exclude_frame=vessel_mask_frame,
                      exclude_power=tissue_power, max_shift_mm=LEARNED_EDGE_MM, max_out_mm=LEARNED_EDGE_MM,
                      bright_crossing_mm=(-LEARNED_EDGE_MM, LEARNED_EDGE_MM), bright_max_out_mm=LEARNED_EDGE_MM,
                      plateau_mm=LEARNED_PLATEAU_MM, hold_frame=hold, reach_touching=False)


#: a bright lesion is shadowed when this fraction of its columns has a posterior acoustic shadow
#: (each calcium focus shadows only the few columns below it: a calcified lesion shows a few
#: narrow shadow stripes, not one shadow as wide as the lesion)
SHADOW_MIN_FRACTION = 0.2
#: the shadow is looked for this far (mm) below the lesion's lowest bright pixel of each column
SHADOW_BAND_MM = (1.0, 6.0)


def shadowed_extent(prep: Prepared, candidate: TumorCandidate, *, shadow_db: float) -> np.ndarray | None:
    """The part of a calcified lesion hidden in its own posterior acoustic shadow, or None.

    Calcium reflects and absorbs nearly all the sound: a calcified metastasis shows bright
    echogenic foci, and below them an acoustic shadow in which the rest of the lesion (and its
    deep edge) cannot be seen. The bright candidate is then only the lesion's top. When at least
    ``SHADOW_MIN_FRACTION`` of its columns have a shadow below (speckle-averaged level at least
    ``shadow_db`` under the row's tissue over ``SHADOW_BAND_MM`` below the candidate), the lesion
    is taken as round: a circle as wide as the candidate and the shadow (plus the 1 mm the
    calcium stays inside the lesion's edge, each side), its top at the candidate's top. This is
    the lesion's extent the image allows, not a measured edge.

    Parameters
    ----------
    prep : Prepared
    candidate : TumorCandidate
        A bright candidate.
    shadow_db : float
        dB under the tissue that counts as shadow.

    Returns
    -------
    ndarray (N, 2) float64 or None
        Outline of the assumed round lesion in frame pixels (x, y).
    """
    px = prep.work_px_mm
    x, y, w, h = candidate.bbox_w
    sub = candidate.mask_w[y:y + h, x:x + w]
    has = sub.any(axis=0)
    if not has.any():
        return None
    lowest = y + (h - 1 - np.argmax(sub[::-1, :], axis=0))
    rows = prep.smooth.shape[0]
    d0, d1 = (int(round(v / px)) for v in SHADOW_BAND_MM)
    # the band below each column's lowest lesion pixel: (columns, band rows), NaN where invalid
    cols = np.nonzero(has)[0]
    rr = lowest[cols][:, None] + np.arange(d0, d1)[None, :]
    inside = rr < rows
    rr = np.minimum(rr, rows - 1)
    cc = np.broadcast_to((x + cols)[:, None], rr.shape)
    ok = inside & prep.valid[rr, cc]
    band = np.where(ok, prep.smooth[rr, cc] - prep.tissue_row[rr].astype(np.float32), np.nan)
    enough = np.count_nonzero(ok, axis=1) >= 0.8 * (d1 - d0)
    shadowed = np.zeros(w, dtype=bool)
    if enough.any():
        level = np.nanmedian(band[enough], axis=1)
        shadowed[cols[enough]] = level <= -shadow_db
    if np.count_nonzero(shadowed) < SHADOW_MIN_FRACTION * np.count_nonzero(has):
        return None
    dark_cols = np.nonzero(shadowed)[0]
    left = min(float(cols[0]), dark_cols[0] - 1.0 / px)
    right = max(float(cols[-1]), dark_cols[-1] + 1.0 / px)
    radius = 0.5 * (right - left + 1)
    cx, cy = x + 0.5 * (left + right), y + radius - 0.5
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    xs, ys = cx + radius * np.cos(t), cy + radius * np.sin(t)
    fx, fy = prep.to_frame(xs, ys)
    return np.stack([np.asarray(fx, dtype=np.float64), np.asarray(fy, dtype=np.float64)], axis=1)


def _hull_with(contour_px: np.ndarray, extra_px: np.ndarray) -> np.ndarray:
    """The convex hull of an outline and further points, densified to ~1 px steps (frame px)."""
    pts = np.vstack([np.asarray(contour_px, dtype=np.float32), np.asarray(extra_px, dtype=np.float32)])
    hull = cv2.convexHull(pts)[:, 0, :].astype(np.float64)
    seg = np.roll(hull, -1, axis=0) - hull
    n = np.maximum(np.ceil(np.hypot(seg[:, 0], seg[:, 1])).astype(int), 1)
    out = [hull[i] + seg[i] * (np.arange(n[i])[:, None] / n[i]) for i in range(len(hull))]
    return np.vstack(out)


#: detail of the first outline shorter than this (wavelength along the outline, mm) is removed
#: before the edge placement (lowpass_contour; a 2-3 mm bump is speckle, not lesion shape)
EDGE_START_CUTOFF_MM = 6.0
#: a dark outline less solid than this starts the edge placement from its convex hull
BAY_SOLIDITY = 0.9


def _hull_if_bay(contour_px: np.ndarray, vessel_mask_frame: np.ndarray | None, *,
                 solidity: float | None = BAY_SOLIDITY) -> np.ndarray:
    """The convex hull of an outline with a deep bay (a halo arc lost in speckle leaves a C
    whose opening is isoechoic lesion centre), unless the bay holds a vessel lumen; the edge
    placement then moves the hull in to the halo or leaves it where no edge is seen.
    ``solidity`` None: the hull of any outline (a bright lesion), with the same lumen test."""
    c = np.asarray(contour_px, dtype=np.float32)
    hull = cv2.convexHull(c)[:, 0, :]
    hull_area = abs(cv2.contourArea(hull))
    if hull_area <= 0 or (solidity is not None and abs(cv2.contourArea(c)) >= solidity * hull_area):
        return np.asarray(contour_px, dtype=np.float64)
    if vessel_mask_frame is not None and vessel_mask_frame.any():
        m = np.zeros(vessel_mask_frame.shape, np.uint8)
        cv2.fillPoly(m, [np.round(hull * 8).astype(np.int32)], 1, shift=3)
        if np.count_nonzero(m.astype(bool) & vessel_mask_frame) > 0.02 * hull_area:
            return np.asarray(contour_px, dtype=np.float64)
    # densify the hull (place_edge resamples it along its length)
    return hull.astype(np.float64)
