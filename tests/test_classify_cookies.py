"""classify/cookies.py: the proxy's signed cookies, storefront flags, consent.

Every malformed input is ignored (read as absent), never raised.
"""

from __future__ import annotations

import datetime as dt
from http.cookies import SimpleCookie

import pytest

from edgeproxy.classify import cookies as ck
from edgeproxy.model import CapCount, SetCookie

CODEC = ck.CookieCodec("test-secret")
T0 = int(dt.datetime(2026, 11, 27, 10, tzinfo=dt.timezone.utc).timestamp())


def vid_value() -> str:
    return ck.write_visitor(CODEC, "edge_vid", ck.VisitorCookie("AbCdEfGhIjKlMnOp", T0)).value


# ---------------------------------------------------------------------------
# Sealing and opening
# ---------------------------------------------------------------------------
def test_sealed_values_round_trip():
    value = CODEC.seal("edge_x", ("a", "b|c", "d.e", "ünï", ""))
    assert CODEC.open("edge_x", value) == ("a", "b|c", "d.e", "ünï", "")


def test_sealed_values_need_no_quoting_in_a_set_cookie_header():
    value = CODEC.seal("edge_x", ("a b", "x;y", 'q"', "ünï", "slot/variant"))
    jar = SimpleCookie()
    jar["edge_x"] = value
    # http.cookies quotes values with characters outside the cookie-octet set
    assert jar.output(header="") == f" edge_x={value}"


def test_the_same_fields_always_seal_to_the_same_value():
    assert CODEC.seal("edge_x", ("a", "b")) == ck.CookieCodec("test-secret").seal("edge_x", ("a", "b"))


@pytest.mark.parametrize(
    "value",
    [
        # absent, empty
        None,
        "",
        # garbage
        "garbage",
        "1|abc",
        "1|abc.",
        ".",
        "%%%",
        "\x00\ud800",
        # old / other format
        "0|AbCdEfGhIjKlMnOp|tp5ns0.AAAAAAAAAAAAAAAA",
        "AbCdEfGhIjKlMnOp",
        # oversized
        "1|" + "a" * 5000 + ".AAAAAAAAAAAAAAAA",
    ],
)
def test_malformed_values_are_ignored(value):
    assert CODEC.open("edge_vid", value) is None
    assert ck.read_visitor(CODEC, "edge_vid", value) is None
    assert ck.read_session(CODEC, "edge_ses", value) is None
    assert ck.read_affinity(CODEC, "edge_aff", value) is None
    assert ck.read_caps(CODEC, "edge_cap", value) == {}


@pytest.mark.parametrize(
    "tamper",
    [
        # a changed field
        lambda v: v.replace("AbCd", "AbCe"),
        # a changed signature
        lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"),
        # a truncated signature
        lambda v: v[:-2],
        # an extra field
        lambda v: v.replace("|", "|x|", 1),
    ],
)
def test_tampered_values_are_ignored(tamper):
    assert ck.read_visitor(CODEC, "edge_vid", vid_value()) is not None
    assert ck.read_visitor(CODEC, "edge_vid", tamper(vid_value())) is None


def test_oversized_values_never_enter_the_caches():
    # Junk cookies must not fill memory: only plausible values are memoised.
    ck.read_session.cache_clear()
    for i in range(50):
        assert ck.read_session(CODEC, "edge_ses", f"{i}" + "x" * 5000) is None
    assert ck.read_session.cache_info().currsize == 0
    assert ck.read_session(CODEC, "edge_ses", "short") is None
    assert ck.read_session.cache_info().currsize == 1


def test_a_value_signed_for_another_cookie_is_ignored():
    value = CODEC.seal("edge_aff", ("AbCdEfGhIjKlMnOp", "tp5ns0"))
    assert ck.read_visitor(CODEC, "edge_vid", value) is None


def test_a_value_signed_with_another_secret_is_ignored():
    other = ck.CookieCodec("another-secret")
    value = ck.write_visitor(other, "edge_vid", ck.VisitorCookie("AbCdEfGhIjKlMnOp", T0)).value
    assert ck.read_visitor(CODEC, "edge_vid", value) is None


def _hmac_signed(secret: str, name: str, body: str) -> str:
    """A value as releases before the keyed-BLAKE2b signature wrote it."""
    import base64, hashlib, hmac

    key = hashlib.sha256(b"edgeproxy cookie key v1\x00" + secret.encode()).digest()
    mac = hmac.digest(key, f"{name}={body}".encode(), "sha256")[:12]
    return f"{body}.{base64.urlsafe_b64encode(mac).decode()}"


