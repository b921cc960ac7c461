"""Builds the native media core: every ``engine/_native/<name>.pyx`` becomes one extension.

Set ``VOICE_ENGINE_ANNOTATE=1`` to write Cython's HTML annotation next to each module, and
``VOICE_ENGINE_MODULES=resample,g711`` to rebuild only those while working on them.

``VOICE_ENGINE_SANITIZE=address,undefined`` (with ``CC=clang``) builds for clang's
AddressSanitizer and UndefinedBehaviorSanitizer instead: unoptimised, with debug information
and frame pointers, and any undefined behaviour an error that stops the process. Python itself
is not instrumented, so such modules load only with the sanitizer runtime preloaded;
``tests/sanitize.py`` builds them in a copy of the tree and runs the native tests that way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

NATIVE = Path("engine") / "_native"

# -O3 lets GCC vectorise the FIR loops. -ffp-contract=off keeps a*b+c as two rounded
# operations on every target (no FMA), so every build matches the Python twin bit for bit.
UNIX_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno"]
PER_MODULE: dict[str, list[str]] = {}


def sanitizer_flags(sanitizers: list[str]) -> tuple[list[str], list[str]]:
    """Compile and link flags for a build under clang's ``-fsanitize=`` ``sanitizers``."""
    sanitize = "-fsanitize=" + ",".join(sanitizers)
    compile_args = [
        # -O0 leaves every load and store in place to be checked (and compiles five times
        # faster than -O1).
        "-O0", "-g", "-fno-omit-frame-pointer", sanitize, "-fno-sanitize-recover=undefined",
        # Python's own CFLAGS say -fwrapv, under which clang does not check signed overflow;
        # a wrapped int in the native code is a result the twin's Python ints never give.
        "-fno-wrapv",
        # That would also check pointer arithmetic, which -fwrapv makes wrap in the real
        # build, and Cython's argument parsing computes NULL + 0 on every call without
        # arguments. An access out of bounds is ASan's to catch.
        "-fno-sanitize=pointer-overflow",
        # glibc's checked memcpy and friends would bypass ASan's interceptors.
        "-U_FORTIFY_SOURCE",
        "-ffp-contract=off", "-fno-math-errno",
    ]
    return compile_args, [sanitize]


SANITIZE = [s for s in os.environ.get("VOICE_ENGINE_SANITIZE", "").split(",") if s]


def extensions() -> list[Extension]:
    only = {m for m in os.environ.get("VOICE_ENGINE_MODULES", "").split(",") if m}
    exts = []
    for pyx in sorted(NATIVE.glob("*.pyx")):
        name = pyx.stem
        if only and name not in only:
            continue
        flags, link = sanitizer_flags(SANITIZE) if SANITIZE else (UNIX_FLAGS, [])
        flags = [] if sys.platform == "win32" else flags + PER_MODULE.get(name, [])
        exts.append(
            Extension(
                f"engine._native.{name}",
                [str(pyx)],
                include_dirs=[str(NATIVE)],
                extra_compile_args=flags,
                extra_link_args=link,
            )
        )
    return exts


setup(
    ext_modules=cythonize(
        extensions(),
        annotate=os.environ.get("VOICE_ENGINE_ANNOTATE") == "1",
        # A sanitizer's report then names the line of the .pyx, not of the generated C.
        emit_linenums=bool(SANITIZE),
        compiler_directives={
            "language_level": 3,
            "embedsignature": True,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
