"""Cases: a model, a probe, a motion and a clock -> frames with truth.

The six bundled scenarios (:data:`SCENARIOS`) and :func:`random_case` for training
are all built here from a seed; the same seed gives the same pixels bit for bit.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field, replace

import cv2
import numpy as np

from iousguide.phantom.imaging import ImagingParams, ProbeGeometry, Renderer
from iousguide.phantom.model import (
    HEPATIC_VEIN,
    PORTAL_PEDICLE,
    LiverModel,
    ProbePose,
    Tumor,
    VesselBranch,
    random_lumps,
    random_texture,
)
from iousguide.phantom.truth import frame_truth

TRUTH_FORMAT = "iousguide-phantom-truth"
TRUTH_VERSION = 1

#: default appearance settings: (core contrast dB, halo mm, halo contrast dB)
APPEARANCE_DEFAULTS = {
    "hypoechoic": (-8.0, 0.0, -12.0),
    "target": (2.0, 2.0, -13.0),
    "isoechoic_halo": (0.0, 1.5, -11.0),
    "hyperechoic": (6.0, 0.0, -12.0),
    "calcified": (4.0, 0.0, -12.0),
}


@dataclass(frozen=True)
class Screen:
    """A scanner-like screen around the image (so a crop is needed): canvas size and image offset (px)."""

    width_px: int = 800
    height_px: int = 600
    offset_px: tuple[int, int] = (96, 64)
    label: str = "IOUS 7.5 MHz  LIVER"


@dataclass
class Case:
    """Everything needed to render a clip and its truth."""

    name: str
    seed: int
    model: LiverModel
    geometry: ProbeGeometry
    poses: list[ProbePose]
    fps: float
    params: ImagingParams = field(default_factory=ImagingParams)
    screen: Screen | None = None
    description: str = ""

    @property
    def n_frames(self) -> int:
        return len(self.poses)

    @property
    def times_s(self) -> np.ndarray:
        return np.arange(self.n_frames) / self.fps

    @property
    def offset_px(self) -> tuple[int, int]:
        return self.screen.offset_px if self.screen else (0, 0)

    @property
    def frame_size_px(self) -> tuple[int, int]:
        """(width, height) of the source frame (screen or image)."""
        if self.screen:
            return self.screen.width_px, self.screen.height_px
        return self.geometry.width_px, self.geometry.height_px

    def header(self) -> dict:
        """The truth file's first line (static description of the case)."""
        g = self.geometry
        ox, oy = self.offset_px
        return {
            "format": TRUTH_FORMAT, "version": TRUTH_VERSION, "name": self.name, "seed": self.seed,
            "description": self.description, "fps": self.fps, "n_frames": self.n_frames,
            "frame_size_px": list(self.frame_size_px),
            "us_region_px": [ox, oy, g.width_px, g.height_px],
            "spacing_mm": list(g.spacing_mm),
            "probe": {"kind": g.kind, "radius_mm": g.radius_mm if g.kind == "convex" else None,
                      "opening_deg": g.opening_deg if g.kind == "convex" else None,
                      "depth_mm": round(g.max_depth_mm, 3)},
            "imaging": asdict(self.params),
            "vessels": [asdict(v) for v in self.model.vessels],
            "tumors": [{k: v for k, v in asdict(t).items() if k != "lumps"} for t in self.model.tumors],
            "heart_rate_hz": self.model.heart_rate_hz,
        }


