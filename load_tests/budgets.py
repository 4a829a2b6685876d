"""The figures a run is judged by, and the budgets in ``budgets.toml``.

A *figure* is a number computed from one run's measurements, mostly a ratio
against a peer measured in the same run (so machines of different speeds
agree): e.g. ``cpu_per_request_vs_nginx`` is edgeproxy's CPU µs per request
on the budget page divided by nginx+sub_filter's.  A *budget* is a key
``<figure>_max`` or ``<figure>_min`` in ``budgets.toml``.  A figure that could
not be computed (nginx not installed, edgeproxy not available) makes its
budgets *skipped*, not failed; an unknown key is an error naming the key.

Plain data in, plain data out: :func:`compute_figures` takes the run's list
of measurement dicts, :func:`check_budgets` the budgets and the figures.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BUDGETS = Path(__file__).with_name("budgets.toml")
DEFAULT_BUDGET_PAGE = "120k"
#: The concurrency of the closed-loop run the latency figures are read from.
LATENCY_CONCURRENCY = 4

DIRECT = "direct"
BARE = "bare-aiohttp"
NGINX = "nginx+sub_filter"
REPARSE = "reparse-selectolax"
AIOHTTP_STATIC = "aiohttp-static"  # aiohttp serving the page from memory: the floor
HTTPTOOLS = "httptools-passthrough"  # uvloop + httptools Protocols: the Python floor
EDGEPROXY = "edgeproxy"
EDGEPROXY_CACHED = "edgeproxy-cached"
EDGEPROXY_DEFAULT = "edgeproxy-default"  # a bot: no variant, the origin's bytes
EDGEPROXY_RETURNING = "edgeproxy-returning"  # a returning visitor: the proxy's own cookies, valid
EDGEPROXY_ASSET = "edgeproxy-asset"  # a subresource request (Sec-Fetch-Dest: image): proxied untouched
EDGEPROXY_NOMARKERS = "edgeproxy-nomarkers"  # a new visitor, the same page with its slot markers renamed: all but the rewrite

#: figure name -> what it is (printed next to it).
FIGURES: dict[str, str] = {
    "cpu_per_request_vs_nginx": "edgeproxy CPU/req ÷ nginx+sub_filter (origin uncacheable)",
    "cpu_per_request_vs_bare_aiohttp": "edgeproxy CPU/req ÷ bare aiohttp pass-through",
    "cached_cpu_per_request_vs_nginx": "edgeproxy CPU/req, origin cacheable ÷ nginx+sub_filter",
    "cached_requests_per_second_vs_nginx": "edgeproxy req/s, origin cacheable ÷ nginx+sub_filter",
    "reparse_cpu_per_request_vs_edgeproxy": "re-parse+serialise CPU/req ÷ edgeproxy",
    "cached_cpu_per_request_vs_httptools": "edgeproxy CPU/req, origin cacheable ÷ uvloop+httptools pass-through",
    "default_cpu_per_request_vs_httptools": "edgeproxy CPU/req, a bot (no variant) ÷ uvloop+httptools pass-through",
    "asset_cpu_per_request_vs_httptools": "edgeproxy CPU/req, an asset request ÷ uvloop+httptools pass-through",
    "added_latency_p99_ms": f"edgeproxy p99 − direct p99, closed loop at concurrency {LATENCY_CONCURRENCY} (ms)",
    "added_ttfb_ms": "edgeproxy TTFB − direct TTFB, origin streams (median, ms)",
    "rewrite_cpu_through_proxy_us": "edgeproxy CPU/req − the same page with its markers renamed (µs): the rewrite as the proxy pays it",
    "soak_rss_growth_pct": "edgeproxy RSS growth over the --soak run at 70 % of max (%)",
    "large_body_rss_growth_mib": "edgeproxy peak RSS growth, 128 MiB non-HTML body, slow client (MiB)",
}


class BudgetError(Exception):
    """budgets.toml is malformed or names an unknown figure."""


@dataclass(frozen=True)
class Verdict:
    key: str
    figure: str
    limit: float
    value: float | None
    status: str  # "pass", "fail" or "skipped"
    why: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def load_budgets(path: Path = DEFAULT_BUDGETS) -> dict:
    """The parsed budgets file; BudgetError on syntax errors or unknown keys."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BudgetError(f"{path}: {exc}") from exc
    validate_budgets(data, str(path))
    return data


