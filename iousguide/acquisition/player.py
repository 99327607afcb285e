"""Replay pacing for random-access recordings. Pure logic, no Qt, injectable clock.

A :class:`Player` decides *which frame index is due now*; it never decodes.
The caller (the display worker, a benchmark, a test) owns the clock and the
source::

    player = Player.from_source(source, speed=1.0)
    player.play(now_s=time.monotonic())
    while True:
        index = player.due_frame(time.monotonic())
        if index is not None:
            show(source.frame_at(index))

Two modes:

* ``realtime=True`` (display): frame ``i`` is due when the media time
  ``t_media_s = anchor_media_s + (now_s - anchor_now_s) * speed`` reaches the
  frame's own relative time (per-frame times, so a variable frame rate is
  honoured). When the caller falls behind, intermediate frames are skipped and
  counted in :attr:`Player.skipped`.
* ``realtime=False`` (analysis): every call while playing returns the next
  index, as fast as the caller asks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iousguide.errors import SettingsError

SPEED_MIN = 0.25
SPEED_MAX = 4.0


def check_speed(speed: float) -> float:
    """Validate a replay speed factor (0.25-4x); return it as float.

    Raises
    ------
    SettingsError
        When ``speed`` is outside 0.25-4 or not finite.
    """
    try:
        value = float(speed)
    except (TypeError, ValueError):
        raise SettingsError(f"speed must be a number between {SPEED_MIN} and {SPEED_MAX}, got {speed!r}") from None
    if not (np.isfinite(value) and SPEED_MIN - 1e-9 <= value <= SPEED_MAX + 1e-9):
        raise SettingsError(f"speed must be between {SPEED_MIN}x and {SPEED_MAX}x, got {speed!r}")
    return value


@dataclass(frozen=True)
class PlayerState:
    """A snapshot of the player for display (index, media time in s, flags)."""

    index: int
    t_media_s: float
    playing: bool
    ended: bool
    speed: float
    loop: bool
    frames: int
    duration_s: float
    skipped: int


class Player:
    """Paces a finite recording by its own per-frame times.

    Parameters
    ----------
    times_s : array_like, shape (n,)
        Per-frame times in seconds (any origin; made relative to the first),
        non-decreasing. ``n >= 1``.
    speed : float
        Speed factor, 0.25-4 (1 = the recording's own rate).
    loop : bool
        Start again from frame 0 after the last frame.
    realtime : bool
        True: pace by the frame times; False: as fast as the caller asks.

    Notes
    -----
    The current index starts at 0 and is *not yet shown*: the first
    :meth:`due_frame` call returns 0 (playing or not), so a window shows the
    first frame immediately.
    """

    def __init__(self, times_s, *, speed: float = 1.0, loop: bool = False, realtime: bool = True) -> None:
        times = np.asarray(times_s, dtype=float).reshape(-1)
        if times.size == 0:
            raise SettingsError("cannot play a recording with no frames")
        if not np.all(np.isfinite(times)):
            raise SettingsError("frame times must be finite")
        if times.size > 1 and np.any(np.diff(times) < 0):
            raise SettingsError("frame times must be non-decreasing")
        self._times_s = times - times[0]
        self._times_s.flags.writeable = False
        diffs = np.diff(self._times_s)
        positive = diffs[diffs > 0]
        #: time the last frame stays on screen (median interval; 0.1 s for a single frame)
        self.last_interval_s = float(np.median(positive)) if positive.size else 0.1
        self.speed = check_speed(speed)
        self.loop = bool(loop)
        self.realtime = bool(realtime)
        self._index = 0
        self._pending = True  # the current index still has to be returned once
        self._playing = False
        self._ended = False
        self._anchor_now_s = 0.0
        self._anchor_media_s = 0.0
        #: frames passed over because the caller fell behind the recording's timing
        self.skipped = 0

    @classmethod
    def from_source(cls, source, **kwargs) -> "Player":
        """A player over an :class:`~iousguide.acquisition.base.IndexedSource` (uses ``relative_times_s()``)."""
        return cls(source.relative_times_s(), **kwargs)

    # -- read-only state -------------------------------------------------------
    @property
    def frames(self) -> int:
        return int(self._times_s.size)

    @property
    def times_s(self) -> np.ndarray:
        """Relative per-frame times in s, shape (n,), read-only."""
        return self._times_s

    @property
    def duration_s(self) -> float:
        """First frame start to last frame end (last interval added), s."""
        return float(self._times_s[-1] + self.last_interval_s)

    @property
    def index(self) -> int:
        """The most recently due (or about to be shown) frame index."""
        return self._index

    @property
    def playing(self) -> bool:
        return self._playing

    @property
    def ended(self) -> bool:
        """True when a non-looping player ran past the last frame."""
        return self._ended

    def state(self, now_s: float) -> PlayerState:
        return PlayerState(
            index=self._index,
            t_media_s=self.media_time_s(now_s),
            playing=self._playing,
            ended=self._ended,
            speed=self.speed,
            loop=self.loop,
            frames=self.frames,
            duration_s=self.duration_s,
            skipped=self.skipped,
        )

    def media_time_s(self, now_s: float) -> float:
        """Media time (s from the first frame) the player is at ``now_s``."""
        if self._playing and self.realtime:
            return self._anchor_media_s + (now_s - self._anchor_now_s) * self.speed
        return self._anchor_media_s

    def index_at_time(self, t_s: float) -> int:
        """Last frame whose relative time is <= ``t_s`` (clamped to the recording)."""
        index = int(np.searchsorted(self._times_s, t_s + 1e-9, side="right") - 1)
        return min(max(index, 0), self.frames - 1)

    # -- control ---------------------------------------------------------------
    def _anchor(self, now_s: float) -> None:
        self._anchor_now_s = float(now_s)
        self._anchor_media_s = float(self._times_s[self._index])

    def play(self, now_s: float) -> None:
        """Start or resume from the current frame. At the end, restart from frame 0."""
        if self._ended or (not self.loop and self._index >= self.frames - 1 and not self._pending and self.frames > 1):
            self._index = 0
            self._pending = True
            self._ended = False
            self._anchor(now_s)
        self._playing = True
        self._anchor_now_s = float(now_s)  # resume from the media time where it paused

    def pause(self, now_s: float) -> None:
        """Hold the current frame (and the media time within it)."""
        media_s = self.media_time_s(now_s)
        if self._index + 1 < self.frames:
            media_s = min(media_s, float(self._times_s[self._index + 1]))
        self._playing = False
        self._anchor_now_s = float(now_s)
        self._anchor_media_s = max(media_s, float(self._times_s[self._index]))

    def toggle(self, now_s: float) -> bool:
        """Play/pause; returns the new ``playing``."""
        (self.pause if self._playing else self.play)(now_s)
        return self._playing

    def set_speed(self, speed: float, now_s: float) -> None:
        """Change the speed factor without a jump in media time."""
        media_s = self.media_time_s(now_s)
        self.speed = check_speed(speed)
        self._anchor_now_s = float(now_s)
        self._anchor_media_s = media_s

    def set_loop(self, loop: bool) -> None:
        self.loop = bool(loop)

    def seek(self, index: int, now_s: float) -> int:
        """Go to frame ``index`` (clamped); it is returned by the next :meth:`due_frame`."""
        self._index = min(max(int(index), 0), self.frames - 1)
        self._pending = True
        self._ended = False
        self._anchor(now_s)
        return self._index

    def seek_time(self, t_s: float, now_s: float) -> int:
        """Go to the frame shown at relative time ``t_s`` (seconds from the first frame)."""
        return self.seek(self.index_at_time(t_s), now_s)

    def step(self, delta: int, now_s: float) -> int:
        """Pause and move ``delta`` frames (clamped; wraps when looping)."""
        target = self._index + int(delta)
        if self.loop:
            target %= self.frames
        self._playing = False
        return self.seek(target, now_s)

    # -- pacing ------------------------------------------------------------------
    def due_frame(self, now_s: float) -> int | None:
        """The index to show now, or None when the frame on screen is still current.

        Each index is returned once; skipped indices (caller too slow) are counted.
        """
        if self._pending:
            self._pending = False
            if self._playing and self.realtime:
                self._anchor(now_s)
            return self._index
        if not self._playing:
            return None
        if not self.realtime:
            if self._index + 1 < self.frames:
                self._index += 1
                return self._index
            if self.loop:
                self._index = 0
                return 0
            self._playing = False
            self._ended = True
            return None
        media_s = self.media_time_s(now_s)
        if media_s >= self.duration_s:
            if not self.loop:
                self._playing = False
                self._ended = True
                if self._index < self.frames - 1:  # caller fell behind: still show the last frame
                    self.skipped += self.frames - 2 - self._index
                    self._index = self.frames - 1
                    self._anchor(now_s)
                    return self._index
                self._anchor(now_s)
                return None
            skipped_to_end = self.frames - 1 - self._index
            self.skipped += max(skipped_to_end, 0)
            wraps = int(media_s // self.duration_s)
            media_s -= wraps * self.duration_s
            self._anchor_now_s = float(now_s)
            self._anchor_media_s = media_s
            self._index = self.index_at_time(media_s)
            self.skipped += self._index  # frames 0..index-1 passed over in the new lap
            return self._index
        target = self.index_at_time(media_s)
        if target <= self._index:
            return None
        self.skipped += target - self._index - 1
        self._index = target
        return target

    def next_due_in_s(self, now_s: float) -> float | None:
        """Seconds of wall time until the next frame is due (0 when one is due now); None when idle."""
        if self._pending:
            return 0.0
        if not self._playing:
            return None
        if not self.realtime:
            return 0.0
        media_s = self.media_time_s(now_s)
        if self._index + 1 < self.frames:
            next_media_s = float(self._times_s[self._index + 1])
        else:
            next_media_s = self.duration_s
        return max(0.0, (next_media_s - media_s) / self.speed)
