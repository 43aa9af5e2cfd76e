"""The self-attention mask of every family, from its config: one function, so the decoder, the
encoder and both stacks of the encoder-decoder build their masks the same way."""

from __future__ import annotations

from archzoo import masks
from archzoo.layers.plugins import MaskPlugin
from archzoo.masks import Mask, TokenFacts
from archzoo.models.config import ModelConfig

__all__ = ["self_attention_mask"]


def self_attention_mask(
    cfg: ModelConfig, q: TokenFacts, k: TokenFacts | None = None, *, bidirectional: bool = False
) -> Mask:
    """The self-attention mask a config asks for, over query facts ``q`` and key facts ``k``.

    ``bidirectional`` (an encoder stack) gives ``cfg.encoder_mask``: ``full`` or the user's
    mask; otherwise ``cfg.mask``: ``causal``, ``prefix`` or the user's mask, narrowed by
    ``sliding_window(attention.sliding_window)`` when set. Either is packed by ``same_segment``.
    """
    kind = cfg.encoder_mask if bidirectional else cfg.mask
    if isinstance(kind, MaskPlugin):
        mask = kind.build(q, k)
    elif bidirectional:
        mask = masks.full(q, k)
    else:
        mask = (masks.prefix if kind == "prefix" else masks.causal)(q, k)
    if not bidirectional and cfg.attention.sliding_window is not None:
        mask = mask & masks.sliding_window(cfg.attention.sliding_window, q, k)
    return mask & masks.same_segment(q, k)
