"""Benchmark: decode and analysis time per frame at 800x600 and on a 1080p capture crop.

    python tools/bench_analysis.py [--frames 150] [--threads N]

Makes two short phantom clips (deterministic seeds), writes them as mp4 in a temporary
folder, then times, per frame: decoding (iousguide's video source) and the tracker
(``Tracker.process``). The 1080p case is a full-HD "screen capture" with the ultrasound
image in a 1000x800 region; the tracker analyses the cropped frame (as with a preset's
``crop_px``). Memory: resident set size before and after a long run (the clip looped).
Prints medians and 95th percentiles; the machine's load average is printed too, because
other processes share the cores. The process CPU time per analysed frame (all threads,
``time.process_time``) is printed as well: it does not grow when other processes compete
for the cores, so it is the figure to compare between runs on a shared machine
(``--threads 1`` makes it equal to the single-core wall time). Competing processes still
inflate it (shared caches, hyper-threads), so each frame's best CPU time over the loops is
printed too (``cpu best``): the floor this code reaches on this machine, the steadiest figure
for comparing two versions. The CPU time of the thread that calls ``Tracker.process`` is printed
too: the work on the critical path, a floor of the wall time even on idle cores (only the learned
model's worker thread overlaps it). ``--stages`` adds the median CPU time of each tracker stage, measured
in the thread that runs it (``time.thread_time``), and of the learned model's part run in the
tracker's worker thread (``learned_frame_lumens``, overlapping the classical stages; the
process CPU figures include it), and what none of the listed stages took on the calling thread
(``other (main thread)``: masks, measurements, the rest of ``Tracker._process``). ``--set NAME=VALUE`` overrides a TrackingSettings field (e.g.
``--set learned_vessels=false``), ``--sequential`` runs the learned model in line instead of in
the worker thread (same output), so versions can be compared in one tool. ``--paired`` feeds
the same frames to a tracker with the worker thread and one without, alternated frame by frame,
and prints both wall times and the median per-frame gain (both see the same load).

    python tools/bench_analysis.py --threads 1 --stages [--set learned_vessels=false] [--sequential]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from iousguide.analysis.settings import TrackingSettings, parse_setting_overrides
from iousguide.errors import SettingsError
from iousguide.analysis.tracker import Tracker


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def make_clip(path: Path, *, seed: int, n_frames: int, size: tuple[int, int], screen: tuple[int, int] | None):
    from iousguide.phantom import generate_case

    frames, _ = generate_case(seed, difficulty="medium", n_frames=n_frames, probe="convex",
                              width_px=size[0], height_px=size[1], spacing_mm=0.12)
    out_w, out_h = screen or size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (out_w, out_h))
    for f in frames:
        img = np.zeros((out_h, out_w), np.uint8)
        if screen:
            x0, y0 = (out_w - size[0]) // 2, 120
            img[y0:y0 + size[1], x0:x0 + size[0]] = f.pixels
            cv2.putText(img, "iousguide bench 7.5 MHz", (40, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 200, 2)
        else:
            img[:] = f.pixels
        writer.write(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    writer.release()
    crop = ((out_w - size[0]) // 2, 120, size[0], size[1]) if screen else None
    return crop, frames[0].spacing_mm


#: tracker stages timed with --stages: (module, name); the tracker looks the learned ones up in
#: iousguide.analysis.learned when it calls them, the others are its own imports
STAGES = (("iousguide.analysis.tracker", "prepare"), ("iousguide.analysis.tracker", "detect_vessels_prepared"),
          ("iousguide.analysis.tracker", "split_touching_steady"),
          ("iousguide.analysis.learned", "learned_frame_lumens"),
          ("iousguide.analysis.learned", "merge_learned_vessels"),
          ("iousguide.analysis.tracker", "lesion_probability"),
          ("iousguide.analysis.tracker", "learned_lesion_candidates"),
          ("iousguide.analysis.tracker", "anechoic_mask"),
          ("iousguide.analysis.tracker", "lesion_candidates"), ("iousguide.analysis.tracker.Tracker", "_follow_tumor"),
          ("iousguide.analysis.tracker", "refine_tumor"), ("iousguide.analysis.tracker.Tracker", "_assign_ids"))
#: the stages that do not run on the thread calling Tracker.process (the learned models' worker;
#: with --sequential merge_learned_vessels calls it and its time is within the merge's)
OFF_MAIN = ("learned_frame_lumens", "lesion_probability")


def _owner(path: str):
    """The module, or the class for a ``module.Class`` path, holding a stage function."""
    import importlib

    try:
        return importlib.import_module(path)
    except ModuleNotFoundError:
        mod, _, cls = path.rpartition(".")
        return getattr(importlib.import_module(mod), cls)


def _timed_stages(cpu_by_stage: dict):
    """Wrap the tracker's stage functions to add the CPU time (ms) of the thread running them
    to ``cpu_by_stage``; returns a function that restores them."""
    import threading

    lock = threading.Lock()  # learned_frame_lumens runs in the tracker's worker thread
    originals = {(mod, name): _owner(mod).__dict__[name] for mod, name in STAGES}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            c0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    cpu_by_stage[name] = cpu_by_stage.get(name, 0.0) + (time.thread_time() - c0) * 1e3
        return timed

    for (mod, name), fn in originals.items():
        setattr(_owner(mod), name, wrap(name, fn))
    return lambda: [setattr(_owner(mod), name, fn) for (mod, name), fn in originals.items()]


def parse_set(items: list[str]) -> dict:
    """``--set NAME=VALUE`` items -> TrackingSettings overrides (exits with the bad item named)."""
    try:
        return parse_setting_overrides(items)
    except SettingsError as exc:
        raise SystemExit(str(exc)) from None


def bench(path: Path, *, crop, spacing, loops: int, label: str, stages: bool = False,
          settings: TrackingSettings | None = None, sequential: bool = False) -> dict:
    from iousguide.acquisition import open_source
    from iousguide.calibration import Calibration

    cal = Calibration(spacing_mm=spacing, crop_px=crop, name="bench", source="preset")
    decode_ms, analysis_ms, cpu_ms = [], [], []
    cpu_by_frame: dict[int, list[float]] = {}
    stage_ms: dict[str, list[float]] = {name: [] for _, name in STAGES}
    main_ms: list[float] = []  # CPU of the thread calling Tracker.process (the critical path)
    other_ms: list[float] = []  # of it, what no listed stage took
    per_frame_stage: dict = {}
    restore = _timed_stages(per_frame_stage) if stages else None
    tracker = Tracker(settings or TrackingSettings())
    tracker.learned_in_worker = not sequential
    rss0 = None
    for loop in range(loops):
        with open_source(str(path), calibration=cal) as source:
            for index in itertools.count():
                per_frame_stage.clear()
                t0 = time.perf_counter()
                try:
                    frame = source.read()
                except Exception:
                    break
                t1 = time.perf_counter()
                c1, m1 = time.process_time(), time.thread_time()
                result = tracker.process(frame)
                t2, m2 = time.perf_counter(), time.thread_time()
                if result.status == "error":
                    raise SystemExit(f"frame {index}: {result.message}")
                cpu_ms.append((time.process_time() - c1) * 1e3)
                cpu_by_frame.setdefault(index, []).append(cpu_ms[-1])
                for name in stage_ms:
                    stage_ms[name].append(per_frame_stage.get(name, 0.0))
                main_ms.append((m2 - m1) * 1e3)
                other_ms.append(main_ms[-1] - sum(v for k, v in per_frame_stage.items() if k not in OFF_MAIN))
                decode_ms.append((t1 - t0) * 1e3)
                analysis_ms.append((t2 - t1) * 1e3)
        if loop == 0:
            rss0 = rss_mb()
    if restore is not None:
        restore()
    best = [min(v) for v in cpu_by_frame.values()]
    shape = frame.shape
    row = {
        "case": label, "frame_px": f"{shape[1]}x{shape[0]}", "frames": len(analysis_ms),
        "decode_median_ms": float(np.median(decode_ms)), "decode_p95_ms": float(np.percentile(decode_ms, 95)),
        "analysis_median_ms": float(np.median(analysis_ms)), "analysis_p95_ms": float(np.percentile(analysis_ms, 95)),
        # CPU time of the whole process (all threads) per analysed frame: independent of other
        # processes on a shared machine, unlike the wall-clock figures
        "analysis_cpu_median_ms": float(np.median(cpu_ms)), "analysis_cpu_p95_ms": float(np.percentile(cpu_ms, 95)),
        # each frame's best CPU time over the loops: steadier against competing processes
        "analysis_cpu_best_median_ms": float(np.median(best)), "analysis_cpu_best_p95_ms": float(np.percentile(best, 95)),
        "stage_cpu_median_ms": {**{name: float(np.median(v)) for name, v in stage_ms.items()},
                                "other (main thread)": float(np.median(other_ms))} if stages else None,
        # CPU of the thread that calls Tracker.process: a floor of the wall time on idle cores
        # (the learned model's worker thread overlaps it)
        "main_thread_cpu_median_ms": float(np.median(main_ms)), "main_thread_cpu_p95_ms": float(np.percentile(main_ms, 95)),
        "rss_after_first_pass_mb": rss0, "rss_end_mb": rss_mb(),
    }
    return row


def bench_paired(path: Path, *, crop, spacing, loops: int, label: str,
                 settings: TrackingSettings | None = None) -> dict:
    """Wall and CPU ms per frame of two trackers fed the same decoded frames, one running the
    learned model in its worker thread and one in line, alternated frame by frame (who goes
    first alternates too), so both see the same machine load; and the per-frame difference."""
    from iousguide.acquisition import open_source
    from iousguide.calibration import Calibration

    cal = Calibration(spacing_mm=spacing, crop_px=crop, name="bench", source="preset")
    wall: dict[str, list[float]] = {"worker": [], "in line": []}
    cpu: dict[str, list[float]] = {"worker": [], "in line": []}
    trackers = {"worker": Tracker(settings or TrackingSettings()), "in line": Tracker(settings or TrackingSettings())}
    trackers["in line"].learned_in_worker = False
    n = 0
    for _ in range(loops):
        with open_source(str(path), calibration=cal) as source:
            while True:
                try:
                    frame = source.read()
                except Exception:
                    break
                order = ("worker", "in line") if n % 2 == 0 else ("in line", "worker")
                n += 1
                for name in order:
                    c0, t0 = time.process_time(), time.perf_counter()
                    result = trackers[name].process(frame)
                    wall[name].append((time.perf_counter() - t0) * 1e3)
                    cpu[name].append((time.process_time() - c0) * 1e3)
                    if result.status == "error":
                        raise SystemExit(f"{name}: {result.message}")
    diff = np.array(wall["in line"]) - np.array(wall["worker"])
    return {"case": label, "frames": n, "paired_wall_gain_median_ms": float(np.median(diff)),
            **{f"{k}_{stat}": float(fn(v)) for k in wall for stat, fn, v in (
                ("wall_median_ms", np.median, wall[k]), ("wall_p95_ms", lambda a: np.percentile(a, 95), wall[k]),
                ("cpu_median_ms", np.median, cpu[k]))}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="decode and analysis ms/frame at 800x600 and a 1080p crop")
    ap.add_argument("--frames", type=int, default=30, help="phantom frames per clip (looped)")
    ap.add_argument("--loops", type=int, default=5, help="passes over each clip (memory check)")
    ap.add_argument("--threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's choice)")
    ap.add_argument("--stages", action="store_true", help="also the median CPU ms of each tracker stage")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="TrackingSettings override, e.g. learned_vessels=false (repeatable)")
    ap.add_argument("--sequential", action="store_true",
                    help="run the learned model in line, not in the tracker's worker thread")
    ap.add_argument("--paired", action="store_true",
                    help="instead: the same frames through a tracker with the worker thread and one without, "
                         "alternated frame by frame (wall-time gain of the thread under the same load)")
    args = ap.parse_args(argv)
    settings = TrackingSettings(**parse_set(args.set))
    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    print(f"load average before: {os.getloadavg()}  cv2 threads: {cv2.getNumThreads()}  cores: {os.cpu_count()}  "
          f"settings: {parse_set(args.set) or 'defaults'}  learned model "
          f"{'paired: worker thread and in line' if args.paired else 'in line' if args.sequential else 'in a worker thread'}")
    if args.paired:
        with tempfile.TemporaryDirectory() as tmp:
            for label, seed, size, screen in (("800x600", 4242, (800, 600), None),
                                              ("1080p capture, crop", 4243, (1000, 800), (1920, 1080))):
                p = Path(tmp) / f"bench_{seed}.mp4"
                crop, spacing = make_clip(p, seed=seed, n_frames=args.frames, size=size, screen=screen)
                r = bench_paired(p, crop=crop, spacing=spacing, loops=args.loops, label=label, settings=settings)
                print(f"{label}: {r['frames']} frames; wall median/p95 ms: worker thread "
                      f"{r['worker_wall_median_ms']:.1f}/{r['worker_wall_p95_ms']:.1f}, in line "
                      f"{r['in line_wall_median_ms']:.1f}/{r['in line_wall_p95_ms']:.1f}; per-frame gain median "
                      f"{r['paired_wall_gain_median_ms']:.2f} ms; CPU median worker {r['worker_cpu_median_ms']:.1f}, "
                      f"in line {r['in line_cpu_median_ms']:.1f}")
        print(f"load average after: {os.getloadavg()}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        p1 = Path(tmp) / "bench_800x600.mp4"
        crop, spacing = make_clip(p1, seed=4242, n_frames=args.frames, size=(800, 600), screen=None)
        rows.append(bench(p1, crop=crop, spacing=spacing, loops=args.loops, label="800x600", stages=args.stages,
                          settings=settings, sequential=args.sequential))
        p2 = Path(tmp) / "bench_1080p.mp4"
        crop, spacing = make_clip(p2, seed=4243, n_frames=args.frames, size=(1000, 800), screen=(1920, 1080))
        rows.append(bench(p2, crop=crop, spacing=spacing, loops=args.loops, label="1080p capture, crop",
                          stages=args.stages, settings=settings, sequential=args.sequential))
    print(f"{'case':<22}{'frame':>11}{'n':>6}{'decode med':>12}{'p95':>8}{'analysis med':>14}{'p95':>8}"
          f"{'cpu med':>9}{'p95':>7}{'cpu best':>10}{'p95':>7}{'RSS 1st':>9}{'RSS end':>9}")
    for r in rows:
        print(f"{r['case']:<22}{r['frame_px']:>11}{r['frames']:>6}{r['decode_median_ms']:>12.1f}"
              f"{r['decode_p95_ms']:>8.1f}{r['analysis_median_ms']:>14.1f}{r['analysis_p95_ms']:>8.1f}"
              f"{r['analysis_cpu_median_ms']:>9.1f}{r['analysis_cpu_p95_ms']:>7.1f}"
              f"{r['analysis_cpu_best_median_ms']:>10.1f}{r['analysis_cpu_best_p95_ms']:>7.1f}"
              f"{r['rss_after_first_pass_mb']:>9.1f}{r['rss_end_mb']:>9.1f}")
    for r in rows:
        print(f"{r['case']}: CPU of the thread calling Tracker.process (the critical path) median "
              f"{r['main_thread_cpu_median_ms']:.1f} ms, p95 {r['main_thread_cpu_p95_ms']:.1f} ms")
        if r["stage_cpu_median_ms"]:
            print(f"{r['case']}: stage CPU median ms (of the thread running it) " + ", ".join(f"{k} {v:.1f}" for k, v in r["stage_cpu_median_ms"].items()))
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
