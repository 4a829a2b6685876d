"""Overload soak: edgeproxy driven at twice its measured capacity.

    python -m load_tests.overload --minutes 10          # the issue's soak (~11 min in all)
    python -m load_tests.overload --minutes 3 --json    # shorter; the result as JSON on stdout

Three phases against ``edgeproxy serve`` (one worker, its default
settings) in front of the load test's origin, all on 127.0.0.1:

1. **capacity**: closed loop (``--concurrency`` connections back to back:
   4, 8 and 16, a third of ``--capacity-seconds`` each) on the
   personalised page, gzip; the best req/s of 200s is the capacity C.
2. **baseline**: open loop at 0.7 C (the wrk2 method: latency counted from
   each request's scheduled time) for ``--baseline-seconds``.
3. **overload**: open loop at 2 C for ``--minutes``, over enough connections
   that the proxy, not the generator, decides what is admitted.  Every
   ``--sample-seconds`` the proxy's RSS and open file descriptors are read
   from /proc, with the last interval's admitted and shed requests.

The proxy's in-flight cap adapts by itself (``in_flight_lag_target_ms``,
``edgeproxy/http/admission.py``): shedding protects admitted requests only
if the cap is near what the process can serve within its latency (Little's
law: in-flight = rate x latency), and that depends on the page, the origin
and the machine.  ``--max-in-flight N`` runs it with a fixed cap instead
(``in_flight_lag_target_ms = 0``), as the runs before the adaptive limit did.

What it checks (exit status 1 when one fails):

* admitted requests' (200s) p99 under overload within ``--p99-ratio`` of the
  baseline's p99 (or within ``--p99-slack-ms`` of it, whichever is looser:
  a 5 ms baseline on a shared box makes a pure ratio meaningless);
* the rest are 503 with ``Retry-After`` (every 503 is counted by the
  proxy's ``edgeproxy_refused_total`` with reason ``in_flight``,
  ``connections`` or ``queue_delay``);
* zero 5xx from the proxy's own faults: any 5xx other than those 503s and
  other than 502/504 (the origin side, counted separately), any dropped
  connection, any traceback in the proxy's log;
* RSS and open FDs flat: the last quarter of the samples not above the
  second quarter by more than ``--rss-growth`` (10 %) / ``--fd-growth`` (32).

A run stops by itself; its child processes are stopped on exit, Ctrl-C or
SIGTERM.  The result is written to ``load_tests/results/overload-*.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import metrics as edge_metrics
from .loadgen import ProtocolError, build_request, closed_loop, latency_summary, percentile, read_response
from .procs import Children, cpu_plan, descendants, free_port, http_get, tree_cpu_seconds, tree_rss_kib, wait_http
from .runner import write_slots

HOST = "127.0.0.1"
PAGE = "/listing/120k/private"  # the budget page, uncacheable: every request is personalised
BASELINE_SHARE = 0.7
OVERLOAD_FACTOR = 2.0
RESULTS = Path(__file__).resolve().parent / "results"
ORIGIN_SIDE = (502, 504)
# The proxy's reasons for a 503 + Retry-After (edgeproxy_refused_total).
SHED_REASONS = ("in_flight", "connections", "queue_delay")


# ---------------------------------------------------------------------------
# The open loop, split by outcome
# ---------------------------------------------------------------------------
@dataclass
class Phase:
    """One open-loop phase: admitted (200) and shed (503) requests apart."""

    name: str
    rate: float
    connections: int
    duration: float
    admitted: list[float] = field(default_factory=list)  # seconds from the scheduled time
    admitted_service: list[float] = field(default_factory=list)  # seconds from the actual send
    shed: list[float] = field(default_factory=list)
    # Where an admitted request's wait was: sent after its due time (the
    # connection was still busy, or the generator late), then the first body
    # byte after the send.
    send_lag: list[float] = field(default_factory=list)
    first_byte: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    # Answered before the phase's end: requests sent late finish after it,
    # so only these give a rate.
    in_window: Counter = field(default_factory=Counter)
    elapsed: float = 0.0  # until the last late request was answered
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    # Per sampling interval: [admitted, shed, other] counts.
    intervals: list[list[int]] = field(default_factory=list)

    def summary(self) -> dict:
        total = sum(self.statuses.values())
        shed = self.statuses.get(503, 0)
        return {
            "rate": self.rate,
            "connections": self.connections,
            "seconds": self.duration,
            "requests": total,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "admitted_rps": self.in_window.get(200, 0) / self.duration if self.duration else 0.0,
            "shed_rps": self.in_window.get(503, 0) / self.duration if self.duration else 0.0,
            "elapsed": self.elapsed,
            "shed_share": shed / total if total else 0.0,
            "admitted_ms": latency_summary(sorted(self.admitted)),
            "admitted_service_ms": latency_summary(sorted(self.admitted_service)),
            "shed_ms": latency_summary(sorted(self.shed)),
            "admitted_send_lag_ms": latency_summary(sorted(self.send_lag)),
            "admitted_first_byte_ms": latency_summary(sorted(self.first_byte)),
            "errors": self.errors,
            "error_samples": self.error_samples,
        }


async def open_loop(port: int, request: bytes, phase: Phase, *, sample_every: float = 0.0, on_sample=None) -> Phase:
    """Requests at ``phase.rate`` over ``phase.connections`` (request k of
    connection i due at ``t0 + (k * connections + i) / rate``), latency
    counted from the due time; ``on_sample(phase)`` every ``sample_every`` s."""
    clock = time.perf_counter
    t0 = clock()
    end = t0 + phase.duration
    interval = phase.connections / phase.rate
    current = [0, 0, 0]

    async def worker(i: int) -> None:
        conn = None
        scheduled = t0 + i / phase.rate
        while scheduled < end:
            now = clock()
            if scheduled > now:
                await asyncio.sleep(scheduled - now)
            try:
                if conn is None:
                    conn = await asyncio.open_connection(HOST, port, limit=1 << 20)
                reader, writer = conn
                sent = clock()
                writer.write(request)
                body_at = [0.0]
                status, _n, keep = await read_response(reader, on_body=lambda: body_at.__setitem__(0, clock()))
                done = clock()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError, ValueError) as exc:
                if conn is not None:
                    conn[1].close()
                conn = None
                phase.errors += 1
                current[2] += 1
                if len(phase.error_samples) < 5:
                    phase.error_samples.append(f"{type(exc).__name__}: {exc}")
                scheduled += interval
                continue
            phase.statuses[status] += 1
            if done <= end:
                phase.in_window[status] += 1
            if status == 200:
                phase.admitted.append(done - scheduled)
                phase.admitted_service.append(done - sent)
                phase.send_lag.append(sent - scheduled)
                phase.first_byte.append((body_at[0] or done) - sent)
                current[0] += 1
            elif status == 503:
                phase.shed.append(done - scheduled)
                current[1] += 1
            else:
                current[2] += 1
            if not keep:
                writer.close()
                conn = None
            scheduled += interval
        if conn is not None:
            conn[1].close()

    async def sampler() -> None:
        nonlocal current
        while sample_every and clock() < end:
            await asyncio.sleep(min(sample_every, max(0.0, end - clock())))
            phase.intervals.append(current)
            current = [0, 0, 0]
            if on_sample is not None:
                on_sample(phase)

    sampling = asyncio.ensure_future(sampler())
    await asyncio.gather(*(worker(i) for i in range(phase.connections)))
    phase.elapsed = clock() - t0
    sampling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampling
    return phase


# ---------------------------------------------------------------------------
# The proxy process, from outside
# ---------------------------------------------------------------------------
def open_fds(pid: int) -> int:
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{p}/fd"))
    return total


def growth(values: list[float]) -> tuple[float, float]:
    """(second quarter's max, last quarter's max): the first quarter is
    warm-up (allocator arenas, the pools filling)."""
    n = len(values)
    if n < 4:
        return (max(values), max(values)) if values else (0.0, 0.0)
    q = n // 4
    return max(values[q : 2 * q]), max(values[-q:])


def scrape(port: int) -> edge_metrics.Samples:
    _, _, body = http_get(HOST, port, "/metrics")
    return edge_metrics.parse(body.decode("utf-8", "replace"))


def refused(before: edge_metrics.Samples, after: edge_metrics.Samples) -> dict[str, float]:
    out: dict[str, float] = {}
    for (name, labels), value in after.items():
        if name == "edgeproxy_refused_total":
            delta = value - before.get((name, labels), 0.0)
            if delta:
                out[dict(labels).get("reason", "")] = delta
    return out


def histogram_quantile(before: edge_metrics.Samples, after: edge_metrics.Samples, name: str, q: float) -> float | None:
    """The q-quantile (upper bucket bound, ms) of a histogram's increase over the run."""
    buckets = []
    for (n, labels), value in after.items():
        if n == name + "_bucket":
            le = dict(labels).get("le", "")
            buckets.append((math.inf if le == "+Inf" else float(le), value - before.get((n, labels), 0.0)))
    merged: dict[float, float] = {}
    for le, count in buckets:
        merged[le] = merged.get(le, 0.0) + count
    ordered = sorted(merged.items())
    if not ordered or not ordered[-1][1]:
        return None
    want = q * ordered[-1][1]
    for le, count in ordered:
        if count >= want:
            return le * 1e3
    return None


