"""The headless pipeline: frames in, per-frame results out. No Qt.

The CLI (``iousguide analyze``), the tests, the benchmarks and the display all
run the same :class:`Pipeline`::

    with open_source("recordings/default.mp4") as source:
        for frame, result in iter_results(source, PipelineSettings()):
            print(result.to_json())
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from iousguide.analysis.results import FrameResult
from iousguide.frames import Frame

try:  # the tracker lands in iousguide.analysis.tracker
    from iousguide.analysis.settings import TrackingSettings
    from iousguide.analysis.tracker import Tracker
except ImportError:  # pragma: no cover - only while the tracker is being built
    TrackingSettings = None  # type: ignore[assignment,misc]
    Tracker = None  # type: ignore[assignment,misc]

try:
    from iousguide.guidance.apply import apply_guidance
    from iousguide.guidance.settings import GuidanceSettings
except ImportError:  # pragma: no cover
    GuidanceSettings = None  # type: ignore[assignment,misc]
    apply_guidance = None  # type: ignore[assignment]


def _default_tracking():
    return TrackingSettings() if TrackingSettings is not None else None


def _default_guidance():
    return GuidanceSettings() if GuidanceSettings is not None else None


@dataclass
class PipelineSettings:
    """Tracking and guidance settings together."""

    tracking: Any = field(default_factory=_default_tracking)
    guidance: Any = field(default_factory=_default_guidance)
    guidance_enabled: bool = True


class Pipeline:
    """Tracker + guidance with explicit state. Not thread-safe: one thread calls it."""

    def __init__(self, settings: PipelineSettings | None = None, *, t0_s: float | None = None, tracker=None) -> None:
        """
        Parameters
        ----------
        t0_s : float, optional
            The source time that maps to ``t_s = 0`` (default: the first frame processed).
            For recordings pass ``source.frame_times_s[0]`` so times survive seeking.
        tracker : object, optional
            Anything with ``process(frame) -> FrameResult``, ``seed_tumor(x, y)`` and ``reset()``;
            default: :class:`iousguide.analysis.tracker.Tracker`. Tests inject a truth-reporting one.
        """
        self.settings = settings or PipelineSettings()
        if tracker is None and Tracker is not None:
            tracker = Tracker(self.settings.tracking)
        self._tracker = tracker
        self._t0_s: float | None = t0_s

    def process(self, frame: Frame) -> FrameResult:
        """Analyse one frame and plan guidance on it. Never raises for bad frames."""
        start_ns = time.perf_counter_ns()
        if self._tracker is not None:
            try:
                result = self._tracker.process(frame)
            except Exception as exc:  # a bug must not take the guidance window or a long analysis down
                result = FrameResult(
                    frame=frame.index,
                    t_s=frame.t_source_s,
                    spacing_mm=frame.spacing_mm,
                    status="error",
                    message=f"analysis failed on this frame: {type(exc).__name__}: {exc}",
                )
        else:
            result = FrameResult(
                frame=frame.index,
                t_s=frame.t_source_s,
                spacing_mm=frame.spacing_mm,
                status="uncalibrated" if frame.spacing_mm is None else "no_tumor",
                message="tracker not available",
            )
        result.t_mono_ns = frame.t_mono_ns
        if frame.t_source_s is not None:
            if self._t0_s is None:
                self._t0_s = frame.t_source_s
            result.t_s = frame.t_source_s - self._t0_s
        if (
            self.settings.guidance_enabled
            and apply_guidance is not None
            and self.settings.guidance is not None
            and result.status in ("ok",)
        ):
            try:
                result = apply_guidance(result, settings=self.settings.guidance)
            except Exception as exc:
                result.message = f"guidance failed on this frame: {type(exc).__name__}: {exc}"
                result.margin_plan = None
                result.ablation = None
        result.processing_ms = (time.perf_counter_ns() - start_ns) / 1e6
        return result

    @property
    def tracker(self):
        """The tracker in use (None only while the analysis package is unavailable)."""
        return self._tracker

    def seed_tumor(self, x_src: float, y_src: float) -> None:
        """Seed (or re-seed) the tumour at a point in source pixels; used on the next frame."""
        if self._tracker is not None:
            self._tracker.seed_tumor(x_src, y_src)

    def set_preserve(self, vessel_id: int, preserve: bool | None) -> None:
        """Mark a vessel preserved (True), not preserved (False) or back to the default rule (None)."""
        g = self.settings.guidance
        if g is None:
            return
        keep = set(g.preserve_ids) - {vessel_id}
        drop = set(g.no_preserve_ids) - {vessel_id}
        if preserve is True:
            keep.add(vessel_id)
        elif preserve is False:
            drop.add(vessel_id)
        self.settings.guidance = dataclasses.replace(g, preserve_ids=frozenset(keep), no_preserve_ids=frozenset(drop))

    def update_guidance(self, **changes: Any) -> None:
        """Change guidance settings; effective on the next frame."""
        if self.settings.guidance is not None:
            self.settings.guidance = dataclasses.replace(self.settings.guidance, **changes)

    def reset(self) -> None:
        """Forget tracking state (e.g. after a seek)."""
        if self._tracker is not None:
            self._tracker.reset()


def iter_results(source, settings: PipelineSettings | None = None) -> Iterator[tuple[Frame, FrameResult]]:
    """Run the pipeline over every frame of ``source`` (as fast as possible)."""
    t0_s = None
    times = getattr(source, "frame_times_s", None)
    if times is not None and len(times):
        t0_s = float(times[0])
    pipeline = Pipeline(settings, t0_s=t0_s)
    for frame in source:
        yield frame, pipeline.process(frame)
