"""``EventLog``: the exposure and conversion logs of CONTRACT §7, on real files."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from pathlib import Path

import orjson
import pytest

from edgeproxy import events
from edgeproxy.events import CONVERSION_KEYS, EXPOSURE_KEYS, EventLog, iso_ms

TS = 1_795_766_102.123  # 2026-11-27T07:55:02.123Z


def expose(log: EventLog, visitor: str = "v1", *, ts: float = TS, arm: str = "control", **over) -> None:
    fields = dict(ts=ts, visitor=visitor, experiment="bf-hero", arm=arm, slot="hero", path="/",
                  device="mobile", country="GB", source="search")
    fields.update(over)
    log.exposure(**fields)


def read_lines(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), "the file ends mid-line"
    return [orjson.loads(line) for line in raw.splitlines()]


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "logs" / "exposures.jsonl", tmp_path / "logs" / "conversions.jsonl"


# ---------------------------------------------------------------------------
# Line format
# ---------------------------------------------------------------------------
async def test_exposure_lines_are_json_with_exactly_the_contract_keys_in_order(paths):
    log = EventLog(*paths)
    await log.start()
    expose(log, "v1", arm="black-friday")
    expose(log, "v2", device=None, country=None, source=None)
    await log.close()

    first, second = read_lines(paths[0])
    assert tuple(first) == EXPOSURE_KEYS
    assert first == {"ts": "2026-11-27T07:55:02.123Z", "visitor": "v1", "experiment": "bf-hero", "arm": "black-friday",
                     "slot": "hero", "path": "/", "device": "mobile", "country": "GB", "source": "search"}
    assert (second["device"], second["country"], second["source"]) == (None, None, None)


async def test_conversion_lines_carry_value_or_null_and_kind(paths):
    log = EventLog(*paths)
    await log.start()
    log.conversion(ts=TS, visitor="v1", path="/checkout/complete", value=59.9)
    log.conversion(ts=TS, visitor="v2", path="/edge/beacon", kind="beacon")
    log.conversion(ts=TS, visitor="v3", path="/checkout/complete", value=12)
    await log.close()

    lines = read_lines(paths[1])
    assert all(tuple(line) == CONVERSION_KEYS for line in lines)
    assert [(x["visitor"], x["value"], x["kind"]) for x in lines] == [
        ("v1", 59.9, "path"), ("v2", None, "beacon"), ("v3", 12.0, "path")]
    assert not paths[0].exists() or paths[0].read_bytes() == b""


@pytest.mark.parametrize(
    "ts, text",
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (TS, "2026-11-27T07:55:02.123Z"),
        # milliseconds round, and carry into the second
        (1.9996, "1970-01-01T00:00:02.000Z"),
        (1.0004, "1970-01-01T00:00:01.000Z"),
    ],
)
def test_timestamps_are_iso8601_utc_with_milliseconds(ts, text):
    assert iso_ms(ts) == text


# ---------------------------------------------------------------------------
# Buffering and lifecycle
# ---------------------------------------------------------------------------
async def test_nothing_is_written_on_the_request_path_and_close_flushes_everything(paths):
    log = EventLog(*paths, flush_interval=3600)
    await log.start()
    for i in range(10_000):
        expose(log, f"v{i}")
        log.conversion(ts=TS, visitor=f"v{i}", path="/checkout/complete")
    assert paths[0].read_bytes() == b""  # buffered, not written inline
    await log.close()

    assert len(read_lines(paths[0])) == 10_000
    assert len(read_lines(paths[1])) == 10_000
    assert (log.stats.exposures_written, log.stats.conversions_written, log.stats.dropped) == (10_000, 10_000, 0)


async def test_the_periodic_flush_writes_without_waiting_for_close(paths):
    log = EventLog(*paths, flush_interval=0.01)
    await log.start()
    expose(log)
    for _ in range(200):
        await asyncio.sleep(0.01)
        if paths[0].read_bytes():
            break
    assert len(read_lines(paths[0])) == 1
    await log.close()


async def test_start_creates_parent_folders_and_appends_to_an_existing_log(paths):
    paths[0].parent.mkdir(parents=True)
    paths[0].write_bytes(b'{"old":1}\n')
    async with EventLog(*paths) as log:
        expose(log)
    assert [line.get("old") for line in read_lines(paths[0])] == [1, None]


async def test_overflow_drops_the_newest_events_and_counts_them(paths, caplog):
    log = EventLog(*paths, flush_interval=3600, max_buffer=100)
    await log.start()
    for i in range(150):
        expose(log, f"v{i}")
    assert log.stats.dropped == 50
    with caplog.at_level(logging.WARNING, logger="edgeproxy.events"):
        log._report_period()
        log._report_period()  # nothing new: no second warning
    await log.close()

    assert [x["visitor"] for x in read_lines(paths[0])] == [f"v{i}" for i in range(100)]
    assert log.stats.written == 100
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1 and "dropped 50 events" in drops[0].getMessage()


async def test_events_after_close_are_dropped_and_counted(paths):
    log = EventLog(*paths)
    await log.start()
    await log.close()
    expose(log)
    log.conversion(ts=TS, visitor="v", path="/x")
    assert log.stats.dropped == 2
    await log.close()  # idempotent


async def test_a_disabled_log_ignores_its_events(tmp_path):
    log = EventLog(None, tmp_path / "conversions.jsonl")
    await log.start()
    expose(log)
    log.conversion(ts=TS, visitor="v", path="/x")
    await log.close()
    assert log.stats.dropped == 0 and log.stats.written == 1
    assert EventLog(None, None).enabled is False


async def test_start_twice_is_an_error_naming_the_step(paths):
    log = EventLog(*paths)
    await log.start()
    with pytest.raises(RuntimeError, match=r"start\(\) runs once"):
        await log.start()
    await log.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"flush_interval": 0}, "flush_interval=0"),
    ({"max_buffer": 0}, "max_buffer=0"),
])
def test_bad_limits_are_rejected_naming_the_value(paths, kwargs, message):
    with pytest.raises(ValueError, match=message):
        EventLog(*paths, **kwargs)


async def test_an_unserialisable_event_never_raises_and_is_dropped_alone(paths):
    log = EventLog(*paths)
    await log.start()
    expose(log, "v1")
    expose(log, "v2", path="\ud800")  # a lone surrogate: not valid UTF-8
    expose(log, "v3")
    await log.close()
    assert [x["visitor"] for x in read_lines(paths[0])] == ["v1", "v3"]
    assert log.stats.dropped == 1


# ---------------------------------------------------------------------------
# Concurrency, rotation and disk errors
# ---------------------------------------------------------------------------
async def test_concurrent_producers_and_two_writers_on_one_file_never_interleave_lines(paths):
    # Two EventLogs on one path stand for two --workers processes; many
    # tasks stand for concurrent requests; flushing runs all along.
    logs = [EventLog(paths[0], paths[1], flush_interval=0.001) for _ in range(2)]
    for log in logs:
        await log.start()
    long_path = "/p/" + "x" * 3000  # lines longer than a pipe buffer

    async def producer(n: int) -> None:
        for i in range(300):
            expose(logs[n % 2], f"p{n}-{i}", path=long_path)
            if i % 7 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(producer(n) for n in range(20)))
    for log in logs:
        await log.close()

    lines = read_lines(paths[0])  # every line parses
    assert sorted(x["visitor"] for x in lines) == sorted(f"p{n}-{i}" for n in range(20) for i in range(300))
    assert all(x["path"] == long_path for x in lines)


async def test_reopen_writes_to_a_fresh_file_after_logrotate_moved_it(paths):
    log = EventLog(*paths)
    await log.start()
    expose(log, "before")
    await log.flush()
    rotated = paths[0].with_suffix(".jsonl.1")
    paths[0].rename(rotated)
    log.reopen()
    expose(log, "after")
    await log.close()
    assert [x["visitor"] for x in read_lines(rotated)] == ["before"]
    assert [x["visitor"] for x in read_lines(paths[0])] == ["after"]


async def test_a_disk_error_keeps_the_events_for_retry_and_a_torn_line_stands_alone(paths, monkeypatch, caplog):
    log = EventLog(*paths, flush_interval=3600, max_buffer=3)
    await log.start()
    real_write = os.write
    # The first flush: a short write of 30 bytes, then ENOSPC; the second
    # flush: ENOSPC at once; then the disk has room again.
    script = iter(["short", "fail", "fail"])

    def flaky_write(fd, data):
        step = next(script, None)
        if step == "short":
            return real_write(fd, bytes(data[:30]))
        if step == "fail":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(events.os, "write", flaky_write)
    for i in range(3):
        expose(log, f"v{i}")
    with caplog.at_level(logging.ERROR, logger="edgeproxy.events"):
        await log.flush()  # tears the first line
    assert log.stats.write_errors == 1 and log.stats.written == 0
    expose(log, "v3")  # buffer is full with the retried batch: dropped
    assert log.stats.dropped == 1
    await log.flush()  # fails again, writes nothing
    await log.close()  # succeeds

    raw = paths[0].read_bytes().splitlines()
    assert raw[0] == raw[1][:30]  # the torn fragment, alone on its own line
    assert [orjson.loads(x)["visitor"] for x in raw[1:]] == ["v0", "v1", "v2"]
    assert log.stats.written == 3 and log.stats.write_errors == 2
    assert any("write failed" in r.getMessage() for r in caplog.records)



async def test_a_disk_error_mid_batch_retries_exactly_the_unwritten_events(paths, monkeypatch):
    monkeypatch.setattr(events, "WRITE_CHUNK", 2)  # v0 v1 | bad v3 | v4: three writes
    log = EventLog(*paths, flush_interval=3600)
    await log.start()
    real_write = os.write
    calls = []

    def second_write_fails(fd, data):
        calls.append(bytes(data))
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        return real_write(fd, data)

    monkeypatch.setattr(events.os, "write", second_write_fails)
    for i in range(5):
        expose(log, f"v{i}", path="\ud800" if i == 2 else "/")
    await log.flush()
    assert (log.stats.written, log.stats.dropped, log.stats.write_errors) == (2, 1, 1)  # v2 cannot be written at all
    await log.close()
    assert [x["visitor"] for x in read_lines(paths[0])] == ["v0", "v1", "v3", "v4"]
    assert (log.stats.written, log.stats.dropped) == (4, 1)


def slow_disk(monkeypatch, seconds: float) -> None:
    real_write = os.write

    def write(fd, data):
        time.sleep(seconds)  # in the worker thread
        return real_write(fd, data)

    monkeypatch.setattr(events.os, "write", write)


async def test_a_slow_disk_never_blocks_the_event_loop(paths, monkeypatch):
    slow_disk(monkeypatch, 0.3)
    log = EventLog(*paths, flush_interval=0.01)
    await log.start()
    expose(log)
    await asyncio.sleep(0.05)  # the flusher is now inside the slow write
    worst = 0.0
    for _ in range(20):
        t = time.perf_counter()
        expose(log)
        await asyncio.sleep(0)
        worst = max(worst, time.perf_counter() - t)
    assert worst < 0.15  # a blocking write would take 0.3 s
    await log.close()
    assert len(read_lines(paths[0])) == 21


async def test_close_during_a_slow_periodic_write_still_writes_everything(paths, monkeypatch):
    # Regression: close() used to cancel the flusher mid-write and close the
    # file under the worker thread, losing that batch.
    slow_disk(monkeypatch, 0.1)
    log = EventLog(*paths, flush_interval=0.001)
    await log.start()
    for i in range(50):
        expose(log, f"v{i}")
        await asyncio.sleep(0.002)
    await log.close()
    assert [x["visitor"] for x in read_lines(paths[0])] == [f"v{i}" for i in range(50)]
    assert log.stats.written == 50 and log.stats.dropped == 0
