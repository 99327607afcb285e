"""The tracker: per frame, vessels with stable ids, the tumour, and their distances.

::

    from iousguide.analysis.settings import TrackingSettings
    from iousguide.analysis.tracker import Tracker

    tracker = Tracker(TrackingSettings(tumor_seed_px=(412, 300)))
    for frame in source:
        result = tracker.process(frame)      # FrameResult, source-pixel coordinates
        print(result.status, result.min_distance_mm)

State is explicit and lives in this object: vessel tracks (id, position, velocity,
alpha-beta filters of diameter and distance), the tumour follow (mask, polarity,
lost counter) and a pending seed. ``process`` never raises for a bad frame: it
returns a status and a one-line message.
"""

from __future__ import annotations

import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from iousguide.analysis.imaging import Prepared, check_signal, disc, doppler_mask, largest_contour, prepare
from iousguide.analysis.learned_lesion import learned_lesion_candidates, lesion_probability
from iousguide.analysis.measure import TumorGeometry, distance_uncertainty_mm
from iousguide.analysis.refine import _dist_to, _shift_outward, smooth_contour
from iousguide.analysis.results import FrameResult, TumorResult, VesselResult
from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.tumor import (ANECHOIC_MIN_SOLIDITY, AUTO_BRIGHT_MAX_ELONGATION, AUTO_SIZE_FACTOR,
                                      TumorCandidate, anechoic_mask, behind_lumen, follow_template, iou,
                                      lesion_candidates, looks_like_lumen, lumen_in_place, place_learned_bright_edge,
                                      plausible_auto, refine_tumor, shadowed_extent,
                                      strong_auto, competes)
from iousguide.analysis.vessels import VesselDetection, detect_vessels_prepared, lumens_mask, split_touching_steady
from iousguide.errors import AnalysisError
from iousguide.frames import Frame


#: an automatic tumour follow that looks like a lumen (looks_like_lumen) this many frames in a
#: row is given up
LUMEN_LIKE_DROP_FRAMES = 2
#: a place that looked like a grey lumen is not proposed as the tumour for this many frames
#: after it last did (the posterior enhancement flickers with speckle; a lumen stays a lumen)
LUMEN_MEMORY_FRAMES = 10
#: a closed halo ring clears the lumen memory it overlaps (tumour proposal)
RING_CLEARS_LUMEN_MEMORY = True
#: a lost automatic follow yields to a clearly better proposal that persists elsewhere
LOST_RIVAL = True
#: a lesion is focal: a proposal is reported only while no other lesion-like candidate of the same
#: echo (dark or bright; proposable, or cut by the edge of the view or elongated: competes) has more
#: than 1 / FOCAL_RATIO of its score (0: no such test). Several look-alikes of similar weight are
#: the parenchyma's own pattern (vessel walls, sheaths, fissures of a real liver), not one lesion;
#: the surgeon can still click one. Real liver sweep (no lesion): tumour reported on 49 -> 21 of 140
#: frames; dev seeds: on-lesion proposals with such a rival in view were 2.5 % (bright) and 5 %
#: (dark) of the frames, on the sweep about half
FOCAL_RATIO = 2.0
#: a proposal reported on its first frame shows less posterior enhancement than this (dB), below
#: against beside and against above (no hint of a grey lumen)
STRONG_MAX_ENHANCEMENT_DB = 0.5
#: a proposal reported on its first frame (strong_auto) is compared also with the lesion-like
#: candidates that are not proposed (cut by the edge of the view, elongated): while such a structure
#: is in view the image does not show one clear lesion
STRONG_RIVALS_UNPROPOSED = True
#: a bright candidate lying within a proposable dark one (BRIGHT_CENTRE_INSIDE of its area) is
#: the echoic centre of a target lesion (or echo within a grey lumen): neither proposed nor a
#: rival of its dark rim
BRIGHT_CENTRE_OF_DARK = True
BRIGHT_CENTRE_INSIDE = 0.8
#: the field of view (fan or linear image) is found again every this many frames
FOV_REFRESH_FRAMES = 15
#: While a lesion is followed, lesion candidates down to this fraction of tumor_min_diameter_mm
#: are looked for (its section shrinks as the image plane leaves it; the follow's own gates - near
#: the previous outline, area change - still apply). 1.0 = as for a proposal.
FOLLOW_MIN_DIAMETER_FRACTION = 0.5
#: the bright foci followed in a calcified lesion lie mostly (this fraction) within 2 mm of its last
#: extent (:meth:`Tracker._merge_follow`)
SHADOWED_FOLLOW_INSIDE = 0.7
#: a focus followed that way is completed by the lesion's last extent (eroded 1 mm; the boundary
#: refinement then places the visible edge on this frame's echoes): the focus alone is not the
#: lesion, and taken as its outline it became the reference that the next frames could not match
#: (calcified dev seeds 8800-8899 and 8300-8399, 42 cases x 12 frames: tumour Dice 0.469 -> 0.493,
#: 7 cases better, none worse)
SHADOWED_FOLLOW_EXTENT = True
#: a faint bright lesion being followed keeps its coarse-map blob on weaker shape tests
#: (tumor.BRIGHT_FOLLOW_ALL_AROUND, BRIGHT_FOLLOW_MIN_SOLIDITY; only while tracking: also after a
#: loss changed one dev case by 0.06 Dice, too little to widen a relaxed test)
BRIGHT_FOLLOW_HYSTERESIS = True
#: a learned lesion candidate (``TrackingSettings.learned_lesions``) continues a follow the classical
#: candidates lost when it overlaps the last outline by at least this IoU
LEARNED_FOLLOW_IOU = 0.3
#: boundary uncertainty (mm, one sigma) of a learned outline: the model's 0.5 iso-line, not an edge
#: found on the image (its output grid is 0.8 mm). RMS offset from the true outline, dev seeds
#: 8800-8839 x 6 frames: hyperechoic 0.55, hypoechoic 0.37, target and halo 0.22 mm, bias within
#: +-0.03 mm; calcified 0.96 mm (its deep part, in the shadow, is flagged as assumed)
LEARNED_EDGE_SIGMA_MM = 0.5
#: a bright lesion's learned outline (not shadowed) is moved to the edge seen in the image
#: (tumor.place_learned_bright_edge). Dev seeds, no click, 30 frames, hyperechoic cases of
#: 8000-8049 (14): tumour Dice 0.909 -> 0.916, distance MAE 0.472 -> 0.423 mm (the part due to
#: the tumour outline, true lumens in place of the detected ones, 0.494 -> 0.438); 8800-8849 x 12
#: frames Dice 0.862 -> 0.864, distance MAE 0.447 -> 0.439 mm; calcified cases (13) 0.848 = 0.848,
#: 0.560 -> 0.561 mm; hard 10100-10129 x 12 0.720 = 0.720, 0.553 -> 0.555 mm; bundled
#: two_lesions_screen (hyperechoic) Dice 0.959 -> 0.963, distance MAE 0.235 -> 0.210 mm (p95
#: 0.52 -> 0.55), the other recordings identical
LEARNED_EDGE_PLACED = True
#: which lesions the learned model outlines when both find them (its candidate overlapping the
#: classical one by IoU >= LEARNED_FOLLOW_IOU, or holding LEARNED_CONTAINS_FRACTION of it):
#: "bright" (hyperechoic, calcified), "bright+faint" (those, and a dark lesion whose classical
#: edge contrast is below LEARNED_FAINT_EDGE_DB), "all" or "none"
LEARNED_OUTLINE = "bright+faint"
#: a learned component holding at least this fraction of the classical candidate is the same
#: lesion even at a low IoU: a calcified lesion's classical candidate is its bright focus alone
#: (16-50 mm^2 inside a 90-290 mm^2 lesion, IoU 0.1-0.3), which the model outlines whole
#: (dev 8000-8049 clicked, calcified frames: Dice 0.60 of the focus -> 0.92)
LEARNED_CONTAINS_FRACTION = 0.8
#: a dark lesion whose classical candidate's edge contrast (``TumorCandidate.contrast_db``) is
#: below this is outlined by the model: at a faint edge the half-power cut follows the speckle and
#: under-segments. Dev frames (classical vs learned Dice): hard 10100-10129 clicked 2-3 dB 0.68 vs
#: 0.87, 3-4 dB 0.82 vs 0.90, 4-5 dB 0.95 vs 0.93; medium 8000-8049 3-4 dB 0.96 vs 0.96,
#: 4-5 dB 0.96 vs 0.97, 5-6 dB 0.96 vs 0.94 (the classical edge wins when it is clear). Only when
#: the refined classical edge is no surer than the model's (edge sigma >= LEARNED_EDGE_SIGMA_MM):
#: the band measure reads a thin dark halo around an isoechoic centre as faint (3.8 dB) while its
#: edge is sharp (0.36 mm; classical Dice 0.98, model 0.83); on the dev frames above every faint
#: edge measured 0.49 mm or more (median 0.9-1.3 mm). And only when the model's component is not
#: smaller than the classical one (a 7 mm faint disc of a test scene: model 3.8 mm; on the dev
#: frames 2 of 153 faint frames, both worse with the model)
LEARNED_FAINT_EDGE_DB = 4.0
#: whether the learned model may propose a lesion where no classical candidate is plausible:
#: False never, True on its own, "agree" only where a classical candidate (any, plausible or not:
#: too faint, too irregular, a look-alike rival) overlaps it by IoU >= 0.3 - two detectors agreeing.
#: Not on its own: on the real healthy-liver sweep its map holds lesion-like components (peak
#: probability 0.9-1.0, 4-16 mm) on most frames - real parenchyma is not the phantom's uniform
#: speckle, and a brighter patch of it reads as a hyperechoic lesion - and proposals by it alone put
#: a false tumour on 3 frames. "agree" (its candidates held to the classical size, view, elongation
#: and lumen rules): sweep statuses identical to False; dev 8800-8899 (no click) Dice 0.778 -> 0.790,
#: distance MAE 0.628 -> 0.600 mm, no case worse; hard 10100-10129 Dice 0.542 -> 0.568.
#: The model then runs on every frame (~2.6 ms CPU in the worker thread)
LEARNED_PROPOSALS: bool | str = "agree"
#: ... and with "agree", the model's lesion is proposed on its own where it is focal and visible:
#: no classical candidate of the same echo that competes (``tumor.competes``) has more than
#: 1 / FOCAL_RATIO of its score - the classical maps see no look-alike - and its echo differs from
#: the tissue 1-3 mm around it by LEARNED_ALONE_MIN_CONTRAST_DB or more (None: the lesion map's own
#: ``tumor_contrast_db``). Development case 8875 (medium, a hyperechoic lesion the classical maps
#: miss on every frame; 3.7-4.5 dB): Dice 0 -> 0.87. On the real healthy-liver sweep the model's
#: components are focal too (frames 12-14: 9.6 mm, 2.3 dB; proposed without the contrast test, then
#: followed as lost on 10 more frames); the contrast test keeps them out
LEARNED_ALONE_FOCAL = True
LEARNED_ALONE_MIN_CONTRAST_DB: float | None = None
#: an automatic proposal is made on its first frame (``strong_auto``) only where the learned model
#: sees the same lesion (``_learned_same_lesion``); one it does not see waits the confirm frames
#: like any other. "bright": only bright candidates are held to it; "all"; None: never
LEARNED_CONFIRMS_AT_ONCE: str | None = "all"
#: where the classical proposal is one the learned model does not see and the model proposes a
#: lesion (``LEARNED_PROPOSALS`` rules) with a higher ``score()``, the model's is proposed instead
LEARNED_COMPETES = True
#: a learned proposal the classical detector agreed with on the frame before (it is pending) needs
#: no classical candidate on this frame to be confirmed (the classical map sees a faint lesion on
#: some frames only)
LEARNED_PENDING_AGREES = True
#: a classical candidate that the learned one holds (``LEARNED_CONTAINS_FRACTION`` of it) agrees
#: with it, as one overlapping by IoU >= 0.3 does
LEARNED_AGREE_CONTAINS = True
#: a pending proposal goes on (its count rises) on a candidate that holds it or that it holds
#: (``_same_lesion``), not only on one overlapping it by IoU >= 0.3; and a pending classical
#: proposal lets the model's outline of the same lesion stand on the next frame (as a pending
#: learned one does, ``LEARNED_PENDING_AGREES``)
PENDING_SAME_LESION = True
#: a dark candidate lying for this fraction within a detected lumen that its outline would not
#: take in is not proposed automatically (0: no such test): the vessel detector saw the lumen whole,
#: the lesion map its grey interior. A lumen the outline takes in (``INNER_LUMEN_FRACTION``) is a
#: piece of the lesion instead (a halo arc); a click still overrules (``SEED_OVERRULES_GREY_LUMEN``)
DARK_INSIDE_LUMEN_FRACTION = 0.8
#: a detected lumen with this fraction of its area within the tumour's convex hull is part of the
#: lesion (a halo arc, necrosis), not a vessel
INNER_LUMEN_FRACTION = 0.6
#: a lost automatic follow is re-acquired only on a candidate of the shape a proposal has: not cut
#: by the edge of the view, and a bright one not longer than AUTO_BRIGHT_MAX_ELONGATION (a proposed
#: compact blob is not found again as a band along the fan's edge)
AUTO_REACQUIRE_AS_PROPOSED = True
#: extra matching cost of a vessel track seen once (divided by its age in frames), mm
YOUNG_TRACK_COST_MM = 2.0
#: a detection whose outline shares at least this fraction of the smaller of the two areas with
#: a track's last outline (where it was, or moved by the track's velocity) may take that track
#: beyond the centroid gate: a lumen merged with an acoustic shadow band or a neighbour, or seen
#: alone again after such a merge, moves its centroid by more than the gate while it stays in
#: place (calcified dev seeds 8201 and 8209: 6 id switches in 30 frames -> 0)
TRACK_OVERLAP_FRACTION = 0.35
#: a track's velocity is learnt only from a clean move: same size (diameters within this fraction)
#: and same outline (the previous outline moved by the step shares TRACK_CLEAN_MOVE_OVERLAP of the
#: larger area with the new one); a step that is a change of shape (a lumen leaking into a shadow
#: band, a fragment) resets it to zero instead of throwing the prediction further off
TRACK_CLEAN_MOVE_DIAMETER_FRACTION = 0.25
TRACK_CLEAN_MOVE_OVERLAP = 0.7
#: a detection within the gate of a track's last place (not only of the place its velocity
#: predicts) may take it: an oblique vessel's section slides along the image as the probe sweeps
#: and comes back when the sweep turns, where the learnt velocity points the wrong way (dev seed
#: 8823: a 2 mm band moving 4-7 mm per frame took new ids three times; dev 8800-8849 x 12 frames
#: 8 -> 6 switches, 8000-8049 and hard 10100-10129 unchanged, every other figure identical)
TRACK_GATE_FROM_LAST = True
#: a lumen seen as a band (cut along its length) slides along its own axis as the probe sweeps
#: (the plane meets an oblique vessel further along it), faster than the probe moves: for the
#: gate and the matching cost the part of a step along the band's axis (the detection's, or the
#: track's last) counts at this fraction, the part across it in full (1.0 = off). Dev seed 8033:
#: a 4 mm band sliding 8 mm per frame took two new ids; dev 8000-8049 x 12 frames 14 -> 9
#: switches (distance MAE 0.451 -> 0.450 mm, p95 1.22 -> 1.24), 8800-8849 unchanged
BAND_ALONG_GATE_FRACTION = 0.5
#: a vanished track seen at least TRACK_KEEP_MIN_AGE frames keeps its id for up to this many
#: missed frames while its position lies in the field of view (a vessel that leaves the image
#: plane during a to-and-fro sweep comes back at the same place); elsewhere (outside the fan,
#: a fragment seen once) it is dropped after settings.track_max_missed_frames. Min age 3 -> 2:
#: dev seeds 8200-8259 7 -> 6, 8300-8379 10 -> 9, 8700-8779 18 = 18, 8800-8859 20 -> 16 official
#: switches (vessels seen on the first two frames of a clip, back after 10-12 frames)
TRACK_KEEP_MIN_AGE = 2
TRACK_KEEP_IN_VIEW_FRAMES = 30


