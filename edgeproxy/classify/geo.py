"""Geo: country, region, city, continent and timezone of the visitor.

Two sources, in this order (CONTRACT §3):

1. a trusted CDN country header (``--geo-header``, e.g. ``CF-IPCountry``,
   ``CloudFront-Viewer-Country``), believed only when the direct peer is a
   ``--trust-proxy`` network (``RequestFacts.peer_trusted``).  The CDN's
   sibling headers for city/region/timezone are read too when that CDN is
   known (``CDN_SIBLINGS``).  Pseudo-codes (``XX`` unknown, ``T1`` Tor,
   ``A1``/``A2`` anonymous proxy / satellite, ``O1``, ``EU``/``AP``, ``ZZ``)
   and anything that is not two letters mean "unknown";
2. a MaxMind-format ``.mmdb`` (``--geo-db``): GeoIP2/GeoLite2 City or
   Country, DB-IP Lite City/Country, or one built with
   ``edgeproxy geo-build``, all read as GeoIP2-City-shaped records.

Unknown, private, loopback and malformed addresses give an unknown geo,
never an error.  Lookups are cached per address (LRU).
``region`` is the English name of the first (largest) subdivision, ``city``
the English city name, as the slots README documents.  The timezone is the
record's (or the CDN's), else the country's when it has only one
(``country_zone``), else unknown (the clock then uses the proxy's zone).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import maxminddb

from ..errors import SettingsError
from .clock import zone

log = logging.getLogger(__name__)

DEFAULT_GEO_CACHE_SIZE = 16384
# Longest header value / IP text looked at; anything longer is garbage.
MAX_HEADER_CHARS = 64

# Open modes: MODE_MMAP shares the file's pages between --workers processes;
# MODE_MEMORY reads it all (tests, tiny DBs).  The C extension is used when
# the wheel has it.
MODE_MMAP = getattr(maxminddb, "MODE_MMAP_EXT", maxminddb.MODE_MMAP)
MODE_MEMORY = maxminddb.MODE_MEMORY

# ISO 3166 pseudo-codes CDNs and GeoIP use for "no real country".
PSEUDO_COUNTRIES = frozenset({"XX", "T1", "A1", "A2", "O1", "EU", "AP", "ZZ"})

# Sibling headers a CDN sends next to its country header, lower-cased:
# country header -> (city, region, continent, timezone); "" = not sent.
# Cloudflare: "Add visitor location headers" managed transform.
# CloudFront: origin request policy with the CloudFront-Viewer-* headers.
CDN_SIBLINGS: Mapping[str, tuple[str, str, str, str]] = {
    "cf-ipcountry": ("cf-ipcity", "cf-region", "cf-ipcontinent", "cf-timezone"),
    "cloudfront-viewer-country": (
        "cloudfront-viewer-city",
        "cloudfront-viewer-country-region-name",
        "",
        "cloudfront-viewer-time-zone",
    ),
    "x-appengine-country": ("x-appengine-city", "x-appengine-region", "", ""),
    "x-vercel-ip-country": ("x-vercel-ip-city", "", "", "x-vercel-ip-timezone"),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Geo:
    """Where the visitor is; ``None`` fields are unknown."""

    country: str | None = None
    region: str | None = None
    city: str | None = None
    continent: str | None = None
    timezone: str | None = None


UNKNOWN = Geo()


class GeoReader:
    """An open ``.mmdb`` with a per-address LRU cache.  Open once at start
    (``open_classifiers``), ``close()`` at shutdown."""

    def __init__(self, path: Path | str, *, mode: int = MODE_MMAP, cache_size: int = DEFAULT_GEO_CACHE_SIZE) -> None:
        self.path = Path(path)
        self._reader = maxminddb.open_database(os.fspath(path), mode)
        self.lookup = lru_cache(maxsize=cache_size)(self._lookup)  # type: ignore[method-assign]

    @property
    def database_type(self) -> str:
        return str(self._reader.metadata().database_type)

    def close(self) -> None:
        self.lookup.cache_clear()  # type: ignore[attr-defined]
        self._reader.close()

    def lookup(self, ip: str) -> Geo:  # replaced per instance by the cached wrapper
        return self._lookup(ip)

    def _lookup(self, ip: str) -> Geo:
        if not ip or len(ip) > MAX_HEADER_CHARS:
            return UNKNOWN
        try:
            addr = ipaddress.ip_address(ip.strip())
        except ValueError:
            return UNKNOWN
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if not addr.is_global:
            return UNKNOWN  # private, loopback, link-local, documentation…
        try:
            record = self._reader.get(addr)
        except (ValueError, maxminddb.InvalidDatabaseError, TypeError) as exc:
            # ValueError: an IPv6 address in an IPv4-only database.
            log.debug("geo lookup of %s failed: %s", ip, exc)
            return UNKNOWN
        return record_geo(record) if isinstance(record, dict) else UNKNOWN


def open_geo(path: Path | str | None, *, mode: int = MODE_MMAP) -> GeoReader | None:
    """Open ``path`` (``None``: no database, geo only from the CDN header).
    A missing or unreadable file is a ``SettingsError`` naming ``geo_db``,
    so the proxy refuses to start with a one-line reason."""
    if path is None:
        return None
    try:
        return GeoReader(path, mode=mode)
    except OSError as exc:
        raise SettingsError("geo_db", str(path), f"cannot open: {exc.strerror or exc}") from exc
    except (maxminddb.InvalidDatabaseError, ValueError) as exc:
        raise SettingsError("geo_db", str(path), f"not a MaxMind DB (.mmdb) file: {exc}") from exc


def _name(node: Any) -> str | None:
    if not isinstance(node, dict):
        return None
    names = node.get("names")
    if isinstance(names, dict):
        name = names.get("en")
        if isinstance(name, str) and name:
            return name
    return None


def record_geo(record: Mapping[str, Any]) -> Geo:
    """A GeoIP2 City/Country-shaped record as a ``Geo``."""
    country = record.get("country")
    code = country.get("iso_code") if isinstance(country, dict) else None
    code = country_code(code) if isinstance(code, str) else None
    continent_node = record.get("continent")
    continent = continent_node.get("code") if isinstance(continent_node, dict) else None
    if not isinstance(continent, str) or continent not in CONTINENT_CODES:
        continent = CONTINENT_OF.get(code) if code else None
    subdivisions = record.get("subdivisions")
    region = None
    if isinstance(subdivisions, list) and subdivisions:
        first = subdivisions[0]
        region = _name(first) or (first.get("iso_code") if isinstance(first, dict) else None)
    location = record.get("location")
    tz = location.get("time_zone") if isinstance(location, dict) else None
    if not isinstance(tz, str) or zone(tz) is None:
        tz = country_zone(code) if code else None
    return Geo(
        country=code,
        region=region if isinstance(region, str) and region else None,
        city=_name(record.get("city")),
        continent=continent,
        timezone=tz,
    )


@lru_cache(maxsize=1024)
def country_code(value: str) -> str | None:
    """A real ISO 3166-1 alpha-2 code, upper-cased, or ``None``."""
    text = value.strip().upper()
    if len(text) != 2 or not ("A" <= text[0] <= "Z" and "A" <= text[1] <= "Z") or text in PSEUDO_COUNTRIES:
        return None
    return text


def _header_text(value: str | None) -> str | None:
    if not value or len(value) > MAX_HEADER_CHARS:
        return None
    text = value.strip()
    return text if text and text.isprintable() else None


def geo_from_headers(headers: Mapping[str, str], header: str) -> Geo | None:
    """The CDN's geo for this request, or ``None`` when its country header is
    missing or not a real country.  ``header`` is lower-cased."""
    raw = headers.get(header)
    code = country_code(raw) if raw and len(raw) <= MAX_HEADER_CHARS else None
    if code is None:
        return None
    city_h, region_h, continent_h, tz_h = CDN_SIBLINGS.get(header, ("", "", "", ""))
    continent = _header_text(headers.get(continent_h)) if continent_h else None
    if continent is not None:
        continent = continent.upper()
    if continent not in CONTINENT_CODES:
        continent = CONTINENT_OF.get(code)
    tz = _header_text(headers.get(tz_h)) if tz_h else None
    if tz is None or zone(tz) is None:
        tz = country_zone(code)
    return Geo(
        country=code,
        region=_header_text(headers.get(region_h)) if region_h else None,
        city=_header_text(headers.get(city_h)) if city_h else None,
        continent=continent,
        timezone=tz,
    )


def locate(
    headers: Mapping[str, str],
    client_ip: str | None,
    *,
    header: str | None,
    peer_trusted: bool,
    reader: GeoReader | None,
) -> Geo:
    """The visitor's geo: the trusted CDN header first, else the database.
    When both know the country and agree, the database fills in what the
    header lacks (city, region, timezone)."""
    from_header = geo_from_headers(headers, header) if header and peer_trusted else None
    usable = reader is not None and client_ip and len(client_ip) <= MAX_HEADER_CHARS
    from_db = reader.lookup(client_ip) if usable else UNKNOWN  # type: ignore[union-attr]
    if from_header is None:
        return from_db
    if from_db.country == from_header.country:
        return Geo(
            country=from_header.country,
            region=from_header.region or from_db.region,
            city=from_header.city or from_db.city,
            continent=from_header.continent or from_db.continent,
            timezone=from_header.timezone or from_db.timezone,
        )
    return from_header


# ---------------------------------------------------------------------------
# The timezone of a country that has only one (GB, FR, JP, IN…), from the
# system's tz database (zone.tab), for geo that knows the country but not the
# zone: a CDN country header, Country databases.  Countries with several
# zones where (nearly) everyone keeps one clock get that one
# (``DOMINANT_ZONES``); the others (US, CA, RU, AU, BR, MX…) get none, and
# the proxy's zone is used.
# ---------------------------------------------------------------------------
DOMINANT_ZONES: Mapping[str, str] = {
    "AR": "America/Argentina/Buenos_Aires", "CL": "America/Santiago", "CN": "Asia/Shanghai",
    "CY": "Asia/Nicosia", "DE": "Europe/Berlin", "EC": "America/Guayaquil", "ES": "Europe/Madrid",
    "MY": "Asia/Kuala_Lumpur", "NZ": "Pacific/Auckland", "PS": "Asia/Hebron", "PT": "Europe/Lisbon",
    "UA": "Europe/Kyiv", "UZ": "Asia/Tashkent",
}

@lru_cache(maxsize=1)
def _single_zones() -> Mapping[str, str]:
    import zoneinfo

    text = None
    for base in zoneinfo.TZPATH:
        try:
            text = (Path(base) / "zone.tab").read_text(encoding="utf-8")
            break
        except OSError:
            continue
    if text is None:
        try:
            from importlib.resources import files

            text = files("tzdata").joinpath("zoneinfo", "zone.tab").read_text(encoding="utf-8")
        except (ImportError, OSError, ValueError, TypeError):
            return {}
    zones: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) >= 3:
            zones.setdefault(parts[0].strip(), []).append(parts[2].strip())
    single = {code: names[0] for code, names in zones.items() if len(names) == 1}
    single.update(DOMINANT_ZONES)
    return single


def country_zone(code: str | None) -> str | None:
    """The one timezone of country ``code``, or ``None``.  (The table is
    read once, by ``load_country_zones`` at start.)"""
    name = _single_zones().get(code) if code else None
    return name if name is not None and zone(name) is not None else None


def load_country_zones() -> int:
    """Read the country -> timezone table now (start-up), not on the first
    request that needs it; returns its size."""
    return len(_single_zones())


# ---------------------------------------------------------------------------
# Continent of each country (ISO 3166-1 alpha-2 -> the GeoIP continent code),
# so a country from a CDN header also gives the continent.  Transcontinental
# countries follow GeoNames/GeoIP (RU, TR, CY, AM, GE, AZ -> as GeoIP: RU EU,
# TR AS, CY EU, AM AS, GE AS, AZ AS, KZ AS, EG AF).
# ---------------------------------------------------------------------------
CONTINENT_CODES = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})

_CONTINENTS = {
    "AF": "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY MA MG ML MR MU MW "
    "MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT ZA ZM ZW",
    "AN": "AQ BV GS HM TF",
    "AS": "AE AF AM AZ BD BH BN BT CC CN CX GE HK ID IL IN IO IQ IR JO JP KG KH KP KR KW KZ LA LB LK MM MN MO MV "
    "MY NP OM PH PK PS QA SA SG SY TH TJ TL TM TR TW UZ VN YE",
    "EU": "AD AL AT AX BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT JE LI LT LU LV MC "
    "MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA XK",
    "NA": "AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY LC MF MQ MS MX NI PA PM PR SV "
    "SX TC TT US VC VG VI",
    "OC": "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TO TV UM VU WF WS",
    "SA": "AR BO BR CL CO EC FK GF GY PE PY SR UY VE",
}
CONTINENT_OF: Mapping[str, str] = {code: cont for cont, codes in _CONTINENTS.items() for code in codes.split()}
