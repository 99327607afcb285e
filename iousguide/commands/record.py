"""``iousguide record SOURCE OUT [--max-frames N] [--duration-s S] [--mp4]``.

Records every frame of SOURCE (capture card, stream, OpenIGTLink, or a file) to
a PLUS ``.igs.mha`` through :class:`~iousguide.acquisition.recorder.Recorder`.
Stops at the limit, at the end of a file, after ``--stall-timeout-s`` without a
frame from a live source, or on Ctrl-C / SIGTERM (the file is then finished
normally). Prints one JSON line: the recording summary (written, dropped with
reasons, source counters). Exit code 0 when no frame was dropped, 3 when some
were (the file is still valid).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from iousguide.commands.common import add_calibration_options, open_source_from_args
from iousguide.errors import SettingsError, SourceTimeout


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "record", help="record a live source (or a file) losslessly to a PLUS .igs.mha, optionally also mp4"
    )
    parser.add_argument("source", help="device:N, /dev/videoN, stream URL, igtl://host:port/Device, or a file")
    parser.add_argument("out", help="output .igs.mha (must not exist unless --overwrite)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    parser.add_argument("--duration-s", type=float, default=None, metavar="S", help="stop after S seconds of frames")
    parser.add_argument("--mp4", action="store_true", help="also write <stem>.mp4 and <stem>.mp4.json (per-frame times)")
    parser.add_argument("--compress", action="store_true", help="zlib-compress the .igs.mha when finishing")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument(
        "--stall-timeout-s", type=float, default=10.0, metavar="S",
        help="stop when a live source gives no frame for S seconds (default 10)",
    )
    add_calibration_options(parser)
    parser.set_defaults(func=run)


def _raise_interrupt(signum, frame):  # SIGTERM ends the recording like Ctrl-C
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from iousguide.acquisition.recorder import Recorder

    if args.max_frames is not None and args.max_frames <= 0:
        raise SettingsError(f"--max-frames must be positive, got {args.max_frames}")
    if args.stall_timeout_s <= 0:
        raise SettingsError(f"--stall-timeout-s must be positive, got {args.stall_timeout_s}")
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with open_source_from_args(args, args.source) as source:
            recorder = Recorder(
                source, args.out, max_frames=args.max_frames, duration_s=args.duration_s,
                mp4=args.mp4, compress=args.compress, overwrite=args.overwrite,
            )
            live = source.health() is not None
            recorder.start()
            reason = ""
            try:
                last_frame = time.monotonic()
                while not recorder.wait(0.0):
                    if not live:
                        recorder.wait(0.2)
                        continue
                    try:
                        source.read(timeout_s=0.2)  # keep the hand-off drained; frames are recorded by the tap
                        last_frame = time.monotonic()
                    except SourceTimeout:
                        if time.monotonic() - last_frame > args.stall_timeout_s:
                            reason = f"no frame for {args.stall_timeout_s:g} s"
                            break
            except KeyboardInterrupt:
                reason = "interrupted"
            summary = recorder.stop()
            if reason:
                summary.stopped_because = reason
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(json.dumps(summary.to_json()))
    if summary.written == 0:
        print("iousguide: error: no frame was recorded", file=sys.stderr)
        return 2
    return 3 if summary.dropped else 0
