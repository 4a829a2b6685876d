"""The exposure and conversion logs (CONTRACT §7), written off the request path.

``EventLog`` is the only writer of the two JSON-lines files that
``edgeproxy report`` reads.  The request path only appends a tuple to an
in-memory buffer (``exposure()``/``conversion()``: O(1), never blocks, never
raises); a periodic task hands whole batches to a worker thread
(``asyncio.to_thread``) that formats and writes them, so the event loop never
waits on the disk.  Lifecycle::

    log = EventLog(exposure_path, conversion_path)
    await log.start()        # opens both files (append), starts the flusher
    log.exposure(...)        # from the event loop's thread, per rendered slot
    log.conversion(...)
    log.reopen()             # on SIGHUP, after logrotate moved the files
    await log.close()        # flushes everything, closes: nothing is lost

Line formats (one JSON object per line, keys exactly in this order)::

    exposure    {"ts", "visitor", "experiment", "arm", "slot", "path", "device", "country", "source"}
    conversion  {"ts", "visitor", "path", "value", "kind"}

``ts`` is ISO 8601 UTC with milliseconds (``2026-11-27T09:15:02.123Z``);
``value`` is ``null`` when the conversion carries none.

Guarantees and their limits:

- **Whole lines.**  A batch is written with ``os.write`` on an ``O_APPEND``
  descriptor, so lines are never interleaved, also across ``--workers``
  processes appending to one file (Linux serialises appends to a regular
  file).  If the disk fails part-way, the lines already complete stay, the
  rest of the batch goes back to the buffer, and the next write starts with
  a newline so a torn fragment stands alone on its own line (``report``
  counts it as malformed) instead of corrupting the next event.
- **Bounded memory.**  Each log buffers at most ``max_buffer`` events.  Past
  that, the *newest* event is dropped and counted in ``stats.dropped``; one
  warning per flush period says how many.  While the disk keeps failing the
  buffer stays bounded the same way.
- **Clean shutdown loses nothing**: ``close()`` writes every buffered event
  (unless the disk is failing, which it logs with the number of events lost).
  Events arriving after ``close()`` are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path
import orjson

log = logging.getLogger("edgeproxy.events")

DEFAULT_FLUSH_INTERVAL = 1.0  # seconds between batch writes
DEFAULT_MAX_BUFFER = 50_000  # events buffered per log before the newest are dropped
WRITE_CHUNK = 4096  # events per os.write: bounded copies, each write whole lines

EXPOSURE_KEYS = ("ts", "visitor", "experiment", "arm", "slot", "path", "device", "country", "source")
CONVERSION_KEYS = ("ts", "visitor", "path", "value", "kind")

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


_second_cache: tuple[int, str] = (-1, "")
_MS_SUFFIX = tuple(f"{ms:03d}Z" for ms in range(1000))


def iso_ms(ts: float) -> str:
    """``ts`` (Unix seconds) as ISO 8601 UTC with milliseconds and ``Z``."""
    global _second_cache
    secs, ms = divmod(round(ts * 1000), 1000)
    cached_secs, prefix = _second_cache  # one tuple: safe to share between writer threads
    if secs != cached_secs:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(secs))
        _second_cache = (secs, prefix)
    return prefix + _MS_SUFFIX[ms]


def _exposure_line(e: tuple) -> bytes:
    return orjson.dumps(
        {"ts": iso_ms(e[0]), "visitor": e[1], "experiment": e[2], "arm": e[3], "slot": e[4],
         "path": e[5], "device": e[6], "country": e[7], "source": e[8]},
        option=orjson.OPT_APPEND_NEWLINE,
    )


def _conversion_line(e: tuple) -> bytes:
    ts, visitor, path, value, kind = e
    return orjson.dumps(
        {"ts": iso_ms(ts), "visitor": visitor, "path": path, "value": None if value is None else float(value), "kind": kind},
        option=orjson.OPT_APPEND_NEWLINE,
    )


@dataclasses.dataclass(slots=True)
class EventStats:
    """Counters of one ``EventLog`` (read them for metrics; never reset)."""

    exposures_written: int = 0
    conversions_written: int = 0
    dropped: int = 0  # buffer full, after close(), or unserialisable
    write_errors: int = 0  # failed batch writes (each logged, at most once per period)

    @property
    def written(self) -> int:
        return self.exposures_written + self.conversions_written


class _Stream:
    """One log file: its buffer, its descriptor and the worker-thread writes.

    ``buffer`` is touched only on the event loop's thread; ``fd``, ``torn``
    and ``reopen_requested`` only inside ``write_batch``/``open``/``close``,
    which run one flush at a time (``EventLog.flush`` never overlaps itself).
    """

    def __init__(self, name: str, path: Path | None, render) -> None:
        self.name = name
        self.path = path
        self.render = render
        self.buffer: list[tuple] = []
        self.fd: int | None = None
        self.torn = False  # the last write stopped mid-line
        self.reopen_requested = False

    def open(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        self.torn = False

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def write_batch(self, batch: list[tuple]) -> tuple[int, int, OSError | None]:
        """Write ``batch`` (in the worker thread), ``WRITE_CHUNK`` events per
        ``os.write``.

        Returns ``(done, bad, error)``: the first ``done`` events are settled
        (written, or skipped as unserialisable: ``bad`` of them); on a disk
        error, ``batch[done:]`` was not (completely) written.
        """
        if self.reopen_requested:
            self.reopen_requested = False
            self.close()
        if self.fd is None:
            self.open()
        bad = 0
        for start in range(0, len(batch), WRITE_CHUNK):
            lines: list[bytes] = []
            kept: list[int] = []  # batch index of each rendered line
            for i in range(start, min(start + WRITE_CHUNK, len(batch))):
                try:
                    lines.append(self.render(batch[i]))
                    kept.append(i)
                except (TypeError, ValueError, orjson.JSONEncodeError):
                    bad += 1
            end = min(start + WRITE_CHUNK, len(batch))
            prefix = b"\n" if self.torn else b""
            data = memoryview(prefix + b"".join(lines))
            written = 0
            try:
                while written < len(data):
                    written += os.write(self.fd, data[written:])  # type: ignore[arg-type]
            except OSError as exc:
                if written:
                    self.torn = data[written - 1] != 0x0A
                complete = max(0, bytes(data[:written]).count(b"\n") - (1 if prefix and written else 0))
                done = kept[complete] if complete < len(kept) else end
                # batch[start:done] is the `complete` lines written plus unserialisable events
                bad_settled = bad - ((end - start) - len(kept)) + ((done - start) - complete)
                return done, bad_settled, exc
            self.torn = False
        return len(batch), bad, None


class EventLog:
    """Buffered writer of the exposure and conversion logs (see module doc).

    A ``None`` path disables that log: its events are ignored (not counted
    as dropped).  ``exposure()``/``conversion()`` must be called from the
    event loop's thread.
    """

    def __init__(
        self,
        exposure_path: Path | None,
        conversion_path: Path | None,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        if flush_interval <= 0:
            raise ValueError(f"flush_interval={flush_interval!r}: must be > 0 seconds")
        if max_buffer < 1:
            raise ValueError(f"max_buffer={max_buffer!r}: must be at least 1")
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.stats = EventStats()
        self._exposures = _Stream("exposure", Path(exposure_path) if exposure_path else None, _exposure_line)
        self._conversions = _Stream("conversion", Path(conversion_path) if conversion_path else None, _conversion_line)
        self._streams = tuple(s for s in (self._exposures, self._conversions) if s.path is not None)
        self._stop = asyncio.Event()
        self._flushing: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._state = "new"  # new -> started -> closed
        self._dropped_reported = 0
        self._error_reported = False

    # -- lifecycle ------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """Whether any log is configured (the pipeline may skip the calls)."""
        return bool(self._streams)

    async def start(self) -> None:
        """Open the files (append mode, parent folders created) and start the
        periodic flush.  An unwritable path fails here, at start-up."""
        if self._state != "new":
            raise RuntimeError(f"EventLog.start() called on a {self._state} log; start() runs once")
        for stream in self._streams:
            await asyncio.to_thread(stream.open)
        self._state = "started"
        self._task = asyncio.create_task(self._run(), name="edgeproxy-event-log")

    async def close(self) -> None:
        """Write every buffered event, then close the files.  Idempotent."""
        if self._state == "closed":
            return
        was_started = self._state == "started"
        self._state = "closed"
        if self._task is not None:
            self._stop.set()  # the flusher finishes a write in progress, then exits
            await self._task
            self._task = None
        if was_started:
            await self.flush()
        lost = sum(len(s.buffer) for s in self._streams)
        if lost:
            self.stats.dropped += lost
            why = "the disk kept failing" if was_started else "start() was never called"
            log.error("event log closed with %d events unwritten (%s)", lost, why)
        for stream in self._streams:
            stream.buffer = []
            await asyncio.to_thread(stream.close)

    async def __aenter__(self) -> EventLog:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def reopen(self) -> None:
        """Reopen both files by path before the next write (for logrotate's
        ``postrotate`` SIGHUP).  Safe to call from a signal handler."""
        for stream in self._streams:
            stream.reopen_requested = True

    # -- the request path -----------------------------------------------------
    def exposure(
        self,
        *,
        ts: float,
        visitor: str,
        experiment: str,
        arm: str,
        slot: str,
        path: str,
        device: str | None,
        country: str | None,
        source: str | None,
    ) -> None:
        """Queue one exposure: ``visitor`` saw ``arm`` (a variant id or
        ``"control"``) of ``experiment`` in ``slot`` at ``ts`` (Unix
        seconds).  O(1); never blocks, never raises."""
        self._add(self._exposures, (ts, visitor, experiment, arm, slot, path, device, country, source))

    def conversion(self, *, ts: float, visitor: str, path: str, value: float | None = None, kind: str = "path") -> None:
        """Queue one conversion of ``visitor`` (``kind``: ``"path"`` for a
        ``--conversion-path`` match, ``"beacon"`` for the beacon endpoint).
        O(1); never blocks, never raises."""
        self._add(self._conversions, (ts, visitor, path, value, kind))

    def _add(self, stream: _Stream, event: tuple) -> None:
        if stream.path is None:
            return
        if self._state == "closed" or len(stream.buffer) >= self.max_buffer:
            self.stats.dropped += 1
            return
        stream.buffer.append(event)

    # -- the writer -----------------------------------------------------------
    async def flush(self) -> None:
        """Write what is buffered now (one batch per log, in a worker thread).

        A flush runs to completion even if its caller is cancelled: the
        worker thread cannot be stopped mid-write, and what it wrote must
        be counted (and its file not closed under it).  Flushes never
        overlap; a call during one waits for it, then writes what is left.
        """
        while self._flushing is not None and not self._flushing.done():
            await asyncio.shield(self._flushing)
        flushing = self._flushing = asyncio.ensure_future(self._write_buffers())
        await asyncio.shield(flushing)

    async def _write_buffers(self) -> None:
        for stream in self._streams:
            if not stream.buffer:
                continue
            batch, stream.buffer = stream.buffer, []
            try:
                done, bad, error = await asyncio.to_thread(stream.write_batch, batch)
            except OSError as exc:  # open/reopen failed: nothing written
                done, bad, error = 0, 0, exc
            written = done - bad
            if stream is self._exposures:
                self.stats.exposures_written += written
            else:
                self.stats.conversions_written += written
            if bad:
                self.stats.dropped += bad
                log.warning("%s log: %d events could not be serialised and were dropped", stream.name, bad)
            if error is not None:
                self._requeue(stream, batch[done:])
                self.stats.write_errors += 1
                if not self._error_reported:
                    self._error_reported = True
                    log.error("%s log %s: write failed, %d events kept for retry: %s",
                              stream.name, stream.path, len(stream.buffer), error)

    def _requeue(self, stream: _Stream, unwritten: list[tuple]) -> None:
        """Put a failed batch back ahead of newer events, keeping the bound
        (the newest are dropped, as on overflow)."""
        merged = unwritten + stream.buffer
        if len(merged) > self.max_buffer:
            self.stats.dropped += len(merged) - self.max_buffer
            del merged[self.max_buffer:]
        stream.buffer = merged

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.flush_interval)
            try:
                await self.flush()
            except Exception:  # never let the flusher die; the next period retries
                log.exception("event log flush failed")
            self._report_period()

    def _report_period(self) -> None:
        """One warning per period for drops; re-arm the write-error message."""
        new_drops = self.stats.dropped - self._dropped_reported
        if new_drops:
            self._dropped_reported = self.stats.dropped
            log.warning("event log: dropped %d events in the last %.1fs (buffer full at %d)",
                        new_drops, self.flush_interval, self.max_buffer)
        self._error_reported = False
