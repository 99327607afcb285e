"""Small speckle images with exact geometry, for the analysis tests and benchmarks.

Not the phantom (``iousguide.phantom``): discs and blobs of chosen echogenicity in
fully developed speckle, with a Gaussian point-spread function, envelope detection
and log compression, so boundaries are blurred like real B-mode and the truth is
analytic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass
class Disc:
    """A disc (or ellipse) in mm: centre (x, y), radii (rx, ry), relative echogenicity (amplitude)."""

    center_mm: tuple[float, float]
    radius_mm: float
    echo: float = 0.0
    radius_y_mm: float | None = None
    sheath_mm: float = 0.0  # bright wall thickness (portal-like)
    sheath_echo: float = 3.0


@dataclass
class Scene:
    """Objects drawn in order (later ones paint over earlier ones)."""

    shape_px: tuple[int, int] = (600, 800)
    spacing_mm: float = 0.1
    discs: list[Disc] = field(default_factory=list)
    psf_axial_mm: float = 0.25
    psf_lateral_mm: float = 0.6
    dynamic_range_db: float = 60.0
    gain_db: float = -18.0


def echo_map(scene: Scene) -> np.ndarray:
    """Echogenicity per pixel, shape ``scene.shape_px`` float32 (tissue = 1)."""
    rows, cols = scene.shape_px
    s = scene.spacing_mm
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    xx = (xx * s).astype(np.float32)
    yy = (yy * s).astype(np.float32)
    echo = np.ones((rows, cols), np.float32)
    for d in scene.discs:
        ry = d.radius_y_mm if d.radius_y_mm is not None else d.radius_mm
        r2 = ((xx - d.center_mm[0]) / d.radius_mm) ** 2 + ((yy - d.center_mm[1]) / ry) ** 2
        if d.sheath_mm > 0:
            outer = ((xx - d.center_mm[0]) / (d.radius_mm + d.sheath_mm)) ** 2 + \
                    ((yy - d.center_mm[1]) / (ry + d.sheath_mm)) ** 2
            echo[outer <= 1] = d.sheath_echo
        echo[r2 <= 1] = d.echo
    return echo


def render(scene: Scene, *, seed: int) -> np.ndarray:
    """B-mode grey image of the scene, shape ``scene.shape_px`` uint8."""
    rng = np.random.default_rng(seed)
    rows, cols = scene.shape_px
    echo = echo_map(scene)
    scat = (rng.standard_normal((rows, cols)) + 1j * rng.standard_normal((rows, cols))).astype(np.complex64)
    field_ = echo * scat
    sx = scene.psf_lateral_mm / 2.355 / scene.spacing_mm
    sy = scene.psf_axial_mm / 2.355 / scene.spacing_mm
    re = cv2.GaussianBlur(np.ascontiguousarray(field_.real), (0, 0), sigmaX=sx, sigmaY=sy)
    im = cv2.GaussianBlur(np.ascontiguousarray(field_.imag), (0, 0), sigmaX=sx, sigmaY=sy)
    env = np.hypot(re, im)
    env /= np.sqrt(np.mean(env[echo == 1] ** 2)) if np.any(echo == 1) else 1.0
    env += 1e-4
    db = 20 * np.log10(env) + scene.gain_db
    grey = (db / scene.dynamic_range_db + 1.0) * 255.0
    return np.clip(grey, 0, 255).astype(np.uint8)


def edge_distance_mm(a: Disc, b: Disc) -> float:
    """Edge-to-edge distance of two circular discs in mm (0 when touching/overlapping)."""
    d = float(np.hypot(a.center_mm[0] - b.center_mm[0], a.center_mm[1] - b.center_mm[1]))
    return max(d - a.radius_mm - b.radius_mm, 0.0)
