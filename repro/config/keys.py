"""The key machinery: a config field with type and help, validated on construction.

Frozen dataclasses whose fields are declared with ``key(...)``: the type annotation is the type a
value must have, the metadata carries the help text and whether the key is part of a run's
identity. ``_Section.__post_init__`` coerces and checks every field, so no half-valid config can
exist; ``parse_value`` turns command-line text into the declared type.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import field


class ConfigError(ValueError):
    """A bad key or value; the message is one line naming the key and what is allowed."""


def key(default, help: str, *, identity: bool = True, choices: tuple = (), hashed_at_default: bool = True, **kw):
    """A config field with its help text (read by --help and by the docs).

    identity=False: the value does not change what the run computes (paths, log destinations,
    worker counts), so it is left out of the hash and may differ when a run is resumed.
    hashed_at_default=False: an identity key added after runs existed. It joins the hash only when
    set to something other than its default, so adding it renames no existing run folder (at the
    default the run computes what it computed before the key existed).
    """
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed; use a tuple")
    return field(default=default, metadata={"help": help, "identity": identity, "choices": choices,
                                            "hashed_at_default": hashed_at_default, **kw})


# ----------------------------------------------------------------------------- validation helpers
def check(cond: bool, name: str, msg: str, value) -> None:
    if not cond:
        raise ConfigError(f"{name}: {msg}, got {value!r}")


class _Section:
    """Type-checks every field on construction (frozen dataclasses cannot be half-valid)."""

    _prefix = ""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            name = f"{self._prefix}{f.name}"
            value = getattr(self, f.name)
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                if not isinstance(value, tp):
                    raise ConfigError(f"{name}: expected a {tp.__name__}, got {type(value).__name__}")
                continue
            object.__setattr__(self, f.name, _coerce(name, tp, value))
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"{name}: must be one of {' | '.join(map(str, choices))}, got {value!r}")
        self.validate()

    def validate(self) -> None:
        pass


def _coerce(name: str, tp, value):
    """Accept a value of the declared type (ints for floats, lists for tuples); reject the rest."""
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{name}: must be a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(tp) is tuple:
        (elem, _ellipsis) = typing.get_args(tp)
        if isinstance(value, (tuple, list)):
            return tuple(_coerce(f"{name}[{i}]", elem, v) for i, v in enumerate(value))
    else:  # pragma: no cover - a new field type without support here is a bug
        raise TypeError(f"unsupported config type {tp} for {name}")
    raise ConfigError(f"{name}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _type_name(tp) -> str:
    if typing.get_origin(tp) is tuple:
        return f"tuple of {typing.get_args(tp)[0].__name__} (e.g. 30,60,90)"
    return tp.__name__


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_value(name: str, tp, text: str):
    """Parse a command-line string into the declared type of key ``name``."""
    try:
        if tp is bool:
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if tp is str:
            return text
        if typing.get_origin(tp) is tuple:
            elem = typing.get_args(tp)[0]
            body = text.strip().strip("()[]")
            parts = [p.strip() for p in body.split(",") if p.strip()]
            return tuple(parse_value(name, elem, p) for p in parts)
    except ValueError:
        pass
    raise ConfigError(f"{name}: expected {_type_name(tp)}, got {text!r}")


def iter_keys(cls, prefix: str = ""):
    """Yield (dotted name, type, dataclass field) for every leaf key, in declaration order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_keys(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", tp, f


def flatten(cfg, identity_only: bool = False) -> dict[str, typing.Any]:
    """{dotted key: value} of a config instance (only the identity keys when asked)."""
    out = {}
    for name, _tp, f in iter_keys(type(cfg)):
        if identity_only and not f.metadata.get("identity", True):
            continue
        obj = cfg
        for part in name.split("."):
            obj = getattr(obj, part)
        out[name] = obj
    return out
