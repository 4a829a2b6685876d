"""Build the optional compiled scanner (``edgeproxy/rewrite/_scanner.pyx``).

Everything else is in pyproject.toml.  The extension is optional: without a
C compiler (or without Cython, or with ``EDGEPROXY_NO_EXTENSIONS=1`` at build
time) the install prints a warning and goes on, and ``edgeproxy.rewrite.native``
runs the pure-Python scanner, which gives the same bytes, slower.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

PYX = "edgeproxy/rewrite/_scanner.pyx"


def warn(what: str) -> None:
    bar = "*" * 75
    print(f"\n{bar}\nWARNING: {what}\nedgeproxy will use its pure-Python scanner (same output, slower).\n{bar}\n", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """``build_ext`` that warns instead of failing the install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers, ...
            warn(f"the compiled scanner could not be built ({exc})")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            warn(f"the compiled scanner could not be built ({exc})")


def extensions():
    if os.environ.get("EDGEPROXY_NO_EXTENSIONS", "") not in ("", "0"):
        warn("EDGEPROXY_NO_EXTENSIONS is set: not building the compiled scanner")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        warn("Cython is not installed: not building the compiled scanner")
        return []
    ext = Extension("edgeproxy.rewrite._scanner", [PYX], extra_compile_args=["-O2"])
    try:
        return cythonize([ext], compiler_directives={"language_level": 3}, quiet=True)
    except Exception as exc:
        warn(f"Cython could not translate {PYX} ({exc})")
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
