"""The access log (CONTRACT §6): one line per request, written off the request path.

``AccessLog.add(rec, total)`` is called once per request, by
``record.Metrics.observe`` when the response is done, with the request's
``Record``.  It only appends to an in-memory queue (O(1), never blocks, never
raises); a writer thread formats the queued records and writes them every
``flush_interval`` seconds, so the event loop never waits on a terminal, a
pipe or a disk.  Lifecycle::

    log = open_access_log(settings)   # None when access_log = "off"
    metrics = Metrics(access_log=log)  # observe() feeds it
    ...
    log.close()                        # writes what is queued: nothing lost on a clean stop

A JSON line (keys in this order; ``ms`` fields are milliseconds)::

    {"ts": "2026-12-02T14:27:26.123Z", "level": "info", "id": "3f9c…", "method": "GET",
     "path": "/c/trail-running", "status": 200, "bytes": 48213, "ms": 4.61,
     "stages": {"classify": 0.21, "choose": 0.05, "origin": 3.1, "rewrite": 0.9},
     "variants": {"hero": "black-friday-uk", "banner": null}, "cache": "HIT",
     "fallback": null, "personalised": true, "aborted": false, "client": "203.0.113.0"}

- ``stages`` are the full stage times, read when the body has ended (the
  rewrite of a streamed body included), not the ``Server-Timing`` header's
  figure, which is written with the head.
- ``variants``: the variant each slot chose (``null``: the origin's default).
- ``fallback``: why the page went out unpersonalised (fail-open), or null.
- ``client``: never the raw address: the /24 (IPv4) or /48 (IPv6) network
  (``access_log_client = "truncate"``, the default), a keyed hash
  (``"hash"``, HMAC with ``cookie_secret``) or nothing (``"off"``).  The query
  string and cookies are never logged (the query can carry the preview token
  or personal data).
- ``level``: ``error`` (5xx or a response aborted mid-body), ``warning``
  (4xx or fail-open), else ``info``.  ``access_log_level`` drops lines below
  it; ``access_log_sample`` keeps that share of ``info`` lines (warnings and
  errors are always kept).

Guarantees and their limits, as for the exposure log (``events.py``):
whole lines (each ``os.write`` carries whole lines, at most ``PIPE_BUF``
bytes to a pipe or terminal so ``--workers`` processes sharing stdout never
interleave inside a line); bounded memory (at most ``max_buffer`` queued
lines; past that the newest are dropped and counted in ``stats.dropped``,
as are lines a failing sink refused).  Rotation: a log file renamed away by
logrotate is noticed at the next flush and reopened by path (no signal
needed); SIGHUP (``reopen()``, logrotate's ``postrotate``) reopens it at the
next flush whatever happened to it; ``copytruncate`` works too (the file is
written with ``O_APPEND``, so lines after the truncation start at offset 0,
not in a hole), losing what is written between logrotate's copy and its
truncate, as with any program.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import hmac
import ipaddress
import logging
import os
import random
import stat
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from .events import iso_ms

if TYPE_CHECKING:  # pragma: no cover
    from .record import Record
    from .settings import Settings

log = logging.getLogger("edgeproxy.accesslog")

DEFAULT_FLUSH_INTERVAL = 0.5  # seconds between writes
DEFAULT_MAX_BUFFER = 50_000  # queued lines before the newest are dropped
DEFAULT_CLOSE_TIMEOUT = 5.0  # seconds close() waits for a blocked writer
PIPE_BUF = 4096  # POSIX: writes up to this size to a pipe are atomic
MAX_PATH_CHARS = 2048  # a longer path is cut (and marked with …)

LEVELS = {"info": 0, "warning": 1, "error": 2}
_LEVEL_NAMES = ("info", "warning", "error")
FORMATS = ("auto", "json", "text")
CLIENT_MODES = ("truncate", "hash", "off")
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def level_of(rec: Record) -> int:
    """0 info, 1 warning (4xx, fail-open), 2 error (5xx, aborted mid-body)."""
    if rec.status >= 500 or rec.aborted:
        return 2
    if rec.status >= 400 or rec.fallback is not None:
        return 1
    return 0


@functools.lru_cache(maxsize=8192)
def truncate_ip(ip: str) -> str | None:
    """The /24 of an IPv4 address, the /48 of an IPv6 one (the network, no
    prefix length): what a GDPR-minded log keeps.  ``None`` for junk."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False).network_address)


def hash_ip(ip: str, key: bytes) -> str:
    """A keyed, non-reversible token for ``ip``: the same visitor gives the
    same token while the key (``cookie_secret``) stays the same."""
    return hmac.new(key, ip.encode(), hashlib.sha256).hexdigest()[:16]


