"""The bundled load generator: raw asyncio streams, HTTP/1.1 keep-alive.

    python -m load_tests.loadgen closed --port P --path /x --concurrency 4 --duration 5
    python -m load_tests.loadgen open   --port P --path /x --rate 2000 --connections 8 --duration 5

It is deliberately not an HTTP library client: one pre-built request, a
response parser that only finds the status, the framing (``Content-Length``
or chunked) and ``Connection: close``, and no body decoding, so one CPU drives
as many requests as possible.

Two ways to load a server:

* **closed loop** (:func:`closed_loop`): ``concurrency`` connections, each
  sends its next request as soon as the previous response ended.  This finds
  the maximum throughput; latency is from the actual send.
* **open loop** (:func:`open_loop`, the wrk2 method): requests are scheduled
  at a constant ``rate`` spread over ``connections``; each connection sends
  its next request at its scheduled time, or at once when it is behind, and
  latency is measured **from the scheduled time**.  A server that stalls for
  100 ms is charged for every request that should have been sent during the
  stall, not just the one it was serving ("coordinated omission").

Percentiles use the nearest-rank method (:func:`percentile`).  When given the
pids of the servers under test, the generator reads their CPU time at the
exact start and end of the measurement window (after warm-up), so CPU per
request covers the same requests as the counts.  As a command it prints
progress lines and then the result as JSON lines on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .procs import tree_cpu_seconds

DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
PERCENTILES = (50.0, 75.0, 90.0, 99.0, 99.9, 99.99)
READ_LIMIT = 1 << 20


class ProtocolError(Exception):
    """The server's response could not be framed."""