@dataclass
class AlphaBeta:
    """Alpha-beta filter of one scalar measurement over time (explicit state).

    Attributes
    ----------
    value, rate_per_s : float or None
        Filtered value and its rate of change per second.
    t_s : float or None
        Time of the last update in seconds.
    """

    alpha: float
    beta: float
    value: float | None = None
    rate_per_s: float = 0.0
    t_s: float | None = None

    def update(self, measured: float, t_s: float, *, jump: float) -> tuple[float, bool]:
        """Feed one measurement; returns (reported value, jumped).

        A measurement further than ``jump`` from the prediction restarts the filter and is
        reported as measured (flagged), never smoothed away.
        """
        if self.value is None or self.t_s is None:
            self.value, self.rate_per_s, self.t_s = float(measured), 0.0, t_s
            return self.value, False
        dt = max(t_s - self.t_s, 1e-3)
        predicted = self.value + self.rate_per_s * dt
        residual = measured - predicted
        if abs(residual) > jump:
            self.value, self.rate_per_s, self.t_s = float(measured), 0.0, t_s
            return self.value, True
        self.value = predicted + self.alpha * residual
        self.rate_per_s = self.rate_per_s + self.beta * residual / dt
        self.t_s = t_s
        return self.value, False


#: switch of the steady split of touching lumens (vessels.split_touching_steady: a split starts
#: only when found in two consecutive frames and goes on at the tracked notch depth while the
#: region holds both tracks) and of the hidden tracks that keep a split part's id while its pair
#: is reported merged (_assign_ids). On: measured with the official harness (tools/eval_end_to_end.py,
#: bundled recordings, learned model on; off -> on): free_parenchyma recall >= 3 mm 0.903 -> 0.951,
#: precision 1.000 = 1.000, id switches 0.67 = 0.67 /100, diameter MAE 0.301 -> 0.311 (a split
#: part's diameter is low: MAE 0.56 mm, bias -0.26 over its 56 matches); occult_lesion recall 0.907
#: -> 0.934; the others unchanged (>= 3 mm); pooled heat-sink 0.965 = 0.965. Dev seeds 8200-8259
#: and 8600-8659 x 10: recall 0.931 -> 0.941 and 0.952 -> 0.959, id switches 9 = 9 in 1200 frames.
#: Cost ~2 ms CPU per 640x480 frame (median; p95 ~4).
SPLIT_STEADY = True
#: A lumen last seen as a split part whose centroid lies inside another lumen (its pair, reported
#: merged) is kept, moving with it, for at most this many frames (its id comes back with the split).
SPLIT_HIDDEN_MAX_FRAMES = 30


@dataclass
class VesselTrack:
    id: int
    centroid_px: tuple[float, float]
    velocity_px: tuple[float, float] = (0.0, 0.0)
    diameter_mm: float = 0.0
    missed: int = 0
    age: int = 0
    diameter_filter: AlphaBeta | None = None
    distance_filter: AlphaBeta | None = None
    split_part: bool = False  # last seen as one of two touching lumens split apart
    hidden: int = 0  # frames its centroid has lain inside its merged pair (SPLIT_STEADY)
    outline_px: np.ndarray | None = None  # last detected lumen outline (<= 48 vertices, (N, 2)), frame pixels
    band_axis: tuple[float, float] | None = None  # unit vector (x, y, in mm) along it when last seen as a band


@dataclass
class TumorState:
    mode: str = "none"  # "none" | "tracking" | "lost"
    mask_w: np.ndarray | None = None
    area_mm2: float = 0.0
    dark: bool = True
    centroid_w: tuple[float, float] = (0.0, 0.0)
    lost_frames: int = 0
    pending: TumorCandidate | None = None
    pending_count: int = 0
    auto: bool = False  # the follow started from an automatic proposal (not a click)
    score: float = 0.0
    rival: TumorCandidate | None = None
    rival_count: int = 0
    lumen_like: int = 0  # consecutive frames an automatic follow looked like a lumen
    labels: dict = field(default_factory=dict)
    # a calcified lesion's extent (working grid), its deep part assumed round in its own shadow: its
    # bright foci change from frame to frame, the lesion does not (None: the outline was all seen)
    extent_w: np.ndarray | None = None
    extent_frames: int = 0  # consecutive frames the outline was assumed in part (a shadowed lesion)
    # the learned model's outline reported in place of the accepted classical candidate on the last
    # frame (None: it was not replaced): a learned component continues *it*, like to like - a
    # calcified lesion's classical candidate is its bright focus, a third of the model's outline
    learned_outline: TumorCandidate | None = None


def _learned_outlines(cand: TumorCandidate) -> str | None:
    """Whether the learned model's outline replaces this classical candidate's (``LEARNED_OUTLINE``):
    "always", "if_edge_unsure" (a faint dark lesion: when the classical edge, refined, is no surer
    than the model's, i.e. its ``edge_sigma_mm`` >= ``LEARNED_EDGE_SIGMA_MM``) or None."""
    if LEARNED_OUTLINE == "all" or (LEARNED_OUTLINE in ("bright", "bright+faint") and not cand.dark):
        return "always"
    if LEARNED_OUTLINE == "bright+faint" and cand.dark and cand.contrast_db < LEARNED_FAINT_EDGE_DB:
        return "if_edge_unsure"
    return None


