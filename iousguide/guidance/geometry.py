"""Exact polygon geometry in millimetres (vectorised numpy): rays, offsets, distances.

All functions take polygons as ``(M, 2)`` float arrays of (x, y) vertices in mm,
closed implicitly (the last vertex joins the first). Rays start at a centre
``c`` (x, y) mm and point along unit vectors ``u`` of shape (N, 2).
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def to_mm(points_px, spacing_mm: tuple[float, float]) -> np.ndarray:
    """Source pixels (N, 2) (x, y) -> mm (N, 2), honouring anisotropic spacing."""
    pts = np.asarray(points_px, dtype=float).reshape(-1, 2)
    return pts * np.asarray(spacing_mm, dtype=float)[None, :]


def to_px(points_mm, spacing_mm: tuple[float, float]) -> np.ndarray:
    """mm (N, 2) -> source pixels (N, 2)."""
    pts = np.asarray(points_mm, dtype=float).reshape(-1, 2)
    return pts / np.asarray(spacing_mm, dtype=float)[None, :]


def contour_tolerance_mm(spacing_mm: tuple[float, float]) -> float:
    """Simplification tolerance for traced contours: half a pixel (>= 0.02 mm).

    Pixel-chain contours carry +-0.5 px staircase noise; keeping every stair step
    only multiplies the vertex count (and the planner's cost) without adding truth.
    """
    return max(0.02, 0.5 * min(float(spacing_mm[0]), float(spacing_mm[1])))


def clean_polygon(poly_mm: np.ndarray, *, tolerance_mm: float = 0.02) -> np.ndarray:
    """Drop repeated vertices and a repeated closing vertex; simplify within ``tolerance_mm``.

    Returns an (M, 2) float array with M >= 3, or the input unchanged if it is degenerate.
    """
    import cv2

    pts = np.asarray(poly_mm, dtype=float).reshape(-1, 2)
    if len(pts) > 1 and np.allclose(pts[0], pts[-1]):
        pts = pts[:-1]
    keep = np.r_[True, np.any(np.abs(np.diff(pts, axis=0)) > 1e-9, axis=1)]
    pts = pts[keep]
    if len(pts) > 16 and tolerance_mm > 0:
        simple = cv2.approxPolyDP(pts.astype(np.float32).reshape(-1, 1, 2), tolerance_mm, True).reshape(-1, 2)
        if len(simple) >= 3:
            pts = simple.astype(float)
    return pts


def polygon_area_mm2(poly_mm: np.ndarray) -> float:
    """Unsigned shoelace area of a polygon (mm^2)."""
    x, y = poly_mm[:, 0], poly_mm[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def polygon_centroid(poly_mm: np.ndarray) -> np.ndarray:
    """Area centroid (x, y) of a simple polygon."""
    x, y = poly_mm[:, 0], poly_mm[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2.0
    if abs(area) < _EPS:
        return poly_mm.mean(axis=0)
    return np.array([((x + xn) * cross).sum() / (6 * area), ((y + yn) * cross).sum() / (6 * area)])


def points_in_polygon(points: np.ndarray, poly_mm: np.ndarray) -> np.ndarray:
    """Even-odd test, (N,) bool, for points (N, 2) against one polygon."""
    px, py = points[:, 0][:, None], points[:, 1][:, None]
    ax, ay = poly_mm[:, 0][None, :], poly_mm[:, 1][None, :]
    bx, by = np.roll(poly_mm[:, 0], -1)[None, :], np.roll(poly_mm[:, 1], -1)[None, :]
    crosses = (ay > py) != (by > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = ax + (py - ay) * (bx - ax) / (by - ay)
    return (np.count_nonzero(crosses & (px < x_at), axis=1) % 2) == 1


def point_polygon_distance(points: np.ndarray, poly_mm: np.ndarray) -> np.ndarray:
    """Unsigned distance (N,) from each point to the polygon's boundary (mm)."""
    a = poly_mm[None, :, :]
    e = (np.roll(poly_mm, -1, axis=0) - poly_mm)[None, :, :]
    w = points[:, None, :] - a
    ee = np.maximum((e * e).sum(-1), _EPS)
    t = np.clip((w * e).sum(-1) / ee, 0.0, 1.0)
    d = w - t[..., None] * e
    return np.sqrt((d * d).sum(-1).min(axis=1))


def polygon_gap_mm(poly_a: np.ndarray, poly_b: np.ndarray) -> float:
    """Shortest distance between two polygons' regions (0 if they touch or overlap)."""
    if points_in_polygon(poly_a[:1], poly_b)[0] or points_in_polygon(poly_b[:1], poly_a)[0]:
        return 0.0
    # boundary crossing -> overlap
    if _boundaries_cross(poly_a, poly_b):
        return 0.0
    return float(min(point_polygon_distance(poly_a, poly_b).min(), point_polygon_distance(poly_b, poly_a).min()))


def _boundaries_cross(pa: np.ndarray, pb: np.ndarray) -> bool:
    a0, a1 = pa[:, None, :], np.roll(pa, -1, axis=0)[:, None, :]
    b0, b1 = pb[None, :, :], np.roll(pb, -1, axis=0)[None, :, :]

    def orient(p, q, r):
        return (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0])

    d1, d2 = orient(a0, a1, b0), orient(a0, a1, b1)
    d3, d4 = orient(b0, b1, a0), orient(b0, b1, a1)
    return bool(np.any((d1 * d2 < 0) & (d3 * d4 < 0)))


