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


def add_tracking_options(parser: argparse.ArgumentParser) -> None:
    """Tracking switches shared by ``analyze``, ``replay`` and ``live``."""
    group = parser.add_argument_group("tracking")
    switch = group.add_mutually_exclusive_group()
    switch.add_argument(
        "--learned-vessels", action="store_true",
        help="run the learned vessel-lumen model as well as the classical detector (the default; "
             "finds the grey lumens of real scanners, see iousguide/models/README.md)",
    )
    switch.add_argument(
        "--no-learned-vessels", action="store_true",
        help="classical anechoic-lumen detector only (~4 ms less per 800x600 frame)",
    )
    lesions = group.add_mutually_exclusive_group()
    lesions.add_argument(
        "--learned-lesions", action="store_true",
        help="also run the learned lesion model: proposes and follows a lesion where the classical "
             "lesion maps find none (see iousguide/models/README.md)",
    )
    lesions.add_argument(
        "--no-learned-lesions", action="store_true",
        help="classical lesion maps only",
    )
    group.add_argument(
        "--learned-veto", type=float, default=None, metavar="P",
        help="with the learned model: drop classical lumens where the model's probability stays below P "
             "(default 0.03; 0 keeps every classical lumen)",
    )


def tracking_changes(args: argparse.Namespace) -> dict:
    """``TrackingSettings`` fields set by :func:`add_tracking_options` (empty when none given)."""
    from iousguide.errors import SettingsError

    changes: dict = {}
    veto = getattr(args, "learned_veto", None)
    if getattr(args, "learned_vessels", False):
        changes["learned_vessels"] = True
    if getattr(args, "no_learned_vessels", False):
        changes["learned_vessels"] = False
    if getattr(args, "learned_lesions", False):
        changes["learned_lesions"] = True
    if getattr(args, "no_learned_lesions", False):
        changes["learned_lesions"] = False
    if veto is not None:
        if changes.get("learned_vessels") is False:
            raise SettingsError("--learned-veto needs the learned model (drop --no-learned-vessels)")
        if not 0 <= veto < 1:
            raise SettingsError(f"--learned-veto must be in [0, 1), got {veto}")
        changes["learned_veto_probability"] = float(veto)
    return changes
