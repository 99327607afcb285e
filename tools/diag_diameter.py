"""Per-vessel diameter and boundary error table (development diagnostic).

For every result vessel matched to a truth vessel (the official harness's matching,
``iousguide.evaluation.match_vessels``), one row: truth in-plane diameter (min caliper width),
reported ``diameter_mm``, the min caliper width of the reported outline, the signed offset of
the reported outline from the true one (mean over the reported points of the distance to the
true outline, + outside), depth, in-plane axis angle, section elongation, kind, spacing, probe.
Then the signed bias and MAE by size bin and by group, so a bias can be told apart as a
constant in mm, in PSF widths, or a proportion; and the outline's offset apart from the
diameter formula's.

Usage::

    python tools/diag_diameter.py --seeds 8600-8639 --frames 5 [--set NAME=VALUE] [--json OUT]
    python tools/diag_diameter.py --recordings [NAMES...]
    python tools/diag_diameter.py --controlled [--spacing-mm 0.12] [--frames 6]

``--controlled``: straight vessels perpendicular to the image plane (round sections, no
pulsation) in uniform parenchyma, hepatic veins and portal pedicles (sheath 0.5 x radius, as
the random cases) of 3, 4 and 7 mm at 12-48 mm depth, a linear probe, speckle decorrelated
between frames by 3 mm elevation steps; ``detect_vessels`` alone (no tracker), so the
boundary physics and the diameter rule are seen without leaks, merges and tracking.

Phantom seeds 9000-9999 are held out for final measurements: never use them here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_tracking import parse_range, parse_set, run_recording  # noqa: E402

from iousguide.analysis.settings import TrackingSettings  # noqa: E402
from iousguide.analysis.tracker import Tracker  # noqa: E402
from iousguide.evaluation import match_vessels  # noqa: E402
from iousguide.phantom.truth import min_caliper_width  # noqa: E402

BINS = ((0.0, 2.5), (2.5, 3.5), (3.5, 4.5), (4.5, 6.0), (6.0, 9.0), (9.0, 99.0))


def _signed_offset_mm(reported: np.ndarray, truth: np.ndarray, unit: np.ndarray) -> float:
    """Mean signed distance (mm) of the reported outline's points to the true outline
    (+ outside the true lumen). Both (N, 2) frame pixels."""
    import cv2

    t = (truth * unit).astype(np.float32).reshape(-1, 1, 2)
    r = reported * unit
    d = [cv2.pointPolygonTest(t, (float(x), float(y)), True) for x, y in r]
    return float(-np.mean(d))  # pointPolygonTest: + inside


def rows_for(results: list[dict], truth_frames: list[dict], *, spacing_mm: tuple[float, float], probe: str,
             source: str) -> list[dict]:
    unit = np.asarray(spacing_mm, dtype=np.float64)
    out = []
    for rf, tf in zip(results, truth_frames):
        tv_list = tf.get("vessels") or []
        rv_list = rf.get("vessels") or []
        for i, j in match_vessels(rv_list, tv_list):
            rv, tv = rv_list[i], tv_list[j]
            if tv.get("clipped") or rv.get("diameter_mm") is None:
                continue
            tc = np.asarray(tv["contour_px"], dtype=np.float64)
            rc = np.asarray(rv["contour_px"], dtype=np.float64)
            t_w = min_caliper_width(tc * unit)
            t_len = _max_extent(tc * unit)
            out.append({
                "source": source, "frame": rf.get("frame"), "vessel": tv["id"], "kind": tv.get("kind"),
                "truth_mm": float(tv["diameter_mm"]), "truth_3d_mm": float(tv.get("lumen_diameter_3d_mm") or np.nan),
                "reported_mm": float(rv["diameter_mm"]),
                "reported_caliper_mm": float(min_caliper_width(rc * unit)),
                "truth_caliper_mm": float(t_w),
                "truth_formula_mm": _area_ratio_diameter(tc * unit),
                "reported_formula_mm": _area_ratio_diameter(rc * unit),
                "truth_equiv_mm": _equiv(tc * unit), "reported_equiv_mm": _equiv(rc * unit),
                "truth_ratio": _ratio(tc * unit), "reported_ratio": _ratio(rc * unit),
                "offset_mm": _signed_offset_mm(rc, tc, unit),
                "elongation": float(t_len / max(t_w, 1e-6)),
                "axis_angle_deg": float(tv.get("axis_angle_deg") or np.nan),
                "depth_mm": float(np.mean(tc[:, 1]) * unit[1]),
                "spacing_mm": float(unit[0]), "probe": probe,
            })
    return out


def _area_ratio_diameter(pts_mm: np.ndarray) -> float:
    """The cross-section rule of vessels._measure_lumen on an outline (mm): the minor axis of the
    ellipse with its area and its first-harmonic axis ratio."""
    import cv2

    from iousguide.analysis.vessels import ellipse_axis_ratio

    area = abs(cv2.contourArea(pts_mm.astype(np.float32)))
    return float(2.0 * np.sqrt(area * ellipse_axis_ratio(pts_mm) / np.pi))


def _equiv(pts_mm: np.ndarray) -> float:
    import cv2

    return float(2.0 * np.sqrt(abs(cv2.contourArea(pts_mm.astype(np.float32))) / np.pi))


def _ratio(pts_mm: np.ndarray) -> float:
    from iousguide.analysis.vessels import ellipse_axis_ratio

    return float(ellipse_axis_ratio(pts_mm))


def _max_extent(pts_mm: np.ndarray) -> float:
    from scipy.spatial.distance import pdist

    pts = pts_mm[:: max(1, len(pts_mm) // 200)]
    return float(pdist(pts).max()) if len(pts) > 1 else 0.0


def summary(rows: list[dict], label: str) -> None:
    def line(name, sel):
        if not sel:
            return
        e = np.array([r["reported_mm"] - r["truth_mm"] for r in sel])
        c = np.array([r["reported_caliper_mm"] - r["truth_mm"] for r in sel])
        o = np.array([r["offset_mm"] for r in sel])
        f = np.array([r["truth_formula_mm"] - r["truth_mm"] for r in sel])
        g = np.array([r["reported_formula_mm"] - r["reported_caliper_mm"] for r in sel])
        q = np.array([r["reported_equiv_mm"] - r["truth_equiv_mm"] for r in sel])
        k = np.array([r["reported_ratio"] - r["truth_ratio"] for r in sel])
        print(f"  {name:<22} n={len(sel):4d}  diam bias {e.mean():+.3f} MAE {np.abs(e).mean():.3f} | "
              f"outline caliper bias {c.mean():+.3f} | outline offset {o.mean():+.3f} mm (median {np.median(o):+.3f}) | rule on truth {f.mean():+.3f}, on outline {g.mean():+.3f} | equiv diam bias {q.mean():+.3f} (median {np.median(q):+.3f}), ratio bias {k.mean():+.3f}")

    print(f"== {label}")
    big = [r for r in rows if r["truth_mm"] >= 3.0]
    line(">=3 mm (official)", big)
    for lo, hi in BINS:
        line(f"{lo:g}-{hi:g} mm", [r for r in rows if lo <= r["truth_mm"] < hi])
    line("cross (elong<2.5)", [r for r in big if r["elongation"] < 2.5])
    line("long (elong>=2.5)", [r for r in big if r["elongation"] >= 2.5])
    for kind in sorted({r["kind"] for r in rows}):
        line(f"kind {kind}", [r for r in big if r["kind"] == kind])
    for probe in sorted({r["probe"] for r in rows}):
        line(f"probe {probe}", [r for r in big if r["probe"] == probe])
    for lo, hi in ((0, 20), (20, 35), (35, 200)):
        line(f"depth {lo}-{hi} mm", [r for r in big if lo <= r["depth_mm"] < hi])
    for lo, hi in ((0.0, 0.11), (0.11, 0.15), (0.15, 1.0)):
        line(f"spacing {lo}-{hi}", [r for r in big if lo <= r["spacing_mm"] < hi])


def controlled(*, spacing_mm: float, n_frames: int, overrides: dict) -> list[dict]:
    """Rows (as :func:`rows_for`, plus the depth) for the controlled round-vessel phantom."""
    from iousguide.analysis.vessels import detect_vessels
    from iousguide.phantom.imaging import ImagingParams, ProbeGeometry, Renderer
    from iousguide.phantom.model import LiverModel, ProbePose, VesselBranch
    from iousguide.phantom.truth import frame_truth

    sp = float(spacing_mm)
    geom = ProbeGeometry(kind="linear", width_px=int(76.8 / sp), height_px=int(57.6 / sp), spacing_mm=(sp, sp))
    vessels = []
    for z in (12.0, 24.0, 36.0, 48.0):
        for col, (r, kind) in enumerate(((1.5, "hepatic_vein"), (1.5, "portal_pedicle"), (2.0, "hepatic_vein"),
                                         (2.0, "portal_pedicle"), (3.5, "hepatic_vein"), (3.5, "portal_pedicle"))):
            x = -32.0 + col * 12.8
            sheath = 0.0 if kind == "hepatic_vein" else float(np.clip(0.5 * r, 0.5, 1.4))
            vessels.append(VesselBranch(id=len(vessels) + 1, kind=kind, start_mm=(x, -60, z), end_mm=(x, 60, z),
                                        radius_start_mm=r, radius_end_mm=r, sheath_mm=sheath, pulse_fraction=0.0))
    model = LiverModel(vessels=tuple(vessels), tumors=(), seed=4321)
    renderer = Renderer(model, geom, ImagingParams())
    settings = TrackingSettings(**overrides)
    rows = []
    for i in range(n_frames):
        pose = ProbePose(y_mm=-20 + 3.0 * i)
        img, maps = renderer.render(pose, 0.0, i)
        truth = frame_truth(model, pose, geom, maps, frame=i, t_s=0.0)
        dets = detect_vessels(img, spacing_mm=(sp, sp), settings=settings)
        results = [{"frame": i, "vessels": [{"contour_px": d.contour_px.tolist(), "diameter_mm": d.diameter_mm,
                                             "centroid_px": list(d.centroid_px)} for d in dets]}]
        rows += rows_for(results, [truth], spacing_mm=(sp, sp), probe="linear", source="controlled")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default=None)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--difficulty", default="medium")
    ap.add_argument("--recordings", nargs="*", default=None)
    ap.add_argument("--controlled", action="store_true", help="round vessels in uniform parenchyma")
    ap.add_argument("--spacing-mm", type=float, default=0.12)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    overrides = parse_set(args.set)
    rows: list[dict] = []
    if args.controlled:
        rows = controlled(spacing_mm=args.spacing_mm, n_frames=args.frames, overrides=overrides)
        summary(rows, f"controlled round vessels, {args.frames} frames, {args.spacing_mm} mm/px")
        for kind in ("hepatic_vein", "portal_pedicle"):
            for depth in (12, 24, 36, 48):
                sel = [r for r in rows if r["kind"] == kind and abs(r["depth_mm"] - depth) < 4]
                for size in (3.0, 4.0, 7.0):
                    part = [r for r in sel if abs(r["truth_mm"] - size) < 0.3]
                    if part:
                        e = np.array([r["reported_mm"] - r["truth_mm"] for r in part])
                        q = np.array([r["reported_equiv_mm"] - r["truth_equiv_mm"] for r in part])
                        print(f"  {kind:<15} {size:.0f} mm at {depth:2d} mm: n={len(part)} diameter bias {e.mean():+.3f}"
                              f"  outline equivalent-diameter bias {q.mean():+.3f}"
                              f"  ratio {np.mean([r['reported_ratio'] for r in part]):.3f}")
    if args.seeds:
        from iousguide.phantom import generate_case

        seeds = parse_range(args.seeds)
        if any(9000 <= s <= 9999 for s in seeds):
            ap.error("seeds 9000-9999 are held out")
        for seed in seeds:
            frames, truth = generate_case(seed, difficulty=args.difficulty, n_frames=args.frames)
            tracker = Tracker(TrackingSettings(**overrides))
            results = [tracker.process(f).to_json() for f in frames]
            probe = "convex" if "convex" in (truth.header.get("description") or "") else "linear"
            rows += rows_for(results, truth.frames, spacing_mm=frames[0].spacing_mm, probe=probe, source=str(seed))
        summary(rows, f"seeds {args.seeds} x {args.frames} frames")
    if args.recordings is not None:
        from iousguide.phantom import read_truth

        root = Path(__file__).resolve().parents[1] / "recordings"
        paths = args.recordings or sorted(str(p) for p in root.iterdir()
                                          if p.suffix in (".mp4", ".dcm", ".mha") and "truth" not in p.name)
        for path in paths:
            results, _ = run_recording(path, overrides=overrides)
            truth = read_truth(str(path).rsplit(".", 2 if path.endswith(".igs.mha") else 1)[0] + ".truth.jsonl.gz")
            sp = next((r["spacing_mm"] for r in results if r.get("spacing_mm")), None)
            if sp is None:
                continue
            rec_rows = rows_for(results, truth.frames, spacing_mm=tuple(sp),
                                probe=str(truth.header.get("probe", {}).get("kind", "?"))
                                if isinstance(truth.header.get("probe"), dict) else "?", source=Path(path).name)
            summary(rec_rows, Path(path).name)
            rows += rec_rows
        summary(rows, "all recordings")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
