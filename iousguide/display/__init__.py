"""The guidance window: the only package that imports PySide6 / pyqtgraph.

Importing this package does not load Qt; :mod:`iousguide.display.app` does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from iousguide.errors import SourceError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RECORDINGS_DIR = PROJECT_ROOT / "recordings"
CALIBRATION_DIR = PROJECT_ROOT / "calibration"


def default_recording(recordings_dir: str | Path | None = None) -> Path:
    """The bundled default recording for ``iousguide replay`` without an argument.

    Looks for ``recordings/default.*``; else the ``"default"`` of
    ``recordings/MANIFEST.json``; else the file that ``recordings/README.md``
    names on a line ``default: NAME`` (or ``Default recording: NAME``).

    Raises
    ------
    SourceError
        When neither exists (one line saying where it looked).
    """
    folder = Path(recordings_dir) if recordings_dir is not None else RECORDINGS_DIR
    candidates = sorted(p for p in folder.glob("default.*") if p.is_file() and not p.name.endswith(".json"))
    if candidates:
        return candidates[0]
    manifest = folder / "MANIFEST.json"
    if manifest.is_file():
        try:
            name = json.loads(manifest.read_text(encoding="utf-8")).get("default")
        except (OSError, ValueError, AttributeError):
            name = None
        if isinstance(name, str) and (folder / name).is_file():
            return folder / name
    readme = folder / "README.md"
    if readme.is_file():
        for line in readme.read_text(encoding="utf-8", errors="replace").splitlines():
            match = re.match(r"\s*[-*]?\s*(?:\*\*)?default(?: recording)?(?:\*\*)?\s*:\s*`?([^`\s]+)`?", line, re.I)
            if match and (folder / match.group(1)).exists():
                return folder / match.group(1)
    raise SourceError(f"no default recording: nothing like {folder}/default.* (give a SOURCE to replay)")


def bundled_calibration(recording: str | Path, *, recordings_dir: str | Path | None = None,
                        calibration_dir: str | Path | None = None) -> Path | None:
    """The preset ``calibration/<name>.toml`` of a bundled recording, or None.

    Only files inside ``recordings/`` get one (``hepatic_vein_abutting.mp4`` ->
    ``calibration/hepatic_vein_abutting.toml``): a video file carries no spacing.
    """
    path = Path(recording).resolve()
    folder = Path(recordings_dir).resolve() if recordings_dir is not None else RECORDINGS_DIR.resolve()
    if path.parent != folder:
        return None
    name = path.name
    for suffix in (".igs.mha", ".igs.nrrd", ".seq.nrrd"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = path.stem
    preset = (Path(calibration_dir) if calibration_dir is not None else CALIBRATION_DIR) / f"{name}.toml"
    return preset if preset.is_file() else None
