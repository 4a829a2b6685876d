"""classify(): the whole stage, RequestFacts -> Visitor (CONTRACT §3, §5).

Requests go through ``headers.request_facts`` like the pipeline's do, and
cookies set by one response are sent back on the next, as a browser would.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import pytest

from edgeproxy.choose import count_views
from edgeproxy.classify import Classifiers, classify, encode_caps, open_classifiers
from edgeproxy.classify.geo import MODE_MEMORY
from edgeproxy.headers import request_facts
from edgeproxy.model import CONTEXT_KEYS, CONTEXTUAL_KEYS, CapCount, Decision, RequestFacts, SetCookie, SlotDecision, Visitor
from edgeproxy.settings import build_settings

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 27, 10, 0, tzinfo=UTC)  # a Friday
CITY_DB = Path(__file__).parent / "data" / "maxmind" / "GeoIP2-City-Test.mmdb"
LONDON = "81.2.69.142"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
PROXY_COOKIES = ("edge_vid", "edge_ses", "edge_aff")


def make_classifiers(**flags) -> Classifiers:
    base = {"geo_db": str(CITY_DB), "cookie_secret": "s3cret", "customer_cookie": "customer",
            "logged_in_cookie": "session", "cart_cookie": "cart", "geo_header": "CF-IPCountry",
            "trust_proxy": "10.0.0.0/8"}
    base.update(flags)
    settings = build_settings({k: v for k, v in base.items() if v is not None}, env={}, require_upstream=False)
    return open_classifiers(settings, geo_mode=MODE_MEMORY)


@pytest.fixture(scope="module")
def classifiers():
    c = make_classifiers()
    yield c
    c.close()


def facts(
    path: str = "/",
    *,
    ua: str | None = IPHONE,
    cookies: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    query: tuple[tuple[str, str], ...] = (),
    peer: str = LONDON,
    xff: str | None = None,
    host: str = "shop.example",
    scheme: str = "https",
) -> RequestFacts:
    pairs = [("Host", host)]
    if ua is not None:
        pairs.append(("User-Agent", ua))
    if cookies:
        pairs.append(("Cookie", "; ".join(f"{k}={v}" for k, v in cookies.items())))
    if xff:
        pairs.append(("X-Forwarded-For", xff))
    pairs += list((headers or {}).items())
    from ipaddress import ip_network

    return request_facts(method="GET", path=path, query=query, headers=pairs, peer=peer,
                         networks=(ip_network("10.0.0.0/8"),), scheme=scheme, host=host)


def jar(visitor: Visitor, before: Mapping[str, str] | None = None) -> dict[str, str]:
    """The browser's cookies after this response."""
    out = dict(before or {})
    for cookie in visitor.cookies:
        if cookie.max_age == 0:
            out.pop(cookie.name, None)
        else:
            out[cookie.name] = cookie.value
    return out


def names(visitor: Visitor) -> set[str]:
    return {c.name for c in visitor.cookies}


# ---------------------------------------------------------------------------
# A first visit with consent: the whole context, typed as documented
# ---------------------------------------------------------------------------
def test_first_visit_context(classifiers):
    v = classify(facts("/c/trail-running", query=(("utm_source", "newsletter"), ("utm_medium", "email")),
                       cookies={"cart": "TR-101", "customer": "1"}), classifiers, NOW)
    assert dict(v.context) == {
        "country": "GB", "region": "England", "city": "London", "continent": "EU",
        "device": "mobile", "os": "iOS", "browser": "Mobile Safari",
        "source": "email", "utm_source": "newsletter", "utm_medium": "email",
        "visitor": "new", "customer": True, "logged_in": False, "cart": "filled",
        "affinity": ("trail-running",),
        "hour": 10, "weekday": "fri", "daypart": "morning",
        "path": "/c/trail-running", "consent": True,
    }
    assert list(v.context) == [k for k in CONTEXT_KEYS if k in v.context]  # registry order
    assert v.consent and not v.bot
    assert v.visitor_id and v.session_id and v.timezone == "Europe/London"
    assert names(v) == {"edge_vid", "edge_ses", "edge_aff"}
    assert {c.name: c.max_age for c in v.cookies} == {"edge_vid": 365 * 86400, "edge_ses": 1800, "edge_aff": 90 * 86400}


