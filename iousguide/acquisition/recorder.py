"""Lossless, crash-safe recording of any source to a PLUS ``.igs.mha`` (and optionally mp4).

How it never blocks the grab loop
---------------------------------
For a live source (:class:`~iousguide.acquisition.live.LiveSource`) the
recorder registers a frame listener: the grab thread hands it **every** grabbed
frame (not only those the display consumes, which is latest-wins) and the
listener only does a non-blocking ``put`` into a bounded queue. A writer thread
takes frames from the queue and appends them with the crash-safe
:class:`~iousguide.acquisition.plus_writer.SequenceWriter`. When the queue is
full (disk slower than the source) the frame is counted as dropped with reason
``writer_queue_full``; nothing ever waits on the disk in the grab thread.
For recordings and plain frame iterables a feeder thread reads frames in order
and waits for queue room (nothing to protect there, so nothing is dropped).

Accounting (exact after :meth:`Recorder.stop`)::

    offered == written + dropped        dropped == sum(drop_reasons.values())

Reasons: ``writer_queue_full``, ``size_changed`` (a frame whose size differs
from the first, which fixes the file's size), ``write_error`` (disk refused).
Frames after ``max_frames`` / ``duration_s`` are not offered (the recording has
ended), and neither are frames grabbed before :meth:`Recorder.start`.

Crash safety: a ``kill -9`` leaves ``<out>.partial/``, which opens with
``open_source("<out>.partial")`` up to its last complete frame and becomes a
normal file with :func:`iousguide.acquisition.plus_writer.recover`.

What is recorded: raw source frames (no crop, no flip), with the spacing in
force (preset / ``--spacing-mm`` / metadata such as the OpenIGTLink matrix) as
each frame's ``ImageToTransducerTransform``; ``Timestamp`` is the frame's
``t_source_s`` (filtered for capture devices and streams, the message time for
OpenIGTLink), ``UnfilteredTimestamp`` the raw arrival time when there is one.
With ``mp4=True`` an mp4 (OpenCV ``mp4v``, lossy) is written beside it plus a
sidecar ``<stem>.mp4.json`` with every frame's times.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from iousguide.acquisition.base import Source
from iousguide.errors import EndOfSource, IousguideError, SettingsError, SourceError
from iousguide.frames import Frame

log = logging.getLogger(__name__)

_STOP = object()
DEFAULT_QUEUE_BYTES = 256 * 1024 * 1024


@dataclass
class RecordingSummary:
    """What a recording did. ``offered == written + dropped`` holds exactly."""

    path: str | None
    partial_path: str
    offered: int
    written: int
    dropped: int
    drop_reasons: dict[str, int]
    duration_s: float | None
    stopped_because: str
    mp4_path: str | None = None
    sidecar_path: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    writer_mb_per_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def mp4_paths_for(out_path: str | Path) -> tuple[Path, Path]:
    """``case.igs.mha`` -> (``case.mp4``, ``case.mp4.json``)."""
    out_path = Path(out_path)
    stem = out_path.name
    for suffix in (".igs.mha", ".mha", ".mhd"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    mp4 = out_path.with_name(stem + ".mp4")
    return mp4, mp4.with_name(mp4.name + ".json")


class Recorder:
    """Record a source or an iterable of frames in a writer thread.

    Parameters
    ----------
    source_or_frames : Source, iterable of Frame, or None
        A live source is tapped (every grabbed frame); another source is read to
        its end; an iterable is consumed in order; None: frames come only
        through :meth:`offer` (e.g. pushed by the display).
    out_path : str or Path
        The ``.igs.mha`` to write (must not exist unless ``overwrite``).
    max_frames : int, optional
        Stop after this many frames are offered.
    duration_s : float, optional
        Stop at the first frame this many seconds after the first one (by
        ``t_source_s`` when present, else ``t_mono_ns``).
    mp4 : bool
        Also write ``<stem>.mp4`` and ``<stem>.mp4.json`` (per-frame times).
    mp4_fps : float, optional
        Nominal rate written into the mp4 (default: the source's rate or 30).
    queue_bytes : int
        Bound of the writer queue in bytes (at least 4 frames).
    compress : bool
        zlib-compress the ``.igs.mha`` when it is assembled at stop.
    overwrite : bool
        Replace an existing output.

    Examples
    --------
    >>> with open_source("igtl://127.0.0.1:18944/Image_Reference") as src:   # doctest: +SKIP
    ...     rec = Recorder(src, "case.igs.mha", duration_s=10).start()
    ...     rec.wait(timeout_s=15)
    ...     summary = rec.stop()
    """

    def __init__(
        self,
        source_or_frames: Source | Iterable[Frame] | None,
        out_path: str | Path,
        *,
        max_frames: int | None = None,
        duration_s: float | None = None,
        mp4: bool = False,
        mp4_fps: float | None = None,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        compress: bool = False,
        overwrite: bool = False,
    ) -> None:
        from iousguide.acquisition.plus_writer import SequenceWriter

        if max_frames is not None and max_frames <= 0:
            raise SettingsError(f"max_frames must be positive, got {max_frames}")
        if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
            raise SettingsError(f"duration_s must be a positive number of seconds, got {duration_s}")
        if queue_bytes <= 0:
            raise SettingsError(f"queue_bytes must be positive, got {queue_bytes}")
        self.out_path = Path(out_path)
        self.max_frames = max_frames
        self.duration_s = duration_s
        self.mp4 = mp4
        self.mp4_fps = mp4_fps
        self.queue_bytes = int(queue_bytes)
        self._input = source_or_frames
        self._live = hasattr(source_or_frames, "add_frame_listener")
        self._writer = SequenceWriter(self.out_path, compress=compress, overwrite=overwrite)
        self.mp4_path, self.sidecar_path = mp4_paths_for(self.out_path) if mp4 else (None, None)
        if self.mp4_path is not None and self.mp4_path.exists() and not overwrite:
            raise SettingsError(f"{self.mp4_path} already exists (pass overwrite=True to replace it)")
        self._queue: queue.Queue | None = None
        self._lock = threading.Lock()
        self._offered = 0
        self._written = 0
        self._drop_reasons: dict[str, int] = {}
        self._first_t: float | None = None
        self._accepting = False
        self._done = threading.Event()
        self._stopped_because = ""
        self._writer_thread: threading.Thread | None = None
        self._feeder_thread: threading.Thread | None = None
        self._stop_feeding = threading.Event()
        self._started_mono_ns: int | None = None
        self._first_mono_ns: int | None = None
        self._last_mono_ns: int | None = None
        self._bytes_written = 0
        self._write_time_s = 0.0
        self._times: list[dict[str, Any]] = []
        self._video = None
        self._mp4_failed = False
        self._summary: RecordingSummary | None = None

    # -- control ---------------------------------------------------------------
    def start(self) -> "Recorder":
        """Begin recording (returns self)."""
        if self._started_mono_ns is not None:
            raise SettingsError("recorder already started")
        self._started_mono_ns = time.monotonic_ns()
        self._writer_thread = threading.Thread(target=self._write_loop, name="iousguide-recorder", daemon=True)
        self._writer_thread.start()
        self._accepting = True
        if self._live:
            self._input.add_frame_listener(self.offer)
        elif self._input is not None:
            self._feeder_thread = threading.Thread(target=self._feed_loop, name="iousguide-recorder-feed", daemon=True)
            self._feeder_thread.start()
        return self

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the limit is reached or the input ended; True when done."""
        return self._done.wait(timeout_s)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def counters(self) -> dict[str, Any]:
        """offered / written / dropped / drop_reasons now."""
        with self._lock:
            return {
                "offered": self._offered,
                "written": self._written,
                "dropped": sum(self._drop_reasons.values()),
                "drop_reasons": dict(self._drop_reasons),
            }

    def stop(self, *, timeout_s: float = 60.0) -> RecordingSummary:
        """Stop accepting frames, write what is queued, assemble the file; returns the summary."""
        if self._summary is not None:
            return self._summary
        self._finish_accepting("stopped")
        if self._feeder_thread is not None:
            self._stop_feeding.set()
            self._feeder_thread.join(timeout_s)
        if self._writer_thread is not None:
            with self._lock:
                self._ensure_queue(None)
            self._queue.put(_STOP)
            self._writer_thread.join(timeout_s)
            if self._writer_thread.is_alive():
                raise SourceError(f"recorder of {self.out_path} did not finish writing within {timeout_s:.0f} s")
        final = self._writer.close()
        if self._video is not None:
            self._video.release()
        if self.sidecar_path is not None and self._times:
            self.sidecar_path.write_text(json.dumps({"video": self.mp4_path.name, "frames": self._times}), encoding="utf-8")
        counters = self.counters()
        first, last = self._first_mono_ns, self._last_mono_ns
        source_stats: dict[str, Any] = {}
        if self._live:
            source_stats = dict(self._input.stats())
            igtl = getattr(self._input, "igtl_stats", None)
            if igtl is not None:
                source_stats["igtl"] = igtl()
        self._summary = RecordingSummary(
            path=None if final is None else str(final),
            partial_path=str(self._writer.partial_path),
            offered=counters["offered"],
            written=counters["written"],
            dropped=counters["dropped"],
            drop_reasons=counters["drop_reasons"],
            duration_s=None if first is None or last is None else round((last - first) / 1e9, 6),
            stopped_because=self._stopped_because or "stopped",
            mp4_path=None if self.mp4_path is None or not self._times else str(self.mp4_path),
            sidecar_path=None if self.sidecar_path is None or not self._times else str(self.sidecar_path),
            source=source_stats,
            writer_mb_per_s=round(self._bytes_written / 1e6 / self._write_time_s, 1) if self._write_time_s > 0 else None,
        )
        return self._summary

    def __enter__(self) -> "Recorder":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- intake ------------------------------------------------------------------
    def _finish_accepting(self, because: str) -> None:
        with self._lock:
            if not self._accepting and self._stopped_because:
                return
            self._accepting = False
            if not self._stopped_because:
                self._stopped_because = because
        if self._live:
            self._input.remove_frame_listener(self.offer)
        self._done.set()

    def _ensure_queue(self, frame: Frame | None) -> None:
        if self._queue is None:
            size = 4 if frame is None else max(4, self.queue_bytes // max(1, frame.pixels.nbytes))
            self._queue = queue.Queue(maxsize=size)

    def _admit(self, frame: Frame) -> bool:
        """Limits; called with the lock held. False = the recording has ended."""
        if not self._accepting:
            return False
        if self.max_frames is not None and self._offered >= self.max_frames:
            return False
        t = frame.t_source_s if frame.t_source_s is not None else frame.t_mono_ns / 1e9
        if self._first_t is None:
            self._first_t = t
        elif self.duration_s is not None and t - self._first_t >= self.duration_s:
            return False
        self._offered += 1
        return True

    def offer(self, frame: Frame) -> bool:
        """Hand one frame to the recorder without ever blocking; False when not queued.

        Used as the live source's frame listener (grab thread); also usable
        directly. Admission and the queue ``put`` happen under one lock, so a
        frame is either queued before :meth:`stop` or not offered at all.
        """
        frame = self._with_spacing(frame)
        queued = False
        with self._lock:
            was_accepting = self._accepting
            admitted = self._admit(frame)
            if admitted:
                self._ensure_queue(frame)
                try:
                    self._queue.put_nowait(frame)
                    queued = True
                except queue.Full:
                    self._drop_reasons["writer_queue_full"] = self._drop_reasons.get("writer_queue_full", 0) + 1
            limit_reached = self.max_frames is not None and self._offered >= self.max_frames
        if not admitted and was_accepting:
            self._finish_accepting("max_frames" if limit_reached else "duration_s")
        elif admitted and limit_reached:
            self._finish_accepting("max_frames")
        return queued

    def _with_spacing(self, frame: Frame) -> Frame:
        spacing_for = getattr(self._input, "spacing_for", None)
        if spacing_for is None or frame.spacing_mm is not None:
            return frame
        spacing = spacing_for(frame)
        return frame if spacing is None else frame.replace(spacing_mm=spacing)

    def _drop(self, reason: str) -> None:
        with self._lock:
            self._drop_reasons[reason] = self._drop_reasons.get(reason, 0) + 1

    def _feed_loop(self) -> None:
        source = self._input
        try:
            iterator = iter(source) if not isinstance(source, Source) else None
            while not self._stop_feeding.is_set():
                try:
                    frame = source.read() if iterator is None else next(iterator)
                except (EndOfSource, StopIteration):
                    self._finish_accepting("end_of_source")
                    return
                with self._lock:
                    admitted = self._admit(frame)
                    if admitted:
                        self._ensure_queue(frame)
                if not admitted:
                    self._finish_accepting("max_frames" if self.max_frames is not None else "duration_s")
                    return
                while not self._stop_feeding.is_set():
                    try:
                        self._queue.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                else:
                    self._drop("stopped_before_queued")
                if self.max_frames is not None and self._offered >= self.max_frames:
                    self._finish_accepting("max_frames")
                    return
        except IousguideError as exc:
            log.warning("recording input failed: %s", exc)
            self._finish_accepting(f"source error: {exc}")

    # -- writer thread ---------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            if self._queue is None:
                time.sleep(0.005)
                continue
            item = self._queue.get()
            if item is _STOP:
                return
            frame: Frame = item
            t0 = time.perf_counter()
            try:
                index = self._writer.append(frame)
            except SettingsError:
                self._drop("size_changed")
                continue
            except (SourceError, OSError) as exc:
                log.warning("recording %s: %s", self.out_path, exc)
                self._drop("write_error")
                continue
            if self.mp4_path is not None and not self._mp4_failed:
                try:
                    self._write_mp4(frame, index)
                except (SourceError, OSError, ValueError) as exc:  # the .igs.mha goes on; the mp4 is optional
                    log.warning("recording %s: %s", self.mp4_path, exc)
                    self._mp4_failed = True
            self._write_time_s += time.perf_counter() - t0
            self._bytes_written += frame.pixels.nbytes
            with self._lock:
                self._written += 1
                if self._first_mono_ns is None:
                    self._first_mono_ns = frame.t_mono_ns
                self._last_mono_ns = frame.t_mono_ns

    def _write_mp4(self, frame: Frame, index: int) -> None:
        import cv2

        pixels = np.asarray(frame.pixels)
        if self._video is None:
            fps = self.mp4_fps or getattr(self._input, "nominal_fps", None)
            if not fps and hasattr(self._input, "health"):
                health = self._input.health()
                fps = health.source_fps if health is not None else None
            fps = float(fps or 30.0)
            self._video = cv2.VideoWriter(
                str(self.mp4_path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (pixels.shape[1], pixels.shape[0]), pixels.ndim == 3
            )
            if not self._video.isOpened():
                raise SourceError(f"cannot write {self.mp4_path} (OpenCV mp4v writer unavailable)")
        self._video.write(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if pixels.ndim == 3 else pixels)
        self._times.append(
            {
                "index": index,
                "frame_number": int(frame.index),
                "t_source_s": frame.t_source_s,
                "t_unfiltered_s": frame.extra.get("t_unfiltered_s"),
                "t_mono_ns": int(frame.t_mono_ns),
            }
        )
