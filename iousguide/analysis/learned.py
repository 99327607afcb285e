"""Learned vessel-lumen model: a tiny U-Net run through OpenCV's DNN module (no PyTorch).

The model (``iousguide/models/vessel_lumen.onnx``, card in ``iousguide/models/README.md``) was
trained by ``tools/train_vessel_model.py`` on real linear-probe images with expert vessel
masks (usgra-seg, training part only) and on phantom frames (seeds 8200-8519 training,
8800-8839 validation). It maps a grey frame, resampled to a fixed pixel size, to a lumen
probability. Unlike the classical detector (anechoic cores), it also finds grey lumens of real
scanners.

::

    from iousguide.analysis.learned import lumen_probability, learned_lumens
    prob = lumen_probability(gray, spacing_mm=(0.1, 0.1))         # float32 on the model grid
    for lumen in learned_lumens(gray, spacing_mm=(0.1, 0.1)):
        lumen.contour_px, lumen.minor_axis_px, lumen.diameter_mm

Model grid: the frame resampled to ``input_px_mm`` (0.4 mm) per pixel in both axes, using the
calibration, or on an uncalibrated frame the nominal internal scale ``uncalibrated_depth_mm /
rows`` (as the rest of the analysis: it sizes things, it never yields a reported mm value).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from iousguide.errors import AnalysisError

#: the committed model and its metadata (input pixel size, normalisation, threshold)
MODEL_DIR = Path(__file__).resolve().parents[1] / "models"
MODEL_PATH = MODEL_DIR / "vessel_lumen.onnx"
META_PATH = MODEL_DIR / "vessel_lumen.json"

#: defaults used when no metadata file is present (the training script writes the same)
DEFAULT_META = {"input_px_mm": 0.4, "pad_multiple": 16, "output_stride": 2, "norm_percentile": 90.0,
                "norm_floor": 32.0, "black_level": 8, "threshold": 0.5, "peak_threshold": 0.7}


#: one forward pass at a time: a cv2.dnn.Net is not safe to run from two threads at once (the
#: tracker runs the model in a worker thread, and several trackers share the cached net)
_NET_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def _load(model_path: str) -> tuple[object, dict]:
    path = Path(model_path)
    if not path.exists():
        raise AnalysisError(f"learned model not found: {path}")
    try:
        net = cv2.dnn.readNetFromONNX(str(path))
    except cv2.error as exc:
        # OpenCV's message is several lines of its C++ call stack: the last line says what failed
        detail = next((line.strip() for line in reversed(str(exc).splitlines()) if line.strip()), "")
        raise AnalysisError(f"learned model {path} could not be loaded by OpenCV {cv2.__version__}: {detail}") from None
    meta = dict(DEFAULT_META)
    meta_path = path.with_suffix(".json")
    if meta_path.exists():
        meta.update(json.loads(meta_path.read_text()))
    return net, meta


def model_meta(model_path: str | Path = MODEL_PATH) -> dict:
    """Metadata of a model (input pixel size in mm, normalisation, thresholds)."""
    return dict(_load(str(model_path))[1])


def grid_unit_mm(shape: tuple[int, int], spacing_mm: tuple[float, float] | None, *,
                 uncalibrated_depth_mm: float = 50.0) -> tuple[float, float]:
    """Frame pixel size (x, y) in mm used to resample: the calibration or the nominal scale."""
    if spacing_mm is not None:
        return float(spacing_mm[0]), float(spacing_mm[1])
    nominal = float(uncalibrated_depth_mm) / max(int(shape[0]), 1)
    return nominal, nominal


def _reduce(gray: np.ndarray, w: int, h: int) -> np.ndarray:
    """``gray`` resampled to (h, w): exact 2x2 averages (OpenCV's fast INTER_AREA path) while the
    image is at least twice the target, then INTER_AREA (or INTER_LINEAR when enlarging) for the
    rest. A direct fractional INTER_AREA costs ~0.6 ms on an 800x600 frame, this ~0.2 ms. An odd
    row or column is dropped before a halving, which moves the grid by at most one frame pixel
    at the bottom/right edge."""
    small = gray
    while small.shape[0] >= 2 * h and small.shape[1] >= 2 * w:
        r, c = small.shape[0] // 2, small.shape[1] // 2
        small = cv2.resize(small[: 2 * r, : 2 * c], (c, r), interpolation=cv2.INTER_AREA)
    if small.shape != (h, w):
        interp = cv2.INTER_AREA if h < small.shape[0] else cv2.INTER_LINEAR
        small = cv2.resize(small, (w, h), interpolation=interp)
    return small


def model_input(gray: np.ndarray, *, spacing_mm: tuple[float, float] | None, input_px_mm: float = 0.3,
                uncalibrated_depth_mm: float = 50.0, norm_percentile: float = 90.0, norm_floor: float = 32.0,
                black_level: int = 8) -> np.ndarray:
    """The network input: the frame on the model grid, gain-normalised.

    Parameters
    ----------
    gray : ndarray, shape (rows, cols) uint8
        B-mode frame (not modified).
    spacing_mm : (float, float) or None
        Pixel size x, y in mm; None = uncalibrated (nominal scale).
    input_px_mm : float
        Model grid pixel size in (nominal) mm.
    norm_percentile, norm_floor, black_level
        Grey levels are divided by the ``norm_percentile`` percentile of the pixels above
        ``black_level`` (at least ``norm_floor``): the model sees the frame's own gain.

    Returns
    -------
    ndarray, shape (h, w) float32
        ``h = round(rows * unit_y / input_px_mm)``, ``w = round(cols * unit_x / input_px_mm)``
        (at least 1); values ~0..2 (dimensionless).
    """
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise AnalysisError(f"model_input needs a 2-D uint8 grey frame, got {gray.dtype} {gray.shape}")
    ux, uy = grid_unit_mm(gray.shape, spacing_mm, uncalibrated_depth_mm=uncalibrated_depth_mm)
    h = max(int(round(gray.shape[0] * uy / input_px_mm)), 1)
    w = max(int(round(gray.shape[1] * ux / input_px_mm)), 1)
    small = _reduce(gray, w, h)
    hist = cv2.calcHist([small], [0], None, [256], [0, 256]).ravel()
    hist[: black_level + 1] = 0
    total = hist.sum()
    ref = norm_floor
    if total > 0:
        ref = max(float(np.searchsorted(np.cumsum(hist), total * norm_percentile / 100.0)), norm_floor)
    return small.astype(np.float32) * np.float32(1.0 / ref)


def run_model(x: np.ndarray, *, model_path: str | Path = MODEL_PATH) -> np.ndarray:
    """Lumen probability of a model-grid input (see :func:`model_input`).

    Parameters
    ----------
    x : ndarray, shape (h, w) float32
        Network input (not modified).

    Returns
    -------
    ndarray, shape (h, w) float32
        Probability 0..1 on the same grid (the network's half-resolution output, bilinear).
    """
    net, meta = _load(str(model_path))
    mult = int(meta["pad_multiple"])
    h, w = x.shape
    hp, wp = -(-h // mult) * mult, -(-w // mult) * mult
    blob = np.zeros((1, 1, hp, wp), np.float32)
    blob[0, 0, :h, :w] = x
    with _NET_LOCK:
        net.setInput(blob)
        out = net.forward()[0, 0]
    stride = int(meta["output_stride"])
    if stride != 1:
        out = cv2.resize(out, (wp, hp), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out[:h, :w], dtype=np.float32)


def lumen_probability(gray: np.ndarray, *, spacing_mm: tuple[float, float] | None,
                      uncalibrated_depth_mm: float = 50.0, model_path: str | Path = MODEL_PATH) -> np.ndarray:
    """Lumen probability map of one grey frame.

    Parameters
    ----------
    gray : ndarray, shape (rows, cols) uint8
        B-mode frame (not modified).
    spacing_mm : (float, float) or None
        Pixel size x, y in mm; None = uncalibrated (nominal scale ``uncalibrated_depth_mm / rows``).
    uncalibrated_depth_mm : float
        Nominal image depth of an uncalibrated frame (sizes the model grid only).
    model_path : path
        ONNX model (its ``.json`` metadata beside it).

    Returns
    -------
    ndarray, shape (h, w) float32
        Probability (0..1) on the model grid (pixel size ``input_px_mm`` of the model's metadata,
        0.4 mm): a model pixel (i, j) covers frame pixels around
        ``x = (j + 0.5) * cols / w - 0.5``, ``y = (i + 0.5) * rows / h - 0.5``.
    """
    _, meta = _load(str(model_path))
    x = model_input(gray, spacing_mm=spacing_mm, input_px_mm=float(meta["input_px_mm"]),
                    uncalibrated_depth_mm=uncalibrated_depth_mm, norm_percentile=float(meta["norm_percentile"]),
                    norm_floor=float(meta["norm_floor"]), black_level=int(meta["black_level"]))
    return run_model(x, model_path=model_path)


@dataclass
class LearnedLumen:
    """One lumen found by the model, in frame pixels.

    Attributes
    ----------
    contour_px : ndarray (N, 2) float64
        Closed boundary (x, y) in frame pixels (the 0.5 iso-line of the probability).
    centroid_px : (float, float)
        Area centroid, frame pixels.
    area_px : float
        Enclosed area in frame pixels.
    minor_axis_px : float
        Width of the lumen across its long axis (smallest side of the minimum-area rectangle),
        in frame pixels along that direction (x pixels on an anisotropic grid).
    minor_axis_unit_mm : float
        The same width in the grid's (nominal, when uncalibrated) mm; internal sizing only.
    diameter_mm : float or None
        The width in mm, None when the frame is uncalibrated.
    peak_probability, mean_probability : float
        Highest and mean model probability inside the lumen.
    """

    contour_px: np.ndarray
    centroid_px: tuple[float, float]
    area_px: float
    minor_axis_px: float
    minor_axis_unit_mm: float
    diameter_mm: float | None
    peak_probability: float
    mean_probability: float


def lumens_from_probability(prob: np.ndarray, frame_shape: tuple[int, int], *,
                            spacing_mm: tuple[float, float] | None, threshold: float = 0.5,
                            peak_threshold: float = 0.7, min_diameter_mm: float = 1.5,
                            max_diameter_mm: float = 25.0, uncalibrated_depth_mm: float = 50.0,
                            upsample: int = 4) -> list[LearnedLumen]:
    """Connected lumens of a probability map, as frame-pixel contours.

    Parameters
    ----------
    prob : ndarray, shape (h, w) float32
        Output of :func:`lumen_probability` (not modified).
    frame_shape : (rows, cols)
        Shape of the frame the map was computed from.
    spacing_mm : (float, float) or None
        Frame pixel size; None = uncalibrated (``diameter_mm`` is then None).
    threshold : float
        Probability level of the boundary.
    peak_threshold : float
        A component whose highest probability stays below this is dropped.
    min_diameter_mm, max_diameter_mm : float
        Width limits (nominal mm when uncalibrated).
    upsample : int
        The probability is interpolated this many times finer around each component before the
        iso-line is traced (sub-pixel boundaries).

    Returns
    -------
    list of LearnedLumen
    """
    rows, cols = int(frame_shape[0]), int(frame_shape[1])
    h, w = prob.shape
    ux, uy = grid_unit_mm((rows, cols), spacing_mm, uncalibrated_depth_mm=uncalibrated_depth_mm)
    fx, fy = cols / w, rows / h  # frame px per model px
    mx, my = ux * fx, uy * fy  # mm per model px
    from iousguide.analysis.imaging import components_with_stats

    binary = (prob >= threshold).astype(np.uint8)
    n, labels, stats, _ = components_with_stats(binary)
    min_area_model = 0.5 * np.pi / 4 * min_diameter_mm ** 2 / (mx * my)
    out: list[LearnedLumen] = []
    for k in range(1, n):
        x0, y0, bw, bh, area = (int(v) for v in stats[k])
        if area < min_area_model:
            continue
        comp = labels[y0:y0 + bh, x0:x0 + bw] == k
        vals = prob[y0:y0 + bh, x0:x0 + bw][comp]
        peak = float(vals.max())
        if peak < peak_threshold:
            continue
        # sub-pixel iso-line: interpolate the probability in a padded window around the component
        pad = 2
        xa, ya = max(x0 - pad, 0), max(y0 - pad, 0)
        xb, yb = min(x0 + bw + pad, w), min(y0 + bh + pad, h)
        win = prob[ya:yb, xa:xb]
        own = labels[ya:yb, xa:xb]
        # keep only this component's basin (other components in the window are masked out)
        win = np.where((own == k) | (own == 0), win, 0.0).astype(np.float32)
        big = cv2.resize(win, ((xb - xa) * upsample, (yb - ya) * upsample), interpolation=cv2.INTER_LINEAR)
        big_bin = np.zeros((big.shape[0] + 2, big.shape[1] + 2), np.uint8)
        big_bin[1:-1, 1:-1] = big >= threshold
        contours, _ = cv2.findContours(big_bin, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if not contours:
            continue
        c = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64) - 1.0
        if len(c) < 5:
            continue
        # upsampled pixel -> model pixel -> frame pixel (pixel centres)
        xm = (c[:, 0] + 0.5) / upsample - 0.5 + xa
        ym = (c[:, 1] + 0.5) / upsample - 0.5 + ya
        contour = np.stack([(xm + 0.5) * fx - 0.5, (ym + 0.5) * fy - 0.5], axis=1)
        contour_mm = contour * np.array([ux, uy])
        (_, _), (s1, s2), _ = cv2.minAreaRect(contour_mm.astype(np.float32))
        minor_mm = float(min(s1, s2))
        if not min_diameter_mm <= minor_mm <= max_diameter_mm:
            continue
        mom = cv2.moments(contour.astype(np.float32))
        if mom["m00"] <= 0:
            continue
        centroid = (mom["m10"] / mom["m00"], mom["m01"] / mom["m00"])
        out.append(LearnedLumen(
            contour_px=contour, centroid_px=(float(centroid[0]), float(centroid[1])), area_px=float(mom["m00"]),
            minor_axis_px=minor_mm / ux, minor_axis_unit_mm=minor_mm,
            diameter_mm=minor_mm if spacing_mm is not None else None,
            peak_probability=peak, mean_probability=float(vals.mean())))
    return out


def learned_lumens(gray: np.ndarray, *, spacing_mm: tuple[float, float] | None, threshold: float | None = None,
                   peak_threshold: float | None = None, min_diameter_mm: float = 1.5, max_diameter_mm: float = 25.0,
                   uncalibrated_depth_mm: float = 50.0, model_path: str | Path = MODEL_PATH) -> list[LearnedLumen]:
    """Vessel lumens found by the learned model in one grey frame.

    Parameters
    ----------
    gray : ndarray, shape (rows, cols) uint8
        B-mode frame (not modified).
    spacing_mm : (float, float) or None
        Pixel size x, y in mm; None = uncalibrated (no mm value is returned; sizes use the nominal
        scale ``uncalibrated_depth_mm / rows``).
    threshold, peak_threshold : float or None
        Boundary probability and the minimum peak probability of a lumen (None: the model's own,
        chosen on its validation images).
    min_diameter_mm, max_diameter_mm : float
        Width limits of a reported lumen.

    Returns
    -------
    list of LearnedLumen
        Contours and centroids in frame pixels.
    """
    _, meta = _load(str(model_path))
    prob = lumen_probability(gray, spacing_mm=spacing_mm, uncalibrated_depth_mm=uncalibrated_depth_mm,
                             model_path=model_path)
    return lumens_from_probability(
        prob, gray.shape, spacing_mm=spacing_mm,
        threshold=float(meta["threshold"] if threshold is None else threshold),
        peak_threshold=float(meta["peak_threshold"] if peak_threshold is None else peak_threshold),
        min_diameter_mm=min_diameter_mm, max_diameter_mm=max_diameter_mm,
        uncalibrated_depth_mm=uncalibrated_depth_mm)



def _peak_inside(prob: np.ndarray, contour_px: np.ndarray, frame_shape: tuple[int, int]) -> float:
    """Highest model probability inside a frame-pixel contour (at its centroid if it is tiny)."""
    h, w = prob.shape
    fx, fy = w / frame_shape[1], h / frame_shape[0]
    pts = np.stack([(contour_px[:, 0] + 0.5) * fx - 0.5, (contour_px[:, 1] + 0.5) * fy - 0.5], axis=1)
    x0, y0 = np.floor(pts.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round((pts - [x0, y0]) * 16).astype(np.int32)], 1, shift=4)
    if not mask.any():
        c = np.clip(np.round(pts.mean(axis=0)).astype(int), 0, [w - 1, h - 1])
        return float(prob[c[1], c[0]])
    return float(prob[y0:y1, x0:x1][mask.astype(bool)].max())


def ring_contrast_db(prep, mask_w: np.ndarray, *, inner_mm: float = 1.0, outer_mm: float = 3.0) -> float:
    """How much darker a region is than the tissue right around it, in dB.

    Parameters
    ----------
    prep : iousguide.analysis.imaging.Prepared
        The prepared frame (its speckle-averaged dB image ``smooth`` and field of view ``valid``).
    mask_w : ndarray, shape (h, w) bool
        The region on the working grid (not modified).
    inner_mm, outer_mm : float
        The ring compared with: from ``inner_mm`` to ``outer_mm`` (nominal mm) outside the region,
        inside the field of view.

    Returns
    -------
    float
        Median level of the ring minus the median level of the region (dB; positive = darker
        region); NaN when the region or its ring is empty.
    """
    bx, by, bw, bh = cv2.boundingRect(np.ascontiguousarray(mask_w, dtype=bool).view(np.uint8))
    if bw == 0 or bh == 0:
        return float("nan")
    return _ring_contrast_box(prep, mask_w[by:by + bh, bx:bx + bw], bx, by, inner_mm=inner_mm, outer_mm=outer_mm)


def _ring_contrast_box(prep, box: np.ndarray, bx: int, by: int, *, inner_mm: float, outer_mm: float) -> float:
    """:func:`ring_contrast_db` of a region given as its bounding box ``box`` (bool, not empty)
    at working-grid offset (bx, by)."""
    r_in = max(int(round(inner_mm / prep.work_px_mm)), 1)
    r_out = max(int(round(outer_mm / prep.work_px_mm)), r_in + 1)
    h, w = prep.work_shape
    bh, bw = box.shape
    y0, y1 = max(by - r_out, 0), min(by + bh + r_out, h)
    x0, x1 = max(bx - r_out, 0), min(bx + bw + r_out, w)
    m8 = np.zeros((y1 - y0, x1 - x0), np.uint8)
    m8[by - y0:by - y0 + bh, bx - x0:bx - x0 + bw] = box
    inner = cv2.dilate(m8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_in + 1,) * 2))
    outer = cv2.dilate(m8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_out + 1,) * 2))
    ring = (outer > inner) & prep.valid[y0:y1, x0:x1]
    if not ring.any():
        return float("nan")
    level = prep.smooth[y0:y1, x0:x1]
    return float(np.median(level[ring]) - np.median(level[m8.astype(bool)]))


def learned_frame_lumens(gray: np.ndarray, *, spacing_mm: tuple[float, float] | None, settings,
                         model_path: str | Path = MODEL_PATH) -> tuple[np.ndarray, list[LearnedLumen]]:
    """The model's part of :func:`merge_learned_vessels`: everything that does not depend on the
    classical lumens (so it can run while the classical detector works).

    Parameters
    ----------
    gray : ndarray, shape (rows, cols) uint8
        The frame (not modified).
    spacing_mm : (float, float) or None
        Frame pixel size x, y in mm; None = uncalibrated.
    settings : TrackingSettings
        Size limits (``vessel_min_diameter_mm``, ``vessel_max_diameter_mm``) and the nominal depth.

    Returns
    -------
    prob : ndarray, shape (h, w) float32
        :func:`lumen_probability` of the frame (model grid, 0..1).
    lumens : list of LearnedLumen
        :func:`lumens_from_probability` with the model's thresholds and the settings' size limits.
    """
    _, meta = _load(str(model_path))
    prob = lumen_probability(gray, spacing_mm=spacing_mm, uncalibrated_depth_mm=settings.uncalibrated_depth_mm,
                             model_path=model_path)
    lumens = lumens_from_probability(
        prob, gray.shape, spacing_mm=spacing_mm, threshold=float(meta["threshold"]),
        peak_threshold=float(meta["peak_threshold"]), min_diameter_mm=settings.vessel_min_diameter_mm,
        max_diameter_mm=settings.vessel_max_diameter_mm, uncalibrated_depth_mm=settings.uncalibrated_depth_mm)
    return prob, lumens


#: A learned lumen under which the tissue (3 mm below its lowest pixel in each column, median) is
#: this much darker than the tissue at its depth elsewhere (dB) lies in an acoustic shadow and is
#: not taken: blood attenuates less than liver, so the tissue behind a lumen is as bright as
#: elsewhere or brighter (posterior enhancement), while a shadow stays dark down to the bottom.
#: The model reads the top of a calcification's shadow as a lumen: dev seed 8209 (15 frames), such
#: "lumens" of 3-6 mm read -10 to -13 dB under them and one took a lumen's track id. The cost: a
#: real lumen inside or beside such a shadow reads as low and is lost with it. Learned lumens added
#: on dev seeds 8200-8299 (4 frames each): of the 151 that matched a vessel, 147 read -4.5 dB or
#: more and 4 read -8.1 to -11.6 dB (lumens by the calcifications of 8201 and 8209: dropped); of the
#: 5 that matched none, 8209's shadow top read -12.1 dB (dropped), the others -7.9 to +0.6 dB.
#: Dev seeds 8800-8899 x 12 frames (--official), vessel switches on: recall / precision 0.956 /
#: 0.966 with this and SHADOW_DARK_GAP_DB, 0.956 / 0.965 without (73e5163).
SHADOW_BELOW_DB = 8.0


def _below_level_db(prep, box: np.ndarray, bx: int, by: int, *, depth_mm: float = 3.0) -> float:
    """Median level (dB, relative to the tissue level at each depth) of the ``depth_mm`` under a
    working-grid region given as its bounding box ``box`` (bool, not empty) at offset (bx, by):
    in each of its columns, below its lowest pixel, within the field of view. NaN when none is."""
    h = prep.work_shape[0]
    depth = max(int(round(depth_mm / prep.work_px_mm)), 1)
    has = box.any(axis=0)
    lowest = by + box.shape[0] - 1 - np.argmax(box[::-1, :], axis=0)
    values = []
    for i in np.flatnonzero(has):
        rows = slice(lowest[i] + 1, min(lowest[i] + 1 + depth, h))
        col = prep.smooth[rows, bx + i] - prep.tissue_row[rows]
        values.append(col[prep.valid[rows, bx + i]])
    values = np.concatenate(values) if values else np.empty(0)
    return float(np.median(values)) if values.size else float("nan")


def merge_learned_vessels(gray: np.ndarray, prep, existing: list, *, settings,
                          spacing_mm: tuple[float, float] | None, max_overlap: float = 0.2,
                          fragment_fraction: float = 0.5, veto_probability: float = 0.0,
                          min_contrast_db: float = 1.5, model_output: tuple | None = None,
                          model_path: str | Path = MODEL_PATH) -> list:
    """The classical detector's lumens completed by the learned model's.

    A learned lumen must be darker than the tissue 1-3 mm around it by ``min_contrast_db``
    (:func:`ring_contrast_db`; blood is darker than liver): on a transabdominal liver sweep
    most of what the model found without this rule was darker parenchyma or the fan edge (71 %
    of its additions were below 1.5 dB), while 95 % of the lumens it added that matched an
    expert's vessel on the usgra training and validation images were above it.
    A learned lumen that overlaps no classical lumen (by more than ``max_overlap`` of the smaller
    area) is added. One whose overlapping classical lumens all lie inside it (>= 60 % of each),
    cover less than ``fragment_fraction`` of it and are at most 2/3 of its width is the whole
    vessel of which the classical detector saw fragments: it replaces them. Otherwise the
    classical lumen is kept (its boundary is placed at full resolution).

    Parameters
    ----------
    gray : ndarray, shape (rows, cols) uint8
        The frame (not modified).
    prep : iousguide.analysis.imaging.Prepared
        The frame prepared for analysis (working grid, field of view).
    existing : list of VesselDetection
        The classical detector's lumens of this frame (the list is not modified).
    settings : TrackingSettings
        Size limits (``vessel_min_diameter_mm``, ``vessel_max_diameter_mm``) and the nominal depth.
    spacing_mm : (float, float) or None
        Frame pixel size; None = uncalibrated.
    veto_probability : float
        A classical lumen inside which the model's probability nowhere reaches this is dropped
        (0: none is).
    min_contrast_db : float
        A learned lumen less darker than its surroundings (dB, :func:`ring_contrast_db`) is
        not taken.
    model_output : (prob, lumens) or None
        :func:`learned_frame_lumens` of this frame, already computed (the tracker runs it in a
        worker thread while the classical detector works); None: computed here. Not modified.

    Returns
    -------
    list of VesselDetection
        Classical lumens (minus replaced fragments) followed by the learned ones, frame pixels.
        A learned lumen has kind ``"unknown"`` (the model does not judge the wall) unless it
        replaces fragments (their largest one's kind); ``diameter_mm`` is in (nominal, when
        uncalibrated) mm as for the classical detections.
    """
    from iousguide.analysis.vessels import VesselDetection

    if model_output is None:
        model_output = learned_frame_lumens(gray, spacing_mm=spacing_mm, settings=settings, model_path=model_path)
    prob, lumens = model_output
    kept = list(existing)
    if veto_probability > 0:
        kept = [v for v in kept if _peak_inside(prob, v.contour_px, gray.shape) >= veto_probability]
    if not lumens:
        return kept
    h, w = prep.work_shape
    areas = [np.count_nonzero(v.mask_w) for v in kept]
    boxes = [cv2.boundingRect(np.ascontiguousarray(v.mask_w, dtype=bool).view(np.uint8)) for v in kept]
    added, added_boxes = [], []  # added lumens and (box, x0, y0, area) of each
    edge_sigma_mm = float(_load(str(model_path))[1]["input_px_mm"])

    def shared_px(mask_w, rect, local, x0, y0):
        """Pixels of a full-grid mask (bounding rectangle ``rect``) inside ``local`` at (x0, y0)."""
        bx, by, bw, bh = rect
        ix0, iy0 = max(bx, x0), max(by, y0)
        ix1, iy1 = min(bx + bw, x0 + local.shape[1]), min(by + bh, y0 + local.shape[0])
        if ix1 <= ix0 or iy1 <= iy0:
            return 0
        return np.count_nonzero(mask_w[iy0:iy1, ix0:ix1] & local[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0])

    for lum in lumens:
        xw, yw = prep.to_work(lum.contour_px[:, 0], lum.contour_px[:, 1])
        pts16 = np.round(np.stack([xw, yw], axis=1) * 16).astype(np.int32)
        # the lumen rasterised in its bounding box only (an integer shift rasterises the same)
        x0, y0 = max(int(pts16[:, 0].min()) // 16 - 1, 0), max(int(pts16[:, 1].min()) // 16 - 1, 0)
        x1, y1 = min(int(pts16[:, 0].max()) // 16 + 2, w), min(int(pts16[:, 1].max()) // 16 + 2, h)
        if x1 <= x0 or y1 <= y0:
            continue
        local = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(local, [pts16 - np.array([16 * x0, 16 * y0], np.int32)], 1, shift=4)
        local = local.astype(bool)
        area = np.count_nonzero(local)
        if area == 0:
            continue
        cx, cy = prep.to_work(*lum.centroid_px)
        ix, iy = int(round(float(cx))), int(round(float(cy)))
        if not (0 <= iy < h and 0 <= ix < w) or not prep.valid[iy, ix]:
            continue
        if any(shared_px(a.mask_w, rect, local, x0, y0) > max_overlap * min(area, a_area)
               for a, (rect, a_area) in zip(added, added_boxes)):
            continue
        # the overlap rules first: most learned lumens are classical ones seen again, and those
        # are given up without the (dearer) ring contrast; both rules must pass, in either order
        shared = [shared_px(v.mask_w, rect, local, x0, y0) for v, rect in zip(kept, boxes)]
        overlapping = [i for i, (sh, a) in enumerate(zip(shared, areas)) if sh > max_overlap * min(area, a)]
        if overlapping:
            inside = all(shared[i] >= 0.6 * areas[i] for i in overlapping)
            small = sum(areas[i] for i in overlapping) < fragment_fraction * area
            narrow = max(kept[i].diameter_mm for i in overlapping) <= lum.minor_axis_unit_mm / 1.5
            if not (inside and small and narrow):
                continue
        bx, by, bw, bh = cv2.boundingRect(local.view(np.uint8))
        if _below_level_db(prep, local[by:by + bh, bx:bx + bw], x0 + bx, y0 + by) <= -SHADOW_BELOW_DB:
            continue  # the tissue under it is darker still: the top of an acoustic shadow, no lumen
        if not _ring_contrast_box(prep, local[by:by + bh, bx:bx + bw], x0 + bx, y0 + by, inner_mm=1.0,
                                  outer_mm=3.0) >= min_contrast_db:  # NaN (no ring) is not taken either
            continue
        kind = "unknown"
        if overlapping:
            kind = kept[max(overlapping, key=lambda i: areas[i])].kind
            kept = [v for i, v in enumerate(kept) if i not in overlapping]
            areas = [a for i, a in enumerate(areas) if i not in overlapping]
            boxes = [b for i, b in enumerate(boxes) if i not in overlapping]
        mask = np.zeros((h, w), bool)
        mask[y0:y1, x0:x1] = local
        added_boxes.append(((x0 + bx, y0 + by, bw, bh), area))
        rect = cv2.minAreaRect((lum.contour_px * np.array(prep.unit_mm)).astype(np.float32))
        major, minor = max(rect[1]), max(min(rect[1]), 1e-6)
        added.append(VesselDetection(
            contour_px=lum.contour_px, centroid_px=lum.centroid_px, diameter_mm=lum.minor_axis_unit_mm,
            diameter_px=lum.minor_axis_px, kind=kind, long_axis=bool(major / minor > 2.0),
            edge_sigma_mm=edge_sigma_mm, mask_w=mask, sheath_ratio=float("nan"), refined=None))
    return kept + added
