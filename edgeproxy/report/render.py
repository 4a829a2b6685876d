"""The report as text (the terminal), JSON (machines) and a self-contained
HTML page with an SVG chart per experiment (no script, nothing fetched)."""

from __future__ import annotations

import html
import math
import textwrap

import orjson

from .analyse import CONTROL, SRM_ALPHA, ArmResult, ExperimentResult, Report, SrmResult
from .plan import plan_line

def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.0001" if p < 0.0001 else f"{p:.4f}"


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _signed_pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:+.{digits}f}%"


def _pp(x: float) -> str:
    return f"{100 * x:+.2f}"


def _share(a: ArmResult, total: int) -> str:
    return f"{100 * a.visitors / total:.1f}%" if total else "-"


def _cells(a: ArmResult, total: int, with_conversions: bool) -> list[str]:
    """One table row's cells, shared by the text and HTML reports."""
    head = [a.arm, f"{a.visitors:,}", _share(a, total)]
    if not with_conversions:
        return head
    conv = "-" if a.conversions is None else f"{a.conversions:,}"
    rate = _pct(a.rate)
    rate_ci = "-" if a.rate_ci is None else f"[{_pct(a.rate_ci[0])}, {_pct(a.rate_ci[1])}]"
    abs_up = "-" if a.abs_uplift is None else f"{_pp(a.abs_uplift)} pp"
    abs_ci = "-" if a.abs_uplift_ci is None else f"[{_pp(a.abs_uplift_ci[0])}, {_pp(a.abs_uplift_ci[1])}]"
    rel_up = "-" if a.rel_uplift is None else _signed_pct(a.rel_uplift)
    rel_ci = "-" if a.rel_uplift_ci is None else f"[{_signed_pct(a.rel_uplift_ci[0])}, {_signed_pct(a.rel_uplift_ci[1])}]"
    p = "-" if a.p_value is None else f"{fmt_p(a.p_value)} ({a.test})"
    seq_p = "-" if a.seq_p_value is None else fmt_p(a.seq_p_value)
    seq_ci = ("-" if a.seq_abs_uplift_ci is None
              else f"[{_pp(a.seq_abs_uplift_ci[0])}, {_pp(a.seq_abs_uplift_ci[1])}]")
    return head + [conv, rate, rate_ci, abs_up, abs_ci, rel_up, rel_ci, p, seq_p, seq_ci]


HEADERS = ["arm", "visitors", "share", "conv", "rate", "95% CI", "uplift", "95% CI (pp)", "rel uplift", "95% CI", "p-value",
           "seq p", "seq 95% CS (pp)"]
_RIGHT = {1, 2, 3, 4, 6, 8, 11}


def _table(exp: ExperimentResult, with_conversions: bool) -> list[list[str]]:
    headers = HEADERS if with_conversions else HEADERS[:3]
    total = sum(a.visitors for a in exp.arms)
    return [headers] + [_cells(a, total, with_conversions) for a in exp.arms]


def srm_line(srm: SrmResult | None) -> str:
    if srm is None:
        return "SRM: not tested (one arm)"
    verdict = "MISMATCH - the arms are not comparable" if srm.flagged else "ok"
    split = "/".join(f"{100 * s:.4g}" for s in srm.expected.values())
    p = fmt_p(srm.p_value)
    p = f"p {p[0]} {p[1:]}" if p.startswith("<") else f"p = {p}"
    return f"SRM: {verdict} (chi2 = {srm.chi2:.2f}, df = {srm.df}, {p}; vs {srm.basis} {split})"


