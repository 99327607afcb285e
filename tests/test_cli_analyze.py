"""`iousguide analyze` end to end through the CLI: output contract, uncalibrated, bad options."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from iousguide.cli import main

REQUIRED_KEYS = {"frame", "t_s", "spacing_mm", "status", "tumor", "vessels", "min_distance_mm", "processing_ms"}
VESSEL_KEYS = {"id", "kind", "centroid_px", "contour_px", "diameter_mm", "distance_mm", "closest_px",
               "contact_arc_deg", "uncertainty_mm"}


@pytest.fixture
def small_clip(tmp_path):
    """A short grey clip: a dark disc (tumour-like) and a dark ring-free disc (vessel-like) in speckle."""
    rng = np.random.default_rng(7)
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (200, 160))
    for i in range(6):
        img = np.clip(rng.rayleigh(40, (160, 200)), 0, 255).astype(np.uint8)
        cv2.circle(img, (80 + i, 80), 22, 25, -1)
        cv2.circle(img, (140 + i, 80), 8, 3, -1)
        writer.write(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def _lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_uncalibrated_analysis_has_no_mm_values(small_clip, capsys):
    assert main(["analyze", str(small_clip), "--no-progress"]) == 0
    results = _lines(capsys.readouterr().out)
    assert len(results) == 6
    for r in results:
        assert REQUIRED_KEYS <= set(r)
        assert r["spacing_mm"] is None
        assert r["status"] in ("uncalibrated", "no_signal", "error")
        assert r["min_distance_mm"] is None
        if r["tumor"] is not None:
            assert r["tumor"]["area_mm2"] is None and r["tumor"]["equivalent_diameter_mm"] is None
        for v in r["vessels"]:
            assert VESSEL_KEYS <= set(v)
            assert v["diameter_mm"] is None and v["distance_mm"] is None and v["uncertainty_mm"] is None
    assert [r["frame"] for r in results] == list(range(6))
    assert results[0]["t_s"] == 0.0 and results[1]["t_s"] == pytest.approx(0.1, abs=1e-3)


def test_calibrated_analysis_to_file(small_clip, tmp_path):
    out = tmp_path / "res.jsonl"
    assert main(["analyze", str(small_clip), "--spacing-mm", "0.2", "--out", str(out), "--no-progress",
                 "--max-frames", "3"]) == 0
    results = _lines(out.read_text())
    assert len(results) == 3
    assert all(r["spacing_mm"] == [0.2, 0.2] for r in results)
    assert all(r["status"] != "uncalibrated" for r in results)


@pytest.mark.parametrize("args", [
    ["--tumor-seed", "abc"],
    ["--tumor-seed", "10,20@x"],
    ["--tumor-seed", "nan,20"],
    ["--tumor-seed", "1e309,20"],
    ["--spacing-mm", "1e-300"],
    ["--spacing-mm", "nan"],
    ["--spacing-mm", "-1"],
    ["--spacing-mm", "0.1,0.2,0.3"],
    ["--calibration", "/nonexistent/preset.toml"],
    ["--preserve", "1,a"],
    ["--preserve", "2", "--no-preserve", "2"],
    ["--max-frames", "0"],
    ["--no-learned-vessels", "--learned-veto", "0.1"],
    ["--learned-vessels", "--no-learned-vessels"],
    ["--learned-lesions", "--no-learned-lesions"],
    ["--learned-vessels", "--learned-veto", "1.5"],
])
def test_bad_options_exit_2_with_one_line(small_clip, args):
    proc = subprocess.run([sys.executable, "-m", "iousguide", "analyze", str(small_clip), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_missing_source_exit_2():
    proc = subprocess.run([sys.executable, "-m", "iousguide", "analyze", "/no/such/file.mp4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_learned_vessels_flag_reaches_the_tracker(tmp_path, capsys):
    """A real usgra image (training part) whose grey vessel the classical detector misses: by
    default (the learned model on) and with --learned-vessels the CLI reports a vessel inside the
    expert's outline, with --no-learned-vessels none."""
    from test_analysis_learned import _usgra_training_image_with_vessel

    gray, vessel = _usgra_training_image_with_vessel()
    image = tmp_path / "usgra.png"
    cv2.imwrite(str(image), gray)
    inside = {}
    for name, extra in (("classical", ["--no-learned-vessels"]), ("learned", ["--learned-vessels"]),
                        ("default", [])):
        assert main(["analyze", str(image), "--no-progress", *extra]) == 0
        (result,) = _lines(capsys.readouterr().out)
        assert result["status"] in ("uncalibrated", "no_tumor")
        inside[name] = [v["id"] for v in result["vessels"]
                        if vessel[int(round(v["centroid_px"][1])), int(round(v["centroid_px"][0]))]]
        assert all(v["diameter_mm"] is None for v in result["vessels"])
    assert inside["learned"] and inside["default"] and not inside["classical"], inside
