""":func:`check_causal`, :func:`check_packing` and :func:`check_cache`: a model (or config)
against its own unpacked, uncached forward pass (see :mod:`archzoo.testing`)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from archzoo.masks import TokenFacts
from archzoo.models import FAMILIES, ModelConfig, build, load_model_config

__all__ = ["check_cache", "check_causal", "check_packing"]

# Rows of the stream a model conditions on (an encoder-decoder's encoder): examples of 5 and 3
# tokens, the second right-padded, as generate pads encoder inputs.
_SOURCE_LENGTHS = (5, 3)




def check_causal(model_or_config, *, seed: int = 0, length: int = 12, atol: float = 1e-6) -> None:
    """Checks that the logits at positions <= t do not change when the tokens after t do.

    Two rows of ``length`` random tokens, one example each, no prefix (``is_input`` all False);
    for several t every token after t is replaced. An encoder-decoder keeps its encoder tokens
    and is checked on the decoder side. The new tokens must change the logits at t + 1, or the
    model ignores its tokens and the check would prove nothing.

    Args:
      model_or_config: a :class:`~archzoo.models.ModelConfig`, a YAML path or a mapping (built
        with ``seed``), or a built model of a family that decodes (Decoder, EncoderDecoder, or a
        subclass: ``config``, ``batch_inputs``, ``forward``, ``generation_cache``,
        ``decode_step``).
      seed: the seed of the weights (when built here) and of the tokens.
      length: tokens per row, >= 2.
      atol: the largest |Δ| allowed at logits of scale <= 1, growing with ``max |logits|``
        above it. Both passes run one computation on one shape, so a causal model's earlier
        logits come out the same; the tolerance only absorbs rounding.

    Raises:
      AssertionError: naming t, the row and position whose logits moved, and by how much.
      ValueError: the model is an encoder (bidirectional by design), or ``length < 2``.

    Example::

        check_causal(archzoo.load_model_config("my_model.yaml", d_model=32, num_layers=2))
    """
    if length < 2:
        raise ValueError(f"check_causal(): length must be >= 2 (a position and one after it); got {length}")
    model = _model(model_or_config, seed, "check_causal", decodes=True)
    cfg, rng = model.config, np.random.default_rng(seed)
    V, stream = cfg.vocab_size, cfg.loss_stream
    tokens, sources = rng.integers(0, V, (2, length)), _source_rows(cfg, rng)
    lengths = {stream: length, **{name: max(_SOURCE_LENGTHS) for name in sources}}
    logits = _logits_fn(model)

    def batch(tokens_BL):  # one example per row, no prefix
        return _batch({stream: [[(row, 0)] for row in tokens_BL], **sources}, lengths)

    base = logits(batch(tokens))
    tol = _tolerance(atol, base)
    for t in sorted({0, (length - 1) // 3, 2 * (length - 1) // 3, length - 2}):
        later = tokens.copy()
        shift = rng.integers(1, V, later[:, t + 1 :].shape)  # every token after t changes
        later[:, t + 1 :] = (later[:, t + 1 :] + shift) % V
        out = logits(batch(later))
        b, p, delta = _worst(out[:, : t + 1], base[:, : t + 1])
        if delta > tol:
            raise AssertionError(
                f"check_causal: changing the {stream} tokens after position {t} changed the logits at "
                f"position {p} (row {b}) by max |Δ| = {delta:.3g} > tolerance {tol:.3g}: a token sees later tokens"
            )
        _, _, reach = _worst(out[:, t + 1 : t + 2], base[:, t + 1 : t + 2])
        if not reach > tol:
            raise AssertionError(
                f"check_causal: changing the {stream} tokens after position {t} left the logits at position "
                f"{t + 1} unchanged too (max |Δ| = {reach:.3g}): the model does not read its tokens, so "
                "causality went untested"
            )


def check_packing(model_or_config, *, seed: int = 0, atol: float = 1e-5) -> None:
    """Checks that examples packed in one row give the logits they give alone.

    Row 0 of a batch packs three examples of different lengths (segment ids 1, 2, 3, positions
    restarting at 0, two padding tokens at the end); rows 1, 2, 3 hold each example alone (then
    padding). Their logits must agree at every token of each example. An encoder-decoder packs
    its encoder stream alike (one segment id pairs the two sides of an example). Encoder tokens
    are all ``is_input``, as the feature converters mark them; the first two decoder-stream
    examples start with an ``is_input`` prefix, which a prefix decoder reads and a causal mask
    ignores. A router that drops tokens by capacity may fail: what it drops depends on the
    other tokens of the batch.

    Args:
      model_or_config: a ModelConfig, a YAML path or a mapping (built with ``seed``), or a built
        model of any family (or a subclass: ``config``, ``batch_inputs``, ``forward``).
      seed: the seed of the weights (when built here) and of the tokens.
      atol: the largest |Δ| allowed at logits of scale <= 1, growing with ``max |logits|``
        above it. A packed example attends over a longer row than alone, so XLA may add the
        same float32 terms in another order: a few ulps, far under what one leaked token moves.

    Raises:
      AssertionError: naming the example, its tokens in the packed row, the position and max |Δ|.

    Example::

        check_packing(dict(family="encoder", vocab_size=64, d_model=32, num_layers=2))
    """
    model = _model(model_or_config, seed, "check_packing", decodes=False)
    cfg, rng = model.config, np.random.default_rng(seed)
    stream = cfg.loss_stream
    lengths = {spec.name: (5, 4, 3) if spec.name == stream else (4, 6, 2) for spec in cfg.stacks}
    examples = {
        name: [(rng.integers(0, cfg.vocab_size, n), prefix) for n, prefix in zip(ns, (2, 3, 0))]
        for name, ns in lengths.items()
    }
    # One batch, so one compiled shape: the packed row, then each example alone in its own row.
    rows = {name: [exs] + [[ex] for ex in exs] for name, exs in examples.items()}
    got = _logits_fn(model)(_batch(rows, {name: sum(ns) + 2 for name, ns in lengths.items()}))
    start = 0
    for i, n in enumerate(lengths[stream]):
        alone = got[1 + i : 2 + i, :n]
        tol = _tolerance(atol, alone)
        _, p, delta = _worst(got[:1, start : start + n], alone)
        if delta > tol:
            raise AssertionError(
                f"check_packing: example {i + 1} of the packed row (segment id {i + 1}, {stream} tokens "
                f"{start}..{start + n - 1}) differs from the same example alone at its position {p} by max |Δ| = "
                f"{delta:.3g} > tolerance {tol:.3g}: packed examples see each other or the padding"
            )
        start += n


def check_cache(model_or_config, *, seed: int = 0, steps: int = 9, atol: float = 1e-5) -> None:
    """Checks that decoding with the KV cache gives the logits of the full forward pass.

    Two rows as :func:`archzoo.generate` feeds them: prompts of 3 and 2 tokens flagged
    ``is_input`` (a prefix decoder's bidirectional prefix; a causal mask ignores it), the
    shorter left-padded (segment id 0), written into an empty cache in one call; then ``steps``
    tokens one at a time. Their logits must equal one forward pass over the same tokens and
    facts at every real token. An encoder-decoder's cache holds its encoded source (5 and 3
    tokens, right-padded).

    Args:
      model_or_config: a ModelConfig, a YAML path or a mapping (built with ``seed``), or a built
        model of a family that decodes (Decoder, EncoderDecoder, or a subclass: ``config``,
        ``batch_inputs``, ``forward``, ``generation_cache``, ``decode_step``).
      seed: the seed of the weights (when built here) and of the tokens.
      steps: tokens decoded one at a time after the prompt, >= 1.
      atol: the largest |Δ| allowed at logits of scale <= 1, growing with ``max |logits|``
        above it. A decode step attends over the cache's slots and the full pass over the row:
        the same float32 terms, added in another order.

    Raises:
      AssertionError: naming the row, the position (in the prompt or which decode step) and
        max |Δ| at the first call whose logits differ.
      ValueError: the model is an encoder (it has no decoder to cache), or ``steps < 1``.

    Example::

        check_cache(dict(family="encoder_decoder", vocab_size=64, d_model=32, num_layers=2))
    """
    if steps < 1:
        raise ValueError(f"check_cache(): steps must be >= 1; got {steps}")
    model = _model(model_or_config, seed, "check_cache", decodes=True)
    cfg, rng = model.config, np.random.default_rng(seed)
    V, stream, prompt = cfg.vocab_size, cfg.loss_stream, 3
    L = prompt + steps
    # Row 1 is left-padded by one token, as generate pads a shorter prompt: 2 real prompt tokens.
    rows = {stream: [[(rng.integers(0, V, L), prompt)], [(rng.integers(0, V, L - 1), prompt - 1)]]}
    sources = _source_rows(cfg, rng)
    lengths = {stream: L, **{name: max(_SOURCE_LENGTHS) for name in sources}}
    batch = _batch({**rows, **sources}, lengths, left={stream: (0, 1)})
    want = _logits_fn(model)(batch)

    def facts_of(name, part=slice(None)):
        # Plain TokenFacts, as generate builds them (not marked ordered: the cache's facts are not).
        return TokenFacts(*(batch[f"{name}_{k}"][:, part] for k in ("segment_ids", "positions", "is_input")))

    source = next(((batch[f"{name}_tokens"], facts_of(name)) for name in sources), None)
    real = np.asarray(batch[f"{stream}_segment_ids"]) != 0  # the outputs at padding are unspecified
    tol = _tolerance(atol, want[real])
    prefill, step = _decode_fns(model)
    tokens = batch[f"{stream}_tokens"]
    out, cache = prefill(source, tokens[:, :prompt], facts_of(stream, slice(0, prompt)), L)
    for t in range(prompt, L + 1):  # out holds the logits of the tokens before t
        span = slice(t - out.shape[1], t)
        delta = np.where(real[:, span], _abs_diff(out, want[:, span]).max(-1), 0.0)
        b, p = (int(x) for x in np.unravel_index(delta.argmax(), delta.shape))
        if delta[b, p] > tol:
            when = f"decode step {t - prompt} of {steps}"
            if t == prompt:
                when = f"the {prompt}-token prompt written in one call"
            raise AssertionError(
                f"check_cache: decoding with the KV cache differs from the full forward pass at row {b}, {stream} "
                f"position {span.start + p} ({when}) by max |Δ| = {delta[b, p]:.3g} > tolerance {tol:.3g}"
            )
        if t < L:
            out, cache = step(tokens[:, t : t + 1], facts_of(stream, slice(t, t + 1)), cache)


def _model(model_or_config, seed: int, caller: str, *, decodes: bool):
    """The model to check: built from a config source with ``seed``, or the given one; an
    encoder refused (before building) where the check needs a decode step."""
    if isinstance(model_or_config, Mapping) and not isinstance(model_or_config, dict):
        model_or_config = dict(model_or_config)
    if isinstance(model_or_config, (ModelConfig, str, os.PathLike, dict)):
        cfg = load_model_config(model_or_config)
        if decodes:
            _refuse_encoder(FAMILIES[cfg.family], cfg, caller)
        return build(cfg, seed=seed)
    if not all(hasattr(model_or_config, name) for name in ("config", "batch_inputs", "forward")):
        raise TypeError(
            f"{caller}(): expected a ModelConfig, a YAML path, a mapping or a built archzoo model (with config, "
            f"batch_inputs and forward); got {type(model_or_config).__name__}"
        )
    if decodes:
        _refuse_encoder(type(model_or_config), model_or_config.config, caller)
    return model_or_config


def _refuse_encoder(family: type, cfg: ModelConfig, caller: str) -> None:
    # A family that generates has a decode step (archzoo.generation reads the same methods).
    decodes = all(callable(getattr(family, name, None)) for name in ("decode_step", "generation_cache"))
    if not decodes:
        raise ValueError(
            f"{caller}(): {family.__name__} (family {cfg.family!r}) is bidirectional by design: every token "
            "attends to every token of its example, so it has no causal order and no decode step to check; "
            "check_packing applies to it"
        )


def _source_rows(cfg: ModelConfig, rng: np.random.Generator) -> dict:
    """``_batch`` rows for every stream besides the one with the logits (``_SOURCE_LENGTHS``)."""
    return {
        spec.name: [[(rng.integers(0, cfg.vocab_size, n), 0)] for n in _SOURCE_LENGTHS]
        for spec in cfg.stacks
        if spec.name != cfg.loss_stream
    }


def _batch(rows: dict, lengths: dict, *, left: dict | None = None) -> dict:
    """A packed batch in the layout of :mod:`archzoo.features.packing`.

    Args:
      rows: stream name -> per row, the examples packed one after another in it (segment ids 1,
        2, ..., positions from 0), each ``(tokens, prefix)``: int token ids and how many leading
        tokens are ``is_input``. Encoder tokens are all ``is_input``, as the feature converters
        mark them.
      lengths: stream name -> row length (padding, segment id 0, after the examples).
      left: stream name -> per row, padding tokens before its first example.

    Returns:
      ``{stream}_tokens``, ``_segment_ids``, ``_positions``, ``_is_input``: ``[B, L]`` each.
    """
    fields = {"tokens": np.int32, "segment_ids": np.int32, "positions": np.int32, "is_input": bool}
    batch = {}
    for name, examples_by_row in rows.items():
        arrays = {k: np.zeros((len(examples_by_row), lengths[name]), dtype) for k, dtype in fields.items()}
        for b, examples in enumerate(examples_by_row):
            at = (left or {}).get(name, (0,) * len(examples_by_row))[b]
            for i, (tokens, prefix) in enumerate(examples):
                n = len(tokens)
                span = slice(at, at + n)
                arrays["tokens"][b, span] = tokens
                arrays["segment_ids"][b, span] = i + 1
                arrays["positions"][b, span] = np.arange(n)
                arrays["is_input"][b, span] = np.arange(n) < (n if name == "encoder" else prefix)
                at += n
        batch.update({f"{name}_{k}": jnp.asarray(v) for k, v in arrays.items()})
    return batch


def _tolerance(atol: float, reference: np.ndarray) -> float:
    # float32 rounding is relative: the tolerance grows with the logits once they pass 1.
    return atol * max(1.0, float(np.abs(reference).max()))


def _abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| with NaN as infinity, so a NaN never passes a comparison."""
    return np.nan_to_num(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), nan=np.inf)


