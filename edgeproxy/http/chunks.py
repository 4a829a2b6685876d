"""Body bytes handed from a protocol's parser callbacks to the coroutine
that reads them: the one queue both directions use (``request.Body`` for
what the client sends, ``upstream.OriginBody`` for what the origin sends).

The feeding side calls ``_append`` / ``feed_eof`` / ``fail`` from the event
loop's callbacks; the reading side awaits ``_take``.  What differs between
the two bodies (their flow-control hooks, limits and the errors a stall
becomes) stays in the subclasses.
"""

from __future__ import annotations

import asyncio
from collections import deque

from . import wire


class Chunks:
    """A FIFO of byte chunks with an end (``feed_eof``) or an error (``fail``)."""

    __slots__ = ("_chunks", "_size", "_eof", "_exc", "_waiter")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0  # bytes queued
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future | None = None

    def _append(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        """The body broke off: the reader gets ``exc`` once the queue is empty."""
        if not self._eof:
            self._exc = exc
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _take(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> bytes:
        """The next chunk, ``b""`` at the end; ``TimeoutError`` when nothing
        arrives for ``timeout`` seconds (0 or None: no limit)."""
        while not self._chunks:
            if self._exc is not None:
                raise self._exc
            if self._eof:
                return b""
            self._waiter = waiter = loop.create_future()
            try:
                await wire.wait(loop, waiter, timeout)
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        self._size -= len(data)
        return data