def _holds(outer: TumorCandidate, inner: TumorCandidate) -> bool:
    """Whether ``outer`` holds at least ``LEARNED_CONTAINS_FRACTION`` of ``inner``'s pixels (False
    for masks of two working grids, as ``iou`` gives 0 for them)."""
    if outer.mask_w.shape != inner.mask_w.shape:
        return False
    return np.count_nonzero(outer.mask_w & inner.mask_w) >= LEARNED_CONTAINS_FRACTION * np.count_nonzero(inner.mask_w)


def _learned_same_lesion(cand: TumorCandidate, learned: list[TumorCandidate]) -> TumorCandidate | None:
    """The learned candidate that is the same lesion as the classical ``cand``: the one sharing most
    of its pixels, when their IoU is at least ``LEARNED_FOLLOW_IOU`` or it holds at least
    ``LEARNED_CONTAINS_FRACTION`` of ``cand``; else None."""
    shared = [np.count_nonzero(c.mask_w & cand.mask_w) for c in learned]
    k = int(np.argmax(shared))
    if shared[k] == 0:
        return None
    own = np.count_nonzero(cand.mask_w)
    union = own + np.count_nonzero(learned[k].mask_w) - shared[k]
    if shared[k] >= LEARNED_FOLLOW_IOU * union or shared[k] >= LEARNED_CONTAINS_FRACTION * own:
        return learned[k]
    return None


def _outweighed(lead: TumorCandidate, others: list[TumorCandidate]) -> bool:
    """Whether a candidate of the same echo among ``others`` has more than 1 / FOCAL_RATIO of
    ``lead``'s score: look-alikes of similar weight, the liver's own pattern rather than one focal
    lesion (False when FOCAL_RATIO is 0: no such test)."""
    return bool(FOCAL_RATIO) and any(k.dark == lead.dark and FOCAL_RATIO * k.score() > lead.score() for k in others)


def _focal_and_visible(learned: TumorCandidate, classical: list[TumorCandidate], *,
                       settings: TrackingSettings) -> bool:
    """Whether the model's lesion may be proposed with no classical candidate agreeing
    (``LEARNED_ALONE_FOCAL``): no classical candidate of the same echo that competes has more than
    1 / FOCAL_RATIO of its score, and its contrast to the tissue around it reaches
    ``LEARNED_ALONE_MIN_CONTRAST_DB`` (None: ``settings.tumor_contrast_db``)."""
    least_db = settings.tumor_contrast_db if LEARNED_ALONE_MIN_CONTRAST_DB is None else LEARNED_ALONE_MIN_CONTRAST_DB
    if learned.contrast_db < least_db:
        return False
    return not _outweighed(learned, [k for k in classical if competes(k, settings=settings)])  # (same echo: _outweighed)


def _agrees(learned: TumorCandidate, classical: TumorCandidate) -> bool:
    """Whether a classical candidate agrees with a learned one (``LEARNED_PROPOSALS = "agree"``):
    IoU >= 0.3, or (``LEARNED_AGREE_CONTAINS``) the learned one holds it - a faint lesion's
    classical candidate is often a piece of it."""
    return iou(learned.mask_w, classical.mask_w) >= 0.3 or (LEARNED_AGREE_CONTAINS and _holds(learned, classical))


def _same_lesion(a: TumorCandidate, b: TumorCandidate) -> bool:
    """Whether two candidates of consecutive frames are one lesion for a pending proposal: IoU >= 0.3,
    or (``PENDING_SAME_LESION``) one holds the other - a calcified lesion's classical candidate is
    its bright focus, the model's outline the whole."""
    return iou(a.mask_w, b.mask_w) >= 0.3 or (PENDING_SAME_LESION and (_holds(a, b) or _holds(b, a)))


def _inside_lumen(cand: TumorCandidate, vessels: list[VesselDetection]) -> bool:
    """Whether a dark candidate lies within a detected lumen (``DARK_INSIDE_LUMEN_FRACTION`` of it)
    that its outline would not take in (less than ``INNER_LUMEN_FRACTION`` of that lumen inside its
    hull): the grey interior of a lumen, not a lesion beside it."""
    own = np.count_nonzero(cand.mask_w)
    hull = None
    for v in vessels:
        if np.count_nonzero(cand.mask_w & v.mask_w) < DARK_INSIDE_LUMEN_FRACTION * own:
            continue
        hull = _hull_mask(cand.mask_w) if hull is None else hull
        if np.count_nonzero(v.mask_w & hull) < INNER_LUMEN_FRACTION * np.count_nonzero(v.mask_w):
            return True
    return False


def _grew_back(c: TumorCandidate, last_mask_w: np.ndarray, last_area_mm2: float, *,
               inner_view_w: np.ndarray | None = None) -> bool:
    """Whether ``c`` is a lost lesion's section seen whole again, however much larger than its
    last outline (``last_mask_w``, working grid): larger, solid, not cut by the view's edge (and
    within ``inner_view_w`` when given) and holding 70 % of the last outline."""
    return (c.area_mm2 > last_area_mm2 and c.solidity >= 0.8 and not c.touches_border
            and (inner_view_w is None or not np.any(c.mask_w & ~inner_view_w))
            and np.count_nonzero(c.mask_w & last_mask_w) >= 0.7 * np.count_nonzero(last_mask_w))


