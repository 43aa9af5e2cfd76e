"""Typed configs from YAML files and keyword arguments, with errors that name the key.

Every config in archzoo is a frozen dataclass whose fields mirror the YAML keys one to one. This
module turns a mapping (a parsed YAML file, keyword arguments, ``key.sub=value`` overrides) into
such a dataclass and checks it at the edge: an unknown key gets a close-match suggestion, a
wrong type names the key and the expected type, and when the mapping came from a file the error
names the file and the line.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = ["ConfigError", "from_dict", "load_yaml", "to_dict", "parse_override", "apply_overrides"]


class ConfigError(ValueError):
    """A user mistake in a config: names the key, and the file and line when known."""


class _Located(dict):
    """A dict that remembers the line of each key in its YAML file."""

    lines: dict[str, int]
    file: str | None


class _LineLoader(yaml.SafeLoader):
    """YAML loader that records, for every mapping, the line of each key."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Located:
    mapping = _Located()
    mapping.lines = {}
    mapping.file = getattr(loader, "_archzoo_file", None)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, typing.Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a name, got {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = key_node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.1 reads "1e-5" as a string; accept the scientific notation researchers write.
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.[\d_]*)?[eE][-+]?\d+$|^[-+]?\d[\d_]*\.[\d_]*$"),
    list("-+0123456789."),
)


def _duplicate_keys(node: yaml.Node, path: str, file: str | None) -> None:
    """Refuses a mapping that gives one key twice, at any depth (YAML would keep the last)."""
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(item, f"{path}[{i}]", file)
    if not isinstance(node, yaml.MappingNode):
        return
    first_line = {}
    for key_node, value_node in node.value:
        key, line = key_node.value, key_node.start_mark.line + 1
        dotted = f"{path}.{key}" if path else str(key)
        if isinstance(key_node, yaml.ScalarNode):
            if key in first_line:
                where = f"{file}, line {line}: " if file else ""
                raise ConfigError(f"{where}duplicate key {dotted}, first given at line {first_line[key]}")
            first_line[key] = line
        _duplicate_keys(value_node, dotted, file)


def _parse(text: str, file: str | None) -> Any:
    """Parses YAML text, remembering file and line of every key (raises yaml.YAMLError)."""
    loader = _LineLoader(text)
    loader._archzoo_file = file
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _duplicate_keys(node, "", file)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> dict:
    """Reads a YAML mapping, remembering file and line of every key for error messages."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})"
        ) from None
    try:
        data = _parse(text, str(path))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        data = _Located()
        data.lines, data.file = {}, str(path)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of keys to values, got {type(data).__name__}"
        )
    return data


def _where(data: Any, key: str | None) -> str:
    file = getattr(data, "file", None)
    line = getattr(data, "lines", {}).get(key) if key is not None else None
    if file and line:
        return f"{file}, line {line}: "
    if file:
        return f"{file}: "
    return ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if _is_plugin_type(tp):
        return f"{tp.what_a()} plug-in 'package.module:attribute'"
    return getattr(tp, "__name__", str(tp))


def _is_plugin_type(tp) -> bool:
    """A field type that takes a user's object by import path (:class:`archzoo.plugins.Plugin`)."""
    return isinstance(tp, type) and hasattr(tp, "from_config")


