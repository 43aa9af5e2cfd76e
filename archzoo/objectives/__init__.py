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
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Callable, Literal


from archzoo.config import invalid
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
class ObjectiveConfig:
    """Which objective a run trains on, and the settings of each (only the named one is used).

    Attributes:
      name: one of the keys of OBJECTIVES.
      causal_lm, prefix_lm, span_corruption, ul2, mlm: settings of that objective.
    """

    name: Literal["causal_lm", "prefix_lm", "span_corruption", "ul2", "mlm"] = "causal_lm"
    causal_lm: CausalLmConfig = dataclasses.field(default_factory=CausalLmConfig)
    prefix_lm: PrefixLmConfig = dataclasses.field(default_factory=PrefixLmConfig)
    span_corruption: SpanCorruptionConfig = dataclasses.field(default_factory=SpanCorruptionConfig)
    ul2: Ul2Config = dataclasses.field(default_factory=Ul2Config)
    mlm: MlmConfig = dataclasses.field(default_factory=MlmConfig)

    def __post_init__(self):
        if self.name not in OBJECTIVES:
            raise invalid("objective.name", f"{self.name!r} is not one of {', '.join(OBJECTIVES)}")

    @property
    def selected(self):
        """The settings of the named objective."""
        return getattr(self, self.name)


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
    if isinstance(cfg, ObjectiveConfig):
        cfg = cfg.selected
    for config_class, function in OBJECTIVES.values():
        if type(cfg) is config_class:
            if isinstance(cfg, MlmConfig):
                cfg.check_vocab(special)
            return functools.partial(function, cfg=cfg, special=special)
    known = ", ".join(c.__name__ for c, _ in OBJECTIVES.values())
    raise TypeError(f"build_objective: expected an objective config ({known}) or ObjectiveConfig, got {cfg!r}")
