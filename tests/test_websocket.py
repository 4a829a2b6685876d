"""WebSocket upgrades tunnelled to the origin untouched (issue 2 §3)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from proxyharness import BROWSER_UA, run_origin, run_proxy


class Origin:
    def __init__(self) -> None:
        self.handshakes: list[dict] = []
        self.closed_with: asyncio.Future | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ws", self.ws)
        app.router.add_get("/ws-v2", self.ws_v2)
        app.router.add_get("/forbidden", self.forbidden)
        return app

    async def forbidden(self, request):
        return web.Response(status=403, text="no")

    async def ws_v2(self, request):
        return await self.ws(request, protocols=("v2.chat",))

    async def ws(self, request, protocols=("v1.chat", "v2.chat")):
        self.handshakes.append({"path": request.path_qs, "headers": dict(request.headers)})
        ws = web.WebSocketResponse(protocols=protocols)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                if msg.data == "close-me":
                    await ws.close(code=4001, message=b"bye")
                    break
                await ws.send_str("echo:" + msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(b"echo:" + msg.data)
        if self.closed_with is not None and not self.closed_with.done():
            self.closed_with.set_result(ws.close_code)
        self.handshakes[-1]["closed"] = True
        return ws


@pytest.fixture
async def origin():
    o = Origin()
    async with run_origin(o.app()) as url:
        o.url = url
        yield o


@pytest.fixture
async def proxy(origin, tmp_path):
    async with run_proxy(origin.url, tmp_path / "slots") as server:
        yield server


@pytest.fixture
async def session():
    async with aiohttp.ClientSession(headers={"User-Agent": BROWSER_UA}) as s:
        yield s


async def test_text_and_binary_messages_are_echoed_through_the_proxy(proxy, session):
    async with session.ws_connect(f"http://127.0.0.1:{proxy.port}/ws?room=1") as ws:
        await ws.send_str("héllo")
        assert (await ws.receive(timeout=5)).data == "echo:héllo"
        payload = bytes(range(256)) * 300  # bigger than one frame buffer
        await ws.send_bytes(payload)
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.BINARY
        assert msg.data == b"echo:" + payload


async def test_the_origin_sees_the_path_query_and_forwarding_headers(proxy, origin, session):
    async with session.ws_connect(f"http://127.0.0.1:{proxy.port}/ws?room=1", headers={"Cookie": "shop=1"}) as ws:
        await ws.send_str("x")
        await ws.receive(timeout=5)
    seen = origin.handshakes[-1]
    assert seen["path"] == "/ws?room=1"
    assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert seen["headers"]["Cookie"] == "shop=1"


async def test_the_subprotocol_the_origin_chose_reaches_the_client(proxy, session):
    # The origin speaks only v2.chat; the client offers v1 first.
    async with session.ws_connect(f"http://127.0.0.1:{proxy.port}/ws-v2", protocols=("v1.chat", "v2.chat")) as ws:
        assert ws.protocol == "v2.chat"
        await ws.send_str("x")
        assert (await ws.receive(timeout=5)).data == "echo:x"


async def test_no_subprotocol_when_the_origin_chose_none(proxy, session):
    async with session.ws_connect(f"http://127.0.0.1:{proxy.port}/ws-v2", protocols=("v9.chat",)) as ws:
        assert ws.protocol is None


async def test_the_origins_close_code_reaches_the_client(proxy, session):
    async with session.ws_connect(f"http://127.0.0.1:{proxy.port}/ws") as ws:
        await ws.send_str("close-me")
        msg = await ws.receive(timeout=5)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
        if msg.type != WSMsgType.CLOSE:
            msg = await ws.receive(timeout=5)
    assert ws.close_code == 4001


async def test_the_clients_close_code_reaches_the_origin(proxy, origin, session):
    origin.closed_with = asyncio.get_running_loop().create_future()
    ws = await session.ws_connect(f"http://127.0.0.1:{proxy.port}/ws")
    await ws.send_str("x")
    await ws.receive(timeout=5)
    await ws.close(code=4002, message=b"leaving")
    assert await asyncio.wait_for(origin.closed_with, 5) == 4002


async def test_a_refused_handshake_gives_the_origins_status(proxy, session):
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await session.ws_connect(f"http://127.0.0.1:{proxy.port}/forbidden")
    assert err.value.status == 403


async def test_the_proxy_keeps_serving_after_a_tunnel(proxy, session):
    for _ in range(3):
        async with session.ws_connect(f"http://127.0.0.1:{proxy.port}/ws") as ws:
            await ws.send_str("again")
            assert (await ws.receive(timeout=5)).data == "echo:again"


async def test_a_ping_is_answered_by_the_origins_pong(proxy, session):
    async with session.ws_connect(f"http://127.0.0.1:{proxy.port}/ws", autoping=False) as ws:
        await ws.ping(b"are you there")
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.PONG
        assert msg.data == b"are you there"


async def test_a_malformed_upgrade_request_is_refused_and_the_origin_released(proxy, origin):
    from proxyharness import raw_request, request_bytes

    before = len(origin.handshakes)
    resp = await raw_request(proxy.port, request_bytes("GET", "/ws", {"Upgrade": "websocket", "Connection": "Upgrade"}))
    assert resp.status == 400
    # the origin's socket was not left open behind a failed client handshake
    for _ in range(100):
        if all(h.get("closed") for h in origin.handshakes[before:]):
            break
        await asyncio.sleep(0.02)
    assert all(h.get("closed") for h in origin.handshakes[before:])
