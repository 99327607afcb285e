#!/usr/bin/env python3
"""Decode speed and memory per input format, and PLUS writer throughput.

Usage::

    .venv/bin/python tools/bench_decode.py            # everything (~1-2 min, ~2 GB of temp files)
    .venv/bin/python tools/bench_decode.py --quick    # 300-frame files only
    .venv/bin/python tools/bench_decode.py --json     # one JSON object per line

Each case runs in its own subprocess, so ``ru_maxrss`` (peak resident memory) is
that case's own peak. For every case it prints decode time per frame (median and
95th percentile of ``source.read()`` over a sequential pass), the peak RSS of the
process, the RSS before opening the file (imports only) and their difference, and
the tracemalloc peak of Python allocations during the pass.

"Memory does not grow with recording length": the PLUS raw and zlib cases are run
on 300- and 3000-frame 640x480 recordings written by our own
:class:`~iousguide.acquisition.plus_writer.SequenceWriter`; the summary prints the
peak-RSS difference between the two lengths.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IOUSGUIDE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _rss_mb() -> float:
    """Current resident memory of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    Linux ``VmHWM`` belongs to the process image; ``getrusage().ru_maxrss`` is kept
    across ``execve`` and would report the *parent's* peak in a fresh child, so it is
    only the fallback.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


