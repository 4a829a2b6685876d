"""Stage 3 — fetch: one request to the origin over a pooled keep-alive session.

The origin is only ever ``settings.upstream``: the path and query of the
client's request are appended to it, whatever the request line or ``Host``
said, so an absolute-form target cannot pick another host.  Redirects and
status codes pass through (never followed); bodies are neither decompressed
(``auto_decompress=False``) nor buffered.

Timeouts map to the error tree (``errors.py``): a failed connect →
``UpstreamConnectError`` (502); no response head within
``first_byte_timeout`` → ``UpstreamTimeout`` (504); a body that stalls for
``idle_timeout`` or breaks off → ``UpstreamBodyError`` while streaming.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote_plus

import aiohttp
from aiohttp import web
from yarl import URL

from .errors import UpstreamBodyError, UpstreamConnectError, UpstreamError, UpstreamTimeout
from .headers import InvalidOriginHead, checked_origin_head, strip_hop_by_hop
from .http.wire import decode_fields
from .settings import Settings

# Read the origin's body in chunks of up to this size (fewer, larger copies).
READ_CHUNK = 256 * 1024

# Request headers aiohttp would otherwise invent: the proxy forwards only
# what the client sent (plus forwarding headers).
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept-Encoding", "Accept", "Content-Type")


def open_session(settings: Settings) -> aiohttp.ClientSession:
    """The one pooled client session, opened at start (``cleanup_ctx``)."""
    connector = aiohttp.TCPConnector(
        limit=settings.upstream_connections,
        limit_per_host=0,
        ttl_dns_cache=60,
        keepalive_timeout=30,
        enable_cleanup_closed=True,
    )
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=settings.connect_timeout,
        sock_connect=settings.connect_timeout,
        sock_read=settings.idle_timeout,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=_SKIP_AUTO_HEADERS,
        cookie_jar=aiohttp.DummyCookieJar(),
        read_bufsize=READ_CHUNK,
        max_line_size=16 * 1024,
        max_field_size=16 * 1024,
        max_headers=256,
    )


@dataclasses.dataclass(slots=True)
class Upstream:
    """The origin's response head, and its body still on the wire.

    ``headers`` are the origin's, hop-by-hop fields already stripped
    (RFC 9110 §7.6.1).  ``body()`` yields the raw (still content-encoded)
    bytes as they arrive; ``release()`` returns the connection to the pool.
    ``body_bytes`` is set instead when the body is already in memory (cache).
    """

    status: int
    reason: str
    headers: list[tuple[str, str]]
    response: aiohttp.ClientResponse | None = None
    body_bytes: bytes | None = None
    cache_status: str = "BYPASS"
    # A cache hit's stored headers, which ``headers`` copies with ``Age``
    # appended last: the head built from them is memoised per entry
    # (``respond.prebuilt_head``) instead of per request.
    stored_headers: tuple[tuple[str, str], ...] | None = dataclasses.field(default=None, repr=False, compare=False)
    _index: dict[str, str] | None = dataclasses.field(default=None, repr=False, compare=False)
    _indexed: list | None = dataclasses.field(default=None, repr=False, compare=False)

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (any case).  Looked up often
        per response, so the lower-cased index is built once."""
        index = self._index
        if index is None or self._indexed is not self.headers:
            index = {}
            for key, value in self.headers:
                index.setdefault(key.lower(), value)
            self._index, self._indexed = index, self.headers
        return index.get(name.lower(), default)

    @property
    def content_length(self) -> int | None:
        if self.body_bytes is not None:
            return len(self.body_bytes)
        value = self.header("content-length")
        if value is None or not value.strip().isdigit():
            return None
        return int(value.strip())

    async def body(self) -> AsyncIterator[bytes]:
        if self.body_bytes is not None:
            if self.body_bytes:
                yield self.body_bytes
            return
        assert self.response is not None
        content = self.response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                yield chunk
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            raise UpstreamBodyError(f"origin body broke off: {exc!r}") from exc
        except UpstreamBodyError:
            raise
        if not content.is_eof():  # pragma: no cover - defensive
            raise UpstreamBodyError("origin body ended early")

    def release(self) -> None:
        if self.response is not None:
            self.response.release()

    def close(self) -> None:
        """Drop the connection (used when the client went away mid-body)."""
        if self.response is not None:
            self.response.close()