def _coerce(value: Any, tp: Any, key: str, data: Any, leaf: str) -> Any:
    """Checks ``value`` against the annotation ``tp``; returns it converted (lists to tuples)."""
    origin = typing.get_origin(tp)
    if _is_plugin_type(tp):
        return tp.from_config(value, key, data, leaf)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        plugin = next((a for a in args if _is_plugin_type(a)), None)
        if plugin is not None:
            # a built-in name, or the user's own object by import path: each gets its own error
            from archzoo.plugins import is_path

            if is_path(value) or isinstance(value, plugin):
                return plugin.from_config(value, key, data, leaf)
            others = [a for a in args if a is not plugin]
            try:
                return _coerce(value, Union[tuple(others)] if len(others) > 1 else others[0], key, data, leaf)
            except ConfigError as e:
                raise ConfigError(f"{e}; or {plugin.what_a()} of your own as 'package.module:attribute'") from None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, data, leaf)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{_where(data, leaf)}{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"{_where(data, leaf)}{key}: {value!r} is not one of {', '.join(repr(c) for c in choices)}{extra}"
            )
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_where(data, leaf)}{key}: expected a list, got {value!r}")
        (inner, *rest) = typing.get_args(tp)
        return tuple(_coerce(v, inner, f"{key}[{i}]", data, leaf) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(
                f"{_where(data, leaf)}{key}: expected a mapping of {tp.__name__} fields, got {value!r}"
            )
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{_where(data, leaf)}{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{_where(data, leaf)}{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer past the largest float
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(f"{_where(data, leaf)}{key}: expected a finite number, got {value!r}")
            return number
        raise ConfigError(f"{_where(data, leaf)}{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{_where(data, leaf)}{key}: expected a string, got {value!r}")
    if tp is Any:
        return value
    raise TypeError(f"config field {key}: unsupported annotation {tp!r}")


def from_dict(cls: type, data: dict, *, prefix: str = ""):
    """Builds the frozen dataclass ``cls`` from a mapping, checking every key and type.

    Args:
      cls: a dataclass type whose fields carry type annotations.
      data: mapping of field name to value; nested dataclasses take nested mappings.
      prefix: dotted path of ``data`` inside the whole config, for messages.

    Raises:
      ConfigError: for an unknown key (with a close-match suggestion), a wrong type, or a value
        that the dataclass's own ``__post_init__`` check refuses. Names the file and line when
        ``data`` came from :func:`load_yaml`.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"{_where(data, key)}unknown key '{prefix}{key}' in {cls.__name__}{_suggest(str(key), fields, hints, prefix)}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}", data, key)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise _located(e, fields, data, prefix) from None


def _suggest(key: str, fields: dict, hints: dict, prefix: str) -> str:
    """The likeliest meant key: the same name one level down (num_heads under attention), then a
    close spelling at this level, then a close spelling one level down."""
    nested = {
        f"{name}.{sub.name}": sub.name
        for name in fields
        if dataclasses.is_dataclass(hints[name])
        for sub in dataclasses.fields(hints[name])
    }
    exact = [path for path, sub in nested.items() if sub == key]
    if exact:
        return f"; did you mean {prefix}{exact[0]}?"
    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    deep = difflib.get_close_matches(key, list(nested.values()), n=1, cutoff=0.8)
    dotted = [path for path, sub in nested.items() if deep and sub == deep[0]]
    return f"; did you mean {prefix}{dotted[0]}?" if dotted else f"; valid keys: {', '.join(fields)}"


def _located(err: ConfigError, fields: dict, data: dict, prefix: str) -> ConfigError:
    """A ``__post_init__`` error restated with the whole dotted key and the file and line of its value.

    The check names its field relative to its own class (``head_dim``, ``attention.head_dim``
    from ModelConfig) or after the section it belongs to (``attention.num_heads`` from
    AttentionConfig); leading parts that are not fields of the class are that section's name.
    """
    parts = getattr(err, "path", "").split(".")
    while parts and parts[0] not in fields:
        parts = parts[1:]
    if not parts:
        where = _where(data, None)
        return ConfigError(f"{where}{err}") if where and not str(err).startswith(where) else err
    node, key = data, parts[0]
    for part in parts[1:]:
        child = node.get(key)
        if not isinstance(child, dict) or part not in child:
            break
        node, key = child, part
    located = invalid(f"{prefix}{'.'.join(parts)}", err.message)
    located.args = (f"{_where(node, key)}{located}",)
    return located


def invalid(field: str, message: str) -> ConfigError:
    """A ConfigError for a ``__post_init__`` check, remembering which field it is about.

    Args:
      field: the field's dotted name, relative to its class or after its section's name.
      message: what is wrong and what would be valid.
    """
    err = ConfigError(f"{field}: {message}")
    err.path, err.field, err.message = field, field.split(".")[-1], message
    return err


def to_dict(cfg: Any) -> Any:
    """A dataclass config as plain YAML-ready data (tuples become lists; a plug-in becomes the
    path or mapping it was read from)."""
    if hasattr(cfg, "to_config") and not isinstance(cfg, type):
        return cfg.to_config()
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.attention.num_heads=8"`` -> (["model", "attention", "num_heads"], 8)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = _parse(raw, None) if raw.strip() else None
    except (yaml.YAMLError, ConfigError) as e:
        problem = str(e) if isinstance(e, ConfigError) else f"not valid YAML: {e}"
        raise ConfigError(f"override {text!r}: {problem}") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Applies ``key.sub=value`` overrides to a nested mapping (in place) and returns it.

    Raises:
      TypeError: ``overrides`` is not a list of strings (a lone string would read as characters).
      ConfigError: an override is not ``key.sub=value`` or its value is not valid YAML.
    """
    expected = "overrides: expected a list of 'key.sub=value' strings"
    if isinstance(overrides, str):
        raise TypeError(f"{expected}, got the string {overrides!r} (write [{overrides!r}])")
    if not isinstance(overrides, (list, tuple)):
        raise TypeError(f"{expected}, got {overrides!r}")
    for i, text in enumerate(overrides):
        if not isinstance(text, str):
            raise TypeError(f"overrides[{i}]: expected a 'key.sub=value' string, got {text!r}")
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = _Located()
                child.lines, child.file = {}, None
                node[part] = child
            node = child
        node[path[-1]] = value
    return data