def tracebacks(log: Path) -> int:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    return len(re.findall(r"^Traceback \(most recent call last\)", text, flags=re.M))


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------
def verdict(result: dict, args) -> list[str]:
    """What failed (empty: the proxy held)."""
    failed = []
    base = result["baseline"]["admitted_ms"]["p99"]
    over = result["overload"]["admitted_ms"]["p99"]
    if base is None or over is None:
        failed.append("no admitted requests to compare")
    else:
        allowed = max(base * args.p99_ratio, base + args.p99_slack_ms)
        if over > allowed:
            failed.append(f"admitted p99 {over:.1f} ms under overload > {allowed:.1f} ms allowed (baseline {base:.1f} ms)")
    if result["proxy_faults"]["total"]:
        failed.append(f"proxy faults: {result['proxy_faults']}")
    if result["overload"]["shed_share"] <= 0:
        failed.append("nothing was shed: the run did not overload the proxy")
    rss, fds = result["rss_kib"], result["fds"]
    if rss["last_quarter_max"] > rss["second_quarter_max"] * (1 + args.rss_growth):
        failed.append(f"RSS grew: {rss['second_quarter_max']} -> {rss['last_quarter_max']} KiB")
    if fds["last_quarter_max"] > fds["second_quarter_max"] + args.fd_growth:
        failed.append(f"open FDs grew: {fds['second_quarter_max']} -> {fds['last_quarter_max']}")
    return failed


