"""The origin side: a keep-alive pool of ``asyncio.Protocol`` connections on
llhttp (``httptools.HttpResponseParser``), in place of aiohttp's ClientSession.

``OriginPool.fetch(settings, method, url, headers, body)`` sends one request
and returns ``fetch.Upstream`` once the response head is in; its
``response.content`` is an :class:`OriginBody` (the ``readany`` /
``read_nowait`` / ``at_eof`` / ``is_eof`` subset of aiohttp's StreamReader
the cache and the responder read) and ``release()`` / ``close()`` behave as
aiohttp's: back to the pool when the body ended cleanly, dropped otherwise.

Lifecycle of one origin connection, callback by callback:

``connection_made``
    Opened by the pool for a request (never speculatively).
``send`` (not a callback)
    The request head is written; a body streams from a task, paced by
    ``pause_writing`` / ``resume_writing`` of this connection.
``on_headers_complete``
    A final response head (1xx interim responses such as 103 Early Hints
    are skipped): the fetch's head future resolves.  The response to a HEAD
    request ends here; its connection is never reused, so body bytes a broken
    origin sends after it cannot become the next response (nginx and Varnish
    do the same).
``on_body``
    Body bytes, buffered in ``OriginBody``; reading from the origin pauses
    while more than ``BODY_HIGH`` bytes wait there (a slow client).
``on_message_complete``
    The body ended as framed.  If both sides allow keep-alive the
    connection goes back to the pool at once (whatever is still buffered
    belongs to the body object, not to the connection).
``connection_lost``
    Before a head: the fetch fails (retried once on a fresh connection when
    a pooled one turned out to be closed by the origin); during a body: the
    body fails (``UpstreamBodyError``), except for a body framed by the close
    itself (no length, not chunked), which ends there.

Framing is strict as llhttp is (Content-Length with Transfer-Encoding,
duplicate lengths, bad chunk sizes → an error, and the connection dropped);
heads over ``MAX_HEAD_BYTES`` or ``MAX_HEADERS`` fields are refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from typing import Any

import httptools

from ..errors import UpstreamBodyError, UpstreamConnectError, UpstreamError, UpstreamTimeout
from ..headers import InvalidOriginHead
from . import wire
from .chunks import Chunks

log = logging.getLogger("edgeproxy.upstream")

BODY_HIGH = 512 * 1024
BODY_LOW = 128 * 1024
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 256
# An idle pooled connection older than this is closed rather than reused.
KEEPALIVE_SECONDS = 30.0


class _Stale(Exception):
    """A pooled connection was closed by the origin before answering."""


class OriginBody(Chunks):
    """One response body as it arrives from the origin (see module docstring)."""

    __slots__ = ("_conn", "_idle")

    def __init__(self, conn: "OriginConnection | None", idle_timeout: float) -> None:
        super().__init__()
        self._conn = conn
        self._idle = idle_timeout

    def feed(self, data: bytes) -> None:
        self._append(data)
        if self._size > BODY_HIGH and self._conn is not None:
            self._conn.pause()

    def _taken(self, n: int) -> None:
        self._size -= n
        self._resume_if_low()

    def _resume_if_low(self) -> None:
        if self._size < BODY_LOW and self._conn is not None:
            self._conn.resume()

    async def readany(self) -> bytes:
        conn = self._conn
        loop = conn.loop if conn is not None and conn.loop is not None else asyncio.get_running_loop()
        try:
            data = await self._take(loop, self._idle)
        except TimeoutError:
            raise UpstreamBodyError(f"origin body stalled for {self._idle:g}s") from None
        if data:
            self._resume_if_low()
        return data

    def read_nowait(self, n: int = -1) -> bytes:
        if not self._chunks:
            if self._exc is not None:
                raise self._exc
            return b""
        if n < 0:
            data = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
            self._chunks.clear()
        else:
            data = self._chunks.popleft()
            if len(data) > n:
                data, rest = data[:n], data[n:]
                self._chunks.appendleft(rest)
        self._taken(len(data))
        return data

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def is_eof(self) -> bool:
        return self._eof


class OriginResponse:
    """The response object ``fetch.Upstream.response`` holds."""

    __slots__ = ("content", "_conn", "__weakref__")

    def __init__(self, conn: "OriginConnection", content: OriginBody) -> None:
        self._conn: OriginConnection | None = conn
        self.content = content

    def release(self) -> None:
        """Done with it: the connection is pooled if its body ended cleanly
        (already, at ``on_message_complete``), else dropped."""
        conn, self._conn = self._conn, None
        if conn is not None and conn.response is self:
            conn.abort()

    def close(self) -> None:
        self.release()


class OriginConnection(asyncio.Protocol):
    """One connection to the origin (see the module docstring)."""

    def __init__(self, pool: "OriginPool") -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._response: weakref.ref | None = None  # see the response property
        self.head: asyncio.Future | None = None
        self.is_head = False
        self.idle_timeout = 60.0
        self.reusable = True
        self.closed = False
        self.got_bytes = False
        self.write_paused = False
        self.idle_since = 0.0
        self.key: tuple = ()
        self.slotted = False  # counts against the pool's limit (a request on it, head or body)
        self.reused = False  # taken from the pool (may have been closed by the origin meanwhile)
        self._drain: asyncio.Future | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._reason = b""
        self._close_framed = False
        self._length_left = 0  # of a Content-Length body, bytes the parser has not seen
        self._keep_alive = False
        self._paused = False
        self._sender: asyncio.Task | None = None

    @property
    def response(self) -> "OriginResponse | None":
        """The response whose body this connection is reading.  Held weakly:
        a response dropped without ``release()`` (a bug above) is collected,
        and then this connection, and its pool slot, are dropped too."""
        ref = self._response
        return ref() if ref is not None else None

    @response.setter
    def response(self, value: "OriginResponse | None") -> None:
        self._response = weakref.ref(value, self._dropped) if value is not None else None

    def _dropped(self, ref: weakref.ref) -> None:
        if self._response is ref:
            self._response = None
            self.abort()

    # -- transport callbacks -------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        # Kept: asyncio.get_running_loop() costs a getpid() system call per
        # call on Python 3.11, and the hot path would call it several times.
        self.loop = asyncio.get_running_loop()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.pool.forget(self)
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("origin closed the connection"))
        head = self.head
        if head is not None and not head.done():
            if not self.got_bytes and self.reused:
                head.set_exception(_Stale())
            else:
                head.set_exception(UpstreamConnectError(f"the origin closed the connection: {exc!r}" if exc else "the origin closed the connection"))
        response = self.response
        if response is not None:
            if self._close_framed:
                response.content.feed_eof()  # a close-delimited body ends with the connection
            else:
                response.content.fail(UpstreamBodyError("origin body broke off: the connection closed"))
            self.response = None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    async def drain(self) -> None:
        if self.write_paused and not self.closed:
            self._drain = (self.loop or asyncio.get_running_loop()).create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        left = self._length_left
        if left:
            # The rest of a Content-Length body: its bytes go to the reader
            # as they came (no parser callback, no second copy).
            self._raw_body(data, left)
            return
        if self.head is None and self.response is None:
            self.abort()  # bytes nobody asked for (an idle connection): never reuse it
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("the origin switched protocols")
        except httptools.HttpParserError as exc:
            self._fail(f"invalid response from the origin: {exc}")
        except _HeadTooBig as exc:
            self._fail(str(exc))

    def _raw_body(self, data: bytes, left: int) -> None:
        response = self.response
        if len(data) > left:
            # Bytes past the body: nothing was asked for them, so this
            # connection is not reused (the parser would have refused them too).
            self.reusable = False
            data = data[:left]
        self._length_left = left - len(data)
        if response is not None:
            response.content.feed(data)
        if not self._length_left:
            # llhttp still counts the body it never saw: a fresh parser
            # reads the next response on this connection.
            self.parser = httptools.HttpResponseParser(self)
            self._message_done(self._keep_alive)

    def _fail(self, why: str) -> None:
        head = self.head
        if head is not None and not head.done():
            head.set_exception(UpstreamConnectError(why))
        response = self.response
        if response is not None:
            response.content.fail(UpstreamBodyError(f"origin body broke off: {why}"))
            self.response = None
        self.abort()

    # -- parser callbacks ----------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []
        self._head_bytes = 0

    def on_status(self, reason: bytes) -> None:
        self._reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        self._headers.append((name, value))
        if self._head_bytes > MAX_HEAD_BYTES or len(self._headers) > MAX_HEADERS:
            raise _HeadTooBig("the origin's response head is too large")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            return  # interim (100, 103 Early Hints): the final head follows
        head = self.head
        if head is None or head.done():
            return
        self.head = None
        headers = self._headers
        if self.is_head or status in wire.NO_BODY_STATUSES:
            content = OriginBody(None, self.idle_timeout)
            content.feed_eof()
            head.set_result((status, self._reason, headers, None))
            if self.is_head:
                # Whatever follows a HEAD's head is not trusted (an origin may
                # wrongly send a body): this connection is done.
                self.abort()
            return
        framed = False
        length = -1
        for name, value in headers:
            lower = name.lower()
            if lower == b"transfer-encoding":
                framed = framed or b"chunked" in value.lower()
                length = -2  # llhttp frames it (and refuses it with a Content-Length)
            elif lower == b"content-length":
                framed = True
                if length == -1:
                    length = int(value)  # llhttp has checked it: one decimal number
        self._close_framed = not framed
        # The body's bytes the parser has not seen yet, once this chunk is
        # parsed (on_body counts down what it delivers).
        self._length_left = length if length > 0 else 0
        self._keep_alive = self.parser.should_keep_alive()
        content = OriginBody(self, self.idle_timeout)
        response = OriginResponse(self, content)
        self.response = response
        head.set_result((status, self._reason, headers, response))

    def on_body(self, body: bytes) -> None:
        if self._length_left:
            self._length_left -= len(body)
        response = self.response
        if response is not None:
            response.content.feed(body)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            return
        self._length_left = 0
        self._message_done(self.parser.should_keep_alive())

    def _message_done(self, keep_alive: bool) -> None:
        """The response's body has ended: the reader is told, and the
        connection goes back to the pool if it can be reused."""
        response = self.response
        if response is not None:
            response.content.feed_eof()
            response.content._conn = None
            response._conn = None
            self.response = None
        if self.reusable and keep_alive and (self._sender is None or self._sender.done()):
            self.resume()
            self.pool.put(self)
        else:
            self.abort()


class _HeadTooBig(Exception):
    pass


class OriginPool:
    """Keep-alive connections to the origin, at most ``limit`` in use at once
    (a request sent, its response not yet ended); more requests wait."""

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._idle: dict[tuple, deque[OriginConnection]] = {}
        self._busy = 0
        self._waiters: deque[asyncio.Future] = deque()

    def release_slot(self, conn: OriginConnection) -> None:
        if conn.slotted:
            conn.slotted = False
            self._unslot()

    def forget(self, conn: OriginConnection) -> None:
        self.release_slot(conn)
        for idle in self._idle.values():
            if conn in idle:
                idle.remove(conn)
                return

    def put(self, conn: OriginConnection) -> None:
        self.release_slot(conn)
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.key, deque()).append(conn)

    def _take_idle(self, key: tuple) -> OriginConnection | None:
        """A pooled connection to ``key`` still worth reusing, or None."""
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE_SECONDS:
                return conn
            conn.abort()
        return None

    async def _acquire(self, key: tuple, settings) -> tuple[OriginConnection, bool]:
        conn = self._take_idle(key)
        if conn is not None:
            return conn, True
        host, port, ssl = key
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(settings.connect_timeout):
                _, conn = await loop.create_connection(lambda: OriginConnection(self), host, port, ssl=ssl or None)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"no connection to the origin within {settings.connect_timeout:g}s") from exc
        except OSError as exc:
            raise UpstreamConnectError(f"cannot connect to the origin: {exc}") from exc
        conn.key = key
        return conn, False

    async def _slot(self) -> None:
        while self._busy >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        self._busy += 1

    def _unslot(self) -> None:
        self._busy -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def fetch(self, settings, *, method: str, url: Any, headers: list[tuple[str, str]], body: Any = None):
        """Send one request; the ``fetch.Upstream`` once its head is in."""
        from ..fetch import origin_upstream

        key = (url.host, url.port, url.scheme == "https")
        if body is not None and hasattr(body, "iter_any"):
            body = body.iter_any()  # aiohttp's StreamReader (the aiohttp traffic server)
        chunked = body is not None and not any(n.lower() == "content-length" for n, _ in headers)
        head = "".join([
            f"{method} {url.raw_path_qs} HTTP/1.1\r\n",
            *[f"{n}: {v}\r\n" for n, v in headers],
            "Transfer-Encoding: chunked\r\n\r\n" if chunked else "\r\n",
        ]).encode("utf-8")
        conn: OriginConnection | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.first_byte_timeout
        try:
            for attempt in (0, 1):
                conn = None
                reused = True
                if self._busy < self.limit:
                    # The usual case: a free slot and a pooled connection,
                    # taken without waiting (no timeout context needed).
                    conn = self._take_idle(key)
                    if conn is not None:
                        self._busy += 1
                if conn is None:
                    async with asyncio.timeout_at(deadline):
                        await self._slot()
                        try:
                            conn, reused = await self._acquire(key, settings)
                        finally:
                            if conn is None:
                                self._unslot()
                conn.reused = reused
                conn.slotted = True  # given back when the connection is pooled or closed
                try:
                    status, reason, raw, response = await self._exchange(loop, conn, settings, method, head, body, chunked, deadline)
                    break
                except _Stale:
                    # A pooled connection the origin had closed: once more
                    # on a fresh one (a body already sent cannot be resent).
                    if attempt or body is not None:
                        raise UpstreamConnectError("the origin closed the connection") from None
        except TimeoutError as exc:
            if conn is not None:
                conn.abort()
            raise UpstreamTimeout(f"no response head from the origin within {settings.first_byte_timeout:g}s") from exc
        except BaseException:
            if conn is not None:
                conn.abort()
            raise
        try:
            return origin_upstream(status, reason.decode("latin-1"), raw, response)
        except InvalidOriginHead as exc:
            conn.abort()
            raise UpstreamConnectError(f"invalid response from the origin: {exc}") from exc

    async def _exchange(self, loop, conn: OriginConnection, settings, method: str, head: bytes, body: Any, chunked: bool, deadline: float):
        if conn.closed:  # lost between being handed out and now
            self.release_slot(conn)
            if conn.reused:
                raise _Stale()
            raise UpstreamConnectError("the origin closed the connection")
        conn.head = waiter = loop.create_future()
        conn.is_head = method == "HEAD"
        conn.idle_timeout = settings.idle_timeout
        conn.got_bytes = False
        conn._sender = None
        conn.transport.write(head)
        if body is not None:
            conn._sender = loop.create_task(_send_body(conn, body, chunked))
        return await wire.wait_until(loop, waiter, deadline)

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
            idle.clear()


async def _send_body(conn: OriginConnection, body: Any, chunked: bool) -> None:
    """The client's body to the origin as it arrives, paced by the origin."""
    try:
        async for data in body:
            if conn.closed:
                return
            if chunked:
                conn.transport.writelines(wire.chunk(data))
            else:
                conn.transport.write(data)
            if conn.write_paused:
                await conn.drain()
        if chunked and not conn.closed:
            conn.transport.write(wire.LAST_CHUNK)
    except asyncio.CancelledError:
        conn.abort()
        raise
    except Exception as exc:  # the client went away or sent a broken body
        log.debug("request body to the origin failed: %r", exc)
        conn.abort()


def open_pool(settings) -> OriginPool:
    return OriginPool(settings.upstream_connections)


__all__ = ["OriginPool", "OriginBody", "OriginResponse", "open_pool", "UpstreamError"]
