"""Shared image preparation for vessel and tumour analysis (pure functions, OpenCV).

Detection works in dB (grey levels scaled by the assumed display dynamic range):
speckle is averaged with a Gaussian of a fixed size in mm, and every threshold is a
contrast in dB relative to the tissue level at the same depth (a per-row median,
which follows attenuation and time-gain compensation). Boundaries are placed on
echo *power* (grey mapped back through the log compression, squared), the quantity
the point-spread function blurs linearly. Detection runs on a reduced isotropic grid of
``working_spacing_mm``; boundaries are then refined locally at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from iousguide.analysis.settings import TrackingSettings


def amplitude_lut(*, dynamic_range_db: float) -> np.ndarray:
    """Grey level -> relative echo amplitude.

    Parameters
    ----------
    dynamic_range_db : float
        Display dynamic range in dB (grey 255 = 0 dB, grey 0 = -range).

    Returns
    -------
    ndarray, shape (256,), float32
        Amplitude in (0, 1].
    """
    grey = np.arange(256, dtype=np.float64)
    return (10.0 ** ((grey / 255.0 - 1.0) * dynamic_range_db / 20.0)).astype(np.float32)


def unit_mm_per_px(shape: tuple[int, int], spacing_mm: tuple[float, float] | None,
                   settings: TrackingSettings) -> tuple[float, float]:
    """Pixel size used to size filters: the calibration, or a nominal internal scale.

    The nominal scale (``uncalibrated_depth_mm / rows``) sizes filters only; no
    reported value is ever derived from it.
    """
    if spacing_mm is not None:
        return float(spacing_mm[0]), float(spacing_mm[1])
    nominal = settings.uncalibrated_depth_mm / max(shape[0], 1)
    return nominal, nominal


def doppler_mask(pixels: np.ndarray, *, chroma_level: int) -> np.ndarray | None:
    """Colour-Doppler pixels of an RGB frame.

    Parameters
    ----------
    pixels : ndarray, shape (rows, cols, 3) uint8 RGB, or (rows, cols) grey
    chroma_level : int
        Minimum max-min channel difference of a colour pixel.

    Returns
    -------
    ndarray (rows, cols) bool or None
        None for grey frames or when no colour pixel exists.
    """
    if pixels.ndim != 3:
        return None
    chroma = cv2.subtract(pixels.max(axis=2), pixels.min(axis=2))
    mask = chroma > chroma_level
    return mask if mask.any() else None


def disc(radius_px: float) -> np.ndarray:
    """Elliptical structuring element of the given radius (at least 3x3)."""
    r = max(int(round(radius_px)), 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def exact_distance_px(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (pixels) of each nonzero pixel of a uint8 mask to the nearest zero
    pixel: ``cv2.distanceTransform(mask, DIST_L2, DIST_MASK_PRECISE)`` made reproducible.

    OpenCV takes the square root with or without SIMD depending on the buffer's memory
    alignment, so the last bit of a value varies from call to call on equal input (seen on
    opencv 5.0.0: 18 of 3264 values of a lumen mask); a local-maximum test on the result
    then breaks ties differently and a lumen's measured width moved by 0.09 mm across its
    1.5 mm acceptance limit from run to run. The squared distances are whole numbers, so
    they are rounded and the root is taken again (float64, correctly rounded).

    Returns (h, w) float32, a new array.
    """
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE).astype(np.float64)
    return np.sqrt(np.rint(dist * dist)).astype(np.float32)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of every component of a uint8 {0,1} mask (new array)."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros_like(mask)
    cv2.drawContours(out, contours, -1, 1, thickness=cv2.FILLED)
    return out


