"""Coalescing for the upstream cache: the flight concurrent misses wait on,
the call that reaches the origin, and the body a leader already read put back
in front of the stream it came from (for a response that turned out not
storable).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .fetch import Upstream

Headers = list[tuple[str, str]]
Fetcher = Callable[[], Awaitable[Upstream]]
HeadersFetcher = Callable[[Headers], Awaitable[Upstream]]


class _PrefixedContent:
    """The origin body's reader with the bytes the cache already read put
    back in front.  Whoever reads ``response.content`` (``readany``,
    ``read_nowait``, ``at_eof``) or ``Upstream.body()`` sees the whole body,
    or the error that broke it off after the bytes read before it."""

    def __init__(self, content: Any, prefix: list[bytes], error: BaseException | None) -> None:
        self._content = content
        self._prefix = deque(chunk for chunk in prefix if chunk)
        self._error = error

    async def readany(self) -> bytes:
        if self._prefix:
            return self._prefix.popleft()
        if self._error is not None:
            raise self._error
        return await self._content.readany()

    def read_nowait(self, n: int = -1) -> bytes:
        if self._prefix:
            chunk = self._prefix.popleft()
            if 0 <= n < len(chunk):
                chunk, rest = chunk[:n], chunk[n:]
                self._prefix.appendleft(rest)
            return chunk
        if self._error is not None:
            return b""
        return self._content.read_nowait(n)

    def at_eof(self) -> bool:
        return not self._prefix and self._error is None and self._content.at_eof()

    def is_eof(self) -> bool:
        return not self._prefix and self._error is None and self._content.is_eof()

    async def iter_any(self) -> AsyncIterator[bytes]:  # pragma: no cover - aiohttp's API, for completeness
        while chunk := await self.readany():
            yield chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._content, name)


class _PrefixedResponse:
    """The origin's ``ClientResponse`` with a ``_PrefixedContent``; every
    other attribute (``release``, ``close``, ``status`` …) is the real one."""

    def __init__(self, response: Any, content: _PrefixedContent) -> None:
        self._response = response
        self.content = content

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)


# Outcomes a coalesced fetch hands its waiters besides an entry.
_UNSHAREABLE = "unshareable"  # the response must not be shared: fetch your own
_FAILED = "failed"  # the leader failed or was cancelled: fetch your own (or stale-if-error)


class _Flight:
    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def resolve(self, outcome: Any) -> None:
        if not self.future.done():
            self.future.set_result(outcome)


class _Call:
    """One ``fetch`` call's way to the origin: ``call()`` sends the request
    as the client's headers are, ``call(headers)`` with other headers (only
    when ``rewrites``).  Notes whether the origin was asked: after that,
    failing open by fetching again would ask twice."""

    __slots__ = ("fetcher", "with_headers", "called")

    def __init__(self, fetcher: Fetcher, with_headers: HeadersFetcher | None) -> None:
        self.fetcher = fetcher
        self.with_headers = with_headers
        self.called = False

    @property
    def rewrites(self) -> bool:
        return self.with_headers is not None

    def __call__(self, headers: Headers | None = None) -> Awaitable[Upstream]:
        self.called = True
        if headers is None or self.with_headers is None:
            return self.fetcher()
        return self.with_headers(headers)


def _prefixed(upstream: Upstream, chunks: list[bytes], error: BaseException | None) -> Upstream:
    assert upstream.response is not None
    content = _PrefixedContent(upstream.response.content, chunks, error)
    return dataclasses.replace(upstream, response=_PrefixedResponse(upstream.response, content))
