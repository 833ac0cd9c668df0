"""Plain dicts (parsed YAML / JSON) into typed dataclasses, with one-line errors naming the key path.

Field metadata understood: `min` / `max` (inclusive bounds), `gt` (exclusive lower bound), `nonempty`.
YAML 1.1 reads `2e18` as a string, so numeric fields also take strings that parse as numbers.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union

from .errors import InputError

_HINTS: dict[type, dict[str, Any]] = {}


class ConfigError(InputError):
    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def describe(tp: Any) -> str:
    """Human words for a type, used in 'expected ...' messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is Any:
        return "any value"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(describe(a) for a in inner) + (" (or null)" if len(inner) < len(args) else "")
    if origin is list:
        return f"a list of {_plural(describe(args[0]))}"
    if origin is dict:
        return f"a mapping of names to {_plural(describe(args[1]))}"
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    return getattr(tp, "__name__", str(tp))


def _plural(words: str) -> str:
    for article in ("an ", "a "):
        if words.startswith(article):
            return words[len(article):] + "s"
    return words


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace("_", ""))
        except ValueError:
            return None
    return None


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def convert(tp: Any, value: Any, path: str) -> Any:
    """`value` as type `tp`, or ConfigError naming `path`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(arg, value, path)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(path, f"expected {describe(tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, f"expected true or false, got {value!r}")
    if tp is int:
        num = _number(value)
        if num is None or not math.isfinite(num) or num != int(num):
            raise ConfigError(path, f"expected an integer, got {value!r}")
        return int(num)
    if tp is float:
        num = _number(value)
        if num is None or not math.isfinite(num):
            raise ConfigError(path, f"expected a number, got {value!r}")
        return num
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(path, f"expected a string, got {value!r}")
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        raise ConfigError(path, f"expected one of {', '.join(map(str, args))}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(path, f"expected {describe(tp)}, got {value!r}")
        return [convert(args[0], v, _join(path, i)) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected {describe(tp)}, got {value!r}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(_join(path, k), "expected a string key")
            out[k] = convert(args[1], v, _join(path, k))
        return out
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    raise TypeError(f"unsupported type {tp!r} at {path}")


def _check_bounds(f: dataclasses.Field, value: Any, path: str) -> None:
    meta = f.metadata
    items = value if isinstance(value, list) else [value]
    if meta.get("nonempty") and isinstance(value, (list, dict)) and not value:
        raise ConfigError(path, "expected at least one entry, got none")
    for i, item in enumerate(items):
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        where = _join(path, i) if isinstance(value, list) else path
        if "gt" in meta and not item > meta["gt"]:
            raise ConfigError(where, f"expected a number > {meta['gt']}, got {item!r}")
        if "min" in meta and not item >= meta["min"]:
            raise ConfigError(where, f"expected a number >= {meta['min']}, got {item!r}")
        if "max" in meta and not item <= meta["max"]:
            raise ConfigError(where, f"expected a number <= {meta['max']}, got {item!r}")


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """An instance of dataclass `cls` from `data`; unknown keys, wrong types and bounds are errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(_join(path, unknown[0]), f"unknown key; expected one of {', '.join(fields)}")
    hints = _hints(cls)
    kwargs = {}
    for name, f in fields.items():
        where = _join(path, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(where, f"missing; expected {describe(hints[name])}")
            continue
        value = convert(hints[name], data[name], where)
        _check_bounds(f, value, where)
        kwargs[name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        check(path)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain JSON-able data from a (nested) dataclass."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def bounded(default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A dataclass field with bounds metadata (see module docstring)."""
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
