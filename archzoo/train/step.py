"""One jitted, pure training step: gradients (accumulated over micro-batches), clipping, AdamW,
per-parameter learning rates (μP's; all 1 for other inits).

The model is split once into its static graph and its parameters (``nnx.split``); the step
takes and returns plain pytrees, so it can be checkpointed and resumed bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from archzoo.layers.moe import update_balance_biases
from archzoo.sharding import Layout, create_sharded
from archzoo.train.loss import loss_fn
from archzoo.train.optimizer import OptimizerConfig, build_optimizer, lr_multipliers

__all__ = ["split_model", "make_train_step", "make_eval_step", "init_training", "Training", "time_train_steps"]


def split_model(model: nnx.Module):
    """``(graphdef, params, rest)``: the static graph, the trained parameters, everything else."""
    return nnx.split(model, nnx.Param, ...)


def _under(layout: Layout | None):
    return layout.active() if layout is not None else contextlib.nullcontext()


def make_train_step(graphdef, cfg: OptimizerConfig, *, layout: Layout | None = None, shardings=None):
    """Builds ``train_step(params, rest, opt_state, batch, lr, key=None) -> (params, opt_state, metrics)``.

    ``batch`` holds arrays ``[A, B, L]`` for ``A = cfg.accumulation_steps`` micro-batches; their
    gradients are summed and divided by the total number of target tokens, so accumulation
    gives the gradient of the mean loss over every target token of the step.
    Auxiliary losses (the z-loss, an MoE layer's balancing losses) are means per micro-batch,
    weighted by its target tokens like the cross-entropy. ``metrics`` holds ``loss_nats``,
    ``grad_norm``, ``target_tokens``, ``aux_loss`` and the layers' statistics under ``stats``
    (each the mean over micro-batches).
    ``lr`` is the learning rate of this update (a schedule over budget progress); each
    parameter's update is also multiplied by its :func:`~archzoo.train.optimizer.lr_multipliers`
    (read from the model's config while tracing), which leaves the step as it was where they are 1.
    ``key`` seeds the training-time randomness of MoE routers (jitter, noise; one key per
    micro-batch folded from it); None: none. After the update, the routers of
    ``moe.balance: bias`` move their biases by the step's expert loads.

    ``layout``: the mesh (:class:`~archzoo.sharding.Layout`) the step traces under, so the
    model's activation constraints apply; ``shardings``: ``(params, opt_state)`` trees of the
    state's shardings, which the step's outputs keep (so the next step reuses the compiled one).
    Without them the step runs where its inputs are, as on one device.

    Returns:
      the jitted step and the optimizer (for ``opt_state = tx.init(params)``).
    """
    tx = build_optimizer(cfg)

    def summed_loss(params, rest, micro, rng):
        model = nnx.merge(graphdef, params, rest)
        _, aux = loss_fn(model, micro, cfg.z_loss, rng)
        # Sums, not means, so micro-batches with different token counts weigh correctly.
        total = aux["loss_sum_nats"] + (aux["z_loss"] + aux["aux_loss"]) * jnp.maximum(aux["target_tokens"], 1.0)
        return total, aux

    grad_fn = jax.grad(summed_loss, has_aux=True)

    def train_step(params, rest, opt_state, batch, lr, key=None):
        with _under(layout):
            return _train_step(params, rest, opt_state, batch, lr, key)

    def _train_step(params, rest, opt_state, batch, lr, key):
        def accumulate(carry, xs):
            micro, index = xs
            grads_sum, loss_sum, tokens = carry
            grads, aux = grad_fn(params, rest, micro, None if key is None else jax.random.fold_in(key, index))
            grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
            carry = (grads_sum, loss_sum + aux["loss_sum_nats"], tokens + aux["target_tokens"])
            return carry, {"aux_loss": aux["aux_loss"], "stats": aux["stats"]}

        zeros = jax.tree.map(jnp.zeros_like, params)
        micro_batches = jax.tree.leaves(batch)[0].shape[0]
        if micro_batches == 1:  # no loop: XLA schedules and fuses the gradients with the update across it
            (grads, loss_sum, tokens), reported = accumulate((zeros, 0.0, 0.0), (jax.tree.map(lambda a: a[0], batch), 0))
        else:
            (grads, loss_sum, tokens), per_micro = jax.lax.scan(accumulate, (zeros, 0.0, 0.0), (batch, jnp.arange(micro_batches)))
            reported = jax.tree.map(lambda v: jnp.mean(v, axis=0), per_micro)
        denom = jnp.maximum(tokens, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        model_cfg = nnx.merge(graphdef, params, rest).config
        multipliers = lr_multipliers(model_cfg, params)
        updates = jax.tree.map(lambda u, m: lr * u if m == 1.0 else (lr * m) * u, updates, multipliers)
        params = optax.apply_updates(params, updates)
        if model_cfg.moe is not None and model_cfg.moe.balance == "bias":
            model = nnx.merge(graphdef, params, rest)
            update_balance_biases(model, reported["stats"])
            params = nnx.state(model, nnx.Param)
        metrics = {"loss_nats": loss_sum / denom, "grad_norm": grad_norm, "target_tokens": tokens, **reported}
        return params, opt_state, metrics

    if shardings is None:
        return jax.jit(train_step, donate_argnums=(0, 2)), tx
    params_sharding, opt_sharding = shardings
    out = (params_sharding, opt_sharding, layout.replicated)
    return jax.jit(train_step, donate_argnums=(0, 2), out_shardings=out), tx


def make_eval_step(graphdef, *, layout: Layout | None = None):
    """``eval_step(params, rest, batch) -> (loss_sum_nats, target_tokens)`` for one batch."""

    def eval_step(params, rest, batch):
        with _under(layout):
            model = nnx.merge(graphdef, params, rest)
            _, aux = loss_fn(model, batch)
            return aux["loss_sum_nats"], aux["target_tokens"]

    return jax.jit(eval_step)


def time_train_steps(model, cfg: OptimizerConfig, batch: dict, steps: int, lr: float) -> tuple[float, list[float]]:
    """Times training steps of ``model`` on one batch: the first (trace, compile, run), then
    ``steps`` more, each waited for.

    Returns:
      the first step's seconds and each later step's seconds.
    """
    graphdef, params, rest = split_model(model)
    step, tx = make_train_step(graphdef, cfg)
    opt_state = tx.init(params)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        params, opt_state, m = step(params, rest, opt_state, batch, lr)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    return times[0], times[1:]


@dataclasses.dataclass
class Training:
    """A model's training state and its compiled steps, on one device or sharded over a mesh.

    Attributes:
      model: the module as built (its parameters are also in ``params``).
      graphdef, params, rest: :func:`split_model` of it.
      opt_state: the optimizer's state (its moments sharded as the parameters).
      train_step, eval_step: :func:`make_train_step` and :func:`make_eval_step`, traced under
        the mesh, with outputs kept in the state's shardings.
      layout: the mesh, or None (one device).
    """

    model: nnx.Module
    graphdef: object
    params: object
    rest: object
    opt_state: object
    train_step: Callable
    eval_step: Callable
    layout: Layout | None

    def put_batch(self, batch: dict, axis: int = 1) -> dict:
        """A host batch on the devices: its rows (axis 1 of a train batch ``[A, B, L]``, 0 of a
        validation batch ``[B, L]``) split over the mesh's batch axes; unchanged without a mesh."""
        return batch if self.layout is None else self.layout.put_rows(batch, axis)


def init_training(model_cfg, optimizer_cfg: OptimizerConfig, *, seed: int, layout: Layout | None = None) -> Training:
    """Builds the model (created sharded on ``layout``'s mesh when given: no device holds all
    of it), its optimizer state and its steps.

    Raises:
      ConfigError: a parameter's dimension the mesh does not divide (naming it).
    """
    from archzoo.models import build

    if layout is None:
        model = build(model_cfg, seed=seed)
    else:
        model = create_sharded(lambda: build(model_cfg, seed=seed), layout)
    graphdef, params, rest = split_model(model)
    init = build_optimizer(optimizer_cfg).init
    shardings = None
    if layout is None:
        opt_state = init(params)
    else:  # the moments sharded as their parameters, the step count replicated
        opt_sharding = layout.like_params(jax.eval_shape(init, params), params)
        opt_state = jax.jit(init, out_shardings=opt_sharding)(params)
        rest = jax.device_put(rest, layout.on_mesh(rest))
        shardings = (layout.on_mesh(params), opt_sharding)
    train_step, _ = make_train_step(graphdef, optimizer_cfg, layout=layout, shardings=shardings)
    eval_step = make_eval_step(graphdef, layout=layout)
    return Training(model, graphdef, params, rest, opt_state, train_step, eval_step, layout)
