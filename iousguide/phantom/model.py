"""3-D liver model: parenchyma, branching vessels, metastases, and the probe plane that cuts it.

World coordinates are millimetres: ``x`` lateral (along the probe's array),
``y`` elevation (the sweep direction), ``z`` depth below the liver surface.
Every structure is an analytic field (negative inside), so truth contours can be
refined to sub-pixel accuracy and distances are exact up to contour sampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

HEPATIC_VEIN = "hepatic_vein"
PORTAL_PEDICLE = "portal_pedicle"

#: metastasis appearances (CLINICAL.md: CRLM appearance)
APPEARANCES = ("hypoechoic", "target", "isoechoic_halo", "hyperechoic", "calcified")


@dataclass(frozen=True)
class VesselBranch:
    """A straight, tapering tube (capsule with linearly varying radius).

    Attributes
    ----------
    id : int
        Stable vessel id (also the truth id).
    kind : str
        ``"hepatic_vein"`` (no bright wall) or ``"portal_pedicle"`` (bright Glissonian sheath).
    start_mm, end_mm : (x, y, z)
        Axis end points in world mm.
    radius_start_mm, radius_end_mm : float
        Lumen radius at each end (mm), before pulsation.
    sheath_mm : float
        Thickness of the bright sheath around the lumen (mm), 0 for hepatic veins.
    pulse_fraction : float
        Relative radius change of the cardiac pulsation (e.g. 0.03).
    pulse_phase_rad : float
        Phase of the pulsation.
    """

    id: int
    kind: str
    start_mm: tuple[float, float, float]
    end_mm: tuple[float, float, float]
    radius_start_mm: float
    radius_end_mm: float
    sheath_mm: float = 0.0
    pulse_fraction: float = 0.03
    pulse_phase_rad: float = 0.0

    @property
    def max_radius_mm(self) -> float:
        return max(self.radius_start_mm, self.radius_end_mm) * (1.0 + abs(self.pulse_fraction)) + self.sheath_mm

    def pulse(self, t_s: float, heart_rate_hz: float) -> float:
        """Radius multiplier at time ``t_s`` (s)."""
        return 1.0 + self.pulse_fraction * math.sin(2.0 * math.pi * heart_rate_hz * t_s + self.pulse_phase_rad)

    def field(self, x, y, z, *, scale: float = 1.0):
        """Signed lumen field (mm, negative inside) and the axis parameter t in [0, 1].

        ``x, y, z`` are broadcastable arrays of world mm; ``scale`` multiplies the radius (pulsation).
        """
        a = np.asarray(self.start_mm, dtype=np.float64)
        b = np.asarray(self.end_mm, dtype=np.float64)
        ab = b - a
        length2 = float(ab @ ab)
        dx, dy, dz = x - a[0], y - a[1], z - a[2]
        t = np.clip((dx * ab[0] + dy * ab[1] + dz * ab[2]) / length2, 0.0, 1.0)
        ex, ey, ez = dx - t * ab[0], dy - t * ab[1], dz - t * ab[2]
        dist = np.sqrt(ex * ex + ey * ey + ez * ez)
        radius = (self.radius_start_mm + t * (self.radius_end_mm - self.radius_start_mm)) * scale
        return dist - radius, t

    def radius_at(self, t: float, *, scale: float = 1.0) -> float:
        return (self.radius_start_mm + t * (self.radius_end_mm - self.radius_start_mm)) * scale

    @property
    def direction(self) -> np.ndarray:
        d = np.asarray(self.end_mm, float) - np.asarray(self.start_mm, float)
        return d / np.linalg.norm(d)


@dataclass(frozen=True)
class Tumor:
    """A metastasis: a lumpy sphere (radius modulated by smooth harmonics) with an appearance.

    Attributes
    ----------
    id : int
        Truth id (1, 2, ...).
    center_mm : (x, y, z)
    radius_mm : float
        Mean outer radius (mm).
    appearance : str
        One of :data:`APPEARANCES`.
    contrast_db : float
        Core echogenicity relative to parenchyma (intensity, dB; negative = hypoechoic).
    halo_mm : float
        Thickness of the hypoechoic rim (0 = none).
    halo_contrast_db : float
        Rim echogenicity relative to parenchyma (dB).
    lumps : tuple of (dx, dy, dz, frequency, phase, amplitude)
        Smooth radial modulation ``1 + sum(a * sin(f * (u . d) + phase))``.
    primary : bool
        The lesion the surgeon is working on (the one results are scored against by default).
    """

    id: int
    center_mm: tuple[float, float, float]
    radius_mm: float
    appearance: str = "hypoechoic"
    contrast_db: float = -6.0
    halo_mm: float = 0.0
    halo_contrast_db: float = -12.0
    lumps: tuple[tuple[float, float, float, float, float, float], ...] = ()
    primary: bool = True

    @property
    def max_radius_mm(self) -> float:
        return self.radius_mm * (1.0 + sum(abs(l[5]) for l in self.lumps))

    def field(self, x, y, z, *, inset_mm: float = 0.0):
        """Signed boundary field (mm along the radius, negative inside); ``inset_mm`` shrinks the boundary."""
        cx, cy, cz = self.center_mm
        dx, dy, dz = x - cx, y - cy, z - cz
        rho = np.sqrt(dx * dx + dy * dy + dz * dz)
        inv = 1.0 / np.maximum(rho, 1e-9)
        modulation = 1.0
        for lx, ly, lz, freq, phase, amp in self.lumps:
            modulation = modulation + amp * np.sin(freq * (dx * lx + dy * ly + dz * lz) * inv + phase)
        return rho - (self.radius_mm * modulation - inset_mm)


def random_lumps(rng: np.random.Generator, *, irregularity: float = 0.08, n: int = 5):
    """Random smooth lumps for :class:`Tumor` (irregular outline; ``irregularity`` ~ relative amplitude)."""
    lumps = []
    for _ in range(n):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        lumps.append(
            (float(d[0]), float(d[1]), float(d[2]), float(rng.uniform(1.5, 5.0)), float(rng.uniform(0, 2 * np.pi)),
             float(rng.uniform(0.3, 1.0) * irregularity / math.sqrt(n) * 1.6))
        )
    return tuple(lumps)


@dataclass(frozen=True)
class LiverModel:
    """The whole phantom: parenchyma texture, vessels and tumours (world mm).

    Attributes
    ----------
    vessels, tumors : tuples of :class:`VesselBranch`, :class:`Tumor`
    texture : tuple of (kx, ky, kz, phase, amplitude)
        Slow parenchymal echogenicity variation ``1 + sum(a sin(k . p + phase))`` (k in rad/mm).
    heart_rate_hz : float
    seed : int
        Seed of the scatterer field (speckle).
    """

    vessels: tuple[VesselBranch, ...]
    tumors: tuple[Tumor, ...]
    texture: tuple[tuple[float, float, float, float, float], ...] = ()
    heart_rate_hz: float = 1.2
    seed: int = 0
    calcification: tuple[tuple[float, float, float, float], ...] = field(default=())

    def vessel(self, vessel_id: int) -> VesselBranch:
        for v in self.vessels:
            if v.id == vessel_id:
                return v
        raise KeyError(vessel_id)


def random_texture(rng: np.random.Generator, *, amplitude: float = 0.12, n: int = 6):
    out = []
    for _ in range(n):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        wavelength_mm = rng.uniform(4.0, 25.0)
        k = d * 2 * np.pi / wavelength_mm
        out.append((float(k[0]), float(k[1]), float(k[2]), float(rng.uniform(0, 2 * np.pi)),
                    float(amplitude / math.sqrt(n) * rng.uniform(0.6, 1.4))))
    return tuple(out)


@dataclass(frozen=True)
class ProbePose:
    """Where the probe is at one frame.

    Attributes
    ----------
    x_mm, y_mm : float
        Position of the image's top-centre on the liver surface (lateral, elevation).
    tilt_deg : float
        Fan tilt about the lateral axis (the image plane leans toward +y with depth).
    press : float
        Compression fraction (0 = none): tissue at world depth z appears at ``z * (1 - press)``.
    lift : bool
        Probe lifted off the liver: no echo (black frame).
    """

    x_mm: float = 0.0
    y_mm: float = 0.0
    tilt_deg: float = 0.0
    press: float = 0.0
    lift: bool = False

    def to_world(self, u_mm, v_mm):
        """Plane coordinates (u lateral, v down from the top row, mm) -> world (x, y, z) mm (broadcasting)."""
        tau = math.radians(self.tilt_deg)
        x = self.x_mm + u_mm
        y = self.y_mm + v_mm * math.sin(tau)
        z = v_mm * math.cos(tau) / (1.0 - self.press)
        return x, y, z

    def plane_normal(self) -> np.ndarray:
        """Unit normal of the image plane in world coordinates."""
        tau = math.radians(self.tilt_deg)
        eu = np.array([1.0, 0.0, 0.0])
        ev = np.array([0.0, math.sin(tau), math.cos(tau) / (1.0 - self.press)])
        n = np.cross(eu, ev)
        return n / np.linalg.norm(n)

    def signed_elevation_mm(self, point) -> float:
        """Signed distance (mm) of a world point from the image plane."""
        p = np.asarray(point, float) - np.array([self.x_mm, self.y_mm, 0.0])
        return float(p @ self.plane_normal())

    def world_to_plane(self, point) -> tuple[float, float]:
        """Project a world point onto the plane: (u, v) mm (the in-plane foot point)."""
        p = np.asarray(point, float)
        n = self.plane_normal()
        foot = p - (p - np.array([self.x_mm, self.y_mm, 0.0])) @ n * n
        tau = math.radians(self.tilt_deg)
        u = foot[0] - self.x_mm
        v = foot[2] * (1.0 - self.press) / math.cos(tau)
        return float(u), float(v)
