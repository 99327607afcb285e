"""Measure the tracker on fresh phantom cases (development scorer; the official harness is
``iousguide evaluate``).

    python tools/eval_tracking.py --seeds 100-105 --frames 20 [--difficulty medium] [--probe convex]
        [--spacing-mm 0.12] [--seed-tumor] [--json out.json]

Matching rule (documented, independent of the tracker): a detection matches a truth vessel
when its centroid lies within 0.5 x true diameter + 1 mm of the true centroid (the nearest
such truth vessel, one-to-one). Recall/precision/diameter error count truth vessels >= 3 mm
that are not clipped by the image edge; a detection matching no truth vessel of any size is a
false positive. Distance error: matched vessels whose true distance is <= 15 mm.

Where the distance error comes from (``distance_sources``, same pairs): the reported distance
(smoothed over time), the frame's own measurement (unsmoothed), and that measurement with the
true tumour outline in place of the detected one (what the vessel outlines alone cost) or with
the true lumen outline in place of the detected one (what the tumour outline alone costs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import cv2
import numpy as np

from iousguide.analysis.settings import TrackingSettings, parse_setting_overrides
from iousguide.errors import SettingsError
from iousguide.analysis.tracker import Tracker


def parse_range(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def parse_set(items: list[str]) -> dict:
    """``--set NAME=VALUE`` items -> TrackingSettings overrides (exits with the bad item named)."""
    try:
        return parse_setting_overrides(items)
    except SettingsError as exc:
        raise SystemExit(str(exc)) from None


def dice(contour_a, contour_b, shape) -> float:
    ma = np.zeros(shape, np.uint8)
    mb = np.zeros(shape, np.uint8)
    if contour_a is not None and len(contour_a) >= 3:
        cv2.fillPoly(ma, [np.round(np.asarray(contour_a) * 8).astype(np.int32)], 1, shift=3)
    if contour_b is not None and len(contour_b) >= 3:
        cv2.fillPoly(mb, [np.round(np.asarray(contour_b) * 8).astype(np.int32)], 1, shift=3)
    s = int(ma.sum() + mb.sum())
    return 2.0 * float((ma & mb).sum()) / s if s else 1.0


def primary_tumor(tf: dict):
    if tf.get("tumor"):
        return tf["tumor"]
    for t in tf.get("tumors") or []:
        if t.get("primary"):
            return t
    return None


def score_case(frames, truth, results, *, spacing_mm: float) -> dict:
    from iousguide.analysis.measure import TumorGeometry

    stats = {"tp": 0, "fn": 0, "fp": 0, "dist_err": [], "diam_err": [], "dice": [], "id_switch": 0, "frames": 0,
             "dist_err_sources": {k: [] for k in DISTANCE_SOURCES}}
    unit = (spacing_mm, spacing_mm)
    last_id: dict[int, int] = {}
    for frame, tf, res in zip(frames, truth.frames, results):
        stats["frames"] += 1
        tvs = tf.get("vessels") or []
        dets = list(res.vessels)
        used = set()
        pairs = []
        for tv in sorted(tvs, key=lambda v: -v["diameter_mm"]):
            c = np.array(tv["centroid_px"])
            best, best_d = None, None
            for j, dv in enumerate(dets):
                if j in used:
                    continue
                d_mm = float(np.hypot(*(np.array(dv.centroid_px) - c))) * spacing_mm
                if d_mm <= 0.5 * tv["diameter_mm"] + 1.0 and (best_d is None or d_mm < best_d):
                    best, best_d = j, d_mm
            if best is not None:
                used.add(best)
                pairs.append((tv, dets[best]))
            big = tv["diameter_mm"] >= 3.0 and not tv.get("clipped", False)
            if big:
                if best is None:
                    stats["fn"] += 1
                else:
                    stats["tp"] += 1
        stats["fp"] += len(dets) - len(used)
        tt = primary_tumor(tf)
        geo = geo_true = None
        for tv, dv in pairs:
            if tv["diameter_mm"] >= 3.0 and not tv.get("clipped", False) and dv.diameter_mm is not None:
                stats["diam_err"].append(dv.diameter_mm - tv["diameter_mm"])
            if tv.get("distance_mm") is not None and tv["distance_mm"] <= 15.0 and dv.distance_mm is not None:
                stats["dist_err"].append(dv.distance_mm - tv["distance_mm"])
                if tt is not None and res.tumor is not None:
                    # (phantom frames are uncropped: source pixels are frame pixels)
                    if geo is None:
                        geo = TumorGeometry(np.asarray(res.tumor.contour_px, float), unit_mm=unit)
                        geo_true = TumorGeometry(np.asarray(tt["contour_px"], float), unit_mm=unit)
                    true_d = tv["distance_mm"]
                    src = stats["dist_err_sources"]
                    src["reported"].append(dv.distance_mm - true_d)
                    for key, g, contour in (("measured", geo, dv.contour_px), ("true_tumor", geo_true, dv.contour_px),
                                            ("true_vessel", geo, tv["contour_px"])):
                        d = g.measure(np.asarray(contour, float), contact_distance_mm=1.0).distance_mm
                        src[key].append(d - true_d)
            if tv["id"] in last_id and last_id[tv["id"]] != dv.id:
                stats["id_switch"] += 1
            last_id[tv["id"]] = dv.id
        if tt is not None:
            stats["dice"].append(dice(tt["contour_px"], None if res.tumor is None else res.tumor.contour_px,
                                      frame.shape))
    return stats


#: distance_sources keys: the reported distance (smoothed), the frame's own measurement, and that
#: measurement with the true tumour outline, or the true lumen outline, in place of the detected one
DISTANCE_SOURCES = ("reported", "measured", "true_tumor", "true_vessel")


def summarize(all_stats: list[dict]) -> dict:
    tp = sum(s["tp"] for s in all_stats)
    fn = sum(s["fn"] for s in all_stats)
    fp = sum(s["fp"] for s in all_stats)
    dist = np.array([e for s in all_stats for e in s["dist_err"]])
    diam = np.array([e for s in all_stats for e in s["diam_err"]])
    dices = np.array([e for s in all_stats for e in s["dice"]])
    frames = sum(s["frames"] for s in all_stats)
    switches = sum(s["id_switch"] for s in all_stats)
    return {
        "recall": tp / (tp + fn) if tp + fn else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "distance_mae_mm": float(np.mean(np.abs(dist))) if len(dist) else None,
        "distance_p95_mm": float(np.percentile(np.abs(dist), 95)) if len(dist) else None,
        "distance_bias_mm": float(np.mean(dist)) if len(dist) else None,
        "n_distances": int(len(dist)),
        "diameter_mae_mm": float(np.mean(np.abs(diam))) if len(diam) else None,
        "diameter_bias_mm": float(np.mean(diam)) if len(diam) else None,
        "n_diameters": int(len(diam)),
        "tumor_dice_mean": float(np.mean(dices)) if len(dices) else None,
        "tumor_dice_median": float(np.median(dices)) if len(dices) else None,
        "id_switches_per_100_frames": 100.0 * switches / frames if frames else None,
        "frames": frames,
        "distance_sources": {k: _mae_p95([e for s in all_stats for e in s.get("dist_err_sources", {}).get(k, [])])
                             for k in DISTANCE_SOURCES},
    }


def _mae_p95(errors: list[float]) -> dict:
    e = np.abs(np.asarray(errors, dtype=float))
    return {"mae_mm": round(float(e.mean()), 3) if len(e) else None,
            "p95_mm": round(float(np.percentile(e, 95)), 3) if len(e) else None, "n": int(len(e))}


def source_image(frame) -> np.ndarray:
    """The frame's grey pixels placed where they lie in the source's full frame (results and
    truth are in source pixels): un-flipped, shifted by the crop origin, black around it."""
    gray = frame.gray
    flip_x, flip_y = frame.extra.get("flip_xy", (False, False))
    if flip_x:
        gray = gray[:, ::-1]
    if flip_y:
        gray = gray[::-1, :]
    ox, oy = frame.origin_px
    canvas = np.zeros((oy + gray.shape[0], ox + gray.shape[1]), np.uint8)
    canvas[oy:, ox:] = gray
    return canvas


def run_recording(path: str, *, max_frames: int | None = None, overrides: dict | None = None,
                  images: dict | None = None) -> tuple[list[dict], float]:
    """Tracker-only analysis of a bundled recording with its preset; (result dicts, ms/frame).
    ``images``: filled with frame index -> the frame's grey pixels (for the visibility score)."""
    from pathlib import Path

    from iousguide.acquisition import open_source
    from iousguide.calibration import load_preset

    rec = Path(path)
    stem = rec.name.split(".")[0]
    preset_path = Path(__file__).resolve().parents[1] / "calibration" / f"{stem}.toml"
    preset = load_preset(preset_path) if preset_path.exists() else None
    out, times = [], []
    with open_source(str(rec), calibration=preset) as source:
        tracker = Tracker(TrackingSettings(**(overrides or {})))
        for i, frame in enumerate(source):
            if max_frames is not None and i >= max_frames:
                break
            t0 = time.perf_counter()
            res = tracker.process(frame)
            times.append((time.perf_counter() - t0) * 1e3)
            out.append(res.to_json())
            if images is not None:
                images[frame.index] = source_image(frame)
    return out, float(np.median(times)) if times else 0.0


