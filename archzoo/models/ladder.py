"""A size ladder: one rule that gives every family the same non-embedding parameter count N.

Kaplan et al. 2020 compare models by N, the parameters outside the token table, learned
position table and untied head, and find the loss at a given N insensitive to the shape
(depth, width, MLP ratio) over a wide range. So "the same size" here means the same N for
every family, and the shape follows one rule (aspect ratio, head width, MLP ratio) so that no
family gets a shape the others do not. An encoder-decoder spends the same N on two stacks,
its decoder blocks carrying cross-attention as well.

The rule sits in a run config under ``size:``; :func:`size_model` applies it to a base model.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import NamedTuple

from archzoo.config import invalid
from archzoo.models import count_params
from archzoo.models.config import ModelConfig, layer_plugin_params

__all__ = ["SIZES", "LadderConfig", "size_model"]

# Named rungs for CPU-sized sweeps: target N, in a 1-2-5 series from 1e5 to 1e7.
SIZES = {
    "n100k": 100_000,
    "n200k": 200_000,
    "n500k": 500_000,
    "n1m": 1_000_000,
    "n2m": 2_000_000,
    "n5m": 5_000_000,
    "n10m": 10_000_000,
}

# d_ff is a multiple of this: the nearest multiple misses by at most 8 * d_model * layers
# (ungated), about 2 / (3 d_model) of N, 1% at d_model = 64, so rounding leaves most of the
# tolerance to the shape.
D_FF_MULTIPLE = 8


@dataclass(frozen=True)
class LadderConfig:
    """The rule that sizes a model: a target N and the shape to reach it with.

    Give exactly one of ``name`` and ``non_embedding``.

    Attributes:
      name: a rung of :data:`SIZES` (``n100k`` ... ``n10m``).
      non_embedding: the target N itself (what ``count_params(...).non_embedding`` reports).
      aspect_ratio: target d_model / depth, where depth counts every block: both stacks of an
        encoder-decoder (so at one N it has about the width and total depth of a decoder).
        32 suits CPU-sized models (d_model 64 at N = 1e5, about 300 at 1e7).
      head_dim: width per head; num_heads = d_model / head_dim.
      ff_ratio: target d_ff / d_model of an ungated MLP. A gated MLP (SwiGLU, GeGLU) has three
        matrices instead of two, so its target is ff_ratio * 2/3 (Shazeer 2020; Llama's 8/3):
        its MLP holds as many parameters, and a gated and an ungated model of one rung share
        their shape.
      width_multiple: d_model is a multiple of this (None: of head_dim); head_dim must divide
        it. A base with grouped-query attention also needs num_heads to be a multiple of its
        num_heads / num_kv_heads.
      encoder_share: the fraction of N in the encoder stack of an encoder-decoder (a fraction
        of parameters, not of layers: a decoder block costs more); in (0, 1). The other
        families ignore it.
      tolerance: the largest relative miss of N allowed; a target that no shape reaches within
        it is refused.
    """

    name: str | None = None
    non_embedding: float | None = None
    aspect_ratio: float = 32.0
    head_dim: int = 32
    ff_ratio: float = 4.0
    width_multiple: int | None = None
    encoder_share: float = 0.5
    tolerance: float = 0.02

    def __post_init__(self):
        if (self.name is None) == (self.non_embedding is None):
            given = "both" if self.name is not None else "neither"
            raise invalid(
                "size.name",
                f"give exactly one of size.name (a rung: {', '.join(SIZES)}) and size.non_embedding "
                f"(a parameter count), got {given}",
            )
        if self.name is not None and self.name not in SIZES:
            close = difflib.get_close_matches(self.name, list(SIZES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise invalid("size.name", f"unknown rung {self.name!r}{hint}; valid: {', '.join(SIZES)}")
        count = self.non_embedding
        if count is not None and not (count > 0 and math.isfinite(count)):
            raise invalid("size.non_embedding", f"must be a positive parameter count, got {count}")
        for name in ("aspect_ratio", "ff_ratio"):
            if not getattr(self, name) > 0:
                raise invalid(f"size.{name}", f"must be > 0, got {getattr(self, name)}")
        if self.head_dim < 1:
            raise invalid("size.head_dim", f"must be >= 1, got {self.head_dim}")
        if self.width_multiple is not None:
            if self.width_multiple < 1:
                raise invalid("size.width_multiple", f"must be >= 1 or null, got {self.width_multiple}")
            if self.width_multiple % self.head_dim:
                divisors = [d for d in range(1, self.width_multiple + 1) if self.width_multiple % d == 0]
                raise invalid(
                    "size.head_dim",
                    f"heads do not divide d_model: d_model is a multiple of size.width_multiple="
                    f"{self.width_multiple}, which head_dim={self.head_dim} does not divide; "
                    f"valid: {divisors}",
                )
        if not 0 < self.encoder_share < 1:
            share = self.encoder_share
            raise invalid("size.encoder_share", f"must be in (0, 1), the encoder's part of N, got {share}")
        if not 0 < self.tolerance < 1:
            raise invalid("size.tolerance", f"must be in (0, 1), a relative miss of N, got {self.tolerance}")

    @property
    def target(self) -> float:
        """The target N."""
        return SIZES[self.name] if self.name is not None else self.non_embedding

    @property
    def key(self) -> str:
        """The config key that gave the target, for messages."""
        return "size.name" if self.name is not None else "size.non_embedding"


class _Shape(NamedTuple):
    """What the ladder sets; num_encoder_layers is 0 outside an encoder-decoder."""

    d_model: int
    num_heads: int
    num_kv_heads: int | None
    d_ff: int
    num_layers: int
    num_encoder_layers: int


def _stack_params(base: ModelConfig, shape: _Shape, num_layers: int, cross: bool) -> int:
    """Parameters of one :class:`~archzoo.models.stack.Stack` of this shape, counted by hand
    (learned positions excluded: they are embedding parameters)."""
    D, H, F = shape.d_model, shape.num_heads, shape.d_ff
    G, Dh = shape.num_kv_heads or H, D // H
    attn, mlp, norm = base.attention, base.mlp, base.norm
    # a layer of the user's own (models/config.py: layer_plugin_params) counts as it is built
    if not all(isinstance(kind, str) for kind in (norm.kind, mlp.kind, base.position.kind)):
        shaped = base.replace(d_model=D, attention=dataclasses.replace(attn, num_heads=H, num_kv_heads=shape.num_kv_heads, head_dim=None))
    if isinstance(norm.kind, str):
        one_norm = D * (2 if norm.kind == "layernorm" and norm.bias else 1)
    else:
        one_norm = layer_plugin_params(shaped, "norm.kind")[0]
    # q and o [D, H, Dh], k and v [D, G, Dh], then the biases
    attention = 2 * D * H * Dh + 2 * D * G * Dh + attn.bias * (H + 2 * G) * Dh + attn.out_bias * D
    if isinstance(mlp.kind, str):
        feed_forward = (3 if mlp.gated else 2) * D * F + mlp.bias * (F + D)
    else:
        feed_forward = _plugin_mlp_params(shaped, F)
    norms_per_block = 1 + cross + (not base.parallel_block)  # self-attention, cross-attention, MLP
    block = norms_per_block * one_norm + (1 + cross) * attention + feed_forward
    per_stack = (norm.embedding_norm + norm.final_norm) * one_norm
    if base.position.kind == "t5_bias":
        per_stack += base.position.num_buckets * H
    elif not isinstance(base.position.kind, str):
        per_stack += layer_plugin_params(shaped, "position.kind")[0]
    return per_stack + num_layers * block


def _plugin_mlp_params(shaped: ModelConfig, d_ff: int) -> int:
    """A plug-in MLP's parameters at ``d_ff``, built as it is; at 0 (which no MLP takes),
    extrapolated from 1 and 2, as the ladder takes N to be affine in d_ff."""
    if d_ff >= 1:
        return layer_plugin_params(shaped, "mlp.kind", d_ff=d_ff)[0]
    return 2 * _plugin_mlp_params(shaped, 1) - _plugin_mlp_params(shaped, 2)


def _encoder_and_rest(base: ModelConfig, shape: _Shape) -> tuple[int, int]:
    """Non-embedding parameters of the encoder stack of an encoder-decoder (0 for the other
    families) and of the other stack."""
    if base.family == "encoder_decoder":
        encoder = _stack_params(base, shape, shape.num_encoder_layers, cross=False)
        return encoder, _stack_params(base, shape, shape.num_layers, cross=True)
    return 0, _stack_params(base, shape, shape.num_layers, cross=False)


def _non_embedding(base: ModelConfig, shape: _Shape) -> int:
    return sum(_encoder_and_rest(base, shape))


def _with_d_ff(base: ModelConfig, shape: _Shape, target: float) -> _Shape:
    """The shape with the d_ff (a multiple of D_FF_MULTIPLE) whose N is nearest the target."""
    without = _non_embedding(base, shape._replace(d_ff=0))
    per_unit = _non_embedding(base, shape._replace(d_ff=1)) - without  # N is affine in d_ff
    exact = (target - without) / per_unit / D_FF_MULTIPLE
    options = {D_FF_MULTIPLE * max(1, math.floor(exact)), D_FF_MULTIPLE * max(1, math.ceil(exact))}
    return min(
        (shape._replace(d_ff=f) for f in sorted(options)),
        key=lambda s: abs(_non_embedding(base, s) - target),
    )


def _ff_ratio(base: ModelConfig, ladder: LadderConfig) -> float:
    """The target d_ff / d_model: a gated MLP's third matrix is paid for with a narrower d_ff."""
    return ladder.ff_ratio * (2 / 3 if base.mlp.gated else 1)


def _encoder_layers(base: ModelConfig, shape: _Shape, depth: int, share: float) -> set[int]:
    """The encoder's layers, of ``depth`` in all, on either side of the split that gives the
    encoder ``share`` of N (each stack costs a fixed part plus one block per layer)."""
    enc_fixed, dec_fixed = (_stack_params(base, shape, 0, cross) for cross in (False, True))
    enc_block = _stack_params(base, shape, 1, cross=False) - enc_fixed
    dec_block = _stack_params(base, shape, 1, cross=True) - dec_fixed
    # solves (enc_fixed + e enc_block) (1 - share) = share (dec_fixed + (depth - e) dec_block) for e
    exact = (share * (dec_fixed + depth * dec_block) - (1 - share) * enc_fixed) / (
        (1 - share) * enc_block + share * dec_block
    )
    return {min(depth - 1, max(1, e)) for e in (math.floor(exact), math.ceil(exact))}


def _candidates(base: ModelConfig, ladder: LadderConfig, unit: int, ratio: int | None):
    """Shapes near the rule, each with the d_ff that brings N nearest the target: every width
    (a multiple of ``unit``) up to the first whose shallowest depth overshoots, depths within a
    factor 4 of width / aspect_ratio, and for an encoder-decoder the two layer splits around
    encoder_share."""
    target, alpha = ladder.target, ladder.aspect_ratio
    fewest = 2 if base.family == "encoder_decoder" else 1
    d_model = unit
    while True:
        H = d_model // ladder.head_dim
        lo = max(fewest, round(d_model / alpha / 4))
        hi = max(lo, round(4 * d_model / alpha))
        # the cheapest shape of this width: the shallowest depth, encoder blocks where a split allows
        split = (1, lo - 1) if base.family == "encoder_decoder" else (lo, 0)
        smallest = _Shape(d_model, H, H // ratio if ratio else None, D_FF_MULTIPLE, *split)
        if _non_embedding(base, smallest) > target * (1 + ladder.tolerance):
            return
        for depth in range(lo, hi + 1):
            if base.family != "encoder_decoder":
                yield _with_d_ff(base, smallest._replace(num_layers=depth), target)
                continue
            planned = smallest._replace(d_ff=max(1, round(_ff_ratio(base, ladder) * d_model)))
            for e in _encoder_layers(base, planned, depth, ladder.encoder_share):
                yield _with_d_ff(base, smallest._replace(num_layers=depth - e, num_encoder_layers=e), target)
        d_model += unit


def _shape_error(base: ModelConfig, shape: _Shape, ladder: LadderConfig) -> float:
    """How far a shape is from the rule: the log-distances of its aspect ratio, its MLP ratio and
    (encoder-decoder) its ratio of encoder to decoder parameters from their targets."""
    aspect = shape.d_model / (shape.num_layers + shape.num_encoder_layers)
    ff_ratio = shape.d_ff / shape.d_model
    error = abs(math.log(aspect / ladder.aspect_ratio)) + abs(math.log(ff_ratio / _ff_ratio(base, ladder)))
    if base.family == "encoder_decoder":
        encoder, decoder = _encoder_and_rest(base, shape)
        error += abs(math.log(encoder / decoder * (1 - ladder.encoder_share) / ladder.encoder_share))
    return error


def _apply(base: ModelConfig, shape: _Shape) -> ModelConfig:
    attention = dataclasses.replace(
        base.attention, num_heads=shape.num_heads, num_kv_heads=shape.num_kv_heads, head_dim=None
    )
    encoder_layers = shape.num_encoder_layers if base.family == "encoder_decoder" else base.num_encoder_layers
    return base.replace(
        d_model=shape.d_model,
        num_layers=shape.num_layers,
        num_encoder_layers=encoder_layers,
        attention=attention,
        mlp=dataclasses.replace(base.mlp, d_ff=shape.d_ff),
    )


def _smallest_n(base: ModelConfig, ladder: LadderConfig, unit: int, ratio: int | None) -> int:
    """N of the smallest model on the grid: one layer per stack, one head group, the least d_ff."""
    H = unit // ladder.head_dim
    encoder_layers = 1 if base.family == "encoder_decoder" else 0
    shape = _Shape(unit, H, H // ratio if ratio else None, D_FF_MULTIPLE, 1, encoder_layers)
    return _non_embedding(base, shape)


def _refusal(base: ModelConfig, ladder: LadderConfig, unit: int, ratio: int | None, nearest: _Shape | None):
    """The ConfigError for a target that no shape reaches within tolerance."""
    target = ladder.target
    layers = "one encoder and one decoder layer" if base.family == "encoder_decoder" else "one layer"
    smallest = _smallest_n(base, ladder, unit, ratio)
    heads_only = math.lcm(ladder.width_multiple or ladder.head_dim, ladder.head_dim)
    if ratio and _smallest_n(base, ladder, heads_only, None) <= target < smallest:
        return invalid(
            "model.attention.num_kv_heads",
            f"keeping num_heads / num_kv_heads = {ratio} needs num_heads to be a multiple of {ratio}, so "
            f"d_model >= {unit}, whose smallest model ({layers}) has N={smallest:,}, more than the target "
            f"{target:,.0f} of {ladder.key}; valid: num_kv_heads null, a smaller ratio, or a larger target",
        )
    if target < smallest:
        return invalid(
            ladder.key,
            f"{target:,.0f} is too small: the smallest model ({layers} of d_model={unit}, "
            f"{unit // ladder.head_dim} head(s) of size.head_dim={ladder.head_dim}, d_ff={D_FF_MULTIPLE}) "
            f"has N={smallest:,}; give at least {smallest:,}",
        )
    closest = "" if nearest is None else f"; the nearest has N={_non_embedding(base, nearest):,}"
    return invalid(
        ladder.key,
        f"no shape reaches {target:,.0f} within size.tolerance={ladder.tolerance}{closest}; "
        "give a larger target or loosen size.tolerance",
    )


def size_model(base: ModelConfig, ladder: LadderConfig) -> ModelConfig:
    """``base`` sized by the ladder: its shape chosen so its non-embedding count hits the target.

    The ladder owns d_model, num_layers (and num_encoder_layers of an encoder-decoder),
    attention.num_heads, attention.num_kv_heads (base's num_heads / num_kv_heads kept where it
    is set, else None), attention.head_dim (None: d_model = num_heads * size.head_dim) and
    mlp.d_ff. Every other field of ``base`` stays.

    An MoE base is sized as its dense twin (``moe`` removed), then given its ``moe`` back: the
    rung's N is the dense model's, which is the MoE model's active non-embedding count less its
    routers when the experts' widths sum to the MLP's over the k chosen (``granularity``, or
    ``d_ff = mlp.d_ff / top_k``); the comparison is at equal active parameters.

    The candidates: every width that is a multiple of size.width_multiple, depths within a
    factor 4 of d_model / size.aspect_ratio, for an encoder-decoder the two layer splits around
    size.encoder_share, each with the d_ff (a multiple of 8) that brings N nearest the target.
    Of those whose N is within size.tolerance of the target, it returns the one nearest the
    rule: the least sum of log-distances of aspect ratio, MLP ratio and encoder-to-decoder
    parameter ratio from their targets.

    Tolerance: N is within size.tolerance (default 2%) of the target, or the target is
    refused. With the default rule every rung of :data:`SIZES` lands within it for every
    family, and so does every target from about 2e4 up (3e4 for a base with num_heads /
    num_kv_heads = 2); below, one step of d_ff or one layer is more than 2% of N. Of the
    rungs, the aspect ratio is within a factor 2 of the target (a width grid made coarse by a
    kept kv-head ratio can push it further), and the encoder's share is within 0.1 of
    size.encoder_share from n200k up (n100k has room for one encoder and one decoder layer).

    The search counts shapes by hand (up to a few thousand, in tens of ms) and checks that
    count against :func:`~archzoo.models.count_params` of the chosen shape with one layer per
    stack; ``count_params`` of the result is exact.

    Args:
      base: the model to size (family, vocab, positions, norms, MLP kind, mask, dtype...).
      ladder: the target and the shape rule.

    Returns:
      the sized :class:`ModelConfig`.

    Raises:
      ConfigError: naming the key: a target below the smallest model (``size.non_embedding`` or
        ``size.name``), or one no shape reaches within tolerance; an odd size.head_dim under
        RoPE; a num_kv_heads ratio (``model.attention.num_kv_heads``) whose smallest width is
        already past the target.
    """
    if base.moe is not None:
        return size_model(base.replace(moe=None), ladder).replace(moe=base.moe)
    if base.position.kind == "rope" and ladder.head_dim % 2:
        raise invalid(
            "size.head_dim", f"RoPE (model.position.kind) needs an even head width, got {ladder.head_dim}"
        )
    kv = base.attention.num_kv_heads
    ratio = base.attention.num_heads // kv if kv is not None else None
    unit = math.lcm(ladder.width_multiple or ladder.head_dim, ladder.head_dim * (ratio or 1))
    target = ladder.target
    shapes = list(_candidates(base, ladder, unit, ratio))
    miss = {shape: abs(_non_embedding(base, shape) - target) / target for shape in shapes}
    within = [shape for shape in shapes if miss[shape] <= ladder.tolerance]
    if not within:
        raise _refusal(base, ladder, unit, ratio, min(shapes, key=miss.get, default=None))
    chosen = min(within, key=lambda shape: _shape_error(base, shape, ladder))
    one_per_stack = chosen._replace(num_layers=1, num_encoder_layers=min(1, chosen.num_encoder_layers))
    counted = count_params(_apply(base, one_per_stack)).non_embedding
    assert counted == _non_embedding(base, one_per_stack), (
        f"the ladder's hand count ({_non_embedding(base, one_per_stack)}) no longer matches the model's "
        f"({counted}) for {one_per_stack}: update _stack_params"
    )
    return _apply(base, chosen)