async def measure(args, proxy_port: int, admin_port: int, proxy_pid: int, say) -> dict:
    # gzip both ways (the origin's page, the proxy's answer): the proxy
    # inflates, rewrites and deflates, the generator reads a fifth of the
    # bytes, so the proxy and not the generator is what runs out first.
    request = build_request(HOST, proxy_port, args.path, [("Accept-Encoding", "gzip")] if args.gzip else [])
    # Warm-up: pools, the rewriter's patterns, the allocator.
    await closed_loop(HOST, proxy_port, request, concurrency=max(args.concurrency), duration=min(2.0, args.capacity_seconds))
    # The best 200s/s over a few closed-loop concurrencies: past the
    # proxy's in-flight limit a closed loop's extra connections only spin on
    # 503s (each one a reconnect), which lowers what it measures.
    tried: dict[int, float] = {}
    cap = None
    for concurrency in args.concurrency:
        say(f"capacity: closed loop, {concurrency} connections, {args.capacity_seconds / len(args.concurrency):g} s")
        run = await closed_loop(HOST, proxy_port, request, concurrency=concurrency, duration=args.capacity_seconds / len(args.concurrency))
        tried[concurrency] = run.statuses.get(200, 0) / run.elapsed if run.elapsed else 0.0
        if cap is None or tried[concurrency] > tried[cap.concurrency]:
            cap = run
    capacity = tried[cap.concurrency]
    if capacity <= 0:
        raise SystemExit(f"overload: no 200s while measuring capacity: {cap.summary()}")
    say(f"capacity {capacity:,.0f} req/s at {cap.concurrency} connections (p99 {latency_summary(sorted(cap.latencies))['p99']:.1f} ms; tried {tried})")
    over_rate = args.factor * capacity
    # Enough connections that admission is the proxy's decision (many times
    # the in-flight cap: a connection is a serial queue, and one waiting on
    # an admitted response must not delay the requests due after it) and
    # each one sends at most every 200 ms.
    connections = min(1024, max(256, math.ceil(over_rate * 0.2)))

    say(f"baseline: open loop at {BASELINE_SHARE:.0%} = {BASELINE_SHARE * capacity:,.0f} req/s for {args.baseline_seconds:g} s")
    baseline = await open_loop(proxy_port, request, Phase("baseline", BASELINE_SHARE * capacity, connections, args.baseline_seconds))

    seconds = args.minutes * 60
    sample_every = args.sample_seconds or max(0.2, seconds / 40)
    samples: list[dict] = []
    started = time.perf_counter()
    cpu_then = [tree_cpu_seconds(proxy_pid), started]

    seen = [0, 0]

    def sample(phase: Phase) -> None:
        admitted, shed, other = phase.intervals[-1]
        recent = sorted(phase.admitted[seen[0]:])
        recent_shed = sorted(phase.shed[seen[1]:])
        seen[:] = [len(phase.admitted), len(phase.shed)]
        cpu_now = [tree_cpu_seconds(proxy_pid), time.perf_counter()]
        # The share of one CPU the proxy got: on a shared machine, when it
        # is well under 100 % the queue is the neighbours' doing.
        cpu_share = (cpu_now[0] - cpu_then[0]) / max(1e-9, cpu_now[1] - cpu_then[1])
        cpu_then[:] = cpu_now
        try:
            now = scrape(admin_port)
        except OSError:
            now = {}
        samples.append({
            "t": round(time.perf_counter() - started, 1),
            "rss_kib": tree_rss_kib(proxy_pid),
            "fds": open_fds(proxy_pid),
            "proxy_cpu": round(cpu_share, 3),
            "load_average": os.getloadavg()[0],
            "admitted": admitted,
            "shed": shed,
            "other": other,
            "admitted_p99_ms": percentile(recent, 99) * 1e3 if recent else None,
            "shed_p99_ms": percentile(recent_shed, 99) * 1e3 if recent_shed else None,
            # The proxy's adaptive in-flight cap and its loop's worst lag of the last second.
            "in_flight_limit": now.get(("edgeproxy_in_flight_limit", ())),
            "loop_lag_ms": round(now[("edgeproxy_event_loop_lag_seconds", ())] * 1e3, 1) if ("edgeproxy_event_loop_lag_seconds", ()) in now else None,
        })
        if args.progress:
            s = samples[-1]
            say(f"  t={s['t']:>6.1f}s  CPU {s['proxy_cpu']:4.0%}  RSS {s['rss_kib'] / 1024:6.1f} MiB  FDs {s['fds']:4d}  admitted {admitted:6d}  shed {shed:6d}  other {other}  p99 admitted {s['admitted_p99_ms'] or 0:7.1f} ms, shed {s['shed_p99_ms'] or 0:7.1f} ms  limit {s['in_flight_limit'] or 0:4.0f}  lag {s['loop_lag_ms'] or 0:5.1f} ms")

    before = scrape(admin_port)
    say(f"overload: open loop at {args.factor:g}x = {over_rate:,.0f} req/s over {connections} connections for {seconds:g} s")
    own_cpu, wall = time.process_time(), time.perf_counter()
    overload = await open_loop(proxy_port, request, Phase("overload", over_rate, connections, seconds), sample_every=sample_every, on_sample=sample)
    generator_busy = (time.process_time() - own_cpu) / (time.perf_counter() - wall)
    await asyncio.sleep(0.5)  # the last responses' counters
    after = scrape(admin_port)

    rss = [s["rss_kib"] for s in samples]
    fds = [s["fds"] for s in samples]
    by_reason = refused(before, after)
    shed_counted = sum(by_reason.get(reason, 0) for reason in SHED_REASONS)
    statuses = overload.statuses
    other_5xx = {str(k): v for k, v in statuses.items() if k >= 500 and k not in ORIGIN_SIDE and k != 503}
    unaccounted_503 = max(0, statuses.get(503, 0) - int(shed_counted))
    rss_q2, rss_q4 = growth(rss)
    fd_q2, fd_q4 = growth(fds)
    return {
        "page": args.path,
        "gzip": args.gzip,
        # Near 1.0: the generator's CPU, not the proxy, set the pace (the
        # latencies are then the generator's queue as much as the proxy's).
        "generator_busy": generator_busy,
        "max_in_flight": args.max_in_flight,
        "capacity": {"rps": capacity, "concurrency": cap.concurrency, "tried": {str(c): r for c, r in tried.items()}, "seconds": cap.elapsed,
                     "latency_ms": latency_summary(sorted(cap.latencies)), "errors": cap.errors},
        "baseline": baseline.summary(),
        "overload": overload.summary(),
        "p99_ratio": (overload.summary()["admitted_ms"]["p99"] or 0) / (baseline.summary()["admitted_ms"]["p99"] or 1),
        "origin_side": {str(k): statuses.get(k, 0) for k in ORIGIN_SIDE},
        "refused_by_reason": by_reason,
        "edgeproxy": edge_metrics.summarise(before, after),
        # The proxy's own view of the admitted requests (from the head read
        # to the last byte written): the rest of the client's wait was in
        # the kernel's queues, before the proxy read the request.
        "proxy_request_ms": {f"p{q * 100:g}": histogram_quantile(before, after, "edgeproxy_request_duration_seconds", q) for q in (0.5, 0.99)},
        "proxy_faults": {
            "other_5xx": other_5xx,
            "unaccounted_503": unaccounted_503,
            "dropped_connections": overload.errors,
            "total": sum(other_5xx.values()) + unaccounted_503 + overload.errors,
        },
        "rss_kib": {"first": rss[0] if rss else None, "min": min(rss, default=0), "max": max(rss, default=0),
                    "last": rss[-1] if rss else None, "second_quarter_max": rss_q2, "last_quarter_max": rss_q4},
        "fds": {"first": fds[0] if fds else None, "min": min(fds, default=0), "max": max(fds, default=0),
                "last": fds[-1] if fds else None, "second_quarter_max": fd_q2, "last_quarter_max": fd_q4},
        "proxy_cpu": {
            "mean": sum(s["proxy_cpu"] for s in samples) / len(samples) if samples else 0.0,
            "min": min((s["proxy_cpu"] for s in samples), default=0.0),
            "max": max((s["proxy_cpu"] for s in samples), default=0.0),
            "load_average": max((s["load_average"] for s in samples), default=0.0),
        },
        "samples": samples,
    }