def test_context_values_are_valid_for_the_registry(classifiers):
    v = classify(facts("/c/hiking", cookies={"cart": "[]"}), classifiers, NOW)
    for key, value in v.context.items():
        kind = CONTEXT_KEYS[key]
        if isinstance(kind, frozenset):
            assert value in kind, key
        elif kind == "bool":
            assert isinstance(value, bool), key
        elif kind.startswith("int:"):
            assert isinstance(value, int) and not isinstance(value, bool), key
        elif kind == "set":
            assert isinstance(value, tuple), key
        else:
            assert isinstance(value, str), key


@pytest.mark.parametrize(
    "flags, present, absent",
    [
        # storefront cookies not configured: their keys are unknown
        ({"customer_cookie": None, "logged_in_cookie": None, "cart_cookie": None}, set(), {"customer", "logged_in", "cart"}),
        # configured: known, false/empty without the cookie
        ({}, {"customer", "logged_in", "cart"}, set()),
        # no geo database: geo keys unknown
        ({"geo_db": None}, set(), {"country", "region", "city", "continent"}),
    ],
)
def test_keys_are_present_only_when_known(flags, present, absent):
    c = make_classifiers(**flags)
    try:
        v = classify(facts(), c, NOW)
        assert present <= set(v.context)
        assert not absent & set(v.context)
    finally:
        c.close()


# ---------------------------------------------------------------------------
# Visits: new / returning, the session's source, affinity
# ---------------------------------------------------------------------------
def test_visitor_is_new_for_the_whole_first_session_then_returning(classifiers):
    first = classify(facts(), classifiers, NOW)
    browser = jar(first)
    second = classify(facts("/p/1", cookies=browser), classifiers, NOW + dt.timedelta(minutes=5))
    assert second.context["visitor"] == "new"
    assert second.visitor_id == first.visitor_id and second.session_id == first.session_id
    assert names(second) == {"edge_ses"}  # the session slides; the id is not re-sent
    browser = jar(second, browser)
    # 30 idle minutes later the browser has dropped edge_ses (Max-Age=1800)
    browser.pop("edge_ses")
    third = classify(facts(cookies=browser), classifiers, NOW + dt.timedelta(hours=2))
    assert third.context["visitor"] == "returning"
    assert third.visitor_id == first.visitor_id and third.session_id != first.session_id
    assert names(third) == {"edge_vid", "edge_ses"}  # the id's year is renewed once a session


def test_session_remembers_its_first_source(classifiers):
    first = classify(facts(query=(("utm_source", "newsletter"), ("utm_medium", "email"), ("utm_campaign", "bf"))),
                     classifiers, NOW)
    browser = jar(first)
    later = classify(facts("/c/hiking", cookies=browser, headers={"Referer": "https://shop.example/"}),
                     classifiers, NOW + dt.timedelta(minutes=3))
    assert (later.context["source"], later.context["utm_campaign"]) == ("email", "bf")
    assert later.session_id == first.session_id


def test_a_new_campaign_mid_session_starts_a_new_session(classifiers):
    first = classify(facts(headers={"Referer": "https://www.google.com/"}), classifiers, NOW)
    assert first.context["source"] == "search"
    browser = jar(first)
    same = classify(facts(cookies=browser, headers={"Referer": "https://www.bing.com/"}), classifiers, NOW)
    assert same.context["source"] == "search" and same.session_id == first.session_id
    tagged = classify(facts(cookies=browser, query=(("utm_medium", "email"),)), classifiers, NOW)
    assert tagged.context["source"] == "email" and tagged.session_id != first.session_id
    assert tagged.visitor_id == first.visitor_id


def test_affinity_grows_from_category_pages_strongest_first(classifiers):
    browser: dict[str, str] = {}
    for path in ("/c/hiking", "/c/trail-running", "/c/trail-running", "/p/42", "/collections/Winter"):
        v = classify(facts(path, cookies=browser), classifiers, NOW)
        browser = jar(v, browser)
    assert v.context["affinity"] == ("trail-running", "winter", "hiking")
    assert v.affinity == ("trail-running", "winter", "hiking")


