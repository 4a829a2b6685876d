"""``python -m load_tests``: edgeproxy against its peers, side by side, in one run.

Stages: 1 start the origin and every system in front of it → 2 check each
answers 200 and which edits it applied → 3 per page and system, a closed-loop
run (max throughput at ``--concurrency``) and an open-loop run (constant rate,
``--open-fraction`` of that system's max, latency from the schedule) → 4 TTFB
through each system for an origin that streams → 5 table, ratios, budgets,
JSON and HTML plot.  All children are stopped on the way out, whatever
happens.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import budgets as B
from . import metrics as edge_metrics
from . import nginx, wrk
from .pages import BANNER_VARIANT, HERO_VARIANT, PAGE_SIZES, SORT_KEYS, check_personalised, describe, make_page
from .procs import (
    Child,
    Children,
    StartError,
    cpu_plan,
    free_port,
    host_busy_cpu_seconds,
    http_get,
    tree_cpu_seconds,
    tree_rss_kib,
    wait_http,
    wait_port,
)
from .progress import Progress
from .report import NOISY_CPUS, print_comparison, print_report, write_html

HOST = "127.0.0.1"
RESULTS_DIR = Path(__file__).with_name("results")

DEFAULT_DURATION = 5.0
DEFAULT_WARMUP = 1.0
DEFAULT_CONCURRENCY = B.LATENCY_CONCURRENCY
DEFAULT_OPEN_FRACTION = 0.7
DEFAULT_TTFB_COUNT = 30
QUICK_DURATION = 0.6
QUICK_WARMUP = 0.2
QUICK_TTFB_COUNT = 5
VERIFY_TRIES = 5
#: Open-loop rates stay below this share of the bundled generator's ceiling
#: against a system, when that ceiling is below GENERATOR_BOUND of wrk's.
GENERATOR_SHARE = 0.4
GENERATOR_BOUND = 0.9
#: The large non-HTML body of the memory check, and the client's read rate (MB/s).
LARGE_BODY_MB = 128
LARGE_BODY_RATE = 256.0
SOAK_FRACTION = 0.7
SOAK_SAMPLE_EVERY = 5.0
SOAK_WARMUP = 10.0

SYSTEM_ORDER = (B.DIRECT, B.AIOHTTP_STATIC, B.HTTPTOOLS, B.BARE, B.NGINX, B.REPARSE, B.EDGEPROXY, B.EDGEPROXY_NOMARKERS,
                B.EDGEPROXY_RETURNING, B.EDGEPROXY_CACHED, B.EDGEPROXY_DEFAULT, B.EDGEPROXY_ASSET)
LABELS = {
    B.DIRECT: "direct (origin)",
    B.AIOHTTP_STATIC: "aiohttp, from memory",
    B.HTTPTOOLS: "httptools pass-through",
    B.BARE: "bare aiohttp proxy",
    B.NGINX: "nginx + sub_filter",
    B.REPARSE: "re-parse (selectolax)",
    B.EDGEPROXY: "edgeproxy",
    B.EDGEPROXY_CACHED: "edgeproxy, cached",
    B.EDGEPROXY_DEFAULT: "edgeproxy, no variant",
    B.EDGEPROXY_ASSET: "edgeproxy, asset",
    B.EDGEPROXY_NOMARKERS: "edgeproxy, page without markers",
    B.EDGEPROXY_RETURNING: "edgeproxy, returning",
}
#: A crawler's User-Agent: bots always get the origin's default content, so
#: this measures edgeproxy's path for a page with no eligible variant.
BOT_USER_AGENT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
#: A browser's image request: not a page load, so proxied untouched and unclassified.
ASSET_HEADERS = [("Accept", "image/avif,image/webp,image/apng,*/*;q=0.8"), ("Sec-Fetch-Dest", "image")]

EXIT_BUDGET = 1
EXIT_BROKEN = 2


@dataclass
class System:
    name: str
    port: int | None = None
    cacheable: bool = False
    route: str | None = None  # the origin's page kind when not public/private (e.g. "nomarkers")
    child: Child | None = None  # whose CPU time is measured (None: nothing runs)
    skipped: str | None = None
    error: str | None = None
    edits: str = ""
    expected_edits: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)  # per-system request headers
    admin_port: int | None = None  # edgeproxy's admin port: /metrics around each run
    notes: list[str] = field(default_factory=list)

    @property
    def runnable(self) -> bool:
        return self.skipped is None and self.error is None and self.port is not None

    def path(self, page: str) -> str:
        return f"/listing/{page}/{self.route or ('public' if self.cacheable else 'private')}"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m load_tests",
        description="Benchmark edgeproxy against direct, a bare aiohttp proxy, nginx+sub_filter and a re-parsing proxy.",
    )
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few seconds (120k page only, short runs); what CI runs")
    ap.add_argument("--no-budgets", dest="budgets_enabled", action="store_false", help="report budgets but never fail on them")
    ap.add_argument("--budgets", type=Path, default=B.DEFAULT_BUDGETS, help="budgets file (default load_tests/budgets.toml)")
    ap.add_argument("--pages", help=f"comma-separated pages of {','.join(PAGE_SIZES)} (default all; --quick: 120k)")
    ap.add_argument("--systems", help=f"comma-separated subset of {','.join(SYSTEM_ORDER)}")
    ap.add_argument("--duration", type=float, help=f"seconds measured per run (default {DEFAULT_DURATION:g})")
    ap.add_argument("--warmup", type=float, help=f"unmeasured seconds before each run (default {DEFAULT_WARMUP:g})")
    ap.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="closed-loop connections (default 4, the latency budget's)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N", help="closed-loop runs per system and page, round-robin; the one with the least CPU/req is reported (default 1)")
    ap.add_argument("--open-fraction", type=float, default=DEFAULT_OPEN_FRACTION, help="open-loop rate as a fraction of each system's closed-loop max (default 0.7)")
    ap.add_argument("--rate", type=float, help="open-loop rate in requests/s for every system (overrides --open-fraction)")
    ap.add_argument("--open-connections", type=int, help="open-loop connections (default: enough that each sends at most every 4 ms, at least 8)")
    ap.add_argument("--no-open", dest="open_loop", action="store_false", help="skip the open-loop runs")
    ap.add_argument("--generator", choices=("auto", "wrk", "bundled"), default="auto", help="closed-loop generator (auto: wrk when installed)")
    ap.add_argument("--gzip", action="store_true", help="clients send Accept-Encoding: gzip (default identity, as the issue's figures)")
    ap.add_argument("--ttfb-count", type=int, help=f"sequential requests for the TTFB check (default {DEFAULT_TTFB_COUNT})")
    ap.add_argument("--edgeproxy-arg", action="append", default=[], metavar="ARG", help="extra argument for `edgeproxy serve` (repeatable, e.g. --edgeproxy-arg=--workers=2)")
    ap.add_argument("--soak", type=float, metavar="MINUTES", help=f"also hold edgeproxy at {SOAK_FRACTION:.0%}% of its max (open loop, budget page) for MINUTES and report RSS growth (the issue's soak: 10)")
    ap.add_argument("--profile", action="store_true", help="after the measured runs, sample edgeproxy under load with py-spy and print where its CPU goes")
    ap.add_argument("--compare", type=Path, metavar="JSON", help="print CPU/req and req/s changes against an earlier run's JSON")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON and HTML go (default load_tests/results)")
    return ap


def _edgeproxy_available() -> str | None:
    """None when ``edgeproxy serve`` can run, else why not."""
    try:
        spec = importlib.util.find_spec("edgeproxy.server")
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        return "edgeproxy serve not available (edgeproxy/server.py does not exist yet)"
    return None


def write_slots(directory: Path) -> Path:
    """The benchmark's variants: a hero and a banner content variant and a
    product-grid sort, none with ``when``, so every (desktop) visitor gets all three."""
    (directory / "hero").mkdir(parents=True)
    (directory / "banner").mkdir()
    (directory / "product-grid").mkdir()
    (directory / "hero" / "bench-hero.html").write_text(
        '<!--edge\ndescription = "load test: everyone"\npriority = 1\n-->\n' + HERO_VARIANT + "\n"
    )
    (directory / "banner" / "bench-banner.html").write_text(
        '<!--edge\ndescription = "load test: everyone"\npriority = 1\n-->\n' + BANNER_VARIANT + "\n"
    )
    sort = ", ".join(f'"{k}"' for k in SORT_KEYS)
    (directory / "product-grid" / "bench-sort.toml").write_text(
        f'description = "load test: cheapest first"\npriority = 1\nsort = [{sort}]\n'
    )
    return directory


def start_systems(args, children: Children, workdir: Path, wanted: list[str], progress_note) -> tuple[dict[str, System], Child]:
    """Start the origin and every wanted system; a system that cannot run is
    marked skipped (missing tool) or error (it failed to start)."""
    origin_port = free_port()
    origin = children.spawn("origin", [sys.executable, "-m", "load_tests.origin", "--host", HOST, "--port", str(origin_port)],
                            cwd=str(Path(__file__).resolve().parents[1]))
    upstream = f"http://{HOST}:{origin_port}"
    systems = {name: System(name) for name in wanted}
    pkg_root = str(Path(__file__).resolve().parents[1])
    waits: list[tuple[System, callable]] = []

    if B.DIRECT in systems:
        s = systems[B.DIRECT]
        s.port, s.child, s.expected_edits = origin_port, origin, "none"
    for name, kind in ((B.AIOHTTP_STATIC, "static"), (B.BARE, "bare"), (B.REPARSE, "reparse")):
        if name in systems:
            s = systems[name]
            s.port = free_port()
            s.expected_edits = "hero+banner+sort" if kind == "reparse" else "none"
            s.child = children.spawn(name, [sys.executable, "-m", "load_tests.proxies", kind, "--upstream", upstream, "--host", HOST, "--port", str(s.port)], cwd=pkg_root)
            waits.append((s, lambda s=s: wait_port(s.child, HOST, s.port)))
    if B.HTTPTOOLS in systems:
        s = systems[B.HTTPTOOLS]
        s.port, s.expected_edits = free_port(), "none"
        s.child = children.spawn(B.HTTPTOOLS, [sys.executable, "-m", "load_tests.passthrough", "--upstream", upstream, "--host", HOST, "--port", str(s.port)], cwd=pkg_root)
        waits.append((s, lambda s=s: wait_port(s.child, HOST, s.port)))
    if B.NGINX in systems:
        s = systems[B.NGINX]
        binary = nginx.nginx_binary()
        if binary is None:
            s.skipped = "skipped: nginx not installed (no nginx on PATH)"
        else:
            s.port = free_port()
            prefix = workdir / "nginx"
            conf = nginx.write_config(prefix, port=s.port, upstream_port=origin_port, host=HOST, gzip=args.gzip)
            s.child = children.spawn(B.NGINX, nginx.command(binary, prefix, conf))
            s.expected_edits = "hero+banner"
            s.notes.append(f"nginx {nginx.nginx_version(binary)}; sub_filter cannot sort")
            waits.append((s, lambda s=s: wait_port(s.child, HOST, s.port)))
    ep_names = [n for n in (B.EDGEPROXY, B.EDGEPROXY_NOMARKERS, B.EDGEPROXY_RETURNING, B.EDGEPROXY_CACHED, B.EDGEPROXY_DEFAULT,
                            B.EDGEPROXY_ASSET) if n in systems]
    if ep_names:
        why = _edgeproxy_available()
        if why:
            for n in ep_names:
                systems[n].skipped = f"skipped: {why}"
        else:
            port, admin = free_port(), free_port()
            slots = write_slots(workdir / "slots")
            env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEPROXY_")}
            argv = [sys.executable, "-m", "edgeproxy", "serve", "--upstream", upstream, "--host", HOST, "--port", str(port),
                    "--admin-port", str(admin), "--slots", str(slots), *args.edgeproxy_arg]
            child = children.spawn(B.EDGEPROXY, argv, env=env, cwd=str(workdir))
            for n in ep_names:
                systems[n].port, systems[n].child, systems[n].expected_edits = port, child, "hero+banner+sort"
                systems[n].admin_port = admin
            if B.EDGEPROXY_CACHED in systems:
                systems[B.EDGEPROXY_CACHED].cacheable = True
            if B.EDGEPROXY_DEFAULT in systems:
                systems[B.EDGEPROXY_DEFAULT].expected_edits = "none"
                systems[B.EDGEPROXY_DEFAULT].headers = [("User-Agent", BOT_USER_AGENT)]
            if B.EDGEPROXY_ASSET in systems:
                systems[B.EDGEPROXY_ASSET].expected_edits = "none"
                systems[B.EDGEPROXY_ASSET].headers = list(ASSET_HEADERS)
            if B.EDGEPROXY_NOMARKERS in systems:
                systems[B.EDGEPROXY_NOMARKERS].expected_edits = "none"
                systems[B.EDGEPROXY_NOMARKERS].route = "nomarkers"
            first = systems[ep_names[0]]
            waits.append((first, lambda: (wait_port(child, HOST, port), wait_http(child, HOST, admin, "/readyz"))))

    wait_port(origin, HOST, origin_port)
    for s, wait in waits:
        try:
            wait()
        except StartError as exc:
            for other in systems.values():
                if other.child is s.child:
                    other.error = f"failed to start: {exc}"
            progress_note(f"{LABELS[s.name]}: failed to start: {str(exc).splitlines()[0]}")
    return systems, origin


def origin_port_of(origin: Child) -> int:
    return int(origin.argv[origin.argv.index("--port") + 1])


def set_cookies(port: int, path: str, headers: list[tuple[str, str]], timeout: float = 10.0) -> list[str]:
    """The ``name=value`` of every ``Set-Cookie`` one GET is answered with."""
    from .loadgen import build_request

    request = build_request(HOST, port, path, [*headers, ("Connection", "close")])
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(request)
        raw = b""
        while b"\r\n\r\n" not in raw:
            data = sock.recv(65536)
            if not data:
                break
            raw += data
    head = raw.partition(b"\r\n\r\n")[0].decode("latin-1")
    return [line.split(":", 1)[1].strip().split(";", 1)[0] for line in head.split("\r\n")[1:] if line.lower().startswith("set-cookie:")]


def verify(systems: dict[str, System], page: str, headers: list[tuple[str, str]]) -> list[str]:
    """One request through each system; what it edited.  Returns problems."""
    problems = []
    for s in systems.values():
        if not s.runnable:
            continue
        if s.name == B.EDGEPROXY_RETURNING:
            # A returning visitor sends back the cookies its first visit got.
            try:
                cookies = set_cookies(s.port, s.path(page), headers)
            except OSError as exc:
                cookies = []
                problems.append(f"{LABELS[s.name]}: no first visit: {exc}")
            if cookies:
                s.headers.append(("Cookie", "; ".join(cookies)))
            else:
                s.notes.append("the first visit set no cookie: measured as a new visitor")
        # A personaliser may fall back to the origin's bytes for a slot when
        # it overruns its time budget (a busy machine): a few tries, and the
        # cacheable page is asked for at least twice (the second is a hit).
        for attempt in range(VERIFY_TRIES):
            try:
                status, hdrs, body = http_get(HOST, s.port, s.path(page), [*headers, *s.headers])
            except OSError as exc:
                s.error = f"verification request failed: {exc}"
                break
            if hdrs.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            s.edits = describe(check_personalised(body))
            if status != 200 or (s.edits == s.expected_edits and (attempt or not s.cacheable)):
                break
        if s.error:
            problems.append(f"{LABELS[s.name]}: {s.error}")
            continue
        if "server-timing" in hdrs and s.name.startswith("edgeproxy"):
            s.notes.append(f"Server-Timing: {hdrs['server-timing']}")
        if status != 200:
            s.error = f"answered {status} to GET {s.path(page)}"
            problems.append(f"{LABELS[s.name]}: {s.error}: {body[:200]!r}")
        elif s.edits != s.expected_edits:
            problems.append(f"{LABELS[s.name]}: applied {s.edits}, expected {s.expected_edits}")
    return problems


class NoiseMeter:
    """CPU the machine spent on processes outside this benchmark during a run.

    Busy time of all CPUs (/proc/stat) minus the servers' trees, the reaped
    load generators (RUSAGE_CHILDREN) and the harness itself (RUSAGE_SELF).
    Other engineers' test runs on a shared box show up here; a run with a
    noisy neighbour is flagged rather than silently trusted."""

    def __init__(self, children: Children) -> None:
        self.children = children

    def _sample(self) -> tuple[float, float, float]:
        import resource

        ours = sum(tree_cpu_seconds(c.pid) for c in self.children.children)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        ours += kids.ru_utime + kids.ru_stime + me.ru_utime + me.ru_stime
        return time.monotonic(), host_busy_cpu_seconds(), ours

    def __enter__(self) -> "NoiseMeter":
        self.start = self._sample()
        return self

    def __exit__(self, *exc) -> None:
        end = self._sample()
        wall = end[0] - self.start[0]
        foreign = (end[1] - self.start[1]) - (end[2] - self.start[2])
        self.other_cpus = max(0.0, foreign / wall) if wall > 0 else 0.0


class Runner:
    """Runs the load generators, pinned to the generator CPU, and collects results."""

    def __init__(self, args, gen_cpus: set[int] | None, headers: list[tuple[str, str]], progress: Progress, workdir: Path) -> None:
        self.args = args
        self.gen_cpus = gen_cpus
        self.headers = headers
        self.progress = progress
        self.wrk = wrk.wrk_binary() if args.generator in ("auto", "wrk") else None
        if args.generator == "wrk" and self.wrk is None:
            raise SystemExit("--generator wrk: wrk is not installed")
        self.wrk_script = wrk.write_script(workdir) if self.wrk else None
        # wrk's -d is whole seconds; sub-second (quick) runs use the bundled generator.
        self.use_wrk = self.wrk is not None and args.duration >= 1.0
        self.current: subprocess.Popen | None = None

    def _preexec(self):
        cpus = self.gen_cpus

        def setup() -> None:
            if cpus:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(0, cpus)

        return setup

    def _loadgen(self, argv: list[str], system: System, on_progress=None) -> dict:
        """Run the bundled generator against ``system`` (with its request headers)."""
        cmd = [sys.executable, "-m", "load_tests.loadgen", *argv]
        for k, v in [*self.headers, *system.headers]:
            cmd += ["--header", f"{k}: {v}"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                preexec_fn=self._preexec(), cwd=str(Path(__file__).resolve().parents[1]))
        self.current = proc
        result = None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                msg = json.loads(line)
                if msg.get("event") == "progress":
                    self.progress.update(msg.get("requests"))
                    if on_progress is not None:
                        on_progress(msg)
                elif msg.get("event") == "result":
                    result = msg
            err = proc.stderr.read() if proc.stderr else ""
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self.current = None
        if result is None or proc.returncode:
            raise RuntimeError(f"load generator failed ({proc.returncode}): {err[-1500:]}")
        result.pop("event", None)
        return result

    def closed(self, s: System, page: str) -> dict:
        a = self.args
        if not self.use_wrk:
            res = self._loadgen(["closed", "--host", HOST, "--port", str(s.port), "--path", s.path(page),
                                 "--concurrency", str(a.concurrency), "--duration", str(a.duration), "--warmup", str(a.warmup),
                                 "--cpu-pid", str(s.child.pid)], system=s)
            res["generator"] = "bundled"
            return res
        if a.warmup > 0:
            self._loadgen(["closed", "--host", HOST, "--port", str(s.port), "--path", s.path(page),
                           "--concurrency", str(a.concurrency), "--duration", str(a.warmup), "--warmup", "0"], system=s)
        cpu0 = tree_cpu_seconds(s.child.pid)
        proc = wrk.run(self.wrk, self.wrk_script, f"http://{HOST}:{s.port}{s.path(page)}", concurrency=a.concurrency,
                       duration=a.duration, headers=[*self.headers, *s.headers], preexec=self._preexec())
        self.current = proc
        try:
            while proc.poll() is None:
                self.progress.update()
                time.sleep(0.25)
            out = proc.stdout.read() if proc.stdout else ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self.current = None
        cpu = tree_cpu_seconds(s.child.pid) - cpu0
        res = wrk.parse_output(out)
        res["cpu_seconds"] = cpu
        res["cpu_us_per_request"] = cpu / res["requests"] * 1e6 if res["requests"] else None
        res["concurrency"] = a.concurrency
        res["rate"] = None
        res["generator"] = "wrk"
        return res

    def open(self, s: System, page: str, rate: float) -> dict:
        a = self.args
        res = self._loadgen(["open", "--host", HOST, "--port", str(s.port), "--path", s.path(page), "--rate", f"{rate:.1f}",
                             "--connections", str(open_connections(a, rate)), "--duration", str(a.duration), "--warmup", str(a.warmup),
                             "--cpu-pid", str(s.child.pid)], system=s)
        res["generator"] = "bundled"
        return res

    def profile(self, s: System, page: str, out: Path) -> dict:
        """An extra, unmeasured closed-loop run while py-spy samples the server."""
        from . import profile

        binary = profile.py_spy_binary()
        if binary is None:
            return {"skipped": "skipped: py-spy not installed (pip install py-spy)"}
        duration = max(2.0, self.args.duration)
        rec = profile.start_recording(binary, s.child.pid, out, duration, preexec=self._preexec())
        try:
            self._loadgen(["closed", "--host", HOST, "--port", str(s.port), "--path", s.path(page), "--concurrency",
                           str(self.args.concurrency), "--duration", str(duration + 1.0), "--warmup", "0"], system=s)
            text = rec.communicate(timeout=duration + 30)[0]
        finally:
            if rec.poll() is None:
                rec.kill()
                rec.wait()
        if rec.returncode or not out.exists():
            return {"skipped": f"py-spy failed ({rec.returncode}): {text.strip()[-300:]}"}
        with open(out) as f:
            summary = profile.summarise(f)
        summary.update(page=page, file=str(out))
        return summary

    def soak(self, s: System, page: str, rate: float, seconds: float) -> dict:
        """An open loop at ``rate`` for ``seconds`` with the server's RSS sampled
        every few seconds; growth is from the first sample after warm-up."""
        samples: list[tuple[float, int]] = []

        def sample(msg: dict) -> None:
            if not samples or msg["elapsed"] - samples[-1][0] >= SOAK_SAMPLE_EVERY:
                samples.append((msg["elapsed"], tree_rss_kib(s.child.pid)))

        res = self._loadgen(["open", "--host", HOST, "--port", str(s.port), "--path", s.path(page), "--rate", f"{rate:.1f}",
                             "--connections", str(open_connections(self.args, rate)), "--duration", str(seconds),
                             "--warmup", str(max(self.args.warmup, SOAK_WARMUP)), "--cpu-pid", str(s.child.pid)], system=s, on_progress=sample)
        samples.append((res["elapsed"], tree_rss_kib(s.child.pid)))
        first, last = samples[0][1], samples[-1][1]
        peak = max(kib for _, kib in samples)
        res.update(system=s.name, page=page, rss_samples=[(round(t, 1), kib) for t, kib in samples],
                   rss_start_mib=first / 1024, rss_end_mib=last / 1024, rss_peak_mib=peak / 1024,
                   rss_growth_pct=(last - first) / first * 100 if first else None)
        return res

    def calibrate(self, s: System, page: str) -> dict:
        """The bundled generator's ceiling against ``s``: a short closed loop
        with 8 connections."""
        return self._loadgen(["closed", "--host", HOST, "--port", str(s.port), "--path", s.path(page), "--concurrency",
                              str(open_connections(self.args, 0)), "--duration", "1.0", "--warmup", str(self.args.warmup)], system=s)

    def large_body(self, s: System, megabytes: int, rate_mb_s: float) -> dict:
        """A ``megabytes`` non-HTML body through ``s`` to a slow client, with
        the server tree's RSS sampled every 20 ms: baseline and peak growth."""
        before = tree_rss_kib(s.child.pid)
        cmd = [sys.executable, "-m", "load_tests.loadgen", "download", "--host", HOST, "--port", str(s.port),
               "--path", f"/blob/{megabytes}", "--mb-per-second", str(rate_mb_s)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                preexec_fn=self._preexec(), cwd=str(Path(__file__).resolve().parents[1]))
        self.current = proc
        peak = before
        try:
            while proc.poll() is None:
                peak = max(peak, tree_rss_kib(s.child.pid))
                self.progress.update()
                time.sleep(0.02)
            out, err = proc.communicate()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self.current = None
        result = next((json.loads(line) for line in out.splitlines() if '"result"' in line), None)
        if result is None:
            raise RuntimeError(f"download through {s.name} failed: {err[-800:]}")
        result.pop("event", None)
        result.update(megabytes=megabytes, rss_before_mib=before / 1024, rss_peak_mib=peak / 1024,
                      rss_growth_mib=(peak - before) / 1024)
        return result

    def ttfb(self, s: System) -> dict:
        return self._loadgen(["ttfb", "--host", HOST, "--port", str(s.port), "--path", "/stream", "--count", str(self.args.ttfb_count)], system=s)


