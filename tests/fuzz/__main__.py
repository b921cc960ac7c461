"""Runs one fuzz target under atheris: ``python -m tests.fuzz TARGET [libFuzzer args...]``.

The engine's Python modules, and the target's own, are imported instrumented, so coverage
comes from the twins. The arguments are libFuzzer's: corpus directories (the first one, made
if missing, gains the new inputs found), ``-max_total_time=SECONDS``, ``-runs=N``, ``-jobs=N``
and so on. Without a directory the corpus is ``tests/fuzz/corpus/TARGET`` (git-ignored),
then the target's committed seeds and regressions, which are only read. A crash writes
``crash-<sha1>`` in the working directory (``-artifact_prefix=DIR/`` elsewhere): that input,
under ``tests/fuzz/regressions/TARGET/``, becomes a regression test; given as the argument
instead of a directory, it is run once.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from . import HERE, TARGETS

__all__ = ["main"]


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz {{{','.join(TARGETS)}}} [libFuzzer args...]")
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: pip install -e '.[test]' (Linux x86_64 only)")
    target, args = argv[0], argv[1:]
    dirs = [a for a in args if not a.startswith("-")]
    if dirs:
        if not Path(dirs[0]).exists():  # a corpus libFuzzer writes to; a file is one input
            Path(dirs[0]).mkdir(parents=True)
    else:
        corpus = HERE / "corpus" / target
        corpus.mkdir(parents=True, exist_ok=True)
        args += [str(d) for d in (corpus, HERE / "seeds" / target, HERE / "regressions" / target)
                 if d.is_dir()]
    # The target module too: its own branches (which form of input, which outcome) guide.
    with atheris.instrument_imports(include=["engine", "tests"]):
        module = importlib.import_module(f"{__package__}.{target}")
    atheris.Setup([sys.argv[0], *args], module.TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv[1:])
