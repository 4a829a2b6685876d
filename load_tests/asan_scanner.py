"""Build the compiled scanner under AddressSanitizer and fuzz it, once.

    python -m load_tests.asan_scanner [--seconds 60]

Cythonizes ``edgeproxy/rewrite/_scanner.pyx`` and compiles it with
``-fsanitize=address`` (gcc or clang, whichever ``CC`` / the Python build
uses) into a scratch directory, then runs ``load_tests.fuzz_scanner``
(random engine: libFuzzer's own instrumentation does not mix with a
preloaded ASan runtime) on that build with the ASan runtime preloaded.  Any
out-of-bounds read or write aborts with ASan's report and a non-zero exit.
Needs a C compiler with libasan and Cython; exits 77 (skipped) without them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYX = ROOT / "edgeproxy" / "rewrite" / "_scanner.pyx"
SKIP = 77


def build(out: Path) -> Path:
    """``_scanner`` built with ASan in ``out``; the path of the .so."""
    c_file = out / "_scanner.c"
    subprocess.run(
        [sys.executable, "-m", "cython", "-3", "--module-name", "edgeproxy.rewrite._scanner", str(PYX), "-o", str(c_file)],
        check=True,
    )
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC").split()[0]
    so = out / ("_scanner" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address",
         f"-I{sysconfig.get_paths()['include']}", str(c_file), "-o", str(so)],
        check=True,
    )
    return so


def asan_runtime(cc: str) -> str | None:
    path = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return path if path and os.path.isabs(path) and os.path.exists(path) else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz the ASan build (default 60)")
    args = ap.parse_args(argv)
    cc = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        print(f"asan_scanner: no C compiler ({cc}): skipped", file=sys.stderr)
        return SKIP
    runtime = asan_runtime(cc)
    if runtime is None:
        print(f"asan_scanner: {cc} has no libasan: skipped", file=sys.stderr)
        return SKIP
    try:
        import Cython  # noqa: F401
    except ImportError:
        print("asan_scanner: Cython is not installed (pip install cython): skipped", file=sys.stderr)
        return SKIP
    with tempfile.TemporaryDirectory(prefix="asan-scanner-") as tmp:
        so = build(Path(tmp))
        env = {
            **os.environ,
            "LD_PRELOAD": runtime,
            # CPython's allocator is not instrumented; leaks at exit are the
            # interpreter's, not the scanner's.
            "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:halt_on_error=1",
            "PYTHONMALLOC": "malloc",
        }
        cmd = [sys.executable, "-m", "load_tests.fuzz_scanner", "--engine", "random", "--seconds", str(args.seconds), "--module", str(so)]
        print(f"asan_scanner: {so.name} built with -fsanitize=address; fuzzing for {args.seconds:g} s", flush=True)
        return subprocess.run(cmd, env=env, cwd=ROOT).returncode


if __name__ == "__main__":
    raise SystemExit(main())
