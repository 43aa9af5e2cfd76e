"""Token embeddings and the output head (tied to the embedding or not)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from archzoo.layers.params import normal, param

__all__ = ["Embedding", "Head"]


class Embedding(nnx.Module):
    """A table ``[V, D]``; optionally scaled by sqrt(D) on lookup."""

    def __init__(self, vocab_size: int, d_model: int, *, scale: bool = False, rngs: nnx.Rngs, init_std: float = 0.02):
        self.scale = d_model**0.5 if scale else 1.0
        self.table = param(rngs, normal(init_std), (vocab_size, d_model), ("vocab", "embed"), width_role="input")

    def __call__(self, tokens_BL: jax.Array, dtype=jnp.float32) -> jax.Array:
        """Returns ``[B, L, D]`` in ``dtype``."""
        x = jnp.take(self.table[...], tokens_BL, axis=0)
        return (x * self.scale if self.scale != 1.0 else x).astype(dtype)

    def attend(self, x_BLD: jax.Array) -> jax.Array:
        """Tied output head: logits ``[B, L, V]`` (float32) = x @ table^T."""
        return jnp.einsum("BLD,VD->BLV", x_BLD, self.table[...].astype(x_BLD.dtype), preferred_element_type=jnp.float32)


class Head(nnx.Module):
    """An untied output head ``[D, V]``."""

    def __init__(self, d_model: int, vocab_size: int, *, rngs: nnx.Rngs, init_std: float = 0.02):
        axes = ("embed", "vocab")
        self.kernel = param(rngs, normal(init_std), (d_model, vocab_size), axes, width_role="output")

    def __call__(self, x_BLD: jax.Array) -> jax.Array:
        """Logits ``[B, L, V]`` (float32)."""
        return jnp.einsum("BLD,DV->BLV", x_BLD, self.kernel[...].astype(x_BLD.dtype), preferred_element_type=jnp.float32)
