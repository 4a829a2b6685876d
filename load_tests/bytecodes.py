"""Python work per request, counted, not timed: bytecodes executed per request
and per function, for each kind of request the load test sends.

    python -m load_tests.bytecodes                      # every case, this tree
    python -m load_tests.bytecodes --cases asset,hit --top 25
    python -m load_tests.bytecodes --base /tmp/old-checkout   # the same cases on another tree, side by side

CPU time on a shared 2-core box moves by ±20 % from one minute to the next;
the number of bytecodes the interpreter runs for a request does not (the same
request gives the same count to within a fraction of a percent, whatever else
the machine does).  It is not CPU time (a bytecode that calls into C may cost
a hundred times another, and the kernel's share is not in it), so figures of
speed stay the load test's; this tool says *where the Python work is* and
whether a change removed some, exactly.

How: edgeproxy runs in a child process under ``load_tests/_tracer.py`` (a
``sys.settrace`` hook with opcode events, switched on by SIGUSR1 after a
warm-up and off by SIGUSR2); the harness sends the requests sequentially on
one keep-alive connection, with the headers the load test sends for that case
(a browser's, a crawler's, an image request's, a returning visitor's
cookies), to the load test's origin (``load_tests/origin.py``) and slots.
Only the event loop's thread is traced (the access log's writer thread is
not).  Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from .loadgen import DEFAULT_USER_AGENT
from .procs import Children, StartError, free_port, wait_http, wait_port
from .runner import ASSET_HEADERS, BOT_USER_AGENT, HOST, write_slots

ROOT = Path(__file__).resolve().parents[1]
BROWSER = [
    ("User-Agent", DEFAULT_USER_AGENT),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Encoding", "identity"),
    ("Accept-Language", "en-GB,en;q=0.9"),
    ("Sec-Fetch-Site", "none"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Sec-Fetch-Dest", "document"),
    ("Upgrade-Insecure-Requests", "1"),
]
#: case -> (path on the load test's origin, headers, keep the cookies the first response sets)
CASES: dict[str, tuple[str, list[tuple[str, str]], bool]] = {
    "page": ("/listing/120k/private", BROWSER, False),  # a new visitor, personalised, uncacheable
    "returning": ("/listing/120k/private", BROWSER, True),
    "hit": ("/listing/120k/public", BROWSER, False),  # the variant cache
    "nomarkers": ("/listing/120k/nomarkers", BROWSER, False),
    "bot": ("/listing/120k/private", [("User-Agent", BOT_USER_AGENT), ("Accept", "text/html"), ("Accept-Encoding", "identity")], False),
    "asset": ("/listing/120k/private", [*(h for h in BROWSER if h[0] not in ("Accept", "Sec-Fetch-Dest", "Sec-Fetch-Mode")), *ASSET_HEADERS], False),
}


def _label(filename: str, name: str, tree: Path) -> str:
    """``path:function``, the path relative to the checkout (so two trees'
    functions compare) or to site-packages / the standard library."""
    for marker in ("site-packages/", "/lib/python3"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    else:
        try:
            filename = str(Path(filename).resolve().relative_to(tree))
        except ValueError:
            filename = Path(filename).name if filename.startswith("/") else filename
    return f"{filename}:{name}"


def run_case(tree: Path, case: str, *, count: int, warmup: int, workdir: Path) -> dict:
    """Bytecodes per request of ``case`` on the edgeproxy in ``tree``."""
    path, headers, keep_cookies = CASES[case]
    out = workdir / f"ops-{case}-{abs(hash(str(tree)))}.json"
    (workdir / "logs").mkdir(exist_ok=True)
    children = Children(workdir / "logs")
    try:
        origin_port, port, admin = free_port(), free_port(), free_port()
        origin = children.spawn("origin", [sys.executable, "-m", "load_tests.origin", "--host", HOST, "--port", str(origin_port)], cwd=str(ROOT))
        slots = workdir / "slots"
        if not slots.exists():
            write_slots(slots)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEPROXY_")}
        env["PYTHONPATH"] = str(tree)
        env["EDGEPROXY_TRACE_OUT"] = str(out)
        # The tracer by path: with --base, load_tests of the other tree may lack it.
        argv = [sys.executable, str(Path(__file__).with_name("_tracer.py")), "serve", "--upstream", f"http://{HOST}:{origin_port}", "--host", HOST,
                "--port", str(port), "--admin-port", str(admin), "--slots", str(slots), "--access-log", "off"]
        # cwd outside both trees: the child imports edgeproxy from PYTHONPATH's first entry.
        child = children.spawn(f"edgeproxy-{case}", argv, env=env, cwd=str(workdir))
        wait_port(origin, HOST, origin_port)
        wait_port(child, HOST, port)
        wait_http(child, HOST, admin, "/readyz")
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        sent = list(headers)

        def go(how_many: int) -> None:
            nonlocal sent
            for _ in range(how_many):
                conn.putrequest("GET", path, skip_accept_encoding=True)
                for name, value in sent:
                    conn.putheader(name, value)
                conn.endheaders()
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"{case}: {path} answered {response.status}")
                if keep_cookies and not any(name == "Cookie" for name, _ in sent):
                    cookies = [v.split(";", 1)[0] for k, v in response.getheaders() if k.lower() == "set-cookie"]
                    if cookies:
                        sent = [*sent, ("Cookie", "; ".join(cookies))]

        go(warmup)
        os.kill(child.proc.pid, signal.SIGUSR1)
        time.sleep(0.2)
        go(count)
        os.kill(child.proc.pid, signal.SIGUSR2)
        for _ in range(100):
            if out.exists():
                break
            time.sleep(0.05)
        conn.close()
    finally:
        children.stop_all()
    if not out.exists():
        raise RuntimeError(f"{case}: the traced edgeproxy wrote no counts (see {workdir / 'logs'})")
    rows = json.loads(out.read_text())
    per_function: Counter = Counter()
    calls: Counter = Counter()
    for filename, name, ops, n in rows:
        label = _label(filename, name, tree.resolve())
        per_function[label] += ops / count
        calls[label] += n / count
    return {"case": case, "tree": str(tree), "count": count, "total": sum(per_function.values()), "functions": per_function, "calls": calls}


def _print(results: dict[str, dict], base: dict[str, dict] | None, top: int) -> None:
    print("bytecodes per request (sequential requests after a warm-up; the event loop's thread)")
    for case, res in results.items():
        line = f"  {case:10} {res['total']:8.0f}"
        if base:
            b = base[case]["total"]
            line += f"   base {b:8.0f}   {res['total'] / b:5.2f}x ({res['total'] - b:+.0f})"
        print(line)
    for case, res in results.items():
        print(f"\n== {case}: top {top} functions by bytecodes per request (calls per request)")
        if base:
            old = base[case]["functions"]
            names = sorted(set(res["functions"]) | set(old), key=lambda n: -abs(res["functions"].get(n, 0) - old.get(n, 0)))[:top]
            for name in names:
                new_ops, old_ops = res["functions"].get(name, 0.0), old.get(name, 0.0)
                print(f"  {new_ops - old_ops:+7.0f}  now {new_ops:6.0f}  base {old_ops:6.0f}  {name}")
        else:
            for name, ops in res["functions"].most_common(top):
                print(f"  {ops:7.0f}  ({res['calls'][name]:4.1f})  {name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m load_tests.bytecodes", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    ap.add_argument("--count", type=int, default=100, help="requests counted per case (default 100)")
    ap.add_argument("--warmup", type=int, default=40, help="requests before counting (default 40)")
    ap.add_argument("--top", type=int, default=15, help="functions listed per case (default 15)")
    ap.add_argument("--base", type=Path, help="another checkout of edgeproxy to compare with (its edgeproxy/ is imported)")
    ap.add_argument("--json", type=Path, help="also write the totals here")
    args = ap.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    with tempfile.TemporaryDirectory(prefix="edgeproxy-bytecodes-") as tmp:
        work = Path(tmp)
        try:
            results = {c: run_case(ROOT, c, count=args.count, warmup=args.warmup, workdir=work) for c in cases}
            base = {c: run_case(args.base.resolve(), c, count=args.count, warmup=args.warmup, workdir=work) for c in cases} if args.base else None
        except (StartError, RuntimeError, OSError) as exc:
            print(f"bytecodes: {exc}", file=sys.stderr)
            return 2
    _print(results, base, args.top)
    if args.json:
        args.json.write_text(json.dumps({c: {"total": r["total"], **({"base": base[c]["total"]} if base else {})} for c, r in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
