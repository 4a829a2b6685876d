"""One response body through decode -> rewrite -> encode, chunk by chunk.

``BodyTransform`` glues the three pure pieces together for the respond
stage; it does no I/O and never sees aiohttp::

    bt = BodyTransform(decoder_for("gzip"),
                       lambda head: SlotRewriter(edits, charset=page_charset(content_type, head)),
                       encoder_for("br"), max_rewrite_bytes=8 << 20)
    for chunk in origin_body:
        send(bt.feed(chunk))
    send(bt.finish())

What holds:

* The rewriter is made from the first decoded bytes (``rewriter_for(head)``),
  so the charset sniff reads the page's start without decoding it twice.

* The output is a complete body in the encoder's coding; ``finish()`` ends
  the encoder's stream.
* Past ``max_rewrite_bytes`` of decoded HTML the rewriter stops: the rest of
  the page passes through unchanged (slots already rewritten stay so; a slot
  being held goes out as the origin sent it).  The page is never cut.
* ``budget`` (seconds of CPU, ``None`` = none) is the rewriting time this
  body may use: it is spent only inside ``feed``/``finish``, so time spent
  waiting for a slow origin's next chunk does not count.  Once spent, the rewriter leaves
  the remaining slots as the origin sent them (outcome ``deadline``).
* Decoder errors (``CorruptBody``, ``DecodedTooLarge``) propagate: once
  re-encoded bytes were sent there is no honest way to continue, so the
  caller aborts the response (the origin's own body was broken).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .codec import Decoder, Encoder
from .stream import OVER_CAP, SlotRewriter


class BodyTransform:
    """decode -> rewrite -> encode for one body (see the module docstring)."""

    __slots__ = ("_decoder", "_rewriter_for", "_rewriter", "_encoder", "_cap", "_decoded", "_stopped", "_budget")

    def __init__(
        self,
        decoder: Decoder,
        rewriter_for: Callable[[bytes], SlotRewriter],
        encoder: Encoder,
        *,
        max_rewrite_bytes: int,
        budget: float | None = None,
    ) -> None:
        self._decoder = decoder
        self._rewriter_for = rewriter_for
        self._rewriter: SlotRewriter | None = None
        self._encoder = encoder
        self._cap = max_rewrite_bytes
        self._decoded = 0
        self._stopped = False
        self._budget = budget

    @property
    def outcomes(self) -> dict[str, str]:
        return self._rewriter.outcomes if self._rewriter is not None else {}

    @property
    def decoded_bytes(self) -> int:
        return self._decoded

    def _rewrite(self, plain: bytes, final: bool = False) -> bytes:
        if not plain and not final:
            return b""
        # The budget is CPU time (thread_time): a process descheduled on a
        # busy machine does not lose its slots for it.  The rewriter's own
        # deadline check reads perf_counter, so it gets the remaining budget
        # from now on that clock.
        if self._rewriter is None:
            self._rewriter = self._rewriter_for(plain)
        started = time.thread_time()
        if self._budget is not None:
            self._rewriter.deadline = time.perf_counter() + self._budget
        out = self._capped(plain) if plain else b""
        if final:
            out += self._rewriter.finish()
        if self._budget is not None:
            self._budget = max(0.0, self._budget - (time.thread_time() - started))
        return out

    def _capped(self, plain: bytes) -> bytes:
        room = self._cap - self._decoded
        self._decoded += len(plain)
        if self._stopped or len(plain) <= room:
            return self._rewriter.feed(plain)
        # The page is larger than the rewrite cap: stop rewriting at the cap.
        # (Bug fixed: a chunk that crossed the cap used to be rewritten whole,
        # so a page arriving in one read was personalised past the cap.)
        self._stopped = True
        out = self._rewriter.feed(plain[:room]) if room > 0 else b""
        out += self._rewriter.stop(OVER_CAP)
        return out + self._rewriter.feed(plain[room:])

    def feed(self, chunk: bytes) -> bytes:
        return self._encoder.compress(self._rewrite(self._decoder.decompress(chunk)))

    def finish(self) -> bytes:
        tail = self._rewrite(self._decoder.flush(), final=True)
        return self._encoder.compress(tail) + self._encoder.flush()
