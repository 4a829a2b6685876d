"""The ``/dashboard`` page: one self-contained HTML document (inline CSS, inline
SVG drawn by inline JavaScript, no outside asset) that polls
``/dashboard.json`` every 2 seconds.

Every figure in the "since start" table carries a ``data-testid`` and its
exact value in ``data-value``, so a browser test can compare the page with
``/metrics`` (tests/test_dashboard.py).
"""

DASHBOARD_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgeproxy dashboard</title>
<style>
:root{--fg:#1d2433;--muted:#667085;--line:#e4e7ec;--bg:#f8f9fb;--bad:#c4320a;--ok:#067647}
*{box-sizing:border-box}body{font:14px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:var(--fg);background:var(--bg)}
header{display:flex;flex-wrap:wrap;gap:.6em 1.4em;align-items:baseline;padding:1em 1.5em;background:#fff;border-bottom:1px solid var(--line)}
h1{font-size:1.25em;margin:0 1em 0 0}h2{font-size:1em;margin:0 0 .4em}
.badge{padding:.15em .6em;border-radius:1em;background:#eef2f6}.badge.bad{background:#fee4e2;color:var(--bad)}.badge.ok{background:#dcfae6;color:var(--ok)}
main{padding:1em 1.5em;display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:1em}
section,figure{background:#fff;border:1px solid var(--line);border-radius:8px;padding:.8em 1em;margin:0}
figcaption{font-weight:600;margin-bottom:.3em}
table{border-collapse:collapse;width:100%}td,th{padding:.2em .5em;text-align:right;font-variant-numeric:tabular-nums}th{text-align:left;font-weight:normal;color:var(--muted)}
svg{width:100%;height:auto;display:block}.legend{font-size:12px;color:var(--muted)}.legend span{margin-right:1em}
.bar{display:flex;height:18px;border-radius:4px;overflow:hidden;margin:.2em 0 .6em}.bar div{height:100%}
.note{color:var(--muted);font-size:12px}#status.bad{color:var(--bad)}
</style></head>
<body>
<header>
  <h1>edgeproxy</h1>
  <span>budget <b data-testid="budget">–</b> ms</span>
  <span>workers <b data-testid="workers">–</b></span>
  <span class="badge" data-testid="draining">–</span>
  <span>in flight <b data-testid="in-flight">–</b> of <b data-testid="in-flight-limit" title="the in-flight limit (adaptive; 0 = none)">–</b></span>
  <span>loop lag <b data-testid="loop-lag">–</b> ms</span>
  <span>shed <b data-testid="shed" title="503s of load shedding since start">–</b></span>
  <span class="note">charts: <span id="scope">–</span>, last 15 minutes, <span id="step">10</span> s points</span>
  <span class="note" id="status" role="status">loading…</span>
</header>
<main>
  <figure><figcaption>Total latency (ms): p50, p95, p99 — dashed: the budget</figcaption><div id="c-total"></div></figure>
  <figure><figcaption>Added latency (ms): the proxy's own time, against the budget</figcaption><div id="c-added"></div></figure>
  <figure><figcaption>Per stage, p95 (ms)</figcaption><div id="c-stages"></div></figure>
  <figure><figcaption>Requests per second</figcaption><div id="c-rps"></div></figure>
  <figure><figcaption>Fail-open and origin errors (% of requests)</figcaption><div id="c-errors"></div></figure>
  <figure><figcaption>Upstream cache hit ratio (%)</figcaption><div id="c-cache"></div></figure>
  <section><h2>Variant shares per slot (last 15 minutes)</h2><div id="variants"><p class="note">no page loads yet</p></div></section>
  <section><h2>Since start (equals /metrics)</h2>
    <table><tbody>
      <tr><th>requests</th><td data-testid="total-requests">–</td></tr>
      <tr><th>fail-open</th><td data-testid="total-fail-open">–</td></tr>
      <tr><th>origin errors</th><td data-testid="total-origin-errors">–</td></tr>
      <tr><th>cache hits / lookups</th><td><span data-testid="total-cache-hits">–</span> / <span data-testid="total-cache-lookups">–</span></td></tr>
      <tr><th>cache hit ratio</th><td data-testid="total-cache-hit-ratio">–</td></tr>
      <tr><th>total latency p50 / p95 / p99 (ms)</th><td><span data-testid="total-p50">–</span> / <span data-testid="total-p95">–</span> / <span data-testid="total-p99">–</span></td></tr>
      <tr><th>added latency p50 / p95 / p99 (ms)</th><td><span data-testid="added-p50">–</span> / <span data-testid="added-p95">–</span> / <span data-testid="added-p99">–</span></td></tr>
      <tr><th>stage p95 (ms): classify / choose / origin / rewrite</th><td><span data-testid="stage-classify">–</span> / <span data-testid="stage-choose">–</span> / <span data-testid="stage-origin">–</span> / <span data-testid="stage-rewrite">–</span></td></tr>
    </tbody></table>
    <p class="note">Percentiles as Prometheus' histogram_quantile computes them from the same buckets. <a href="/metrics">/metrics</a> · <a href="/readyz">/readyz</a> · <a href="/dashboard.json">/dashboard.json</a></p>
  </section>
</main>
<script>
"use strict";
const COLORS = ["#2e90fa", "#f79009", "#d92d20", "#12b76a", "#7a5af8", "#ee46bc", "#667085"];
const esc = s => String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const fmt = v => v === null || v === undefined ? "–" : (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));

function chart(id, t, lines, opts) {
  opts = opts || {};
  const W = 560, H = 190, L = 46, R = 8, T = 8, B = 22;
  const vals = lines.flatMap(l => l.values.filter(v => v !== null));
  const dataMax = Math.max(opts.min || 0, ...vals);
  // The budget line joins the scale unless it is far above the data (then
  // the chart says where it is instead of flattening every line).
  const budgetShown = opts.budget && (dataMax === 0 || opts.budget <= 3 * dataMax);
  let ymax = Math.max(dataMax, budgetShown ? opts.budget : 0);
  ymax = ymax > 0 ? ymax * 1.1 : 1;
  const x0 = t[0], x1 = t[t.length - 1] || x0 + 1;
  const X = x => L + (W - L - R) * (x - x0) / Math.max(1, x1 - x0);
  const Y = y => T + (H - T - B) * (1 - y / ymax);
  let svg = `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(opts.label || id)}">`;
  for (const f of [0, 0.5, 1]) {
    const y = Y(ymax * f);
    svg += `<line x1="${L}" x2="${W - R}" y1="${y}" y2="${y}" stroke="#eaecf0"/>`;
    svg += `<text x="${L - 4}" y="${y + 4}" font-size="10" text-anchor="end" fill="#667085">${fmt(ymax * f)}</text>`;
  }
  [[x0, "-15m"], [x0 + (x1 - x0) / 3, "-10m"], [x0 + 2 * (x1 - x0) / 3, "-5m"], [x1, "now"]].forEach(([x, s]) => {
    svg += `<text x="${X(x)}" y="${H - 6}" font-size="10" text-anchor="middle" fill="#667085">${s}</text>`;
  });
  if (opts.budget && !budgetShown) {
    svg += `<text x="${W - R}" y="${T + 10}" font-size="10" text-anchor="end" fill="#d92d20">budget ${fmt(opts.budget)} ↑ (above the chart)</text>`;
  }
  if (budgetShown) {
    const y = Y(opts.budget);
    svg += `<line x1="${L}" x2="${W - R}" y1="${y}" y2="${y}" stroke="#d92d20" stroke-dasharray="5 4"/>`;
    svg += `<text x="${W - R}" y="${y - 3}" font-size="10" text-anchor="end" fill="#d92d20">budget ${fmt(opts.budget)}</text>`;
  }
  lines.forEach((l, i) => {
    let d = "", pen = false;
    l.values.forEach((v, j) => {
      if (v === null) { pen = false; return; }
      d += (pen ? "L" : "M") + X(t[j]).toFixed(1) + " " + Y(v).toFixed(1);
      pen = true;
    });
    svg += `<path d="${d}" fill="none" stroke="${l.color || COLORS[i]}" stroke-width="1.6"/>`;
    // A point with no neighbour draws no line: mark it.
    l.values.forEach((v, j) => {
      if (v !== null && (j === 0 || l.values[j - 1] === null) && (j === l.values.length - 1 || l.values[j + 1] === null)) {
        svg += `<circle cx="${X(t[j]).toFixed(1)}" cy="${Y(v).toFixed(1)}" r="2.5" fill="${l.color || COLORS[i]}"/>`;
      }
    });
  });
  svg += "</svg>";
  const last = l => { for (let j = l.values.length - 1; j >= 0; j--) if (l.values[j] !== null) return l.values[j]; return null; };
  const legend = lines.map((l, i) => `<span style="color:${l.color || COLORS[i]}">■</span> ${esc(l.name)} <b>${fmt(last(l))}</b>`).join(" ");
  document.getElementById(id).innerHTML = svg + `<div class="legend">${legend}</div>`;
}

const pct = a => a.map(v => v === null ? null : v * 100);

function setNumber(id, v, digits) {
  const el = document.querySelector(`[data-testid="${id}"]`);
  el.dataset.value = v === null || v === undefined ? "" : String(v);
  el.textContent = v === null || v === undefined ? "–" : (digits === undefined ? String(v) : Number(v).toFixed(digits));
}

function render(d) {
  const s = d.series, t = s.t;
  document.getElementById("scope").textContent = d.charts_scope;
  document.getElementById("step").textContent = s.step_s;
  setNumber("budget", d.budget_ms);
  setNumber("workers", d.workers);
  setNumber("in-flight", d.in_flight);
  const dr = document.querySelector('[data-testid="draining"]');
  dr.textContent = d.draining ? "draining" : "serving";
  dr.dataset.value = String(d.draining);
  dr.className = "badge " + (d.draining ? "bad" : "ok");
  const budget = d.budget_ms > 0 ? d.budget_ms : null;
  const q = o => [{name: "p50", values: o.p50}, {name: "p95", values: o.p95}, {name: "p99", values: o.p99}];
  chart("c-total", t, q(s.total_ms), {budget, label: "total latency"});
  chart("c-added", t, q(s.added_ms), {budget, label: "added latency"});
  chart("c-stages", t, Object.entries(s.stage_p95_ms).map(([k, v]) => ({name: k, values: v})), {label: "stage p95"});
  chart("c-rps", t, [{name: "requests/s", values: s.rps}], {label: "requests per second"});
  chart("c-errors", t, [{name: "fail-open %", values: pct(s.fail_open), color: "#f79009"},
                        {name: "origin errors %", values: pct(s.origin_errors), color: "#d92d20"}], {label: "error rates", min: 1});
  chart("c-cache", t, [{name: "hit ratio %", values: pct(s.cache_hit), color: "#12b76a"}], {label: "cache hit ratio", min: 100});
  const slots = Object.entries(s.variants);
  document.getElementById("variants").innerHTML = slots.length ? slots.map(([slot, shares]) => {
    const parts = Object.entries(shares);
    const bar = parts.map(([v, share], i) => `<div title="${esc(v)} ${(share * 100).toFixed(1)} %" style="width:${share * 100}%;background:${COLORS[i % COLORS.length]}"></div>`).join("");
    const legend = parts.map(([v, share], i) => `<span><span style="color:${COLORS[i % COLORS.length]}">■</span> ${esc(v)} <b data-testid="variant-share-${esc(slot)}-${esc(v)}" data-value="${share}">${(share * 100).toFixed(1)} %</b></span>`).join(" ");
    return `<div><b>${esc(slot)}</b><div class="bar">${bar}</div><div class="legend">${legend}</div></div>`;
  }).join("") : '<p class="note">no page loads yet</p>';
  const tt = d.totals;
  setNumber("in-flight-limit", tt.in_flight_limit);
  setNumber("loop-lag", tt.loop_lag_ms, 1);
  setNumber("shed", tt.shed);
  setNumber("total-requests", tt.requests);
  setNumber("total-fail-open", tt.fail_open);
  setNumber("total-origin-errors", tt.origin_errors);
  setNumber("total-cache-hits", tt.cache_hits);
  setNumber("total-cache-lookups", tt.cache_lookups);
  setNumber("total-cache-hit-ratio", tt.cache_hit_ratio);
  for (const k of ["p50", "p95", "p99"]) { setNumber("total-" + k, tt.total_ms[k]); setNumber("added-" + k, tt.added_ms[k]); }
  for (const [k, v] of Object.entries(tt.stage_p95_ms)) setNumber("stage-" + k, v);
}

async function tick() {
  const status = document.getElementById("status");
  try {
    const r = await fetch("/dashboard.json", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const d = await r.json();
    render(d);
    status.textContent = "updated " + new Date(d.now * 1000).toLocaleTimeString();
    status.dataset.updated = String(d.now);
    status.className = "note";
  } catch (e) {
    status.textContent = "cannot reach the proxy (" + e.message + "); retrying";
    status.className = "note bad";
  }
}
tick();
setInterval(tick, 2000);
</script>
</body></html>
"""
