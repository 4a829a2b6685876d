"""Stage 1, classify: who is asking, in the terms a variant can target.

::

    classifiers = open_classifiers(settings)        # once, at start
    visitor = classify(facts, classifiers, now)     # every request
    cap = encode_caps(counts, classifiers, secure=…)  # after the response
    classifiers.close()                             # at shutdown

``classify`` is pure except the ``.mmdb`` lookup, computes the
``Visitor`` once per request and never raises: on an unexpected error it
logs and returns a visitor with only ``path`` known (no id, no cookies),
who sees the origin's defaults.  Per request: dictionary lookups, one
cached User-Agent parse, one cached geo lookup, and cookie checks that are
memoised too (an HMAC only for a value not seen recently); everything else
is precomputed by ``open_classifiers``.  About 10 µs for a returning
visitor, 25 µs for a first visit (which mints two random ids and signs).

Only page loads are classified (the pipeline's ``wants_page``): assets and
XHR neither set cookies nor count affinity.

The classifiers, one module each:

=============  ==========================================================
``device``     device / os / browser, bots (ua-parser, crawler-user-agents)
``geo``        country / region / city / continent / timezone
``source``     direct / search / social / email / paid / referral / internal
``cookies``    the proxy's cookies, storefront flags, consent
``clock``      hour / weekday / daypart in the visitor's timezone
=============  ==========================================================

Visitors without consent and bots get no proxy cookies, no ids, and only
``model.CONTEXTUAL_KEYS`` in their context (country-level geo, device,
this request's source, time, path, consent).  A visitor without consent
who still carries proxy cookies from before gets them deleted
(``Max-Age=0``), so withdrawing consent takes effect at once.

Every ``SetCookie`` is a bare name, value and ``Max-Age``; the respond stage
adds ``Path=/; HttpOnly; SameSite=Lax`` and ``Secure`` on HTTPS.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..model import CapCount, ContextValue, RequestFacts, SetCookie, Visitor
from ..settings import Settings
from . import cookies as ck
from .clock import clock_context
from .device import DeviceClassifier
from .geo import MODE_MMAP, GeoReader, load_country_zones, locate, open_geo
from .source import Source, site_of, source_of

__all__ = ["Classifiers", "classify", "encode_caps", "open_classifiers"]

log = logging.getLogger(__name__)
_UTC = dt.timezone.utc


@dataclasses.dataclass(frozen=True, slots=True)
class CookieNames:
    visitor: str
    session: str
    affinity: str
    cap: str
    customer: str | None
    logged_in: str | None
    cart: str | None
    consent: str | None
    consent_value: str


@dataclasses.dataclass(slots=True)
class Classifiers:
    """Everything classify needs, prepared once from ``Settings``."""

    device: DeviceClassifier
    geo: GeoReader | None
    geo_header: str | None
    codec: ck.CookieCodec
    names: CookieNames
    affinity: re.Pattern[str] | None
    own_sites: frozenset[str]

    def close(self) -> None:
        """Close the ``.mmdb``; safe to call twice."""
        if self.geo is not None:
            self.geo.close()
            self.geo = None


def open_classifiers(settings: Settings, *, geo_mode: int = MODE_MMAP) -> Classifiers:
    """Open the ``.mmdb`` (if configured), build the User-Agent and crawler
    matchers (shared by the process) and compile the affinity patterns."""
    own = set()
    if settings.upstream:
        from urllib.parse import urlsplit

        upstream_host = urlsplit(settings.upstream).hostname
        if upstream_host:
            own.add(site_of(upstream_host))
    classifiers = Classifiers(
        device=DeviceClassifier(),
        geo=open_geo(settings.geo_db, mode=geo_mode),
        geo_header=settings.geo_header.lower() if settings.geo_header else None,
        codec=ck.CookieCodec(settings.cookie_secret),
        names=CookieNames(
            visitor=settings.cookie_visitor,
            session=settings.cookie_session,
            affinity=settings.cookie_affinity,
            cap=settings.cookie_cap,
            customer=settings.customer_cookie,
            logged_in=settings.logged_in_cookie,
            cart=settings.cart_cookie,
            consent=settings.consent_cookie,
            consent_value=settings.consent_value,
        ),
        affinity=ck.compile_affinity(settings.affinity_patterns),
        own_sites=frozenset(own),
    )
    _warm_up(classifiers)
    return classifiers


# Browsers whose first parse at start builds the native regex engines' lazy
# state, so the first visitors do not pay ~1 ms each for it; the country ->
# timezone table is read then too (a file read, ~1 ms).
_WARM_UP_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
)


def _warm_up(classifiers: Classifiers) -> None:
    load_country_zones()
    now = dt.datetime.now(_UTC)
    for ua in _WARM_UP_AGENTS:
        facts = RequestFacts("GET", "/", headers=MappingProxyType({"user-agent": ua, "referer": "https://www.google.com/"}))
        classify(facts, classifiers, now)


def classify(facts: RequestFacts, classifiers: Classifiers, now: dt.datetime) -> Visitor:
    """The ``Visitor`` for one request at ``now`` (naive = UTC).  Never
    raises: bad input is unknown context, and an unexpected error gives a
    visitor with only ``path`` known (the origin's defaults, no cookies)."""
    try:
        return _classify(facts, classifiers, now)
    except Exception:  # noqa: BLE001 - fail open, CONTRACT §4
        log.exception("classify failed for %s %s", facts.method, facts.path)
        return Visitor(context=MappingProxyType({"path": facts.path}), consent=False)


def encode_caps(caps: Mapping[str, CapCount], classifiers: Classifiers, *, secure: bool) -> SetCookie | None:
    """The ``edge_cap`` cookie holding ``caps`` (e.g. ``choose.count_views``'
    result), or ``None`` when there is nothing to store.  The same counts
    always encode to the same value.  ``secure`` is accepted for the
    respond stage's symmetry: ``SetCookie`` has no flag, the respond stage
    adds ``Secure`` on HTTPS."""
    del secure
    return ck.write_caps(classifiers.codec, classifiers.names.cap, caps)


# ---------------------------------------------------------------------------
# The work.
# ---------------------------------------------------------------------------
def _classify(facts: RequestFacts, c: Classifiers, now: dt.datetime) -> Visitor:
    headers = facts.headers
    cookies = facts.cookies
    names = c.names
    if now.tzinfo is None:
        now = now.replace(tzinfo=_UTC)

    dev = c.device.classify(headers.get("user-agent"), headers.get("sec-ch-ua-mobile"))
    geo = locate(headers, facts.client_ip, header=c.geo_header, peer_trusted=facts.peer_trusted, reader=c.geo)
    hour, weekday, daypart = clock_context(now, geo.timezone)
    consent = not dev.bot and ck.has_consent(cookies, headers, names.consent, names.consent_value)
    request_source = source_of(facts.query, headers.get("referer"), c.own_sites, facts.host)

    ctx: dict[str, ContextValue] = {}
    full = consent  # full context (beyond CONTEXTUAL_KEYS) only with consent
    if geo.country:
        ctx["country"] = geo.country
    if full and geo.region:
        ctx["region"] = geo.region
    if full and geo.city:
        ctx["city"] = geo.city
    if geo.continent:
        ctx["continent"] = geo.continent
    if dev.device:
        ctx["device"] = dev.device
    if dev.os:
        ctx["os"] = dev.os
    if dev.browser:
        ctx["browser"] = dev.browser

    if dev.bot:
        _put_source(ctx, request_source)
        _put_time(ctx, hour, weekday, daypart, facts.path, consent=False)
        return Visitor(context=MappingProxyType(ctx), consent=False, bot=True, timezone=geo.timezone)

    if not consent:
        _put_source(ctx, request_source)
        _put_time(ctx, hour, weekday, daypart, facts.path, consent=False)
        return Visitor(
            context=MappingProxyType(ctx),
            consent=False,
            timezone=geo.timezone,
            cookies=_forget(cookies, names),
        )

    ts = int(now.timestamp())
    set_cookies: list[SetCookie] = []

    # Session: continue it, or start one (none / expired in the browser, or a new campaign).
    session = ck.read_session(c.codec, names.session, cookies.get(names.session))
    if session is not None and (
        session.start > ts + 60
        or (request_source.campaign and _campaign(session) != _campaign_of(request_source))
    ):
        session = None
    new_session = session is None
    if session is None:
        session = ck.SessionCookie(
            ck.new_id(), ts, request_source.source,
            request_source.utm_source, request_source.utm_medium, request_source.utm_campaign,
        )

    # Visitor id: keep a valid one, else mint; refresh its year once a session.
    visitor = ck.read_visitor(c.codec, names.visitor, cookies.get(names.visitor))
    known_before = visitor is not None
    if visitor is None:
        visitor = ck.VisitorCookie(ck.new_id(), ts)
        set_cookies.append(ck.write_visitor(c.codec, names.visitor, visitor))
    elif new_session:
        set_cookies.append(ck.write_visitor(c.codec, names.visitor, visitor))
    set_cookies.append(ck.write_session(c.codec, names.session, session))

    # Affinity: read, bump on a category page.
    raw_aff = cookies.get(names.affinity)
    affinity = ck.read_affinity(c.codec, names.affinity, raw_aff)
    category = ck.path_category(c.affinity, facts.path)
    if category is not None:
        affinity = ck.bump_affinity(affinity or (), category)
        set_cookies.append(ck.write_affinity(c.codec, names.affinity, affinity))
    elif affinity is None and raw_aff is not None:
        set_cookies.append(SetCookie(names.affinity, "", 0))  # invalid: drop it

    ctx["source"] = session.source
    if session.utm_source:
        ctx["utm_source"] = session.utm_source
    if session.utm_medium:
        ctx["utm_medium"] = session.utm_medium
    if session.utm_campaign:
        ctx["utm_campaign"] = session.utm_campaign
    # Returning: known from an earlier session (a visitor cookie that came
    # with a new session, or a first visit before this session began).
    returning = (known_before and new_session) or visitor.first_seen < session.start
    ctx["visitor"] = "returning" if returning else "new"
    if names.customer is not None:
        ctx["customer"] = ck.flag(cookies.get(names.customer))
    if names.logged_in is not None:
        ctx["logged_in"] = ck.flag(cookies.get(names.logged_in))
    if names.cart is not None:
        ctx["cart"] = ck.cart_state(cookies.get(names.cart))
    ctx["affinity"] = tuple(cat for cat, _ in affinity or ())
    _put_time(ctx, hour, weekday, daypart, facts.path, consent=True)

    caps = ck.read_caps(c.codec, names.cap, cookies.get(names.cap))
    return Visitor(
        context=MappingProxyType(ctx),
        visitor_id=visitor.id,
        consent=True,
        timezone=geo.timezone,
        session_id=session.id,
        caps=caps,
        cookies=tuple(set_cookies),
    )


def _campaign(session: ck.SessionCookie) -> tuple[Any, ...]:
    return (session.source, session.utm_source, session.utm_medium, session.utm_campaign)


def _campaign_of(source: Source) -> tuple[Any, ...]:
    return (source.source, source.utm_source, source.utm_medium, source.utm_campaign)


def _put_source(ctx: dict[str, ContextValue], source: Source) -> None:
    ctx["source"] = source.source
    if source.utm_source:
        ctx["utm_source"] = source.utm_source
    if source.utm_medium:
        ctx["utm_medium"] = source.utm_medium
    if source.utm_campaign:
        ctx["utm_campaign"] = source.utm_campaign


def _put_time(ctx: dict[str, ContextValue], hour: int, weekday: str, daypart: str, path: str, *, consent: bool) -> None:
    ctx["hour"] = hour
    ctx["weekday"] = weekday
    ctx["daypart"] = daypart
    ctx["path"] = path
    ctx["consent"] = consent


def _forget(cookies: Mapping[str, str], names: CookieNames) -> tuple[SetCookie, ...]:
    """Deletions for the proxy cookies a visitor without consent still holds."""
    return tuple(
        SetCookie(name, "", 0)
        for name in (names.visitor, names.session, names.affinity, names.cap)
        if name in cookies
    )