def largest_contour(mask: np.ndarray) -> np.ndarray | None:
    """Outer outline of the largest component of a uint8 mask (by enclosed area), every boundary
    pixel: (N, 2) float64 (x, y) on the mask's grid, or None when the mask is empty."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    return max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)


def components_with_stats(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """``cv2.connectedComponentsWithStats(mask, connectivity=8)``, the same labels, stats and
    centroids, ~3x faster: OpenCV's default 8-way algorithm (Spaghetti) is slow to gather the
    statistics; BBDT labels the 2x2 blocks in the same order.

    Parameters
    ----------
    mask : ndarray (h, w) uint8
        Non-zero pixels are foreground (not modified).

    Returns
    -------
    n : int
        Number of labels, background (0) included.
    labels : ndarray (h, w) int32
    stats : ndarray (n, 5) int32
        x, y, width, height, area (``cv2.CC_STAT_*``) per label.
    centroids : ndarray (n, 2) float64
    """
    return cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, cv2.CCL_BBDT)


def row_median(values: np.ndarray, mask: np.ndarray, *, q: float = 0.5) -> np.ndarray:
    """Quantile ``q`` (default the median) of ``values`` over ``mask`` in every row; NaN where
    a row has fewer than 3 pixels.

    Parameters
    ----------
    values : ndarray, shape (rows, cols) float
    mask : ndarray, shape (rows, cols) bool

    Returns
    -------
    ndarray, shape (rows,) float64
    """
    data = np.where(mask, values, np.inf)
    data.sort(axis=1)
    counts = mask.sum(axis=1)
    idx = np.clip((counts * q).astype(np.int64), 0, values.shape[1] - 1)
    med = data[np.arange(values.shape[0]), idx].astype(np.float64)
    med[counts < 3] = np.nan
    return med


def _sorted_quantile(sorted_rows: np.ndarray, start: np.ndarray, counts: np.ndarray, *, q: float) -> np.ndarray:
    """:func:`row_median` from rows already sorted: quantile ``q`` of the ``counts[r]`` values
    from column ``start[r]`` of each sorted row (float64, NaN where fewer than 3)."""
    idx = np.clip((counts * q).astype(np.int64), 0, sorted_rows.shape[1] - 1)
    pos = np.clip(start + idx, 0, sorted_rows.shape[1] - 1)
    med = sorted_rows[np.arange(sorted_rows.shape[0]), pos].astype(np.float64)
    med[counts < 3] = np.nan
    return med


def smooth_profile(profile: np.ndarray, *, sigma_px: float) -> np.ndarray:
    """Fill NaN by interpolation and smooth a 1-D profile with a Gaussian (new array)."""
    prof = np.asarray(profile, dtype=np.float64).copy()
    good = np.isfinite(prof)
    if not good.any():
        return np.ones_like(prof)
    idx = np.arange(len(prof))
    prof = np.interp(idx, idx[good], prof[good])
    if sigma_px > 0.5 and len(prof) > 3:
        prof = cv2.GaussianBlur(prof.reshape(-1, 1), (1, 0), sigmaX=0, sigmaY=sigma_px,
                                borderType=cv2.BORDER_REPLICATE).ravel()
    return prof


@dataclass
class Prepared:
    """A frame prepared for analysis (all arrays owned by this object).

    Attributes
    ----------
    amplitude : ndarray (rows, cols) float32
        Full-resolution echo amplitude (Doppler pixels set to the noise floor).
    unit_mm : (float, float)
        Frame pixel size used to size filters (calibrated or nominal).
    scale_xy : (float, float)
        Working grid pixels per frame pixel in x and y.
    work_px_mm : float
        Working grid pixel size in (nominal) mm, isotropic.
    smooth : ndarray (h, w) float32
        Speckle-averaged echo level in dB (grey x dynamic range / 255) on the working grid.
    valid : ndarray (h, w) bool
        Imaged region (inside the fan / linear field of view), eroded slightly.
    tissue_row : ndarray (h,) float64
        Tissue echo level per working row, dB (median over the field of view without lumens).
    tissue_power_row : ndarray (h,) float64
        Tissue mean echo power per working row (amplitude squared, as in the refinement).
    signal_fraction : float
        Fraction of frame pixels above the black level.
    """

    amplitude: np.ndarray
    unit_mm: tuple[float, float]
    scale_xy: tuple[float, float]
    work_px_mm: float
    smooth: np.ndarray
    valid: np.ndarray
    tissue_row: np.ndarray
    signal_fraction: float
    valid_bottom_row: np.ndarray  # (w,) last valid working row per column, -1 if none
    tissue_power_row: np.ndarray

    def to_frame(self, x_w: np.ndarray | float, y_w: np.ndarray | float):
        """Working-grid coordinates -> frame pixel coordinates."""
        return (np.asarray(x_w) + 0.5) / self.scale_xy[0] - 0.5, (np.asarray(y_w) + 0.5) / self.scale_xy[1] - 0.5

    def to_work(self, x_f: np.ndarray | float, y_f: np.ndarray | float):
        """Frame pixel coordinates -> working-grid coordinates."""
        return (np.asarray(x_f) + 0.5) * self.scale_xy[0] - 0.5, (np.asarray(y_f) + 0.5) * self.scale_xy[1] - 0.5

    @property
    def work_shape(self) -> tuple[int, int]:
        return self.smooth.shape

    def mm_to_work_px(self, length_mm: float) -> float:
        return length_mm / self.work_px_mm


def prepare(gray: np.ndarray, *, spacing_mm: tuple[float, float] | None, settings: TrackingSettings,
            doppler: np.ndarray | None = None, field_of_view: np.ndarray | None = None) -> Prepared:
    """Amplitude, working grid, field of view and tissue level of one grey frame.

    Parameters
    ----------
    gray : ndarray, shape (rows, cols) uint8
        Grey frame (not modified).
    spacing_mm : (float, float) or None
        Pixel size x, y in mm; None = uncalibrated (a nominal internal scale is used).
    settings : TrackingSettings
    doppler : ndarray (rows, cols) bool, optional
        Colour-flow pixels: treated as lumen (noise-floor amplitude).
    field_of_view : ndarray (h, w) bool, optional
        The field of view on the working grid from an earlier frame of the same stream
        (``Prepared.valid``); computed when None or of another shape.

    Returns
    -------
    Prepared
    """
    lut = amplitude_lut(dynamic_range_db=settings.display_dynamic_range_db)
    amplitude = cv2.LUT(gray, lut)
    if doppler is not None:
        amplitude[doppler] = lut[0]
    ux, uy = unit_mm_per_px(gray.shape, spacing_mm, settings)
    work_mm = max(settings.working_spacing_mm, min(ux, uy))
    fx, fy = min(ux / work_mm, 1.0), min(uy / work_mm, 1.0)
    rows, cols = gray.shape
    w, h = max(int(round(cols * fx)), 8), max(int(round(rows * fy)), 8)
    fx, fy = w / cols, h / rows
    work_mm = ux / fx if fx < 1 else ux  # isotropic up to rounding
    if (w, h) != (cols, rows) and not (_is_whole(cols / w) and _is_whole(rows / h)):
        # grey and amplitude reduced in one pass (two channels, ~25 % less time): at a
        # fractional scale OpenCV averages uint8 in float and rounds to nearest (ties to
        # even), which np.rint repeats exactly (at a whole scale it averages in integers)
        both = cv2.resize(cv2.merge([gray.astype(np.float32), amplitude]), (w, h), interpolation=cv2.INTER_AREA)
        small_gray = np.rint(both[:, :, 0]).astype(np.uint8)
        small_amp = np.ascontiguousarray(both[:, :, 1])
    elif (w, h) != (cols, rows):
        small_amp = cv2.resize(amplitude, (w, h), interpolation=cv2.INTER_AREA)
        small_gray = cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA)
    else:
        small_amp, small_gray = amplitude, gray
    sigma = settings.speckle_smoothing_mm / work_mm
    # detection map in dB (log domain: speckle is additive there and a bright wall next to a
    # small lumen does not bleed into it as it does in amplitude)
    db_per_grey = settings.display_dynamic_range_db / 255.0
    grey_f = small_gray.astype(np.float32)
    if doppler is not None:
        grey_f[cv2.resize(doppler.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)] = 0
    smooth = cv2.GaussianBlur(grey_f * np.float32(db_per_grey), (0, 0), sigmaX=sigma, sigmaY=sigma,
                              borderType=cv2.BORDER_REFLECT)
    power = cv2.GaussianBlur(small_amp * small_amp, (0, 0), sigmaX=sigma, sigmaY=sigma,
                             borderType=cv2.BORDER_REFLECT)
    signal = (small_gray > settings.black_level).astype(np.uint8)
    if doppler is not None:
        dsmall = cv2.resize(doppler.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        signal |= dsmall
    signal_fraction = float(np.count_nonzero(gray > settings.black_level)) / gray.size
    if field_of_view is not None and field_of_view.shape == (h, w):
        valid = field_of_view
    else:
        valid = _field_of_view(signal, radius_px=2.0 / work_mm, erode_px=0.6 / work_mm)
    # first guess from the brighter tissue (the 90th percentile, ~3 dB above the median of
    # speckle), so a lumen filling most of a row (a vessel in long axis) cannot pull it down
    # (one sort of each row's field of view serves both: the tissue of a row is its valid
    # values at or above the row's dark level, i.e. the top of that sorted row)
    sorted_valid = np.where(valid, smooth, np.inf)
    sorted_valid.sort(axis=1)
    n_valid = np.count_nonzero(valid, axis=1)
    upper = smooth_profile(_sorted_quantile(sorted_valid, np.zeros_like(n_valid), n_valid, q=0.9),
                           sigma_px=3.0 / work_mm)
    dark = smooth < (upper[:, None] - 3.0 - settings.lumen_contrast_db).astype(np.float32)
    tissue = valid & ~dark
    n_tissue = np.count_nonzero(tissue, axis=1)
    tissue_row = smooth_profile(_sorted_quantile(sorted_valid, n_valid - n_tissue, n_tissue, q=0.5),
                                sigma_px=3.0 / work_mm)
    tissue_power_row = smooth_profile(row_median(power, tissue), sigma_px=3.0 / work_mm)
    tissue_power_row = np.maximum(tissue_power_row, float(lut[settings.black_level]) ** 2)
    bottom = np.where(valid.any(axis=0), h - 1 - np.argmax(valid[::-1], axis=0), -1)
    return Prepared(amplitude=amplitude, unit_mm=(ux, uy), scale_xy=(fx, fy), work_px_mm=work_mm, smooth=smooth,
                    valid=valid, tissue_row=tissue_row, signal_fraction=signal_fraction, valid_bottom_row=bottom,
                    tissue_power_row=tissue_power_row)


def _is_whole(scale: float) -> bool:
    """Whether a resize ratio is (within rounding) a whole number: OpenCV's INTER_AREA then
    takes its integer block-average path."""
    return abs(scale - round(scale)) < 1e-6


def _field_of_view(signal: np.ndarray, *, radius_px: float, erode_px: float) -> np.ndarray:
    """The field of view: the convex hull of the largest signal region, minus the black that
    reaches it from the top of the image (the concave area above a convex fan's top arc).

    Dark areas inside the image (lumens, shadows), also those cut by its sides or bottom (a
    vessel leaving the image), belong to the field of view.
    """
    closed = cv2.morphologyEx(signal, cv2.MORPH_CLOSE, disc(radius_px))
    n, labels, stats, _ = components_with_stats(closed)
    if n <= 1:
        return np.zeros(signal.shape, dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    fov = np.zeros_like(region)
    cv2.fillConvexPoly(fov, cv2.convexHull(np.vstack(contours)), 1)
    gaps = (fov & (1 - region)).astype(np.uint8)
    if gaps.any():
        top = int(np.argmax(fov.any(axis=1)))
        m, glabels, gstats, _ = components_with_stats(gaps)
        for k in range(1, m):
            if gstats[k, cv2.CC_STAT_TOP] <= top + 1:
                fov[glabels == k] = 0
    if erode_px >= 1:
        fov = cv2.erode(fov, disc(erode_px))
    return fov.astype(bool)


def check_signal(gray: np.ndarray, *, settings: TrackingSettings) -> str | None:
    """A one-line reason when a frame carries no usable echo (probe lift, saturation), else None."""
    if gray.size == 0:
        return "empty frame"
    sub = gray[::4, ::4]
    signal = float(np.count_nonzero(sub > settings.black_level)) / sub.size
    if signal < settings.min_signal_fraction:
        return f"no echo signal ({signal:.1%} of pixels above grey {settings.black_level}: probe lifted?)"
    saturated = float(np.count_nonzero(sub >= settings.saturated_level)) / sub.size
    if saturated > settings.saturated_fraction:
        return f"saturated frame ({saturated:.0%} of pixels at grey >= {settings.saturated_level})"
    if int(sub.max()) - int(sub.min()) < 4:
        return "flat frame (no contrast)"
    return None
