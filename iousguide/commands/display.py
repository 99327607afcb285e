"""``iousguide replay [SOURCE]`` and ``iousguide live SPEC``: the guidance window."""

from __future__ import annotations

import argparse
import json
import math
import os

from iousguide.acquisition.player import check_speed
from iousguide.commands.common import add_calibration_options, add_tracking_options, open_source_from_args, tracking_changes
from iousguide.errors import SettingsError


def _window_options(parser: argparse.ArgumentParser, *, live: bool) -> None:
    add_calibration_options(parser)
    parser.add_argument("--tumor-seed", metavar="X,Y", help="tumour seed point in source pixels")
    add_tracking_options(parser)
    parser.add_argument("--margin-mm", type=float, default=None, help="resection margin target in free parenchyma (default 5)")
    parser.add_argument("--floor-mm", type=float, default=None, help="minimum margin everywhere except detachment (default 1)")
    parser.add_argument("--ablation-margin-mm", type=float, default=None, help="ablative margin (default 5, 10 preferred)")
    parser.add_argument("--modality", choices=("RFA", "MWA"), default=None, help="ablation modality (default RFA)")
    parser.add_argument("--mode", choices=("resection", "ablation"), default="resection", help="what to overlay")
    parser.add_argument("--stale-ms", type=float, default=250.0, help="frame age that withdraws guidance (default 250)")
    parser.add_argument("--frames", type=int, default=None, metavar="N", help="unattended: show N frames, then exit")
    parser.add_argument("--screenshot", metavar="FILE", help="unattended: save the window as PNG before exiting")
    parser.add_argument("--stats", metavar="FILE", help="write source_fps, displayed_fps, frame_age_ms_median/p95 as JSON on exit")
    parser.add_argument("--snapshot-dir", default=".", help="where S saves snapshots (default: current folder)")
    parser.add_argument("--size", metavar="WxH", help="window size in screen pixels, e.g. 1366x768")
    if not live:
        parser.add_argument("--speed", type=float, default=1.0, help="replay speed 0.25-4 (default 1)")
        parser.add_argument("--loop", action="store_true", help="start again at the end")
    else:
        parser.add_argument("--record-dir", default=".", help="where R records (default: current folder)")


def register(subparsers) -> None:
    replay = subparsers.add_parser("replay", help="guidance window on a recording (default: the bundled recording)")
    replay.add_argument("source", nargs="?", help="recording (file or folder); default: recordings/default.*")
    _window_options(replay, live=False)
    replay.set_defaults(func=run, live=False)
    live = subparsers.add_parser("live", help="guidance window on a live source (device:N, stream URL, igtl://)")
    live.add_argument("source", metavar="SPEC", help="device:N, /dev/videoN, rtsp:// udp:// http:// or igtl://host:port/Device")
    _window_options(live, live=True)
    live.set_defaults(func=run, live=True)


def _parse_pair(text: str, name: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise SettingsError(f"{name} must be X,Y (two numbers), got {text!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise SettingsError(f"{name} must be X,Y (two finite numbers), got {text!r}")
    return x, y


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SettingsError(f"--size must be WxH, e.g. 1366x768, got {text!r}") from None
    if w < 320 or h < 240:
        raise SettingsError(f"--size {text} is too small (at least 320x240)")
    return w, h


def build_pipeline(args: argparse.Namespace, *, t0_s: float | None = None):
    """The headless pipeline with the guidance settings from the command line."""
    from iousguide.analysis.settings import TrackingSettings
    from iousguide.pipeline import Pipeline, PipelineSettings

    pipeline = Pipeline(PipelineSettings(tracking=TrackingSettings(**tracking_changes(args))), t0_s=t0_s)
    changes = {
        key: value
        for key, value in (
            ("margin_target_mm", args.margin_mm),
            ("margin_floor_mm", args.floor_mm),
            ("ablation_margin_mm", args.ablation_margin_mm),
            ("modality", args.modality),
        )
        if value is not None
    }
    if changes:
        if pipeline.settings.guidance is None:
            raise SettingsError("guidance settings are not available in this build")
        try:
            pipeline.update_guidance(**changes)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"invalid guidance setting: {exc}") from None
    if args.tumor_seed:
        pipeline.seed_tumor(*_parse_pair(args.tumor_seed, "--tumor-seed"))
    return pipeline


def run(args: argparse.Namespace) -> int:
    speed = check_speed(getattr(args, "speed", 1.0))
    if args.frames is not None and args.frames < 1:
        raise SettingsError(f"--frames must be at least 1, got {args.frames}")
    if args.stale_ms <= 0:
        raise SettingsError(f"--stale-ms must be positive, got {args.stale_ms}")
    size_px = _parse_size(args.size)
    spec = args.source
    from iousguide.display import bundled_calibration, default_recording

    if spec is None:
        spec = str(default_recording())
    if not args.live and not args.calibration and not args.spacing_mm:
        preset = bundled_calibration(spec)
        if preset is not None:  # a bundled recording: its own preset (videos carry no spacing)
            args.calibration = str(preset)
    source = open_source_from_args(args, spec)
    try:
        if not args.live and not source.random_access:
            raise SettingsError(f"{spec} is a live source: use `iousguide live {spec}`")
        if args.live and source.random_access:
            raise SettingsError(f"{spec} is a recording: use `iousguide replay {spec}`")
        times = getattr(source, "frame_times_s", None)
        t0_s = float(times[0]) if times is not None and len(times) else None
        pipeline = build_pipeline(args, t0_s=t0_s)
        from iousguide.display.app import run_window
        from iousguide.display.window import WindowOptions

        calibration = source.calibration
        if calibration.spacing_mm is None:
            cal_label = "none (uncalibrated)"
        else:
            cal_label = calibration.name or f"{calibration.spacing_mm[0]:.4g}x{calibration.spacing_mm[1]:.4g} mm/px"
            cal_label += f" ({calibration.source})"
        options = WindowOptions(
            speed=speed,
            loop=bool(getattr(args, "loop", False)),
            stale_ms=args.stale_ms,
            frames=args.frames,
            screenshot=args.screenshot,
            stats=args.stats,
            snapshot_dir=args.snapshot_dir,
            record_dir=getattr(args, "record_dir", "."),
            mode=args.mode,
            source_label=os.path.basename(str(spec).rstrip("/")) or str(spec),
            calibration_label=cal_label,
        )
        stats = run_window(source, pipeline, options, size_px=size_px)
    finally:
        source.close()
    if args.frames is not None and not args.stats:
        print(json.dumps(stats))
    return 0
