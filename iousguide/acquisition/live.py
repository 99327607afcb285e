"""Shared machinery of every live source (capture card, network stream, OpenIGTLink).

One **grab thread** per source owns the device or socket: it grabs frames as fast
as the peer delivers them, stamps each with ``time.monotonic_ns()`` at grab, and
hands it to the consumer through a **single slot, latest frame wins**. Nothing
waits on the consumer, so lag never builds up; every frame the consumer did not
take is counted as dropped. The invariant, exact at every moment::

    grabbed == delivered + dropped + (1 if a frame is waiting in the slot else 0)

and after :meth:`LiveSource.close` the waiting frame (if any) is counted as
dropped, so ``grabbed == delivered + dropped``.

Listeners (:meth:`LiveSource.add_frame_listener`) see *every* grabbed frame in
the grab thread, before the slot: the recorder uses this to record losslessly
while the display consumes latest-wins. A listener must never block.

Timestamps: ``t_mono_ns`` is the grab time. Sources without a clock of their
own (capture devices, streams) get ``t_source_s`` from PLUS's line-fit filter
(:class:`TimestampFilter`) over the grab times (monotonic clock, seconds); the
unfiltered time stays in ``extra["t_unfiltered_s"]``.

No signal: ``health().no_signal`` becomes True when no frame came for
``stall_timeout_s`` (reason "timeout"), when frames are black (reason "black")
or when frames have not changed for ``frozen_after_s`` (reason "frozen").
A lost device or stream is reopened with exponential backoff
(``reconnect_backoff_s`` doubling up to ``reconnect_backoff_max_s``), forever
unless ``give_up_after_s`` is set.

Every delivered frame carries ``extra["health"]`` (a dict of the
:class:`~iousguide.acquisition.base.SourceHealth` fields at delivery, minus the
frame age, which the consumer computes from ``t_mono_ns``), plus
``extra["grab_seq"]`` and ``extra["dropped_total"]``.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from iousguide.acquisition.base import Source, SourceHealth, SourceInfo
from iousguide.errors import DeviceLostError, SettingsError, SourceClosedError, SourceTimeout
from iousguide.frames import Frame

log = logging.getLogger(__name__)

#: PLUS's defaults: fit over the last 20 frames, flag when the fit is > 0.5 s off
TIMESTAMP_WINDOW_FRAMES = 20
TIMESTAMP_MAX_DEVIATION_S = 0.5


class TimestampFilter:
    """PLUS's line-fit timestamp filter.

    A least-squares line ``t = a * index + b`` is fitted over the last
    ``window_frames`` (frame index, unfiltered time) pairs; the filtered time of
    the current frame is that line evaluated at its index. When the filtered and
    unfiltered times differ by more than ``max_deviation_s`` the frame is
    flagged, the unfiltered time is returned and the window restarts from this
    frame (a gap or a clock jump must not skew the next 20 fits).

    Parameters
    ----------
    window_frames : int
        Number of recent frames in the fit (PLUS: 20).
    max_deviation_s : float
        Flag threshold in seconds (PLUS: 0.5).
    """

    def __init__(self, *, window_frames: int = TIMESTAMP_WINDOW_FRAMES, max_deviation_s: float = TIMESTAMP_MAX_DEVIATION_S):
        if window_frames < 2:
            raise SettingsError(f"timestamp filter window must be >= 2 frames, got {window_frames}")
        self.window_frames = int(window_frames)
        self.max_deviation_s = float(max_deviation_s)
        self._index: collections.deque[int] = collections.deque(maxlen=self.window_frames)
        self._time_s: collections.deque[float] = collections.deque(maxlen=self.window_frames)

    def reset(self) -> None:
        self._index.clear()
        self._time_s.clear()

    def update(self, index: int, t_unfiltered_s: float) -> tuple[float, bool]:
        """Add one frame and return ``(filtered_time_s, flagged)``.

        Parameters
        ----------
        index : int
            Frame number (increasing; gaps allowed: dropped frames keep their numbers).
        t_unfiltered_s : float
            Arrival time of the frame in seconds.
        """
        if self._index and index <= self._index[-1]:
            self.reset()  # numbering restarted
        self._index.append(int(index))
        self._time_s.append(float(t_unfiltered_s))
        n = len(self._index)
        if n < 3:
            return float(t_unfiltered_s), False
        x = np.fromiter(self._index, dtype=np.float64, count=n)
        y = np.fromiter(self._time_s, dtype=np.float64, count=n)
        x0, y0 = x[0], y[0]
        x -= x0
        y -= y0
        x_mean, y_mean = x.mean(), y.mean()
        sxx = float(((x - x_mean) ** 2).sum())
        slope = float(((x - x_mean) * (y - y_mean)).sum()) / sxx if sxx > 0 else 0.0
        filtered = y0 + y_mean + slope * (x[-1] - x_mean)
        if abs(filtered - t_unfiltered_s) > self.max_deviation_s:
            self.reset()
            self._index.append(int(index))
            self._time_s.append(float(t_unfiltered_s))
            return float(t_unfiltered_s), True
        return float(filtered), False


@dataclass
class Grab:
    """What a subclass's ``_grab()`` returns for one frame.

    ``pixels`` is uint8 (rows, cols) grey or (rows, cols, 3) RGB; ``t_mono_ns``
    the grab time; ``t_source_s`` the peer's own time when it has one (else the
    line-fit filter fills it); ``extra`` format-specific metadata.
    """

    pixels: np.ndarray
    t_mono_ns: int
    t_source_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ConnectionLost(Exception):
    """Raised by a subclass's ``_grab()`` when the device or peer is gone (internal)."""


