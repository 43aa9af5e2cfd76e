"""The KV cache shared by every family's decode step.

A cache holds, per layer, the keys and values of every token seen so far, and the token facts of
those slots. Empty slots have segment id 0, so the same mask that serves training (built from
query facts and key facts) serves decoding: a query at step t against the T cached keys.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from archzoo.masks import TokenFacts

__all__ = ["KVCache", "empty_facts", "write_facts"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys and values of the tokens decoded so far.

    Attributes:
      keys, values: per decoder layer ``[B, T, G, Dh]``.
      facts: token facts of the T slots ``[B, T]`` (segment id 0 = empty).
      index: int32 scalar, the next slot to write.
      cross_keys, cross_values: per decoder layer ``[B, S, G, Dh]``, encoder-decoder only:
        the encoder output projected once.
      memory_facts: token facts of the encoder tokens ``[B, S]``, encoder-decoder only.
    """

    keys: tuple
    values: tuple
    facts: TokenFacts
    index: jax.Array
    cross_keys: tuple | None = None
    cross_values: tuple | None = None
    memory_facts: TokenFacts | None = None

    @property
    def max_len(self) -> int:
        return self.facts.shape[1]

    def layer(self, i: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        return self.keys[i], self.values[i], self.index

    def advance(self, new_kv: list, facts: TokenFacts, length: int) -> "KVCache":
        """The cache after writing ``length`` tokens: their keys, values and facts."""
        return dataclasses.replace(
            self,
            keys=tuple(k for k, _ in new_kv),
            values=tuple(v for _, v in new_kv),
            facts=facts,
            index=self.index + length,
        )


def empty_facts(batch: int, max_len: int) -> TokenFacts:
    """Facts of an empty cache: every slot padding."""
    zeros = jnp.zeros((batch, max_len), jnp.int32)
    return TokenFacts(zeros, zeros, jnp.zeros((batch, max_len), bool))


def write_slots(cache_BT, new_BL, index):
    """Writes new rows into a cache array along axis 1 at ``index``."""
    return jax.lax.dynamic_update_slice_in_dim(cache_BT, new_BL.astype(cache_BT.dtype), index, axis=1)


def write_facts(cache_facts: TokenFacts, new: TokenFacts, index) -> TokenFacts:
    """The cache's facts with the new tokens' facts written at ``index`` (the cache keeps its own
    ``ordered`` flag: its slots are not a row in order, whatever the new tokens promise)."""
    return dataclasses.replace(
        cache_facts,
        **{name: write_slots(getattr(cache_facts, name), getattr(new, name), index) for name in ("segment_ids", "positions", "is_input")},
    )
