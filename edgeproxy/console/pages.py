"""The console's HTML: server-rendered pages, one small inline script.

No build step and nothing from outside (CONTRACT §8 "works offline"): the
CSS and the script are inline, allowed by a per-response nonce in the
``Content-Security-Policy``.  Every value from the slots folder or the
query is escaped here (``_e``), once, at the point it enters the markup.

Elements a person or a test looks for carry ``data-testid``:
``state-SLOT-VARIANT`` (overview), ``decision-SLOT`` (preview: the chosen
variant's name or ``default``), ``renders-SLOT-VARIANT`` and
``recent-SLOT-VARIANT`` (live), ``arm-EXPERIMENT-ARM`` (the report).
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from .live import DEFAULT_MDE, Counts, Progress, Window, progress
from .overview import BROKEN, Overview, VariantRow
from .preview import PreviewForm

_e = html.escape

CSS = """
:root{color-scheme:light dark;--fg:#1d1d1f;--bg:#fff;--muted:#5b5b63;--line:#d9d9de;--live:#0a6b2e;--sched:#7a4d00;--ended:#555;--broken:#a1121b;--accent:#0b57d0}
@media (prefers-color-scheme:dark){:root{--fg:#eee;--bg:#17171a;--muted:#b2b2ba;--line:#3a3a40;--live:#6fd08c;--sched:#f0c060;--ended:#aaa;--broken:#ff8a8a;--accent:#8ab4f8}}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:var(--fg);background:var(--bg)}
header{border-bottom:1px solid var(--line);padding:.6em 1em;display:flex;flex-wrap:wrap;gap:.3em 1.2em;align-items:baseline}
header strong{font-size:1.05em}
nav a{margin-right:1em}
a{color:var(--accent)}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,iframe:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:1em;top:.5em;background:var(--bg);padding:.3em}
main{padding:1em;max-width:1400px}
h1{font-size:1.35em;margin:.2em 0 .4em}h2{font-size:1.1em;margin:1.4em 0 .4em}
.muted{color:var(--muted)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid var(--line);vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:.92em;word-break:break-word}
.badge{display:inline-block;padding:0 .45em;border:1px solid currentColor;border-radius:.6em;font-size:.85em;font-weight:600}
.live{color:var(--live)}.scheduled{color:var(--sched)}.ended{color:var(--ended)}.broken{color:var(--broken)}
.problems li{color:var(--broken)}
#changed{background:#fff3c4;color:#222;padding:.5em 1em}
form.visitor{display:grid;grid-template-columns:repeat(auto-fill,minmax(10.5em,1fr));gap:.6em 1em;align-items:end}
form.visitor label{display:flex;flex-direction:column;font-size:.9em;gap:.15em}
input,select,button{font:inherit;padding:.3em .4em}
form.visitor input,form.visitor select{height:2.3em}
table.renders{width:auto;min-width:min(100%,36em)}
.problem{color:var(--broken);font-size:.85em}
.frames{display:grid;grid-template-columns:1fr 1fr;gap:1em;margin-top:1em}
@media (max-width:900px){.frames{grid-template-columns:1fr}}
figure{margin:0}figcaption{font-weight:600;margin-bottom:.3em}
iframe{width:100%;height:70vh;border:1px solid var(--line);background:#fff}
dl.ctx{display:flex;flex-wrap:wrap;gap:.2em 1.2em;margin:.4em 0}dl.ctx div{display:flex;gap:.3em}dl.ctx dt{color:var(--muted)}dl.ctx dd{margin:0}
input.share{width:100%}
@media (min-width:701px){table.slots{table-layout:fixed}.c-file{width:20%}.c-who{width:22%}.c-prio{width:5.5em}.c-cap{width:8%}.c-exp{width:13%}.c-try{width:5.5em}}
table.slots td{overflow-wrap:anywhere}
progress{width:6em;height:.55em;vertical-align:middle}
.ci,.nowrap{white-space:nowrap}
th.seq,td.seq{background:rgba(11,87,208,.07)}
.rule{border-left:3px solid var(--accent);padding:.2em .8em;max-width:60em}
form.mde{margin:.6em 0;display:flex;flex-wrap:wrap;gap:.3em .5em;align-items:baseline}
table.report th[scope=row]{white-space:nowrap}tr.groups th{font-weight:600;font-size:.85em;color:var(--muted);text-align:center;border-bottom:0}tr.groups td{border-bottom:0}
ul.verdicts{padding-left:1.2em}ul.verdicts li{margin:.2em 0}
@media (max-width:700px){table.cards thead{display:none}table.cards tr{display:block;border-bottom:1px solid var(--line);padding:.4em 0}
table.cards td,table.cards th[scope=row]{display:block;border:0;padding:.1em .2em;text-align:left}table.cards td:empty{display:none}table.cards td[data-label]:not(:empty)::before{content:attr(data-label) ": ";color:var(--muted)}}
"""

# Polls /console/state.json: reloads when the slots folder changed (unless
# the person is editing the preview form, then offers a reload), and keeps
# the live numbers current.
SCRIPT = """
(function(){
  var gen = document.body.getAttribute('data-generation');
  var dirty = false;
  document.querySelectorAll('form.visitor').forEach(function(f){ f.addEventListener('input', function(){ dirty = true; }); });
  async function tick(){
    try {
      var r = await fetch('/console/state.json', {cache: 'no-store'}); var d = await r.json();
      if (String(d.generation) !== gen) {
        if (dirty) { document.getElementById('changed').hidden = false; } else { location.reload(); return; }
      }
      if (document.body.getAttribute('data-page') === 'live') {
        Object.entries(d.renders).forEach(function(kv){ var el = document.querySelector('[data-renders="'+CSS.escape(kv[0])+'"]'); if (el) el.textContent = kv[1]; });
        Object.entries(d.recent).forEach(function(kv){ var el = document.querySelector('[data-recent="'+CSS.escape(kv[0])+'"]'); if (el) el.textContent = kv[1]; });
        var w = document.getElementById('window'); if (w) w.textContent = d.window;
      }
    } catch (e) {}
  }
  setInterval(tick, 2000);
})();
"""


def shell(title: str, body: str, *, nonce: str, page: str, generation: int) -> str:
    nav = "".join(
        f'<a href="{href}"{" aria-current=page" if name == page else ""}>{label}</a>'
        for name, href, label in (("overview", "/console/", "Overview"), ("preview", "/console/preview", "Preview"), ("live", "/console/live", "Live"))
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_e(title)} · edgeproxy console</title><style nonce=\"{nonce}\">{CSS}</style></head>"
        f'<body data-generation="{generation}" data-page="{page}">'
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><strong>edgeproxy console</strong><nav aria-label="Console">{nav}<a href="/dashboard">Latency</a></nav></header>'
        '<div id="changed" role="status" hidden>The slots folder changed. <a href="">Reload</a> to see it.</div>'
        f'<main id="main">{body}</main>'
        f'<script nonce="{nonce}">{SCRIPT}</script></body></html>'
    )


def _utc(t: dt.datetime | None) -> str:
    if t is None:
        return ""
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# ---------------------------------------------------------------------------
# Overview
# ---------------------------------------------------------------------------
def _in_folder(error: str, directory: str) -> str:
    """``/srv/shop/slots/banner/x.html:2: reason`` -> ``banner/x.html:2: reason``:
    the file as the merchandiser names it in the slots folder."""
    prefix = directory.rstrip("/") + "/"
    return error[len(prefix):] if error.startswith(prefix) else error


def _state_cell(row: VariantRow, directory: str) -> str:
    badge = f'<span class="badge {row.state}">{row.state}</span>'
    if row.state == BROKEN:
        errors = "".join(f"<li><code>{_e(_in_folder(err, directory))}</code></li>" for err in row.errors)
        serving = _e(row.serving) + (f" ({row.serving_state})" if row.serving_state else "")
        return f'{badge}<ul class="errors">{errors}</ul>Still serving: {serving}'
    if row.state == "scheduled":
        return f"{badge} starts {_utc(row.start)}"
    if row.state == "ended":
        return f"{badge} on {_utc(row.end)}"
    return f"{badge} until {_utc(row.end)}" if row.end else badge


def _row_html(row: VariantRow, directory: str) -> str:
    key = f"{row.slot}-{row.variant}"
    what = f"<strong>{_e(row.file)}</strong>"
    if row.description:
        what += f'<br><span class="muted">{_e(row.description)}</span>'
    if row.kind == "sort":
        what += ' <span class="muted">(sort)</span>'
    audience = _e(row.audience)
    if row.when:
        audience += f'<br><code class="muted">{_e(row.when)}</code>'
    experiment = f"{_e(row.experiment)}, {row.weight:g}%" if row.experiment else ""
    priority = "" if row.priority is None else str(row.priority)
    link = ""
    if row.kind:  # something serves: it can be previewed
        query = urlencode({"force": f"{row.slot}:{row.variant}"})
        link = f'<a href="/console/preview?{_e(query)}" aria-label="Preview {_e(row.file)}">Preview</a>'
    return (
        f'<tr data-testid="variant-{_e(key)}" data-state="{row.state}">'
        f'<td>{what}</td><td data-label="For whom">{audience}</td><td class=num data-label="Priority">{priority}</td>'
        f'<td data-label="Cap">{_e(row.cap)}</td><td data-label="Experiment">{experiment}</td>'
        f'<td data-testid="state-{_e(key)}">{_state_cell(row, directory)}</td><td>{link}</td></tr>'
    )


def overview_page(ov: Overview, now: dt.datetime) -> str:
    counts = ov.counts
    parts = ["<h1>What is live</h1>"]
    summary = ", ".join(f'<span class="{s}">{n} {s}</span>' for s, n in counts.items())
    parts.append(
        f'<p>Slots folder <code>{_e(ov.directory)}</code>: {_plural(len(ov.slots), "slot")}; {summary}. '
        f'<span class="muted">As of {now:%H:%M:%S} UTC; this page follows the folder.</span></p>'
    )
    if ov.missing:
        parts.append('<p class="broken">The slots folder is missing: the shop is served unchanged until it appears.</p>')
    if ov.problems:
        items = "".join(f"<li><code>{_e(_in_folder(p, str(ov.directory)))}</code></li>" for p in ov.problems)
        parts.append(f'<h2>Problems</h2><ul class="problems" data-testid="problems">{items}</ul>')
    if not ov.slots:
        parts.append("<p>No slots yet: add a folder per slot, a file per variant.</p>")
    for slot in ov.slots:
        parts.append(f'<section aria-labelledby="slot-{_e(slot.name)}"><h2 id="slot-{_e(slot.name)}">{_e(slot.name)}</h2>')
        if not slot.rows:
            parts.append('<p class="muted">No variants: everyone sees the shop\'s default.</p></section>')
            continue
        parts.append(
            '<div class="scroll"><table class="cards slots"><colgroup><col class=c-file><col class=c-who><col class=c-prio><col class=c-cap>'
            '<col class=c-exp><col class=c-state><col class=c-try></colgroup><thead><tr><th scope=col>Variant file</th><th scope=col>For whom</th>'
            '<th scope=col class=num>Priority</th><th scope=col>Cap</th><th scope=col>Experiment</th><th scope=col>State</th>'
            "<th scope=col><span class=muted>Try it</span></th></tr></thead><tbody>"
        )
        parts.extend(_row_html(r, str(ov.directory)) for r in slot.rows)
        parts.append("</tbody></table></div>")
        for exp in slot.experiments:
            arms = ", ".join(f"{_e(a)} {w:g}%" for a, w in exp.arms)
            parts.append(
                f"<p>Experiment <strong>{_e(exp.name)}</strong>: {arms}, control {exp.control:g}% (the shop's default). "
                f'<a href="/console/live#exp-{_e(exp.name)}">How it is doing</a></p>'
            )
        parts.append("</section>")
    parts.append(
        '<p class="muted">Listed in the order the proxy tries them: priority, then the more specific <code>when</code>, then the file name.</p>'
    )
    return "".join(parts)


# ---------------------------------------------------------------------------
# Preview
# ---------------------------------------------------------------------------
def _field(form: PreviewForm, name: str, label: str, *, options: Sequence[tuple[str, str]] | None = None, placeholder: str = "", hint: str = "") -> str:
    value = form.values.get(name, "")
    problem = form.problems.get(name)
    described = f' aria-describedby="{name}-problem" aria-invalid="true"' if problem else ""
    if options is not None:
        opts = "".join(
            f'<option value="{_e(v)}"{" selected" if v == value else ""}>{_e(text)}</option>' for v, text in options
        )
        control = f'<select id="f-{name}" name="{name}"{described}>{opts}</select>'
    else:
        ph = f' placeholder="{_e(placeholder)}"' if placeholder else ""
        control = f'<input id="f-{name}" name="{name}" value="{_e(value)}"{ph}{described} autocomplete="off">'
    extra = f'<span id="{name}-problem" class="problem">{_e(problem)}</span>' if problem else ""
    title = f' title="{_e(hint)}"' if hint else ""
    return f'<label for="f-{name}"{title}>{_e(label)}{control}{extra}</label>'


def _context_list(trace: Mapping[str, Any]) -> str:
    items = []
    for key, value in trace.get("context", {}).items():
        if isinstance(value, list):
            value = ", ".join(value) or "(none)"
        elif isinstance(value, bool):
            value = "true" if value else "false"
        items.append(f"<div><dt>{_e(key)}</dt><dd>{_e(str(value))}</dd></div>")
    return f'<dl class="ctx">{"".join(items)}</dl>'


def _wall_clock(iso: str, tz: str) -> str:
    """``2026-11-27T20:00:00+00:00`` -> ``Friday 27 November 2026, 20:00 (Europe/London)``:
    the visitor's wall clock as a person says it (the ISO form when it is not one)."""
    try:
        t = dt.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    zone = tz or (t.tzname() or "")
    return f"{t:%A} {t.day} {t:%B %Y, %H:%M}" + (f" ({zone})" if zone else "")


def preview_page(
    form: PreviewForm, trace: Mapping[str, Any], others: Mapping[str, Sequence[tuple[str, str]]], *, share_url: str
) -> str:
    any_opt = [("", "any")]
    fields = [
        _field(form, "country", "Country", placeholder="GB", hint="ISO 3166 code"),
        _field(form, "city", "City", placeholder="Manchester"),
        _field(form, "device", "Device", options=[("", "desktop (default)"), ("mobile", "mobile"), ("tablet", "tablet"), ("desktop", "desktop"), ("bot", "bot")]),
        _field(form, "source", "Source", options=[("", "direct (default)")] + [(s, s) for s in ("direct", "search", "social", "email", "paid", "referral", "internal")]),
        _field(form, "utm_campaign", "utm_campaign", placeholder="black-friday"),
        _field(form, "visitor", "Visitor", options=[("", "new (default)"), ("new", "new"), ("returning", "returning")]),
        _field(form, "customer", "Customer", options=any_opt + [("yes", "yes"), ("no", "no")]),
        _field(form, "cart", "Cart", options=any_opt + [("empty", "empty"), ("filled", "filled")]),
        _field(form, "affinity", "Affinity", placeholder="running, hiking", hint="categories, strongest first"),
        _field(form, "at", "At (ISO time)", placeholder="2026-11-27T20:00", hint="without an offset: UTC, or in the time zone below"),
        _field(form, "tz", "Time zone", placeholder="Europe/London"),
        _field(form, "path", "Path", placeholder="/"),
        _field(form, "id", "Visitor id", placeholder="console-preview", hint="decides the experiment arm"),
        _field(form, "force", "Force variants", placeholder="hero:black-friday-uk", hint="as ?edge_preview=: slot:variant,slot:none"),
    ]
    parts = [
        "<h1>Preview as a visitor</h1>",
        '<form class="visitor" method="get" action="/console/preview" aria-label="The visitor">',
        *fields,
        '<div><button type="submit">Preview</button> <a href="/console/preview">Clear</a></div></form>',
        f'<p><label>Link to this preview (send it to a colleague): <input class="share" readonly value="{_e(share_url)}"></label></p>',
    ]
    at = _wall_clock(str(trace.get("at", "")), form.values.get("tz", ""))
    who = "a bot" if trace.get("bot") else ("a visitor in the holdout" if trace.get("holdout") else "this visitor")
    parts.append(f'<h2>What {who} sees</h2><p class="muted">On {_e(at)}, on the page {_e(form.path)}. Context:</p>')
    parts.append(_context_list(trace))
    rows = []
    for slot, d in trace.get("slots", {}).items():
        shown = d.get("variant") or "default"
        why = _e(d.get("reason", ""))
        if d.get("experiment") and d["experiment"] not in d.get("reason", ""):
            why += f'<br><span class="muted">experiment {_e(d["experiment"])}, arm {_e(str(d.get("arm")))}</span>'
        if others.get(slot):
            items = "".join(f"<li><strong>{_e(v)}</strong>: {_e(reason)}</li>" for v, reason in others[slot])
            names = others[slot]
            summary = f"Why not {_e(names[0][0])}" if len(names) == 1 else f"Why not the other {len(names)} variants"
            why += f"<details><summary>{summary}</summary><ul>{items}</ul></details>"
        rows.append(
            f'<tr><th scope=row>{_e(slot)}</th><td data-testid="decision-{_e(slot)}"><strong>{_e(shown)}</strong></td><td>{why}</td></tr>'
        )
    if rows:
        parts.append(
            '<div class="scroll"><table aria-label="Decisions"><thead><tr><th scope=col>Slot</th><th scope=col>Shows</th>'
            f'<th scope=col>Why</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
        )
    else:
        parts.append("<p>The slots folder has no slots.</p>")
    query = form.query()
    sep = "&amp;" if query else ""
    parts.append(
        '<div class="frames">'
        f'<figure><figcaption>As this visitor</figcaption><iframe title="The page as this visitor" '
        f'src="/console/page?{_e(query)}{sep}view=visitor" sandbox="allow-scripts"></iframe></figure>'
        f'<figure><figcaption>The default (no variant)</figcaption><iframe title="The default page" '
        f'src="/console/page?{_e(query)}{sep}view=default" sandbox="allow-scripts"></iframe></figure>'
        "</div>"
    )
    return "".join(parts)


# ---------------------------------------------------------------------------
# Live
# ---------------------------------------------------------------------------
def count_text(n: float) -> str:
    return f"{n:.0f}" if float(n).is_integer() else f"{n:g}"


def window_text(seconds: float) -> str:
    if seconds >= 290:
        return "the last 5 minutes"
    if seconds < 60:
        return f"the last {seconds:.0f} s (the console started recently)"
    return f"the last {seconds / 60:.0f} min (the console started recently)"


def live_rows(slots: Mapping[str, Sequence[str]], counts: Counts, recent: Window) -> list[tuple[str, str, float, float]]:
    """(slot, variant, since start, recent) for every variant the catalog
    serves, the default, and anything else the counter has seen."""
    keys: dict[tuple[str, str], None] = {}
    for slot, variants in slots.items():
        for v in variants:
            keys[(slot, v)] = None
        keys[(slot, "default")] = None
    for key in sorted(counts):
        keys.setdefault(key, None)
    return [(s, v, counts.get((s, v), 0.0), recent.counts.get((s, v), 0.0)) for s, v in keys]


def live_page(
    rows: list[tuple[str, str, float, float]], recent: Window, report: Mapping[str, Any] | None, *, started: str,
    mde: float = DEFAULT_MDE, mde_problem: str = "",
) -> str:
    # The experiments first: whether a change works is what the page is
    # opened for; the renders of every variant (a long list in a big shop) follow.
    parts = ["<h1>How it is doing</h1>", "<h2>Experiments</h2>", report_html(report, mde=mde, mde_problem=mde_problem)]
    parts.append("<h2>Renders per variant</h2>")
    parts.append(
        f'<p class="muted">The <code>edgeproxy_slot_decisions</code> counter of <a href="/metrics">/metrics</a> '
        f"(since the proxy started, {_e(started)}), and over <span id=\"window\">{_e(window_text(recent.seconds))}</span>. "
        "Previews are not counted.</p>"
    )
    body = []
    for slot, variant, total, last in rows:
        key = f"{slot}/{variant}"
        tid = f"{slot}-{variant}"
        body.append(
            f"<tr><th scope=row>{_e(slot)}</th><td>{_e(variant)}</td>"
            f'<td class=num data-testid="renders-{_e(tid)}" data-renders="{_e(key)}">{count_text(total)}</td>'
            f'<td class=num data-testid="recent-{_e(tid)}" data-recent="{_e(key)}">{count_text(last)}</td></tr>'
        )
    parts.append(
        '<div class="scroll"><table class="renders" aria-label="Renders"><thead><tr><th scope=col>Slot</th><th scope=col>Variant</th>'
        '<th scope=col class=num>Since start</th><th scope=col class=num>Last 5 min</th></tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table></div>'
    )
    return "".join(parts)


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x * 100:.{digits}f}%"


def _ci(ci: Sequence[float] | None, *, signed: bool = False) -> str:
    if not ci:
        return ""
    lo, hi = ci
    if signed:
        return f"[{lo * 100:+.2f}, {hi * 100:+.2f}] pp"
    return f"[{lo * 100:.2f}%, {hi * 100:.2f}%]"


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.0001" if p < 0.0001 else f"{p:.4f}"


def _n(n: float | int) -> str:
    return f"{n:,.0f}"


def _when(ts: str) -> str:
    """``2026-11-26T11:57:18Z`` -> ``2026-11-26 11:57 UTC``."""
    return ts[:16].replace("T", " ") + " UTC" if len(ts) >= 16 else ts


_BASIS = {"--slots": "the weights in the slots folder", "--weights": "the given weights", "equal split": "an equal split"}


def _excludes_zero(ci: Sequence[float] | None) -> int:
    """+1 / -1 when the interval lies above / below 0, else 0."""
    if not ci:
        return 0
    return 1 if ci[0] > 0 else -1 if ci[1] < 0 else 0


def _verdict(arm: Mapping[str, Any], srm: Mapping[str, Any] | None, prog: Progress | None) -> str:
    """An arm against the control in plain words, by the report's reading
    rule: the sequential interval decides at any look; the fixed-horizon
    p-value only once every arm has the sample the plan needs."""
    name = f"<strong>{_e(str(arm.get('arm')))}</strong>"
    if srm and srm.get("flagged"):
        return f"{name}: not comparable with the control (sample ratio mismatch)."
    p, uplift, seq_p = arm.get("p_value"), arm.get("abs_uplift"), arm.get("seq_p_value")
    if uplift is None:
        return ""
    side = _excludes_zero(arm.get("seq_abs_uplift_ci"))
    if side:
        better = "beats the control" if side > 0 else "does worse than the control"
        return (f"{name} {better} ({uplift * 100:+.2f} pp; sequential p = {_p(seq_p)}, "
                "which holds however often you look).")
    if prog is not None and prog.reached and p is not None:
        if p < 0.05:
            better = "beats the control" if uplift > 0 else "does worse than the control"
            return f"{name} {better} at the planned sample size ({uplift * 100:+.2f} pp, fixed-horizon p = {_p(p)})."
        return (f"{name}: no clear difference at the planned sample size (fixed-horizon p = {_p(p)}): "
                "a change as large as the one planned for would most likely have shown by now.")
    text = f"{name}: no clear difference yet" + (f" (sequential p = {_p(seq_p)})" if seq_p is not None else "") + "; let it run"
    if prog is not None and prog.days_left:
        text += f", about {_days(prog.days_left)} at this traffic"
    text += "."
    if p is not None and p < 0.05:
        text += (f" The fixed-horizon p = {_p(p)} is not a win yet: it holds only at the planned sample size, "
                 "not at every look.")
    return text


def _days(n: int) -> str:
    """``92`` -> ``92 more days``; a long wait also in months or years."""
    text = f"{n:,} more day{'' if n == 1 else 's'}"
    if n >= 730:
        return f"{text} (about {n / 365:.0f} years)"
    if n >= 60:
        return f"{text} (about {n / 30.4:.0f} months)"
    return text


LONG_WAIT_DAYS = 90  # beyond this, the page says a larger change is what this traffic can detect


def _plan_html(name: str, exp: Mapping[str, Any], prog: Progress | None) -> str:
    """The sample-size paragraph: what the plan needs and how far along it is."""
    plan = exp.get("plan")
    tid = _e(name)
    if not plan or prog is None:
        why = exp.get("plan_problem") or "the control has no conversions yet, so there is no rate to plan from"
        return f'<p class="muted" data-testid="plan-{tid}">No sample size yet: {_e(why)}.</p>'
    target = plan["baseline"] * (1 + plan["mde"])
    comparisons = plan["arms"] - 1
    each = "" if comparisons == 1 else f"; {comparisons} variants against the control, each at α {plan['alpha'] / comparisons:.3g}"
    text = (
        f'<strong>Sample size.</strong> To detect a {abs(plan["mde"]) * 100:g}% change ({_pct(plan["baseline"])} → {_pct(target)}) '
        f'with {plan["power"] * 100:g}% power, each arm needs <strong data-testid="needed-{tid}">{_n(plan["visitors_per_arm"])}</strong> visitors '
        f'<span class="muted">(the observed control rate as the baseline{each})</span>. '
    )
    per_day = plan.get("visitors_per_day")
    if prog.reached:
        text += '<strong data-testid="days-left-{0}">Reached</strong>: every arm has its sample, so the fixed-horizon p-value may be read now.'.format(tid)
    elif prog.days_left is None or not per_day:
        text += f'<span data-testid="days-left-{tid}">No traffic yet to count the days by.</span>'
    else:
        text += (
            f'At the <span data-testid="per-day-{tid}">{_n(per_day)}</span> visitors a day seen so far: about '
            f'<strong data-testid="days-left-{tid}">{_days(prog.days_left)}</strong> '
            f'<span class="muted">(<span data-testid="days-{tid}">{_n(plan["days"])}</span> in all; '
            f'{plan["days_so_far"]:.1f} so far)</span>.'
        )
        if prog.days_left > LONG_WAIT_DAYS:
            text += " That is a long wait: at this traffic only a larger change can be detected sooner (raise the smallest change above)."
    return f'<p data-testid="plan-{tid}">{text}</p>'


def _arm_row(name: str, arm: Mapping[str, Any], prog: Progress | None) -> str:
    tid = _e(f"{name}-{arm['arm']}")
    conv = "" if arm.get("conversions") is None else _n(arm["conversions"])
    visitors = f'<span data-testid="visitors-{tid}">{_n(arm["visitors"])}</span>'
    if prog is not None:
        share = min(arm["visitors"] / prog.needed, 1.0) if prog.needed else 1.0
        visitors += (
            f'<br><progress max="{prog.needed}" value="{min(arm["visitors"], prog.needed)}" aria-hidden="true"></progress> '
            f'<span class="muted nowrap" data-testid="progress-{tid}">{share * 100:.0f}% of {_n(prog.needed)}</span>'
        )
    rate = ""
    if arm.get("rate") is not None:
        rate = f'<span data-testid="rate-{tid}">{_pct(arm["rate"])}</span> <span class="ci">{_ci(arm.get("rate_ci"))}</span>'
    uplift = p = seq_p = seq_ci = ""
    if arm.get("abs_uplift") is not None:
        uplift = f'<span data-testid="uplift-{tid}">{arm["abs_uplift"] * 100:+.2f} pp</span> <span class="ci" data-testid="uplift-ci-{tid}">{_ci(arm.get("abs_uplift_ci"), signed=True)}</span>'
        if arm.get("rel_uplift") is not None:
            uplift += f'<br><span class="muted">{arm["rel_uplift"] * 100:+.1f}% relative</span>'
    if arm.get("p_value") is not None:
        p = f'<span data-testid="p-{tid}">{_p(arm["p_value"])}</span>{" (" + _e(arm["test"]) + ")" if arm.get("test") else ""}'
    if arm.get("seq_p_value") is not None:
        seq_p = f'<span data-testid="seq-p-{tid}">{_p(arm["seq_p_value"])}</span>'
        seq_ci = f'<span data-testid="seq-ci-{tid}">{_ci(arm.get("seq_abs_uplift_ci"), signed=True)}</span>'
    return (
        f'<tr data-testid="arm-{tid}"><th scope=row>{_e(arm["arm"])}</th>'
        f'<td class=num data-label="Visitors">{visitors}</td>'
        f'<td class=num data-label="Converted" data-testid="conversions-{tid}">{conv}</td>'
        f'<td class=num data-label="Rate [95% CI]">{rate}</td>'
        f'<td class=num data-label="Uplift vs control [95% CI]">{uplift}</td>'
        f'<td class=num data-label="Fixed-horizon p">{p}</td>'
        f'<td class="num seq" data-label="Sequential p">{seq_p}</td>'
        f'<td class="num seq" data-label="Sequential 95% interval">{seq_ci}</td></tr>'
    )


def _mde_form(mde: float, problem: str) -> str:
    described = ' aria-describedby="mde-problem" aria-invalid="true"' if problem else ""
    extra = f' <span id="mde-problem" class="problem">{_e(problem)}</span>' if problem else ""
    return (
        '<form class="mde" method="get" action="/console/live"><label for="f-mde">Smallest change worth detecting</label> '
        f'<input id="f-mde" name="mde" value="{mde * 100:g}" inputmode="decimal" size="4"{described}> % '
        f'<span class="muted">(relative: 10 % is 3 % → 3.3 %)</span> <button type="submit">Update</button>{extra}</form>'
    )


def report_html(report: Mapping[str, Any] | None, *, mde: float = DEFAULT_MDE, mde_problem: str = "") -> str:
    """``edgeproxy report --plan --mde MDE``'s figures per experiment (its
    JSON shape), the sample-size progress, and the report's reading rule."""
    if report is None:
        return (
            "<p>No exposure log is configured: start the proxy with <code>--exposure-log</code> "
            "(and <code>--conversion-log</code>) to see each experiment's report here.</p>"
        )
    parts = []
    if report.get("error"):
        parts.append(f'<p class="broken">{_e(report["error"])}</p>')
    if report.get("note"):
        parts.append(f'<p class="muted">{_e(report["note"])}</p>')
    experiments = report.get("experiments") or []
    if not experiments and not parts:
        parts.append("<p>No exposure logged yet.</p>")
    with_conversions = bool(report.get("conversion_files"))
    if experiments:
        parts.append(_mde_form(mde, mde_problem))
        parts.append(
            f'<p class="muted">As <code>edgeproxy report --plan --mde {mde:g}</code> computes them, at {_e(str(report.get("computed", "")))}. '
            "Each variant against the control, two-sided.</p>"
        )
        if with_conversions and report.get("reading_rule"):
            rule = str(report["reading_rule"])
            head, sep, rest = rule.partition(": ")
            rule_html = f"<strong>{_e(head)}:</strong> {_e(rest)}" if sep else _e(rule)
            parts.append(f'<p class="rule" data-testid="reading-rule">{rule_html}</p>')
    for exp in experiments:
        name = exp["name"]
        prog = progress(exp)
        slots = ", ".join(exp.get("slots") or [])
        parts.append(
            f'<section aria-labelledby="exp-{_e(name)}"><h3 id="exp-{_e(name)}">{_e(name)}</h3>'
            f'<p class="muted">{"Slot" if len(exp.get("slots") or []) == 1 else "Slots"} {_e(slots)} · '
            f'{_e(_when(str(exp.get("start", ""))))} to {_e(_when(str(exp.get("end", ""))))} · '
            f'{_n(exp.get("visitors", 0))} visitors, {_n(exp.get("exposures", 0))} exposures</p>'
        )
        srm = exp.get("srm")
        verdicts = [(arm["arm"], _verdict(arm, srm, prog)) for arm in exp.get("arms", []) if arm.get("arm") != "control"]
        items = "".join(f'<li data-testid="verdict-{_e(name)}-{_e(arm)}">{text}</li>' for arm, text in verdicts if text)
        if items:  # the answer first, the figures behind it after
            parts.append(f'<ul class="verdicts">{items}</ul>')
        rows = "".join(_arm_row(name, arm, prog) for arm in exp.get("arms", []))
        head = (
            '<tr class="groups"><td colspan=4></td><th scope=colgroup colspan=2>Fixed horizon: read once, at the planned sample</th>'
            '<th scope=colgroup colspan=2 class=seq>Sequential: read at any look</th></tr><tr>'
            "<th scope=col>Arm</th><th scope=col class=num>Visitors</th><th scope=col class=num>Converted</th>"
            "<th scope=col class=num>Rate [95% CI]</th><th scope=col class=num>Uplift vs control [95% CI]</th>"
            "<th scope=col class=num>Fixed-horizon p</th><th scope=col class=\"num seq\">Sequential p</th>"
            "<th scope=col class=\"num seq\">Sequential 95% interval</th></tr>"
        )
        parts.append(f'<div class="scroll"><table class="cards report"><thead>{head}</thead><tbody>{rows}</tbody></table></div>')
        if with_conversions:
            parts.append(_plan_html(name, exp, prog))
        if srm:
            basis = _e(_BASIS.get(srm.get("basis", ""), srm.get("basis", "")))
            if srm.get("flagged"):
                parts.append(
                    f'<p class="broken" data-testid="srm-{_e(name)}"><strong>Sample ratio mismatch</strong> '
                    f'(p = {_p(srm.get("p_value"))} against {basis}): the arms are not comparable; '
                    "do not trust this result until the cause is found.</p>"
                )
            else:
                parts.append(f'<p class="muted" data-testid="srm-{_e(name)}">No sample ratio mismatch (p = {_p(srm.get("p_value"))} against {basis}).</p>')
        for warning in exp.get("warnings") or []:
            parts.append(f'<p class="muted">{_e(warning)}</p>')
        if not with_conversions:
            parts.append('<p class="muted">No conversion log: visitors and the SRM check only.</p>')
        parts.append("</section>")
    return "".join(parts)
