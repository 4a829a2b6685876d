"""What the traffic port hands the pipeline: the request, its body, its response.

``Request`` is built by ``protocol.HttpProtocol.on_headers_complete`` and
lives until its response has ended; ``Body`` is fed by the parser's
``on_body`` / ``on_message_complete`` and read by the handler;
``Request.start_response`` writes the head and returns the ``Response`` the
body goes through.  None of them owns the socket: each calls back into its
connection (``conn``) to write, pause or resume reading, or refuse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote

from multidict import CIMultiDict, MultiDict

from . import wire
from .chunks import Chunks

if TYPE_CHECKING:  # pragma: no cover
    from .protocol import HttpProtocol

# Request bodies: reading from the client pauses above HIGH buffered bytes,
# resumes below LOW (the origin or a slow handler sets the pace).
BODY_HIGH = 256 * 1024
BODY_LOW = 64 * 1024


class ClientGone(ConnectionResetError):
    """The client closed the connection while its response was being written."""


class Body(Chunks):
    """A request body as it arrives; ``async for chunk in body`` reads it.

    Fed by the protocol's parser callbacks, read by the handler (usually as
    the payload of the origin request).  Reading from the socket pauses while
    more than ``BODY_HIGH`` bytes wait here."""

    __slots__ = ("_conn", "_discard", "_received", "limit")

    def __init__(self, conn: "HttpProtocol", limit: int = 0) -> None:
        super().__init__()
        self._conn = conn
        self._received = 0
        self.limit = limit  # bytes (0: none); past it the request gets a 413
        self._discard = False

    def feed(self, data: bytes) -> None:
        self._received += len(data)
        if self.limit and self._received > self.limit:
            self._conn.refuse(413, f"the request body is over {self.limit} bytes", "body_too_large")
            return
        if self._discard:
            return
        self._append(data)
        if self._size > BODY_HIGH:
            self._conn.pause_reading("body")

    def discard(self) -> None:
        """The handler is done without reading it all: drop the rest as it comes."""
        self._discard = True
        self._chunks.clear()
        self._size = 0
        self._conn.resume_reading("body")

    @property
    def complete(self) -> bool:
        return self._eof

    async def read(self) -> bytes:
        """The next chunk; ``b""`` at the end of the body."""
        conn = self._conn
        timeout = conn.server.limits.body_timeout
        try:
            data = await self._take(conn.loop, timeout)
        except TimeoutError:
            conn.refuse(408, "the request body did not arrive in time", "body_timeout")
            raise ClientGone(f"no request body bytes for {timeout:g}s") from None
        if data and self._size < BODY_LOW:
            conn.resume_reading("body")
        return data

    def __aiter__(self):
        return self._iterate()

    def iter_any(self):
        """The chunks as they arrive (``aiohttp.StreamReader.iter_any``)."""
        return self._iterate()

    async def _iterate(self):
        while True:
            data = await self.read()
            if not data:
                return
            yield data


class _Values:
    """``request[key]``: values stages and hooks attach to a request, as
    aiohttp's requests are mappings."""

    __slots__ = ("_state",)

    def __getitem__(self, key: str):
        if self._state is None:
            raise KeyError(key)
        return self._state[key]

    def __setitem__(self, key: str, value) -> None:
        if self._state is None:
            self._state = {}
        self._state[key] = value

    def __contains__(self, key: str) -> bool:
        return self._state is not None and key in self._state

    def get(self, key: str, default=None):
        return default if self._state is None else self._state.get(key, default)


# Response fields start_response looks at: framing (its own) and Date.
_FRAMING_OR_DATE = frozenset({"content-length", "date", "transfer-encoding", "connection", "keep-alive"})
_KEPT_AS_IS = frozenset({"content-length", "date"})


