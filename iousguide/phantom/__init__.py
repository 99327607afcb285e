"""Liver IOUS phantom: a 3-D liver model, a moving probe, an image formation model and exact truth.

Quick use (training / tests)::

    from iousguide.phantom import generate_case
    frames, truth = generate_case(7, difficulty="medium", n_frames=5)
    frames[0].pixels          # (rows, cols) uint8 B-mode, frames[0].spacing_mm == (sx, sy)
    truth.frames[0]["tumor"]["contour_px"]     # [[x, y], ...] source pixels
    truth.frames[0]["vessels"][0]["distance_mm"]

Bundled scenarios (the recordings in ``recordings/``)::

    from iousguide.phantom import scenarios
    case = scenarios.build("hepatic_vein_abutting")
    for index, pixels, truth_frame in scenarios.render(case): ...

The truth format (one JSON object per frame, a header first) is documented in
``recordings/README.md``; :func:`read_truth` / :func:`write_truth` handle the
``.truth.jsonl.gz`` files.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

from iousguide.errors import CorruptDataError, UnsupportedFormatError
from iousguide.frames import Frame
from iousguide.phantom.imaging import ImagingParams, ProbeGeometry, Renderer  # noqa: F401
from iousguide.phantom.model import LiverModel, ProbePose, Tumor, VesselBranch  # noqa: F401
from iousguide.phantom.scenarios import SCENARIOS, TRUTH_FORMAT, Case, build, random_case, render  # noqa: F401
from iousguide.phantom.truth import heat_sink_class  # noqa: F401


@dataclass
class CaseTruth:
    """Truth of a clip: ``header`` (static description) and ``frames`` (one dict per frame)."""

    header: dict
    frames: list[dict] = field(default_factory=list)

    def by_frame(self) -> dict[int, dict]:
        return {int(f["frame"]): f for f in self.frames}


def case_frames(case: Case, *, source_id: str | None = None):
    """Render a :class:`Case` into (list of :class:`~iousguide.frames.Frame`, :class:`CaseTruth`)."""
    import time

    frames, truth = [], CaseTruth(header=case.header())
    sid = source_id or f"phantom:{case.name}"
    for i, pixels, t in render(case):
        frames.append(Frame(pixels=pixels, index=i, t_mono_ns=time.monotonic_ns(), t_source_s=i / case.fps,
                            spacing_mm=case.geometry.spacing_mm, source_id=sid,
                            extra={"phantom": case.name, "us_region_px": tuple(case.header()["us_region_px"])}))
        truth.frames.append(t)
    return frames, truth


def generate_case(seed: int, *, difficulty: str | float = "medium", n_frames: int = 1, fps: float = 15.0,
                  probe: str | None = None, spacing_mm: float | None = None, width_px: int = 640,
                  height_px: int = 480):
    """A random phantom case with exact truth.

    Parameters
    ----------
    seed : int
        Same seed and options -> the same pixels, bit for bit.
    difficulty : {"easy", "medium", "hard"} or float in [0, 1]
        Smaller, lower-contrast lesions, closer vessels, worse TGC/noise as it rises.
    n_frames : int
        1 for a still frame, more for a short sweep clip.
    probe : {"linear", "convex"}, optional
        Random when None.
    spacing_mm : float, optional
        Isotropic mm/px (random in 0.08-0.2 when None).

    Returns
    -------
    frames : list of Frame
        uint8 grey (height_px, width_px), ``spacing_mm`` set, ``t_source_s = index / fps``.
    truth : CaseTruth
        Header and per-frame truth dicts (format in recordings/README.md).

    Examples
    --------
    >>> frames, truth = generate_case(3, difficulty="easy")
    >>> frames[0].pixels.shape, truth.frames[0]["status"] in ("ok", "no_tumor")
    ((480, 640), True)
    """
    case = random_case(seed, difficulty=difficulty, n_frames=n_frames, fps=fps, probe=probe, spacing_mm=spacing_mm,
                       width_px=width_px, height_px=height_px)
    return case_frames(case, source_id=f"phantom:random:{seed}")


def write_truth(path: str | Path, truth: CaseTruth) -> None:
    """Write ``.truth.jsonl.gz``: the header line, then one line per frame (deterministic bytes)."""
    path = Path(path)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write((json.dumps(truth.header, separators=(",", ":"), sort_keys=True) + "\n").encode())
        for frame in truth.frames:
            gz.write((json.dumps(frame, separators=(",", ":"), sort_keys=True) + "\n").encode())


def read_truth(path: str | Path) -> CaseTruth:
    """Read a ``.truth.jsonl.gz`` (or plain ``.jsonl``) truth file."""
    path = Path(path)
    if not path.exists():
        raise UnsupportedFormatError(f"truth file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            lines = [json.loads(line) for line in fh if line.strip()]
    except (OSError, json.JSONDecodeError, EOFError) as exc:
        raise CorruptDataError(f"truth file {path} is not valid JSON lines: {exc}") from None
    if not lines or lines[0].get("format") != TRUTH_FORMAT:
        raise CorruptDataError(f"{path} is not an iousguide phantom truth file (first line must have format={TRUTH_FORMAT!r})")
    return CaseTruth(header=lines[0], frames=lines[1:])
