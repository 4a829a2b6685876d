"""Cookies: the proxy's own cookies (CONTRACT §5), the storefront's flags and
consent.

The proxy's cookies
===================

=============  ===============================================  =============
cookie         fields (``|``-separated, after the version ``1``)  Max-Age
=============  ===============================================  =============
``edge_vid``   visitor id, first seen (unix s, base 36)          1 year
``edge_ses``   session id, start (unix s, base 36), first        30 min,
               source, utm source/medium/campaign                sliding
``edge_aff``   ``category:weight``, strongest first, at most 5   90 days
``edge_cap``   ``slot/variant:period:views`` per capped variant  7 days
=============  ===============================================  =============

The ``read_*``/``write_*`` functions are memoised per (codec, name, value):
their results are immutable and a visitor sends the same values again and
again.

Each value is ``1|field|field….<signature>``: fields are percent-escaped
(so ``|`` never appears inside one), and the signature is keyed BLAKE2b
(96-bit digest) over ``<cookie name>=<body>`` with a key derived from
``settings.cookie_secret``, base64url (16 characters): one keyed hash call,
half the CPU of HMAC-SHA256, which matters because a new visitor's cookies
are sealed on every request of theirs until the browser sends them back.
Values signed by earlier releases (HMAC-SHA256, cut to 96 bits, same
layout) are still accepted when read: the check is only tried after the
BLAKE2b one fails and is memoised like it, so it costs nothing on current
cookies, and every such cookie is re-sealed the next time it is written.
Binding the name stops a value being moved from one cookie to another.
Every character is one Python's ``http.cookies`` and browsers take
unquoted.  A value that is absent, over ``MAX_COOKIE_CHARS``, unsigned,
tampered, of another version or with a field out of range is *ignored* (as
if absent) and replaced by a fresh one; nothing here raises on input.

Visitor "new" or "returning": returning when the visitor id was first seen
before the current session started, i.e. from the second session on.

Sessions last 30 minutes after the last page view: every classified
response (page loads, not assets) sends ``edge_ses`` again with
``Max-Age=1800``, so the browser drops it after 30 idle minutes.  The value stays the same for the whole session, so its
signature is computed once (the codec's cache), not per request.  A request
carrying campaign tags (utm parameters or a click id) that differ from the
session's starts a new session, as classic Google Analytics did, so a
newsletter click mid-visit counts as ``email`` from then on.  Referrer-only
changes (a payment provider redirecting back) keep the session.

Affinity: a page matching ``settings.affinity_patterns`` adds 1 to its
category's weight (weights halve when one passes ``AFFINITY_MAX_WEIGHT``);
a category seen for the first time takes the place of the weakest when all
five are taken, so new interests can enter.  Categories are lower-cased.

The storefront's cookies (names configured; unconfigured = key unknown):
``customer``/``logged_in`` are true when the cookie is present and not
empty, ``0``, ``false``, ``no``, ``null``; ``cart`` is ``filled`` when its
cookie is present and not empty, ``0``, ``[]``, ``{}``, ``null``.

Consent: ``Sec-GPC: 1`` always means no consent; else with no consent
cookie configured consent is assumed; else consent is the configured
cookie's value equal to ``consent_value`` (case-insensitive).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, unquote

from ..model import EMPTY, SOURCES, CapCount, SetCookie

VERSION = "1"
MAX_COOKIE_CHARS = 1024
MAX_CAP_COOKIE_CHARS = 3072
MAX_CAP_ENTRIES = 40
SIG_BYTES = 12
DEFAULT_CODEC_CACHE_SIZE = 4096

VISITOR_MAX_AGE = 365 * 86400
SESSION_MAX_AGE = 30 * 60
AFFINITY_MAX_AGE = 90 * 86400
CAP_MAX_AGE = 7 * 86400

AFFINITY_SLOTS = 5
AFFINITY_MAX_WEIGHT = 100
MAX_CATEGORY_CHARS = 64

FALSY = frozenset({"", "0", "false", "no", "off", "null", "none"})
EMPTY_CART = frozenset({"", "0", "[]", "{}", "null", "none"})

_SAFE = re.compile(r"^[A-Za-z0-9_~.:-]*$")
_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_PERIOD = re.compile(r"^[dws][A-Za-z0-9_-]{1,64}$")
_MAX_TIME = 1 << 40
_blake2b = hashlib.blake2b


def _esc(text: str) -> str:
    return text if _SAFE.match(text) else quote(text, safe="")


def _unesc(text: str) -> str:
    return unquote(text) if "%" in text else text


@lru_cache(maxsize=256)  # times are whole seconds: a busy second seals the same one again and again
def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def _time(text: str) -> int | None:
    if not text or len(text) > 9 or not text.isalnum():
        return None
    try:
        value = int(text, 36)
    except ValueError:
        return None
    return value if 0 < value < _MAX_TIME else None


_ID_BATCH = 256
_ids: list[str] = []
os.register_at_fork(after_in_child=_ids.clear)  # never hand a worker its parent's ids


def new_id() -> str:
    """A random id, 96 bits, base64url (16 characters).

    Drawn from the OS's CSPRNG like ``secrets.token_urlsafe(12)``, but
    ``_ID_BATCH`` ids per ``urandom`` call: a new visitor needs two (visitor
    and session), and one system call each was ~3 µs of a cached page's
    CPU.  12 bytes are exactly 16 base64 characters without padding, so
    the encoded batch cuts into independent ids."""
    while True:
        try:
            return _ids.pop()
        except IndexError:
            text = base64.urlsafe_b64encode(os.urandom(12 * _ID_BATCH)).decode("ascii")
            _ids.extend([text[i : i + 16] for i in range(0, len(text), 16)])


class CookieCodec:
    """Seals and opens the proxy's cookie values (see the module docstring).

    Both directions are memoised (LRU): a visitor's cookies repeat from one
    request to the next, so most requests check no HMAC at all."""

    __slots__ = ("_key", "_legacy_key", "seal", "_open")

    def __init__(self, secret: str, *, cache_size: int = DEFAULT_CODEC_CACHE_SIZE) -> None:
        raw = secret.encode("utf-8", "surrogatepass")
        self._key = hashlib.sha256(b"edgeproxy cookie key v2 blake2b\x00" + raw).digest()
        self._legacy_key = hashlib.sha256(b"edgeproxy cookie key v1\x00" + raw).digest()  # HMAC-SHA256 values
        self.seal = lru_cache(maxsize=cache_size)(self._seal)
        self._open = lru_cache(maxsize=cache_size)(self._open_uncached)

    def _sign(self, name: str, body: str) -> str:
        mac = _blake2b(f"{name}={body}".encode("utf-8", "surrogatepass"), key=self._key, digest_size=SIG_BYTES).digest()
        return base64.urlsafe_b64encode(mac).decode("ascii")

    def _sign_legacy(self, name: str, body: str) -> str:
        """The signature earlier releases wrote (HMAC-SHA256, 96 bits)."""
        mac = hmac.digest(self._legacy_key, f"{name}={body}".encode("utf-8", "surrogatepass"), "sha256")
        return base64.urlsafe_b64encode(mac[:SIG_BYTES]).decode("ascii")

    def _seal(self, name: str, fields: tuple[str, ...]) -> str:
        """``seal(name, fields)``: the signed value (``fields`` a tuple)."""
        body = "|".join([VERSION, *(_esc(f) for f in fields)])
        return f"{body}.{self._sign(name, body)}"

    def open(self, name: str, value: str | None, *, max_chars: int = MAX_COOKIE_CHARS) -> tuple[str, ...] | None:
        """The fields of a valid value, or ``None`` (absent, oversized,
        tampered, another version)."""
        if not value or len(value) > max_chars:
            return None
        return self._open(name, value)

    def _open_uncached(self, name: str, value: str) -> tuple[str, ...] | None:
        body, dot, sig = value.rpartition(".")
        if not dot or len(sig) != 16 or not body.startswith(VERSION + "|"):
            return None
        if not hmac.compare_digest(sig, self._sign(name, body)) and not hmac.compare_digest(sig, self._sign_legacy(name, body)):
            return None
        return tuple(_unesc(f) for f in body.split("|")[1:])


def _cached_by_value(max_chars: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Memoise ``read(codec, name, value)``, but only for values short
    enough to be valid: an oversized one is answered like an absent one
    without entering the cache (so junk cannot fill memory)."""

    def wrap(read: Callable[..., Any]) -> Callable[..., Any]:
        cached = lru_cache(maxsize=DEFAULT_CODEC_CACHE_SIZE)(read)

        @functools.wraps(read)
        def reader(codec: CookieCodec, name: str, value: str | None) -> Any:
            if not value or len(value) > max_chars:
                return read(codec, name, None)
            return cached(codec, name, value)

        reader.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        reader.cache_info = cached.cache_info  # type: ignore[attr-defined]
        return reader

    return wrap


