"""Hot reload: CatalogStore.reload() and the watch() polling task."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

import pytest

from edgeproxy.catalog import CatalogStore, watch
from edgeproxy.catalog import load as load_module


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    # Filesystem timestamps can be coarse: make every write visibly newer.
    st = path.stat()
    bump = getattr(write, "tick", 0) + 1
    write.tick = bump  # type: ignore[attr-defined]
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000))
    return path


def ids(store: CatalogStore, slot: str = "hero") -> list[str]:
    s = store.current.slots.get(slot)
    return [v.id for v in s.variants] if s else []


@pytest.fixture
def slots(tmp_path: Path) -> Path:
    root = tmp_path / "slots"
    write(root, "hero/a.html", "<!--edge -->\n<p>A</p>")
    return root


def test_store_loads_the_folder_on_creation(slots):
    store = CatalogStore(slots)
    assert ids(store) == ["a"] and store.current.generation == 1


def test_reload_without_changes_keeps_the_same_catalog(slots):
    store = CatalogStore(slots)
    before = store.current
    assert store.reload() is False
    assert store.current is before


def test_added_file_goes_live(slots):
    store = CatalogStore(slots)
    write(slots, "hero/b.html", "<!--edge\npriority = 1\n-->\n<p>B</p>")
    assert store.reload() is True
    assert ids(store) == ["b", "a"]


def test_added_slot_folder_goes_live(slots):
    store = CatalogStore(slots)
    write(slots, "banner/x.html", "<!--edge -->\nx")
    store.reload()
    assert ids(store, "banner") == ["x"]


def test_changed_file_is_reloaded(slots):
    store = CatalogStore(slots)
    write(slots, "hero/a.html", "<!--edge\npriority = 7\n-->\n<p>A2</p>")
    store.reload()
    assert store.current.variant("hero", "a").priority == 7


def test_deleted_file_is_removed(slots):
    store = CatalogStore(slots)
    (slots / "hero" / "a.html").unlink()
    assert store.reload() is True
    assert ids(store) == []


def test_broken_edit_keeps_previous_version_serving(slots, caplog):
    store = CatalogStore(slots)
    good = store.current.variant("hero", "a")
    write(slots, "hero/a.html", "<!--edge\nprority = 7\n-->\n<p>broken</p>")
    with caplog.at_level(logging.WARNING, logger="edgeproxy.catalog"):
        store.reload()
    assert store.current.variant("hero", "a") is good
    assert [str(e) for e in store.current.errors] == [f"{slots}/hero/a.html:2: unknown key 'prority' (did you mean 'priority'?)"]
    assert f"{slots}/hero/a.html:2: unknown key 'prority' (did you mean 'priority'?) (the previous version keeps serving)" in caplog.messages


def test_fixing_a_broken_edit_serves_the_fix_and_clears_the_error(slots):
    store = CatalogStore(slots)
    write(slots, "hero/a.html", "<!--edge\nprority = 7\n-->\nx")
    store.reload()
    write(slots, "hero/a.html", "<!--edge\npriority = 7\n-->\n<p>fixed</p>")
    store.reload()
    assert store.current.errors == ()
    assert store.current.variant("hero", "a").priority == 7


def test_broken_file_stays_served_across_unrelated_reloads(slots):
    store = CatalogStore(slots)
    good = store.current.variant("hero", "a")
    write(slots, "hero/a.html", "<!--edge\nprority = 7\n-->\nx")
    store.reload()
    write(slots, "hero/b.html", "<!--edge -->\nb")
    store.reload()
    assert store.current.variant("hero", "a") is good
    assert len(store.current.errors) == 1


def test_new_broken_file_is_not_live(slots, caplog):
    store = CatalogStore(slots)
    write(slots, "hero/bad.html", "<!--edge\n-->\n<div>")
    with caplog.at_level(logging.WARNING, logger="edgeproxy.catalog"):
        store.reload()
    assert ids(store) == ["a"]
    assert f"{slots}/hero/bad.html:3: unclosed <div>: no </div> before the end of the fragment" in caplog.messages


def test_an_error_is_logged_once_not_on_every_reload(slots, caplog):
    store = CatalogStore(slots)
    write(slots, "hero/bad.html", "<!--edge\n-->\n<div>")
    with caplog.at_level(logging.WARNING, logger="edgeproxy.catalog"):
        store.reload()
        write(slots, "hero/c.html", "<!--edge -->\nc")
        store.reload()
    assert sum("bad.html" in m for m in caplog.messages) == 1


def test_experiment_edit_over_100_keeps_the_previous_weight(slots):
    write(slots, "hero/x1.html", '<!--edge\nexperiment = { name = "x", weight = 50 }\n-->\n1')
    write(slots, "hero/x2.html", '<!--edge\nexperiment = { name = "x", weight = 40 }\n-->\n2')
    store = CatalogStore(slots)
    write(slots, "hero/x2.html", '<!--edge\nexperiment = { name = "x", weight = 60 }\n-->\n2')
    store.reload()
    assert store.current.variant("hero", "x2").experiment.weight == 40
    assert "add up to 110" in str(store.current.errors[0])
    write(slots, "hero/b.html", "<!--edge -->\nb")  # an unrelated change
    store.reload()
    assert store.current.variant("hero", "x2").experiment.weight == 40


def test_unchanged_files_are_not_read_again(slots, monkeypatch):
    write(slots, "hero/b.html", "<!--edge -->\nb")
    store = CatalogStore(slots)
    read: list[str] = []
    real = load_module.parse_variant
    monkeypatch.setattr(load_module, "parse_variant", lambda path, *a, **kw: read.append(Path(path).name) or real(path, *a, **kw))
    write(slots, "hero/c.html", "<!--edge -->\nc")
    store.reload()
    assert read == ["c.html"]


def test_vanished_folder_keeps_the_current_catalog(slots, caplog):
    store = CatalogStore(slots)
    shutil.rmtree(slots)
    with caplog.at_level(logging.WARNING, logger="edgeproxy.catalog"):
        assert store.reload() is False
    assert ids(store) == ["a"]
    assert any("slots folder disappeared" in m for m in caplog.messages)


def test_folder_created_after_start_is_picked_up(tmp_path):
    store = CatalogStore(tmp_path / "slots")
    assert store.current.missing
    write(tmp_path / "slots", "hero/a.html", "<!--edge -->\na")
    assert store.reload() is True
    assert ids(store) == ["a"]


def test_readers_keep_their_catalog_while_it_is_replaced(slots):
    store = CatalogStore(slots)
    held = store.current
    write(slots, "hero/a.html", "<!--edge\npriority = 3\n-->\nA")
    store.reload()
    assert held.variant("hero", "a").priority == 0  # immutable: the old one is intact
    assert store.current.variant("hero", "a").priority == 3


async def test_watch_picks_up_a_change_within_two_seconds(slots):
    store = CatalogStore(slots)
    task = asyncio.create_task(watch(store, interval=0.05))
    try:
        write(slots, "hero/b.html", "<!--edge\npriority = 1\n-->\nb")
        for _ in range(40):
            await asyncio.sleep(0.05)
            if "b" in ids(store):
                break
        assert ids(store) == ["b", "a"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watch_survives_a_failing_reload(slots, monkeypatch, caplog):
    store = CatalogStore(slots)
    calls = []

    def boom(**kw):
        calls.append(1)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "reload", boom)
    task = asyncio.create_task(watch(store, interval=0.01))
    with caplog.at_level(logging.ERROR, logger="edgeproxy.catalog"):
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(calls) >= 3:
                break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(calls) >= 3
    assert any("reloading slots failed" in m for m in caplog.messages)
