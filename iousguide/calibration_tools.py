"""Calibration helpers for setting up a capture: find the image region, read the depth ruler.

Pure functions (no CLI, no Qt, inputs never modified). ``iousguide calibrate``
(:mod:`iousguide.commands.calibrate`) wraps them and writes presets.

* :func:`detect_region` — where the ultrasound image is inside a screen capture:
  pixels that change over time vs the static interface (several frames), or a
  brightness heuristic for a single still image.
* :func:`detect_ruler` — mm per pixel from the depth ruler's tick marks: small
  bright marks on a straight line at a regular spacing (vertical beside the
  image, or along a fan edge); :func:`detect_rulers` gives the best vertical,
  horizontal and oblique one, so non-square capture pixels can be measured.
* :func:`spacing_from_points` — mm per pixel from two points a known distance apart.
* :func:`calibration_from_dicom` — the calibration a DICOM file's regions give.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from iousguide.calibration import Calibration
from iousguide.errors import AnalysisError, CalibrationError

#: localisation error of a tick centre that is drawn at whole pixels: uniform +-0.5 px -> sd 1/sqrt(12)
PIXEL_QUANTISATION_SD_PX = 1.0 / np.sqrt(12.0)


# -- results -----------------------------------------------------------------------
@dataclass(frozen=True)
class RegionResult:
    """Where the ultrasound image lies in a captured frame.

    Attributes
    ----------
    crop_px : (x, y, width, height)
        Bounding box of the image region, source pixels.
    method : str
        ``"temporal"`` (pixels varying over frames) or ``"brightness"`` (single-image fallback).
    edge_uncertainty_px : float
        Largest shift of any box edge when the detection threshold is halved or
        doubled: how sharply the region stands out.
    frames_used : int
    mask : ndarray, shape (rows, cols), bool
        The cleaned-up region mask (largest component).
    notes : list of str
    """

    crop_px: tuple[int, int, int, int]
    method: str
    edge_uncertainty_px: float
    frames_used: int
    mask: np.ndarray = field(repr=False)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RulerResult:
    """Depth ruler found in an image.

    Attributes
    ----------
    spacing_mm : float
        Isotropic mm per pixel derived from the ruler.
    spacing_se_mm : float
        Standard error of ``spacing_mm`` (mm/px) from the least-squares fit of the
        tick positions (residual sd, at least the 1/sqrt(12) px quantisation of a
        tick drawn at whole pixels).
    period_px : float
        Distance between neighbouring ticks along the ruler, pixels.
    period_se_px : float
    ticks_px : ndarray, shape (n, 2), float
        (x, y) centres of the ticks used, ordered along the ruler.
    tick_index : ndarray, shape (n,), int
        Lattice index of each tick (gaps = missed ticks).
    residual_sd_px : float
        Residual sd of the tick positions about the fitted lattice.
    direction : (float, float)
        Unit vector along the ruler (x, y).
    """

    spacing_mm: float
    spacing_se_mm: float
    period_px: float
    period_se_px: float
    ticks_px: np.ndarray = field(repr=False)
    tick_index: np.ndarray = field(repr=False)
    residual_sd_px: float
    direction: tuple[float, float]


@dataclass(frozen=True)
class PointsResult:
    """Spacing from two points: ``spacing_mm`` mm/px, ``spacing_se_mm`` its error, ``distance_px``."""

    spacing_mm: float
    spacing_se_mm: float
    distance_px: float


# -- helpers -----------------------------------------------------------------------
def _to_grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(image.astype(np.uint8, copy=False)), cv2.COLOR_RGB2GRAY)
    if image.ndim == 2:
        return image.astype(np.uint8, copy=False)
    raise AnalysisError(f"expected a (rows, cols) or (rows, cols, 3) image, got shape {image.shape}")


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill regions of ``mask`` not connected to the border (mask: uint8 0/1)."""
    padded = np.pad(mask, 1).astype(np.uint8)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = flood == 0
    padded[holes] = 1
    return padded[1:-1, 1:-1]


