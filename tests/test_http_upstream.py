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