def validate_budgets(data: Mapping, source: str = "budgets") -> None:
    for key, value in data.items():
        if key == "page":
            if not isinstance(value, str):
                raise BudgetError(f"{source}: page must be a page name such as \"120k\", not {value!r}")
            continue
        figure, _, bound = key.rpartition("_")
        if bound not in ("max", "min") or figure not in FIGURES:
            raise BudgetError(f"{source}: unknown budget {key!r} (expected <figure>_max or <figure>_min; figures: {', '.join(FIGURES)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BudgetError(f"{source}: {key} must be a number, not {value!r}")


def _find(runs: Iterable[Mapping], system: str, page: str, mode: str = "closed", concurrency: int | None = None) -> Mapping | None:
    for run in runs:
        if run.get("system") == system and run.get("page") == page and run.get("mode") == mode:
            if concurrency is None or run.get("concurrency") == concurrency:
                return run
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def compute_figures(
    runs: Iterable[Mapping],
    ttfb: Mapping[str, Mapping],
    page: str = DEFAULT_BUDGET_PAGE,
    *,
    memory: Mapping[str, Mapping] | None = None,
    soak: Mapping | None = None,
) -> dict[str, float | None]:
    """Every figure of :data:`FIGURES` for ``page`` (None where a system is missing).

    ``runs``: measurement dicts with ``system``, ``page``, ``mode``,
    ``concurrency``, ``rps``, ``cpu_us_per_request`` and ``latency_ms``;
    ``ttfb``: system -> ``{"ttfb_ms": {"p50": …}}``; ``memory``: system ->
    ``{"rss_growth_mib": …}`` (the large-body check, page-independent);
    ``soak``: the ``--soak`` run (``rss_growth_pct``), or empty."""
    runs = list(runs)

    def cpu(system: str) -> float | None:
        run = _find(runs, system, page)
        return run.get("cpu_us_per_request") if run else None

    def rps(system: str) -> float | None:
        run = _find(runs, system, page)
        return run.get("rps") if run else None

    def p99(system: str) -> float | None:
        run = _find(runs, system, page, concurrency=LATENCY_CONCURRENCY)
        return (run.get("latency_ms") or {}).get("p99") if run else None

    def first_byte(system: str) -> float | None:
        return ((ttfb.get(system) or {}).get("ttfb_ms") or {}).get("p50")

    def minus(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    return {
        "cpu_per_request_vs_nginx": _ratio(cpu(EDGEPROXY), cpu(NGINX)),
        "cpu_per_request_vs_bare_aiohttp": _ratio(cpu(EDGEPROXY), cpu(BARE)),
        "cached_cpu_per_request_vs_nginx": _ratio(cpu(EDGEPROXY_CACHED), cpu(NGINX)),
        "cached_requests_per_second_vs_nginx": _ratio(rps(EDGEPROXY_CACHED), rps(NGINX)),
        "reparse_cpu_per_request_vs_edgeproxy": _ratio(cpu(REPARSE), cpu(EDGEPROXY)),
        "cached_cpu_per_request_vs_httptools": _ratio(cpu(EDGEPROXY_CACHED), cpu(HTTPTOOLS)),
        "default_cpu_per_request_vs_httptools": _ratio(cpu(EDGEPROXY_DEFAULT), cpu(HTTPTOOLS)),
        "asset_cpu_per_request_vs_httptools": _ratio(cpu(EDGEPROXY_ASSET), cpu(HTTPTOOLS)),
        "added_latency_p99_ms": minus(p99(EDGEPROXY), p99(DIRECT)),
        "added_ttfb_ms": minus(first_byte(EDGEPROXY), first_byte(DIRECT)),
        "rewrite_cpu_through_proxy_us": minus(cpu(EDGEPROXY), cpu(EDGEPROXY_NOMARKERS)),
        "soak_rss_growth_pct": (soak or {}).get("rss_growth_pct") if (soak or {}).get("page") == page else None,
        "large_body_rss_growth_mib": ((memory or {}).get(EDGEPROXY) or {}).get("rss_growth_mib"),
    }


def check_budgets(budgets: Mapping, figures: Mapping[str, float | None]) -> list[Verdict]:
    """One verdict per budget key, in the file's order."""
    validate_budgets(budgets)
    verdicts = []
    for key, limit in budgets.items():
        if key == "page":
            continue
        figure, _, bound = key.rpartition("_")
        value = figures.get(figure)
        if value is None:
            verdicts.append(Verdict(key, figure, float(limit), None, "skipped", "not measured in this run"))
            continue
        ok = value <= limit if bound == "max" else value >= limit
        why = "" if ok else f"{value:.3g} {'>' if bound == 'max' else '<'} {limit:g}"
        verdicts.append(Verdict(key, figure, float(limit), value, "pass" if ok else "fail", why))
    return verdicts