class Tracker:
    """Tumour and vessel tracking with distances in mm (or pixels when uncalibrated).

    Parameters
    ----------
    settings : TrackingSettings, optional
    """

    #: the learned model runs in a worker thread while the classical detector works (cv2 releases
    #: the GIL: a wall-time gain on two cores, the same output); False runs it in line
    learned_in_worker: bool = True

    def __init__(self, settings: TrackingSettings | None = None) -> None:
        self.settings = settings or TrackingSettings()
        self._learned_pool: ThreadPoolExecutor | None = None  # made on first use, shut down with the tracker
        self._learned_job: Future | None = None  # this frame's learned_frame_lumens
        self._lesion_job: Future | None = None  # this frame's lesion_probability
        self.reset()

    # -- public --------------------------------------------------------------
    def reset(self) -> None:
        """Forget all tracking state (vessel ids restart, tumour follow dropped, settings seed re-armed)."""
        self._tracks: list[VesselTrack] = []
        self._next_id = 1
        self._tumor = TumorState()
        self._shape: tuple[int, int] | None = None
        self._new_shape: tuple[int, int] | None = None
        self._new_shape_count = 0
        self._source_extent: tuple[float, float, float, float] | None = None
        self._click: tuple[float, float] | None = None
        self._settings_seed_used = self.settings.tumor_seed_px is None
        self._frames_seen = 0
        self._fov: np.ndarray | None = None
        self._fov_age = 0
        self._lumen_memory: list[list] = []  # [mask_w, frames since it last looked like a lumen]
        self._split_pending: list = []  # part centroid pairs of last frame's unconfirmed splits
        self._spacing_mm: tuple[float, ...] | None | bool = False  # False: no frame seen yet

    def seed_tumor(self, x_src: float, y_src: float) -> None:
        """Seed (or re-seed) the tumour at a point in source pixels; used on the next frame.

        Raises
        ------
        AnalysisError
            The point lies outside the last frame seen (or is not a finite number).
        """
        x, y = float(x_src), float(y_src)
        if not (np.isfinite(x) and np.isfinite(y)):
            raise AnalysisError(f"tumour seed must be finite source pixels, got ({x_src}, {y_src})")
        if self._source_extent is not None:
            x0, y0, x1, y1 = self._source_extent
            if not (x0 - 0.5 <= x <= x1 + 0.5 and y0 - 0.5 <= y <= y1 + 0.5):
                raise AnalysisError(
                    f"tumour seed ({x:.0f}, {y:.0f}) lies outside the image "
                    f"(x {x0:.0f}..{x1:.0f}, y {y0:.0f}..{y1:.0f} source pixels)")
        self._click = (x, y)

    def process(self, frame: Frame) -> FrameResult:
        """Analyse one frame. Never raises for a bad frame: see ``status`` and ``message``."""
        start = time.perf_counter()
        try:
            result = self._process(frame)
        except Exception as exc:  # a bug or an unforeseen frame: report it on this frame only
            result = self._empty(frame, "error", f"analysis failed on this frame: {type(exc).__name__}: {exc}")
        finally:  # never leave this frame's model runs behind (an error, if any, was reported above)
            jobs, self._learned_job, self._lesion_job = (self._learned_job, self._lesion_job), None, None
            for job in jobs:
                if job is not None and not job.cancel():
                    job.exception()  # waits for it to end; does not raise
        result.processing_ms = (time.perf_counter() - start) * 1e3
        return result

    # -- internals -----------------------------------------------------------
    def _learned_worker(self) -> ThreadPoolExecutor:
        if self._learned_pool is None:
            self._learned_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iousguide-learned")
            weakref.finalize(self, self._learned_pool.shutdown, wait=False)  # the thread ends with the tracker
        return self._learned_pool

    def _empty(self, frame: Frame, status: str, message: str) -> FrameResult:
        return FrameResult(frame=frame.index, t_s=frame.t_source_s, spacing_mm=frame.spacing_mm, status=status,
                           message=message, t_mono_ns=frame.t_mono_ns)

    def _check_shape(self, frame: Frame) -> str | None:
        shape = frame.shape
        if self._shape is None:
            self._shape = shape
            return None
        if shape == self._shape:
            self._new_shape, self._new_shape_count = None, 0
            return None
        if shape != self._new_shape:
            self._new_shape, self._new_shape_count = shape, 0
        self._new_shape_count += 1
        old = self._shape
        if self._new_shape_count < self.settings.size_change_confirm_frames:
            return (f"frame size {shape[1]}x{shape[0]} differs from the stream's {old[1]}x{old[0]}; "
                    "frame skipped")
        # the new size persists: restart tracking on it
        click = self._click
        self.reset()
        self._click = click
        self._settings_seed_used = True
        self._shape = shape
        return None

    def _process(self, frame: Frame) -> FrameResult:
        s = self.settings
        size_problem = self._check_shape(frame)
        if size_problem:
            return self._empty(frame, "error", size_problem)
        spacing = None if frame.spacing_mm is None else tuple(float(v) for v in frame.spacing_mm)
        if self._spacing_mm is not False and spacing != self._spacing_mm:
            # a new pixel spacing (depth changed on the scanner, another calibration) means a new
            # working grid: every kept mask and position is on the old one, so tracking restarts
            click, shape = self._click, self._shape
            self.reset()
            self._click, self._settings_seed_used, self._shape = click, True, shape
        self._spacing_mm = spacing
        rows, cols = frame.shape
        corners = np.array([frame.to_source_px(0, 0), frame.to_source_px(cols - 1, rows - 1)])
        self._source_extent = (float(corners[:, 0].min()), float(corners[:, 1].min()),
                               float(corners[:, 0].max()), float(corners[:, 1].max()))
        gray = np.ascontiguousarray(frame.gray)
        reason = check_signal(gray, settings=s)
        if reason:
            return self._empty(frame, "no_signal", reason)
        self._frames_seen += 1
        if s.learned_vessels and self.learned_in_worker:  # the model does not need the classical lumens
            from iousguide.analysis.learned import learned_frame_lumens
            self._learned_job = self._learned_worker().submit(learned_frame_lumens, gray,
                                                              spacing_mm=frame.spacing_mm, settings=s)
        # the lesion model serves proposals (LEARNED_PROPOSALS), a follow, a click or a pending
        # proposal: without proposals it is not run on other frames
        st = self._tumor
        lesion_model = s.learned_lesions and (
            LEARNED_PROPOSALS or st.mode != "none" or st.pending is not None or self._click is not None
            or (not self._settings_seed_used and (s.tumor_seed_frame is None or frame.index >= s.tumor_seed_frame)))
        if lesion_model and self.learned_in_worker:
            self._lesion_job = self._learned_worker().submit(lesion_probability, gray, spacing_mm=frame.spacing_mm,
                                                             uncalibrated_depth_mm=s.uncalibrated_depth_mm)
        calibrated = frame.spacing_mm is not None
        doppler = doppler_mask(frame.pixels, chroma_level=s.doppler_chroma_level) if frame.is_color else None
        fov = self._fov if self._fov_age < FOV_REFRESH_FRAMES else None
        prep = prepare(gray, spacing_mm=frame.spacing_mm, settings=s, doppler=doppler, field_of_view=fov)
        if fov is None or prep.valid is not fov:
            self._fov, self._fov_age = prep.valid, 0
        self._fov_age += 1
        vessels = detect_vessels_prepared(prep, settings=s)
        if SPLIT_STEADY:  # touching lumens split when seen twice, kept apart while both are tracked
            vessels, self._split_pending = split_touching_steady(
                vessels, [t.centroid_px for t in self._tracks if t.missed <= 1], self._split_pending, prep,
                settings=s)
        if s.learned_vessels:  # lumens the learned model finds and the classical detector did not
            from iousguide.analysis.learned import merge_learned_vessels
            job = self._learned_job
            vessels = merge_learned_vessels(gray, prep, vessels, settings=s, spacing_mm=frame.spacing_mm,
                                            veto_probability=s.learned_veto_probability,
                                            model_output=None if job is None else job.result())
        vessel_w = np.zeros(prep.work_shape, dtype=bool)
        vessel_frame = np.zeros(frame.shape, dtype=np.uint8)
        for v in vessels:
            vessel_w |= v.mask_w
            cv2.fillPoly(vessel_frame, [np.round(v.contour_px * 16).astype(np.int32)], 1, lineType=cv2.LINE_8,
                         shift=4)
        messages: list[str] = []

        seed_px = self._take_seed(frame, messages)
        # solid anechoic blobs: cut out of the lesion map, and kept out of the follow's template
        lumens_w = anechoic_mask(prep, settings=s, min_solidity=ANECHOIC_MIN_SOLIDITY)
        # (a lesion being followed shrinks as the image plane leaves it: smaller sections are
        # looked for then; a proposal still needs the full tumour size, plausible_auto)
        following = self._tumor.mode == "tracking"
        followed = (self._tumor.mask_w if following and (self._tumor.dark or BRIGHT_FOLLOW_HYSTERESIS) else None)
        candidates = lesion_candidates(prep, settings=s, vessel_mask_w=vessel_w, lumen_mask_w=lumens_w,
                                       min_diameter_mm=FOLLOW_MIN_DIAMETER_FRACTION * s.tumor_min_diameter_mm
                                       if following else None, follow_w=followed, follow_dark=self._tumor.dark)
        # the lower cut's components serve the follow only, when the regular ones give none
        held = [c for c in candidates if c.hysteresis]
        candidates = [c for c in candidates if not c.hysteresis]
        learned: list[TumorCandidate] = []
        if lesion_model:  # the learned lesion map's components: where the classical ones give none
            job = self._lesion_job
            prob = job.result() if job is not None else lesion_probability(
                gray, spacing_mm=frame.spacing_mm, uncalibrated_depth_mm=s.uncalibrated_depth_mm)
            learned = learned_lesion_candidates(prep, prob, settings=s, exclude_w=vessel_w | lumens_w,
                                                min_diameter_mm=FOLLOW_MIN_DIAMETER_FRACTION * s.tumor_min_diameter_mm
                                                if following else None)
        tumor_cand, tumor_label = self._follow_tumor(prep, candidates, seed_px, vessel_frame, vessels, messages,
                                                     lumens_w=lumens_w, held=held, learned=learned)
        # the model's outline for the same lesion, when it replaces the classical one: at once, or
        # (a faint dark lesion) after refinement, if the classical edge proves no surer than it
        learned_if_unsure = None
        outlines = _learned_outlines(tumor_cand) if tumor_cand is not None and not tumor_cand.learned and learned \
            else None
        if outlines:
            same = _learned_same_lesion(tumor_cand, learned)
            if same is not None and outlines == "if_edge_unsure":
                # it corrects a faint cut that follows the speckle inwards; it never shrinks the
                # lesion (a smaller outline would over-read every distance: the unsafe direction)
                if np.count_nonzero(same.mask_w) >= np.count_nonzero(tumor_cand.mask_w):
                    learned_if_unsure = replace(same, dark=tumor_cand.dark)
            elif same is not None:
                tumor_cand = replace(same, dark=tumor_cand.dark)
                self._tumor.learned_outline = tumor_cand

        tumor_geo = None
        tumor_result = None
        edge_sigma_tumor = 0.0
        measured_contour = None  # set when part of the tumour outline is assumed (frame px)
        ux, uy = prep.unit_mm
        if tumor_cand is not None:
            # dark pieces inside the lesion's outline (halo arcs, necrosis) are lesion, not lumens
            hull = _hull_mask(tumor_cand.mask_w)
            inner = [v for v in vessels if np.count_nonzero(v.mask_w & hull) >= INNER_LUMEN_FRACTION * np.count_nonzero(v.mask_w)]
            if inner:
                vessels = [v for v in vessels if not any(v is w for w in inner)]
                vessel_frame = np.zeros(frame.shape, dtype=np.uint8)
                for v in vessels:
                    cv2.fillPoly(vessel_frame, [np.round(v.contour_px * 16).astype(np.int32)], 1,
                                 lineType=cv2.LINE_8, shift=4)
            refined = None if tumor_cand.learned else refine_tumor(prep, tumor_cand, settings=s,
                                                                   vessel_mask_frame=vessel_frame.astype(bool))
            if learned_if_unsure is not None and (refined is None or refined.edge_sigma_mm >= LEARNED_EDGE_SIGMA_MM):
                tumor_cand, refined = learned_if_unsure, None
                self._tumor.learned_outline = tumor_cand
            if tumor_cand.learned:  # the model's outline; its deep part is inferred when in a shadow
                contour = _mask_contour_frame(prep, tumor_cand.mask_w, pixel_edge=True)
                if contour is not None:
                    contour = smooth_contour(contour, sigma_mm=s.tumor_contour_smoothing_mm, unit_mm=prep.unit_mm)
                    if not tumor_cand.dark and shadowed_extent(prep, tumor_cand, shadow_db=s.tumor_contrast_db) is not None:
                        measured_contour = contour[contour[:, 1] <= contour[:, 1].mean()]
                    elif LEARNED_EDGE_PLACED and not tumor_cand.dark:
                        # the model's 0.5 iso-line (0.8 mm output grid) moved to the image's edge
                        contour = place_learned_bright_edge(prep, contour, tumor_cand, settings=s,
                                                            vessel_mask_frame=vessel_frame.astype(bool))
                edge_sigma_tumor = LEARNED_EDGE_SIGMA_MM
            elif refined is not None and cv2.contourArea(refined.contour_px.astype(np.float32)) > 0:
                contour = smooth_contour(refined.contour_px, sigma_mm=s.tumor_contour_smoothing_mm,
                                         unit_mm=prep.unit_mm)
                edge_sigma_tumor = refined.edge_sigma_mm
                measured_contour = refined.measured_contour_px
            else:
                contour = _mask_contour_frame(prep, tumor_cand.mask_w)
                edge_sigma_tumor = prep.work_px_mm
            if contour is not None:
                tumor_geo = TumorGeometry(contour, unit_mm=prep.unit_mm)
                area_px = abs(cv2.contourArea(contour.astype(np.float32)))
                m = cv2.moments(contour.astype(np.float32))
                cx, cy = (m["m10"] / m["m00"], m["m01"] / m["m00"]) if m["m00"] else tuple(contour.mean(axis=0))
                area_mm2 = area_px * ux * uy if calibrated else None
                tumor_result = TumorResult(
                    centroid_px=frame.to_source_px(cx, cy),
                    contour_px=_to_source(frame, contour, max_points=160),
                    area_px=float(area_px),
                    area_mm2=area_mm2,
                    equivalent_diameter_mm=float(2 * np.sqrt(area_mm2 / np.pi)) if area_mm2 is not None else None,
                    state=tumor_label,
                    confidence=float(min(tumor_cand.contrast_db / 6.0, 1.0)),
                    assumed_edge=measured_contour is not None,
                    outline="learned" if tumor_cand.learned else "image",
                )
                if measured_contour is not None and self._tumor.mode == "tracking":
                    extent = np.zeros(prep.work_shape, np.uint8)
                    xw, yw = prep.to_work(contour[:, 0], contour[:, 1])
                    cv2.fillPoly(extent, [np.round(np.stack([xw, yw], axis=1) * 8).astype(np.int32)], 1, shift=3)
                    self._tumor.extent_w = extent.astype(bool) | tumor_cand.mask_w
                    self._tumor.extent_frames += 1
                if measured_contour is not None:
                    messages.append("tumour: deep part hidden in its acoustic shadow (calcified?); outline assumed"
                                    " round there, distances from that part flagged tumor_edge_assumed")

        if measured_contour is None or tumor_result is None:
            self._tumor.extent_frames = 0
        ids = self._assign_ids(vessels, prep)
        t_s = frame.t_source_s if frame.t_source_s is not None else self._frames_seen / 15.0
        depth_mm = s.full_scale_depth_mm if s.full_scale_depth_mm is not None else rows * uy
        vessel_results: list[VesselResult] = []
        for v, track in zip(vessels, ids):
            if tumor_geo is not None and _inside_fraction(tumor_geo, v.contour_px, (ux, uy)) >= 0.8:
                continue  # dark area within the tumour outline (halo arc, necrosis), not a vessel
            flags: list[str] = []
            diameter, jumped = track.diameter_filter.update(v.diameter_mm, t_s, jump=max(s.jump_threshold_mm,
                                                                                           0.3 * v.diameter_mm))
            if jumped and track.age > 1:
                flags.append("diameter_jump")
            vr = VesselResult(id=track.id, kind=v.kind, centroid_px=frame.to_source_px(*v.centroid_px),
                              contour_px=_to_source(frame, v.contour_px), diameter_px=float(diameter / ux),
                              diameter_mm=float(diameter) if calibrated else None)
            if tumor_geo is not None:
                pm = tumor_geo.measure(v.contour_px, contact_distance_mm=s.contact_distance_mm)
                unc = distance_uncertainty_mm(pm.distance_mm, unit_mm=prep.unit_mm,
                                              edge_sigma_tumor_mm=edge_sigma_tumor,
                                              edge_sigma_vessel_mm=v.edge_sigma_mm, full_scale_depth_mm=depth_mm,
                                              relative_fraction=s.caliper_relative_fraction,
                                              full_scale_fraction=s.caliper_full_scale_fraction)
                if track.distance_filter is None:
                    track.distance_filter = AlphaBeta(s.smoothing_alpha, s.smoothing_beta)
                dist, jumped = track.distance_filter.update(pm.distance_mm, t_s, jump=s.jump_threshold_mm + unc)
                if jumped and track.age > 1:
                    flags.append("jump")
                if measured_contour is not None and _off_measured(pm.closest_px[0], measured_contour, prep.unit_mm):
                    flags.append("tumor_edge_assumed")
                dist = max(dist, 0.0) if pm.distance_mm > 0 else 0.0
                vr.distance_px = float(dist / ux)
                vr.closest_px = (frame.to_source_px(*pm.closest_px[0]), frame.to_source_px(*pm.closest_px[1]))
                vr.contact_arc_deg = pm.contact_arc_deg if calibrated else None
                if calibrated:
                    vr.distance_mm = float(dist)
                    vr.uncertainty_mm = float(unc)
            else:
                track.distance_filter = None
            vr.flags = flags
            vessel_results.append(vr)

        status = self._tumor.mode
        if tumor_result is not None:
            status = "ok"
        elif status == "lost":
            status = "lost"
        else:
            status = "no_tumor"
        if not calibrated:
            messages.insert(0, "uncalibrated: measured in pixels, no mm values (give --spacing-mm or a preset)")
            if status != "ok":
                messages.append(f"tumour: {status.replace('_', ' ')}")
            status = "uncalibrated"
        elif status == "lost":
            messages.append("tumour lost: not visible in this frame (showing no guess)")
        distances = [v.distance_mm for v in vessel_results if v.distance_mm is not None]
        return FrameResult(
            frame=frame.index, t_s=frame.t_source_s, spacing_mm=frame.spacing_mm, status=status,
            tumor=tumor_result, vessels=vessel_results,
            min_distance_mm=min(distances) if distances else None,
            message="; ".join(messages), t_mono_ns=frame.t_mono_ns,
        )

    def _take_seed(self, frame: Frame, messages: list[str]) -> tuple[float, float] | None:
        """The seed that applies to this frame, in frame pixels (None if none or invalid)."""
        s = self.settings
        src = None
        if self._click is not None:
            src, self._click = self._click, None
        elif not self._settings_seed_used and (s.tumor_seed_frame is None or frame.index >= s.tumor_seed_frame):
            src = s.tumor_seed_px
            self._settings_seed_used = True
        if src is None:
            return None
        x, y = frame.from_source_px(*src)
        rows, cols = frame.shape
        if not (-0.5 <= x <= cols - 0.5 and -0.5 <= y <= rows - 0.5):
            messages.append(f"tumour seed ({src[0]:.0f}, {src[1]:.0f}) lies outside this frame's image: ignored")
            return None
        return x, y

    def _follow_tumor(self, prep: Prepared, candidates: list[TumorCandidate], seed_px, vessel_frame: np.ndarray,
                      vessels: list[VesselDetection], messages: list[str], *,
                      lumens_w: np.ndarray, held: list[TumorCandidate] = (),
                      learned: list[TumorCandidate] = ()) -> tuple[TumorCandidate | None, str]:
        """The tumour on this frame and how it was found ("seeded", "auto", "tracked",
        "reacquired"; "" with None). ``learned``: the learned lesion model's candidates
        (``TrackingSettings.learned_lesions``), used only where the classical ones give none."""
        s = self.settings
        st = self._tumor
        px = prep.work_px_mm
        if seed_px is not None:
            xi, yi = int(round(seed_px[0])), int(round(seed_px[1]))
            yi = min(max(yi, 0), vessel_frame.shape[0] - 1)
            xi = min(max(xi, 0), vessel_frame.shape[1] - 1)
            xw, yw = prep.to_work(*seed_px)
            xw = int(min(max(round(float(xw)), 0), prep.work_shape[1] - 1))
            yw = int(min(max(round(float(yw)), 0), prep.work_shape[0] - 1))
            in_lumen = bool(vessel_frame[yi, xi])
            if in_lumen and SEED_OVERRULES_GREY_LUMEN:
                # the click says this dark region is the tumour: a hypoechoic lesion can pass for a
                # (grey) lumen. It is taken when the lesion map, made without that "lumen", holds a
                # lesion at the click; an anechoic lumen stays out of the lesion map (lumens_w)
                kept = [v for v in vessels if not v.mask_w[yw, xw]]
                if len(kept) < len(vessels):
                    candidates = [c for c in lesion_candidates(prep, settings=s,
                                                               vessel_mask_w=lumens_mask(kept, prep.work_shape),
                                                               lumen_mask_w=lumens_w) if c.mask_w[yw, xw]]
                    in_lumen = not candidates
            if in_lumen:
                messages.append("tumour seed lies in a vessel lumen: click inside the tumour")
                self._tumor = TumorState()
                return None, ""
            chosen = None
            for c in list(candidates) + list(learned):  # (a learned one only where no classical one is)
                if c.mask_w[yw, xw]:
                    chosen = c
                    break
            if chosen is None:  # nearest candidate within 3 mm of the click
                best = None
                for c in candidates:
                    ys, xs = np.nonzero(c.mask_w[max(yw - 40, 0):yw + 41, max(xw - 40, 0):xw + 41])
                    if len(xs):
                        d = np.min(np.hypot(xs + max(xw - 40, 0) - xw, ys + max(yw - 40, 0) - yw)) * px
                        if d <= 3.0 and (best is None or d < best[0]):
                            best = (d, c)
                chosen = best[1] if best else None
            if chosen is None:
                messages.append("no lesion found at the tumour seed (no echo contrast there)")
                self._tumor = TumorState()
                return None, ""
            self._accept(chosen, auto=False)
            return chosen, "seeded"
        if st.mode == "tracking":
            best = self._merge_follow(prep, candidates, lumens_w, vessels, held=held)
            if best is None:
                # a lesion section gone black (halo, necrosis) is found as a "lumen" right where
                # the tumour was: a real lumen does not appear in place of the lesion
                best = lumen_in_place(st.mask_w, [v.mask_w for v in vessels], px_mm=px,
                                      max_area_change=s.tumor_max_area_change,
                                      contrast_db=st.score / max(np.sqrt(st.area_mm2), 1e-6))
            if best is None and learned:
                best = self._learned_near(learned, px_mm=px, gate_mm=None)
            if best is not None and st.auto:
                # an automatic follow that keeps looking like a grey lumen (it was proposed on a
                # frame where it did not) is given up: search again, report no tumour
                # (a bright follow: the posterior enhancement below such a lumen)
                lumen_like = looks_like_lumen(prep, best) if best.dark else behind_lumen(
                    prep, best, [c for c in candidates if c.dark and looks_like_lumen(prep, c)])
                st.lumen_like = st.lumen_like + 1 if lumen_like else 0
                if st.lumen_like >= LUMEN_LIKE_DROP_FRAMES:
                    self._tumor = TumorState()
                    if best.dark:
                        self._lumen_memory.append([best.mask_w, 0])
                    return None, ""
            if best is not None:
                if st.auto:
                    rival = self._rival(best, candidates, prep)
                    if rival is not None:
                        self._accept(rival, auto=True)
                        return rival, "auto"
                self._accept(best, auto=st.auto)
                return best, "tracked"
            st.mode, st.lost_frames = "lost", 1
            return None, ""
        if st.mode == "lost":
            st.lost_frames += 1
            if st.auto and LOST_RIVAL:
                # an automatic follow that was lost is not waited for where a clearly better
                # proposal persists elsewhere (the follow may have been the wrong object)
                rival = self._rival(None, candidates, prep)
                if rival is not None:
                    self._accept(rival, auto=True)
                    return rival, "auto"
            gate_mm = 10.0 + 2.0 * st.lost_frames + np.sqrt(st.area_mm2 / np.pi)
            best, best_d = None, None
            for c in candidates:
                if c.dark != st.dark:
                    continue
                ratio = max(c.area_mm2, st.area_mm2) / max(min(c.area_mm2, st.area_mm2), 1e-9)
                d = np.hypot(c.centroid_w[0] - st.centroid_w[0], c.centroid_w[1] - st.centroid_w[1]) * px
                # a lesion first seen in part (a piece of its halo) and now whole: the new
                # outline contains most of the old one, however much larger it is - but a whole
                # lesion is not cut by the edge of the view (on the real liver sweep a 72 mm wedge
                # of dark parenchyma out to the fan's edge was "re-acquired" for a 26 mm follow)
                grown = _grew_back(c, st.mask_w, st.area_mm2)
                if st.auto and AUTO_REACQUIRE_AS_PROPOSED and (
                        c.touches_border or (not c.dark and c.elongation > AUTO_BRIGHT_MAX_ELONGATION)):
                    continue
                if (ratio <= 2.5 or grown) and d <= gate_mm and c.solidity >= 0.7 and (best_d is None or d < best_d):
                    best, best_d = c, d
            if best is None and learned:
                # (a grown section must lie 2 mm inside the view: the model's outline of a region
                # the view's edge cuts may stop short of that edge)
                inner_view = cv2.erode(prep.valid.astype(np.uint8), disc(2.0 / px), borderType=cv2.BORDER_CONSTANT,
                                       borderValue=0).view(bool)
                best = self._learned_near(learned, px_mm=px, gate_mm=gate_mm, inner_view_w=inner_view)
            if best is not None:
                self._accept(best, auto=st.auto)
                return best, "reacquired"
            if st.auto and st.lost_frames > s.tumor_lost_reset_frames:
                self._tumor = TumorState()  # an automatic proposal is not waited for: search again
            return None, ""
        if not s.auto_tumor:
            return None, ""
        # hysteresis: where a proposal is pending, half its contrast keeps it alive
        plausible = [c for c in candidates if plausible_auto(c, settings=s) or (
            st.pending is not None and st.pending.dark == c.dark and iou(st.pending.mask_w, c.mask_w) >= 0.3
            and plausible_auto(c, settings=s, contrast_scale=0.5))]
        rims = [c for c in plausible if c.dark]  # (before the grey-lumen tests: BRIGHT_CENTRE_OF_DARK)
        # a grey lumen the vessel detector missed is not proposed as the tumour, nor the posterior
        # enhancement below it
        lumen_cache: dict[int, bool] = {}

        def lumen(c: TumorCandidate) -> bool:
            if id(c) not in lumen_cache:
                lumen_cache[id(c)] = looks_like_lumen(prep, c)
            return lumen_cache[id(c)]

        memory = [m for m in self._lumen_memory if m[1] < LUMEN_MEMORY_FRAMES]
        for m in memory:
            m[1] += 1
        for c in plausible:
            if c.dark and lumen(c):
                memory.append([c.mask_w, 0])
        keep = []
        for c in plausible:
            if c.dark and lumen(c):
                continue
            if c.dark and DARK_INSIDE_LUMEN_FRACTION and _inside_lumen(c, vessels):
                continue
            if c.ring and RING_CLEARS_LUMEN_MEMORY:
                # a halo closed around tissue-like echoes is a lesion: a lumen has no echoic centre,
                # so a place remembered as a grey lumen (a section where the halo's dark core showed
                # alone) is forgotten
                memory = [m for m in memory if iou(c.mask_w, m[0]) < 0.3]
            seen = [m for m in memory if c.dark and iou(c.mask_w, m[0]) >= 0.3]
            for m in seen:
                m[0] = c.mask_w  # the remembered lumen moves with the sweep
            if not seen:
                keep.append(c)
        self._lumen_memory = memory
        plausible = keep
        if BRIGHT_CENTRE_OF_DARK:
            # a target lesion's echoic centre inside its dark rim is that lesion, not another one
            # (proposed alone it outlines the centre only and rivals the rim as a second lesion);
            # and a bright blob within a dark one kept out as a remembered grey lumen is no lesion
            plausible = [c for c in plausible if c.dark or not _inside_any(c, rims)]
        if any(not c.dark for c in plausible):
            lumen_like = [c for c in candidates if c.dark and lumen(c)]
            plausible = [c for c in plausible if not behind_lumen(prep, c, lumen_like)]
        from_model = False
        if learned and LEARNED_PROPOSALS and (not plausible or LEARNED_COMPETES):
            # the learned map's lesions, held to the same size and view rules, not where a grey
            # lumen is (or lately was); confirmed over tumor_confirm_frames, never at once
            by_model = [c for c in learned if not c.touches_border
                        and c.equivalent_diameter_mm >= s.tumor_min_diameter_mm * AUTO_SIZE_FACTOR
                        and (c.dark or c.elongation <= AUTO_BRIGHT_MAX_ELONGATION)
                        and not (c.dark and lumen(c)) and not any(iou(c.mask_w, m[0]) >= 0.3 for m in memory)
                        and (LEARNED_PROPOSALS != "agree" or any(_agrees(c, k) for k in candidates)
                             or (LEARNED_PENDING_AGREES and st.pending is not None
                                 and (st.pending.learned or PENDING_SAME_LESION)
                                 and _same_lesion(c, st.pending))
                             or (LEARNED_ALONE_FOCAL and _focal_and_visible(c, candidates, settings=s)))]
            if not plausible:
                plausible, from_model = by_model, bool(by_model)
            elif by_model:
                # both detectors propose: a classical lesion the model does not see yields to a
                # stronger one both see (a faint speckle patch must not win by being first)
                # - where it is focal: no classical look-alike of the same echo, other than its own
                # pieces, has more than 1 / FOCAL_RATIO of its score (the test a classical
                # proposal passes further down)
                lead = max(plausible, key=lambda c: c.score())
                rival = max(by_model, key=lambda c: c.score())
                look_alikes = [c for c in candidates if c.dark == rival.dark
                               and (any(c is p for p in plausible) or competes(c, settings=s))
                               and _learned_same_lesion(c, [rival]) is None]
                if (_learned_same_lesion(lead, learned) is None and rival.score() > lead.score()
                        and not _outweighed(rival, look_alikes)):
                    plausible, from_model = [rival], True
        if not plausible:
            st.pending, st.pending_count = None, 0
            return None, ""
        best = max(plausible, key=lambda c: c.score())
        if st.pending is not None and st.pending.dark == best.dark and _same_lesion(st.pending, best):
            st.pending_count += 1
        else:
            st.pending_count = 1
        st.pending = best
        if from_model:
            if st.pending_count >= s.tumor_confirm_frames:
                self._accept(best, auto=True)
                return best, "auto"
            return None, ""
        # a first-frame report has no rival among the plausible candidates nor among the lesion-like
        # structures that are not proposed (cut by the edge of the view, longer than a lesion)
        rivals = plausible + [c for c in candidates if STRONG_RIVALS_UNPROPOSED and competes(c, settings=s)
                              and not any(c is p for p in plausible) and not (c.dark and lumen(c))
                              and not (BRIGHT_CENTRE_OF_DARK and not c.dark and _inside_any(c, rims))]
        if _outweighed(best, [c for c in rivals if c is not best]):
            return None, ""  # look-alikes of the same echo: the liver's own pattern, not one focal lesion
        # (with the lesion model on, a first-frame report needs it to see the lesion too)
        unseen = (s.learned_lesions and LEARNED_CONFIRMS_AT_ONCE is not None
                  and (LEARNED_CONFIRMS_AT_ONCE == "all" or not best.dark)
                  and (not learned or _learned_same_lesion(best, learned) is None))
        if st.pending_count >= s.tumor_confirm_frames or (
                strong_auto(best, rivals, settings=s) and not unseen
                and not looks_like_lumen(prep, best, enhancement_db=STRONG_MAX_ENHANCEMENT_DB, either=True)):
            self._accept(best, auto=True)
            return best, "auto"
        return None, ""

    def _merge_follow(self, prep: Prepared, candidates: list[TumorCandidate], lumens_w: np.ndarray,
                      vessels: list[VesselDetection] = (), *,
                      held: list[TumorCandidate] = ()) -> TumorCandidate | None:
        """This frame's lesion where the tumour was: the union of same-polarity candidates lying
        mostly within 2 mm of the previous outline (the lesion map may break a lesion into
        pieces; following one piece would shrink the tumour). ``lumens_w``: the frame's solid
        anechoic blobs (working grid, not modified), kept out of the template.

        A calcified lesion (its outline assumed in its own shadow on ``tumor_confirm_frames``
        consecutive frames): its bright foci change size and place from frame to frame while the
        lesion does not. When the follow above finds nothing, one bright component lying mostly
        within 2 mm of the lesion's last extent (the assumed part too) and still casting a shadow
        is the lesion, whatever its size change, completed by that extent (``SHADOWED_FOLLOW_EXTENT``).
        ``held``: the dark map's lower-cut components (``TumorCandidate.hysteresis``), tried with the
        others only when the regular candidates give no follow."""
        s, st = self.settings, self._tumor
        lumens = lumens_w.copy()
        for v in vessels:
            lumens |= v.mask_w
        best = self._merge_near(prep, candidates, st.mask_w, lumens, foci=False)
        if best is None and held:  # (the dark map's lower cut: lesion_candidates' hysteresis)
            best = self._merge_near(prep, list(candidates) + list(held), st.mask_w, lumens, foci=False)
        if best is None and st.extent_w is not None and not st.dark and st.extent_frames >= s.tumor_confirm_frames:
            best = self._merge_near(prep, candidates, st.extent_w, lumens, foci=True)
        return best

    def _merge_near(self, prep: Prepared, candidates: list[TumorCandidate], reference_w: np.ndarray,
                    lumens: np.ndarray, *, foci: bool) -> TumorCandidate | None:
        """The union of same-polarity candidates lying mostly within 2 mm of ``reference_w``
        (working grid), completed by the previous mask (:func:`follow_template`); None when its
        area changed more than ``tumor_max_area_change`` or it hardly overlaps the previous mask,
        or (``foci``) unless it is one bright component, lying mostly (``SHADOWED_FOLLOW_INSIDE``)
        within those 2 mm and shadowed below (:func:`shadowed_extent`)."""
        s, st = self.settings, self._tumor
        px = prep.work_px_mm
        # within 2 mm of the previous outline: distances computed only up to there (the same
        # values as the whole grid's distance transform, a fraction of the work)
        near = _dist_to(reference_w.astype(np.uint8), 2.0 / px) <= 2.0 / px
        parts = []
        for c in candidates:
            if c.dark != st.dark:
                continue
            area = np.count_nonzero(c.mask_w)
            if area and np.count_nonzero(c.mask_w & near) >= 0.5 * area:
                parts.append(c)
        # sections under the tumour size (FOLLOW_MIN_DIAMETER_FRACTION) stand for the lesion only
        # on their own (it shrinks as the plane leaves it): beside a full-size part they are
        # speckle or a vessel's rim, and would pull the outline towards that vessel
        full = [c for c in parts if c.equivalent_diameter_mm >= s.tumor_min_diameter_mm]
        if full:
            parts = full
        if not parts or (foci and len(parts) != 1):
            return None
        mask = np.zeros_like(st.mask_w, dtype=bool)
        for c in parts:
            mask |= c.mask_w
        if foci and SHADOWED_FOLLOW_EXTENT:
            mask = follow_template(mask, reference_w, px_mm=px, min_ratio=0.0, exclude_w=lumens,
                                   exclude_margin_mm=s.tumor_smoothing_mm)
        else:
            mask = follow_template(mask, st.mask_w, px_mm=px, exclude_w=lumens,
                                   exclude_margin_mm=s.tumor_smoothing_mm)
        area_mm2 = float(np.count_nonzero(mask)) * px * px
        ys, xs = np.nonzero(mask)
        bbox = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
        if foci:
            if np.count_nonzero(mask & near) < SHADOWED_FOLLOW_INSIDE * np.count_nonzero(mask):
                return None
            probe = TumorCandidate(mask_w=mask, bbox_w=bbox, area_mm2=area_mm2, centroid_w=(0.0, 0.0), dark=False,
                                   contrast_db=0.0, solidity=1.0, touches_border=False)
            if shadowed_extent(prep, probe, shadow_db=s.tumor_contrast_db) is None:
                return None
        else:
            ratio = max(area_mm2, st.area_mm2) / max(min(area_mm2, st.area_mm2), 1e-9)
            if ratio > s.tumor_max_area_change or iou(mask, st.mask_w) < 0.2:
                return None
        if len(parts) == 1 and np.array_equal(mask, parts[0].mask_w):
            return parts[0]
        return TumorCandidate(mask_w=mask, bbox_w=bbox, area_mm2=area_mm2,
                              centroid_w=(float(xs.mean()), float(ys.mean())), dark=st.dark,
                              contrast_db=max(c.contrast_db for c in parts),
                              solidity=min(c.solidity for c in parts), touches_border=any(c.touches_border for c in parts))

    def _learned_near(self, learned: list[TumorCandidate], *, px_mm: float, gate_mm: float | None,
                      inner_view_w: np.ndarray | None = None) -> TumorCandidate | None:
        """The learned candidate that continues the followed lesion: overlapping its last mask by
        IoU >= ``LEARNED_FOLLOW_IOU`` (``gate_mm`` None, a follow), or (a lost lesion) its centroid
        within ``gate_mm`` of the last one; the area within ``tumor_max_area_change`` of the last,
        or (lost) larger and holding 70 % of the last outline (a section that grew back; within
        ``inner_view_w``, working grid bool, when given: a whole section, not one the view cuts).
        It takes the follow's echo polarity (the model's outline holds a calcified lesion's
        shadowed part, darker than its foci), so the classical follow goes on from it. When the
        last frame reported the model's outline in place of the classical candidate, the
        comparison is with that outline (``TumorState.learned_outline``), like to like."""
        s, st = self.settings, self._tumor
        last = st.learned_outline
        last_mask, last_area_mm2, last_centroid = ((last.mask_w, last.area_mm2, last.centroid_w) if last is not None
                                                   else (st.mask_w, st.area_mm2, st.centroid_w))
        best, best_key = None, None
        for c in learned:
            ratio = max(c.area_mm2, last_area_mm2) / max(min(c.area_mm2, last_area_mm2), 1e-9)
            # (lost) a lesion last seen as a small section and now whole, as for the classical
            # candidates: it holds most of the last outline, however much larger it is
            grown = gate_mm is not None and _grew_back(c, last_mask, last_area_mm2, inner_view_w=inner_view_w)
            if ratio > s.tumor_max_area_change and not grown:
                continue
            if gate_mm is None:
                key = iou(c.mask_w, last_mask)
                if key < LEARNED_FOLLOW_IOU:
                    continue
                key = -key
            else:
                key = float(np.hypot(c.centroid_w[0] - last_centroid[0], c.centroid_w[1] - last_centroid[1])) * px_mm
                if key > gate_mm:
                    continue
            if best_key is None or key < best_key:
                best, best_key = c, key
        return None if best is None else replace(best, dark=st.dark)

    def _rival(self, current: TumorCandidate | None, candidates: list[TumorCandidate],
               prep: Prepared) -> TumorCandidate | None:
        """A clearly better automatic proposal elsewhere, persisting over the confirm frames; never
        a place that looks (or lately looked) like a grey lumen, which is not proposed either.
        ``current`` None: the follow is lost, compared with its last mask and score."""
        s, st = self.settings, self._tumor
        cur_mask = st.mask_w if current is None else current.mask_w
        cur_score = st.score if current is None else current.score()
        plausible = [c for c in candidates if c is not current and plausible_auto(c, settings=s)
                     and iou(c.mask_w, cur_mask) < 0.1]
        plausible = [c for c in plausible if not c.dark or not (
            looks_like_lumen(prep, c) or any(iou(c.mask_w, m[0]) >= 0.3 for m in self._lumen_memory))]
        if not plausible:
            st.rival, st.rival_count = None, 0
            return None
        best = max(plausible, key=lambda c: c.score())
        if best.score() < 1.5 * cur_score:
            st.rival, st.rival_count = None, 0
            return None
        if st.rival is not None and iou(st.rival.mask_w, best.mask_w) >= 0.3:
            st.rival_count += 1
        else:
            st.rival_count = 1
        st.rival = best
        return best if st.rival_count >= s.tumor_confirm_frames + 1 else None

    def _accept(self, c: TumorCandidate, *, auto: bool) -> None:
        st = self._tumor
        st.auto = auto
        st.score = c.score()
        if st.mode != "tracking" or st.mask_w is None or iou(st.mask_w, c.mask_w) < 0.1:
            st.rival, st.rival_count = None, 0
        st.mode = "tracking"
        st.mask_w = c.mask_w
        st.area_mm2 = c.area_mm2
        st.dark = c.dark
        st.centroid_w = c.centroid_w
        st.lost_frames = 0
        st.pending, st.pending_count = None, 0
        st.extent_w = None  # set again by _process when this frame's outline is assumed in part
        st.learned_outline = None  # set again by _process when the model's outline replaces c's

    def _assign_ids(self, vessels: list[VesselDetection], prep: Prepared) -> list[VesselTrack]:
        """Match detections to tracks (Hungarian on centroid distance in mm plus half the diameter
        difference, plus a young track's cost), gated by the centroid distance or by the overlap
        of the outlines (TRACK_OVERLAP_FRACTION). Tracks unmatched for longer than
        settings.track_max_missed_frames are dropped, except established ones still in the field
        of view (TRACK_KEEP_IN_VIEW_FRAMES). Updates the tracks; returns one per detection."""
        s = self.settings
        ux, uy = prep.unit_mm
        tracks = self._tracks
        n, m = len(tracks), len(vessels)
        assigned: list[VesselTrack | None] = [None] * m
        outlines = [_thin_outline(v.contour_px) for v in vessels]
        axes = [_band_axis(o, (ux, uy)) if v.long_axis else None for v, o in zip(vessels, outlines)]
        if n and m:
            cost = np.full((n, m), 1e6)
            boxes = [(*o.min(axis=0).tolist(), *o.max(axis=0).tolist()) for o in outlines]  # x0, y0, x1, y1
            for i, t in enumerate(tracks):
                px_ = t.centroid_px[0] + t.velocity_px[0]
                py_ = t.centroid_px[1] + t.velocity_px[1]
                # where the track's outline was, and moved by its velocity (bounding boxes)
                shifts = []
                if t.outline_px is not None:
                    tx0, ty0 = t.outline_px.min(axis=0).tolist()
                    tx1, ty1 = t.outline_px.max(axis=0).tolist()
                    shifts = [(0.0, 0.0)] + ([t.velocity_px] if t.velocity_px != (0.0, 0.0) else [])
                for j, v in enumerate(vessels):
                    d = np.hypot((v.centroid_px[0] - px_) * ux, (v.centroid_px[1] - py_) * uy)
                    if TRACK_GATE_FROM_LAST:
                        d = min(d, np.hypot((v.centroid_px[0] - t.centroid_px[0]) * ux,
                                            (v.centroid_px[1] - t.centroid_px[1]) * uy))
                    axis = axes[j] or t.band_axis
                    if axis is not None and BAND_ALONG_GATE_FRACTION < 1.0:
                        d = min(d, *(_band_distance_mm(v.centroid_px, p, axis, (ux, uy))
                                     for p in ((px_, py_), t.centroid_px)))
                    gate = max(s.track_gate_mm, 0.75 * max(v.diameter_mm, t.diameter_mm))
                    x0, y0, x1, y1 = boxes[j]
                    if d <= gate or any(
                            tx0 + dx < x1 and x0 < tx1 + dx and ty0 + dy < y1 and y0 < ty1 + dy
                            and _overlap_fraction(t.outline_px + (dx, dy), outlines[j]) >= TRACK_OVERLAP_FRACTION
                            for dx, dy in shifts):
                        # a young track (a fragment seen once beside an established one) pays
                        # for its youth, so two tracks do not take turns on one lumen
                        cost[i, j] = d + 0.5 * abs(v.diameter_mm - t.diameter_mm) + YOUNG_TRACK_COST_MM / max(t.age, 1)
            rows_, cols_ = linear_sum_assignment(cost)
            for i, j in zip(rows_, cols_):
                if cost[i, j] < 1e6:
                    assigned[j] = tracks[i]
        used = {id(t) for t in assigned if t is not None}
        dropped: set[int] = set()
        for t in tracks:
            if id(t) not in used:
                t.missed += 1
                # its place (within half a diameter of the centre of a lumen of similar size that
                # an older track follows) is taken: it was a duplicate (a fragment of that lumen)
                # (not a lumen last seen split from a touching neighbour: unsplit, that one covers it)
                for j, v in enumerate(vessels):
                    owner = assigned[j]
                    if owner is not None and owner.age > t.age and not t.split_part \
                            and 0.5 * v.diameter_mm <= t.diameter_mm <= 2.0 * v.diameter_mm \
                            and np.hypot((t.centroid_px[0] - v.centroid_px[0]) * ux,
                                         (t.centroid_px[1] - v.centroid_px[1]) * uy) <= 0.5 * v.diameter_mm:
                        t.missed = s.track_max_missed_frames + 1
                        dropped.add(id(t))
                        break
        before = {id(t): t.centroid_px for t in assigned if t is not None}
        for j, v in enumerate(vessels):
            t = assigned[j]
            if t is None:
                t = VesselTrack(id=self._next_id, centroid_px=v.centroid_px, diameter_mm=v.diameter_mm,
                                diameter_filter=AlphaBeta(s.smoothing_alpha, s.smoothing_beta))
                self._next_id += 1
                tracks.append(t)
                assigned[j] = t
            else:
                vx = v.centroid_px[0] - t.centroid_px[0]
                vy = v.centroid_px[1] - t.centroid_px[1]
                clean = (t.missed == 0 and t.outline_px is not None
                         and abs(v.diameter_mm - t.diameter_mm)
                         <= TRACK_CLEAN_MOVE_DIAMETER_FRACTION * max(v.diameter_mm, t.diameter_mm)
                         and _overlap_fraction(t.outline_px + (vx, vy), outlines[j], of="larger")
                         >= TRACK_CLEAN_MOVE_OVERLAP)
                t.velocity_px = (0.5 * vx + 0.5 * t.velocity_px[0], 0.5 * vy + 0.5 * t.velocity_px[1]) \
                    if clean else (0.0, 0.0)
                t.centroid_px = v.centroid_px
                t.diameter_mm = v.diameter_mm
                if t.missed > s.track_max_missed_frames:
                    # back after a long absence (kept in view, TRACK_KEEP_IN_VIEW_FRAMES): same id,
                    # but its smoothed diameter and distance start afresh, never blended with values
                    # of seconds ago
                    t.diameter_filter = AlphaBeta(s.smoothing_alpha, s.smoothing_beta)
                    t.distance_filter = None
                t.missed = 0
            t.split_part = v.split_part
            t.outline_px = outlines[j]
            t.band_axis = axes[j]
            t.hidden = 0
            t.age += 1
        if SPLIT_STEADY:
            self._keep_hidden(tracks, vessels, assigned, before)
        self._tracks = [t for t in tracks if t.missed <= s.track_max_missed_frames or (
            id(t) not in dropped and t.age >= TRACK_KEEP_MIN_AGE and t.missed <= TRACK_KEEP_IN_VIEW_FRAMES
            and _in_view(prep, t.centroid_px))]
        return assigned  # type: ignore[return-value]

    @staticmethod
    def _keep_hidden(tracks: list[VesselTrack], vessels: list[VesselDetection], assigned: list,
                     before: dict) -> None:
        """A track last seen as a split part, unmatched now, whose centroid lies inside a lumen
        that another track follows (its pair reported merged) is kept (``missed`` held at 1, for
        at most SPLIT_HIDDEN_MAX_FRAMES frames) and moved with that lumen, so that its id comes
        back when the pair is split again. Modifies the tracks in place."""
        for t in tracks:
            if t.missed == 0 or not t.split_part or t.hidden >= SPLIT_HIDDEN_MAX_FRAMES:
                continue
            point = (float(t.centroid_px[0]), float(t.centroid_px[1]))
            for j, v in enumerate(vessels):
                host = assigned[j]
                if host is t or v.split_part or cv2.pointPolygonTest(
                        np.asarray(v.contour_px, np.float32).reshape(-1, 1, 2), point, False) < 0:
                    continue
                old = before.get(id(host), v.centroid_px)
                t.centroid_px = (t.centroid_px[0] + v.centroid_px[0] - old[0],
                                 t.centroid_px[1] + v.centroid_px[1] - old[1])
                t.velocity_px = (0.0, 0.0)
                t.missed = 1
                t.hidden += 1
                break