# ---------------------------------------------------------------------------
# The four cookies as values.
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class VisitorCookie:
    id: str
    first_seen: int


@dataclasses.dataclass(frozen=True, slots=True)
class SessionCookie:
    id: str
    start: int
    source: str
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None


@_cached_by_value(MAX_COOKIE_CHARS)
def read_visitor(codec: CookieCodec, name: str, value: str | None) -> VisitorCookie | None:
    fields = codec.open(name, value)
    if fields is None or len(fields) != 2 or not _ID.match(fields[0]):
        return None
    first = _time(fields[1])
    return None if first is None else VisitorCookie(fields[0], first)


@lru_cache(maxsize=DEFAULT_CODEC_CACHE_SIZE)
def write_visitor(codec: CookieCodec, name: str, v: VisitorCookie) -> SetCookie:
    return SetCookie(name, codec.seal(name, (v.id, _b36(v.first_seen))), VISITOR_MAX_AGE)


@_cached_by_value(MAX_COOKIE_CHARS)
def read_session(codec: CookieCodec, name: str, value: str | None) -> SessionCookie | None:
    fields = codec.open(name, value)
    if fields is None or len(fields) != 6 or not _ID.match(fields[0]) or fields[2] not in SOURCES:
        return None
    start = _time(fields[1])
    if start is None:
        return None
    return SessionCookie(fields[0], start, fields[2], fields[3] or None, fields[4] or None, fields[5] or None)


