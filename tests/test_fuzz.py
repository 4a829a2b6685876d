"""Fuzzing as a habit (issue 10 item 9): the bounded, in-suite part.

``load_tests/fuzz.py`` is the long run (``python -m load_tests.fuzz
--minutes 5``, against ``edgeproxy serve`` in a child process).  Here the
same targets and checks run against the in-process proxy:

- the response checker itself, as a table;
- every seed and every kept crash in ``tests/data/fuzz`` (regression tests:
  each crash file once broke the proxy, ``crashes/NOTES.md`` says how);
- hypothesis-driven cases, mutated from the corpus or raw bytes (bounded,
  derandomised so CI is repeatable; shrunk to a minimal case on failure).

The proxy must never crash, hang, answer 500 for its own fault, log a
traceback other than a refused request's, or send anything but well-formed
HTTP/1.1 responses (a cut-off body followed by the close is allowed).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from load_tests.fuzz import CORPUS, RawOrigin, check_stream, healthy, load_corpus, mutate, run_case
from proxyharness import proxy_settings

# ---------------------------------------------------------------------------
# The checker
# ---------------------------------------------------------------------------
OK_PAGE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"


@pytest.mark.parametrize(
    "stream, broken",
    [
        # well-formed
        (OK_PAGE, None),
        (OK_PAGE + OK_PAGE, None),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", None),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK_PAGE, None),
        (b"HTTP/1.1 204 No Content\r\n\r\n" + OK_PAGE, None),
        (b"HTTP/1.1 200 OK\r\n\r\nclose-delimited body", None),
        (b"", None),  # closed without a word
        # cut off by the close: allowed
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhi", None),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe", None),
        (b"HTTP/1.1 200 O", None),
        # broken
        (b"HTTP/0.9 200 OK\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 4 No Content\r\n\r\n", "bad status line"),
        (b"garbage\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", "conflicting Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", "both Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiXX0\r\n\r\n", "chunk data not followed by CRLF"),
        (OK_PAGE + b"trailing junk", "not a response"),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "a 204 announcing a body"),
    ],
)
def test_check_stream(stream, broken):
    parsed = check_stream(stream)
    if broken is None:
        assert parsed.broken is None
    else:
        assert parsed.broken is not None and broken in parsed.broken


def test_a_head_response_has_no_body_but_a_request_that_only_looked_like_head_may():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    assert check_stream(head + OK_PAGE, head_first=True).statuses == [200, 200]
    assert check_stream(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad", head_first=True).broken is None


# ---------------------------------------------------------------------------
# A proxy on its own loop, shared by the cases of this module
# ---------------------------------------------------------------------------
class _Faults(logging.Handler):
    """Log records with a traceback, other than a refused request's."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[0] is not None:
            if record.exc_info[0].__module__.startswith("aiohttp.http_exceptions"):
                return
            self.records.append(record)


class Harness:
    def __init__(self, slots: Path) -> None:
        self.slots = slots
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.faults = _Faults()

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        from edgeproxy.server import ProxyServer

        self.thread.start()
        logging.getLogger().addHandler(self.faults)

        async def up():
            self.origin = RawOrigin()
            await self.origin.start()
            (self.slots / "hero").mkdir(parents=True, exist_ok=True)
            (self.slots / "hero" / "fuzz.html").write_text('<!--edge\npriority = 1\n-->\n<h1>Fuzzed</h1>\n')
            (self.slots / "grid").mkdir(exist_ok=True)
            (self.slots / "grid" / "cheap.toml").write_text('priority = 1\nsort = ["data-price"]\n')
            self.proxy = ProxyServer(proxy_settings(self.origin.url, self.slots, first_byte_timeout=2, idle_timeout=2,
                                                    cache_bytes=1 << 20, access_log="off"))
            await self.proxy.start()

        self.run(up())

    def stop(self) -> None:
        async def down():
            await self.proxy.stop()
            await self.origin.stop()

        try:
            self.run(down())
        finally:
            logging.getLogger().removeHandler(self.faults)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def case(self, target: str, data: bytes, index: int = 0):
        before = len(self.faults.records)
        finding = self.run(run_case(target, data, self.proxy.port, self.origin, index, quiet=0.1))
        if finding is None and len(self.faults.records) > before:
            record = self.faults.records[before]
            return f"traceback logged: {record.getMessage()} {record.exc_info[1]!r}"
        return None if finding is None else f"{finding.kind}: {finding.why}"


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("fuzz") / "slots")
    h.start()
    yield h
    assert h.run(healthy(h.proxy.port)), "the proxy stopped serving after the fuzz cases"
    h.stop()


def _files(target: str) -> list[Path]:
    files = sorted((CORPUS / f"{target}s").glob("*")) + sorted((CORPUS / "crashes" / target).glob("*.bin"))
    return [f for f in files if f.is_file()]


# ---------------------------------------------------------------------------
# The corpus: seeds and kept crashes
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", _files("request"), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_request_corpus(harness, path):
    assert harness.case("request", path.read_bytes()) is None


@pytest.mark.parametrize("path", _files("response"), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_response_corpus(harness, path, request):
    index = sum(map(ord, path.name))  # GET, compressed GET or HEAD, by file
    assert harness.case("response", path.read_bytes(), index) is None


def test_every_seed_is_a_case_the_proxy_answers_sensibly(harness):
    """The response seeds are well-formed: each gets its own status back, not a 502."""
    for i, data in enumerate(load_corpus("response")[:15]):
        if b"HTTP/1.1 5" in data[:12]:
            continue
        received = harness.run(run_case("response", data, harness.proxy.port, harness.origin, i * 3, quiet=0.1))
        assert received is None


# ---------------------------------------------------------------------------
# Hypothesis: mutations of the corpus, and raw bytes
# ---------------------------------------------------------------------------
REQUESTS = load_corpus("request")
RESPONSES = load_corpus("response")
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def mutated(corpus: list[bytes]):
    return st.builds(lambda base, seed: mutate(base, random.Random(seed), corpus), st.sampled_from(corpus), st.integers(0, 2**32))


@FUZZ
@given(data=st.one_of(mutated(REQUESTS), st.binary(max_size=512)))
def test_arbitrary_request_bytes(harness, data):
    assert harness.case("request", data) is None


@FUZZ
@given(data=st.one_of(mutated(RESPONSES), st.binary(max_size=512)), index=st.integers(0, 2))
def test_arbitrary_origin_response_bytes(harness, data, index):
    assert harness.case("response", data, index) is None
