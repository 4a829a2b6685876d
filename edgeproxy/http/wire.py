"""HTTP/1.1 wire format the traffic port writes: status lines, heads, chunks.

Pure functions over bytes and header lists; nothing here touches a socket.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from http import HTTPStatus

# Status codes whose responses never carry a body (RFC 9110 §6.4.1).
NO_BODY_STATUSES = frozenset({204, 304})

_REASONS = {s.value: s.phrase for s in HTTPStatus}

_date_second = -1
_date_text = ""


def http_date() -> str:
    """``Date`` for a response, formatted once per second."""
    global _date_second, _date_text
    now = int(time.time())
    if now != _date_second:
        _date_second, _date_text = now, formatdate(now, usegmt=True)
    return _date_text


def header_text(value: bytes) -> str:
    """A header value's bytes as text, the way aiohttp reads them: UTF-8, so
    a raw UTF-8 ``Location`` or ``Content-Disposition`` goes back out byte for
    byte (bug fixed: decoding everything as latin-1 double-encoded such
    values); bytes that are not UTF-8 as latin-1 (RFC 9110 §5.5), which go
    out as the same characters in UTF-8."""
    if value.isascii():
        return value.decode("ascii")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def decode_fields(raw: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]) -> list[tuple[str, str]]:
    """Header fields as text: names as latin-1, values as ``header_text``
    reads them.  An all-ASCII head (the usual one) is decoded in C-level
    passes over all fields at once, not a call per field."""
    if not raw:
        return []
    names, values = zip(*raw)
    text_values = b"\n".join(values)
    if text_values.isascii():
        # A value holds no line feed (the parsers refuse one), so splitting
        # on it gives the fields back; the count is checked all the same.
        decoded = text_values.decode("ascii").split("\n")
        texts = b"\n".join(names).decode("latin-1").split("\n")
        if len(decoded) == len(raw) == len(texts):
            return list(zip(texts, decoded))
    return [(name.decode("latin-1"), header_text(value)) for name, value in raw]


def reason_for(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def response_head(status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
    """The status line and header block, CRLF-terminated.

    Values are written as UTF-8 (what the origin's bytes decode from, see
    ``header_text``).  A CR or LF inside a name or value would split the
    response: refused with ``ValueError``, as aiohttp does."""
    return f"HTTP/1.1 {status} {reason or reason_for(status)}\r\n".encode("utf-8") + header_lines(headers) + b"\r\n"


def header_lines(headers: list[tuple[str, str]]) -> bytes:
    """``Name: value\\r\\n`` for each header, as ``response_head`` writes
    them (and refuses them: ``ValueError`` on a CR or LF)."""
    text = "".join([f"{name}: {value}\r\n" for name, value in headers])
    if text.count("\r") != len(headers) or text.count("\n") != len(headers):  # one CRLF each
        bad = [name for name, value in headers if "\r" in name or "\n" in name or "\r" in value or "\n" in value]
        raise ValueError(f"newline in response header {bad[0] if bad else '?'!r}")
    return text.encode("utf-8")


def simple_response(status: int, text: str = "", *, close: bool = True, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A whole small response the protocol answers by itself (400, 405, 503…)."""
    body = text.encode("utf-8")
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), ("Date", http_date()), *extra]
    if close:
        headers.append(("Connection", "close"))
    return response_head(status, reason_for(status), headers) + body


def chunk(data: bytes) -> tuple[bytes, bytes, bytes]:
    """One chunk of a chunked body (RFC 9112 §7.1), for ``writelines``."""
    return (b"%x\r\n" % len(data), data, b"\r\n")


LAST_CHUNK = b"0\r\n\r\n"


# ---------------------------------------------------------------------------
# Waiting on one future with a deadline.  ``asyncio.timeout`` costs a
# Timeout object, two coroutine calls and three ``get_running_loop()`` calls
# (each a getpid() system call on Python 3.11); the hot path waits on a
# single future, for which one timer that fails it is enough.


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


async def wait(loop: asyncio.AbstractEventLoop, future: asyncio.Future, seconds: float | None):
    """``await future``, or ``TimeoutError`` after ``seconds`` (0 or None:
    no limit)."""
    if not seconds:
        return await future
    timer = loop.call_later(seconds, _expire, future)
    try:
        return await future
    finally:
        timer.cancel()


async def wait_until(loop: asyncio.AbstractEventLoop, future: asyncio.Future, deadline: float):
    """``await future``, or ``TimeoutError`` at ``loop.time()`` ``deadline``."""
    timer = loop.call_at(deadline, _expire, future)
    try:
        return await future
    finally:
        timer.cancel()
