"""The origin side of the traffic path (edgeproxy/http/upstream.py), against
raw socket origins that misbehave on purpose.

Connections are reused; a pooled connection the origin closed is retried
once; a HEAD answer followed by a body reaches the client as headers and the
origin connection is dropped; framing the proxy will not guess at is a 502;
the former aiohttp client stays selectable.
"""

from __future__ import annotations

import asyncio

import pytest

from proxyharness import raw_request, request_bytes, run_proxy


class RawOrigin:
    """An origin answering each request with ``answer(request_head)`` bytes;
    counts connections and requests."""

    def __init__(self, answer, *, close_after: bool = False) -> None:
        self.answer = answer
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                writer.write(self.answer(head))
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b"hello") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def test_five_sequential_requests_use_one_origin_connection(tmp_path):
    origin = RawOrigin(lambda head: ok())
    async with origin as url, run_proxy(url, tmp_path / "slots") as proxy:
        for _ in range(5):
            resp = await raw_request(proxy.port, request_bytes("GET", "/a.txt"))
            assert resp.body == b"hello"
    assert len(origin.requests) == 5
    assert origin.connections == 1


async def test_a_pooled_connection_the_origin_closed_is_retried_on_a_fresh_one(tmp_path):
    # The origin closes after every answer, without saying so: the pooled
    # connection is dead when the next request is sent on it.
    origin = RawOrigin(lambda head: ok(), close_after=True)
    async with origin as url, run_proxy(url, tmp_path / "slots") as proxy:
        for _ in range(3):
            resp = await raw_request(proxy.port, request_bytes("GET", "/a.txt"))
            assert resp.status == 200 and resp.body == b"hello"
            await asyncio.sleep(0.05)
    assert len(origin.requests) == 3


async def test_head_to_an_origin_that_sends_a_body_gives_the_headers_and_drops_the_origin_connection(tmp_path):
    origin = RawOrigin(lambda head: ok(b"a body a HEAD must not have"))
    async with origin as url, run_proxy(url, tmp_path / "slots") as proxy:
        head = await raw_request(proxy.port, request_bytes("HEAD", "/a.txt"), head_only=True)
        assert head.status == 200
        assert head.get("content-length") == str(len(b"a body a HEAD must not have"))
        after = await raw_request(proxy.port, request_bytes("GET", "/a.txt"))
    assert after.status == 200 and after.body == b"a body a HEAD must not have"
    assert origin.connections == 2  # the HEAD's connection was not reused


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=["cl-and-te", "duplicate-cl", "head-too-large", "garbage"],
)
async def test_an_origin_response_with_ambiguous_framing_is_a_502(tmp_path, answer):
    async with RawOrigin(lambda head: answer) as url, run_proxy(url, tmp_path / "slots") as proxy:
        resp = await raw_request(proxy.port, request_bytes("GET", "/a.txt"))
    assert resp.status == 502


async def test_a_bad_chunk_size_mid_body_aborts_the_client_response(tmp_path):
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
    async with RawOrigin(lambda head: answer) as url, run_proxy(url, tmp_path / "slots") as proxy:
        resp = await raw_request(proxy.port, request_bytes("GET", "/a.bin"))
    assert resp.status == 200 and not resp.complete


async def test_a_chunked_request_body_reaches_the_origin_chunked(tmp_path):
    seen = []

    async def serve(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        body = await reader.readuntil(b"0\r\n\r\n")
        seen.append(body)
        writer.write(ok())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with run_proxy(url, tmp_path / "slots") as proxy:
            raw = request_bytes("POST", "/f", [("Transfer-Encoding", "chunked")]) + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            resp = await raw_request(proxy.port, raw)
    finally:
        server.close()
    assert resp.status == 200
    assert b"transfer-encoding: chunked" in seen[0].lower()
    assert dechunk(seen[1]) == b"abcde"


def dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2 :]


async def test_the_aiohttp_upstream_client_is_still_selectable(tmp_path):
    origin = RawOrigin(lambda head: ok())
    async with origin as url, run_proxy(url, tmp_path / "slots", upstream_client="aiohttp") as proxy:
        resp = await raw_request(proxy.port, request_bytes("GET", "/a.txt"))
    assert resp.status == 200 and resp.body == b"hello"


def _mangled_answer(seed: int) -> bytes:
    import random

    rng = random.Random(seed)
    base = bytearray(
        rng.choice([
            ok(b"hello world"),
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + ok(b"<p>hi</p>"),
            b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
        ])
    )
    for _ in range(rng.randint(1, 5)):
        if not base:
            break
        op = rng.randrange(4)
        at = rng.randrange(len(base))
        if op == 0:
            base[at] = rng.randrange(256)
        elif op == 1:
            base[at:at] = rng.choice([b"\r\n", b"\n", b" ", b"\x00", b"Content-Length: 7\r\n", b"fffffff\r\n"])
        elif op == 2:
            del base[at : at + rng.randint(1, 15)]
        else:
            base = base[:at]
    return bytes(base)


