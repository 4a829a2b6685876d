"""Clock: the visitor's local hour, weekday and daypart (CONTRACT §3).

The visitor's timezone comes from geo (the CDN header or the ``.mmdb``
``location.time_zone``); when it is unknown, the proxy's own local zone is
used (set ``TZ`` in the container to choose it).

Dayparts, local time, each start inclusive:

=========  ===============
daypart    hours
=========  ===============
morning    05:00 – 11:59
afternoon  12:00 – 16:59
evening    17:00 – 21:59
night      22:00 – 04:59
=========  ===============
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..model import WEEKDAYS

MORNING_START = 5
AFTERNOON_START = 12
EVENING_START = 17
NIGHT_START = 22

# hour -> daypart, precomputed.
DAYPARTS: tuple[str, ...] = tuple(
    "morning" if MORNING_START <= h < AFTERNOON_START
    else "afternoon" if AFTERNOON_START <= h < EVENING_START
    else "evening" if EVENING_START <= h < NIGHT_START
    else "night"
    for h in range(24)
)


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo | None:
    """The IANA zone ``name`` (e.g. ``Europe/London``), or ``None`` when it
    is not a known zone.  Cached: zones are looked up once per name."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def local_time(now: dt.datetime, timezone: str | None) -> dt.datetime:
    """``now`` (naive = UTC) in ``timezone``, else in the proxy's local zone."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.timezone.utc)
    tz = zone(timezone) if timezone else None
    return now.astimezone(tz) if tz is not None else now.astimezone()


def clock_context(now: dt.datetime, timezone: str | None) -> tuple[int, str, str]:
    """``(hour, weekday, daypart)`` of ``now`` for a visitor in ``timezone``."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.timezone.utc)
    # Zone offsets change on whole minutes: one computation per zone a minute.
    return _clock_minute(int(now.timestamp()) // 60, timezone)


@lru_cache(maxsize=1024)
def _clock_minute(minute: int, timezone: str | None) -> tuple[int, str, str]:
    local = local_time(dt.datetime.fromtimestamp(minute * 60, dt.timezone.utc), timezone)
    return local.hour, WEEKDAYS[local.weekday()], DAYPARTS[local.hour]
