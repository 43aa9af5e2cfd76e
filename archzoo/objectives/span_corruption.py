"""Span corruption (T5; Raffel et al. 2020 §3.1.4 and §3.3.4): drop random spans of the text,
put a sentinel where each span was, and predict the dropped spans.

The noise follows T5's procedure exactly:

- ``num_noise = round(L * noise_density)``, clipped to ``[1, L - 1]``;
- ``num_spans = round(num_noise / mean_span_length)``, at least 1 (and at most the number of
  non-noise tokens and of reserved sentinels);
- the noise tokens are cut into ``num_spans`` non-empty spans, and the non-noise tokens into as
  many non-empty spans, each by random segmentation (every composition of the count into that
  many positive parts is equally likely);
- the spans interleave starting with non-noise: ``keep_0 noise_0 keep_1 noise_1 ...``, so the
  text always starts with kept tokens and ends inside a noise span.

Rounding is half to even, as in T5. Example layout (sentinel ``<i>``, eos ``</s>``)::

    text     Thank you for inviting me to your party last week
    inputs   Thank you <0> me to your party <1> week
    targets  <0> for inviting <1> last </s>

The targets carry no final sentinel: on a document's last chunk the eos ends them (T5's
Figure 2 draws a final ``<Z>`` that plays the same part); a chunk cut from inside a document
ends with its last span. The inputs carry no eos; a feature converter that wants one adds it.
When a text would need more spans than there are sentinels, the number of spans is capped at
the number of sentinels, so spans grow longer than ``mean_span_length`` on such texts (with
density 0.15 and mean span 3 that happens above about 2000 tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from archzoo.config import invalid
from archzoo.data.special import SpecialTokens
from archzoo.objectives.example import Example

__all__ = [
    "SpanCorruptionConfig",
    "span_corruption",
    "span_counts",
    "random_segmentation",
    "noise_span_mask",
    "corrupt_spans",
]


@dataclass(frozen=True)
class SpanCorruptionConfig:
    """Settings of span corruption.

    Attributes:
      noise_density: fraction of the tokens dropped, in (0, 1). T5: 0.15.
      mean_span_length: mean number of tokens in a dropped span, >= 1. T5: 3.0.
      append_eos: end the targets with eos (see CausalLmConfig.append_eos).
    """

    name: ClassVar[str] = "span_corruption"

    noise_density: float = 0.15
    mean_span_length: float = 3.0
    append_eos: bool = True

    def __post_init__(self):
        check_span_settings("span_corruption", self.noise_density, self.mean_span_length)


def check_span_settings(prefix: str, noise_density: float, mean_span_length: float) -> None:
    """Raises a ConfigError naming ``{prefix}.noise_density`` or ``{prefix}.mean_span_length``."""
    if not 0.0 < noise_density < 1.0:
        raise invalid(f"{prefix}.noise_density", f"must be in (0, 1), got {noise_density}")
    if not mean_span_length >= 1.0:
        raise invalid(f"{prefix}.mean_span_length", f"must be >= 1 (a span holds at least one token), got {mean_span_length}")


def span_counts(length: int, noise_density: float, mean_span_length: float, max_spans: int) -> tuple[int, int]:
    """How many tokens are noise and in how many spans, for a text of ``length`` tokens.

    Args:
      length: L, tokens in the text, >= 2.
      noise_density: fraction of tokens to drop.
      mean_span_length: mean tokens per dropped span.
      max_spans: most spans allowed (the number of sentinels).

    Returns:
      (num_noise, num_spans): ``1 <= num_noise <= L - 1`` and
      ``1 <= num_spans <= min(num_noise, L - num_noise, max_spans)``.
    """
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)  # half to even
    num_spans = max(1, min(int(round(num_noise / mean_span_length)), num_noise, length - num_noise, max_spans))
    return num_noise, num_spans


def random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Cuts ``num_items`` items into ``num_segments`` non-empty segments, uniformly at random.

    Every composition of num_items into num_segments positive parts is equally likely: the
    ``num_segments - 1`` cut points are a uniform subset of the ``num_items - 1`` gaps.

    Args:
      num_items: N >= num_segments.
      num_segments: S >= 1.
      rng: the example's generator.

    Returns:
      int64 ``[S]``: segment lengths, each >= 1, summing to N.
    """
    assert 1 <= num_segments <= num_items, (num_items, num_segments)
    bounds = np.empty(num_segments + 1, dtype=np.int64)
    bounds[0], bounds[-1] = 0, num_items
    bounds[1:-1] = rng.choice(num_items - 1, num_segments - 1, replace=False, shuffle=False)
    bounds[1:-1].sort()
    bounds[1:-1] += 1
    return np.diff(bounds)


