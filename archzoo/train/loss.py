"""The training loss of every family on a packed batch: cross-entropy over target tokens.

``loss_fn`` is separate from the step so it can be tested alone (STYLE.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from archzoo.features.packing import LOSS_STREAM
from archzoo.masks import TokenFacts

__all__ = ["model_logits", "loss_fn", "stream_facts"]


def stream_facts(batch: dict, stream: str) -> TokenFacts:
    """Token facts of one stream of a packed batch.

    The feature converters keep each example contiguous with positions counting up from 0, so
    the facts are marked ``ordered`` (causal attention then skips the key blocks after each
    query block; see :class:`archzoo.masks.TokenFacts`). A hand-made batch must keep that layout.
    """
    return TokenFacts(batch[f"{stream}_segment_ids"], batch[f"{stream}_positions"], batch[f"{stream}_is_input"], ordered=True)


def model_logits(model, batch: dict) -> jax.Array:
    """Logits ``[B, L, V]`` of the stream that carries the loss."""
    family = model.config.family
    if family == "encoder_decoder":
        return model(batch["encoder_tokens"], batch["decoder_tokens"], stream_facts(batch, "encoder"), stream_facts(batch, "decoder"))
    stream = LOSS_STREAM[family]
    return model(batch[f"{stream}_tokens"], stream_facts(batch, stream))


def loss_fn(model, batch: dict, z_loss: float = 0.0) -> tuple[jax.Array, dict]:
    """Mean cross-entropy in nats per target token (weights from the converter).

    Args:
      model: any family.
      batch: a packed batch (see :mod:`archzoo.features.packing`).
      z_loss: coefficient of the auxiliary ``log(Z)^2`` term (PaLM, §5), 0 to disable.

    Returns:
      the loss to minimise, and ``{"loss_nats", "loss_sum_nats", "target_tokens", "z_loss"}``.
    """
    stream = LOSS_STREAM[model.config.family]
    logits = model_logits(model, batch).astype(jnp.float32)
    targets, weights = batch[f"{stream}_targets"], batch[f"{stream}_weights"].astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll_sum = jnp.sum((log_z - target_logit) * weights)
    count = jnp.sum(weights)
    denom = jnp.maximum(count, 1.0)
    loss_nats = nll_sum / denom
    z_term = z_loss * jnp.sum(log_z**2 * weights) / denom
    return loss_nats + z_term, {"loss_nats": loss_nats, "loss_sum_nats": nll_sum, "target_tokens": count, "z_loss": z_term}
