"""The training loss of every family on a packed batch: cross-entropy over target tokens.

``loss_fn`` is separate from the step so it can be tested alone (STYLE.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from archzoo.models.base import stream_facts
from archzoo.models.output import ModelOutput

__all__ = ["model_output", "model_logits", "loss_fn", "stream_facts"]


def model_output(model, batch: dict, rng=None) -> ModelOutput:
    """The model's output on a packed batch (its family says which streams it reads);
    ``rng``: a key in training (MoE router jitter and noise)."""
    return model.forward(**model.batch_inputs(batch), rng=rng)


def model_logits(model, batch: dict) -> jax.Array:
    """Logits ``[B, L, V]`` of the stream that carries the loss."""
    return model_output(model, batch).logits


def loss_fn(model, batch: dict, z_loss: float = 0.0, rng=None) -> tuple[jax.Array, dict]:
    """Mean cross-entropy in nats per target token (weights from the converter).

    Args:
      model: any family.
      batch: a packed batch (see :mod:`archzoo.features.packing`).
      z_loss: coefficient of the auxiliary ``log(Z)^2`` term (PaLM, §5), 0 to disable.
      rng: a key in training (MoE router jitter and noise), None otherwise.

    Returns:
      the loss to minimise (cross-entropy, z-loss and the layers' auxiliary losses), and
      ``{"loss_nats", "loss_sum_nats", "target_tokens", "z_loss", "aux_loss", "stats"}``:
      ``aux_loss`` is the sum of the layers' weighted losses (0 for a dense model), ``stats``
      the layers' statistics (:class:`~archzoo.models.output.ModelOutput`).
    """
    stream = model.config.loss_stream
    out = model_output(model, batch, rng)
    logits = out.logits.astype(jnp.float32)
    targets, weights = batch[f"{stream}_targets"], batch[f"{stream}_weights"].astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll_sum = jnp.sum((log_z - target_logit) * weights)
    count = jnp.sum(weights)
    denom = jnp.maximum(count, 1.0)
    loss_nats = nll_sum / denom
    z_term = z_loss * jnp.sum(log_z**2 * weights) / denom
    aux = out.aux_loss
    metrics = {"loss_nats": loss_nats, "loss_sum_nats": nll_sum, "target_tokens": count, "z_loss": z_term}
    return loss_nats + z_term + aux, {**metrics, "aux_loss": aux, "stats": {**out.losses, **out.stats}}
