"""Typed configs of the shared layers: one frozen dataclass per component.

Validation lives in ``__post_init__`` and names the field and what would be valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from archzoo.config import invalid

__all__ = ["AttentionConfig", "MlpConfig", "NormConfig", "PositionConfig", "RopeScaling", "EmbeddingConfig", "InitConfig"]


@dataclass(frozen=True)
class AttentionConfig:
    """Multi-head, grouped-query (``num_kv_heads < num_heads``) or multi-query attention.

    Attributes:
      num_heads: query heads H.
      num_kv_heads: key/value heads G (None = H; 1 = multi-query). Must divide H.
      head_dim: width per head (None = d_model // num_heads).
      bias: biases on the q, k, v projections.
      out_bias: bias on the output projection.
      scale: scale logits by 1/sqrt(head_dim) (T5 folds this into its init and uses none).
      sliding_window: keys with ``q - w < k <= q`` only (Mistral); None = unlimited.
      backend: ``xla`` (einsum + dense mask), ``jax`` (jax.nn.dot_product_attention, XLA
        implementation) or ``cudnn`` (jax.nn.dot_product_attention with cuDNN, GPU only).
    """

    num_heads: int = 4
    num_kv_heads: int | None = None
    head_dim: int | None = None
    bias: bool = False
    out_bias: bool = False
    scale: bool = True
    sliding_window: int | None = None
    backend: Literal["xla", "jax", "cudnn"] = "xla"

    def __post_init__(self):
        if self.num_heads < 1:
            raise invalid("attention.num_heads", f"must be >= 1, got {self.num_heads}")
        kv = self.num_kv_heads
        if kv is not None and (kv < 1 or self.num_heads % kv):
            raise invalid(
                "attention.num_kv_heads",
                f"{kv} kv heads do not divide attention.num_heads={self.num_heads}; "
                f"valid: {[g for g in range(1, self.num_heads + 1) if self.num_heads % g == 0]}",
            )
        if self.head_dim is not None and self.head_dim < 1:
            raise invalid("attention.head_dim", f"must be >= 1, got {self.head_dim}")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise invalid("attention.sliding_window", f"must be >= 1 or null, got {self.sliding_window}")

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads


@dataclass(frozen=True)
class MlpConfig:
    """Position-wise feed-forward network.

    Attributes:
      d_ff: hidden width F.
      activation: ``relu``, ``gelu`` (exact), ``gelu_tanh`` (GPT-2's "gelu_new"), ``silu``.
      gated: gated linear unit (``silu`` + gated = SwiGLU, ``gelu`` + gated = GeGLU).
      bias: biases on both projections.
    """

    d_ff: int = 256
    activation: Literal["relu", "gelu", "gelu_tanh", "silu"] = "gelu_tanh"
    gated: bool = False
    bias: bool = True

    def __post_init__(self):
        if self.d_ff < 1:
            raise invalid("mlp.d_ff", f"must be >= 1, got {self.d_ff}")


@dataclass(frozen=True)
class NormConfig:
    """Normalisation layers.

    Attributes:
      kind: ``layernorm`` or ``rmsnorm`` (T5's no-mean variant; Llama's).
      eps: added to the variance.
      bias: LayerNorm bias (ignored by rmsnorm).
      placement: ``pre`` (norm before each sublayer, GPT-2/Llama) or ``post`` (after the
        residual add, BART/original Transformer).
      embedding_norm: a norm right after the embedding (BLOOM, BART).
      final_norm: a norm after the last block (pre-norm stacks).
    """

    kind: Literal["layernorm", "rmsnorm"] = "layernorm"
    eps: float = 1e-5
    bias: bool = True
    placement: Literal["pre", "post"] = "pre"
    embedding_norm: bool = False
    final_norm: bool = True

    def __post_init__(self):
        if self.eps < 0:
            raise invalid("norm.eps", f"must be >= 0, got {self.eps}")


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style RoPE frequency scaling."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192

    def __post_init__(self):
        for name in ("factor", "low_freq_factor"):
            if not getattr(self, name) > 0:
                raise invalid(f"rope_scaling.{name}", f"must be > 0, got {getattr(self, name)}")
        if not self.high_freq_factor > self.low_freq_factor:
            # the smooth interpolation divides by their difference
            raise invalid(
                "rope_scaling.high_freq_factor",
                f"must be more than rope_scaling.low_freq_factor={self.low_freq_factor}, got {self.high_freq_factor}",
            )
        if self.original_max_position < 1:
            raise invalid("rope_scaling.original_max_position", f"must be >= 1, got {self.original_max_position}")


@dataclass(frozen=True)
class PositionConfig:
    """How tokens learn where they are.

    Attributes:
      kind: ``learned`` (absolute table), ``rope``, ``alibi``, ``t5_bias`` (relative buckets),
        ``none``.
      max_len: positions a learned table holds.
      offset: rows skipped at the start of a learned table (OPT and BART: 2).
      rope_theta: RoPE base.
      rope_scaling: Llama-3 frequency scaling, or None.
      num_buckets: T5 relative-position buckets.
      max_distance: T5 distance past which buckets are logarithmic-saturated.
    """

    kind: Literal["learned", "rope", "alibi", "t5_bias", "none"] = "learned"
    max_len: int = 512
    offset: int = 0
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    num_buckets: int = 32
    max_distance: int = 128

    def __post_init__(self):
        if self.max_len < 1:
            raise invalid("position.max_len", f"must be >= 1, got {self.max_len}")
        if self.offset < 0:
            raise invalid("position.offset", f"must be >= 0, got {self.offset}")
        if not self.rope_theta > 0:
            raise invalid("position.rope_theta", f"must be > 0, got {self.rope_theta}")


@dataclass(frozen=True)
class EmbeddingConfig:
    """Token embedding and output head.

    Attributes:
      tie: the output head reuses the input embedding.
      scale: multiply embeddings by sqrt(d_model).
      tied_head_rescale: with tied embeddings, scale the last hidden state by d_model^-0.5
        before the head (T5).
      final_logits_bias: a fixed (non-trained) bias on the logits (BART's buffer).
    """

    tie: bool = True
    scale: bool = False
    tied_head_rescale: bool = False
    final_logits_bias: bool = False


@dataclass(frozen=True)
class InitConfig:
    """How weights are initialised and, for μP, how width scales them, their Adam learning rates
    and two forward multipliers (Yang et al. 2022, "Tensor Programs V"). The rules, group by
    group, are :func:`archzoo.layers.init.parametrisation`'s.

    Attributes:
      kind: ``depth_scaled`` (GPT-2: weights N(0, std), and the projections into the residual
        stream, attention ``o`` and MLP ``down``, N(0, std / sqrt(N)) with N the residual
        branches of their stack: 2 per block, 3 with cross-attention), ``normal`` (N(0, std)
        everywhere) or ``mup`` (maximal update parametrisation, relative to ``base_width``).
      std: standard deviation of weight matrices and embedding tables (for mup: at base_width).
        Biases start at 0, norm gains at 1, T5's relative-bias table at N(0, 1).
      base_width: mup only, required: the d_model at which mup is ``normal``.
      base_head_dim: mup only: the head width at base_width (None = this config's head_dim, so
        the attention scale stays 1/sqrt(head_dim): right when width grows by adding heads).
      output_multiplier: mup only: multiplies the logits, on top of base_width / d_model.
      attention_multiplier: mup only: multiplies the attention logit scale.
    """

    kind: Literal["depth_scaled", "normal", "mup"] = "depth_scaled"
    std: float = 0.02
    base_width: int | None = None
    base_head_dim: int | None = None
    output_multiplier: float = 1.0
    attention_multiplier: float = 1.0

    def __post_init__(self):
        if not self.std > 0:
            raise invalid("init.std", f"must be > 0, got {self.std}")
        mup_only = {"base_width": None, "base_head_dim": None, "output_multiplier": 1.0, "attention_multiplier": 1.0}
        if self.kind != "mup":
            for name, off in mup_only.items():
                if getattr(self, name) != off:
                    leave = "null" if off is None else off
                    message = f"only init.kind=mup reads it (init.kind={self.kind!r}); leave it {leave}"
                    raise invalid(f"init.{name}", message)
            return
        if self.base_width is None:
            raise invalid("init.base_width", "init.kind=mup needs the d_model at which it equals the normal init")
        for name in ("base_width", "base_head_dim"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise invalid(f"init.{name}", f"must be >= 1, got {getattr(self, name)}")
        for name in ("output_multiplier", "attention_multiplier"):
            if not getattr(self, name) > 0:
                raise invalid(f"init.{name}", f"must be > 0, got {getattr(self, name)}")
