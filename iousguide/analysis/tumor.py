"""Tumour: lesion map, segmentation from a seed, automatic candidates, refinement.

A lesion differs from liver tissue at the same depth: darker (hypoechoic, or the
hypoechoic halo of target and isoechoic-with-halo lesions) or brighter
(hyperechoic). On the working grid, pixels whose speckle-averaged level differs
from the tissue level of their row by more than ``tumor_contrast_db`` (in either
direction) form the lesion map; vessel lumens are removed,
thin rims are opened away, and holes are filled, so a halo ring becomes the whole
lesion. The chosen component is refined at full resolution at the half-power level
between its rim and the surrounding tissue.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from iousguide.analysis.imaging import Prepared, disc, fill_holes
from iousguide.analysis.refine import Refined, refine_region
from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.vessels import looks_like_shadow


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
    """

    mask_w: np.ndarray
    bbox_w: tuple[int, int, int, int]
    area_mm2: float
    centroid_w: tuple[float, float]
    dark: bool
    contrast_db: float
    solidity: float
    touches_border: bool

    @property
    def equivalent_diameter_mm(self) -> float:
        return float(2.0 * np.sqrt(self.area_mm2 / np.pi))

    def score(self) -> float:
        return self.contrast_db * np.sqrt(self.area_mm2) * self.solidity


def lesion_candidates(prep: Prepared, *, settings: TrackingSettings,
                      vessel_mask_w: np.ndarray | None = None) -> list[TumorCandidate]:
    """Hypo- and hyperechoic lesion components of a prepared frame.

    Parameters
    ----------
    prep : Prepared
    settings : TrackingSettings
    vessel_mask_w : ndarray (h, w) bool, optional
        Vessel lumens on the working grid (never lesion).

    Returns
    -------
    list of TumorCandidate
        Components of at least the minimum tumour size.
    """
    px = prep.work_px_mm
    sigma = settings.tumor_smoothing_mm / px
    smooth = cv2.GaussianBlur(prep.smooth, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    rel = smooth - prep.tissue_row[:, None].astype(np.float32)  # dB contrast to tissue
    c = settings.tumor_contrast_db
    valid = prep.valid
    if vessel_mask_w is not None and vessel_mask_w.any():
        # lumens and the blur skirt around them are not lesion
        skirt = cv2.dilate(vessel_mask_w.astype(np.uint8), disc(settings.tumor_smoothing_mm / px)).astype(bool)
    else:
        skirt = np.zeros_like(valid)
    out: list[TumorCandidate] = []
    min_area = np.pi * (0.5 * settings.tumor_min_diameter_mm / px) ** 2
    max_area = np.pi * (0.5 * settings.tumor_max_diameter_mm / px) ** 2
    border = valid & ~cv2.erode(valid.astype(np.uint8), disc(1.0 / px)).astype(bool)
    r_open = 0.4 / px  # thinner than the thinnest halo (~1 mm) so a halo ring survives
    for dark in (True, False):
        m = (rel < -c) if dark else (rel > c)
        m = (m & valid & ~skirt).astype(np.uint8)
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, disc(r_open))
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, disc(1.0 / px))
        if dark and skirt.any():
            # a halo ring closed by an abutting vessel is still a ring
            m = fill_holes(m | skirt.astype(np.uint8)) & ~skirt.astype(np.uint8)
            m = cv2.morphologyEx(m, cv2.MORPH_OPEN, disc(r_open))
        else:
            m = fill_holes(m)
        n, labels, stats, cents = cv2.connectedComponentsWithStats(m, connectivity=8)
        for label in range(1, n):
            area = int(stats[label, cv2.CC_STAT_AREA])
            if area < min_area or area > max_area:
                continue
            x, y, w, h = (int(v) for v in stats[label, :4])
            comp = labels == label
            if vessel_mask_w is not None and np.count_nonzero(comp & vessel_mask_w) > 0.02 * area:
                continue  # encloses a lumen: a bright sheath or the blur around a vessel, not a lesion
            sub = comp[y:y + h, x:x + w].astype(np.uint8)
            contours, _ = cv2.findContours(sub, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            hull_area = cv2.contourArea(cv2.convexHull(np.vstack(contours))) if contours else area
            solidity = min(area / hull_area, 1.0) if hull_area > 0 else 0.0
            contrast_db = _edge_contrast_db(rel, labels, label, (x, y, w, h), px=px, exclude=skirt)
            touches = bool((border & comp).any())
            if not dark and skirt.any() and _below_vessel(skirt, (x, y, w, h), px=px):
                continue  # posterior enhancement behind a lumen, not a lesion
            if dark and looks_like_shadow(prep, sub.astype(bool), (x, y, w, h), margin_mm=settings.shadow_bottom_margin_mm):
                continue
            out.append(TumorCandidate(mask_w=comp, bbox_w=(x, y, w, h), area_mm2=area * px * px,
                                      centroid_w=(float(cents[label, 0]), float(cents[label, 1])), dark=dark,
                                      contrast_db=contrast_db, solidity=float(solidity), touches_border=touches))
    return out


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


def plausible_auto(candidate: TumorCandidate, *, settings: TrackingSettings) -> bool:
    """Whether a candidate may be proposed without a seed (compact, inside the view, contrasted)."""
    return (not candidate.touches_border and candidate.solidity >= 0.8
            and candidate.contrast_db >= settings.tumor_contrast_db
            and settings.tumor_min_diameter_mm * 1.25 <= candidate.equivalent_diameter_mm)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks of the same shape."""
    inter = np.count_nonzero(a & b)
    union = np.count_nonzero(a | b)
    return inter / union if union else 0.0


def refine_tumor(prep: Prepared, candidate: TumorCandidate, *, settings: TrackingSettings,
                 vessel_mask_frame: np.ndarray | None = None) -> Refined | None:
    """Full-resolution sub-pixel boundary of a lesion candidate (vessel lumens excluded)."""
    x, y, w, h = candidate.bbox_w
    tissue_power = float(np.mean(prep.tissue_power_row[y:y + h]))
    return refine_region(prep, candidate.mask_w, candidate.bbox_w, dark=candidate.dark,
                         smoothing_mm=settings.tumor_smoothing_mm, upsample=max(1, settings.upsample_for(min(prep.unit_mm)) - 1),
                         level_fraction=settings.edge_level_fraction, margin_mm=3.0,
                         exclude_frame=vessel_mask_frame, fill=True, exclude_fill=tissue_power,
                         band_limit_mm=1.0, keep_core=True)