def scrape_metrics(s: System) -> edge_metrics.Samples | None:
    """edgeproxy's /metrics, parsed; None for other systems or when it does not answer."""
    if s.admin_port is None:
        return None
    try:
        status, _, body = http_get(HOST, s.admin_port, "/metrics")
    except OSError:
        return None
    return edge_metrics.parse(body.decode("utf-8", "replace")) if status == 200 else None


def _died(s: System) -> str:
    """`` (the server exited with N: log tail)`` when it is no longer running."""
    if s.child is not None and s.child.proc.poll() is not None:
        return f" (the server exited with {s.child.proc.returncode}:\n{s.child.log_tail()})"
    return ""


def best_run(tries: list[dict]) -> dict:
    """The run with the least CPU per request; with more than one, every
    try's CPU, req/s and p99 are kept on it.

    Interference only ever adds CPU time (a neighbour's cache misses, a
    shared core), so the least disturbed try is the best estimate of what a
    system costs, as ``timeit`` takes the minimum."""
    if len(tries) == 1:
        return tries[0]
    res = dict(min(tries, key=lambda r: r.get("cpu_us_per_request") or float("inf")))
    res["repeats"] = [{"cpu_us_per_request": r.get("cpu_us_per_request"), "rps": r["rps"],
                       "p99_ms": (r.get("latency_ms") or {}).get("p99"), "other_cpus": r.get("other_cpus")} for r in tries]
    return res


