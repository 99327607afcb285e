"""Tumour-to-vessel measurements: edge-to-edge distance, closest points, contact arc, uncertainty.

All functions take closed sub-pixel contours (frame pixels) and the pixel size
``unit_mm`` (x, y), and work in millimetres internally so anisotropic pixels are
handled. Contours from :mod:`iousguide.analysis.refine` have vertices every
``1 / refine_upsample`` pixel, so the nearest-vertex distance differs from the exact
polygon distance by far less than a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import cKDTree


@dataclass
class PairMeasure:
    """Measurements between the tumour and one vessel.

    Attributes
    ----------
    distance_mm : float
        Edge-to-edge distance (0 when touching or overlapping), in (nominal) mm.
    closest_px : ((float, float), (float, float))
        Closest tumour point and vessel point, frame pixels.
    contact_arc_deg : float
        Degrees of the vessel circumference within the contact distance of the tumour.
    """

    distance_mm: float
    closest_px: tuple[tuple[float, float], tuple[float, float]]
    contact_arc_deg: float


class TumorGeometry:
    """The tumour contour prepared for repeated distance queries.

    Parameters
    ----------
    contour_px : ndarray (N, 2) float
        Closed tumour boundary, frame pixels.
    unit_mm : (float, float)
        Pixel size x, y in mm (or the nominal internal scale).
    """

    def __init__(self, contour_px: np.ndarray, *, unit_mm: tuple[float, float]) -> None:
        self.contour_px = np.asarray(contour_px, dtype=np.float64).reshape(-1, 2)
        self.unit = np.array(unit_mm, dtype=np.float64)
        self.contour_mm = self.contour_px * self.unit
        self._tree = cKDTree(self.contour_mm)
        self._poly = self.contour_mm.astype(np.float32).reshape(-1, 1, 2)

    def inside(self, points_mm: np.ndarray) -> np.ndarray:
        """Whether points (mm) lie inside the tumour polygon, shape (M,) bool."""
        pts = np.asarray(points_mm, dtype=np.float64)
        lo = self.contour_mm.min(axis=0)
        hi = self.contour_mm.max(axis=0)
        cand = np.all((pts >= lo) & (pts <= hi), axis=1)
        out = np.zeros(len(pts), dtype=bool)
        for i in np.nonzero(cand)[0]:
            out[i] = cv2.pointPolygonTest(self._poly, (float(pts[i, 0]), float(pts[i, 1])), False) > 0
        return out

    def measure(self, vessel_contour_px: np.ndarray, *, contact_distance_mm: float) -> PairMeasure:
        """Distance, closest pair and contact arc to one vessel lumen contour.

        Parameters
        ----------
        vessel_contour_px : ndarray (M, 2) float
            Closed lumen boundary, frame pixels.
        contact_distance_mm : float
            Vessel boundary within this distance of the tumour counts as contact.

        Returns
        -------
        PairMeasure
        """
        v_px = np.asarray(vessel_contour_px, dtype=np.float64).reshape(-1, 2)
        v_mm = v_px * self.unit
        dist, idx = self._tree.query(v_mm)
        # vessel boundary inside the tumour: distance 0 there
        near = dist <= max(contact_distance_mm, float(dist.min()) + 1e-9)
        check = np.nonzero(near)[0]
        if len(check):
            inside = self.inside(v_mm[check])
            dist = dist.copy()
            dist[check[inside]] = 0.0
        k = int(np.argmin(dist))
        d_mm = float(dist[k])
        t_pt = self.contour_px[idx[k]]
        v_pt = v_px[k]
        if d_mm == 0.0:
            t_pt = v_pt
        # contact arc: arc length of the vessel boundary within the contact distance
        seg = np.hypot(*(np.concatenate([v_mm[1:], v_mm[:1]]) - v_mm).T)  # (np.roll's values)
        within = dist <= contact_distance_mm
        w_seg = 0.5 * (within.astype(float) + np.concatenate([within[1:], within[:1]]).astype(float))
        total = float(seg.sum())
        arc = 360.0 * float((seg * w_seg).sum()) / total if total > 0 else 0.0
        return PairMeasure(distance_mm=d_mm, closest_px=((float(t_pt[0]), float(t_pt[1])),
                                                          (float(v_pt[0]), float(v_pt[1]))),
                           contact_arc_deg=arc)


def caliper_uncertainty_mm(value_mm: float, *, full_scale_depth_mm: float, relative_fraction: float = 0.02,
                           full_scale_fraction: float = 0.01) -> float:
    """Vendor caliper rule: +/- (relative x value + full-scale fraction x depth), in mm."""
    return relative_fraction * abs(value_mm) + full_scale_fraction * full_scale_depth_mm


def distance_uncertainty_mm(distance_mm: float, *, unit_mm: tuple[float, float], edge_sigma_tumor_mm: float,
                            edge_sigma_vessel_mm: float, full_scale_depth_mm: float,
                            relative_fraction: float = 0.02, full_scale_fraction: float = 0.01) -> float:
    """Uncertainty of an edge-to-edge distance in mm.

    Root sum of squares of: the vendor caliper rule, pixel quantisation of two edges
    (each +/- half a pixel, uniform: sd = pixel / sqrt(12)), and the boundary position
    noise of each edge (residual speckle over the edge gradient, capped at 2 mm).
    """
    pixel_mm = float(max(unit_mm))
    terms = (
        caliper_uncertainty_mm(distance_mm, full_scale_depth_mm=full_scale_depth_mm,
                               relative_fraction=relative_fraction, full_scale_fraction=full_scale_fraction),
        np.sqrt(2.0) * pixel_mm / np.sqrt(12.0),
        min(edge_sigma_tumor_mm, 2.0),
        min(edge_sigma_vessel_mm, 2.0),
    )
    return float(np.sqrt(sum(t * t for t in terms)))
