"""``edgeproxy check``: exit codes and what it prints."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from edgeproxy.catalog import load_catalog
from edgeproxy.check import format_catalog
from edgeproxy.cli import main

UTC = dt.timezone.utc
REPO_SLOTS = Path(__file__).resolve().parent.parent / "slots"


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def slots(tmp_path: Path) -> Path:
    root = tmp_path / "slots"
    write(root, "hero/black-friday-uk.html",
          '<!--edge\ndescription = "BF for UK phones"\nwhen = { country = ["GB", "IE"], device = "mobile" }\n'
          "priority = 10\nstart = 2026-11-27T00:00:00Z\nend = 2026-12-01T00:00:00Z\n-->\n"
          '<h1>Hi {{ city | default: "there" }}</h1>\n')
    write(root, "hero/promo.html",
          '<!--edge\nexperiment = { name = "bf-hero", weight = 30 }\ncap = { views = 3, per = "day" }\n-->\n<p>x</p>\n')
    write(root, "product-grid/running-fans.toml", 'when = { affinity = "trail-running" }\nsort = ["affinity", "-data-stock", "pin:A1,B7"]\n')
    (root / "banner").mkdir()
    return root


@pytest.fixture(autouse=True)
def _no_env_settings(monkeypatch):
    for key in ("EDGEPROXY_SLOTS", "EDGEPROXY_CONFIG", "EDGEPROXY_MAX_FRAGMENT_BYTES"):
        monkeypatch.delenv(key, raising=False)


def test_valid_folder_exits_0_and_lists_every_slot_and_variant(slots, capsys):
    assert main(["check", str(slots)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{slots}: 3 slots, 3 variants, 0 errors\n")
    assert "banner\n  (no variants: everyone sees the shop's default)" in out
    assert "  1. black-friday-uk.html  content  priority 10" in out
    assert '       "BF for UK phones"' in out
    assert "       when       country=GB|IE device=mobile" in out
    assert "       window     2026-11-27 00:00 UTC -> 2026-12-01 00:00 UTC" in out
    assert "       merge tags city" in out
    assert "       experiment bf-hero, weight 30%" in out
    assert "       cap        3 per day" in out
    assert "  experiment bf-hero: promo 30%, control 70%" in out
    assert "  1. running-fans.toml  sort     priority 0" in out
    assert "       sort       affinity, -data-stock, pin:A1,B7" in out
    assert out.endswith("OK: 3 variants in 3 slots\n")


def test_errors_exit_1_and_print_file_line_reason(slots, capsys):
    write(slots, "hero/typo.html", "<!--edge\nwhen = { device = \"mobile\" }\nprority = 5\n-->\n<p>x</p>\n")
    write(slots, "banner/open.html", "<!--edge\n-->\n<div>\n")
    assert main(["check", str(slots)]) == 1
    out = capsys.readouterr().out
    assert f"\n{slots}/banner/open.html:3: unclosed <div>: no </div> before the end of the fragment\n" in out
    assert f"\n{slots}/hero/typo.html:3: unknown key 'prority' (did you mean 'priority'?)\n" in out
    assert "  x  typo.html  rejected: not live (see errors)" in out
    assert "FAILED: 2 errors" in out


def test_missing_folder_exits_2(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_default_folder_is_slots_in_the_working_directory(slots, monkeypatch, capsys):
    monkeypatch.chdir(slots.parent)
    assert main(["check"]) == 0
    assert capsys.readouterr().out.startswith("slots: 3 slots")


def test_default_folder_missing_exits_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 2


def test_fragment_cap_follows_the_server_setting(slots, monkeypatch, capsys):
    monkeypatch.setenv("EDGEPROXY_MAX_FRAGMENT_BYTES", "4")
    assert main(["check", str(slots)]) == 1
    assert "over the 4-byte limit (max_fragment_bytes)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "now, status",
    [
        (dt.datetime(2026, 11, 22, tzinfo=UTC), "[scheduled: starts in 5 days]"),
        (dt.datetime(2026, 11, 28, tzinfo=UTC), "[live: ends in 3 days]"),
        (dt.datetime(2026, 12, 2, tzinfo=UTC), "[ended]"),
    ],
)
def test_window_status_relative_to_now(slots, now, status):
    report = format_catalog(load_catalog(slots), now)
    assert f"black-friday-uk.html  content  priority 10  {status}" in report


def test_the_repositorys_example_slots_are_valid(capsys):
    if not REPO_SLOTS.is_dir():
        pytest.skip("no example slots/ folder")
    assert main(["check", str(REPO_SLOTS)]) == 0
