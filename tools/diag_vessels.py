"""Why is a vessel missed? Per recording (or dev phantom seed), every truth vessel >= 3 mm that the
tracker's output does not match (official matching rule), with what the detector saw there.

    python tools/diag_vessels.py [--recordings NAME ...] [--seeds 8200-8205 --frames 12 --probe convex]
        [--save-results DIR] [--all]

Reasons (first that applies):
  dropped_by_tracker   a raw detection matched it, the tracker dropped it (inside the tumour outline)
  mismatched           a raw detection overlaps it but the official rule did not match (centroid off)
  detect_rejected:X    an anechoic core lies in the lumen and the detector rejected it at step X
                       (min_area, ring, arc, shadow, refine_none, refine_ring, diameter=<mm>)
  core_elsewhere       the anechoic core under the lumen belongs to a component whose detection
                       matches something else (merged with a neighbour)
  no_core              no pixel of the truth lumen is below the lumen core level (not anechoic enough)
Also printed: diameter, depth (mm), clipped, axis angle, tumour distance, the darkest smooth level inside
the lumen relative to the core level (dB; > 0 means above the level).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from iousguide.analysis import vessels as V
from iousguide.analysis.imaging import disc, fill_holes, prepare
from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.tracker import Tracker
from iousguide.evaluation import match_vessels, point_in_polygon, rasterize

ROOT = Path(__file__).resolve().parents[1]


def _core_reasons(prep, settings):
    """Replays _dark_components keeping the rejection reason per label, on the cores under the
    level over the display floor (vessels.lumen_dark_mask: the black-floor cores and, where the
    floor is lifted, the second-pass cores; the detector tries the black-floor cores first)."""
    core_level = V.lumen_core_level(prep, settings=settings)[1][:, None]
    dark = V.lumen_dark_mask(prep, settings=settings).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    min_area = max(np.pi * (0.5 * settings.vessel_min_diameter_mm / prep.work_px_mm) ** 2 * 0.3, 3)
    reasons = {}
    for label in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[label])
        if area < min_area:
            reasons[label] = "min_area"
            continue
        comp = labels[y:y + bh, x:x + bw] == label
        pad = int(np.ceil(1.0 / prep.work_px_mm))
        closed = cv2.morphologyEx(np.pad(comp.astype(np.uint8), pad), cv2.MORPH_CLOSE, disc(pad))
        if np.count_nonzero(fill_holes(closed)) > 1.5 * np.count_nonzero(closed):
            comp = V._lumen_on_ring(comp, prep.smooth[y:y + bh, x:x + bw], min_radius_px=0.5 * settings.vessel_min_diameter_mm / prep.work_px_mm) \
                if hasattr(V, "_lumen_on_ring") else None
            if comp is None:
                reasons[label] = "ring"
                continue
        part = V._solid_part(comp)
        if part is None:
            reasons[label] = "arc"
            continue
        if V.looks_like_shadow(prep, part, (x, y, bw, bh), margin_mm=settings.shadow_bottom_margin_mm):
            reasons[label] = "shadow"
            continue
        full = np.zeros(prep.work_shape, bool)
        full[y:y + bh, x:x + bw] = part
        s = settings
        refined = V.refine_region(prep, full, (x, y, bw, bh), dark=True, smoothing_mm=s.edge_smoothing_mm,
                                  upsample=s.upsample_for(min(prep.unit_mm)), level_fraction=s.edge_level_fraction,
                                  margin_mm=2.5, outside_cap=V._tissue_power(prep, (x, y, bw, bh)), sectors=12,
                                  passes=2)
        if refined is None:
            reasons[label] = "refine_none"
            continue
        if refined.hole_fraction > 0.25:
            reasons[label] = "refine_ring"
            continue
        det = V._lumen_from_core(prep, full, (x, y, bw, bh), s)
        if det is None:
            d = V._measure_lumen(refined, prep, full, s, (x, y, bw, bh))
            reasons[label] = f"diameter={d.diameter_mm:.2f}" if d is not None else "measure_none"
            continue
        reasons[label] = "ok"
    return labels, reasons, core_level, dark


def diagnose(frames, truth_frames, settings, *, name, verbose=True, only_missed=True):
    tracker = Tracker(settings)
    results = []
    counts = Counter()
    lines = []
    for frame, tf in zip(frames, truth_frames):
        res = tracker.process(frame).to_json()
        results.append(res)
        if tf.get("status") == "no_signal":
            continue
        tvs = tf.get("vessels") or []
        pairs = match_vessels(res["vessels"], tvs)
        matched_t = {j for _, j in pairs}
        big = [j for j, tv in enumerate(tvs) if (tv.get("diameter_mm") or 0) >= 3.0]
        missed = [j for j in big if j not in matched_t]
        counts["truth"] += len(big)
        if not missed:
            continue
        gray = np.ascontiguousarray(frame.gray)
        prep = prepare(gray, spacing_mm=frame.spacing_mm, settings=settings)
        raw = V.detect_vessels_prepared(prep, settings=settings)
        raw_json = [{"centroid_px": list(frame.to_source_px(*d.centroid_px)),
                     "contour_px": [list(frame.to_source_px(x, y)) for x, y in d.contour_px]} for d in raw]
        labels, reasons, core_level, dark = _core_reasons(prep, settings)
        for j in missed:
            tv = tvs[j]
            poly = np.asarray(tv["contour_px"], float)
            # source px -> frame px -> work px
            fx, fy = frame.from_source_px(poly[:, 0], poly[:, 1])
            m_f = rasterize(np.stack([fx, fy], 1), frame.shape)
            wx, wy = prep.to_work(np.asarray(fx), np.asarray(fy))
            m_w = rasterize(np.stack([wx, wy], 1), prep.work_shape)
            reason = None
            rm = match_vessels(raw_json, [tv])
            if rm:
                k = rm[0][0]
                others = [u for u in tvs if u is not tv and (
                    point_in_polygon(u["centroid_px"], raw_json[k]["contour_px"])
                    or point_in_polygon(raw_json[k]["centroid_px"], u["contour_px"]))]
                reason = f"merged_with_id{others[0]['id']}" if others else "dropped_by_tracker"
            else:
                ovl = [k for k, d in enumerate(raw) if np.count_nonzero(d.mask_w & m_w) > 0]
                if ovl:
                    reason = "mismatched"
            labs = np.unique(labels[m_w & (dark > 0)])
            labs = labs[labs > 0]
            rel = None
            if m_w.any():
                rel = float((prep.smooth - core_level)[m_w].min())
            if reason is None:
                if len(labs):
                    rs = [reasons.get(int(lb), "?") for lb in labs]
                    rs_bad = [r for r in rs if r != "ok"]
                    reason = ("detect_rejected:" + ",".join(sorted(set(rs_bad)))) if rs_bad else "core_elsewhere"
                else:
                    reason = "no_core" if m_w.any() else "off_grid"
            counts[reason.split("=")[0]] += 1
            cy_mm = float(np.mean(fy)) * frame.spacing_mm[1] if frame.spacing_mm else None
            line = (f"{name} f{tf['frame']:>3} id{tv['id']} d={tv['diameter_mm']:.2f} depth={cy_mm:.1f}mm "
                    f"clip={int(bool(tv.get('clipped')))} axis={tv.get('axis_angle_deg', 0):.0f} "
                    f"kind={tv.get('kind')} dist={tv.get('distance_mm')} min-core={rel if rel is None else round(rel, 1)}dB "
                    f"-> {reason}")
            lines.append(line)
            if verbose:
                print(line, flush=True)
    return results, counts, lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recordings", nargs="*", default=None)
    ap.add_argument("--seeds", default=None)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--difficulty", default="medium")
    ap.add_argument("--probe", default=None)
    ap.add_argument("--save-results", default=None)
    args = ap.parse_args(argv)
    settings = TrackingSettings()
    total = Counter()
    if args.seeds:
        from iousguide.phantom import generate_case

        a, _, b = args.seeds.partition("-")
        for seed in range(int(a), int(b or a) + 1):
            kw = {"probe": args.probe} if args.probe else {}
            frames, truth = generate_case(seed, difficulty=args.difficulty, n_frames=args.frames, **kw)
            _, counts, _ = diagnose(frames, truth.frames, settings, name=f"seed{seed}")
            total.update(counts)
    if args.recordings is not None:
        from iousguide.acquisition import open_source
        from iousguide.calibration import load_preset
        from iousguide.phantom import read_truth

        names = args.recordings or ["free_parenchyma", "hepatic_vein_abutting", "occult_lesion", "portal_pedicle",
                                    "small_vessels", "two_lesions_screen"]
        for name in names:
            rec = next(p for p in (ROOT / "recordings").iterdir()
                       if p.name.split(".")[0] == name and "truth" not in p.name and p.suffix != ".md"
                       and p.suffix != ".json")
            preset = load_preset(ROOT / "calibration" / f"{name}.toml")
            truth = read_truth(ROOT / "recordings" / f"{name}.truth.jsonl.gz")
            with open_source(str(rec), calibration=preset) as source:
                frames = list(source)
            results, counts, _ = diagnose(frames, truth.frames, settings, name=name)
            print(name, dict(counts), flush=True)
            total.update(counts)
            if args.save_results:
                Path(args.save_results).mkdir(parents=True, exist_ok=True)
                with open(Path(args.save_results) / f"{name}.jsonl", "w") as fh:
                    for r in results:
                        fh.write(json.dumps(r) + "\n")
    print("total", dict(total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
