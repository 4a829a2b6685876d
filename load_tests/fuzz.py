"""Fuzz the proxy on the wire: arbitrary request bytes into its traffic port,
arbitrary response bytes from its origin.

    python -m load_tests.fuzz --minutes 5                 # both targets, half the time each
    python -m load_tests.fuzz --minutes 1 --target request --seed 7
    python -m load_tests.fuzz --minutes 5 --save tests/data/fuzz/crashes

Implementation-agnostic: ``edgeproxy serve`` runs as a child process on an
ephemeral port (whatever HTTP layer it has), in front of ``RawOrigin``, a
raw-socket origin that either answers every request with a good page or,
for the origin target, writes the case's bytes as its response and closes.

The two targets:

``request``   the case's bytes are sent to the proxy as they are (then the
              write side is shut), the origin behaves.
``response``  a well-formed page request (GET or HEAD, with and without
              ``Accept-Encoding``) goes to the proxy; the origin answers it
              with the case's bytes and closes.

What counts as a finding (``check_stream`` and ``Fuzzer.run_case``):

- **crash**: the proxy process exits, or stops answering a good request;
- **hang**: the connection is neither answered nor closed within
  ``CASE_DEADLINE`` seconds (the proxy runs with 2 s origin timeouts);
- **broken response**: what comes back is not a sequence of well-formed
  HTTP/1.1 responses, each complete or cut off by the connection closing
  (a cut-off body is how a proxy says "the origin broke off": allowed);
- **internal error**: a 500 the origin did not send (the proxy's own fault),
  or a ``Traceback`` in the proxy's log.

Cases come from the seed corpus in ``tests/data/fuzz/{requests,responses}``
(and any earlier crashes in ``tests/data/fuzz/crashes``), mutated: byte
flips, interesting bytes, HTTP tokens inserted, ranges cut, repeated and
spliced.  ``--save DIR`` writes each finding as ``DIR/<target>/<sha1>.bin``;
``tests/test_fuzz.py`` replays every file there as a regression test.
Exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .procs import free_port

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "fuzz"
TARGETS = ("request", "response")
CASE_DEADLINE = 10.0  # seconds: origin timeouts are 2 s, so anything longer is a hang
HEALTH_EVERY = 25  # cases between checks that the proxy still serves a good request
MAX_CASE_BYTES = 256 * 1024

PAGE = (
    b'<!doctype html><html><head><meta charset="utf-8"><title>Fuzz</title></head><body>'
    b'<section data-edge-slot="hero">Default hero</section>'
    b'<ul data-edge-slot="grid"><li data-sku="A" data-price="2">a</li><li data-sku="B" data-price="1">b</li></ul>'
    b"</body></html>"
)
GOOD_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n\r\n" % len(PAGE)
) + PAGE
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
_REQUEST_KINDS = (("GET", ""), ("GET", "Accept-Encoding: gzip, br\r\n"), ("HEAD", ""))


def page_request(index: int) -> bytes:
    """The response target's request for case ``index``: GET, GET with
    compression, HEAD in turn, each for its own path (so the upstream cache,
    which stores what it may, never answers a case with another's copy)."""
    method, extra = _REQUEST_KINDS[index % len(_REQUEST_KINDS)]
    return (f"{method} /page/{index} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: {BROWSER_UA}\r\nAccept: text/html\r\n"
            f"{extra}Connection: close\r\n\r\n").encode()

# ---------------------------------------------------------------------------
# Is it a well-formed response stream?  (pure)
# ---------------------------------------------------------------------------
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: [\x09\x20-\x7e\x80-\xff]*)?\Z")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(;[^\r\n]*)?\Z")


@dataclass
class Parsed:
    """What ``check_stream`` found: the statuses, and why it is broken (None: it is not)."""

    statuses: list[int] = field(default_factory=list)
    broken: str | None = None
    truncated: bool = False  # the last response was cut off by the close


