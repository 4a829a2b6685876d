"""The admin port's ``/dashboard`` (issue 10 item 8): the last 15 minutes as
charts, and figures that equal ``/metrics``.

The pure parts (the quantile, the per-second ring) as tables; then a real
proxy driven through personalised pages, cache hits, a fail-open and an
origin timeout, whose ``/dashboard.json`` is compared with its own
``/metrics``; then Chromium reading the rendered page (skipped, with the
reason, where Chromium or playwright is absent), keeping a screenshot in
``test-artifacts/`` (``EDGEPROXY_TEST_ARTIFACTS`` to put it elsewhere).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.dashboard import histogram_quantile
from edgeproxy.record import Metrics, Record
from proxyharness import BROWSER, raw_get, run_origin, run_proxy, write_variant

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("EDGEPROXY_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))


# ---------------------------------------------------------------------------
# histogram_quantile, as Prometheus computes it
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "q, counts, expected",
    [
        (0.5, [0, 10, 0, 0], 1.5),  # linear inside the (1, 2] bucket
        (0.5, [10, 0, 0, 0], 0.5),  # the first bucket starts at 0
        (0.99, [0, 0, 0, 10], 3.0),  # the +Inf bucket gives the last finite bound
        (0.25, [5, 5, 5, 5], 1.0),
        (0.5, [0, 0, 0, 0], None),
    ],
)
def test_histogram_quantile_matches_prometheus(q, counts, expected):
    assert histogram_quantile(q, (1.0, 2.0, 3.0), counts) == expected


def prometheus_quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """An independent port of promql's bucketQuantile over cumulative buckets."""
    cumulative = sorted(cumulative)
    total = cumulative[-1][1]
    if total == 0:
        return None
    rank = q * total
    b = next(i for i, (_, c) in enumerate(cumulative) if c >= rank)
    if b == len(cumulative) - 1:
        return cumulative[-2][0]
    start = 0.0 if b == 0 else cumulative[b - 1][0]
    below = 0.0 if b == 0 else cumulative[b - 1][1]
    return start + (cumulative[b][0] - start) * (rank - below) / (cumulative[b][1] - below)


def test_the_in_flight_gauge_shows_requests_being_handled_at_a_flush_and_zero_as_soon_as_idle():
    m = Metrics()
    gauge = lambda: m.registry.get_sample_value("edgeproxy_in_flight_requests")  # noqa: E731
    m.started()
    m.started()
    assert m.active == 2
    m.flush()  # what a scrape does first
    assert gauge() == 2
    m.finished()
    assert gauge() == 2  # no lock per request: published at the next flush
    m.finished()
    assert m.active == 0 and gauge() == 0  # idle is published at once


def test_the_ring_keeps_the_last_15_minutes_per_second():
    m = Metrics()
    now = 1_000_000.0
    for i in range(3):
        rec = Record(method="GET", path="/")
        rec.status = 200
        rec.add("classify", 0.0002)
        rec.add("origin", 0.004)
        rec.variants["hero"] = "a" if i else None
        m.observe(rec)
    m.history.add(now, m._counts, m._observed)
    m._counts, m._observed = {}, {}
    rec = Record(method="GET", path="/")
    rec.status = 502
    rec.fail_open("origin-UpstreamTimeout")
    m.observe(rec)
    m.history.add(now + 20, m._counts, m._observed)
    series = m.history.series(now=now + 25, step=10)
    assert len(series["t"]) == 90 and series["t"][-1] <= now + 25
    assert sum(r * 10 for r in series["rps"]) == pytest.approx(4)
    assert [x for x in series["origin_errors"] if x is not None] == [0.0, 1.0]  # 0 of 3, then 1 of 1
    assert series["variants"] == {"hero": {"a": 0.6667, "default": 0.3333}}
    # 16 minutes later it has all gone by.
    assert sum(m.history.series(now=now + 16 * 60)["rps"]) == 0


# ---------------------------------------------------------------------------
# A real proxy: /dashboard.json equals /metrics
# ---------------------------------------------------------------------------
PAGE = b'<!doctype html><html><body><section data-edge-slot="hero">Default</section></body></html>'


