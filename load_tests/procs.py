"""Child processes of a benchmark run: start, pin, watch, measure, stop.

Every server runs as its own process in its own session (so a terminal's
Ctrl-C reaches only the harness, which then stops them in order), pinned to
the servers' CPUs, with stdout/stderr in a log file whose tail is shown when
it fails to start.  On Linux each child also gets ``PR_SET_PDEATHSIG``
(SIGTERM), so even a harness killed with SIGKILL leaves nothing running.

CPU time comes from ``/proc/<pid>/stat`` (utime + stime of the process and
all its descendants, e.g. nginx's worker or ``--workers`` children).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PR_SET_PDEATHSIG = 1
DEFAULT_READY_TIMEOUT = 20.0
DEFAULT_STOP_TIMEOUT = 5.0


class StartError(Exception):
    """A server did not become ready; the message ends with its log's tail."""


def cpu_plan() -> tuple[set[int] | None, set[int] | None]:
    """(generator CPUs, server CPUs): the first allowed CPU for the load
    generator and the harness, the rest for the servers.  (None, None) when
    affinity cannot be set or there is only one CPU."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


def _children_of() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    kids = _children_of()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), 0.0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its live descendants."""
    return sum(process_cpu_seconds(p) for p in descendants(pid))


def tree_rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` and its live descendants, in KiB."""
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            with open(f"/proc/{p}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmRSS:"):
                        total += int(line.split()[1])
                        break
    return total


def host_busy_cpu_seconds() -> float:
    """CPU seconds all CPUs of the machine spent busy since boot (/proc/stat)."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now, below the kernel's ephemeral range.

    A port from ``bind(0)`` comes from the ephemeral range, where any
    outgoing connection on the machine (a proxy's upstream pool, another
    test run) may take it before our server binds it."""
    low = _ephemeral_low()
    rnd = random.Random()
    for _ in range(200):
        port = rnd.randrange(20000, max(20001, low))
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _preexec(cpus: set[int] | None) -> Callable[[], None]:
    def setup() -> None:
        if cpus and hasattr(os, "sched_setaffinity"):
            with contextlib.suppress(OSError):  # a cgroup may forbid it: run unpinned
                os.sched_setaffinity(0, cpus)
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return setup


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class Children:
    """The run's child processes; :meth:`stop_all` ends every one of them."""

    log_dir: Path
    cpus: set[int] | None = None
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None) -> Child:
        log = self.log_dir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_preexec(self.cpus),
                env=env,
                cwd=cwd,
            )
        child = Child(name, list(argv), proc, log)
        self.children.append(child)
        return child

    def stop(self, child: Child, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """SIGTERM the child's process group, SIGKILL it if still there after ``timeout``."""
        proc = child.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # The group may outlive its leader (workers): make sure it is gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(1.0)
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            self.stop(child)


def wait_port(child: Child, host: str, port: int, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
    """Until ``host:port`` accepts a connection; StartError if the child exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if child.proc.poll() is not None:
            raise StartError(f"{child.name} exited with status {child.proc.returncode}:\n{child.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        if time.monotonic() > deadline:
            raise StartError(f"{child.name} did not listen on {host}:{port} within {timeout:.0f}s:\n{child.log_tail()}")
        time.sleep(0.05)


def http_get(host: str, port: int, path: str, headers: Sequence[tuple[str, str]] = (), timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One blocking HTTP/1.1 GET with ``Connection: close``: (status, headers, raw body).

    The body is de-chunked but not decoded."""
    from .loadgen import build_request

    request = build_request(host, port, path, [*headers, ("Connection", "close")])
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if "chunked" in hdrs.get("transfer-encoding", ""):
        body = _dechunk(body)
    return status, hdrs, body


def _dechunk(data: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2


def wait_http(child: Child, host: str, port: int, path: str, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
    """Until ``GET path`` answers 200 (e.g. edgeproxy's admin ``/readyz``)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        if child.proc.poll() is not None:
            raise StartError(f"{child.name} exited with status {child.proc.returncode}:\n{child.log_tail()}")
        try:
            status, _, body = http_get(host, port, path, timeout=1.0)
            if status == 200:
                return
            last = f"{status} {body[:80]!r}"
        except OSError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise StartError(f"{child.name}: {path} not ready within {timeout:.0f}s ({last}):\n{child.log_tail()}")
        time.sleep(0.05)
