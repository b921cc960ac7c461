"""The native media core under clang's AddressSanitizer and UndefinedBehaviorSanitizer.

    python tests/sanitize.py [--keep] [--only] [PYTEST_ARGS...]

Copies the working tree (what git tracks, and new files it does not ignore) to a temporary
directory, so the in-place build is left alone; builds every extension there with clang and
``VOICE_ENGINE_SANITIZE=address,undefined`` (see setup.py); then runs pytest there, with this
Python and the ASan runtime preloaded into it, on the tests that run the native code: the
native/twin equivalence and property tests, real calls through the worker, and the fuzz
corpus replay (``tests/test_fuzz.py``; its coverage-guided runs skip here). Arguments go to
pytest after those tests (more paths, ``-k``, ``-x``); with ``--only`` they replace them.
``--keep`` leaves the copy and says where it is.

Exits with pytest's status, or 1 when a sanitizer reported anything (each report is printed).
A report stops the process that met it, and reports are written to files, so one met in a
child process fails the run even when the test that started the child let it pass.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "NATIVE_TESTS", "SANITIZERS", "MissingTool", "Tools", "build", "copy_tree", "find_tools",
    "main", "run_checked", "sanitizer_env",
]

ROOT = Path(__file__).resolve().parent.parent
SANITIZERS = "address,undefined"
NATIVE_TESTS = [
    "tests/test_audiosocket.py", "tests/test_audiosocket_client.py", "tests/test_b64.py",
    "tests/test_bad_callers.py", "tests/test_call.py", "tests/test_call_path.py",
    "tests/test_call_states.py", "tests/test_caller.py",
    "tests/test_clock.py", "tests/test_energy.py", "tests/test_fuzz.py", "tests/test_g711.py",
    "tests/test_impl.py",
    "tests/test_playout.py", "tests/test_playout_states.py", "tests/test_resample.py",
    "tests/test_uplink.py", "tests/test_wsframe.py",
]
# Build outputs and caches, for a tree that is not a git checkout.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", "*_cache",
    "*.so", "*.c", "*.html",
)


class MissingTool(Exception):
    """What the machine lacks for a sanitizer build; the message says how to get it."""


@dataclass(frozen=True, slots=True)
class Tools:
    """The compiler and the runtime its sanitized modules need."""

    cc: str
    runtime: Path
    symbolizer: Path | None


def _say(message: str) -> None:
    print(f"sanitize: {message}", file=sys.stderr, flush=True)


def find_tools() -> Tools:
    """clang (``$CC`` if that is clang, else clang-14 or clang), its ASan runtime and its
    symbolizer.

    With -fsanitize=address,undefined clang puts UBSan's handlers in the ASan runtime too, so
    that one library serves both.

    Raises:
        MissingTool: no clang, or no ASan runtime beside it.
    """
    names = [n for n in (os.environ.get("CC"), "clang-14", "clang") if n]
    cc = next((path for path in map(shutil.which, names) if path and _is_clang(path)), None)
    if cc is None:
        raise MissingTool(f"no clang on PATH (tried {', '.join(names)}): apt-get install clang-14")
    arch = platform.machine()
    for name in (f"libclang_rt.asan-{arch}.so", "libclang_rt.asan.so"):
        found = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True,
                               text=True).stdout.strip()
        if os.path.isabs(found) and os.path.exists(found):
            runtime = Path(found)
            break
    else:
        raise MissingTool(f"{cc} has no ASan runtime: apt-get install libclang-rt-14-dev")
    symbolizer = Path(os.path.realpath(cc)).parent / "llvm-symbolizer"
    return Tools(cc, runtime, symbolizer if symbolizer.exists() else None)


def _is_clang(cc: str) -> bool:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True)
    return "clang" in version.stdout


def copy_tree(source: Path, target: Path) -> None:
    """Copies the source files of the tree at ``source`` into ``target`` (no build outputs)."""
    listed = subprocess.run(
        ["git", "-C", str(source), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
    ) if shutil.which("git") else None
    if listed is None or listed.returncode != 0:
        shutil.copytree(source, target, ignore=_NOT_SOURCE)
        return
    for name in sorted(set(listed.stdout.decode().split("\0")) - {""}):
        path = source / name
        if path.is_file():  # a tracked file deleted in the work tree is left out
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / name)


def build(tree: Path, tools: Tools, scratch: Path) -> None:
    """Builds the sanitized extensions of ``tree`` into it, as a normal install builds them
    (pip, in an isolated environment with the pinned Cython), and checks they are.

    Raises:
        subprocess.CalledProcessError: the build failed (pip printed why).
        RuntimeError: an extension is missing or not instrumented.
    """
    config = tree / "setup.cfg"
    if not config.exists():  # compile the extensions side by side
        config.write_text(f"[build_ext]\nparallel = {len(os.sched_getaffinity(0))}\n")
    env = {**os.environ, "CC": tools.cc, "VOICE_ENGINE_SANITIZE": SANITIZERS}
    env.pop("VOICE_ENGINE_MODULES", None)
    wheels = scratch / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
         str(wheels), str(tree)],
        env=env, check=True,
    )
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith("engine/_native/") and name.endswith(".so"):
                archive.extract(name, tree)
    native = tree / "engine" / "_native"
    for pyx in sorted(native.glob("*.pyx")):
        built = list(native.glob(f"{pyx.stem}.*.so"))
        if not built:
            raise RuntimeError(f"the build made no extension for {pyx.name}")
        data = built[0].read_bytes()
        for marker in (b"__asan_init", b"__ubsan_handle_"):
            if marker not in data:
                raise RuntimeError(f"{built[0].name} is not instrumented ({marker.decode()})")


def sanitizer_env(tree: Path, tools: Tools, reports: Path) -> dict[str, str]:
    """The environment in which Python runs ``tree``'s sanitized extensions, reports to
    files under ``reports``."""
    env = dict(os.environ)
    env.pop("VOICE_ENGINE_IMPL", None)  # the native modules are what is under test
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    # Python is not instrumented: the runtime must be loaded before anything else.
    env["LD_PRELOAD"] = " ".join(filter(None, [str(tools.runtime), env.get("LD_PRELOAD")]))
    # Every object its own malloc block, with ASan's red zones around it: inside pymalloc's
    # arenas a write past the end of a small bytes object would land in its neighbour unseen.
    env["PYTHONMALLOC"] = "malloc"
    env["ASAN_OPTIONS"] = ":".join([
        # CPython keeps much of what it allocates until exit and frees little of it then
        # (interned strings, static types, module state): a leak check reports the
        # interpreter, not this code.
        "detect_leaks=0",
        # A report ends the process (with SIGABRT, so faulthandler prints the Python stack).
        "abort_on_error=1", "halt_on_error=1",
        # A refused huge allocation is a MemoryError, as it is without ASan.
        "allocator_may_return_null=1",
        # One file per process (report.<pid>): a report from a child process is seen even
        # when the test that started it let its failure pass. UBSan shares the setting.
        f"log_path={reports / 'report'}",
    ])
    env["UBSAN_OPTIONS"] = ":".join([
        "halt_on_error=1", "abort_on_error=1", "print_stacktrace=1",
        f"log_path={reports / 'report'}",
    ])
    if tools.symbolizer is not None:
        env["ASAN_SYMBOLIZER_PATH"] = str(tools.symbolizer)
    return env


def run_checked(command: list[str], cwd: Path, env: dict[str, str], reports: Path) -> int:
    """Runs ``command``; returns its status, or 1 if it passed but a sanitizer reported.

    Every report (a file per process under ``reports``) is printed to stderr.
    """
    reports.mkdir(parents=True, exist_ok=True)
    status = subprocess.run(command, cwd=cwd, env=env).returncode
    if status < 0:
        _say(f"{Path(command[0]).name} was killed by signal {-status}")
        status = 1
    found = sorted(reports.glob("*"))
    for report in found:
        print(f"\n==== {report.name}\n{report.read_text(errors='replace')}", file=sys.stderr)
    if found:
        _say(f"{len(found)} sanitizer report(s), above")
        return status or 1
    return status


def main(argv: list[str]) -> int:
    keep = only = False
    while argv and argv[0] in ("--keep", "--only"):
        keep |= argv[0] == "--keep"
        only |= argv[0] == "--only"
        argv = argv[1:]
    try:
        tools = find_tools()
    except MissingTool as missing:
        _say(str(missing))
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="voice-engine-sanitize-"))
    tree, reports = scratch / "tree", scratch / "reports"
    try:
        started = time.monotonic()
        copy_tree(ROOT, tree)
        try:
            build(tree, tools, scratch)
        except (subprocess.CalledProcessError, RuntimeError) as failed:
            _say(f"the sanitizer build failed: {failed}")
            return 1
        built = time.monotonic()
        _say(f"built with {tools.cc} in {built - started:.0f} s; runtime {tools.runtime}")
        tests = [] if only else NATIVE_TESTS
        env = sanitizer_env(tree, tools, reports)
        status = run_checked(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *tests, *argv],
            tree, env, reports,
        )
        _say(f"pytest ran in {time.monotonic() - built:.0f} s: "
             + ("clean" if status == 0 else f"FAILED ({status})"))
        return status
    finally:
        if keep:
            _say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