@dataclass(frozen=True)
class LiveSettings:
    """Tuning of the grab thread (all times in seconds).

    Attributes
    ----------
    stall_timeout_s : float
        No frame for this long -> ``no_signal`` (reason "timeout").
    reconnect_after_s : float
        No frame for this long while "connected" -> close and reopen.
    reconnect_backoff_s, reconnect_backoff_max_s : float
        First wait before a reopen attempt, doubled per failure up to the max.
    give_up_after_s : float or None
        Stop reconnecting after this long without a frame (reads then raise
        :class:`DeviceLostError`); None = keep trying (default: in theatre a
        scanner may be unplugged and plugged back).
    black_max_level : int
        A frame whose subsampled maximum grey level is <= this is "black".
    frozen_after_s : float
        Frames unchanged (mean absolute difference of a subsample below
        ``frozen_max_mean_diff``) for this long -> "frozen".
    join_timeout_s : float
        Bound on how long :meth:`LiveSource.close` waits for the grab thread.
    """

    stall_timeout_s: float = 1.0
    reconnect_after_s: float = 3.0
    reconnect_backoff_s: float = 0.1
    reconnect_backoff_max_s: float = 2.0
    give_up_after_s: float | None = None
    black_max_level: int = 10
    frozen_after_s: float = 2.0
    frozen_max_mean_diff: float = 0.05
    join_timeout_s: float = 3.0

    def __post_init__(self) -> None:
        for name in ("stall_timeout_s", "reconnect_after_s", "reconnect_backoff_s", "reconnect_backoff_max_s",
                     "frozen_after_s", "join_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise SettingsError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.give_up_after_s is not None and self.give_up_after_s <= 0:
            raise SettingsError(f"give_up_after_s must be positive or None, got {self.give_up_after_s!r}")


def _signal_sample(pixels: np.ndarray) -> np.ndarray:
    """A cheap grey subsample (about 80x60 px) for black/frozen detection."""
    rows, cols = pixels.shape[:2]
    step = max(1, min(rows, cols) // 60)
    sample = pixels[::step, ::step]
    if sample.ndim == 3:
        sample = sample.max(axis=2)
    return sample.astype(np.int16)


class LiveSource(Source):
    """Base of live sources: grab thread, latest-wins slot, counters, health, reconnect.

    Subclasses implement ``_connect()`` (open the device/socket; raise
    :class:`SourceError` on failure), ``_grab()`` (block at most a fraction of a
    second; return a :class:`Grab`, or None when nothing came yet; raise
    :class:`ConnectionLost` when the peer is gone), ``_disconnect()`` (release;
    called only from the grab thread) and optionally ``_interrupt()`` (called
    from :meth:`close` in the caller's thread to unblock a pending ``_grab``,
    e.g. shut a socket down), then call :meth:`_start` at the end of their
    constructor.
    """

    format_name = "live"

    def __init__(self, source_id: str, *, settings: LiveSettings | None = None) -> None:
        super().__init__(source_id)
        self.settings = settings or LiveSettings()
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[Frame], None]] = []
        self._filter = TimestampFilter()
        # counters (written by the grab thread under _cond, read by anyone under _cond)
        self._grabbed = 0
        self._delivered = 0
        self._dropped = 0
        self._dropped_at_close = 0
        self._reconnects = 0
        self._listener_errors = 0
        self._status = "connecting"
        self._message = ""
        self._no_signal_reason = ""
        self._last_grab_mono_ns: int | None = None
        self._last_delivered_mono_ns: int | None = None
        self._connected = False
        self._lost_since_mono_ns: int | None = None
        self._gave_up = False
        self._grab_times_ns: collections.deque[int] = collections.deque(maxlen=61)
        self._prev_sample: np.ndarray | None = None
        self._unchanged_since_ns: int | None = None
        self._first_frame: Frame | None = None
        self._thread_cpu_s = 0.0
        self._fatal: BaseException | None = None

    # -- subclass hooks ----------------------------------------------------
    def _connect(self) -> None:
        raise NotImplementedError

    def _grab(self) -> Grab | None:
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Unblock a pending ``_grab`` from another thread (default: nothing)."""

    # -- lifetime ------------------------------------------------------------
    def _start(self, *, connected: bool) -> None:
        """Start the grab thread; ``connected`` says whether the constructor already connected."""
        self._connected = connected
        self._status = "ok" if connected else "reconnecting"
        self._lost_since_mono_ns = None if connected else time.monotonic_ns()
        self._thread = threading.Thread(target=self._run, name=f"iousguide-grab:{self.source_id}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the grab thread (bounded wait), release the device, wake blocked readers."""
        if self._closed:
            return
        self._stop.set()
        try:
            self._interrupt()
        except Exception:  # closing must not fail because the peer is already gone
            log.debug("interrupt of %s failed", self.source_id, exc_info=True)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.settings.join_timeout_s)
            if thread.is_alive():
                log.warning(
                    "grab thread of %s still blocked after %.1f s; it is a daemon and releases the device when its read returns",
                    self.source_id, self.settings.join_timeout_s,
                )
        with self._cond:
            if self._slot is not None:
                self._slot = None
                self._dropped += 1
                self._dropped_at_close += 1
            self._status = "closed"
            self._cond.notify_all()
        super().close()

    # -- listeners -------------------------------------------------------------
    def add_frame_listener(self, callback: Callable[[Frame], None]) -> None:
        """Call ``callback(frame)`` in the grab thread for every grabbed frame (before the slot).

        The frame has no calibration applied (raw source frame). The callback
        must return quickly and never block; exceptions are logged and counted.
        """
        with self._cond:
            self._listeners = [*self._listeners, callback]

    def remove_frame_listener(self, callback: Callable[[Frame], None]) -> None:
        with self._cond:
            self._listeners = [c for c in self._listeners if c is not callback]

    # -- grab thread -------------------------------------------------------------
    def _run(self) -> None:
        backoff_s = self.settings.reconnect_backoff_s
        try:
            while not self._stop.is_set():
                if not self._connected:
                    if self._gave_up_now():
                        return
                    try:
                        self._connect()
                    except Exception as exc:  # any failure to open is retried with backoff
                        self._set_status("reconnecting", f"reopen failed: {exc}")
                        self._stop.wait(backoff_s)
                        backoff_s = min(backoff_s * 2, self.settings.reconnect_backoff_max_s)
                        continue
                    backoff_s = self.settings.reconnect_backoff_s
                    with self._cond:
                        self._connected = True
                        self._reconnects += 1
                        self._status = "ok"
                        self._message = "reconnected"
                    self._filter.reset()
                    self._grab_times_ns.clear()  # the rate is measured since the reconnect
                    log.info("%s reconnected (reconnect #%d)", self.source_id, self._reconnects)
                try:
                    grab = self._grab()
                except ConnectionLost as exc:
                    self._lose(f"lost: {exc}")
                    continue
                except Exception as exc:  # a broken read is a lost connection, never a dead thread
                    log.warning("%s: read failed: %s", self.source_id, exc)
                    self._lose(f"read failed: {exc}")
                    continue
                if grab is None:
                    self._check_stall()
                    continue
                self._accept(grab)
        except BaseException as exc:  # pragma: no cover - a bug of ours; surface it to readers
            log.exception("grab thread of %s died", self.source_id)
            self._fatal = exc
        finally:
            self._thread_cpu_s = time.thread_time()
            if self._connected:
                try:
                    self._disconnect()
                except Exception:
                    log.debug("disconnect of %s failed", self.source_id, exc_info=True)
                self._connected = False
            with self._cond:
                self._cond.notify_all()

    def _gave_up_now(self) -> bool:
        limit = self.settings.give_up_after_s
        if limit is None or self._lost_since_mono_ns is None:
            return False
        if (time.monotonic_ns() - self._lost_since_mono_ns) / 1e9 < limit:
            return False
        with self._cond:
            self._gave_up = True
            self._status = "no_signal"
            self._message = f"gave up reconnecting after {limit:.1f} s"
            self._cond.notify_all()
        log.warning("%s: gave up reconnecting after %.1f s", self.source_id, limit)
        return True

    def _lose(self, message: str) -> None:
        try:
            self._disconnect()
        except Exception:
            log.debug("disconnect of %s failed", self.source_id, exc_info=True)
        if self._stop.is_set():  # closing: the "loss" is ours
            self._connected = False
            return
        with self._cond:
            self._connected = False
            self._status = "reconnecting"
            self._message = message
            if self._lost_since_mono_ns is None:
                self._lost_since_mono_ns = self._last_grab_mono_ns or time.monotonic_ns()
        log.info("%s: %s; reconnecting", self.source_id, message)

    def _check_stall(self) -> None:
        last = self._last_grab_mono_ns
        if last is None:
            return
        idle_s = (time.monotonic_ns() - last) / 1e9
        if idle_s > self.settings.reconnect_after_s:
            self._lose(f"no frame for {idle_s:.1f} s")

    def _set_status(self, status: str, message: str) -> None:
        with self._cond:
            self._status = status
            self._message = message

    def _signal_state(self, pixels: np.ndarray, t_mono_ns: int) -> str:
        sample = _signal_sample(pixels)
        state = "ok"
        if int(sample.max()) <= self.settings.black_max_level:
            state = "black"
        prev = self._prev_sample
        if prev is not None and prev.shape == sample.shape and float(np.abs(sample - prev).mean()) <= self.settings.frozen_max_mean_diff:
            if self._unchanged_since_ns is None:
                self._unchanged_since_ns = t_mono_ns
            if state == "ok" and (t_mono_ns - self._unchanged_since_ns) / 1e9 >= self.settings.frozen_after_s:
                state = "frozen"
        else:
            self._unchanged_since_ns = None
        self._prev_sample = sample
        return state

    def _accept(self, grab: Grab) -> None:
        signal = self._signal_state(grab.pixels, grab.t_mono_ns)
        extra = dict(grab.extra)
        seq = self._grabbed  # 0-based number of this frame among all grabbed
        if grab.t_source_s is None:
            t_unfiltered_s = grab.t_mono_ns / 1e9
            t_source_s, flagged = self._filter.update(seq, t_unfiltered_s)
            extra["t_unfiltered_s"] = t_unfiltered_s
            extra["timestamp_flagged"] = flagged
        else:
            t_source_s = grab.t_source_s
        extra["grab_seq"] = seq
        extra["signal"] = signal
        frame = Frame(
            pixels=grab.pixels,
            index=seq,
            t_mono_ns=grab.t_mono_ns,
            t_source_s=t_source_s,
            source_id=self.source_id,
            extra=extra,
        )
        for listener in self._listeners:
            try:
                listener(frame)
            except Exception:
                self._listener_errors += 1
                log.exception("frame listener of %s failed", self.source_id)
        with self._cond:
            self._grabbed += 1
            self._last_grab_mono_ns = grab.t_mono_ns
            self._lost_since_mono_ns = None
            self._grab_times_ns.append(grab.t_mono_ns)
            if self._first_frame is None:
                self._first_frame = frame
            if self._slot is not None:
                self._dropped += 1
            self._slot = frame
            self._no_signal_reason = "" if signal == "ok" else signal
            if self._status != "ok":
                self._status = "ok"
            self._cond.notify_all()

    # -- consumer side -------------------------------------------------------------
    def _take_locked(self) -> Frame:
        frame = self._slot
        assert frame is not None
        self._slot = None
        self._delivered += 1
        self._last_delivered_mono_ns = frame.t_mono_ns
        health = self._health_locked(time.monotonic_ns())
        health_dict = dataclasses.asdict(health)
        health_dict.pop("frame_age_ms", None)
        extra = dict(frame.extra)
        extra["health"] = health_dict
        extra["dropped_total"] = health.dropped
        return frame.replace(extra=extra)

    def _read_next(self, timeout_s: float | None) -> Frame:
        deadline = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while True:
                if self._closed:
                    raise SourceClosedError(f"source {self.source_id} is closed")
                if self._slot is not None:
                    return self._take_locked()
                if self._gave_up:
                    raise DeviceLostError(f"{self.source_id}: {self._message}")
                if self._fatal is not None:
                    raise DeviceLostError(f"{self.source_id}: grab thread failed: {self._fatal}")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    age = self._age_s_locked()
                    detail = f"; last frame {age:.1f} s ago" if age is not None else "; no frame yet"
                    raise SourceTimeout(
                        f"no frame from {self.source_id} within {timeout_s:.3f} s ({self._status_locked()}{detail})"
                    )
                self._cond.wait(remaining if remaining is not None else 0.5)

    def _try_read_next(self) -> Frame | None:
        with self._cond:
            if self._slot is not None:
                return self._take_locked()
            if self._gave_up:
                raise DeviceLostError(f"{self.source_id}: {self._message}")
            return None

    # -- health --------------------------------------------------------------------
    def _age_s_locked(self) -> float | None:
        if self._last_grab_mono_ns is None:
            return None
        return (time.monotonic_ns() - self._last_grab_mono_ns) / 1e9

    def _status_locked(self) -> str:
        if self._closed:
            return "closed"
        age = self._age_s_locked()
        if self._status == "ok" and age is not None and age > self.settings.stall_timeout_s:
            return "no_signal"
        return self._status

    def _health_locked(self, now_ns: int) -> SourceHealth:
        times = self._grab_times_ns
        fps = None
        if len(times) >= 2:
            recent = [t for t in times if now_ns - t <= 2_000_000_000]
            if len(recent) >= 2 and recent[-1] > recent[0]:
                fps = (len(recent) - 1) / ((recent[-1] - recent[0]) / 1e9)
            elif self._last_grab_mono_ns is not None and (now_ns - self._last_grab_mono_ns) > 2e9:
                fps = 0.0
        age_s = None if self._last_grab_mono_ns is None else (now_ns - self._last_grab_mono_ns) / 1e9
        status = self._status_locked()
        reason = ""
        message = self._message
        if self._closed:
            status = "closed"
        elif age_s is None and status == "connecting":
            reason = "waiting for the first frame"
        elif age_s is None or age_s > self.settings.stall_timeout_s:
            reason = "timeout"
            message = (f"no frame for {age_s:.1f} s" if age_s is not None else "no frame yet") + (
                f" ({self._message})" if self._message and status == "reconnecting" else ""
            )
        elif self._no_signal_reason:
            reason = self._no_signal_reason
            message = f"{reason} frames"
        no_signal = bool(reason) and status != "closed"
        if no_signal and status == "ok":
            status = "no_signal"
        frame_age_ms = None
        if self._last_delivered_mono_ns is not None:
            frame_age_ms = (now_ns - self._last_delivered_mono_ns) / 1e6
        return SourceHealth(
            source_fps=None if fps is None else round(fps, 3),
            frame_age_ms=None if frame_age_ms is None else round(frame_age_ms, 3),
            grabbed=self._grabbed,
            delivered=self._delivered,
            dropped=self._dropped,
            reconnects=self._reconnects,
            no_signal=no_signal,
            status=status,
            message=message,
        )

    def health(self) -> SourceHealth:
        """Counters and signal state now. ``frame_age_ms``: grab of the newest *delivered* frame to now."""
        with self._cond:
            return self._health_locked(time.monotonic_ns())

    @property
    def no_signal_reason(self) -> str:
        """Why there is no signal now: empty, "timeout", "black" or "frozen" (see :meth:`health`)."""
        with self._cond:
            age = self._age_s_locked()
            if age is None or age > self.settings.stall_timeout_s:
                return "timeout"
            return self._no_signal_reason

    def spacing_for(self, frame: Frame) -> tuple[float, float] | None:
        """The mm/px that :meth:`read` would attach to this raw (listener) frame; None = uncalibrated."""
        return self.calibration.spacing_mm

    @property
    def pending(self) -> bool:
        """True when a grabbed frame waits in the slot."""
        with self._cond:
            return self._slot is not None

    def stats(self) -> dict[str, Any]:
        """Counters beyond :class:`SourceHealth` (for reports and the recorder summary)."""
        with self._cond:
            return {
                "grabbed": self._grabbed,
                "delivered": self._delivered,
                "dropped": self._dropped,
                "dropped_unread_at_close": self._dropped_at_close,
                "pending": int(self._slot is not None),
                "reconnects": self._reconnects,
                "listener_errors": self._listener_errors,
            }

    def grab_thread_cpu_s(self) -> float | None:
        """CPU seconds the grab thread used (known once it has stopped)."""
        thread = self._thread
        if thread is None or thread.is_alive():
            return None
        return self._thread_cpu_s

    def wait_first_frame(self, timeout_s: float) -> Frame:
        """The first grabbed frame (raw, not consumed), waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._first_frame is None:
                remaining = deadline - time.monotonic()
                if self._closed or self._gave_up or remaining <= 0:
                    raise SourceTimeout(f"no frame from {self.source_id} within {timeout_s:.1f} s ({self._status_locked()})")
                self._cond.wait(min(remaining, 0.5))
            return self._first_frame

    def _live_info(self, *, first_timeout_s: float, fps: float | None, extra: dict[str, Any]) -> SourceInfo:
        self._check_open()
        first = self.wait_first_frame(first_timeout_s)
        health = self.health()
        return self._describe(
            first,
            frames=None,
            fps=fps if fps else health.source_fps,
            duration_s=None,
            variable_rate=False,
            extra={**extra, "measured_fps": health.source_fps, "status": health.status},
        )


__all__ = [
    "ConnectionLost",
    "Grab",
    "LiveSettings",
    "LiveSource",
    "TimestampFilter",
]
