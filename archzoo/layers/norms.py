"""LayerNorm and RMSNorm (T5's no-mean variant, Llama's)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from archzoo.layers.params import ones, param, zeros
from archzoo.layers.config import NormConfig

__all__ = ["Norm", "make_norm"]


def make_norm(cfg: NormConfig, d_model: int, *, rngs: nnx.Rngs) -> nnx.Module:
    """The norm ``cfg.kind`` names: :class:`Norm`, or the user's class
    (:class:`~archzoo.layers.plugins.NormPlugin`) with its options."""
    if isinstance(cfg.kind, str):
        return Norm(cfg, d_model, rngs=rngs)
    return cfg.kind.construct(cfg, d_model, rngs=rngs)


class Norm(nnx.Module):
    """LayerNorm (with or without bias) or RMSNorm, computed in float32.

    Args:
      cfg: the model's :class:`NormConfig`.
      d_model: width D.
    """

    def __init__(self, cfg: NormConfig, d_model: int, *, rngs: nnx.Rngs):
        self.kind = cfg.kind
        self.eps = cfg.eps
        self.scale = param(rngs, ones, (d_model,), ("embed",), width_role="input")
        has_bias = cfg.kind == "layernorm" and cfg.bias
        self.bias = param(rngs, zeros, (d_model,), ("embed",), width_role="input") if has_bias else None

    def __call__(self, x_BLD: jax.Array) -> jax.Array:
        """Normalises over the last axis; returns the input's dtype."""
        x = x_BLD.astype(jnp.float32)
        if self.kind == "layernorm":
            x = x - x.mean(-1, keepdims=True)
        y = x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + self.eps)
        y = y * self.scale[...]
        if self.bias is not None:
            y = y + self.bias[...]
        return y.astype(x_BLD.dtype)
