"""The RFC 9111 rules the upstream cache applies, as pure functions.

What a request asks of a cache (``_Request.parse``: ``no-store``,
``no-cache``, conditionals, the Vary-relevant fields, normalised), and what a
response allows (``response_policy``: storable or why not, freshness
lifetime, ``stale-while-revalidate``/``stale-if-error``, validators, Vary).
No clock, no I/O: ``cache.UpstreamCache`` feeds them the time and the fields.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from email.utils import parsedate_to_datetime
from functools import lru_cache

from .headers import KEYED
from .rewrite.codec import parse_accept

Headers = list[tuple[str, str]]

# RFC 9111 §1.2.2: delta-seconds too large to represent become 2^31.
MAX_DELTA = 2**31

# RFC 9110 §9.2.1: everything else is unsafe and invalidates (RFC 9111 §4.4).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

# Final, complete statuses a shared cache may store with explicit freshness
# (RFC 9110 §15.1's heuristically cacheable set plus 302/307; never 206/304).
STORABLE_STATUSES = frozenset({200, 203, 204, 300, 301, 302, 307, 308, 404, 405, 410, 414, 501})
# Origin answers that make a stale-if-error copy preferable (RFC 5861 §4).
ERROR_STATUSES = frozenset({500, 502, 503, 504})
# Request fields that make the origin answer something other than the full
# response; replaced by the cache's own validators when it revalidates.
CONDITIONAL_FIELDS = frozenset({"if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range", "range"})
# Fields a 304 must not change in the stored response (RFC 9111 §3.2).
NOT_UPDATED_BY_304 = frozenset({"content-length", "age"})


# ---------------------------------------------------------------------------
# Parsing (pure)


def parse_cache_control(values: Iterable[str]) -> dict[str, str | None]:
    """Directives of ``Cache-Control`` field lines, names lower-cased, values
    unquoted.  Commas inside quoted strings do not split.  The first
    occurrence of a directive wins (RFC 9111 §4.2.1)."""
    directives: dict[str, str | None] = {}
    for value in values:
        for part in split_list(value):
            name, sep, arg = part.partition("=")
            name = name.strip().lower()
            if not name or name in directives:
                continue
            arg = arg.strip()
            if len(arg) >= 2 and arg[0] == arg[-1] == '"':
                arg = arg[1:-1]
            directives[name] = arg if sep else None
    return directives


@lru_cache(maxsize=512)  # an origin sends a handful of distinct values
def _directives(values: tuple[str, ...]) -> dict[str, str | None]:
    """``parse_cache_control``, memoised for ``response_policy`` (which only
    reads the result: never change it)."""
    return parse_cache_control(values)


@lru_cache(maxsize=512)
def _vary(values: tuple[str, ...], keyed: frozenset[str]) -> tuple[str, ...]:
    """The sorted, lower-cased field names of ``Vary`` lines, plus ``keyed``."""
    return tuple(sorted({v.lower() for value in values for v in split_list(value)} | keyed))


def split_list(value: str) -> list[str]:
    """The members of a comma-separated field value (RFC 9110 §5.6.1), commas
    inside quoted strings kept (entity-tags, quoted directive arguments)."""
    if '"' not in value:
        return [part for part in (p.strip() for p in value.split(",")) if part]
    parts, current, quoted = [], [], False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


def _delta_seconds(value: str | None) -> int:
    """A delta-seconds argument; an invalid one counts as 0 (stale), never
    as absent (RFC 9111 §1.2.2, §4.2.1)."""
    if value is None:
        return 0
    value = value.strip()
    if not value.isdigit():
        return 0
    return min(int(value), MAX_DELTA)


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value.strip()).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


@lru_cache(maxsize=1024)  # browsers send a handful of distinct values
def normalise_accept_encoding(value: str) -> str:
    """The sorted set of codings with q > 0: ``"br, gzip;q=0.8"`` → ``"br,gzip"``
    (parsed as the proxy negotiates, ``rewrite.codec.parse_accept``)."""
    return ",".join(sorted(coding for coding, q in parse_accept(value).items() if q > 0))


def normalise_cookie(value: str, ignored: frozenset[str] = frozenset()) -> str:
    """``Cookie`` for a ``Vary: Cookie`` key: pairs sorted, the ``ignored``
    names (the proxy's own cookies, which the origin never reads) left out."""
    pairs = sorted(
        pair for pair in (p.strip() for p in value.split(";")) if pair and pair.partition("=")[0].strip() not in ignored
    )
    return "; ".join(pairs)


def normalise_forwarded(value: str) -> str:
    """``Forwarded`` (RFC 7239) for the key: the ``host``/``proto`` facts of
    each hop, without ``for=``/``by=`` (per visitor, they would make every
    visitor a separate entry)."""
    hops = []
    for hop in value.split(","):
        pairs = sorted(
            p.strip().lower() for p in hop.split(";") if p.strip() and p.partition("=")[0].strip().lower() not in ("for", "by")
        )
        hops.append(";".join(pairs))
    return ",".join(hops)


def _normalise_field(name: str, value: str | None, ignored_cookies: frozenset[str]) -> str | None:
    if value is None:
        return None
    if name == "accept-encoding":
        return normalise_accept_encoding(value)
    if name == "cookie":
        return normalise_cookie(value, ignored_cookies)
    if name == "forwarded":
        return normalise_forwarded(value)
    if name in KEYED:  # hosts and schemes are case-insensitive
        return " ".join(value.lower().split())
    return " ".join(value.split())


@dataclasses.dataclass(frozen=True, slots=True)
class _Request:
    """What the cache needs from one request's headers (parsed once)."""

    headers: Headers
    fields: dict[str, str]  # lower-cased name -> value, repeated lines joined with ", "
    no_store: bool
    no_cache: bool
    authorization: bool
    conditional: bool
    ignored_cookies: frozenset[str]

    @classmethod
    def parse(
        cls, headers: Sequence[tuple[str, str]], honour_no_cache: bool, ignored_cookies: frozenset[str] = frozenset()
    ) -> _Request:
        # Names lower-cased in one C call over all of them (a name is a
        # token: never a line feed); repeated names take the slow path.
        fields: dict[str, str] = {}
        if headers:
            names, values = zip(*headers)
            lowered = "\n".join(names).lower().split("\n")
            if len(lowered) == len(names):
                fields = dict(zip(lowered, values))
        if len(fields) != len(headers):  # repeated field lines: one list (RFC 9110 §5.3); Cookie lines join with "; "
            fields = {}
            for name, value in headers:
                lower = name.lower()
                if lower in fields:
                    fields[lower] = f"{fields[lower]}{'; ' if lower == 'cookie' else ', '}{value}"
                else:
                    fields[lower] = value
        cc = parse_cache_control([fields["cache-control"]]) if "cache-control" in fields else {}
        no_cache = False
        if honour_no_cache:
            if "cache-control" in fields:
                no_cache = "no-cache" in cc or ("max-age" in cc and _delta_seconds(cc["max-age"]) == 0)
            else:  # RFC 9111 §5.4: Pragma only without Cache-Control
                no_cache = "no-cache" in fields.get("pragma", "").lower()
        return cls(
            headers=list(headers),
            fields=fields,
            no_store="no-store" in cc,
            no_cache=no_cache,
            authorization="authorization" in fields,
            conditional=not CONDITIONAL_FIELDS.isdisjoint(fields),
            ignored_cookies=ignored_cookies,
        )

    def vary_values(self, names: tuple[str, ...]) -> tuple[str | None, ...]:
        # Most names (the keyed forwarding fields) are absent: only the
        # present ones are normalised, the rest are None (C-level loops).
        fields = self.fields
        present = fields.keys() & names
        if not present:
            return (None,) * len(names)
        ignored = self.ignored_cookies
        values = {name: _normalise_field(name, fields[name], ignored) for name in present}
        return tuple(map(values.get, names))

    def without_conditionals(self) -> Headers:
        return [(n, v) for n, v in self.headers if n.lower() not in CONDITIONAL_FIELDS]


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """RFC 9111 facts about one response for a shared cache.

    ``storable`` is None when the response may be stored, else the reason it
    may not (a short word for logs and tests)."""

    storable: str | None
    lifetime: float
    swr: float
    sie: float
    age: float
    vary: tuple[str, ...]
    etag: str | None
    last_modified: str | None


def response_policy(
    status: int,
    headers: Sequence[tuple[str, str]],
    *,
    authorization: bool = False,
    now_wall: float | None = None,
    keyed: frozenset[str] = frozenset(),
) -> Policy:
    """Decide whether a shared cache may store a ``GET`` response, and for
    how long it is fresh (RFC 9111 §3, §4.2.1).  ``keyed`` request fields
    join the response's ``Vary`` (the cache keys on them whatever it says)."""
    cc_values: list[str] = []
    vary_values: list[str] = []
    set_cookie = False
    date_text = expires_text = age = etag = last_modified = None
    expires_seen = False
    for name, value in headers:
        lower = name.lower()
        if lower == "cache-control":
            cc_values.append(value)
        elif lower == "vary":
            vary_values.append(value)
        elif lower == "set-cookie":
            set_cookie = True
        elif lower == "date" and date_text is None:
            date_text = value  # dates are parsed only when Expires needs them
        elif lower == "expires" and not expires_seen:
            expires_seen = True
            expires_text = value
        elif lower == "age" and age is None:
            age = value.strip()
        elif lower == "etag" and etag is None:
            etag = value.strip()
        elif lower == "last-modified" and last_modified is None:
            last_modified = value.strip()
    cc = _directives(tuple(cc_values))
    vary = _vary(tuple(vary_values), keyed)

    # Freshness lifetime, shared-cache order (§4.2.1).
    explicit = True
    if "s-maxage" in cc:
        lifetime = float(_delta_seconds(cc["s-maxage"]))
    elif "max-age" in cc:
        lifetime = float(_delta_seconds(cc["max-age"]))
    elif expires_seen:
        # An invalid Expires means "already expired" (RFC 9111 §5.3).
        date, expires = _http_date(date_text), _http_date(expires_text)
        base = date if date is not None else (time.time() if now_wall is None else now_wall)
        lifetime = max(0.0, expires - base) if expires is not None else 0.0
    else:
        lifetime, explicit = 0.0, False
    revalidate = "must-revalidate" in cc or "proxy-revalidate" in cc
    swr = 0.0 if revalidate or "stale-while-revalidate" not in cc else float(_delta_seconds(cc["stale-while-revalidate"]))
    sie = 0.0 if revalidate or "stale-if-error" not in cc else float(_delta_seconds(cc["stale-if-error"]))
    age_value = float(min(int(age), MAX_DELTA)) if age is not None and age.isdigit() else 0.0

    reason = None
    if status not in STORABLE_STATUSES:
        reason = "status"
    elif "no-store" in cc:
        reason = "no-store"
    elif "private" in cc:
        reason = "private"
    elif "no-cache" in cc:
        reason = "no-cache"
    elif set_cookie:
        reason = "set-cookie"
    elif "*" in vary:
        reason = "vary-star"
    elif authorization and not ("public" in cc or "s-maxage" in cc or "must-revalidate" in cc):
        reason = "authorization"  # §3.5
    elif not explicit:
        reason = "no-freshness"
    elif lifetime <= 0 and swr <= 0 and sie <= 0:
        reason = "no-freshness"
    return Policy(reason, lifetime, swr, sie, age_value, vary, etag, last_modified)
