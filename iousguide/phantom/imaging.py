"""Image formation: slice the 3-D model, then scatterers x echogenicity -> PSF -> envelope -> B-mode.

Pipeline per frame (all vectorised numpy / OpenCV, float32):

1. :func:`slice_maps` evaluates the model on the output pixel grid: echogenicity
   (intensity, parenchyma = 1), attenuation (dB/mm, round trip) and a label map.
2. The maps are resampled onto the beam grid (rows = range samples along each beam,
   columns = beams; identity for a linear probe, polar for a convex fan).
3. A tissue-anchored circular complex Gaussian scatterer field (fully developed
   speckle) is multiplied by ``sqrt(echogenicity)`` and convolved with a separable
   Gaussian PSF (axial FWHM fixed, lateral FWHM growing away from the focus), each
   kernel normalised to unit energy so that the mean envelope intensity equals the
   echogenicity.
4. Attenuation is integrated along each beam (posterior enhancement behind blood,
   shadows behind calcium), a noise floor is added, an imperfect TGC applied, the
   intensity log-compressed to 8 bits, and the fan scan-converted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from iousguide.phantom.model import PORTAL_PEDICLE, LiverModel, ProbePose

LUMEN_DB = -32.0
SHEATH_DB = 9.0
CAPSULE_DB = 10.0
CALCIUM_DB = 15.0
TUMOR_LABEL_BASE = 1000


@dataclass(frozen=True)
class ProbeGeometry:
    """Output image geometry.

    Attributes
    ----------
    kind : str
        ``"linear"`` or ``"convex"``.
    width_px, height_px : int
        Size of the ultrasound image (before any screen border).
    spacing_mm : (float, float)
        mm per pixel (x = column, y = row).
    radius_mm : float
        Convex only: radius of curvature of the probe face (mm).
    opening_deg : float
        Convex only: full opening angle of the fan (degrees).
    """

    kind: str = "linear"
    width_px: int = 640
    height_px: int = 480
    spacing_mm: tuple[float, float] = (0.12, 0.12)
    radius_mm: float = 25.0
    opening_deg: float = 70.0

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "convex"):
            raise ValueError(f"probe kind must be 'linear' or 'convex', got {self.kind!r}")

    @cached_property
    def u_mm(self) -> np.ndarray:
        """Lateral plane coordinate of each column, shape (width_px,), mm (0 at the image centre)."""
        return ((np.arange(self.width_px) - (self.width_px - 1) / 2.0) * self.spacing_mm[0]).astype(np.float64)

    @cached_property
    def v_mm(self) -> np.ndarray:
        """Vertical plane coordinate of each row, shape (height_px,), mm (0 at the top row)."""
        return (np.arange(self.height_px) * self.spacing_mm[1]).astype(np.float64)

    @property
    def max_depth_mm(self) -> float:
        return float(self.v_mm[-1])

    @cached_property
    def fan_mask(self) -> np.ndarray:
        """Boolean (rows, cols): pixels inside the imaged sector (all True for linear)."""
        if self.kind == "linear":
            return np.ones((self.height_px, self.width_px), bool)
        return self.fan_field(self.u_mm[None, :], self.v_mm[:, None]) <= 0

    def fan_field(self, u, v):
        """Signed distance-like field of the sector (mm, <= 0 inside)."""
        if self.kind == "linear":
            return np.full(np.broadcast(u, v).shape, -1.0)
        rho = np.hypot(u, v + self.radius_mm)
        theta = np.arctan2(u, v + self.radius_mm)
        half = math.radians(self.opening_deg) / 2
        f_in = self.radius_mm - rho
        f_out = rho - (self.radius_mm + self.max_depth_mm)
        f_ang = (np.abs(theta) - half) * rho
        return np.maximum(np.maximum(f_in, f_out), f_ang)

    @cached_property
    def depth_map_mm(self) -> np.ndarray:
        """Depth below the probe face along the beam for each pixel, (rows, cols) mm."""
        u, v = self.u_mm[None, :], self.v_mm[:, None]
        if self.kind == "linear":
            return np.broadcast_to(v, (self.height_px, self.width_px)).astype(np.float32)
        return (np.hypot(u, v + self.radius_mm) - self.radius_mm).astype(np.float32)

    # --- beam grid ------------------------------------------------------------------
    @cached_property
    def beam_grid(self):
        """(u, v) plane mm of every beam sample, each (samples, beams), plus sample/beam spacing."""
        if self.kind == "linear":
            u = np.broadcast_to(self.u_mm[None, :], (self.height_px, self.width_px))
            v = np.broadcast_to(self.v_mm[:, None], (self.height_px, self.width_px))
            return u, v
        half = math.radians(self.opening_deg) / 2
        mid_radius = self.radius_mm + self.max_depth_mm / 2
        n_beams = int(math.ceil(2 * half * mid_radius / self.spacing_mm[0]))
        n_samples = int(math.ceil(self.max_depth_mm / self.spacing_mm[1])) + 1
        theta = np.linspace(-half, half, n_beams)
        rho = self.radius_mm + np.arange(n_samples) * self.spacing_mm[1]
        u = rho[:, None] * np.sin(theta)[None, :]
        v = rho[:, None] * np.cos(theta)[None, :] - self.radius_mm
        return u, v

    @cached_property
    def to_beam_maps(self):
        """cv2.remap maps: pixel-grid image -> beam grid (None for linear)."""
        if self.kind == "linear":
            return None
        u, v = self.beam_grid
        map_x = (u / self.spacing_mm[0] + (self.width_px - 1) / 2.0).astype(np.float32)
        map_y = (v / self.spacing_mm[1]).astype(np.float32)
        return map_x, map_y

    @cached_property
    def to_pixel_maps(self):
        """cv2.remap maps: beam grid -> pixel grid (None for linear)."""
        if self.kind == "linear":
            return None
        u, v = self.u_mm[None, :], self.v_mm[:, None]
        rho = np.hypot(u, v + self.radius_mm)
        theta = np.arctan2(u, v + self.radius_mm)
        half = math.radians(self.opening_deg) / 2
        n_samples, n_beams = self.beam_grid[0].shape
        map_x = ((theta + half) / (2 * half) * (n_beams - 1)).astype(np.float32)
        map_y = ((rho - self.radius_mm) / self.spacing_mm[1]).astype(np.float32)
        return np.broadcast_to(map_x, (self.height_px, self.width_px)).copy(), map_y

    def beam_lateral_spacing_mm(self, depth_mm: float) -> float:
        if self.kind == "linear":
            return self.spacing_mm[0]
        n_beams = self.beam_grid[0].shape[1]
        return math.radians(self.opening_deg) / (n_beams - 1) * (self.radius_mm + depth_mm)


@dataclass(frozen=True)
class ImagingParams:
    """Scanner and physics settings of the image formation model.

    Attributes
    ----------
    frequency_mhz : float
        Centre frequency (sets attenuation).
    axial_fwhm_mm : float
        Axial resolution (CLINICAL.md: 0.2-0.4 mm at 7.5 MHz).
    lateral_fwhm_focus_mm, lateral_fwhm_far_mm : float
        Lateral resolution at the focus and far from it (0.5-1.5 mm).
    focus_depth_mm : float
    attenuation_db_cm_mhz : float
        One-way attenuation of liver (0.5 dB/cm/MHz); blood uses 0.15.
    tgc_compensation : float
        Fraction of the nominal liver attenuation the TGC undoes (imperfect: != 1).
    tgc_ripple_db : float
        Amplitude of the slow random TGC error along depth (dB).
    dynamic_range_db : float
        Log-compression window.
    parenchyma_grey : float
        Grey level (0-255) of mean parenchyma at the top after compression.
    noise_floor_db : float
        Electronic noise intensity relative to parenchyma at zero depth (dB, negative).
    elevation_correlation_mm : float
        Elevation distance over which the speckle decorrelates (scatterer texture node spacing).
    texel_mm : float
        Upper bound of the scatterer texel size (made finer automatically for fine grids).
    display_smoothing_px : float
        Gaussian sigma (px) of the scanner's speckle smoothing after log compression (0 = off).
    reflector_density_per_cm3, reflector_radius_mm, reflector_db : float
        Sparse bright parenchymal reflectors (portal-triad echoes): number per cm^3, radius (mm) and
        echogenicity (dB); 0 density disables them.
    """

    frequency_mhz: float = 7.5
    axial_fwhm_mm: float = 0.3
    lateral_fwhm_focus_mm: float = 0.55
    lateral_fwhm_far_mm: float = 1.2
    focus_depth_mm: float = 30.0
    attenuation_db_cm_mhz: float = 0.5
    tgc_compensation: float = 0.88
    tgc_ripple_db: float = 1.5
    dynamic_range_db: float = 62.0
    parenchyma_grey: float = 64.0
    noise_floor_db: float = -62.0
    display_smoothing_px: float = 0.7
    reflector_density_per_cm3: float = 60.0
    reflector_radius_mm: float = 0.3
    reflector_db: float = 13.0
    elevation_correlation_mm: float = 1.0
    texel_mm: float = 0.1

    @property
    def liver_atten_db_mm(self) -> float:
        """Round-trip liver attenuation, dB/mm."""
        return 2 * self.attenuation_db_cm_mhz * self.frequency_mhz / 10.0

    @property
    def blood_atten_db_mm(self) -> float:
        return 2 * 0.15 * self.frequency_mhz / 10.0


@dataclass
class SliceMaps:
    """Model evaluated on the pixel grid of one frame.

    Attributes
    ----------
    echo : ndarray (rows, cols) float32
        Echogenicity (mean envelope intensity relative to parenchyma).
    atten_db_mm : ndarray (rows, cols) float32
        Round-trip attenuation coefficient (dB/mm).
    labels : ndarray (rows, cols) int32
        0 = parenchyma, vessel id = lumen, ``1000 + tumor id`` = tumour.
    boxes : dict
        label -> (r0, r1, c0, c1) window where the structure was evaluated.
    """

    echo: np.ndarray
    atten_db_mm: np.ndarray
    labels: np.ndarray
    boxes: dict


def _db(value_db: float) -> float:
    return 10.0 ** (value_db / 10.0)


def _window(geometry: ProbeGeometry, pose: ProbePose, center, radius_mm: float, extent=None):
    """Pixel window (r0, r1, c0, c1) that can hold a structure, or None when it misses the plane/image."""
    if extent is None:
        lo = np.asarray(center, float) - radius_mm
        hi = np.asarray(center, float) + radius_mm
    else:
        lo, hi = extent
    sx, sy = geometry.spacing_mm
    tau = math.radians(pose.tilt_deg)
    c0 = int(math.floor((lo[0] - pose.x_mm) / sx + (geometry.width_px - 1) / 2)) - 2
    c1 = int(math.ceil((hi[0] - pose.x_mm) / sx + (geometry.width_px - 1) / 2)) + 3
    v_lo = lo[2] * (1 - pose.press) / math.cos(tau)
    v_hi = hi[2] * (1 - pose.press) / math.cos(tau)
    r0 = int(math.floor(v_lo / sy)) - 2
    r1 = int(math.ceil(v_hi / sy)) + 3
    r0, r1 = max(r0, 0), min(r1, geometry.height_px)
    c0, c1 = max(c0, 0), min(c1, geometry.width_px)
    if r0 >= r1 or c0 >= c1:
        return None
    return r0, r1, c0, c1


def vessel_window(geometry, pose, vessel, *, margin_mm: float = 0.0):
    r = vessel.max_radius_mm + margin_mm
    a, b = np.asarray(vessel.start_mm, float), np.asarray(vessel.end_mm, float)
    ea, eb = pose.signed_elevation_mm(a), pose.signed_elevation_mm(b)
    if (ea > r and eb > r) or (ea < -r and eb < -r):
        return None
    return _window(geometry, pose, None, r, extent=(np.minimum(a, b) - r, np.maximum(a, b) + r))


def tumor_window(geometry, pose, tumor, *, margin_mm: float = 0.0):
    r = tumor.max_radius_mm + margin_mm
    if abs(pose.signed_elevation_mm(tumor.center_mm)) > r:
        return None
    return _window(geometry, pose, tumor.center_mm, r)


def slice_maps(model: LiverModel, pose: ProbePose, geometry: ProbeGeometry, t_s: float,
               params: ImagingParams | None = None) -> SliceMaps:
    """Evaluate the model on the frame's pixel grid (see :class:`SliceMaps`)."""
    params = params or ImagingParams()
    h, w = geometry.height_px, geometry.width_px
    u, v = geometry.u_mm[None, :], geometry.v_mm[:, None]
    x, y, z = pose.to_world(u, v)
    echo = np.ones((h, w), np.float32)
    if model.texture:
        tex = np.zeros((h, w), np.float64)
        for kx, ky, kz, phase, amp in model.texture:
            tex += amp * np.sin(kx * x + ky * y + kz * z + phase)
        echo = (1.0 + tex).astype(np.float32)
    if params.reflector_density_per_cm3 > 0:
        splat_reflectors(echo, pose, geometry, reflector_points(model.seed, density_per_cm3=params.reflector_density_per_cm3),
                         radius_mm=params.reflector_radius_mm, value=np.float32(_db(params.reflector_db)))
    atten = np.full((h, w), params.liver_atten_db_mm, np.float32)
    labels = np.zeros((h, w), np.int32)
    boxes: dict[int, tuple[int, int, int, int]] = {}

    for tumor in model.tumors:
        box = tumor_window(geometry, pose, tumor)
        if box is None:
            continue
        r0, r1, c0, c1 = box
        xs, ys, zs = pose.to_world(geometry.u_mm[None, c0:c1], geometry.v_mm[r0:r1, None])
        f = tumor.field(xs, ys, zs)
        inside = f < 0
        if not inside.any():
            continue
        e = np.full(inside.shape, _db(tumor.contrast_db), np.float32)
        if tumor.halo_mm > 0:
            rim = f > -tumor.halo_mm
            e[rim] = _db(tumor.halo_contrast_db)
        att = np.full(inside.shape, params.liver_atten_db_mm * (1.15 if tumor.contrast_db > 3 else 1.0), np.float32)
        if tumor.appearance == "calcified" and model.calcification:
            s = np.zeros(inside.shape)
            for kx, ky, kz, phase in model.calcification:
                s = s + np.sin(kx * xs + ky * ys + kz * zs + phase)
            core = f < -max(tumor.halo_mm, 1.0)
            spots = core & (s > 1.1)
            e[spots] = _db(CALCIUM_DB)
            att[spots] = 6.0
        window = (slice(r0, r1), slice(c0, c1))
        echo[window][inside] = e[inside]
        atten[window][inside] = att[inside]
        labels[window][inside] = TUMOR_LABEL_BASE + tumor.id
        boxes[TUMOR_LABEL_BASE + tumor.id] = box

    # vessels last: the lumen (and a portal sheath) displaces tumour and parenchyma
    best = np.full((h, w), np.inf, np.float32)
    for vessel in model.vessels:
        box = vessel_window(geometry, pose, vessel)
        if box is None:
            continue
        r0, r1, c0, c1 = box
        xs, ys, zs = pose.to_world(geometry.u_mm[None, c0:c1], geometry.v_mm[r0:r1, None])
        f, _ = vessel.field(xs, ys, zs, scale=vessel.pulse(t_s, model.heart_rate_hz))
        window = (slice(r0, r1), slice(c0, c1))
        if vessel.sheath_mm > 0:
            sheath = (f >= 0) & (f < vessel.sheath_mm) & (labels[window] <= 0) | (
                (f >= 0) & (f < vessel.sheath_mm) & (labels[window] >= TUMOR_LABEL_BASE))
            echo[window][sheath] = _db(SHEATH_DB)
            labels[window][sheath & (labels[window] >= TUMOR_LABEL_BASE)] = 0
        lumen = (f < 0) & (f < best[window])
        if not lumen.any():
            continue
        echo[window][lumen] = _db(LUMEN_DB)
        atten[window][lumen] = params.blood_atten_db_mm
        labels[window][lumen] = vessel.id
        best[window][lumen] = f[lumen]
        boxes[vessel.id] = box

    # liver capsule under the probe face
    capsule = geometry.depth_map_mm < 0.45
    echo[capsule] = _db(CAPSULE_DB)
    labels[capsule & (labels >= TUMOR_LABEL_BASE)] = 0
    if geometry.kind != "linear":
        labels[~geometry.fan_mask] = 0  # nothing is imaged outside the sector
    return SliceMaps(echo=echo, atten_db_mm=atten, labels=labels, boxes=boxes)