def test_a_value_signed_by_an_earlier_release_is_still_read():
    value = _hmac_signed("test-secret", "edge_vid", f"1|AbCdEfGhIjKlMnOp|{ck._b36(T0)}")
    assert ck.read_visitor(CODEC, "edge_vid", value) == ck.VisitorCookie("AbCdEfGhIjKlMnOp", T0)


def test_an_earlier_release_value_with_another_secret_or_name_is_ignored():
    body = f"1|AbCdEfGhIjKlMnOp|{ck._b36(T0)}"
    assert ck.read_visitor(CODEC, "edge_vid", _hmac_signed("another-secret", "edge_vid", body)) is None
    assert ck.read_visitor(CODEC, "edge_vid", _hmac_signed("test-secret", "edge_aff", body)) is None


def test_values_are_sealed_with_keyed_blake2b_not_the_earlier_hmac():
    value = CODEC.seal("edge_vid", ("AbCdEfGhIjKlMnOp", ck._b36(T0)))
    assert value != _hmac_signed("test-secret", "edge_vid", value.rpartition(".")[0])
    assert len(value.rpartition(".")[2]) == 16


@pytest.mark.parametrize(
    "fields",
    [
        # a visitor id that is not one of ours
        ("short", "tp5ns0"),
        ("AbCdEfGhIjKlMnOp!", "tp5ns0"),
        # a time that is not base-36, zero or absurd
        ("AbCdEfGhIjKlMnOp", "-1"),
        ("AbCdEfGhIjKlMnOp", "0"),
        ("AbCdEfGhIjKlMnOp", "zzzzzzzzzz"),
        # missing a field
        ("AbCdEfGhIjKlMnOp",),
    ],
)
def test_signed_but_out_of_range_visitor_fields_are_ignored(fields):
    assert ck.read_visitor(CODEC, "edge_vid", CODEC.seal("edge_vid", fields)) is None


# ---------------------------------------------------------------------------
# The four cookies
# ---------------------------------------------------------------------------
def test_visitor_cookie_round_trip_and_lifetime():
    cookie = ck.write_visitor(CODEC, "edge_vid", ck.VisitorCookie("AbCdEfGhIjKlMnOp", T0))
    assert cookie.max_age == 365 * 86400
    assert ck.read_visitor(CODEC, "edge_vid", cookie.value) == ck.VisitorCookie("AbCdEfGhIjKlMnOp", T0)
    assert len(cookie.value) < 60


def test_session_cookie_round_trip_and_lifetime():
    session = ck.SessionCookie("sessionid123", T0, "email", "news|letter", "email", "black friday")
    cookie = ck.write_session(CODEC, "edge_ses", session)
    assert cookie.max_age == 30 * 60
    assert ck.read_session(CODEC, "edge_ses", cookie.value) == session


def test_session_with_an_unknown_source_is_ignored():
    value = CODEC.seal("edge_ses", ("sessionid123", "tp5ns0", "telepathy", "", "", ""))
    assert ck.read_session(CODEC, "edge_ses", value) is None


def test_affinity_cookie_round_trip_and_lifetime():
    cookie = ck.write_affinity(CODEC, "edge_aff", [("trail-running", 3), ("a:b", 1)])
    assert cookie.max_age == 90 * 86400
    assert ck.read_affinity(CODEC, "edge_aff", cookie.value) == (("trail-running", 3), ("a:b", 1))


@pytest.mark.parametrize(
    "fields",
    [
        ("a:1",) * 6,  # more than five categories
        ("a:0",),
        ("a:-1",),
        ("a:x",),
        ("a",),
        (":3",),
        ("x" * 65 + ":1",),
    ],
)
def test_bad_affinity_entries_are_ignored(fields):
    assert ck.read_affinity(CODEC, "edge_aff", CODEC.seal("edge_aff", fields)) is None


@pytest.mark.parametrize(
    "before, category, after",
    [
        # a first category
        ([], "hiking", [("hiking", 1)]),
        # a repeat strengthens it and moves it up
        ([("hiking", 2), ("trail", 2)], "trail", [("trail", 3), ("hiking", 2)]),
        # on a tie the category just seen comes first
        ([("hiking", 1)], "trail", [("trail", 1), ("hiking", 1)]),
        # five are kept: a new one replaces the weakest
        ([("a", 5), ("b", 4), ("c", 3), ("d", 2), ("e", 1)], "f", [("a", 5), ("b", 4), ("c", 3), ("d", 2), ("f", 1)]),
        # weights halve once one passes the maximum
        ([("a", 100), ("b", 3)], "a", [("a", 51), ("b", 2)]),
    ],
)
def test_bump_affinity(before, category, after):
    assert ck.bump_affinity(before, category) == after