def format_text(report: Report) -> str:
    """The readable report ``edgeproxy report`` prints."""
    out: list[str] = []
    if report.plan is not None:
        out.append(plan_line(report.plan))
    conv = (f", {', '.join(report.conversion_files)} ({report.conversion_lines:,} conversions)"
            if report.conversion_files else " (no conversion log: visitors and SRM only)")
    exposures = ", ".join(report.exposure_files) or "no exposure log"
    out.append(f"edgeproxy report: {exposures} ({report.exposure_lines:,} exposures){conv}")
    if not report.experiments:
        out.append("")
        out.append("no experiments in the exposure log")
    for exp in report.experiments:
        out.append("")
        slots = ", ".join(exp.slots) or "-"
        out.append(f"{exp.name}   slots: {slots}   {exp.start} .. {exp.end}   {exp.visitors:,} visitors")
        rows = _table(exp, bool(report.conversion_files))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = [c.rjust(w) if i in _RIGHT else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
            out.append("  " + "  ".join(cells).rstrip())
        out.append("  " + srm_line(exp.srm))
        if exp.plan is not None:
            out.append("  " + plan_line(exp.plan))
        elif exp.plan_problem:
            out.append("  plan: none, " + exp.plan_problem)
        out.extend(f"  warning: {w}" for w in exp.warnings)
    for bad in report.malformed:
        out.append("")
        out.append(f"{bad.file}: {bad.count:,} malformed line(s) skipped")
        out.extend(f"  {e}" for e in bad.examples)
    out.append("")
    out.append("methods: rate CI Wilson score; uplift CI Newcombe hybrid score (pp), relative uplift CI log risk ratio (Katz);")
    out.append("  p-value two-sided, (z) pooled two-proportion z-test, (fisher) Fisher's exact when an expected cell < 5;")
    out.append(f"  SRM chi-square goodness of fit, flagged at p < {SRM_ALPHA}. A conversion counts at or after the")
    out.append("  visitor's first exposure. p-values are not adjusted for several arms or repeated looks;")
    out.append("  seq p / seq CS: always-valid mixture SPRT (Optimizely's Stats Engine, GrowthBook's sequential mode).")
    if report.conversion_files:
        out.append("")
        out.extend(textwrap.wrap(report.reading_rule, 110))
    return "\n".join(out) + "\n"


def format_plan(report: Report) -> str:
    """``--plan`` without logs: the plan alone."""
    return plan_line(report.plan) + "\n" if report.plan is not None else ""


def to_json(report: Report) -> str:
    return orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n"


def _svg_chart(exp: ExperimentResult) -> str:
    """Conversion rate per arm: a dot with its 95% interval as whiskers, and
    the control's rate as a dashed reference line."""
    arms = [a for a in exp.arms if a.rate is not None and a.rate_ci is not None]
    if not arms:
        return ""
    row_h, label_w, plot_w, pad = 34, 150, 480, 20
    height = pad * 2 + row_h * len(arms) + 20
    width = label_w + plot_w + pad * 2
    top = max(a.rate_ci[1] for a in arms) or 0.01  # type: ignore[index]
    scale_max = _nice_ceiling(top * 1.1)

    def x(v: float) -> float:
        return label_w + pad + plot_w * v / scale_max

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="conversion rate per arm of {html.escape(exp.name)} with 95% intervals">'
    ]
    axis_y = pad + row_h * len(arms)
    for i in range(6):
        v = scale_max * i / 5
        parts.append(f'<line x1="{x(v):.1f}" y1="{pad - 5}" x2="{x(v):.1f}" y2="{axis_y}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{x(v):.1f}" y="{axis_y + 15}" font-size="11" text-anchor="middle" fill="#555">{100 * v:.3g}%</text>')
    control = next((a for a in arms if a.arm == CONTROL), None)
    if control is not None:
        cx = x(control.rate)  # type: ignore[arg-type]
        parts.append(f'<line x1="{cx:.1f}" y1="{pad - 5}" x2="{cx:.1f}" y2="{axis_y}" stroke="#888" stroke-dasharray="4 3"/>')
    for i, a in enumerate(arms):
        y = pad + row_h * i + row_h / 2
        lo, hi = a.rate_ci  # type: ignore[misc]
        colour = "#777" if a.arm == CONTROL else ("#1a7f37" if (a.abs_uplift_ci and a.abs_uplift_ci[0] > 0)
                                                  else "#cf222e" if (a.abs_uplift_ci and a.abs_uplift_ci[1] < 0) else "#0969da")
        parts.append(f'<text x="{label_w}" y="{y + 4:.1f}" font-size="13" text-anchor="end">{html.escape(a.arm)}</text>')
        parts.append(f'<line x1="{x(lo):.1f}" y1="{y:.1f}" x2="{x(hi):.1f}" y2="{y:.1f}" stroke="{colour}" stroke-width="2"/>')
        for end in (lo, hi):
            parts.append(f'<line x1="{x(end):.1f}" y1="{y - 7:.1f}" x2="{x(end):.1f}" y2="{y + 7:.1f}" stroke="{colour}" stroke-width="2"/>')
        parts.append(
            f'<circle cx="{x(a.rate):.1f}" cy="{y:.1f}" r="5" fill="{colour}">'  # type: ignore[arg-type]
            f"<title>{html.escape(a.arm)}: {_pct(a.rate)} [{_pct(lo)}, {_pct(hi)}]</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


_ARM_COLOURS = ("#777", "#0969da", "#bf8700", "#8250df", "#1a7f37", "#cf222e")


def _svg_enrolment(exp: ExperimentResult) -> str:
    """Cumulative visitors per arm by day (from the daily cohorts): a line
    per arm, so a split drifting from its weights shows as lines parting."""
    days = sorted({d.day for d in exp.daily})
    if len(days) < 2:
        return ""
    arms = [a.arm for a in exp.arms]
    per_day = {(d.day, d.arm): d.visitors for d in exp.daily}
    totals = {arm: [] for arm in arms}
    for arm in arms:
        running = 0
        for day in days:
            running += per_day.get((day, arm), 0)
            totals[arm].append(running)
    top = _nice_axis(max(max(t) for t in totals.values()) or 1)
    label_w, plot_w, plot_h, pad = 60, 560, 180, 20
    width, height = label_w + plot_w + pad * 2 + 110, plot_h + pad * 2 + 20

    def xy(i: int, v: int) -> str:
        return f"{label_w + pad + plot_w * i / (len(days) - 1):.1f},{pad + plot_h * (1 - v / top):.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="visitors enrolled per arm of {html.escape(exp.name)} by day">'
    ]
    for k in range(5):
        v = top * k / 4
        y = pad + plot_h * (1 - k / 4)
        parts.append(f'<line x1="{label_w + pad}" y1="{y:.1f}" x2="{label_w + pad + plot_w}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{label_w + pad - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#555">{v:,.0f}</text>')
    for i in (0, len(days) - 1):
        parts.append(f'<text x="{xy(i, 0).split(",")[0]}" y="{pad + plot_h + 16}" font-size="11" text-anchor="middle" '
                     f'fill="#555">{days[i]}</text>')
    for n, arm in enumerate(arms):
        colour = _ARM_COLOURS[n % len(_ARM_COLOURS)]
        points = " ".join(xy(i, v) for i, v in enumerate(totals[arm]))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2">'
                     f"<title>{html.escape(arm)}: {totals[arm][-1]:,} visitors</title></polyline>")
        end_y = float(xy(len(days) - 1, totals[arm][-1]).split(",")[1])
        parts.append(f'<text x="{label_w + pad + plot_w + 6}" y="{end_y + 4:.1f}" font-size="12" fill="{colour}">'
                     f"{html.escape(arm)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _nice_axis(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= ``v`` (a count axis)."""
    exp10 = 10 ** math.floor(math.log10(v))
    return next(step * exp10 for step in (1, 2, 2.5, 5, 10) if step * exp10 >= v)


def _nice_ceiling(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= ``v`` (axis maximum)."""
    if v <= 0:
        return 1.0
    exp10 = 10 ** math.floor(math.log10(v))
    for step in (1, 2, 2.5, 5, 10):
        if step * exp10 >= v:
            return min(1.0, step * exp10)
    return min(1.0, 10 * exp10)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#1f2328;padding:0 1em}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0}th,td{padding:.3em .7em;border-bottom:1px solid #d0d7de;text-align:left;white-space:nowrap}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f6f8fa}
.ok{color:#1a7f37}.bad{color:#cf222e;font-weight:600}.warn{color:#9a6700}.meta,.methods{color:#57606a}
code{background:#f6f8fa;padding:0 .3em}
"""


def render_html(report: Report) -> str:
    """A self-contained HTML page: the tables, an SVG chart per experiment."""
    e = html.escape
    body = ["<h1>edgeproxy experiment report</h1>"]
    files = ", ".join(f"<code>{e(f)}</code>" for f in report.exposure_files) or "no exposure log"
    src = f"{files} ({report.exposure_lines:,} exposures)"
    if report.conversion_files:
        files = ", ".join(f"<code>{e(f)}</code>" for f in report.conversion_files)
        src += f", {files} ({report.conversion_lines:,} conversions)"
    else:
        src += ", no conversion log"
    body.append(f'<p class="meta">{src}</p>')
    if not report.experiments:
        body.append("<p>No experiments in the exposure log.</p>")
    for exp in report.experiments:
        body.append(f"<h2>{e(exp.name)}</h2>")
        body.append(f'<p class="meta">slots: {e(", ".join(exp.slots) or "-")} &middot; {e(exp.start)} .. {e(exp.end)} '
                    f"&middot; {exp.visitors:,} visitors &middot; {exp.exposures:,} exposures</p>")
        header, *rows = _table(exp, bool(report.conversion_files))
        body.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>")
        for cells in rows:
            body.append("<tr>" + "".join(
                f'<td class="n">{e(c)}</td>' if i in _RIGHT else f"<td>{e(c)}</td>" for i, c in enumerate(cells)
            ) + "</tr>")
        body.append("</tbody></table>")
        srm_class = "ok" if exp.srm is None or not exp.srm.flagged else "bad"
        body.append(f'<p class="{srm_class}">{e(srm_line(exp.srm))}</p>')
        if exp.plan is not None:
            body.append(f'<p class="meta">{e(plan_line(exp.plan))}</p>')
        elif exp.plan_problem:
            body.append(f'<p class="meta">plan: none, {e(exp.plan_problem)}</p>')
        body.extend(f'<p class="warn">warning: {e(w)}</p>' for w in exp.warnings)
        chart = _svg_chart(exp)
        if chart:
            body.append(f'<figure>{chart}<figcaption class="meta">Dot: conversion rate; whiskers: its 95% Wilson '
                        "interval; dashed line: the control's rate. Green / red: the uplift's 95% interval is "
                        "above / below zero.</figcaption></figure>")
        enrolment = _svg_enrolment(exp)
        if enrolment:
            body.append(f'<figure>{enrolment}<figcaption class="meta">Visitors enrolled so far, per arm, by the UTC '
                        "day of their first exposure: the arms should grow in the intended split.</figcaption></figure>")
    for bad in report.malformed:
        body.append(f'<h2 class="warn">{e(bad.file)}: {bad.count:,} malformed line(s) skipped</h2><ul>')
        body.extend(f"<li><code>{e(x)}</code></li>" for x in bad.examples)
        body.append("</ul>")
    body.append('<h2>Methods</h2><ul class="methods">')
    body.extend(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in report.methods.items())
    body.append("<li>p-values are not adjusted for several arms or repeated looks; "
                "a flagged SRM means the arms are not comparable.</li></ul>")
    if report.conversion_files:
        body.append(f"<p><b>Looking early.</b> {e(report.reading_rule.removeprefix('How to read it: '))}</p>")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>edgeproxy report</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )

