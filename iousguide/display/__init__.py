"""The guidance window: the only package that imports PySide6 / pyqtgraph.

Importing this package does not load Qt; :mod:`iousguide.display.app` does.
"""

from __future__ import annotations

import re
from pathlib import Path

from iousguide.errors import SourceError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RECORDINGS_DIR = PROJECT_ROOT / "recordings"


def default_recording(recordings_dir: str | Path | None = None) -> Path:
    """The bundled default recording for ``iousguide replay`` without an argument.

    Looks for ``recordings/default.*``; else the file that ``recordings/README.md``
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
    readme = folder / "README.md"
    if readme.is_file():
        for line in readme.read_text(encoding="utf-8", errors="replace").splitlines():
            match = re.match(r"\s*[-*]?\s*(?:\*\*)?default(?: recording)?(?:\*\*)?\s*:\s*`?([^`\s]+)`?", line, re.I)
            if match and (folder / match.group(1)).exists():
                return folder / match.group(1)
    raise SourceError(f"no default recording: nothing like {folder}/default.* (give a SOURCE to replay)")
