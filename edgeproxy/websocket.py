"""WebSocket upgrades, relayed to the origin untouched.

A request with ``Upgrade: websocket`` skips the pipeline: the proxy opens the
same WebSocket to the origin (same path, query, sub-protocols and forwarded
headers), accepts the client's handshake with the sub-protocol the origin
chose, and relays every frame both ways (text, binary, ping, pong, close with
its code) until either side closes.  Messages are never inspected.  An origin
that refuses the handshake gives its status to the client (e.g. 403, 404).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from aiohttp import WSMsgType, web

from .headers import forward_request_headers, is_trusted
from .record import Record
from .settings import Settings

log = logging.getLogger("edgeproxy.websocket")

# Handshake headers aiohttp's client and server generate themselves.
_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol", "sec-websocket-accept"}
)


async def tunnel_websocket(request: web.Request, session: aiohttp.ClientSession, settings: Settings, rec: Record) -> web.StreamResponse:
    from .fetch import upstream_host, upstream_url

    if not isinstance(request, web.BaseRequest):  # the traffic port's own layer: a byte tunnel
        from .http.upgrade import relay_websocket

        return await relay_websocket(request, settings, rec)
    rec.cache = "BYPASS"
    peer = request.remote
    trusted = is_trusted(peer, settings.trust_proxy)
    headers = [
        (n, v)
        for n, v in forward_request_headers(
            request.headers.items(),
            peer=peer,
            peer_trusted=trusted,
            scheme="https" if request.secure else "http",
            host=request.headers.get("Host", ""),
            upstream_host=upstream_host(settings),
        )
        if n.lower() not in _HANDSHAKE
    ]
    protocols = tuple(p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip())
    url = upstream_url(settings, request.raw_path)
    # A client handshake that cannot succeed (no Sec-WebSocket-Key, a bad
    # version) is refused before the origin is contacted.  (Bug fixed: the
    # origin's WebSocket was opened, then left open when prepare() failed.)
    if not web.WebSocketResponse().can_prepare(request).ok:
        rec.status = 400
        return web.Response(status=400, text="400 Bad Request: not a valid WebSocket handshake\n")
    try:
        origin = await session.ws_connect(
            url,
            headers=headers,
            protocols=protocols,
            autoclose=False,
            autoping=False,
            max_msg_size=0,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=settings.connect_timeout),
        )
    except aiohttp.WSServerHandshakeError as exc:
        rec.status = exc.status or 502
        return web.Response(status=rec.status, text=f"{rec.status}: the origin refused the WebSocket handshake\n")
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        log.warning("WebSocket to the origin failed: %r", exc)
        rec.status = 502
        return web.Response(status=502, text="502 Bad Gateway: the shop could not be reached\n")

    client = web.WebSocketResponse(
        protocols=(origin.protocol,) if origin.protocol else (), autoclose=False, autoping=False, max_msg_size=0
    )
    try:
        await client.prepare(request)
    except BaseException:
        with contextlib.suppress(Exception):
            await origin.close()
        raise
    rec.status = 101

    async def pump(src, dst) -> None:
        # receive() rather than ``async for``: aiohttp's iterator stops before
        # yielding a CLOSE, which lost the peer's close code.  (Bug fixed: both
        # sides saw 1000 whatever code the other sent.)
        while True:
            msg = await src.receive()
            if msg.type == WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            elif msg.type == WSMsgType.PING:
                await dst.ping(msg.data)
            elif msg.type == WSMsgType.PONG:
                await dst.pong(msg.data)
            elif msg.type == WSMsgType.CLOSE:
                await dst.close(code=msg.data or 1000, message=(msg.extra or "").encode())
                return
            else:  # ERROR / CLOSED
                return

    tasks = [asyncio.ensure_future(pump(client, origin)), asyncio.ensure_future(pump(origin, client))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(Exception):
            await origin.close()
        with contextlib.suppress(Exception):
            await client.close()
    return client