def describe(result: dict) -> str:
    b, o = result["baseline"], result["overload"]
    rss, fds = result["rss_kib"], result["fds"]
    lines = [
        f"capacity (closed loop, {result['capacity']['concurrency']} conns): {result['capacity']['rps']:,.0f} req/s on {result['page']}"
        f"{' (gzip)' if result['gzip'] else ''}; generator busy at 2x: {result['generator_busy']:.0%}",
        f"{'':24}{'rate':>9}{'admitted/s':>12}{'503 share':>11}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}",
    ]
    for name, p in (("70 % load", b), ("2x load (admitted)", o)):
        lat = p["admitted_ms"]
        lines.append(f"{name:24}{p['rate']:>9,.0f}{p['admitted_rps']:>12,.0f}{p['shed_share']:>11.1%}"
                     f"{lat['p50'] or 0:>9.1f}{lat['p99'] or 0:>9.1f}{lat['p99.9'] or 0:>10.1f}")
    shed = o["shed_ms"]
    if shed["p50"] is not None:
        lines.append(f"{'2x load (503s)':24}{'':9}{'':12}{'':11}{shed['p50']:>9.1f}{shed['p99']:>9.1f}{shed['p99.9']:>10.1f}")
    lines += [
        f"admitted p99 at 2x / at 70 %: {result['p99_ratio']:.2f}",
        f"statuses at 2x: {o['statuses']}; refused by the proxy: {result['refused_by_reason']}",
        f"origin side (502/504): {result['origin_side']}; proxy faults: {result['proxy_faults']}",
        f"RSS MiB: first {rss['first'] / 1024:.1f}, max {rss['max'] / 1024:.1f}, last {rss['last'] / 1024:.1f} "
        f"(2nd quarter max {rss['second_quarter_max'] / 1024:.1f} -> last quarter max {rss['last_quarter_max'] / 1024:.1f})"
        if rss["first"] else "RSS: no samples",
        f"open FDs: first {fds['first']}, max {fds['max']}, last {fds['last']} "
        f"(2nd quarter max {fds['second_quarter_max']} -> last quarter max {fds['last_quarter_max']})",
        f"the proxy's own request duration at 2x (histogram bucket bounds): {result['proxy_request_ms']}",
        f"admitted at 2x, sent late by p50 {o['admitted_send_lag_ms']['p50'] or 0:.1f} / p99 {o['admitted_send_lag_ms']['p99'] or 0:.1f} ms, "
        f"first byte after the send p50 {o['admitted_first_byte_ms']['p50'] or 0:.1f} / p99 {o['admitted_first_byte_ms']['p99'] or 0:.1f} ms",
        f"proxy CPU share at 2x: mean {result['proxy_cpu']['mean']:.0%} (min {result['proxy_cpu']['min']:.0%}, max {result['proxy_cpu']['max']:.0%}); "
        f"machine load average {result['proxy_cpu']['load_average']:.1f} on {os.cpu_count()} CPUs",
        "edgeproxy during the overload: " + edge_metrics.describe(result["edgeproxy"]),
    ]
    return "\n".join(lines)


