"""The self-attention mask of every family, from its config: one function, so the decoder, the
encoder and both stacks of the encoder-decoder build their masks the same way."""

from __future__ import annotations

from archzoo import masks
from archzoo.masks import Mask, TokenFacts
from archzoo.models.config import ModelConfig

__all__ = ["self_attention_mask"]


def self_attention_mask(
    cfg: ModelConfig, q: TokenFacts, k: TokenFacts | None = None, *, bidirectional: bool = False
) -> Mask:
    """The self-attention mask a config asks for, over query facts ``q`` and key facts ``k``.

    ``bidirectional`` gives the encoder's ``full & same_segment``; otherwise ``causal`` or
    ``prefix`` by ``cfg.mask``, packed by ``same_segment``, and narrowed by
    ``sliding_window(attention.sliding_window)`` when set.
    """
    if bidirectional:
        mask = masks.full(q, k)
    else:
        mask = (masks.prefix if cfg.mask == "prefix" else masks.causal)(q, k)
        if cfg.attention.sliding_window is not None:
            mask = mask & masks.sliding_window(cfg.attention.sliding_window, q, k)
    return mask & masks.same_segment(q, k)
