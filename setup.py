"""Builds the native media core: every ``engine/_native/<name>.pyx`` becomes one extension.

Set ``VOICE_ENGINE_ANNOTATE=1`` to write Cython's HTML annotation next to each module, and
``VOICE_ENGINE_MODULES=resample,g711`` to rebuild only those while working on them.
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


def extensions() -> list[Extension]:
    only = {m for m in os.environ.get("VOICE_ENGINE_MODULES", "").split(",") if m}
    exts = []
    for pyx in sorted(NATIVE.glob("*.pyx")):
        name = pyx.stem
        if only and name not in only:
            continue
        flags = [] if sys.platform == "win32" else UNIX_FLAGS + PER_MODULE.get(name, [])
        exts.append(
            Extension(
                f"engine._native.{name}",
                [str(pyx)],
                include_dirs=[str(NATIVE)],
                extra_compile_args=flags,
            )
        )
    return exts


setup(
    ext_modules=cythonize(
        extensions(),
        annotate=os.environ.get("VOICE_ENGINE_ANNOTATE") == "1",
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
