"""How a mapping (a YAML block, or CLI flags) becomes a config dataclass: every key known, every value of the
field's type, every choice allowed; errors name the source, the key and the value. The dataclasses themselves,
their defaults and their choices are in ``pipeline/config.py``."""

from __future__ import annotations

import dataclasses
import types
import typing

from pipeline.errors import ConfigError


def _type_ok(value, annotation) -> tuple[bool, object]:
    """Check/convert one scalar value against a simple annotation; returns (ok, converted)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return True, None
        for arg in args:
            if arg is type(None):
                continue
            ok, conv = _type_ok(value, arg)
            if ok:
                return ok, conv
        return False, value
    if annotation in (list, "list") or origin is list:
        if isinstance(value, (list, tuple)):
            return True, list(value)
        if isinstance(value, str):  # "a,b" is accepted where a list is expected (CLI habit)
            return True, [v.strip() for v in value.split(",") if v.strip()]
        return False, value
    if annotation is dict or origin is dict:
        return _per_class(value)
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return True, str(value)
        return False, value
    return True, value


def _per_class(value) -> tuple[bool, object]:
    """A per-class number: ``{default: 0.3, ribosome: 0.4}``, a bare number (= the default) or, from the command
    line, ``"0.3"`` / ``"ribosome=0.4,default=0.3"``."""
    if isinstance(value, bool):
        return False, value
    if isinstance(value, (int, float)):
        return True, {"default": float(value)}
    if isinstance(value, str):
        items = [p.strip() for p in value.split(",") if p.strip()]
        try:
            if len(items) == 1 and "=" not in items[0]:
                return True, {"default": float(items[0])}
            value = dict(item.split("=", 1) for item in items)
        except ValueError:
            return False, value
    if not isinstance(value, dict):
        return False, value
    try:
        return True, {str(k).strip(): float(v) for k, v in value.items()}
    except (TypeError, ValueError):
        return False, value


def _refuse_names_given_twice(text: str, source: str, where: str) -> None:
    """``ribosome=0.4,ribosome=0.5`` on the command line: one of the two would win without a word."""
    seen: dict[str, str] = {}
    for item in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, number = item.partition("=")
        name = name.strip()
        if not sep:
            continue
        if name in seen:
            raise ConfigError(f"{source}: '{where}' names '{name}' twice ({seen[name]} and {number.strip()}); give "
                              "each object once")
        seen[name] = number.strip()


def _describe(annotation) -> str:
    if annotation is dict or typing.get_origin(annotation) is dict:  # the per-class numbers (_per_class)
        return "a number or a number per object class (e.g. 0.3, {default: 0.25, ribosome: 0.4}, or on the " \
               "command line default=0.25,ribosome=0.4)"
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def build(cls, data, source: str, prefix: str, choices_of):
    """A ``cls`` from the mapping ``data``; nested dataclass fields recurse. ``choices_of(prefix, key)``: the
    allowed values of a key, or None for any."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix}' should be a mapping of keys, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(
                f"{source}: unknown key '{where}'; valid keys{' under ' + prefix if prefix else ''}: "
                f"{', '.join(sorted(fields))}"
            )
        hint = hints[key]
        sub = _dataclass_of(hint)
        if sub is not None:
            if value is None and type(None) in typing.get_args(hint):
                kwargs[key] = None
            else:
                kwargs[key] = build(sub, value, source, where, choices_of)
            continue
        if isinstance(value, str) and (hint is dict or typing.get_origin(hint) is dict):
            _refuse_names_given_twice(value, source, where)
        ok, conv = _type_ok(value, hint)
        if not ok:
            raise ConfigError(
                f"{source}: '{where}' should be {_describe(hint)}, got {type(value).__name__} {value!r}"
            )
        allowed = choices_of(prefix, key)
        if allowed is not None:
            if conv not in allowed:
                raise ConfigError(f"{source}: '{where}' is {conv!r}; choose one of {', '.join(allowed)}")
        kwargs[key] = conv
    return cls(**kwargs)


def _dataclass_of(hint):
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


