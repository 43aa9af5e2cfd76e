"""Causal language modelling ("full LM"): predict every token of the text from the ones before it.

The example has empty inputs and the whole text as targets (Raffel et al. 2020 §3.3.2; Wang et
al. 2022 §3.2, "full language modeling"). A causal decoder computes the loss on every token; an
encoder-decoder sees an empty encoder input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from archzoo.data.special import SpecialTokens
from archzoo.objectives.example import Example

__all__ = ["CausalLmConfig", "causal_lm"]


@dataclass(frozen=True)
class CausalLmConfig:
    """Settings of causal language modelling.

    Attributes:
      append_eos: end the targets of a document's last chunk with eos, so the model learns
        where documents stop (a chunk cut from the middle of a document never gets one).
    """

    name: ClassVar[str] = "causal_lm"

    append_eos: bool = True


def causal_lm(
    tokens: np.ndarray,
    rng: np.random.Generator | None = None,
    cfg: CausalLmConfig = CausalLmConfig(),
    special: SpecialTokens = SpecialTokens(),
    *,
    ends_document: bool = True,
) -> Example:
    """Makes a causal-LM example: no inputs, the text as targets.

    Args:
      tokens: int ``[L]``; one tokenized document chunk, no special tokens.
      rng: unused (nothing is random); accepted so every objective is called the same way.
      cfg: settings.
      special: the reserved ids.
      ends_document: whether the chunk ends its document; eos is appended only then.

    Returns:
      Example(inputs=``[0]``, targets=``[L]`` text, ``[L + 1]`` with eos appended).
    """
    text = np.asarray(tokens, dtype=np.int32).reshape(-1)
    targets = np.append(text, np.int32(special.eos)) if cfg.append_eos and ends_document else text
    return Example(inputs=np.zeros(0, np.int32), targets=targets)
