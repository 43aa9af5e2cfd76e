"""The model config: the component configs of :mod:`archzoo.layers.config`, nested.

Defaults give a tiny causal decoder that trains on a CPU. A published model (GPT-2, T5, Llama)
is a YAML file over these fields under ``configs/models/``.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from archzoo.config import apply_overrides, from_dict, invalid, load_yaml, to_dict
from archzoo.plugins import accept_paths
from archzoo.layers.plugins import MaskPlugin, MlpPlugin, NormPlugin, PositionPlugin, RouterPlugin, mask_reach

from archzoo.layers.config import (
    AttentionConfig,
    EmbeddingConfig,
    InitConfig,
    MlpConfig,
    MoeConfig,
    NormConfig,
    PositionConfig,
    RopeScaling,
)

__all__ = [
    "ModelConfig",
    "StackSpec",
    "load_model_config",
    "check_config_argument",
    "check_seed",
    "AttentionConfig",
    "MlpConfig",
    "NormConfig",
    "PositionConfig",
    "RopeScaling",
    "EmbeddingConfig",
    "InitConfig",
    "MoeConfig",
]


@dataclass(frozen=True)
class TokenIds:
    """Special-token ids as a Hugging Face config names them (None where it names none).

    Attributes:
      bos, eos, pad: begin, end (one id or several) and padding tokens.
      decoder_start: the first decoder input of an encoder-decoder.
    """

    bos: int | None = None
    eos: int | tuple[int, ...] | None = None
    pad: int | None = None
    decoder_start: int | None = None


@dataclass(frozen=True)
class StackSpec:
    """One stack of a family, as the FLOP count, the batch and the MoE placement see it.

    Attributes:
      name: ``decoder`` or ``encoder``; also the batch stream whose tokens it reads.
      num_layers: its blocks.
      cross: its blocks cross-attend to the other stack's output (an encoder-decoder's decoder).
      bidirectional: T5 relative buckets read both ways (see :class:`~archzoo.models.stack.Stack`).
      head: the output head reads its hidden states (the stream that carries the loss).
    """

    name: str
    num_layers: int
    cross: bool = False
    bidirectional: bool = False
    head: bool = True


@dataclass(frozen=True)
class ModelConfig:
    """A whole model.

    Attributes:
      family: ``decoder`` (causal or prefix by ``mask``), ``encoder_decoder`` or ``encoder``.
      name: free-form label.
      vocab_size: V.
      d_model: D.
      num_layers: decoder layers (the only stack of ``decoder`` and ``encoder``).
      num_encoder_layers: encoder layers of an encoder-decoder (None = num_layers).
      mask: the decoder's self-attention mask kind: ``causal`` or ``prefix`` (bidirectional over
        tokens with ``is_input``), or a mask of the user's own by import path
        (:class:`~archzoo.layers.plugins.MaskPlugin`: a predicate over query and key facts, or a
        function building a :class:`~archzoo.masks.Mask`). A prefix decoder is this class with
        another mask. Packing (``same_segment``) and ``attention.sliding_window`` are added to
        any of them. A mask of a decoder stack (the decoder's, the encoder-decoder's decoder's)
        may let a query see a later key only when both are in the prefix: anything else would
        show a decoder the targets it predicts, and is refused.
      encoder_mask: the encoder's self-attention mask kind (the encoder family, the
        encoder-decoder's encoder): ``full``, or a mask of the user's own by import path.
      parallel_block: attention and MLP read the same normed input and add in parallel (PaLM).
      init: how weights are initialised (GPT-2's depth-scaled normal by default; ``mup`` for
        width-transferable learning rates). A model that loads weights ignores it, unless it is
        ``mup``, whose multipliers change the forward pass.
      dtype: compute dtype; parameters stay float32.
      token_ids: special-token ids of a model read from Hugging Face (None: the ids archzoo's
        tokenizers reserve, :mod:`archzoo.data.special`).
      moe: Mixture-of-Experts layers in place of some blocks' MLPs (None: a dense model); see
        :class:`~archzoo.layers.config.MoeConfig` for the routers, placement and dispatch.
      remat: what the backward pass keeps of each block's activations and what it recomputes
        from them (rematerialisation: memory for time; the loss and gradients stay the same).
        ``none`` keeps every activation. ``full`` keeps each block's input only and runs the
        block forward again in the backward pass. ``dots`` keeps the outputs of the matmuls
        against weights (``jax.checkpoint_policies.dots_with_no_batch_dims_saveable``: the q, k,
        v, o and MLP projections, whose dot products have no batch dimension) and recomputes
        the rest: norms, activations, the batched attention matmuls and their softmax (so no
        ``[B, H, Q, K]`` array is kept; ``dots_saveable`` would keep them), and an MoE layer's
        expert matmuls (batched over experts, or ``ragged_dot``). ``attention`` recomputes only
        the attention core (the ``[B, H, Q, K]`` logits and probabilities, the largest
        activation at long context) from the queries, keys and values it keeps, and keeps the
        rest. XLA's CPU compiler drops the barriers that keep recomputation apart before its last
        common-subexpression pass, which merges it back into the forward pass: on CPU, remat
        costs time and saves no memory.
      scan_layers: hold each stack's blocks as one block whose parameters stack the layers on a
        leading ``layers`` axis, run by ``jax.lax.scan``: a deep model compiles one block, not
        each, and a mesh may shard the layers axis. The numbers equal the unrolled model's
        within float32 rounding; :func:`archzoo.convert.get_params` and ``set_params`` (and so
        the Hugging Face converters) read and write either layout by per-layer names. Needs
        every block of a stack alike: an MoE layer in every block or in none.
    """

    family: Literal["decoder", "encoder_decoder", "encoder"] = "decoder"
    name: str = "tiny"
    vocab_size: int = 256
    d_model: int = 64
    num_layers: int = 2
    num_encoder_layers: int | None = None
    mask: Literal["causal", "prefix"] | MaskPlugin = "causal"
    encoder_mask: Literal["full"] | MaskPlugin = "full"
    parallel_block: bool = False
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    mlp: MlpConfig = field(default_factory=MlpConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    position: PositionConfig = field(default_factory=PositionConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    init: InitConfig = field(default_factory=InitConfig)
    dtype: Literal["float32", "bfloat16"] = "float32"
    token_ids: TokenIds | None = None
    moe: MoeConfig | None = None
    remat: Literal["none", "full", "dots", "attention"] = "none"
    scan_layers: bool = False

    def __post_init__(self):
        accept_paths(self, "", "mask", "encoder_mask")
        for name in ("vocab_size", "d_model", "num_layers"):
            if getattr(self, name) < 1:
                raise invalid(name, f"must be >= 1, got {getattr(self, name)}")
        if self.num_encoder_layers is not None and self.num_encoder_layers < 1:
            raise invalid("num_encoder_layers", f"must be >= 1, got {self.num_encoder_layers}")
        if self.attention.head_dim is None and self.d_model % self.attention.num_heads:
            raise invalid(
                "d_model",
                f"d_model={self.d_model} is not divisible by attention.num_heads={self.attention.num_heads} "
                "(set attention.head_dim to decouple them)",
            )
        if self.family == "encoder" and self.mask != "causal":
            raise invalid("mask", f"is the decoder's mask; the encoder family has none (set encoder_mask), got {self.mask}")
        if self.family == "encoder_decoder" and self.mask == "prefix":
            raise invalid("mask", "an encoder-decoder's decoder has no prefix (its inputs go to the encoder); use causal")
        if self.family == "decoder" and self.encoder_mask != "full":
            raise invalid("encoder_mask", f"a decoder has no encoder; set mask instead, got {self.encoder_mask}")
        if isinstance(self.mask, MaskPlugin):
            reach = mask_reach(self.mask, "mask")
            if reach.leak is not None:
                raise invalid("mask", f"{self.mask} {reach.leak}")
        if isinstance(self.encoder_mask, MaskPlugin):
            mask_reach(self.encoder_mask, "encoder_mask")  # a predicate that cannot be evaluated is refused here
        if self.position.kind == "rope" and self.head_dim % 2:
            raise invalid("attention.head_dim", f"RoPE needs an even head width, got {self.head_dim}")
        if self.position.kind == "t5_bias":
            self._check_relative_buckets()
        self._check_layer_plugins()
        if self.moe is not None:
            self._check_moe()
            if self.scan_layers:
                for spec in self.stacks:
                    moe_layers = [i for i in range(spec.num_layers) if self.moe.is_moe(spec.name, i)]
                    if 0 < len(moe_layers) < spec.num_layers:
                        raise invalid(
                            "scan_layers",
                            f"a scanned stack runs one block for every layer, but the {spec.name} stack has MoE layers "
                            f"{moe_layers} of {spec.num_layers}; place an MoE layer in every block (moe.every: 1) or set scan_layers: false",
                        )

    def _check_layer_plugins(self):
        """Each layer plug-in built abstractly at this config's widths: its output shape and dtype
        and its parameters' logical axes (:func:`~archzoo.layers.plugins.check_layer`)."""
        if isinstance(self.mlp.kind, MlpPlugin) and self.moe is not None:
            raise invalid(
                "mlp.kind",
                f"{self.mlp.kind} is a dense MLP; an MoE model's experts are the built-in MLP (mlp.kind: standard), batched over experts",
            )
        keys = [
            ("mlp.kind", isinstance(self.mlp.kind, MlpPlugin)),
            ("norm.kind", isinstance(self.norm.kind, NormPlugin)),
            ("position.kind", isinstance(self.position.kind, PositionPlugin)),
            ("moe.router_logits", self.moe is not None and isinstance(self.moe.router_logits, RouterPlugin)),
        ]
        for key, own in keys:
            if own:
                layer_plugin_params(self, key)
        if isinstance(self.norm.kind, NormPlugin) and self.attention.qk_norm is not None:
            # the queries' and keys' norm: over each head, or over all heads together
            width = self.head_dim * (self.attention.num_heads if self.attention.qk_norm == "full" else 1)
            _check_layer_plugin("norm.kind", self.norm, width, 0, None, self.dtype, 0.0, 0.0)

    def _check_moe(self):
        """MoE placement inside the stacks, and expert choice only where it cannot leak."""
        moe = self.moe
        moe.expert_width(self.mlp.d_ff)  # divisible by the granularity
        stacks = {s.name: s.num_layers for s in self.stacks}
        if moe.layers is not None:
            for name in moe.stacks:
                if name in stacks and max(moe.layers) >= stacks[name]:
                    raise invalid(
                        "moe.layers",
                        f"layer {max(moe.layers)} is past the last layer of the {name} "
                        f"({stacks[name]} layers: 0..{stacks[name] - 1})",
                    )
        placed = {name: [i for i in range(n) if moe.is_moe(name, i)] for name, n in stacks.items()}
        if not any(placed.values()):
            where = ", ".join(f"{name} has {n} layers" for name, n in stacks.items())
            raise invalid(
                "moe",
                f"places no MoE layer (moe.stacks={list(moe.stacks)}, every={moe.every}, offset={moe.offset}, "
                f"first_dense={moe.first_dense}; the {where}); remove moe for a dense model",
            )
        if moe.router == "expert_choice" and placed.get("decoder") and not moe.allow_future_leak:
            raise invalid(
                "moe.router",
                "expert_choice in a decoder lets each token's output depend on later tokens of its group "
                "(every expert picks its tokens among all of them), which a causal or prefix decoder must not see; "
                "use token_choice, limit moe.stacks to [encoder], or set moe.allow_future_leak: true to study the leak",
            )

    def _check_relative_buckets(self):
        """T5 buckets (Raffel et al. 2020): half hold exact distances, half grow logarithmically up
        to max_distance; a stack that reads them both ways first splits them between past and
        future. Each stack needs one exact bucket and a max_distance past its exact ones."""
        n, distance = self.position.num_buckets, self.position.max_distance
        # buckets per direction of each stack: an encoder-decoder's encoder reads both ways, its decoder one
        if self.family == "encoder_decoder":
            per_direction = (n // 2, n)
        else:
            per_direction = (n // 2,) if self.family == "encoder" or self.sees_later_keys else (n,)
        bidirectional = min(per_direction) < n
        minimum = 4 if bidirectional else 2
        if n < minimum:
            split = ", split between past and future" if bidirectional else ""
            raise invalid(
                "position.num_buckets",
                f"{self._stack_name} needs at least {minimum} "
                f"(half exact distances, half logarithmic{split}), got {n}",
            )
        max_exact = max(per_direction) // 2
        if distance <= max_exact:
            raise invalid(
                "position.max_distance",
                f"must be more than {max_exact}, the largest distance with a bucket of its own "
                f"(num_buckets={n}), got {distance}",
            )

    @property
    def _stack_name(self) -> str:
        if self.family == "decoder":
            return "a prefix decoder" if self.sees_later_keys else "a causal decoder"
        return "an encoder" if self.family == "encoder" else "an encoder-decoder"

    @property
    def sees_later_keys(self) -> bool:
        """Whether a decoder's mask can let a query see a key at a later position: a prefix mask
        does inside the prefix, unless a sliding window keeps every key in the past.

        Such a stack reads T5 relative buckets both ways, the whole stack alike, as Mesh
        TensorFlow's prefix LM does (``bidirectional = not fully_autoregressive``); a causal stack
        keeps one-way buckets (the T5 decoder's).
        """
        return self.bidirectional_prefix and self.attention.sliding_window is None

    @property
    def bidirectional_prefix(self) -> bool:
        """Whether the decoder's mask lets prefix tokens (``is_input``) see later prefix tokens:
        ``prefix``, or a mask plug-in that does so on a probe row (generation then marks a
        prompt as the prefix)."""
        if isinstance(self.mask, MaskPlugin):
            return mask_reach(self.mask, "mask").later_in_prefix
        return self.mask == "prefix"

    @property
    def stacks(self) -> tuple[StackSpec, ...]:
        """The family's stacks, in the order a token meets them: the one place that says what
        each family is made of (the families, FLOP counts and benchmarks read it)."""
        if self.family == "encoder_decoder":
            return (
                StackSpec("encoder", self.encoder_layers, bidirectional=True, head=False),
                StackSpec("decoder", self.num_layers, cross=True),
            )
        if self.family == "encoder":
            return (StackSpec("encoder", self.num_layers, bidirectional=True),)
        return (StackSpec("decoder", self.num_layers, bidirectional=self.sees_later_keys),)

    @property
    def loss_stream(self) -> str:
        """The batch stream whose targets carry the loss: the stack with the output head."""
        return next(s.name for s in self.stacks if s.head)

    @property
    def head_dim(self) -> int:
        return self.attention.head_dim or self.d_model // self.attention.num_heads

    @property
    def encoder_layers(self) -> int:
        return self.num_encoder_layers or self.num_layers

    def replace(self, **changes) -> "ModelConfig":
        """A copy with top-level fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def layer_plugin_params(cfg: ModelConfig, key: str, d_model: int | None = None, d_ff: int | None = None) -> tuple[int, int]:
    """``(parameters, matmul weights)`` of one layer of the plug-in at ``key`` (``mlp.kind``,
    ``norm.kind``, ``position.kind``, ``moe.router_logits``), checked against its protocol: the
    size ladder counts the first, the FLOP count the second (what a token passes through).

    Args:
      cfg: the model config.
      key: which plug-in.
      d_model, d_ff: other widths than the config's (the size ladder tries shapes).
    """
    from archzoo.layers.init import parametrisation

    D = d_model or cfg.d_model
    section = {"mlp.kind": cfg.mlp, "norm.kind": cfg.norm, "position.kind": cfg.position, "moe.router_logits": cfg.moe}[key]
    if d_ff is not None:
        section = dataclasses.replace(section, d_ff=d_ff)
    E = cfg.moe.experts if key == "moe.router_logits" else None
    init = parametrisation(cfg.init, D, cfg.head_dim, residual_branches=2 * cfg.num_layers)
    return _check_layer_plugin(key, section, D, cfg.attention.num_heads, E, cfg.dtype, init.hidden_std, init.residual_std)


@functools.lru_cache(maxsize=None)
def _check_layer_plugin(key: str, section, D: int, H: int, E: int | None, dtype: str, init_std: float, out_std: float) -> tuple[int, int]:
    """:func:`~archzoo.layers.plugins.check_layer` for the plug-in of ``section`` (the MLP, norm,
    position or MoE config that names it), once per config and widths, built with the init
    stds a model passes it."""
    import jax
    import jax.numpy as jnp

    from archzoo.layers.mlp import make_mlp
    from archzoo.layers.norms import make_norm
    from archzoo.layers.plugins import check_layer

    x = jax.ShapeDtypeStruct((2, 3, D), jnp.dtype(dtype))
    if key == "mlp.kind":
        make = lambda rngs: make_mlp(section, D, rngs=rngs, init_std=init_std, out_std=out_std)  # noqa: E731
        return check_layer(key, section.kind, make, (x,), [(2, 3, D)], dtype=x.dtype)
    if key == "norm.kind":
        return check_layer(key, section.kind, lambda rngs: make_norm(section, D, rngs=rngs), (x,), [(2, 3, D)], dtype=x.dtype)
    if key == "position.kind":
        own = section.kind
        q, k = jax.ShapeDtypeStruct((2, 5), jnp.int32), jax.ShapeDtypeStruct((2, 7), jnp.int32)
        make = lambda rngs: own.construct(section, H, bidirectional=True, rngs=rngs)  # noqa: E731
        return check_layer(key, own, make, (q, k), [(2, H, 5, 7), (1, H, 5, 7)])
    own = section.router_logits
    x32 = jax.ShapeDtypeStruct((2, 3, D), jnp.float32)
    make = lambda rngs: own.construct(section, D, rngs=rngs, init_std=init_std)  # noqa: E731
    return check_layer(key, own, make, (x32,), [(2, 3, E)])


def check_seed(seed, argument: str) -> int:
    """An initialisation seed as a Python int, refused (naming ``argument``) unless in [0, 2**32).

    Without jax_enable_x64, ``jax.random.key`` reads a seed modulo 2**32, so 2**32 and -1 would
    silently repeat 0 and 2**32 - 1.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{argument}: expected an integer in [0, 2**32), got {seed!r}")
    seed = int(seed)  # a numpy integer as a Python int: `in range` would scan for it value by value
    if seed not in range(2**32):
        raise invalid(argument, f"must be in [0, 2**32) (JAX reads seeds modulo 2**32), got {seed}")
    return seed


def check_config_argument(value, argument: str) -> None:
    """Refuses, naming ``argument``, anything that is not a model config source."""
    if value is not None and not isinstance(value, (str, os.PathLike, dict, ModelConfig)):
        raise TypeError(
            f"{argument}: expected a ModelConfig, a YAML file path, a mapping or None, got {type(value).__name__} {value!r}"
        )


def load_model_config(
    source: str | Path | dict | ModelConfig | None = None, overrides: list[str] = (), **kwargs
) -> ModelConfig:
    """A :class:`ModelConfig` from a YAML file, a mapping or keyword arguments.

    Args:
      source: path of a YAML file, a mapping, a ModelConfig, or None for the defaults.
      overrides: ``key.sub=value`` strings applied on top (``attention.num_heads=8``).
      **kwargs: top-level fields (nested ones as mappings: ``attention={"num_heads": 8}``).

    Raises:
      ConfigError: naming the key (and the file and line for YAML files).
    """
    check_config_argument(source, "source")
    if isinstance(source, ModelConfig):
        if overrides or kwargs:
            source = to_dict(source)
        else:
            return source
    if source is None:
        data = {}
    elif isinstance(source, dict):
        data = dict(source)
    else:
        data = load_yaml(source)
    if "model" in data and isinstance(data["model"], dict) and len(data) == 1:
        data = data["model"]
    data.update(kwargs)
    apply_overrides(data, overrides)
    return from_dict(ModelConfig, data)