_REFLECTOR_CACHE: dict[tuple, np.ndarray] = {}


def reflector_points(seed: int, *, density_per_cm3: float = 55.0, box_mm=((-80, 80), (-60, 60), (0, 110))) -> np.ndarray:
    """Sparse bright tissue reflectors (portal-triad echoes) fixed in the tissue: (N, 3) world mm (cached)."""
    key = (int(seed), float(density_per_cm3), tuple(map(tuple, box_mm)))
    pts = _REFLECTOR_CACHE.get(key)
    if pts is None:
        rng = np.random.default_rng([int(seed), 3131])
        lo = np.array([b[0] for b in box_mm], float)
        hi = np.array([b[1] for b in box_mm], float)
        n = int(np.prod(hi - lo) / 1000.0 * density_per_cm3)
        pts = lo + rng.random((n, 3)) * (hi - lo)
        _REFLECTOR_CACHE.clear()
        _REFLECTOR_CACHE[key] = pts
    return pts


def splat_reflectors(echo: np.ndarray, pose: ProbePose, geometry: "ProbeGeometry", points: np.ndarray, *,
                     radius_mm: float, value: float) -> int:
    """Paint the reflectors that the image plane cuts (discs of the in-plane radius) into ``echo`` (in place).

    Returns the number painted.
    """
    n = pose.plane_normal()
    rel = points - np.array([pose.x_mm, pose.y_mm, 0.0])
    elev = rel @ n
    sel = np.abs(elev) < radius_mm
    if not sel.any():
        return 0
    p, e = points[sel], elev[sel]
    foot = p - e[:, None] * n[None, :]
    tau = math.radians(pose.tilt_deg)
    u = foot[:, 0] - pose.x_mm
    v = foot[:, 2] * (1.0 - pose.press) / math.cos(tau)
    r_in = np.sqrt(radius_mm ** 2 - e ** 2)
    sx, sy = geometry.spacing_mm
    cx = u / sx + (geometry.width_px - 1) / 2.0
    cy = v / sy
    reach = int(math.ceil(radius_mm / min(sx, sy)))
    h, w = echo.shape
    count = 0
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            px = np.round(cx).astype(np.int64) + dx
            py = np.round(cy).astype(np.int64) + dy
            ok = (px >= 0) & (px < w) & (py >= 0) & (py < h)
            ok &= ((px - cx) * sx) ** 2 + ((py - cy) * sy) ** 2 <= r_in ** 2
            echo[py[ok], px[ok]] = value
            count += int(ok.sum())
    return count