def _worst(got: np.ndarray, want: np.ndarray) -> tuple[int, int, float]:
    """Row, position and max |Δ| over the vocab where two ``[B, L, V]`` logits differ most."""
    delta = _abs_diff(got, want).max(-1)
    b, p = np.unravel_index(delta.argmax(), delta.shape)
    return int(b), int(p), float(delta[b, p])


def _logits_fn(model) -> Callable[[dict], np.ndarray]:
    """``batch -> logits [B, L, V]`` of the model's loss stream, as the loss computes them;
    compiled (once per shape) for an NNX module, since an eager forward pass takes seconds."""
    if isinstance(model, nnx.Module):
        graphdef, state = nnx.split(model)
        return lambda batch: np.asarray(_forward(graphdef, state, batch))
    return lambda batch: np.asarray(model.forward(**model.batch_inputs(batch)).logits)


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, batch):
    model = nnx.merge(graphdef, state)
    return model.forward(**model.batch_inputs(batch)).logits


def _decode_fns(model):
    """``prefill(source, tokens, facts, max_len) -> (logits, cache)`` into an empty cache, and
    ``step(tokens, facts, cache) -> (logits, cache)``, as :func:`archzoo.generate` calls them."""
    if isinstance(model, nnx.Module):
        graphdef, state = nnx.split(model)
        return functools.partial(_prefill, graphdef, state), functools.partial(_step, graphdef, state)
    return functools.partial(_prefill_eager, model), functools.partial(_step_eager, model)


def _prefill_eager(model, source, tokens, facts, max_len):
    out = model.decode_step(tokens, facts, model.generation_cache(tokens.shape[0], max_len, source))
    return out.logits, out.cache


def _step_eager(model, tokens, facts, cache):
    out = model.decode_step(tokens, facts, cache)
    return out.logits, out.cache


@functools.partial(jax.jit, static_argnums=(0, 5))
def _prefill(graphdef, state, source, tokens, facts, max_len):
    return _prefill_eager(nnx.merge(graphdef, state), source, tokens, facts, max_len)


@functools.partial(jax.jit, static_argnums=0)
def _step(graphdef, state, tokens, facts, cache):
    return _step_eager(nnx.merge(graphdef, state), tokens, facts, cache)