def _largest_component_box(mask: np.ndarray) -> tuple[tuple[int, int, int, int] | None, np.ndarray]:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None, np.zeros(mask.shape, bool)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[best, :4])
    return (x, y, w, h), labels == best


def _kernel(size: int) -> np.ndarray:
    size = max(int(size) | 1, 3)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


#: the static part of a capture is assumed to cover at least this fraction of the frame
STATIC_FRACTION = 0.2


def _change_threshold(std: np.ndarray, *, min_std: float) -> float:
    """Temporal std (grey levels) above which a pixel is 'changing'.

    The capture's noise floor is the std at the ``STATIC_FRACTION`` quantile (the
    static interface, black borders and corners cover at least that much of a
    screen); threshold = 3 x floor + ``min_std``. A median would sit inside the
    image when the image fills most of the frame (a fan cropped from a scanner).
    """
    return 3.0 * float(np.quantile(std, STATIC_FRACTION)) + min_std


def _region_from_score(score: np.ndarray, threshold: float, *, close_px: int, open_px: int):
    mask = (score > threshold).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _kernel(close_px))
    mask = _fill_holes(mask)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _kernel(open_px))
    return _largest_component_box(mask)


# -- (a) image region ----------------------------------------------------------------
def detect_region(
    frames: Sequence[np.ndarray],
    *,
    min_std: float = 0.5,
    close_fraction: float = 0.03,
    open_fraction: float = 0.02,
    dark_level: float = 4.0,
    single_open_fraction: float = 0.06,
) -> RegionResult:
    """Find the ultrasound image inside captured screen frames.

    Parameters
    ----------
    frames : sequence of ndarray, each (rows, cols) uint8 or (rows, cols, 3) uint8 RGB
        Frames of one capture, all the same size (sample them over a few seconds
        of live imaging). One frame -> brightness heuristic.
    min_std : float
        Lowest temporal standard deviation (grey levels) that counts as "changing".
        The threshold used is ``3 * q20(std) + min_std``: at least a fifth of a
        screen is static, so the 20 % quantile of the std is the capture's noise floor.
    close_fraction, open_fraction : float
        Morphological closing / opening kernel sizes as a fraction of the smaller
        image side (closing bridges dark anechoic areas inside the image; opening
        removes thin changing text such as a frame counter or a clock).
    dark_level : float
        Single-image heuristic: grey levels above the screen's black level (5th
        percentile, after a box blur of 2 % of the image side) from which a pixel
        counts as part of the image; relative, so a limited-range capture (black
        = 16) behaves like a full-range one.
    single_open_fraction : float
        Single-image heuristic: opening kernel (fraction of the smaller side) that
        removes text, rulers and thin graphics.

    Returns
    -------
    RegionResult
        ``crop_px`` (x, y, width, height) in pixels.

    Raises
    ------
    AnalysisError
        No frames, frames of different sizes, or nothing that looks like an image.

    Notes
    -----
    Temporal method: per-pixel standard deviation over the frames, thresholded
    at ``3 * q20 + min_std`` (see :func:`_change_threshold`); closing, hole filling, opening; bounding box of
    the largest component. A fan (sector/convex) image gives the box around the
    fan. When fewer than 1 % of the pixels change (frozen image), or for a
    single frame, the brightness heuristic (largest solid non-black area after
    an opening wider than a character) is used and a note says so; it cannot
    tell a bright interface panel from the image (measured IoU 0.4-0.5 on the
    DICOM screens, against 0.94 for the temporal method).
    """
    if len(frames) == 0:
        raise AnalysisError("detect_region needs at least one frame")
    greys = [_to_grey(f) for f in frames]
    shape = greys[0].shape
    if any(g.shape != shape for g in greys):
        raise AnalysisError("detect_region: frames differ in size")
    side = min(shape)
    close_px = max(int(round(side * close_fraction)), 3)
    open_px = max(int(round(side * open_fraction)), 3)
    notes: list[str] = []
    if len(greys) >= 2:
        score = np.stack(greys).astype(np.float32).std(axis=0)
        threshold = _change_threshold(score, min_std=min_std)
        changing = float(np.mean(score > threshold))
        if changing >= 0.01:
            box, mask = _region_from_score(score, threshold, close_px=close_px, open_px=open_px)
            if box is not None:
                uncertainty = _edge_uncertainty(score, threshold, box, close_px=close_px, open_px=open_px)
                return RegionResult(box, "temporal", uncertainty, len(greys), mask, notes)
        notes.append(
            f"only {changing * 100:.1f} % of pixels change over {len(greys)} frames (frozen image?): "
            "used the single-image heuristic"
        )
    else:
        notes.append("single still image: used the brightness heuristic (a clip of live imaging is more reliable)")
    # one image: the ultrasound image is the largest solid non-black area; text,
    # rulers and thin graphics vanish in an opening wider than a character
    window = max(int(round(side * 0.02)) | 1, 3)
    score = cv2.blur(greys[0].astype(np.float32), (window, window))
    threshold = float(np.percentile(score, 5)) + dark_level  # above the screen's black level
    single_open = max(int(round(side * single_open_fraction)), 5)
    box, mask = _region_from_score(score, threshold, close_px=close_px, open_px=single_open)
    if box is None:
        raise AnalysisError("no ultrasound image region found (no changing or bright area)")
    uncertainty = _edge_uncertainty(score, threshold, box, close_px=close_px, open_px=single_open)
    return RegionResult(box, "brightness", uncertainty, 1, mask, notes)