def origin_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html")

    async def cached(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html", headers={"Cache-Control": "max-age=60"})

    async def no_transform(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html", headers={"Cache-Control": "no-transform"})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/cached", cached)
    app.router.add_get("/no-transform", no_transform)
    app.router.add_get("/slow", slow)
    return app


async def drive(port: int) -> None:
    for _ in range(5):
        assert (await raw_get(port, "/", BROWSER)).status == 200
    for _ in range(3):
        await raw_get(port, "/cached", BROWSER)
    await raw_get(port, "/no-transform", BROWSER)  # fails open: no-transform
    assert (await raw_get(port, "/slow", BROWSER)).status == 504  # an origin error
    await raw_get(port, "/style.css", BROWSER)


async def fetch_text(url: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            return await resp.text()


async def fetch_json(url: str) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            return await resp.json()


def from_metrics(text: str) -> dict:
    """The dashboard's "since start" figures, computed from /metrics alone."""
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def total(name, keep=lambda labels: True):
        return sum(s.value for s in samples if s.name == name and keep(s.labels))

    def quantile(name, q, keep=lambda labels: True):
        buckets: dict[float, float] = {}
        for s in samples:
            if s.name == name + "_bucket" and keep(s.labels):
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
        value = prometheus_quantile(q, list(buckets.items())) if buckets else None
        return None if value is None else round(value * 1000, 3)

    hit = lambda labels: labels["status"].split("+")[0] in ("HIT", "STALE", "COALESCED", "REVALIDATED")
    origin = lambda labels: labels["reason"].startswith("origin-Upstream")
    out = {
        "requests": total("edgeproxy_requests_total"),
        "fail_open": total("edgeproxy_fallbacks_total") - total("edgeproxy_fallbacks_total", origin),
        "origin_errors": total("edgeproxy_upstream_errors_total"),
        "cache_hits": total("edgeproxy_cache_lookups_total", hit),
        "cache_lookups": total("edgeproxy_cache_lookups_total"),
        "in_flight_limit": total("edgeproxy_in_flight_limit"),
        "shed": total("edgeproxy_refused_total", lambda labels: labels["reason"] in ("in_flight", "queue_delay", "connections")),
    }
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        out["total-" + name] = quantile("edgeproxy_request_duration_seconds", q)
        out["added-" + name] = quantile("edgeproxy_added_latency_seconds", q)
    for stage in ("classify", "choose", "origin", "rewrite"):
        out["stage-" + stage] = quantile("edgeproxy_stage_duration_seconds", 0.95, lambda l, s=stage: l["stage"] == s)
    return out


@pytest.fixture
def slots(tmp_path):
    write_variant(tmp_path / "slots", "hero", "big-hero", "<h1>Big</h1>", 'priority = 1\nwhen = { path = "/*" }')
    return tmp_path / "slots"


def proxy_options() -> dict:
    return {"cache_bytes": 1 << 20, "first_byte_timeout": 0.3, "access_log": "off"}


async def test_dashboard_json_equals_metrics(slots):
    async with run_origin(origin_app()) as url, run_proxy(url, slots, **proxy_options()) as proxy:
        await drive(proxy.port)
        admin = f"http://127.0.0.1:{proxy.admin_port}"
        data = await fetch_json(admin + "/dashboard.json")
        expected = from_metrics(await fetch_text(admin + "/metrics"))
    t = data["totals"]
    assert t["requests"] == expected["requests"] == 11
    assert t["origin_errors"] == expected["origin_errors"] == 1
    assert t["fail_open"] == expected["fail_open"] >= 1
    assert (t["cache_hits"], t["cache_lookups"]) == (expected["cache_hits"], expected["cache_lookups"]) and t["cache_hits"] >= 2
    for name in ("p50", "p95", "p99"):
        assert t["total_ms"][name] == expected["total-" + name]
        assert t["added_ms"][name] == expected["added-" + name] is not None
    for stage in ("classify", "choose", "origin", "rewrite"):
        assert t["stage_p95_ms"][stage] == expected["stage-" + stage]
    # The charts: the same requests, second by second.
    s = data["series"]
    assert round(sum(r * s["step_s"] for r in s["rps"])) == 11
    assert set(s["variants"]["hero"]) <= {"big-hero", "default"} and math.isclose(sum(s["variants"]["hero"].values()), 1, abs_tol=0.001)
    assert data["budget_ms"] == 10_000 and data["workers"] == 1 and data["draining"] is False
    # Overload, from the same scrape's gauges and counter.
    assert t["in_flight_limit"] == expected["in_flight_limit"] > 0
    assert t["shed"] == expected["shed"] == 0
    assert t["loop_lag_ms"] >= 0  # a gauge the flusher moves every second: not compared across two fetches


async def test_dashboard_page_is_self_contained(slots):
    async with run_origin(origin_app()) as url, run_proxy(url, slots, **proxy_options()) as proxy:
        html = await fetch_text(f"http://127.0.0.1:{proxy.admin_port}/dashboard")
    assert "/dashboard.json" in html and "<svg" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "an outside asset"
    assert "@import" not in html and "url(" not in html


async def test_metrics_expose_the_budget_workers_and_draining(slots):
    async with run_origin(origin_app()) as url, run_proxy(url, slots, **proxy_options(), budget_ms=12) as proxy:
        text = await fetch_text(f"http://127.0.0.1:{proxy.admin_port}/metrics")
    assert "edgeproxy_latency_budget_seconds 0.012" in text
    assert "edgeproxy_workers 1.0" in text and "edgeproxy_draining 0.0" in text


# ---------------------------------------------------------------------------
# Chromium reads the page
# ---------------------------------------------------------------------------
def _chromium_missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; never `playwright install`)"
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        return f"{CHROMIUM} is absent (apt-get install -y chromium)"
    return None


@pytest.mark.skipif(_chromium_missing() is not None, reason=str(_chromium_missing()))
async def test_chromium_shows_the_numbers_of_metrics(slots):
    from playwright.async_api import async_playwright

    async with run_origin(origin_app()) as url, run_proxy(url, slots, **proxy_options()) as proxy:
        await drive(proxy.port)
        admin = f"http://127.0.0.1:{proxy.admin_port}"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1100})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(admin + "/dashboard")
                await page.wait_for_function("document.getElementById('status').dataset.updated !== undefined", timeout=15_000)
                shown = await page.evaluate(
                    "Object.fromEntries([...document.querySelectorAll('[data-testid]')].map(e => [e.dataset.testid, e.dataset.value]))"
                )
                svgs = await page.locator("main svg").count()
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            finally:
                await browser.close()
        expected = from_metrics(await fetch_text(admin + "/metrics"))
    assert errors == []
    assert svgs == 6
    for key in ("requests", "fail_open", "origin_errors", "cache_hits", "cache_lookups"):
        assert float(shown["total-" + key.replace("_", "-")]) == expected[key], key
    for key in ("total-p50", "total-p95", "total-p99", "added-p50", "added-p95", "added-p99",
                "stage-classify", "stage-choose", "stage-origin", "stage-rewrite"):
        assert (float(shown[key]) if shown[key] else None) == expected[key], key
    assert shown["workers"] == "1" and shown["draining"] == "false"
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
