"""``iousguide flr``: future liver remnant budget (see :mod:`iousguide.guidance.flr`)."""

from __future__ import annotations

import argparse
import json

from iousguide.errors import SettingsError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "flr",
        help="future liver remnant after a resection, against the floor for the liver, and the salvage question",
        description="FLR = total - resected volume. Floors: normal 25 %% (20-25 %%), chemo 30 %%, cirrhosis 40 %%. "
        "Total from --liver-ml, or standardized from --bsa-m2 (Vauthey 2002: -794.41 + 1267.28 x BSA).",
    )
    total = parser.add_argument_group("total liver volume (one of)")
    total.add_argument("--liver-ml", metavar="V", help="total liver volume, mL")
    total.add_argument("--bsa-m2", metavar="BSA", help="body surface area, m2 -> standardized total liver volume")
    parser.add_argument("--resect-ml", metavar="R", help="volume to resect, mL")
    parser.add_argument("--floor", metavar="F", help="minimum FLR as a fraction, e.g. 0.30")
    parser.add_argument("--liver", metavar="KIND", help="normal | chemo | cirrhosis (sets the floor; default normal)")
    parser.add_argument("--salvage-ml", metavar="S", help="a later resection volume, mL: still above the floor?")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def _value(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise SettingsError(f"{flag} expects a number, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from iousguide.guidance.flr import VAUTHEY_BASIS, remnant_budget, standardized_liver_volume_ml

    liver_ml = _value(args.liver_ml, "--liver-ml")
    bsa = _value(args.bsa_m2, "--bsa-m2")
    if (liver_ml is None) == (bsa is None):
        raise SettingsError("give exactly one of --liver-ml V or --bsa-m2 BSA")
    resect = _value(args.resect_ml, "--resect-ml")
    if resect is None:
        raise SettingsError("--resect-ml R is required")
    floor = _value(args.floor, "--floor")
    if floor is not None and args.liver is not None:
        raise SettingsError("give either --floor or --liver, not both")
    basis = "measured total liver volume"
    if bsa is not None:
        liver_ml = standardized_liver_volume_ml(bsa)
        basis = f"standardized total liver volume for BSA {bsa:g} m2: {VAUTHEY_BASIS}"
    budget = remnant_budget(
        liver_ml=liver_ml,
        resect_ml=resect,
        floor_fraction=floor,
        liver=args.liver,
        salvage_ml=_value(args.salvage_ml, "--salvage-ml"),
        total_basis=basis,
    )
    if args.json:
        print(json.dumps(budget.to_json()))
        return 0
    b = budget
    lines = [
        f"total liver:  {b.total_ml:.0f} mL ({b.total_basis})",
        f"resected:     {b.resect_ml:.0f} mL",
        f"remnant:      {b.remnant_ml:.0f} mL = {100 * b.remnant_fraction:.1f} %",
        f"floor:        {100 * b.floor_fraction:.0f} % = {b.floor_ml:.0f} mL ({b.floor_basis})",
        f"verdict:      {'at or above' if b.above_floor else 'BELOW'} the floor; "
        f"reserve {b.reserve_ml:+.0f} mL for later resections",
    ]
    if b.salvage_ml is not None:
        lines.append(
            f"salvage:      a later {b.salvage_ml:.0f} mL resection leaves {b.salvage_remnant_ml:.0f} mL = "
            f"{100 * b.salvage_fraction:.1f} %: {'still at or above' if b.salvage_above_floor else 'BELOW'} the floor"
        )
    print("\n".join(lines))
    return 0