def _ms(seconds: float) -> float:
    """Milliseconds to the microsecond (an integer over 1000 prints as short
    as ``round(x, 3)`` and costs a fraction of it)."""
    return round(seconds * 1_000_000) / 1000


def _cut(path: str) -> str:
    return path if len(path) <= MAX_PATH_CHARS else path[:MAX_PATH_CHARS] + "…"


def _printable(text: str) -> str:
    """Control characters escaped, so a decoded ``%0A`` in a path cannot
    forge a line of the text format."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


@dataclasses.dataclass(slots=True)
class AccessLogStats:
    """Counters of one ``AccessLog`` (never reset)."""

    written: int = 0
    dropped: int = 0  # queue full, sink failing, or after close()
    sampled_out: int = 0  # info lines left out by access_log_sample


class _Sink:
    """Where the lines go: a descriptor we own (a file, reopened when
    logrotate moved it) or one we borrow (stdout, stderr)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.path: Path | None = None
        self.reopen_requested = False  # set from a signal handler: reopen at the next flush
        if target == "stdout":
            self.fd: int | None = sys.__stdout__.fileno() if sys.__stdout__ is not None else 1
        elif target == "stderr":
            self.fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
        else:
            self.path = Path(target).expanduser()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        try:
            mode = os.fstat(self.fd).st_mode
            self.isatty = os.isatty(self.fd)
            # Regular files take any size atomically with O_APPEND; pipes and
            # terminals only up to PIPE_BUF.
            self.chunk = 1 << 20 if stat.S_ISREG(mode) else PIPE_BUF
        except OSError:
            self.isatty, self.chunk = False, PIPE_BUF

    def reopen_if_moved(self) -> None:
        if self.path is None or self.fd is None:
            return
        try:
            moved = self.reopen_requested or os.stat(self.path).st_ino != os.fstat(self.fd).st_ino
        except FileNotFoundError:
            moved = True
        self.reopen_requested = False
        if moved:
            os.close(self.fd)
            self.fd = None
            self.fd = os.open(self.path, _OPEN_FLAGS, 0o644)

    def write(self, lines: list[bytes]) -> int:
        """Write whole lines, ``chunk`` bytes at most per ``os.write``;
        returns how many lines were written before an error (raised)."""
        assert self.fd is not None, "Cannot write() after close()"
        done = 0
        i = 0
        while i < len(lines):
            size = len(lines[i])
            j = i + 1
            while j < len(lines) and size + len(lines[j]) <= self.chunk:
                size += len(lines[j])
                j += 1
            data = memoryview(b"".join(lines[i:j]))
            written = 0
            while written < len(data):
                written += os.write(self.fd, data[written:])
            done = j
            i = j
        return done

    def close(self) -> None:
        if self.path is not None and self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


