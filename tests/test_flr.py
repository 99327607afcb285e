"""Future liver remnant budget: the CLINICAL.md worked example, floors, BSA, CLI errors (issue 6, section 4)."""

from __future__ import annotations

import json

import pytest

from iousguide.cli import main
from iousguide.errors import SettingsError
from iousguide.guidance.flr import LIVER_FLOORS, remnant_budget, standardized_liver_volume_ml


def run_cli(capsys, *argv):
    code = main(["flr", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_patient_a_right_hepatectomy_fails_the_salvage():
    b = remnant_budget(liver_ml=1500, resect_ml=975, floor_fraction=0.30, salvage_ml=150)
    assert b.floor_ml == pytest.approx(450.0)
    assert (b.remnant_ml, b.remnant_fraction) == (525.0, pytest.approx(0.35))
    assert b.above_floor is True
    assert b.salvage_remnant_ml == 375.0 and b.salvage_above_floor is False


def test_patient_b_parenchymal_sparing_passes_the_salvage():
    b = remnant_budget(liver_ml=1500, resect_ml=525, floor_fraction=0.30, salvage_ml=150)
    assert (b.remnant_ml, b.remnant_fraction) == (975.0, pytest.approx(0.65))
    assert b.salvage_remnant_ml == 825.0 and b.salvage_above_floor is True


def test_worked_example_through_the_cli(capsys):
    code, out, _ = run_cli(capsys, "--liver-ml", "1500", "--resect-ml", "975", "--floor", "0.30",
                           "--salvage-ml", "150", "--json")
    a = json.loads(out)
    assert code == 0
    assert (a["remnant_ml"], a["remnant_pct"], a["floor_ml"]) == (525.0, 35.0, 450.0)
    assert (a["salvage_remnant_ml"], a["salvage_above_floor"]) == (375.0, False)
    code, out, _ = run_cli(capsys, "--liver-ml", "1500", "--resect-ml", "525", "--liver", "chemo", "--salvage-ml", "150")
    assert code == 0
    assert "975 mL = 65.0 %" in out and "leaves 825 mL" in out and "still at or above the floor" in out
    assert "30 % = 450 mL" in out


def test_remnant_exactly_at_floor_counts_as_at_floor():
    b = remnant_budget(liver_ml=1500, resect_ml=1050, floor_fraction=0.30)
    assert b.remnant_ml == 450.0 and b.above_floor is True and b.reserve_ml == pytest.approx(0.0)


@pytest.mark.parametrize("liver, floor", [("normal", 0.25), ("chemo", 0.30), ("cirrhosis", 0.40)])
def test_floors_per_liver(liver, floor):
    assert LIVER_FLOORS[liver][0] == floor
    b = remnant_budget(liver_ml=1000, resect_ml=500, liver=liver)
    assert b.floor_ml == pytest.approx(1000 * floor) and LIVER_FLOORS[liver][1] == b.floor_basis
    assert remnant_budget(liver_ml=1000, resect_ml=1000 * (1 - floor) + 1, liver=liver).above_floor is False


def test_default_floor_is_normal_liver():
    assert remnant_budget(liver_ml=1000, resect_ml=100).floor_fraction == 0.25


def test_vauthey_standardized_liver_volume(capsys):
    assert standardized_liver_volume_ml(1.0) == pytest.approx(-794.41 + 1267.28)
    assert standardized_liver_volume_ml(2.0) == pytest.approx(1740.15)
    code, out, _ = run_cli(capsys, "--bsa-m2", "2.0", "--resect-ml", "740.15", "--json")
    data = json.loads(out)
    assert code == 0 and data["total_ml"] == pytest.approx(1740.15) and data["remnant_ml"] == pytest.approx(1000.0)
    assert "Vauthey" in data["total_basis"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--liver-ml", "1500", "--resect-ml", "1600"],
        ["--liver-ml", "-5", "--resect-ml", "1"],
        ["--liver-ml", "1500", "--resect-ml", "-1"],
        ["--liver-ml", "abc", "--resect-ml", "1"],
        ["--liver-ml", "1500", "--resect-ml", "500", "--floor", "30"],
        ["--liver-ml", "1500", "--resect-ml", "500", "--liver", "fatty"],
        ["--liver-ml", "1500", "--resect-ml", "500", "--floor", "0.3", "--liver", "chemo"],
        ["--liver-ml", "1500", "--resect-ml", "500", "--salvage-ml", "2000"],
        ["--liver-ml", "1500"],
        ["--resect-ml", "500"],
        ["--liver-ml", "1500", "--bsa-m2", "1.8", "--resect-ml", "500"],
        ["--bsa-m2", "9", "--resect-ml", "500"],
        ["--liver-ml", "nan", "--resect-ml", "5"],
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("iousguide: error: ")


def test_api_refuses_inconsistent_input():
    with pytest.raises(SettingsError):
        remnant_budget(liver_ml=1000, resect_ml=100, floor_fraction=0.3, liver="chemo")
    with pytest.raises(SettingsError):
        remnant_budget(liver_ml=True, resect_ml=100)


def test_module_examples_hold():
    import doctest

    import iousguide.guidance.flr as flr
    import iousguide.guidance.settings as settings

    for module in (flr, settings):
        failures, tried = doctest.testmod(module)
        assert tried > 0 and failures == 0, module.__name__
