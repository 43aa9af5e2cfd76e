"""UL2's mixture of denoisers (Tay et al. 2022, "UL2: Unifying Language Learning Paradigms").

Each example is drawn from one denoiser, chosen at random by the mixture weights, and its inputs
start with the paradigm token of that denoiser (§3.1.3, mode switching):

- R-denoisers ``[R]``: regular span corruption, short spans and low density (T5's);
- X-denoisers ``[X]``: extreme span corruption, long spans and/or high density;
- S-denoiser ``[S]``: sequential denoising, i.e. prefix LM.

The default mixture is UL2's seven denoisers (§3.1.2, Table 1): R with (mean_span_length,
noise_density) = (3, 0.15) and (8, 0.15); X with (3, 0.5), (8, 0.5), (64, 0.15) and (64, 0.5);
and one S-denoiser. Weights: S 0.2, R 0.4 and X 0.4, split evenly within each paradigm (0.2 per
R-denoiser, 0.1 per X-denoiser), the proportions the public re-implementations of UL2's recipe
use; change them through ``Ul2Config.denoisers``.

Span-based denoisers use T5's span corruption (span_corruption.py) with the denoiser's settings;
the S-denoiser cuts the text uniformly (prefix_lm.py).
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from archzoo.config import invalid
from archzoo.data.special import SpecialTokens
from archzoo.objectives.example import Example
from archzoo.objectives.prefix_lm import prefix_split
from archzoo.objectives.span_corruption import check_span_settings, corrupt_spans, noise_span_mask

__all__ = ["DenoiserConfig", "Ul2Config", "UL2_DENOISERS", "ul2", "choose_denoiser", "mode_token"]


@dataclass(frozen=True)
class DenoiserConfig:
    """One denoiser of the mixture.

    Attributes:
      mode: paradigm, ``R`` (regular), ``X`` (extreme) or ``S`` (sequential, prefix LM).
      weight: relative frequency in the mixture, > 0 (weights need not sum to 1).
      noise_density: fraction of tokens dropped, in (0, 1); R and X only.
      mean_span_length: mean tokens per dropped span, >= 1; R and X only.
    """

    mode: Literal["R", "X", "S"] = "R"
    weight: float = 1.0
    noise_density: float = 0.15
    mean_span_length: float = 3.0

    def __post_init__(self):
        if self.mode not in ("R", "X", "S"):
            raise invalid("denoiser.mode", f"must be 'R', 'X' or 'S', got {self.mode!r}")
        if not self.weight > 0:
            raise invalid("denoiser.weight", f"must be > 0, got {self.weight}")
        check_span_settings("denoiser", self.noise_density, self.mean_span_length)


UL2_DENOISERS: tuple[DenoiserConfig, ...] = (
    DenoiserConfig("R", 0.2, noise_density=0.15, mean_span_length=3.0),
    DenoiserConfig("R", 0.2, noise_density=0.15, mean_span_length=8.0),
    DenoiserConfig("X", 0.1, noise_density=0.5, mean_span_length=3.0),
    DenoiserConfig("X", 0.1, noise_density=0.5, mean_span_length=8.0),
    DenoiserConfig("X", 0.1, noise_density=0.15, mean_span_length=64.0),
    DenoiserConfig("X", 0.1, noise_density=0.5, mean_span_length=64.0),
    DenoiserConfig("S", 0.2),
)


@dataclass(frozen=True)
class Ul2Config:
    """Settings of the UL2 mixture.

    Attributes:
      denoisers: the mixture, at least one denoiser (default: UL2's seven, see the module).
      min_input_length: S-denoiser: fewest tokens before the cut (prefix_lm's).
      min_target_length: S-denoiser: fewest tokens after the cut (prefix_lm's).
      append_eos: end the targets with eos (see CausalLmConfig.append_eos).
    """

    name: ClassVar[str] = "ul2"

    denoisers: tuple[DenoiserConfig, ...] = UL2_DENOISERS
    min_input_length: int = 1
    min_target_length: int = 1
    append_eos: bool = True

    def __post_init__(self):
        if len(self.denoisers) == 0:
            raise invalid("ul2.denoisers", "needs at least one denoiser (mode R, X or S with a weight)")
        for d in self.denoisers:
            if not isinstance(d, DenoiserConfig):
                raise invalid("ul2.denoisers", f"expected DenoiserConfig entries, got {d!r}")
        if self.min_input_length < 0:
            raise invalid("ul2.min_input_length", f"must be >= 0, got {self.min_input_length}")
        if self.min_target_length < 0:
            raise invalid("ul2.min_target_length", f"must be >= 0, got {self.min_target_length}")


def mode_token(mode: str, special: SpecialTokens) -> int:
    """Id of the paradigm token of ``mode`` (``R``, ``X`` or ``S``)."""
    return {"R": special.mode_r, "X": special.mode_x, "S": special.mode_s}[mode]


def choose_denoiser(cfg: Ul2Config, rng: np.random.Generator) -> int:
    """Draws which denoiser makes the next example.

    Args:
      cfg: the mixture.
      rng: the example's generator; ul2() calls this first, then corrupts with the same rng.

    Returns:
      Index into cfg.denoisers, with probability proportional to its weight.
    """
    cumulative = list(itertools.accumulate(d.weight for d in cfg.denoisers))
    return min(bisect.bisect_right(cumulative, rng.random() * cumulative[-1]), len(cumulative) - 1)


def ul2(
    tokens: np.ndarray,
    rng: np.random.Generator,
    cfg: Ul2Config = Ul2Config(),
    special: SpecialTokens = SpecialTokens(),
    *,
    ends_document: bool = True,
) -> Example:
    """Makes a UL2 example: a denoiser drawn from the mixture, its mode token before the inputs.

    Args:
      tokens: int ``[L]``; one tokenized document chunk, no special tokens.
      rng: the example's generator (see example_rng).
      cfg: the mixture.
      special: the reserved ids.
      ends_document: whether the chunk ends its document; eos is appended only then.

    Returns:
      R/X: Example(inputs=``[mode] ++ span-corrupted text``, targets=``<0> span_0 ...``).
      S: Example(inputs=``[mode_s] ++ text[:cut]``, targets=``text[cut:]``).
      Targets end with eos when cfg.append_eos and the chunk ends its document.
    """
    text = np.asarray(tokens, dtype=np.int32).reshape(-1)
    denoiser = cfg.denoisers[choose_denoiser(cfg, rng)]
    if denoiser.mode == "S":
        cut = prefix_split(text.size, cfg.min_input_length, cfg.min_target_length, rng)
        inputs, targets = text[:cut], text[cut:]
    else:
        mask = noise_span_mask(text.size, denoiser.noise_density, denoiser.mean_span_length, rng, special.num_sentinels)
        corrupted = corrupt_spans(text, mask, special)
        inputs, targets = corrupted.inputs, corrupted.targets
    inputs = np.concatenate([[mode_token(denoiser.mode, special)], inputs]).astype(np.int32)
    if cfg.append_eos and ends_document:
        targets = np.append(targets, np.int32(special.eos))
    return Example(inputs=inputs, targets=targets)