def check_stream(data: bytes, *, head_requests: int = 0, head_first: bool = False) -> Parsed:
    """Parse ``data`` (all a client received before the server closed) as
    HTTP/1.1 responses.  Each must be well-formed; the last may be cut off.

    ``head_first``: the first response answers a HEAD (no body whatever its
    headers say).  ``head_requests`` > 0: some requests were HEAD, so a
    response may have no body where its headers promise one; the next
    response then starts right after its head (tolerated, not demanded)."""
    out = Parsed()
    pos = 0
    n = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            out.truncated = True
            if not data.startswith(b"HTTP/1."[: len(data) - pos], pos):
                out.broken = f"bytes that are not a response at offset {pos}: {data[pos:pos + 40]!r}"
            return out
        lines = data[pos:end].split(b"\r\n")
        m = _STATUS_LINE.match(lines[0])
        if not m:
            out.broken = f"bad status line {lines[0][:80]!r}"
            return out
        status = int(m.group(1))
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN.match(name):
                out.broken = f"bad header line {line[:80]!r}"
                return out
            if any(c in value for c in b"\r\n\x00"):
                out.broken = f"control character in header {name!r}"
                return out
            headers.append((name.lower(), value.strip()))
        out.statuses.append(status)
        pos = end + 4
        lengths = {v for k, v in headers if k == b"content-length"}
        chunked = any(k == b"transfer-encoding" for k, _ in headers)
        if len(lengths) > 1:
            out.broken = f"conflicting Content-Length headers {sorted(lengths)!r}"
            return out
        if lengths and chunked:
            out.broken = "both Content-Length and Transfer-Encoding"
            return out
        if chunked and [v.lower() for k, v in headers if k == b"transfer-encoding"][-1].split(b",")[-1].strip() != b"chunked":
            out.broken = "Transfer-Encoding whose last coding is not chunked"
            return out
        may_be_head = (head_first and n == 0) or head_requests > 0
        n += 1
        if 100 <= status < 200 or status in (204, 304):
            if chunked or (lengths and lengths != {b"0"} and status != 304):
                out.broken = f"a {status} announcing a body"
                return out
            continue
        if may_be_head and (pos == len(data) or data.startswith(b"HTTP/1.", pos)):
            continue  # a HEAD's response: no body (a request that only looked like HEAD gets one: parsed below)
        if lengths:
            (length,) = lengths
            if not length.isdigit():
                out.broken = f"bad Content-Length {length!r}"
                return out
            size = int(length)
            if pos + size > len(data):
                out.truncated = True
                return out
            pos += size
            continue
        if chunked:
            while True:
                line_end = data.find(b"\r\n", pos)
                if line_end < 0:
                    out.truncated = True
                    return out
                cm = _CHUNK_SIZE.match(data[pos:line_end])
                if not cm:
                    out.broken = f"bad chunk size line {data[pos:line_end][:40]!r}"
                    return out
                size = int(cm.group(1), 16)
                pos = line_end + 2
                if size == 0:
                    trailer_end = data.find(b"\r\n\r\n", pos - 2)
                    if trailer_end < 0:
                        out.truncated = True
                        return out
                    pos = trailer_end + 4
                    break
                if pos + size + 2 > len(data):
                    out.truncated = True
                    return out
                if data[pos + size : pos + size + 2] != b"\r\n":
                    out.broken = "chunk data not followed by CRLF"
                    return out
                pos += size + 2
            continue
        return out  # close-delimited: the rest is its body
    return out


# ---------------------------------------------------------------------------
# The raw origin
# ---------------------------------------------------------------------------
class RawOrigin:
    """A raw-socket origin.  With ``script`` empty it answers each request
    head with ``GOOD_RESPONSE`` (keep-alive); a case pushes its bytes with
    ``answer_next(data)``: the next connection's first request gets exactly
    those bytes, then the connection closes."""

    def __init__(self) -> None:
        self._server: asyncio.AbstractServer | None = None
        self._next: list[bytes] = []
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer_next(self, data: bytes) -> None:
        self._next = [data]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._answer(reader, writer)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
                    return
                length = re.search(rb"(?im)^content-length:[ \t]*([0-9]+)", head)
                if length:
                    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                        await reader.readexactly(min(int(length.group(1)), 1 << 20))
                if self._next:
                    writer.write(self._next.pop())
                    await writer.drain()
                    return
                writer.write(GOOD_RESPONSE)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


