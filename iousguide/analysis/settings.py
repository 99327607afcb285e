"""Settings of the tracking module (every physical value carries its unit in its name).

Lengths are in millimetres. When a frame is uncalibrated the analysis still runs in
pixels: the mm-based parameters are then applied on an *internal* nominal scale
(``uncalibrated_depth_mm`` spread over the image rows). That nominal scale only
sizes filters and size limits; it never produces a reported millimetre value.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, fields

import numpy as np

from iousguide.errors import SettingsError


@dataclass(frozen=True)
class TrackingSettings:
    """Options of :class:`iousguide.analysis.tracker.Tracker`.

    Attributes
    ----------
    tumor_seed_px : (float, float) or None
        A click on the tumour, (x, y) in source pixels; None = propose candidates automatically.
    tumor_seed_frame : int or None
        Frame index the seed applies to (None: the first frame processed).
    auto_tumor : bool
        Propose a tumour automatically when no seed was given.
    working_spacing_mm : float
        Pixel size of the internal detection grid (frames finer than this are reduced).
    refine_upsample : int
        Largest upsampling factor of the local full-resolution boundary refinement.
    refine_px_mm : float
        Target pixel size of the refinement grid (the factor is the smallest that reaches it,
        up to ``refine_upsample``); boundaries are placed within half of it.
    uncalibrated_depth_mm : float
        Nominal image depth used only to size filters on uncalibrated frames.
    display_dynamic_range_db : float
        Log-compression range assumed when turning grey levels back into echo amplitude.
    speckle_smoothing_mm : float
        Gaussian sigma used to average speckle on the detection grid.
    edge_smoothing_mm : float
        Gaussian sigma of the speckle average used to place lumen boundaries (small enough
        not to flatten a 1 mm bright sheath).
    lumen_contrast_db : float
        A lumen core is at least this many dB below the tissue at its depth (such pixels are
        also left out of the tissue level estimate).
    lumen_core_fraction : float
        A lumen core lies below this fraction of the tissue level on the display's dB scale
        (0 = black): anechoic, unlike a hypoechoic lesion or halo, which keeps speckle above.
    edge_level_fraction : float
        Boundary level between inside and outside mean echo power (0.5: a blurred step
        crosses half its power at the edge).
    vessel_min_diameter_mm, vessel_max_diameter_mm : float
        Size limits of a reported lumen (minor axis).
    shadow_bottom_margin_mm : float
        A dark region reaching this close to the bottom of the image that is taller than wide
        is an acoustic shadow, not a vessel.
    sheath_contrast_db_portal, sheath_contrast_db_hepatic : float
        Wall-over-tissue level (dB) above which a lumen is a portal pedicle (bright Glissonian
        sheath) and below which it is a hepatic vein; in between ``unknown``.
    sheath_width_mm : float
        Width of the ring around the lumen inspected for a bright sheath.
    tumor_contrast_db : float
        Level difference from tissue (dB, either sign) that marks lesion (or halo) pixels.
    tumor_min_diameter_mm, tumor_max_diameter_mm : float
        Size limits of a tumour (equivalent diameter).
    tumor_smoothing_mm : float
        Gaussian sigma for the tumour map (coarser than the vessel map).
    tumor_contour_smoothing_mm, vessel_contour_smoothing_mm : float
        Gaussian sigma along the boundary: raggedness at the speckle scale is noise, and a
        minimum distance taken over a ragged boundary is biased towards its spikes.
    tumor_confirm_frames : int
        An automatic tumour proposal must persist this many frames before it is reported.
    tumor_lost_reset_frames : int
        An automatically proposed tumour that stays lost this many frames is given up and
        the automatic search starts again (a clicked tumour stays "lost" until found).
    tumor_max_area_change : float
        Frame-to-frame area ratio above which the follow is considered lost.
    track_gate_mm : float
        Largest centroid move between frames for a vessel to keep its id.
    track_max_missed_frames : int
        A vessel track survives this many frames without detection (keeps its id).
    smoothing_alpha, smoothing_beta : float
        Alpha-beta filter gains for distances and diameters (1, 0 = no smoothing).
    jump_threshold_mm : float
        A measurement further than this (plus its uncertainty) from its prediction is flagged
        ``"jump"`` and reported unsmoothed.
    contact_distance_mm : float
        Vessel circumference within this distance of the tumour counts in the contact arc.
    caliper_relative_fraction, caliper_full_scale_fraction : float
        Vendor caliper rule: +/- (relative x value + full-scale fraction x image depth).
    full_scale_depth_mm : float or None
        Image depth for the caliper rule; None = rows x row spacing.
    black_level : int
        Grey level under which a pixel carries no signal.
    min_signal_fraction : float
        A frame with less than this fraction of signal pixels is ``no_signal`` (probe lift).
    saturated_level : int, saturated_fraction : float
        A frame with more than ``saturated_fraction`` pixels at or above ``saturated_level``
        is ``no_signal`` (saturated).
    doppler_chroma_level : int
        Colour pixels whose max-min channel difference exceeds this are colour Doppler (flow):
        they are treated as lumen, never as tissue.
    size_change_confirm_frames : int
        A new frame size must persist this many frames before tracking restarts on it; until
        then such frames get status ``error``.
    learned_vessels : bool
        Also run the learned lumen model (``iousguide/analysis/learned.py``, OpenCV DNN) and add
        the lumens it finds that the classical detector did not, as vessels of kind ``unknown``.
        On by default: it finds the grey lumens of real scanners and raised vessel recall and
        precision on the phantom recordings and fresh cases (model card: iousguide/models/README.md).
    learned_veto_probability : float
        With ``learned_vessels``: a classical lumen inside which the model's lumen probability
        nowhere reaches this is dropped (0 = never; 0.03 by default, which removed most of the
        classical detector's false lumens on the real liver sweep and the usgra images).
    learned_lesions : bool
        Also run the learned lesion model (``iousguide/analysis/learned_lesion.py``): where the
        classical lesion maps give no plausible candidate, a lesion it finds may be proposed, and a
        followed lesion the classical follow loses is followed on its map (outline: the model's).
    """

    tumor_seed_px: tuple[float, float] | None = None
    tumor_seed_frame: int | None = None
    auto_tumor: bool = True
    working_spacing_mm: float = 0.3
    refine_upsample: int = 4
    refine_px_mm: float = 0.06
    uncalibrated_depth_mm: float = 50.0
    display_dynamic_range_db: float = 60.0
    speckle_smoothing_mm: float = 0.4
    edge_smoothing_mm: float = 0.3
    lumen_contrast_db: float = 9.0
    lumen_core_fraction: float = 0.4
    edge_level_fraction: float = 0.5
    vessel_min_diameter_mm: float = 1.5
    vessel_max_diameter_mm: float = 25.0
    shadow_bottom_margin_mm: float = 3.0
    sheath_contrast_db_portal: float = 4.0
    sheath_contrast_db_hepatic: float = 2.0
    sheath_width_mm: float = 1.5
    tumor_contrast_db: float = 3.0
    tumor_min_diameter_mm: float = 4.0
    tumor_max_diameter_mm: float = 70.0
    tumor_smoothing_mm: float = 0.7
    tumor_contour_smoothing_mm: float = 1.0
    vessel_contour_smoothing_mm: float = 0.4
    tumor_confirm_frames: int = 2
    tumor_max_area_change: float = 2.0
    tumor_lost_reset_frames: int = 10
    track_gate_mm: float = 6.0
    track_max_missed_frames: int = 8
    smoothing_alpha: float = 0.7
    smoothing_beta: float = 0.2
    jump_threshold_mm: float = 2.0
    contact_distance_mm: float = 1.0
    caliper_relative_fraction: float = 0.02
    caliper_full_scale_fraction: float = 0.01
    full_scale_depth_mm: float | None = None
    black_level: int = 8
    min_signal_fraction: float = 0.05
    saturated_level: int = 250
    saturated_fraction: float = 0.5
    doppler_chroma_level: int = 40
    size_change_confirm_frames: int = 3
    learned_vessels: bool = True
    learned_veto_probability: float = 0.03
    learned_lesions: bool = True

    def __post_init__(self) -> None:
        positive = (
            "working_spacing_mm", "refine_px_mm", "uncalibrated_depth_mm", "display_dynamic_range_db", "speckle_smoothing_mm",
            "edge_smoothing_mm",
            "vessel_min_diameter_mm", "vessel_max_diameter_mm", "sheath_width_mm", "tumor_min_diameter_mm",
            "tumor_max_diameter_mm", "tumor_smoothing_mm", "track_gate_mm", "jump_threshold_mm",
            "contact_distance_mm", "tumor_max_area_change",
        )
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise SettingsError(f"tracking setting {name} must be positive, got {value!r}")
        for name in ("lumen_contrast_db", "tumor_contrast_db"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"tracking setting {name} must be positive, got {getattr(self, name)!r}")
        for name in ("lumen_core_fraction", "edge_level_fraction", "smoothing_alpha", "min_signal_fraction", "saturated_fraction"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise SettingsError(f"tracking setting {name} must be in (0, 1], got {value!r}")
        if not 0 <= self.learned_veto_probability < 1:
            raise SettingsError(f"learned_veto_probability must be in [0, 1), got {self.learned_veto_probability!r}")
        if not 0 <= self.smoothing_beta <= 1:
            raise SettingsError(f"tracking setting smoothing_beta must be in [0, 1], got {self.smoothing_beta!r}")
        if self.vessel_min_diameter_mm >= self.vessel_max_diameter_mm:
            raise SettingsError("vessel_min_diameter_mm must be smaller than vessel_max_diameter_mm")
        if self.tumor_min_diameter_mm >= self.tumor_max_diameter_mm:
            raise SettingsError("tumor_min_diameter_mm must be smaller than tumor_max_diameter_mm")
        if int(self.refine_upsample) != self.refine_upsample or not 1 <= self.refine_upsample <= 8:
            raise SettingsError(f"refine_upsample must be an integer 1..8, got {self.refine_upsample!r}")
        if self.tumor_seed_px is not None:
            try:
                x, y = (float(v) for v in self.tumor_seed_px)
            except (TypeError, ValueError):
                raise SettingsError(f"tumor_seed_px must be (x, y) in source pixels, got {self.tumor_seed_px!r}") from None
            object.__setattr__(self, "tumor_seed_px", (x, y))
        if self.tumor_seed_frame is not None and int(self.tumor_seed_frame) < 0:
            raise SettingsError(f"tumor_seed_frame must be >= 0, got {self.tumor_seed_frame!r}")
        if self.full_scale_depth_mm is not None and not self.full_scale_depth_mm > 0:
            raise SettingsError(f"full_scale_depth_mm must be positive, got {self.full_scale_depth_mm!r}")

    def upsample_for(self, pixel_mm: float) -> int:
        """Refinement upsampling factor for a frame pixel of ``pixel_mm`` (nominal) mm."""
        return int(min(max(np.ceil(pixel_mm / self.refine_px_mm - 1e-6), 1), self.refine_upsample))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def parse_setting_overrides(items: list[str]) -> dict:
    """``NAME=VALUE`` strings (tools' ``--set``) -> keyword overrides of :class:`TrackingSettings`.

    Booleans are ``true/false/1/0/yes/no`` (``bool("false")`` would be True); other values are
    Python literals (numbers, tuples, None); a float field given an integer gets a float.
    Raises SettingsError naming the bad item."""
    defaults = TrackingSettings()
    names = {f.name for f in fields(TrackingSettings)}
    out: dict = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in names:
            raise SettingsError(f"--set {item}: expected NAME=VALUE with NAME a TrackingSettings field")
        default = getattr(defaults, name)
        if isinstance(default, bool):
            low = value.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise SettingsError(f"--set {item}: {name} is true or false")
            out[name] = low in ("true", "1", "yes")
        elif isinstance(default, str):
            out[name] = value
        else:
            try:
                out[name] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise SettingsError(f"--set {item}: not a number, tuple or None") from None
            if isinstance(default, float) and isinstance(out[name], int) and not isinstance(out[name], bool):
                out[name] = float(out[name])
    return out
