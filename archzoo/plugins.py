"""A researcher's own component, named in a config by import path.

Wherever a config takes a built-in name (``mask: causal``, ``mlp.kind``, ``norm.kind``,
``position.kind``, ``moe.router_logits``, ``objective.name``) it also takes an import path of
the user's own object, ``"package.module:attribute"``, alone or with the object's own options::

    mask: mypkg.masks:chunked_causal
    mask: {path: mypkg.masks:chunked, size: 8}
    mlp: {kind: mypkg.layers:ReGLU, d_ff: 512}

Each place is a :class:`Plugin` subclass that says what the object must be (its protocol) and
which of its parameters are options: the options are checked like built-in keys (an unknown
one gets a close-match suggestion, a wrong type names the expected one, with file and line).
Built-ins stay plain names; there is no registry. A run directory records each plug-in's path
and the hash of its source file (:meth:`Plugin.source`).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import inspect
import sys
import typing
from pathlib import Path
from typing import Any, ClassVar

from archzoo.config import ConfigError, _coerce, _where, invalid

__all__ = ["Plugin", "resolve", "is_path", "plugins_of", "add_paths", "accept_paths"]


def is_path(value) -> bool:
    """Whether a config value names a plug-in: ``"module:attribute"``, or a mapping (a
    plug-in's path with its options; no built-in choice is a mapping)."""
    if isinstance(value, str):
        return ":" in value
    return isinstance(value, dict)


def accept_paths(cfg, section: str, *fields: str) -> None:
    """For a config built in Python (not read by :func:`archzoo.config.from_dict`): each field
    given as a plug-in path (or mapping) becomes its :class:`Plugin`, checked as when read from
    a file; a string that is neither a built-in choice nor a path is refused.

    Args:
      cfg: the frozen config dataclass, in its ``__post_init__``.
      section: its dotted prefix in messages (``mlp.``).
      *fields: the names of its fields that take a plug-in.

    Raises:
      ConfigError: naming ``section + field``.
    """
    hints = typing.get_type_hints(type(cfg))
    for name in fields:
        key = f"{section}{name}"
        try:  # as from_dict reads the field: a built-in choice, or a plug-in by path
            object.__setattr__(cfg, name, _coerce(getattr(cfg, name), hints[name], key, None, None))
        except ConfigError as e:
            raise invalid(key, str(e).removeprefix(f"{key}: ")) from None


def resolve(path: str, key: str = "plug-in", where: str = ""):
    """The object ``"package.module:attribute"`` names (the attribute may be dotted).

    Raises:
      ConfigError: one line naming ``key`` and the path: not ``module:attribute``, no such module
        (and where Python looked), the module fails to import (its error), or no such attribute
        (with a close match and what the module defines).
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute or ":" in attribute:
        raise ConfigError(f"{where}{key}: {path!r} is not an import path 'package.module:attribute' (e.g. mypkg.masks:chunked)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise ConfigError(
                f"{where}{key}: no module named {e.name!r} (from {path!r}); put the folder that holds it on PYTHONPATH "
                "or in the run config's plugin_paths, or pip install its package"
            ) from None
        raise ConfigError(f"{where}{key}: importing {module_name} (for {path!r}) failed: {type(e).__name__}: {e}") from None
    except Exception as e:  # the user's module raised while importing: say so in one line
        raise ConfigError(f"{where}{key}: importing {module_name} (for {path!r}) failed: {type(e).__name__}: {e}") from None
    obj = module
    for i, part in enumerate(attribute.split(".")):
        if not hasattr(obj, part):
            owner = module_name if i == 0 else f"{module_name}:{'.'.join(attribute.split('.')[:i])}"
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; it defines: {', '.join(names[:20]) or 'nothing public'}"
            file = getattr(module, "__file__", None)
            raise ConfigError(f"{where}{key}: {owner}{f' ({file})' if file and i == 0 else ''} has no attribute {part!r}{hint}")
        obj = getattr(obj, part)
    return obj


def with_article(noun: str) -> str:
    """``a mask``, ``an objective``, ``an MLP`` (an acronym read letter by letter)."""
    vowel = noun[:1].lower() in "aeiou" or (noun.isupper() and noun[:1] in "AEFHILMNORSX")
    return f"{'an' if vowel else 'a'} {noun}"


def _frozen(value):
    """Option values as hashable config values (lists become tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        raise TypeError("a mapping")
    return value


@dataclasses.dataclass(frozen=True)
class Plugin:
    """A user's object named by import path, with its options.

    Attributes:
      path: ``"package.module:attribute"``.
      options: the object's own keyword arguments, as sorted ``(name, value)`` pairs.

    Subclasses say what the object is (:attr:`what`), which of its parameters the protocol
    fills in (:attr:`reserved`: not options) and what else it must satisfy (:meth:`check`).
    """

    path: str
    options: tuple = ()

    what: ClassVar[str] = "component"
    reserved: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def what_a(cls) -> str:
        """``what`` with its article: an MLP, a mask."""
        return with_article(cls.what)

    # -- from a config -----------------------------------------------------------------------
    @classmethod
    def from_config(cls, value, key: str, data=None, leaf: str | None = None) -> "Plugin":
        """A plug-in from its config value: a path, or a mapping ``{path: ..., option: value}``.

        Args:
          value: the config value.
          key: its dotted key, for messages.
          data, leaf: the mapping that holds it and its key there, for the file and line.

        Raises:
          ConfigError: naming the key, file and line, for a path that does not resolve, an
            object that does not satisfy the protocol, an unknown option (with a close match)
            or an option of the wrong type.
        """
        where = _where(data, leaf)
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            path, given, holder = value, {}, data
        elif isinstance(value, dict) and isinstance(value.get("path"), str):
            path, holder = value["path"], value
            given = {k: v for k, v in value.items() if k != "path"}
        else:
            raise ConfigError(
                f"{where}{key}: expected {cls.what_a()} plug-in: a path 'package.module:attribute', or a mapping with its "
                f"path and options {{path: 'package.module:attribute', option: value}}; got {value!r}"
            )
        obj = resolve(path, key, where)
        cls.check(obj, path, key, where)
        options = cls.parse_options(obj, path, given, key, holder)
        return cls(path, options)

    @classmethod
    def check(cls, obj, path: str, key: str, where: str) -> None:
        """Refuses an object that cannot be this kind of plug-in (static checks only)."""

    @classmethod
    def parameters(cls, obj) -> dict[str, inspect.Parameter]:
        """The object's options: the keyword parameters of the function (or of the class's
        ``__init__``) that the protocol does not fill in."""
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):
            return {}
        return {
            name: p
            for name, p in signature.parameters.items()
            if name not in cls.reserved and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }

    @classmethod
    def parse_options(cls, obj, path: str, given: dict, key: str, holder) -> tuple:
        """Checks the given options against :meth:`parameters` and their annotations."""
        params = cls.parameters(obj)
        try:
            hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
        except Exception:  # unresolvable annotations: take the values as given
            hints = {}
        options = {}
        for name, value in given.items():
            if name not in params:
                close = difflib.get_close_matches(str(name), list(params), n=1)
                if close:
                    hint = f"; did you mean {key}.{close[0]}?"
                elif not params and not callable(getattr(obj, "__code__", None)) and hasattr(obj, "params"):
                    hint = f"; it takes none (its parameters {dict(obj.params)} were fixed where it was made)"
                else:
                    hint = f"; its options: {', '.join(params) or 'none'}"
                raise ConfigError(f"{_where(holder, name)}unknown option '{key}.{name}' of {path}{hint}")
            try:
                value = _coerce(value, hints.get(name, Any), f"{key}.{name}", holder, name)
            except TypeError:  # an annotation configs do not check (a class of the user's): as given
                pass
            try:
                options[name] = _frozen(value)
            except TypeError:
                raise ConfigError(f"{_where(holder, name)}{key}.{name}: expected a number, string, boolean or list, got {value!r}") from None
        missing = [n for n, p in params.items() if p.default is p.empty and n not in options]
        for name, p in params.items():  # defaults written out, so a config states every option it runs with
            if name not in options and p.default is not p.empty and _plain(p.default):
                options[name] = _frozen(p.default)
        if missing:
            raise ConfigError(f"{_where(holder, None)}{key}: {path} needs the option(s) {', '.join(missing)} (no default)")
        return tuple(sorted(options.items()))

    # -- use ---------------------------------------------------------------------------------
    def resolve(self):
        """The object the path names."""
        return resolve(self.path)

    @property
    def kwargs(self) -> dict:
        """The options as keyword arguments."""
        return dict(self.options)

    def construct(self, *args, **kwargs):
        """The object called with the protocol's arguments and its options (a layer plug-in:
        the module)."""
        return self.resolve()(*args, **kwargs, **self.kwargs)

    def to_config(self):
        """The config value this plug-in was read from (a path, or a mapping with options)."""
        if not self.options:
            return self.path
        return {"path": self.path, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.options}}

    def source(self) -> dict:
        """What a run directory records: the path, the source file and its SHA-256 (the file
        that defines the object; what it imports is not hashed)."""
        obj = self.resolve()
        try:
            file = inspect.getsourcefile(obj) or inspect.getfile(obj)
        except TypeError:
            file = getattr(sys.modules.get(self.path.partition(":")[0]), "__file__", None)
        digest = hashlib.sha256(Path(file).read_bytes()).hexdigest() if file and Path(file).is_file() else None
        return {"path": self.path, "file": str(file) if file else None, "sha256": digest}

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options)
        return f"{self.path}({args})" if args else self.path


