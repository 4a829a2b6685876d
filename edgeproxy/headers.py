"""Header hygiene in one place: hop-by-hop stripping, forwarding, client IP,
the request id, and which request headers a client may not set for the origin.

Pure functions over plain header lists, so the request and the response path
share one implementation and tests need no server.

What happens to each request header (docs/HEADERS.md has the full table):

* **hop-by-hop** (``HOP_BY_HOP`` and those named in ``Connection``): stripped.
* **override** (``OVERRIDE``: ``X-Original-URL``, ``X-Rewrite-URL``,
  ``X-HTTP-Method-Override``…): stripped from everyone.  They make some
  frameworks serve another URL or method than the one the cache keyed.
* **forwarding** (``FORWARDING``: ``X-Forwarded-*``, ``Forwarded``,
  ``X-Real-IP``, ``X-Host``… and the CDN headers of ``CDN_PREFIXES``):
  believed and forwarded only from a ``--trust-proxy`` peer, stripped from
  anyone else; the proxy then sets ``X-Forwarded-For/-Proto/-Host`` itself.
* **keyed** (``KEYED``): the forwarding headers that name where the request
  was addressed (host, scheme, port, prefix).  The upstream cache keys every
  response on the values sent to the origin, as if the origin had named them
  in ``Vary`` (``cache.UpstreamCache(keyed_fields=KEYED)``), so a page that
  reflects ``X-Forwarded-Host`` is stored per host, never shared across hosts.
* **everything else** is forwarded and is *not* keyed (User-Agent, Cookie,
  Accept-Language, the client address headers…): an origin whose page
  depends on one must say so with ``Vary`` (the cache keys on it) or
  ``Cache-Control: private`` (never stored), as RFC 9111 §4.1 asks.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import NamedTuple

from .model import RequestFacts, frozen_map

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
HeaderPairs = list[tuple[str, str]]

# RFC 9110 §7.6.1: Connection and the fields it lists are hop-by-hop, as are
# these fields a proxy must not forward (Keep-Alive, Proxy-Connection, TE,
# Transfer-Encoding, Upgrade; Trailer per RFC 9110 §6.6.2; Proxy-* per §11.7).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Forwarding headers that say where the request was addressed (host, scheme,
# port, path prefix): frameworks build absolute URLs from them, so they are
# keyed by the upstream cache.
KEYED = frozenset(
    {
        "forwarded",  # keyed without its per-client for=/by= parameters
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-scheme",
        "x-forwarded-protocol",
        "x-forwarded-ssl",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-uri",
        "x-forwarded-path",
        "x-url-scheme",
        "front-end-https",
        "x-host",
        "x-original-host",
    }
)
# Forwarding headers that name the client's address: per visitor, so never
# keyed (an origin that puts the address in a page must mark it private).
CLIENT_ADDRESS = frozenset(
    {
        "x-forwarded-for",
        "x-real-ip",
        "x-client-ip",
        "client-ip",
        "true-client-ip",
        "x-cluster-client-ip",
        "x-original-forwarded-for",
        "forwarded-for",
        "x-forwarded",
        "x-forwarded-by",
        "x-remote-ip",
        "x-remote-addr",
        "x-originating-ip",
    }
)
# Forwarding headers a client could forge; only a trusted peer's survive.
FORWARDING = KEYED | CLIENT_ADDRESS
# Headers a CDN sets (geo, client address, TLS facts): believed and forwarded
# only from a trusted peer, like FORWARDING.
CDN_PREFIXES = ("cf-", "cloudfront-", "fastly-", "akamai-", "x-appengine-", "x-azure-", "x-vercel-", "x-amz-cf-")
# Request rewriting and method overriding headers: stripped whoever sends
# them (a trusted CDN passes its clients' headers on too).
OVERRIDE = frozenset(
    {
        "x-original-url",
        "x-rewrite-url",
        "x-override-url",
        "x-http-destinationurl",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-method",
    }
)

# X-Request-ID: kept when it looks like an id (a UUID, a hex or base64
# token, a trace id), else replaced by one made here.
REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID = 128
_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:+/=@-]{1,%d}\Z" % MAX_REQUEST_ID)

# Headers the proxy itself owns on the way in: never forwarded to the origin.
PROXY_ONLY_REQUEST = frozenset({"x-edge-preview-token"})


def forgeable(lower: str) -> bool:
    """A header only a trusted peer may set: forwarding and CDN headers."""
    return lower in FORWARDING or lower.startswith(CDN_PREFIXES)


def new_request_id() -> str:
    """32 random hex digits, like nginx's ``$request_id`` (not a counter,
    which would tell anyone the shop's traffic)."""
    return f"{random.getrandbits(128):032x}"