def _fmt_step(s: System, page: str, res: dict) -> str:
    """One finished run as a line of the progress log."""
    lat = res.get("latency_ms") or {}
    cpu = res.get("cpu_us_per_request")
    bad = res["requests"] - sum(v for k, v in res.get("statuses", {}).items() if k in ("200", "2xx/3xx"))
    mode = f"open {res['rate']:.0f}/s" if res["mode"] == "open" else f"closed c={res['concurrency']}"
    line = f"{page:>5} {LABELS[s.name]:<22} {mode:<14} {res['rps']:9,.0f} req/s"
    if lat.get("p99") is not None:
        line += f"  p99 {lat['p99']:7.2f} ms"
    if cpu is not None:
        line += f"  {cpu:7.0f} µs/req"
    if res.get("other_cpus", 0) > NOISY_CPUS:
        line += f"  (noisy: other processes used {res['other_cpus']:.0%} of a CPU)"
    if (res.get("generator_busy") or 0) > 0.9:
        line += "  (generator-bound)"
    if res.get("errors"):
        line += f"  {res['errors']} errors"
    if bad:
        line += f"  {bad} non-200"
    return line


#: Open-loop connections are sized so that each sends at most one request per
#: this many seconds: a connection is a serial queue, and one with no slack
#: turns a short hiccup into lag that never drains (wrk2's advice: many
#: connections relative to rate x latency).
OPEN_CONNECTION_INTERVAL = 0.004


