"""The encoder-decoder family (T5, BART): a bidirectional encoder and a decoder that
cross-attends to it, sharing one token embedding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from archzoo import masks
from archzoo.masks import TokenFacts
from archzoo.models.base import LanguageModel, stream_facts
from archzoo.models.cache import KVCache, empty_facts, write_facts
from archzoo.models.config import ModelConfig
from archzoo.models.output import LayerReport, ModelOutput
from archzoo.models.self_attention import self_attention_mask
from archzoo.models.stack import Stack

__all__ = ["EncoderDecoder"]


class EncoderDecoder(LanguageModel):
    """Shared embedding, encoder stack, decoder stack with cross-attention, output head."""

    source_stream = "encoder"

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self._init_embedding(cfg, rngs)
        encoder, decoder = cfg.stacks
        self.encoder = Stack(cfg, encoder, rngs=rngs)
        self.decoder = Stack(cfg, decoder, rngs=rngs)

    def encode(self, tokens, facts: TokenFacts | None = None) -> tuple[jax.Array, TokenFacts]:
        """Encoder output ``[B, S, D]`` and the (checked) encoder facts."""
        memory, facts, _ = self._encode(tokens, facts)
        return memory, facts

    def _encode(self, tokens, facts: TokenFacts | None, rng=None) -> tuple[jax.Array, TokenFacts, LayerReport]:
        tokens, facts = self.check_inputs(tokens, facts, "encoder ")
        mask = self_attention_mask(self.config, facts, bidirectional=True)
        memory, out = self.encoder(self.embed(tokens, self.dtype), facts, mask, rng=rng)
        return memory, facts, out.report

    def cross_kv(self, memory_BSD: jax.Array) -> list:
        """Per decoder layer, the encoder output projected to keys and values (computed once)."""
        return self.decoder.cross_kv(memory_BSD)

    def decode(self, tokens, facts: TokenFacts | None, memory_BSD, memory_facts: TokenFacts, *, cache: KVCache | None = None):
        """Decoder logits given the encoder output (or, with a cache, its cached projections);
        with a cache, ``(logits, updated cache)``."""
        out = self._decode(tokens, facts, memory_BSD, memory_facts, cache=cache)
        return out.logits if cache is None else (out.logits, out.cache)

    def _decode(self, tokens, facts, memory_BSD, memory_facts, *, cache: KVCache | None = None, rng=None) -> ModelOutput:
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
        x, out = self.decoder(x, facts, mask, kv_facts=kv_facts, cache=cache, cross_kv=cross_kv, cross_mask=cross_mask, rng=rng)
        new_cache = None if cache is None else cache.advance(out.kv, kv_facts, tokens.shape[1])
        return ModelOutput.of(self.logits(x), [out.report], new_cache)

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
        return self.forward(encoder_tokens, decoder_tokens, encoder_facts, decoder_facts).logits

    def forward(
        self,
        encoder_tokens,
        decoder_tokens,
        encoder_facts: TokenFacts | None = None,
        decoder_facts: TokenFacts | None = None,
        *,
        rng=None,
    ) -> ModelOutput:
        """Decoder logits with both stacks' auxiliary losses and statistics (``rng``: a key in
        training, for MoE router jitter and noise)."""
        encoder_rng, decoder_rng = (None, None) if rng is None else jax.random.split(rng)
        memory, encoder_facts, encoder_report = self._encode(encoder_tokens, encoder_facts, encoder_rng)
        out = self._decode(decoder_tokens, decoder_facts, memory, encoder_facts, rng=decoder_rng)
        return ModelOutput.of(out.logits, [encoder_report, LayerReport(out.losses, out.stats)])

    def batch_inputs(self, batch: dict) -> dict:
        """:meth:`forward`'s arguments for a packed batch: both streams."""
        return {
            "encoder_tokens": batch["encoder_tokens"],
            "decoder_tokens": batch["decoder_tokens"],
            "encoder_facts": stream_facts(batch, "encoder"),
            "decoder_facts": stream_facts(batch, "decoder"),
        }

    def generation_cache(self, batch: int, max_len: int, source=None) -> KVCache:
        """A decoder cache holding the projections of the encoded ``source = (tokens, facts)``."""
        memory, memory_facts = self.encode(*source)
        return self.init_cache(memory, memory_facts, max_len)

    def decode_step(self, tokens, facts: TokenFacts, cache: KVCache) -> ModelOutput:
        """Writes decoder ``tokens`` after the cache's filled slots; logits and the updated cache."""
        return self._decode(tokens, facts, None, None, cache=cache)

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
