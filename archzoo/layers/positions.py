"""Positions: learned absolute tables, RoPE (with Llama-3 scaling), ALiBi, T5 relative buckets.

Every scheme reads the ``positions`` fact of the tokens, so packed rows (positions restart per
segment) and KV-cache decoding (a query at position t against cached keys) need nothing special.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from archzoo.layers.params import normal, param
from archzoo.layers.config import PositionConfig

__all__ = [
    "LearnedPositions",
    "rope_inverse_frequencies",
    "apply_rope",
    "alibi_slopes",
    "alibi_bias",
    "relative_position_bucket",
    "RelativePositionBias",
]


class LearnedPositions(nnx.Module):
    """An absolute position table ``[offset + max_len, D]`` read at ``positions + offset``.

    OPT and BART keep two unused rows at the start of their table (``offset = 2``).

    The table holds positions ``[0, max_len)``. The families refuse concrete positions outside
    it (:meth:`archzoo.models.base.LanguageModel.check_inputs`); traced ones (under
    ``jax.jit``) cannot be checked and read the nearest row of the table, row 0 or the last.
    """

    def __init__(self, cfg: PositionConfig, d_model: int, *, rngs: nnx.Rngs, init_std: float = 0.02):
        self.offset = cfg.offset
        rows = cfg.offset + cfg.max_len
        self.table = param(rngs, normal(init_std), (rows, d_model), (None, "embed"), width_role="input")

    def __call__(self, positions_BL: jax.Array) -> jax.Array:
        """Returns ``[B, L, D]`` position embeddings (float32)."""
        return jnp.take(self.table[...], positions_BL + self.offset, axis=0, mode="clip")


def rope_inverse_frequencies(cfg: PositionConfig, head_dim: int) -> np.ndarray:
    """RoPE inverse frequencies ``theta^(-2i/d)``, ``[head_dim / 2]``, with Llama-3 scaling.

    Llama 3.1's scaling divides low frequencies (wavelength past the original context /
    low_freq_factor) by ``factor``, keeps high ones, and interpolates smoothly between.
    """
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    s = cfg.rope_scaling
    if s is None:
        return inv.astype(np.float32)
    wavelength = 2 * math.pi / inv
    low_wavelength = s.original_max_position / s.low_freq_factor
    high_wavelength = s.original_max_position / s.high_freq_factor
    smooth = (s.original_max_position / wavelength - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    scaled = np.where(wavelength > low_wavelength, inv / s.factor, inv)
    medium = (wavelength >= high_wavelength) & (wavelength <= low_wavelength)
    scaled = np.where(medium, (1 - smooth) * inv / s.factor + smooth * inv, scaled)
    return scaled.astype(np.float32)


def apply_rope(x_BLHD: jax.Array, positions_BL: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """Rotates query or key heads by their positions, rotate-half layout (Llama, Mistral).

    Args:
      x_BLHD: ``[B, L, H, Dh]``.
      positions_BL: int ``[B, L]``.
      inv_freq: ``[Dh / 2]``.

    Returns:
      ``[B, L, H, Dh]`` in x's dtype; angles are computed in float32.
    """
    angles_BLd = positions_BL[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)
    angles = jnp.concatenate([angles_BLd, angles_BLd], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x = x_BLHD.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * cos + rotated * sin).astype(x_BLHD.dtype)


def alibi_slopes(num_heads: int) -> np.ndarray:
    """ALiBi head slopes (Press et al. 2022): ``2^(-8i/n)`` for n a power of two.

    For other head counts, the slopes of the closest lower power of two, then every other
    slope of the next power of two (the paper's recipe, used by BLOOM).
    """
    def geometric(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(num_heads))
    slopes = geometric(closest)
    if closest < num_heads:
        slopes += geometric(2 * closest)[0::2][: num_heads - closest]
    return np.asarray(slopes, np.float32)


def alibi_bias(slopes_H: np.ndarray, q_positions_BQ: jax.Array, k_positions_BK: jax.Array) -> jax.Array:
    """Additive ALiBi bias ``slope_h * (k - q)``, ``[B, H, Q, K]`` (float32).

    BLOOM adds ``slope_h * k``; the two differ by a constant per query row, which softmax
    ignores.
    """
    distance = (k_positions_BK[:, None, :] - q_positions_BQ[:, :, None]).astype(jnp.float32)
    return jnp.asarray(slopes_H)[None, :, None, None] * distance[:, None]


def relative_position_bucket(relative_position: jax.Array, *, bidirectional: bool, num_buckets: int, max_distance: int) -> jax.Array:
    """T5's bucket of a relative position ``k - q`` (Raffel et al. 2020, §2.1).

    Half the buckets hold exact small distances, the rest grow logarithmically up to
    ``max_distance``; bidirectional stacks split buckets between past and future.
    """
    bucket = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative_position > 0).astype(relative_position.dtype) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = jnp.maximum(-relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    safe = jnp.maximum(distance, 1).astype(jnp.float32)
    large = max_exact + (
        jnp.log(safe / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).astype(relative_position.dtype)
    large = jnp.minimum(large, num_buckets - 1)
    return bucket + jnp.where(is_small, distance, large)


class RelativePositionBias(nnx.Module):
    """T5's learned relative bias, one table ``[num_buckets, H]`` shared by a whole stack."""

    def __init__(self, cfg: PositionConfig, num_heads: int, *, bidirectional: bool, rngs: nnx.Rngs):
        self.bidirectional = bidirectional
        self.num_buckets = cfg.num_buckets
        self.max_distance = cfg.max_distance
        self.table = param(rngs, normal(1.0), (cfg.num_buckets, num_heads), (None, "heads"), width_role="input")

    def __call__(self, q_positions_BQ: jax.Array, k_positions_BK: jax.Array) -> jax.Array:
        """Returns the additive bias ``[B, H, Q, K]`` (float32)."""
        relative = k_positions_BK[:, None, :] - q_positions_BQ[:, :, None]
        buckets_BQK = relative_position_bucket(
            relative, bidirectional=self.bidirectional, num_buckets=self.num_buckets, max_distance=self.max_distance
        )
        bias_BQKH = jnp.take(self.table[...], buckets_BQK, axis=0)
        return jnp.einsum("BQKH->BHQK", bias_BQKH)
