"""Acquisition + analysis off the GUI thread: one worker thread per window.

The worker runs the headless :class:`~iousguide.pipeline.Pipeline` and hands
``(frame, result)`` pairs to the GUI through a single slot: the latest result
wins, anything the GUI had not taken yet is counted as dropped. Control
(play, seek, seed, preserve, settings) reaches the worker through a command
queue, so the pipeline is only ever called from the worker thread.

This module does not import Qt: the GUI polls :meth:`Worker.take`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from iousguide.acquisition.player import Player, PlayerState
from iousguide.analysis.results import FrameResult
from iousguide.errors import EndOfSource, IousguideError, SourceTimeout
from iousguide.frames import Frame


@dataclass
class Delivery:
    """One frame with its analysis, as handed to the GUI."""

    frame: Frame
    result: FrameResult | None
    player: PlayerState | None = None
    delivered_mono_ns: int = 0


class LatestSlot:
    """Single-slot hand-off between threads: ``put`` replaces, ``take`` empties."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: Any = None
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Store ``item``; True when an untaken item was overwritten (counted in :attr:`dropped`)."""
        with self._lock:
            replaced = self._item is not None
            if replaced:
                self.dropped += 1
            self._item = item
            return replaced

    def take(self) -> Any:
        with self._lock:
            item, self._item = self._item, None
            return item


class RateMeter:
    """Events per second over a sliding window (monotonic clock, ns)."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_ns = int(window_s * 1e9)
        self._times: deque[int] = deque()

    def tick(self, t_ns: int | None = None) -> None:
        t_ns = time.monotonic_ns() if t_ns is None else t_ns
        self._times.append(t_ns)
        while self._times and t_ns - self._times[0] > self.window_ns:
            self._times.popleft()

    def rate_hz(self, now_ns: int | None = None) -> float | None:
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        while self._times and now_ns - self._times[0] > self.window_ns:
            self._times.popleft()
        if len(self._times) < 2:
            return None
        span_ns = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / (span_ns / 1e9) if span_ns > 0 else None