def _gauss_kernel(sigma_px: float) -> np.ndarray:
    sigma_px = max(float(sigma_px), 0.3)
    half = int(math.ceil(3.5 * sigma_px))
    x = np.arange(-half, half + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_px) ** 2)
    return k / np.sqrt(np.sum(k * k))  # unit energy: white noise keeps its variance


class ScattererField:
    """Tissue-anchored complex Gaussian scatterers: 2-D textures on (x, z) at elevation nodes.

    Between nodes (``elevation_correlation_mm`` apart) the field is blended with
    cos/sin weights, which keeps it circular Gaussian with unit variance, so the
    speckle decorrelates smoothly as the probe sweeps in elevation.
    """

    def __init__(self, seed: int, *, texel_mm: float = 0.1, node_mm: float = 1.0,
                 x_range_mm=(-80.0, 80.0), z_range_mm=(-2.0, 110.0)) -> None:
        self.seed = int(seed)
        self.texel_mm = texel_mm
        self.node_mm = node_mm
        self.x0, self.z0 = x_range_mm[0], z_range_mm[0]
        self.nx = int((x_range_mm[1] - x_range_mm[0]) / texel_mm)
        self.nz = int((z_range_mm[1] - z_range_mm[0]) / texel_mm)
        self._cache: dict[int, np.ndarray] = {}

    def node(self, k: int) -> np.ndarray:
        tex = self._cache.get(k)
        if tex is None:
            rng = np.random.default_rng([self.seed, 9173, k + 1_000_000])
            tex = rng.standard_normal((self.nz, self.nx, 2), dtype=np.float32) * np.float32(math.sqrt(0.5))
            if len(self._cache) >= 24:
                self._cache.pop(min(self._cache, key=lambda key: abs(key - k) * -1))
            self._cache[k] = tex
        return tex

    def sample(self, x, y, z) -> np.ndarray:
        """Complex field at world points, arrays (rows, cols) -> (rows, cols, 2) float32 (re, im)."""
        map_x = ((x - self.x0) / self.texel_mm).astype(np.float32)
        map_y = ((z - self.z0) / self.texel_mm).astype(np.float32)
        a = y / self.node_mm
        k0 = np.floor(a).astype(np.int64)
        frac = (a - k0).astype(np.float32)
        w0 = np.cos(frac * np.float32(np.pi / 2))
        w1 = np.sin(frac * np.float32(np.pi / 2))
        out = np.zeros(x.shape + (2,), np.float32)
        for k in range(int(k0.min()), int(k0.max()) + 1):
            sel = k0 == k
            if not sel.any():
                continue
            rows = np.flatnonzero(sel.any(axis=1))
            rs = slice(rows[0], rows[-1] + 1)
            mx, my = map_x[rs], map_y[rs]
            t0 = cv2.remap(self.node(k), mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_WRAP)
            t1 = cv2.remap(self.node(k + 1), mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_WRAP)
            s = sel[rs][..., None]
            out[rs] += np.where(s, t0 * w0[rs][..., None] + t1 * w1[rs][..., None], 0)
        return out


