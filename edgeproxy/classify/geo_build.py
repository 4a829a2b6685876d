"""``edgeproxy geo-build CSV OUT``: build a MaxMind-format ``.mmdb`` from a CSV.

The CSV (UTF-8, header row optional, ``#`` lines are comments)::

    network,country,region,city,continent,timezone
    81.2.69.128/26,GB,England,London,EU,Europe/London
    2a02:c7c::/32,IE,Leinster,Dublin,,Europe/Dublin

``network`` is a CIDR, a single address or a range ``first-last``, IPv4 or
IPv6; the other columns may be empty (``continent`` then follows from the
country).  More specific networks win over the networks that contain them,
whatever the row order.

Each network gets a GeoIP2-City-shaped record (``country.iso_code``,
``continent.code``, ``subdivisions[0].names.en``, ``city.names.en``,
``location.time_zone``), so ``geo.py`` — and any MaxMind reader — reads
it exactly like a GeoIP2/GeoLite2 City database.  IPv4 networks are stored
IPv4-mapped in an IPv6 tree, as MaxMind does.

Exit status: 0 written; 1 a bad row (``file:line: reason``, nothing
written); 2 ``mmdb-writer`` is not installed or the CSV cannot be read.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from .clock import zone
from .geo import CONTINENT_CODES, CONTINENT_OF, country_code

COLUMNS = ("network", "country", "region", "city", "continent", "timezone")
DATABASE_TYPE = "edgeproxy-City"
INSTALL_HINT = (
    "edgeproxy geo-build needs the mmdb-writer package: pip install 'edgeproxy[geo]' "
    "(or pip install mmdb-writer)"
)


class RowError(ValueError):
    def __init__(self, line: int, reason: str) -> None:
        self.line, self.reason = line, reason
        super().__init__(reason)


def run_geo_build(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        import mmdb_writer  # noqa: F401
        import netaddr  # noqa: F401
    except ImportError:
        print(f"edgeproxy geo-build: {INSTALL_HINT}", file=err)
        return 2
    source = Path(args.csv)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"edgeproxy geo-build: cannot read {source}: {getattr(exc, 'strerror', None) or exc}", file=err)
        return 2
    try:
        rows = parse_rows(text)
    except RowError as exc:
        print(f"{source}:{exc.line}: {exc.reason}", file=err)
        return 1
    if not rows:
        print(f"{source}: no networks (columns: {','.join(COLUMNS)})", file=err)
        return 1
    try:
        write_mmdb(rows, Path(args.out), description=f"edgeproxy geo-build from {source.name}")
    except OSError as exc:
        print(f"edgeproxy geo-build: cannot write {args.out}: {exc.strerror or exc}", file=err)
        return 2
    print(f"wrote {args.out}: {len(rows)} networks", file=out)
    return 0


def parse_rows(text: str) -> list[tuple[Any, dict[str, Any], int]]:
    """``(netaddr.IPSet, record, line)`` per data row; a bad row raises
    ``RowError`` naming its line."""
    import netaddr

    rows = []
    lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")]
    for (line_no, _), cells in zip(lines, csv.reader(line for _, line in lines)):
        cells = [c.strip() for c in cells]
        if cells and cells[0].lower() == "network":
            continue  # header row
        if len(cells) > len(COLUMNS):
            raise RowError(line_no, f"expected at most {len(COLUMNS)} columns ({','.join(COLUMNS)}), got {len(cells)}")
        cells += [""] * (len(COLUMNS) - len(cells))
        network, country, region, city, continent, tz = cells
        try:
            if "-" in network:
                first, last = (part.strip() for part in network.split("-", 1))
                ipset = netaddr.IPSet(netaddr.IPRange(first, last))
            else:
                ipset = netaddr.IPSet([netaddr.IPNetwork(network)])
        except (netaddr.AddrFormatError, ValueError, TypeError):
            raise RowError(line_no, f"network {network!r} is not a CIDR, an address or a first-last range") from None
        rows.append((ipset, build_record(line_no, country, region, city, continent, tz), line_no))
    return rows


def build_record(line: int, country: str, region: str, city: str, continent: str, tz: str) -> dict[str, Any]:
    """A GeoIP2-City-shaped record; empty columns are left out."""
    record: dict[str, Any] = {}
    code = None
    if country:
        code = country_code(country)
        if code is None:
            raise RowError(line, f"country {country!r} is not an ISO 3166 two-letter code like GB")
        record["country"] = {"iso_code": code}
    cont = continent.upper() or (CONTINENT_OF.get(code, "") if code else "")
    if cont:
        if cont not in CONTINENT_CODES:
            raise RowError(line, f"continent {continent!r} is not one of {', '.join(sorted(CONTINENT_CODES))}")
        record["continent"] = {"code": cont}
    if region:
        record["subdivisions"] = [{"names": {"en": region}}]
    if city:
        record["city"] = {"names": {"en": city}}
    if tz:
        if zone(tz) is None:
            raise RowError(line, f"timezone {tz!r} is not an IANA zone like Europe/London")
        record["location"] = {"time_zone": tz}
    return record


def write_mmdb(rows: list[tuple[Any, dict[str, Any], int]], path: Path, *, description: str) -> None:
    """Write the tree atomically (a temporary file renamed over ``path``)."""
    from mmdb_writer import MMDBWriter

    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=DATABASE_TYPE,
        languages=["en"],
        description=description,
    )
    # Least specific first, so a contained network overrides its container.
    ordered = sorted(rows, key=lambda row: (min(c.prefixlen + (96 if c.version == 4 else 0) for c in row[0].iter_cidrs()), row[2]))
    for ipset, record, _ in ordered:
        writer.insert_network(ipset, record)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        writer.to_db_file(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
