"""Automatic tumour proposals: what is proposed, when, and what its candidates look like.

    python tools/diag_tumor_proposals.py --sweep ../shared/data/liver_sweep/liver_sweep_imfusion_h264.mp4 \
        [--sweep-spacing-mm 0.3148] [--overlay DIR] [--jsonl OUT]
    python tools/diag_tumor_proposals.py --seeds 8200-8299 [--frames 15] [--jsonl OUT]
    python tools/diag_tumor_proposals.py --usgra ../shared/data/vessels_usgra   # the 'rest' part only

Per case it prints the tumour statuses and, on phantom cases, the tumour Dice (mean over the
frames where the truth shows a tumour), the frames where the reported tumour matches the truth
(Dice >= 0.5: "found"), and the delay from the truth tumour's first frame to the first frame the
tracker reports it (``first_report``; None when never). ``--jsonl`` writes one line per plausible
automatic candidate per frame with its features (tracker's own and the extra ones of
:func:`candidate_features`), whether it is the frame's reported tumour, and on phantom cases
whether it lies on the true lesion: the material to compare false proposals (real liver,
usgra) with true ones (phantom development seeds). Never run it on held-out seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from iousguide.analysis.settings import TrackingSettings, parse_setting_overrides
from iousguide.analysis.tracker import Tracker
from iousguide.analysis.tumor import _all_around, elongation_of, plausible_auto

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_tracking import dice, parse_range, primary_tumor  # noqa: E402


def candidate_features(prep, c, *, vessel_w: np.ndarray, lumens_w: np.ndarray, settings: TrackingSettings) -> dict:
    """Extra features of a candidate (working grid): depth below the top of the view (mm), core
    level (dB re tissue), speckle spread inside and in the 1-3 mm ring outside (dB), fraction of
    its 1 mm outer ring on lumens, compactness 4 pi A / P^2 and the IoU with its fitted ellipse."""
    px = prep.work_px_mm
    rel = prep.smooth - prep.tissue_row[:, None].astype(np.float32)
    m = c.mask_w.astype(np.uint8)
    core = cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)), iterations=max(int(1.0 / px), 1))
    core = core.astype(bool) if core.any() else m.astype(bool)
    d_out = cv2.distanceTransform(1 - m, cv2.DIST_L2, 3)
    ring = (d_out > 1.0 / px) & (d_out <= 3.0 / px) & prep.valid
    near = (d_out > 0) & (d_out <= 1.0 / px) & prep.valid
    lum = vessel_w | lumens_w
    cx, cy = c.centroid_w
    col = int(round(cx))
    top = int(np.argmax(prep.valid[:, col])) if prep.valid[:, col].any() else 0
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cnt = max(contours, key=cv2.contourArea)
    per = cv2.arcLength(cnt, True)
    area = float(np.count_nonzero(m))
    compact = 4 * np.pi * area / per ** 2 if per > 0 else 0.0
    ell_iou = None
    if len(cnt) >= 5:
        ell = cv2.fitEllipse(cnt)
        em = np.zeros_like(m)
        cv2.ellipse(em, ell, 1, -1)
        inter = np.count_nonzero(em & m)
        uni = np.count_nonzero(em | m)
        ell_iou = inter / uni if uni else 0.0
    sigma = settings.tumor_smoothing_mm / px
    rel_t = cv2.GaussianBlur(prep.smooth, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    rel_t = rel_t - prep.tissue_row[:, None].astype(np.float32)
    around = _all_around(rel_t if not c.dark else -rel_t, c.mask_w, c.bbox_w, valid=prep.valid & ~lum, px=px)
    sign = -1.0 if c.dark else 1.0
    inside = c.mask_w
    vals = sign * rel_t[inside]
    rel0 = sign * rel[inside]
    ys, xs = np.nonzero(inside)
    upper = vals >= np.median(vals)
    core_axis = _axis_ratio(xs[upper], ys[upper])
    power = 10.0 ** (np.clip(vals, -30, 30) / 10.0)
    power_axis = _axis_ratio(xs, ys, weights=power)
    return {
        "around8": int(around),
        "fill_frac": float(np.mean(rel0 > settings.tumor_contrast_db)),
        "core_axis": core_axis,
        "power_axis": power_axis,
        "depth_mm": float((cy - top) * px),
        "core_db": float(np.median(rel[core])),
        "in_std_db": float(np.std(prep.smooth[core])),
        "ring_std_db": float(np.std(prep.smooth[ring])) if ring.any() else None,
        "ring_db": float(np.mean(rel[ring])) if ring.any() else None,
        "lumen_adjacent": float(np.count_nonzero(near & lum) / max(np.count_nonzero(near), 1)),
        "compactness": float(compact),
        "ellipse_iou": ell_iou,
        "axis_ratio": float(elongation_of(m)),
    }


def _axis_ratio(xs, ys, weights=None) -> float:
    """Long over short axis of a point set from its (weighted) second moments."""
    if len(xs) < 3:
        return float("nan")
    w = np.ones(len(xs)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mx, my = float(np.sum(w * xs)), float(np.sum(w * ys))
    cxx, cyy = float(np.sum(w * (xs - mx) ** 2)), float(np.sum(w * (ys - my) ** 2))
    cxy = float(np.sum(w * (xs - mx) * (ys - my)))
    lam = np.linalg.eigvalsh(np.array([[cxx, cxy], [cxy, cyy]]))
    return float(np.sqrt(lam[1] / lam[0])) if lam[0] > 0 else float("inf")


def _truth_mask(tt, shape, prep):
    """Truth tumour contour (source px == frame px for the phantom) -> working-grid mask."""
    mf = np.zeros(shape, np.uint8)
    cv2.fillPoly(mf, [np.round(np.asarray(tt["contour_px"]) * 8).astype(np.int32)], 1, shift=3)
    return cv2.resize(mf, (prep.work_shape[1], prep.work_shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)


def run_frames(frames, truth=None, *, settings: TrackingSettings, name: str, sink=None, overlay: str | None = None):
    tracker = Tracker(settings)
    captured = {}
    orig = tracker._follow_tumor

    def follow(prep, candidates, seed_px, vessel_frame, vessels, messages, *, lumens_w):
        out = orig(prep, candidates, seed_px, vessel_frame, vessels, messages, lumens_w=lumens_w)
        captured.update(prep=prep, candidates=candidates, vessels=vessels, lumens_w=lumens_w, out=out)
        return out

    tracker._follow_tumor = follow
    statuses, labels = Counter(), Counter()
    dices, found, first_truth, first_report = [], 0, None, None
    for i, frame in enumerate(frames):
        captured.clear()
        res = tracker.process(frame)
        statuses[res.status] += 1
        tt = primary_tumor(truth.frames[i]) if truth is not None else None
        if tt is not None and first_truth is None:
            first_truth = i
        d = None
        if tt is not None:
            d = dice(tt["contour_px"], None if res.tumor is None else res.tumor.contour_px, frame.shape)
            dices.append(d)
            if d >= 0.5:
                found += 1
                if first_report is None:
                    first_report = i
        if res.tumor is not None:
            labels[res.tumor.state] += 1
        if "prep" in captured and sink is not None:
            prep = captured["prep"]
            vessel_w = np.zeros(prep.work_shape, bool)
            for v in captured["vessels"]:
                vessel_w |= v.mask_w
            tmask = _truth_mask(tt, frame.shape, prep) if tt is not None else None
            chosen = captured["out"][0]
            for c in captured["candidates"]:
                if not (plausible_auto(c, settings=settings) or c is chosen):
                    continue
                rec = {"case": name, "frame": i, "status": res.status, "reported": c is chosen,
                       "label": captured["out"][1] if c is chosen else None,
                       "dark": c.dark, "contrast_db": c.contrast_db, "solidity": c.solidity,
                       "area_mm2": c.area_mm2, "eq_diam_mm": c.equivalent_diameter_mm, "ring": c.ring,
                       "elongation": c.elongation, "threshold_db": c.threshold_db, "score": c.score(),
                       "touches_border": c.touches_border,
                       "plausible": bool(plausible_auto(c, settings=settings))}
                rec.update(candidate_features(prep, c, vessel_w=vessel_w, lumens_w=captured["lumens_w"], settings=settings))
                if truth is not None:
                    rec["on_lesion"] = (bool(tmask is not None and np.count_nonzero(tmask & c.mask_w)
                                             >= 0.5 * np.count_nonzero(c.mask_w)))
                    rec["lesion_kind"] = truth.header.get("description", "").split(",")[2].strip()
                sink.write(json.dumps(rec) + "\n")
        if overlay is not None and res.tumor is not None:
            vis = cv2.cvtColor(np.ascontiguousarray(frame.gray), cv2.COLOR_GRAY2BGR)
            for v in res.vessels:
                cv2.polylines(vis, [np.round(np.asarray(v.contour_px)).astype(np.int32)], True, (255, 128, 0), 1)
            cv2.polylines(vis, [np.round(res.tumor.contour_px).astype(np.int32)], True, (0, 0, 255), 1)
            cv2.putText(vis, f"{name} {i} {res.tumor.state}", (10, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (255, 255, 255), 1)
            cv2.imwrite(str(Path(overlay) / f"{name}_{i:03d}.png"), vis)
    out = {"case": name, "statuses": dict(statuses), "tumor_states": dict(labels)}
    if truth is not None:
        out.update(dice_mean=float(np.mean(dices)) if dices else None, found=found, truth_frames=len(dices),
                   first_report=None if first_report is None or first_truth is None else first_report - first_truth,
                   kind=truth.header.get("description", "").split(",")[2].strip())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default=None)
    ap.add_argument("--frames", type=int, default=15)
    ap.add_argument("--difficulty", default="medium")
    ap.add_argument("--sweep", default=None)
    ap.add_argument("--sweep-spacing-mm", type=float, default=0.3148)
    ap.add_argument("--usgra", default=None, metavar="FOLDER", help="the 'rest' part (never the held-out part)")
    ap.add_argument("--jsonl", default=None)
    ap.add_argument("--overlay", default=None, metavar="DIR", help="PNG of every frame that reports a tumour")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = ap.parse_args(argv)
    settings = TrackingSettings(**parse_setting_overrides(args.set))
    sink = open(args.jsonl, "w") if args.jsonl else None
    if args.overlay:
        Path(args.overlay).mkdir(parents=True, exist_ok=True)
    cases = []
    if args.sweep:
        from iousguide.acquisition import open_source

        with open_source(args.sweep, spacing_mm=(args.sweep_spacing_mm,) * 2) as source:
            frames = list(source)
        cases.append(run_frames(frames, settings=settings, name="sweep", sink=sink, overlay=args.overlay))
        print(json.dumps(cases[-1]))
    if args.usgra:
        from iousguide.frames import Frame

        root = Path(args.usgra)
        names = sorted(p.name for p in (root / "images").glob("*.png"))
        rest = [n for i, n in enumerate(names) if i % 4 != 3]  # never the held-out part
        false = 0
        for n in rest:
            img = cv2.imread(str(root / "images" / n), cv2.IMREAD_GRAYSCALE)
            r = run_frames([Frame(pixels=img, index=0, t_mono_ns=0, spacing_mm=None)], settings=settings,
                           name=f"usgra_{n}", sink=sink, overlay=args.overlay)
            false += "tumor_states" in r and bool(r["tumor_states"])
        print(json.dumps({"usgra_rest_images": len(rest), "false_tumours": false}))
    if args.seeds:
        from iousguide.phantom import generate_case

        for seed in parse_range(args.seeds):
            if 9000 <= seed <= 9999:
                raise SystemExit("seeds 9000-9999 are held out")
            frames, truth = generate_case(seed, difficulty=args.difficulty, n_frames=args.frames)
            r = run_frames(frames, truth, settings=settings, name=str(seed), sink=sink, overlay=args.overlay)
            cases.append(r)
            print(json.dumps(r), flush=True)
        ph = [c for c in cases if "dice_mean" in c and c["dice_mean"] is not None]
        dm = np.array([c["dice_mean"] for c in ph])
        fr = [c["first_report"] for c in ph if c["first_report"] is not None]
        print(json.dumps({"cases": len(ph), "dice_mean": round(float(dm.mean()), 4),
                          "dice_median": round(float(np.median(dm)), 4),
                          "found_frames": sum(c["found"] for c in ph), "truth_frames": sum(c["truth_frames"] for c in ph),
                          "never_found": sum(c["first_report"] is None for c in ph),
                          "first_report_mean": round(float(np.mean(fr)), 3) if fr else None,
                          "first_report_hist": dict(Counter(fr))}))
    if sink:
        sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
