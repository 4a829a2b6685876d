"""Queueing-delay admission (``edgeproxy/http/admission.py``) and the listener.

The rule is tested on injected samples (no clock involved); end to end, the
loop lag is made deterministic by a task that blocks the proxy's own loop
for 60 ms at every turn, far above the 5 ms target, and stopped again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from aiohttp import web

from edgeproxy.errors import SettingsError
from edgeproxy.http.admission import NO_LIMIT, START_LIMIT, InFlightLimit, QueueDelay
from edgeproxy.settings import (
    DEFAULT_BACKLOG, DEFAULT_IN_FLIGHT_LAG_TARGET_MS, DEFAULT_MIN_IN_FLIGHT, DEFAULT_QUEUE_DELAY_INTERVAL_MS, DEFAULT_QUEUE_DELAY_TARGET_MS,
    build_settings,
)
from proxyharness import BROWSER, raw_request, read_response, request_bytes, run_origin, run_proxy
from test_http_hostile import metric

GENEROUS = 10.0


# ---------------------------------------------------------------------------
# The rule, on injected samples: (lag s, at s) -> shedding after it
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "samples, shedding",
    [
        # under the target: never
        ([(0.001, 0.0), (0.004, 0.1), (0.002, 0.2)], [False, False, False]),
        # one slow turn (a GC pause, one big page) is not overload
        ([(0.500, 0.0), (0.001, 0.5)], [False, False]),
        # above the target for a whole interval: shed
        ([(0.020, 0.0), (0.020, 0.05), (0.020, 0.1)], [False, False, True]),
        # above, but broken by one sample under: the interval starts again
        ([(0.020, 0.0), (0.001, 0.05), (0.020, 0.08), (0.020, 0.15), (0.020, 0.19)], [False, False, False, False, True]),
        # shedding stops at the first sample under the target
        ([(0.020, 0.0), (0.020, 0.1), (0.020, 0.2), (0.004, 0.3)], [False, True, True, False]),
    ],
)
def test_shedding_starts_only_when_the_lag_stays_above_target_for_an_interval_and_stops_at_once(samples, shedding):
    rule = QueueDelay(target=0.005, interval=0.1)
    seen = []
    for lag, at in samples:
        rule.observe(lag, at)
        seen.append(rule.shedding)
    assert seen == shedding


# ---------------------------------------------------------------------------
# The adaptive in-flight limit, on injected samples: AIMD on the loop's lag
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "start, samples, values",
    [
        # on time and nothing refused by the limit: it stays (an idle proxy keeps its limit)
        (20, [(0.001, False), (0.004, False)], [20, 20]),
        # on time while the limit refused requests: one more per sample
        (20, [(0.001, True), (0.002, True), (0.0, True)], [21, 22, 23]),
        # late: shrinks in proportion to the overshoot (10 ms against 5: halved) ...
        (20, [(0.010, False)], [10]),
        # ... at most halved per sample, by at least one, never under the floor
        (20, [(0.5, True), (0.5, True), (0.5, True), (0.5, True)], [10, 5, 4, 4]),
        (20, [(0.0051, False)], [19]),
        # the classic saw: back up one by one after a late sample
        (8, [(0.010, True), (0.001, True), (0.001, True)], [4, 5, 6]),
    ],
)
def test_the_in_flight_limit_grows_by_one_when_it_refuses_on_time_and_shrinks_when_the_loop_is_late(start, samples, values):
    limit = InFlightLimit(ceiling=1000, floor=4, lag_target=0.005)
    limit.value = start
    seen = []
    for lag, refused in samples:
        limit.saturated = refused
        limit.observe(lag)
        seen.append(limit.value)
    assert seen == values
    assert not limit.saturated  # each sample starts a new window


@pytest.mark.parametrize(
    "ceiling, floor, lag_target, value",
    [
        (1000, 4, 0.005, START_LIMIT),  # adaptive: starts low, not at the ceiling
        (10, 4, 0.005, 10),  # ... nor above it
        (1000, 4, 0.0, 1000),  # fixed: the cap itself
        (0, 4, 0.0, NO_LIMIT),  # no cap at all
        (2, 4, 0.005, 2),  # the floor never exceeds the ceiling
    ],
)
def test_the_in_flight_limit_starts_at_a_safe_value(ceiling, floor, lag_target, value):
    limit = InFlightLimit(ceiling, floor, lag_target)
    assert limit.value == value
    limit.saturated = True
    limit.observe(0.5)
    assert limit.value == (value if lag_target == 0 else max(min(floor, ceiling), value // 2))


def test_one_probe_feeds_both_rules_and_runs_at_the_shorter_target():
    limit = InFlightLimit(1000, 4, 0.005)
    rule = QueueDelay(target=0.020, interval=0.1, limit=limit)
    assert rule.period == 0.005
    rule.observe(0.010, 0.0)
    assert limit.value == START_LIMIT // 2 and not rule.shedding
    assert rule.take_peak() == 0.010 and rule.take_peak() == 0.0
    assert QueueDelay(0.0, 0.1, limit=InFlightLimit(1000, 4, 0.0)).period == 0.0  # both off: no timer


async def test_a_disabled_rule_runs_no_timer_and_never_sheds():
    rule = QueueDelay(target=0.0, interval=0.1)
    rule.start()
    assert rule._timer is None and not rule.shedding


async def test_the_probe_parks_while_no_connection_is_open_and_the_first_connection_wakes_it(tmp_path):
    # An idle proxy used to wake every 2 ms to sample a lag nobody waited on.
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok", content_type="text/plain")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)

    async def until(condition) -> bool:
        deadline = time.monotonic() + GENEROUS
        while not condition() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return condition()

    async with run_origin(app) as url, run_proxy(url, tmp_path / "slots", queue_delay_target_ms=20, in_flight_lag_target_ms=2) as proxy:
        rule = proxy._traffic.queue_delay
        assert rule.period > 0
        assert await until(lambda: rule._timer is None)  # parked: nothing to serve
        assert rule.lag == 0.0 and not rule.shedding
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await until(lambda: rule._timer is not None)  # the connection woke it
        writer.write(request_bytes("GET", "/", {**BROWSER, "Connection": "keep-alive"}))
        assert (await asyncio.wait_for(read_response(reader), GENEROUS)).status == 200
        assert rule._timer is not None  # sampling while the connection stays open
        writer.close()
        assert await until(lambda: rule._timer is None)  # parked again once it closed
        assert (await raw_request(proxy.port, request_bytes("GET", "/", BROWSER), timeout=GENEROUS)).status == 200


def test_a_stopped_probe_is_not_woken():
    rule = QueueDelay(target=0.005, interval=0.1)
    rule.stop()
    rule.wake()
    assert rule._timer is None


def test_defaults_are_on_and_bounded():
    settings = build_settings({"upstream": "http://127.0.0.1:1"}, env={})
    assert (settings.queue_delay_target_ms, settings.queue_delay_interval_ms, settings.backlog) == (
        DEFAULT_QUEUE_DELAY_TARGET_MS, DEFAULT_QUEUE_DELAY_INTERVAL_MS, DEFAULT_BACKLOG
    ) == (20.0, 100.0, 511)
    assert (settings.in_flight_lag_target_ms, settings.min_in_flight) == (DEFAULT_IN_FLIGHT_LAG_TARGET_MS, DEFAULT_MIN_IN_FLIGHT) == (2.0, 16)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("queue_delay_target_ms", "-1", "expected a number from 0"),
        ("queue_delay_interval_ms", "0", "expected a number from 1"),
        ("backlog", "0", "expected an integer from 1 to 65535"),
        ("backlog", "lots", "expected an integer"),
        ("in_flight_lag_target_ms", "-2", "expected a number from 0"),
        ("min_in_flight", "0", "expected an integer from 1"),
    ],
)
def test_a_bad_admission_setting_names_the_key_and_the_value(key, value, message):
    with pytest.raises(SettingsError) as info:
        build_settings({"upstream": "http://127.0.0.1:1"}, env={f"EDGEPROXY_{key.upper()}": value})
    text = str(info.value)
    assert key in text and value in text and message in text


# ---------------------------------------------------------------------------
# End to end: a late loop gets new requests a fast 503
# ---------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def blocked_loop(every_turn: float):
    """Block the running loop for ``every_turn`` seconds at each turn (the
    proxy shares it): the timer probe then runs at least that late."""
    stop = False

    async def block():
        while not stop:
            time.sleep(every_turn)
            await asyncio.sleep(0)

    task = asyncio.ensure_future(block())
    try:
        yield
    finally:
        stop = True
        await task


@pytest.mark.parametrize("server", ["protocols", "aiohttp"])
async def test_while_the_loop_stays_late_new_requests_get_a_503_and_never_reach_the_origin_and_the_connection_serves_on(tmp_path, server):
    seen = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text="ok", content_type="text/plain")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    async with run_origin(app) as url, run_proxy(
        url, tmp_path / "slots", queue_delay_target_ms=5, queue_delay_interval_ms=50, retry_after=4, traffic_server=server,
    ) as proxy:
        rule = proxy._admission  # the traffic server's probe, or the aiohttp server's
        assert (await raw_request(proxy.port, request_bytes("GET", "/before", BROWSER), timeout=GENEROUS)).status == 200
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            async with blocked_loop(0.06):
                deadline = time.monotonic() + GENEROUS
                while not rule.shedding and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                assert rule.shedding and rule.lag > 0.005
                writer.write(request_bytes("GET", "/shed", {**BROWSER, "Connection": "keep-alive"}))
                resp = await asyncio.wait_for(read_response(reader), GENEROUS)
            assert resp.status == 503 and resp.get("retry-after") == "4" and resp.get("connection") != "close"
            assert "/shed" not in seen
            assert await metric(proxy, "queue_delay") >= 1
            # The loop is on time again: the first probe under target admits,
            # on the same connection (a shed request without a body keeps it).
            deadline = time.monotonic() + GENEROUS
            while rule.shedding and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            writer.write(request_bytes("GET", "/after", {**BROWSER, "Connection": "keep-alive"}))
            assert (await asyncio.wait_for(read_response(reader), GENEROUS)).status == 200
        finally:
            writer.close()
        assert seen == ["/before", "/after"]


async def test_a_burst_of_connections_is_accepted_and_answered(tmp_path):
    # The listener accepts by itself, many per readiness (libuv under uvloop
    # takes one per loop turn): 300 connections at once all get an answer.
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok", content_type="text/plain")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    async with run_origin(app) as url, run_proxy(url, tmp_path / "slots") as proxy:
        answers = await asyncio.gather(*(raw_request(proxy.port, request_bytes("GET", f"/{i}", BROWSER), timeout=GENEROUS) for i in range(300)))
        assert [a.status for a in answers] == [200] * 300


async def test_while_the_loop_is_late_the_in_flight_limit_falls_to_its_floor_and_the_excess_gets_a_503(tmp_path):
    release = asyncio.Event()
    seen = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.path)
        await release.wait()
        return web.Response(text="ok", content_type="text/plain")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    async with run_origin(app) as url, run_proxy(url, tmp_path / "slots", in_flight_lag_target_ms=5, min_in_flight=2, max_in_flight=100) as proxy:
        limit = proxy._traffic.in_flight_limit
        assert limit.value == START_LIMIT
        # An open connection: the probe samples only while there is something to serve.
        _, idle_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        async with blocked_loop(0.02):
            deadline = time.monotonic() + GENEROUS
            while limit.value > 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        idle_writer.close()
        assert limit.value == 2  # the floor; on time again it stays (nothing refused yet)
        held = [asyncio.ensure_future(raw_request(proxy.port, request_bytes("GET", f"/{i}", BROWSER), timeout=GENEROUS)) for i in range(2)]
        deadline = time.monotonic() + GENEROUS
        while len(seen) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        shed = await raw_request(proxy.port, request_bytes("GET", "/third", BROWSER), timeout=GENEROUS)
        assert shed.status == 503 and shed.get("retry-after") == "1"
        release.set()
        assert [r.status for r in await asyncio.gather(*held)] == [200, 200]
        assert seen == ["/0", "/1"] and await metric(proxy, "in_flight") == 1