def compose_screen(image: np.ndarray, case: Case, frame: int) -> np.ndarray:
    """Put the ultrasound image inside a scanner-like screen (text, depth ruler); uint8 grey."""
    s = case.screen
    if s is None:
        return image
    g = case.geometry
    canvas = np.full((s.height_px, s.width_px), 12, np.uint8)
    ox, oy = s.offset_px
    canvas[oy:oy + g.height_px, ox:ox + g.width_px] = image
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(canvas, s.label, (12, 28), font, 0.7, 200, 1, cv2.LINE_AA)
    cv2.putText(canvas, f"D {g.max_depth_mm:.0f} mm  G 50  DR {case.params.dynamic_range_db:.0f}", (12, 52), font,
                0.5, 170, 1, cv2.LINE_AA)
    cv2.putText(canvas, f"F{frame:04d}  {frame / case.fps:6.2f} s", (s.width_px - 190, s.height_px - 16), font, 0.5,
                170, 1, cv2.LINE_AA)
    # depth ruler right of the image: a tick every 5 mm, long every 10 mm
    x_r = ox + g.width_px + 10
    for depth_mm in range(0, int(g.max_depth_mm) + 1, 5):
        y = oy + int(round(depth_mm / g.spacing_mm[1]))
        length = 10 if depth_mm % 10 == 0 else 5
        cv2.line(canvas, (x_r, y), (x_r + length, y), 220, 1)
        if depth_mm % 10 == 0:
            cv2.putText(canvas, str(depth_mm // 10), (x_r + 14, y + 5), font, 0.4, 200, 1, cv2.LINE_AA)
    # grey bar
    bar = np.linspace(255, 0, 200).astype(np.uint8)[:, None]
    canvas[oy:oy + 200, 20:32] = bar
    return canvas


def render(case: Case, *, with_truth: bool = True):
    """Iterate ``(index, pixels, truth_dict_or_None)`` over the case (pixels in source-frame layout)."""
    renderer = Renderer(case.model, case.geometry, case.params)
    for i, pose in enumerate(case.poses):
        t = i / case.fps
        image, maps = renderer.render(pose, t, i)
        pixels = compose_screen(image, case, i)
        truth = frame_truth(case.model, pose, case.geometry, maps, frame=i, t_s=t, offset_px=case.offset_px) \
            if with_truth else None
        yield i, pixels, truth


def pixels_sha256(frames) -> str:
    """SHA-256 over raw frame bytes (shape-prefixed), the bit-for-bit reproducibility check."""
    h = hashlib.sha256()
    for px in frames:
        px = np.ascontiguousarray(px)
        h.update(np.asarray(px.shape, np.int64).tobytes())
        h.update(px.tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- motion
def sweep_poses(rng: np.random.Generator, n_frames: int, fps: float, *, y_start_mm: float, y_end_mm: float,
                to_and_fro: bool = True, x_mm: float = 0.0, x_wobble_mm: float = 1.0, tilt_deg: float = 4.0,
                press: float = 0.03, lifts_s: tuple[tuple[float, float], ...] = ()) -> list[ProbePose]:
    """A hand-held sweep: elevation sweep (once, or out and back), lateral wobble, tilt and press cycles.

    ``lifts_s`` are (start, end) seconds where the probe is lifted (black frames).
    """
    t = np.arange(n_frames) / fps
    duration = max(n_frames / fps, 1e-6)
    if to_and_fro:
        s = 0.5 - 0.5 * np.cos(2 * np.pi * t / duration)
    else:
        s = t / duration
    phases = rng.uniform(0, 2 * np.pi, size=6)
    periods = rng.uniform(0.8, 1.25, size=6)
    jitter = 0.15 * np.sin(2 * np.pi * t / (1.3 * periods[0]) + phases[0])
    y = y_start_mm + (y_end_mm - y_start_mm) * s + jitter
    x = x_mm + x_wobble_mm * np.sin(2 * np.pi * t / (6.0 * periods[1]) + phases[1])
    tilt = tilt_deg * np.sin(2 * np.pi * t / (5.0 * periods[2]) + phases[2])
    pr = press * (0.5 - 0.5 * np.cos(2 * np.pi * t / (3.5 * periods[3]) + phases[3]))
    poses = []
    for i in range(n_frames):
        lift = any(a <= t[i] < b for a, b in lifts_s)
        poses.append(ProbePose(x_mm=float(x[i]), y_mm=float(y[i]), tilt_deg=float(tilt[i]), press=float(pr[i]),
                               lift=lift))
    return poses


# --------------------------------------------------------------------------- vessels
def _segment_point_distance(a, b, p) -> float:
    a, b, p = (np.asarray(v, float) for v in (a, b, p))
    ab = b - a
    t = np.clip((p - a) @ ab / (ab @ ab), 0, 1)
    return float(np.linalg.norm(p - a - t * ab))


class _VesselFactory:
    def __init__(self, rng: np.random.Generator, tumors: list[Tumor]) -> None:
        self.rng = rng
        self.tumors = tumors
        self.vessels: list[VesselBranch] = []

    def gap_mm(self, v: VesselBranch) -> float:
        """Smallest 3-D gap between the vessel (lumen + sheath) and any tumour's bounding sphere."""
        if not self.tumors:
            return np.inf
        return min(_segment_point_distance(v.start_mm, v.end_mm, t.center_mm) - t.max_radius_mm - v.max_radius_mm
                   for t in self.tumors)

    def add(self, kind, start, end, r0, r1, *, sheath_mm=None, force=False, clearance_mm=0.0,
            small_clearance_mm=None) -> VesselBranch | None:
        vid = len(self.vessels) + 1
        if sheath_mm is None:
            sheath_mm = 0.0 if kind == HEPATIC_VEIN else float(np.clip(0.25 * (r0 + r1), 0.5, 1.4))
        pulse = 0.04 if kind == HEPATIC_VEIN else 0.02
        v = VesselBranch(id=vid, kind=kind, start_mm=tuple(map(float, start)), end_mm=tuple(map(float, end)),
                         radius_start_mm=float(r0), radius_end_mm=float(r1), sheath_mm=sheath_mm, pulse_fraction=pulse,
                         pulse_phase_rad=float(self.rng.uniform(0, 2 * np.pi)))
        if not force:
            need = clearance_mm if 2 * max(r0, r1) >= 3.0 else (
                small_clearance_mm if small_clearance_mm is not None else clearance_mm)
            if self.gap_mm(v) < need:
                return None
        self.vessels.append(v)
        return v

    def tree(self, kind, *, x_mm, z_mm, radius_mm, n_branches, clearance_mm, small_clearance_mm=None,
             y_span_mm=70.0, slope=(0.0, 0.0), taper=1.25):
        """A trunk roughly along the sweep direction with side branches."""
        rng = self.rng
        start = np.array([x_mm - slope[0] * y_span_mm / 2, -y_span_mm / 2, z_mm - slope[1] * y_span_mm / 2])
        end = np.array([x_mm + slope[0] * y_span_mm / 2, y_span_mm / 2, z_mm + slope[1] * y_span_mm / 2])
        # hepatic veins widen toward the cava (+y here)
        r_a, r_b = (radius_mm / taper, radius_mm) if kind == HEPATIC_VEIN else (radius_mm, radius_mm / taper)
        trunk = self.add(kind, start, end, r_a, r_b, clearance_mm=clearance_mm, small_clearance_mm=small_clearance_mm)
        if trunk is None:
            return
        for _ in range(n_branches * 4):
            if n_branches <= 0:
                break
            t = rng.uniform(0.1, 0.9)
            origin = start + t * (end - start)
            r_parent = trunk.radius_at(t)
            r = rng.uniform(0.35, 0.7) * r_parent
            d = rng.normal(size=3)
            d[1] = rng.uniform(0.6, 1.6) * rng.choice([-1, 1])
            d /= np.linalg.norm(d)
            length = rng.uniform(18, 40)
            tip = origin + d * length
            if tip[2] < 4 or tip[2] > 90:
                continue
            b = self.add(kind, origin, tip, r, r * rng.uniform(0.6, 0.85), clearance_mm=clearance_mm,
                         small_clearance_mm=small_clearance_mm)
            if b is not None:
                n_branches -= 1


def _tumor(rng, tid, center, radius, appearance, *, primary=True, contrast_db=None, halo_mm=None,
           halo_contrast_db=None, irregularity=0.12) -> Tumor:
    c, h, hc = APPEARANCE_DEFAULTS[appearance]
    return Tumor(id=tid, center_mm=tuple(map(float, center)), radius_mm=float(radius), appearance=appearance,
                 contrast_db=float(c if contrast_db is None else contrast_db),
                 halo_mm=float(h if halo_mm is None else halo_mm),
                 halo_contrast_db=float(hc if halo_contrast_db is None else halo_contrast_db),
                 lumps=random_lumps(rng, irregularity=irregularity), primary=primary)


def surface_radius_mm(tumor: Tumor, direction) -> float:
    """Distance from the tumour centre to its boundary along ``direction`` (bisection on the field)."""
    d = np.asarray(direction, float)
    d = d / np.linalg.norm(d)
    lo, hi = 0.0, tumor.max_radius_mm * 1.5
    c = np.asarray(tumor.center_mm, float)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        p = c + mid * d
        if tumor.field(np.array(p[0]), np.array(p[1]), np.array(p[2])) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _calcification(rng) -> tuple:
    out = []
    for _ in range(3):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        k = d * 2 * np.pi / rng.uniform(2.0, 3.5)
        out.append((float(k[0]), float(k[1]), float(k[2]), float(rng.uniform(0, 2 * np.pi))))
    return tuple(out)


# --------------------------------------------------------------------------- scenarios
LINEAR = ProbeGeometry(kind="linear", width_px=640, height_px=480, spacing_mm=(0.12, 0.12))


def _free_parenchyma(seed):
    rng = np.random.default_rng(seed)
    tumors = [_tumor(rng, 1, (0.0, 0.0, 26.0), 9.0, "target")]
    vf = _VesselFactory(rng, tumors)
    vf.tree(HEPATIC_VEIN, x_mm=-27, z_mm=38, radius_mm=5.0, n_branches=3, clearance_mm=10.0, slope=(0.1, 0.1))
    vf.tree(PORTAL_PEDICLE, x_mm=26, z_mm=16, radius_mm=3.2, n_branches=3, clearance_mm=10.0, slope=(-0.1, 0.05))
    vf.tree(PORTAL_PEDICLE, x_mm=8, z_mm=50, radius_mm=2.0, n_branches=2, clearance_mm=10.0, slope=(0.1, -0.05))
    poses = sweep_poses(rng, 150, 15.0, y_start_mm=-5.5, y_end_mm=5.5, x_wobble_mm=1.5)
    return tumors, vf.vessels, poses, LINEAR, "tumour in free parenchyma: no vessel >= 3 mm within 10 mm (5 mm margin possible)"


def _hepatic_vein_abutting(seed):
    rng = np.random.default_rng(seed)
    tumors = [_tumor(rng, 1, (5.0, 0.0, 24.0), 8.0, "target")]
    vf = _VesselFactory(rng, tumors)
    # main hepatic vein trunk touching the tumour's left side (0.6 mm overlap with the mean radius)
    r = 4.5
    x_v = 5.0 - (surface_radius_mm(tumors[0], (-1, 0, 0)) + r) + 0.6
    vf.add(HEPATIC_VEIN, (x_v - 3, -45, 26.0), (x_v + 3, 45, 23.0), r / 1.15, r * 1.1, force=True)
    vf.tree(PORTAL_PEDICLE, x_mm=27, z_mm=40, radius_mm=3.0, n_branches=3, clearance_mm=8.0, slope=(0.0, 0.1))
    vf.tree(HEPATIC_VEIN, x_mm=-8, z_mm=47, radius_mm=2.5, n_branches=2, clearance_mm=6.0, slope=(0.2, -0.05))
    poses = sweep_poses(rng, 150, 15.0, y_start_mm=-4.5, y_end_mm=4.5, lifts_s=((7.2, 7.6),))
    return tumors, vf.vessels, poses, LINEAR, "tumour abutting a 9-10 mm hepatic vein (vascular detachment); probe lift at 7.2-7.6 s"


def _portal_pedicle(seed):
    rng = np.random.default_rng(seed)
    tumors = [_tumor(rng, 1, (0.0, 0.0, 15.0), 7.0, "isoechoic_halo")]
    vf = _VesselFactory(rng, tumors)
    r = 2.9  # ~5.8 mm portal pedicle below the tumour, 3 mm gap (lumen edge to tumour)
    z_v = 15.0 + surface_radius_mm(tumors[0], (0, 0, 1)) + 3.0 + r
    vf.add(PORTAL_PEDICLE, (-40, -6, z_v + 1.0), (40, 6, z_v - 1.0), r, r * 0.95, sheath_mm=1.0, force=True)
    vf.tree(HEPATIC_VEIN, x_mm=-17, z_mm=14, radius_mm=3.0, n_branches=2, clearance_mm=6.0, slope=(0.0, 0.05))
    geometry = ProbeGeometry(kind="linear", width_px=320, height_px=256, spacing_mm=(0.15, 0.15))
    poses = sweep_poses(rng, 100, 10.0, y_start_mm=-4.0, y_end_mm=4.0, x_wobble_mm=1.0)
    return tumors, vf.vessels, poses, geometry, "tumour 3 mm from a ~6 mm portal pedicle (high heat-sink risk for ablation)"


def _small_vessels(seed):
    rng = np.random.default_rng(seed)
    tumors = [_tumor(rng, 1, (0.0, 0.0, 30.0), 8.0, "hypoechoic")]
    vf = _VesselFactory(rng, tumors)
    # a fan of small (< 3 mm) vessels close to the tumour
    for k in range(6):
        ang = k * np.pi / 3 + rng.uniform(-0.3, 0.3)
        gap = rng.uniform(1.5, 7.0)
        r = rng.uniform(0.7, 1.35)
        rad = 8.0 * 1.1 + gap + r
        cx, cz = rad * np.cos(ang), 30.0 + rad * np.sin(ang)
        kind = HEPATIC_VEIN if k % 2 else PORTAL_PEDICLE
        vf.add(kind, (cx - rng.uniform(-4, 4), -30, cz + rng.uniform(-3, 3)),
               (cx + rng.uniform(-4, 4), 30, cz + rng.uniform(-3, 3)), r, r * 0.9, sheath_mm=0.5, clearance_mm=0.5)
    # large vessels far away (> 20 mm from the ablation zone)
    vf.tree(HEPATIC_VEIN, x_mm=-42, z_mm=62, radius_mm=5.0, n_branches=1, clearance_mm=26.0, small_clearance_mm=3.0)
    vf.tree(PORTAL_PEDICLE, x_mm=40, z_mm=66, radius_mm=3.0, n_branches=1, clearance_mm=26.0, small_clearance_mm=3.0)
    geometry = ProbeGeometry(kind="convex", width_px=640, height_px=480, spacing_mm=(0.15, 0.15), radius_mm=30.0,
                             opening_deg=75.0)
    poses = sweep_poses(rng, 150, 15.0, y_start_mm=-4.5, y_end_mm=4.5, tilt_deg=5.0)
    return tumors, vf.vessels, poses, geometry, "tumour among < 3 mm vessels (low heat-sink risk), convex probe"


def _occult_lesion(seed):
    rng = np.random.default_rng(seed)
    tumors = [_tumor(rng, 1, (2.0, 1.0, 19.0), 3.2, "isoechoic_halo", contrast_db=-2.0, halo_mm=1.0,
                     halo_contrast_db=-9.0, irregularity=0.05)]
    vf = _VesselFactory(rng, tumors)
    vf.tree(HEPATIC_VEIN, x_mm=-12, z_mm=25, radius_mm=4.0, n_branches=3, clearance_mm=5.0, slope=(0.2, 0.0))
    vf.tree(PORTAL_PEDICLE, x_mm=12, z_mm=11, radius_mm=2.5, n_branches=3, clearance_mm=5.0, slope=(-0.1, 0.1))
    geometry = ProbeGeometry(kind="linear", width_px=320, height_px=256, spacing_mm=(0.13, 0.13))
    poses = sweep_poses(rng, 100, 10.0, y_start_mm=-18.0, y_end_mm=18.0, to_and_fro=False, tilt_deg=2.0)
    return tumors, vf.vessels, poses, geometry, "occult 6-7 mm isoechoic lesion with a thin halo, visible mid-sweep only"


def _two_lesions(seed):
    rng = np.random.default_rng(seed)
    tumors = [_tumor(rng, 1, (-13.0, 0.0, 22.0), 7.0, "hyperechoic"),
              _tumor(rng, 2, (15.0, 2.0, 34.0), 6.0, "calcified", primary=False)]
    vf = _VesselFactory(rng, tumors)
    vf.tree(HEPATIC_VEIN, x_mm=2, z_mm=44, radius_mm=4.5, n_branches=2, clearance_mm=3.0, slope=(0.0, -0.1))
    vf.tree(PORTAL_PEDICLE, x_mm=-30, z_mm=14, radius_mm=2.8, n_branches=2, clearance_mm=3.0)
    poses = sweep_poses(rng, 150, 15.0, y_start_mm=-3.0, y_end_mm=5.0, lifts_s=((9.0, 9.3),))
    return tumors, vf.vessels, poses, LINEAR, "two lesions (hyperechoic primary, calcified second with shadow) on a scanner screen"


SCENARIOS = {
    "free_parenchyma": (101, _free_parenchyma),
    "hepatic_vein_abutting": (202, _hepatic_vein_abutting),
    "portal_pedicle": (303, _portal_pedicle),
    "small_vessels": (404, _small_vessels),
    "occult_lesion": (505, _occult_lesion),
    "two_lesions": (606, _two_lesions),
}


def build(name: str, seed: int | None = None) -> Case:
    """One of the bundled scenarios as a :class:`Case` (default seed = the recording's seed)."""
    if name not in SCENARIOS:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    default_seed, builder = SCENARIOS[name]
    seed = default_seed if seed is None else int(seed)
    tumors, vessels, poses, geometry, description = builder(seed)
    rng = np.random.default_rng([seed, 31])
    model = LiverModel(vessels=tuple(vessels), tumors=tuple(tumors), texture=random_texture(rng), seed=seed,
                       calcification=_calcification(rng))
    screen = Screen() if name == "two_lesions" else None
    return Case(name=name, seed=seed, model=model, geometry=geometry, poses=poses, fps=10.0 if name in ("portal_pedicle", "occult_lesion") else 15.0, screen=screen, description=description)


# --------------------------------------------------------------------------- random cases
DIFFICULTIES = {"easy": 0.15, "medium": 0.5, "hard": 0.85}


def random_case(seed: int, *, difficulty: str | float = "medium", n_frames: int = 1, fps: float = 15.0,
                probe: str | None = None, spacing_mm: float | None = None, width_px: int = 640,
                height_px: int = 480) -> Case:
    """A random case for training and for fresh evaluation (never used to tune analysis).

    ``difficulty`` ("easy", "medium", "hard" or 0..1) lowers lesion size and contrast,
    brings vessels closer and worsens TGC and noise.
    """
    level = DIFFICULTIES.get(difficulty, difficulty) if isinstance(difficulty, str) else float(difficulty)
    if isinstance(level, str) or not 0.0 <= float(level) <= 1.0:
        raise ValueError(f"difficulty must be 'easy', 'medium', 'hard' or a number in 0..1, got {difficulty!r}")
    rng = np.random.default_rng([int(seed), 555])
    kind = probe or ("convex" if rng.random() < 0.4 else "linear")
    sp = float(spacing_mm) if spacing_mm is not None else float(rng.uniform(0.08, 0.2))
    radius_mm = float(rng.uniform(20, 40))
    # the whole fan fits in the image: its widest point (the bottom corners) stays inside the columns
    fit_deg = 2 * math.degrees(math.atan(0.5 * width_px * sp / (radius_mm + height_px * sp))) * 0.97
    geometry = ProbeGeometry(kind=kind, width_px=width_px, height_px=height_px, spacing_mm=(sp, sp),
                             radius_mm=radius_mm, opening_deg=float(min(rng.uniform(60, 80), fit_deg)))
    depth = geometry.max_depth_mm
    appearance = str(rng.choice(["hypoechoic", "target", "isoechoic_halo", "hyperechoic", "calcified"]))
    radius = float(np.clip(rng.uniform(9, 13) * (1 - 0.6 * level), 2.5, 0.2 * depth))
    c, h, hc = APPEARANCE_DEFAULTS[appearance]
    contrast = c * (1 - 0.6 * level) if appearance != "isoechoic_halo" else 0.0
    center = (float(rng.uniform(-0.15, 0.15) * width_px * sp), 0.0, float(rng.uniform(0.3, 0.55) * depth))
    tumors = [_tumor(rng, 1, center, radius, appearance, contrast_db=contrast, halo_mm=min(h, 0.3 * radius),
                     irregularity=0.05 + 0.07 * level)]
    vf = _VesselFactory(rng, tumors)
    # one vessel placed at a chosen gap from the tumour, the rest random trees
    gap = float(rng.uniform(0, 10) * (1 - 0.8 * level))
    r_near = float(rng.uniform(1.0, 5.0))
    ang = rng.uniform(0, 2 * np.pi)
    rad = radius + gap + r_near
    cx, cz = center[0] + rad * np.cos(ang), center[2] + rad * np.sin(ang)
    if 3 < cz < depth - 3:
        vf.add(str(rng.choice([HEPATIC_VEIN, PORTAL_PEDICLE])), (cx, -40, cz), (cx + rng.uniform(-5, 5), 40, cz),
               r_near, r_near * 0.9, force=True)
    for _ in range(3):
        vf.tree(str(rng.choice([HEPATIC_VEIN, PORTAL_PEDICLE])), x_mm=float(rng.uniform(-0.5, 0.5) * width_px * sp),
                z_mm=float(rng.uniform(0.1, 0.9) * depth), radius_mm=float(rng.uniform(1.5, 6.0)),
                n_branches=int(rng.integers(0, 4)), clearance_mm=1.0, slope=(rng.uniform(-0.2, 0.2), rng.uniform(-0.1, 0.1)))
    params = ImagingParams(tgc_ripple_db=1.0 + 3.0 * level, noise_floor_db=-66.0 + 14.0 * level,
                           lateral_fwhm_far_mm=1.0 + 0.6 * level)
    model = LiverModel(vessels=tuple(vf.vessels), tumors=tuple(tumors), texture=random_texture(rng, amplitude=0.08 + 0.1 * level),
                       seed=int(seed), calcification=_calcification(rng))
    span = 0.6 * radius
    poses = sweep_poses(rng, n_frames, fps, y_start_mm=-span, y_end_mm=span, x_wobble_mm=1.0)
    if n_frames == 1:
        poses = [replace(poses[0], y_mm=float(rng.uniform(-0.4, 0.4) * radius))]
    return Case(name=f"random-{seed}-{level:.2f}", seed=int(seed), model=model, geometry=geometry, poses=poses,
                fps=fps, params=params, description=f"random case, difficulty {level:.2f}, {appearance}, {kind}")