def _edge_uncertainty(score, threshold, box, *, close_px, open_px) -> float:
    shifts = []
    for factor in (0.5, 2.0):
        other, _ = _region_from_score(score, threshold * factor, close_px=close_px, open_px=open_px)
        if other is None:
            continue
        x, y, w, h = box
        ox, oy, ow, oh = other
        shifts.append(max(abs(x - ox), abs(y - oy), abs(x + w - ox - ow), abs(y + h - oy - oh)))
    return float(max(shifts)) if shifts else float("nan")


def box_iou(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection over union of two (x, y, width, height) boxes (pixels)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


# -- (b) depth ruler -----------------------------------------------------------------------
def find_tick_candidates(
    image: np.ndarray,
    *,
    static_mask: np.ndarray | None = None,
    max_tick_px: int = 10,
    min_contrast: float = 50.0,
    max_background: float = 60.0,
) -> np.ndarray:
    """Centres of small bright isolated marks (candidate ruler ticks).

    Parameters
    ----------
    image : ndarray, (rows, cols) uint8 or (rows, cols, 3) uint8 RGB
    static_mask : ndarray of bool, shape (rows, cols), optional
        Only marks inside it are kept (e.g. pixels that do not change over time).
    max_tick_px : int
        Largest tick extent in either direction, pixels.
    min_contrast : float
        Grey levels the mark must exceed its local background (white top-hat).
    max_background : float
        Brightest local background a tick may sit on (ticks are drawn on dark).

    Returns
    -------
    ndarray, shape (n, 2), float64
        (x, y) centroids in pixels.
    """
    grey = _to_grey(image)
    size = max_tick_px + 1 + (max_tick_px + 1) % 2
    background = cv2.morphologyEx(grey, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (size, size)))
    tophat = grey.astype(np.int16) - background.astype(np.int16)
    mask = (tophat > min_contrast) & (background < max_background)
    if static_mask is not None:
        mask &= np.asarray(static_mask, bool)
    n, _, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = [
        i
        for i in range(1, n)
        if stats[i, cv2.CC_STAT_WIDTH] <= max_tick_px
        and stats[i, cv2.CC_STAT_HEIGHT] <= max_tick_px
        and stats[i, cv2.CC_STAT_AREA] <= max_tick_px * max_tick_px
    ]
    return centroids[keep].astype(np.float64) if keep else np.zeros((0, 2))


