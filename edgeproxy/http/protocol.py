"""The traffic port: one ``asyncio.Protocol`` per client connection.

llhttp (``httptools.HttpRequestParser``) parses the bytes; the protocol turns
each request head into a ``request.Request`` and hands it to the handler (the
pipeline) in arrival order, one at a time per connection; the handler's
response goes out through ``request.Response``, which writes a prebuilt head
and the body straight to the transport.  ``TrafficServer`` listens, counts
and drains; ``Limits`` holds what is refused before the pipeline runs.

Lifecycle of a connection, callback by callback (what holds when each fires):

``connection_made``
    The socket is accepted; nothing has been read.  The request-head
    deadline starts (a client that never finishes a head is closed).
``on_message_begin`` / ``on_url`` / ``on_header``
    Bytes of one request head; nothing has been handed to the handler.
``on_headers_complete``
    The head is whole and valid.  A :class:`Request` is queued; if the
    connection is idle its handler task starts (at the next loop turn, so the
    body, if any, may still be arriving: it streams through :class:`Body`).
``on_body`` / ``on_message_complete``
    Body bytes of the request being *parsed* (not necessarily the one being
    handled, with pipelining); ``on_message_complete`` ends that body.
``HttpParserUpgrade`` (from ``feed_data``)
    The head asked for a protocol switch and is complete.  WebSocket: the
    bytes after the head belong to the tunnel (``Request.upgrade_data``);
    ``CONNECT`` is refused with 405; any other offer (h2c) is ignored and
    parsing continues in HTTP/1.1.
``HttpParserError``
    Framing the proxy will not guess at (Content-Length with
    Transfer-Encoding, duplicate Content-Length, obs-fold, a bad chunk
    size…): 400, and the connection is closed; nothing after the error is
    read, so nothing is smuggled into a following request.
``pause_writing`` / ``resume_writing``
    The client's send buffer is over / back under its high-water mark:
    ``Response.write`` waits, so a slow client paces the origin's reads;
    one that reads nothing for ``send_timeout`` is cut off.
``connection_lost``
    The client is gone: the handler task is cancelled (as aiohttp's
    ``handler_cancellation``), a body being read fails, a waiting write
    fails, and the connection leaves the server's set.

A connection is reused only after a response that ended cleanly and whose
request allowed it (``should_keep_alive``); after an error it is closed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
import httptools
from multidict import CIMultiDict

from . import wire
from .admission import InFlightLimit, QueueDelay
from .request import Body, ClientGone, Request  # noqa: F401 - ClientGone, Request: part of this layer's API

log = logging.getLogger("edgeproxy.http")

# Pipelined requests queued behind the one being handled before reading pauses.
MAX_PIPELINED = 16
# Connections accepted per readiness of the listening socket (asyncio's own
# loop takes up to its backlog; libuv >= 1.45, under uvloop, takes one per
# loop turn, which under load left ~150 connections waiting unaccepted for
# seconds: see TrafficServer.start).
ACCEPT_BATCH = 128
# Accept errors that mean "out of descriptors or memory": stop accepting for
# a second rather than spin (asyncio's ACCEPT_RETRY_DELAY).
_ACCEPT_PAUSE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Refusing a connection gracefully (nginx's lingering_close): a connection
# over max_connections gets this long to send its request head before its
# 503; after a 503 + Connection: close the proxy half-closes and reads (and
# drops) what the client still sends for up to LINGER_TIMEOUT, so the close
# does not reset the connection before the client has read the answer.
# Past LINGER_MAX such connections at once, the 503 goes out at once and
# the connection is closed (a flood must not hold descriptors).
REFUSE_HEAD_TIMEOUT = 1.0
LINGER_TIMEOUT = 2.0
LINGER_MAX = 1024
# Methods answered by the proxy itself and never forwarded (CONTRACT §6).
REFUSED_METHODS = frozenset({"CONNECT", "TRACE"})


Handler = Callable[[Request], Awaitable[object]]


class HttpProtocol(asyncio.Protocol):
    """One client connection (see the module docstring for its lifecycle)."""

    def __init__(self, server) -> None:
        self.server = server
        # Kept: asyncio.get_running_loop() costs a getpid() system call per
        # call on Python 3.11; a request would make several.
        self.loop = asyncio.get_running_loop()
        self.handler: Handler = server.handler
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.queue: deque[Request] = deque()
        self.task: asyncio.Task | None = None
        self.closing = False  # no new request will be started: close when idle
        self.write_paused = False
        self.corked: bytes | None = None  # a response head not yet written (cork())
        self._drain_waiter: asyncio.Future | None = None
        self._read_pauses: set[str] = set()
        self._parsing: Request | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._failed = False
        self._limit_hit: tuple[int, str, str] | None = None
        self._head_bytes = 0
        self._tunnel: Callable[[bytes], None] | None = None
        self._upgraded: Request | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_for_head = False  # the running timer is the head deadline (else the keep-alive one)
        limits = server.limits
        self._max_headers = limits.max_headers or 1 << 62  # 0 = no limit
        self._max_header_bytes = limits.max_header_bytes or 1 << 62

    # -- transport callbacks -------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        server = self.server
        limits = server.limits
        if limits.max_connections and len(server.connections) >= limits.max_connections:
            # Over the cap: a fast 503 rather than a slow queue, after the
            # request head (written before it, the close would race the
            # request's arrival and the client could read a reset instead).
            server.refused("connections")
            self._failed = True
            answer = wire.simple_response(503, "503 Service Unavailable: too many connections\n", extra=(("Retry-After", str(limits.retry_after)),))
            if server.lingering >= LINGER_MAX:
                transport.write(answer)
                transport.close()
                return
            self._linger_start(answer)
            self._timer = asyncio.get_running_loop().call_later(REFUSE_HEAD_TIMEOUT, self._linger_answer)
            return
        server.connections.add(self)
        server.queue_delay.wake()
        self._arm(self.server.limits.head_timeout)

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        if self._linger is not None:
            self._linger = None
            self.server.lingering -= 1
        self._disarm()
        gone = ClientGone("the client closed the connection")
        for request in self.queue:
            if request.content is not None:
                request.content.fail(gone)
            self.server.release(request)  # the one being handled is cancelled below
        if self._parsing is not None and self._parsing.content is not None:
            self._parsing.content.fail(gone)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(gone)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self._tunnel is not None:
            self._tunnel(b"")

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        if not self.write_paused:
            return
        if self.transport is None or self.transport.is_closing():
            raise ClientGone("the client closed the connection")
        self._drain_waiter = waiter = self.loop.create_future()
        timeout = self.server.limits.send_timeout
        try:
            await wire.wait(self.loop, waiter, timeout)
        except TimeoutError:
            # The client reads nothing: it would hold this in-flight slot and
            # an origin connection for as long as it likes (nginx's send_timeout).
            self.server.refused("send_timeout")
            self.transport.abort()
            raise ClientGone(f"the client read nothing for {timeout:g}s") from None
        finally:
            self._drain_waiter = None

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            head = self.corked
            if head is not None:
                self.corked = None
                self.transport.writelines((head, data))
            else:
                self.transport.write(data)

    def cork(self, head: bytes) -> None:
        """Hold a response head until the first body bytes (one send for
        both) or the end of this loop turn, whichever comes first: a body
        already in hand leaves in the same segment, a streamed one does not
        delay the head."""
        self.corked = head
        self.loop.call_soon(self.uncork)

    def uncork(self) -> None:
        head = self.corked
        if head is not None:
            self.corked = None
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(head)

    def pause_reading(self, why: str) -> None:
        if not self._read_pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._read_pauses.add(why)

    def resume_reading(self, why: str) -> None:
        if why in self._read_pauses:
            self._read_pauses.discard(why)
            if not self._read_pauses and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._upgraded is not None:
            if self._tunnel is not None:
                self._tunnel(data)
            else:
                self._upgraded.upgrade_data += data  # rare: the tunnel is not attached yet
            return
        if self._failed:
            if self._linger is not None:
                self._linger_read(data)
            return
        if self._raw_left:
            self._take_raw(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._on_upgrade(data[exc.args[0]:] if exc.args else b"")
        except httptools.HttpParserError as exc:
            if self._limit_hit is None:
                self._bad_request(str(exc))
        if self._limit_hit is not None and not self._failed:
            status, why, reason = self._limit_hit
            self.refuse(status, why, reason)

    # -- parser callbacks ----------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        if self._timer is None or not self._timer_for_head:
            self._arm(self.server.limits.head_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        limit = self.server.limits.max_target_bytes
        if limit and len(self._url) > limit:
            self._url = b""
            self._limit_hit = (414, f"the request target is over {limit} bytes", "target_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Called per header field: kept to the bare minimum.
        headers = self._headers
        self._head_bytes += len(name) + len(value) + 4
        if len(headers) >= self._max_headers or self._head_bytes > self._max_header_bytes:
            self._headers_too_large()
            return
        headers.append((name, value))

    def _headers_too_large(self) -> None:
        limits = self.server.limits
        self._limit_hit = (431, f"request headers over {limits.max_headers} fields or {limits.max_header_bytes} bytes", "headers_too_large")

    def on_headers_complete(self) -> None:
        self._disarm()
        if self._limit_hit is not None or self._failed:
            return  # refused in data_received, once llhttp returns
        parser = self.parser
        method = parser.get_method().decode("ascii", "replace")
        server = self.server
        busy = server.in_flight >= server.in_flight_limit.value or server.queue_delay.shedding
        if busy:
            if self.task is None and not self.queue and method not in REFUSED_METHODS:
                # Load shedding, before any work on the request (no header
                # decoded, no Request): nothing is owed before it, so it is
                # answered now, without a task (a shed costs microseconds).
                self._shed(method)
                return
        version = (1, 1) if parser.get_http_version() == "1.1" else (1, 0)
        headers = CIMultiDict(wire.decode_fields(self._headers))
        request = Request(self, method, self._url.decode("latin-1"), version, headers, parser.should_keep_alive())
        self._url = b""
        self._headers = []
        if method in REFUSED_METHODS:
            self.server.refused("method")
            request.refused = wire.simple_response(405, f"405 Method Not Allowed: {method} is not served here\n", extra=(("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),))
        elif method == "OPTIONS" and request.raw_path == "*":
            request.refused = wire.response_head(200, "OK", [("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"), ("Content-Length", "0"), ("Date", wire.http_date())])
        limits = server.limits
        if busy and request.refused is None:
            # Shed behind pipelined requests: answered in its turn.
            reason = server.shed_reason()
            server.refused(reason)
            keep = request.keep_alive and method != "HEAD" and "content-length" not in headers and "transfer-encoding" not in headers
            request.refused = server.busy_response(keep)
        if "content-length" in headers or "transfer-encoding" in headers:
            length = headers.get("content-length")
            request.body_exists = length is None or length.strip() != "0"
        if request.body_exists:
            cap = limits.body_limit(request.raw_path)
            if cap and length is not None and length.isdigit() and int(length) > cap:
                self.server.refused("body_too_large")
                request.refused = wire.simple_response(413, f"413 Content Too Large: the request body is over {cap} bytes\n")
                request.keep_alive = False
                self._failed = True  # the body is never read: the connection closes after the 413
            request.content = Body(self, cap)
        if request.refused is None:
            # The slot is taken now, not when the handler starts (a loop turn
            # later): heads read in the same turn each see the ones before.
            # (Bug fixed: a burst of 40 with a cap of 5 reached the origin 40 times.)
            request.slot = True
            self.server.in_flight += 1
        self._parsing = request
        self.queue.append(request)
        if len(self.queue) > MAX_PIPELINED:
            self.pause_reading("pipeline")
        if self.task is None:
            self.task = self.loop.create_task(self._serve())

    def on_body(self, body: bytes) -> None:
        request = self._parsing
        if request is not None and request.content is not None:
            request.content.feed(body)

    def on_message_complete(self) -> None:
        request = self._parsing
        if self.parser.should_upgrade() and request is not None and request.method != "CONNECT":
            return  # llhttp stops before an upgrade's body: _on_upgrade decides
        if request is not None and request.content is not None:
            request.content.feed_eof()
        self._parsing = None

    # -- protocol switches and errors ------------------------------------------
    def _on_upgrade(self, rest: bytes) -> None:
        request = self.queue[-1] if self.queue else None
        if request is None:  # pragma: no cover - llhttp raises upgrade only after a head
            return
        if request.method == "CONNECT":
            # The bytes after a CONNECT head are a tunnel's: never parsed as HTTP.
            self._failed = True
            request.keep_alive = False
            return
        if request.headers.get("Upgrade", "").strip().lower() == "websocket":
            request.upgrade = True
            request.upgrade_data += rest
            self._upgraded = request
            return
        # Another protocol offered (h2c): ignored; the connection stays
        # HTTP/1.1.  llhttp hands back everything after the head, so a body
        # the offer came with is framed here, by its Content-Length.
        self.parser = httptools.HttpRequestParser(self)
        if request.content is None:
            self._parsing = None
            if rest:
                self.data_received(rest)
            return
        length = request.headers.get("Content-Length", "")
        if not length.isdigit() or "transfer-encoding" in request.headers:
            self._bad_request("an upgrade offer with a body must give its Content-Length")
            return
        self._raw_left = int(length)
        self._take_raw(rest)

    _raw_left = 0

    def _take_raw(self, data: bytes) -> None:
        """Body bytes of an ignored upgrade offer, then HTTP again."""
        request = self._parsing
        take = data[: self._raw_left]
        self._raw_left -= len(take)
        if take and request is not None and request.content is not None:
            request.content.feed(take)
        if self._raw_left == 0:
            if request is not None and request.content is not None:
                request.content.feed_eof()
            self._parsing = None
            rest = data[len(take):]
            if rest:
                self.data_received(rest)

    def attach_tunnel(self, sink: Callable[[bytes], None]) -> bytes:
        """The WebSocket relay takes over reading: ``sink`` gets every later
        chunk (``b""`` when the client is gone); returns the bytes already read."""
        self._tunnel = sink
        request = self._upgraded
        early = request.upgrade_data if request is not None else b""
        if request is not None:
            request.upgrade_data = b""
        return early

    def _shed(self, method: str) -> None:
        """Load shedding (``on_headers_complete``): admitted requests keep
        their latency; this one is told to come back, at once and without
        touching the origin.  A request without a body keeps its connection
        (as nginx's limit_req does): a reconnect per shed request costs the
        overloaded proxy more than the request (an accept, a transport, a
        close), and a burst of reconnects after a stall can fill the listen
        queue (a client then waits for its SYN's 1 s retransmission).  A
        body, or a HEAD (whose answer must have none), closes gracefully."""
        server = self.server
        reason = server.shed_reason()
        server.refused(reason)
        body = any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self._headers)
        keep = method != "HEAD" and not body and self.parser.should_keep_alive()
        self._url = b""
        self._headers = []
        if keep:
            self.transport.write(server.busy_response(True))
            self._arm_idle(server.limits.keepalive_timeout)
        else:
            self._close_with(server.busy_response(False))

    def _bad_request(self, why: str) -> None:
        """Unparseable framing: 400 and close, never read further."""
        self.refuse(400, why, "bad_request")

    def refuse(self, status: int, why: str, reason: str) -> None:
        """Stop reading this connection and answer ``status``: at once when
        nothing is in hand, after the responses already owed when pipelined
        requests are ahead, by aborting when a response is half sent."""
        if self._failed:
            return
        self._failed = True
        self.server.refused(reason)
        text = wire.simple_response(status, f"{status} {wire.reason_for(status)}: {why}\n")
        parsing = self._parsing
        if parsing is not None and parsing.content is not None:
            parsing.content.fail(ClientGone(why))
        if self.task is not None and self.queue and self.queue[0] is not parsing:
            # Earlier requests are still being answered: they finish first.
            request = Request(self, "GET", "/", (1, 1), CIMultiDict(), False)
            request.refused = text
            if parsing is not None and parsing in self.queue:
                self.queue.remove(parsing)
                self.server.release(parsing)
            self.queue.append(request)
            return
        if self.task is not None:
            self.task.cancel()
            current = self.queue[0] if self.queue else None
            if current is not None and current.response is not None:
                self.transport.abort()
                return
        self._close_with(text)

    # -- refusing gracefully (lingering close) ---------------------------------
    _linger: bytearray | None = None  # set while refusing: the head read so far
    _linger_reply: bytes | None = None  # the answer, until it is sent

    def _close_with(self, reply: bytes) -> None:
        """Answer ``reply`` (it says ``Connection: close``) and close
        gracefully: nothing more is read as a request."""
        self._failed = True
        if self.server.lingering >= LINGER_MAX:
            self.write(reply)
            self.transport.close()
            return
        self._linger_start(None)
        self._linger_answer(reply)

    def _linger_start(self, reply: bytes | None) -> None:
        """Refuse this connection: ``reply`` once the request head is in
        (``_linger_read``) or its short deadline passes, then a lingering
        close.  ``None``: the caller answers at once (``_linger_answer``)."""
        self._disarm()
        self._linger = bytearray()
        self._linger_reply = reply
        self.server.lingering += 1

    def _linger_read(self, data: bytes) -> None:
        """Bytes from a connection being refused: the rest of its head, then
        whatever it still sends after the answer (dropped)."""
        buf = self._linger
        if self._linger_reply is None or buf is None:
            return
        start = max(0, len(buf) - 3)
        buf += data
        if buf.find(b"\r\n\r\n", start) >= 0 or len(buf) > self.server.limits.max_header_bytes:
            self._linger_answer()

    def _linger_answer(self, reply: bytes | None = None) -> None:
        """Send the answer, half-close (FIN after it), drop what arrives
        until the client closes or ``LINGER_TIMEOUT`` passes."""
        self._disarm()
        reply = reply or self._linger_reply
        self._linger_reply = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._linger is not None:
            self._linger.clear()
        if reply:
            self.write(reply)
        if transport.can_write_eof():
            transport.write_eof()
            self._timer = asyncio.get_running_loop().call_later(LINGER_TIMEOUT, transport.close)
        else:
            transport.close()

    def eof_received(self) -> bool | None:
        # The client closed its side: a refused connection is answered
        # first (the answer is flushed before the close).
        if self._linger_reply is not None:
            self._linger_answer()
        return None  # close

    # -- timers --------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self._disarm()
        if seconds > 0:
            self._timer_for_head = True
            self._timer = self.loop.call_later(seconds, self._head_timeout)

    def _arm_idle(self, seconds: float) -> None:
        self._disarm()
        if seconds > 0:
            self._timer_for_head = False
            self._timer = self.loop.call_later(seconds, self._idle_timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timeout(self) -> None:
        self._timer = None
        if self.task is None and not self.queue and self.transport is not None:
            self.server.refused("head_timeout")
            self._close_with(wire.simple_response(408, "408 Request Timeout: the request head did not arrive in time\n"))

    def _idle_timeout(self) -> None:
        self._timer = None
        if self.task is None and not self.queue and self.transport is not None:
            self.transport.close()

    # -- serving -------------------------------------------------------------
    def shutdown(self) -> None:
        """Draining: finish the request in hand, start no other; close when idle."""
        self.closing = True
        if self.task is None and not self.queue and self.transport is not None:
            self.transport.close()

    async def _serve(self) -> None:
        """Answer queued requests in order; runs while there are any."""
        try:
            while self.queue:
                request = self.queue[0]
                if request.refused is not None:
                    self.write(request.refused)
                    if not request.keep_alive or b"Connection: close" in request.refused:
                        self.transport.close()
                        return
                else:
                    try:
                        result = await self.handler(request)
                        await self._finish(request, result)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        if not isinstance(exc, ClientGone):
                            log.exception("%s %s: the handler failed", request.method, request.raw_path)
                        if request.response is None and self.transport is not None and not self.transport.is_closing():
                            self.write(wire.simple_response(500, "500 Internal Server Error\n"))
                            self.transport.close()
                        elif self.transport is not None:
                            self.transport.abort()
                        return
                    finally:
                        self.server.release(request)
                self.queue.popleft()
                if len(self.queue) <= MAX_PIPELINED:
                    self.resume_reading("pipeline")
                body = request.content
                if body is not None and not body.complete:
                    if request.headers.get("Expect", "").strip().lower() == "100-continue":
                        # Answered without asking for the body: the client may
                        # never send it, so its bytes cannot be told from the
                        # next request's.  Close (RFC 9110 §10.1.1).
                        request.keep_alive = False
                    body.discard()
                response = request.response
                if request.upgrade or not request.keep_alive or self.closing or (response is not None and not response.ended):
                    if self.transport is not None:
                        self.transport.close()
                    return
        finally:
            self.task = None
        if self.transport is not None and not self.transport.is_closing():
            self._arm_idle(self.server.limits.keepalive_timeout)

    async def _finish(self, request: Request, result: object) -> None:
        """After the handler: send what it returned if it did not stream it."""
        if request.response is not None or getattr(result, "status", None) == 101:
            return  # streamed by the pipeline, or the connection was a tunnel
        status = getattr(result, "status", 500)
        body = getattr(result, "body", None)
        body = bytes(body) if isinstance(body, (bytes, bytearray)) else b""
        headers = [(k, v) for k, v in getattr(result, "headers", {}).items() if k.lower() != "content-length"]
        response = request.start_response(status, getattr(result, "reason", "") or "", headers, len(body))
        await response.write(body)
        await response.write_eof()


class Limits:
    """What the traffic port enforces before the pipeline sees a request.

    Deadlines in seconds, sizes in bytes, 0 = no limit.  ``body_limit(target)``
    gives a request's body cap by route (the beacon's is small)."""

    __slots__ = (
        "head_timeout", "keepalive_timeout", "body_timeout", "send_timeout", "max_connections", "max_in_flight", "max_header_bytes",
        "max_headers", "max_target_bytes", "max_body_bytes", "routes", "retry_after", "via",
        "queue_delay_target", "queue_delay_interval", "min_in_flight", "in_flight_lag_target",
    )

    def __init__(
        self,
        head_timeout: float = 10.0,
        keepalive_timeout: float = 75.0,
        body_timeout: float = 30.0,
        send_timeout: float = 60.0,
        max_connections: int = 0,
        max_in_flight: int = 0,
        max_header_bytes: int = 32 * 1024,
        max_headers: int = 100,
        max_target_bytes: int = 8 * 1024,
        max_body_bytes: int = 0,
        routes: tuple[tuple[str, int], ...] = (),
        retry_after: int = 1,
        via: str = "",
        queue_delay_target: float = 0.0,
        queue_delay_interval: float = 0.1,
        min_in_flight: int = 16,
        in_flight_lag_target: float = 0.0,
    ) -> None:
        self.head_timeout = head_timeout
        self.keepalive_timeout = keepalive_timeout
        self.body_timeout = body_timeout
        self.send_timeout = send_timeout
        self.max_connections = max_connections
        self.max_in_flight = max_in_flight
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.max_target_bytes = max_target_bytes
        self.max_body_bytes = max_body_bytes
        self.routes = routes  # (path, body cap) pairs, exact paths
        self.retry_after = retry_after
        self.via = via
        # Shed new requests while the loop runs later than the target for a
        # whole interval (seconds; target 0: off): admission.QueueDelay.
        self.queue_delay_target = queue_delay_target
        self.queue_delay_interval = queue_delay_interval
        # The in-flight cap adapts between these, keeping the loop's lag
        # under in_flight_lag_target (seconds; 0: fixed at max_in_flight):
        # admission.InFlightLimit.
        self.min_in_flight = min_in_flight
        self.in_flight_lag_target = in_flight_lag_target

    def body_limit(self, target: str) -> int:
        if self.routes:
            path = target.partition("?")[0]
            for route, cap in self.routes:
                if path == route:
                    return cap
        return self.max_body_bytes


class TrafficServer:
    """The listening socket and its connections.

    ``await TrafficServer(handler).start(host, port)``; ``port``;
    ``await close(drain_timeout)`` stops listening, closes idle
    connections, lets in-flight requests finish (up to the timeout), then
    aborts what is left."""

    def __init__(self, handler: Handler, limits: Limits | None = None, on_refuse: Callable[[str], None] | None = None) -> None:
        self.handler = handler
        self.limits = limits or Limits()
        limits = self.limits
        self.in_flight_limit = InFlightLimit(limits.max_in_flight, limits.min_in_flight, limits.in_flight_lag_target)
        self.queue_delay = QueueDelay(
            limits.queue_delay_target, limits.queue_delay_interval, limit=self.in_flight_limit, idle=lambda: not self.connections
        )
        self._busy: tuple[str, bytes, bytes] = ("", b"", b"")
        self.lingering = 0  # connections answered and being closed gracefully (HttpProtocol._linger_start)
        self.connections: set[HttpProtocol] = set()
        self.in_flight = 0
        self.counts: dict[str, int] = {}
        self._on_refuse = on_refuse
        self._sockets: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def release(self, request: Request) -> None:
        """Give back a request's in-flight slot (once, whichever path ends it)."""
        if request.slot:
            request.slot = False
            self.in_flight -= 1

    def busy_response(self, keep_alive: bool = False) -> bytes:
        """The 503 a shed request gets (``Retry-After``; ``Connection:
        close`` unless ``keep_alive``), built once per second (its ``Date``)."""
        date = wire.http_date()
        if self._busy[0] != date:
            extra = (("Retry-After", str(self.limits.retry_after)),)
            text = "503 Service Unavailable: the proxy is at capacity\n"
            self._busy = (date, wire.simple_response(503, text, extra=extra), wire.simple_response(503, text, close=False, extra=extra))
        return self._busy[2] if keep_alive else self._busy[1]

    def shed_reason(self) -> str:
        """Why a new request is shed now: ``in_flight`` (the cap, which
        then grows if the loop is on time) or ``queue_delay``.  Called only
        when one of the two holds."""
        limit = self.in_flight_limit
        if self.in_flight >= limit.value:
            limit.saturated = True
            return "in_flight"
        return "queue_delay"  # the loop is late: the process is short of CPU

    def refused(self, reason: str) -> None:
        """Count a request or connection the port answered itself (400, 405,
        408, 413, 414, 431, 503); ``on_refuse`` feeds ``/metrics``."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if self._on_refuse is not None:
            self._on_refuse(reason)

    async def start(self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 511) -> None:
        """Listen.  ``backlog``: connections the kernel may hold unaccepted
        (nginx's default 511).

        The proxy accepts by itself, up to ``ACCEPT_BATCH`` per readiness,
        rather than through ``loop.create_server``: under uvloop, libuv (since
        1.45) accepts one connection per loop turn, and at twice capacity the
        listening socket held 100-170 connections for seconds while the loop
        was never more than 20 ms late; a client whose connection waits there
        is neither served nor shed (measured in load_tests/README.md)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        seen = set()
        try:
            for family, kind, proto, _name, address in infos:
                if (family, address) in seen:
                    continue
                seen.add((family, address))
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                if not port:  # every address on the same ephemeral port
                    port = sock.getsockname()[1]
                sock.listen(backlog)
                sock.setblocking(False)
        except OSError:
            for sock in self._sockets:
                sock.close()
            self._sockets = []
            raise
        for sock in self._sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)
        self.queue_delay.start()

    def _accept(self, sock: socket.socket) -> None:
        loop = self._loop
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _ACCEPT_PAUSE_ERRNOS:
                    raise
                log.error("accept failed (%s): not accepting for 1 s", exc.strerror or exc)
                loop.remove_reader(sock.fileno())
                loop.call_later(1.0, self._resume_accepting, sock)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(loop.connect_accepted_socket(lambda: HttpProtocol(self), conn))
            task.add_done_callback(_accepted)

    def _resume_accepting(self, sock: socket.socket) -> None:
        if sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    @property
    def port(self) -> int:
        assert self._sockets, "Cannot read port before start()"
        return self._sockets[0].getsockname()[1]

    async def close(self, drain_timeout: float) -> None:
        self.queue_delay.stop()
        for sock in self._sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets = []
        for conn in list(self.connections):
            conn.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.task is not None:
                conn.task.cancel()
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)


def _accepted(task: asyncio.Task) -> None:
    # A connection reset before its transport was made: nothing to answer.
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        if not isinstance(exc, OSError):
            log.error("setting up an accepted connection failed", exc_info=exc)
