"""Stage 5, respond: the response head, then the body streamed to the client.

The head is built by pure functions (``response_headers`` and friends) from
the origin's headers and the request's ``Plan``; ``send`` does the I/O.

Two ways a body leaves:

* **pass-through** (not HTML, not 200, no edit, ``no-transform``, an encoding
  the proxy cannot decode, over the size cap): the origin's bytes as they
  arrive, in constant memory, with the origin's framing headers.
* **rewritten**: decode -> rewrite -> encode (``rewrite.body.BodyTransform``).
  When the whole body is already in hand (a cache hit, a small page that
  arrived in one go) it is transformed before the head is sent, so the head
  carries an exact ``Content-Length`` and ``Server-Timing``; if that fails the
  origin's bytes go out unchanged.  Otherwise the head goes out with the first
  rewritten bytes and the rest streams; a response showing a
  frequency-capped variant holds its head until that slot has been seen, so
  the view is only counted when the visitor really got it.

An origin that breaks off mid-body aborts the client's response (the
connection is closed without a clean end), never a silently truncated page.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import time
from collections.abc import Callable, Sequence

from aiohttp import web

from .errors import UpstreamBodyError
from .fetch import Upstream
from .http import wire
from .model import Decision, SetCookie
from .record import Record
from .render_cache import RenderCache, render_key
from .rewrite import decoder_for, encoder_for, negotiate, page_charset
from .rewrite.body import BodyTransform
from .rewrite.codec import DEFAULT_MAX_DECODED_BYTES, CodecError
from .rewrite.stream import SlotRewriter

log = logging.getLogger("edgeproxy.respond")

HTML_TYPES = ("text/html", "application/xhtml+xml")
# Cache-Control directives that let a shared cache store or serve a response:
# removed from personalised responses (RFC 9111 §5.2.2).
_SHARED_DIRECTIVES = frozenset({"public", "s-maxage", "proxy-revalidate", "private"})
# Origin headers that no longer describe a rewritten body.
_REPRESENTATION = frozenset({"content-length", "content-encoding", "content-md5", "digest", "repr-digest", "content-digest", "accept-ranges"})
_VALIDATORS = frozenset({"etag", "last-modified"})
# One Cache-Control directive: token[=token or quoted-string], up to a comma.
_DIRECTIVE = re.compile(r'(?:[^,"]|"(?:[^"\\]|\\.)*"?)+')
MAX_EXPLAIN_BYTES = 6 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What the earlier stages decided for this response.

    ``edits`` may be empty (nothing to rewrite).  ``cookies`` are set on an
    HTML response only.  ``explain`` (preview token holders only) becomes the
    ``X-Edge-Explain`` header; ``secure`` says the client came over HTTPS.
    ``budget`` is the rewriting time left of the request's personalisation
    budget, in seconds (``None``: unlimited); time waiting for the origin
    does not count against it.
    ``on_applied`` runs once the rewriter knows which slots were applied and
    returns extra cookies (the frequency-cap cookie) for the head.
    """

    decision: Decision
    edits: dict
    cookies: tuple[SetCookie, ...] = ()
    secure: bool = False
    explain: Callable[[], dict] | None = None
    budget: float | None = None
    capped: frozenset[str] = frozenset()
    on_applied: Callable[[dict[str, str]], SetCookie | None] | None = None


# ---------------------------------------------------------------------------
# Pure header functions
# ---------------------------------------------------------------------------
def header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    lower = name.lower()
    for key, value in headers:
        if key.lower() == lower:
            return value
    return None


def is_html(content_type: str | None) -> bool:
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() in HTML_TYPES


@functools.lru_cache(maxsize=256)
def private_cache_control(value: str | None) -> str:
    """``Cache-Control`` for a personalised response: ``private``, the
    origin's ``max-age`` and other browser directives kept, every directive
    that lets a shared cache store it removed (CONTRACT §4)."""
    kept = ["private"]
    # Split on commas outside quoted strings (RFC 9111 §5.2): a qualified
    # ``private="Set-Cookie, X-Foo"`` is one directive.  (Bug fixed: a plain
    # split left ``X-Foo"`` behind as a broken directive.)
    for match in _DIRECTIVE.finditer(value or ""):
        directive = match.group(0).strip()
        if not directive:
            continue
        name = directive.split("=", 1)[0].strip().lower()
        if name in _SHARED_DIRECTIVES:
            continue
        kept.append(directive)
    return ", ".join(kept)


