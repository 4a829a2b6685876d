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

* a probe timer records how late it ran, every ``target`` seconds (or
  every ``lag_target`` of the in-flight limit below, when that is shorter);
* when every sample for ``interval`` seconds was above ``target``, the
  server sheds: each new request gets a 503 + ``Retry-After`` right after
  its head is parsed (no handler, no origin: microseconds), counted as
  ``queue_delay``;
* the first sample back under ``target`` admits again;
* with nothing to serve (``idle()``: no open connection) the probe parks
  after its next sample, and the first connection wakes it: an idle proxy
  does not wake every few milliseconds (it did: ~1.5 % of a core per
  worker, doing nothing).

The in-flight limit follows the same probe (:class:`InFlightLimit`); it
acts first (it refuses only the excess), the queueing-delay rule (every new
request) is the stronger action behind it.  Why:
measured at twice capacity (``load_tests/README.md``, overload), admitted
requests did not wait in the kernel's listen queue nor in the load
generator (sent p50 0.6 ms late) but *inside the proxy*: the event loop
shares its one CPU among every request in flight, so by Little's law an
admitted request takes ``in_flight / throughput`` (16 / 566 per second =
28 ms; 104 ms at p99, against 6 ms at 70 % load).  A fixed cap is right
for one page, origin and machine only; the limit that keeps the loop on
time is found by AIMD on the loop lag (TCP's congestion rule, as Netflix's
concurrency-limits and Envoy's adaptive concurrency filter do it on
latency; the lag is the part of the latency that is the proxy's own, so a
slow origin does not shrink the limit):

* a sample above ``lag_target``: the limit shrinks in proportion
  (``limit * lag_target / lag``, at most halved per sample, never under
  ``floor``);
* a sample on time while requests were refused by the limit since the
  last one: the limit grows by one (up to ``max_in_flight``);
* otherwise it stays: an idle proxy keeps its limit.

The clock is injectable and ``observe`` takes samples directly, so both
rules are tested without wall-clock thresholds.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

# The adaptive in-flight limit starts here (not at max_in_flight: a burst
# at start-up would be admitted whole before the first sample).
START_LIMIT = 32
NO_LIMIT = sys.maxsize


class InFlightLimit:
    """The in-flight cap of one worker's traffic port (see the module docstring).

    ``value`` is what the traffic port compares ``in_flight`` with; it sets
    ``saturated`` when it refuses a request for it.  ``ceiling`` 0: no cap.
    ``lag_target`` 0: a fixed cap at ``ceiling`` (``observe`` does nothing)."""

    __slots__ = ("ceiling", "floor", "lag_target", "value", "saturated")

    def __init__(self, ceiling: int, floor: int = 4, lag_target: float = 0.0) -> None:
        self.ceiling = ceiling or NO_LIMIT
        self.floor = max(1, min(floor, self.ceiling))
        self.lag_target = lag_target
        self.value = self.ceiling if lag_target <= 0 else max(self.floor, min(self.ceiling, START_LIMIT))
        self.saturated = False  # a request was refused by value since the last sample

    def observe(self, lag: float) -> None:
        """One sample of the loop's lag, seconds."""
        if self.lag_target <= 0:
            return
        if lag > self.lag_target:
            # Multiplicative decrease, in proportion to the overshoot.
            self.value = max(self.floor, min(self.value - 1, int(self.value * max(0.5, self.lag_target / lag))))
        elif self.saturated and self.value < self.ceiling:
            self.value += 1  # additive increase while the limit is what refuses
        self.saturated = False


class QueueDelay:
    """The shedding state of one worker's traffic port (see the module docstring).

    ``target`` and ``interval`` in seconds; ``target`` 0 disables it
    (``shedding`` stays false and no timer runs)."""

    __slots__ = ("target", "interval", "shedding", "lag", "peak", "limit", "period", "idle", "_clock", "_above_since", "_due", "_timer", "_loop")

    def __init__(
        self,
        target: float,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        limit: InFlightLimit | None = None,
        idle: Callable[[], bool] | None = None,
    ) -> None:
        self.target = target
        self.interval = interval
        self.shedding = False
        self.lag = 0.0  # the last sample, seconds
        self.peak = 0.0  # the largest sample since take_peak()
        # The adaptive in-flight limit, fed by the same probe; the probe
        # runs every min(target, the limit's lag target) of those that are on.
        self.limit = limit
        self.period = min((t for t in (target, limit.lag_target if limit else 0.0) if t > 0), default=0.0)
        self.idle = idle  # true when there is nothing to serve: the probe parks
        self._clock = clock
        self._above_since: float | None = None  # the first of an unbroken run of samples above target
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def observe(self, lag: float, now: float) -> None:
        """One sample: the loop ran a timer ``lag`` seconds late, at ``now``."""
        self.lag = lag
        if lag > self.peak:
            self.peak = lag
        if self.limit is not None:
            self.limit.observe(lag)
        if self.target <= 0:
            return
        if lag <= self.target:
            self._above_since = None
            self.shedding = False
        elif self._above_since is None:
            self._above_since = now
        elif now - self._above_since >= self.interval:
            self.shedding = True

    def take_peak(self) -> float:
        """The largest lag sampled since the last call (for the gauge)."""
        peak, self.peak = self.peak, 0.0
        return peak

    def start(self) -> None:
        if self.period > 0 and self._timer is None:
            # Kept: get_running_loop() is a getpid() system call on Python 3.11,
            # and the probe runs every few milliseconds.
            self._loop = asyncio.get_running_loop()
            self._schedule(self._clock())

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None  # stopped: wake() does nothing
        self._parked()

    def wake(self) -> None:
        """Something to serve: a parked probe runs again (its first sample
        one period from now)."""
        if self._timer is None and self._loop is not None:
            self._schedule(self._clock())

    def _parked(self) -> None:
        # Nothing waits in the proxy: no lag of its own, nothing to shed.
        self.lag = 0.0
        self.shedding = False
        self._above_since = None

    def _schedule(self, now: float) -> None:
        self._due = now + self.period
        self._timer = self._loop.call_later(self.period, self._tick)

    def _tick(self) -> None:
        now = self._clock()
        self.observe(max(0.0, now - self._due), now)
        if self.idle is not None and self.idle():
            self._timer = None
            self._parked()
            return
        self._schedule(now)