def build_request(host: str, port: int, path: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A GET request as bytes, with a desktop browser's headers unless overridden."""
    base = {
        "host": ("Host", f"{host}:{port}"),
        "user-agent": ("User-Agent", DEFAULT_USER_AGENT),
        "accept": ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        "accept-language": ("Accept-Language", "en-GB,en;q=0.9"),
    }
    for k, v in headers:
        base[k.lower()] = (k, v)
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in base.values()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_response(
    reader: asyncio.StreamReader, status_line: bytes = b"", on_body: Callable[[], None] | None = None
) -> tuple[int, int, bool]:
    """Read one response; returns (status, body bytes, keep-alive).

    ``status_line``: the response's first line when the caller already read it;
    ``on_body``: called once, as soon as the first byte of the body is in."""
    head = status_line + await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x response: {head[:40]!r}")
    status = int(head[9:12])
    lower = head.lower()
    keep_alive = b"\r\nconnection: close" not in lower and not head.startswith(b"HTTP/1.0")
    i = lower.find(b"\r\ncontent-length:")
    if status in (204, 304) or 100 <= status < 200:
        return status, 0, keep_alive
    if i >= 0:
        n = int(lower[i + 17 : lower.index(b"\r\n", i + 2)])
        if n and on_body is not None:
            await reader.readexactly(1)
            on_body()
            n0 = n - 1
        else:
            n0 = n
        if n0:
            await reader.readexactly(n0)
        return status, n, keep_alive
    i = lower.find(b"\r\ntransfer-encoding:")
    if i >= 0 and b"chunked" in lower[i : lower.index(b"\r\n", i + 2)]:
        total = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return status, total, keep_alive
            if on_body is not None:
                await reader.readexactly(1)
                on_body()
                on_body = None
                await reader.readexactly(size + 1)
            else:
                await reader.readexactly(size + 2)
            total += size
    # Neither: the body runs to the end of the connection.
    body = await reader.read()
    return status, len(body), False


@dataclass
class LoadResult:
    """What one load run measured (times in seconds)."""

    mode: str
    requests: int = 0
    errors: int = 0
    statuses: Counter = field(default_factory=Counter)
    body_bytes: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    service_times: list[float] = field(default_factory=list)
    cpu_seconds: float | None = None
    generator_cpu_seconds: float | None = None
    error_samples: list[str] = field(default_factory=list)
    concurrency: int = 0
    rate: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    def note_error(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{type(exc).__name__}: {exc}")

    def summary(self) -> dict:
        lat = sorted(self.latencies)
        out = {
            "mode": self.mode,
            "requests": self.requests,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "body_bytes": self.body_bytes,
            "elapsed": self.elapsed,
            "rps": self.rps,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "latency_ms": latency_summary(lat),
            "cpu_seconds": self.cpu_seconds,
            # Near 1.0: the generator, not the server, limited the run.
            "generator_busy": (self.generator_cpu_seconds / self.elapsed) if self.generator_cpu_seconds is not None and self.elapsed else None,
            "cpu_us_per_request": (self.cpu_seconds / self.requests * 1e6) if self.cpu_seconds is not None and self.requests else None,
        }
        if self.service_times:
            out["service_ms"] = latency_summary(sorted(self.service_times))
        return out


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p % of the
    values at or below it.  ``sorted_values`` must be sorted and non-empty."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    # Rounded first: 99.9 / 100 * 1000 is 999.0000000000001 in floating point.
    rank = math.ceil(round(p * len(sorted_values) / 100.0, 9))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def latency_summary(sorted_seconds: Sequence[float]) -> dict[str, float | None]:
    """p50 … p99.99, mean and max in milliseconds (None when nothing was measured)."""
    keys = [f"p{p:g}" for p in PERCENTILES] + ["mean", "max"]
    if not sorted_seconds:
        return dict.fromkeys(keys)
    out = {f"p{p:g}": percentile(sorted_seconds, p) * 1e3 for p in PERCENTILES}
    out["mean"] = sum(sorted_seconds) / len(sorted_seconds) * 1e3
    out["max"] = sorted_seconds[-1] * 1e3
    return out


class _Window:
    """The measurement window: warm-up end, run end, and CPU samples at both."""

    def __init__(self, duration: float, warmup: float, cpu_pids: Sequence[int], progress: Callable[[dict], None] | None) -> None:
        now = time.perf_counter()
        self.start = now + warmup
        self.end = self.start + duration
        self.cpu_pids = list(cpu_pids)
        self.progress = progress
        self.cpu_start: float | None = None
        self.cpu_end: float | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None

    def _cpu(self) -> float | None:
        return sum(tree_cpu_seconds(pid) for pid in self.cpu_pids) if self.cpu_pids else None

    async def run(self, result: LoadResult) -> None:
        """Sample CPU at the window's edges; report progress in between."""
        await asyncio.sleep(max(0.0, self.start - time.perf_counter()))
        self.cpu_start = self._cpu()
        self.own_cpu_start = time.process_time()
        self.started_at = time.perf_counter()
        while True:
            now = time.perf_counter()
            if now >= self.end:
                break
            await asyncio.sleep(min(0.5, self.end - now))
            if self.progress is not None and time.perf_counter() < self.end:
                self.progress({"elapsed": time.perf_counter() - self.started_at, "requests": result.requests})
        self.cpu_end = self._cpu()
        self.own_cpu_end = time.process_time()
        self.ended_at = time.perf_counter()

    def finish(self, result: LoadResult) -> None:
        assert self.started_at is not None and self.ended_at is not None
        result.elapsed = self.ended_at - self.started_at
        result.generator_cpu_seconds = self.own_cpu_end - self.own_cpu_start
        if self.cpu_start is not None and self.cpu_end is not None:
            result.cpu_seconds = self.cpu_end - self.cpu_start


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port, limit=READ_LIMIT)


async def closed_loop(
    host: str,
    port: int,
    request: bytes,
    *,
    concurrency: int,
    duration: float,
    warmup: float = 0.0,
    cpu_pids: Sequence[int] = (),
    progress: Callable[[dict], None] | None = None,
) -> LoadResult:
    """Maximum throughput: ``concurrency`` connections, back to back.

    Counted: requests that completed inside the measurement window (after
    ``warmup``, for ``duration`` seconds); latency from each one's send."""
    result = LoadResult(mode="closed", concurrency=concurrency)
    window = _Window(duration, warmup, cpu_pids, progress)
    clock = time.perf_counter

    async def worker() -> None:
        conn = None
        while clock() < window.end:
            try:
                if conn is None:
                    conn = await _connect(host, port)
                reader, writer = conn
                t0 = clock()
                writer.write(request)
                status, n, keep = await read_response(reader)
                t1 = clock()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError, ValueError) as exc:
                if conn is not None:
                    conn[1].close()
                conn = None
                if clock() >= window.start:
                    result.note_error(exc)
                await asyncio.sleep(0.001)
                continue
            if window.start <= t1 <= window.end:
                result.requests += 1
                result.statuses[status] += 1
                result.body_bytes += n
                result.latencies.append(t1 - t0)
            if not keep:
                writer.close()
                conn = None
        if conn is not None:
            conn[1].close()

    clock_task = asyncio.ensure_future(window.run(result))
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await clock_task
    window.finish(result)
    return result