def _parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m load_tests.overload", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--factor", type=float, default=OVERLOAD_FACTOR, help="the overload as a multiple of the capacity (default 2)")
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the 2x phase (default 10)")
    ap.add_argument("--capacity-seconds", type=float, default=10.0, help="closed-loop capacity run (default 10)")
    ap.add_argument("--baseline-seconds", type=float, default=30.0, help="open loop at 70%% of capacity (default 30)")
    ap.add_argument("--sample-seconds", type=float, default=0.0, help="RSS/FD sampling interval (default: 1/40 of the run, at least 0.2)")
    ap.add_argument("--concurrency", type=int, action="append", default=[], help="closed-loop connections for the capacity run, repeatable: the best counts (default: --max-in-flight, else 4, 8 and 16)")
    ap.add_argument("--no-gzip", dest="gzip", action="store_false", help="ask for identity bodies (the generator then reads 5x the bytes)")
    ap.add_argument("--max-in-flight", type=int, default=0, help="a fixed in-flight cap for the proxy (default: its own, adaptive)")
    ap.add_argument("--path", default=PAGE, help=f"what to request from the proxy (default {PAGE})")
    ap.add_argument("--p99-ratio", type=float, default=3.0, help="admitted p99 allowed, as a multiple of the baseline's (default 3)")
    ap.add_argument("--p99-slack-ms", type=float, default=50.0, help="... or this much above it, whichever is looser (default 50)")
    ap.add_argument("--rss-growth", type=float, default=0.10, help="RSS growth allowed, last vs second quarter (default 0.10)")
    ap.add_argument("--fd-growth", type=int, default=32, help="open-FD growth allowed, last vs second quarter (default 32)")
    ap.add_argument("--edgeproxy-arg", action="append", default=[], metavar="ARG", help="extra argument for `edgeproxy serve`")
    ap.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                    help="a proxy setting, as EDGEPROXY_<KEY> (repeatable), e.g. in_flight_lag_target_ms=2")
    ap.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    ap.add_argument("--out", type=Path, help="where to write the JSON result (default load_tests/results/overload-<time>.json)")
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="no line per sample")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.capacity_seconds <= 0 or args.baseline_seconds <= 0:
        ap.error("--minutes, --capacity-seconds and --baseline-seconds must be positive")
    # The capacity is what the proxy serves with its in-flight cap full:
    # more connections would only be shed.
    args.concurrency = args.concurrency or ([args.max_in_flight] if args.max_in_flight else [4, 8, 16])
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    gen_cpus, server_cpus = cpu_plan()
    if gen_cpus:
        try:
            os.sched_setaffinity(0, gen_cpus)
        except OSError:
            server_cpus = None
    workdir = Path(tempfile.mkdtemp(prefix="edgeproxy-overload-"))
    children = Children(workdir, server_cpus)
    try:
        origin_port, port, admin = free_port(), free_port(), free_port()
        origin = children.spawn("origin", [sys.executable, "-m", "load_tests.origin", "--host", HOST, "--port", str(origin_port)], cwd=root)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEPROXY_")}
        if args.max_in_flight:
            env["EDGEPROXY_MAX_IN_FLIGHT"] = str(args.max_in_flight)
            env["EDGEPROXY_IN_FLIGHT_LAG_TARGET_MS"] = "0"
        for item in args.setting:
            key, _, value = item.partition("=")
            env["EDGEPROXY_" + key.strip().upper()] = value.strip()
        slots = write_slots(workdir / "slots")
        proxy = children.spawn("edgeproxy", [
            sys.executable, "-m", "edgeproxy", "serve", "--upstream", f"http://{HOST}:{origin_port}", "--host", HOST,
            "--port", str(port), "--admin-port", str(admin), "--slots", str(slots), "--access-log", "off", *args.edgeproxy_arg,
        ], env=env, cwd=str(workdir))
        wait_http(origin, HOST, origin_port, "/healthz")
        wait_http(proxy, HOST, admin, "/readyz")
        result = asyncio.run(measure(args, port, admin, proxy.pid, say))
        children.stop(proxy)
        result["proxy_faults"]["tracebacks"] = tracebacks(proxy.log)
        result["proxy_faults"]["total"] += result["proxy_faults"]["tracebacks"]
        result["minutes"] = args.minutes
        result["settings"] = args.setting
        result["at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        result["cpus"] = {"generator": sorted(gen_cpus or ()), "servers": sorted(server_cpus or ())}
        failed = verdict(result, args)
        result["failed"] = failed
    except KeyboardInterrupt:
        say("overload: interrupted; stopping the servers")
        return 130
    finally:
        children.stop_all()
        signal.signal(signal.SIGTERM, old_term)
        shutil.rmtree(workdir, ignore_errors=True)
    out = args.out or RESULTS / f"overload-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(describe(result))
        print("held: admitted p99 kept, the rest shed, no proxy faults, RSS and FDs flat" if not failed else "FAILED:\n  " + "\n  ".join(failed))
        print(f"result: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
