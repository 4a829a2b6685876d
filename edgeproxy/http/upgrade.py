"""WebSocket upgrades on the traffic port: the handshake forwarded, then bytes.

The client's handshake goes to the origin with the forwarding headers (its
``Sec-WebSocket-Key``/``-Version``/``-Protocol``/``-Extensions`` untouched, so
the origin's ``Sec-WebSocket-Accept`` answers the client's key).  An origin
that answers ``101`` has its head passed to the client, and from then on the
connection is a byte tunnel both ways: frames, pings, close codes and
extensions are the two ends' business, never inspected.  An origin that
refuses gives its status to the client.  A handshake that cannot succeed
(not a GET, no valid key, a version other than 13, no ``Connection:
Upgrade``) is refused with 400 before the origin is contacted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging

from aiohttp import web

from ..headers import forward_request_headers, is_trusted
from ..record import Record
from ..settings import Settings
from .protocol import Request

log = logging.getLogger("edgeproxy.websocket")

READ_CHUNK = 64 * 1024
# A handshake answer bigger than this is not a WebSocket origin's.
MAX_HEAD = 64 * 1024


class Tunnelled:
    """What the relay returns: the connection was a tunnel and is done."""

    status = 101


TUNNELLED = Tunnelled()


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _refuse(rec: Record, status: int, text: str) -> web.Response:
    rec.status = status
    return web.Response(status=status, text=text)


async def relay_websocket(request: Request, settings: Settings, rec: Record):
    from ..fetch import upstream_host, upstream_url

    rec.cache = "BYPASS"
    h = request.headers
    if (
        not request.upgrade
        or request.method != "GET"
        or not _valid_key(h.get("Sec-WebSocket-Key", ""))
        or h.get("Sec-WebSocket-Version", "").strip() != "13"
    ):
        return _refuse(rec, 400, "400 Bad Request: not a valid WebSocket handshake\n")
    peer = request.remote
    headers = forward_request_headers(
        h.items(),
        peer=peer,
        peer_trusted=is_trusted(peer, settings.trust_proxy),
        scheme="https" if request.secure else "http",
        host=h.get("Host", ""),
        upstream_host=upstream_host(settings),
    )
    url = upstream_url(settings, request.raw_path)
    head = f"GET {url.raw_path_qs} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    try:
        async with asyncio.timeout(settings.connect_timeout):
            reader, writer = await asyncio.open_connection(url.host, url.port, ssl=True if url.scheme == "https" else None, limit=MAX_HEAD)
    except (OSError, TimeoutError) as exc:
        log.warning("WebSocket to the origin failed: %r", exc)
        return _refuse(rec, 502, "502 Bad Gateway: the shop could not be reached\n")
    try:
        writer.write(head.encode("utf-8"))
        try:
            async with asyncio.timeout(settings.first_byte_timeout):
                answer = await reader.readuntil(b"\r\n\r\n")
            status = int(answer.split(b" ", 2)[1])
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
            log.warning("WebSocket handshake with the origin failed: %r", exc)
            return _refuse(rec, 502, "502 Bad Gateway: the shop could not be reached\n")
        if status != 101:
            return _refuse(rec, status, f"{status}: the origin refused the WebSocket handshake\n")
        rec.status = 101
        await _pump(request, answer, reader, writer)
        return TUNNELLED
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _pump(request: Request, answer: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes both ways until either side closes."""
    conn = request._conn
    client_gone = asyncio.get_running_loop().create_future()

    def from_client(data: bytes) -> None:
        if data:
            writer.write(data)
        elif not client_gone.done():
            client_gone.set_result(None)

    conn.write(answer)
    early = conn.attach_tunnel(from_client)
    if early:
        writer.write(early)

    async def to_client() -> None:
        while True:
            data = await reader.read(READ_CHUNK)
            if not data:
                return
            conn.write(data)
            await conn.drain()

    pump = asyncio.ensure_future(to_client())
    try:
        await asyncio.wait([pump, client_gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        pump.cancel()
        with contextlib.suppress(BaseException):
            await pump
