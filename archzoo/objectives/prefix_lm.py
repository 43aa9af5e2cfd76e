"""Prefix language modelling: the text is cut at a random point; the model reads the part before
the cut and predicts the part after it (Raffel et al. 2020 §3.3.2; Wang et al. 2022 §3.2).

The cut is uniform over the valid positions ``[min_input_length, L - min_target_length]``, so
every split of a long enough text is equally likely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from archzoo.config import invalid
from archzoo.data.special import SpecialTokens
from archzoo.objectives.example import Example

__all__ = ["PrefixLmConfig", "prefix_lm", "prefix_split"]


@dataclass(frozen=True)
class PrefixLmConfig:
    """Settings of prefix language modelling.

    Attributes:
      min_input_length: fewest tokens the prefix (inputs) may have, >= 0.
      min_target_length: fewest tokens the continuation (targets, before eos) may have, >= 0.
      append_eos: end the targets with eos (see CausalLmConfig.append_eos).
    """

    name: ClassVar[str] = "prefix_lm"

    min_input_length: int = 1
    min_target_length: int = 1
    append_eos: bool = True

    def __post_init__(self):
        if self.min_input_length < 0:
            raise invalid("prefix_lm.min_input_length", f"must be >= 0, got {self.min_input_length}")
        if self.min_target_length < 0:
            raise invalid("prefix_lm.min_target_length", f"must be >= 0, got {self.min_target_length}")


def prefix_split(length: int, min_input_length: int, min_target_length: int, rng: np.random.Generator) -> int:
    """Draws the cut point of a prefix-LM example.

    Args:
      length: L, tokens in the text.
      min_input_length: fewest tokens before the cut.
      min_target_length: fewest tokens after the cut.
      rng: the example's generator.

    Returns:
      The cut, uniform over ``[min_input_length, L - min_target_length]``. A text too short for
      both minimums keeps ``min(L, min_target_length)`` tokens as targets and gives the rest to
      the inputs (the cut is then not random).
    """
    low, high = min_input_length, length - min_target_length
    if low > high:
        return max(high, 0)
    return int(rng.integers(low, high + 1))


def prefix_lm(
    tokens: np.ndarray,
    rng: np.random.Generator,
    cfg: PrefixLmConfig = PrefixLmConfig(),
    special: SpecialTokens = SpecialTokens(),
    *,
    ends_document: bool = True,
) -> Example:
    """Makes a prefix-LM example: inputs = text[:cut], targets = text[cut:].

    Args:
      tokens: int ``[L]``; one tokenized document chunk, no special tokens.
      rng: the example's generator (see example_rng).
      cfg: settings.
      special: the reserved ids.
      ends_document: whether the chunk ends its document; eos is appended only then.

    Returns:
      Example(inputs=``[cut]``, targets=``[L - cut]``, plus eos when cfg.append_eos and the
      chunk ends its document).
      ``inputs ++ targets`` is the text (then eos).
    """
    text = np.asarray(tokens, dtype=np.int32).reshape(-1)
    cut = prefix_split(text.size, cfg.min_input_length, cfg.min_target_length, rng)
    targets = text[cut:]
    if cfg.append_eos and ends_document:
        targets = np.append(targets, np.int32(special.eos))
    return Example(inputs=text[:cut], targets=targets)