#: A tumour seed (a click) inside a detected lumen is taken as the tumour when the lesion map made
#: without that lumen holds a lesion at the click (``Tracker._follow_tumor``); otherwise the seed
#: is refused ("lies in a vessel lumen"). A hypoechoic lesion of 8-12 mm (synthetic discs at 0.2-0.5
#: of the tissue amplitude) was read as a grey "hepatic vein" on the frame of the click, the seed
#: refused, and the lesion proposed on its own only a frame or two later.
SEED_OVERRULES_GREY_LUMEN = True


def _in_view(prep: Prepared, point_px) -> bool:
    """Whether a frame-pixel point lies in the image's field of view (``prep.valid``; True when
    the preparation has none)."""
    valid = getattr(prep, "valid", None)
    if valid is None:
        return True
    xw, yw = prep.to_work(float(point_px[0]), float(point_px[1]))
    xi, yi = int(round(float(xw))), int(round(float(yw)))
    return bool(0 <= yi < valid.shape[0] and 0 <= xi < valid.shape[1] and valid[yi, xi])


def _band_axis(outline_px: np.ndarray, unit_mm: tuple[float, float]) -> tuple[float, float] | None:
    """Unit vector (x, y; mm space) along the long axis of a closed outline (frame px, (N, 2)),
    from the second moments of the polygon; None for a degenerate outline."""
    m = cv2.moments((np.asarray(outline_px, np.float64) * unit_mm).astype(np.float32))
    if m["m00"] == 0:
        return None
    angle = 0.5 * np.arctan2(2.0 * m["mu11"], m["mu20"] - m["mu02"])
    return float(np.cos(angle)), float(np.sin(angle))