@lru_cache(maxsize=DEFAULT_CODEC_CACHE_SIZE)
def write_session(codec: CookieCodec, name: str, s: SessionCookie) -> SetCookie:
    fields = (s.id, _b36(s.start), s.source, s.utm_source or "", s.utm_medium or "", s.utm_campaign or "")
    return SetCookie(name, codec.seal(name, fields), SESSION_MAX_AGE)


@_cached_by_value(MAX_COOKIE_CHARS)
def read_affinity(codec: CookieCodec, name: str, value: str | None) -> tuple[tuple[str, int], ...] | None:
    fields = codec.open(name, value)
    if fields is None or len(fields) > AFFINITY_SLOTS:
        return None
    out: list[tuple[str, int]] = []
    for field in fields:
        category, colon, weight = field.rpartition(":")
        if not colon or not category or len(category) > MAX_CATEGORY_CHARS or not weight.isdigit():
            return None
        w = int(weight)
        if not 0 < w <= AFFINITY_MAX_WEIGHT * 2:
            return None
        out.append((category, w))
    return tuple(out)


def write_affinity(codec: CookieCodec, name: str, entries: Sequence[tuple[str, int]]) -> SetCookie:
    return SetCookie(name, codec.seal(name, tuple(f"{c}:{w}" for c, w in entries)), AFFINITY_MAX_AGE)