def _lattice_fit(s: np.ndarray, period: float, origin: float, *, tolerance: float = 0.2, max_gap: int = 2):
    """Ticks of positions ``s`` (along the line) on the lattice origin + n * period.

    Returns (indices into s, lattice numbers) of the longest run whose gaps are <= max_gap.
    """
    n = np.rint((s - origin) / period).astype(int)
    residual = s - origin - n * period
    ok = np.abs(residual) < tolerance * period
    best: dict[int, int] = {}
    for i in np.flatnonzero(ok):
        if n[i] not in best or abs(residual[i]) < abs(residual[best[n[i]]]):
            best[n[i]] = i
    if not best:
        return np.zeros(0, int), np.zeros(0, int)
    numbers = np.array(sorted(best))
    runs, start = [], 0
    for k in range(1, len(numbers) + 1):
        if k == len(numbers) or numbers[k] - numbers[k - 1] > max_gap + 1:
            runs.append(numbers[start:k])
            start = k
    run = max(runs, key=len)
    return np.array([best[v] for v in run]), run


def detect_ruler(
    image: np.ndarray,
    *,
    tick_mm: float | None = None,
    depth_mm: float | None = None,
    static_mask: np.ndarray | None = None,
    min_ticks: int = 5,
    min_period_px: float = 8.0,
    max_period_px: float | None = None,
    line_tolerance_px: float = 1.5,
    neighbours: int = 8,
    max_residual_fraction: float = 0.05,
    orientation: str = "any",
) -> RulerResult:
    """mm per pixel from a depth ruler's tick marks.

    Parameters
    ----------
    image : ndarray, (rows, cols) uint8 or (rows, cols, 3) uint8 RGB
        A captured frame (a temporal median of several frames works best: the
        ruler is static, the image is not).
    tick_mm : float, optional
        Distance between neighbouring ticks in mm (e.g. 10 for 1 cm ticks).
    depth_mm : float, optional
        Distance in mm from the first to the last tick found (the ruler's extent).
        Exactly one of ``tick_mm`` / ``depth_mm``.
    static_mask : ndarray of bool (rows, cols), optional
        Restrict tick candidates to these pixels (e.g. the static interface).
    min_ticks : int
        Fewest ticks accepted as a ruler.
    min_period_px, max_period_px : float
        Range of tick spacings searched, pixels (default 8 px: below that,
        dotted calliper lines and text look like rulers, and a 1 cm tick period
        under 8 px would mean a depth of over 50 cm on a 480-row image; default
        max: a quarter of the larger image side).
    line_tolerance_px : float
        Largest distance of a tick from the ruler line, pixels.
    neighbours : int
        Each candidate pairs with this many nearest candidates to propose lines.
    max_residual_fraction : float
        Largest residual sd of the tick positions about the lattice, as a fraction
        of the period (drawn rulers: about 1-3 %).
    orientation : str
        ``"any"``, or only rulers that are ``"vertical"``, ``"horizontal"`` or
        ``"oblique"`` (e.g. along a fan edge).

    Returns
    -------
    RulerResult

    Raises
    ------
    CalibrationError
        Neither or both of tick_mm / depth_mm, or a non-positive value.
    AnalysisError
        No regular row of ticks was found.

    Notes
    -----
    Candidates are small bright marks on a dark background (white top-hat).
    Every candidate and each of its nearest neighbours propose a line and a spacing; candidates
    within ``line_tolerance_px`` of the line whose positions along it fall on
    the lattice ``a + n * period`` (within 20 % of a period, gaps of up to two
    missed ticks) are counted; the longest ruler wins (then the most ticks, then
    the lowest residual): a depth ruler spans the image, calliper dots do not. The spacing is then refined by least squares
    ``s_k = a + P * n_k`` and its standard error is
    ``sigma / sqrt(sum((n - mean n)^2))`` with sigma = max(residual sd, 1/sqrt(12) px).
    """
    if (tick_mm is None) == (depth_mm is None):
        raise CalibrationError("give exactly one of --tick-mm (distance between ticks) or --depth-mm (ruler extent)")
    known = float(tick_mm if tick_mm is not None else depth_mm)
    if not (np.isfinite(known) and known > 0):
        raise CalibrationError(f"ruler distance must be a positive number of mm, got {known!r}")
    grey = _to_grey(image)
    found = _search_rulers(
        grey,
        static_mask=static_mask,
        min_ticks=min_ticks,
        min_period_px=min_period_px,
        max_period_px=max_period_px,
        line_tolerance_px=line_tolerance_px,
        neighbours=neighbours,
        max_residual_fraction=max_residual_fraction,
    )
    if orientation != "any":
        if orientation not in ORIENTATIONS:
            raise AnalysisError(f"orientation must be 'any' or one of {ORIENTATIONS}, got {orientation!r}")
        found = {k: v for k, v in found.items() if k == orientation}
    if not found:
        where = "" if orientation == "any" else f" {orientation}"
        raise AnalysisError(f"no{where} depth ruler found: no {min_ticks} or more regularly spaced marks on a line")
    _, points, direction, numbers = max(found.values(), key=lambda entry: entry[0])
    return _ruler_result(points, numbers, direction, tick_mm=tick_mm, depth_mm=depth_mm, min_ticks=min_ticks)


