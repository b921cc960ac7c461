"""Chooses, once at import, the native media core or its plain-Python twins.

The rest of the engine imports the media modules from here and nowhere else::

    from engine._impl import audiosocket, b64, clockpass, g711, playout, resample, uplink

``VOICE_ENGINE_IMPL=python`` selects the twins on purpose; anything else means native, and a
missing extension is an error that says how to build it (there is no silent fallback).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from engine.errors import ConfigError, NativeExtensionMissing

__all__ = [
    "IMPL", "MODULES", "audiosocket", "b64", "clockpass", "energy", "g711", "load", "playout",
    "resample", "timerfd", "uplink", "wsframe",
]

MODULES = (
    "audiosocket", "b64", "clockpass", "energy", "g711", "playout", "resample", "timerfd",
    "uplink", "wsframe",
)
_PACKAGES = {"native": "engine._native", "python": "engine._pure"}


def load(impl: str, name: str) -> ModuleType:
    """Imports media module ``name`` from implementation ``impl`` ("native" or "python").

    Raises:
        ConfigError: ``impl`` is neither.
        NativeExtensionMissing: the native module is not compiled.
    """
    try:
        package = _PACKAGES[impl]
    except KeyError:
        raise ConfigError(f"VOICE_ENGINE_IMPL must be 'native' or 'python', not {impl!r}") from None
    try:
        return importlib.import_module(f"{package}.{name}")
    except ImportError as exc:
        if impl == "native":
            raise NativeExtensionMissing(name, str(exc)) from exc
        raise


IMPL = os.environ.get("VOICE_ENGINE_IMPL", "native").strip().lower() or "native"

audiosocket = load(IMPL, "audiosocket")
b64 = load(IMPL, "b64")
clockpass = load(IMPL, "clockpass")
energy = load(IMPL, "energy")
g711 = load(IMPL, "g711")
playout = load(IMPL, "playout")
resample = load(IMPL, "resample")
timerfd = load(IMPL, "timerfd")
uplink = load(IMPL, "uplink")
wsframe = load(IMPL, "wsframe")
