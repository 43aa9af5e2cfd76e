"""The protocols of a researcher's own mask and layers, named in a model config by import path.

Each class below is one place of :class:`~archzoo.models.config.ModelConfig` that takes a
plug-in (:mod:`archzoo.plugins`), and says what the object must be. The object's own options
are the parameters its protocol does not fill in.

======================  =================================================================
``mask``,               a predicate ``fn(q, k, **options) -> bool`` over broadcast facts
``encoder_mask``        (query side ``[B, Q, 1]``, key side ``[B, 1, K]``), or a function
                        ``fn(q, k=None, **options) -> Mask`` (e.g. a composition of
                        built-ins and :func:`archzoo.masks.predicate` constructors)
``mlp.kind``            an ``nnx.Module`` class: ``__init__(cfg: MlpConfig, d_model, *,
                        rngs, init_std, out_std, **options)``; ``__call__(x [B, L, D]) ->
                        [B, L, D]``
``norm.kind``           ``__init__(cfg: NormConfig, d_model, *, rngs, **options)``;
                        ``__call__(x [B, L, D]) -> [B, L, D]`` of x's dtype
``position.kind``       an attention-logit bias from positions: ``__init__(cfg:
                        PositionConfig, num_heads, *, bidirectional, rngs, **options)``;
                        ``__call__(q_positions [B, Q], k_positions [B, K]) -> [B or 1, H,
                        Q, K]`` float (as ALiBi and T5's buckets are)
``moe.router_logits``   ``__init__(cfg: MoeConfig, d_model, *, rngs, init_std, **options)``;
                        ``__call__(x [G, S, D] float32) -> logits [G, S, E]`` float32; the
                        MoE layer adds jitter and noise, takes the softmax and chooses
======================  =================================================================

Every parameter of a layer plug-in is made with :func:`archzoo.layers.params.param`, so it
carries logical axis names (a mesh shards it) and a width role (μP reads it); a layer whose
parameters lack them is refused when the model config is checked
(:func:`check_layer`), as is one whose output has the wrong shape.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from archzoo import masks
from archzoo.config import ConfigError, invalid
from archzoo.plugins import Plugin
from archzoo.plugins import with_article as _a

__all__ = ["MaskPlugin", "MlpPlugin", "NormPlugin", "PositionPlugin", "RouterPlugin", "MaskReach", "mask_reach", "check_layer"]


def _positional(obj) -> list[inspect.Parameter]:
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


@dataclasses.dataclass(frozen=True)
class MaskPlugin(Plugin):
    """A mask of the user's own (``mask``, ``encoder_mask``): a predicate over query and key
    facts, or a function that builds a :class:`~archzoo.masks.Mask` from them."""

    what = "mask"

    @classmethod
    def check(cls, obj, path, key, where):
        if isinstance(obj, masks.Predicate):
            return
        if not callable(obj) or inspect.isclass(obj):
            raise ConfigError(f"{where}{key}: {path} is {_a(type(obj).__name__)}, not a function of (q, k) facts")
        if len(_positional(obj)) < 2:
            raise ConfigError(
                f"{where}{key}: {path} has the wrong signature {inspect.signature(obj)}: a mask takes the query "
                "facts and the key facts as its first two arguments, fn(q, k, **options)"
            )

    @classmethod
    def parameters(cls, obj):
        if isinstance(obj, masks.Predicate):
            return {}
        first_two = {p.name for p in _positional(obj)[:2]}
        return {n: p for n, p in super().parameters(obj).items() if n not in first_two}

    def build(self, q: masks.TokenFacts, k: masks.TokenFacts | None = None) -> masks.Mask:
        """The mask over query facts ``q`` and key facts ``k`` (None: ``q``)."""
        return _builder(self)(q, k)


@functools.lru_cache(maxsize=None)
def _builder(plugin: MaskPlugin):
    """The plug-in as a mask constructor ``(q, k=None) -> Mask``: the object itself when it
    builds masks, else :func:`archzoo.masks.predicate` of it."""
    obj = plugin.resolve()
    if isinstance(obj, masks.Predicate):
        return obj
    probe = _probe_facts()
    out = obj(probe, probe, **plugin.kwargs)
    if isinstance(out, masks.Mask):
        return functools.partial(obj, **plugin.kwargs)
    return masks.Predicate(obj, plugin.path, plugin.options)  # options named name or fn are the user's


# The probe rows a mask plug-in is evaluated on when a config loads, 40 tokens each: one example
# without a prefix; one with a prefix of 5; four packed examples (prefixes of 3, 0, 6, 2) and
# padding. Each row: (segment lengths, prefix lengths).
_PROBE_ROWS = (((40,), (0,)), ((40,), (5,)), ((11, 9, 14, 3), (3, 0, 6, 2)))
_PROBE_LEN = 40


def _probe_facts() -> masks.TokenFacts:
    """The probe rows (``_PROBE_ROWS``) as facts ``[3, 40]``."""
    seg = np.zeros((len(_PROBE_ROWS), _PROBE_LEN), np.int32)
    pos = np.zeros_like(seg)
    is_input = np.zeros(seg.shape, bool)
    for row, (lengths, prefixes) in enumerate(_PROBE_ROWS):
        start = 0
        for i, (n, p) in enumerate(zip(lengths, prefixes)):
            seg[row, start : start + n], pos[row, start : start + n] = i + 1, np.arange(n)
            is_input[row, start : start + p] = True
            start += n
    return masks.facts(segment_ids=seg, positions=pos, is_input=is_input)


@dataclasses.dataclass(frozen=True)
class MaskReach:
    """What a mask plug-in allows on the probe rows, as a decoder stack must know.

    Attributes:
      later_in_prefix: a prefix token sees a later prefix token (a prefix-style mask).
      leak: a sentence naming a query that sees a later key outside the prefix, or None.
    """

    later_in_prefix: bool
    leak: str | None


@functools.lru_cache(maxsize=None)
def mask_reach(plugin: MaskPlugin, key: str) -> MaskReach:
    """Evaluates ``plugin & same_segment`` on probe rows of 40 tokens (one example without a
    prefix, one with, four packed ones and padding) and says which later keys it lets a query
    of a real token see. A probe, not a proof: :func:`archzoo.testing.check_causal` proves a
    model.

    Raises:
      ConfigError: naming ``key``: the predicate raises, returns something other than bool,
        or a shape that does not broadcast to ``[B, Q, K]``.
    """
    f = _probe_facts()
    B, L = f.shape
    try:
        allowed = np.asarray((plugin.build(f) & masks.same_segment(f)).allowed())
    except Exception as e:  # the user's function: say what it did, in one line, at the key
        raise invalid(key, f"{plugin} fails on probe rows of {L} tokens: {type(e).__name__}: {e}") from None
    if allowed.shape != (B, L, L):
        raise invalid(key, f"{plugin} gives a mask of shape {allowed.shape} for facts of shape {(B, L)}")
    inputs, real, pos = np.asarray(f.is_input), np.asarray(f.segment_ids) != 0, np.asarray(f.positions)
    later = np.triu(np.ones((L, L), bool), 1)[None] & real[:, :, None] & real[:, None, :]
    both_inputs = inputs[:, :, None] & inputs[:, None, :]
    bad = np.argwhere(allowed & later & ~both_inputs)
    leak = None
    if len(bad):
        row, q, k = bad[0]
        lengths, prefixes = _PROBE_ROWS[row]
        example = int(np.asarray(f.segment_ids)[row, q]) - 1
        where = f"an example of {lengths[example]} tokens with a prefix of {prefixes[example]}"
        leak = (
            f"lets the query at position {pos[row, q]} see the later key at position {pos[row, k]} (in {where}, on a probe row); "
            "in a decoder stack that shows each token the targets after it. Combine it with masks.causal (or masks.prefix), "
            "or use it as encoder_mask"
        )
    return MaskReach(bool(np.any(allowed & later & both_inputs)), leak)


class _LayerPlugin(Plugin):
    """A layer class with a fixed ``__init__`` protocol (:attr:`reserved`, in order)."""

    @classmethod
    def check(cls, obj, path, key, where):
        if not inspect.isclass(obj):
            raise ConfigError(f"{where}{key}: {path} is {_a(type(obj).__name__)}, not a class (an nnx.Module) of the {cls.what} protocol")
        try:
            params = inspect.signature(obj.__init__).parameters
        except (TypeError, ValueError):
            return
        missing = [n for n in cls.reserved if n != "self" and n not in params]
        takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
        if missing and not takes_any:
            raise ConfigError(
                f"{where}{key}: {path}.__init__ has the wrong signature {inspect.signature(obj.__init__)}: "
                f"the {cls.what} protocol passes {', '.join(n for n in cls.reserved if n != 'self')}; it lacks {', '.join(missing)}"
            )

    @classmethod
    def parameters(cls, obj):
        return super().parameters(obj.__init__)


@dataclasses.dataclass(frozen=True)
class MlpPlugin(_LayerPlugin):
    """An MLP of the user's own (``mlp.kind``)."""

    what = "MLP"
    reserved = ("self", "cfg", "d_model", "rngs", "init_std", "out_std")


