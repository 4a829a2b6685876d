"""The benchmark's origin: pre-rendered storefront pages over HTTP/1.1 keep-alive.

    python -m load_tests.origin --port P [--stream-delay 0.05]

It shares a CPU with the proxy under test, so it must cost next to nothing:
every response (head and body, identity and gzip) is rendered once at start
and written with one ``transport.write``; the request parser only finds the
end of the head, the path and ``Accept-Encoding``.

Endpoints (``NAME`` is a key of :data:`load_tests.pages.PAGE_SIZES`):

``/listing/NAME/private``  the page with ``Cache-Control: private, no-store``
``/listing/NAME/public``   the page with ``Cache-Control: public, max-age=60``
``/stream``                the 60 KB page, uncacheable, chunked: everything up
                           to the hero slot at once, the rest after
                           ``--stream-delay`` seconds (a slow backend render)
``/blob/MB``               MB mebibytes of ``application/octet-stream``,
                           written under flow control (for the proxies'
                           memory with large non-HTML bodies)
``/healthz``               ``ok``

Every page carries ``Vary: Accept-Encoding`` and is sent gzip-encoded when the
request's ``Accept-Encoding`` names gzip, identity otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import signal
from email.utils import formatdate

from .pages import PAGE_SIZES, hero_offset, make_page

DEFAULT_STREAM_DELAY = 0.05
MAX_HEAD = 64 * 1024
BLOB_CHUNK = 256 * 1024
MAX_BLOB_MB = 4096


def _head(status: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


class Origin:
    """All responses, pre-rendered.  ``Date`` is appended per response (it is
    refreshed once a second by the serving loop)."""

    def __init__(self, stream_delay: float = DEFAULT_STREAM_DELAY) -> None:
        self.stream_delay = stream_delay
        self.date = b""
        self.refresh_date()
        # path -> (identity response without Date/CRLF, gzip response …)
        self.routes: dict[bytes, tuple[tuple[bytes, bytes], tuple[bytes, bytes]]] = {}
        for name, size in PAGE_SIZES.items():
            page = make_page(size)
            gz = gzip.compress(page, 6, mtime=0)
            etag = f'"{name}-{len(page)}"'
            for kind, cc in (("private", "private, no-store"), ("public", "public, max-age=60")):
                base = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", cc), ("Vary", "Accept-Encoding")]
                if kind == "public":
                    base.append(("ETag", etag))
                ident = _head("200 OK", base + [("Content-Length", str(len(page)))])
                zipped = _head("200 OK", base + [("Content-Encoding", "gzip"), ("Content-Length", str(len(gz)))])
                self.routes[f"/listing/{name}/{kind}".encode()] = ((ident, page), (zipped, gz))
            # The same page, uncacheable, with its markers renamed (same length):
            # what the proxy costs when there is nothing to rewrite.
            plain = page.replace(b"data-edge-slot", b"data-edge-slox")
            plain_gz = gzip.compress(plain, 6, mtime=0)
            base = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "private, no-store"), ("Vary", "Accept-Encoding")]
            self.routes[f"/listing/{name}/nomarkers".encode()] = (
                (_head("200 OK", base + [("Content-Length", str(len(plain)))]), plain),
                (_head("200 OK", base + [("Content-Encoding", "gzip"), ("Content-Length", str(len(plain_gz)))]), plain_gz),
            )
        self.routes[b"/healthz"] = ((_head("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")]), b"ok"),) * 2
        self.not_found = (_head("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")]), b"not found")
        page = make_page(PAGE_SIZES["60k"])
        cut = hero_offset(page)
        self.stream_parts = (page[:cut], page[cut:])
        self.blob_chunk = bytes(range(256)) * (BLOB_CHUNK // 256)
        self.stream_head = _head(
            "200 OK",
            [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-cache"), ("Transfer-Encoding", "chunked")],
        )

    def refresh_date(self) -> None:
        self.date = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class OriginProtocol(asyncio.Protocol):
    """One keep-alive connection.  Requests are answered in order; a
    pipelined request waits while ``/stream`` is still sending."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.buf = b""
        self.busy = False
        self.transport: asyncio.Transport | None = None
        self.blob_left = 0  # bytes of /blob still to write
        self.blob_close = False
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._write_blob()

    def _write_blob(self) -> None:
        """Write /blob chunks until the transport asks us to pause."""
        chunk = self.origin.blob_chunk
        while self.blob_left and not self.paused and self.transport is not None:
            part = chunk if self.blob_left >= len(chunk) else chunk[: self.blob_left]
            self.blob_left -= len(part)
            self.transport.write(part)
        if not self.blob_left and self.busy and self.transport is not None:
            self.busy = False
            if self.blob_close:
                self.transport.close()
            else:
                self.process()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.process()

    def process(self) -> None:
        while not self.busy and self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.transport.close()
                return
            head = self.buf[:end]
            rest = self.buf[end + 4 :]
            lower = head.lower()
            # Bodies are not expected (GET); skip one if announced.
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                n = int(lower[i + 17 : _line_end(lower, i + 2)])
                if len(rest) < n:
                    return
                rest = rest[n:]
            self.buf = rest
            self.respond(head, lower)

    def respond(self, head: bytes, lower: bytes) -> None:
        line_end = head.find(b"\r\n")
        request_line = head[: line_end if line_end >= 0 else len(head)]
        parts = request_line.split(b" ")
        target = parts[1] if len(parts) >= 2 else b"/"
        path = target.split(b"?", 1)[0]
        close = b"\r\nconnection: close" in lower or request_line.endswith(b"HTTP/1.0")
        transport = self.transport
        assert transport is not None
        date = self.origin.date if not close else b"Connection: close\r\n" + self.origin.date
        if path == b"/stream":
            self.busy = True
            first, rest = self.origin.stream_parts
            transport.write(self.origin.stream_head + date + _chunk(first))
            asyncio.get_running_loop().call_later(self.origin.stream_delay, self._finish_stream, rest, close)
            return
        if path.startswith(b"/blob/"):
            try:
                size = min(int(path[6:]), MAX_BLOB_MB) * 1024 * 1024
            except ValueError:
                size = 0
            self.busy = True
            self.blob_left = size
            self.blob_close = close
            transport.write(
                _head("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]) + date
            )
            self._write_blob()
            return
        route = self.origin.routes.get(path)
        if route is None:
            response_head, body = self.origin.not_found
        else:
            i = lower.find(b"\r\naccept-encoding:")
            wants_gzip = i >= 0 and b"gzip" in lower[i : _line_end(lower, i + 2)]
            response_head, body = route[1] if wants_gzip else route[0]
        transport.write(response_head + date + body)
        if close:
            transport.close()

    def _finish_stream(self, rest: bytes, close: bool) -> None:
        self.busy = False
        if self.transport is None:
            return
        self.transport.write(_chunk(rest) + b"0\r\n\r\n")
        if close:
            self.transport.close()
            return
        self.process()


def _line_end(data: bytes, start: int) -> int:
    end = data.find(b"\r\n", start)
    return len(data) if end < 0 else end


async def serve(host: str, port: int, stream_delay: float) -> None:
    loop = asyncio.get_running_loop()
    origin = Origin(stream_delay)
    server = await loop.create_server(lambda: OriginProtocol(origin), host, port, backlog=1024)

    def tick() -> None:
        origin.refresh_date()
        loop.call_later(1.0, tick)

    tick()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def run(coro) -> None:
    """Run ``coro`` on uvloop when installed (as edgeproxy does), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="benchmark origin (pre-rendered storefront pages)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--stream-delay", type=float, default=DEFAULT_STREAM_DELAY, help="seconds before /stream sends its body")
    args = ap.parse_args(argv)
    run(serve(args.host, args.port, args.stream_delay))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
