"""One strict ``to_dict``/``from_dict`` for every configuration dataclass.

Configs are dataclasses validated in ``__post_init__``.  :func:`to_dict` turns one into
JSON-ready data (nested configs become dicts, tuples lists); :func:`from_dict` builds
one back, converting nested configs and refusing unknown keys, so a typo in a config
file or a stored run is an error rather than a silently ignored setting.
:func:`build` is :func:`from_dict` for user input: any validation error becomes a
:class:`~gzmorph.errors.ConfigError` naming the config.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, TypeVar

from gzmorph.errors import ConfigError

__all__ = ["to_dict", "from_dict", "build", "int_tuple", "Config"]

T = TypeVar("T")


def int_tuple(owner: str, name: str, value: Any) -> tuple[int, ...]:
    """A JSON list or tuple of integers as a tuple; anything else is an error naming ``owner.name``."""
    try:
        ok = not isinstance(value, (str, bytes)) and all(isinstance(v, (int, float)) and int(v) == v for v in value)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{owner}.{name} must be a sequence of integers, got {value!r}")
    return tuple(int(v) for v in value)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The fields of a config dataclass as JSON-ready data (recursively)."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _nested_class(cls: type, name: str) -> type | None:
    """The config dataclass a field holds, if any (for converting nested dicts)."""
    try:
        hint = typing.get_type_hints(cls).get(name)
    except (NameError, TypeError):  # annotations naming types only imported for checkers
        return None
    found = [c for c in (hint, *typing.get_args(hint)) if isinstance(c, type) and dataclasses.is_dataclass(c)]
    # A union of several configs (the model of a training run) is resolved by the config itself.
    return found[0] if len(found) == 1 else None


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build config ``cls`` from ``data``; unknown keys raise :class:`ConfigError`.

    Nested config fields given as dicts are built with :func:`from_dict` too.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__}: expected a mapping of settings, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(known)}")
    values = dict(data)
    for name, value in values.items():
        nested = _nested_class(cls, name) if isinstance(value, Mapping) else None
        if nested is not None:
            values[name] = from_dict(nested, value)
    return cls(**values)


def build(cls: type[T], data: Mapping[str, Any]) -> T:
    """:func:`from_dict` for user input: a failed validation becomes a :class:`ConfigError`."""
    try:
        return from_dict(cls, data)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from exc


class Config:
    """Mixin giving a config dataclass the strict :func:`to_dict` / :func:`from_dict`."""

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        return from_dict(cls, data)
