"""The self-attention mask of every family, from its config: one function, so the decoder, the
encoder and both stacks of the encoder-decoder build their masks the same way."""

from __future__ import annotations

from archzoo import masks
from archzoo.masks import Mask, TokenFacts
from archzoo.models.config import ModelConfig

__all__ = ["self_attention_mask", "sees_later_keys"]


def self_attention_mask(cfg: ModelConfig, q: TokenFacts, k: TokenFacts | None = None, *, bidirectional: bool = False) -> Mask:
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


def sees_later_keys(cfg: ModelConfig) -> bool:
    """Whether a decoder's mask can let a query see a key at a later position: a prefix mask
    does inside the prefix, unless a sliding window keeps every key in the past.

    Such a stack reads T5 relative buckets both ways, the whole stack alike, as Mesh
    TensorFlow's prefix LM does (``bidirectional = not fully_autoregressive``); a causal stack
    keeps one-way buckets (the T5 decoder's).
    """
    return cfg.mask == "prefix" and cfg.attention.sliding_window is None
