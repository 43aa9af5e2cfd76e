"""The encoder-decoder family (T5, BART): a bidirectional encoder and a decoder that
cross-attends to it, sharing one token embedding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from archzoo import masks
from archzoo.masks import TokenFacts
from archzoo.models.base import LanguageModel
from archzoo.models.cache import KVCache, empty_facts, write_facts
from archzoo.models.config import ModelConfig
from archzoo.models.self_attention import self_attention_mask
from archzoo.models.stack import Stack

__all__ = ["EncoderDecoder"]


class EncoderDecoder(LanguageModel):
    """Shared embedding, encoder stack, decoder stack with cross-attention, output head."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self._init_embedding(cfg, rngs)
        self.encoder = Stack(cfg, cfg.encoder_layers, cross=False, bidirectional=True, rngs=rngs)
        self.decoder = Stack(cfg, cfg.num_layers, cross=True, bidirectional=False, rngs=rngs)

    def encode(self, tokens, facts: TokenFacts | None = None) -> tuple[jax.Array, TokenFacts]:
        """Encoder output ``[B, S, D]`` and the (checked) encoder facts."""
        tokens, facts = self.check_inputs(tokens, facts, "encoder ")
        mask = self_attention_mask(self.config, facts, bidirectional=True)
        memory, _ = self.encoder(self.embed(tokens, self.dtype), facts, mask)
        return memory, facts

    def cross_kv(self, memory_BSD: jax.Array) -> list:
        """Per decoder layer, the encoder output projected to keys and values (computed once)."""
        return [block.cross_attn.project_kv(memory_BSD) for block in self.decoder.blocks]

    def decode(self, tokens, facts: TokenFacts | None, memory_BSD, memory_facts: TokenFacts, *, cache: KVCache | None = None):
        """Decoder logits given the encoder output (or, with a cache, its cached projections)."""
        tokens, facts = self.check_inputs(tokens, facts, "decoder ")
        if cache is None:
            kv_facts, cross_kv = facts, self.cross_kv(memory_BSD)
        else:
            kv_facts = write_facts(cache.facts, facts, cache.index)
            cross_kv = list(zip(cache.cross_keys, cache.cross_values))
            memory_facts = cache.memory_facts
        mask = self_attention_mask(self.config, facts, kv_facts)
        cross_mask = masks.cross(facts, memory_facts)
        x = self.embed(tokens, self.dtype)
        x, kv = self.decoder(x, facts, mask, kv_facts=kv_facts, cache=cache, cross_kv=cross_kv, cross_mask=cross_mask)
        logits = self.logits(x)
        if cache is None:
            return logits
        return logits, cache.advance(kv, kv_facts, tokens.shape[1])

    def __call__(
        self,
        encoder_tokens,
        decoder_tokens,
        encoder_facts: TokenFacts | None = None,
        decoder_facts: TokenFacts | None = None,
    ) -> jax.Array:
        """Decoder logits ``[B, L, V]`` float32.

        Args:
          encoder_tokens: int ``[B, S]`` (the example's inputs).
          decoder_tokens: int ``[B, L]`` (targets shifted right).
          encoder_facts, decoder_facts: token facts; segment ids pair decoder tokens with the
            encoder tokens of the same packed example.
        """
        memory, encoder_facts = self.encode(encoder_tokens, encoder_facts)
        return self.decode(decoder_tokens, decoder_facts, memory, encoder_facts)

    def init_cache(self, memory_BSD: jax.Array, memory_facts: TokenFacts, max_len: int) -> KVCache:
        """A decoder cache of ``max_len`` slots holding the encoder output's projections."""
        cfg = self.config
        B = memory_BSD.shape[0]
        shape = (B, max_len, cfg.attention.kv_heads, cfg.head_dim)
        zeros = tuple(jnp.zeros(shape, self.dtype) for _ in range(cfg.num_layers))
        cross = self.cross_kv(memory_BSD)
        return KVCache(
            zeros,
            zeros,
            empty_facts(B, max_len),
            jnp.zeros((), jnp.int32),
            cross_keys=tuple(k for k, _ in cross),
            cross_values=tuple(v for _, v in cross),
            memory_facts=memory_facts,
        )
