"""The access log (CONTRACT §6, ``edgeproxy/accesslog.py``).

Unit rows for the pure parts (address truncation, levels, formats), then the
real proxy writing a real file, then ``edgeproxy serve`` writing to a pipe on
its stdout, as it does by default in a container.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import orjson
import pytest
from aiohttp import web

from edgeproxy.accesslog import AccessLog, hash_ip, level_of, truncate_ip
from edgeproxy.errors import SettingsError
from edgeproxy.headers import request_id
from edgeproxy.record import Metrics, Record
from edgeproxy.settings import build_settings
from proxyharness import BROWSER, raw_get, run_origin, run_proxy, write_variant

KEYS = ["ts", "level", "id", "method", "path", "status", "bytes", "ms", "stages", "variants", "cache",
        "fallback", "personalised", "aborted", "client"]


def read_lines(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def record(**fields) -> Record:
    rec = Record(method=fields.pop("method", "GET"), path=fields.pop("path", "/"))
    rec.status = fields.pop("status", 200)
    rec.request_id = fields.pop("request_id", "req-1")
    rec.client = fields.pop("client", "203.0.113.77")
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


# ---------------------------------------------------------------------------
# The client address is never written raw
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ip, expected",
    [
        ("203.0.113.77", "203.0.113.0"),
        ("10.1.2.3", "10.1.2.0"),
        ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),
        ("not-an-ip", None),
    ],
)
def test_truncate_ip_keeps_the_24_or_the_48(ip, expected):
    assert truncate_ip(ip) == expected


def test_hash_ip_is_keyed_and_stable():
    assert hash_ip("203.0.113.77", b"k1") == hash_ip("203.0.113.77", b"k1")
    assert hash_ip("203.0.113.77", b"k1") != hash_ip("203.0.113.77", b"k2")
    token = hash_ip("203.0.113.77", b"k1")
    assert len(token) == 16 and "203.0.113" not in token


# ---------------------------------------------------------------------------
# Levels
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields, level",
    [
        ({"status": 200}, 0),
        ({"status": 304}, 0),
        ({"status": 404}, 1),
        ({"status": 200, "fallback": "budget"}, 1),
        ({"status": 502}, 2),
        ({"status": 200, "aborted": True}, 2),
    ],
)
def test_level_of_a_request(fields, level):
    assert level_of(record(**fields)) == level


# ---------------------------------------------------------------------------
# The writer
# ---------------------------------------------------------------------------
def test_json_line_has_every_contract_field_in_order(tmp_path):
    out = tmp_path / "access.jsonl"
    log = AccessLog(str(out), fmt="json")
    rec = record(path="/c/trail", bytes_out=1234, cache="HIT", variants={"hero": "bf-uk", "banner": None})
    rec.add("classify", 0.0002)
    rec.add("rewrite", 0.0011)
    log.add(rec, 0.0042)
    log.close()
    (line,) = read_lines(out)
    assert list(line) == KEYS
    assert line["id"] == "req-1" and line["method"] == "GET" and line["path"] == "/c/trail"
    assert line["status"] == 200 and line["bytes"] == 1234 and line["ms"] == 4.2
    assert line["stages"] == {"classify": 0.2, "rewrite": 1.1}
    assert line["variants"] == {"hero": "bf-uk", "banner": None}
    assert line["cache"] == "HIT" and line["fallback"] is None and line["level"] == "info"
    assert line["client"] == "203.0.113.0"
    assert line["ts"].endswith("Z")


@pytest.mark.parametrize("mode, expected", [("truncate", "203.0.113.0"), ("off", None)])
def test_client_modes(tmp_path, mode, expected):
    out = tmp_path / "a.jsonl"
    log = AccessLog(str(out), fmt="json", client=mode)
    log.add(record(), 0.001)
    log.close()
    assert read_lines(out)[0]["client"] == expected


def test_client_hash_mode_writes_a_token_not_the_address(tmp_path):
    out = tmp_path / "a.jsonl"
    log = AccessLog(str(out), fmt="json", client="hash", key=b"secret")
    log.add(record(), 0.001)
    log.close()
    text = out.read_text()
    assert "203.0.113" not in text
    assert read_lines(out)[0]["client"] == hash_ip("203.0.113.77", b"secret")


def test_level_warning_keeps_only_4xx_5xx_and_fail_open(tmp_path):
    out = tmp_path / "a.jsonl"
    log = AccessLog(str(out), fmt="json", level="warning")
    for fields in ({"status": 200}, {"status": 404}, {"status": 200, "fallback": "budget"}, {"status": 503}):
        log.add(record(**fields), 0.001)
    log.close()
    assert [(l["status"], l["level"]) for l in read_lines(out)] == [(404, "warning"), (200, "warning"), (503, "error")]


def test_sampling_drops_info_lines_but_never_errors(tmp_path):
    out = tmp_path / "a.jsonl"
    log = AccessLog(str(out), fmt="json", sample=0.0)
    for _ in range(50):
        log.add(record(), 0.001)
    log.add(record(status=500), 0.001)
    log.close()
    assert [l["status"] for l in read_lines(out)] == [500]
    assert log.stats.sampled_out == 50


def test_a_full_queue_drops_the_newest_and_counts_them(tmp_path):
    out = tmp_path / "a.jsonl"
    log = AccessLog(str(out), fmt="json", max_buffer=3, flush_interval=60)
    for i in range(5):
        log.add(record(request_id=f"r{i}"), 0.001)
    log.close()
    assert [l["id"] for l in read_lines(out)] == ["r0", "r1", "r2"]
    assert log.stats.dropped == 2 and log.stats.written == 3


def test_text_format_is_one_readable_line_and_escapes_control_characters(tmp_path):
    out = tmp_path / "a.log"
    log = AccessLog(str(out), fmt="text")
    rec = record(path="/x\n{\"forged\": 1}", variants={"hero": "bf-uk"}, cache="MISS", fallback="budget", bytes_out=2048)
    log.add(rec, 0.0125)
    log.close()
    text = out.read_text()
    assert text.count("\n") == 1
    assert "GET /x\\n" in text and "200 2.0k 12.50ms" in text and "hero=bf-uk" in text
    assert "fallback=budget" in text and "id=req-1" in text and "client=203.0.113.0" in text and "WARNING" in text


def test_lines_written_after_logrotate_moved_the_file_go_to_a_new_file(tmp_path):
    out = tmp_path / "a.jsonl"
    log = AccessLog(str(out), fmt="json", flush_interval=60)
    log.add(record(request_id="before"), 0.001)
    log.flush()
    out.rename(tmp_path / "a.jsonl.1")
    log.add(record(request_id="after"), 0.001)
    log.close()
    assert [l["id"] for l in read_lines(tmp_path / "a.jsonl.1")] == ["before"]
    assert [l["id"] for l in read_lines(out)] == ["after"]


def test_the_writer_thread_flushes_without_close(tmp_path):
    out = tmp_path / "a.jsonl"
    log = AccessLog(str(out), fmt="json", flush_interval=0.02)
    log.add(record(), 0.001)
    deadline = time.monotonic() + 5
    while not out.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(read_lines(out)) == 1
    log.close()
    log.add(record(), 0.001)  # after close: dropped and counted, never raised
    assert log.stats.dropped == 1


def test_metrics_observe_hands_the_record_to_the_access_log(tmp_path):
    out = tmp_path / "a.jsonl"
    metrics = Metrics(access_log=AccessLog(str(out), fmt="json"))
    metrics.observe(record(status=201))
    metrics.close()
    assert read_lines(out)[0]["status"] == 201


# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, expected",
    [(None, "stdout"), (True, "stdout"), ("true", "stdout"), (False, "off"), ("off", "off"), ("stderr", "stderr"),
     ("/var/log/edgeproxy/access.jsonl", "/var/log/edgeproxy/access.jsonl")],
)
def test_access_log_setting(raw, expected):
    flags = {"upstream": "http://shop:8080"}
    if raw is not None:
        flags["access_log"] = raw
    assert build_settings(flags, env={}).access_log == expected


@pytest.mark.parametrize(
    "key, value, message",
    [("access_log_format", "xml", "expected one of auto, json, text"),
     ("access_log_level", "debug", "expected one of info, warning, error"),
     ("access_log_sample", "1.5", "expected a number from 0 to 1"),
     ("access_log_client", "raw", "expected one of truncate, hash, off")],
)
def test_bad_access_log_settings_name_the_key(key, value, message):
    with pytest.raises(SettingsError, match=message) as info:
        build_settings({"upstream": "http://shop:8080", key: value}, env={})
    assert key in str(info.value)


def test_access_log_settings_from_the_environment():
    s = build_settings({"upstream": "http://shop:8080"}, env={"EDGEPROXY_ACCESS_LOG": "off", "EDGEPROXY_ACCESS_LOG_SAMPLE": "0.1"})
    assert s.access_log == "off" and s.access_log_sample == 0.1


# ---------------------------------------------------------------------------
# The request id
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "given, kept",
    [
        ("0f8fad5b-d9cb-469f-a165-70867728950e", True),
        ("abc123", True),
        ("trace:00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("bad id with spaces", False),
        ('"}{"forged":1', False),
        ("", False),
        (None, False),
    ],
)
def test_request_id_is_kept_only_when_well_formed(given, kept):
    rid = request_id(given)
    assert (rid == given) is kept
    if not kept:
        assert len(rid) == 32 and int(rid, 16) >= 0


def test_made_request_ids_differ():
    assert len({request_id(None) for _ in range(1000)}) == 1000


# ---------------------------------------------------------------------------
# The real proxy
# ---------------------------------------------------------------------------
PAGE = b'<!doctype html><html><body><section data-edge-slot="hero">Default</section><div data-edge-slot="banner"></div></body></html>'


def origin_app(seen: list) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(body=PAGE, content_type="text/html")

    async def streamed(request: web.Request) -> web.StreamResponse:
        # The head and a first chunk, then ~1 MB after a pause: the head (and
        # Server-Timing) goes out long before the rewrite is done.
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        await resp.write(b"<!doctype html><html><body><p>start</p>")
        await asyncio.sleep(0.05)
        filler = b"<p>" + b"filler text " * 80 + b"</p>\n"
        for _ in range(1000):
            await resp.write(filler)
        await resp.write(b'<section data-edge-slot="hero">Default</section></body></html>')
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/streamed", streamed)
    return app


async def test_the_proxy_logs_one_line_per_request_with_its_facts(tmp_path):
    seen: list = []
    out = tmp_path / "access.jsonl"
    write_variant(tmp_path / "slots", "hero", "big-hero", "<h1>Big</h1>")
    async with run_origin(origin_app(seen)) as url, run_proxy(url, tmp_path / "slots", access_log=str(out)) as proxy:
        headers = {**BROWSER, "Cookie": "session=SECRET-COOKIE-VALUE", "X-Request-ID": "client-id-42"}
        resp = await raw_get(proxy.port, "/?utm_source=newsletter&token=SECRET-QUERY", headers)
        assert resp.status == 200 and b"<h1>Big</h1>" in resp.body
        resp2 = await raw_get(proxy.port, "/", {**BROWSER, "X-Request-ID": "not a valid id"})
    lines = read_lines(out)
    assert len(lines) == 2
    first, second = lines
    # The client's id is kept, forwarded to the origin and returned.
    assert first["id"] == "client-id-42" == resp.get("x-request-id")
    assert seen[0]["X-Request-ID"] == "client-id-42"
    # A malformed one is replaced, everywhere alike.
    assert second["id"] == resp2.get("x-request-id") == seen[1]["X-Request-ID"] != "not a valid id"
    assert first["method"] == "GET" and first["path"] == "/" and first["status"] == 200
    assert first["bytes"] == len(resp.body)
    assert first["variants"] == {"hero": "big-hero"} and first["personalised"] is True
    assert set(first["stages"]) >= {"classify", "choose", "origin", "rewrite"}
    assert first["client"] == "127.0.0.0"
    text = out.read_text()
    assert "SECRET-COOKIE-VALUE" not in text and "SECRET-QUERY" not in text and "127.0.0.1" not in text


async def test_the_log_has_the_full_rewrite_time_of_a_streamed_body(tmp_path):
    out = tmp_path / "access.jsonl"
    write_variant(tmp_path / "slots", "hero", "big-hero", "<h1>Big</h1>")
    async with run_origin(origin_app([])) as url, run_proxy(url, tmp_path / "slots", access_log=str(out)) as proxy:
        resp = await raw_get(proxy.port, "/streamed", BROWSER)
    assert b"<h1>Big</h1>" in resp.body
    header = dict(part.strip().split(";dur=") for part in resp.get("server-timing").split(",") if ";dur=" in part)
    (line,) = read_lines(out)
    # Server-Timing went out with the head, after the first chunk only; the
    # log line was written when the last byte had been rewritten.
    assert line["stages"]["rewrite"] > float(header["rewrite"])
    assert line["ms"] >= 50


async def test_access_log_off_writes_nothing(tmp_path):
    async with run_origin(origin_app([])) as url, run_proxy(url, tmp_path / "slots", access_log="off") as proxy:
        await raw_get(proxy.port, "/", BROWSER)
        assert proxy.state.metrics.access_log is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_edgeproxy_serve_logs_json_lines_to_stdout_by_default(tmp_path):
    """A pipe on stdout (the container convention): JSON, not the terminal format."""
    (tmp_path / "slots").mkdir()
    async with run_origin(origin_app([])) as url:
        port, admin = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEPROXY_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeproxy", "serve", "--upstream", url, "--port", str(port), "--admin-port", str(admin),
             "--slots", str(tmp_path / "slots")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )
        try:
            for _ in range(200):
                try:
                    resp = await raw_get(port, "/", BROWSER)
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("edgeproxy serve did not start")
            assert resp.status == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            stdout, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    lines = [orjson.loads(line) for line in stdout.splitlines()]
    assert len(lines) == 1 and list(lines[0]) == KEYS and lines[0]["status"] == 200


async def test_metrics_count_the_access_log_lines(tmp_path):
    import aiohttp

    out = tmp_path / "access.jsonl"
    async with run_origin(origin_app([])) as url, run_proxy(url, tmp_path / "slots", access_log=str(out)) as proxy:
        await raw_get(proxy.port, "/", BROWSER)
        proxy.state.metrics.access_log.flush()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{proxy.admin_port}/metrics") as resp:
                text = await resp.text()
    assert "edgeproxy_access_log_written 1.0" in text and "edgeproxy_access_log_dropped 0.0" in text


def test_close_does_not_hang_on_a_pipe_nobody_reads(tmp_path):
    """A stuck log shipper must not stop the proxy from shutting down."""
    read_end, write_end = os.pipe()
    try:
        log = AccessLog(f"/dev/fd/{write_end}", fmt="json", flush_interval=0.01)
        for i in range(20_000):  # far more than a pipe holds
            log.add(record(request_id=f"r{i}", path="/" + "x" * 100), 0.001)
        started = time.monotonic()
        log.close(timeout=0.5)
        assert time.monotonic() - started < 3
        assert log.stats.written + log.stats.dropped <= 20_000 and log.stats.written < 20_000
    finally:
        os.close(read_end)  # the stuck writer now gets EPIPE and ends
        os.close(write_end)


def test_reopen_asks_for_a_new_descriptor_by_path_at_the_next_flush(tmp_path):
    # SIGHUP (logrotate's postrotate): reopened even when the path still
    # names the same file (a rename is noticed without it).
    out = tmp_path / "a.jsonl"
    log = AccessLog(str(out), fmt="json", flush_interval=60)
    log.add(record(request_id="one"), 0.001)
    log.flush()
    fd = log._sink.fd
    log.reopen()
    log.add(record(request_id="two"), 0.001)
    log.flush()
    assert log._sink.fd is not None and not log._sink.reopen_requested
    log.close()
    assert [l["id"] for l in read_lines(out)] == ["one", "two"]
    assert fd is not None


def test_after_copytruncate_lines_start_at_the_top_of_the_file_not_after_a_hole(tmp_path):
    out = tmp_path / "a.jsonl"
    log = AccessLog(str(out), fmt="json", flush_interval=60)
    log.add(record(request_id="before"), 0.001)
    log.flush()
    (tmp_path / "a.jsonl.1").write_bytes(out.read_bytes())  # logrotate's copytruncate: copy ...
    os.truncate(out, 0)  # ... then truncate in place
    log.add(record(request_id="after"), 0.001)
    log.close()
    data = out.read_bytes()
    assert not data.startswith(b"\0")  # O_APPEND: no sparse hole where the old lines were
    assert [l["id"] for l in read_lines(out)] == ["after"]
