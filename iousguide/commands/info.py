"""``iousguide info SOURCE [--json]``."""

from __future__ import annotations

import argparse
import json

from iousguide.commands.common import add_calibration_options, open_source_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="describe a recording or live source (format, frames, timing, spacing)")
    parser.add_argument("source", help="file, folder, device:N, stream URL or igtl://host:port/Device")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_calibration_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with open_source_from_args(args, args.source) as source:
        info = source.info()
    if args.json:
        print(json.dumps(info.to_json()))
        return 0
    spacing = (
        f"{info.spacing_mm[0]:.4f} x {info.spacing_mm[1]:.4f} mm/px (from {info.spacing_source})"
        if info.spacing_mm
        else "uncalibrated (no mm values will be shown)"
    )
    lines = [
        f"source:    {info.source}",
        f"format:    {info.format}",
        f"frames:    {info.frames if info.frames is not None else 'live'}",
        f"size:      {info.width} x {info.height} px, {info.channels} channel(s)",
        "timing:    "
        + (f"{info.fps:.3f} fps" if info.fps else "rate unknown")
        + (f", {info.duration_s:.3f} s" if info.duration_s is not None else "")
        + (", variable frame rate" if info.variable_rate else ""),
        f"spacing:   {spacing}",
        f"crop:      {info.crop_px if info.crop_px else 'none'}",
    ]
    if info.calibration_name:
        lines.append(f"preset:    {info.calibration_name}")
    for key, value in info.extra.items():
        lines.append(f"{key + ':':<10} {value}")
    for warning in info.warnings:
        lines.append(f"warning:   {warning}")
    print("\n".join(lines))
    return 0
