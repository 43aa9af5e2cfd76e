"""Parameter creation with logical axis names on every weight."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from archzoo.layers.init import WIDTH_ROLES

__all__ = ["param", "normal", "zeros", "ones"]


def normal(std: float = 1e-2):
    """Initializer: ``std`` times a standard normal draw, the same values as
    ``nnx.initializers.normal(std)``.

    Drawn flat and reshaped (``jax.random.normal`` draws by element count, so the values are
    equal bit for bit): outside ``jit`` each eagerly built model then compiles one random kernel
    per parameter *size*, not per shape. XLA's CPU compiler takes 0.2-0.5 s for each, so a
    model whose q, k, v, o and tables share a size builds several times faster.
    """

    def init(key, shape, dtype=jnp.float32):
        return (jax.random.normal(key, (math.prod(shape),), dtype) * std).reshape(shape)

    return init


zeros = nnx.initializers.zeros_init()
ones = nnx.initializers.ones_init()


def param(
    rngs: nnx.Rngs, init, shape: tuple[int, ...], axes: tuple[str | None, ...], *, width_role: str, dtype=jnp.float32
) -> nnx.Param:
    """A float32 parameter carrying logical axis names (``("embed", "mlp")``) and its width role.

    The names are metadata for the sharding rules of a mesh (DESIGN.md §5); without a mesh the
    parameter is created unsharded. ``width_role`` (``input``, ``hidden`` or ``output``, see
    :mod:`archzoo.layers.init`) says which of its dimensions grow with width; the optimizer reads
    it for μP's per-parameter learning rates.
    """
    assert len(shape) == len(axes), (shape, axes)
    assert width_role in WIDTH_ROLES, width_role
    value = init(rngs.params(), shape, dtype)
    return nnx.Param(value, out_sharding=axes, eager_sharding=False, width_role=width_role)


def dense_init(fan_in: int, std: float | None = None):
    """Normal init with std ``fan_in ** -0.5`` unless given (GPT-2 and Llama use 0.02)."""
    return normal(std if std is not None else fan_in**-0.5)