def test_caps_cookie_round_trip_and_lifetime():
    caps = {"hero/app-promo": CapCount("d2026-11-27", 2), "banner/x": CapCount("sAbCdEfGh", 1)}
    cookie = ck.write_caps(CODEC, "edge_cap", caps)
    assert cookie is not None and cookie.max_age == 7 * 86400
    assert ck.read_caps(CODEC, "edge_cap", cookie.value) == caps


def test_caps_cookie_is_deterministic_and_none_when_empty():
    caps = {"b/x": CapCount("w2026-48", 1), "a/y": CapCount("d2026-11-27", 3)}
    assert ck.write_caps(CODEC, "edge_cap", caps) == ck.write_caps(CODEC, "edge_cap", dict(reversed(caps.items())))
    assert ck.write_caps(CODEC, "edge_cap", {}) is None
    assert ck.write_caps(CODEC, "edge_cap", {"a/y": CapCount("d2026-11-27", 0)}) is None


@pytest.mark.parametrize(
    "entry",
    ["hero:d2026-11-27:1", "hero/x:bad period:1", "hero/x:d2026-11-27:0", "hero/x:d2026-11-27:many", "hero/x:d1"],
)
def test_bad_cap_entries_are_ignored(entry):
    assert ck.read_caps(CODEC, "edge_cap", CODEC.seal("edge_cap", (entry,))) == {}


# ---------------------------------------------------------------------------
# Affinity patterns
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path, category",
    [
        ("/c/hiking", "hiking"),
        ("/c/hiking/", "hiking"),
        ("/c/hiking/boots", "hiking"),
        ("/c/Trail-Running", "trail-running"),
        ("/c/trail%20running", "trail running"),
        ("/collections/winter", "winter"),
        ("/collections/winter.html", "winter"),
        # not a category page
        ("/", None),
        ("/c/", None),
        ("/c", None),
        ("/cart", None),
        ("/x/c/hiking", None),
        ("/c/" + "x" * 65, None),
        ("/c/%00", None),
        ("/c/..", None),
    ],
)
def test_path_category(path, category):
    regex = ck.compile_affinity(("/c/{category}", "/collections/{category}"))
    assert ck.path_category(regex, path) == category


def test_affinity_pattern_with_a_suffix():
    regex = ck.compile_affinity(("/shop/{category}/all",))
    assert ck.path_category(regex, "/shop/tents/all") == "tents"
    assert ck.path_category(regex, "/shop/tents") is None
    assert ck.path_category(ck.compile_affinity(()), "/c/x") is None


# ---------------------------------------------------------------------------
# Storefront flags and consent
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, expected",
    [(None, False), ("", False), ("0", False), ("false", False), ("no", False), ("null", False),
     ("1", True), ("true", True), ("yes", True), ("c-123", True)],
)
def test_customer_and_logged_in_flags(value, expected):
    assert ck.flag(value) is expected


@pytest.mark.parametrize(
    "value, expected",
    [(None, "empty"), ("", "empty"), ("0", "empty"), ("[]", "empty"), ("%5B%5D", "empty"), ("{}", "empty"),
     ("TR-101", "filled"), ("TR-101.HK-302", "filled"), ("2", "filled"), ('["A1"]', "filled")],
)
def test_cart_state(value, expected):
    assert ck.cart_state(value) == expected


@pytest.mark.parametrize(
    "cookies, headers, consent_cookie, expected",
    [
        # no consent cookie configured: consent assumed
        ({}, {}, None, True),
        # ...but Sec-GPC: 1 always means no
        ({}, {"sec-gpc": "1"}, None, False),
        ({"consent": "granted"}, {"sec-gpc": "1"}, "consent", False),
        # Sec-GPC other values change nothing
        ({}, {"sec-gpc": "0"}, None, True),
        # configured: the granted value, any case
        ({"consent": "granted"}, {}, "consent", True),
        ({"consent": "Granted"}, {}, "consent", True),
        ({"consent": "denied"}, {}, "consent", False),
        ({"consent": ""}, {}, "consent", False),
        ({}, {}, "consent", False),
    ],
)
def test_consent(cookies, headers, consent_cookie, expected):
    assert ck.has_consent(cookies, headers, consent_cookie, "granted") is expected


def test_set_cookie_values_are_plain_data():
    assert isinstance(ck.write_visitor(CODEC, "v", ck.VisitorCookie("AbCdEfGhIjKlMnOp", T0)), SetCookie)
