"""Hostile clients against the default traffic port, end to end.

The real proxy in front of a real origin, clients on raw sockets.  Each
case is what one laptop could do to a proxy on the public internet: hold
hundreds of sockets with heads that never end, trickle a head a byte at a
time, park idle keep-alive connections, ask for a large response and never
read it, flood past the connection and in-flight caps; and what a broken
origin could do: send a body after the head of a HEAD response.  None of
them may stop a normal client from being served meanwhile, and every
connection the port closes on its own shows up in ``/metrics``.

Deadlines are configured small (a second or less) and every wait is
bounded generously above them, so the tests do not depend on timing
beyond "well before five seconds".
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time

import pytest
from aiohttp import web

from proxyharness import BROWSER, raw_request, read_response, request_bytes, run_origin, run_proxy

GENEROUS = 10.0  # seconds: any wait for something a deadline of <= 1 s causes


@pytest.fixture
async def origin():
    """``/x`` answers at once; ``/slow`` waits for ``release``; ``/big``
    streams 64 MiB and counts what it managed to send."""
    state = {"big_sent": 0, "release": asyncio.Event(), "seen": 0}

    async def fast(request: web.Request) -> web.Response:
        state["seen"] += 1
        return web.Response(text="ok", content_type="text/plain")

    async def slow(request: web.Request) -> web.Response:
        state["seen"] += 1
        await state["release"].wait()
        return web.Response(text="slow", content_type="text/plain")

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": request.query.get("type", "application/octet-stream")})
        response.content_length = 64 * 1024 * 1024
        await response.prepare(request)
        chunk = b"<p>" + b"z" * (64 * 1024 - 7) + b"</p>"
        for _ in range(1024):
            await response.write(chunk)  # waits while the proxy does not read
            state["big_sent"] += len(chunk)
        return response

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/big", big)
    app.router.add_route("*", "/{tail:.*}", fast)
    async with run_origin(app) as url:
        state["url"] = url
        yield state
        state["release"].set()


async def metric(proxy, reason: str) -> float:
    resp = await raw_request(proxy.admin_port, b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    found = re.search(rb'edgeproxy_refused_total\{reason="' + reason.encode() + rb'"\} ([0-9.e+]+)', resp.body)
    return float(found.group(1)) if found else 0.0


async def served(proxy) -> bool:
    resp = await raw_request(proxy.port, request_bytes("GET", "/x", BROWSER), timeout=GENEROUS)
    return resp.status == 200 and resp.body == b"ok"


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the proxy sends until it closes the connection."""
    data = bytearray()
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            data += chunk
    return bytes(data)


@contextlib.asynccontextmanager
async def connections(port: int, count: int):
    pairs = []
    try:
        for _ in range(count):
            pairs.append(await asyncio.open_connection("127.0.0.1", port))
        yield pairs
    finally:
        for _, writer in pairs:
            writer.close()


