"""The run's table, ratios and budget verdicts (stdout) and plot (self-contained HTML + SVG)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import budgets as B
from . import metrics as edge_metrics

TABLE_PERCENTILES = ("p50", "p90", "p99", "p99.9")
#: Other processes' CPU use during a run (in CPUs) above which a row is flagged.
NOISY_CPUS = 0.15
COLOURS = {
    B.DIRECT: "#7f7f7f",
    B.AIOHTTP_STATIC: "#17becf",
    B.BARE: "#1f77b4",
    B.NGINX: "#2ca02c",
    B.REPARSE: "#d62728",
    B.EDGEPROXY: "#9467bd",
    B.EDGEPROXY_CACHED: "#ff7f0e",
    B.EDGEPROXY_DEFAULT: "#8c564b",
    B.HTTPTOOLS: "#bcbd22",
    B.EDGEPROXY_ASSET: "#e377c2",
    B.EDGEPROXY_RETURNING: "#aec7e8",
    B.EDGEPROXY_NOMARKERS: "#c5b0d5",
}

#: (title, numerator system, denominator system, key) of the per-page peer ratios (closed loop).
PEER_RATIOS = (
    ("edgeproxy ÷ nginx+sub_filter, CPU/req", B.EDGEPROXY, B.NGINX, "cpu_us_per_request"),
    ("edgeproxy ÷ bare aiohttp, CPU/req", B.EDGEPROXY, B.BARE, "cpu_us_per_request"),
    ("edgeproxy cached ÷ nginx+sub_filter, CPU/req", B.EDGEPROXY_CACHED, B.NGINX, "cpu_us_per_request"),
    ("edgeproxy cached ÷ nginx+sub_filter, req/s", B.EDGEPROXY_CACHED, B.NGINX, "rps"),
    ("edgeproxy cached ÷ aiohttp from memory, CPU/req", B.EDGEPROXY_CACHED, B.AIOHTTP_STATIC, "cpu_us_per_request"),
    ("aiohttp from memory ÷ nginx+sub_filter, CPU/req", B.AIOHTTP_STATIC, B.NGINX, "cpu_us_per_request"),
    ("re-parse ÷ edgeproxy, CPU/req", B.REPARSE, B.EDGEPROXY, "cpu_us_per_request"),
    ("edgeproxy, no variant ÷ bare aiohttp, CPU/req", B.EDGEPROXY_DEFAULT, B.BARE, "cpu_us_per_request"),
    ("edgeproxy ÷ uvloop+httptools pass-through, CPU/req", B.EDGEPROXY, B.HTTPTOOLS, "cpu_us_per_request"),
    ("edgeproxy cached ÷ uvloop+httptools pass-through, CPU/req", B.EDGEPROXY_CACHED, B.HTTPTOOLS, "cpu_us_per_request"),
    ("edgeproxy, no variant ÷ uvloop+httptools pass-through, CPU/req", B.EDGEPROXY_DEFAULT, B.HTTPTOOLS, "cpu_us_per_request"),
    ("edgeproxy, asset ÷ uvloop+httptools pass-through, CPU/req", B.EDGEPROXY_ASSET, B.HTTPTOOLS, "cpu_us_per_request"),
    ("edgeproxy, returning visitor ÷ edgeproxy, new visitor, CPU/req", B.EDGEPROXY_RETURNING, B.EDGEPROXY, "cpu_us_per_request"),
    ("bare aiohttp ÷ uvloop+httptools pass-through, CPU/req", B.BARE, B.HTTPTOOLS, "cpu_us_per_request"),
)


def format_figure(figure: str, value: float) -> str:
    """``2.31x`` for ratios, ``1.20 ms``, ``154 µs``, ``+3.1 %``, ``2.0 MiB``."""
    if figure.endswith("_us"):
        return f"{value:,.0f} µs"
    if figure.endswith("_ms"):
        return f"{value:.2f} ms"
    if figure.endswith("_pct"):
        return f"{value:+.1f} %"
    if figure.endswith("_mib"):
        return f"{value:.1f} MiB"
    return f"{value:.2f}x"


def _num(v: float | None, fmt: str, width: int) -> str:
    return f"{v:{width}{fmt}}" if v is not None else f"{'-':>{width}}"


def _closed(runs: Sequence[Mapping], system: str, page: str) -> Mapping | None:
    return next((r for r in runs if r["system"] == system and r["page"] == page and r["mode"] == "closed"), None)


def print_report(report: Mapping, labels: Mapping[str, str], verdicts: Sequence[B.Verdict], *, budgets_enabled: bool) -> None:
    meta = report["meta"]
    runs = report["runs"]
    systems = report["systems"]
    print()
    print(f"edgeproxy load test · {meta['started']} · commit {meta['commit']} · Python {meta['python']} · {meta['cpus']} CPUs "
          + (f"(generator on {meta['generator_cpus']}, servers on {meta['server_cpus']})" if meta["generator_cpus"] else "(not pinned)"))
    a = meta["args"]
    print(f"closed loop: {meta['closed_loop_generator']}, {a['concurrency']} connections, {a['duration']:g}s after {a['warmup']:g}s warm-up; "
          + (f"open loop: bundled generator, {a['open_connections'] or 'rate/250 (at least 8)'} connections, "
             + (f"{a['rate']:g} req/s" if a["rate"] else f"{a['open_fraction']:.0%} of the system's closed-loop req/s")
             + ", latency from the scheduled send time" if a["open_loop"] else "no open loop")
          + f"; {'gzip' if a['gzip'] else 'identity'} responses")
    print("CPU µs/req: the server process tree's user+system CPU over the measured window ÷ requests (origin excluded, "
          "except for 'direct')")
    if any(r.get("rate_capped") for r in runs):
        print("open */s: rate capped below the bundled generator's ceiling against that system (wrk found a higher max than it can drive)")
    pages = list(dict.fromkeys(r["page"] for r in runs)) or list(meta["page_bytes"])
    head = (f"{'system':<22} {'loop':<14} {'req/s':>9} " + " ".join(f"{p + ' ms':>9}" for p in TABLE_PERCENTILES)
            + f" {'CPU µs/req':>11} {'RSS MiB':>8}  edits")
    for page in pages:
        print(f"\n== {page} page ({meta['page_bytes'].get(page, 0):,} bytes) ==")
        print(head)
        print("-" * len(head))
        for name, info in systems.items():
            mine = [r for r in runs if r["system"] == name and r["page"] == page]
            if not mine:
                why = info["skipped"] or (f"error: {info['error'].splitlines()[0]}" if info["error"] else "not measured")
                print(f"{labels[name]:<22} {why}")
                continue
            for i, r in enumerate(mine):
                lat = r.get("latency_ms") or {}
                mode = f"closed c={r['concurrency']}" if r["mode"] == "closed" else f"open {r['rate']:.0f}/s"
                if r["mode"] == "open" and not a["open_connections"]:
                    mode += f" c{r['concurrency']}"
                if r.get("rate_capped"):
                    mode += "*"
                edits = info["edits"] if i == 0 else ""
                if i == 0 and info["expected_edits"] and info["edits"] != info["expected_edits"]:
                    edits += f" (expected {info['expected_edits']}!)"
                flags = []
                if (r.get("other_cpus") or 0) > NOISY_CPUS:
                    flags.append(f"noisy: others used {r['other_cpus']:.0%} CPU")
                if (r.get("generator_busy") or 0) > 0.9:
                    flags.append("generator-bound")
                if r.get("repeats"):
                    cpus = [t["cpu_us_per_request"] for t in r["repeats"] if t["cpu_us_per_request"]]
                    if cpus:
                        flags.append(f"best of {len(r['repeats'])}: CPU {min(cpus):,.0f}–{max(cpus):,.0f}")
                if flags:
                    edits = (edits + "  " if edits else "") + "[" + "; ".join(flags) + "]"
                rss = r.get("rss_kib")
                print(f"{labels[name] if i == 0 else '':<22} {mode:<14} {r['rps']:9,.0f} "
                      + " ".join(_num(lat.get(p), ".2f", 9) for p in TABLE_PERCENTILES)
                      + f" {_num(r.get('cpu_us_per_request'), ',.0f', 11)} {_num(rss / 1024 if rss else None, '.0f', 8)}  {edits}")
        ratios = []
        for title, num, den, key in PEER_RATIOS:
            a_run, b_run = _closed(runs, num, page), _closed(runs, den, page)
            if a_run and b_run and a_run.get(key) and b_run.get(key):
                ratios.append(f"{title} {a_run[key] / b_run[key]:.2f}x")
        if ratios:
            print("ratios (closed loop): " + "; ".join(ratios))
    for name, info in systems.items():
        for note in info["notes"]:
            print(f"note: {labels[name]}: {note}")
    said = [r for r in runs if r.get("edgeproxy_metrics")]
    if said:
        print("\n== what edgeproxy's /metrics say about its closed-loop runs (warm-up included; stage times are wall time) ==")
        for r in said:
            print(f"{labels[r['system']]:<22} {r['page']:>5}  {edge_metrics.describe(r['edgeproxy_metrics'])}")
    if report["ttfb"]:
        print("\n== time to first byte, origin sends its head at once and its body 50 ms later (/stream) ==")
        print(f"{'system':<22} {'TTFB p50 ms':>12} {'TTFB p90 ms':>12} {'1st body byte p50':>18} {'complete p50 ms':>16}")
        for name, t in report["ttfb"].items():
            body = (t.get("first_body_byte_ms") or {}).get("p50")
            print(f"{labels[name]:<22} {_num(t['ttfb_ms']['p50'], '.2f', 12)} {_num(t['ttfb_ms']['p90'], '.2f', 12)} "
                  f"{_num(body, '.2f', 18)} {_num(t['total_ms']['p50'], '.2f', 16)}")
    if report.get("memory"):
        m0 = next(iter(report["memory"].values()))
        print(f"\n== memory: a {m0['megabytes']} MiB non-HTML body (Content-Length) to a client reading "
              f"{m0['megabytes'] * 1.048576 / m0['seconds']:.0f} MB/s ==")
        print(f"{'system':<22} {'RSS before MiB':>15} {'peak MiB':>9} {'growth MiB':>11}")
        for name, m in report["memory"].items():
            print(f"{labels[name]:<22} {m['rss_before_mib']:15.0f} {m['rss_peak_mib']:9.0f} {m['rss_growth_mib']:11.1f}")
    soak = report.get("soak")
    if soak:
        lat = soak["latency_ms"]
        print(f"\n== soak: edgeproxy, {soak['page']} page, open loop {soak['rate']:.0f}/s for {soak['elapsed'] / 60:.1f} min ==")
        print(f"{soak['requests']:,} requests, {soak['errors']} errors; latency from schedule p50 {lat['p50']:.2f} / p99 "
              f"{lat['p99']:.2f} / p99.9 {lat['p99.9']:.2f} / max {lat['max']:.2f} ms; CPU {soak['cpu_us_per_request']:.0f} µs/req")
        print(f"RSS {soak['rss_start_mib']:.1f} MiB after warm-up -> {soak['rss_end_mib']:.1f} MiB at the end "
              f"(peak {soak['rss_peak_mib']:.1f}): {soak['rss_growth_pct']:+.1f} %")
    for name, prof in report.get("profiles", {}).items():
        if prof.get("skipped"):
            print(f"\nprofile of {labels[name]}: {prof['skipped']}")
            continue
        print(f"\n== where {labels[name]}'s CPU goes (py-spy, {prof['page']} page, {prof['samples']:,} samples, "
              f"{prof['busy_share']:.0%} busy; shares of the busy samples) ==")
        print("  self time by function:")
        for fn, share in prof["self"][:12]:
            print(f"    {share:6.1%}  {fn}")
        print("  self time by file: " + ", ".join(f"{f} {share:.0%}" for f, share in prof["files"][:8]))
        print("  inclusive, edgeproxy frames:")
        for fn, share in prof["inclusive"][:12]:
            print(f"    {share:6.1%}  {fn}")
        print(f"  collapsed stacks: {prof['file']} (flamegraph.pl or speedscope.app read them)")
    page = report["budget_page"]
    figures = report["figures"].get(page)
    if figures is not None:
        print(f"\n== targets and budgets ({page} page) ==")
        by_figure = {v.figure: [] for v in verdicts}
        for v in verdicts:
            by_figure[v.figure].append(v)
        for figure, what in B.FIGURES.items():
            value = figures.get(figure)
            shown = "not measured" if value is None else format_figure(figure, value)
            judged = "; ".join(
                f"{'≤' if v.key.endswith('_max') else '≥'} {v.limit:g}: {v.status.upper()}" for v in by_figure.get(figure, [])
            ) or "no budget"
            print(f"  {what:<70} {shown:>13}   {judged}")
        failed = [v for v in verdicts if v.failed]
        if failed:
            print(f"{len(failed)} budget(s) missed" + ("" if budgets_enabled else " (--no-budgets: not failing the run)"))
    noisy = [r for r in runs if (r.get("other_cpus") or 0) > NOISY_CPUS]
    if noisy:
        print(f"\nwarning: {len(noisy)} of {len(runs)} runs shared the machine with other busy processes "
              f"(up to {max(r['other_cpus'] for r in noisy):.0%} of a CPU): their latencies and req/s are pessimistic; "
              "CPU per request is the least affected figure")
    if report["problems"]:
        print("\nproblems:\n  " + "\n  ".join(p.splitlines()[0] for p in report["problems"]))


def compare_runs(previous: Mapping, current: Mapping) -> list[dict]:
    """Closed-loop CPU/req and req/s of every (system, page) in both reports."""
    before = {(r["system"], r["page"]): r for r in previous.get("runs", ()) if r.get("mode") == "closed"}
    rows = []
    for r in current.get("runs", ()):
        old = before.get((r["system"], r["page"]))
        if r.get("mode") != "closed" or old is None:
            continue
        row = {"system": r["system"], "page": r["page"]}
        for key in ("cpu_us_per_request", "rps"):
            a, b = old.get(key), r.get(key)
            row[key] = (a, b, (b - a) / a * 100 if a and b is not None else None)
        rows.append(row)
    return rows


def print_comparison(previous: Mapping, current: Mapping, labels: Mapping[str, str], source: str) -> None:
    rows = compare_runs(previous, current)
    print(f"\n== against {source} ({previous.get('meta', {}).get('started')}, commit {previous.get('meta', {}).get('commit')}) ==")
    if not rows:
        print("no system and page in common")
        return
    print(f"{'system':<22} {'page':>5} {'CPU µs/req before':>18} {'after':>8} {'change':>8} {'req/s before':>13} {'after':>8} {'change':>8}")
    for row in rows:
        c0, c1, cd = row["cpu_us_per_request"]
        r0, r1, rd = row["rps"]
        print(f"{labels.get(row['system'], row['system']):<22} {row['page']:>5} {_num(c0, ',.0f', 18)} {_num(c1, ',.0f', 8)} "
              f"{_change(cd)} {_num(r0, ',.0f', 13)} {_num(r1, ',.0f', 8)} {_change(rd)}")


def _change(pct: float | None) -> str:
    return f"{pct:+7.1f}%" if pct is not None else f"{'-':>8}"


# ---------------------------------------------------------------- HTML / SVG


def _svg_percentiles(title: str, series: Mapping[str, Mapping[str, float]], labels: Mapping[str, str]) -> str:
    """Latency (log y) against percentile for each system."""
    xs = ["p50", "p75", "p90", "p99", "p99.9", "p99.99"]
    w, h, left, right, top, bottom = 640, 300, 60, 170, 30, 40
    values = [v for s in series.values() for k, v in s.items() if k in xs and v]
    if not values:
        return ""
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    if hi <= lo:
        hi = lo * 10

    def y(v: float) -> float:
        return top + (h - top - bottom) * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    def x(i: int) -> float:
        return left + (w - left - right) * i / (len(xs) - 1)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    decade = lo
    while decade <= hi * 1.0001:
        yy = y(decade)
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{decade:g} ms</text>')
        decade *= 10
    for i, name in enumerate(xs):
        out.append(f'<text x="{x(i):.1f}" y="{h - bottom + 16}" text-anchor="middle">{name}</text>')
    for j, (system, s) in enumerate(series.items()):
        colour = COLOURS.get(system, "#000")
        pts = [(x(i), y(s[k])) for i, k in enumerate(xs) if s.get(k)]
        if not pts:
            continue
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                   + " ".join(f"{px:.1f},{py:.1f}" for px, py in pts) + '"/>')
        out.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}"/>' for px, py in pts)
        ly = top + 14 * j
        out.append(f'<rect x="{w - right + 10}" y="{ly}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{w - right + 25}" y="{ly + 9}">{html.escape(labels.get(system, system))}</text>')
    out.append("</svg>")
    return "".join(out)


def _svg_bars(title: str, bars: Mapping[str, float], labels: Mapping[str, str], unit: str) -> str:
    if not bars:
        return ""
    w, row, left = 640, 22, 170
    h = 30 + row * len(bars)
    top = max(bars.values()) or 1.0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<text x="0" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    for i, (system, v) in enumerate(bars.items()):
        yy = 26 + i * row
        bw = (w - left - 90) * v / top
        out.append(f'<text x="{left - 6}" y="{yy + 13}" text-anchor="end">{html.escape(labels.get(system, system))}</text>'
                   f'<rect x="{left}" y="{yy}" width="{bw:.1f}" height="{row - 6}" fill="{COLOURS.get(system, "#000")}"/>'
                   f'<text x="{left + bw + 6:.1f}" y="{yy + 13}">{v:,.0f} {unit}</text>')
    out.append("</svg>")
    return "".join(out)


def _svg_series(title: str, points: Sequence[tuple[float, float]], xunit: str, yunit: str) -> str:
    """One line, linear axes from 0."""
    w, h, left, right, top, bottom = 640, 260, 60, 20, 30, 40
    xmax = max((x for x, _ in points), default=1.0) or 1.0
    ymax = max((y for _, y in points), default=1.0) * 1.1 or 1.0

    def px(x: float) -> float:
        return left + (w - left - right) * x / xmax

    def py(y: float) -> float:
        return top + (h - top - bottom) * (1 - y / ymax)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    for i in range(5):
        y = ymax * i / 4
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.0f} {yunit}</text>')
        x = xmax * i / 4
        out.append(f'<text x="{px(x):.1f}" y="{h - bottom + 16}" text-anchor="middle">{x:.0f} {xunit}</text>')
    out.append('<polyline fill="none" stroke="#9467bd" stroke-width="2" points="'
               + " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points) + '"/></svg>')
    return "".join(out)


def write_html(report: Mapping, labels: Mapping[str, str], path: Path) -> Path:
    """A self-contained page: per page, latency percentiles (closed and open
    loop), CPU per request and throughput per system."""
    runs = report["runs"]
    meta = report["meta"]
    parts = [
        "<!doctype html><meta charset=utf-8><title>edgeproxy load test</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}svg{margin:0 1em 1em 0;vertical-align:top}"
        "td,th{padding:2px 8px;text-align:right}th{text-align:left}</style>",
        f"<h1>edgeproxy load test</h1><p>{html.escape(meta['started'])} · commit {html.escape(str(meta['commit']))} · "
        f"{meta['cpus']} CPUs · closed loop by {html.escape(meta['closed_loop_generator'])}</p>",
    ]
    for page in dict.fromkeys(r["page"] for r in runs):
        parts.append(f"<h2>{html.escape(page)} page ({meta['page_bytes'].get(page, 0):,} bytes)</h2><div>")
        for mode, title in (("closed", "closed loop: latency by percentile"), ("open", "open loop (from schedule): latency by percentile")):
            series = {r["system"]: r["latency_ms"] for r in runs if r["page"] == page and r["mode"] == mode}
            parts.append(_svg_percentiles(f"{page} {title}", series, labels))
        cpu = {r["system"]: r["cpu_us_per_request"] for r in runs if r["page"] == page and r["mode"] == "closed" and r.get("cpu_us_per_request")}
        parts.append(_svg_bars(f"{page}: server CPU per request", cpu, labels, "µs"))
        rps = {r["system"]: r["rps"] for r in runs if r["page"] == page and r["mode"] == "closed"}
        parts.append(_svg_bars(f"{page}: requests/s, closed loop", rps, labels, "req/s"))
        parts.append("</div>")
    if report.get("ttfb"):
        parts.append("<h2>time to first byte, origin streams (/stream)</h2><table><tr><th>system</th><th>TTFB p50 ms</th>"
                     "<th>TTFB p90 ms</th><th>complete p50 ms</th></tr>")
        for name, t in report["ttfb"].items():
            parts.append(f"<tr><th>{html.escape(labels.get(name, name))}</th><td>{t['ttfb_ms']['p50']:.2f}</td>"
                         f"<td>{t['ttfb_ms']['p90']:.2f}</td><td>{t['total_ms']['p50']:.2f}</td></tr>")
        parts.append("</table>")
    if report.get("memory"):
        parts.append("<h2>memory: a large non-HTML body to a slow client</h2><table><tr><th>system</th>"
                     "<th>RSS before MiB</th><th>peak MiB</th><th>growth MiB</th></tr>")
        for name, m in report["memory"].items():
            parts.append(f"<tr><th>{html.escape(labels.get(name, name))}</th><td>{m['rss_before_mib']:.0f}</td>"
                         f"<td>{m['rss_peak_mib']:.0f}</td><td>{m['rss_growth_mib']:.1f}</td></tr>")
        parts.append("</table>")
    soak = report.get("soak")
    if soak and soak.get("rss_samples"):
        parts.append(f"<h2>soak: edgeproxy at {soak['rate']:.0f} req/s</h2>")
        parts.append(_svg_series(f"RSS over the soak ({soak['rss_growth_pct']:+.1f} %)",
                                 [(t, kib / 1024) for t, kib in soak["rss_samples"]], "s", "MiB"))
    figures = report["figures"].get(report["budget_page"]) or {}
    if figures:
        parts.append(f"<h2>issue 4 figures ({html.escape(report['budget_page'])} page)</h2><table>")
        verdicts = {v["figure"]: v for v in report["budgets"]}
        for figure, what in B.FIGURES.items():
            value = figures.get(figure)
            v = verdicts.get(figure)
            parts.append(f"<tr><th>{html.escape(what)}</th><td>{'-' if value is None else html.escape(format_figure(figure, value))}</td>"
                         f"<td>{html.escape(v['status'] + ' (' + v['key'] + ' = ' + format(v['limit'], 'g') + ')') if v else ''}</td></tr>")
        parts.append("</table>")
    path.write_text("".join(parts))
    return path