def open_connections(args: argparse.Namespace, rate: float) -> int:
    if args.open_connections:
        return args.open_connections
    return max(8, 2 * args.concurrency, math.ceil(rate * OPEN_CONNECTION_INTERVAL))


def _parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str], list[str]]:
    """Arguments with the quick/full defaults filled in; (args, pages, systems)."""
    args = build_parser().parse_args(argv)
    pages = (args.pages.split(",") if args.pages else (["120k"] if args.quick else list(PAGE_SIZES)))
    for p in pages:
        if p not in PAGE_SIZES:
            raise SystemExit(f"--pages: unknown page {p!r} (pages: {', '.join(PAGE_SIZES)})")
    wanted = args.systems.split(",") if args.systems else list(SYSTEM_ORDER)
    for n in wanted:
        if n not in SYSTEM_ORDER:
            raise SystemExit(f"--systems: unknown system {n!r} (systems: {', '.join(SYSTEM_ORDER)})")
    if args.repeat < 1:
        raise SystemExit(f"--repeat must be at least 1, not {args.repeat}")
    args.duration = args.duration if args.duration is not None else (QUICK_DURATION if args.quick else DEFAULT_DURATION)
    args.warmup = args.warmup if args.warmup is not None else (QUICK_WARMUP if args.quick else DEFAULT_WARMUP)
    args.ttfb_count = args.ttfb_count or (QUICK_TTFB_COUNT if args.quick else DEFAULT_TTFB_COUNT)
    # None: per run, from the rate (open_connections()).
    return args, pages, [n for n in SYSTEM_ORDER if n in wanted]