async def test_mangled_origin_answers_end_every_client_response_and_the_pool_keeps_working(tmp_path):
    seeds = iter(range(10_000))
    origin = RawOrigin(lambda head: _mangled_answer(next(seeds)), close_after=True)
    async with origin as url, run_proxy(url, tmp_path / "slots", first_byte_timeout=1, idle_timeout=1) as proxy:

        async def one() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            try:
                writer.write(request_bytes("GET", "/a.txt"))
                while await asyncio.wait_for(reader.read(65536), 10):
                    pass  # a response (or a 502/504, or an aborted body), then EOF
            finally:
                writer.close()

        await asyncio.gather(*(one() for _ in range(80)))
        origin.answer = lambda head: ok()
        resp = await raw_request(proxy.port, request_bytes("GET", "/a.txt"))
        assert resp.status == 200 and resp.body == b"hello"
        assert proxy.state.origin._busy == 0


async def test_upstream_connections_bounds_connections_in_use_until_their_bodies_end(tmp_path):
    connections = 0

    async def serve(reader, writer):
        nonlocal connections
        connections += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 10\r\n\r\nhello")
                await writer.drain()
                await asyncio.sleep(0.3)  # the body is still streaming
                writer.write(b"world")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with run_proxy(url, tmp_path / "slots", upstream_connections=1) as proxy:
            first, second = await asyncio.gather(*(raw_request(proxy.port, request_bytes("GET", "/b.bin")) for _ in range(2)))
    finally:
        server.close()
    assert first.body == second.body == b"helloworld"
    assert connections == 1  # the second request waited for the first body, then reused its connection


async def test_an_origin_response_dropped_without_release_gives_back_its_connection_and_slot():
    import gc

    from yarl import URL

    from edgeproxy.http.upstream import OriginPool
    from edgeproxy.settings import build_settings

    body = b"x" * 100_000
    origin = RawOrigin(lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body) * 2, body))  # half a body
    async with origin as url:
        pool = OriginPool(limit=1)
        settings = build_settings({"upstream": url}, env={})
        upstream = await pool.fetch(settings, method="GET", url=URL(url + "/x"), headers=[("Host", "a")])
        assert pool._busy == 1
        del upstream
        gc.collect()
        await asyncio.sleep(0.05)
        assert pool._busy == 0  # the next request is not stuck behind it
        await pool.close()


class DrippingOrigin(RawOrigin):
    """Answers with ``parts`` written one after another, ``gap`` seconds
    apart: a Content-Length body arriving in pieces after its head."""

    def __init__(self, parts: list[bytes], gap: float = 0.02) -> None:
        super().__init__(lambda head: b"")
        self.parts = parts
        self.gap = gap

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                for part in self.parts:
                    writer.write(part)
                    await writer.drain()
                    await asyncio.sleep(self.gap)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


BODY = bytes(range(256)) * 400  # 100 KB, every byte value


@pytest.mark.parametrize("cut", [0, 1, 5000, len(BODY) - 1], ids=["head-alone", "one-byte", "some", "all-but-one"])
async def test_a_content_length_body_in_pieces_arrives_whole_and_the_connection_is_reused(tmp_path, cut):
    """After the head, a Content-Length body's bytes bypass the parser (no
    second copy): however it is cut, the client gets every byte, and the
    next response on the same origin connection is read by a fresh parser."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % len(BODY)
    rest = BODY[cut:]
    parts = [head + BODY[:cut], *[rest[i:i + 30000] for i in range(0, len(rest), 30000)]]
    origin = DrippingOrigin(parts)
    async with origin as url, run_proxy(url, tmp_path / "slots") as proxy:
        for _ in range(3):
            resp = await raw_request(proxy.port, request_bytes("GET", "/blob.bin"))
            assert resp.status == 200 and resp.body == BODY
    assert origin.connections == 1 and len(origin.requests) == 3


async def test_bytes_after_a_content_length_body_are_not_read_as_the_next_response(tmp_path):
    """An origin that sends more than its Content-Length: the client gets the
    declared body, and that connection is not reused (a fresh one serves the
    next request, which gets its own answer)."""
    body = b"x" * 50000
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nforged!"
    origin = DrippingOrigin([head + body[:100], body[100:] + smuggled])
    async with origin as url, run_proxy(url, tmp_path / "slots") as proxy:
        first = await raw_request(proxy.port, request_bytes("GET", "/a.txt"))
        assert first.status == 200 and first.body == body
        await asyncio.sleep(0.05)
        second = await raw_request(proxy.port, request_bytes("GET", "/b.txt"))
        assert second.status == 200 and second.body == body
    assert origin.connections == 2
