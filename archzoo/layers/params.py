"""Parameter creation with logical axis names on every weight."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

__all__ = ["param", "normal", "zeros", "ones"]

normal = nnx.initializers.normal
zeros = nnx.initializers.zeros_init()
ones = nnx.initializers.ones_init()


def param(rngs: nnx.Rngs, init, shape: tuple[int, ...], axes: tuple[str | None, ...], dtype=jnp.float32) -> nnx.Param:
    """A float32 parameter carrying logical axis names (``("embed", "mlp")``).

    The names are metadata for the sharding rules of a mesh (DESIGN.md §5); without a mesh the
    parameter is created unsharded.
    """
    assert len(shape) == len(axes), (shape, axes)
    value = init(rngs.params(), shape, dtype)
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


def dense_init(fan_in: int, std: float | None = None):
    """Normal init with std ``fan_in ** -0.5`` unless given (GPT-2 and Llama use 0.02)."""
    return normal(std if std is not None else fan_in**-0.5)