def request_id(value: str | None) -> str:
    """The client's ``X-Request-ID`` when it is a well-formed id (at most
    ``MAX_REQUEST_ID`` characters of ``[A-Za-z0-9._:+/=@-]``), else a new one:
    what reaches the origin and the log can be trusted not to forge lines."""
    if value is not None:
        value = value.strip()
        if _REQUEST_ID_OK.match(value):
            return value
    return new_request_id()


def strip_hop_by_hop(headers: Iterable[tuple[str, str]]) -> HeaderPairs:
    """Drop hop-by-hop fields and every field named in ``Connection``
    (RFC 9110 §7.6.1).  Order and duplicates of the rest are kept."""
    pairs = list(headers)
    listed = HOP_BY_HOP
    for name, value in pairs:
        if len(name) == 10 and name.lower() == "connection":
            listed = with_connection_tokens(listed, value)
    return [(name, value) for name, value in pairs if name.lower() not in listed]


# Empty list members name no field.  ("close" does: a field named Close is
# stripped with the option, as RFC 9110 §7.6.1 and §18.4 keep that name reserved.)
_NOT_FIELDS = frozenset({""})


def with_connection_tokens(listed: frozenset[str], value: str) -> frozenset[str]:
    """``listed`` and the field names a ``Connection`` value lists."""
    tokens = {token.strip().lower() for token in value.split(",")}
    tokens -= _NOT_FIELDS
    return listed | tokens if not tokens <= listed else listed


@lru_cache(maxsize=4096)
def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.7:8080"
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return addr.ipv4_mapped
    return addr


@lru_cache(maxsize=4096)
def _canonical_ip(text: str) -> str | None:
    """``str()`` of the parsed address (cached: ``ipaddress`` formats it in
    Python, a few µs, and a visitor's address repeats)."""
    addr = _parse_ip(text)
    return str(addr) if addr is not None else None


def is_trusted(ip: str | None, networks: Sequence[Network]) -> bool:
    if not ip or not networks:
        return False
    addr = _parse_ip(ip)
    return addr is not None and any(addr.version == net.version and addr in net for net in networks)


def client_ip(peer: str | None, forwarded_for: Sequence[str], networks: Sequence[Network]) -> str | None:
    """The visitor's address: walk ``X-Forwarded-For`` from the right while
    each hop is a trusted proxy (nginx ``real_ip_recursive on``).  An
    untrusted peer's ``X-Forwarded-For`` is ignored entirely."""
    current = (_canonical_ip(peer) or peer) if peer else peer
    if not is_trusted(current, networks):
        return current
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        canonical = _canonical_ip(hop)
        if canonical is None:
            break  # garbage in the chain: stop at the last good hop
        current = canonical
        if not is_trusted(current, networks):
            break
    return current


class ReadHeaders(NamedTuple):
    """A request's header fields sorted once (``read_request_headers``), for
    both what the stages may read and what the origin may get.

    ``fields``: lower-cased name -> first value, without ``OVERRIDE`` and,
    from an untrusted peer, forwarding and CDN headers (``RequestFacts``).
    ``cookies``: every ``Cookie`` line.  ``xff``: a trusted peer's
    ``X-Forwarded-For`` lines.  ``forward``: (lower, name, value) of the
    fields that may go to the origin as they are (no hop-by-hop, override,
    proxy-own, ``Host``, ``Expect`` or forwarding fields the proxy sets
    itself).  ``proto``/``host``: a trusted peer's last
    ``X-Forwarded-Proto``/``-Host``.  ``listed``: the hop-by-hop names with
    those the client's ``Connection`` lists."""

    fields: dict[str, str]
    cookies: list[str]
    xff: list[str]
    forward: list[tuple[str, str, str]]
    proto: str | None
    host: str | None
    listed: frozenset[str]


def read_request_headers(headers: Iterable[tuple[str, str]], trusted: bool) -> ReadHeaders:
    """A request's header fields sorted for the stages and the origin.

    This runs on every request, so the usual head (no repeated name, no CDN
    header) is read in C-level passes (one join, ``lower()`` and split for
    all names; the few special names found by one set intersection) and
    only the rest field by field (``_read_each``, the reference the fast
    path is tested against)."""
    pairs = headers if isinstance(headers, (list, tuple)) else list(headers)
    if pairs:
        names, values = zip(*pairs)
        text = "\n".join(names).lower()
        lowers = text.split("\n")
        if len(lowers) == len(names) and len(set(lowers)) == len(lowers) and not _CDN_NAME.search(text):
            return _read_unique(names, values, lowers, trusted)
    return _read_each(pairs, trusted)


# A CDN header name at the start of a line of the joined lower-case names.
_CDN_NAME = re.compile("(?:^|\n)(?:" + "|".join(re.escape(p) for p in CDN_PREFIXES) + ")")


