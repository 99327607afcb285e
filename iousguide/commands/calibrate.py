"""``iousguide calibrate {region,ruler,points,dicom}``: measure a capture set-up and write a preset.

All coordinates are pixels of the *full* source frame (any crop a DICOM file's
regions would apply is ignored here: a preset's ``crop_px`` is in source pixels).
Each sub-command prints what it found; ``--json`` prints one object with at
least ``crop_px``, ``spacing_mm`` and ``error_estimate``; ``--out FILE`` writes
a preset TOML (see :mod:`iousguide.calibration`) that ``--calibration FILE``
loads.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from pathlib import Path
from typing import Any

from iousguide.calibration import Calibration, parse_spacing_arg
from iousguide.errors import AnalysisError, CalibrationError, SettingsError

DEFAULT_SAMPLE_FRAMES = 30


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="find the image region and mm/px of a capture set-up; write a calibration preset"
    )
    sub = parser.add_subparsers(dest="calibrate_command", metavar="METHOD")
    parser.set_defaults(func=lambda args: _usage(parser))

    region = sub.add_parser("region", help="detect the ultrasound image region (pixels that change over time)")
    region.add_argument("source", help="capture recording, image, DICOM file or live source")
    region.add_argument("--frames", type=int, default=DEFAULT_SAMPLE_FRAMES, help="frames sampled (default 30)")
    region.add_argument("--spacing-mm", metavar="X[,Y]", help="spacing to store in the preset (needed for --out)")
    _common(region)
    region.set_defaults(func=run_region)

    ruler = sub.add_parser("ruler", help="mm/px from the depth ruler's tick marks (also detects the region)")
    ruler.add_argument("source", help="capture recording, image, DICOM file or live source")
    group = ruler.add_mutually_exclusive_group(required=True)
    group.add_argument("--tick-mm", type=float, help="distance between neighbouring ticks, mm (e.g. 10)")
    group.add_argument("--depth-mm", type=float, help="distance from the first to the last tick, mm")
    ruler.add_argument("--frames", type=int, default=DEFAULT_SAMPLE_FRAMES, help="frames sampled (default 30)")
    ruler.add_argument("--no-crop", action="store_true", help="do not detect the image region (spacing only)")
    ruler.add_argument(
        "--isotropic", action="store_true", help="one ruler for x and y even when a vertical and a horizontal one are found"
    )
    _common(ruler)
    ruler.set_defaults(func=run_ruler)

    points = sub.add_parser("points", help="mm/px from two points a known distance apart")
    points.add_argument("source", help="recording, image or DICOM file")
    points.add_argument("--p1", required=True, metavar="X,Y", help="first point, source pixels")
    points.add_argument("--p2", required=True, metavar="X,Y", help="second point, source pixels")
    points.add_argument("--distance-mm", required=True, type=float, help="true distance between them, mm")
    points.add_argument("--crop", metavar="X,Y,W,H", help="image region to store in the preset, source pixels")
    _common(points)
    points.set_defaults(func=run_points)

    dicom = sub.add_parser("dicom", help="calibration from a DICOM file's Sequence of Ultrasound Regions")
    dicom.add_argument("source", metavar="FILE", help="DICOM file")
    _common(dicom)
    dicom.set_defaults(func=run_dicom)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="FILE", help="write a calibration preset TOML")
    parser.add_argument("--name", help="preset name (default: from the source file name)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage()
    raise SettingsError("calibrate needs a method: region, ruler, points or dicom")


# -- helpers ---------------------------------------------------------------------------
def _open_raw(spec: str):
    """Open a source and drop any metadata calibration: we measure the raw frame."""
    from iousguide.acquisition import open_source

    source = open_source(spec)
    source.metadata_calibration = None
    return source


def _sample(source, count: int):
    from iousguide.calibration_tools import sample_frames

    if count < 1:
        raise SettingsError(f"--frames must be at least 1, got {count}")
    frames = sample_frames(source, max_frames=count)
    if not frames:
        raise AnalysisError(f"{source.source_id} delivered no frames")
    return frames


def _parse_point(text: str, flag: str) -> tuple[float, float]:
    try:
        x_text, y_text = text.split(",")
        point = float(x_text), float(y_text)
    except ValueError:
        raise SettingsError(f"{flag} expects X,Y in source pixels, got {text!r}") from None
    if not all(map(_finite, point)):
        raise SettingsError(f"{flag} expects finite numbers, got {text!r}")
    return point


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


def _parse_crop(text: str) -> tuple[int, int, int, int]:
    try:
        values = [int(v) for v in text.split(",")]
        if len(values) != 4:
            raise ValueError
    except ValueError:
        raise SettingsError(f"--crop expects X,Y,W,H in source pixels, got {text!r}") from None
    return tuple(values)  # type: ignore[return-value]


def _default_name(args: argparse.Namespace, method: str) -> str:
    if args.name:
        return args.name
    stem = Path(str(args.source)).name.split(".")[0] or "capture"
    return f"{stem}-{method}"


def _finish(
    args: argparse.Namespace,
    *,
    method: str,
    crop_px: tuple[int, int, int, int] | None,
    spacing_mm: tuple[float, float] | None,
    error_estimate: dict[str, Any] | None,
    summary: list[str],
    notes: list[str],
    extra: dict[str, Any] | None = None,
) -> int:
    written = None
    if args.out:
        if spacing_mm is None:
            raise CalibrationError(
                f"cannot write {args.out}: a preset needs spacing_mm "
                "(give --spacing-mm, or use `calibrate ruler`, `points` or `dicom`)"
            )
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
        preset = Calibration(
            spacing_mm=spacing_mm,
            crop_px=crop_px,
            name=_default_name(args, method),
            source="preset",
            notes=f"iousguide calibrate {method} on {Path(str(args.source)).name}, {stamp}"
            + (f"; {summary[0].split(':', 1)[-1].strip()}" if summary else ""),
        )
        try:
            Path(args.out).write_text(preset.to_toml(), encoding="utf-8")
        except OSError as exc:
            raise CalibrationError(f"cannot write {args.out}: {exc.strerror or exc}") from None
        written = str(args.out)
    if args.json:
        data: dict[str, Any] = {
            "method": method,
            "crop_px": list(crop_px) if crop_px is not None else None,
            "spacing_mm": list(spacing_mm) if spacing_mm is not None else None,
            "error_estimate": error_estimate,
            "notes": notes,
            "out": written,
            "source": str(args.source),
        }
        data.update(extra or {})
        print(json.dumps(data))
        return 0
    lines = [f"source:   {args.source}", f"method:   {method}"]
    lines += summary
    lines.append(f"crop:     {list(crop_px) if crop_px else 'none'} (x, y, width, height; source pixels)")
    lines.append(
        f"spacing:  {spacing_mm[0]:.5f} x {spacing_mm[1]:.5f} mm/px" if spacing_mm else "spacing:  not measured"
    )
    lines += [f"note:     {n}" for n in notes]
    if written:
        lines.append(f"wrote:    {written} (use with --calibration {written})")
    print("\n".join(lines))
    return 0


# -- sub-commands -----------------------------------------------------------------------
def run_region(args: argparse.Namespace) -> int:
    from iousguide.calibration_tools import detect_region

    spacing = parse_spacing_arg(args.spacing_mm) if args.spacing_mm else None
    with _open_raw(args.source) as source:
        frames = _sample(source, args.frames)
    result = detect_region(frames)
    rows, cols = frames[0].shape[:2]
    summary = [
        f"found:    image region {result.crop_px[2]}x{result.crop_px[3]} px at ({result.crop_px[0]}, "
        f"{result.crop_px[1]}) in a {cols}x{rows} frame, {result.method} method over {result.frames_used} frame(s)",
        f"error:    box edges move up to {result.edge_uncertainty_px:.0f} px when the threshold is halved/doubled",
    ]
    return _finish(
        args,
        method="region",
        crop_px=result.crop_px,
        spacing_mm=spacing,
        error_estimate={"edge_px": result.edge_uncertainty_px},
        summary=summary,
        notes=list(result.notes),
        extra={"region_method": result.method, "frames_used": result.frames_used, "frame_size": [cols, rows]},
    )


#: a vertical and a horizontal ruler are combined into (x, y) spacing only when they
#: agree within this fraction (frame-grabber pixel aspects are within ~10 % of square;
#: a larger difference means the two rulers do not share a tick distance)
MAX_ANISOTROPY = 0.12


def _rank(result) -> tuple:
    """Same order as the ruler search: longest lattice (in ticks), most ticks, lowest residual."""
    span = int(result.tick_index[-1] - result.tick_index[0])
    return round(span / 2), len(result.ticks_px), -result.residual_sd_px / result.period_px


def _ruler_line(label: str, result, known: str) -> list[str]:
    first, last = result.ticks_px[0], result.ticks_px[-1]
    return [
        f"{label:<9} {len(result.ticks_px)} ticks from ({first[0]:.0f}, {first[1]:.0f}) to ({last[0]:.0f}, {last[1]:.0f}), "
        f"period {result.period_px:.3f} +- {result.period_se_px:.3f} px, residual sd {result.residual_sd_px:.2f} px",
        f"{'':<9} {result.spacing_mm:.5f} +- {result.spacing_se_mm:.5f} mm/px (1 standard error; {known})",
    ]


def run_ruler(args: argparse.Namespace) -> int:
    from iousguide.calibration_tools import detect_region, detect_rulers, static_median

    with _open_raw(args.source) as source:
        frames = _sample(source, args.frames)
    notes: list[str] = []
    median, static = static_median(frames)
    rulers = detect_rulers(median, tick_mm=args.tick_mm, depth_mm=args.depth_mm, static_mask=static)
    if not rulers and static is not None:
        notes.append("no ruler among the static pixels; searched the first frame without the static mask")
        rulers = detect_rulers(frames[0], tick_mm=args.tick_mm, depth_mm=args.depth_mm)
    if not rulers:
        raise AnalysisError(f"no depth ruler found in {args.source} (no 5 or more regularly spaced marks on a line)")
    known = f"{args.tick_mm:g} mm per tick" if args.tick_mm is not None else f"{args.depth_mm:g} mm first to last tick"
    vertical, horizontal = rulers.get("vertical"), rulers.get("horizontal")
    used: dict[str, object]
    if (
        args.tick_mm is not None
        and not args.isotropic
        and vertical is not None
        and horizontal is not None
        and abs(vertical.spacing_mm / horizontal.spacing_mm - 1.0) <= MAX_ANISOTROPY
    ):
        used = {"x (horizontal ruler)": horizontal, "y (vertical ruler)": vertical}
        spacing = (horizontal.spacing_mm, vertical.spacing_mm)
        spacing_se = [horizontal.spacing_se_mm, vertical.spacing_se_mm]
        notes.append(
            f"vertical and horizontal rulers differ by {abs(vertical.spacing_mm / horizontal.spacing_mm - 1) * 100:.1f} %: "
            "non-square pixels, x and y spacing kept apart (--isotropic to use one ruler)"
        )
    else:
        if args.depth_mm is not None and vertical is not None:
            best = vertical  # depth is measured downwards
        else:
            best = max(rulers.values(), key=_rank)
        name = next(k for k, v in rulers.items() if v is best)
        used = {f"{name} ruler": best}
        spacing = (best.spacing_mm, best.spacing_mm)
        spacing_se = [best.spacing_se_mm, best.spacing_se_mm]
        others = [f"{k} ({v.spacing_mm:.5f} mm/px, {len(v.ticks_px)} ticks)" for k, v in rulers.items() if v is not best]
        if others:
            notes.append("other regular mark rows not used: " + ", ".join(others))
    crop = None
    region_error = None
    if not args.no_crop:
        try:
            region = detect_region(frames)
            crop = region.crop_px
            region_error = region.edge_uncertainty_px
            notes += region.notes
        except AnalysisError as exc:
            notes.append(f"image region not detected ({exc}); preset has no crop")
    summary = [f"found:    {len(used)} ruler(s)"]
    for label, result in used.items():
        summary += _ruler_line(label.split(" ")[0] + ":", result, known)
    error = {
        "spacing_se_mm": spacing_se,
        "relative": [se / sp for se, sp in zip(spacing_se, spacing)],
        "rulers": {
            label: {
                "spacing_mm": result.spacing_mm,
                "spacing_se_mm": result.spacing_se_mm,
                "period_px": result.period_px,
                "period_se_px": result.period_se_px,
                "residual_sd_px": result.residual_sd_px,
                "ticks": int(len(result.ticks_px)),
                "ticks_px": [[round(float(x), 2), round(float(y), 2)] for x, y in result.ticks_px],
            }
            for label, result in used.items()
        },
    }
    if region_error is not None:
        error["edge_px"] = region_error
    return _finish(
        args,
        method="ruler",
        crop_px=crop,
        spacing_mm=spacing,
        error_estimate=error,
        summary=summary,
        notes=notes,
    )


def run_points(args: argparse.Namespace) -> int:
    from iousguide.calibration_tools import spacing_from_points

    p1 = _parse_point(args.p1, "--p1")
    p2 = _parse_point(args.p2, "--p2")
    crop = _parse_crop(args.crop) if args.crop else None
    with _open_raw(args.source) as source:
        frame = _sample(source, 1)[0]
    rows, cols = frame.shape[:2]
    for name, (x, y) in (("--p1", p1), ("--p2", p2)):
        if not (0 <= x < cols and 0 <= y < rows):
            raise SettingsError(f"{name} ({x:g}, {y:g}) lies outside the {cols}x{rows} frame")
    result = spacing_from_points(p1, p2, distance_mm=args.distance_mm)
    if crop is not None:
        crop = Calibration(spacing_mm=None, crop_px=crop).crop_px  # validates
    summary = [
        f"found:    {result.distance_px:.2f} px between the points for {args.distance_mm:g} mm",
        f"error:    {result.spacing_mm:.5f} +- {result.spacing_se_mm:.5f} mm/px (both points +-0.5 px)",
    ]
    return _finish(
        args,
        method="points",
        crop_px=crop,
        spacing_mm=(result.spacing_mm, result.spacing_mm),
        error_estimate={"spacing_se_mm": result.spacing_se_mm, "localisation_px": 0.5, "distance_px": result.distance_px},
        summary=summary,
        notes=["isotropic spacing assumed (one distance measures one direction)"],
    )


def run_dicom(args: argparse.Namespace) -> int:
    from iousguide.calibration_tools import calibration_from_dicom

    calibration, warnings = calibration_from_dicom(args.source)
    if calibration is None:
        summary = ["found:    no usable spatial region: the file is uncalibrated"]
        return _finish(
            args, method="dicom", crop_px=None, spacing_mm=None, error_estimate=None, summary=summary, notes=warnings
        )
    summary = [f"found:    {calibration.name} (Sequence of Ultrasound Regions, cm/px x 10)"]
    return _finish(
        args,
        method="dicom",
        crop_px=calibration.crop_px,
        spacing_mm=calibration.spacing_mm,
        error_estimate={"spacing_se_mm": 0.0, "basis": "written by the scanner (exact as stored)"},
        summary=summary,
        notes=warnings,
    )
