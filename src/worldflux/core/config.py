"""Config dataclasses: JSON round trip, dotted overrides and validation with clear errors.

Every configurable class has a ``@dataclass`` config beside it, with a docstring under each field.
These helpers work on any such dataclass, nested to any depth::

    cfg = apply_overrides(PETSAgentConfig(), {"planner.horizon": "20"})
    to_dict(cfg)                      # plain JSON-able dict
    from_dict(PETSAgentConfig, d)     # strict: unknown keys raise ConfigError
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from worldflux.core.errors import ConfigError, close_matches

C = TypeVar("C")


def to_dict(config: Any) -> dict[str, Any]:
    """Nested dataclass -> plain dict (tuples become lists), ready for JSON."""
    if not dataclasses.is_dataclass(config):
        raise ConfigError(f"config: expected a dataclass instance, got {type(config).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert ``value`` (possibly a CLI string) to type ``tp`` or raise ConfigError naming ``path``."""
    optional, inner = _is_optional(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        if optional or tp is Any:
            return None
        raise ConfigError(f"config field '{path}': got None, expected {_type_name(tp)}")
    tp = inner
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return _from_mapping(tp, value, path + ".")
        raise ConfigError(f"config field '{path}': got {value!r}, expected a mapping for {tp.__name__}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ConfigError(f"config field '{path}': got {value!r}, expected one of {list(choices)}")
    if origin in (tuple, list):
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("(") and text.endswith(")"):  # Python's tuple form: "(1, 2)"
                text = "[" + text[1:-1].strip().rstrip(",") + "]"
            try:
                value = json.loads(text if text.startswith("[") else f"[{text}]")
            except json.JSONDecodeError as exc:
                raise ConfigError(f"config field '{path}': cannot parse {value!r} as a list") from exc
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field '{path}': got {value!r}, expected a list")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"config field '{path}': got {value!r}, expected true or false")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"config field '{path}': got {value!r}, expected {tp.__name__}")
        try:
            number = float(value) if isinstance(value, str) else value
            if tp is int:
                if float(number) != int(float(number)):
                    raise ValueError
                return int(float(number))
            return float(number)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"config field '{path}': got {value!r}, expected {tp.__name__}"
            ) from exc
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config field '{path}': got {value!r}, expected a string")
        return value
    if tp is dict or origin is dict:
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, Mapping):
            raise ConfigError(f"config field '{path}': got {value!r}, expected a mapping")
        return dict(value)
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _from_mapping(cls: type[C], data: Mapping[str, Any], prefix: str = "") -> C:
    fields = _field_types(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        raise ConfigError(
            f"unknown config key '{prefix}{key}' for {cls.__name__}; "
            f"known keys: {', '.join(sorted(fields))}.{close_matches(key, fields)}"
        )
    kwargs = {k: _coerce(v, fields[k], prefix + k) for k, v in data.items()}
    try:
        config = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from exc
    return config


def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Build config ``cls`` from a (possibly nested) mapping; unknown keys raise ConfigError."""
    return _from_mapping(cls, data)


def apply_overrides(config: C, overrides: Mapping[str, Any]) -> C:
    """Return a copy of ``config`` with dotted keys replaced: ``{"planner.horizon": "20"}``.

    Values may be strings (as typed on a command line); they are parsed to the field's type.
    Unknown keys raise ConfigError listing the known keys and close matches.
    """
    data = dataclasses.asdict(config)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node: dict[str, Any] = data
        cls: Any = type(config)
        for depth, part in enumerate(parts):
            fields = _field_types(cls)
            path = ".".join(parts[: depth + 1])
            if part not in fields:
                raise ConfigError(
                    f"unknown config key '{path}' for {cls.__name__}; known keys: "
                    f"{', '.join(sorted(fields))}.{close_matches(part, fields)}"
                )
            if depth == len(parts) - 1:
                node[part] = _coerce(value, fields[part], dotted)
                if dataclasses.is_dataclass(node[part]):
                    node[part] = dataclasses.asdict(node[part])
            else:
                _, inner = _is_optional(fields[part])
                if not dataclasses.is_dataclass(inner):
                    raise ConfigError(
                        f"config key '{path}' is a {_type_name(fields[part])}, not a section; "
                        f"cannot set '{dotted}'"
                    )
                cls = inner
                node = node[part]
    return from_dict(type(config), data)


def parse_set_options(items: list[str] | None) -> dict[str, str]:
    """Parse CLI ``--set key=value`` items into a dict; malformed items raise ConfigError."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set: got {item!r}, expected KEY=VALUE such as planner.horizon=20")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def save_json(config: Any, path: str) -> None:
    """Write a config dataclass as indented JSON (atomic: temporary file + rename)."""
    from worldflux.core.io import atomic_write_text

    atomic_write_text(path, json.dumps(to_dict(config), indent=2, sort_keys=True))


def load_json(cls: type[C], path: str) -> C:
    """Read a config dataclass from JSON written by :func:`save_json`."""
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {path}: not valid JSON ({exc})") from exc
    return from_dict(cls, data)