def _read_unique(names: tuple[str, ...], values: tuple[str, ...], lowers: list[str], trusted: bool) -> ReadHeaders:
    """``_read_each`` for a head whose names are unique and none a CDN's."""
    fields = dict(zip(lowers, values))
    forward = list(zip(lowers, names, values))
    cookies: list[str] = []
    xff: list[str] = []
    proto = host = None
    listed = HOP_BY_HOP
    special = _SPECIAL.intersection(lowers)
    if special:
        gone: list[int] = []  # positions not forwarded as they are
        for lower in special:
            i = lowers.index(lower)
            value = values[i]
            if lower in OVERRIDE:
                del fields[lower]
            elif lower in FORWARDING:
                if not trusted:
                    del fields[lower]
                elif lower == "x-forwarded-for":
                    xff.append(value)
                elif lower == "x-forwarded-proto":
                    proto = value
                elif lower == "x-forwarded-host":
                    host = value
                else:
                    continue  # another trusted forwarding field: forwarded
            elif lower == "cookie":
                cookies.append(value)
                continue  # forwarded
            elif lower == "connection":
                listed = with_connection_tokens(listed, value)
            gone.append(i)
        for i in sorted(gone, reverse=True):
            del forward[i]
    return ReadHeaders(fields, cookies, xff, forward, proto, host, listed)


def _read_each(headers: Iterable[tuple[str, str]], trusted: bool) -> ReadHeaders:
    """``read_request_headers`` field by field: any head (repeated names,
    CDN headers)."""
    fields: dict[str, str] = {}
    cookies: list[str] = []
    xff: list[str] = []
    forward: list[tuple[str, str, str]] = []
    proto = host = None
    listed = HOP_BY_HOP
    for name, value in headers:
        lower = name.lower()
        if lower in OVERRIDE:
            continue
        forged = lower in FORWARDING or lower.startswith(CDN_PREFIXES)
        if forged and not trusted:
            continue
        if lower not in fields:
            fields[lower] = value
        if lower in _FORWARD_SKIP:
            if lower == "connection":
                listed = with_connection_tokens(listed, value)
            elif lower == "cookie":
                cookies.append(value)
                forward.append((lower, name, value))
            continue
        if forged:
            if lower == "x-forwarded-for":
                xff.append(value)
                continue
            if lower == "x-forwarded-proto":
                proto = value
                continue
            if lower == "x-forwarded-host":
                host = value
                continue
        forward.append((lower, name, value))
    return ReadHeaders(fields, cookies, xff, forward, proto, host, listed)


def forward_request_headers(
    headers: Iterable[tuple[str, str]],
    *,
    peer: str | None,
    peer_trusted: bool,
    scheme: str,
    host: str,
    upstream_host: str,
    request_id: str | None = None,
    drop: frozenset[str] = frozenset(),
    read: ReadHeaders | None = None,
) -> HeaderPairs:
    """The headers to send the origin for one client request.

    Strips hop-by-hop fields and ``OVERRIDE`` headers; keeps incoming
    forwarding and CDN headers only from a trusted peer; appends the peer to
    ``X-Forwarded-For``; sets ``X-Forwarded-Proto``/``-Host``; sends the
    origin its own ``Host`` (as nginx's ``proxy_pass`` does), the visitor's
    in ``X-Forwarded-Host``.  With ``request_id``, that is the
    ``X-Request-ID`` the origin gets (the client's own, if any, replaced).
    ``drop``: more lower-case names the caller leaves out (it adds its own).
    ``read``: the fields already sorted by ``read_request_headers`` (with
    the same trust), so the pipeline reads them once for facts and origin.
    """
    if read is None:
        read = read_request_headers(headers, peer_trusted)
    listed = read.listed
    prior_xff, prior_proto, prior_host = read.xff, read.proto, read.host
    skip = listed | drop if drop else listed
    if request_id is not None:
        skip = skip | _REQUEST_ID_SKIP
    result: HeaderPairs = [(name, value) for lower, name, value in read.forward if lower not in skip]
    if listed is not HOP_BY_HOP:
        # Fields the client's Connection names are hop-by-hop too, the
        # forwarding ones the proxy would take from a trusted peer among them.
        prior_xff = [] if "x-forwarded-for" in listed else prior_xff
        prior_proto = None if "x-forwarded-proto" in listed else prior_proto
        prior_host = None if "x-forwarded-host" in listed else prior_host
    chain = ", ".join([*prior_xff, peer]) if peer else ", ".join(prior_xff)
    if chain:
        result.append(("X-Forwarded-For", chain))
    result.append(("X-Forwarded-Proto", prior_proto or scheme))
    if prior_host or host:
        result.append(("X-Forwarded-Host", prior_host or host))
    if request_id is not None:
        result.append((REQUEST_ID_HEADER, request_id))
    result.append(("Host", upstream_host))
    return result


