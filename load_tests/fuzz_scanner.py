"""Fuzz the compiled scanner against the pure one, for a bounded time.

    python -m load_tests.fuzz_scanner [--seconds 60] [--engine atheris|random] [--module PATH]

Every input is cut into a document, a chunking and a slot size cap; the
compiled and the pure rewriter must give the same bytes and outcomes, and
the compiled primitives are called with arbitrary offsets (they must answer,
never crash).  A difference stops the run and writes the input to
``load_tests/results/fuzz-scanner-failure-*.bin``.

Engines:

* ``atheris`` (``pip install atheris``): libFuzzer-driven, guided by the
  coverage of the Python code around the compiled module, seeded from
  ``load_tests/corpus/scanner``;
* ``random`` (always there): splices and byte mutations of the corpus files
  with a seeded ``random.Random``, so a run can be repeated.

``--module PATH`` loads the compiled module from ``PATH`` instead of the
installed one: ``load_tests/asan_scanner.py`` uses it to run this fuzzer on a
build under AddressSanitizer.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus" / "scanner"
RESULTS = HERE / "results"

# Pieces spliced into inputs by the random engine (the constructs the
# scanner reads, markers in every context).
PIECES = [
    b"<div data-edge-slot=hero>", b"<ul data-edge-slot=grid>", b"</div>", b"</ul>", b"<li data-price=3 data-category=a>",
    b"</li>", b"<!--", b"-->", b"<!-->", b"<script>", b"</script>", b"<template>", b"</template>", b"<textarea>",
    b"<plaintext>", b"<![CDATA[", b"]]>", b"<svg>", b"<?x", b"</ ", b"\"", b"'", b"=", b"<", b">", b"/", b"data-edge-slot",
    b"<div title=\"", b"<DIV>", b"<img alt='<div>'>", b"<style>", b"<!DOCTYPE html>", b"\x00", b"\xff", b"\xc3\xa9",
]


def load_compiled(path: str | None):
    """Import ``edgeproxy.rewrite`` with the compiled module from ``path``."""
    if path:
        spec = importlib.util.spec_from_file_location("edgeproxy.rewrite._scanner", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules["edgeproxy.rewrite._scanner"] = mod
    from edgeproxy.rewrite import native

    if "compiled" not in native.available():
        raise SystemExit("the compiled scanner is not built: nothing to fuzz (pip install -e . with a C compiler)")
    return native


def make_target(native):
    from edgeproxy.model import Observe, ReplaceInner, SortChildren, SortKey
    from edgeproxy.rewrite import SlotRewriter

    from edgeproxy.rewrite import scanner as sc
    from edgeproxy.rewrite import sort as sort_mod

    edits = {
        "hero": ReplaceInner("<b>H</b>"),
        "seen": Observe(),
        "grid": SortChildren((SortKey("affinity"), SortKey("attr", attr="data-price")), affinity=("a", "b")),
        "pins": SortChildren((SortKey("pin", skus=("S2", "S1")), SortKey("attr", attr="data-price", descending=True))),
    }
    c = native._compiled

    def sorted_alike(doc: bytes, edit) -> None:
        """``sort_body`` against the pure ``sort_parts`` on ``doc`` as a
        container's body, when the pure walk reads it as one."""
        native.use("pure")
        try:
            _, els, spans = sort_mod._split(doc)
        except sort_mod.SortError:
            return
        parts = sort_mod.sort_parts(doc, 0, len(doc), edit, "utf-8", (els, spans))
        got = c.sort_body(doc, 0, len(doc), els, spans, sort_mod._specs(edit), True)
        if got is not None and got != (True if parts is None else b"".join(parts)):
            raise AssertionError(f"sort_body != sort_parts for {edit!r}")

    def rewrite(impl: str, doc: bytes, cuts: list[int], cap: int):
        native.use(impl)
        rw = SlotRewriter(edits, max_slot_bytes=cap)
        out, prev = [], 0
        for cut in [*cuts, len(doc)]:
            out.append(rw.feed(doc[prev:cut]))
            prev = max(prev, cut)
        out.append(rw.finish())
        return b"".join(out), rw.outcomes

    def target(data: bytes) -> None:
        if len(data) < 4:
            return
        head, doc = data[:4], data[4:]
        cap = (8, 64, 512, 1 << 20)[head[0] % 4]
        step = head[1] % 17 + 1
        cuts = list(range(head[2] % step, len(doc), step)) if head[1] & 0x80 else []
        a = rewrite("compiled", doc, cuts, cap)
        b = rewrite("pure", doc, cuts, cap)
        if a != b:
            raise AssertionError(f"compiled != pure (cap {cap}, cuts every {step}):\n{a!r}\n{b!r}")
        # The primitives with arbitrary offsets: an answer, never a crash.
        off = int.from_bytes(head[2:4], "little") % (len(doc) + 64) - 32
        for name in ("div", "template"):
            f = c.EndFinder(name, off)
            f.run(doc, bool(head[3] & 1), off)
        c.walk_children(doc, off, None)
        c.walk_children(doc, off, "ul")
        c.attr_values(doc, [(off, len(doc)), (0, off)], (b"data-price",), ("p",), bool(head[3] & 4))
        c.contexts_until(doc, off, off, len(doc), bool(head[3] & 2))
        c.next_slot(bytearray(doc), off, off, off, bool(head[3] & 2), edits)
        start = max(off, 0)
        if c.find_marker(doc, start) != doc.find(sc.MARKER, start):
            raise AssertionError("find_marker != bytes.find")
        m = doc.find(sc.MARKER)
        while m >= 0:
            if c.marker_value(doc, m) != sc.marker_value(doc, m):
                raise AssertionError(f"marker_value differs at {m}")
            m = doc.find(sc.MARKER, m + 1)
        sorted_alike(doc, edits["grid"])
        sorted_alike(doc, edits["pins"])
        try:  # extents that are not the walk's: refused, never read out of bounds
            c.sort_body(doc, off, len(doc) - off, [(off, off + 9), (3, 2)], [(off, len(doc) + 9), (-5, 3)],
                        sort_mod._specs(edits["grid"]), True)
        except ValueError:
            pass

    return target


