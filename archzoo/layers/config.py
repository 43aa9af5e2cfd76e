"""Typed configs of the shared layers: one frozen dataclass per component.

Validation lives in ``__post_init__`` and names the field and what would be valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from archzoo.config import invalid
from archzoo.layers.plugins import MlpPlugin, NormPlugin, PositionPlugin, RouterPlugin
from archzoo.plugins import accept_paths

__all__ = ["AttentionConfig", "MlpConfig", "MoeConfig", "NormConfig", "PositionConfig", "RopeScaling", "EmbeddingConfig", "InitConfig"]


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
      qk_norm: normalise queries and keys (the model's norm kind and eps) before RoPE:
        ``full`` over all heads together (OLMoE), ``head`` over each head (OLMo 2, Qwen 3), None.
      backend: ``auto`` (default): per call, cuDNN on an NVIDIA GPU or splash attention on a
        TPU where the mask translates into that kernel's arguments without a check on the data
        and the inputs fit it, else ``xla``; on CPU the fused ``cpu`` kernel where it is built
        (a C++ compiler at first use) and the inputs fit it, outside a mesh of several devices,
        else ``xla``. Forced: ``xla`` (einsum + dense mask), ``jax``
        (jax.nn.dot_product_attention, XLA implementation), ``cpu`` (CPU only: the fused C++
        kernel, :mod:`archzoo.layers.cpu_fused`; ``xla`` without a compiler), ``cudnn``
        (GPU only) or ``splash`` (TPU only): the mask's structure goes to the fused kernel,
        checked on device where it assumes a layout of the facts; masks the kernel cannot say
        and inputs it does not take go to ``xla``; off their platform they refuse to run.
    """

    num_heads: int = 4
    num_kv_heads: int | None = None
    head_dim: int | None = None
    bias: bool = False
    out_bias: bool = False
    scale: bool = True
    sliding_window: int | None = None
    qk_norm: Literal["full", "head"] | None = None
    backend: Literal["auto", "xla", "jax", "cpu", "cudnn", "splash"] = "auto"

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
      kind: ``standard`` (the built-in MLP below), or an MLP class of the user's own by import
        path (:class:`~archzoo.layers.plugins.MlpPlugin`), which receives this config.
      d_ff: hidden width F.
      activation: ``relu``, ``gelu`` (exact), ``gelu_tanh`` (GPT-2's "gelu_new"), ``silu``.
      gated: gated linear unit (``silu`` + gated = SwiGLU, ``gelu`` + gated = GeGLU).
      bias: biases on both projections.
    """

    kind: Literal["standard"] | MlpPlugin = "standard"
    d_ff: int = 256
    activation: Literal["relu", "gelu", "gelu_tanh", "silu"] = "gelu_tanh"
    gated: bool = False
    bias: bool = True

    def __post_init__(self):
        accept_paths(self, "mlp.", "kind")
        if self.d_ff < 1:
            raise invalid("mlp.d_ff", f"must be >= 1, got {self.d_ff}")


@dataclass(frozen=True)
class NormConfig:
    """Normalisation layers.

    Attributes:
      kind: ``layernorm`` or ``rmsnorm`` (T5's no-mean variant; Llama's), or a norm class of the
        user's own by import path (:class:`~archzoo.layers.plugins.NormPlugin`).
      eps: added to the variance.
      bias: LayerNorm bias (ignored by rmsnorm).
      placement: ``pre`` (norm before each sublayer, GPT-2/Llama) or ``post`` (after the
        residual add, BART/original Transformer).
      embedding_norm: a norm right after the embedding (BLOOM, BART).
      final_norm: a norm after the last block (pre-norm stacks).
    """

    kind: Literal["layernorm", "rmsnorm"] | NormPlugin = "layernorm"
    eps: float = 1e-5
    bias: bool = True
    placement: Literal["pre", "post"] = "pre"
    embedding_norm: bool = False
    final_norm: bool = True

    def __post_init__(self):
        accept_paths(self, "norm.", "kind")
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
        ``none``, or an attention-logit bias of the user's own by import path
        (:class:`~archzoo.layers.plugins.PositionPlugin`; one per stack, as T5's table).
      max_len: positions a learned table holds.
      offset: rows skipped at the start of a learned table (OPT and BART: 2).
      rope_theta: RoPE base.
      rope_scaling: Llama-3 frequency scaling, or None.
      num_buckets: T5 relative-position buckets.
      max_distance: T5 distance past which buckets are logarithmic-saturated.
    """

    kind: Literal["learned", "rope", "alibi", "t5_bias", "none"] | PositionPlugin = "learned"
    max_len: int = 512
    offset: int = 0
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    num_buckets: int = 32
    max_distance: int = 128

    def __post_init__(self):
        accept_paths(self, "position.", "kind")
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


@dataclass(frozen=True)
class MoeConfig:
    """A Mixture-of-Experts layer in place of the MLP of some blocks (``model.moe``).

    Each expert is an MLP of the model's ``mlp`` kind (activation, gating, biases) with hidden
    width ``d_ff``. A router (float32 whatever the compute dtype) scores the experts of every real
    token; padding is never routed, takes no capacity and counts in no loss or statistic.

    Attributes:
      num_experts: routed experts E.
      top_k: experts per token (1: Switch; 2: GShard, GLaM, Mixtral). For ``expert_choice``, the
        average experts per token, which sets each expert's capacity (``top_k * tokens / E``)
        unless ``capacity_factor`` is given.
      router: ``token_choice`` (each token picks its ``top_k`` experts) or ``expert_choice``
        (Zhou et al. 2022: each expert picks its tokens among a whole group, so a token's output
        depends on other tokens of the group, later ones included; a causal or prefix decoder
        refuses it unless ``allow_future_leak``).
      router_logits: how the router scores the experts: ``linear`` (``x . W``, ``W [D, E]``), or
        a router of the user's own by import path (:class:`~archzoo.layers.plugins.RouterPlugin`);
        jitter, noise, the softmax, the choice and the balancing apply to either.
      normalize: renormalise the chosen experts' weights to sum to 1 (Mixtral); otherwise each
        weight is the router probability over all E (Switch, OLMoE, Qwen-MoE).
      d_ff: each routed expert's hidden width (None: ``mlp.d_ff``).
      granularity: fine-grained experts (DeepSeekMoE, Dai et al. 2024): E and k times
        ``granularity``, each expert's width ``d_ff`` divided by it (same active parameters).
      num_shared_experts: experts every token passes through (DeepSeekMoE), as one MLP of width
        ``shared_d_ff``.
      shared_d_ff: width of the shared experts together (None: ``num_shared_experts`` times
        the routed experts' width).
      shared_gate: the shared experts' output is scaled by ``sigmoid(x . w)`` (Qwen-MoE).
      every, offset: placement: layer i of a stack is MoE when ``i >= first_dense`` and
        ``(i - first_dense) % every == offset`` (every layer: 1, 0; Switch's odd layers: 2, 1).
      first_dense: the first blocks of each stack stay dense (DeepSeekMoE).
      layers: explicit MoE layer indices of each stack instead of every/offset/first_dense.
      stacks: which stacks take MoE layers (``decoder``, ``encoder``; default both).
      dispatch: ``dropless`` (every routed token reaches its experts: tokens sorted by expert
        and a grouped matmul) or ``capacity`` (each expert takes at most ``capacity`` tokens of a
        group; the rest skip the layer and pass through the residual).
      capacity_factor: capacity = ``ceil(capacity_factor * top_k * group tokens / E)`` (for
        ``capacity`` dispatch and ``expert_choice``; expert choice defaults to 1 times top_k).
      expert_capacity: a fixed capacity per expert and group instead (Hugging Face Switch's
        ``expert_capacity``).
      group: the tokens that share capacity: ``row`` (each row of the batch, as in Switch) or
        ``batch`` (the whole batch).
      priority: which tokens keep their place when an expert overflows: ``position`` (earlier
        tokens first; first choices of every token before any second choice) or ``score``
        (higher router probability first, before renormalisation: batch prioritized routing,
        Riquelme et al. 2021).
      grouped_matmul: the dropless path: ``ragged`` (assignments sorted by expert,
        ``jax.lax.ragged_dot``), ``blocks`` (each expert's assignments in blocks of rows, every
        block through its expert in one batched matmul with the weights gathered per block: the
        cost follows the assignments, whatever the loads), ``padded`` (each expert's
        assignments padded to a capacity of 1.25 times the mean load, one batched matmul
        ``[E, C, D]`` that a mesh's ``expert`` axis splits, and further passes only when an expert
        is more loaded than that) or ``auto`` (on CPU ``blocks``, or ``padded`` under a mesh
        with an ``expert`` axis; ``ragged`` elsewhere; ``archzoo bench moe`` measures them).
      jitter: training only: the router's input is multiplied by U(1 - jitter, 1 + jitter)
        (Switch); the experts see the input unchanged.
      noise: training only: Gaussian noise of this std added to the router logits before the
        top-k choice (noisy top-k gating, Shazeer et al. 2017, with a fixed std).
      balance: ``loss`` (the load-balancing loss, weighted by ``load_balance_weight``) or
        ``bias`` (auxiliary-loss-free, DeepSeek-V3: a per-expert bias added to the scores when
        choosing, never when weighting, moved by ``bias_rate`` after each step towards equal
        load; the loss is then reported but not trained on).
      load_balance_weight: coefficient of the Switch Transformer load-balancing loss (eq. 4:
        ``E * sum_e f_e P_e``, 1 when balanced), per MoE layer.
      z_loss_weight: coefficient of the router z-loss (ST-MoE: mean ``logsumexp(logits)^2``).
      bias_rate: the bias update speed of ``balance: bias``.
      allow_future_leak: acknowledges that expert choice in a causal or prefix decoder lets
        tokens see later tokens.
    """

    num_experts: int = 8
    top_k: int = 2
    router: Literal["token_choice", "expert_choice"] = "token_choice"
    router_logits: Literal["linear"] | RouterPlugin = "linear"
    normalize: bool = True
    d_ff: int | None = None
    granularity: int = 1
    num_shared_experts: int = 0
    shared_d_ff: int | None = None
    shared_gate: bool = False
    every: int = 1
    offset: int = 0
    first_dense: int = 0
    layers: tuple[int, ...] | None = None
    stacks: tuple[str, ...] = ("encoder", "decoder")
    dispatch: Literal["dropless", "capacity"] = "dropless"
    capacity_factor: float | None = None
    expert_capacity: int | None = None
    group: Literal["row", "batch"] = "row"
    priority: Literal["position", "score"] = "position"
    grouped_matmul: Literal["auto", "ragged", "blocks", "padded"] = "auto"
    jitter: float = 0.0
    noise: float = 0.0
    balance: Literal["loss", "bias"] = "loss"
    load_balance_weight: float = 0.01
    z_loss_weight: float = 0.0
    bias_rate: float = 0.001
    allow_future_leak: bool = False

    def __post_init__(self):
        accept_paths(self, "moe.", "router_logits")
        if self.num_experts < 1:
            raise invalid("moe.num_experts", f"an MoE layer needs at least one expert, got {self.num_experts}")
        if self.granularity < 1:
            raise invalid("moe.granularity", f"must be >= 1, got {self.granularity}")
        if self.top_k < 1:
            raise invalid("moe.top_k", f"must be >= 1, got {self.top_k}")
        if self.router == "token_choice" and self.top_k > self.num_experts:
            raise invalid(
                "moe.top_k", f"top_k={self.top_k} is more than moe.num_experts={self.num_experts}: a token cannot pick more experts than there are"
            )
        if self.d_ff is not None and self.d_ff < 1:
            raise invalid("moe.d_ff", f"must be >= 1, got {self.d_ff}")
        if self.d_ff is not None and self.d_ff % self.granularity:
            raise invalid("moe.d_ff", f"d_ff={self.d_ff} is not divisible by moe.granularity={self.granularity}")
        if self.num_shared_experts < 0:
            raise invalid("moe.num_shared_experts", f"must be >= 0, got {self.num_shared_experts}")
        if self.shared_d_ff is not None and (self.shared_d_ff < 1 or not self.num_shared_experts):
            raise invalid("moe.shared_d_ff", f"needs moe.num_shared_experts >= 1 and a width >= 1, got {self.shared_d_ff}")
        if self.shared_gate and not self.num_shared_experts:
            raise invalid("moe.shared_gate", "gates the shared experts: set moe.num_shared_experts >= 1")
        if self.every < 1:
            raise invalid("moe.every", f"must be >= 1, got {self.every}")
        if not 0 <= self.offset < self.every:
            raise invalid("moe.offset", f"must be in [0, moe.every={self.every}), got {self.offset}")
        if self.first_dense < 0:
            raise invalid("moe.first_dense", f"must be >= 0, got {self.first_dense}")
        if self.layers is not None:
            if not self.layers:
                raise invalid("moe.layers", "an empty list places no MoE layer; remove moe, or list layer indices")
            if any(i < 0 for i in self.layers) or len(set(self.layers)) != len(self.layers):
                raise invalid("moe.layers", f"layer indices must be distinct and >= 0, got {list(self.layers)}")
        bad = [s for s in self.stacks if s not in ("encoder", "decoder")]
        if bad or not self.stacks:
            raise invalid("moe.stacks", f"valid stacks: encoder, decoder; got {list(self.stacks)}")
        if self.capacity_factor is not None and not self.capacity_factor > 0:
            raise invalid("moe.capacity_factor", f"must be > 0, got {self.capacity_factor}")
        if self.expert_capacity is not None and self.expert_capacity < 1:
            raise invalid("moe.expert_capacity", f"must be >= 1, got {self.expert_capacity}")
        for name in ("jitter", "noise", "load_balance_weight", "z_loss_weight", "bias_rate"):
            if not getattr(self, name) >= 0:
                raise invalid(f"moe.{name}", f"must be >= 0, got {getattr(self, name)}")
        if self.jitter >= 1:
            raise invalid("moe.jitter", f"must be < 1 (inputs are scaled by U(1 - jitter, 1 + jitter)), got {self.jitter}")

    @property
    def experts(self) -> int:
        """Routed experts, fine-grained ones counted."""
        return self.num_experts * self.granularity

    @property
    def k(self) -> int:
        """Experts per token, fine-grained ones counted."""
        return self.top_k * self.granularity

    def expert_width(self, mlp_d_ff: int) -> int:
        """Each routed expert's hidden width."""
        width = self.d_ff or mlp_d_ff
        if width % self.granularity:
            raise invalid("moe.granularity", f"the expert width {width} (mlp.d_ff) is not divisible by granularity={self.granularity}")
        return width // self.granularity

    def shared_width(self, mlp_d_ff: int) -> int:
        """The shared experts' hidden width together (0: none)."""
        if not self.num_shared_experts:
            return 0
        return self.shared_d_ff or self.num_shared_experts * (self.d_ff or mlp_d_ff)

    def is_moe(self, stack: str, layer: int) -> bool:
        """Whether block ``layer`` of ``stack`` has an MoE layer."""
        if stack not in self.stacks:
            return False
        if self.layers is not None:
            return layer in self.layers
        return layer >= self.first_dense and (layer - self.first_dense) % self.every == self.offset