def _band_distance_mm(a_px, b_px, axis: tuple[float, float], unit_mm: tuple[float, float]) -> float:
    """Distance (mm) between two frame-pixel points with its component along ``axis`` (a unit
    vector in mm space) counted at BAND_ALONG_GATE_FRACTION."""
    dx, dy = (a_px[0] - b_px[0]) * unit_mm[0], (a_px[1] - b_px[1]) * unit_mm[1]
    along = dx * axis[0] + dy * axis[1]
    across = -dx * axis[1] + dy * axis[0]
    return float(np.hypot(BAND_ALONG_GATE_FRACTION * along, across))


def _thin_outline(contour_px: np.ndarray, *, max_points: int = 48) -> np.ndarray:
    """A closed outline (N, 2) with every k-th vertex, at most ``max_points`` (float64, frame px):
    enough for area fractions, and cheap to rasterise."""
    c = np.asarray(contour_px, dtype=np.float64).reshape(-1, 2)
    return c[:: int(np.ceil(len(c) / max_points))] if len(c) > max_points else c


def _overlap_fraction(a_px: np.ndarray, b_px: np.ndarray, *, of: str = "smaller", cells: int = 64) -> float:
    """Overlap of two closed outlines: their common area over the smaller (or larger) one's area.

    Parameters
    ----------
    a_px, b_px : ndarray (N, 2), (M, 2) float
        Closed outlines (x, y), frame pixels.
    of : {"smaller", "larger"}
        The area the common area is divided by (``"larger"``: both outlines nearly the same).
    cells : int
        The common area is counted on a grid of this many cells along each side of the box where
        the two outlines' boxes meet (a fraction: the same for any pixel size or aspect).

    Returns
    -------
    float in [0, 1]; 0 when the outlines' boxes do not meet.
    """
    a = np.asarray(a_px, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b_px, dtype=np.float64).reshape(-1, 2)
    if len(a) < 3 or len(b) < 3:
        return 0.0
    lo = np.maximum(a.min(axis=0), b.min(axis=0))
    hi = np.minimum(a.max(axis=0), b.max(axis=0))
    if np.any(hi <= lo):
        return 0.0
    areas = (abs(cv2.contourArea(a.astype(np.float32))), abs(cv2.contourArea(b.astype(np.float32))))
    if min(areas) <= 0:
        return 0.0
    scale = cells / (hi - lo)  # cells per pixel along x and y
    ma = np.zeros((cells, cells), np.uint8)
    mb = np.zeros((cells, cells), np.uint8)
    # cell (k, l) is counted when its centre, lo + ((k, l) + 0.5) / scale, lies inside
    cv2.fillPoly(ma, [np.round(((a - lo) * scale - 0.5) * 16).astype(np.int32)], 1, shift=4)
    cv2.fillPoly(mb, [np.round(((b - lo) * scale - 0.5) * 16).astype(np.int32)], 1, shift=4)
    common = float(np.count_nonzero(ma & mb)) / float(scale[0] * scale[1])
    return float(min(common / (min(areas) if of == "smaller" else max(areas)), 1.0))


