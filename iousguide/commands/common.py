"""Options shared by several commands."""

from __future__ import annotations

import argparse

from iousguide.calibration import load_preset, parse_spacing_arg


def add_calibration_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--calibration", metavar="FILE", help="calibration preset TOML (overrides file metadata)")
    group.add_argument("--spacing-mm", metavar="X[,Y]", help="pixel spacing in mm (overrides file metadata)")
    parser.add_argument("--fps", type=float, default=None, help="frame rate for image folders (default 10)")


def open_source_from_args(args: argparse.Namespace, spec: str):
    from iousguide.acquisition import open_source

    preset = load_preset(args.calibration) if getattr(args, "calibration", None) else None
    spacing = parse_spacing_arg(args.spacing_mm) if getattr(args, "spacing_mm", None) else None
    return open_source(spec, calibration=preset, spacing_mm=spacing, fps=getattr(args, "fps", None))
