"""Queueing-delay admission: shed new requests while the event loop is late.

Why this exists: the in-flight cap (``Limits.max_in_flight``) bounds the
work that waits *on the origin*.  When the proxy process itself is short of
CPU (its own load, or neighbours on the same machine), work waits before any
cap sees it: in the sockets' receive buffers, in the listen backlog, in the
loop's ready queue.  Measured (``load_tests/README.md``, overload): at twice
capacity the admitted requests' p99, as clients saw it, went from 0.4 s to
182 s while the proxy's own request duration stayed under 100 ms.

All of that waiting shows up as one number: how late a timer fires (loop
lag).  The rule is CoDel's (Nichols & Jacobson, RFC 8289), as Facebook uses it
for server request queues (Maurer, "Fail at scale", ACM Queue 2015): a queue
is not bad when it is long, only when it *stays* above a small target for a
whole interval (a single slow turn, a GC pause, is not overload).  So:

* a probe timer every ``target`` seconds records how late it ran;
* when every sample for ``interval`` seconds was above ``target``, the
  server sheds: each new request gets a 503 + ``Retry-After`` +
  ``Connection: close`` right after its head is parsed (no handler, no
  origin: microseconds), counted as ``queue_delay``;
* the first sample back under ``target`` admits again.

The clock is injectable and :meth:`QueueDelay.observe` takes samples
directly, so the rule is tested without wall-clock thresholds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class QueueDelay:
    """The shedding state of one worker's traffic port (see the module docstring).

    ``target`` and ``interval`` in seconds; ``target`` 0 disables it
    (``shedding`` stays false and no timer runs)."""

    __slots__ = ("target", "interval", "shedding", "lag", "_clock", "_above_since", "_due", "_timer")

    def __init__(self, target: float, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.target = target
        self.interval = interval
        self.shedding = False
        self.lag = 0.0  # the last sample, seconds
        self._clock = clock
        self._above_since: float | None = None  # the first of an unbroken run of samples above target
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def observe(self, lag: float, now: float) -> None:
        """One sample: the loop ran a timer ``lag`` seconds late, at ``now``."""
        self.lag = lag
        if lag <= self.target:
            self._above_since = None
            self.shedding = False
        elif self._above_since is None:
            self._above_since = now
        elif now - self._above_since >= self.interval:
            self.shedding = True

    def start(self) -> None:
        if self.target > 0 and self._timer is None:
            self._schedule(self._clock())

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.shedding = False
        self._above_since = None

    def _schedule(self, now: float) -> None:
        self._due = now + self.target
        self._timer = asyncio.get_running_loop().call_later(self.target, self._tick)

    def _tick(self) -> None:
        now = self._clock()
        self.observe(max(0.0, now - self._due), now)
        self._schedule(now)
