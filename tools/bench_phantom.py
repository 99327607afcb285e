#!/usr/bin/env python3
"""Phantom generation speed: a 10 s, 15 fps, 640x480 clip (150 frames), image only and image + truth.

Usage::

    python tools/bench_phantom.py [--scenario hepatic_vein_abutting] [--frames 150]

Prints per-frame median / p95 (ms) and the total wall time for the clip. The
machine is shared, so run it when it is quiet and report the load average too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iousguide.phantom import scenarios  # noqa: E402
from iousguide.phantom.imaging import Renderer  # noqa: E402
from iousguide.phantom.truth import frame_truth  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="hepatic_vein_abutting", choices=sorted(scenarios.SCENARIOS))
    parser.add_argument("--frames", type=int, default=150)
    args = parser.parse_args(argv)
    case = scenarios.build(args.scenario)
    poses = (case.poses * (args.frames // len(case.poses) + 1))[: args.frames]
    g = case.geometry
    renderer = Renderer(case.model, g, case.params)
    image_ms, truth_ms = [], []
    t_start = time.perf_counter()
    for i, pose in enumerate(poses):
        t = i / case.fps
        t0 = time.perf_counter()
        _, maps = renderer.render(pose, t, i)
        t1 = time.perf_counter()
        frame_truth(case.model, pose, g, maps, frame=i, t_s=t)
        t2 = time.perf_counter()
        image_ms.append((t1 - t0) * 1000)
        truth_ms.append((t2 - t1) * 1000)
    total_s = time.perf_counter() - t_start
    load = os.getloadavg()
    print(f"scenario {args.scenario}: {len(poses)} frames {g.width_px}x{g.height_px} {g.kind}, "
          f"{len(poses) / case.fps:.1f} s of video at {case.fps:g} fps")
    for name, values in (("image", image_ms), ("truth", truth_ms)):
        v = np.asarray(values)
        print(f"  {name:<6} median {np.median(v):7.1f} ms/frame   p95 {np.percentile(v, 95):7.1f} ms/frame")
    print(f"  total  {total_s:.1f} s for the clip (image + truth), budget 60 s; load average {load[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
