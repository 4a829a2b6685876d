"""classify/geo.py and geo_build.py: the .mmdb lookup, trusted CDN headers,
and databases built with ``edgeproxy geo-build``.

The MaxMind test databases in tests/data/maxmind are real MaxMind-DB files
(synthetic data); the accuracy test checks every network of the upstream
JSON ground truth when ../shared/data is present.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import json
import re
from pathlib import Path

import pytest

from edgeproxy.classify.geo import (
    CONTINENT_OF,
    MODE_MEMORY,
    MODE_MMAP,
    UNKNOWN,
    Geo,
    GeoReader,
    country_code,
    country_zone,
    geo_from_headers,
    locate,
)
from edgeproxy.cli import main

DATA = Path(__file__).parent / "data" / "maxmind"
CITY_DB = DATA / "GeoIP2-City-Test.mmdb"
COUNTRY_DB = DATA / "GeoLite2-Country-Test.mmdb"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def city():
    reader = GeoReader(CITY_DB, mode=MODE_MEMORY)
    yield reader
    reader.close()


# ---------------------------------------------------------------------------
# Lookups in a City database
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ip, expected",
    [
        # known answers of the MaxMind test City DB
        ("81.2.69.142", Geo("GB", "England", "London", "EU", "Europe/London")),
        ("2.125.160.216", Geo("GB", "England", "Boxford", "EU", "Europe/London")),
        ("216.160.83.56", Geo("US", "Washington", "Milton", "NA", "America/Los_Angeles")),
        ("89.160.20.112", Geo("SE", "Östergötland County", "Linköping", "EU", "Europe/Stockholm")),
        ("175.16.199.0", Geo("CN", "Jilin Sheng", "Changchun", "AS", "Asia/Harbin")),
        # a country-level network: no region or city
        ("67.43.156.0", Geo("BT", None, None, "AS", "Asia/Thimphu")),
        # IPv4-mapped IPv6 is the IPv4 address
        ("::ffff:81.2.69.142", Geo("GB", "England", "London", "EU", "Europe/London")),
        # IPv6
        ("2a02:cf40::1", Geo("NO", None, None, "EU", "Europe/Oslo")),
    ],
)
def test_city_database_lookup(city, ip, expected):
    assert city.lookup(ip) == expected


@pytest.mark.parametrize(
    "ip",
    [
        # not in the database
        "8.8.8.8",
        "2001:4860::8888",
        # private, loopback, link-local, documentation
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "169.254.1.1",
        "::1",
        "fe80::1",
        "198.51.100.7",
        # garbage
        "",
        "not-an-ip",
        "81.2.69",
        "81.2.69.142.5",
        "999.1.1.1",
        "81.2.69.142:8080",
        "1" * 500,
        "\x00",
    ],
)
def test_unknown_private_and_bad_addresses_are_unknown_geo(city, ip):
    assert city.lookup(ip) == UNKNOWN


def test_lookups_are_cached(city):
    city.lookup.cache_clear()
    city.lookup("81.2.69.142")
    city.lookup("81.2.69.142")
    info = city.lookup.cache_info()
    assert (info.hits, info.misses) == (1, 1)


def test_country_database_gives_country_continent_and_the_countrys_timezone():
    reader = GeoReader(COUNTRY_DB, mode=MODE_MMAP)
    try:
        assert reader.lookup("81.2.69.142") == Geo("GB", None, None, "EU", "Europe/London")
        assert reader.database_type == "GeoLite2-Country"
    finally:
        reader.close()


def test_missing_database_file_fails_at_open(tmp_path):
    with pytest.raises(FileNotFoundError):
        GeoReader(tmp_path / "nope.mmdb")


# ---------------------------------------------------------------------------
# CDN headers
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, country",
    [
        # real countries, any case, stray spaces
        ("GB", "GB"),
        ("gb", "GB"),
        (" IE ", "IE"),
        # pseudo-codes: unknown, Tor, anonymous proxy, satellite
        ("XX", None),
        ("T1", None),
        ("A1", None),
        ("A2", None),
        ("O1", None),
        ("EU", None),
        ("ZZ", None),
        # garbage
        ("", None),
        ("G", None),
        ("GBR", None),
        ("G1", None),
        ("12", None),
        ("United Kingdom", None),
        ("é€", None),
    ],
)
def test_country_codes(value, country):
    assert country_code(value) == country


def test_cloudflare_sibling_headers_give_city_region_continent_timezone():
    headers = {
        "cf-ipcountry": "GB",
        "cf-ipcity": "London",
        "cf-region": "England",
        "cf-ipcontinent": "EU",
        "cf-timezone": "Europe/London",
    }
    assert geo_from_headers(headers, "cf-ipcountry") == Geo("GB", "England", "London", "EU", "Europe/London")


@pytest.mark.parametrize(
    "headers, expected",
    [
        # continent and (single) timezone follow from the country when the CDN does not say
        ({"cloudfront-viewer-country": "JP"}, Geo("JP", None, None, "AS", "Asia/Tokyo")),
        # a country with several zones: timezone unknown
        ({"cloudfront-viewer-country": "CA"}, Geo("CA", None, None, "NA", None)),
        # a bad timezone is dropped, the rest kept
        ({"cloudfront-viewer-country": "US", "cloudfront-viewer-time-zone": "Mars/Olympus"}, Geo("US", None, None, "NA", None)),
        ({"cloudfront-viewer-country": "US", "cloudfront-viewer-time-zone": "../../etc/passwd"}, Geo("US", None, None, "NA", None)),
        # the country header missing or bogus: no header geo at all
        ({"cloudfront-viewer-city": "Paris"}, None),
        ({"cloudfront-viewer-country": "XX", "cloudfront-viewer-city": "Paris"}, None),
    ],
)
def test_cloudfront_headers(headers, expected):
    assert geo_from_headers(headers, "cloudfront-viewer-country") == expected


@pytest.mark.parametrize(
    "peer_trusted, header_value, ip, expected_country, expected_city",
    [
        # trusted peer: the header wins over the database
        (True, "FR", "81.2.69.142", "FR", None),
        # trusted peer, header agrees with the database: database fills the city
        (True, "GB", "81.2.69.142", "GB", "London"),
        # untrusted peer: the header is ignored, the database decides
        (False, "FR", "81.2.69.142", "GB", "London"),
        (False, "FR", "10.0.0.1", None, None),
        # trusted peer, pseudo-code: fall back to the database
        (True, "XX", "81.2.69.142", "GB", "London"),
        (True, "T1", "8.8.8.8", None, None),
        # no client IP at all
        (True, "DE", None, "DE", None),
        (False, "DE", None, None, None),
    ],
)
def test_locate_trusts_the_header_only_from_trusted_peers(city, peer_trusted, header_value, ip, expected_country, expected_city):
    geo = locate({"cf-ipcountry": header_value}, ip, header="cf-ipcountry", peer_trusted=peer_trusted, reader=city)
    assert (geo.country, geo.city) == (expected_country, expected_city)


def test_locate_without_database_or_header_is_unknown():
    assert locate({}, "81.2.69.142", header=None, peer_trusted=True, reader=None) == UNKNOWN


@pytest.mark.parametrize(
    "code, tz",
    [
        # one zone in the tz database
        ("GB", "Europe/London"),
        ("FR", "Europe/Paris"),
        ("JP", "Asia/Tokyo"),
        ("IN", "Asia/Kolkata"),
        # several zones, one clock for nearly everyone
        ("DE", "Europe/Berlin"),
        ("CN", "Asia/Shanghai"),
        ("ES", "Europe/Madrid"),
        # several clocks: unknown
        ("US", None),
        ("CA", None),
        ("RU", None),
        ("AU", None),
        ("BR", None),
        (None, None),
        ("XX", None),
    ],
)
def test_country_zone(code, tz):
    assert country_zone(code) == tz


def test_every_country_has_one_continent():
    assert len(CONTINENT_OF) > 240
    assert {CONTINENT_OF[c] for c in ("GB", "US", "BR", "JP", "AU", "ZA", "AQ")} == {"EU", "NA", "SA", "AS", "OC", "AF", "AN"}


# ---------------------------------------------------------------------------
# geo-build
# ---------------------------------------------------------------------------
CSV = """\
# a comment
network,country,region,city,continent,timezone
81.2.69.0/24,GB,England,London,EU,Europe/London
81.2.69.128/26,GB,Scotland,Edinburgh,,Europe/London
2a02:c7c::/32,IE,Leinster,Dublin,,Europe/Dublin
5.44.0.0-5.44.0.99,DE,,,,
46.114.1.1,FR,,Paris,EU,
"""


def build(tmp_path: Path, text: str) -> tuple[int, str, str, Path]:
    src, out = tmp_path / "nets.csv", tmp_path / "nets.mmdb"
    src.write_text(text, encoding="utf-8")
    stdout, stderr = io.StringIO(), io.StringIO()
    from edgeproxy.classify.geo_build import run_geo_build

    code = run_geo_build(argparse.Namespace(csv=str(src), out=str(out)), out=stdout, err=stderr)
    return code, stdout.getvalue(), stderr.getvalue(), out


def test_geo_build_output_reads_back_through_geo(tmp_path):
    code, out, err, db = build(tmp_path, CSV)
    assert (code, err) == (0, "")
    assert "5 networks" in out
    reader = GeoReader(db, mode=MODE_MEMORY)
    try:
        assert reader.lookup("81.2.69.1") == Geo("GB", "England", "London", "EU", "Europe/London")
        # the more specific network wins even though its container came first
        assert reader.lookup("81.2.69.142") == Geo("GB", "Scotland", "Edinburgh", "EU", "Europe/London")
        assert reader.lookup("2a02:c7c::1") == Geo("IE", "Leinster", "Dublin", "EU", "Europe/Dublin")
        assert reader.lookup("5.44.0.99") == Geo("DE", None, None, "EU", "Europe/Berlin")
        assert reader.lookup("5.44.0.100") == UNKNOWN
        assert reader.lookup("46.114.1.1") == Geo("FR", None, "Paris", "EU", "Europe/Paris")
        assert reader.lookup("8.8.8.8") == UNKNOWN
        assert reader.database_type == "edgeproxy-City"
    finally:
        reader.close()


def test_geo_build_specific_network_wins_whatever_the_row_order(tmp_path):
    rows = "81.2.69.128/26,GB,,Edinburgh,,\n81.2.69.0/24,GB,,London,,\n"
    code, _, _, db = build(tmp_path, rows)
    reader = GeoReader(db, mode=MODE_MEMORY)
    try:
        assert code == 0
        assert reader.lookup("81.2.69.142").city == "Edinburgh"
        assert reader.lookup("81.2.69.1").city == "London"
    finally:
        reader.close()


@pytest.mark.parametrize(
    "row, message",
    [
        ("81.2.69.0/33,GB,,,,", "nets.csv:2: network '81.2.69.0/33' is not a CIDR"),
        ("nonsense,GB,,,,", "nets.csv:2: network 'nonsense' is not a CIDR"),
        ("81.2.69.0/24,GBR,,,,", "nets.csv:2: country 'GBR' is not an ISO 3166 two-letter code"),
        ("81.2.69.0/24,XX,,,,", "nets.csv:2: country 'XX' is not an ISO 3166 two-letter code"),
        ("81.2.69.0/24,GB,,,Europe,", "nets.csv:2: continent 'Europe' is not one of AF, AN, AS, EU, NA, OC, SA"),
        ("81.2.69.0/24,GB,,,,Europe/Londn", "nets.csv:2: timezone 'Europe/Londn' is not an IANA zone"),
        ("81.2.69.0/24,GB,,,,,extra", "nets.csv:2: expected at most 6 columns"),
    ],
)
def test_geo_build_bad_row_names_file_and_line_and_writes_nothing(tmp_path, row, message):
    code, _, err, db = build(tmp_path, "network,country,region,city,continent,timezone\n" + row + "\n")
    assert code == 1
    assert message in err
    assert not db.exists()


def test_geo_build_empty_csv_is_an_error(tmp_path):
    code, _, err, db = build(tmp_path, "network,country,region,city,continent,timezone\n")
    assert code == 1 and "no networks" in err and not db.exists()


def test_geo_build_missing_csv_exits_2(tmp_path, capsys):
    assert main(["geo-build", str(tmp_path / "missing.csv"), str(tmp_path / "out.mmdb")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_geo_build_without_mmdb_writer_prints_the_install_hint(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "mmdb_writer", None)  # import now fails
    src = tmp_path / "nets.csv"
    src.write_text(CSV)
    assert main(["geo-build", str(src), str(tmp_path / "out.mmdb")]) == 2
    assert "pip install 'edgeproxy[geo]'" in capsys.readouterr().err


def test_geo_build_through_the_cli(tmp_path, capsys):
    src = tmp_path / "nets.csv"
    src.write_text(CSV)
    assert main(["geo-build", str(src), str(tmp_path / "out.mmdb")]) == 0
    assert "wrote" in capsys.readouterr().out


def test_committed_demo_mmdb_matches_demo_csv():
    reader = GeoReader(REPO / "geo" / "demo.mmdb", mode=MODE_MEMORY)
    try:
        rows = [line.split(",") for line in (REPO / "geo" / "demo.csv").read_text(encoding="utf-8").splitlines()
                if line and not line.startswith(("#", "network"))]
        assert len(rows) >= 10
        for network, country, region, city_name, continent, tz in rows:
            first = str(ipaddress.ip_network(network)[1])
            assert reader.lookup(first) == Geo(country, region or None, city_name or None, continent, tz or None), network
    finally:
        reader.close()


# ---------------------------------------------------------------------------
# Accuracy against the MaxMind ground truth (../shared/data)
# ---------------------------------------------------------------------------
@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["GeoIP2-City-Test", "GeoLite2-City-Test", "GeoIP2-Country-Test", "GeoLite2-Country-Test"])
def test_geo_accuracy_against_maxmind_json(name):
    db, truth = SHARED / "maxmind" / f"{name}.mmdb", SHARED / "maxmind" / f"{name}.json"
    if not (db.is_file() and truth.is_file()):
        pytest.skip(f"{truth} not found: the shared ground-truth data (../shared/data) is absent")
    reader = GeoReader(db, mode=MODE_MEMORY)
    total = countries = cities = with_city = 0
    try:
        for entry in json.loads(truth.read_text(encoding="utf-8")):
            for network, record in entry.items():
                address = ipaddress.ip_network(network, strict=False).network_address
                if address.version == 6 and 0 < int(address) < 2**32:
                    address = ipaddress.IPv4Address(int(address))  # "::74.209.24.0" = IPv4 in the v6 tree
                if not address.is_global:
                    continue  # the proxy treats these as unknown on purpose
                expected = (record.get("country") or {}).get("iso_code")
                if expected is None:
                    continue
                geo = reader.lookup(str(address))
                total += 1
                countries += geo.country == expected
                city_name = ((record.get("city") or {}).get("names") or {}).get("en")
                if city_name:
                    with_city += 1
                    cities += geo.city == city_name
    finally:
        reader.close()
    share = countries / total
    print(f"\ngeo {name}: country {countries}/{total} = {share:.1%}, city {cities}/{with_city}")
    assert total > 100
    assert share >= 0.99
    assert cities == with_city


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "setting geo_db="),
        (b"not a database", "not a MaxMind DB (.mmdb) file"),
    ],
)
def test_a_bad_geo_db_setting_names_the_key(tmp_path, content, message):
    from edgeproxy.classify.geo import open_geo
    from edgeproxy.errors import SettingsError

    path = tmp_path / "geo.mmdb"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SettingsError, match=re.escape(message)) as info:
        open_geo(path)
    assert info.value.key == "geo_db"


def test_explain_with_a_missing_geo_db_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "slots").mkdir()
    code = main(["explain", "/", "--slots", str(tmp_path / "slots"), "--geo-db", str(tmp_path / "nope.mmdb")])
    assert code == 2
    assert "geo_db" in capsys.readouterr().err
