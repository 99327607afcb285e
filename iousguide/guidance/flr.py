"""Future liver remnant (FLR) budget (issue 6, section 4).

FLR = total liver volume - resected volume, as a fraction of the total. The
floor depends on the liver (CLINICAL.md): normal 20-25 % (default here 25 %,
the conservative end, because the budget exists to keep a reserve for later
resections), > 3 months chemotherapy 30 %, fibrosis/cirrhosis 40 %. The salvage
question: after a later resection of ``salvage_ml``, is the remnant still at or
above the floor?

A standardized total liver volume (sTLV) can stand in for a measured total:
Vauthey et al., Liver Transpl 2002;8:233 (Western adults):
``sTLV_mL = -794.41 + 1267.28 * BSA_m2``.

Example (the CLINICAL.md worked example)
----------------------------------------
>>> b = remnant_budget(liver_ml=1500, resect_ml=975, floor_fraction=0.30, salvage_ml=150)
>>> b.remnant_ml, round(b.remnant_fraction, 2), b.floor_ml, b.salvage_remnant_ml, b.salvage_above_floor
(525.0, 0.35, 450.0, 375.0, False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from iousguide.errors import SettingsError

#: liver category -> (minimum FLR fraction, basis)
LIVER_FLOORS: dict[str, tuple[float, str]] = {
    "normal": (
        0.25,
        "normal liver 20-25 % (J Surg Oncol 2019;119:594, review table); 25 % = conservative end of the range",
    ),
    "chemo": (0.30, "after > 3 months of chemotherapy 30 % (Shindoh, same review)"),
    "cirrhosis": (0.40, "fibrosis/cirrhosis 40 % (same review)"),
}
DEFAULT_LIVER = "normal"
VAUTHEY_BASIS = "sTLV = -794.41 + 1267.28 x BSA (Vauthey et al., Liver Transpl 2002;8:233)"


def standardized_liver_volume_ml(bsa_m2: float) -> float:
    """Standardized total liver volume (mL) from body surface area (m^2), Vauthey 2002.

    Raises
    ------
    SettingsError
        BSA outside 0.8-3.0 m^2 (outside any adult for whom the formula was fitted),
        or not a finite number.
    """
    bsa = _number(bsa_m2, "BSA (m2)")
    if not 0.8 <= bsa <= 3.0:
        raise SettingsError(f"body surface area must be between 0.8 and 3.0 m2 (adult), got {bsa:g}")
    return -794.41 + 1267.28 * bsa


@dataclass(frozen=True)
class RemnantBudget:
    """FLR arithmetic; volumes in mL, fractions of the total (0-1)."""

    total_ml: float
    resect_ml: float
    remnant_ml: float
    remnant_fraction: float
    floor_fraction: float
    floor_ml: float
    above_floor: bool
    reserve_ml: float  # remnant - floor: what a later resection may still take
    floor_basis: str
    total_basis: str
    salvage_ml: float | None = None
    salvage_remnant_ml: float | None = None
    salvage_fraction: float | None = None
    salvage_above_floor: bool | None = None

    def to_json(self) -> dict[str, Any]:
        def r(v, d=4):
            return None if v is None else round(float(v), d)

        return {
            "total_ml": r(self.total_ml, 2),
            "resect_ml": r(self.resect_ml, 2),
            "remnant_ml": r(self.remnant_ml, 2),
            "remnant_pct": r(100 * self.remnant_fraction, 2),
            "floor_pct": r(100 * self.floor_fraction, 2),
            "floor_ml": r(self.floor_ml, 2),
            "above_floor": self.above_floor,
            "reserve_ml": r(self.reserve_ml, 2),
            "salvage_ml": r(self.salvage_ml, 2),
            "salvage_remnant_ml": r(self.salvage_remnant_ml, 2),
            "salvage_remnant_pct": None if self.salvage_fraction is None else r(100 * self.salvage_fraction, 2),
            "salvage_above_floor": self.salvage_above_floor,
            "floor_basis": self.floor_basis,
            "total_basis": self.total_basis,
        }


def _number(value, name: str) -> float:
    if isinstance(value, bool):
        raise SettingsError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise SettingsError(f"{name} must be finite, got {value!r}")
    return number


def floor_for(liver: str) -> tuple[float, str]:
    """(floor fraction, basis) for a liver category in :data:`LIVER_FLOORS`."""
    try:
        return LIVER_FLOORS[liver]
    except KeyError:
        raise SettingsError(f"liver must be one of {', '.join(LIVER_FLOORS)}, got {liver!r}") from None


def remnant_budget(
    *,
    liver_ml: float,
    resect_ml: float,
    floor_fraction: float | None = None,
    liver: str | None = None,
    salvage_ml: float | None = None,
    total_basis: str = "measured total liver volume",
) -> RemnantBudget:
    """Future liver remnant after a resection, against a floor, with an optional later salvage.

    Parameters
    ----------
    liver_ml : float
        Total (or standardized total) liver volume, mL, > 0.
    resect_ml : float
        Volume removed, mL, 0 <= resect_ml < liver_ml.
    floor_fraction : float, optional
        Minimum FLR as a fraction (0 < f < 1); exclusive with ``liver``.
    liver : {"normal", "chemo", "cirrhosis"}, optional
        Category whose floor to use (default "normal", 25 %).
    salvage_ml : float, optional
        A later resection volume (mL) to test against the floor.

    Raises
    ------
    SettingsError
        Any volume negative, not finite or inconsistent; floor outside (0, 1).
    """
    total = _number(liver_ml, "liver volume (mL)")
    resect = _number(resect_ml, "resected volume (mL)")
    if total <= 0:
        raise SettingsError(f"liver volume must be positive, got {total:g} mL")
    if resect < 0:
        raise SettingsError(f"resected volume must be >= 0, got {resect:g} mL")
    if resect >= total:
        raise SettingsError(f"resected volume ({resect:g} mL) must be smaller than the liver volume ({total:g} mL)")
    if floor_fraction is not None and liver is not None:
        raise SettingsError("give either a floor or a liver category, not both")
    if floor_fraction is not None:
        floor = _number(floor_fraction, "floor")
        if not 0 < floor < 1:
            raise SettingsError(f"floor must be a fraction between 0 and 1 (e.g. 0.30), got {floor:g}")
        basis = "user-given floor"
    else:
        floor, basis = floor_for(liver or DEFAULT_LIVER)
    remnant = total - resect
    floor_ml = round(floor * total, 6)  # mL; drops float noise (0.3 * 1500 = 450.00000000000006)
    salvage_remnant = salvage_fraction = salvage_ok = None
    salvage = None
    if salvage_ml is not None:
        salvage = _number(salvage_ml, "salvage volume (mL)")
        if salvage < 0:
            raise SettingsError(f"salvage volume must be >= 0, got {salvage:g} mL")
        if salvage > remnant:
            raise SettingsError(f"salvage volume ({salvage:g} mL) exceeds the remnant ({remnant:g} mL)")
        salvage_remnant = remnant - salvage
        salvage_fraction = salvage_remnant / total
        salvage_ok = _at_least(salvage_remnant, floor_ml)
    return RemnantBudget(
        total_ml=total,
        resect_ml=resect,
        remnant_ml=remnant,
        remnant_fraction=remnant / total,
        floor_fraction=floor,
        floor_ml=floor_ml,
        above_floor=_at_least(remnant, floor_ml),
        reserve_ml=remnant - floor_ml,
        floor_basis=basis,
        total_basis=total_basis,
        salvage_ml=salvage,
        salvage_remnant_ml=salvage_remnant,
        salvage_fraction=salvage_fraction,
        salvage_above_floor=salvage_ok,
    )


def _at_least(volume_ml: float, floor_ml: float) -> bool:
    """volume >= floor, tolerant to float rounding (0.3 * 1500 = 450.00000000000006)."""
    return volume_ml >= floor_ml - 1e-9 * max(1.0, abs(floor_ml))