# What forward_request_headers never passes on: hop-by-hop fields, the
# override headers, the proxy's own, Host (the origin gets its own) and
# Expect (the proxy answers 100-continue itself).
_FORWARD_SKIP = HOP_BY_HOP | OVERRIDE | PROXY_ONLY_REQUEST | {"host", "expect", "cookie"}  # cookie: noted, then forwarded
_REQUEST_ID_SKIP = frozenset({"x-request-id"})
# Names read_request_headers looks at one by one.
_SPECIAL = _FORWARD_SKIP | FORWARDING


# RFC 9110 §5.5: a field value is VCHAR, SP, HTAB and obs-text; a reason
# phrase (RFC 9112 §4) the same.  Any other control character (NUL, bare CR
# or LF, DEL…) in what the origin sent must not reach the client.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Every name at once: tokens joined by ":" (never in a token).
_TOKENS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?::[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*\Z")


class InvalidOriginHead(ValueError):
    """The origin's response head cannot be passed on (the fetch stage maps
    it to ``UpstreamConnectError``: a 502, as nginx's "upstream sent invalid
    header")."""


def checked_origin_head(status: int, reason: str, headers: HeaderPairs) -> tuple[str, HeaderPairs]:
    """The reason phrase and headers to pass on for an origin response head,
    or ``InvalidOriginHead``: a status outside 200–599 (a 1xx is never a
    final response here), a header name that is not a token, a control
    character in a value.  A reason phrase with control characters is
    dropped, not fatal (the status says it all).  Found by load_tests.fuzz:
    such heads made the HTTP layer raise, and the client got a 500."""
    if not 200 <= status <= 599:
        raise InvalidOriginHead(f"status {status} is not a final HTTP status")
    # One search over all names and one over all values (TAB, allowed in a
    # value, joins them); the per-field loop only names the culprit.
    names = ":".join([name for name, _ in headers])
    if headers and (
        not _TOKENS.match(names)
        or names.count(":") != len(headers) - 1  # a name with ":" in it is no token
        or _BAD_VALUE.search("\t".join([value for _, value in headers]))
    ):
        for name, value in headers:
            if not _TOKEN.match(name):
                raise InvalidOriginHead(f"header name {name[:40]!r} is not a token")
            if _BAD_VALUE.search(value):
                raise InvalidOriginHead(f"control character in the {name[:40]} header")
    return ("" if _BAD_VALUE.search(reason) else reason), headers


def parse_cookies(header_values: Iterable[str]) -> dict[str, str]:
    """Parse ``Cookie`` headers leniently (RFC 6265 §5.4 as browsers send
    it); the first occurrence of a name wins; junk is skipped, never raised."""
    cookies: dict[str, str] = {}
    for header in header_values:
        for part in header.split(";"):
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep or not name or name in cookies:
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            cookies[name] = value
    return cookies


def request_facts(
    *,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Iterable[tuple[str, str]],
    peer: str | None,
    networks: Sequence[Network],
    scheme: str,
    host: str,
    read: ReadHeaders | None = None,
    read_trusted: bool = False,
) -> RequestFacts:
    """Everything classify needs, as plain frozen data.

    ``scheme`` and ``host`` are those of the direct connection; a trusted
    peer's ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` (first hop) replace
    them, as its ``X-Forwarded-For`` gives ``client_ip``.  An untrusted
    peer's forwarding and CDN headers, and everyone's ``OVERRIDE`` headers,
    are left out of ``headers``: no stage can read a forged one.
    ``request_id`` is the client's ``X-Request-ID`` if well-formed, else new.
    ``read``: the fields already sorted by ``read_request_headers`` for a
    peer whose trust was ``read_trusted`` (the pipeline reads them once)."""
    trusted = is_trusted(peer, networks) if read is None else read_trusted
    if read is None:
        read = read_request_headers(headers, trusted)
    lowered, cookie_values, xff = read.fields, read.cookies, read.xff
    if trusted:
        scheme = lowered.get("x-forwarded-proto", "").split(",")[0].strip().lower() or scheme
        host = lowered.get("x-forwarded-host", "").split(",")[0].strip() or host
    return RequestFacts(
        method=method,
        path=path,
        query=tuple(query),
        headers=frozen_map(lowered),
        cookies=frozen_map(parse_cookies(cookie_values)),
        client_ip=client_ip(peer, xff, networks),
        peer_trusted=trusted,
        scheme=scheme,
        host=host,
        request_id=request_id(lowered.get("x-request-id")),
    )