def pool_official(reports: list[dict]) -> dict:
    """Vessel recall and precision (>= 3 mm) pooled over official per-case reports, with the
    recall over visible vessels (faint ones left out) and the tumour Dice mean of the cases."""
    bands = ("3-5", ">5")
    matched = sum(r["vessels"]["recall_by_band"][b]["matched"] for r in reports for b in bands)
    truth = sum(r["vessels"]["recall_by_band"][b]["truth"] for r in reports for b in bands)
    tp = sum(r["vessels"]["precision_by_band"][b]["true_positive"] for r in reports for b in bands)
    n = sum(r["vessels"]["precision_by_band"][b]["results"] for r in reports for b in bands)
    faint_m = sum(r["vessels"].get("faint_ge3mm", {}).get("matched", 0) for r in reports)
    faint_t = sum(r["vessels"].get("faint_ge3mm", {}).get("truth", 0) for r in reports)
    dices = [r["tumor"]["dice_mean"] for r in reports if r["tumor"]["dice_mean"] is not None]
    return {"recall_ge3mm": matched / truth if truth else None, "precision_ge3mm": tp / n if n else None,
            "recall_ge3mm_visible": (matched - faint_m) / (truth - faint_t) if truth - faint_t else None,
            "faint_ge3mm": {"matched": faint_m, "truth": faint_t},
            "vessel_frames_ge3mm": truth, "id_switches": sum(r["id_switches"] for r in reports),
            "tumor_dice_mean_of_cases": float(np.mean(dices)) if dices else None}


