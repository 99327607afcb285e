"""tools/bench_analysis.py's stage timing: it must time the tracker's own stages, leave the
tracker as it was, and account for the calling thread's CPU time."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from iousguide.analysis.settings import TrackingSettings
from iousguide.analysis.synthetic import Disc, Scene, render
from iousguide.frames import Frame

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import bench_analysis  # noqa: E402


def test_stage_wrappers_time_every_stage_and_are_removed():
    import iousguide.analysis.learned as learned_mod
    import iousguide.analysis.tracker as tracker_mod

    before = {(mod, name): bench_analysis._owner(mod).__dict__[name] for mod, name in bench_analysis.STAGES}
    cpu: dict = {}
    restore = bench_analysis._timed_stages(cpu)
    try:
        # the tracker calls the wrappers (module functions, its own methods, the learned model's)
        assert tracker_mod.prepare is not before[("iousguide.analysis.tracker", "prepare")]
        assert tracker_mod.Tracker.__dict__["_follow_tumor"] is not \
            before[("iousguide.analysis.tracker.Tracker", "_follow_tumor")]
        scene = Scene(shape_px=(360, 480), spacing_mm=0.12,
                      discs=[Disc((14.0, 12.0), 3.0, echo=0.0), Disc((32.0, 22.0), 7.0, echo=0.35)])
        tracker = tracker_mod.Tracker(TrackingSettings())
        tracker.learned_in_worker = False  # everything on this thread: the stages add up
        import time

        for seed in range(3):
            cpu.clear()
            frame = Frame(pixels=render(scene, seed=seed), index=seed, t_mono_ns=0, t_source_s=seed / 15.0,
                          spacing_mm=(0.12, 0.12))
            m0 = time.thread_time()
            result = tracker.process(frame)
            main_ms = (time.thread_time() - m0) * 1e3
            assert result.status in ("ok", "no_tumor", "lost")
            for name in ("prepare", "detect_vessels_prepared", "learned_frame_lumens", "merge_learned_vessels",
                         "anechoic_mask", "lesion_candidates", "_follow_tumor", "_assign_ids"):
                assert name in cpu, name
            on_main = sum(v for k, v in cpu.items() if k not in bench_analysis.OFF_MAIN)
            assert 0.0 < on_main <= main_ms + 0.5  # (the in-line model is within the merge's time)
            assert cpu["learned_frame_lumens"] <= cpu["merge_learned_vessels"] + 0.5
    finally:
        restore()
    after = {(mod, name): bench_analysis._owner(mod).__dict__[name] for mod, name in bench_analysis.STAGES}
    assert after == before
    assert learned_mod.learned_frame_lumens is before[("iousguide.analysis.learned", "learned_frame_lumens")]
    assert np.isfinite(sum(cpu.values()))