def bump_affinity(entries: Sequence[tuple[str, int]], category: str) -> list[tuple[str, int]]:
    """``entries`` (strongest first) after one view of ``category``."""
    weights = dict(entries)
    if category in weights:
        weights[category] += 1
    else:
        if len(weights) >= AFFINITY_SLOTS:
            del weights[entries[-1][0]]  # the weakest (least recent on ties) makes room
        weights[category] = 1
    # Strongest first; on ties the category just seen, then the old order.
    order = {c: i for i, (c, _) in enumerate(entries)}
    ranked = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0] != category, order.get(kv[0], 0)))
    if ranked[0][1] > AFFINITY_MAX_WEIGHT:
        ranked = [(c, (w + 1) // 2) for c, w in ranked]
    return ranked[:AFFINITY_SLOTS]


@_cached_by_value(MAX_CAP_COOKIE_CHARS)
def read_caps(codec: CookieCodec, name: str, value: str | None) -> Mapping[str, CapCount]:
    fields = codec.open(name, value, max_chars=MAX_CAP_COOKIE_CHARS)
    if fields is None or len(fields) > MAX_CAP_ENTRIES:
        return EMPTY
    out: dict[str, CapCount] = {}
    for field in fields:
        parts = field.split(":")
        if len(parts) != 3 or "/" not in parts[0] or not _PERIOD.match(parts[1]) or not parts[2].isdigit():
            return EMPTY
        views = int(parts[2])
        if not 0 < views <= 100_000:
            return EMPTY
        out[parts[0]] = CapCount(parts[1], views)
    return MappingProxyType(out)


def write_caps(codec: CookieCodec, name: str, caps: Mapping[str, CapCount]) -> SetCookie | None:
    """The cap cookie for ``caps`` (deterministic: the same counts give the
    same value), ``None`` when there is nothing to count."""
    entries = []
    for key in sorted(caps):
        count = caps[key]
        if not isinstance(count, CapCount) or count.views <= 0 or not _PERIOD.match(count.period):
            continue
        entries.append(f"{key.replace(':', '')}:{count.period}:{min(count.views, 100_000)}")
    if not entries:
        return None
    return SetCookie(name, codec.seal(name, tuple(entries[:MAX_CAP_ENTRIES])), CAP_MAX_AGE)


# ---------------------------------------------------------------------------
# Affinity patterns, storefront flags, consent.
# ---------------------------------------------------------------------------
def compile_affinity(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One regex for ``/c/{category}``-style patterns; a pattern matches the
    path itself or any path below it (``/c/hiking/boots``)."""
    parts = []
    for pattern in patterns:
        before, _, after = pattern.partition("{category}")
        parts.append(f"{re.escape(before)}([^/]+){re.escape(after)}(?:/|$)")
    return re.compile("^(?:" + "|".join(parts) + ")") if parts else None


def path_category(regex: re.Pattern[str] | None, path: str) -> str | None:
    """The category a request path shows, normalised, or ``None``."""
    if regex is None or not path:
        return None
    m = regex.match(path)
    if m is None or m.lastindex is None:
        return None
    raw = m.group(m.lastindex)
    text = _unesc(raw).strip().lower()
    for ext in (".html", ".htm"):
        text = text.removesuffix(ext)
    if not text or len(text) > MAX_CATEGORY_CHARS or text in (".", "..") or not text.isprintable():
        return None
    return text


def flag(value: str | None) -> bool:
    return value is not None and _unesc(value).strip().lower() not in FALSY


def cart_state(value: str | None) -> str:
    return "filled" if value is not None and _unesc(value).strip().lower() not in EMPTY_CART else "empty"


def has_consent(
    cookies: Mapping[str, str], headers: Mapping[str, str], consent_cookie: str | None, consent_value: str
) -> bool:
    """Consent per the module docstring."""
    if headers.get("sec-gpc", "").strip() == "1":
        return False
    if consent_cookie is None:
        return True
    value = cookies.get(consent_cookie)
    return value is not None and _unesc(value).strip().lower() == consent_value.strip().lower()