class Worker:
    """Base: owns the source and the pipeline, runs in its own thread."""

    def __init__(self, source, pipeline, *, analyse: bool = True) -> None:
        self.source = source
        self.pipeline = pipeline
        self.analyse = analyse
        self.slot = LatestSlot()
        self.processed = RateMeter()
        self.processed_count = 0
        self.error_text = ""  # last error, shown on the status line
        self.finished = False  # source ended or failed
        self._commands: queue.Queue[Callable[[], None]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifetime (GUI thread) ------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_guarded, name=type(self).__name__, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Ask the thread to end and wait up to ``timeout_s``; True when it ended."""
        self._stop.set()
        self._commands.put(lambda: None)
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def take(self) -> Delivery | None:
        return self.slot.take()

    @property
    def dropped(self) -> int:
        return self.slot.dropped

    # -- commands (any thread; executed in the worker) ---------------------------------
    def call(self, fn: Callable[[], None]) -> None:
        self._commands.put(fn)

    def seed_tumor(self, x_src: float, y_src: float) -> None:
        self.call(lambda: (self.pipeline.seed_tumor(x_src, y_src), self._reprocess()))

    def set_preserve(self, vessel_id: int, preserve: bool | None) -> None:
        self.call(lambda: (self.pipeline.set_preserve(vessel_id, preserve), self._reprocess()))

    def update_guidance(self, **changes: Any) -> None:
        self.call(lambda: (self.pipeline.update_guidance(**changes), self._reprocess()))

    # -- worker thread ------------------------------------------------------------------
    def _reprocess(self) -> None:
        """Settings changed: recordings re-analyse the held frame when paused."""

    def _run_guarded(self) -> None:
        try:
            self._run()
        except IousguideError as exc:
            self.error_text = str(exc)
        except Exception as exc:  # a bug must not die silently: show it on the status line
            self.error_text = f"worker failed: {type(exc).__name__}: {exc}"
        finally:
            self.finished = True

    def _drain_commands(self, wait_s: float) -> None:
        try:
            fn = self._commands.get(timeout=wait_s) if wait_s > 0 else self._commands.get_nowait()
        except queue.Empty:
            return
        while True:
            try:
                fn()
            except IousguideError as exc:
                self.error_text = str(exc)
            try:
                fn = self._commands.get_nowait()
            except queue.Empty:
                return

    def _analyse(self, frame: Frame) -> FrameResult | None:
        if not self.analyse or self.pipeline is None:
            return None
        result = self.pipeline.process(frame)
        self.processed.tick()
        self.processed_count += 1
        return result

    def _run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class ReplayWorker(Worker):
    """Plays an :class:`~iousguide.acquisition.base.IndexedSource` at its own timing."""

    def __init__(self, source, pipeline, *, speed: float = 1.0, loop: bool = False, analyse: bool = True) -> None:
        super().__init__(source, pipeline, analyse=analyse)
        self.player = Player.from_source(source, speed=speed, loop=loop)
        self._last_index: int | None = None
        self._redo = False
        self.state: PlayerState = self.player.state(time.monotonic())

    # commands
    def play(self) -> None:
        self.call(lambda: self.player.play(time.monotonic()))

    def pause(self) -> None:
        self.call(lambda: self.player.pause(time.monotonic()))

    def toggle(self) -> None:
        self.call(lambda: self.player.toggle(time.monotonic()))

    def step(self, delta: int) -> None:
        self.call(lambda: self.player.step(delta, time.monotonic()))

    def seek(self, index: int) -> None:
        self.call(lambda: self.player.seek(index, time.monotonic()))

    def seek_time(self, t_s: float) -> None:
        self.call(lambda: self.player.seek_time(t_s, time.monotonic()))

    def set_speed(self, speed: float) -> None:
        self.call(lambda: self.player.set_speed(speed, time.monotonic()))

    def set_loop(self, loop: bool) -> None:
        self.call(lambda: self.player.set_loop(loop))

    def _reprocess(self) -> None:
        if not self.player.playing:
            self._redo = True

    def _run(self) -> None:
        while not self._stop.is_set():
            now_s = time.monotonic()
            wait_s = self.player.next_due_in_s(now_s)
            self._drain_commands(0.05 if wait_s is None else min(wait_s, 0.005))
            if self._stop.is_set():
                break
            now_s = time.monotonic()
            index = self.player.due_frame(now_s)
            if index is None and self._redo and self._last_index is not None:
                index = self._last_index
            self._redo = False
            self.state = self.player.state(now_s)
            if index is None:
                continue
            frame = self.source.frame_at(index)
            frame = frame.replace(t_mono_ns=time.monotonic_ns())  # grab = decode done
            if self._last_index is not None and index not in (self._last_index, self._last_index + 1):
                if self.pipeline is not None:
                    self.pipeline.reset()  # a jump: tracking restarts from the seed
            self._last_index = index
            result = self._analyse(frame)
            self.state = self.player.state(time.monotonic())
            self.slot.put(Delivery(frame, result, self.state, time.monotonic_ns()))


class LiveWorker(Worker):
    """Reads a live :class:`~iousguide.acquisition.base.Source` (newest frame wins)."""

    def __init__(self, source, pipeline, *, analyse: bool = True, read_timeout_s: float = 0.05) -> None:
        super().__init__(source, pipeline, analyse=analyse)
        self.read_timeout_s = read_timeout_s
        self.recorder = None
        self.record_tap = False
        self.record_path = ""
        self.last_recording_message = ""
        self._finisher: threading.Thread | None = None
        self.source_meter = RateMeter()
        self._last_frame: Frame | None = None
        self._redo = False

    def start_recording(self, path: str) -> None:
        """Record every grabbed frame to ``path`` (``.igs.mha``) with :class:`~iousguide.acquisition.recorder.Recorder`.

        A live source with a frame listener is tapped at grab (nothing the display
        drops is lost); other sources get the frames this worker reads.
        """
        from iousguide.acquisition.recorder import Recorder

        self.record_tap = hasattr(self.source, "add_frame_listener")
        recorder = Recorder(self.source if self.record_tap else None, path)
        recorder.start()
        self.record_path = str(path)
        self.recorder = recorder

    def stop_recording(self, on_done: Callable[[str], None] | None = None) -> None:
        """Stop recording; the file is assembled in a background thread, ``on_done(message)`` after."""
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return

        def finish() -> None:
            try:
                summary = recorder.stop()
                message = (f"recorded {summary.written} frames to {summary.path}"
                           + (f" ({summary.dropped} dropped: {summary.drop_reasons})" if summary.dropped else ""))
            except IousguideError as exc:
                message = f"recording failed: {exc}"
            self.last_recording_message = message
            if on_done is not None:
                on_done(message)

        self._finisher = threading.Thread(target=finish, name="iousguide-record-finish", daemon=True)
        self._finisher.start()

    @property
    def recording(self) -> bool:
        return self.recorder is not None

    def stop(self, timeout_s: float = 2.0, *, recording_timeout_s: float = 30.0) -> bool:
        """Stop the thread; a recording in progress is finished (file assembled) within ``recording_timeout_s``."""
        stopped = super().stop(timeout_s)
        if self.recorder is not None:  # the thread did not get to it
            self.stop_recording()
        if self._finisher is not None:
            self._finisher.join(recording_timeout_s)
        return stopped

    def record_counters(self) -> dict[str, Any] | None:
        recorder = self.recorder
        return recorder.counters() if recorder is not None else None

    def _reprocess(self) -> None:
        self._redo = True

    def health(self):
        try:
            return self.source.health()
        except Exception:
            return None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._drain_commands(0.0)
                try:
                    frame = self.source.read(timeout_s=self.read_timeout_s)
                except SourceTimeout:
                    if self._redo and self._last_frame is not None:
                        frame = self._last_frame
                    else:
                        continue
                except EndOfSource:
                    self.error_text = "the live source ended"
                    return
                self._redo = False
                if frame is not self._last_frame:
                    self.source_meter.tick(frame.t_mono_ns)
                    recorder = self.recorder
                    if recorder is not None and not self.record_tap:
                        recorder.offer(frame)
                self._last_frame = frame
                result = self._analyse(frame)
                self.slot.put(Delivery(frame, result, None, time.monotonic_ns()))
        finally:
            if self.recorder is not None:
                self.stop_recording()


def percentile_ms(values_ms, q: float) -> float | None:
    """Percentile of a sequence of ms values (None when empty)."""
    values = np.asarray(list(values_ms), dtype=float)
    return float(np.percentile(values, q)) if values.size else None
