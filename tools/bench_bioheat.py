"""Benchmark the guidance step: Pennes estimate (60 x 60 mm at 0.5 mm), margin planner, apply_guidance.

Usage: python tools/bench_bioheat.py [--repeats 30] [--grid-mm 0.5] [--field-mm 60]
Prints median and 95th percentile wall time per call (ms) for each scenario, and
for comparison one SuperLU factorisation of the same grid (the approach not taken).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import numpy as np

from iousguide.analysis.results import FrameResult, TumorResult, VesselResult
from iousguide.guidance.apply import apply_guidance
from iousguide.guidance.bioheat import BioheatEstimator, VesselSink, estimate_ablation
from iousguide.guidance.margin import plan_margin
from iousguide.guidance.settings import GuidanceSettings


def circle(cx, cy, r, n=360):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[cx + r * np.cos(t), cy + r * np.sin(t)]


def timed(fn, repeats):
    """(median wall ms, p95 wall ms, median CPU ms of this thread) over ``repeats`` calls after a warm-up.

    On a shared machine the wall time includes waiting for a core; the thread CPU
    time is the work itself."""
    fn()  # warm caches (Green's function, FFT plans)
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.thread_time() - c0) * 1e3)
    return float(np.median(wall)), float(np.percentile(wall, 95)), float(np.median(cpu))


def superlu_ms(n, grid_mm):
    import scipy.sparse as sp
    import scipy.sparse.linalg as spl

    k, beta, g = 0.52, 6.4e-3 * 1050 * 3617, grid_mm * 1e-3
    idx = np.arange(n * n).reshape(n, n)
    rows, cols = [], []
    for a, b in ((idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])):
        rows += [a.ravel(), b.ravel()]
        cols += [b.ravel(), a.ravel()]
    off = np.concatenate(rows).size
    a = sp.csc_matrix(
        (np.r_[np.full(n * n, 4 * k / g**2 + beta), np.full(off, -k / g**2)],
         (np.r_[np.arange(n * n), np.concatenate(rows)], np.r_[np.arange(n * n), np.concatenate(cols)])),
        shape=(n * n, n * n),
    )
    return timed(lambda: spl.splu(a, permc_spec="MMD_AT_PLUS_A"), 5)


def row(label, stats, rate=False):
    med, p95, cpu = stats
    extra = f"  ({1000 / med:6.1f} /s)" if rate else ""
    print(f"  {label:<46} {med:7.2f} / {p95:7.2f} ms wall, {cpu:7.2f} ms CPU{extra}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--grid-mm", type=float, default=0.5)
    parser.add_argument("--field-mm", type=float, default=60.0)
    args = parser.parse_args(argv)
    s = dataclasses.replace(GuidanceSettings(), bioheat_grid_mm=args.grid_mm, bioheat_field_mm=args.field_mm)
    n = int(round(args.field_mm / args.grid_mm)) | 1
    zone = circle(0, 0, 15)
    scenes = {
        "no vessel": [],
        "8 mm vessel 4 mm outside the zone": [VesselSink(1, circle(23, 0, 4), 8.0)],
        "2 vessels (8 mm, 2 mm)": [VesselSink(1, circle(23, 0, 4), 8.0), VesselSink(2, circle(0, -17, 1), 2.0)],
        "10 mm vein across the field (60 mm in plane)": [
            VesselSink(1, np.array([[-30, 16], [30, 16], [30, 26], [-30, 26]], float), 10.0)],
    }
    print(f"bioheat: {n} x {n} cells ({args.field_mm:g} mm field, {args.grid_mm:g} mm grid), "
          f"{args.repeats} repeats, median / p95 wall ms, median thread-CPU ms")
    import os

    print(f"  load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for name, vessels in scenes.items():
        row(name, timed(lambda: estimate_ablation(zone, vessels, applicator_mm=(0.0, 0.0), settings=s), args.repeats),
            rate=True)
    cache = BioheatEstimator()
    vessels = scenes["8 mm vessel 4 mm outside the zone"]
    row("same scene again (BioheatEstimator cache hit)",
        timed(lambda: cache.estimate(zone, vessels, applicator_mm=(0.0, 0.0), settings=s), args.repeats))
    row("for comparison: one SuperLU factorisation", superlu_ms(n, args.grid_mm))

    spacing = (0.1, 0.1)
    tumour_px = circle(400, 300, 100, n=720)

    def v(vid, kind, gap, dia, ang):
        d = (10 + gap + dia / 2) / 0.1
        cx, cy = 400 + d * math.cos(ang), 300 + d * math.sin(ang)
        return VesselResult(id=vid, kind=kind, centroid_px=(cx, cy), contour_px=circle(cx, cy, dia / 2 / 0.1),
                            diameter_px=dia / 0.1, diameter_mm=dia, distance_mm=gap, uncertainty_mm=0.1)

    vessels_px = [v(1, "hepatic_vein", 0.0, 10.0, 0.0), v(2, "portal_pedicle", 2.0, 6.0, math.pi),
                  v(3, "unknown", 3.0, 2.0, -math.pi / 2)]
    print("margin planner (20 mm tumour, 720-point contour, 0.1 mm/px)")
    for label, vs in (("no vessel", []), ("3 vessels (abutting HV, pedicle, small)", vessels_px)):
        row(label, timed(lambda: plan_margin(tumour_px, vs, spacing_mm=spacing, settings=s), args.repeats))
    tumour = TumorResult(centroid_px=(400, 300), contour_px=tumour_px, area_px=math.pi * 1e4, area_mm2=math.pi * 100,
                         equivalent_diameter_mm=20.0)
    result = FrameResult(frame=0, t_s=0.0, spacing_mm=spacing, status="ok", tumor=tumour, vessels=vessels_px)
    for label, settings in (("apply_guidance, bioheat on (cache off)", s),
                            ("apply_guidance, bioheat off", dataclasses.replace(s, bioheat=False))):
        row(label, timed(lambda: apply_guidance(result, settings=settings, estimator=BioheatEstimator(max_entries=0)),
                         args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
