"""Config schemas as dataclasses: validation of user YAML, ``--set`` overrides, documentation.

A schema is a dataclass whose fields have defaults and simple types: ``bool``, ``int``,
``float`` (ints accepted), ``str``, ``X | None``, ``list[X]``, ``tuple[X, Y]``,
``Literal[...]``, ``dict[str, Any]`` (free-form, checked elsewhere) and nested schema
dataclasses. Each field is documented by a ``#:`` comment on the lines above it (or at the
end of its line). :func:`from_dict` builds an instance from parsed YAML and raises
:class:`ConfigError` — one line naming the key, what was wrong and the valid keys or values —
for unknown keys, wrong types and missing required values.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args, get_origin

import yaml

from ..errors import InputError


class ConfigError(InputError):
    """A training config has an unknown key, a wrong type or a missing value."""


_YAML11_EXP = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")

REQUIRED = "<required>"
"""Default of a field the user must set (strings only)."""


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_docs(cls: type) -> dict[str, str]:
    """``{field: doc}`` from the ``#:`` comments in the source of ``cls`` and its base classes (above a field or
    after it; a subclass's comment wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        m = re.match(r"^\s+([A-Za-z_]\w*)\s*:", line)
        if m and not stripped.startswith(("def ", "class ", "@", "return")):
            trailing = line.split("#:", 1)[1].strip() if "#:" in line else ""
            text = " ".join([*pending, trailing]).strip()
            if text:
                docs[m.group(1)] = text
        pending = []
    return docs


def type_name(tp: Any) -> str:
    """A short readable name of a field type (``int``, ``list of float``, ``one of a, b``)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return "any"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"[{', '.join(type_name(a) for a in args)}]"
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict or tp is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    wrong = ConfigError(f"config: {key} must be {type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        last: ConfigError | None = None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except ConfigError as exc:
                last = exc
        raise wrong from last
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config: {key} must be {type_name(tp)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"config: {key} must be a section (a mapping of keys), got {value!r}")
        return from_dict(tp, value, prefix=key)
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise wrong
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_EXP.match(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as text
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        if not math.isfinite(float(value)):
            raise ConfigError(f"config: {key} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise wrong
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise wrong
        return [_convert(v, args[0] if args else Any, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise wrong
        if args and args[-1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(value) != len(args):
            raise ConfigError(f"config: {key} must be {type_name(tp)} ({len(args)} values), got {value!r}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict or tp is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"config: {key} must be a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"schema type {tp!r} of {key} is not supported")  # a bug in a schema, not user input


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """An instance of the schema dataclass ``cls`` from ``data``, validated (see module doc)."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"in {prefix}" if prefix else "at the top level"
        raise ConfigError(
            f"config: unknown key {'.'.join(filter(None, [prefix, str(unknown[0])]))!r} {where}; "
            f"valid keys: {', '.join(fields)}"
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], key)
        elif dataclasses.is_dataclass(hints[name]) and f.default is dataclasses.MISSING:
            kwargs[name] = _convert({}, hints[name], key)
        if kwargs.get(name, f.default) == REQUIRED:
            raise ConfigError(f"config: {key} is required ({type_name(hints[name])})")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config: {prefix or 'top level'}: {exc}") from exc
    return obj


def to_dict(obj: Any) -> Any:
    """A schema instance as plain YAML-ready data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def parse_value(text: str) -> Any:
    """A ``--set`` value: YAML (numbers, true/false, null, [lists], {maps}), else the text itself."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``KEY.SUB=VALUE`` overrides to raw config data (sections are created as needed)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.max_steps=1000")
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".")]
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty part in the key {key!r}")
        node: dict[str, Any] = data
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
            node = nxt
        node[parts[-1]] = parse_value(text)
    return data


def describe(cls: type, prefix: str = "", indent: int = 0) -> list[str]:
    """Documentation lines for a schema: ``key: type = default  — doc``, sections nested."""
    out: list[str] = []
    hints = _hints(cls)
    docs = field_docs(cls)
    pad = "  " * indent
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        doc = docs.get(f.name, "")
        section = next((a for a in (tp, *get_args(tp)) if dataclasses.is_dataclass(a)), None)
        if section is not None:
            optional = section is not tp
            note = "optional section" + (f". {doc}" if doc else "") if optional else doc
            out.append(f"{pad}{f.name}:" + (f"  # {note}" if note else ""))
            out.extend(describe(section, f"{prefix}{f.name}.", indent + 1))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = REQUIRED
        shown = "(required)" if default == REQUIRED else yaml.safe_dump(to_dict(default), default_flow_style=True).strip()
        if shown.endswith("\n..."):
            shown = shown[:-4].strip()
        shown = shown.removesuffix("...").strip()
        out.append(f"{pad}{f.name}: {shown}  # {type_name(tp)}" + (f". {doc}" if doc else ""))
    return out