# ---------------------------------------------------------------------------
# Talking to the proxy
# ---------------------------------------------------------------------------
async def exchange(port: int, data: bytes, *, deadline: float = CASE_DEADLINE, quiet: float = 0.3) -> tuple[bytes, bool]:
    """Send ``data`` and read until the proxy closes.  Returns (bytes
    received, hung).

    A complete response followed by 0.2 s of quiet is done (keep-alive).
    Otherwise, after ``quiet`` seconds without a byte the write side is shut
    (the request, if any, is all there is); hung means the proxy then neither
    answered nor closed within ``deadline``.  (Shutting the write side at
    once would not do: a proxy may take a half-close for a client gone away,
    as nginx and aiohttp do, and answer nothing.)"""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()
    shut = False
    started = time.monotonic()
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()
        while True:
            left = deadline - (time.monotonic() - started)
            if left <= 0:
                return bytes(received), True
            parsed = check_stream(bytes(received)) if received else None
            complete = parsed is not None and parsed.statuses and not parsed.truncated and not parsed.broken
            wait = min(left, 0.2 if complete else (left if shut else quiet))
            try:
                chunk = await asyncio.wait_for(reader.read(65536), wait)
            except asyncio.TimeoutError:
                if complete:
                    return bytes(received), False
                if not shut:
                    shut = True
                    with contextlib.suppress(ConnectionError, OSError):
                        if writer.can_write_eof():
                            writer.write_eof()
                continue
            except ConnectionError:
                return bytes(received), False
            if not chunk:
                return bytes(received), False
            received += chunk
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


@dataclass
class Finding:
    target: str
    kind: str  # crash, hang, broken, internal-error
    why: str
    data: bytes

    def name(self) -> str:
        return hashlib.sha1(self.data).hexdigest()[:16] + ".bin"


async def run_case(target: str, data: bytes, proxy_port: int, origin: RawOrigin, index: int = 0,
                   outcomes: collections.Counter | None = None, quiet: float = 0.3) -> Finding | None:
    """One case against a running proxy; the finding, if any (crash aside:
    the caller checks the process).  ``outcomes`` counts the first status
    (or "closed") of each case."""
    if target == "request":
        received, hung = await exchange(proxy_port, data, quiet=quiet)
        head_requests = len(re.findall(rb"(?:^|\n)HEAD ", data))
        head_first = data.startswith(b"HEAD ")
        origin_sent_500 = False
    else:
        request = page_request(index)
        origin.answer_next(data)
        received, hung = await exchange(proxy_port, request, quiet=quiet)
        head_requests = int(request.startswith(b"HEAD "))
        head_first = bool(head_requests)
        origin_sent_500 = b" 500" in data[:64]
    if hung:
        return Finding(target, "hang", f"no answer and no close within {CASE_DEADLINE:g}s (got {len(received)} bytes)", data)
    parsed = check_stream(received, head_requests=head_requests, head_first=head_first)
    if outcomes is not None:
        outcomes[str(parsed.statuses[0]) if parsed.statuses else "closed"] += 1
    if parsed.broken:
        return Finding(target, "broken", parsed.broken, data)
    if 500 in parsed.statuses and not origin_sent_500:
        return Finding(target, "internal-error", "the proxy answered 500", data)
    return None


async def healthy(port: int) -> bool:
    try:
        received, hung = await exchange(port, page_request(random.randrange(1 << 30) * 3), deadline=5)
    except OSError:
        return False
    return not hung and check_stream(received).statuses[:1] == [200]


# ---------------------------------------------------------------------------
# Mutations
# ---------------------------------------------------------------------------
TOKENS = (
    b"\r\n", b"\n", b"\r", b"\r\n\r\n", b": ", b":", b" ", b"\t", b"\x00", b"\xff", b",", b";",
    b"Content-Length: 0\r\n", b"Content-Length: 5\r\n", b"Content-Length: 99999999999999999999\r\n", b"Content-Length: -1\r\n",
    b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip, chunked\r\n", b"Transfer-Encoding: chunked, identity\r\n",
    b"Content-Encoding: gzip\r\n", b"Content-Encoding: br\r\n", b"Content-Encoding: deflate, gzip\r\n",
    b"Connection: close\r\n", b"Connection: keep-alive, Upgrade\r\n", b"Upgrade: websocket\r\n", b"Expect: 100-continue\r\n",
    b"Host: \r\n", b"Host: a\r\nHost: b\r\n", b"X-Forwarded-Host: evil\r\n", b"Cache-Control: max-age=60\r\n", b"Vary: *\r\n",
    b"Set-Cookie: a=b\r\n", b"Content-Type: text/html\r\n", b"Content-Type: text/html; charset=utf-16\r\n",
    b"0\r\n\r\n", b"ffffffffffffffff\r\n", b"5\r\nhello\r\n", b"1;ext=1\r\nx\r\n",
    b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.0 ", b"HTTP/2 ", b"GET / HTTP/1.1\r\n",
    b"HEAD / HTTP/1.1\r\n", b"POST /_edge/convert HTTP/1.1\r\n", b"CONNECT a:443 HTTP/1.1\r\n", b"OPTIONS * HTTP/1.1\r\n",
    b'<section data-edge-slot="hero">', b"</section>", b"<!--", b"<script>", b"%00", b"%0d%0a", b"/../",
)


