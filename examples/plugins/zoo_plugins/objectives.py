"""Reverse language modelling: predict the text right to left.

A decoder reads the chunk from its last token to its first; an encoder-decoder gets an empty
encoder input, as for causal LM. The example's targets are the reversed text, then eos.
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from archzoo.objectives import Example


@dataclass(frozen=True)
class ReverseLmConfig:
    """Settings of reverse LM.

    Attributes:
      append_eos: end a document's last chunk with eos (after its first token, read last).
    """

    growth: ClassVar[tuple[int, float]] = (1, 1.0)  # one eos at most

    append_eos: bool = True


def reverse_lm(tokens, rng, cfg: ReverseLmConfig, special, *, ends_document=True) -> Example:
    """No inputs; the chunk reversed as targets (and eos when it ends its document)."""
    text = np.asarray(tokens, np.int32)[::-1]
    if cfg.append_eos and ends_document:
        text = np.append(text, np.int32(special.eos))
    return Example(inputs=np.zeros(0, np.int32), targets=text)
