"""The implementation selector: native by default, twins on purpose, never a silent fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from engine import _impl
from engine.errors import ConfigError, NativeExtensionMissing


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_default_is_native() -> None:
    assert _impl.IMPL == "native" or os.environ.get("VOICE_ENGINE_IMPL")
    package = "engine._native" if _impl.IMPL == "native" else "engine._pure"
    for name in _impl.MODULES:
        assert getattr(_impl, name).__name__ == f"{package}.{name}"


def test_python_twins_on_purpose() -> None:
    out = _python(
        """
        from engine import _impl
        print(_impl.IMPL, *(getattr(_impl, m).__name__ for m in _impl.MODULES))
        """,
        VOICE_ENGINE_IMPL="python",
    )
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[0] == "python"
    assert all(w.startswith("engine._pure.") for w in words[1:])


def test_unknown_impl_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="VOICE_ENGINE_IMPL"):
        _impl.load("fortran", "resample")


def test_missing_extension_says_how_to_build() -> None:
    # A finder that hides the compiled modules, as on a checkout nobody built.
    out = _python(
        """
        import importlib.abc, sys
        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.startswith("engine._native."):
                    raise ImportError("no compiled module " + name)
                return None
        sys.meta_path.insert(0, Hide())
        import engine._impl
        """,
    )
    assert out.returncode != 0
    assert "NativeExtensionMissing" in out.stderr
    assert "pip install" in out.stderr and "VOICE_ENGINE_IMPL=python" in out.stderr


def test_missing_extension_error_fields() -> None:
    err = NativeExtensionMissing("resample", "No module named x")
    assert err.module == "resample"
    assert "engine._native.resample" in str(err)
