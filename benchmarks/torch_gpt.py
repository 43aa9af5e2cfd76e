"""A plain PyTorch training step of archzoo's GPT-2-style causal decoder: the reference that
``archzoo bench train --reference torch`` times archzoo against, in the same process.

The model is what a nanoGPT-style script writes: token and learned position embeddings,
pre-LayerNorm blocks of fused-qkv causal self-attention
(``torch.nn.functional.scaled_dot_product_attention`` with ``is_causal``) and a tanh-GELU MLP,
a final LayerNorm and an output head tied to the token embedding. The step is eager: forward,
mean cross-entropy, backward, gradient clipping and AdamW (decay on matrices only, as archzoo's
optimizer), with denormal floats flushed to zero as XLA's CPU runtime does (where torch's are
kept, a step whose gradients underflow runs many times slower). :func:`from_archzoo` mirrors an
archzoo config and copies an archzoo model's weights, so the two steps compute the same numbers
(``tests/test_torch_reference.py``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GPT", "check_mirrorable", "from_archzoo", "TorchStep"]


class Block(nn.Module):
    """x += attn(ln_1(x)); x += mlp(ln_2(x))."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, *, qkv_bias: bool, out_bias: bool, mlp_bias: bool, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.ln_1 = nn.LayerNorm(d_model, eps=eps)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=qkv_bias)
        self.proj = nn.Linear(d_model, d_model, bias=out_bias)
        self.ln_2 = nn.LayerNorm(d_model, eps=eps)
        self.up = nn.Linear(d_model, d_ff, bias=mlp_bias)
        self.down = nn.Linear(d_ff, d_model, bias=mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(B, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(B, L, D))
        return x + self.down(F.gelu(self.up(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    """Embeddings, ``num_layers`` blocks, final LayerNorm, tied head; ``forward`` returns the
    mean cross-entropy of ``targets`` given ``tokens`` (both int ``[B, L]``)."""

    def __init__(self, vocab_size: int, max_len: int, d_model: int, num_layers: int, num_heads: int, d_ff: int, **block):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d_model)
        self.wpe = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, num_heads, d_ff, **block) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(d_model, eps=block["eps"])

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.wte(tokens) + self.wpe(positions)
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.T
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def check_mirrorable(cfg) -> None:
    """Refuses an archzoo config this reference does not mirror, naming what differs.

    Raises:
      ValueError: listing each field off the GPT-2 layout.
    """
    wrong = []
    if cfg.family != "decoder":
        wrong.append(f"family={cfg.family!r} (the reference is a causal decoder; other families are timed against it)")
    checks = {
        "position.kind": (cfg.position.kind, "learned"), "position.offset": (cfg.position.offset, 0),
        "norm.kind": (cfg.norm.kind, "layernorm"), "norm.placement": (cfg.norm.placement, "pre"),
        "norm.bias": (cfg.norm.bias, True), "norm.embedding_norm": (cfg.norm.embedding_norm, False),
        "norm.final_norm": (cfg.norm.final_norm, True), "mlp.kind": (cfg.mlp.kind, "standard"),
        "mlp.activation": (cfg.mlp.activation, "gelu_tanh"), "mlp.gated": (cfg.mlp.gated, False),
        "embedding.tie": (cfg.embedding.tie, True), "embedding.scale": (cfg.embedding.scale, False),
        "attention.num_kv_heads": (cfg.attention.kv_heads, cfg.attention.num_heads),
        "attention.head_dim": (cfg.head_dim, cfg.d_model // cfg.attention.num_heads),
        "attention.sliding_window": (cfg.attention.sliding_window, None), "attention.qk_norm": (cfg.attention.qk_norm, None),
        "attention.scale": (cfg.attention.scale, True), "parallel_block": (cfg.parallel_block, False),
        "moe": (cfg.moe, None), "dtype": (cfg.dtype, "float32"), "init.kind": (cfg.init.kind, "depth_scaled"),
    }
    wrong += [f"{key}={got!r} (the reference has {want!r})" for key, (got, want) in checks.items() if got != want]
    if wrong:
        raise ValueError(f"the torch reference mirrors GPT-2-style decoders only; this config has {'; '.join(wrong)}")


def from_archzoo(cfg, params: dict[str, np.ndarray] | None = None) -> GPT:
    """The reference model of an archzoo config (checked by :func:`check_mirrorable`), with an
    archzoo model's weights (``archzoo.convert.get_params``) when given, else torch's init."""
    check_mirrorable(cfg)
    model = GPT(
        cfg.vocab_size, cfg.position.max_len, cfg.d_model, cfg.num_layers, cfg.attention.num_heads, cfg.mlp.d_ff,
        qkv_bias=cfg.attention.bias, out_bias=cfg.attention.out_bias, mlp_bias=cfg.mlp.bias, eps=cfg.norm.eps,
    )
    if params is None:
        return model
    D = cfg.d_model

    def t(a):
        return torch.from_numpy(np.array(a, np.float32))  # a writable copy

    with torch.no_grad():
        model.wte.weight.copy_(t(params["embed/table"]))
        model.wpe.weight.copy_(t(params["stack/positions/table"]))
        for i, block in enumerate(model.blocks):
            p = lambda name: params[f"stack/blocks/{i}/{name}"]  # noqa: E731
            block.qkv.weight.copy_(t(np.concatenate([p(f"attn/{w}").reshape(D, D) for w in "qkv"], 1).T))
            if cfg.attention.bias:
                block.qkv.bias.copy_(t(np.concatenate([p(f"attn/{w}_bias").reshape(D) for w in "qkv"])))
            block.proj.weight.copy_(t(p("attn/o").reshape(D, D).T))
            if cfg.attention.out_bias:
                block.proj.bias.copy_(t(p("attn/o_bias")))
            for ln, name in ((block.ln_1, "attn_norm"), (block.ln_2, "mlp_norm")):
                ln.weight.copy_(t(p(f"{name}/scale")))
                ln.bias.copy_(t(p(f"{name}/bias")))
            block.up.weight.copy_(t(p("mlp/up").T))
            block.down.weight.copy_(t(p("mlp/down").T))
            if cfg.mlp.bias:
                block.up.bias.copy_(t(p("mlp/up_bias")))
                block.down.bias.copy_(t(p("mlp/down_bias")))
        model.ln_f.weight.copy_(t(params["stack/final_norm/scale"]))
        model.ln_f.bias.copy_(t(params["stack/final_norm/bias"]))
    return model


class TorchStep:
    """One eager training step of the reference: forward, backward, clipping, AdamW.

    Args:
      model: a :class:`GPT`.
      lr, b1, b2, eps, weight_decay, clip_norm: as archzoo's ``OptimizerConfig``.
    """

    def __init__(self, model: GPT, *, lr: float, b1: float = 0.9, b2: float = 0.95, eps: float = 1e-8, weight_decay: float = 0.1, clip_norm: float | None = 1.0):
        self.model = model
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n != "wpe.weight"]
        rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and n != "wpe.weight")]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps, foreach=True)
        self.clip_norm = clip_norm

    def __call__(self, tokens: torch.Tensor, targets: torch.Tensor) -> float:
        torch.set_flush_denormal(True)
        try:
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.model(tokens, targets)
            loss.backward()
            if self.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm, foreach=True)
            self.optimizer.step()
        finally:
            torch.set_flush_denormal(False)
        return loss.detach()
