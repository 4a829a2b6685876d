"""The proxy process: admin endpoints, graceful drain, hot reload, the CLI.

Everything on real sockets; the ``edgeproxy serve`` test runs the command
as a subprocess with the stable flags of CONTRACT §6.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from proxyharness import BROWSER, raw_get, run_origin, run_proxy, write_variant

ROOT = Path(__file__).resolve().parents[1]
PAGE = b'<html><body><section data-edge-slot="hero">Default hero</section></body></html>'


class Origin:
    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/{tail:.*}", self.page)
        return app

    async def page(self, request):
        return web.Response(body=PAGE, content_type="text/html")

    async def slow(self, request):
        """Sends its head and half a body, then waits to be released."""
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = 20
        await resp.prepare(request)
        await resp.write(b"first half")
        self.entered.set()
        await self.release.wait()
        await resp.write(b"other half")
        await resp.write_eof()
        return resp


@pytest.fixture
async def origin():
    o = Origin()
    async with run_origin(o.app()) as url:
        o.url = url
        yield o
        o.release.set()


@pytest.fixture
def slots(tmp_path):
    d = tmp_path / "slots"
    write_variant(d, "hero", "v1", "<h1>Version one</h1>")
    return d


async def admin_get(server, path: str) -> tuple[int, str, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{server.admin_port}{path}") as resp:
            return resp.status, await resp.text(), dict(resp.headers)


# ---------------------------------------------------------------------------
# Admin port
# ---------------------------------------------------------------------------
async def test_healthz_and_readyz_on_the_admin_port(origin, slots):
    async with run_proxy(origin.url, slots) as proxy:
        assert proxy.admin_port != proxy.port
        status, text, _ = await admin_get(proxy, "/healthz")
        assert status == 200
        status, text, _ = await admin_get(proxy, "/readyz")
        assert status == 200
        assert "1 slots" in text and "1 variants" in text


async def test_metrics_are_prometheus_text_and_count_requests(origin, slots):
    async with run_proxy(origin.url, slots) as proxy:
        await raw_get(proxy.port, "/", BROWSER)
        status, text, headers = await admin_get(proxy, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert re.search(r'^edgeproxy_requests_total\{[^}]*status="200"[^}]*\} 1\.0$', text, re.M), text
    assert "edgeproxy_request_duration_seconds_bucket" in text


async def test_admin_endpoints_are_not_reachable_through_the_proxy_port(origin, slots):
    async with run_proxy(origin.url, slots) as proxy:
        resp = await raw_get(proxy.port, "/metrics", BROWSER)
    assert b"edgeproxy_requests" not in resp.body  # the origin's /metrics (its page), not ours


# ---------------------------------------------------------------------------
# Drain
# ---------------------------------------------------------------------------
async def test_stop_drains_an_in_flight_request_and_readyz_turns_503(origin, slots):
    async with run_proxy(origin.url, slots) as proxy:
        admin_port = proxy.admin_port
        in_flight = asyncio.ensure_future(raw_get(proxy.port, "/slow", BROWSER))
        await asyncio.wait_for(origin.entered.wait(), 10)
        stopping = asyncio.ensure_future(proxy.stop())
        # readyz says "take me out of the load balancer" while draining
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                async with session.get(f"http://127.0.0.1:{admin_port}/readyz") as resp:
                    if resp.status == 503:
                        break
                await asyncio.sleep(0.01)
            assert resp.status == 503
            async with session.get(f"http://127.0.0.1:{admin_port}/healthz") as resp:
                assert resp.status == 200  # still alive
        assert not stopping.done()  # waiting for the request
        origin.release.set()
        resp = await asyncio.wait_for(in_flight, 10)
        await asyncio.wait_for(stopping, 10)
    assert resp.status == 200 and resp.complete
    assert resp.body == b"first halfother half"


async def test_new_connections_are_refused_once_draining(origin, slots):
    async with run_proxy(origin.url, slots) as proxy:
        port = proxy.port
        in_flight = asyncio.ensure_future(raw_get(port, "/slow", BROWSER))
        await asyncio.wait_for(origin.entered.wait(), 10)
        stopping = asyncio.ensure_future(proxy.stop())
        refused = False
        for _ in range(200):
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                refused = True
                break
            w.close()
            await asyncio.sleep(0.01)
        origin.release.set()
        await asyncio.wait_for(in_flight, 10)
        await asyncio.wait_for(stopping, 10)
    assert refused


# ---------------------------------------------------------------------------
# Hot reload
# ---------------------------------------------------------------------------
async def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_dropped_in_variant_is_live_within_two_seconds(origin, tmp_path):
    slots = tmp_path / "slots"
    async with run_proxy(origin.url, slots, reload_interval=0.1) as proxy:
        first = await raw_get(proxy.port, "/", BROWSER)
        assert first.body == PAGE
        write_variant(slots, "hero", "new", "<h1>Dropped in</h1>")

        async def live():
            return b"Dropped in" in (await raw_get(proxy.port, "/", BROWSER)).body

        assert await _wait_for(live, 2.0)


async def test_a_broken_edit_keeps_the_old_version_serving(origin, slots):
    async with run_proxy(origin.url, slots, reload_interval=0.1) as proxy:
        assert b"Version one" in (await raw_get(proxy.port, "/", BROWSER)).body
        path = slots / "hero" / "v1.html"
        path.write_text("<!--edge\npriority = = 1\n-->\n<h1>Version two</h1>\n")

        async def rejected():
            _status, text, _ = await admin_get(proxy, "/readyz")
            return "1 rejected" in text

        assert await _wait_for(rejected, 5.0)
        resp = await raw_get(proxy.port, "/", BROWSER)
        assert resp.status == 200
        assert b"Version one" in resp.body
        assert b"Version two" not in resp.body


async def test_requests_keep_being_served_while_slots_reload(origin, slots):
    async with run_proxy(origin.url, slots, reload_interval=0.05) as proxy:
        for i in range(20):
            write_variant(slots, "hero", "v1", f"<h1>Version {i}</h1>")
            resp = await raw_get(proxy.port, "/", BROWSER)
            assert resp.status == 200 and resp.complete
            assert re.search(rb"<h1>Version \w+</h1>", resp.body)


# ---------------------------------------------------------------------------
# edgeproxy serve
# ---------------------------------------------------------------------------
async def _start_cli(*args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEPROXY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgeproxy", "serve", *args,
        cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group: workers are killed with it
    )


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill the command and any worker it started, then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await asyncio.wait_for(proc.wait(), 30)


async def _banner(proc: asyncio.subprocess.Process, *, admin: bool = True) -> tuple[int, int | None]:
    """The ports from the next "proxying ..." line on stderr."""
    seen = []
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        if not line:
            raise AssertionError("no banner: " + "".join(seen))
        seen.append(line)
        port = re.search(r"proxying http://[^:/]+:(\d+)", line)
        admin_port = re.search(r"; admin http://[^:/]+:(\d+)", line)
        if port and (admin_port or not admin):
            return int(port.group(1)), int(admin_port.group(1)) if admin_port else None


async def test_edgeproxy_serve_with_the_stable_flags_proxies_and_stops_on_sigterm(origin, slots, tmp_path):
    pytest.importorskip("mmdb_writer")
    from edgeproxy.classify.geo_build import parse_rows, write_mmdb

    write_mmdb(parse_rows("81.2.69.0/24,GB,,,,\n"), tmp_path / "geo.mmdb", description="test")
    proc = await _start_cli(
        "--upstream", origin.url, "--host", "127.0.0.1", "--port", "0", "--admin-port", "0",
        "--slots", str(slots), "--geo-db", str(tmp_path / "geo.mmdb"),
        "--geo-header", "CF-IPCountry", "--trust-proxy", "10.0.0.0/8",
        "--trust-proxy", "192.168.0.0/16", "--preview-token", "s3cret", "--holdout", "0",
        "--exposure-log", str(tmp_path / "exposures.jsonl"), "--conversion-log", str(tmp_path / "conversions.jsonl"),
        "--conversion-path", "/checkout/complete", "--workers", "1",
    )
    try:
        port, admin_port = await _banner(proc)
        resp = await raw_get(port, "/", BROWSER)
        assert resp.status == 200
        assert b"Version one" in resp.body
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{admin_port}/readyz") as ready:
                assert ready.status == 200
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        assert code == 0, (await proc.stderr.read()).decode()
    finally:
        await _kill(proc)


async def test_edgeproxy_serve_reads_a_config_file(origin, slots, tmp_path):
    config = tmp_path / "edgeproxy.toml"
    config.write_text(f'upstream = "{origin.url}"\nport = 0\nadmin_port = 0\nslots = "{slots}"\n')
    proc = await _start_cli("--config", str(config))
    try:
        port, _admin = await _banner(proc)
        assert b"Version one" in (await raw_get(port, "/", BROWSER)).body
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        await _kill(proc)


@pytest.mark.parametrize(
    "args, named",
    [
        (["--upstream", "ftp://shop"], "upstream"),
        (["--upstream", "http://shop", "--trust-proxy", "not-a-network"], "trust_proxy"),
        (["--upstream", "http://shop", "--holdout", "150"], "holdout"),
        ([], "upstream"),
        # A mistyped slots folder would serve an unpersonalised shop while /readyz says ready.
        (["--upstream", "http://shop", "--slots", "/nonexistent/slots-typo"], "slots"),
    ],
)
async def test_edgeproxy_serve_refuses_a_bad_value_naming_it(args, named):
    proc = await _start_cli("--port", "0", "--admin-port", "0", *args)
    try:
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await _kill(proc)
    assert proc.returncode != 0
    assert named in err.decode()
    assert "Traceback" not in err.decode()


async def test_sigterm_drains_an_in_flight_request_before_edgeproxy_serve_exits(origin, slots):
    proc = await _start_cli("--upstream", origin.url, "--port", "0", "--admin-port", "0", "--slots", str(slots))
    try:
        port, admin_port = await _banner(proc)
        in_flight = asyncio.ensure_future(raw_get(port, "/slow", BROWSER))
        await asyncio.wait_for(origin.entered.wait(), 10)
        proc.send_signal(signal.SIGTERM)
        async with aiohttp.ClientSession() as session:
            for _ in range(500):
                async with session.get(f"http://127.0.0.1:{admin_port}/readyz") as ready:
                    if ready.status == 503:
                        break
                await asyncio.sleep(0.01)
            assert ready.status == 503
        assert proc.returncode is None  # still draining
        origin.release.set()
        resp = await asyncio.wait_for(in_flight, 10)
        assert resp.status == 200 and resp.complete and resp.body == b"first halfother half"
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        await _kill(proc)


async def test_edgeproxy_serve_with_two_workers_serves_and_stops_on_sigterm(origin, slots):
    proc = await _start_cli("--upstream", origin.url, "--port", "0", "--admin-port", "0", "--slots", str(slots), "--workers", "2")
    try:
        # Each worker prints its own line (with --port 0 each has its own port).
        ports = [(await _banner(proc, admin=False))[0] for _ in range(2)]
        for p in ports:
            assert b"Version one" in (await raw_get(p, "/", BROWSER)).body
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        await _kill(proc)


async def test_sigterm_while_a_worker_is_still_starting_is_a_clean_stop(origin, slots):
    # SIGTERM right after the first worker is up: the other may still be
    # starting, and must stop cleanly too (exit status 0, no orphans).
    proc = await _start_cli("--upstream", origin.url, "--port", "0", "--admin-port", "0", "--slots", str(slots), "--workers", "3")
    try:
        await _banner(proc, admin=False)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        await _kill(proc)


# ---------------------------------------------------------------------------
# logrotate: SIGHUP reopens the log files and stops nothing
# ---------------------------------------------------------------------------
async def _lines(path: Path, count: int) -> list[str]:
    """The file's lines once it has ``count`` of them (the access log is
    written every 0.5 s by its thread)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.count("\n") >= count:
            break
        await asyncio.sleep(0.05)
    return text.splitlines()


