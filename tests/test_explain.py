"""``edgeproxy explain``: request facts from flags, and what it prints.

The unit tests stand in a recording classifier for ``edgeproxy.classify`` so
they pin explain's own job (flags -> RequestFacts, choose, the report); the
last tests run the real classifier when it is installed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

from edgeproxy.cli import build_parser, main
from edgeproxy.errors import SettingsError
from edgeproxy.explain import build_facts, parse_at
from edgeproxy.model import SetCookie, Visitor

UTC = dt.timezone.utc
REPO_SLOTS = Path(__file__).resolve().parent.parent / "slots"


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def args_for(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["explain", *argv])


@pytest.fixture
def slots(tmp_path: Path) -> Path:
    root = tmp_path / "slots"
    write(root, "hero/uk.html", '<!--edge\nwhen = { country = ["GB", "IE"] }\npriority = 10\n-->\n<h1>Hi {{ city | default: "there" }}</h1>\n')
    write(root, "hero/mobile.html", '<!--edge\nwhen = { device = "mobile" }\npriority = 5\n-->\n<h1>App</h1>\n')
    write(root, "banner/ab.html", '<!--edge\nexperiment = { name = "ab", weight = 100 }\n-->\n<p>B</p>\n')
    return root


@pytest.fixture(autouse=True)
def _no_env_settings(monkeypatch):
    for key in ("EDGEPROXY_SLOTS", "EDGEPROXY_CONFIG", "EDGEPROXY_HOLDOUT", "EDGEPROXY_GEO_DB"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def fake_classify(monkeypatch):
    """A stand-in edgeproxy.classify that records what it was given."""
    seen: dict = {}
    module = types.ModuleType("edgeproxy.classify")

    def open_classifiers(settings):
        seen["settings"] = settings
        return "classifiers"

    def classify(facts, classifiers, now):
        seen["facts"], seen["now"] = facts, now
        context = {"country": facts.headers.get("cf-ipcountry", "FR"), "device": "desktop", "affinity": ("trail",)}
        return Visitor(context=context, visitor_id="vid-1", session_id="s", cookies=(SetCookie("edge_vid", "x", 1),))

    module.open_classifiers, module.classify = open_classifiers, classify
    monkeypatch.setitem(sys.modules, "edgeproxy.classify", module)
    return seen


# ---------------------------------------------------------------------------
# Flags -> RequestFacts
# ---------------------------------------------------------------------------
def test_facts_from_url_headers_cookies_and_ip():
    facts = build_facts(args_for(
        "https://shop.example/c/trail-running?utm_medium=email&x=",
        "--ua", "Mozilla/5.0 (iPhone)", "--ip", "81.2.69.142", "--referer", "https://www.google.com/",
        "--cookie", "edge_vid=abc; consent=granted", "--cookie", "cart=2",
        "--header", "CF-IPCountry: GB", "--header", "Sec-GPC: 1",
    ))
    assert facts.method == "GET"
    assert facts.path == "/c/trail-running"
    assert facts.query == (("utm_medium", "email"), ("x", ""))
    assert facts.scheme == "https" and facts.host == "shop.example"
    assert facts.client_ip == "81.2.69.142" and facts.peer_trusted is True
    assert dict(facts.cookies) == {"edge_vid": "abc", "consent": "granted", "cart": "2"}
    assert facts.headers["user-agent"] == "Mozilla/5.0 (iPhone)"
    assert facts.headers["referer"] == "https://www.google.com/"
    assert facts.headers["cf-ipcountry"] == "GB"
    assert facts.headers["sec-gpc"] == "1"
    assert facts.headers["host"] == "shop.example"
    assert facts.headers["cookie"] == "edge_vid=abc; consent=granted; cart=2"


@pytest.mark.parametrize(
    "url, path, host",
    [
        ("/", "/", ""),
        ("/c/x?a=1", "/c/x", ""),
        ("shop.example/c/x", "/c/x", "shop.example"),
        ("http://shop.example", "/", "shop.example"),
    ],
)
def test_url_forms(url, path, host):
    facts = build_facts(args_for(url))
    assert (facts.path, facts.host) == (path, host)


def test_bad_header_flag_is_a_settings_error():
    with pytest.raises(SettingsError, match="expected \"Name: value\""):
        build_facts(args_for("/", "--header", "no-colon"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-11-27T10:00:00Z", dt.datetime(2026, 11, 27, 10, tzinfo=UTC)),
        ("2026-11-27T10:00:00+01:00", dt.datetime(2026, 11, 27, 9, tzinfo=UTC)),
        ("2026-11-27T10:00", dt.datetime(2026, 11, 27, 10, tzinfo=UTC)),
        ("2026-11-27", dt.datetime(2026, 11, 27, tzinfo=UTC)),
    ],
)
def test_at_flag(text, expected):
    assert parse_at(text) == expected


def test_bad_at_flag_exits_2(slots, fake_classify, capsys):
    assert main(["explain", "/", "--slots", str(slots), "--at", "tomorrow"]) == 2
    assert "setting at='tomorrow'" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------
def test_explain_prints_context_and_each_slots_decision(slots, fake_classify, capsys):
    code = main(["explain", "http://shop.example/?utm_medium=email", "--slots", str(slots),
                 "--header", "CF-IPCountry: GB", "--at", "2026-11-28T12:00:00Z"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == ["GET /?utm_medium=email  (host shop.example)", "at  2026-11-28T12:00:00+00:00"]
    assert "  id         vid-1" in out
    assert "  sets       edge_vid" in out
    assert "context\n  country   GB\n  device    desktop\n  affinity  trail\n" in out
    assert "  banner  ab  experiment ab arm ab, priority 0, everyone" in out
    assert "  hero    uk  priority 10, matched country=GB|IE" in out
    assert fake_classify["now"] == dt.datetime(2026, 11, 28, 12, tzinfo=UTC)
    assert fake_classify["settings"].slots == slots


def test_explain_says_why_each_other_variant_did_not_show(slots, fake_classify, capsys):
    write(slots, "hero/later.html", "<!--edge\npriority = 50\nstart = 2099-01-01T00:00:00Z\n-->\n<h1>Later</h1>\n")
    assert main(["explain", "/", "--slots", str(slots), "--header", "CF-IPCountry: GB", "--at", "2026-11-28T12:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "  hero    uk  priority 10, matched country=GB|IE\n" in out
    assert "            not later: not live yet: starts 2099-01-01 00:00 UTC\n" in out
    assert "            not mobile: needs device=mobile; the visitor's device is desktop\n" in out


def test_explain_json_is_the_decision_trace(slots, fake_classify, capsys):
    assert main(["explain", "/", "--slots", str(slots), "--json", "--at", "2026-11-28T12:00:00Z"]) == 0
    trace = json.loads(capsys.readouterr().out)
    assert trace["context"] == {"country": "FR", "device": "desktop", "affinity": ["trail"]}
    assert trace["slots"]["hero"] == {"variant": None, "reason": "no eligible variant"}
    assert trace["slots"]["banner"] == {"variant": "ab", "reason": "experiment ab arm ab, priority 0, everyone",
                                        "experiment": "ab", "arm": "ab"}
    assert trace["url"] == "/" and trace["at"] == "2026-11-28T12:00:00+00:00"


def test_edge_preview_in_the_url_forces_variants(slots, fake_classify, capsys):
    assert main(["explain", "/?edge_preview=hero:mobile,banner:none", "--slots", str(slots)]) == 0
    out = capsys.readouterr().out
    assert "slots  (preview: hero:mobile, banner:none)" in out
    assert "  hero    mobile     preview" in out
    assert "  banner  (default)  preview: default" in out


def test_catalog_errors_are_warnings_on_stderr(slots, fake_classify, capsys):
    write(slots, "hero/bad.html", "<!--edge\nprority = 1\n-->\nx")
    assert main(["explain", "/", "--slots", str(slots)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {slots}/hero/bad.html:2: unknown key 'prority' (did you mean 'priority'?) (not live; run edgeproxy check)" in err


def test_missing_slots_folder_exits_2(tmp_path, fake_classify, capsys):
    assert main(["explain", "/", "--slots", str(tmp_path / "nope")]) == 2
    assert "no such slots folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# With the real classifier
# ---------------------------------------------------------------------------
def _has_real_classify() -> bool:
    try:
        return importlib.util.find_spec("edgeproxy.classify") is not None
    except (ImportError, ValueError):
        return False


real = pytest.mark.skipif(not _has_real_classify(), reason="edgeproxy.classify is not written yet")


@real
def test_real_classifier_bot_gets_defaults(slots, capsys):
    ua = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    assert main(["explain", "/", "--slots", str(slots), "--ua", ua, "--json"]) == 0
    trace = json.loads(capsys.readouterr().out)
    assert trace["bot"] is True
    assert {s["reason"] for s in trace["slots"].values()} == {"bot"}


@real
def test_real_classifier_mobile_visitor_sees_the_mobile_hero(slots, capsys):
    ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
    assert main(["explain", "/", "--slots", str(slots), "--ua", ua, "--json"]) == 0
    trace = json.loads(capsys.readouterr().out)
    assert trace["context"]["device"] == "mobile"
    assert trace["slots"]["hero"]["variant"] == "mobile"


@real
def test_real_classifier_runs_on_the_example_slots(capsys):
    if not REPO_SLOTS.is_dir():
        pytest.skip("no example slots/ folder")
    assert main(["explain", "/c/hiking", "--slots", str(REPO_SLOTS), "--at", "2026-11-28T12:00:00Z"]) == 0
    assert "hiking-staff-picks" in capsys.readouterr().out


@real
def test_real_classifier_believes_the_cdn_country_header_named_by_geo_header(slots, capsys):
    argv = ["explain", "/", "--slots", str(slots), "--geo-header", "CF-IPCountry", "--header", "CF-IPCountry: GB", "--json"]
    assert main(argv) == 0
    trace = json.loads(capsys.readouterr().out)
    assert trace["context"]["country"] == "GB"
    assert trace["slots"]["hero"]["variant"] == "uk"