#: ruler orientation classes (direction within ~25 degrees of the axis, else oblique)
ORIENTATIONS = ("vertical", "horizontal", "oblique")


def _orientation(direction: np.ndarray) -> str:
    if abs(direction[1]) >= 0.9:
        return "vertical"
    if abs(direction[0]) >= 0.9:
        return "horizontal"
    return "oblique"


def detect_rulers(image: np.ndarray, **options: Any) -> dict[str, RulerResult]:
    """The best ruler of each orientation found in ``image``.

    Parameters
    ----------
    image : ndarray, (rows, cols) uint8 or (rows, cols, 3) uint8 RGB
    **options
        As for :func:`detect_ruler` (``tick_mm`` or ``depth_mm`` required).

    Returns
    -------
    dict
        ``{"vertical": RulerResult, "horizontal": ..., "oblique": ...}`` for the
        orientations present (possibly empty). A vertical and a horizontal ruler
        together measure a non-square pixel aspect (frame grabbers).
    """
    results = {}
    for orientation in ORIENTATIONS:
        try:
            results[orientation] = detect_ruler(image, orientation=orientation, **options)
        except AnalysisError:
            continue
    return results


def _search_rulers(
    grey, *, static_mask, min_ticks, min_period_px, max_period_px, line_tolerance_px, neighbours, max_residual_fraction
) -> dict[str, tuple[tuple, np.ndarray, np.ndarray]]:
    """Best (key, tick points, direction) per orientation class."""
    if max_period_px is None:
        max_period_px = max(grey.shape) / 4.0
    points = find_tick_candidates(grey, static_mask=static_mask)
    if len(points) < min_ticks:
        return {}
    if len(points) > 600:  # keep the search bounded on noisy images
        rng = np.random.default_rng(0)
        points = points[rng.choice(len(points), 600, replace=False)]
    diff = points[None, :, :] - points[:, None, :]
    dist = np.hypot(diff[..., 0], diff[..., 1])
    # each candidate proposes lines through its nearest neighbours only (a tick's
    # neighbours on the ruler are among its closest marks): O(n * k) proposals
    in_range = (dist >= min_period_px) & (dist <= max_period_px)
    masked = np.where(in_range, dist, np.inf)
    k = min(neighbours, len(points) - 1)
    nearest = np.argsort(masked, axis=1)[:, :k]
    pairs = sorted(
        {
            (min(i, int(j)), max(i, int(j)))
            for i in range(len(points))
            for j in nearest[i]
            if np.isfinite(masked[i, j])
        }
    )
    best: dict[str, tuple[tuple, np.ndarray, np.ndarray]] = {}
    for i, j in pairs:
        period = dist[i, j]
        direction = diff[i, j] / period
        rel = points - points[i]
        along = rel @ direction
        across = np.abs(rel[:, 0] * direction[1] - rel[:, 1] * direction[0])
        on_line = np.flatnonzero(across <= line_tolerance_px)
        if len(on_line) < min_ticks:
            continue
        s_line = along[on_line]
        idx, numbers = _lattice_fit(s_line, period, 0.0)
        if len(idx) < min_ticks:
            continue
        # the pair's distance is quantised to whole pixels: refine the lattice on its
        # ticks and reassign, so that a long ruler does not drift out of tolerance
        for _ in range(2):
            slope, intercept = np.polyfit(numbers.astype(float), s_line[idx], 1)
            if not slope >= min_period_px:
                break
            idx, numbers = _lattice_fit(s_line, float(slope), float(intercept))
            if len(idx) < min_ticks:
                break
        if len(idx) < min_ticks:
            continue
        chosen = on_line[idx]
        s = along[chosen]
        fit = np.polyfit(numbers.astype(float), s, 1)
        resid = s - np.polyval(fit, numbers)
        rsd = float(np.sqrt(np.sum(resid**2) / max(len(s) - 2, 1)))
        if rsd > max_residual_fraction * abs(fit[0]):
            continue  # marks that only roughly line up (speckle, text) are not a ruler
        extent = abs(fit[0]) * float(numbers[-1] - numbers[0])
        key = (round(extent / (2 * abs(fit[0]))), len(chosen), -rsd / abs(fit[0]))  # longest ruler first
        kind = _orientation(direction)
        if kind not in best or key > best[kind][0]:
            best[kind] = (key, points[chosen], direction, numbers)
    return best


