"""classify/source.py: how a request arrived (source, utm_*).

The accuracy test runs the Referer classification against referer-parser's
referer-tests.json (../shared/data; only read, never copied: GPL/unlicensed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeproxy.classify.source import DIRECT, Source, host_medium, referer_medium, site_of, source_of

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
OWN = frozenset({"shop.example"})


def src(query: str = "", referer: str | None = None, host: str = "shop.example") -> Source:
    pairs = tuple(tuple(p.split("=", 1)) for p in query.split("&") if p) if query else ()
    return source_of(pairs, referer, frozenset(), host)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "query, referer, expected",
    [
        # nothing at all
        ("", None, "direct"),
        ("", "", "direct"),
        ("q=shoes&page=2", None, "direct"),
        # ad click ids
        ("gclid=abc", None, "paid"),
        ("gbraid=abc", None, "paid"),
        ("wbraid=abc", None, "paid"),
        ("dclid=abc", None, "paid"),
        ("fbclid=abc", "https://l.facebook.com/", "paid"),
        ("msclkid=abc", "https://www.bing.com/", "paid"),
        ("ttclid=abc", None, "paid"),
        ("twclid=abc", None, "paid"),
        ("li_fat_id=abc", None, "paid"),
        ("yclid=abc", None, "paid"),
        ("GCLID=abc", None, "paid"),
        # email tools' ids
        ("mc_cid=abc&mc_eid=def", None, "email"),
        # utm_medium
        ("utm_medium=cpc", None, "paid"),
        ("utm_medium=ppc", None, "paid"),
        ("utm_medium=paid_social&utm_source=facebook", None, "paid"),
        ("utm_medium=paidsearch", None, "paid"),
        ("utm_medium=display", None, "paid"),
        ("utm_medium=email", None, "email"),
        ("utm_medium=Email", None, "email"),
        ("utm_medium=newsletter", None, "email"),
        ("utm_medium=social", None, "social"),
        ("utm_medium=social-media", None, "social"),
        ("utm_medium=organic&utm_source=google", None, "search"),
        ("utm_medium=referral", None, "referral"),
        ("utm_medium=affiliate", None, "referral"),
        # utm_medium wins over the referer
        ("utm_medium=email", "https://www.google.com/", "email"),
        # an unknown medium: the referer, then the utm_source name
        ("utm_medium=qr", "https://www.google.com/", "search"),
        ("utm_source=newsletter", None, "email"),
        ("utm_source=facebook", None, "social"),
        ("utm_source=google", None, "search"),
        ("utm_source=partner-blog", None, "referral"),
        ("utm_campaign=bf", None, "referral"),
        # referers: search, social, email, paid
        ("", "https://www.google.com/", "search"),
        ("", "https://www.google.co.uk/search?q=trail+shoes", "search"),
        ("", "https://www.google.com.br/", "search"),
        ("", "https://www.bing.com/search?q=x", "search"),
        ("", "https://duckduckgo.com/", "search"),
        ("", "https://yandex.ru/search/?text=x", "search"),
        ("", "https://search.yahoo.co.jp/search?p=x", "search"),
        ("", "https://www.ecosia.org/search?q=x", "search"),
        ("", "https://l.facebook.com/l.php?u=x", "social"),
        ("", "https://t.co/abc", "social"),
        ("", "https://www.linkedin.com/feed/", "social"),
        ("", "https://www.reddit.com/r/running/", "social"),
        ("", "https://www.pinterest.co.uk/pin/1/", "social"),
        ("", "https://www.youtube.com/watch?v=1", "social"),
        ("", "https://mail.google.com/mail/u/0/", "email"),
        ("", "https://outlook.live.com/mail/0/inbox", "email"),
        ("", "https://mail.yahoo.com/d/folders/1", "email"),
        ("", "https://webmail.example-isp.net/", "email"),
        ("", "https://deref-gmx.net/mail/client/x/dereferrer/", "email"),
        ("", "https://www.googleadservices.com/pagead/aclk?sa=L", "paid"),
        ("", "android-app://com.google.android.gm/", "email"),
        ("", "android-app://com.google.android.googlequicksearchbox/", "search"),
        # any other site
        ("", "https://blog.example.org/best-trail-shoes", "referral"),
        ("", "https://docs.google.com/document/d/1", "referral"),
        ("", "https://chatgpt.com/", "referral"),
        ("", "android-app://org.example.reader/", "referral"),
        # the shop itself, www or not, any port, any case
        ("", "https://shop.example/c/hiking", "internal"),
        ("", "http://www.shop.example:8443/", "internal"),
        ("", "https://SHOP.example/", "internal"),
        # unusable referers
        ("", "not a url", "direct"),
        ("", "file:///etc/passwd", "direct"),
        ("", "https://", "direct"),
        ("", "https://x.example/" + "a" * 5000, "direct"),
    ],
)
def test_source(query, referer, expected):
    assert src(query, referer).source == expected


def test_own_hosts_from_settings_are_internal():
    assert source_of((), "https://www.origin.example/", frozenset({"origin.example"}), "cdn.example").source == "internal"


def test_utm_values_are_kept_trimmed_and_bounded():
    s = source_of((("utm_source", " Newsletter "), ("utm_medium", "email"), ("utm_campaign", "x" * 500)), None)
    assert s == Source("email", "Newsletter", "email", "x" * 100, campaign=True)


def test_first_utm_value_wins_and_blank_utm_is_absent():
    s = source_of((("utm_source", "a"), ("utm_source", "b"), ("utm_medium", "  ")), None)
    assert (s.utm_source, s.utm_medium) == ("a", None)


def test_unprintable_utm_value_is_dropped():
    s = source_of((("utm_source", "bad\x00value"), ("utm_campaign", "\ud800")), None)
    assert (s.utm_source, s.utm_campaign) == (None, None)


def test_campaign_flag_marks_explicit_attribution():
    assert src("gclid=1").campaign and src("utm_source=x").campaign
    assert not src("", "https://www.google.com/").campaign
    assert src() is DIRECT


@pytest.mark.parametrize(
    "host, expected",
    [
        ("www.google.de", "search"),
        ("mail.google.com", "email"),
        ("plus.google.com", "social"),
        ("google", None),
        ("", None),
        ("example.com", None),
        ("mail.example.com", "email"),
        ("search.example-portal.com", "search"),
        ("mail.ru", None),
        ("e.mail.ru", "email"),
        ("go.mail.ru", "search"),
    ],
)
def test_host_medium(host, expected):
    assert host_medium(host) == expected


@pytest.mark.parametrize(
    "host, site",
    [("www.shop.example", "shop.example"), ("Shop.Example:8080", "shop.example"), ("[::1]:8000", "::1"), ("shop.example.", "shop.example")],
)
def test_site_of(host, site):
    assert site_of(host) == site


def test_referer_medium_none_without_referer():
    assert referer_medium(None) is None and referer_medium("") is None


# ---------------------------------------------------------------------------
# Accuracy against referer-parser's test cases (../shared/data)
# ---------------------------------------------------------------------------
# referer-parser mediums this project has no value for: an AI chatbot is a
# referral here; "unknown" is a referral.
MEDIUM_MAP = {"chatbot": "referral", "unknown": "referral"}


@pytest.mark.shared_data
def test_referer_accuracy_against_referer_parser_tests():
    path = SHARED / "referer-parser" / "referer-tests.json"
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared ground-truth data (../shared/data) is absent")
    cases = json.loads(path.read_text(encoding="utf-8"))
    right = 0
    by_medium: dict[str, list[int]] = {}
    for case in cases:
        expected = MEDIUM_MAP.get(case["medium"], case["medium"])
        got = referer_medium(case["uri"], frozenset({"snowplowanalytics.com"}))
        ok = got == expected
        right += ok
        tally = by_medium.setdefault(case["medium"], [0, 0])
        tally[0] += ok
        tally[1] += 1
    share = right / len(cases)
    print(f"\nsource (referer-parser tests): {right}/{len(cases)} = {share:.1%}; "
          + ", ".join(f"{m} {r}/{t}" for m, (r, t) in sorted(by_medium.items())))
    assert len(cases) > 100
    assert share >= 0.90