async def open_loop(
    host: str,
    port: int,
    request: bytes,
    *,
    rate: float,
    connections: int,
    duration: float,
    warmup: float = 0.0,
    cpu_pids: Sequence[int] = (),
    progress: Callable[[dict], None] | None = None,
) -> LoadResult:
    """Constant ``rate`` (requests/s) over ``connections`` (the wrk2 method).

    Request k of connection i is scheduled at ``t0 + (k * connections + i) / rate``;
    its latency is measured from that time, not from when it was sent."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, not {rate!r}")
    result = LoadResult(mode="open", concurrency=connections, rate=rate)
    window = _Window(duration, warmup, cpu_pids, progress)
    clock = time.perf_counter
    t0 = clock()
    interval = connections / rate

    async def worker(i: int) -> None:
        conn = None
        scheduled = t0 + i / rate
        while scheduled < window.end:
            now = clock()
            if scheduled > now:
                await asyncio.sleep(scheduled - now)
            try:
                if conn is None:
                    conn = await _connect(host, port)
                reader, writer = conn
                sent = clock()
                writer.write(request)
                status, n, keep = await read_response(reader)
                done = clock()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError, ValueError) as exc:
                if conn is not None:
                    conn[1].close()
                conn = None
                if scheduled >= window.start:
                    result.note_error(exc)
                scheduled += interval
                continue
            if scheduled >= window.start:
                result.requests += 1
                result.statuses[status] += 1
                result.body_bytes += n
                result.latencies.append(done - scheduled)
                result.service_times.append(done - sent)
            if not keep:
                writer.close()
                conn = None
            scheduled += interval
        if conn is not None:
            conn[1].close()

    clock_task = asyncio.ensure_future(window.run(result))
    await asyncio.gather(*(worker(i) for i in range(connections)))
    await clock_task
    window.finish(result)
    # Requests were scheduled over the window, whatever the elapsed time says.
    return result


async def time_to_first_byte(host: str, port: int, request: bytes, *, count: int) -> dict:
    """``count`` sequential requests on one connection: time to the first byte
    of the response head, to the first byte of its body (a proxy that holds
    the page's head until it has seen a slot shows here), and to the end of
    the response, in ms."""
    reader, writer = await _connect(host, port)
    firsts: list[float] = []
    bodies: list[float] = []
    totals: list[float] = []
    statuses: Counter = Counter()
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            writer.write(request)
            status_line = await reader.readuntil(b"\r\n")  # the first bytes
            first = time.perf_counter()
            body_at: list[float] = []
            status, _, keep = await read_response(reader, status_line, on_body=lambda: body_at.append(time.perf_counter()))
            totals.append(time.perf_counter() - t0)
            firsts.append(first - t0)
            if body_at:
                bodies.append(body_at[0] - t0)
            statuses[status] += 1
            if not keep:
                writer.close()
                reader, writer = await _connect(host, port)
    finally:
        writer.close()
    firsts.sort()
    bodies.sort()
    totals.sort()
    return {
        "count": count,
        "statuses": {str(k): v for k, v in statuses.items()},
        "ttfb_ms": latency_summary(firsts),
        "first_body_byte_ms": latency_summary(bodies),
        "total_ms": latency_summary(totals),
    }


async def download(host: str, port: int, request: bytes, *, rate_mb_s: float, chunk: int = 64 * 1024) -> dict:
    """One GET whose body is read at no more than ``rate_mb_s`` MB/s (a slow
    client, so a proxy that buffers instead of applying back-pressure shows it
    in its memory).  Returns the status, the body bytes and the seconds."""
    reader, writer = await _connect(host, port)
    try:
        t0 = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        i = lower.find(b"\r\ncontent-length:")
        expected = int(lower[i + 17 : lower.index(b"\r\n", i + 2)]) if i >= 0 else None
        got = 0
        while expected is None or got < expected:
            data = await reader.read(chunk)
            if not data:
                break
            got += len(data)
            # Sleep until the body so far is within the rate.
            ahead = got / (rate_mb_s * 1e6) - (time.perf_counter() - t0)
            if ahead > 0:
                await asyncio.sleep(ahead)
        return {"status": status, "bytes": got, "expected": expected, "seconds": time.perf_counter() - t0}
    finally:
        writer.close()


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="bundled HTTP/1.1 load generator (prints JSON lines)")
    ap.add_argument("mode", choices=("closed", "open", "ttfb", "download"))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--header", action="append", default=[], metavar="NAME: VALUE")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--count", type=int, default=20, help="ttfb: sequential requests")
    ap.add_argument("--mb-per-second", type=float, default=200.0, help="download: client read rate")
    ap.add_argument("--cpu-pid", type=int, action="append", default=[], help="server pid whose CPU time to measure (repeatable)")
    ap.add_argument("--latencies", action="store_true", help="include every latency in the result")
    args = ap.parse_args(argv)
    headers = [tuple(part.strip() for part in h.split(":", 1)) for h in args.header]
    request = build_request(args.host, args.port, args.path, headers)  # type: ignore[arg-type]

    def progress(p: dict) -> None:
        _emit({"event": "progress", **p})

    async def go() -> dict:
        if args.mode == "ttfb":
            return await time_to_first_byte(args.host, args.port, request, count=args.count)
        if args.mode == "download":
            return await download(args.host, args.port, request, rate_mb_s=args.mb_per_second)
        if args.mode == "closed":
            res = await closed_loop(
                args.host, args.port, request, concurrency=args.concurrency, duration=args.duration,
                warmup=args.warmup, cpu_pids=args.cpu_pid, progress=progress,
            )
        else:
            res = await open_loop(
                args.host, args.port, request, rate=args.rate, connections=args.connections, duration=args.duration,
                warmup=args.warmup, cpu_pids=args.cpu_pid, progress=progress,
            )
        out = res.summary()
        if args.latencies:
            out["latencies"] = res.latencies
        return out

    from .origin import run

    holder: dict = {}

    async def wrapped() -> None:
        holder["result"] = await go()

    run(wrapped())
    _emit({"event": "result", **holder["result"]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