def official(results: list[dict], truth, images: dict | None = None) -> dict:
    from iousguide.evaluation import evaluate_results

    return evaluate_results(results, truth, images=images)


def eval_usgra(folder: str, *, part: str, overlay: str | None = None, overrides: dict | None = None) -> dict:
    """Real vessel images with expert masks (vessels_usgra): pixel-based vessel recall and Dice.

    The held-out part (fixed before any look at the data: every 4th image, index % 4 == 3)
    was never used to tune anything. Uncalibrated (screen crops): the tracker runs in
    pixels. A truth vessel (a connected (0,128,0) region of at least 30 px) is found when a
    detected lumen overlaps it with IoU >= 0.3 or has its centroid inside it; a detection
    is a true positive when it is inside or overlaps any truth vessel by IoU >= 0.3 or holds
    its centroid. Dice: all detected lumens vs all truth vessel pixels, pooled and per image.
    """
    from pathlib import Path

    from iousguide.evaluation import score_vessel_images, usgra_vessel_mask
    from iousguide.frames import Frame

    root = Path(folder)
    names = sorted(p.name for p in (root / "images").glob("*.png"))
    chosen = [n for i, n in enumerate(names) if (i % 4 == 3) == (part == "holdout")]
    seen = []  # (image, vessels) of the first 12 images, for the overlay

    def detect(img):
        res = Tracker(TrackingSettings(auto_tumor=False, **(overrides or {}))).process(
            Frame(pixels=img, index=0, t_mono_ns=0, spacing_mm=None))
        if overlay and len(seen) < 12:
            seen.append((img, res.vessels))
        return [(v.contour_px, v.centroid_px) for v in res.vessels]

    report = score_vessel_images(root, chosen, detect)
    if overlay and seen:
        sheet = []
        for name, (img, vessels) in zip(chosen, seen):
            truth = usgra_vessel_mask(cv2.imread(str(root / "masks" / name), cv2.IMREAD_COLOR))
            vis = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            cs, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(vis, cs, -1, (0, 255, 0), 1)
            for v in vessels:
                cv2.polylines(vis, [np.round(np.asarray(v.contour_px)).astype(np.int32)], True, (0, 128, 255), 1)
            sheet.append(cv2.resize(vis, (256, 256)))
        while len(sheet) % 4:
            sheet.append(np.zeros_like(sheet[0]))
        rows = [np.hstack(sheet[i:i + 4]) for i in range(0, len(sheet), 4)]
        cv2.imwrite(overlay, np.vstack(rows))
    return {"part": part, **report}


