"""``iousguide analyze SOURCE``: per-frame results as JSON lines (format in the README)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from contextlib import nullcontext

from iousguide.commands.common import add_calibration_options, add_tracking_options, open_source_from_args, tracking_changes
from iousguide.errors import EndOfSource, IousguideError, SettingsError, SourceTimeout

LIVE_READ_TIMEOUT_S = 1.0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyze", help="find tumour and vessels in every frame; distances, diameters and guidance as JSON lines"
    )
    parser.add_argument("source", help="recording or live source (see `iousguide info`)")
    add_calibration_options(parser)
    parser.add_argument("--tumor-seed", metavar="X,Y[@FRAME]", help="tumour seed point in source pixels, optionally on a frame")
    parser.add_argument("--out", metavar="FILE.jsonl", default="-", help="output file; '-' or absent: stdout")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    parser.add_argument("--progress", dest="progress", action="store_true", default=None, help="progress bar on stderr (default: when stderr is a terminal)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    add_tracking_options(parser)
    guidance = parser.add_argument_group("guidance")
    guidance.add_argument("--margin-mm", type=float, default=None, help="target margin in free parenchyma (default 5 mm)")
    guidance.add_argument("--floor-mm", type=float, default=None, help="hard margin floor (default 1 mm)")
    guidance.add_argument("--preserve", metavar="ID,...", default=None, help="vessel ids to preserve")
    guidance.add_argument("--no-preserve", metavar="ID,...", default=None, help="vessel ids not to preserve")
    guidance.add_argument("--ablation-margin-mm", type=float, default=None, help="ablative margin (default 5 mm)")
    guidance.add_argument("--modality", choices=("RFA", "MWA"), default=None, help="ablation modality (default RFA)")
    parser.set_defaults(func=run)


def parse_seed(text: str) -> tuple[float, float, int | None]:
    """``X,Y`` or ``X,Y@FRAME`` -> (x, y, frame or None)."""
    frame = None
    point = text
    if "@" in text:
        point, _, frame_text = text.partition("@")
        try:
            frame = int(frame_text)
        except ValueError:
            raise SettingsError(f"--tumor-seed: frame must be an integer, got {frame_text!r}") from None
        if frame < 0:
            raise SettingsError(f"--tumor-seed: frame must be >= 0, got {frame}")
    try:
        x_text, y_text = point.split(",")
        x, y = float(x_text), float(y_text)
    except ValueError:
        raise SettingsError(f"--tumor-seed expects X,Y[@FRAME] in source pixels, got {text!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise SettingsError(f"--tumor-seed: X and Y must be finite numbers of source pixels, got {text!r}")
    return x, y, frame


def _parse_ids(text: str | None, flag: str) -> frozenset[int]:
    if not text:
        return frozenset()
    try:
        return frozenset(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SettingsError(f"{flag} expects comma-separated vessel ids, got {text!r}") from None


def build_settings(args: argparse.Namespace):
    """PipelineSettings from the command line (shared with the display commands)."""
    from iousguide.pipeline import PipelineSettings

    settings = PipelineSettings()
    if getattr(args, "tumor_seed", None):
        x, y, frame = parse_seed(args.tumor_seed)
        settings.tracking = dataclasses.replace(settings.tracking, tumor_seed_px=(x, y), tumor_seed_frame=frame)
    tracking = tracking_changes(args)
    if tracking:
        settings.tracking = dataclasses.replace(settings.tracking, **tracking)
    changes = {}
    for flag, key in (
        ("margin_mm", "margin_target_mm"),
        ("floor_mm", "margin_floor_mm"),
        ("ablation_margin_mm", "ablation_margin_mm"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            if not value > 0 and not (flag == "floor_mm" and value == 0):
                raise SettingsError(f"--{flag.replace('_', '-')} must be positive, got {value}")
            changes[key] = value
    if getattr(args, "modality", None):
        changes["modality"] = args.modality
    preserve = _parse_ids(getattr(args, "preserve", None), "--preserve")
    no_preserve = _parse_ids(getattr(args, "no_preserve", None), "--no-preserve")
    if preserve & no_preserve:
        raise SettingsError(f"vessel ids both preserved and not preserved: {sorted(preserve & no_preserve)}")
    if preserve:
        changes["preserve_ids"] = preserve
    if no_preserve:
        changes["no_preserve_ids"] = no_preserve
    if changes:
        try:
            settings.guidance = dataclasses.replace(settings.guidance, **changes)
        except (TypeError, ValueError) as exc:
            raise SettingsError(str(exc)) from None
    return settings


class _Progress:
    def __init__(self, total: int | None, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and bool(total)
        self._last = 0.0

    def update(self, done: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        fraction = min(done / self.total, 1.0)
        bar = "#" * int(fraction * 30)
        sys.stderr.write(f"\ranalyze [{bar:<30}] {done}/{self.total} frames")
        sys.stderr.flush()

    def finish(self, done: int) -> None:
        if self.enabled:
            self.update(done, force=True)
            sys.stderr.write("\n")


def run(args: argparse.Namespace) -> int:
    from iousguide.analysis.results import FrameResult
    from iousguide.pipeline import Pipeline

    settings = build_settings(args)
    if args.max_frames is not None and args.max_frames <= 0:
        raise SettingsError("--max-frames must be positive")
    with open_source_from_args(args, args.source) as source:
        times = getattr(source, "frame_times_s", None)
        pipeline = Pipeline(settings, t0_s=float(times[0]) if times is not None and len(times) else None)
        out_cm = nullcontext(sys.stdout) if args.out in (None, "-") else open(args.out, "w", encoding="utf-8")
        progress = _Progress(source.length, sys.stderr.isatty() if args.progress is None else args.progress)
        done = 0
        with out_cm as out:
            try:
                while args.max_frames is None or done < args.max_frames:
                    try:
                        frame = source.read(timeout_s=None if source.random_access else LIVE_READ_TIMEOUT_S)
                    except EndOfSource:
                        break
                    except SourceTimeout as exc:
                        result = FrameResult(frame=-1, t_s=None, spacing_mm=None, status="no_signal", message=str(exc))
                        out.write(json.dumps(result.to_json()) + "\n")
                        out.flush()
                        continue
                    result = pipeline.process(frame)
                    out.write(json.dumps(result.to_json()) + "\n")
                    out.flush()  # a killed analysis keeps every line written so far
                    done += 1
                    progress.update(done)
            except IousguideError as exc:
                progress.finish(done)
                raise type(exc)(f"{exc} (after {done} frames; results so far were written)") from None
        progress.finish(done)
    if done == 0:
        raise EndOfSource(f"{args.source}: no frames to analyse")
    return 0