def seeds() -> list[bytes]:
    return [p.read_bytes() for p in sorted(CORPUS.glob("*.bin"))] or [b"\x00\x00\x00\x00"]


def mutate(rnd: random.Random, corpus: list[bytes]) -> bytes:
    data = bytearray(rnd.choice(corpus))
    for _ in range(rnd.randint(1, 8)):
        op = rnd.random()
        at = rnd.randint(0, len(data))
        if op < 0.4:
            data[at:at] = rnd.choice(PIECES)
        elif op < 0.6 and data:
            del data[at : at + rnd.randint(1, 16)]
        elif op < 0.8 and data:
            data[min(at, len(data) - 1)] = rnd.randrange(256)
        else:
            other = rnd.choice(corpus)
            s = rnd.randint(0, len(other))
            data[at:at] = other[s : s + rnd.randint(1, 200)]
    return bytes(data[:65536])


def run_random(target, seconds: float, seed: int) -> int:
    rnd = random.Random(seed)
    corpus = seeds()
    deadline = time.monotonic() + seconds
    n = 0
    for data in corpus:
        check(target, data)
        n += 1
    while time.monotonic() < deadline:
        check(target, mutate(rnd, corpus))
        n += 1
    return n


def check(target, data: bytes) -> None:
    try:
        target(data)
    except Exception:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"fuzz-scanner-failure-{int(time.time())}.bin"
        path.write_bytes(data)
        print(f"failing input written to {path}", file=sys.stderr)
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to run (default 60)")
    ap.add_argument("--engine", choices=("atheris", "random"), help="default: atheris when installed, else random")
    ap.add_argument("--seed", type=int, default=1, help="the random engine's seed")
    ap.add_argument("--module", metavar="PATH", help="load the compiled module from this file (e.g. an ASan build)")
    args = ap.parse_args(argv)
    engine = args.engine
    if engine is None:
        engine = "atheris" if importlib.util.find_spec("atheris") else "random"

    if engine == "atheris":
        import atheris

        with atheris.instrument_imports():
            native = load_compiled(args.module)
            target = make_target(native)
        # libFuzzer takes its options as argv and exits at the time limit;
        # new inputs go to a scratch corpus, the repository's stays as it is.
        import tempfile

        scratch = tempfile.mkdtemp(prefix="fuzz-scanner-")
        fuzz_argv = [
            sys.argv[0], f"-max_total_time={int(args.seconds)}", "-max_len=65536", "-rss_limit_mb=4096",
            f"-seed={args.seed}", scratch, str(CORPUS),
        ]
        atheris.Setup(fuzz_argv, lambda data: check(target, data))
        atheris.Fuzz()
        return 0
    native = load_compiled(args.module)
    n = run_random(make_target(native), args.seconds, args.seed)
    print(
        f"fuzz_scanner: {n} inputs in {args.seconds:g} s, compiled == pure on all"
        f" (engine random, seed {args.seed}, {Path(native._compiled.__file__).name})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
