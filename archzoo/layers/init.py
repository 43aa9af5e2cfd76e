"""Initialisation and width scaling of every parameter group, from an :class:`InitConfig`.

Parameters belong to one of three groups by which of their dimensions grow with width
(Tensor Programs V, Yang et al. 2022, Table 3); each parameter carries its group as the
``width_role`` metadata it is created with (:func:`archzoo.layers.params.param`):

- ``hidden``: both dimensions grow: attention q, k, v, o and the MLP's up, gate and down;
- ``input``: at most the output dimension grows: token and position tables, biases, norm gains,
  T5's relative-bias table;
- ``output``: only the input dimension grows: the untied head.

μP here is the form of TP5's Table 8 for Adam, written relative to ``base_width`` (``m = d_model
/ base_width``) so that at ``m = 1`` every number below is the ``normal`` kind's:

=========================  =====================  ==============  =================================
group                      init std               Adam lr ×       forward ×
=========================  =====================  ==============  =================================
token / position tables    std                    1               1
biases, norm gains         0, 1                   1               1
hidden matrices            std / sqrt(m)          1 / m           1
untied head (or the tied   std                    1               logits × output_multiplier / m
table as the head)
attention logits           (no weights)                           scale × attention_multiplier ×
                                                                  sqrt(base_head_dim / head_dim)
=========================  =====================  ==============  =================================

The readout is handled by the output multiplier, not by a zero init: it works the same for tied
embeddings (the table is an input weight whose use as the head is multiplied by 1/m), and μP at
base width stays the ``normal`` init draw for draw. The attention factor turns the
1/sqrt(head_dim) scale into sqrt(base_head_dim)/head_dim (μP's 1/head_dim, equal at base width);
when width grows by adding heads at a fixed head width it is 1. One multiplier ``m`` scales every
hidden matrix, so μP assumes d_ff and heads × head_dim grow in proportion to d_model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from archzoo.layers.config import InitConfig

__all__ = ["Parametrisation", "parametrisation", "WIDTH_ROLES"]

WIDTH_ROLES = ("input", "hidden", "output")


@dataclass(frozen=True)
class Parametrisation:
    """The numbers one stack (or the embedding and head) is built with.

    Attributes:
      embedding_std: token table, learned positions and untied head.
      hidden_std: q, k, v and the MLP's up and gate.
      residual_std: the projections into the residual stream: attention o and MLP down.
      hidden_lr: Adam learning-rate multiplier of the hidden matrices (the rest: 1).
      attention_factor: multiplies the attention logit scale.
      output_multiplier: multiplies the logits.
    """

    embedding_std: float
    hidden_std: float
    residual_std: float
    hidden_lr: float
    attention_factor: float
    output_multiplier: float


def parametrisation(init: InitConfig, d_model: int, head_dim: int, residual_branches: int = 1) -> Parametrisation:
    """The init stds, learning-rate multiplier and forward multipliers an init config gives.

    Args:
      init: the model's init config.
      d_model: width D.
      head_dim: width per attention head.
      residual_branches: sublayers that add into the residual stream of the stack (2 per block,
        3 with cross-attention); only ``depth_scaled``'s ``residual_std`` reads it.

    Returns:
      a :class:`Parametrisation`; for ``normal`` and ``depth_scaled`` every multiplier is exactly 1.
    """
    std = init.std
    if init.kind == "normal":
        return Parametrisation(std, std, std, 1.0, 1.0, 1.0)
    if init.kind == "depth_scaled":
        # GPT-2 (Radford et al. 2019, §2.3): residual layers scaled by 1/sqrt(N) at init, N of them
        return Parametrisation(std, std, std / math.sqrt(residual_branches), 1.0, 1.0, 1.0)
    ratio = init.base_width / d_model  # 1/m
    base_head_dim = init.base_head_dim or head_dim
    hidden = std * math.sqrt(ratio)  # variance ∝ 1/fan_in
    return Parametrisation(
        embedding_std=std,
        hidden_std=hidden,
        residual_std=hidden,
        hidden_lr=ratio,
        attention_factor=init.attention_multiplier * math.sqrt(base_head_dim / head_dim),
        output_multiplier=init.output_multiplier * ratio,
    )
