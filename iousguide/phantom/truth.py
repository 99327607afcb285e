"""Exact per-frame ground truth from the analytic model, and the truth-side heat-sink rule.

Contours are traced on the label map, then every vertex is moved onto the exact
analytic boundary (Newton steps on the structure's field), so contours, diameters
and distances are sub-pixel accurate. Distances are in the image plane (what the
image shows), between the tumour boundary and the vessel lumen edge, 0 when they
touch or overlap.

The heat-sink rule here is the truth's own implementation of CLINICAL.md; the
guidance package implements the same rules independently (iousguide/guidance).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy.spatial import cKDTree

from iousguide.phantom.imaging import TUMOR_LABEL_BASE, ProbeGeometry, SliceMaps
from iousguide.phantom.model import LiverModel, ProbePose

#: ablation zone = tumour + this margin (CLINICAL.md "Ablative margin")
ABLATION_MARGIN_MM = 5.0


def heat_sink_class(diameter_mm: float, distance_to_tumor_mm: float, *, modality: str = "rfa",
                    ablation_margin_mm: float = ABLATION_MARGIN_MM) -> str:
    """Truth heat-sink class of one vessel (CLINICAL.md, "Ablation and heat sink").

    Parameters
    ----------
    diameter_mm : float
        Vessel lumen diameter (mm).
    distance_to_tumor_mm : float
        Tumour boundary to vessel lumen (mm).
    modality : {"rfa", "mwa"}
        Moderate band is 10 mm for RFA and 15 mm for MWA.
    ablation_margin_mm : float
        Ablation zone = tumour + this margin; distances are taken from the zone edge.

    Returns
    -------
    str
        ``"high"`` (vessel >= 3 mm within 5 mm of the zone edge, or >= 5 mm within 10 mm),
        ``"moderate"`` (>= 3 mm within 10 mm RFA / 15 mm MWA), else ``"none"`` (the issue-6 vocabulary).
    """
    modality = modality.lower()
    if modality not in ("rfa", "mwa"):
        raise ValueError(f"modality must be 'rfa' or 'mwa', got {modality!r}")
    d_zone = max(0.0, float(distance_to_tumor_mm) - ablation_margin_mm)
    if (diameter_mm >= 3.0 and d_zone <= 5.0) or (diameter_mm >= 5.0 and d_zone <= 10.0):
        return "high"
    if diameter_mm >= 3.0 and d_zone <= (10.0 if modality == "rfa" else 15.0):
        return "moderate"
    return "none"


def _plane_field(structure_field, pose: ProbePose, geometry: ProbeGeometry):
    """Field of a structure as a function of pixel coordinates (x = col, y = row) arrays."""
    sx, sy = geometry.spacing_mm
    cx = (geometry.width_px - 1) / 2.0

    def fn(px, py):
        u = (px - cx) * sx
        v = py * sy
        return structure_field(*pose.to_world(u, v))

    return fn


def refine_contour(points: np.ndarray, field, *, iterations: int = 4, max_move_px: float = 1.2,
                   frozen: np.ndarray | None = None) -> np.ndarray:
    """Move contour vertices onto the zero level set of ``field`` (Newton, numerical gradient).

    Parameters
    ----------
    points : ndarray (N, 2) float
        Vertices (x, y) in pixels, roughly on the boundary.
    field : callable (px, py) -> values
        Signed field, negative inside, any smooth scale.
    frozen : ndarray (N,) bool, optional
        Vertices left where they are (image or fan border).

    Returns
    -------
    ndarray (N, 2) float64 (a new array; vertices that would move too far stay put).
    """
    p = np.asarray(points, np.float64).copy()
    start = p.copy()
    h = 0.05
    for _ in range(iterations):
        f = field(p[:, 0], p[:, 1])
        gx = (field(p[:, 0] + h, p[:, 1]) - field(p[:, 0] - h, p[:, 1])) / (2 * h)
        gy = (field(p[:, 0], p[:, 1] + h) - field(p[:, 0], p[:, 1] - h)) / (2 * h)
        g2 = gx * gx + gy * gy
        ok = g2 > 1e-12
        step = np.where(ok, f / np.where(ok, g2, 1.0), 0.0)
        p[:, 0] -= step * gx
        p[:, 1] -= step * gy
    bad = np.hypot(*(p - start).T) > max_move_px
    bad |= ~np.isfinite(p).all(axis=1)
    if frozen is not None:
        bad |= frozen
    p[bad] = start[bad]
    return p


def _contours(mask: np.ndarray, offset: tuple[int, int]) -> list[np.ndarray]:
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = []
    for c in found:
        c = c.reshape(-1, 2).astype(np.float64)
        c[:, 0] += offset[0]
        c[:, 1] += offset[1]
        out.append(c)
    out.sort(key=lambda c: -len(c))
    return out


def _border_flags(points: np.ndarray, geometry: ProbeGeometry) -> np.ndarray:
    x, y = points[:, 0], points[:, 1]
    flags = (x <= 0.5) | (y <= 0.5) | (x >= geometry.width_px - 1.5) | (y >= geometry.height_px - 1.5)
    if geometry.kind == "convex":
        sx, sy = geometry.spacing_mm
        u = (x - (geometry.width_px - 1) / 2.0) * sx
        v = y * sy
        flags |= geometry.fan_field(u, v) > -1.5 * max(sx, sy)
    return flags


def min_caliper_width(points_mm: np.ndarray) -> float:
    """Smallest width (mm) of a polygon over all directions (minor axis for an ellipse)."""
    pts = np.asarray(points_mm, np.float32).reshape(-1, 1, 2)
    if len(pts) < 3:
        return 0.0
    hull = cv2.convexHull(pts).reshape(-1, 2).astype(np.float64)
    if len(hull) < 3:
        return 0.0
    edges = np.roll(hull, -1, axis=0) - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    keep = lengths > 1e-9
    edges, base = edges[keep] / lengths[keep, None], hull[keep]
    normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1)
    dist = np.abs(np.einsum("ijk,ik->ij", hull[None, :, :] - base[:, None, :], normals))
    return float(dist.max(axis=1).min())


def _simplify(points: np.ndarray, epsilon_px: float = 0.15) -> list[list[float]]:
    approx = cv2.approxPolyDP(points.astype(np.float32).reshape(-1, 1, 2), epsilon_px, True).reshape(-1, 2)
    return [[round(float(x), 2), round(float(y), 2)] for x, y in approx]


def frame_truth(model: LiverModel, pose: ProbePose, geometry: ProbeGeometry, maps: SliceMaps | None, *,
                frame: int, t_s: float, offset_px: tuple[int, int] = (0, 0), distance_limit_mm: float = 40.0) -> dict:
    """Ground truth of one frame as a JSON-ready dict (format in recordings/README.md).

    ``offset_px`` shifts every pixel coordinate (the ultrasound image inside a
    larger screen capture): truth is always in source-frame pixels.
    """
    sx, sy = geometry.spacing_mm
    ox, oy = offset_px
    base = {"frame": int(frame), "t_s": round(float(t_s), 6), "spacing_mm": [sx, sy],
            "probe": {"x_mm": round(pose.x_mm, 4), "y_mm": round(pose.y_mm, 4), "tilt_deg": round(pose.tilt_deg, 4),
                      "press": round(pose.press, 5), "lift": bool(pose.lift)}}
    if pose.lift or maps is None:
        base.update(status="no_signal", tumor=None, tumors=[], vessels=[], min_distance_mm=None)
        return base
    labels = maps.labels

    def shift(points):
        return points + np.array([ox, oy], float)

    # --- tumours -------------------------------------------------------------------
    tumors = []
    for tumor in model.tumors:
        label = TUMOR_LABEL_BASE + tumor.id
        box = maps.boxes.get(label)
        if box is None:
            continue
        r0, r1, c0, c1 = box
        mask = labels[r0:r1, c0:c1] == label
        area_px = int(mask.sum())
        if area_px < 3:
            continue
        nearby = [v for v in model.vessels if v.id in maps.boxes]
        scale = {v.id: v.pulse(t_s, model.heart_rate_hz) for v in nearby}

        def tumor_field(x, y, z, tumor=tumor, nearby=nearby, scale=scale):
            f = tumor.field(x, y, z)
            for v in nearby:
                fv, _ = v.field(x, y, z, scale=scale[v.id])
                f = np.maximum(f, -(fv - v.sheath_mm))
            return f

        fn = _plane_field(tumor_field, pose, geometry)
        contours = [refine_contour(c, fn, frozen=_border_flags(c, geometry)) for c in _contours(mask, (c0, r0))]
        contours = [c for c in contours if len(c) >= 3]
        if not contours:
            continue
        ys, xs = np.nonzero(mask)
        area_mm2 = area_px * sx * sy
        tumors.append({
            "id": tumor.id, "primary": tumor.primary, "appearance": tumor.appearance,
            "contrast_db": tumor.contrast_db, "halo_mm": tumor.halo_mm,
            "centroid_px": [round(float(xs.mean() + c0 + ox), 2), round(float(ys.mean() + r0 + oy), 2)],
            "contour_px": _simplify(shift(contours[0])),
            "contours_px": [_simplify(shift(c)) for c in contours[1:]],
            "area_px": area_px, "area_mm2": round(area_mm2, 3),
            "equivalent_diameter_mm": round(2 * math.sqrt(area_mm2 / math.pi), 3),
            "_dense": contours, "_mask": (mask, r0, c0), "_field": tumor,
        })

    # --- vessels -------------------------------------------------------------------
    vessels = []
    for vessel in model.vessels:
        box = maps.boxes.get(vessel.id)
        if box is None:
            continue
        r0, r1, c0, c1 = box
        mask = labels[r0:r1, c0:c1] == vessel.id
        area_px = int(mask.sum())
        if area_px < 2:
            continue
        scale = vessel.pulse(t_s, model.heart_rate_hz)
        fn = _plane_field(lambda x, y, z, v=vessel, s=scale: v.field(x, y, z, scale=s)[0], pose, geometry)
        contours = _contours(mask, (c0, r0))
        dense = [refine_contour(c, fn, frozen=_border_flags(c, geometry)) for c in contours]
        main = dense[0]
        all_pts = np.concatenate(dense)
        clipped = bool(_border_flags(all_pts, geometry).any())
        ys, xs = np.nonzero(mask)
        cx_px, cy_px = float(xs.mean() + c0), float(ys.mean() + r0)
        # axis parameter and true 3-D calibre at the section centre
        u = (cx_px - (geometry.width_px - 1) / 2.0) * sx
        v = cy_px * sy
        _, t_axis = vessel.field(*pose.to_world(np.array(u), np.array(v)), scale=scale)
        diameter_3d = 2 * vessel.radius_at(float(t_axis), scale=scale)
        axis_angle = math.degrees(math.asin(min(1.0, abs(float(vessel.direction @ pose.plane_normal())))))
        width_mm = min_caliper_width(main * np.array([sx, sy]))
        vessels.append({
            "id": vessel.id, "kind": vessel.kind,
            "centroid_px": [round(cx_px + ox, 2), round(cy_px + oy, 2)],
            "contour_px": _simplify(shift(main)),
            "contours_px": [_simplify(shift(c)) for c in dense[1:]],
            "area_px": area_px,
            "diameter_mm": round(width_mm, 4),
            "lumen_diameter_3d_mm": round(diameter_3d, 4),
            "axis_angle_deg": round(axis_angle, 2),
            "clipped": clipped,
            "_dense": all_pts, "_mask": (mask, r0, c0), "_vessel": vessel, "_scale": scale,
        })

    # --- distances (tumour boundary to lumen edge, in the image plane) ---------------
    primary = next((t for t in tumors if t["primary"]), tumors[0] if tumors else None)
    for ves in vessels:
        ves["distance_by_tumor_mm"] = {}
        tree = cKDTree(ves["_dense"] * np.array([sx, sy]))
        for tum in tumors:
            pts = np.concatenate(tum["_dense"])
            dist, idx = tree.query(pts * np.array([sx, sy]))
            i = int(np.argmin(dist))
            d = float(dist[i])
            # touching/overlap in the plane: tumour body reaches the lumen
            mv, rv, cv = ves["_mask"]
            overlap = _overlaps(tum["_field"], ves["_vessel"], ves["_scale"], mv, rv, cv, pose, geometry)
            if overlap:
                d = 0.0
            tp = pts[i] + (ox, oy)
            vp = ves["_dense"][idx[i]] + (ox, oy)
            ves["distance_by_tumor_mm"][str(tum["id"])] = round(d, 4)
            if tum is primary:
                ves["distance_mm"] = round(d, 4)
                ves["closest_px"] = [[round(float(tp[0]), 2), round(float(tp[1]), 2)],
                                     [round(float(vp[0]), 2), round(float(vp[1]), 2)]]
        if primary is None or "distance_mm" not in ves:
            ves["distance_mm"] = None
            ves["closest_px"] = None
            ves["heat_sink"] = None
        else:
            ves["heat_sink"] = {m: heat_sink_class(ves["lumen_diameter_3d_mm"], ves["distance_mm"], modality=m)
                                for m in ("rfa", "mwa")}
    for item in tumors + vessels:
        for key in [k for k in item if k.startswith("_")]:
            del item[key]
    near = [v["distance_mm"] for v in vessels if v["distance_mm"] is not None]
    base.update(
        status="ok" if primary is not None else "no_tumor",
        tumor=primary,
        tumors=tumors,
        vessels=vessels,
        min_distance_mm=min(near) if near else None,
    )
    return base


def _overlaps(tumor, vessel, scale, mask, r0, c0, pose, geometry) -> bool:
    """True when the tumour body reaches into the lumen somewhere in the plane (lumen pixels with tumour field < 0)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return False
    sx, sy = geometry.spacing_mm
    u = (xs + c0 - (geometry.width_px - 1) / 2.0) * sx
    v = (ys + r0) * sy
    f = tumor.field(*pose.to_world(u, v))
    return bool((f < 0).any())
