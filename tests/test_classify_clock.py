"""classify/clock.py: hour, weekday and daypart in the visitor's timezone."""

from __future__ import annotations

import datetime as dt

import pytest

from edgeproxy.classify.clock import DAYPARTS, clock_context, local_time, zone

UTC = dt.timezone.utc


@pytest.mark.parametrize(
    "now, tz, expected",
    [
        # UTC noon on a Friday, seen from around the world
        (dt.datetime(2026, 11, 27, 12, tzinfo=UTC), "Europe/London", (12, "fri", "afternoon")),
        (dt.datetime(2026, 11, 27, 12, tzinfo=UTC), "America/Los_Angeles", (4, "fri", "night")),
        (dt.datetime(2026, 11, 27, 12, tzinfo=UTC), "Asia/Tokyo", (21, "fri", "evening")),
        (dt.datetime(2026, 11, 27, 20, tzinfo=UTC), "Australia/Sydney", (7, "sat", "morning")),
        # summer time
        (dt.datetime(2026, 7, 1, 12, tzinfo=UTC), "Europe/London", (13, "wed", "afternoon")),
        # naive means UTC
        (dt.datetime(2026, 11, 27, 12), "Europe/Berlin", (13, "fri", "afternoon")),
        # an aware time in another offset is converted
        (dt.datetime(2026, 11, 27, 12, tzinfo=dt.timezone(dt.timedelta(hours=5))), "UTC", (7, "fri", "morning")),
    ],
)
def test_clock_in_the_visitors_timezone(now, tz, expected):
    assert clock_context(now, tz) == expected


@pytest.mark.parametrize(
    "hour, daypart",
    [
        # boundaries: each start is inclusive
        (0, "night"), (4, "night"), (5, "morning"), (11, "morning"), (12, "afternoon"),
        (16, "afternoon"), (17, "evening"), (21, "evening"), (22, "night"), (23, "night"),
    ],
)
def test_daypart_boundaries(hour, daypart):
    assert DAYPARTS[hour] == daypart
    assert clock_context(dt.datetime(2026, 11, 27, hour, 30, tzinfo=UTC), "UTC")[2] == daypart


@pytest.mark.parametrize("tz", [None, "", "Mars/Olympus", "../etc/passwd", "/etc/localtime", "x" * 200])
def test_unknown_timezone_uses_the_proxys_local_zone(tz):
    now = dt.datetime(2026, 11, 27, 12, tzinfo=UTC)
    local = now.astimezone()
    assert clock_context(now, tz) == (local.hour, ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[local.weekday()], DAYPARTS[local.hour])
    assert local_time(now, tz).utcoffset() == local.utcoffset()


def test_zones_are_cached_and_bad_names_are_none():
    assert zone("Europe/London") is zone("Europe/London")
    assert zone("Nowhere/Special") is None