def noise_span_mask(
    length: int,
    noise_density: float,
    mean_span_length: float,
    rng: np.random.Generator,
    max_spans: int = SpecialTokens().num_sentinels,
) -> np.ndarray:
    """Which tokens of a text are dropped, by T5's procedure (see the module docstring).

    Args:
      length: L, tokens in the text.
      noise_density: fraction of tokens to drop.
      mean_span_length: mean tokens per dropped span.
      rng: the example's generator.
      max_spans: most spans allowed (the number of sentinels).

    Returns:
      bool ``[L]``; True = noise. A text of 1 token is all noise, of 0 tokens empty.
    """
    if length < 2:
        return np.ones(length, dtype=bool)
    num_noise, num_spans = span_counts(length, noise_density, mean_span_length, max_spans)
    noise_lengths = random_segmentation(num_noise, num_spans, rng)
    keep_lengths = random_segmentation(length - num_noise, num_spans, rng)
    # Noise span i starts after keep_0 + noise_0 + ... + keep_i tokens and ends noise_i later.
    lengths = np.empty(2 * num_spans, dtype=np.int64)
    lengths[0::2], lengths[1::2] = keep_lengths, noise_lengths
    ends = np.cumsum(lengths)
    flips = np.zeros(length + 1, dtype=np.int8)
    flips[ends[0::2]] = 1  # noise starts
    flips[ends[1::2]] -= 1  # noise ends (the last one at L, dropped below)
    return np.cumsum(flips[:length]).astype(bool)


def corrupt_spans(tokens: np.ndarray, noise_mask: np.ndarray, special: SpecialTokens = SpecialTokens()) -> Example:
    """Replaces each noise span by the next sentinel and collects the spans as targets.

    Args:
      tokens: int ``[L]``; the text.
      noise_mask: bool ``[L]``; True = dropped.
      special: the reserved ids; sentinel ``i`` replaces the i-th span.

    Returns:
      Example(inputs = kept tokens with sentinel ``i`` where span ``i`` was,
      targets = ``<0> span_0 <1> span_1 ...``), no eos.
    """
    text = np.asarray(tokens, dtype=np.int32).reshape(-1)
    noise = np.asarray(noise_mask, dtype=bool).reshape(-1)
    starts = noise & ~np.concatenate([[False], noise[:-1]])
    num_spans = int(starts.sum())
    if num_spans > special.num_sentinels:
        raise ValueError(f"{num_spans} noise spans but only {special.num_sentinels} sentinels are reserved")
    sentinels = (special.first_sentinel + np.arange(num_spans)).astype(np.int32)
    with_sentinels = text.copy()
    with_sentinels[starts] = sentinels
    inputs = with_sentinels[~noise | starts]
    targets = np.insert(text[noise], np.flatnonzero(starts[noise]), sentinels)
    return Example(inputs=inputs, targets=targets)


def span_corruption(
    tokens: np.ndarray,
    rng: np.random.Generator,
    cfg: SpanCorruptionConfig = SpanCorruptionConfig(),
    special: SpecialTokens = SpecialTokens(),
    *,
    ends_document: bool = True,
) -> Example:
    """Makes a span-corruption example (T5).

    Args:
      tokens: int ``[L]``; one tokenized document chunk, no special tokens.
      rng: the example's generator (see example_rng).
      cfg: noise_density, mean_span_length, append_eos.
      special: the reserved ids.
      ends_document: whether the chunk ends its document; eos is appended only then.

    Returns:
      Example(inputs=``[L - num_noise + num_spans]``, targets=``[num_noise + num_spans]`` plus
      eos when cfg.append_eos and the chunk ends its document). ``reconstruct(example, special)``
      gives the text back.
    """
    text = np.asarray(tokens, dtype=np.int32).reshape(-1)
    mask = noise_span_mask(text.size, cfg.noise_density, cfg.mean_span_length, rng, special.num_sentinels)
    example = corrupt_spans(text, mask, special)
    if not (cfg.append_eos and ends_document):
        return example
    return Example(inputs=example.inputs, targets=np.append(example.targets, np.int32(special.eos)))