def format_cookie(cookie: SetCookie, *, secure: bool) -> str:
    """A ``Set-Cookie`` value: ``HttpOnly; SameSite=Lax``, ``Secure`` on
    HTTPS (CONTRACT §5)."""
    parts = [f"{cookie.name}={cookie.value}", "Path=/", f"Max-Age={max(0, cookie.max_age)}", "HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def add_vary(headers: list[tuple[str, str]], name: str) -> None:
    for i, (key, value) in enumerate(headers):
        if key.lower() == "vary":
            tokens = [t.strip().lower() for t in value.split(",")]
            if name.lower() not in tokens and "*" not in tokens:
                headers[i] = (key, f"{value}, {name}")
            return
    headers.append(("Vary", name))


def response_headers(
    origin: Sequence[tuple[str, str]],
    *,
    personalised: bool,
    coding: str | None,
    cookies: Sequence[str],
) -> list[tuple[str, str]]:
    """The head for the client.

    ``personalised``: the body is (or may be) rewritten for this visitor:
    ``Cache-Control: private``, validators dropped, representation headers
    replaced.  ``coding`` is the body's new ``Content-Encoding`` when the proxy
    re-encodes (``None`` = the origin's body and framing are kept).
    ``cookies`` are ``Set-Cookie`` values; adding any also makes the response
    private, so no shared cache hands one visitor's cookie to another.

    One pass over the origin's fields: the names this response changes are
    one set (``_CHANGED``), everything else is copied as it is.
    """
    private = personalised or bool(cookies)
    changed = _CHANGED[(coding is not None, personalised, private)]
    out: list[tuple[str, str]] = []
    cache_control: list[str] | None = None
    for item in origin:
        lower = item[0].lower()
        if lower not in changed:
            out.append(item)
        elif lower == "cache-control":
            # Every Cache-Control line is one list (RFC 9110 §5.3).  (Bug
            # fixed: lines after the first were dropped with their max-age.)
            if cache_control is None:
                cache_control = [item[1]]
                out.append(item)  # its place; replaced below
                cc_at = len(out) - 1
            else:
                cache_control.append(item[1])
        # else: a representation header or a validator, dropped
    if private:
        if cache_control is not None:
            out[cc_at] = (out[cc_at][0], private_cache_control(", ".join(cache_control)))
        else:
            out.append(("Cache-Control", "private"))
    if coding is not None:
        if coding != "identity":
            out.append(("Content-Encoding", coding))
        add_vary(out, "Accept-Encoding")
    for value in cookies:
        out.append(("Set-Cookie", value))
    return out


# The origin's fields response_headers changes, by (re-encoded, personalised,
# private): representation headers when re-encoded, validators when
# personalised, Cache-Control when private.
_CHANGED = {
    (recoded, personalised, private): frozenset(
        (_REPRESENTATION if recoded else set()) | (_VALIDATORS if personalised else set()) | ({"cache-control"} if private else set())
    )
    for recoded in (False, True)
    for personalised in (False, True)
    for private in (False, True)
}


# Response fields the proxy writes itself on the traffic port.
_OWN = frozenset({"server-timing"})
_OWN_WITH_ID = _OWN | {"x-request-id"}

_AGE = "\x00age"  # where a hit's per-request Age goes in a prebuilt head
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


@dataclasses.dataclass(frozen=True, slots=True)
class PrebuiltHead:
    """A cache hit's personalised head, but for the per-request lines: the
    headers before ``Age`` and after it, as lists and as bytes.  ``stored``
    is held so the ``id`` it is memoised under stays its own."""

    stored: tuple[tuple[str, str], ...]
    before: list[tuple[str, str]]
    before_bytes: bytes
    after: list[tuple[str, str]]
    after_bytes: bytes
    has_date: bool


_PREBUILT: dict[tuple[int, str, bool], PrebuiltHead] = {}
MAX_PREBUILT_HEADS = 4096


def prebuilt_head(stored: tuple[tuple[str, str], ...], coding: str, drop_request_id: bool) -> PrebuiltHead | None:
    """What ``response_headers(personalised=True)``, ``_Client.start`` and
    ``Request.start_response`` make of a stored entry's headers (with
    ``Age`` last, no cookies), formatted once per entry and coding rather
    than per hit.  ``None`` when a header would be refused (the slow path
    raises as before)."""
    key = (id(stored), coding, drop_request_id)
    found = _PREBUILT.get(key)
    if found is not None and found.stored is stored:
        return found
    kept: list[tuple[str, str]] = []
    has_date = False
    for name, value in response_headers([*stored, ("Age", _AGE)], personalised=True, coding=coding, cookies=()):
        lower = name.lower()
        if lower in _FRAMING or lower == "server-timing" or (drop_request_id and lower == "x-request-id"):
            continue
        has_date = has_date or lower == "date"
        kept.append((name, value))
    at = kept.index(("Age", _AGE))
    before, after = kept[:at], kept[at + 1:]
    try:
        head = PrebuiltHead(stored, before, wire.header_lines(before), after, wire.header_lines(after), has_date)
    except ValueError:
        return None
    if len(_PREBUILT) >= MAX_PREBUILT_HEADS:
        _PREBUILT.clear()
    _PREBUILT[key] = head
    return head


# Stages every HTML response names in Server-Timing (CONTRACT §4).
HTML_STAGES = ("classify", "choose", "origin", "rewrite")


def server_timing(rec: Record) -> str:
    """``Server-Timing`` for the client.  On HTML every stage is named, a
    stage that did not run (no variant to apply, a bot, an XHR) as ``dur=0``.
    (Bug fixed: a page with nothing to rewrite carried no ``rewrite``.)  The
    zeros go in the header only, not into the record's stage metrics."""
    timing = rec.server_timing()
    if rec.html:
        missing = [f"{stage};dur=0.00" for stage in HTML_STAGES if stage not in rec.timings]
        if missing:
            timing = ", ".join(missing) + ", " + timing
    return timing


def explain_header(trace: dict) -> str:
    """``X-Edge-Explain``: compact ASCII JSON, cut to a safe header size."""
    import json

    text = json.dumps(trace, separators=(",", ":"), ensure_ascii=True, default=str)
    if len(text) > MAX_EXPLAIN_BYTES:
        slim = {k: trace[k] for k in ("slots", "cache", "holdout", "bot") if k in trace}
        slim["truncated"] = True
        text = json.dumps(slim, separators=(",", ":"), ensure_ascii=True, default=str)[:MAX_EXPLAIN_BYTES]
    return text


# ---------------------------------------------------------------------------
# What to do with the body
# ---------------------------------------------------------------------------
def rewrite_reason(upstream: Upstream, method: str, plan: Plan, max_rewrite_bytes: int) -> str | None:
    """``None`` when the body should be rewritten, else why not (a short
    reason for the record)."""
    if not plan.edits:
        return "no-edit"
    if method != "GET" or upstream.status != 200:
        return "status"
    if not is_html(upstream.header("content-type")):
        return "not-html"
    cache_control = (upstream.header("cache-control") or "").lower()
    if "no-transform" in cache_control:
        return "no-transform"
    length = upstream.content_length
    if length is not None and length > max_rewrite_bytes:
        return "too-large"
    if not decodable(upstream.header("content-encoding")):
        return "encoding"
    return None


class _Client:
    """The client's response: prepared lazily, writes counted."""

    def __init__(self, request: web.Request, rec: Record, render_cache: RenderCache | None, url: str) -> None:
        self.request = request
        self.rec = rec
        self.response: web.StreamResponse | None = None
        self.render_cache = render_cache
        self.url = url

    async def start(self, status: int, reason: str, headers: list[tuple[str, str]], *, length: int | None = None) -> None:
        self.rec.status = status
        if not isinstance(self.request, web.BaseRequest):
            # The traffic port's own request (edgeproxy.http): the head goes
            # out as prebuilt bytes; our request id and Server-Timing replace
            # any the origin sent (one pass).
            own = _OWN_WITH_ID if self.rec.request_id else _OWN
            headers = [h for h in headers if h[0].lower() not in own]
            if self.rec.request_id:
                headers.append(("X-Request-ID", self.rec.request_id))
            headers.append(("Server-Timing", server_timing(self.rec)))
            self.response = self.request.start_response(status, reason, headers, length)
            return
        if self.rec.request_id:  # ours replaces any the origin echoed
            headers = [h for h in headers if h[0].lower() != "x-request-id"]
            headers.append(("X-Request-ID", self.rec.request_id))
        resp = web.StreamResponse(status=status, reason=reason or None)
        for name, value in headers:
            resp.headers.add(name, value)
        if length is not None:
            resp.content_length = length
        resp.headers["Server-Timing"] = server_timing(self.rec)
        self.response = resp
        await resp.prepare(self.request)

    def start_prebuilt(self, status: int, reason: str, head: PrebuiltHead, age: str, cookies: list[str], length: int) -> None:
        """``start`` on the traffic port for a cache hit: only the
        per-request lines (Age, Set-Cookie, X-Request-ID, Server-Timing and
        the framing) are formatted; the bytes are ``start``'s."""
        rec = self.rec
        rec.status = status
        extra = [("Set-Cookie", value) for value in cookies]
        if rec.request_id:
            extra.append(("X-Request-ID", rec.request_id))
        extra.append(("Server-Timing", server_timing(rec)))
        block = b"".join((head.before_bytes, b"Age: %s\r\n" % age.encode("ascii"), head.after_bytes, wire.header_lines(extra)))
        headers = [*head.before, ("Age", age), *head.after, *extra]
        self.response = self.request.start_prebuilt(status, reason, block, headers, length, head.has_date)

    async def write(self, data: bytes) -> None:
        if data:
            assert self.response is not None, "Cannot write() before start()"
            await self.response.write(data)
            self.rec.bytes_out += len(data)

    async def end(self) -> None:
        assert self.response is not None, "Cannot end() before start()"
        await self.response.write_eof()

    def abort(self) -> None:
        """Close the connection without a clean end of the body."""
        self.rec.aborted = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()


async def send(
    request: web.Request,
    upstream: Upstream,
    plan: Plan,
    rec: Record,
    *,
    max_rewrite_bytes: int,
    max_slot_bytes: int,
    render_cache: RenderCache | None = None,
    url: str = "",
) -> web.StreamResponse:
    """Send ``upstream`` to the client, rewritten per ``plan`` where it can be.

    ``render_cache`` memoises rewritten bodies that came from memory (the
    upstream cache), keyed by ``url``, the body and the edits."""
    client = _Client(request, rec, render_cache, url)
    html = is_html(upstream.header("content-type"))
    rec.html = html
    why_not = rewrite_reason(upstream, request.method, plan, max_rewrite_bytes)
    cookies = [format_cookie(c, secure=plan.secure) for c in plan.cookies] if html else []
    try:
        if why_not is None:
            await _send_rewritten(client, upstream, plan, rec, max_rewrite_bytes, max_slot_bytes, cookies)
        else:
            if why_not not in ("no-edit", "status", "not-html"):
                rec.fail_open(why_not)
            # HEAD of a page that would be personalised: the same head as the
            # GET (RFC 9110 §9.3.2), including the coding the GET would be
            # re-encoded in.  (Bug fixed: HEAD showed the origin's coding, and
            # made pages the GET passes through private.)
            personalised = request.method == "HEAD" and rewrite_reason(upstream, "GET", plan, max_rewrite_bytes) is None
            coding = negotiate(request.headers.get("Accept-Encoding")) if personalised else None
            headers = response_headers(upstream.headers, personalised=personalised, coding=coding, cookies=cookies)
            if plan.explain is not None:
                headers.append(("X-Edge-Explain", explain_header(plan.explain())))
            await _send_through(client, upstream, headers, keep_length=not personalised)
    finally:
        if rec.aborted:
            upstream.close()  # a broken body: never back into the pool
        else:
            upstream.release()
    assert client.response is not None
    return client.response


async def _send_through(client: _Client, upstream: Upstream, headers: list[tuple[str, str]], *, keep_length: bool = True) -> None:
    """The origin's body as it arrives, with the origin's framing."""
    length = upstream.content_length if keep_length else None
    await client.start(upstream.status, upstream.reason, headers, length=length)
    if upstream.response is None and upstream.body_bytes is None:
        await client.end()
        return
    try:
        async for chunk in upstream.body():
            await client.write(chunk)
    except UpstreamBodyError as exc:
        log.warning("%s %s: %s; aborting the response", client.request.method, client.request.path, exc)
        client.rec.fail_open("origin-broke-off")
        client.abort()
        return
    await client.end()


class _Body:
    """The origin's body for the rewrite path: ``ready()`` waits for the
    first bytes and takes whatever else has already arrived (so a page that
    came in one go is known complete before the head is sent); ``rest()``
    continues the same stream."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._it = upstream.body().__aiter__() if upstream.body_bytes is None else None

    async def ready(self) -> tuple[list[bytes], bool]:
        upstream = self.upstream
        if self._it is None:
            return ([upstream.body_bytes] if upstream.body_bytes else []), True
        try:
            first = await self._it.__anext__()
        except StopAsyncIteration:
            return [], True
        chunks = [first]
        response = upstream.response
        if type(upstream) is Upstream and response is not None:
            # A plain origin stream: take what is buffered without waiting.
            content = response.content
            try:
                while True:
                    more = content.read_nowait()
                    if not more:
                        break
                    chunks.append(more)
            except Exception as exc:  # aiohttp payload/connection errors
                raise UpstreamBodyError(f"origin body broke off: {exc!r}") from exc
            return chunks, content.at_eof()
        return chunks, False

    async def rest(self):
        if self._it is None:
            return
        async for chunk in self._it:
            yield chunk


async def _send_rewritten(
    client: _Client, upstream: Upstream, plan: Plan, rec: Record, max_rewrite_bytes: int, max_slot_bytes: int, cookies: list[str]
) -> None:
    request = client.request
    coding = negotiate(request.headers.get("Accept-Encoding"))
    try:
        body_stream = _Body(upstream)
        chunks, complete = await body_stream.ready()
    except UpstreamBodyError as exc:
        # Nothing sent yet: the client gets a 502 rather than half a page.
        log.warning("%s %s: %s", request.method, request.path, exc)
        rec.fail_open("origin-broke-off")
        rec.aborted = True
        await client.start(502, "Bad Gateway", [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")])
        await client.write(b"502 Bad Gateway: the origin's response broke off\n")
        await client.end()
        return
    first = b"".join(chunks)
    started = time.perf_counter()

    def make_transform() -> BodyTransform:
        decoder = decoder_for(upstream.header("content-encoding"), max_bytes=max(DEFAULT_MAX_DECODED_BYTES, max_rewrite_bytes * 4))
        encoder = encoder_for(coding)
        assert decoder is not None and encoder is not None
        content_type = upstream.header("content-type")

        def rewriter_for(head: bytes) -> SlotRewriter:  # head: the first decoded bytes
            return SlotRewriter(plan.edits, charset=page_charset(content_type, head), max_slot_bytes=max_slot_bytes)

        return BodyTransform(decoder, rewriter_for, encoder, max_rewrite_bytes=max_rewrite_bytes, budget=plan.budget)

    if complete:
        # The whole body is here: transform it before the head, fall back to
        # the origin's bytes on any error.  A body from memory may have been
        # rendered with these very edits before.
        memo = client.render_cache if upstream.body_bytes is not None else None
        key = render_key(plan.edits, coding, upstream.header("content-type")) if memo is not None else ()
        found = memo.get(client.url, first, key) if memo is not None else None
        if found is not None:
            body, outcomes = found
            rec.add("rewrite", time.perf_counter() - started)
            rec.cache = f"{rec.cache}+RENDER"
            await _send_rendered(client, upstream, plan, rec, coding, cookies, body, outcomes)
            return
        try:
            transform = make_transform()
            body = transform.feed(first) + transform.finish()
            if memo is not None:
                memo.put(client.url, first, key, body, transform.outcomes)
        except Exception as exc:  # CodecError, anything unexpected: fail open
            if not isinstance(exc, CodecError):
                log.exception("rewriting %s failed; serving the origin's bytes", request.path)
            rec.fail_open("rewrite-error" if not isinstance(exc, CodecError) else "corrupt-body")
            rec.add("rewrite", time.perf_counter() - started)
            headers = response_headers(upstream.headers, personalised=False, coding=None, cookies=cookies)
            await client.start(upstream.status, upstream.reason, headers, length=len(first))
            await client.write(first)
            await client.end()
            return
        rec.add("rewrite", time.perf_counter() - started)
        await _send_rendered(client, upstream, plan, rec, coding, cookies, body, transform.outcomes)
        return

    # Streaming: the head goes out with the first rewritten bytes (later for a
    # capped variant, until its slot has been seen).
    try:
        transform = make_transform()
        pending = [transform.feed(first)]
    except CodecError as exc:
        rec.fail_open("corrupt-body")
        log.warning("%s %s: %s; passing the origin's bytes through", request.method, request.path, exc)
        headers = response_headers(upstream.headers, personalised=False, coding=None, cookies=cookies)
        await client.start(upstream.status, upstream.reason, headers, length=upstream.content_length)
        await client.write(first)
        try:
            async for chunk in body_stream.rest():
                await client.write(chunk)
        except UpstreamBodyError:
            client.abort()
            return
        await client.end()
        return
    rec.add("rewrite", time.perf_counter() - started)
    head_sent = False

    async def send_head(final: bool) -> None:
        nonlocal head_sent
        extra = _cap_cookies(plan, transform.outcomes) if (final or plan.capped) else []
        headers = response_headers(upstream.headers, personalised=True, coding=coding, cookies=cookies + extra)
        if plan.explain is not None:
            headers.append(("X-Edge-Explain", explain_header(plan.explain())))
        await client.start(upstream.status, upstream.reason, headers)
        head_sent = True

    def capped_known() -> bool:
        return all(name in transform.outcomes for name in plan.capped)

    if not plan.capped or capped_known():
        await send_head(False)
        await client.write(b"".join(pending))
        pending = []
    try:
        async for chunk in body_stream.rest():
            t = time.perf_counter()
            out = transform.feed(chunk)
            rec.add("rewrite", time.perf_counter() - t)
            if head_sent:
                await client.write(out)
            else:
                pending.append(out)
                if capped_known():
                    await send_head(False)
                    await client.write(b"".join(pending))
                    pending = []
        t = time.perf_counter()
        tail = transform.finish()
        rec.add("rewrite", time.perf_counter() - t)
    except (UpstreamBodyError, CodecError) as exc:
        log.warning("%s %s: %s; aborting the response", request.method, request.path, exc)
        rec.fail_open("origin-broke-off" if isinstance(exc, UpstreamBodyError) else "corrupt-body")
        if not head_sent:
            # Nothing sent yet: a clean 502 instead of a broken page.
            await client.start(502, "Bad Gateway", [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")])
            await client.write(b"502 Bad Gateway: the origin's response broke off\n")
            await client.end()
            rec.aborted = True
            return
        client.abort()
        return
    _note_outcomes(rec, transform.outcomes)
    if not head_sent:
        await send_head(True)
    await client.write(b"".join(pending) + tail)
    await client.end()


async def _send_rendered(
    client: _Client, upstream: Upstream, plan: Plan, rec: Record, coding: str, cookies: list[str], body: bytes, outcomes: dict[str, str]
) -> None:
    """A whole rewritten body, with an exact Content-Length."""
    _note_outcomes(rec, outcomes)
    all_cookies = cookies + _cap_cookies(plan, outcomes)
    stored = upstream.stored_headers
    if stored is not None and plan.explain is None and not isinstance(client.request, web.BaseRequest):
        # A hit on the traffic port: the head but its per-request lines was
        # built when this entry was first served (``headers`` is ``stored``
        # with ``Age`` appended, see ``UpstreamCache._serve``).
        headers = upstream.headers
        if len(headers) == len(stored) + 1 and headers[-1][0] == "Age" and headers[-1][1].isdigit():
            head = prebuilt_head(stored, coding, bool(rec.request_id))
            if head is not None:
                client.start_prebuilt(upstream.status, upstream.reason, head, headers[-1][1], all_cookies, len(body))
                await client.write(body)
                await client.end()
                return
    headers = response_headers(upstream.headers, personalised=True, coding=coding, cookies=all_cookies)
    if plan.explain is not None:
        headers.append(("X-Edge-Explain", explain_header(plan.explain())))
    await client.start(upstream.status, upstream.reason, headers, length=len(body))
    await client.write(body)
    await client.end()


@functools.lru_cache(maxsize=64)
def decodable(content_encoding: str | None) -> bool:
    """Whether the proxy can decode a body in this ``Content-Encoding``."""
    return decoder_for(content_encoding) is not None


def _note_outcomes(rec: Record, outcomes: dict[str, str]) -> None:
    rec.outcomes.update(outcomes)
    rec.personalised = any(v == "applied" for v in outcomes.values())


def _cap_cookies(plan: Plan, outcomes: dict[str, str]) -> list[str]:
    if plan.on_applied is None or not plan.capped:
        return []
    cookie = plan.on_applied(dict(outcomes))
    return [format_cookie(cookie, secure=plan.secure)] if cookie is not None else []
