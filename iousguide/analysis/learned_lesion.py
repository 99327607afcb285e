"""Learned lesion model: a lesion probability per pixel, run through OpenCV's DNN module.

The model (``iousguide/models/lesion.onnx``, card in ``iousguide/models/README.md``) is the vessel
model's tiny U-Net trained by ``tools/train_lesion_model.py`` on phantom sweeps (seeds 20000-20549,
none used to develop or evaluate the tracker) with every lesion's true outline as target, and on
real usgra-seg images (no liver lesion in them) as negatives. It reads the whole pattern of a
lesion - a bright body, calcium foci and their shadow, a halo - where the classical lesion maps
see one cue at a time, so the tracker uses it where those find nothing (``TrackingSettings.
learned_lesions``): a proposal when no classical candidate is plausible, the lesion followed when
the classical follow loses it.

::

    prob = lesion_probability(gray, spacing_mm=(0.1, 0.1))      # model grid, 0..1
    cands = learned_lesion_candidates(prep, prob, settings=s)    # TumorCandidate, learned=True
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from iousguide.analysis.imaging import Prepared, components_with_stats
from iousguide.analysis.learned import MODEL_DIR, _load, lumen_probability
from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.tumor import TumorCandidate, elongation_of

LESION_MODEL_PATH = MODEL_DIR / "lesion.onnx"

#: the echo contrast of a learned candidate (its polarity) is read between its body and the
#: tissue in this ring outside it (mm), as the classical candidates' ``contrast_db``
RING_MM = (1.0, 3.0)


def lesion_probability(gray: np.ndarray, *, spacing_mm: tuple[float, float] | None,
                       uncalibrated_depth_mm: float = 50.0,
                       model_path: str | Path = LESION_MODEL_PATH) -> np.ndarray:
    """Lesion probability map of one grey frame.

    Parameters
    ----------
    gray : ndarray, shape (rows, cols) uint8
        B-mode frame (not modified).
    spacing_mm : (float, float) or None
        Pixel size x, y in mm; None = uncalibrated (nominal scale ``uncalibrated_depth_mm / rows``).

    Returns
    -------
    ndarray, shape (h, w) float32
        Probability (0..1) on the model grid (``input_px_mm`` of the model's metadata, 0.4 mm),
        covering the whole frame (see :func:`iousguide.analysis.learned.lumen_probability`).
    """
    return lumen_probability(gray, spacing_mm=spacing_mm, uncalibrated_depth_mm=uncalibrated_depth_mm,
                             model_path=model_path)


def learned_lesion_candidates(prep: Prepared, prob: np.ndarray, *, settings: TrackingSettings,
                              exclude_w: np.ndarray | None = None, min_diameter_mm: float | None = None,
                              peak_threshold: float | None = None,
                              model_path: str | Path = LESION_MODEL_PATH) -> list[TumorCandidate]:
    """Lesion components of a probability map, on the working grid.

    Parameters
    ----------
    prep : Prepared
        The frame the map was computed from.
    prob : ndarray, shape (h, w) float32
        :func:`lesion_probability` of that frame (not modified).
    exclude_w : ndarray (work rows, work cols) bool, optional
        Working-grid pixels that are no lesion (vessel lumens); not modified.
    min_diameter_mm : float, optional
        Smallest equivalent diameter kept (default ``settings.tumor_min_diameter_mm``).
    peak_threshold : float, optional
        A component's highest probability must reach this (default: the model's own).

    Returns
    -------
    list of TumorCandidate
        ``learned`` True, ``peak_probability`` set; ``dark`` and ``contrast_db`` from the mean
        speckle-averaged level (dB) of the component against the tissue 1-3 mm outside it.
        The outline is the model's 0.5 iso-line (``meta["threshold"]``).
    """
    _, meta = _load(str(model_path))
    peak_min = float(meta["peak_threshold"] if peak_threshold is None else peak_threshold)
    level = float(meta["threshold"])
    min_d = settings.tumor_min_diameter_mm if min_diameter_mm is None else float(min_diameter_mm)
    h, w = prep.work_shape
    px = prep.work_px_mm
    prob_w = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
    binary = (prob_w >= level) & prep.valid
    if exclude_w is not None:
        binary &= ~exclude_w
    n, labels, stats, _ = components_with_stats(binary.view(np.uint8))
    min_area_px = np.pi / 4 * min_d ** 2 / (px * px)
    r0, r1 = (int(round(v / px)) for v in RING_MM)
    out: list[TumorCandidate] = []
    for k in range(1, n):
        x0, y0, bw, bh, area = (int(v) for v in stats[k])
        if area < min_area_px:
            continue
        comp = labels[y0:y0 + bh, x0:x0 + bw] == k
        peak = float(prob_w[y0:y0 + bh, x0:x0 + bw][comp].max())
        if peak < peak_min:
            continue
        # echo polarity and contrast: the body against a ring of tissue outside it (in its window)
        xa, ya = max(x0 - r1, 0), max(y0 - r1, 0)
        xb, yb = min(x0 + bw + r1, w), min(y0 + bh + r1, h)
        own = np.zeros((yb - ya, xb - xa), np.uint8)
        own[y0 - ya:y0 - ya + bh, x0 - xa:x0 - xa + bw] = comp
        dist = cv2.distanceTransform(1 - own, cv2.DIST_L2, 3)
        ring = (dist > r0) & (dist <= r1) & prep.valid[ya:yb, xa:xb] & ~binary[ya:yb, xa:xb]
        if exclude_w is not None:
            ring &= ~exclude_w[ya:yb, xa:xb]
        if not ring.any():
            continue
        smooth = prep.smooth[ya:yb, xa:xb]
        contrast = float(np.mean(smooth[own.view(bool)]) - np.median(smooth[ring]))
        mask = np.zeros((h, w), dtype=bool)
        mask[y0:y0 + bh, x0:x0 + bw] = comp
        contours, _ = cv2.findContours(comp.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        outline = max(contours, key=cv2.contourArea)
        hull_area = cv2.contourArea(cv2.convexHull(outline))
        solidity = cv2.contourArea(outline) / hull_area if hull_area > 0 else 0.0
        ys, xs = np.nonzero(comp)
        dark = contrast < 0.0
        touches = bool(x0 == 0 or y0 == 0 or x0 + bw == w or y0 + bh == h
                       or not prep.valid[y0:y0 + bh, x0:x0 + bw][cv2.dilate(comp.astype(np.uint8),
                                                                              np.ones((3, 3), np.uint8)).view(bool)].all())
        out.append(TumorCandidate(
            mask_w=mask, bbox_w=(x0, y0, bw, bh), area_mm2=float(area) * px * px,
            centroid_w=(float(xs.mean() + x0), float(ys.mean() + y0)), dark=dark,
            contrast_db=abs(contrast), solidity=float(solidity), touches_border=touches,
            elongation=1.0 if dark else elongation_of(comp.astype(np.uint8)),
            learned=True, peak_probability=peak))
    return out
