"""ReGLU (Shazeer 2020, "GLU Variants Improve Transformer"): ``down(relu(gate(x)) * up(x))``."""

import jax
from flax import nnx

from archzoo.layers.params import dense_init, param


class ReGLU(nnx.Module):
    """A gated MLP with a ReLU gate, of hidden width ``cfg.d_ff``.

    The MLP protocol: ``__init__(cfg, d_model, *, rngs, init_std, out_std)`` and
    ``__call__(x [B, L, D]) -> [B, L, D]``; every parameter made by ``param`` carries its
    logical axes (so a mesh can shard it) and width role (so muP can scale it).
    """

    def __init__(self, cfg, d_model, *, rngs, init_std=None, out_std=None):
        D, F = d_model, cfg.d_ff
        self.up = param(rngs, dense_init(D, init_std), (D, F), ("embed", "mlp"), width_role="hidden")
        self.gate = param(rngs, dense_init(D, init_std), (D, F), ("embed", "mlp"), width_role="hidden")
        self.down = param(rngs, dense_init(F, out_std if out_std is not None else init_std), (F, D), ("mlp", "embed"), width_role="hidden")

    def __call__(self, x):
        dtype = x.dtype
        h = jax.nn.relu(x @ self.gate[...].astype(dtype)) * (x @ self.up[...].astype(dtype))
        return h @ self.down[...].astype(dtype)