@dataclasses.dataclass(frozen=True)
class NormPlugin(_LayerPlugin):
    """A norm of the user's own (``norm.kind``)."""

    what = "norm"
    reserved = ("self", "cfg", "d_model", "rngs")


@dataclasses.dataclass(frozen=True)
class PositionPlugin(_LayerPlugin):
    """A position scheme of the user's own (``position.kind``): an attention-logit bias."""

    what = "position"
    reserved = ("self", "cfg", "num_heads", "bidirectional", "rngs")


@dataclasses.dataclass(frozen=True)
class RouterPlugin(_LayerPlugin):
    """An MoE router of the user's own (``moe.router_logits``): the experts' logits."""

    what = "router"
    reserved = ("self", "cfg", "d_model", "rngs", "init_std")


def check_layer(key: str, plugin: Plugin, make, inputs: tuple, expected: list[tuple[int, ...]], *, dtype=None) -> tuple[int, int]:
    """Builds a layer plug-in abstractly (no memory) and checks its protocol.

    Returns:
      ``(parameters, matmul weights)``: the elements of all its parameters (the size ladder
      counts them), and of those of two or more dimensions, which the FLOP count takes as what
      each token passes through once (as for the built-in layers).

    Args:
      key: the config key that names it, for the error.
      plugin: the plug-in.
      make: ``make(rngs) -> module`` passing the protocol's arguments and the options.
      inputs: ``jax.ShapeDtypeStruct`` arguments of ``__call__``.
      expected: the output shapes the protocol allows; ``dtype``: its dtype, if it fixes one.

    Raises:
      ConfigError: naming ``key``: construction or the call fails, the output has another
        shape (or dtype), or a parameter lacks logical axis names or a width role.
    """
    from flax import nnx

    from archzoo.layers.init import WIDTH_ROLES

    try:
        module = nnx.eval_shape(lambda: make(nnx.Rngs(0)))
    except Exception as e:
        raise invalid(key, f"{plugin} cannot be built by its protocol: {type(e).__name__}: {e}") from None
    total = matmul = 0
    for path, variable in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        total += int(np.prod(variable.shape))
        matmul += int(np.prod(variable.shape)) if len(variable.shape) >= 2 else 0
        name = "/".join(str(p) for p in path)
        meta = variable.get_metadata()
        axes = meta.get("out_sharding")
        if axes is None or len(axes) != len(variable.shape):
            raise invalid(
                key,
                f"{plugin}: parameter {name} {tuple(variable.shape)} has no logical axis names "
                f"(got {axes!r}); create it with archzoo.layers.params.param(rngs, init, shape, axes, width_role=...)",
            )
        if meta.get("width_role") not in WIDTH_ROLES:
            raise invalid(key, f"{plugin}: parameter {name} has no width role in {WIDTH_ROLES}; create it with archzoo.layers.params.param")
    graphdef, state = nnx.split(module)
    try:
        out = jax.eval_shape(lambda s, *xs: nnx.merge(graphdef, s)(*xs), state, *inputs)
    except Exception as e:
        raise invalid(key, f"{plugin} fails when called on {[tuple(x.shape) for x in inputs]}: {type(e).__name__}: {e}") from None
    if not hasattr(out, "shape") or tuple(out.shape) not in [tuple(e) for e in expected]:
        got = f"shape {tuple(out.shape)}" if hasattr(out, "shape") else f"a {type(out).__name__}"
        shapes = " or ".join(str(tuple(e)) for e in expected)
        raise invalid(key, f"{plugin} returns {got} for inputs of shape {', '.join(str(tuple(x.shape)) for x in inputs)}; its protocol returns {shapes}")
    if dtype is not None and jnp.dtype(out.dtype) != jnp.dtype(dtype):
        raise invalid(key, f"{plugin} returns dtype {out.dtype} for inputs of {inputs[0].dtype}; its protocol returns {jnp.dtype(dtype)}")
    return total, matmul