def test_product_pages_do_not_rewrite_the_affinity_cookie(classifiers):
    browser = jar(classify(facts("/c/hiking"), classifiers, NOW))
    v = classify(facts("/p/1", cookies=browser), classifiers, NOW)
    assert "edge_aff" not in names(v)
    assert v.context["affinity"] == ("hiking",)


# ---------------------------------------------------------------------------
# Bad cookies are replaced, never an error
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        "1|AbCdEfGhIjKlMnOp|tp5ns0.AAAAAAAAAAAAAAAA",  # forged signature
        "0|old-format",
        "x" * 10_000,
        "",
    ],
)
def test_bad_proxy_cookies_are_replaced(classifiers, bad):
    v = classify(facts("/", cookies={"edge_vid": bad, "edge_ses": bad, "edge_aff": bad, "edge_cap": bad}), classifiers, NOW)
    assert v.visitor_id and v.context["visitor"] == "new"
    assert v.context["affinity"] == () and dict(v.caps) == {}
    cookies = {c.name: c for c in v.cookies}
    assert cookies["edge_vid"].value != bad and cookies["edge_ses"].value != bad
    assert cookies["edge_aff"] == SetCookie("edge_aff", "", 0)  # dropped


def test_a_cookie_from_another_secret_is_replaced():
    other = make_classifiers(cookie_secret="other")
    browser = jar(classify(facts(), other, NOW))
    c = make_classifiers()
    v = classify(facts(cookies=browser), c, NOW)
    assert v.visitor_id != classify(facts(cookies=browser), other, NOW).visitor_id
    assert "edge_vid" in names(v)


# ---------------------------------------------------------------------------
# Consent
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flags, cookies, headers",
    [
        # a consent cookie is configured and absent
        ({"consent_cookie": "cc"}, {}, {}),
        # ...or says something else
        ({"consent_cookie": "cc"}, {"cc": "denied"}, {}),
        # Sec-GPC: 1, with or without a consent cookie
        ({}, {}, {"Sec-GPC": "1"}),
        ({"consent_cookie": "cc"}, {"cc": "granted"}, {"Sec-GPC": "1"}),
    ],
)
def test_without_consent_no_cookies_no_ids_contextual_keys_only(flags, cookies, headers):
    c = make_classifiers(**flags)
    try:
        v = classify(facts("/c/hiking", cookies={**cookies, "cart": "A1", "customer": "1"}, headers=headers,
                           query=(("utm_medium", "email"),)), c, NOW)
    finally:
        c.close()
    assert v.cookies == ()
    assert v.visitor_id is None and v.session_id is None and not v.consent
    assert set(v.context) <= CONTEXTUAL_KEYS
    assert v.context["consent"] is False
    assert (v.context["country"], v.context["device"], v.context["source"]) == ("GB", "mobile", "email")
    assert "city" not in v.context and "region" not in v.context and "affinity" not in v.context


def test_consent_granted_by_the_configured_cookie():
    c = make_classifiers(consent_cookie="cc", consent_value="yes")
    try:
        v = classify(facts(cookies={"cc": "yes"}), c, NOW)
    finally:
        c.close()
    assert v.consent and v.visitor_id and v.context["consent"] is True


def test_withdrawn_consent_deletes_the_proxy_cookies(classifiers):
    browser = jar(classify(facts("/c/hiking"), classifiers, NOW))
    v = classify(facts(cookies=browser, headers={"Sec-GPC": "1"}), classifiers, NOW)
    assert set(v.cookies) == {SetCookie(n, "", 0) for n in PROXY_COOKIES}
    assert v.visitor_id is None


# ---------------------------------------------------------------------------
# Bots
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("ua", [GOOGLEBOT, "curl/8.4.0", "python-requests/2.31", ""])
def test_bots_get_no_cookies_no_ids(classifiers, ua):
    v = classify(facts("/c/hiking", ua=ua, cookies={"edge_vid": "x"}), classifiers, NOW)
    assert v.bot and v.cookies == () and v.visitor_id is None and v.session_id is None
    assert v.context["device"] == "bot"
    assert set(v.context) <= CONTEXTUAL_KEYS