def ray_directions(n_rays: int) -> np.ndarray:
    """(N, 2) unit vectors at angles 2 pi k / N."""
    theta = np.arange(n_rays) * (2 * np.pi / n_rays)
    return np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _cross(p, q):
    return p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0]


def ray_segment_hits(c: np.ndarray, u: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Radii (N, M) where rays c + r u cross segments a->b (NaN where they miss; r may be < 0)."""
    ex, ey = (b[:, 0] - a[:, 0])[None, :], (b[:, 1] - a[:, 1])[None, :]
    wx, wy = (a[:, 0] - c[0])[None, :], (a[:, 1] - c[1])[None, :]
    ux, uy = u[:, 0][:, None], u[:, 1][:, None]
    den = ux * ey - uy * ex
    bad = np.abs(den) <= _EPS
    den = np.where(bad, 1.0, den)
    r = (wx * ey - wy * ex) / den
    s = (wx * uy - wy * ux) / den
    r[bad | (s < 0.0) | (s >= 1.0)] = np.nan
    return r


def ray_polygon_radii(c: np.ndarray, u: np.ndarray, poly_mm: np.ndarray) -> np.ndarray:
    """All crossing radii (N, M) of rays with the polygon's edges (NaN where none)."""
    return ray_segment_hits(c, u, poly_mm, np.roll(poly_mm, -1, axis=0))


def outer_radius(c: np.ndarray, u: np.ndarray, poly_mm: np.ndarray) -> np.ndarray:
    """Outermost boundary crossing of each ray with the polygon, (N,) mm (NaN if the ray misses)."""
    r = ray_polygon_radii(c, u, poly_mm)
    r = np.where(r > 0, r, np.nan)
    with np.errstate(all="ignore"):
        out = np.nanmax(np.where(np.isnan(r), -np.inf, r), axis=1)
    return np.where(np.isfinite(out), out, np.nan)


def first_hit_radius(c: np.ndarray, u: np.ndarray, poly_mm: np.ndarray) -> np.ndarray:
    """Nearest positive boundary crossing of each ray, (N,) mm (inf if none).

    Only rays that can reach the polygon's bounding circle are intersected.
    """
    out = np.full(len(u), np.inf)
    centre = poly_mm.mean(axis=0)
    radius = float(np.sqrt(((poly_mm - centre) ** 2).sum(1)).max()) + 1e-9
    rel = centre - c
    along = u @ rel
    across = np.abs(u[:, 0] * rel[1] - u[:, 1] * rel[0])
    inside = float(np.hypot(*rel)) <= radius
    candidates = np.flatnonzero((across <= radius) & ((along > 0) | inside))
    if candidates.size:
        r = ray_polygon_radii(c, u[candidates], poly_mm)
        r = np.where(r > 0, r, np.inf)
        out[candidates] = r.min(axis=1)
    return out


def offset_outer_radius(c: np.ndarray, u: np.ndarray, poly_mm: np.ndarray, distance_mm) -> np.ndarray:
    """Outermost point of each ray at exactly ``distance_mm`` from the polygon region, (N,) mm.

    The region within ``distance_mm`` of the polygon is the union of the polygon, one
    disc per vertex and one strip per edge; its outermost crossing along a ray is
    the largest crossing of any of those pieces, computed in closed form (exact,
    no raster). ``distance_mm`` may be a sequence: then the result is (K, N).
    """
    distances = np.atleast_1d(np.asarray(distance_mm, dtype=float))
    rel = poly_mm - c[None, :]
    t = u @ rel.T  # (N, M)
    t2_minus = t * t - (rel * rel).sum(1)[None, :]
    a, b = poly_mm, np.roll(poly_mm, -1, axis=0)
    e = b - a
    length = np.maximum(np.linalg.norm(e, axis=1), _EPS)
    n = np.stack([e[:, 1], -e[:, 0]], axis=1) / length[:, None]
    # outward normals: (e_y, -e_x) points out of a counter-clockwise polygon (x right, y down or up alike
    # as long as the sign of the area is used); only the outer offset line of each strip can be on the
    # boundary of the union, the inner one is always closer to another part of the polygon
    x, y = poly_mm[:, 0], poly_mm[:, 1]
    signed_area = (np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0
    if signed_area < 0:
        n = -n
    out = []
    for d in distances:
        disc = t2_minus + d * d
        disc[disc < 0] = np.nan
        exit_r = t + np.sqrt(disc)
        best = np.where(np.isnan(exit_r), -np.inf, exit_r).max(axis=1)
        hits = ray_segment_hits(c, u, a + d * n, b + d * n)
        best = np.maximum(best, np.where(np.isnan(hits), -np.inf, hits).max(axis=1))
        out.append(best)
    result = np.array(out)
    return result[0] if np.ndim(distance_mm) == 0 else result


def ring_area_mm2(c: np.ndarray, u: np.ndarray, radii_mm: np.ndarray) -> float:
    """Area of the star-shaped polygon c + r_k u_k (mm^2)."""
    pts = c[None, :] + radii_mm[:, None] * u
    return polygon_area_mm2(pts)


def interior_point(poly_mm: np.ndarray) -> np.ndarray:
    """A point well inside the polygon: the centroid if inside, else the deepest raster point."""
    centre = polygon_centroid(poly_mm)
    if points_in_polygon(centre[None, :], poly_mm)[0]:
        return centre
    import cv2

    lo = poly_mm.min(axis=0)
    span = max(float((poly_mm.max(axis=0) - lo).max()), 1e-6)
    scale = 256.0 / span
    size = 260
    mask = np.zeros((size, size), np.uint8)
    pts = np.round((poly_mm - lo) * scale + 2).astype(np.int32)
    cv2.fillPoly(mask, [pts.reshape(-1, 1, 2)], 1)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    iy, ix = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([(ix - 2) / scale, (iy - 2) / scale]) + lo


def offset_polygon(poly_mm: np.ndarray, distance_mm: float, *, ray_spacing_mm: float = 0.2,
                   centre_mm: np.ndarray | None = None) -> np.ndarray:
    """Outer boundary of the region within ``distance_mm`` of a polygon, as a ray polygon (K, 2) mm."""
    centre = interior_point(poly_mm) if centre_mm is None else np.asarray(centre_mm, dtype=float)
    reach = float(np.sqrt(((poly_mm - centre) ** 2).sum(1)).max()) + float(distance_mm)
    n_rays = int(np.clip(np.ceil(2 * np.pi * reach / ray_spacing_mm), 360, 4096))
    u = ray_directions(n_rays)
    r = offset_outer_radius(centre, u, poly_mm, float(distance_mm))
    return centre[None, :] + r[:, None] * u