# ---------------------------------------------------------------------------
# Heads that never end
# ---------------------------------------------------------------------------
async def test_hundreds_of_unfinished_heads_are_closed_at_the_header_deadline_and_a_normal_client_is_served_meanwhile(origin, tmp_path):
    count = 300
    async with run_proxy(origin["url"], tmp_path / "slots", header_timeout=3) as proxy:
        async with connections(proxy.port, count) as pairs:
            opened = time.monotonic()
            for _, writer in pairs:
                writer.write(b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-Never: ")
            # A normal client, while every hostile socket is still held open.
            assert await served(proxy)
            assert len(proxy._traffic.connections) >= count
            closed = await asyncio.wait_for(asyncio.gather(*(until_closed(r) for r, _ in pairs)), 3 + GENEROUS)
            elapsed = time.monotonic() - opened
        assert all(data.startswith(b"HTTP/1.1 408 ") for data in closed)
        assert elapsed >= 2.5  # not before the deadline
        assert await metric(proxy, "head_timeout") == count
        assert not proxy._traffic.connections
        assert await served(proxy)
    assert origin["seen"] == 2  # the unfinished heads never reached the origin


@pytest.mark.parametrize("first", ["fresh", "after-a-keep-alive-response"])
async def test_a_slowloris_trickling_one_byte_per_interval_is_closed_at_the_deadline_counted_from_its_first_byte(origin, tmp_path, first):
    # One byte every 0.1 s would keep a per-byte timer from ever firing: the
    # deadline is for the whole head.
    async with run_proxy(origin["url"], tmp_path / "slots", header_timeout=1, keepalive_timeout=30) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            if first != "fresh":
                writer.write(request_bytes("GET", "/x", {**BROWSER, "Connection": "keep-alive"}))
                assert (await asyncio.wait_for(read_response(reader), GENEROUS)).status == 200
            head = b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-Slow: " + b"a" * 10_000

            async def trickle():
                for byte in head:
                    writer.write(bytes([byte]))
                    await asyncio.sleep(0.1)

            started = time.monotonic()
            dripping = asyncio.ensure_future(trickle())
            try:
                data = await asyncio.wait_for(until_closed(reader), GENEROUS)
            finally:
                dripping.cancel()
            elapsed = time.monotonic() - started
        finally:
            writer.close()
        assert data.startswith(b"HTTP/1.1 408 ")
        assert 0.8 <= elapsed < GENEROUS
        assert await metric(proxy, "head_timeout") == 1


async def test_idle_keep_alive_connections_are_closed_and_a_normal_client_is_served(origin, tmp_path):
    async with run_proxy(origin["url"], tmp_path / "slots", keepalive_timeout=1) as proxy:
        async with connections(proxy.port, 100) as pairs:
            for _, writer in pairs:
                writer.write(request_bytes("GET", "/x", {**BROWSER, "Connection": "keep-alive"}))
            answers = await asyncio.gather(*(asyncio.wait_for(read_response(r), GENEROUS) for r, _ in pairs))
            assert all(a.status == 200 for a in answers)
            assert await served(proxy)  # while all of them idle
            rests = await asyncio.wait_for(asyncio.gather(*(until_closed(r) for r, _ in pairs)), GENEROUS)
        assert rests == [b""] * 100  # closed quietly, between requests
        assert not proxy._traffic.connections


# ---------------------------------------------------------------------------
# A client that never reads
# ---------------------------------------------------------------------------
def proxy_write_buffer(proxy) -> int:
    return sum(c.transport.get_write_buffer_size() for c in proxy._traffic.connections if c.transport is not None)


@pytest.mark.parametrize("kind", ["application/octet-stream", "text/html"])
async def test_a_client_that_never_reads_costs_bounded_memory_and_does_not_block_others(origin, tmp_path, kind):
    async with run_proxy(origin["url"], tmp_path / "slots", send_timeout=30) as proxy:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", proxy.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            writer.write(request_bytes("GET", f"/big?type={kind}", BROWSER))
            # Until the origin's sends stall (the proxy stopped reading it).
            last, still = -1, 0
            deadline = time.monotonic() + GENEROUS
            while still < 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                still = still + 1 if origin["big_sent"] == last else 0
                last = origin["big_sent"]
            assert still >= 5, "the origin kept sending to a client that reads nothing"
            # Held: the proxy's buffers, the origin's socket and the
            # rewriter's window; nowhere near the 64 MiB asked for.
            assert origin["big_sent"] < 16 * 1024 * 1024
            assert proxy_write_buffer(proxy) < 4 * 1024 * 1024
            for _ in range(5):
                assert await served(proxy)
        finally:
            writer.close()


async def test_a_client_that_never_reads_is_cut_off_at_the_send_deadline_and_its_slot_freed(origin, tmp_path):
    async with run_proxy(origin["url"], tmp_path / "slots", send_timeout=1, max_in_flight=1) as proxy:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", proxy.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            writer.write(request_bytes("GET", "/big", BROWSER))
            # The only in-flight slot is held by the stuck response ...
            for _ in range(100):
                await asyncio.sleep(0.05)
                if origin["big_sent"]:
                    break
            shed = await raw_request(proxy.port, request_bytes("GET", "/x", BROWSER))
            assert shed.status == 503
            # ... until the send deadline aborts it.
            deadline = time.monotonic() + GENEROUS
            while proxy._traffic.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert proxy._traffic.in_flight == 0
            assert await served(proxy)
            assert await metric(proxy, "send_timeout") == 1
        finally:
            writer.close()


# ---------------------------------------------------------------------------
# Caps: a fast 503 with Retry-After
# ---------------------------------------------------------------------------
async def test_past_the_connection_cap_each_new_connection_gets_a_fast_503_with_retry_after(origin, tmp_path):
    async with run_proxy(origin["url"], tmp_path / "slots", max_connections=50, retry_after=3) as proxy:
        async with connections(proxy.port, 50):
            await asyncio.sleep(0.1)

            async def over():
                started = time.monotonic()
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                try:
                    resp = await asyncio.wait_for(read_response(reader), GENEROUS)
                finally:
                    writer.close()
                return resp, time.monotonic() - started

            results = await asyncio.gather(*(over() for _ in range(30)))
            assert all(resp.status == 503 and resp.get("retry-after") == "3" for resp, _ in results)
            assert max(took for _, took in results) < 2  # not a queue, not a deadline
            assert await metric(proxy, "connections") == 30
            assert len(proxy._traffic.connections) == 50
        for _ in range(100):  # the held ones go, and there is room again
            if not proxy._traffic.connections:
                break
            await asyncio.sleep(0.05)
        assert await served(proxy)
    assert origin["seen"] == 1


async def test_over_the_connection_cap_the_503_follows_the_request_head_and_the_close_is_graceful(origin, tmp_path):
    # Bug fixed: the 503 was written as soon as the connection was accepted
    # and the socket closed, so the request arriving after it met a closed
    # socket, and the client could read a reset instead of the 503.  Now:
    # nothing before the head, the 503 after it, then a half-close (FIN)
    # while the proxy keeps reading and dropping what the client still
    # sends (nginx's lingering close), so the client's writes never fail.
    async with run_proxy(origin["url"], tmp_path / "slots", max_connections=3, retry_after=5) as proxy:
        async with connections(proxy.port, 3):
            await asyncio.sleep(0.1)
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            try:
                with pytest.raises(asyncio.TimeoutError):  # nothing is written before the request
                    await asyncio.wait_for(reader.read(1), 0.3)
                # A head with a large body behind it, as an upload would send.
                writer.write(request_bytes("POST", "/x", {**BROWSER, "Content-Length": str(4 << 20)}) + b"b" * 65536)
                await writer.drain()
                resp = await asyncio.wait_for(read_response(reader), GENEROUS)
                assert resp.status == 503 and resp.get("retry-after") == "5" and resp.get("connection") == "close"
                assert await asyncio.wait_for(reader.read(), GENEROUS) == b""  # then EOF: the proxy half-closed
                for _ in range(16):  # the rest of the body is read and dropped, not answered with a reset
                    writer.write(b"b" * 65536)
                    await asyncio.wait_for(writer.drain(), GENEROUS)
            finally:
                writer.close()
            assert await metric(proxy, "connections") == 1
    assert origin["seen"] == 0


async def test_a_client_that_sends_no_head_over_the_connection_cap_still_gets_its_503_soon(origin, tmp_path):
    async with run_proxy(origin["url"], tmp_path / "slots", max_connections=1) as proxy:
        async with connections(proxy.port, 1):
            await asyncio.sleep(0.1)
            started = time.monotonic()
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            try:
                data = await asyncio.wait_for(until_closed(reader), GENEROUS)
            finally:
                writer.close()
        assert data.startswith(b"HTTP/1.1 503 ") and time.monotonic() - started < 3  # REFUSE_HEAD_TIMEOUT, not the header deadline
        deadline = time.monotonic() + GENEROUS
        while proxy._traffic.lingering and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert proxy._traffic.lingering == 0  # every refused connection is gone once its client closed


async def test_past_the_in_flight_cap_a_request_without_a_body_gets_its_503_and_keeps_its_connection(origin, tmp_path):
    # No reconnect per shed request (as nginx's limit_req): the same
    # connection is answered 503 twice, then 200 once there is room.
    async with run_proxy(origin["url"], tmp_path / "slots", max_in_flight=1, retry_after=2) as proxy:
        held = asyncio.ensure_future(raw_request(proxy.port, request_bytes("GET", "/slow", BROWSER), timeout=GENEROUS))
        deadline = time.monotonic() + GENEROUS
        while origin["seen"] < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            for _ in range(2):
                writer.write(request_bytes("GET", "/x", {**BROWSER, "Connection": "keep-alive"}))
                shed = await asyncio.wait_for(read_response(reader), GENEROUS)
                assert shed.status == 503 and shed.get("retry-after") == "2" and shed.get("connection") is None
            origin["release"].set()
            assert (await held).status == 200
            writer.write(request_bytes("GET", "/x", {**BROWSER, "Connection": "keep-alive"}))
            assert (await asyncio.wait_for(read_response(reader), GENEROUS)).status == 200
        finally:
            writer.close()
        assert await metric(proxy, "in_flight") == 2
    assert origin["seen"] == 2


async def test_past_the_in_flight_cap_a_head_request_or_one_with_a_body_is_shed_with_a_close(origin, tmp_path):
    async with run_proxy(origin["url"], tmp_path / "slots", max_in_flight=1) as proxy:
        held = asyncio.ensure_future(raw_request(proxy.port, request_bytes("GET", "/slow", BROWSER), timeout=GENEROUS))
        deadline = time.monotonic() + GENEROUS
        while origin["seen"] < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for raw in (request_bytes("HEAD", "/x", {**BROWSER, "Connection": "keep-alive"}),
                    request_bytes("POST", "/x", {**BROWSER, "Connection": "keep-alive"}, b"abc")):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            try:
                writer.write(raw)
                data = await asyncio.wait_for(until_closed(reader), GENEROUS)  # answered, then EOF
            finally:
                writer.close()
            assert data.startswith(b"HTTP/1.1 503 ") and b"\r\nConnection: close\r\n" in data
        origin["release"].set()
        assert (await held).status == 200


async def test_past_the_in_flight_cap_requests_get_a_fast_503_and_never_reach_the_origin(origin, tmp_path):
    async with run_proxy(origin["url"], tmp_path / "slots", max_in_flight=5, retry_after=2) as proxy:
        held = [asyncio.ensure_future(raw_request(proxy.port, request_bytes("GET", "/slow", BROWSER), timeout=GENEROUS)) for _ in range(5)]
        deadline = time.monotonic() + GENEROUS
        while origin["seen"] < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        started = time.monotonic()
        shed = await asyncio.gather(*(raw_request(proxy.port, request_bytes("GET", "/x", BROWSER)) for _ in range(40)))
        took = time.monotonic() - started
        assert all(r.status == 503 and r.get("retry-after") == "2" for r in shed)
        assert took < 3  # answered, not queued behind the slow ones
        assert origin["seen"] == 5
        origin["release"].set()
        assert [r.status for r in await asyncio.gather(*held)] == [200] * 5
        assert await served(proxy)
        assert await metric(proxy, "in_flight") == 40


async def test_a_burst_arriving_all_at_once_cannot_overrun_the_in_flight_cap(origin, tmp_path):
    # Forty heads read in the same loop turn: the cap holds for a burst, not
    # only for requests that arrive one after another.
    async with run_proxy(origin["url"], tmp_path / "slots", max_in_flight=5) as proxy:
        async with connections(proxy.port, 40) as pairs:
            await asyncio.sleep(0.1)
            for _, writer in pairs:
                writer.write(request_bytes("GET", "/slow", BROWSER))
            await asyncio.sleep(0.5)
            assert origin["seen"] == 5
            assert proxy._traffic.in_flight == 5
            origin["release"].set()
            answers = await asyncio.gather(*(asyncio.wait_for(read_response(r), GENEROUS) for r, _ in pairs))
        assert sorted(a.status for a in answers) == [200] * 5 + [503] * 35
        deadline = time.monotonic() + GENEROUS
        while proxy._traffic.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert proxy._traffic.in_flight == 0  # every slot given back
        assert await served(proxy)


# ---------------------------------------------------------------------------
# A broken origin: a body after a HEAD response's head
# ---------------------------------------------------------------------------
async def test_head_to_an_origin_that_sends_a_body_gives_the_headers_and_drops_that_origin_connection(tmp_path):
    connections_seen = 0
    requests_seen: list[bytes] = []

    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections_seen
        connections_seen += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                requests_seen.append(head.split(b" ", 1)[0])
                # The same answer whatever the method: a HEAD gets a body too.
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nX-Origin: yes\r\n\r\nsmuggled body")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(broken, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with run_proxy(f"http://127.0.0.1:{port}", tmp_path / "slots") as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            try:
                writer.write(request_bytes("HEAD", "/x", {**BROWSER, "Connection": "keep-alive"}))
                head = await asyncio.wait_for(read_response(reader, head_only=True), GENEROUS)
                writer.write(request_bytes("GET", "/x", {**BROWSER, "Connection": "close"}))
                after = await asyncio.wait_for(read_response(reader), GENEROUS)
            finally:
                writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert head.status == 200 and head.get("x-origin") == "yes" and head.get("content-length") == "13"
    assert after.status == 200 and after.body == b"smuggled body"  # a real response, not the HEAD's leftovers
    assert requests_seen == [b"HEAD", b"GET"]
    assert connections_seen == 2  # the HEAD's origin connection was not reused
