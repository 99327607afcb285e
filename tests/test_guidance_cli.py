"""Guidance options of ``iousguide analyze`` reach the per-frame JSON (real recording, real pipeline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iousguide.cli import main

RECORDING = Path(__file__).resolve().parents[1] / "recordings" / "portal_pedicle.dcm"


@pytest.fixture
def recording():
    if not RECORDING.exists():
        pytest.skip(f"bundled recording not available: {RECORDING}")
    return RECORDING


def analyze(tmp_path, recording, *options):
    out = tmp_path / "out.jsonl"
    code = main(["analyze", str(recording), "--max-frames", "4", "--no-progress", "--out", str(out), *options])
    assert code == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_analyze_frames_carry_guidance_with_the_chosen_settings(tmp_path, recording):
    rows = analyze(tmp_path, recording, "--margin-mm", "7", "--floor-mm", "0.5", "--ablation-margin-mm", "10",
                   "--modality", "MWA")
    planned = [r for r in rows if r["status"] == "ok"]
    assert planned, [r["status"] for r in rows]
    for row in planned:
        plan, ablation = row["margin_plan"], row["ablation"]
        assert (plan["target_mm"], plan["floor_mm"]) == (7.0, 0.5)
        assert (ablation["margin_mm"], ablation["modality"]) == (10.0, "MWA")
        assert all(seg["margin_mm"] <= 7.0 + 1e-6 for seg in plan["segments"])
        for vessel in row["vessels"]:
            assert "preserve" in vessel and vessel["heat_sink"]["class"] in ("none", "moderate", "high")
    for row in rows:
        if row["status"] != "ok":
            assert "margin_plan" not in row  # no plan without a tumour


def test_bad_guidance_option_is_one_line_exit_2(tmp_path, recording, capsys):
    code = main(["analyze", str(recording), "--max-frames", "1", "--floor-mm", "9", "--margin-mm", "5",
                 "--out", str(tmp_path / "x.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "floor" in err