class Renderer:
    """Renders B-mode frames of one model with one probe geometry (caches kernels and scatterers).

    Examples
    --------
    >>> from iousguide.phantom import scenarios
    >>> case = scenarios.build("free_parenchyma")
    >>> r = Renderer(case.model, case.geometry)
    >>> image, maps = r.render(case.poses[0], 0.0)
    >>> image.shape, image.dtype
    ((480, 640), dtype('uint8'))
    """

    def __init__(self, model: LiverModel, geometry: ProbeGeometry, params: ImagingParams | None = None,
                 *, tgc_seed: int | None = None) -> None:
        self.model = model
        self.geometry = geometry
        self.params = params or ImagingParams()
        p, g = self.params, geometry
        # texels a little finer than the finest beam-grid step: nearest sampling never repeats a texel, so the
        # scatterers stay white on the beam grid and the unit-energy PSF keeps mean intensity = echogenicity
        finest = min(g.spacing_mm[1], g.beam_lateral_spacing_mm(0.0))
        half_width = g.width_px * g.spacing_mm[0] / 2 + 20.0
        self.scatterers = ScattererField(model.seed, texel_mm=min(p.texel_mm, 0.95 * finest),
                                         node_mm=p.elevation_correlation_mm, x_range_mm=(-half_width, half_width),
                                         z_range_mm=(-2.0, g.max_depth_mm * 1.15 + 5.0))
        u_beam, v_beam = g.beam_grid
        n_samples = u_beam.shape[0]
        self.sample_depth_mm = np.arange(n_samples, dtype=np.float64) * g.spacing_mm[1]
        # PSF: axial fixed; lateral narrow at the focus, wide away from it, blended by depth
        sig_ax = p.axial_fwhm_mm / 2.3548 / g.spacing_mm[1]
        self.k_axial = _gauss_kernel(sig_ax)
        focus_lat = g.beam_lateral_spacing_mm(p.focus_depth_mm)
        far_lat = g.beam_lateral_spacing_mm(g.max_depth_mm)
        self.k_lat_near = _gauss_kernel(p.lateral_fwhm_focus_mm / 2.3548 / focus_lat)
        self.k_lat_far = _gauss_kernel(p.lateral_fwhm_far_mm / 2.3548 / far_lat)
        span = max(p.focus_depth_mm, g.max_depth_mm - p.focus_depth_mm, 1.0)
        wfar = np.clip(np.abs(self.sample_depth_mm - p.focus_depth_mm) / span, 0, 1)
        # correlation of the two unit-energy kernels (for variance-preserving blending)
        n = max(len(self.k_lat_near), len(self.k_lat_far))
        a = np.pad(self.k_lat_near, ((n - len(self.k_lat_near)) // 2,))
        b = np.pad(self.k_lat_far, ((n - len(self.k_lat_far)) // 2,))
        rho = float(np.sum(a * b))
        norm = np.sqrt((1 - wfar) ** 2 + wfar ** 2 + 2 * wfar * (1 - wfar) * rho)
        self.w_near = ((1 - wfar) / norm).astype(np.float32)[:, None, None]
        self.w_far = (wfar / norm).astype(np.float32)[:, None, None]
        # TGC: imperfect compensation + slow random ripple + near-field droop (dB on intensity)
        rng = np.random.default_rng([model.seed if tgc_seed is None else tgc_seed, 4242])
        d = self.sample_depth_mm
        ripple = np.zeros_like(d)
        for _ in range(3):
            ripple += rng.uniform(-1, 1) * np.sin(2 * np.pi * d / rng.uniform(25, 70) + rng.uniform(0, 2 * np.pi))
        ripple *= p.tgc_ripple_db / 1.7
        near = -3.0 * np.exp(-d / 3.0)
        self.tgc_db = (p.tgc_compensation * p.liver_atten_db_mm * d + ripple + near).astype(np.float32)
        self.noise_sigma = math.sqrt(_db(p.noise_floor_db) / 2)
        # log compression: mean parenchyma intensity 1 (mean dB of Rayleigh = -2.51 dB) -> parenchyma_grey
        self.db_low = -2.507 - p.parenchyma_grey * p.dynamic_range_db / 255.0
        self._noise_rng_seed = model.seed

    def envelope_intensity(self, maps: SliceMaps, pose: ProbePose, frame_index: int = 0, *,
                           attenuation: bool = True, noise: bool = True) -> np.ndarray:
        """Envelope intensity on the beam grid after attenuation, noise floor and TGC, (samples, beams) float32."""
        g = self.geometry
        echo, att = maps.echo, maps.atten_db_mm
        if g.to_beam_maps is not None:
            mx, my = g.to_beam_maps
            echo = cv2.remap(echo, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            att = cv2.remap(att, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        u_b, v_b = g.beam_grid
        x, y, z = pose.to_world(u_b, v_b)
        field = self.scatterers.sample(x, y, z)
        field *= np.sqrt(echo)[..., None]
        f_near = cv2.sepFilter2D(field, cv2.CV_32F, self.k_lat_near, self.k_axial, borderType=cv2.BORDER_REFLECT)
        f_far = cv2.sepFilter2D(field, cv2.CV_32F, self.k_lat_far, self.k_axial, borderType=cv2.BORDER_REFLECT)
        rf = f_near * self.w_near + f_far * self.w_far
        if attenuation:
            cum_db = np.cumsum(att, axis=0, dtype=np.float32) * np.float32(g.spacing_mm[1])
            cum_db -= att * np.float32(g.spacing_mm[1] / 2)
            rf *= (10.0 ** (-cum_db / 20.0))[..., None]
        if noise:
            rng = np.random.default_rng([self._noise_rng_seed, 77, frame_index])
            rf += rng.standard_normal(rf.shape, dtype=np.float32) * np.float32(self.noise_sigma)
        intensity = rf[..., 0] ** 2 + rf[..., 1] ** 2
        if attenuation:
            intensity *= (10.0 ** (self.tgc_db / 10.0))[:, None]
        return intensity

    def compress(self, intensity: np.ndarray) -> np.ndarray:
        """Log compression of beam-grid intensity and scan conversion -> uint8 (rows, cols)."""
        p, g = self.params, self.geometry
        db = 10.0 * np.log10(intensity + np.float32(1e-12))
        grey = (db - np.float32(self.db_low)) * np.float32(255.0 / p.dynamic_range_db)
        grey = np.clip(grey, 0, 255).astype(np.float32)
        if p.display_smoothing_px > 0:  # the scanner's own speckle smoothing, after log compression
            grey = cv2.GaussianBlur(grey, (0, 0), p.display_smoothing_px)
        if g.to_pixel_maps is not None:
            mx, my = g.to_pixel_maps
            grey = cv2.remap(grey, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            grey[~g.fan_mask] = 0
        return np.clip(grey + 0.5, 0, 255).astype(np.uint8)

    def render(self, pose: ProbePose, t_s: float, frame_index: int = 0):
        """One B-mode frame: (uint8 image (rows, cols), :class:`SliceMaps`).

        A lifted probe gives a near-black frame (faint electronic noise only) and ``maps`` None.
        """
        g = self.geometry
        if pose.lift:
            rng = np.random.default_rng([self._noise_rng_seed, 78, frame_index])
            image = rng.integers(0, 4, size=(g.height_px, g.width_px), dtype=np.uint8)
            image[~g.fan_mask] = 0
            return image, None
        maps = slice_maps(self.model, pose, g, t_s, self.params)
        intensity = self.envelope_intensity(maps, pose, frame_index)
        return self.compress(intensity), maps
