"""Checks Realtime events against the OpenAI SDK's pydantic models, per dialect.

The SDK's unions are rebuilt as discriminated unions (one model tried per ``type``) and wrapped
in a :class:`pydantic.TypeAdapter`. The SDK models accept unknown keys, and a GA-shaped
``session.update`` also passes as beta, so keys the model does not declare (``model_extra``)
are reported too. Without the ``openai`` package installed, :func:`sdk_available` is False and
the simulator runs without validation.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Iterable
from typing import Any

__all__ = ["EventValidator", "sdk_available", "shared_validator", "unknown_keys"]


def sdk_available() -> bool:
    """Whether the OpenAI SDK (and so validation) is importable."""
    try:
        import openai.types.realtime  # noqa: F401
    except ImportError:
        return False
    return True


def _union_adapter(sdk_union: Any) -> Any:
    import pydantic

    union = typing.get_args(sdk_union)[0]  # strip the SDK's own Annotated metadata
    members = tuple(typing.get_args(union))
    union_type: Any = typing.Union[members]  # noqa: UP007
    annotated = typing.Annotated[union_type, pydantic.Field(discriminator="type")]
    return pydantic.TypeAdapter(annotated)


def _sdk_union(dialect: str, side: str) -> Any:
    import importlib

    package = "openai.types.realtime" if dialect == "ga" else "openai.types.beta.realtime"
    return getattr(importlib.import_module(package), f"Realtime{side.capitalize()}Event")


def unknown_keys(model: Any, path: str = "") -> list[str]:
    """Dotted paths of every key a parsed SDK model did not declare, at any depth."""
    import pydantic

    found: list[str] = []
    if isinstance(model, pydantic.BaseModel):
        for key in model.model_extra or {}:
            found.append(f"{path}{key}")
        for name in type(model).model_fields:
            found.extend(unknown_keys(getattr(model, name), f"{path}{name}."))
    elif isinstance(model, list | tuple):
        for i, item in enumerate(model):
            found.extend(unknown_keys(item, f"{path[:-1]}[{i}]."))
    elif isinstance(model, dict):
        for key, value in model.items():
            found.extend(unknown_keys(value, f"{path}{key}."))
    return found


class EventValidator:
    """Validates decoded events of one dialect and side ("client" or "server").

    Build one per dialect and side and share it: building the adapter takes a while.
    """

    def __init__(self, dialect: str, side: str, allowed_extra: Iterable[str] = ()) -> None:
        self.dialect = dialect
        self.side = side
        self._adapter = _union_adapter(_sdk_union(dialect, side))
        self._allowed = frozenset(allowed_extra)

    def problem(self, event: Any) -> str | None:
        """Why ``event`` (a decoded JSON object) is invalid, or None if it is valid."""
        import pydantic

        try:
            model = self._adapter.validate_python(event)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return f"{first['msg']} at {where or 'top level'} ({exc.error_count()} error(s))"
        extra = [k for k in unknown_keys(model) if k not in self._allowed]
        if extra:
            return "unknown parameter(s): " + ", ".join(extra)
        return None


@functools.lru_cache(maxsize=8)
def shared_validator(dialect: str, side: str) -> EventValidator:
    """The process-wide :class:`EventValidator` for ``dialect`` and ``side``."""
    return EventValidator(dialect, side)
