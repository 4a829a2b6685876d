"""``edgeproxy`` command line: serve, demo, check, explain, geo-build.

The flags of ``serve`` are a stable interface (CONTRACT §6): scripts outside
the project use them.  Each command lives in its own module; this file only
parses arguments and dispatches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .errors import SettingsError


def _add_serve_flags(p: argparse.ArgumentParser, *, upstream_required: bool) -> None:
    g = p.add_argument_group("proxy")
    g.add_argument("--config", metavar="FILE", help="TOML config file (flat keys, see README)")
    g.add_argument("--upstream", metavar="URL", help="the origin, e.g. http://127.0.0.1:8080 (env EDGEPROXY_UPSTREAM)")
    g.add_argument("--host", help="listen address (default 127.0.0.1; 0.0.0.0 in the container)")
    g.add_argument("--port", type=int, help="listen port (default 8000)")
    g.add_argument("--admin-host", dest="admin_host", help="admin listen address (default 127.0.0.1)")
    g.add_argument("--admin-port", dest="admin_port", type=int, help="admin port: /metrics /healthz /readyz /dashboard (default 9000)")
    g.add_argument("--slots", metavar="DIR", help="variant folder (default ./slots)")
    g.add_argument("--geo-db", dest="geo_db", metavar="PATH", help="MaxMind-format .mmdb for IP geolocation")
    g.add_argument("--geo-header", dest="geo_header", metavar="NAME", help="trusted CDN country header, e.g. CF-IPCountry")
    g.add_argument("--trust-proxy", dest="trust_proxy", metavar="CIDR", action="append", help="trusted proxy network (repeatable)")
    g.add_argument("--preview-token", dest="preview_token", metavar="SECRET", help="enables X-Edge-Explain and ?edge_preview=")
    g.add_argument("--exposure-log", dest="exposure_log", metavar="PATH", help="JSON-lines exposure log")
    g.add_argument("--conversion-log", dest="conversion_log", metavar="PATH", help="JSON-lines conversion log")
    g.add_argument("--conversion-path", dest="conversion_path", metavar="GLOB", action="append", help="conversion URL path (repeatable)")
    g.add_argument("--holdout", type=float, metavar="PERCENT", help="global holdout share, 0-100")
    g.add_argument("--workers", type=int, metavar="N", help="N processes on one port (SO_REUSEPORT)")
    g.add_argument("--log-level", dest="log_level", choices=("debug", "info", "warning", "error"))
    g.add_argument("--access-log", dest="access_log", nargs="?", const="stdout", metavar="stdout|stderr|off|PATH",
                   help="one JSON line per request (default: stdout; a bare --access-log means stdout)")
    g.add_argument("--access-log-format", dest="access_log_format", choices=("auto", "json", "text"),
                   help="auto (default): text on a terminal, JSON otherwise")
    g.add_argument("--access-log-level", dest="access_log_level", choices=("info", "warning", "error"),
                   help="info (default): every request; warning: 4xx and fail-open; error: 5xx and aborted")
    g.add_argument("--access-log-sample", dest="access_log_sample", type=float, metavar="SHARE",
                   help="share of info lines kept, 0-1 (default 1; warnings and errors always kept)")
    g.add_argument("--access-log-client", dest="access_log_client", choices=("truncate", "hash", "off"),
                   help="client address as its /24 or /48 (default), a keyed hash, or not at all")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeproxy", description="Edge personalisation reverse proxy.")
    from .rewrite import native

    parser.add_argument("--version", action="version", version=f"edgeproxy {__version__} (scanner: {native.ACTIVE})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    serve = sub.add_parser("serve", help="run the proxy in front of an origin")
    _add_serve_flags(serve, upstream_required=True)

    demo = sub.add_parser("demo", help="demo storefront + proxy + example slots, in one command")
    demo.add_argument("--port", type=int, default=8000, help="proxy port (default 8000)")
    demo.add_argument("--origin-port", dest="origin_port", type=int, default=8080, help="demo storefront port (default 8080)")
    demo.add_argument("--admin-port", dest="admin_port", type=int, default=9000, help="admin port (default 9000)")
    demo.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    demo.add_argument("--slots", metavar="DIR", help="variant folder (default: the example slots)")
    demo.add_argument("--preview-token", dest="preview_token", default="demo", help="preview token (default: demo)")

    check = sub.add_parser("check", help="validate slots/ and list each slot's variants")
    check.add_argument("dir", nargs="?", default=None, help="slots folder (default ./slots)")

    explain = sub.add_parser("explain", help="show a visitor's context and each slot's decision")
    explain.add_argument("url", help="page URL as the visitor would request it (path and query are used)")
    explain.add_argument("--ua", help="User-Agent (default: a desktop Chrome's; --ua '' for none)")
    explain.add_argument("--ip", help="client IP (for the geo lookup)")
    explain.add_argument("--cookie", action="append", default=[], help="Cookie header or name=value (repeatable)")
    explain.add_argument("--referer", help="Referer")
    explain.add_argument("--header", action="append", default=[], metavar="NAME: VALUE", help="any other request header (repeatable)")
    explain.add_argument("--at", metavar="ISO-TIME", help="pretend it is this time (default now)")
    explain.add_argument("--slots", metavar="DIR", help="slots folder (default ./slots)")
    explain.add_argument("--config", metavar="FILE")
    explain.add_argument("--geo-db", dest="geo_db", metavar="PATH", help="a .mmdb for --ip (as serve --geo-db)")
    explain.add_argument("--geo-header", dest="geo_header", metavar="NAME", help="the CDN country header to believe, e.g. CF-IPCountry (as serve --geo-header); send it with --header")
    explain.add_argument("--json", action="store_true", help="print the decision trace as JSON")

    report = sub.add_parser("report", help="per experiment and arm: conversion rate, uplift vs control, p-value, SRM check")
    report.add_argument("logs", nargs="*", metavar="LOG",
                        help="EXPOSURES [CONVERSIONS]: the --exposure-log and --conversion-log files (more files, "
                             "e.g. rotated .gz ones, in any order: each file's kind is recognised from its lines)")
    report.add_argument("--html", metavar="OUT", help="also write a self-contained HTML report with charts")
    report.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    report.add_argument("--weights", action="append", default=[], metavar="EXP:ARM=PCT,...",
                        help="intended split for the SRM check, e.g. bf-hero:control=70,promo=30 (repeatable; default: equal split)")
    report.add_argument("--slots", metavar="DIR", help="take the intended split from this slots folder's experiment weights")
    report.add_argument("--engine", metavar="URL", help="aggregate in the warehouse instead of the files: postgresql://… or "
                        "duckdb:///path.db, with tables exposures and conversions of the logs' columns")
    report.add_argument("--sql", metavar="DIALECT", help="print the aggregation query for a warehouse and exit: clickhouse, "
                        "bigquery, snowflake, postgres, spark or duckdb")
    report.add_argument("--memory-limit", dest="memory_limit", metavar="SIZE",
                        help="DuckDB's memory cap while reading the logs; it spills to disk beyond (default 416MB)")
    plan = report.add_argument_group("planning (--plan)")
    plan.add_argument("--plan", action="store_true", help="visitors per arm to detect --mde (and, with logs, days at their traffic)")
    plan.add_argument("--baseline", type=float, metavar="RATE", help="control conversion rate, e.g. 0.03 (default with logs: the observed one)")
    plan.add_argument("--mde", type=float, metavar="REL", help="minimum detectable effect, relative: 0.10 = 3%% -> 3.3%%")
    plan.add_argument("--arms", type=int, metavar="N", help="arms including the control (default 2; with logs: the experiment's)")
    plan.add_argument("--power", type=float, default=0.8, help="power (default 0.8)")
    plan.add_argument("--alpha", type=float, default=0.05, help="significance level, two-sided (default 0.05)")

    geo = sub.add_parser("geo-build", help="build a .mmdb from a CSV of networks (see geo/README.md)")
    geo.add_argument("csv", help="CSV: network,country,region,city,continent,timezone")
    geo.add_argument("out", help="output .mmdb path")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            from .server import serve_from_args

            return serve_from_args(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args)
        if args.command == "check":
            from .check import run_check

            return run_check(args)
        if args.command == "explain":
            from .explain import run_explain

            return run_explain(args)
        if args.command == "report":
            from .report import run_report

            return run_report(args)
        if args.command == "geo-build":
            from .classify.geo_build import run_geo_build

            return run_geo_build(args)
    except SettingsError as exc:
        print(f"edgeproxy: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