class Request(_Values):
    """One request, as the pipeline reads it.

    The subset of ``aiohttp.web.BaseRequest`` the pipeline and its hooks
    use (``method``, ``path``, ``raw_path``, ``path_qs``, ``query``,
    ``query_string``, ``headers``, ``host``, ``scheme``, ``secure``,
    ``remote``, ``transport``, ``version``, ``body_exists`` /
    ``can_read_body``, ``content``, and ``request[key]`` for per-request
    values), plus :meth:`start_response`.  Built in ``on_headers_complete``;
    lives until its response has ended."""

    __slots__ = (
        "method", "raw_path", "version", "headers", "remote", "transport", "content", "body_exists",
        "keep_alive", "response", "upgrade", "upgrade_data", "refused", "slot", "_conn", "_path", "_query",
    )

    def __init__(self, conn: "HttpProtocol", method: str, raw_path: str, version: tuple[int, int], headers: CIMultiDict, keep_alive: bool) -> None:
        self._conn = conn
        self._state: dict | None = None  # request[key] values
        self.method = method
        self.raw_path = raw_path
        self.version = version
        self.headers = headers
        self.remote = conn.peer
        self.transport = conn.transport
        self.keep_alive = keep_alive
        self.content: Body | None = None
        self.body_exists = False
        self.response: Response | None = None
        self.upgrade = False
        self.upgrade_data = b""  # bytes read after an upgrade head, before the tunnel takes over
        self.refused: bytes | None = None  # a response the protocol gives itself
        self.slot = False  # holds one of the server's in-flight slots
        self._path: str | None = None
        self._query: MultiDict | None = None

    @property
    def content_length(self) -> int | None:
        """The declared body length (the parser has checked the field)."""
        value = self.headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def can_read_body(self) -> bool:
        return self.body_exists

    @property
    def secure(self) -> bool:
        return self.transport is not None and self.transport.get_extra_info("sslcontext") is not None

    @property
    def host(self) -> str:
        return self.headers.get("Host", "")

    @property
    def scheme(self) -> str:
        return "https" if self.secure else "http"

    @property
    def path_qs(self) -> str:
        """Path and query as received (an absolute-form target's, without
        its scheme and authority)."""
        raw = self.raw_path
        if raw.startswith("/") or "://" not in raw:
            return raw
        from yarl import URL

        return URL(raw, encoded=True).raw_path_qs

    @property
    def query_string(self) -> str:
        return self.path_qs.partition("?")[2]

    @property
    def path(self) -> str:
        """The decoded path, without the query (an absolute-form target's path)."""
        if self._path is None:
            raw = self.raw_path
            if not raw.startswith("/"):
                from yarl import URL

                self._path = URL(raw, encoded=True).path if "://" in raw else raw
            else:
                path = raw.partition("?")[0]
                self._path = unquote(path) if "%" in path else path
        return self._path

    @property
    def query(self) -> MultiDict:
        if self._query is None:
            raw = self.raw_path
            if not raw.startswith("/") and "://" in raw:
                from yarl import URL

                self._query = MultiDict(URL(raw, encoded=True).query)
            else:
                query = raw.partition("?")[2]
                self._query = MultiDict(parse_qsl(query, keep_blank_values=True) if query else ())
        return self._query

    def start_response(self, status: int, reason: str, headers: list[tuple[str, str]], length: int | None = None) -> "Response":
        """Write the response head now; returns the body writer.

        ``length`` (or a ``Content-Length`` among ``headers``) frames the body;
        without either an HTTP/1.1 client gets chunked framing and an HTTP/1.0
        client a body ended by closing.  A ``Date`` is added when absent; no
        ``Server`` is added.  HEAD, 1xx, 204 and 304 carry no body (writes are
        dropped)."""
        assert self.response is None, "the response was already started"
        if status == 204 or 100 <= status < 200:
            # RFC 9110 §8.6: no Content-Length on a 1xx or 204, whatever the
            # origin announced (found by load_tests.fuzz: "a 204 announcing a body").
            headers = [item for item in headers if item[0].lower() != "content-length"]
            length = None
        out: list[tuple[str, str]] = []
        declared = False
        has_date = False
        # The usual head has none of the framing fields and at most its
        # Date and Content-Length (kept): found by one C-level pass over all
        # names, and the list copied as it is.
        lowers = "\n".join([item[0] for item in headers]).lower().split("\n") if headers else []
        present = _FRAMING_OR_DATE.intersection(lowers)
        if len(lowers) == len(headers) and present <= _KEPT_AS_IS and (length is None or "content-length" not in present):
            out = list(headers)
            declared = "content-length" in present
            has_date = "date" in present
            headers = ()
        for item in headers:
            lower = item[0].lower()
            if lower in _FRAMING_OR_DATE:  # rare: one set lookup for the usual field
                if lower == "content-length":
                    if length is not None:
                        continue
                    declared = True
                elif lower == "date":
                    has_date = True
                else:
                    continue
            out.append(item)
        if length is not None:
            out.append(("Content-Length", str(length)))
            declared = True
        if not has_date:
            out.append(("Date", wire.http_date()))
        via = self._conn.server.limits.via
        if via:
            out.append(("Via", f"1.1 {via}"))  # RFC 9110 §7.6.3, after the origin's own
        bodyless = self.method == "HEAD" or status in wire.NO_BODY_STATUSES or 100 <= status < 200
        chunked = False
        if not bodyless and not declared:
            if self.version >= (1, 1):
                chunked = True
                out.append(("Transfer-Encoding", "chunked"))
            else:
                self.keep_alive = False  # the end of the body is the end of the connection
        conn = self._conn
        if conn.closing:
            self.keep_alive = False
        if not self.keep_alive:
            out.append(("Connection", "close"))
        elif self.version < (1, 1):
            out.append(("Connection", "keep-alive"))
        head = wire.response_head(status, reason, out)
        if self.version < (1, 1):
            head = b"HTTP/1.0" + head[8:]
        response = Response(conn, status, chunked, bodyless, out)
        self.response = response
        conn.cork(head)
        return response

    def start_prebuilt(self, status: int, reason: str, block: bytes, headers: list[tuple[str, str]], length: int, has_date: bool) -> "Response":
        """``start_response`` for a head whose lines are already bytes.

        ``block`` is ``headers`` written as ``Name: value\\r\\n`` lines (the
        caller checked them, and left out the framing fields); what is added
        here, and the bytes on the wire, are ``start_response``'s with the
        same ``length``.  A cache hit memoises most of its block per stored
        entry instead of formatting it per request."""
        assert self.response is None, "the response was already started"
        tail = [("Content-Length", str(length))]
        if not has_date:
            tail.append(("Date", wire.http_date()))
        via = self._conn.server.limits.via
        if via:
            tail.append(("Via", f"1.1 {via}"))
        conn = self._conn
        if conn.closing:
            self.keep_alive = False
        if not self.keep_alive:
            tail.append(("Connection", "close"))
        elif self.version < (1, 1):
            tail.append(("Connection", "keep-alive"))
        bodyless = self.method == "HEAD" or status in wire.NO_BODY_STATUSES or 100 <= status < 200
        version = "HTTP/1.1" if self.version >= (1, 1) else "HTTP/1.0"
        head = b"".join((
            f"{version} {status} {reason or wire.reason_for(status)}\r\n".encode("utf-8"),
            block,
            wire.header_lines(tail),
            b"\r\n",
        ))
        headers.extend(tail)
        response = Response(conn, status, False, bodyless, headers)
        self.response = response
        conn.cork(head)
        return response