def _hull_mask(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros(mask.shape, np.uint8)
    if contours:
        cv2.fillConvexPoly(out, cv2.convexHull(np.vstack(contours)), 1)
    return out.astype(bool)


def _inside_fraction(tumor: TumorGeometry, contour_px: np.ndarray, unit_mm: tuple[float, float]) -> float:
    """Fraction of a vessel boundary inside the tumour outline (or within 0.3 mm of it)."""
    pts = np.asarray(contour_px)[:: max(len(contour_px) // 24, 1)] * np.asarray(unit_mm)
    inside = tumor.inside(pts)
    dist, _ = tumor._tree.query(pts)
    return float(np.mean(inside | (dist <= 0.3)))


def _to_source(frame: Frame, contour: np.ndarray, *, max_points: int = 96) -> np.ndarray:
    """Frame-pixel contour -> source pixels, thinned to at most ``max_points`` vertices for output
    (measurements use the dense contour)."""
    step = int(np.ceil(len(contour) / max_points)) if len(contour) > max_points else 1
    contour = contour[::step]
    xs, ys = frame.to_source_px(contour[:, 0], contour[:, 1])
    return np.stack([np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)], axis=1)


def _mask_contour_frame(prep: Prepared, mask_w: np.ndarray, *, pixel_edge: bool = False) -> np.ndarray | None:
    """Outline of the largest component of a working-grid mask, frame pixels (x, y). ``pixel_edge``:
    on the mask's pixel edges (the traced pixel centres moved out by half a pixel), as a mask
    cut from a map at its boundary level has its boundary there."""
    c = largest_contour(mask_w.astype(np.uint8))
    if c is None:
        return None
    if pixel_edge:
        c = _shift_outward(c, 0.5)
    x, y = prep.to_frame(c[:, 0], c[:, 1])
    return np.stack([x, y], axis=1)


#: a tumour point further than this from the measured outline lies on its assumed part
ASSUMED_EDGE_TOLERANCE_MM = 0.5


def _off_measured(point_px, measured_contour_px: np.ndarray, unit_mm: tuple[float, float]) -> bool:
    """Whether a tumour outline point (frame px) lies off the measured part of the outline
    (the outline was completed by an assumption beyond it) by more than ASSUMED_EDGE_TOLERANCE_MM."""
    ux, uy = unit_mm
    pts = np.asarray(measured_contour_px, dtype=np.float64) * (ux, uy)
    p = np.asarray(point_px, dtype=np.float64) * (ux, uy)
    a, b = pts, np.roll(pts, -1, axis=0)
    ab = b - a
    t = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-12), 0.0, 1.0)
    gap_mm = float(np.min(np.hypot(*(a + t[:, None] * ab - p).T)))
    return gap_mm > ASSUMED_EDGE_TOLERANCE_MM


def _inside_any(candidate: TumorCandidate, others: list[TumorCandidate]) -> bool:
    """Whether ``BRIGHT_CENTRE_INSIDE`` of a candidate's area (working grid) lies within one of
    ``others``."""
    area = np.count_nonzero(candidate.mask_w)
    return bool(area) and any(np.count_nonzero(candidate.mask_w & o.mask_w) >= BRIGHT_CENTRE_INSIDE * area
                              for o in others)