# ---------------------------------------------------------------------------
# Geo and clock
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "peer, xff, header, country, tz",
    [
        # the database, by the client address
        (LONDON, None, None, "GB", "Europe/London"),
        # through a trusted proxy: X-Forwarded-For and the CDN header count
        ("10.0.0.1", "216.160.83.56", None, "US", "America/Los_Angeles"),
        ("10.0.0.1", "216.160.83.56", "JP", "JP", "Asia/Tokyo"),
        # from an untrusted peer the header is ignored
        (LONDON, None, "JP", "GB", "Europe/London"),
        # pseudo-codes fall back to the database
        ("10.0.0.1", "216.160.83.56", "XX", "US", "America/Los_Angeles"),
        # a private client address: unknown
        ("10.0.0.1", None, None, None, None),
    ],
)
def test_geo_sources(classifiers, peer, xff, header, country, tz):
    v = classify(facts(peer=peer, xff=xff, headers={"CF-IPCountry": header} if header else {}), classifiers, NOW)
    assert v.context.get("country") == country
    assert v.timezone == tz


def test_clock_keys_use_the_visitors_timezone(classifiers):
    v = classify(facts(peer="216.160.83.56"), classifiers, dt.datetime(2026, 11, 27, 3, tzinfo=UTC))
    assert (v.context["hour"], v.context["weekday"], v.context["daypart"]) == (19, "thu", "evening")


# ---------------------------------------------------------------------------
# Frequency caps: counted by choose, stored by encode_caps, read back here
# ---------------------------------------------------------------------------
def test_caps_round_trip_through_encode_caps(classifiers):
    first = classify(facts(), classifiers, NOW)
    decision = Decision(slots={"hero": SlotDecision("hero", "promo", "r", cap_key="hero/promo", cap_per="day")})
    counts = count_views(first.caps, decision, ["hero"], NOW, first.session_id)
    cookie = encode_caps(counts, classifiers, secure=True)
    assert cookie is not None and cookie.name == "edge_cap" and cookie.max_age == 7 * 86400
    browser = jar(first)
    browser[cookie.name] = cookie.value
    second = classify(facts(cookies=browser), classifiers, NOW)
    assert dict(second.caps) == {"hero/promo": CapCount("d2026-11-27", 1)}
    assert encode_caps(second.caps, classifiers, secure=False) == cookie  # unchanged counts, same value


def test_encode_caps_with_nothing_to_count_is_none(classifiers):
    assert encode_caps({}, classifiers, secure=True) is None


# ---------------------------------------------------------------------------
# Robustness
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"ua": "\x00" * 3000},
        {"ua": None},
        {"peer": "not-an-ip"},
        {"headers": {"Referer": "http://[::1", "CF-IPCountry": "\ud800\ud800", "Sec-CH-UA-Mobile": "?1" * 1000}},
        {"query": (("utm_source", "\ud800"), ("gclid", ""), ("utm_medium", "e" * 10_000))},
        {"path": "/c/%ZZ%00\ud800"},
        {"host": "[broken"},
    ],
)
def test_garbage_requests_never_raise(classifiers, kwargs):
    v = classify(facts(**kwargs), classifiers, NOW)
    assert isinstance(v, Visitor)
    assert set(v.context) <= set(CONTEXT_KEYS)


def test_an_unexpected_error_gives_the_path_only_visitor(classifiers, caplog):
    bad = RequestFacts("GET", "/x", headers={"user-agent": 42})  # type: ignore[dict-item]
    v = classify(bad, classifiers, NOW)
    assert dict(v.context) == {"path": "/x"} and v.cookies == () and v.visitor_id is None
    assert "classify failed" in caplog.text


def test_naive_now_is_utc(classifiers):
    assert classify(facts(), classifiers, NOW.replace(tzinfo=None)).context["hour"] == 10


def test_close_is_idempotent():
    c = make_classifiers()
    c.close()
    c.close()
    assert classify(facts(), c, NOW).context.get("country") is None
