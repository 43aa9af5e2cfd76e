"""Pretraining objectives behind one interface (DESIGN.md §1).

Every objective is a plain function ``objective(tokens, rng, cfg, special, *, ends_document)
-> Example`` that turns one tokenized document chunk (int ``[L]``, no special tokens) into an
architecture-agnostic :class:`Example`, deterministically from the numpy Generator it is given:

==================  ==============================  ======================================
objective           inputs                          targets
==================  ==============================  ======================================
causal_lm           empty                           text, eos
prefix_lm           text[:cut]                      text[cut:], eos
span_corruption     text, spans -> <0>, <1>, ...    <0> span_0 <1> span_1 ..., eos
ul2                 [R]/[X]/[S] + the denoiser's    the denoiser's, eos
mlm                 text, 80/10/10-corrupted        originals at target_positions (no eos)
==================  ==============================  ======================================

eos ends the targets when the config's ``append_eos`` is True (the default) and the chunk ends
its document (``ends_document``, True unless the pipeline says the chunk was cut from inside a
document); inputs never carry eos. ``reconstruct(example, special)`` returns the text for every
objective.

Usage::

    objective = build_objective(SpanCorruptionConfig(noise_density=0.15), SpecialTokens())
    example = objective(tokens, example_rng(seed, epoch, index), ends_document=True)

A run config names its objective through :class:`ObjectiveConfig`::

    objective:
      name: span_corruption
      span_corruption: {noise_density: 0.15, mean_span_length: 3.0}

or an objective of the user's own by import path (:class:`ObjectivePlugin`), its settings next
to the path::

    objective:
      name: {path: mypkg.objectives:reverse_lm, append_eos: false}
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np

from archzoo.config import ConfigError, _where, from_dict, to_dict
from archzoo.plugins import Plugin, accept_paths, with_article
from archzoo.data.special import SpecialTokens
from archzoo.objectives.causal_lm import CausalLmConfig, causal_lm
from archzoo.objectives.example import Example, example_rng, is_sentinel, reconstruct
from archzoo.objectives.mlm import MlmConfig, dense_targets, mlm
from archzoo.objectives.prefix_lm import PrefixLmConfig, prefix_lm
from archzoo.objectives.span_corruption import (
    SpanCorruptionConfig,
    corrupt_spans,
    noise_span_mask,
    random_segmentation,
    span_corruption,
)
from archzoo.objectives.ul2 import UL2_DENOISERS, DenoiserConfig, Ul2Config, ul2

__all__ = [
    "Example",
    "example_rng",
    "reconstruct",
    "is_sentinel",
    "CausalLmConfig",
    "PrefixLmConfig",
    "SpanCorruptionConfig",
    "DenoiserConfig",
    "Ul2Config",
    "UL2_DENOISERS",
    "MlmConfig",
    "ObjectiveConfig",
    "causal_lm",
    "prefix_lm",
    "span_corruption",
    "ul2",
    "mlm",
    "noise_span_mask",
    "random_segmentation",
    "corrupt_spans",
    "dense_targets",
    "OBJECTIVES",
    "ObjectivePlugin",
    "build_objective",
]

# Called as objective(tokens, rng, ends_document=...).
Objective = Callable[..., Example]

# Name -> (config class, function). A config class's ``name`` is its key here.
OBJECTIVES: dict[str, tuple[type, Callable[..., Example]]] = {
    "causal_lm": (CausalLmConfig, causal_lm),
    "prefix_lm": (PrefixLmConfig, prefix_lm),
    "span_corruption": (SpanCorruptionConfig, span_corruption),
    "ul2": (Ul2Config, ul2),
    "mlm": (MlmConfig, mlm),
}


@dataclass(frozen=True)
class ObjectivePlugin(Plugin):
    """An objective of the user's own (``objective.name``), called as the built-ins are.

    The protocol: a function ``fn(tokens, rng, cfg, special, *, ends_document) -> Example``
    (``tokens`` int ``[L]`` of one document chunk without special tokens, ``rng`` the
    example's numpy Generator, ``special`` the tokenizer's
    :class:`~archzoo.data.special.SpecialTokens`), whose ``cfg`` parameter is annotated with
    its own frozen config dataclass: the settings next to the path are that dataclass's fields,
    checked as built-in settings are. The config class may say how much longer an example is
    than its chunk, as ``growth: ClassVar = (added tokens, tokens per chunk token)`` (default
    ``(1, 1.0)``: one eos), so the pipeline picks chunks whose examples fit the rows.

    An objective whose examples carry ``target_positions`` (MLM-style: targets read off the
    inputs' positions) trains the encoder family; one without trains the others.

    Attributes:
      config: the settings, an instance of the ``cfg`` annotation.
      targets_at_positions: its example of a probe chunk carries ``target_positions``.
    """

    config: Any = None
    targets_at_positions: bool = dataclasses.field(default=False, compare=False)

    what = "objective"

    @classmethod
    def config_class(cls, obj, path: str = "", key: str = "objective.name", where: str = "") -> type:
        """The dataclass the ``cfg`` parameter of ``obj`` is annotated with."""
        try:
            hints = typing.get_type_hints(obj)
        except Exception as e:
            raise ConfigError(f"{where}{key}: {path}: its annotations cannot be read ({type(e).__name__}: {e})") from None
        config = hints.get("cfg")
        if isinstance(config, type) and dataclasses.is_dataclass(config) and not config.__dataclass_params__.frozen:
            raise ConfigError(f"{where}{key}: {path}: its config dataclass {config.__name__} must be frozen (@dataclass(frozen=True)): run configs are compared and hashed")
        if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
            raise ConfigError(
                f"{where}{key}: {path}: annotate its cfg parameter with its own config dataclass "
                f"(def {getattr(obj, '__name__', 'objective')}(tokens, rng, cfg: MyConfig, special, *, ends_document)), got {config!r}"
            )
        return config

    @classmethod
    def check(cls, obj, path, key, where):
        if not callable(obj) or inspect.isclass(obj):
            raise ConfigError(f"{where}{key}: {path} is {with_article(type(obj).__name__)}, not an objective function")
        params = inspect.signature(obj).parameters
        needed = ("tokens", "rng", "cfg", "special", "ends_document")
        missing = [n for n in needed if n not in params]
        if missing:
            raise ConfigError(
                f"{where}{key}: {path} has the wrong signature {inspect.signature(obj)}: an objective is "
                f"fn(tokens, rng, cfg, special, *, ends_document) -> Example; it lacks {', '.join(missing)}"
            )
        cls.config_class(obj, path, key, where)

    @classmethod
    def from_config(cls, value, key, data=None, leaf=None):
        plugin = super().from_config(value, key, data, leaf)
        if plugin.config is not None:
            return plugin
        settings = value if isinstance(value, dict) else {}
        given = type(settings)({k: v for k, v in settings.items() if k != "path"})
        for attr in ("lines", "file"):  # keep the file and line of each setting for messages
            if hasattr(settings, attr):
                setattr(given, attr, getattr(settings, attr))
        config_class = cls.config_class(plugin.resolve(), plugin.path, key)
        where = _where(data, leaf)
        missing = [f.name for f in dataclasses.fields(config_class) if f.init and _no_default(f) and f.name not in given]
        if missing:
            raise ConfigError(f"{where}{key}: {plugin.path} needs the setting(s) {', '.join(missing)} (no default in {config_class.__name__})")
        try:
            config = from_dict(config_class, given, prefix=f"{key}.")
        except ConfigError:
            raise
        except Exception as e:  # the user's own __post_init__ refused a value: say so at the key
            raise ConfigError(f"{where}{key}: {config_class.__name__} refuses these settings: {type(e).__name__}: {e}") from None
        plugin = cls(plugin.path, (), config)
        try:
            example = _probe_example(plugin, SpecialTokens())
        except Exception as e:  # what the user's function did on a probe chunk, at the key
            raise ConfigError(f"{where}{key}: {plugin.path} fails on a probe chunk of {_PROBE_LEN} tokens: {type(e).__name__}: {e}") from None
        object.__setattr__(plugin, "targets_at_positions", example.target_positions is not None)
        return plugin

    @classmethod
    def parse_options(cls, obj, path, given, key, holder):
        return ()  # the settings are the config dataclass's fields (from_config)

    def to_config(self):
        settings = to_dict(self.config) if self.config is not None else {}
        defaults = self.config is not None and not any(_no_default(f) for f in dataclasses.fields(self.config))
        default = to_dict(type(self.config)()) if defaults else None
        return self.path if settings == default else {"path": self.path, **settings}

    @property
    def growth(self) -> tuple[int, float]:
        """(tokens added, tokens per chunk token) of the longest example, as its config says
        (a class attribute, or a property of the settings)."""
        return tuple(getattr(self.config, "growth", (1, 1.0)))

    def __str__(self) -> str:
        return self.path


def _no_default(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


_PROBE_LEN = 24  # tokens of the chunk a plug-in objective is tried on


def _probe_example(plugin: ObjectivePlugin, special: SpecialTokens):
    """The plug-in's example of a chunk of ordinary tokens that ends its document, checked
    (:func:`check_example`)."""
    probe = np.arange(special.count, special.count + _PROBE_LEN, dtype=np.int32)
    example = plugin.construct(probe, np.random.default_rng(0), cfg=plugin.config, special=special, ends_document=True)
    check_example(example, plugin.path, special)
    return example


def check_example(example, label: str, special: SpecialTokens) -> None:
    """Refuses what a user's objective returned when it is not an :class:`Example` of int ids.

    Raises:
      TypeError: naming the objective and what came back.
    """
    if not isinstance(example, Example):
        raise TypeError(f"objective {label} returned an object of type {type(example).__name__}; an objective returns archzoo.objectives.Example(inputs, targets)")
    if example.targets.size == 0:
        raise ValueError(f"objective {label} returned an example without targets: {example!r}")


@dataclass(frozen=True)
class ObjectiveConfig:
    """Which objective a run trains on, and the settings of each (only the named one is used).

    Attributes:
      name: one of the keys of OBJECTIVES.
      causal_lm, prefix_lm, span_corruption, ul2, mlm: settings of that objective.
    """

    name: Literal["causal_lm", "prefix_lm", "span_corruption", "ul2", "mlm"] | ObjectivePlugin = "causal_lm"
    causal_lm: CausalLmConfig = dataclasses.field(default_factory=CausalLmConfig)
    prefix_lm: PrefixLmConfig = dataclasses.field(default_factory=PrefixLmConfig)
    span_corruption: SpanCorruptionConfig = dataclasses.field(default_factory=SpanCorruptionConfig)
    ul2: Ul2Config = dataclasses.field(default_factory=Ul2Config)
    mlm: MlmConfig = dataclasses.field(default_factory=MlmConfig)

    def __post_init__(self):
        accept_paths(self, "objective.", "name")

    @property
    def selected(self):
        """The settings of the named objective (a plug-in's: its config dataclass)."""
        if isinstance(self.name, ObjectivePlugin):
            return self.name.config
        return getattr(self, self.name)

    @property
    def label(self) -> str:
        """The built-in name, or the plug-in's import path."""
        return str(self.name)


def build_objective(cfg, special: SpecialTokens = SpecialTokens()) -> Objective:
    """The objective a config describes, as ``objective(tokens, rng) -> Example``.

    Args:
      cfg: an ObjectiveConfig, or the config of one objective (CausalLmConfig, PrefixLmConfig,
        SpanCorruptionConfig, Ul2Config, MlmConfig).
      special: the reserved ids of the tokenizer.

    Returns:
      A picklable callable taking int ``[L]`` tokens, a numpy Generator and the keyword
      ``ends_document``.

    Raises:
      ConfigError: for an MLM config without a valid vocab_size.
      TypeError: for anything that is not one of the configs above.
    """
    if isinstance(cfg, ObjectiveConfig) and isinstance(cfg.name, ObjectivePlugin):
        plugin = cfg.name
        _probe_example(plugin, special)  # with the tokenizer's own reserved ids
        return functools.partial(plugin.resolve(), cfg=plugin.config, special=special)
    if isinstance(cfg, ObjectiveConfig):
        cfg = cfg.selected
    for config_class, function in OBJECTIVES.values():
        if type(cfg) is config_class:
            if isinstance(cfg, MlmConfig):
                cfg.check_vocab(special)
            return functools.partial(function, cfg=cfg, special=special)
    known = ", ".join(c.__name__ for c, _ in OBJECTIVES.values())
    raise TypeError(f"build_objective: expected an objective config ({known}) or ObjectiveConfig, got {cfg!r}")
