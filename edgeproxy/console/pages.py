"""The console's HTML: server-rendered pages, one small inline script.

No build step and nothing from outside (CONTRACT §8 "works offline"): the
CSS and the script are inline, allowed by a per-response nonce in the
``Content-Security-Policy``.  Every value from the slots folder or the
query is escaped here (``_e``), once, at the point it enters the markup.

Elements a person or a test looks for carry ``data-testid``:
``state-SLOT-VARIANT`` (overview), ``decision-SLOT`` (preview: the chosen
variant's name or ``default``), ``renders-SLOT-VARIANT`` and
``recent-SLOT-VARIANT`` (live); the experiment report on the live page
is ``report_page.py``'s, with its own.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from .live import DEFAULT_MDE, Counts, Window
from .overview import BROKEN, Overview, VariantRow
from .preview import PreviewForm
from .report_page import report_html

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
.share-row{display:flex;gap:.4em}input.share{flex:1;min-width:0}
@media (min-width:701px){table.slots{table-layout:fixed}.c-file{width:20%}.c-who{width:22%}.c-prio{width:5.5em}.c-cap{width:8%}.c-exp{width:13%}.c-try{width:5.5em}}
table.slots td{overflow-wrap:anywhere}
progress{width:6em;height:.55em;vertical-align:middle}
.ci,.nowrap{white-space:nowrap}
th.seq,td.seq{background:rgba(11,87,208,.07)}
.rule{border-left:3px solid var(--accent);padding:.2em .8em;max-width:60em}
form.mde{margin:.6em 0;display:flex;flex-wrap:wrap;gap:.3em .5em;align-items:baseline}
table.report th[scope=row]{white-space:nowrap}tr.groups th{font-weight:600;font-size:.85em;color:var(--muted);text-align:center;border-bottom:0}tr.groups td{border-bottom:0}
ul.verdicts{padding-left:1.2em}li.win{color:var(--live)}li.loss{color:var(--broken)}ul.verdicts li{margin:.2em 0}
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
  // The preview's link in one tap (a phone makes selecting a long URL hard);
  // the button shows only where this script runs.
  var copy = document.getElementById('copy');
  if (copy) {
    copy.hidden = false;
    copy.addEventListener('click', async function(){
      var link = document.getElementById('share'); link.select();
      try { await navigator.clipboard.writeText(link.value); } catch (e) { document.execCommand('copy'); }
      copy.textContent = 'Copied';
    });
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
        '<p><label for="share">Link to this preview (send it to a colleague):</label> <span class="share-row">'
        f'<input id="share" class="share" readonly value="{_e(share_url)}"><button type="button" id="copy" hidden>Copy</button></span></p>',
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
