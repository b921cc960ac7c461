"""The fuzz targets: every seed and regression replayed (no atheris needed), the seeds checked
against what builds them, and a few seconds of coverage-guided fuzzing of each target."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz import HERE, TARGETS, make_input, merge_raw, split
from fuzz import seeds as seeds_module

ROOT = HERE.parent.parent
SHORT_RUN_SECONDS = 4


# A long run's corpus (a directory of TARGET/ folders), replayed too when named: under the
# sanitizer build, every input a campaign kept runs over the native code.
CORPUS = os.environ.get("VOICE_ENGINE_FUZZ_CORPUS")


def _inputs(kind: str, root: Path = HERE) -> list[tuple[str, Path]]:
    return [(target, path) for target in TARGETS
            for path in sorted((root / kind / target).glob("*")) if path.is_file()]


def _corpus() -> list[tuple[str, Path]]:
    """The named corpus's inputs; a name that gives none is an error, not a quiet pass."""
    if not CORPUS:
        return []
    root = Path(CORPUS)
    found = _inputs(".", root) if root.is_absolute() else []
    if not found:
        raise pytest.UsageError(f"VOICE_ENGINE_FUZZ_CORPUS={CORPUS}: no TARGET/ inputs there "
                                "(an absolute path to a directory of target folders)")
    return found


def test_every_target_has_seeds() -> None:
    assert {target for target, _ in _inputs("seeds")} == set(TARGETS)


@pytest.mark.parametrize(("target", "path"), _inputs("seeds") + _inputs("regressions")
                         + _corpus(),
                         ids=lambda v: v if isinstance(v, str) else v.name)
def test_replay(target: str, path: Path) -> None:
    importlib.import_module(f"fuzz.{target}").TestOneInput(path.read_bytes())


def test_the_committed_seeds_are_what_the_encoders_build() -> None:
    assert seeds_module.main(["--check"]) == 0, "run: python -m tests.fuzz.seeds"


def test_seeds_stay_small() -> None:
    assert sum(p.stat().st_size for _, p in _inputs("seeds")) < 200_000


def test_an_input_is_taken_apart_as_made() -> None:
    job = split(make_input(b"abcdefg", 0x15, [2, 0, 3]))
    assert (job.flags, job.stream) == (0x15, b"abcdefg")
    assert job.chunks == [b"ab", b"", b"cde", b"fg"]
    assert split(make_input(b"abc", 1, [0, 0])).chunks == [b"abc"]
    assert split(b"").chunks == [b""] and split(b"\x07").flags == 7
    assert merge_raw([b"a", b"b", (1, True, b"c"), b"d"]) == [b"ab", (1, True, b"c"), b"d"]


@pytest.mark.parametrize("target", TARGETS)
def test_a_short_coverage_guided_run_finds_nothing(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    if "libclang_rt.asan" in os.environ.get("LD_PRELOAD", ""):
        # tests/sanitize.py preloads ASan's runtime; libFuzzer inside atheris is not built
        # against it, so there the replay alone runs the targets over the native code.
        pytest.skip("no coverage-guided run under the sanitizer build; the replay runs")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", target, f"-max_total_time={SHORT_RUN_SECONDS}",
         "-seed=1", f"-artifact_prefix={tmp_path}/", str(tmp_path / "corpus"),
         str(HERE / "seeds" / target)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    crashes = [p.name for p in tmp_path.iterdir() if p.name != "corpus"]
    assert run.returncode == 0 and not crashes, run.stderr[-4000:]
    assert "Done" in run.stderr