def mutate(data: bytes, rng: random.Random, corpus: Sequence[bytes]) -> bytes:
    """One to four random edits of ``data``."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # an interesting byte
            buf[rng.randrange(len(buf))] = rng.choice(b"\x00\r\n :;,\t\x7f\xff0")
        elif op in (2, 3):  # an HTTP token
            buf[pos:pos] = rng.choice(TOKENS)
        elif op == 4 and buf:  # cut a range
            end = min(len(buf), pos + rng.randint(1, 64))
            del buf[pos:end]
        elif op == 5 and buf:  # repeat a range (header counts, sizes)
            start = rng.randrange(len(buf))
            piece = bytes(buf[start : start + rng.randint(1, 80)])
            buf[start:start] = piece * rng.choice((2, 3, 50, 500))
        elif op == 6 and corpus:  # splice with another seed
            other = rng.choice(corpus)
            cut = rng.randint(0, len(other))
            buf = buf[:pos] + bytearray(other[cut:])
        elif op == 7:  # truncate
            del buf[pos:]
        else:  # a long token
            buf[pos:pos] = bytes([rng.choice(b"aZ9-")]) * rng.choice((100, 8_000, 70_000))
    return bytes(buf[:MAX_CASE_BYTES])


def load_corpus(target: str, root: Path = CORPUS) -> list[bytes]:
    """The seeds of ``target`` and the crashes kept from earlier runs."""
    files = sorted((root / f"{target}s").glob("*")) + sorted((root / "crashes" / target).glob("*"))
    return [f.read_bytes() for f in files if f.is_file() and not f.name.startswith(".") and f.suffix != ".md"]


# ---------------------------------------------------------------------------
# The proxy under test, as a child process
# ---------------------------------------------------------------------------
class ProxyProcess:
    """``edgeproxy serve`` in front of ``upstream``, on spare ports, with
    short origin timeouts; its log in a temporary file."""

    def __init__(self, upstream: str, workdir: Path, extra: Sequence[str] = ()) -> None:
        self.upstream = upstream
        self.workdir = workdir
        self.extra = list(extra)
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "proxy.log"
        self._log_seen = 0
        self.refused_tracebacks = 0

    async def start(self) -> None:
        slots = self.workdir / "slots"
        (slots / "hero").mkdir(parents=True, exist_ok=True)
        (slots / "hero" / "fuzz.html").write_text('<!--edge\npriority = 1\n-->\n<h1>Fuzzed {{ city | default: "x" }}</h1>\n')
        (slots / "grid").mkdir(exist_ok=True)
        (slots / "grid" / "cheap.toml").write_text('priority = 1\nsort = ["data-price"]\n')
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEPROXY_")}
        env.update(EDGEPROXY_FIRST_BYTE_TIMEOUT="2", EDGEPROXY_IDLE_TIMEOUT="2", EDGEPROXY_CONNECT_TIMEOUT="2",
                   EDGEPROXY_ACCESS_LOG="off", EDGEPROXY_RELOAD_INTERVAL="60")
        argv = [sys.executable, "-m", "edgeproxy", "serve", "--upstream", self.upstream, "--port", str(self.port),
                "--admin-port", str(free_port()), "--slots", str(slots), *self.extra]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        for _ in range(300):
            if self.proc.poll() is not None:
                raise RuntimeError(f"edgeproxy serve exited at start ({self.proc.returncode}):\n{self.log.read_text(errors='replace')}")
            with contextlib.suppress(OSError):
                if await healthy(self.port):
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError("edgeproxy serve did not start within 15 s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def new_tracebacks(self) -> str | None:
        """Log text with a Traceback written since the last call, if any,
        other than the HTTP layer's report of a request it refused with a 400
        (with ``traffic_server = "aiohttp"``, aiohttp logs those at ERROR with
        a traceback: noise, counted in ``refused_tracebacks``, not a fault;
        the Protocol port logs none)."""
        try:
            raw = self.log.read_bytes()[self._log_seen :]
        except OSError:
            return None
        self._log_seen += len(raw)
        text = raw.decode("utf-8", "replace")
        if "Traceback" not in text:
            return None
        blocks = text.split("Traceback (most recent call last):")[1:]
        faults = [b for b in blocks if not re.search(r"^aiohttp\.http_exceptions\.\w+", b, re.M)]
        self.refused_tracebacks += len(blocks) - len(faults)
        return "Traceback (most recent call last):" + faults[0] if faults else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------
@dataclass
class Stats:
    cases: dict[str, int] = field(default_factory=lambda: {t: 0 for t in TARGETS})
    findings: list[Finding] = field(default_factory=list)
    restarts: int = 0
    outcomes: dict[str, collections.Counter] = field(default_factory=lambda: {t: collections.Counter() for t in TARGETS})
    refused_tracebacks: int = 0  # 400s the HTTP layer logged with a traceback (noise, not faults)


async def fuzz(minutes: float, targets: Sequence[str], seed: int, save: Path | None, proxy_args: Sequence[str] = (),
               log=print) -> Stats:
    rng = random.Random(seed)
    stats = Stats()
    origin = RawOrigin()
    await origin.start()
    with tempfile.TemporaryDirectory(prefix="edgeproxy-fuzz-") as tmp:
        proxy = ProxyProcess(origin.url, Path(tmp), proxy_args)
        await proxy.start()
        try:
            share = minutes * 60 / len(targets)
            for target in targets:
                corpus = load_corpus(target)
                if not corpus:
                    raise SystemExit(f"no seeds in {CORPUS / (target + 's')}")
                until = time.monotonic() + share
                log(f"fuzz: {target} target, {len(corpus)} seeds, {share:.0f} s")
                i = 0
                while time.monotonic() < until:
                    data = corpus[i] if i < len(corpus) else mutate(rng.choice(corpus), rng, corpus)
                    finding = await run_case(target, data, proxy.port, origin, i, stats.outcomes[target])
                    i += 1
                    stats.cases[target] += 1
                    if finding is None and not proxy.alive():
                        finding = Finding(target, "crash", f"the proxy exited ({proxy.proc.returncode})", data)
                    if finding is None and (trace := proxy.new_tracebacks()):
                        finding = Finding(target, "internal-error", "a Traceback in the proxy's log:\n" + trace[-2000:], data)
                    if finding is None and i % HEALTH_EVERY == 0 and not await healthy(proxy.port):
                        finding = Finding(target, "crash", "the proxy stopped serving a good request", data)
                    if finding is not None:
                        stats.findings.append(finding)
                        log(f"fuzz: FOUND {finding.kind} ({target}): {finding.why.splitlines()[0]}  case {finding.data[:120]!r}")
                        if save is not None:
                            folder = save / target
                            folder.mkdir(parents=True, exist_ok=True)
                            (folder / finding.name()).write_bytes(finding.data)
                        if not proxy.alive() or not await healthy(proxy.port):
                            stats.refused_tracebacks += proxy.refused_tracebacks
                            proxy.stop()
                            stats.restarts += 1
                            await proxy.start()
                seen = ", ".join(f"{k} x{n}" for k, n in stats.outcomes[target].most_common(8))
                log(f"fuzz: {target}: {stats.cases[target]} cases; first status: {seen}")
        finally:
            stats.refused_tracebacks += proxy.refused_tracebacks
            proxy.stop()
            await origin.stop()
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m load_tests.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=1.0, help="how long to run, all targets together (default 1)")
    ap.add_argument("--target", choices=(*TARGETS, "both"), default="both")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock; printed)")
    ap.add_argument("--save", type=Path, metavar="DIR", help="write findings as DIR/<target>/<sha1>.bin (e.g. tests/data/fuzz/crashes)")
    ap.add_argument("--edgeproxy-arg", action="append", default=[], metavar="ARG", help="extra argument for `edgeproxy serve` (repeatable)")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time())
    targets = TARGETS if args.target == "both" else (args.target,)
    print(f"fuzz: seed {seed}; {args.minutes:g} min over {', '.join(targets)}", flush=True)
    stats = asyncio.run(fuzz(args.minutes, targets, seed, args.save, args.edgeproxy_arg, log=lambda m: print(m, flush=True)))
    total = sum(stats.cases.values())
    print(f"fuzz: {total} cases ({', '.join(f'{t} {n}' for t, n in stats.cases.items())}), "
          f"{len(stats.findings)} findings, {stats.restarts} proxy restarts; "
          f"{stats.refused_tracebacks} refused requests logged with a traceback (log noise, not counted)")
    for f in stats.findings:
        print(f"  {f.kind:15} {f.target:9} {f.name()}  {f.why.splitlines()[0]}")
    return 1 if stats.findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