class Response:
    """The body of one response, written to the client's transport as it comes.

    ``write`` waits while the client's send buffer is full (flow control);
    ``write_eof`` ends the body (the last chunk when chunked)."""

    __slots__ = ("_conn", "status", "chunked", "bodyless", "ended", "body_length", "_head")

    def __init__(self, conn: "HttpProtocol", status: int, chunked: bool, bodyless: bool, head: list[tuple[str, str]]) -> None:
        self._conn = conn
        self._head = head
        self.status = status
        self.chunked = chunked
        self.bodyless = bodyless
        self.ended = False
        self.body_length = 0

    @property
    def headers(self) -> CIMultiDict:
        """The head as sent (read-only use, as ``StreamResponse.headers``
        after ``prepare``)."""
        return CIMultiDict(self._head)

    async def write(self, data: bytes) -> None:
        if not data or self.bodyless:
            return
        conn = self._conn
        if conn.transport is None or conn.transport.is_closing():
            raise ClientGone("the client closed the connection")
        self.body_length += len(data)
        head = conn.corked
        if self.chunked:
            if head is not None:
                conn.corked = None
                conn.transport.writelines((head, *wire.chunk(data)))
            else:
                conn.transport.writelines(wire.chunk(data))
        elif head is not None:
            conn.corked = None
            conn.transport.writelines((head, data))
        else:
            conn.transport.write(data)
        if conn.write_paused:
            await conn.drain()

    async def write_eof(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self.chunked:
            self._conn.write(wire.LAST_CHUNK)
        else:
            self._conn.uncork()
