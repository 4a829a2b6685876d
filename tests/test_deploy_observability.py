"""deploy/grafana/edgeproxy.json and deploy/prometheus/alerts.yml (issue 10
item 7): both parse, every metric they name exists in a live proxy's
``/metrics``, and ``promtool check rules`` accepts the rules (where Debian's
``prometheus`` package provides promtool; skipped with the reason otherwise).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from proxyharness import BROWSER, raw_get, run_origin, run_proxy, write_variant

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "deploy" / "grafana" / "edgeproxy.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# A metric name (not a recording rule's ``edgeproxy:…``, not inside a label value).
METRIC = re.compile(r"(?<![\w:\"])(edgeproxy_[a-zA-Z0-9_]+)")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"), "gauge": ("",), "summary": ("", "_count", "_sum")}


def grafana_exprs() -> list[str]:
    out = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query", "definition") and isinstance(value, str):
                    out.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(GRAFANA.read_text("utf-8")))
    return out


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text("utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def names_in(exprs) -> set[str]:
    return {m for expr in exprs for m in METRIC.findall(re.sub(r'"[^"]*"', '""', expr))}


# ---------------------------------------------------------------------------
# The files themselves
# ---------------------------------------------------------------------------
def test_grafana_dashboard_is_importable_json():
    board = json.loads(GRAFANA.read_text("utf-8"))
    panels = board["panels"]
    assert board["uid"] == "edgeproxy" and board["schemaVersion"] >= 36
    assert len({p["id"] for p in panels}) == len(panels)
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "job", "instance"]
    titles = " ".join(p["title"].lower() for p in panels)
    for subject in ("budget", "added latency", "fail-open", "cache", "origin errors", "variant shares"):
        assert subject in titles, subject
    for p in panels:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
            assert all('job=~"$job"' in t["expr"] for t in p["targets"]), p["title"]


def test_alert_rules_cover_the_issue_and_say_what_to_do():
    rules = alert_rules()
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    assert {"EdgeproxyLatencyBudgetBurnFast", "EdgeproxyLatencyBudgetBurnSlow", "EdgeproxyFailOpenSpike",
            "EdgeproxyOriginErrors", "EdgeproxySlotReloadFailed", "EdgeproxyEventsDropped"} <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("page", "ticket", "warning"), name
        assert rule["annotations"]["summary"], name
    # Multi-window: the fast burn pairs a long and a short window, twice.
    fast = alerts["EdgeproxyLatencyBudgetBurnFast"]["expr"]
    for window in ("ratio_rate1h", "ratio_rate5m", "ratio_rate6h", "ratio_rate30m"):
        assert window in fast
    recorded = {r["record"] for r in rules if "record" in r}
    used = {m for r in rules for m in re.findall(r"edgeproxy:[a-z_]+:ratio_rate\w+", r["expr"])}
    assert used <= recorded


# ---------------------------------------------------------------------------
# Against a live proxy
# ---------------------------------------------------------------------------
def origin_app() -> web.Application:
    page = b'<!doctype html><html><body><section data-edge-slot="hero">Default</section></body></html>'

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await asyncio.sleep(2)
        headers = {"Cache-Control": "max-age=60"} if request.path == "/cached" else {}
        return web.Response(body=page, content_type="text/html", headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


async def live_metrics(tmp_path) -> str:
    write_variant(tmp_path / "slots", "hero", "big", "<h1>Big</h1>")
    async with run_origin(origin_app()) as url, run_proxy(
        url, tmp_path / "slots", cache_bytes=1 << 20, first_byte_timeout=0.3, access_log="off",
        exposure_log=str(tmp_path / "exposures.jsonl"),
    ) as proxy:
        for path in ("/", "/cached", "/cached", "/slow"):
            await raw_get(proxy.port, path, BROWSER)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{proxy.admin_port}/metrics") as resp:
                return await resp.text()


def exposed_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


async def test_every_metric_the_dashboard_and_alerts_name_exists_in_metrics(tmp_path):
    text = await live_metrics(tmp_path)
    exposed = exposed_names(text)
    referenced = names_in(grafana_exprs()) | names_in(r["expr"] for r in alert_rules())
    assert len(referenced) >= 15
    assert sorted(referenced - exposed) == []
    # The SLO's bucket is one the histogram has.
    assert 'edgeproxy_added_latency_seconds_bucket{le="0.01"}' in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is absent (Debian: apt-get install prometheus)")
def test_promtool_accepts_the_rules():
    result = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is absent (Debian: apt-get install prometheus)")
def test_promtool_unit_tests_of_the_alerts_pass():
    """tests/data/prometheus/alerts_test.yml: the origin-error, fail-open,
    fast-burn, reload and dropped-events alerts fire on the series that
    should fire them (with their exact text), and the SLO alerts stay quiet
    at 0.5 % over budget."""
    tests = ROOT / "tests" / "data" / "prometheus" / "alerts_test.yml"
    result = subprocess.run(["promtool", "test", "rules", str(tests)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
