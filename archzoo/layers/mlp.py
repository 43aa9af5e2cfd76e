"""Position-wise MLPs: ReLU, GELU, and gated units (SwiGLU, GeGLU; Shazeer 2020)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from archzoo.layers.params import dense_init, param, zeros
from archzoo.layers.config import MlpConfig

__all__ = ["Mlp", "ACTIVATIONS"]

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
}


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
        act = ACTIVATIONS[self.activation]
        h_BLF = jnp.einsum("BLD,DF->BLF", x_BLD, self.up[...].astype(dtype))
        if self.up_bias is not None:
            h_BLF = h_BLF + self.up_bias[...].astype(dtype)
        if self.gate is not None:
            h_BLF = act(jnp.einsum("BLD,DF->BLF", x_BLD, self.gate[...].astype(dtype))) * h_BLF
        else:
            h_BLF = act(h_BLF)
        y_BLD = jnp.einsum("BLF,FD->BLD", h_BLF, self.down[...].astype(dtype))
        if self.down_bias is not None:
            y_BLD = y_BLD + self.down_bias[...].astype(dtype)
        return y_BLD
