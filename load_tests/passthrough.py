"""The Python floor: a reverse proxy on uvloop + httptools, nothing else.

    python -m load_tests.passthrough --upstream URL --port P

One ``asyncio.Protocol`` per client connection parses requests with
llhttp (``httptools.HttpRequestParser``); one per origin connection parses
responses (``httptools.HttpResponseParser``) and is kept in a keep-alive
pool.  The request head goes to the origin with hop-by-hop fields stripped
and ``X-Forwarded-*`` added; the response head comes back the same way and
the body moves chunk by chunk from one transport to the other (re-chunked
when the origin did not send a length), with the origin's reading paused
while the client's send buffer is full.  No personalisation, no cache.

If edgeproxy's CPU per request approaches this, the proxy around the
rewrite costs what Python's fastest parts cost; the gap to ``bare-aiohttp``
is aiohttp's per-request objects.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections import deque
from urllib.parse import urlsplit

import httptools

from .origin import run

HOP_BY_HOP = frozenset(
    b"connection keep-alive proxy-authenticate proxy-authorization proxy-connection te trailer transfer-encoding upgrade".split()
)


class Origin(asyncio.Protocol):
    """One origin connection; ``client`` is the connection it answers for."""

    def __init__(self, pool: "Pool") -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunked = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.pool.discard(self)
        if self.client is not None:
            self.client.transport.close()  # mid-response: the client must see it end badly
            self.client = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        out = [b"HTTP/1.1 %d %s\r\n" % (self.parser.get_status_code(), b"OK")]
        length = False
        for name, value in self.headers:
            lower = name.lower()
            if lower in HOP_BY_HOP:
                continue
            length = length or lower == b"content-length"
            out.append(b"%s: %s\r\n" % (name, value))
        self.chunked = not length and self.client.method != b"HEAD"
        if self.chunked:
            out.append(b"transfer-encoding: chunked\r\n")
        out.append(b"\r\n")
        self.headers = []
        self.client.transport.write(b"".join(out))

    def on_body(self, body: bytes) -> None:
        client = self.client.transport
        if self.chunked:
            client.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
        else:
            client.write(body)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        if self.chunked:
            client.transport.write(b"0\r\n\r\n")
        if self.parser.should_keep_alive():
            self.pool.idle.append(self)
        else:
            self.transport.close()
        client.done()


class Pool:
    """Idle origin connections, opened on demand."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: deque[Origin] = deque()

    def discard(self, origin: Origin) -> None:
        if origin in self.idle:
            self.idle.remove(origin)

    async def get(self) -> Origin:
        while self.idle:
            origin = self.idle.pop()
            if not origin.transport.is_closing():
                return origin
        _, origin = await asyncio.get_running_loop().create_connection(lambda: Origin(self), self.host, self.port)
        return origin


class Client(asyncio.Protocol):
    """One client connection; requests are answered one at a time, in order."""

    def __init__(self, pool: Pool, authority: bytes) -> None:
        self.pool = pool
        self.authority = authority
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[tuple[bytes, bytes, bool]] = deque()  # (method, request bytes, keep-alive)
        self.busy = False
        self.method = b""
        self.url = b""
        self.head: list[bytes] = []
        self.body: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")[0].encode()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower == b"host":
            if lower == b"host":
                self.host = value
            return
        self.head.append(b"%s: %s\r\n" % (name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        body = b"".join(self.body)
        head = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method, self.url, self.authority), *self.head]
        head.append(b"x-forwarded-for: %s\r\nx-forwarded-proto: http\r\n" % self.peer)
        if body:
            head.append(b"content-length: %d\r\n" % len(body))
        head.append(b"\r\n")
        self.queue.append((method, b"".join(head) + body, self.parser.should_keep_alive()))
        self.url, self.head, self.body = b"", [], []
        if not self.busy:
            self.next()

    def next(self) -> None:
        if self.queue:
            self.busy = True
            asyncio.ensure_future(self.forward(*self.queue.popleft()))
        else:
            self.busy = False

    async def forward(self, method: bytes, request: bytes, keep_alive: bool) -> None:
        try:
            origin = await self.pool.get()
        except OSError:
            self.transport.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()
            return
        self.method, self.keep_alive = method, keep_alive
        origin.client = self
        origin.transport.write(request)

    def done(self) -> None:
        if self.keep_alive:
            self.next()
        else:
            self.transport.close()


async def serve(upstream: str, host: str, port: int) -> None:
    parts = urlsplit(upstream)
    pool = Pool(parts.hostname or "127.0.0.1", parts.port or 80)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(pool, parts.netloc.encode()), host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="uvloop + httptools pass-through proxy (the Python floor)")
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    run(serve(args.upstream, args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