def run_sweep(path: str, *, spacing_mm: float, overlay: str | None, overrides: dict | None = None) -> dict:
    """The real liver sweep: every frame through the tracker; statuses, vessel counts, overlay sheet."""
    from collections import Counter

    from iousguide.acquisition import open_source

    statuses, counts, diameters, ms, sheet = Counter(), [], [], [], []
    learned_outlines = 0
    with open_source(path, spacing_mm=(spacing_mm, spacing_mm)) as source:
        tracker = Tracker(TrackingSettings(**(overrides or {})))
        ids = set()
        for frame in source:
            res = tracker.process(frame)
            statuses[res.status] += 1
            learned_outlines += res.tumor is not None and res.tumor.outline == "learned"
            counts.append(len(res.vessels))
            diameters.extend(v.diameter_mm for v in res.vessels)
            ids.update(v.id for v in res.vessels)
            ms.append(res.processing_ms)
            if overlay and frame.index % 20 == 0:
                vis = cv2.cvtColor(np.ascontiguousarray(frame.gray), cv2.COLOR_GRAY2BGR)
                for v in res.vessels:
                    color = {"hepatic_vein": (255, 128, 0), "portal_pedicle": (0, 200, 255)}.get(v.kind, (200, 200, 200))
                    cv2.polylines(vis, [np.round(np.asarray(v.contour_px)).astype(np.int32)], True, color, 1)
                    cx, cy = (int(c) for c in v.centroid_px)
                    cv2.putText(vis, f"{v.id}:{v.diameter_mm:.1f}", (cx + 5, cy), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                                color, 1)
                if res.tumor is not None:
                    cv2.polylines(vis, [np.round(res.tumor.contour_px).astype(np.int32)], True, (0, 0, 255), 1)
                cv2.putText(vis, f"frame {frame.index} {res.status}", (10, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                            (255, 255, 255), 1)
                sheet.append(vis)
    if overlay and sheet:
        h, w = sheet[0].shape[:2]
        while len(sheet) % 4:
            sheet.append(np.zeros_like(sheet[0]))
        rows = [np.hstack(sheet[i:i + 4]) for i in range(0, len(sheet), 4)]
        cv2.imwrite(overlay, np.vstack(rows))
    return {"frames": sum(statuses.values()), "statuses": dict(statuses),
            "tumour_outlines_learned": learned_outlines,
            "vessels_per_frame_median": float(np.median(counts)), "distinct_ids": len(ids),
            "diameter_mm_median": float(np.median(diameters)) if diameters else None,
            "ms_median": float(np.median(ms)), "ms_p95": float(np.percentile(ms, 95))}


def main(argv: list[str] | None = None) -> int:
    from iousguide.phantom import generate_case

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1000-1003")
    ap.add_argument("--frames", type=int, default=15)
    ap.add_argument("--difficulty", default="medium")
    ap.add_argument("--probe", default=None)
    ap.add_argument("--spacing-mm", type=float, default=None)
    ap.add_argument("--seed-tumor", action="store_true", help="seed the tracker at the true tumour centroid")
    ap.add_argument("--json", default=None)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--recordings", nargs="*", default=None,
                    help="score bundled recordings with the official harness instead of fresh cases")
    ap.add_argument("--official", action="store_true", help="fresh cases: also print the official harness table")
    ap.add_argument("--usgra", default=None, metavar="FOLDER", help="score the real vessels_usgra images")
    ap.add_argument("--part", default="holdout", choices=("holdout", "rest"))
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="TrackingSettings override")
    ap.add_argument("--overlay", default=None, help="usgra: contact sheet PNG of the first 12 images")
    ap.add_argument("--sweep", default=None, metavar="MP4", help="run the real liver sweep (needs --sweep-spacing-mm)")
    ap.add_argument("--sweep-spacing-mm", type=float, default=0.3148)
    args = ap.parse_args(argv)
    if args.sweep:
        print(json.dumps(run_sweep(args.sweep, spacing_mm=args.sweep_spacing_mm, overlay=args.overlay,
                                   overrides=parse_set(args.set))))
        return 0
    if args.usgra:
        print(json.dumps(eval_usgra(args.usgra, part=args.part, overlay=args.overlay, overrides=parse_set(args.set))))
        return 0
    if args.recordings is not None:
        from pathlib import Path

        from iousguide.evaluation import format_table
        from iousguide.phantom import read_truth

        root = Path(__file__).resolve().parents[1] / "recordings"
        paths = args.recordings or sorted(str(p) for p in root.iterdir()
                                          if p.suffix in (".mp4", ".dcm", ".mha") and "truth" not in p.name)
        reports = []
        for path in paths:
            images: dict = {}
            results, ms = run_recording(path, overrides=parse_set(args.set), images=images)
            truth = read_truth(str(path).rsplit(".", 2 if path.endswith(".igs.mha") else 1)[0] + ".truth.jsonl.gz")
            report = official(results, truth, images)
            report["tracker_ms_median"] = ms
            report["recording"] = Path(path).name
            reports.append(report)
            print(format_table(report), f"\n  tracker median {ms:.1f} ms/frame", flush=True)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(reports, fh, indent=1, default=str)
        return 0
    per_case = []
    all_stats = []
    for seed in parse_range(args.seeds):
        kw = {}
        if args.probe:
            kw["probe"] = args.probe
        if args.spacing_mm:
            kw["spacing_mm"] = args.spacing_mm
        frames, truth = generate_case(seed, difficulty=args.difficulty, n_frames=args.frames, **kw)
        overrides = parse_set(args.set)
        settings = TrackingSettings(**overrides)
        if args.seed_tumor:
            tt = next((primary_tumor(tf) for tf in truth.frames if primary_tumor(tf)), None)
            if tt is not None:
                first = next(i for i, tf in enumerate(truth.frames) if primary_tumor(tf))
                settings = TrackingSettings(**{**overrides, "tumor_seed_px": tuple(tt["centroid_px"]),
                                               "tumor_seed_frame": first})
        tracker = Tracker(settings)
        t0 = time.perf_counter()
        results = [tracker.process(f) for f in frames]
        ms = (time.perf_counter() - t0) * 1e3 / max(len(frames), 1)
        st = score_case(frames, truth, results, spacing_mm=frames[0].spacing_mm[0])
        report = None
        if args.official:
            from iousguide.evaluation import format_table

            report = official([r.to_json() for r in results], truth,
                              {int(tf["frame"]): source_image(f) for tf, f in zip(truth.frames, frames)})
            print(format_table(report))
        all_stats.append(st)
        summ = summarize([st])
        summ.update(seed=seed, description=truth.header.get("description"), ms_per_frame=ms,
                    spacing_mm=frames[0].spacing_mm[0])
        if report is not None:
            summ["official"] = report
        per_case.append(summ)
        if args.verbose:
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in summ.items()
                              if k != "official"}))
    total = summarize(all_stats)
    reports = [c["official"] for c in per_case if "official" in c]
    if reports:
        total["official_pooled"] = pool_official(reports)
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in total.items()}))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"total": total, "cases": per_case}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
