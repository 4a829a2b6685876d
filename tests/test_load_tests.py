"""load_tests/: the generator measures a real local server correctly, and the
budget checker fails a missed budget.

The generator runs against an aiohttp server on a spare port; every assertion
is about counts, statuses, bytes and arithmetic, never about how fast
anything was.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from load_tests import budgets as B
from load_tests import nginx, wrk
from load_tests.loadgen import (
    build_request,
    closed_loop,
    download,
    latency_summary,
    open_loop,
    percentile,
    read_response,
    time_to_first_byte,
)
from load_tests.pages import PAGE_SIZES, check_personalised, describe, make_page

BODY = b"x" * 5000
CHUNKS = (b"a" * 100, b"b" * 3000, b"c" * 7)


class CountingServer:
    """An aiohttp server that counts the requests it answered, per path."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        app = web.Application()
        app.router.add_get("/fixed", self.fixed)
        app.router.add_get("/chunked", self.chunked)
        app.router.add_get("/missing", self.missing)
        app.router.add_get("/close", self.close)
        self.server = TestServer(app, host="127.0.0.1")

    def _seen(self, request: web.Request) -> None:
        self.count[request.path] = self.count.get(request.path, 0) + 1

    async def fixed(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(body=BODY, content_type="text/html")

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in CHUNKS:
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def missing(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(status=404, text="nope")

    async def close(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(body=BODY, headers={"Connection": "close"})


@pytest.fixture
async def server():
    s = CountingServer()
    await s.server.start_server()
    yield s
    await s.server.close()


def _request(s: CountingServer, path: str) -> bytes:
    return build_request("127.0.0.1", s.server.port, path)


# -- closed loop against a real server ---------------------------------------


@pytest.mark.parametrize("path, size", [("/fixed", len(BODY)), ("/chunked", sum(map(len, CHUNKS))), ("/close", len(BODY))])
async def test_closed_loop_counts_every_answered_request_and_its_body(server, path, size):
    res = await closed_loop("127.0.0.1", server.server.port, _request(server, path), concurrency=3, duration=0.3)
    answered = server.count[path]
    assert res.errors == 0, res.error_samples
    # Responses that end after the window closes are not counted: at most one per connection.
    assert answered - 3 <= res.requests <= answered
    assert res.requests > 0
    assert dict(res.statuses) == {200: res.requests}
    assert res.body_bytes == res.requests * size
    assert len(res.latencies) == res.requests
    assert all(lat > 0 for lat in res.latencies)


async def test_closed_loop_reports_error_statuses_as_statuses(server):
    res = await closed_loop("127.0.0.1", server.server.port, _request(server, "/missing"), concurrency=2, duration=0.2)
    assert res.requests > 0
    assert dict(res.statuses) == {404: res.requests}
    summary = res.summary()
    assert summary["statuses"] == {"404": res.requests}


async def test_closed_loop_counts_connection_failures_as_errors():
    from load_tests.procs import free_port

    port = free_port()  # nothing listens there
    res = await closed_loop("127.0.0.1", port, build_request("127.0.0.1", port, "/"), concurrency=1, duration=0.1)
    assert res.requests == 0
    assert res.errors > 0
    assert "ConnectionRefusedError" in res.error_samples[0]


async def test_closed_loop_reads_the_cpu_of_the_given_pids(server):
    import os

    res = await closed_loop("127.0.0.1", server.server.port, _request(server, "/fixed"), concurrency=2, duration=0.2, cpu_pids=[os.getpid()])
    # The server runs in this very process: it used some CPU, and the figure is per request.
    assert res.cpu_seconds is not None and res.cpu_seconds >= 0
    assert res.summary()["cpu_us_per_request"] == pytest.approx(res.cpu_seconds / res.requests * 1e6)


# -- open loop: the schedule, not the server, sets the count -----------------


async def test_open_loop_sends_the_scheduled_number_of_requests(server):
    rate, duration, connections = 200.0, 0.4, 4
    res = await open_loop("127.0.0.1", server.server.port, _request(server, "/fixed"), rate=rate, connections=connections, duration=duration)
    assert res.errors == 0, res.error_samples
    # Every request scheduled inside the window is sent and counted, however late.
    assert abs(res.requests - rate * duration) <= connections + 1
    assert server.count["/fixed"] == res.requests
    assert dict(res.statuses) == {200: res.requests}


async def test_open_loop_latency_is_measured_from_the_schedule(server):
    res = await open_loop("127.0.0.1", server.server.port, _request(server, "/fixed"), rate=100, connections=2, duration=0.2)
    assert len(res.latencies) == len(res.service_times) == res.requests
    # From the schedule is never shorter than from the actual send.
    assert all(lat >= svc for lat, svc in zip(res.latencies, res.service_times))
    assert "service_ms" in res.summary()


async def test_open_loop_rejects_a_rate_of_zero(server):
    with pytest.raises(ValueError, match="rate must be positive"):
        await open_loop("127.0.0.1", server.server.port, _request(server, "/fixed"), rate=0, connections=1, duration=0.1)


async def test_time_to_first_byte_reads_whole_responses_on_one_connection(server):
    out = await time_to_first_byte("127.0.0.1", server.server.port, _request(server, "/chunked"), count=5)
    assert out["statuses"] == {"200": 5}
    assert server.count["/chunked"] == 5
    assert out["ttfb_ms"]["p50"] <= out["first_body_byte_ms"]["p50"] <= out["total_ms"]["p50"]


async def test_download_reads_the_whole_body_at_the_given_rate_cap(server):
    out = await download("127.0.0.1", server.server.port, _request(server, "/fixed"), rate_mb_s=1000.0, chunk=1000)
    assert out["status"] == 200
    assert out["bytes"] == out["expected"] == len(BODY)


# -- response framing ---------------------------------------------------------


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


@pytest.mark.parametrize(
    "raw, expected",
    [
        # Content-Length
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", (200, 5, True)),
        # chunked, with a chunk extension and a trailer
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n", (200, 5, True)),
        # Connection: close
        (b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 2\r\n\r\nno", (404, 2, False)),
        # no framing: the body runs to EOF
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", (200, 13, False)),
        # 304 has no body whatever the headers say
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", (304, 0, True)),
    ],
)
async def test_read_response_frames_the_body(raw, expected):
    assert await read_response(_reader(raw)) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    ],
)
async def test_read_response_reports_the_first_body_byte_once(raw):
    seen = []
    assert await read_response(_reader(raw), on_body=lambda: seen.append(1)) == (200, 5, True)
    assert seen == [1]


async def test_read_response_leaves_the_next_response_on_the_connection():
    reader = _reader(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    assert await read_response(reader) == (200, 1, True)
    assert await read_response(reader) == (201, 0, True)


def test_build_request_sends_a_desktop_browser_user_agent_unless_overridden():
    req = build_request("127.0.0.1", 80, "/p").decode()
    assert req.startswith("GET /p HTTP/1.1\r\nHost: 127.0.0.1:80\r\n")
    assert "Windows NT 10.0" in req and req.endswith("\r\n\r\n")
    assert "User-Agent: bot\r\n" in build_request("h", 1, "/", [("user-agent", "bot")]).decode().replace("user-agent", "User-Agent")


# -- percentiles from known data ----------------------------------------------


@pytest.mark.parametrize("p, value", [(50, 500), (90, 900), (99, 990), (99.9, 999), (100, 1000), (0, 1), (0.05, 1)])
def test_percentile_is_nearest_rank(p, value):
    assert percentile(list(range(1, 1001)), p) == value


def test_percentile_of_a_single_value_is_that_value():
    assert percentile([7.0], 99.99) == 7.0


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_latency_summary_is_in_milliseconds():
    seconds = sorted([0.001 * i for i in range(1, 101)])  # 1 … 100 ms
    s = latency_summary(seconds)
    assert s["p50"] == pytest.approx(50.0)
    assert s["p99"] == pytest.approx(99.0)
    assert s["p99.9"] == pytest.approx(100.0)
    assert s["max"] == pytest.approx(100.0)
    assert s["mean"] == pytest.approx(50.5)
    assert latency_summary([])["p99"] is None


# -- budgets ------------------------------------------------------------------


def _runs(**cpu_rps):
    """Closed-loop run dicts: system=(cpu µs/req, req/s, p99 ms)."""
    return [
        {"system": name, "page": "120k", "mode": "closed", "concurrency": 4, "cpu_us_per_request": cpu, "rps": rps,
         "latency_ms": {"p99": p99}}
        for name, (cpu, rps, p99) in cpu_rps.items()
    ]


RUNS = _runs(**{
    B.DIRECT: (40.0, 10000.0, 1.0),
    B.NGINX: (80.0, 6000.0, 1.5),
    B.BARE: (320.0, 2500.0, 2.5),
    B.REPARSE: (1900.0, 450.0, 12.0),
    B.EDGEPROXY: (400.0, 2000.0, 4.0),
    B.EDGEPROXY_CACHED: (100.0, 5000.0, 1.2),
    B.HTTPTOOLS: (50.0, 7000.0, 1.2),
    B.EDGEPROXY_DEFAULT: (75.0, 5000.0, 1.2),
    B.EDGEPROXY_ASSET: (60.0, 5000.0, 1.2),
    B.EDGEPROXY_NOMARKERS: (250.0, 3000.0, 2.0),
})
TTFB = {B.DIRECT: {"ttfb_ms": {"p50": 0.2}}, B.EDGEPROXY: {"ttfb_ms": {"p50": 0.9}}}


def test_figures_are_ratios_against_peers_of_the_same_page():
    f = B.compute_figures(RUNS, TTFB, "120k")
    assert f["cpu_per_request_vs_nginx"] == pytest.approx(5.0)
    assert f["cpu_per_request_vs_bare_aiohttp"] == pytest.approx(1.25)
    assert f["cached_cpu_per_request_vs_nginx"] == pytest.approx(1.25)
    assert f["cached_requests_per_second_vs_nginx"] == pytest.approx(5000 / 6000)
    assert f["reparse_cpu_per_request_vs_edgeproxy"] == pytest.approx(4.75)
    assert f["added_latency_p99_ms"] == pytest.approx(3.0)
    assert f["added_ttfb_ms"] == pytest.approx(0.7)
    assert f["cached_cpu_per_request_vs_httptools"] == pytest.approx(2.0)
    assert f["default_cpu_per_request_vs_httptools"] == pytest.approx(1.5)
    assert f["asset_cpu_per_request_vs_httptools"] == pytest.approx(1.2)
    assert f["rewrite_cpu_through_proxy_us"] == pytest.approx(150.0)  # the same page without markers: 250


def test_the_memory_figure_is_edgeproxys_rss_growth_whatever_the_page():
    memory = {B.EDGEPROXY: {"rss_growth_mib": 2.5}, B.REPARSE: {"rss_growth_mib": 256.0}}
    assert B.compute_figures(RUNS, TTFB, "500k", memory=memory)["large_body_rss_growth_mib"] == 2.5
    assert B.compute_figures(RUNS, TTFB, "120k")["large_body_rss_growth_mib"] is None


def test_the_soak_figure_counts_only_for_its_page():
    soak = {"page": "120k", "rss_growth_pct": 12.5}
    assert B.compute_figures(RUNS, TTFB, "120k", soak=soak)["soak_rss_growth_pct"] == 12.5
    assert B.compute_figures(RUNS, TTFB, "60k", soak=soak)["soak_rss_growth_pct"] is None
    [v] = B.check_budgets({"soak_rss_growth_pct_max": 10.0}, B.compute_figures(RUNS, TTFB, "120k", soak=soak))
    assert v.failed


def test_every_figure_is_a_number_or_none():
    figures = B.compute_figures(RUNS, TTFB, "120k", memory={B.EDGEPROXY: {"rss_growth_mib": 1.0}}, soak={"page": "120k", "rss_growth_pct": 1.0})
    assert set(figures) == set(B.FIGURES)
    assert all(isinstance(v, float) for v in figures.values())


def test_a_missed_budget_fails_and_a_met_one_passes():
    figures = B.compute_figures(RUNS, TTFB, "120k")
    verdicts = {v.key: v for v in B.check_budgets(
        {"cpu_per_request_vs_nginx_max": 2.5, "reparse_cpu_per_request_vs_edgeproxy_min": 4.0, "added_ttfb_ms_max": 1.0},
        figures,
    )}
    assert verdicts["cpu_per_request_vs_nginx_max"].status == "fail"
    assert verdicts["cpu_per_request_vs_nginx_max"].failed
    assert verdicts["cpu_per_request_vs_nginx_max"].why == "5 > 2.5"
    assert verdicts["reparse_cpu_per_request_vs_edgeproxy_min"].status == "pass"
    assert verdicts["added_ttfb_ms_max"].status == "pass"


def test_a_min_budget_fails_below_its_limit():
    [v] = B.check_budgets({"cached_requests_per_second_vs_nginx_min": 1.0}, {"cached_requests_per_second_vs_nginx": 0.5})
    assert v.failed and v.why == "0.5 < 1"


def test_a_budget_whose_peer_was_not_measured_is_skipped_not_failed():
    runs = [r for r in RUNS if r["system"] != B.NGINX]  # nginx not installed
    [v] = B.check_budgets({"cpu_per_request_vs_nginx_max": 2.5}, B.compute_figures(runs, TTFB, "120k"))
    assert v.status == "skipped" and not v.failed


def test_figures_of_another_page_are_not_mixed_in():
    assert B.compute_figures(RUNS, TTFB, "500k")["cpu_per_request_vs_nginx"] is None


def test_an_unknown_budget_key_is_an_error_naming_it():
    with pytest.raises(B.BudgetError, match="unknown budget 'cpu_per_request_vs_haproxy_max'"):
        B.check_budgets({"cpu_per_request_vs_haproxy_max": 1.0}, {})


def test_a_budget_must_be_a_number():
    with pytest.raises(B.BudgetError, match="added_ttfb_ms_max must be a number, not 'fast'"):
        B.validate_budgets({"added_ttfb_ms_max": "fast"})


def test_the_targets_file_holds_the_issue_targets():
    spec = B.load_budgets(Path(B.__file__).with_name("budgets-targets.toml"))
    assert spec["page"] == "120k"
    assert spec["cpu_per_request_vs_nginx_max"] == 2.5
    assert spec["cpu_per_request_vs_bare_aiohttp_max"] == 1.1
    assert spec["reparse_cpu_per_request_vs_edgeproxy_min"] == 5.0


def test_a_malformed_budgets_file_names_the_file(tmp_path: Path):
    bad = tmp_path / "budgets.toml"
    bad.write_text("page = \n")
    with pytest.raises(B.BudgetError, match="budgets.toml"):
        B.load_budgets(bad)


def test_repeated_runs_report_the_least_disturbed_try_and_keep_every_try():
    from load_tests.runner import best_run

    tries = [{"cpu_us_per_request": c, "rps": r, "latency_ms": {"p99": 1.0}} for c, r in ((300, 10), (100, 30), (200, 20))]
    res = best_run(tries)
    assert res["cpu_us_per_request"] == 100 and res["rps"] == 30
    assert [t["cpu_us_per_request"] for t in res["repeats"]] == [300, 100, 200]
    assert best_run(tries[:1]) is tries[0]


# -- the systems' inputs --------------------------------------------------------


def test_pages_have_the_three_slots_and_their_size():
    for name, size in PAGE_SIZES.items():
        page = make_page(size)
        assert abs(len(page) - size) < 1000, name
        for marker in (b'data-edge-slot="hero"', b'data-edge-slot="banner"', b'data-edge-slot="product-grid"'):
            assert marker in page
        assert describe(check_personalised(page)) == "none"


def test_the_reparse_baseline_applies_all_three_edits():
    from load_tests.proxies import _rewrite_dom

    out = _rewrite_dom(make_page(PAGE_SIZES["60k"]))
    assert check_personalised(out) == {"hero": True, "banner": True, "sort": True}


def test_nginx_config_substitutes_hero_and_banner_in_a_private_prefix(tmp_path: Path):
    conf = nginx.write_config(tmp_path, port=20001, upstream_port=20002).read_text()
    assert "listen 127.0.0.1:20001" in conf and "server 127.0.0.1:20002" in conf
    assert conf.count("sub_filter '") == 2
    assert f"pid {tmp_path}/nginx.pid;" in conf
    assert "daemon off;" in conf


def test_wrk_report_line_is_parsed_into_a_summary():
    line = (wrk.MARK + '{"requests": 1000, "duration_us": 2000000, "bytes": 5000, '
            '"errors": {"connect": 0, "read": 1, "write": 0, "status": 3, "timeout": 0}, '
            '"latency_ms": {"p50": 1.000, "p99": 2.500, "mean": 1.100, "max": 3.000}}')
    s = wrk.parse_output("Running 2s test\n" + line + "\n")
    assert s["rps"] == 500.0
    assert s["errors"] == 1
    assert s["statuses"] == {"2xx/3xx": 997, "other": 3}
    assert s["latency_ms"]["p99"] == 2.5


# -- profile summary ------------------------------------------------------------


def test_profile_summary_separates_idle_and_ranks_functions_by_self_time():
    from load_tests.profile import summarise

    stacks = [
        "main (edgeproxy/cli.py:93);Runner.run (asyncio/runners.py:118) 50",
        "main (edgeproxy/cli.py:93);handle (edgeproxy/pipeline.py:98);feed (edgeproxy/rewrite/stream.py:171) 30",
        "main (edgeproxy/cli.py:93);handle (edgeproxy/pipeline.py:98);feed (edgeproxy/rewrite/stream.py:180) 10",
        "main (edgeproxy/cli.py:93);handle (edgeproxy/pipeline.py:99);_write (aiohttp/http_writer.py:104) 10",
        'process 12:"python -m edgeproxy serve" 7',  # py-spy --subprocesses: a process frame alone is idle
    ]
    s = summarise(stacks)
    assert s["samples"] == 107
    assert s["busy_share"] == 50 / 107
    # Line numbers are folded: one function, one row.
    assert s["self"] == [("feed (edgeproxy/rewrite/stream.py)", 0.8), ("_write (aiohttp/http_writer.py)", 0.2)]
    assert s["files"][0] == ("edgeproxy/rewrite/stream.py", 0.8)
    # The entry chain (on every stack) is not listed as inclusive time.
    assert s["inclusive"] == [("feed (edgeproxy/rewrite/stream.py)", 0.8)]


# -- the origin, on a real socket ----------------------------------------------


@pytest.fixture
async def origin():
    from load_tests.origin import Origin, OriginProtocol

    o = Origin(stream_delay=0.01)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: OriginProtocol(o), "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def _get(port: int, path: str, headers=()) -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(build_request("127.0.0.1", port, path, [*headers, ("Connection", "close")]))
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("kind, cache_control", [("private", b"private, no-store"), ("public", b"public, max-age=60")])
async def test_origin_serves_each_page_cacheable_and_not(origin, kind, cache_control):
    head, body = await _get(origin, f"/listing/120k/{kind}")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Cache-Control: " + cache_control in head
    assert body == make_page(PAGE_SIZES["120k"])


async def test_origin_sends_gzip_only_when_asked(origin):
    import gzip

    head, body = await _get(origin, "/listing/60k/private", [("Accept-Encoding", "gzip, br")])
    assert b"Content-Encoding: gzip" in head
    assert gzip.decompress(body) == make_page(PAGE_SIZES["60k"])


async def test_origin_stream_sends_the_page_in_two_chunks(origin):
    reader, writer = await asyncio.open_connection("127.0.0.1", origin)
    request = build_request("127.0.0.1", origin, "/stream")
    for _ in range(2):  # and the connection stays usable after it
        writer.write(request)
        status, n, keep = await read_response(reader)
        assert (status, n, keep) == (200, len(make_page(PAGE_SIZES["60k"])), True)
    writer.close()


async def test_origin_blob_is_exactly_the_asked_size(origin):
    reader, writer = await asyncio.open_connection("127.0.0.1", origin)
    writer.write(build_request("127.0.0.1", origin, "/blob/3"))
    assert await read_response(reader) == (200, 3 * 1024 * 1024, True)
    writer.write(build_request("127.0.0.1", origin, "/nope"))
    assert (await read_response(reader))[0] == 404
    writer.close()


def test_the_default_budgets_are_what_is_reached_and_no_stricter_than_the_targets():
    targets = B.load_budgets(Path(B.__file__).with_name("budgets-targets.toml"))
    guards = B.load_budgets()
    assert set(guards) == set(targets)
    for key, limit in targets.items():
        if key.endswith("_max"):
            assert guards[key] >= limit, key
        elif key.endswith("_min"):
            assert guards[key] <= limit, key


# -- progress -------------------------------------------------------------------


def test_progress_rewrites_one_line_on_a_terminal():
    import io

    from load_tests.progress import Progress

    out = io.StringIO()
    p = Progress(2, planned=10.0, stream=out, tty=True)
    p.start("first", 5.0)
    p.update(requests=1234)
    p.finish("first: done")
    p.close()
    text = out.getvalue()
    assert text.count("\r\x1b[K[ 1/2] first   ") == 2  # start and update, rewritten in place
    assert "1,234 req" in text
    assert "~10s left" in text or "~9s left" in text  # no absurd estimate at the start
    assert text.endswith("[ 1/2] first: done\n")


def test_progress_prints_plain_lines_when_not_a_terminal():
    import io

    from load_tests.progress import Progress

    out = io.StringIO()
    p = Progress(1, planned=1.0, stream=out, tty=False, plain_interval=0.0)
    p.start("only", 1.0)
    p.finish("only: done")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert out.getvalue().splitlines()[-1] == "[ 1/1] only: done"


def test_comparison_reports_the_change_of_each_system_and_page_in_both_runs():
    from load_tests.report import compare_runs

    before = {"runs": [{"system": "edgeproxy", "page": "120k", "mode": "closed", "cpu_us_per_request": 200.0, "rps": 1000.0},
                       {"system": "nginx+sub_filter", "page": "120k", "mode": "closed", "cpu_us_per_request": 80.0, "rps": 9000.0}]}
    after = {"runs": [{"system": "edgeproxy", "page": "120k", "mode": "closed", "cpu_us_per_request": 150.0, "rps": 1250.0},
                      {"system": "edgeproxy", "page": "120k", "mode": "open", "cpu_us_per_request": 1.0, "rps": 1.0}]}
    [row] = compare_runs(before, after)
    assert row["system"] == "edgeproxy"
    assert row["cpu_us_per_request"] == (200.0, 150.0, -25.0)
    assert row["rps"] == (1000.0, 1250.0, 25.0)


def test_comparison_prints_a_row_per_system_and_page(capsys):
    from load_tests.report import print_comparison

    run = {"system": "edgeproxy", "page": "120k", "mode": "closed", "cpu_us_per_request": 200.0, "rps": 1000.0}
    print_comparison({"runs": [run]}, {"runs": [dict(run, cpu_us_per_request=100.0)]}, {"edgeproxy": "edgeproxy"}, "old.json")
    out = capsys.readouterr().out
    assert "old.json" in out
    assert " -50.0%" in out and "  +0.0%" in out


# -- edgeproxy's /metrics -------------------------------------------------------

METRICS_BEFORE = """# HELP edgeproxy_requests_total Requests handled
edgeproxy_requests_total{method="GET",personalised="yes",status="200"} 10.0
edgeproxy_stage_duration_seconds_sum{stage="rewrite"} 0.01
edgeproxy_stage_duration_seconds_count{stage="rewrite"} 10.0
"""
METRICS_AFTER = """edgeproxy_requests_total{method="GET",personalised="yes",status="200"} 98.0
edgeproxy_requests_total{method="GET",personalised="no",status="200"} 2.0
edgeproxy_fallbacks_total{reason="budget"} 2.0
edgeproxy_slot_outcomes_total{outcome="applied"} 264.0
edgeproxy_stage_duration_seconds_sum{stage="rewrite"} 0.19
edgeproxy_stage_duration_seconds_count{stage="rewrite"} 100.0
edgeproxy_stage_duration_seconds_bucket{le="+Inf",stage="rewrite"} 100.0
"""


def test_metrics_deltas_show_how_many_requests_were_really_personalised():
    from load_tests import metrics

    s = metrics.summarise(metrics.parse(METRICS_BEFORE), metrics.parse(METRICS_AFTER))
    assert s["requests_by_personalised"] == {"yes": 88.0, "no": 2.0}
    assert s["fallbacks"] == {"budget": 2.0}
    assert s["slot_outcomes"] == {"applied": 264.0}
    assert s["stage_mean_ms"]["rewrite"] == pytest.approx(2.0)
    line = metrics.describe(s)
    assert "personalised no 2.2%, yes 97.8%" in line and "FALLBACKS budget 2" in line


def test_help_renders():
    # Regression: a bare "%" in the --soak help made `python -m load_tests --help` crash.
    from load_tests.runner import build_parser

    assert "--soak" in build_parser().format_help()


def test_bytecodes_counts_the_python_work_of_a_request_per_function(tmp_path):
    """load_tests.bytecodes on two cases: a real edgeproxy under the tracer,
    real requests; the counts land on edgeproxy's own functions, and a page
    load runs more Python than an image request (it is classified, chosen
    for and rewritten)."""
    from load_tests import bytecodes

    root = Path(bytecodes.__file__).resolve().parents[1]
    asset = bytecodes.run_case(root, "asset", count=5, warmup=3, workdir=tmp_path)
    page = bytecodes.run_case(root, "page", count=5, warmup=3, workdir=tmp_path)
    assert 1000 < asset["total"] < page["total"]
    assert any(name.startswith("edgeproxy/pipeline.py:handle") for name in asset["functions"])
    assert any(name.startswith("edgeproxy/classify/") for name in page["functions"])
    assert not any(name.startswith("edgeproxy/classify/") for name in asset["functions"])
