"""Experiment axes: the runs of an experiment as the product of declared axes over config keys.

An experiment file holds the shared settings once and an ``axes`` list; each entry is one axis
(a dotted config key and its values) or a ``zip`` group of axes that move together::

    axes:
      - model.family: [decoder, encoder_decoder]
      - optimizer.lr: [1.0e-3, 3.0e-3]
      - zip:                                  # sizes: width and depth together
          model.d_model: [64, 128]
          model.num_layers: [2, 4]
      - model: {causal: {mask: causal}, prefix: {mask: prefix}}   # named values
    exclude:
      - {model.family: encoder_decoder, model: prefix}

Values are a list, or a mapping of names to values (a value may itself be a mapping, merged into
that section). A point is left out when every key of an ``exclude`` entry matches it (by a value
or by its name). Each run's name joins its axis values' names with ``-`` (``decoder-lr0.001-
d_model64-num_layers2-causal``): strings and named values by themselves, numbers after their
key's last part.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from typing import Any

from archzoo.config import ConfigError, _suggest, _where

__all__ = ["Point", "expand_axes"]


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of an experiment: its name and the ``(dotted key, value)`` pairs it sets."""

    name: str
    settings: tuple[tuple[str, Any], ...]
    names: dict[str, str]  # dotted key -> the name of this point's value


def _value_name(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return f"{key.split('.')[-1]}{str(value).lower()}"
    if isinstance(value, float):
        return f"{key.split('.')[-1]}{value:g}"
    return f"{key.split('.')[-1]}{value}"


def check_key(key: str, root: type, where: str) -> None:
    """Raises ConfigError when ``key`` (dotted) names no field of the dataclass ``root``."""
    cls, done = root, []
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls):
            raise ConfigError(f"{where}axis {key!r}: {'.'.join(done)} has no fields below it")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        if part not in fields:
            prefix = "".join(f"{d}." for d in done)
            raise ConfigError(f"{where}axis over unknown key {key!r}{_suggest(part, fields, hints, prefix)}")
        hint = hints[part]
        args = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        cls = hint if dataclasses.is_dataclass(hint) else (args[0] if args else None)
        done.append(part)


def _axis(key: Any, values: Any, where: str, root: type) -> list[tuple[str, Any, str]]:
    """``(key, value, name)`` per value of one axis."""
    if not isinstance(key, str):
        raise ConfigError(f"{where}an axis key must be a dotted config key, got {key!r}")
    check_key(key, root, where)
    if isinstance(values, dict):
        items = [(key, v, str(n)) for n, v in values.items()]
    elif isinstance(values, list):
        items = [(key, v, _value_name(key, v)) for v in values]
    else:
        raise ConfigError(f"{where}axis {key!r}: expected a list of values or a mapping of names to values, got {values!r}")
    if not items:
        raise ConfigError(f"{where}axis {key!r} is empty: give it at least one value")
    names = [n for _, _, n in items]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}axis {key!r}: its values' names repeat ({names}); give them names with a mapping")
    return items


def _dimensions(axes: list, where_of, root: type) -> list[list[list[tuple[str, Any, str]]]]:
    """Each entry of ``axes`` as one dimension: a list of points, each a list of settings."""
    dims = []
    for i, entry in enumerate(axes):
        where = where_of(i)
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(f"{where}axes[{i}] must be one `key: values` pair or one `zip:` group")
        (key, values), = entry.items()
        if key == "zip":
            if not isinstance(values, dict) or not values:
                raise ConfigError(f"{where}axes[{i}].zip must map keys to lists of values")
            group = [_axis(k, v, _where(values, k) or where, root) for k, v in values.items()]
            lengths = {len(g) for g in group}
            if len(lengths) != 1:
                sizes = ", ".join(f"{k}: {len(g)}" for k, g in zip(values, group))
                raise ConfigError(f"{where}axes[{i}].zip: its axes must have as many values each ({sizes})")
            dims.append([list(settings) for settings in zip(*group)])
        else:
            dims.append([[item] for item in _axis(key, values, where, root)])
    return dims


def expand_axes(axes: Any, exclude: Any, *, data: dict, root: type) -> list[Point]:
    """The points of an experiment's ``axes``, minus its ``exclude`` entries.

    Args:
      axes: the ``axes`` list of the experiment file.
      exclude: its ``exclude`` list (or None).
      data: the mapping the two came from (for file and line in messages).
      root: the run config class whose keys the axes name.

    Raises:
      ConfigError: an unknown key (with a close match), an empty axis, zip axes of different
        lengths, an exclusion over a key that is not an axis or that leaves no run; naming the
        experiment file and line.
    """
    if not isinstance(axes, list) or not axes:
        raise ConfigError(f"{_where(data, 'axes')}axes must be a non-empty list of axes")

    def where_of(i: int) -> str:
        return _where(axes[i], next(iter(axes[i]), None)) if isinstance(axes[i], dict) else _where(data, "axes")

    dims = _dimensions(axes, where_of, root)
    points = []
    for combo in itertools.product(*dims):
        settings = [s for part in combo for s in part]
        points.append(Point("-".join(n for _, _, n in settings), tuple((k, v) for k, v, _ in settings), {k: n for k, _, n in settings}))
    keys = {k for p in points for k, _ in p.settings}
    for j, rule in enumerate(exclude or []):
        if not isinstance(rule, dict) or not rule:
            raise ConfigError(f"{_where(data, 'exclude')}exclude[{j}] must map axis keys to values")
        for key in rule:
            if key not in keys:
                raise ConfigError(f"{_where(rule, key) or _where(data, 'exclude')}exclude[{j}]: {key!r} is not an axis ({', '.join(sorted(keys))})")

        def matches(point: Point, rule=rule) -> bool:
            values = dict(point.settings)
            return all(values[k] == v or point.names[k] == str(v) for k, v in rule.items())

        points = [p for p in points if not matches(p)]
    if not points:
        raise ConfigError(f"{_where(data, 'exclude')}exclude leaves no run of the experiment")
    return points
