"""The decoder family: GPT, Llama, OPT, BLOOM, Mistral, and prefix decoders (GLM, U-PaLM).

One class. Causal or prefix is only the mask: ``mask: causal`` builds ``causal & same_segment``,
``mask: prefix`` builds ``prefix & same_segment`` (tokens with ``is_input`` see each other
bidirectionally). A prefix decoder on a batch with no ``is_input`` token is the causal decoder,
except that with T5 relative bias its stack reads buckets both ways (``ModelConfig.sees_later_keys``).
"""

from __future__ import annotations

import jax
from flax import nnx

from archzoo.masks import Mask, TokenFacts
from archzoo.models.base import LanguageModel, stream_facts
from archzoo.models.cache import KVCache, empty_facts, write_facts
from archzoo.models.config import ModelConfig
from archzoo.models.output import ModelOutput
from archzoo.models.self_attention import self_attention_mask
from archzoo.models.stack import Stack

__all__ = ["Decoder"]


class Decoder(LanguageModel):
    """Embedding, one stack of self-attention blocks, output head."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self._init_embedding(cfg, rngs)
        (spec,) = cfg.stacks
        self.stack = Stack(cfg, spec, rngs=rngs)

    def __call__(self, tokens, facts: TokenFacts | None = None, *, cache: KVCache | None = None, mask: Mask | None = None):
        """Logits for a batch of token ids (:meth:`forward` has the rest of the output).

        Args:
          tokens: int ``[B, L]``.
          facts: :class:`~archzoo.masks.TokenFacts` ``[B, L]`` (segment ids, positions,
            prefix flags); default: one unpadded example per row, no prefix.
          cache: a KV cache from :meth:`init_cache`; the tokens are written after its filled
            slots (their ``facts.positions`` must continue the sequence).
          mask: overrides the config's mask (shape ``(B, L, L)``, or ``(B, L, T)`` with a cache).

        Returns:
          logits ``[B, L, V]`` float32; with a cache, ``(logits, updated cache)``.
        """
        out = self.forward(tokens, facts, cache=cache, mask=mask)
        return out.logits if cache is None else (out.logits, out.cache)

    def forward(
        self, tokens, facts: TokenFacts | None = None, *, cache: KVCache | None = None, mask: Mask | None = None, rng=None
    ) -> ModelOutput:
        """The :class:`~archzoo.models.output.ModelOutput` of the arguments of :meth:`__call__`:
        logits, the layers' auxiliary losses and statistics, and the updated cache if given one.
        ``rng``: a key in training (MoE router jitter and noise), None otherwise."""
        tokens, facts = self.check_inputs(tokens, facts)
        kv_facts = facts if cache is None else write_facts(cache.facts, facts, cache.index)
        if mask is None:
            mask = self_attention_mask(self.config, facts, kv_facts)
        x = self.embed(tokens, self.dtype)
        x, out = self.stack(x, facts, mask, kv_facts=kv_facts, cache=cache, rng=rng)
        new_cache = None if cache is None else cache.advance(out.kv, kv_facts, tokens.shape[1])
        return ModelOutput.of(self.logits(x), [out.report], new_cache)

    def batch_inputs(self, batch: dict) -> dict:
        """:meth:`forward`'s arguments for a packed batch: the decoder stream."""
        return {"tokens": batch["decoder_tokens"], "facts": stream_facts(batch, "decoder")}

    def generation_cache(self, batch: int, max_len: int, source=None) -> KVCache:
        """An empty cache to generate into (a decoder conditions on its prompt alone)."""
        return self.init_cache(batch, max_len)

    def decode_step(self, tokens, facts: TokenFacts, cache: KVCache) -> ModelOutput:
        """Writes ``tokens`` after the cache's filled slots; logits and the updated cache."""
        return self.forward(tokens, facts, cache=cache)

    def init_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty cache for ``batch`` rows of at most ``max_len`` tokens."""
        cfg = self.config
        shape = (batch, max_len, cfg.attention.kv_heads, cfg.head_dim)
        zeros = tuple(jax.numpy.zeros(shape, self.dtype) for _ in range(cfg.num_layers))
        return KVCache(zeros, zeros, empty_facts(batch, max_len), jax.numpy.zeros((), jax.numpy.int32))
