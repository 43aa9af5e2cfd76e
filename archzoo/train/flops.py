"""FLOPs per token of each family, attention included (Kaplan et al. 2020, Table 1).

Forward FLOPs per token of a stack are ``2 * N_stack + 4 * n_layer * n_ctx * d_attn`` (the
matmuls of its weights, plus ``2 * n_ctx * d_attn`` each for the attention scores and the
weighted sum over ``n_ctx`` keys); a
training step costs three forward passes (forward, and a backward of twice the work). An
encoder-decoder spends encoder FLOPs on encoder tokens and decoder FLOPs (with
cross-attention over the encoder length) on decoder tokens; the output head is counted on the
stream that has one.

An MoE layer counts what a token passes through: its router (``D * E``), its ``k`` chosen experts
(the active parameters, not all E) and its shared experts with their gate. Expert choice counts
``k`` experts per token on average (its capacity); capacity dispatch counts ``k`` as well, so a
dropped assignment is counted as if it ran.
"""

from __future__ import annotations

import numpy as np

from archzoo.models.config import ModelConfig, layer_plugin_params

__all__ = ["stack_matmul_params", "feed_forward_params", "forward_flops_per_token", "train_flops_per_token", "train_flops"]


def _query_out_params(cfg: ModelConfig) -> int:
    return 2 * cfg.d_model * cfg.attention.num_heads * cfg.head_dim


def _key_value_params(cfg: ModelConfig) -> int:
    return 2 * cfg.d_model * cfg.attention.kv_heads * cfg.head_dim


def _mlp_params(cfg: ModelConfig, d_ff: int) -> int:
    return cfg.d_model * d_ff * (3 if cfg.mlp.gated else 2)


def feed_forward_params(cfg: ModelConfig, stack: str, layer: int) -> int:
    """Matmul weights one token passes through in a block's MLP or MoE layer (a plug-in MLP or
    router: the elements of its parameters of two or more dimensions)."""
    moe = cfg.moe
    if moe is None or not moe.is_moe(stack, layer):
        if not isinstance(cfg.mlp.kind, str):
            return layer_plugin_params(cfg, "mlp.kind")[1]
        return _mlp_params(cfg, cfg.mlp.d_ff)
    routed = moe.k * _mlp_params(cfg, moe.expert_width(cfg.mlp.d_ff))
    shared = _mlp_params(cfg, moe.shared_width(cfg.mlp.d_ff)) + (cfg.d_model if moe.shared_gate else 0)
    router = cfg.d_model * moe.experts if isinstance(moe.router_logits, str) else layer_plugin_params(cfg, "moe.router_logits")[1]
    return router + routed + shared


def stack_matmul_params(cfg: ModelConfig, num_layers: int, cross: bool, stack: str = "decoder") -> int:
    """Weights of a stack's matmuls that each of its tokens passes through (norms, biases and
    embeddings excluded; cross-attention keys and values are counted on encoder tokens; an MoE
    layer's router, chosen experts and shared experts)."""
    attention = _query_out_params(cfg) * (2 if cross else 1) + _key_value_params(cfg)
    return sum(attention + feed_forward_params(cfg, stack, i) for i in range(num_layers))


def forward_flops_per_token(cfg: ModelConfig, *, stream: str, context: int, memory: int = 0) -> float:
    """Forward FLOPs for one token of ``stream`` (the name of one of ``cfg.stacks``).

    Args:
      cfg: the model.
      stream: which stack reads the token.
      context: keys each self-attention query sees (the row length).
      memory: keys each cross-attention query sees (the other stack's row length), for a stack
        that cross-attends.
    """
    d_attn = cfg.attention.num_heads * cfg.head_dim
    spec = next((s for s in cfg.stacks if s.name == stream), None)
    if spec is None:
        raise ValueError(f"stream {stream!r}: this {cfg.family} model's stacks are {[s.name for s in cfg.stacks]}")
    matmuls = stack_matmul_params(cfg, spec.num_layers, spec.cross, spec.name)
    # a stack others cross-attend to: each of their layers projects its tokens to keys and values
    readers = 0 if spec.cross else sum(s.num_layers for s in cfg.stacks if s.cross)
    matmuls += readers * _key_value_params(cfg)
    keys = context + (memory if spec.cross else 0)
    head = 2 * cfg.d_model * cfg.vocab_size if spec.head else 0
    return 2 * matmuls + 2 * 2 * spec.num_layers * keys * d_attn + head


def train_flops_per_token(cfg: ModelConfig, lengths: dict[str, int]) -> dict[str, float]:
    """Training FLOPs (3x forward) per token of each stack's stream, for rows of ``lengths``
    (``{"encoder": 512, "decoder": 128}``): a stack that cross-attends reads the other rows."""
    out = {}
    for spec in cfg.stacks:
        memory = sum(n for name, n in lengths.items() if name != spec.name) if spec.cross else 0
        out[spec.name] = 3 * forward_flops_per_token(cfg, stream=spec.name, context=lengths[spec.name], memory=memory)
    return out


def train_flops(cfg: ModelConfig, batch: dict) -> float:
    """Training FLOPs (3x forward) of one packed batch, counting only real (non-padding) tokens."""
    lengths = {s.name: batch[f"{s.name}_segment_ids"].shape[1] for s in cfg.stacks}
    per_token = train_flops_per_token(cfg, lengths)
    return float(sum(int(np.count_nonzero(batch[f"{name}_segment_ids"])) * f for name, f in per_token.items()))
