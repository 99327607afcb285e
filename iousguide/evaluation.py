"""Score per-frame analysis results (JSON lines) against phantom ground truth.

Metrics (all documented in recordings/README.md, "Scoring"):

* **Tumour Dice** per frame where the truth shows a tumour (also reported over
  frames whose true section is >= 3 mm equivalent diameter): both outlines are
  rasterised by the same rule (a pixel counts when its centre lies inside the
  polygon, even-odd rule). The result is compared with the truth tumour that
  contains its centroid, else with the primary tumour. A frame where the truth
  has a tumour and the result none scores 0.
* **Vessel matching** per frame: a result vessel and a truth vessel are a
  candidate pair when the result centroid lies inside the truth lumen outline
  or the truth centroid inside the result outline; pairs are taken one-to-one,
  closest centroids first.
* **Recall / precision by diameter band** (< 3, 3-5, > 5 mm, and >= 3 mm
  together): a truth vessel's band is its in-plane diameter (``diameter_mm``); an
  unmatched result vessel is banded by its own ``diameter_mm`` ("unknown" when
  null).
* **Distance error** (result - truth, mm) over matched vessels whose true
  distance is <= ``near_mm`` (15 mm) and both values exist: MAE, p95 of the
  absolute error, bias.
* **Diameter error** over matched vessels with true diameter >= 3 mm that are
  not clipped by the image or fan border.
* **Id switches**: for each truth vessel, the number of times the matched
  result id changes between successive frames where it is matched.
* **Heat-sink agreement**: matched vessels whose result carries
  ``heat_sink.class``; compared with the truth class for the result's
  ``heat_sink.modality`` (or the ``modality`` argument).
* **No-signal frames**: how many probe-lift frames the result also marks
  ``no_signal``, and how many other frames it wrongly marks so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from iousguide.errors import CorruptDataError, SettingsError, UnsupportedFormatError

BANDS = ("<3", "3-5", ">5")
NEAR_MM = 15.0

#: A truth lumen whose contrast-to-noise in its frame (:func:`lumen_contrast_to_noise`) is below
#: this is *faint*: deep in the image the receiver noise fills a lumen and the tissue alike, and a
#: lumen at CNR < 2 is within the speckle's own fluctuation at the lumen's scale (tissue spots as
#: dark are common at that depth). Faint vessels stay in every recall figure; the recall over the
#: others is reported beside it, so a miss of an invisible vessel and a miss of a visible one
#: can be told apart.
FAINT_CNR = 2.0


# ----------------------------------------------------------------------------- geometry
def rasterize(polygon, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside a polygon (even-odd rule).

    Parameters
    ----------
    polygon : array-like (N, 2)
        Vertices (x, y) in pixels; closed implicitly.
    shape : (rows, cols)

    Returns
    -------
    ndarray (rows, cols) bool
    """
    mask = np.zeros(shape, bool)
    p = np.asarray(polygon, float).reshape(-1, 2)
    if len(p) < 3:
        return mask
    x0, y0 = p[:, 0], p[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    r_lo = max(int(math.ceil(p[:, 1].min())), 0)
    r_hi = min(int(math.floor(p[:, 1].max())), shape[0] - 1)
    if r_hi < r_lo:
        return mask
    rows = np.arange(r_lo, r_hi + 1, dtype=float)
    cross = (y0[None, :] <= rows[:, None]) != (y1[None, :] <= rows[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):  # horizontal edges: never crossed, masked by `cross`
        t = (rows[:, None] - y0[None, :]) / (y1 - y0)[None, :]
        xs = x0[None, :] + t * (x1 - x0)[None, :]
    cols = np.arange(shape[1], dtype=float)
    for i, r in enumerate(rows.astype(int)):
        xi = np.sort(xs[i, cross[i]])
        if len(xi) < 2:
            continue
        # number of crossings right of each pixel centre: odd = inside
        right = len(xi) - np.searchsorted(xi, cols, side="right")
        mask[r] = (right % 2) == 1
    return mask


def point_in_polygon(point, polygon) -> bool:
    """Even-odd test of one point (x, y) against a polygon (N, 2)."""
    p = np.asarray(polygon, float).reshape(-1, 2)
    if len(p) < 3 or point is None:
        return False
    x, y = float(point[0]), float(point[1])
    x0, y0 = p[:, 0], p[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    cross = (y0 <= y) != (y1 <= y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x0 + (y - y0) / (y1 - y0) * (x1 - x0)
    return bool(np.sum(cross & (xs > x)) % 2)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def _polygons(item: dict) -> list:
    polys = [item.get("contour_px") or []]
    polys += item.get("contours_px") or []
    return [p for p in polys if len(p) >= 3]


def _raster_item(item: dict, shape) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for poly in _polygons(item):
        mask |= rasterize(poly, shape)
    return mask


def band_of(diameter_mm: float | None) -> str:
    if diameter_mm is None:
        return "unknown"
    return "<3" if diameter_mm < 3.0 else ("3-5" if diameter_mm <= 5.0 else ">5")


# ----------------------------------------------------------------------------- io
def load_results(path: str | Path) -> list[dict]:
    """Read analysis results (JSON lines, one object per frame with a "frame" key)."""
    path = Path(path)
    if not path.exists():
        raise UnsupportedFormatError(f"results file not found: {path}")
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorruptDataError(f"{path}:{n}: not JSON ({exc.msg})") from None
            if isinstance(obj, dict) and "frame" in obj:
                out.append(obj)
    if not out:
        raise CorruptDataError(f"{path} holds no per-frame results (JSON objects with a 'frame' key)")
    return out


def truth_path_for(path: str | Path) -> Path:
    """Accept a truth file or a recording path (``x.mp4`` -> ``x.truth.jsonl.gz`` beside it)."""
    path = Path(path)
    if path.name.endswith((".truth.jsonl.gz", ".truth.jsonl")):
        return path
    name = path.name
    for suffix in (".igs.mha", ".mp4", ".dcm", ".mha", ".avi"):
        if name.endswith(suffix):
            candidate = path.with_name(name[: -len(suffix)] + ".truth.jsonl.gz")
            if candidate.exists():
                return candidate
    return path


# ----------------------------------------------------------------------------- scoring
def _stats(errors: list[float]) -> dict[str, Any]:
    if not errors:
        return {"n": 0, "mae": None, "p95": None, "bias": None}
    e = np.asarray(errors, float)
    return {"n": int(len(e)), "mae": round(float(np.mean(np.abs(e))), 4),
            "p95": round(float(np.percentile(np.abs(e), 95)), 4), "bias": round(float(np.mean(e)), 4)}


def _centroid(item: dict):
    c = item.get("centroid_px")
    if c is not None:
        return c
    polys = _polygons(item)
    return np.mean(np.asarray(polys[0], float), axis=0) if polys else None


def match_vessels(result_vessels: list[dict], truth_vessels: list[dict]) -> list[tuple[int, int]]:
    """One-to-one matches (result index, truth index) by the documented rule."""
    candidates = []
    for i, rv in enumerate(result_vessels):
        rc = _centroid(rv)
        for j, tv in enumerate(truth_vessels):
            tc = _centroid(tv)
            hit = rc is not None and any(point_in_polygon(rc, p) for p in _polygons(tv))
            hit = hit or (tc is not None and any(point_in_polygon(tc, p) for p in _polygons(rv)))
            if hit:
                d = math.hypot(float(rc[0]) - float(tc[0]), float(rc[1]) - float(tc[1])) if rc is not None else 0.0
                candidates.append((d, i, j))
    used_r, used_t, pairs = set(), set(), []
    for _, i, j in sorted(candidates):
        if i not in used_r and j not in used_t:
            used_r.add(i)
            used_t.add(j)
            pairs.append((i, j))
    return pairs


def evaluate_results(results: Iterable[dict], truth, *, modality: str = "rfa", near_mm: float = NEAR_MM,
                     images=None) -> dict:
    """Score one recording.

    Parameters
    ----------
    results : iterable of dict
        Per-frame result objects (the analysis JSON-lines contract).
    truth : iousguide.phantom.CaseTruth
    modality : {"rfa", "mwa"}
        Heat-sink modality used when a result's ``heat_sink`` does not name one.
    near_mm : float
        Distance errors are scored for vessels whose true distance is <= this (mm).
    images : mapping or callable, optional
        Frame index -> the frame's grey pixels ((rows, cols) uint8; None when not available).
        When given, each truth vessel >= 3 mm is also scored for visibility
        (:func:`lumen_contrast_to_noise` < ``FAINT_CNR``: faint) and the report's vessels gain
        ``recall_ge3mm_visible`` and ``faint_ge3mm``; every other figure is the same.

    Returns
    -------
    dict
        JSON-ready report (see the module docstring for every metric).
    """
    modality = modality.lower()
    if modality not in ("rfa", "mwa"):
        raise SettingsError(f"modality must be rfa or mwa, got {modality!r}")
    header = truth.header
    width, height = header.get("frame_size_px", [0, 0])
    shape = (int(height), int(width))
    by_frame = {int(r["frame"]): r for r in results}
    recall_counts = {b: [0, 0] for b in BANDS}  # matched, total truth
    precision_counts = {b: [0, 0] for b in BANDS + ("unknown",)}  # true positives, all results
    dist_err, diam_err, diam_err_all = [], [], []
    dices, dices_big, tumour_frames, tumour_detected, tumour_false = [], [], 0, 0, 0
    last_match: dict[int, int] = {}
    switches = 0
    hs_total = hs_agree = 0
    hs_confusion: dict[str, int] = {}
    lift_total = lift_hit = false_no_signal = 0
    missing = 0
    faint_counts = [0, 0]  # matched, total truth vessels >= 3 mm that are faint
    get_image = None if images is None else (images if callable(images) else images.get)
    spacing = header.get("spacing_mm")
    for tf in truth.frames:
        index = int(tf["frame"])
        rf = by_frame.get(index)
        if rf is None:
            missing += 1
            rf = {"frame": index, "status": "missing", "tumor": None, "vessels": []}
        if tf.get("status") == "no_signal":
            lift_total += 1
            lift_hit += rf.get("status") == "no_signal"
            continue
        false_no_signal += rf.get("status") == "no_signal"
        # --- tumour
        truth_tumors = tf.get("tumors") or ([tf["tumor"]] if tf.get("tumor") else [])
        rt = rf.get("tumor")
        if truth_tumors:
            tumour_frames += 1
            target = next((t for t in truth_tumors if t.get("primary")), truth_tumors[0])
            if rt and _polygons(rt):
                tumour_detected += 1
                rc = _centroid(rt)
                for t in truth_tumors:
                    if any(point_in_polygon(rc, p) for p in _polygons(t)):
                        target = t
                        break
                dices.append(dice(_raster_item(rt, shape), _raster_item(target, shape)))
            else:
                dices.append(0.0)
            if (target.get("equivalent_diameter_mm") or 0.0) >= 3.0:
                dices_big.append(dices[-1])
        elif rt and _polygons(rt):
            tumour_false += 1
        # --- vessels
        tv_list = tf.get("vessels") or []
        rv_list = rf.get("vessels") or []
        pairs = match_vessels(rv_list, tv_list)
        matched_t = {j: i for i, j in pairs}
        matched_r = {i for i, _ in pairs}
        gray = get_image(index) if get_image is not None and spacing else None
        for j, tv in enumerate(tv_list):
            band = band_of(tv.get("diameter_mm"))
            recall_counts[band][1] += 1
            if j in matched_t:
                recall_counts[band][0] += 1
            if gray is not None and band != "<3":
                others = [o["contour_px"] for o in tv_list if o is not tv] + [p for t in truth_tumors for p in _polygons(t)]
                cnr = lumen_contrast_to_noise(gray, tv["contour_px"], spacing_mm=_pair(spacing),
                                              diameter_mm=float(tv["diameter_mm"]), others=others)
                if cnr is not None and cnr < FAINT_CNR:
                    faint_counts[1] += 1
                    faint_counts[0] += j in matched_t
        for i, rv in enumerate(rv_list):
            if i in matched_r:
                tv = tv_list[next(j for ii, j in pairs if ii == i)]
                band = band_of(tv.get("diameter_mm"))
                precision_counts[band][0] += 1
            else:
                band = band_of(rv.get("diameter_mm"))
            precision_counts[band][1] += 1
        for i, j in pairs:
            rv, tv = rv_list[i], tv_list[j]
            t_d, r_d = tv.get("distance_mm"), rv.get("distance_mm")
            if t_d is not None and r_d is not None and t_d <= near_mm:
                dist_err.append(float(r_d) - float(t_d))
            t_dia, r_dia = tv.get("diameter_mm"), rv.get("diameter_mm")
            if t_dia is not None and r_dia is not None and not tv.get("clipped"):
                diam_err_all.append(float(r_dia) - float(t_dia))
                if t_dia >= 3.0:
                    diam_err.append(float(r_dia) - float(t_dia))
            vid = int(tv["id"])
            rid = rv.get("id")
            if vid in last_match and rid != last_match[vid]:
                switches += 1
            last_match[vid] = rid
            hs = rv.get("heat_sink")
            if isinstance(hs, dict) and hs.get("class") is not None and tv.get("heat_sink"):
                mod = str(hs.get("modality") or modality).lower()
                truth_class = tv["heat_sink"].get(mod, tv["heat_sink"].get(modality))
                hs_total += 1
                hs_agree += str(hs["class"]).lower() == truth_class
                key = f"{truth_class}->{str(hs['class']).lower()}"
                hs_confusion[key] = hs_confusion.get(key, 0) + 1

    def ratio(a, b):
        return None if b == 0 else round(a / b, 4)

    recall = {b: {"matched": m, "truth": t, "recall": ratio(m, t)} for b, (m, t) in recall_counts.items()}
    precision = {b: {"true_positive": tp, "results": n, "precision": ratio(tp, n)} for b, (tp, n) in precision_counts.items()}
    m3 = recall_counts["3-5"][0] + recall_counts[">5"][0]
    t3 = recall_counts["3-5"][1] + recall_counts[">5"][1]
    tp3 = precision_counts["3-5"][0] + precision_counts[">5"][0]
    n3 = precision_counts["3-5"][1] + precision_counts[">5"][1]
    n_frames = len(truth.frames)
    return {
        "recording": header.get("name", ""),
        "frames": n_frames,
        "frames_missing_in_results": missing,
        "tumor": {
            "frames_with_truth_tumor": tumour_frames,
            "frames_detected": tumour_detected,
            "frames_false_tumor": tumour_false,
            "dice_mean": round(float(np.mean(dices)), 4) if dices else None,
            "dice_median": round(float(np.median(dices)), 4) if dices else None,
            "dice_mean_sections_ge3mm": round(float(np.mean(dices_big)), 4) if dices_big else None,
            "frames_sections_ge3mm": len(dices_big),
        },
        "vessels": {
            "recall_by_band": recall,
            "precision_by_band": precision,
            "recall_ge3mm": ratio(m3, t3),
            "precision_ge3mm": ratio(tp3, n3),
            **({} if get_image is None or not spacing else {
                "recall_ge3mm_visible": ratio(m3 - faint_counts[0], t3 - faint_counts[1]),
                "faint_ge3mm": {"matched": faint_counts[0], "truth": faint_counts[1], "cnr_below": FAINT_CNR}}),
            "matching_rule": "result centroid inside truth lumen or truth centroid inside result outline; "
                             "one-to-one, nearest centroids first",
        },
        "distance_error_mm": {**_stats(dist_err), "near_mm": near_mm},
        "diameter_error_mm": {**_stats(diam_err), "min_truth_diameter_mm": 3.0, "all_sizes": _stats(diam_err_all)},
        "id_switches": switches,
        "id_switches_per_100_frames": round(100.0 * switches / max(n_frames, 1), 3),
        "heat_sink": {"compared": hs_total, "agreement": ratio(hs_agree, hs_total), "confusion": hs_confusion,
                      "default_modality": modality},
        "no_signal": {"lift_frames": lift_total, "detected": lift_hit, "false_no_signal_frames": false_no_signal},
    }


def evaluate_files(results_path: str | Path, truth_path: str | Path, **options) -> dict:
    """Load and score one (results, truth) pair; see :func:`evaluate_results`. When
    ``truth_path`` is the recording itself (its truth file beside it), its frames are decoded
    too and the faint vessels are scored (``images``)."""
    from iousguide.phantom import read_truth

    truth_file = truth_path_for(truth_path)
    truth = read_truth(truth_file)
    results = load_results(results_path)
    if truth_file == Path(truth_path) or "images" in options:  # (given the truth file: no pixels)
        report = evaluate_results(results, truth, **options)
    else:
        from iousguide.acquisition import open_source

        with open_source(str(truth_path)) as source:  # no calibration: frames in source pixels
            report = evaluate_results(results, truth, images=_SequentialImages(iter(source)), **options)
    report["results_file"] = str(results_path)
    report["truth_file"] = str(truth_file)
    return report


class _SequentialImages:
    """Frame index -> grey pixels, read forward from a source's frames (truth frames come in
    order; only the current frame is held). None for an index the source skipped or ended before."""

    def __init__(self, frames):
        self._frames = frames
        self._current = None

    def __call__(self, index: int):
        while self._current is None or self._current.index < index:
            self._current = next(self._frames, None)
            if self._current is None:
                self._frames = iter(())
                return None
        return np.ascontiguousarray(self._current.gray) if self._current.index == index else None


def _fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(report: dict) -> str:
    """Human-readable table of one recording's scores."""
    t, v = report["tumor"], report["vessels"]
    d, di = report["distance_error_mm"], report["diameter_error_mm"]
    lines = [
        f"== {report['recording']}  ({report['frames']} frames, {report['frames_missing_in_results']} missing in results)",
        f"  tumour Dice          mean {_fmt(t['dice_mean'])}  median {_fmt(t['dice_median'])}  "
        f"(sections >= 3 mm: {_fmt(t['dice_mean_sections_ge3mm'])}, n={t['frames_sections_ge3mm']})  "
        f"detected {t['frames_detected']}/{t['frames_with_truth_tumor']}  false-tumour frames {t['frames_false_tumor']}",
        "  vessels  band        recall (matched/truth)   precision (tp/results)",
    ]
    for band in BANDS:
        r, p = v["recall_by_band"][band], v["precision_by_band"][band]
        counts_r = f"({r['matched']}/{r['truth']})"
        counts_p = f"({p['true_positive']}/{p['results']})"
        lines.append(f"           {band:<10}  {_fmt(r['recall']):>6} {counts_r:<18}{_fmt(p['precision']):>6} {counts_p}")
    lines.append(f"           >=3 mm      {_fmt(v['recall_ge3mm']):>6} {'':<18}{_fmt(v['precision_ge3mm']):>6}")
    if "faint_ge3mm" in v:
        f = v["faint_ge3mm"]
        lines.append(f"           >=3 mm visible {_fmt(v['recall_ge3mm_visible']):>6}  (faint, CNR < {f['cnr_below']:g}: "
                     f"{f['matched']}/{f['truth']} matched, left out)")
    lines.append(f"  distance error (<= {d['near_mm']:g} mm)  MAE {_fmt(d['mae'])}  p95 {_fmt(d['p95'])}  "
                 f"bias {_fmt(d['bias'])}  n={d['n']}")
    lines.append(f"  diameter error (>= 3 mm)  MAE {_fmt(di['mae'])}  p95 {_fmt(di['p95'])}  bias {_fmt(di['bias'])}  "
                 f"n={di['n']}")
    hs, ns = report["heat_sink"], report["no_signal"]
    lines.append(f"  id switches {report['id_switches']} ({_fmt(report['id_switches_per_100_frames'], 2)}/100 frames)"
                 f"   heat-sink agreement {_fmt(hs['agreement'])} (n={hs['compared']})"
                 f"   no-signal {ns['detected']}/{ns['lift_frames']} (false {ns['false_no_signal_frames']})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- visibility
def _pair(spacing) -> tuple[float, float]:
    """A truth header's ``spacing_mm`` (x, y) or one number -> (x, y) floats."""
    if isinstance(spacing, (int, float)):
        return float(spacing), float(spacing)
    return float(spacing[0]), float(spacing[1])


def lumen_contrast_to_noise(gray: np.ndarray, contour_px, *, spacing_mm: tuple[float, float], diameter_mm: float,
                            others=()) -> float | None:
    """How far a truth lumen stands out of the speckle of its own frame.

    The frame's grey levels (log-compressed: proportional to dB) are averaged by a Gaussian of
    sigma 0.3 x the lumen's radius (0.3-1.5 mm: the scale at which a lumen of that size is
    seen). CNR = (mean of that average 1-3 mm outside the lumen - mean over the lumen's core,
    deeper than 0.4 x its radius) / the robust spread (1.4826 x MAD) of that average over the
    tissue at the lumen's depth
    (its rows, within 16 mm beside it, 3 mm or more from it). Pixels within 1 mm of black
    (outside a convex fan, below the view) and inside ``others`` are left out of all three.

    Parameters
    ----------
    gray : ndarray (rows, cols) uint8
        The frame (not modified).
    contour_px : array-like (N, 2)
        The lumen outline, frame pixels (x, y).
    spacing_mm : (float, float)
        Pixel size x, y in mm.
    diameter_mm : float
        The lumen's diameter (sets the averaging scale).
    others : iterable of array-like (M, 2)
        Outlines of the frame's other structures (vessels, tumours), frame pixels.

    Limitation: a lumen inside an acoustic shadow reads fainter than the eye sees it (its ring is
    the shadow, darker than tissue, while the noise is the tissue's): seed 10612's 3.2 mm pedicle
    below a calcified lesion scores 0.9-1.7 though a black disc is visible in the shadow.

    Returns
    -------
    float or None
        The contrast-to-noise ratio (positive: darker than its surroundings); None when the
        lumen's core, its ring or the tissue beside it has too few pixels in the view.
    """
    sx, sy = float(spacing_mm[0]), float(spacing_mm[1])
    pts = np.asarray(contour_px, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3 or not (sx > 0 and sy > 0) or not diameter_mm > 0:
        return None
    rows, cols = gray.shape[:2]
    radius_mm = 0.5 * float(diameter_mm)
    margin_mm = max(16.0, radius_mm + 4.0)
    x0 = max(int(np.floor(pts[:, 0].min() - margin_mm / sx)), 0)
    x1 = min(int(np.ceil(pts[:, 0].max() + margin_mm / sx)) + 1, cols)
    y0 = max(int(np.floor(pts[:, 1].min() - 4.0 / sy)), 0)
    y1 = min(int(np.ceil(pts[:, 1].max() + 4.0 / sy)) + 1, rows)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return None
    import cv2  # (only this function needs OpenCV)

    roi = np.ascontiguousarray(gray[y0:y1, x0:x1], dtype=np.float32)
    sigma_mm = min(max(0.3 * radius_mm, 0.3), 1.5)
    smooth = cv2.GaussianBlur(roi, (0, 0), sigmaX=sigma_mm / sx, sigmaY=sigma_mm / sy, borderType=cv2.BORDER_REFLECT)
    shift = np.array([x0, y0], dtype=np.float64)

    def fill(polygon) -> np.ndarray:
        mask = np.zeros(roi.shape, np.uint8)
        p = np.round((np.asarray(polygon, dtype=np.float64).reshape(-1, 2) - shift) * 16).astype(np.int32)
        if len(p) >= 3:
            cv2.fillPoly(mask, [p], 1, shift=4)
        return mask

    # mm-true distances on an anisotropic grid: scale rows to the column pixel size
    def dist_mm(mask_outside: np.ndarray) -> np.ndarray:
        """Distance (mm) of every pixel to the nearest zero of ``mask_outside`` (uint8)."""
        if sy == sx:
            return cv2.distanceTransform(mask_outside, cv2.DIST_L2, 5) * sx
        h = max(int(round(mask_outside.shape[0] * sy / sx)), 1)
        big = cv2.resize(mask_outside, (mask_outside.shape[1], h), interpolation=cv2.INTER_NEAREST)
        d = cv2.distanceTransform(big, cv2.DIST_L2, 5) * sx
        return cv2.resize(d, (mask_outside.shape[1], mask_outside.shape[0]), interpolation=cv2.INTER_LINEAR)

    lumen = fill(pts)
    if not lumen.any():
        return None
    depth_in = dist_mm(lumen)  # inside the lumen: mm to its edge
    depth_out = dist_mm(1 - lumen)  # outside: mm to the lumen
    other = np.zeros(roi.shape, np.uint8)
    for polygon in others:
        other |= fill(polygon)
    near_other = dist_mm(1 - other) <= 1.0 if other.any() else np.zeros(roi.shape, bool)
    # black outside the view (beside a fan, below it): not an anechoic lumen's own black core, nor
    # a dark speckle spot (regions narrower than 1 mm are opened away)
    black = ((roi <= 0) & (depth_out > 1.0) & ~near_other).astype(np.uint8)
    if black.any():
        kx, ky = max(int(round(0.5 / sx)), 1), max(int(round(0.5 / sy)), 1)
        black = cv2.morphologyEx(black, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                                                   (2 * kx + 1, 2 * ky + 1)))
    in_view = dist_mm(1 - black) > 1.0 if black.any() else np.ones(roi.shape, bool)
    free = in_view & ~near_other
    core = (depth_in > 0.4 * radius_mm) & in_view
    ring = (depth_out >= 1.0) & (depth_out <= 3.0) & free
    lumen_rows = np.flatnonzero(lumen.any(axis=1))
    band = np.zeros(roi.shape, bool)
    band[lumen_rows[0]:lumen_rows[-1] + 1, :] = True
    tissue = band & (depth_out >= 3.0) & free
    if np.count_nonzero(core) < 3 or np.count_nonzero(ring) < 10 or np.count_nonzero(tissue) < 50:
        return None
    # robust spread (1.4826 x MAD): a shadow or an unlisted structure beside the lumen is not noise
    vals = smooth[tissue]
    noise = 1.4826 * float(np.median(np.abs(vals - np.median(vals))))
    if not noise > 0:
        return None
    return (float(np.mean(smooth[ring])) - float(np.mean(smooth[core]))) / noise


# ----------------------------------------------------------------------------- real vessel images
#: a truth vessel of a vessels_usgra mask is a connected (0, 128, 0) region of at least this size
USGRA_MIN_VESSEL_PX = 30


def usgra_vessel_mask(mask_bgr: np.ndarray) -> np.ndarray:
    """Vessel pixels of a vessels_usgra mask read by OpenCV (BGR; vessel = RGB (0, 128, 0))
    -> (h, w) bool."""
    return (mask_bgr[:, :, 1] > 100) & (mask_bgr[:, :, 2] < 60) & (mask_bgr[:, :, 0] < 60)


def score_vessel_images(folder: str | Path, names: list[str], detect) -> dict[str, Any]:
    """Vessel recall, precision and Dice of a detector on real images with expert masks.

    A truth vessel (connected region of :func:`usgra_vessel_mask`, >= ``USGRA_MIN_VESSEL_PX``)
    is found when a detection overlaps it with IoU >= 0.3 or has its centroid inside it; a
    detection is a true positive when it hits any truth vessel that way. Dice: all detections
    vs all truth vessel pixels, pooled and per image.

    Parameters
    ----------
    folder : path
        Holds ``images/NAME`` (grey) and ``masks/NAME`` (RGB).
    names : list of str
        Image file names to score.
    detect : callable
        ``detect(gray uint8 (h, w)) -> [(contour_px (N, 2), centroid_px (x, y)), ...]`` in pixels.
    """
    import cv2

    folder = Path(folder)
    found = total = tp = dets = 0
    inter = union_sum = 0
    dices = []
    for name in names:
        img = cv2.imread(str(folder / "images" / name), cv2.IMREAD_GRAYSCALE)
        truth = usgra_vessel_mask(cv2.imread(str(folder / "masks" / name), cv2.IMREAD_COLOR))
        det = np.zeros(img.shape, np.uint8)
        det_masks = []
        for contour, cen in detect(img):
            dm = np.zeros(img.shape, np.uint8)
            cv2.fillPoly(dm, [np.round(np.asarray(contour) * 8).astype(np.int32)], 1, shift=3)
            det_masks.append((dm.astype(bool), cen))
            det |= dm
        n, lab = cv2.connectedComponents(truth.astype(np.uint8))
        regions = [lab == k for k in range(1, n) if np.count_nonzero(lab == k) >= USGRA_MIN_VESSEL_PX]

        def hit(region, dmask, cen):
            cx, cy = int(round(cen[0])), int(round(cen[1]))
            inside = 0 <= cy < region.shape[0] and 0 <= cx < region.shape[1] and region[cy, cx]
            i = np.count_nonzero(region & dmask)
            u = np.count_nonzero(region | dmask)
            return bool(inside or (u and i / u >= 0.3))

        for region in regions:
            total += 1
            found += any(hit(region, dm, c) for dm, c in det_masks)
        for dm, c in det_masks:
            dets += 1
            tp += any(hit(region, dm, c) for region in regions)
        d = det.astype(bool)
        inter += np.count_nonzero(d & truth)
        union_sum += np.count_nonzero(d) + np.count_nonzero(truth)
        if np.count_nonzero(truth):
            dices.append(2 * np.count_nonzero(d & truth) / (np.count_nonzero(d) + np.count_nonzero(truth)))
    return {"images": len(names), "truth_vessels": total, "recall": found / total if total else None,
            "precision": tp / dets if dets else None, "detections": dets,
            "dice_pooled": 2 * inter / union_sum if union_sum else None,
            "dice_mean_per_image": float(np.mean(dices)) if dices else None}