# ---------------------------------------------------------------------------
# one case (runs in a child process)
# ---------------------------------------------------------------------------
def run_case(path: str, max_frames: int | None) -> dict:
    import numpy as np

    from iousguide.acquisition import open_source
    from iousguide.errors import EndOfSource

    base_rss = _rss_mb()
    tracemalloc.start()
    times_ms = []
    t_open = time.perf_counter()
    with open_source(path) as source:
        open_ms = (time.perf_counter() - t_open) * 1e3
        n = len(source) if max_frames is None else min(len(source), max_frames)
        for _ in range(n):
            t0 = time.perf_counter()
            try:
                frame = source.read()
            except EndOfSource:
                break
            times_ms.append((time.perf_counter() - t0) * 1e3)
        shape = frame.pixels.shape
        seek_ms = None
        if len(source) > 2:
            # random access backwards (the expensive direction for zlib streams)
            order = list(range(len(source) - 1, -1, -max(1, len(source) // 10)))
            t0 = time.perf_counter()
            for i in order:
                source.frame_at(i)
            seek_ms = (time.perf_counter() - t0) * 1e3 / len(order)
        fmt = source.format_name
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    times = np.asarray(times_ms)
    return {
        "format": fmt,
        "frames": len(times_ms),
        "shape": list(shape),
        "open_ms": round(open_ms, 1),
        "decode_ms_median": round(float(np.median(times)), 3),
        "decode_ms_p95": round(float(np.percentile(times, 95)), 3),
        "backward_seek_ms": None if seek_ms is None else round(seek_ms, 2),
        "rss_before_mb": round(base_rss, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "peak_rss_delta_mb": round(_peak_rss_mb() - base_rss, 1),
        "tracemalloc_peak_mb": round(traced_peak / 2**20, 2),
    }


def run_writer(width: int, height: int, channels: int, frames: int, folder: str) -> dict:
    import numpy as np

    from iousguide.acquisition.plus_writer import SequenceWriter
    from iousguide.frames import Frame

    rng = np.random.default_rng(0)
    shape = (height, width) if channels == 1 else (height, width, channels)
    pool = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(8)]
    path = Path(folder) / f"w_{width}x{height}x{channels}.igs.mha"
    per_frame = []
    t_all = time.perf_counter()
    writer = SequenceWriter(path)
    for i in range(frames):
        frame = Frame(pixels=pool[i % len(pool)], index=i, t_mono_ns=time.monotonic_ns(), t_source_s=i / 30)
        t0 = time.perf_counter()
        writer.append(frame)
        per_frame.append((time.perf_counter() - t0) * 1e3)
    t_append = time.perf_counter() - t_all
    t0 = time.perf_counter()
    writer.close()
    close_s = time.perf_counter() - t0
    path.unlink()
    times = np.asarray(per_frame)
    return {
        "writer": f"{width}x{height}x{channels}",
        "frames": frames,
        "append_fps": round(frames / t_append, 1),
        "append_ms_median": round(float(np.median(times)), 3),
        "append_ms_p95": round(float(np.percentile(times, 95)), 3),
        "MB_per_s": round(frames * pool[0].nbytes / t_append / 2**20, 1),
        "close_s": round(close_s, 2),
    }


# ---------------------------------------------------------------------------
# fixtures (parent process)
# ---------------------------------------------------------------------------
def _speckle_frames(n: int, height: int, width: int):
    """Realistic test frames: the real liver sweep (PLUS file, CC BY 4.0) resized and
    slowly shifted so that consecutive frames differ; synthetic speckle if it is absent."""
    import cv2
    import numpy as np

    liver = SHARED / "liver_sweep" / "liver_sweep_every7th.igs.mha"
    if liver.exists():
        from iousguide.acquisition import open_source

        with open_source(liver) as source:
            bases = [cv2.resize(np.asarray(f.pixels), (width, height), interpolation=cv2.INTER_AREA)
                     for f in source]
    else:
        rng = np.random.default_rng(7)
        yy, xx = np.mgrid[0:height, 0:width]
        smooth = 90 + 60 * np.sin(xx / 37.0) * np.cos(yy / 23.0)
        bases = [np.clip(smooth * rng.rayleigh(0.6, (height, width)), 0, 255).astype(np.uint8) for _ in range(4)]
    for i in range(n):
        yield np.roll(bases[i % len(bases)], (i // len(bases)) % 16, axis=1)


def make_plus(folder: Path, n: int, *, compress: bool) -> Path:
    from iousguide.acquisition.plus_writer import SequenceWriter
    from iousguide.frames import Frame

    path = folder / f"bench_{n}_{'zlib' if compress else 'raw'}.igs.mha"
    if path.exists():
        return path
    with SequenceWriter(path, compress=compress, spacing_mm=(0.2, 0.2)) as writer:
        for i, pixels in enumerate(_speckle_frames(n, 480, 640)):
            writer.append(Frame(pixels=pixels, index=i, t_mono_ns=0, t_source_s=1000 + i / 30))
    return path


def make_mp4(folder: Path, n: int) -> Path | None:
    import cv2

    path = folder / f"bench_{n}.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480), isColor=False)
    if not writer.isOpened():
        return None
    for pixels in _speckle_frames(n, 480, 640):
        writer.write(pixels)
    writer.release()
    return path if path.exists() and path.stat().st_size > 0 else None


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last[:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300-frame generated files only")
    parser.add_argument("--json", action="store_true", help="print one JSON object per case")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--max-frames", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--writer", nargs=4, type=int, metavar=("W", "H", "C", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.max_frames)))
        return 0
    if args.writer:
        print(json.dumps(run_writer(*args.writer, args.folder)))
        return 0

    rows: list[tuple[str, dict]] = []
    lengths = [300] if args.quick else [300, 3000]
    with tempfile.TemporaryDirectory(prefix="iousguide-bench-") as tmp:
        folder = Path(tmp)
        cases: list[tuple[str, Path | None, str]] = []
        mp4 = make_mp4(folder, 300)
        cases.append(("video mp4 640x480 (cv2 mp4v)", mp4, "" if mp4 else "cv2.VideoWriter could not write mp4"))
        for name in ("color3d_jpeg_baseline.dcm", "examples_ybr_color.dcm", "OBXXXX1A_rle_2frame.dcm", "US1_UNCR.dcm"):
            path = SHARED / "dicom" / name
            note = "" if path.exists() else f"not found: {path}"
            if not (ROOT / "iousguide" / "acquisition" / "dicom.py").exists():
                note = "DICOM source not built yet"
            cases.append((f"DICOM {name}", path, note))
        cases.append(("PLUS liver sweep (zlib, real)", SHARED / "liver_sweep" / "liver_sweep_every7th.igs.mha", ""))
        cases.append(("PLUS NRRD gzip (real)", SHARED / "plus" / "NwirePhantomFreehand.igs.nrrd", ""))
        for n in lengths:
            for compress in (False, True):
                t0 = time.perf_counter()
                path = make_plus(folder, n, compress=compress)
                kind = "zlib" if compress else "raw"
                label = f"PLUS {kind} 640x480 x{n}"
                cases.append((label, path, ""))
                print(f"# wrote {label}: {path.stat().st_size / 2**20:.0f} MB in {time.perf_counter() - t0:.1f} s",
                      file=sys.stderr)
        for label, path, note in cases:
            if note or path is None or not Path(path).exists():
                print(f"# skipped {label}: {note or 'file missing'}")
                continue
            result = _child(["--case", str(path)])
            rows.append((label, result))
        for width, height, channels in ((800, 600, 1), (1920, 1080, 1), (1920, 1080, 3)):
            n = 300
            rows.append((f"writer append {width}x{height}x{channels}",
                         _child(["--writer", str(width), str(height), str(channels), str(n), "--folder", tmp])))

    if args.json:
        for label, result in rows:
            print(json.dumps({"case": label, **result}))
        return 0
    print(f"{'case':<40} {'frames':>6} {'med ms':>8} {'p95 ms':>8} {'seek ms':>8} {'open ms':>8} "
          f"{'peakRSS':>8} {'ΔRSS':>7} {'pyPeak':>7}")
    for label, r in rows:
        if "error" in r:
            print(f"{label:<40} error: {r['error']}")
        elif "writer" in r:
            print(f"{label:<40} {r['frames']:>6} append median {r['append_ms_median']} ms, p95 "
                  f"{r['append_ms_p95']} ms, {r['append_fps']} frames/s ({r['MB_per_s']} MB/s); close {r['close_s']} s")
        else:
            print(f"{label:<40} {r['frames']:>6} {r['decode_ms_median']:>8} {r['decode_ms_p95']:>8} "
                  f"{str(r['backward_seek_ms']):>8} {r['open_ms']:>8} {r['peak_rss_mb']:>7}M "
                  f"{r['peak_rss_delta_mb']:>6}M {r['tracemalloc_peak_mb']:>6}M")
    by_label = dict(rows)
    if not args.quick:
        for kind in ("raw", "zlib"):
            a, b = by_label.get(f"PLUS {kind} 640x480 x300"), by_label.get(f"PLUS {kind} 640x480 x3000")
            if a and b and "error" not in a and "error" not in b:
                print(f"memory vs length, PLUS {kind}: peak RSS {a['peak_rss_mb']} MB (300 frames) vs "
                      f"{b['peak_rss_mb']} MB (3000 frames): delta {b['peak_rss_mb'] - a['peak_rss_mb']:+.1f} MB; "
                      f"Python peak {a['tracemalloc_peak_mb']} vs {b['tracemalloc_peak_mb']} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