def upstream_url(settings: Settings, raw_path: str) -> URL:
    """``settings.upstream`` + the request's raw path and query.

    ``raw_path`` is the request-target as received; an absolute-form target
    (``GET http://other/ HTTP/1.1``) contributes only its path and query.
    """
    if not raw_path.startswith("/"):
        parsed = URL(raw_path, encoded=True)
        raw_path = parsed.raw_path_qs if parsed.is_absolute() else "/" + raw_path
    if raw_path.startswith("//"):  # "//evil.com/x" is a path here, not an authority
        raw_path = "/" + raw_path.lstrip("/")
    return URL(settings.upstream + raw_path, encoded=True)


async def fetch(
    session: Any,
    settings: Settings,
    *,
    method: str,
    url: URL,
    headers: list[tuple[str, str]],
    body: Any = None,
) -> Upstream:
    """Send one request to the origin and return its head.

    Raises the ``UpstreamError`` subclass for the failure; the caller maps it
    to the client's 502/504.  ``session`` is the traffic path's
    ``http.upstream.OriginPool`` or an aiohttp ``ClientSession``.
    """
    if not isinstance(session, aiohttp.ClientSession):
        return await session.fetch(settings, method=method, url=url, headers=headers, body=body)
    try:
        async with asyncio.timeout(settings.first_byte_timeout):
            response = await session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
                chunked=None,
            )
    except asyncio.TimeoutError as exc:
        raise UpstreamTimeout(f"no response head from the origin within {settings.first_byte_timeout:g}s") from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamConnectError(f"cannot connect to the origin: {exc.os_error or exc}") from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise UpstreamConnectError(f"the origin closed the connection: {exc!r}") from exc
    except aiohttp.ClientResponseError as exc:
        raise UpstreamConnectError(f"invalid response from the origin: {exc.message}") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"upstream request failed: {exc!r}") from exc
    try:
        return origin_upstream(response.status, response.reason or "", response.raw_headers, response)
    except InvalidOriginHead as exc:
        response.close()
        raise UpstreamConnectError(f"invalid response from the origin: {exc}") from exc


def origin_upstream(status: int, reason: str, raw, response: Any) -> Upstream:
    """The ``Upstream`` for an origin response head given as raw
    ``(name, value)`` bytes: decoded (``wire.decode_fields``), checked
    (``InvalidOriginHead``) and hop-by-hop fields dropped."""
    text_reason, pairs = checked_origin_head(status, reason, decode_fields(raw))
    return Upstream(status=status, reason=text_reason, headers=strip_hop_by_hop(pairs), response=response)


def request_body(request: web.Request) -> Any:
    """The client's body as a stream for the origin, or None without one."""
    if request.body_exists or request.can_read_body:
        # RFC 9110 §10.1.1: a client that sent "Expect: 100-continue" waits
        # for the interim response before sending its body.  The proxy
        # answers it (Expect is not forwarded), as nginx does.  (Bug fixed:
        # the low-level server has no expect handler, so such a request
        # stalled until the origin timed out: a 504.)
        expect = request.headers.get("Expect", "").strip().lower()
        if expect == "100-continue" and request.version >= (1, 1) and request.transport is not None:
            request.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return request.content
    return None


def upstream_host(settings: Settings) -> str:
    """The ``Host`` the origin expects: the upstream URL's authority."""
    return _authority(settings.upstream)


@functools.lru_cache(maxsize=16)
def _authority(upstream: str) -> str:
    return URL(upstream).raw_authority


def strip_query_param(raw_path: str, name: str) -> str:
    """``raw_path`` without the query parameter ``name`` (every occurrence);
    the rest of the target is kept byte for byte."""
    path, sep, query = raw_path.partition("?")
    if not sep or (name not in query and "%" not in query):
        return raw_path
    # Names compare decoded, as the proxy reads them (request.query): an
    # encoded "edge%5Fpreview%5Ftoken" is the same parameter.  (Bug fixed:
    # it enabled preview and still reached the origin.)
    kept = [part for part in query.split("&") if unquote_plus(part.split("=", 1)[0]) != name]
    return path + ("?" + "&".join(kept) if kept else "")


def without_preview_cookie(headers: list[tuple[str, str]], cookie_name: str) -> list[tuple[str, str]]:
    """Drop the proxy's own preview cookie from ``Cookie`` headers: the
    origin never needs it (and its logs should not hold it)."""
    marker = cookie_name + "="
    if not any(n.lower() == "cookie" and marker in v for n, v in headers):
        return headers
    out = []
    for name, value in headers:
        if name.lower() == "cookie" and marker in value:
            parts = [p for p in value.split(";") if not p.strip().startswith(marker)]
            value = ";".join(parts).strip()
            if not value:
                continue
        out.append((name, value))
    return out