def _plain(value) -> bool:
    """A value a YAML file can hold and a config can hash: None, a bool, number or string, or
    a list of them."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def plugins_of(cfg, prefix: str = "") -> dict[str, Plugin]:
    """Every plug-in of a config (a dataclass tree), by dotted key."""
    found = {}
    if isinstance(cfg, Plugin):
        return {prefix.rstrip("."): cfg}
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        for f in dataclasses.fields(cfg):
            found.update(plugins_of(getattr(cfg, f.name), f"{prefix}{f.name}."))
    return found


def add_paths(paths, base: Path, where: str = "") -> tuple[str, ...]:
    """Puts folders of plug-in packages on ``sys.path`` (a config's ``plugin_paths``).

    Args:
      paths: folders, relative to ``base`` unless absolute.
      base: the folder of the config file that lists them.
      where: file and line prefix for messages.

    Returns:
      The folders as absolute paths (what the resolved config records).

    Raises:
      ConfigError: not a list of strings, or a folder that does not exist.
    """
    if isinstance(paths, str) or not isinstance(paths, (list, tuple)) or not all(isinstance(p, str) for p in paths):
        raise ConfigError(f"{where}plugin_paths: expected a list of folders, got {paths!r}")
    out = []
    for p in paths:
        folder = (Path(base) / p).resolve()
        if not folder.is_dir():
            raise ConfigError(f"{where}plugin_paths: {p!r} is not a folder (looked at {folder})")
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        out.append(str(folder))
    return tuple(out)


def sources(cfg) -> dict[str, dict]:
    """Per dotted key, what a run directory records of each plug-in of ``cfg``
    (:meth:`Plugin.source`: path, file, SHA-256)."""
    return {key: plugin.source() for key, plugin in plugins_of(cfg).items()}
