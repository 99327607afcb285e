#!/usr/bin/env python
"""Screenshots of the guidance window on every bundled recording (for documentation and review).

Each shot is an unattended run of the real command (real pipeline, offscreen)::

    iousguide replay recordings/NAME --frames N --size 1366x768 --mode MODE --screenshot OUT/NAME_MODE.png

Usage::

    .venv/bin/python tools/screenshots.py --out /tmp/iousguide-shots [--frames 30] [--modes resection,ablation]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = (".mp4", ".mha", ".dcm", ".nrrd")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/iousguide-shots", help="output folder")
    parser.add_argument("--frames", type=int, default=30, help="frames to play before the shot")
    parser.add_argument("--size", default="1366x768")
    parser.add_argument("--modes", default="resection,ablation")
    parser.add_argument("recordings", nargs="*", help="default: every recording in recordings/")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recordings = [Path(p) for p in args.recordings] or sorted(
        p for p in (ROOT / "recordings").iterdir() if p.name.endswith(SUFFIXES)
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    failures = 0
    for recording in recordings:
        for mode in args.modes.split(","):
            shot = out / f"{recording.name.split('.')[0]}_{mode}.png"
            cmd = [sys.executable, "-m", "iousguide", "replay", str(recording), "--frames", str(args.frames),
                   "--size", args.size, "--mode", mode, "--screenshot", str(shot)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
            if proc.returncode != 0:
                failures += 1
                print(f"{shot.name}: failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            stats = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{shot}  displayed {stats['displayed_frames']} frames, "
                  f"frame age median {stats['frame_age_ms_median']:.0f} ms")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