def _ruler_result(pts, numbers, direction, *, tick_mm, depth_mm, min_ticks) -> RulerResult:
    """Least-squares lattice through the chosen ticks -> spacing and its standard error.

    ``numbers`` are the ticks' lattice numbers from the search (gaps = missed ticks).
    """
    known = float(tick_mm if tick_mm is not None else depth_mm)
    # refine the direction with a line fit through the ticks
    centre = pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts - centre)
    direction = vt[0] if vt[0] @ direction >= 0 else -vt[0]
    along = (pts - centre) @ direction
    numbers = np.asarray(numbers, dtype=int)
    if np.corrcoef(numbers, along)[0, 1] < 0:
        numbers = -numbers
    order = np.argsort(numbers)
    pts, along, numbers = pts[order], along[order], numbers[order]
    fit = np.polyfit(numbers.astype(float), along, 1)
    # drop marks more than 10 % of a period off the fitted lattice one at a time
    # (a label glyph beside the ruler pulls the fit), while enough ticks remain
    while len(along) > min_ticks:
        # leave-one-out residuals: an outlier cannot hide by pulling the fit towards itself
        loo = np.array(
            [
                abs(along[i] - np.polyval(np.polyfit(np.delete(numbers, i).astype(float), np.delete(along, i), 1), numbers[i]))
                for i in range(len(along))
            ]
        )
        worst = int(np.argmax(loo))
        if loo[worst] <= 0.1 * fit[0]:
            break
        keep = np.arange(len(along)) != worst
        pts, along, numbers = pts[keep], along[keep], numbers[keep]
        fit = np.polyfit(numbers.astype(float), along, 1)
    period = float(fit[0])
    resid = along - np.polyval(fit, numbers)
    dof = max(len(along) - 2, 1)
    residual_sd = float(np.sqrt(np.sum(resid**2) / dof))
    sigma = max(residual_sd, PIXEL_QUANTISATION_SD_PX)
    spread = float(np.sum((numbers - numbers.mean()) ** 2))
    period_se = sigma / np.sqrt(spread) if spread > 0 else float("inf")
    if tick_mm is not None:
        spacing = known / period
        spacing_se = known * period_se / period**2
    else:
        intervals = int(numbers[-1] - numbers[0])
        extent = period * intervals
        spacing = known / extent
        spacing_se = known * period_se * intervals / extent**2
    return RulerResult(
        spacing_mm=float(spacing),
        spacing_se_mm=float(spacing_se),
        period_px=period,
        period_se_px=float(period_se),
        ticks_px=pts,
        tick_index=numbers - numbers[0],
        residual_sd_px=residual_sd,
        direction=(float(direction[0]), float(direction[1])),
    )


