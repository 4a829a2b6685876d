"""Where a server's CPU goes: py-spy samples taken under load, summarised.

``python -m load_tests --profile`` runs one extra closed-loop load on
edgeproxy (after the measured runs, so sampling never skews the figures)
while ``py-spy record --format raw`` samples it, keeps the collapsed stacks
next to the JSON, and prints the functions and files that hold the samples.
Without py-spy on PATH the profile is skipped with a message.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

DEFAULT_RATE = 250  # samples per second
#: Leaf frames that mean "the event loop is waiting", not working.
IDLE_LEAVES = re.compile(r"^(Runner\.run \(asyncio/runners|run_until_complete|run_forever|_run_once|select \(selectors|poll )")
_LINE = re.compile(r":\d+\)$")
_PROCESS = re.compile(r'^process \d+:')


def py_spy_binary() -> str | None:
    return shutil.which("py-spy")


def record_command(binary: str, pid: int, out: Path, duration: float, rate: int = DEFAULT_RATE) -> list[str]:
    return [binary, "record", "--pid", str(pid), "--duration", str(max(1, round(duration))), "--rate", str(rate),
            "--format", "raw", "--output", str(out), "--nonblocking", "--subprocesses"]


def start_recording(binary: str, pid: int, out: Path, duration: float, preexec=None) -> subprocess.Popen:
    return subprocess.Popen(record_command(binary, pid, out, duration), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, preexec_fn=preexec)


def _function(frame: str) -> str:
    """``f (pkg/mod.py:12)`` -> ``f (pkg/mod.py)``: samples add up per function."""
    return _LINE.sub(")", frame)


def _file(frame: str) -> str:
    start = frame.rfind("(")
    return _LINE.sub("", frame[start + 1 :]).rstrip(")") if start >= 0 else frame


def _below_entry(ranked: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Drop the entry chain (``main``, ``serve``, …): the frames that share
    the top count are on every stack and say nothing."""
    if not ranked:
        return ranked
    top = ranked[0][1]
    return [(name, s) for name, s in ranked if s < top - 1e-9]


def summarise(lines: Iterable[str], top: int = 15) -> dict:
    """Collapsed stacks (``a;b;c count`` lines) -> busy share, top functions
    by self and inclusive samples, and top files by self samples (shares of
    the busy samples)."""
    own: Counter = Counter()
    inclusive: Counter = Counter()
    files: Counter = Counter()
    total = idle = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        # --subprocesses puts a 'process PID:"argv"' frame at the root.
        frames = [f for f in stack.split(";") if f and not _PROCESS.match(f)]
        total += n
        if not frames or IDLE_LEAVES.match(frames[-1]):
            idle += n
            continue
        leaf = _function(frames[-1])
        own[leaf] += n
        files[_file(frames[-1])] += n
        for f in {_function(f) for f in frames}:
            inclusive[f] += n
    busy = total - idle

    def share(counter: Counter, n: int = top) -> list[tuple[str, float]]:
        return [(name, c / busy) for name, c in counter.most_common(n)] if busy else []

    return {
        "samples": total,
        "busy_share": busy / total if total else None,
        "self": share(own),
        "files": share(files),
        "inclusive": _below_entry(share(Counter({k: v for k, v in inclusive.items() if "edgeproxy/" in k}), top + 8))[:top],
    }