class AccessLog:
    """Buffered access log writer (see the module doc).  ``add`` is called
    from the event loop's thread; everything else runs in the writer thread
    or in ``close``."""

    def __init__(
        self,
        target: str,
        *,
        fmt: str = "auto",
        level: str = "info",
        sample: float = 1.0,
        client: str = "truncate",
        key: bytes = b"",
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"fmt={fmt!r}: expected one of {', '.join(FORMATS)}")
        if level not in LEVELS:
            raise ValueError(f"level={level!r}: expected one of {', '.join(LEVELS)}")
        if client not in CLIENT_MODES:
            raise ValueError(f"client={client!r}: expected one of {', '.join(CLIENT_MODES)}")
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"sample={sample!r}: expected a share from 0 to 1")
        if flush_interval <= 0:
            raise ValueError(f"flush_interval={flush_interval!r}: must be > 0 seconds")
        self._sink = _Sink(target)
        self.text = fmt == "text" or (fmt == "auto" and self._sink.isatty)
        self.min_level = LEVELS[level]
        self.sample = sample
        self.client_mode = client
        self.key = key or os.urandom(32)
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.stats = AccessLogStats()
        self._queue: collections.deque[tuple] = collections.deque()
        self._lock = threading.Lock()  # one flush at a time
        self._stop = threading.Event()
        self._closed = False
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="edgeproxy-access-log", daemon=True)
        self._thread.start()

    # -- the request path -----------------------------------------------------
    def add(self, rec: Record, total: float) -> None:
        """Queue one finished request (``total``: seconds to its last byte).
        O(1); never blocks, never raises.  ``rec`` must not change afterwards."""
        level = level_of(rec)
        if level < self.min_level:
            return
        if level == 0 and self.sample < 1.0 and random.random() >= self.sample:
            self.stats.sampled_out += 1
            return
        if self._closed or len(self._queue) >= self.max_buffer:
            self.stats.dropped += 1
            return
        self._queue.append((time.time(), total, level, rec))

    # -- formatting -------------------------------------------------------------
    def _client(self, ip: str | None) -> str | None:
        if ip is None or self.client_mode == "off":
            return None
        if self.client_mode == "hash":
            return hash_ip(ip, self.key)
        return truncate_ip(ip)

    def json_line(self, ts: float, total: float, level: int, rec: Record) -> bytes:
        return orjson.dumps(
            {
                "ts": iso_ms(ts),
                "level": _LEVEL_NAMES[level],
                "id": rec.request_id,
                "method": rec.method,
                "path": _cut(rec.path),
                "status": rec.status,
                "bytes": rec.bytes_out,
                "ms": _ms(total),
                "stages": {name: _ms(secs) for name, secs in rec.timings.items()},
                "variants": dict(rec.variants),
                "cache": rec.cache,
                "fallback": rec.fallback,
                "personalised": rec.personalised,
                "aborted": rec.aborted,
                "client": self._client(rec.client),
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )

    def text_line(self, ts: float, total: float, level: int, rec: Record) -> bytes:
        """For a person at a terminal: the same facts, one short line."""
        stages = " ".join(f"{name}={secs * 1000:.2f}" for name, secs in rec.timings.items())
        variants = " ".join(f"{slot}={variant or '-'}" for slot, variant in rec.variants.items())
        size = f"{rec.bytes_out / 1024:.1f}k" if rec.bytes_out >= 1024 else f"{rec.bytes_out}b"
        parts = [
            time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}",
            "" if level == 0 else _LEVEL_NAMES[level].upper(),
            rec.method,
            _printable(_cut(rec.path)),
            str(rec.status),
            size,
            f"{total * 1000:.2f}ms",
            f"[{stages}]" if stages else "",
            rec.cache,
            variants,
            f"fallback={rec.fallback}" if rec.fallback else "",
            "ABORTED" if rec.aborted else "",
            f"id={rec.request_id}",
            f"client={self._client(rec.client) or '-'}",
        ]
        return (" ".join(p for p in parts if p) + "\n").encode("utf-8", "backslashreplace")

    # -- the writer thread ------------------------------------------------------
    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(self.flush_interval)
            try:
                self.flush()  # the last one after close(): nothing queued is lost
            except Exception:  # never let the writer die; the next period retries
                log.exception("access log flush failed")
            if stopping:
                return

    def flush(self) -> None:
        """Format and write what is queued now.  Safe from any thread."""
        with self._lock:
            if self._sink.fd is None and self._sink.path is None:
                return
            try:
                self._sink.reopen_if_moved()
            except OSError as exc:
                self._fail(exc, len(self._queue))
                self._queue.clear()
                return
            render = self.text_line if self.text else self.json_line
            queue = self._queue
            while queue:
                lines: list[bytes] = []
                while queue and len(lines) < 1024:  # bounded batches: the GIL is released at each write
                    item = queue.popleft()
                    try:
                        lines.append(render(*item))
                    except (TypeError, ValueError, orjson.JSONEncodeError):
                        self.stats.dropped += 1
                try:
                    self.stats.written += self._sink.write(lines)
                    self._failing = False
                except OSError as exc:
                    self._fail(exc, len(lines))
                    return

    def reopen(self) -> None:
        """Reopen a log file by path at the next flush (SIGHUP, logrotate's
        ``postrotate``); nothing for stdout/stderr.  Safe to call from a
        signal handler: it only sets a flag the writer thread reads."""
        self._sink.reopen_requested = True

    def _fail(self, exc: OSError, lost: int) -> None:
        self.stats.dropped += lost
        if not self._failing:  # once per failure episode
            self._failing = True
            log.error("access log %s: write failed, %d lines dropped: %s", self._sink.target, lost, exc)

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        """Write everything queued, stop the thread, close a file.  Idempotent.

        Waits at most ``timeout`` seconds: a stdout pipe nobody reads (a
        stuck log shipper) must not stop the proxy from shutting down; the
        lines still queued then are counted as dropped."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            lost = len(self._queue)
            self.stats.dropped += lost
            log.error("access log %s: the writer is stuck; %d lines lost at shutdown", self._sink.target, lost)
            return
        with self._lock:
            self._sink.close()


def open_access_log(settings: Settings) -> AccessLog | None:
    """The access log the settings ask for, or None for ``access_log = "off"``."""
    if settings.access_log == "off":
        return None
    return AccessLog(
        settings.access_log,
        fmt=settings.access_log_format,
        level=settings.access_log_level,
        sample=settings.access_log_sample,
        client=settings.access_log_client,
        key=settings.cookie_secret.encode(),
    )


__all__ = ["AccessLog", "AccessLogStats", "hash_ip", "level_of", "open_access_log", "truncate_ip"]
