"""A real origin and the real proxy on spare ports, for the proxy-core tests.

Not a conftest: plain async context managers and helpers, imported by the
``test_pipeline``/``test_headers``/``test_server``/``test_websocket``/
``test_fidelity_proxy`` modules::

    async with run_origin(app) as origin_url, run_proxy(origin_url, slots) as proxy:
        status, headers, body = await raw_get(proxy.port, "/")

Requests send a desktop browser ``User-Agent``: aiohttp's and curl's are
classified as bots, and bots always get the origin's default content.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import brotli
import zstandard
from aiohttp import web

from edgeproxy.settings import build_settings

BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
BROWSER = {"User-Agent": BROWSER_UA, "Accept": "text/html"}


# ---------------------------------------------------------------------------
# slots/
# ---------------------------------------------------------------------------
def write_variant(slots: Path, slot: str, variant: str, html: str, header: str = "priority = 1") -> Path:
    """A content variant file ``slots/<slot>/<variant>.html`` (everyone, by default)."""
    folder = slots / slot
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{variant}.html"
    path.write_text(f"<!--edge\n{header}\n-->\n{html}\n", encoding="utf-8")
    return path


def write_sort(slots: Path, slot: str, variant: str, keys: list[str]) -> Path:
    folder = slots / slot
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{variant}.toml"
    path.write_text("priority = 1\nsort = [" + ", ".join(f'"{k}"' for k in keys) + "]\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def run_origin(app: web.Application, **kwargs) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1:<spare port>; yields its base URL."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5, **kwargs)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def proxy_settings(upstream: str, slots: Path, **overrides):
    flags = {
        "upstream": upstream,
        "host": "127.0.0.1",
        "port": 0,
        "admin_port": 0,
        "slots": str(slots),
        "cache_bytes": 0,  # the core's behaviour, not the cache's
        "reload_interval": 0.05,
        "drain_timeout": 5,
        "budget_ms": 10_000,  # no budget fallback unless a test asks for it
        # No queueing-delay shedding unless a test asks: here the proxy shares
        # its loop with the test's clients and origin on a busy CI machine.
        "queue_delay_target_ms": 0,
        "in_flight_lag_target_ms": 0,  # and a fixed in-flight cap (max_in_flight)
    }
    flags.update(overrides)
    return build_settings(flags, env={})


@contextlib.asynccontextmanager
async def run_proxy(upstream: str, slots: Path, **overrides):
    """The real ``ProxyServer`` in front of ``upstream``; yields the server."""
    from edgeproxy.server import ProxyServer

    slots.mkdir(parents=True, exist_ok=True)
    server = ProxyServer(proxy_settings(upstream, slots, **overrides))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# ---------------------------------------------------------------------------
# Raw HTTP/1.1 over a socket
# ---------------------------------------------------------------------------
class RawResponse:
    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes, complete: bool) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.complete = complete  # the framing said the body ended cleanly

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


async def read_response(reader: asyncio.StreamReader, *, head_only: bool = False) -> RawResponse:
    """One HTTP/1.1 response, framed by Content-Length, chunked or close."""
    line = await reader.readline()
    if not line:
        raise ConnectionError("no response")
    _version, status, *reason = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    headers: list[tuple[str, str]] = []
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    resp = RawResponse(int(status), reason[0] if reason else "", headers, b"", True)
    code = int(status)
    if head_only or code in (204, 304) or 100 <= code < 200:
        return resp
    te = (resp.get("transfer-encoding") or "").lower()
    if "chunked" in te:
        body = bytearray()
        try:
            while True:
                size_line = await reader.readline()
                if not size_line:
                    raise asyncio.IncompleteReadError(b"", None)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await reader.readline()
                    break
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            resp.complete = False
        resp.body = bytes(body)
    elif resp.get("content-length") is not None:
        length = int(resp.get("content-length"))
        try:
            resp.body = await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            resp.body = getattr(exc, "partial", b"")
            resp.complete = False
    else:
        resp.body = await reader.read()
    return resp


async def raw_request(port: int, data: bytes, *, head_only: bool = False, timeout: float = 10) -> RawResponse:
    """Send ``data`` as-is on a new connection and read one response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(read_response(reader, head_only=head_only), timeout)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def request_bytes(method: str, target: str, headers: dict[str, str] | list[tuple[str, str]] | None = None, body: bytes = b"") -> bytes:
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in pairs}
    if "host" not in names:
        pairs.insert(0, ("Host", "shop.example"))
    if "user-agent" not in names:
        pairs.append(("User-Agent", BROWSER_UA))
    if "connection" not in names:
        pairs.append(("Connection", "close"))
    if body and "content-length" not in names and "transfer-encoding" not in names:
        pairs.append(("Content-Length", str(len(body))))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n"
    return head.encode("latin-1") + body


async def raw_get(port: int, target: str = "/", headers: dict[str, str] | None = None, method: str = "GET") -> RawResponse:
    return await raw_request(port, request_bytes(method, target, headers), head_only=(method == "HEAD"))


# ---------------------------------------------------------------------------
# Content codings
# ---------------------------------------------------------------------------
def encode(coding: str, data: bytes) -> bytes:
    if coding == "gzip":
        return gzip.compress(data)
    if coding == "deflate":
        return zlib.compress(data)
    if coding == "br":
        return brotli.compress(data)
    if coding == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    if coding in ("", "identity"):
        return data
    raise ValueError(coding)


def decode(coding: str | None, data: bytes) -> bytes:
    coding = (coding or "identity").strip().lower()
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "deflate":
        try:
            return zlib.decompress(data)
        except zlib.error:
            return zlib.decompress(data, -15)
    if coding == "br":
        return brotli.decompress(data)
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if coding == "identity":
        return data
    raise ValueError(coding)
