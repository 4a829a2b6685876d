"""`when` conditions: one row per (condition, visitor context, holds?)."""

from __future__ import annotations

import tomllib

import pytest

from edgeproxy.catalog import Variant
from edgeproxy.catalog.conditions import ConditionError, compile_when


def holds(when_toml: str, context: dict) -> bool:
    """Evaluate as choose() does (set fast path included), and check the
    plain tests agree."""
    conditions = compile_when(tomllib.loads(f"when = {when_toml}")["when"])
    v = Variant(slot="s", id="v", file="v.html", path="v.html", kind="content", when=conditions)
    assert v.eligible(context, 0.0) is v.matches(context)
    return v.eligible(context, 0.0)


@pytest.mark.parametrize(
    "when, context, expected",
    [
        # -- no keys: everyone
        ("{}", {}, True),
        # -- all keys must hold
        ('{ country = "GB", device = "mobile" }', {"country": "GB", "device": "mobile"}, True),
        ('{ country = "GB", device = "mobile" }', {"country": "GB", "device": "desktop"}, False),
        # -- a missing context key fails, negated or not
        ('{ country = "GB" }', {}, False),
        ('{ country = { not = "GB" } }', {}, False),
        # -- ISO codes: upper-cased on both sides
        ('{ country = "gb" }', {"country": "GB"}, True),
        ('{ country = "GB" }', {"country": "gb"}, True),
        ('{ country = ["GB", "IE"] }', {"country": "IE"}, True),
        ('{ country = ["GB", "IE"] }', {"country": "FR"}, False),
        ('{ country = { not = ["GB", "IE"] } }', {"country": "FR"}, True),
        ('{ country = { not = ["GB", "IE"] } }', {"country": "GB"}, False),
        ('{ continent = "eu" }', {"continent": "EU"}, True),
        # -- closed sets: any case in the file
        ('{ device = "Mobile" }', {"device": "mobile"}, True),
        ('{ device = ["mobile", "tablet"] }', {"device": "tablet"}, True),
        ('{ source = { not = "paid" } }', {"source": "search"}, True),
        ('{ weekday = ["sat", "sun"] }', {"weekday": "mon"}, False),
        ('{ daypart = "evening" }', {"daypart": "evening"}, True),
        ('{ cart = "filled" }', {"cart": "empty"}, False),
        ('{ visitor = "returning" }', {"visitor": "returning"}, True),
        # -- text: case-insensitive equality
        ('{ city = "london" }', {"city": "London"}, True),
        ('{ browser = ["Chrome", "Edge"] }', {"browser": "chrome"}, True),
        ('{ utm_campaign = "bf-2026" }', {"utm_campaign": "BF-2026"}, True),
        ('{ city = "London" }', {"city": "Londonderry"}, False),
        # -- numbers: values, lists, inclusive ranges, wrap past midnight
        ("{ hour = 9 }", {"hour": 9}, True),
        ("{ hour = [9, 10] }", {"hour": 11}, False),
        ("{ hour = { min = 9, max = 17 } }", {"hour": 17}, True),
        ("{ hour = { min = 9, max = 17 } }", {"hour": 18}, False),
        ("{ hour = { min = 9 } }", {"hour": 23}, True),
        ("{ hour = { max = 5 } }", {"hour": 6}, False),
        ("{ hour = { min = 22, max = 5 } }", {"hour": 23}, True),
        ("{ hour = { min = 22, max = 5 } }", {"hour": 3}, True),
        ("{ hour = { min = 22, max = 5 } }", {"hour": 12}, False),
        ("{ hour = { not = { min = 9, max = 17 } } }", {"hour": 20}, True),
        # -- flags
        ("{ customer = true }", {"customer": True}, True),
        ("{ customer = true }", {"customer": False}, False),
        ("{ logged_in = false }", {"logged_in": False}, True),
        ("{ consent = { not = true } }", {"consent": False}, True),
        # -- path globs: * crosses /, case-sensitive
        ('{ path = "/c/*" }', {"path": "/c/trail-running"}, True),
        ('{ path = "/c/*" }', {"path": "/c/trail/shoes"}, True),
        ('{ path = "/c/*" }', {"path": "/collections/x"}, False),
        ('{ path = ["/", "/sale*"] }', {"path": "/"}, True),
        ('{ path = "/p/??" }', {"path": "/p/a1"}, True),
        ('{ path = "/C/*" }', {"path": "/c/x"}, False),
        ('{ path = { not = "/checkout*" } }', {"path": "/c/x"}, True),
        # -- affinity: membership in the visitor's categories
        ('{ affinity = "trail-running" }', {"affinity": ("formal", "trail-running")}, True),
        ('{ affinity = ["hiking", "camping"] }', {"affinity": ("formal",)}, False),
        ('{ affinity = "trail-running" }', {"affinity": ()}, False),
        ('{ affinity = { not = "formal" } }', {"affinity": ("trail-running",)}, True),
        ('{ affinity = "Trail-Running" }', {"affinity": ("trail-running",)}, True),
    ],
)
def test_condition_table(when, context, expected):
    assert holds(when, context) is expected


def test_condition_text_describes_the_rule():
    conds = compile_when(tomllib.loads('when = { country = ["gb", "IE"], hour = { min = 9, max = 17 }, device = { not = "bot" } }')["when"])
    assert [c.text for c in conds] == ["country=GB|IE", "hour=9..17", "device!=bot"]


@pytest.mark.parametrize(
    "when, key, reason",
    [
        ('{ weather = "rain" }', "weather", "unknown context key 'weather' in when (known: country, region, city"),
        ('{ device = "phone" }', "device", "device: 'phone' is not one of bot, desktop, mobile, tablet"),
        ('{ country = "GBR" }', "country", "country: 'GBR' is not an ISO 3166 two-letter code"),
        ('{ continent = "Europe" }', "continent", "continent: 'Europe' is not one of AF, AN, AS, EU, NA, OC, SA"),
        ('{ hour = "9" }', "hour", "hour: value '9' is not a whole number from 0 to 23"),
        ("{ hour = true }", "hour", "hour: value true is not a whole number from 0 to 23"),
        ('{ city = "" }', "city", "city: '' is not a non-empty text"),
        ('{ customer = 1 }', "customer", "customer: 1 is not true or false"),
        ('{ country = { not = { not = "GB" } } }', "country", "country: { not = { not = … } } is a double negation"),
        ('{ weekday = "monday" }', "weekday", "weekday: 'monday' is not one of fri, mon, sat, sun, thu, tue, wed"),
    ],
)
def test_bad_condition_names_the_key(when, key, reason):
    with pytest.raises(ConditionError) as info:
        compile_when(tomllib.loads(f"when = {when}")["when"])
    assert info.value.key == key
    assert info.value.reason.startswith(reason)


@pytest.mark.parametrize(
    "when, reason",
    [
        ({"country": "UK"}, 'country: \'UK\' is not an ISO 3166 country code (did you mean "GB"?)'),
        ({"country": ["GB", "ZZ"]}, "country: 'ZZ' is not an ISO 3166 country code"),
        ({"country": {"not": "EL"}}, 'did you mean "GR"?'),
    ],
)
def test_two_letter_country_that_no_visitor_can_have_is_rejected(when, reason):
    with pytest.raises(ConditionError) as err:
        compile_when(when)
    assert reason in str(err.value)


def test_kosovo_as_cdns_send_it_is_a_country():
    assert compile_when({"country": "XK"})
