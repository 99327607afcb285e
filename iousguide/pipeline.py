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

from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.tracker import Tracker
from iousguide.guidance.apply import apply_guidance
from iousguide.guidance.settings import GuidanceSettings


@dataclass
class PipelineSettings:
    """Tracking and guidance settings together."""

    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    guidance: GuidanceSettings = field(default_factory=GuidanceSettings)
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
        self._tracker = tracker if tracker is not None else Tracker(self.settings.tracking)
        self._t0_s: float | None = t0_s

    def process(self, frame: Frame) -> FrameResult:
        """Analyse one frame and plan guidance on it. Never raises for bad frames."""
        start_ns = time.perf_counter_ns()
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
        result.t_mono_ns = frame.t_mono_ns
        if frame.t_source_s is not None:
            if self._t0_s is None:
                self._t0_s = frame.t_source_s
            result.t_s = frame.t_source_s - self._t0_s
        if self.settings.guidance_enabled and result.status == "ok":
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
        """The tracker in use."""
        return self._tracker

    def seed_tumor(self, x_src: float, y_src: float) -> None:
        """Seed (or re-seed) the tumour at a point in source pixels; used on the next frame."""
        self._tracker.seed_tumor(x_src, y_src)

    def set_preserve(self, vessel_id: int, preserve: bool | None) -> None:
        """Mark a vessel preserved (True), not preserved (False) or back to the default rule (None)."""
        g = self.settings.guidance
        keep = set(g.preserve_ids) - {vessel_id}
        drop = set(g.no_preserve_ids) - {vessel_id}
        if preserve is True:
            keep.add(vessel_id)
        elif preserve is False:
            drop.add(vessel_id)
        self.settings.guidance = dataclasses.replace(g, preserve_ids=frozenset(keep), no_preserve_ids=frozenset(drop))

    def update_guidance(self, **changes: Any) -> None:
        """Change guidance settings; effective on the next frame."""
        self.settings.guidance = dataclasses.replace(self.settings.guidance, **changes)

    def reset(self) -> None:
        """Forget tracking state (e.g. after a seek)."""
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
