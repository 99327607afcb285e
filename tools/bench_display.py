#!/usr/bin/env python
"""Benchmark the guidance window: displayed frames per second and frame age (grab -> paint).

Runs the real window (worker thread, view, panels, HUD) on a recording, each
configuration in its own process, offscreen and under Xvfb (xcb), at window
sizes 800x600 and 1920x1080, and prints one line per run plus a JSON summary.

Two analysis modes:

* ``overlays`` (default): the real pipeline's results for the first frames are
  computed once, then handed back per frame (index modulo), so the display is
  measured with every overlay drawn (tumour, vessels + labels, caliper,
  resection line or ablation zones) and without the analysis cost;
* ``pipeline``: the real headless pipeline runs in the worker thread (what a
  user gets end to end; limited by the analysis speed).

Frame age = ``time.monotonic_ns()`` at the first paint of the frame's image
minus the frame's ``t_mono_ns`` (set when decoding finished).

Usage::

    .venv/bin/python tools/bench_display.py                       # default recording, both platforms
    .venv/bin/python tools/bench_display.py --platform offscreen --seconds 5 --speed 4
    .venv/bin/python tools/bench_display.py --mode pipeline --speed 1
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _open(recording: str):
    from iousguide.acquisition import open_source
    from iousguide.calibration import load_preset
    from iousguide.display import bundled_calibration

    preset = bundled_calibration(recording)
    return open_source(recording, calibration=load_preset(preset) if preset else None)


class CannedPipeline:
    """Precomputed real results by frame index (modulo): the display cost alone."""

    def __init__(self, results):
        self.results = results
        self.settings = None

    def process(self, frame):
        import copy

        result = copy.copy(self.results[frame.index % len(self.results)])
        result.t_mono_ns = frame.t_mono_ns
        return result

    def seed_tumor(self, x_src, y_src):
        pass

    def set_preserve(self, vessel_id, preserve):
        pass

    def update_guidance(self, **changes):
        pass

    def reset(self):
        pass


def precompute(recording: str, n_frames: int, out: Path) -> dict:
    from iousguide.pipeline import Pipeline

    with _open(recording) as source:
        pipeline = Pipeline(t0_s=float(source.frame_times_s[0]))
        results = [pipeline.process(source.frame_at(i)) for i in range(min(n_frames, len(source)))]
    out.write_bytes(pickle.dumps(results))
    with_tumor = sum(r.tumor is not None for r in results)
    with_plan = sum(r.margin_plan is not None for r in results)
    vessels = sum(len(r.vessels) for r in results)
    return {"frames": len(results), "with_tumor": with_tumor, "with_plan": with_plan, "vessels": vessels}


def child(args: argparse.Namespace) -> None:
    from PySide6 import QtCore

    from iousguide.display.app import application
    from iousguide.display.window import GuidanceWindow, WindowOptions
    from iousguide.display.worker import ReplayWorker
    from iousguide.pipeline import Pipeline

    app = application()
    source = _open(args.recording)
    if args.mode == "overlays":
        pipeline = CannedPipeline(pickle.loads(Path(args.results).read_bytes()))
    else:
        pipeline = Pipeline(t0_s=float(source.frame_times_s[0]))
    worker = ReplayWorker(source, pipeline, speed=args.speed, loop=True)
    window = GuidanceWindow(worker, WindowOptions(speed=args.speed, loop=True, mode=args.view_mode, source_label="bench"))
    w, h = (int(v) for v in args.size.split("x"))
    window.resize(w, h)
    window.show()
    QtCore.QTimer.singleShot(int(args.seconds * 1000), window.close)
    app.exec()
    stats = window.stats()
    stats["platform"] = app.platformName()
    stats["window_px"] = [window.width(), window.height()]
    stats["view_px"] = [window.view.width(), window.view.height()]
    stats["drawn"] = window.view.state.drawn
    stats["displayed_fps_mean"] = window.displayed_count / args.seconds
    source.close()
    print("BENCH " + json.dumps(stats))


def run_one(args, platform: str, size: str, results_path: Path) -> dict | None:
    cmd = [sys.executable, __file__, "--child", "--recording", args.recording, "--size", size, "--mode", args.mode,
           "--speed", str(args.speed), "--seconds", str(args.seconds), "--results", str(results_path),
           "--view-mode", args.view_mode]
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    if platform == "offscreen":
        env["QT_QPA_PLATFORM"] = "offscreen"
    else:
        if shutil.which("xvfb-run") is None:
            print("xvfb: xvfb-run not installed, skipped", file=sys.stderr)
            return None
        w, h = (int(v) for v in size.split("x"))
        cmd = ["xvfb-run", "-a", "-s", f"-screen 0 {max(w, 1366)}x{max(h, 768)}x24"] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.seconds + 120)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        print(f"{platform} {size}: failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][6:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recording", default=None, help="recording to play (default: the bundled default)")
    parser.add_argument("--platform", choices=("offscreen", "xvfb", "both"), default="both")
    parser.add_argument("--sizes", default="800x600,1920x1080", help="window sizes, comma separated")
    parser.add_argument("--mode", choices=("overlays", "pipeline"), default="overlays")
    parser.add_argument("--view-mode", choices=("resection", "ablation"), default="resection")
    parser.add_argument("--speed", type=float, default=2.0, help="replay speed (2 = 30 fps from a 15 fps clip)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per run")
    parser.add_argument("--precompute-frames", type=int, default=30)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.recording is None:
        from iousguide.display import default_recording

        args.recording = str(default_recording())
    if args.child:
        child(args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        results_path = Path(tmp) / "results.pkl"
        if args.mode == "overlays":
            summary = precompute(args.recording, args.precompute_frames, results_path)
            print(f"precomputed real results: {summary}")
        platforms = ("offscreen", "xvfb") if args.platform == "both" else (args.platform,)
        rows = []
        for platform in platforms:
            for size in args.sizes.split(","):
                stats = run_one(args, platform, size, results_path)
                if stats is None:
                    continue
                rows.append({"platform_asked": platform, "size": size, **stats})
                print(
                    f"{stats['platform']:>9} {size:>9} view {stats['view_px'][0]}x{stats['view_px'][1]}  "
                    f"source {stats['source_fps'] or 0:.1f} fps x{args.speed:g}  "
                    f"displayed {stats['displayed_fps'] or 0:.1f} fps  "
                    f"frame age median {stats['frame_age_ms_median'] or float('nan'):.1f} ms "
                    f"p95 {stats['frame_age_ms_p95'] or float('nan'):.1f} ms  "
                    f"(skipped {stats['skipped']}, dropped {stats['dropped']}, drawn {stats['drawn']})",
                    flush=True,
                )
    print(json.dumps({"recording": args.recording, "mode": args.mode, "speed": args.speed, "runs": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
