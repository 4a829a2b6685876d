"""Progress of a long run: one updating line on a terminal, periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

DEFAULT_PLAIN_INTERVAL = 10.0


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """``steps`` measurement steps expected to take ``planned`` seconds in all.

    On a TTY the status line is rewritten in place (``\\r``) and finished
    steps scroll above it; otherwise a line is printed when a step ends and
    every ``plain_interval`` seconds inside a long step."""

    def __init__(self, steps: int, planned: float, stream: TextIO | None = None, *, tty: bool | None = None,
                 plain_interval: float = DEFAULT_PLAIN_INTERVAL) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.steps = steps
        self.planned = planned
        self.plain_interval = plain_interval
        self.index = 0
        self.started = time.monotonic()
        self.spent_planned = 0.0  # planned seconds of the finished steps
        self.label = ""
        self.step_planned = 0.0
        self.step_started = self.started
        self.last_plain = self.started
        self.shown = False

    def _eta(self, step_elapsed: float) -> float:
        done = self.spent_planned + min(step_elapsed, self.step_planned)
        elapsed = time.monotonic() - self.started
        # Actual seconds per planned second, once there is enough to go on.
        rate = elapsed / done if done >= 1.0 else 1.0
        return (self.planned - done) * rate

    def start(self, label: str, planned: float) -> None:
        self.index += 1
        self.label = label
        self.step_planned = planned
        self.step_started = time.monotonic()
        self.update()

    def update(self, requests: int | None = None) -> None:
        now = time.monotonic()
        elapsed = now - self.step_started
        reqs = f"  {requests:,} req" if requests is not None else ""
        line = (
            f"[{self.index:>2}/{self.steps}] {self.label}  {elapsed:4.1f}/{self.step_planned:.1f}s{reqs}"
            f"  ~{_clock(self._eta(elapsed))} left"
        )
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
            self.stream.flush()
            self.shown = True
        elif now - self.last_plain >= self.plain_interval:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_plain = now

    def finish(self, summary: str) -> None:
        """End the current step with a permanent line."""
        self.spent_planned += self.step_planned
        self.note(f"[{self.index:>2}/{self.steps}] {summary}")

    def note(self, text: str) -> None:
        if self.tty and self.shown:
            self.stream.write("\r\x1b[K")
            self.shown = False
        self.stream.write(text + "\n")
        self.stream.flush()
        self.last_plain = time.monotonic()

    def close(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False
