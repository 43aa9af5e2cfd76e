"""Position-wise MLPs: ReLU, GELU, and gated units (SwiGLU, GeGLU; Shazeer 2020)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from archzoo.layers.params import dense_init, param, zeros
from archzoo.layers.config import MlpConfig
from archzoo.sharding import constrain

__all__ = ["Mlp", "ACTIVATIONS", "feed_forward", "make_mlp"]

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
}


def feed_forward(x, activation: str, matmul, up, down, gate=None, up_bias=None, down_bias=None, *, hidden=None):
    """``down(act(up(x)))`` or, gated, ``down(act(gate(x)) * up(x))``, with optional biases.

    The one MLP formula of the dense MLP and of every MoE expert path: ``matmul(x, w)``
    multiplies rows by (their expert's) weights ``w``, and a bias is already laid out to add to
    its output. Weights and biases are cast to ``x``'s dtype by the caller's ``matmul``.
    ``hidden``: the logical names of the hidden activation's dimensions, which a mesh shards
    (:func:`archzoo.sharding.constrain`), or None.
    """
    act = ACTIVATIONS[activation]
    h = matmul(x, up)
    if up_bias is not None:
        h = h + up_bias
    h = act(matmul(x, gate)) * h if gate is not None else act(h)
    if hidden is not None:
        h = constrain(h, hidden)
    y = matmul(h, down)
    return y if down_bias is None else y + down_bias


def make_mlp(cfg: MlpConfig, d_model: int, *, rngs: nnx.Rngs, init_std: float | None = None, out_std: float | None = None) -> nnx.Module:
    """The MLP ``cfg.kind`` names: :class:`Mlp`, or the user's class
    (:class:`~archzoo.layers.plugins.MlpPlugin`) with its options."""
    if isinstance(cfg.kind, str):
        return Mlp(cfg, d_model, rngs=rngs, init_std=init_std, out_std=out_std)
    return cfg.kind.construct(cfg, d_model, rngs=rngs, init_std=init_std, out_std=out_std)


class Mlp(nnx.Module):
    """``down(act(up(x)))`` or, gated, ``down(act(gate(x)) * up(x))``.

    Parameters: ``up`` ``[D, F]``, ``gate`` ``[D, F]`` (gated only), ``down`` ``[F, D]``, with
    optional biases.
    """

    def __init__(
        self,
        cfg: MlpConfig,
        d_model: int,
        *,
        rngs: nnx.Rngs,
        init_std: float | None = None,
        out_std: float | None = None,
    ):
        """Args: the MLP config, width D, std of up and gate (None = fan_in ** -0.5) and of down
        (None = init_std's rule)."""
        D, F = d_model, cfg.d_ff
        out_std = init_std if out_std is None else out_std
        self.activation = cfg.activation
        self.up = param(rngs, dense_init(D, init_std), (D, F), ("embed", "mlp"), width_role="hidden")
        self.gate = param(rngs, dense_init(D, init_std), (D, F), ("embed", "mlp"), width_role="hidden") if cfg.gated else None
        self.down = param(rngs, dense_init(F, out_std), (F, D), ("mlp", "embed"), width_role="hidden")
        self.up_bias = param(rngs, zeros, (F,), ("mlp",), width_role="input") if cfg.bias else None
        self.down_bias = param(rngs, zeros, (D,), ("embed",), width_role="input") if cfg.bias else None

    def __call__(self, x_BLD: jax.Array) -> jax.Array:
        """Args: x ``[B, L, D]``. Returns ``[B, L, D]``."""
        dtype = x_BLD.dtype

        def value(p):
            return None if p is None else p[...].astype(dtype)

        return feed_forward(
            x_BLD,
            self.activation,
            lambda x, w: jnp.einsum("BLi,io->BLo", x, w),
            value(self.up),
            value(self.down),
            value(self.gate),
            value(self.up_bias),
            value(self.down_bias),
            hidden=("batch", "length", "mlp"),
        )
