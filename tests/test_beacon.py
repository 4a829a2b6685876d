"""The conversion beacon's body cap (issue 10: it accepted a 10 MB body)."""

from __future__ import annotations

from aiohttp import web

from edgeproxy.settings import DEFAULT_BEACON_MAX_BODY_BYTES
from proxyharness import raw_request, request_bytes, run_origin, run_proxy


def origin() -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(text="origin")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


async def test_a_small_beacon_is_answered_204(tmp_path):
    async with run_origin(origin()) as url, run_proxy(url, tmp_path / "slots", conversion_log=str(tmp_path / "c.jsonl")) as proxy:
        resp = await raw_request(proxy.port, request_bytes("POST", "/_edge/convert?value=3", body=b"{}"))
    assert resp.status == 204


async def test_a_beacon_declaring_a_large_body_gets_413_without_sending_it(tmp_path):
    async with run_origin(origin()) as url, run_proxy(url, tmp_path / "slots", conversion_log=str(tmp_path / "c.jsonl")) as proxy:
        head = request_bytes("POST", "/_edge/convert", {"Content-Length": str(10 * 1024 * 1024)})
        resp = await raw_request(proxy.port, head, timeout=5)
    assert resp.status == 413 and str(DEFAULT_BEACON_MAX_BODY_BYTES) in resp.body.decode()


async def test_a_chunked_beacon_over_the_cap_gets_413(tmp_path):
    chunk = b"x" * 4096
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4)) + b"0\r\n\r\n"
    async with run_origin(origin()) as url, run_proxy(url, tmp_path / "slots", conversion_log=str(tmp_path / "c.jsonl")) as proxy:
        head = request_bytes("POST", "/_edge/convert", {"Transfer-Encoding": "chunked"})
        resp = await raw_request(proxy.port, head + body, timeout=5)
    assert resp.status == 413
