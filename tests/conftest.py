"""Shared test fixtures: paths to the real data in ../shared/data (skipped visibly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IOUSGUIDE_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
RECORDINGS = PROJECT_ROOT / "recordings"
CALIBRATION = PROJECT_ROOT / "calibration"


def shared_file(relative: str) -> Path:
    """Path of a file in ../shared/data, or a visible skip when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data folder not available: {SHARED_DATA}")
    return SHARED_DATA