def static_median(frames: Sequence[np.ndarray], *, min_std: float = 2.0) -> tuple[np.ndarray, np.ndarray | None]:
    """Temporal median grey image and the mask of pixels that do not change.

    Parameters
    ----------
    frames : sequence of ndarray, (rows, cols) uint8 or (rows, cols, 3) uint8 RGB

    Returns
    -------
    median : ndarray, shape (rows, cols), uint8
    static_mask : ndarray of bool (rows, cols), or None for fewer than 3 frames
        (then ``median`` is the first frame)
        Pixels whose temporal std is at most ``3 * q20(std) + min_std`` (grey
        levels): the capture's noise floor plus a margin.
    """
    greys = [_to_grey(f) for f in frames]
    if len(greys) < 3:  # the median of two frames is their mean: no better than one frame
        return greys[0].copy(), None
    stack = np.stack(greys)
    median = np.median(stack, axis=0).astype(np.uint8)
    std = stack.astype(np.float32).std(axis=0)
    return median, std <= _change_threshold(std, min_std=min_std)  # same noise floor as detect_region


# -- (c) two points ---------------------------------------------------------------------
def spacing_from_points(
    p1_px: tuple[float, float], p2_px: tuple[float, float], *, distance_mm: float, localisation_px: float = 0.5
) -> PointsResult:
    """Isotropic mm per pixel from two points a known distance apart.

    Parameters
    ----------
    p1_px, p2_px : (x, y)
        The two points, pixels.
    distance_mm : float
        True distance between them, mm.
    localisation_px : float
        Half-width of each point's placement error, pixels (+-0.5 px for a click
        on the right pixel).

    Returns
    -------
    PointsResult
        ``spacing_se_mm`` = worst case of both points off by ``localisation_px``
        along the line: ``distance_mm * 2 * localisation_px / distance_px**2``.
    """
    if not (np.isfinite(distance_mm) and distance_mm > 0):
        raise CalibrationError(f"--distance-mm must be a positive number, got {distance_mm!r}")
    d_px = float(np.hypot(p2_px[0] - p1_px[0], p2_px[1] - p1_px[1]))
    if not np.isfinite(d_px) or d_px < 2.0:
        raise CalibrationError(f"the two points are {d_px:.1f} px apart: too close to calibrate")
    spacing = distance_mm / d_px
    return PointsResult(spacing, distance_mm * 2.0 * localisation_px / d_px**2, d_px)


# -- (d) DICOM --------------------------------------------------------------------------
def calibration_from_dicom(path: str | Path) -> tuple[Calibration | None, list[str]]:
    """The calibration a DICOM file's Sequence of Ultrasound Regions gives.

    Returns
    -------
    calibration : Calibration or None
        None when the file has no usable spatial region.
    warnings : list of str
        Regions not used and why.
    """
    from iousguide.acquisition.dicom import DicomSource

    with DicomSource(path) as source:
        return source.metadata_calibration, [w for w in source.warnings if "region" in w.lower()]


def sample_frames(source: Any, *, max_frames: int, timeout_s: float = 5.0) -> list[np.ndarray]:
    """Frames (pixels only) to calibrate from.

    Parameters
    ----------
    source : Source
        A recording (random access: up to ``max_frames`` frames spread evenly over
        it) or a live source (the next ``max_frames`` frames).
    max_frames : int
    timeout_s : float
        Live sources: longest wait for one frame, seconds.

    Raises
    ------
    AnalysisError
        A live source gave no frame within ``timeout_s``.
    """
    from iousguide.errors import EndOfSource, SourceTimeout

    frames: list[np.ndarray] = []
    length = getattr(source, "length", None)
    if getattr(source, "random_access", False) and length:
        for index in np.unique(np.linspace(0, length - 1, min(max_frames, length)).round().astype(int)):
            frames.append(source.frame_at(int(index)).pixels)
        return frames
    while len(frames) < max_frames:
        try:
            frames.append(source.read(timeout_s=timeout_s).pixels)
        except EndOfSource:
            break
        except SourceTimeout:
            if frames:
                break
            raise AnalysisError(f"{source.source_id}: no frame within {timeout_s:g} s (no signal?)") from None
    return frames