_FAILURES = (RuntimeError, ValueError, OSError)


@dataclass
class Session:
    """One benchmark run: the measurements, in stages, then the report.

    :meth:`measure` runs stages 1-4 (start, verify, load, extra checks) and
    stops every child on the way out; :meth:`report` is stage 5."""

    args: argparse.Namespace
    pages: list[str]
    wanted: list[str]
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    runs: list[dict] = field(default_factory=list)
    ttfb: dict[str, dict] = field(default_factory=dict)
    memory: dict[str, dict] = field(default_factory=dict)
    profiles: dict[str, dict] = field(default_factory=dict)
    soak: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    systems: dict[str, System] = field(default_factory=dict)
    runner: Runner | None = None

    def measure(self, progress: Progress, children: Children, workdir: Path, gen_cpus, headers) -> None:
        args = self.args
        pin = (f"generator on CPU {sorted(gen_cpus)}, servers on CPU {sorted(children.cpus)}" if gen_cpus
               else "no CPU pinning (one CPU or no sched_setaffinity)")
        progress.note(f"load_tests: {len(self.wanted)} systems, pages {','.join(self.pages)}, {args.duration:g}s runs "
                      f"(+{args.warmup:g}s warm-up), {pin}")
        # 1 start the origin and every system
        self.systems, origin = start_systems(args, children, workdir, self.wanted, progress.note)
        for s in self.systems.values():
            if s.skipped:
                progress.note(f"{LABELS[s.name]}: {s.skipped}")
        # 2 one request through each: 200, and which edits
        self.problems = verify(self.systems, self.pages[0], headers)
        for p in self.problems:
            progress.note(f"warning: {p}")
        self.runner = runner = Runner(args, gen_cpus, headers, progress, workdir)
        progress.note(f"closed loop: {'wrk' if runner.use_wrk else 'bundled asyncio generator'}, {args.concurrency} connections; "
                      + ("open loop: bundled generator, " + (f"{args.open_connections} connections, " if args.open_connections
                                                                else "connections by rate (>= 8), ")
                         + (f"{args.rate:g} req/s" if args.rate else f"{args.open_fraction:.0%} of each system's max")
                         if args.open_loop else "no open loop"))
        # 3 the load: closed loop (repeated round-robin), then open loop, per page
        for page in self.pages:
            self._load_page(page, progress, children, origin)
        # 4 the extra checks
        if args.profile:
            self._profile(progress)
        if args.soak:
            self._soak(progress)
        self._ttfb(progress)
        self._memory(progress)
        progress.close()

    def _load_page(self, page: str, progress: Progress, children: Children, origin: Child) -> None:
        args, runner = self.args, self.runner
        assert runner is not None
        measured = [s for s in self.systems.values() if s.runnable]
        # Repeats go round-robin (A B C, A B C, …) so a noisy neighbour's
        # burst lands on several systems, not on all tries of one.
        tries: dict[str, list[dict]] = {s.name: [] for s in measured}
        for round_no in range(1, args.repeat + 1):
            for s in measured:
                if s.error:
                    continue
                label = f"{page} {LABELS[s.name]} closed c={args.concurrency}"
                progress.start(label + (f" ({round_no}/{args.repeat})" if args.repeat > 1 else ""), args.duration + args.warmup)
                try:
                    scraped = scrape_metrics(s)
                    with NoiseMeter(children) as noise:
                        one = runner.closed(s, page)
                    if scraped is not None and (after := scrape_metrics(s)) is not None:
                        one["edgeproxy_metrics"] = edge_metrics.summarise(scraped, after)
                except _FAILURES as exc:
                    # The generator failed (or the server died): mark it, measure the rest.
                    s.error = f"closed loop on {page} failed: {exc}" + _died(s)
                    progress.finish(f"{page:>5} {LABELS[s.name]}: {str(exc).splitlines()[0]}")
                    continue
                one.update(other_cpus=noise.other_cpus)
                tries[s.name].append(one)
                progress.finish(_fmt_step(s, page, one))
        for s in measured:
            if not tries[s.name]:
                continue
            res = best_run(tries[s.name])
            res.update(system=s.name, page=page, rss_kib=tree_rss_kib(s.child.pid), origin_rss_kib=tree_rss_kib(origin.pid))
            self.runs.append(res)
            if not args.open_loop or s.error:
                continue
            rate = args.rate or max(1.0, res["rps"] * args.open_fraction)
            capped = False
            if not args.rate and runner.use_wrk:
                # wrk found the max; can the Python generator drive this system
                # that fast?  (Its ceiling depends on the response: nginx's
                # sub_filter output comes in many small chunks.)  An open loop
                # beyond it would measure the generator.
                progress.start(f"{page} {LABELS[s.name]} bundled generator ceiling", 1.0 + args.warmup)
                try:
                    ceiling = runner.calibrate(s, page)
                except _FAILURES as exc:
                    s.error = f"calibration on {page} failed: {exc}" + _died(s)
                    progress.finish(f"{page:>5} {LABELS[s.name]}: {str(exc).splitlines()[0]}")
                    continue
                limited = ceiling["rps"] < GENERATOR_BOUND * res["rps"]
                if limited and rate > GENERATOR_SHARE * ceiling["rps"]:
                    rate, capped = GENERATOR_SHARE * ceiling["rps"], True
                progress.finish(f"{page:>5} {LABELS[s.name]:<22} bundled generator reaches {ceiling['rps']:,.0f} req/s"
                                + (f" (wrk {res['rps']:,.0f}): open loop capped at {rate:,.0f}/s" if capped else ""))
            progress.start(f"{page} {LABELS[s.name]} open {rate:.0f}/s", args.duration + args.warmup)
            try:
                with NoiseMeter(children) as noise:
                    ores = runner.open(s, page, rate)
            except _FAILURES as exc:
                s.error = f"open loop on {page} failed: {exc}" + _died(s)
                progress.finish(f"{page:>5} {LABELS[s.name]}: {str(exc).splitlines()[0]}")
                continue
            ores.update(rate_capped=capped, other_cpus=noise.other_cpus, system=s.name, page=page,
                        rss_kib=tree_rss_kib(s.child.pid))
            self.runs.append(ores)
            progress.finish(_fmt_step(s, page, ores))

    def _main_page(self) -> str:
        return B.DEFAULT_BUDGET_PAGE if B.DEFAULT_BUDGET_PAGE in self.pages else self.pages[0]

    def _profile(self, progress: Progress) -> None:
        page = self._main_page()
        self.args.out.mkdir(parents=True, exist_ok=True)
        stem = self.started.strftime("%Y%m%dT%H%M%SZ")
        for s in self.systems.values():
            if not (s.runnable and s.name in (B.EDGEPROXY, B.EDGEPROXY_CACHED, B.EDGEPROXY_DEFAULT, B.EDGEPROXY_NOMARKERS)):
                continue
            progress.start(f"profile {LABELS[s.name]} ({page}, py-spy)", max(2.0, self.args.duration) + 1)
            try:
                self.profiles[s.name] = self.runner.profile(s, page, self.args.out / f"profile-{stem}-{s.name}.txt")
            except _FAILURES as exc:
                self.profiles[s.name] = {"skipped": f"profiling failed: {exc}"}
            p = self.profiles[s.name]
            progress.finish(f"profile {LABELS[s.name]}: " + (p.get("skipped") or f"{p['samples']} samples"))

    def _soak(self, progress: Progress) -> None:
        ep = self.systems.get(B.EDGEPROXY)
        page = self._main_page()
        closed = next((r for r in self.runs if r["system"] == B.EDGEPROXY and r["page"] == page and r["mode"] == "closed"), None)
        if ep is None or not ep.runnable or closed is None:
            progress.note("soak: skipped (edgeproxy was not measured)")
            return
        rate = SOAK_FRACTION * closed["rps"]
        minutes = self.args.soak
        progress.start(f"soak: edgeproxy {page} at {rate:.0f}/s for {minutes:g} min", minutes * 60 + SOAK_WARMUP)
        try:
            self.soak = self.runner.soak(ep, page, rate, minutes * 60)
        except _FAILURES as exc:
            ep.error = f"soak failed: {exc}" + _died(ep)
            progress.finish(f"soak: {str(exc).splitlines()[0]}")
            return
        k = self.soak
        progress.finish(f"soak: {k['requests']:,} requests, p99 {k['latency_ms']['p99']:.2f} ms, RSS "
                        f"{k['rss_start_mib']:.0f} -> {k['rss_end_mib']:.0f} MiB ({k['rss_growth_pct']:+.1f} %)")

    def _ttfb(self, progress: Progress) -> None:
        progress.start("time to first byte, origin streams (/stream)", len(self.wanted) * self.args.ttfb_count * 0.06)
        for s in self.systems.values():
            if s.runnable and not s.cacheable and not s.headers and s.name != B.AIOHTTP_STATIC:
                try:
                    self.ttfb[s.name] = self.runner.ttfb(s)
                except _FAILURES as exc:
                    s.error = f"TTFB check failed: {exc}" + _died(s)
        progress.finish("time to first byte: " + ", ".join(
            f"{LABELS[n]} {t['ttfb_ms']['p50']:.2f} ms" for n, t in self.ttfb.items() if t["ttfb_ms"]["p50"] is not None))

    def _memory(self, progress: Progress) -> None:
        proxies = [s for s in self.systems.values()
                   if s.runnable and not s.cacheable and not s.headers and s.name not in (B.DIRECT, B.AIOHTTP_STATIC)]
        progress.start(f"memory: a {LARGE_BODY_MB} MiB non-HTML body through each proxy", len(proxies) * 1.0)
        for s in proxies:
            try:
                self.memory[s.name] = self.runner.large_body(s, LARGE_BODY_MB, LARGE_BODY_RATE)
            except _FAILURES as exc:
                s.error = f"large-body check failed: {exc}" + _died(s)
        progress.finish(f"memory, {LARGE_BODY_MB} MiB non-HTML body at {LARGE_BODY_RATE:g} MB/s: " + ", ".join(
            f"{LABELS[n]} +{m['rss_growth_mib']:.0f} MiB" for n, m in self.memory.items()))

    def report(self, budget_spec: dict, gen_cpus, server_cpus, previous: dict | None) -> int:
        """5 figures, budgets, table, JSON and HTML; the exit status."""
        args = self.args
        budget_page = budget_spec.get("page", B.DEFAULT_BUDGET_PAGE)
        figures_by_page = {page: B.compute_figures(self.runs, self.ttfb, page, memory=self.memory, soak=self.soak)
                           for page in self.pages}
        verdicts = B.check_budgets(budget_spec, figures_by_page[budget_page]) if budget_page in self.pages else []
        broken = [f"{LABELS[s.name]}: {s.error}" for s in self.systems.values() if s.error]
        for name, m in self.memory.items():
            if m["status"] != 200 or m["bytes"] != m["expected"]:
                broken.append(f"{LABELS[name]}: large body: status {m['status']}, {m['bytes']:,} of {m['expected']} bytes")
        for r in self.runs:
            ok = sum(v for k, v in r.get("statuses", {}).items() if k in ("200", "2xx/3xx"))
            if r["requests"] == 0 or ok < r["requests"] or r.get("errors"):
                broken.append(f"{LABELS[r['system']]} {r['page']} {r['mode']}: {r['requests']} requests, {ok} OK, "
                              f"{r.get('errors', 0)} errors {r.get('error_samples', [])}")
        meta = {
            "started": self.started.isoformat(timespec="seconds"),
            "host": platform.node(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "generator_cpus": sorted(gen_cpus) if gen_cpus else None,
            "server_cpus": sorted(server_cpus) if server_cpus else None,
            "closed_loop_generator": "wrk" if self.runner and self.runner.use_wrk else "bundled",
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "commit": _git_commit(),
            "page_bytes": {p: len(make_page(PAGE_SIZES[p])) for p in self.pages},
        }
        report = {
            "meta": meta,
            "systems": {n: {"label": LABELS[n], "skipped": s.skipped, "error": s.error, "edits": s.edits,
                            "expected_edits": s.expected_edits, "notes": s.notes} for n, s in self.systems.items()},
            "runs": self.runs,
            "ttfb": self.ttfb,
            "profiles": self.profiles,
            "memory": self.memory,
            "soak": self.soak,
            "figures": figures_by_page,
            "budget_page": budget_page,
            "budgets": [v.__dict__ for v in verdicts],
            "problems": self.problems + broken,
        }
        print_report(report, LABELS, verdicts, budgets_enabled=args.budgets_enabled)
        if previous is not None:
            print_comparison(previous, report, LABELS, str(args.compare))
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
        json_path = args.out / f"run-{stamp}.json"
        json_path.write_text(json.dumps(report, indent=1))
        html_path = write_html(report, LABELS, args.out / f"run-{stamp}.html")
        print(f"\nwrote {json_path}\n      {html_path}")
        if broken:
            print("\nbroken (not a timing problem):\n  " + "\n  ".join(b.replace("\n", "\n    ") for b in broken), file=sys.stderr)
            return EXIT_BROKEN
        if args.budgets_enabled and any(v.failed for v in verdicts):
            return EXIT_BUDGET
        return 0


def main(argv: list[str] | None = None) -> int:
    args, pages, wanted = _parse_args(argv)
    budget_spec = B.load_budgets(args.budgets)  # fail before starting anything
    previous = None
    if args.compare:
        try:
            previous = json.loads(args.compare.read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--compare: cannot read {args.compare}: {exc}") from exc

    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C so children are stopped.
    def on_term(signum, frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C stops the run even when started from a shell that ignores SIGINT
    # for background jobs.
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    # Children import load_tests and edgeproxy from this checkout even when the
    # project is not installed (they run from other directories).
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    gen_cpus, server_cpus = cpu_plan()
    if gen_cpus:
        try:
            os.sched_setaffinity(0, gen_cpus)
        except OSError:
            gen_cpus = server_cpus = None
    headers = [("Accept-Encoding", "gzip")] if args.gzip else []
    workdir = Path(tempfile.mkdtemp(prefix="edgeproxy-load-"))
    children = Children(workdir, server_cpus)
    calibrations = len(pages) * len(wanted) if (args.open_loop and not args.rate and args.generator != "bundled"
                                                and args.duration >= 1.0 and wrk.wrk_binary()) else 0
    load_steps = len(pages) * len(wanted) * (args.repeat + (1 if args.open_loop else 0)) + calibrations + (4 if args.profile else 0)
    steps = load_steps + 2 + (1 if args.soak else 0)  # + TTFB, memory, soak
    planned = load_steps * (args.duration + args.warmup) + len(wanted) * (args.ttfb_count * 0.06 + 1.0) + (args.soak or 0) * 60
    progress = Progress(steps + 1, planned)
    session = Session(args, pages, wanted)
    try:
        session.measure(progress, children, workdir, gen_cpus, headers)
    except KeyboardInterrupt:
        progress.close()
        print("\nload_tests: interrupted; stopping the servers", file=sys.stderr)
        return 130
    finally:
        runner = session.runner
        if runner is not None and runner.current is not None and runner.current.poll() is None:
            runner.current.kill()
        children.stop_all()
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        shutil.rmtree(workdir, ignore_errors=True)
    return session.report(budget_spec, gen_cpus, server_cpus, previous)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
