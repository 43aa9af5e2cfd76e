"""Masked language modelling (BERT; Devlin et al. 2019 §3.1, "Task #1: Masked LM").

A fraction ``mask_rate`` of the positions is chosen for prediction (exactly
``round(L * mask_rate)`` of them, at least 1, uniformly without replacement). Each chosen token
is replaced by the mask token with probability ``replace_with_mask`` (0.8), by a random ordinary
token with probability ``replace_with_random`` (0.1), and left unchanged otherwise (0.1). A
random token is uniform over the ordinary ids ``[special.count, vocab_size)``, never a reserved
id; as in BERT it may by chance equal the original.

Masking is dynamic (RoBERTa, Liu et al. 2019 §4.1): the mask is drawn when the example is made,
from the generator the caller passes, so ``example_rng(seed, epoch, index)`` gives a new mask
every epoch and the same mask for the same (seed, epoch, index).

Example layout: ``inputs`` is the corrupted text (same length as the text), ``targets`` the
original tokens at the chosen positions only, and ``target_positions`` those positions in
increasing order. ``dense_targets`` turns this into a full-length target row and a 0/1 weight
row for an encoder's per-token loss. No [CLS]/[SEP] or eos is added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from archzoo.config import invalid
from archzoo.data.special import SpecialTokens
from archzoo.objectives.example import Example

__all__ = ["MlmConfig", "mlm", "dense_targets"]


@dataclass(frozen=True)
class MlmConfig:
    """Settings of masked language modelling.

    Attributes:
      mask_rate: fraction of positions chosen for prediction, in (0, 1). BERT: 0.15.
      replace_with_mask: chance a chosen token becomes the mask token. BERT: 0.8.
      replace_with_random: chance a chosen token becomes a random ordinary token. BERT: 0.1.
        The rest (1 - both) stays unchanged.
      vocab_size: V, the tokenizer's vocabulary size; random tokens are drawn from
        ``[special.count, V)``. Required (None = not set).
    """

    name: ClassVar[str] = "mlm"

    mask_rate: float = 0.15
    replace_with_mask: float = 0.8
    replace_with_random: float = 0.1
    vocab_size: int | None = None

    def __post_init__(self):
        if not 0.0 < self.mask_rate < 1.0:
            raise invalid("mlm.mask_rate", f"must be in (0, 1), got {self.mask_rate}")
        if not 0.0 <= self.replace_with_mask <= 1.0:
            raise invalid("mlm.replace_with_mask", f"must be in [0, 1], got {self.replace_with_mask}")
        if not 0.0 <= self.replace_with_random <= 1.0:
            raise invalid("mlm.replace_with_random", f"must be in [0, 1], got {self.replace_with_random}")
        if self.replace_with_mask + self.replace_with_random > 1.0 + 1e-9:
            raise invalid(
                "mlm.replace_with_random",
                f"replace_with_mask + replace_with_random must be <= 1, got "
                f"{self.replace_with_mask} + {self.replace_with_random}",
            )
        if self.vocab_size is not None and self.vocab_size < 1:
            raise invalid("mlm.vocab_size", f"must be >= 1, got {self.vocab_size}")

    def check_vocab(self, special: SpecialTokens) -> int:
        """The vocabulary size, checked against the reserved ids; raises a ConfigError naming it."""
        if self.vocab_size is None or self.vocab_size <= special.count:
            raise invalid(
                "mlm.vocab_size",
                f"must be set to the tokenizer's vocabulary size, above the {special.count} reserved "
                f"ids (random replacements are drawn from the ordinary ids), got {self.vocab_size}",
            )
        return self.vocab_size


def mlm(
    tokens: np.ndarray,
    rng: np.random.Generator,
    cfg: MlmConfig,
    special: SpecialTokens = SpecialTokens(),
    *,
    ends_document: bool = True,
) -> Example:
    """Makes an MLM example (BERT's 80/10/10 corruption, dynamic masking).

    Args:
      tokens: int ``[L]``; one tokenized document chunk, no special tokens.
      rng: the example's generator; pass ``example_rng(seed, epoch, index)`` for a new mask
        each epoch.
      cfg: mask_rate, replace_with_mask, replace_with_random, vocab_size (must be set).
      special: the reserved ids.
      ends_document: accepted so every objective is called the same way; MLM adds no eos.

    Returns:
      Example(inputs=``[L]`` corrupted text, targets=``[K]`` original tokens at the chosen
      places, target_positions=``[K]`` increasing), ``K = max(1, round(L * mask_rate))`` (0 for
      an empty text).
    """
    vocab_size = cfg.check_vocab(special)
    text = np.asarray(tokens, dtype=np.int32).reshape(-1)
    length = text.size
    num_chosen = min(length, max(1, int(np.round(length * cfg.mask_rate)))) if length else 0
    positions = np.sort(rng.choice(length, num_chosen, replace=False)).astype(np.int32)
    u = rng.random(num_chosen)
    random_tokens = rng.integers(special.count, vocab_size, size=num_chosen, dtype=np.int32)
    replacement = np.where(u < cfg.replace_with_mask, np.int32(special.mask), text[positions])
    use_random = (u >= cfg.replace_with_mask) & (u < cfg.replace_with_mask + cfg.replace_with_random)
    replacement = np.where(use_random, random_tokens, replacement)
    inputs = text.copy()
    inputs[positions] = replacement
    return Example(inputs=inputs, targets=text[positions], target_positions=positions)


def dense_targets(example: Example, pad: int = SpecialTokens().pad) -> tuple[np.ndarray, np.ndarray]:
    """An MLM example's targets as full-length rows, for a per-token loss on an encoder.

    Args:
      example: an Example with target_positions (from mlm).
      pad: the id written where nothing is predicted.

    Returns:
      (targets int32 ``[L]``: the original token at chosen places, pad elsewhere;
       weights float32 ``[L]``: 1 at chosen places, 0 elsewhere).
    """
    assert example.target_positions is not None, "dense_targets needs an MLM example"
    targets = np.full(example.inputs.shape, pad, dtype=np.int32)
    weights = np.zeros(example.inputs.shape, dtype=np.float32)
    targets[example.target_positions] = example.targets
    weights[example.target_positions] = 1.0
    return targets, weights
