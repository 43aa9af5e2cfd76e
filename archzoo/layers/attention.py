"""Multi-head, grouped-query and multi-query attention that takes a mask value.

The module owns the projections; the attention itself is one backend function from
:mod:`archzoo.layers.kernels`. It never asks which family it serves: the caller passes the mask
(built once per batch from the token facts), an optional additive position bias, and, for RoPE,
the positions of the new tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from archzoo.layers.kernels import BACKENDS
from archzoo.layers.norms import make_norm
from archzoo.layers.params import dense_init, param, zeros
from archzoo.layers.positions import apply_rope
from archzoo.masks import Mask
from archzoo.sharding import constrain
from archzoo.layers.config import AttentionConfig, NormConfig

__all__ = ["Attention"]


class Attention(nnx.Module):
    """Projections ``q [D, H, Dh]``, ``k, v [D, G, Dh]``, ``o [H, Dh, D]`` and optional biases."""

    def __init__(
        self,
        cfg: AttentionConfig,
        d_model: int,
        head_dim: int,
        *,
        rngs: nnx.Rngs,
        init_std: float | None = 0.02,
        out_std: float | None = None,
        logit_factor: float = 1.0,
        norm: NormConfig | None = None,
    ):
        """Args:
          cfg: the attention config.
          d_model, head_dim: widths D and Dh.
          init_std: std of q, k, v (None = fan_in ** -0.5).
          out_std: std of o (None = init_std's rule).
          logit_factor: multiplies the logit scale (μP's 1/head_dim; 1 otherwise).
          norm: the norm of ``cfg.qk_norm`` (the model's kind and eps).
        """
        D, H, G, Dh = d_model, cfg.num_heads, cfg.kv_heads, head_dim
        out_std = init_std if out_std is None else out_std
        self.num_heads, self.num_kv_heads, self.head_dim = H, G, Dh
        self.scale = (Dh**-0.5 if cfg.scale else 1.0) * logit_factor
        self.backend = cfg.backend

        def matrix(fan_in, std, shape, axes):
            return param(rngs, dense_init(fan_in, std), shape, axes, width_role="hidden")

        self.q = matrix(D, init_std, (D, H, Dh), ("embed", "heads", "head_dim"))
        self.k = matrix(D, init_std, (D, G, Dh), ("embed", "kv_heads", "head_dim"))
        self.v = matrix(D, init_std, (D, G, Dh), ("embed", "kv_heads", "head_dim"))
        self.o = matrix(H * Dh, out_std, (H, Dh, D), ("heads", "head_dim", "embed"))
        if cfg.bias:
            self.q_bias = param(rngs, zeros, (H, Dh), ("heads", "head_dim"), width_role="input")
            self.k_bias = param(rngs, zeros, (G, Dh), ("kv_heads", "head_dim"), width_role="input")
            self.v_bias = param(rngs, zeros, (G, Dh), ("kv_heads", "head_dim"), width_role="input")
        else:
            self.q_bias = self.k_bias = self.v_bias = None
        self.o_bias = param(rngs, zeros, (D,), ("embed",), width_role="input") if cfg.out_bias else None
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm is not None:
            norm = norm or NormConfig(kind="rmsnorm")
            self.q_norm = make_norm(norm, H * Dh if cfg.qk_norm == "full" else Dh, rngs=rngs)
            self.k_norm = make_norm(norm, G * Dh if cfg.qk_norm == "full" else Dh, rngs=rngs)
        else:
            self.q_norm = self.k_norm = None

    def _normed(self, x_BLHD, norm):
        if norm is None:
            return x_BLHD
        if self.qk_norm == "head":
            return norm(x_BLHD)
        B, L, H, Dh = x_BLHD.shape
        return norm(x_BLHD.reshape(B, L, H * Dh)).reshape(B, L, H, Dh)

    def _project(self, x_BLD, w, b, heads: str):
        y = jnp.einsum("BLD,DHd->BLHd", x_BLD, w[...].astype(x_BLD.dtype))  # d: head width Dh
        y = y if b is None else y + b[...].astype(x_BLD.dtype)
        return constrain(y, ("batch", "length", heads, "head_dim"))

    def project_q(self, x_BLD: jax.Array, positions_BL: jax.Array | None = None, inv_freq=None) -> jax.Array:
        """Queries ``[B, L, H, Dh]`` (normed with ``qk_norm``), rotated by RoPE when ``inv_freq`` is given."""
        q = self._normed(self._project(x_BLD, self.q, self.q_bias, "heads"), self.q_norm)
        return q if inv_freq is None else apply_rope(q, positions_BL, inv_freq)

    def project_kv(self, x_BLD: jax.Array, positions_BL: jax.Array | None = None, inv_freq=None) -> tuple[jax.Array, jax.Array]:
        """Keys and values ``[B, L, G, Dh]``; keys rotated by RoPE when ``inv_freq`` is given."""
        k = self._normed(self._project(x_BLD, self.k, self.k_bias, "kv_heads"), self.k_norm)
        v = self._project(x_BLD, self.v, self.v_bias, "kv_heads")
        return (k if inv_freq is None else apply_rope(k, positions_BL, inv_freq)), v

    # The stack sets it under ``remat: attention`` (:class:`~archzoo.models.config.ModelConfig`).
    remat_core = False

    def attend(self, q_BQHD, k_BKGD, v_BKGD, mask: Mask, bias_BHQK=None) -> jax.Array:
        """Attention of queries to keys under ``mask``, then the output projection.

        With ``remat_core``, the backward pass recomputes the backend's ``[B, H, Q, K]`` logits
        and probabilities from the queries, keys and values instead of keeping them.

        Args:
          q_BQHD: queries ``[B, Q, H, Dh]``.
          k_BKGD, v_BKGD: keys and values ``[B, K, G, Dh]``.
          mask: a :class:`archzoo.masks.Mask` of shape ``(B, Q, K)``.
          bias_BHQK: additive logit bias (ALiBi, T5 relative) or None.

        Returns:
          ``[B, Q, D]``.
        """
        def core(q, k, v, mask, bias):
            return BACKENDS[self.backend](q, k, v, mask, bias, self.scale)

        core = jax.checkpoint(core) if self.remat_core else core  # nothing_saveable: keeps its inputs only
        out_BQHD = core(q_BQHD, k_BKGD, v_BKGD, mask, bias_BHQK)
        y = jnp.einsum("BQHd,HdD->BQD", out_BQHD, self.o[...].astype(out_BQHD.dtype))
        return y if self.o_bias is None else y + self.o_bias[...].astype(y.dtype)