@pytest.mark.parametrize("workers", [1, 2])
async def test_sighup_after_logrotate_moved_the_access_log_reopens_it_and_the_proxy_serves_on(origin, slots, tmp_path, workers):
    # Bug fixed: without an exposure log SIGHUP was not handled, and its
    # default action stopped the proxy (with --workers, the supervisor).
    access = tmp_path / "logs" / "access.jsonl"
    proc = await _start_cli(
        "--upstream", origin.url, "--port", "0", "--admin-port", "0", "--slots", str(slots), "--access-log", str(access), "--workers", str(workers),
    )
    try:
        ports = [(await _banner(proc, admin=False))[0] for _ in range(workers)]
        for p in ports:
            assert (await raw_get(p, "/before", BROWSER)).status == 200
        assert len(await _lines(access, workers)) == workers
        access.rename(access.with_suffix(".jsonl.1"))
        # A file rename alone is noticed too; SIGHUP asks for it whatever
        # happened to the file: write into the rotated one until reopened.
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.3)
        for p in ports:
            assert (await raw_get(p, "/after", BROWSER)).status == 200
        after = await _lines(access, workers)
        assert proc.returncode is None
        assert len(after) == workers and all('"/after"' in line for line in after)
        assert all('"/before"' in line for line in access.with_suffix(".jsonl.1").read_text().splitlines())
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        await _kill(proc)


def test_settle_heap_leaves_start_up_objects_out_of_the_collectors_reach():
    """``edgeproxy serve`` freezes what start-up built, so a full collection
    no longer walks it (it took longer than the personalisation budget).
    Run in a child: a frozen heap is never collected, not a test process's."""
    code = (
        "import gc, time\n"
        "from edgeproxy.server import settle_heap, warm_up\n"
        "warm_up()\n"
        "t = time.perf_counter(); gc.collect(); before = time.perf_counter() - t\n"
        "settle_heap()\n"
        "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()\n"
        "t = time.perf_counter(); gc.collect(); after = time.perf_counter() - t\n"
        "print(gc.get_freeze_count(), before, after)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    frozen = int(out.stdout.split()[0])
    assert frozen > 10_000
