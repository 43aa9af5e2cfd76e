"""Generation for every family with a KV cache: greedy, temperature, top-k and top-p sampling.

One function serves the three ways a model continues text (DESIGN.md §7):

- causal decoder: the prompt fills the cache in one call, then one token per step;
- prefix decoder (``mask: prefix``): the same, but the prompt tokens carry ``is_input`` so they
  see each other bidirectionally; generated tokens are causal;
- encoder-decoder: the encoder reads ``encoder_inputs`` once, the cache holds the projections of
  its output for cross-attention, and the decoder starts from ``decoder_start_id``.

Prompts of different lengths are left-padded (segment id 0) so every row writes the same cache
slot at each step; real tokens have segment id 1 and positions counted from their first real
token, so a padded row decodes exactly as it would alone. The decode loop is one
``jax.lax.while_loop`` inside one jitted function, and stops once every row has emitted
``eos_id``.

Example::

    out = generate(model, [[5, 17, 42], [3]], max_new_tokens=20, temperature=0.7, top_p=0.9)
    out.tokens  # [2, 20]

Shapes: ``B`` batch, ``L`` padded prompt length, ``N`` new tokens, ``V`` vocab.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from archzoo.masks import TokenFacts
from archzoo.models.decoder import Decoder
from archzoo.models.encoder_decoder import EncoderDecoder

__all__ = ["Generation", "generate", "filter_logits"]


@dataclasses.dataclass(frozen=True)
class Generation:
    """What :func:`generate` returns.

    Attributes:
      tokens: int32 ``[B, N]``, the new tokens of each row; ``pad_id`` after the row's ``eos_id``.
      lengths: int32 ``[B]``, new tokens of each row up to and including its ``eos_id``
        (``N`` when it never came).
      logits: float32 ``[B, N, V]`` with ``return_logits=True``: the model's logits (before
        temperature and filtering) from which ``tokens[:, j]`` was chosen; entries past a row's
        ``lengths`` are unspecified. None otherwise.
    """

    tokens: jax.Array
    lengths: jax.Array
    logits: jax.Array | None = None


def filter_logits(logits_BV: jax.Array, top_k=None, top_p=None) -> jax.Array:
    """Keeps the top-k tokens, then the nucleus of the rest; the others get ``-inf``.

    Tokens are ranked by logit, ties broken by the lower token id. Top-k keeps the first
    ``top_k`` of the ranking. Top-p (Holtzman et al. 2020) keeps the smallest prefix of the
    ranking whose probability (softmax over the tokens top-k kept) reaches ``top_p``: a token is
    kept when the tokens ranked before it hold less than ``top_p``. ``top_p = 1`` keeps all.

    Args:
      logits_BV: float ``[..., V]``.
      top_k: int (scalar, may be traced) >= 1, or None for no top-k.
      top_p: float (scalar, may be traced) in (0, 1], or None for no top-p.

    Returns:
      float ``[..., V]``: ``logits_BV`` where kept, ``-inf`` elsewhere.
    """
    if top_k is None and top_p is None:
        return logits_BV
    V = logits_BV.shape[-1]
    order = jnp.argsort(-logits_BV, axis=-1, stable=True)
    sorted_logits = jnp.take_along_axis(logits_BV, order, axis=-1)
    keep_sorted = jnp.ones(sorted_logits.shape, bool)
    if top_k is not None:
        keep_sorted = keep_sorted & (jnp.arange(V) < top_k)
    if top_p is not None:
        probs = jax.nn.softmax(jnp.where(keep_sorted, sorted_logits, -jnp.inf), axis=-1)
        mass_before = jnp.concatenate([jnp.zeros_like(probs[..., :1]), jnp.cumsum(probs, axis=-1)[..., :-1]], axis=-1)
        keep_sorted = keep_sorted & ((mass_before < top_p) | (top_p >= 1.0))
    inverse = jnp.argsort(order, axis=-1)
    keep = jnp.take_along_axis(keep_sorted, inverse, axis=-1)
    return jnp.where(keep, logits_BV, -jnp.inf)


def generate(
    model: Decoder | EncoderDecoder,
    prompts=None,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    eos_id: int | None = None,
    pad_id: int = 0,
    encoder_inputs=None,
    decoder_start_id: int | None = None,
    prefix: bool | None = None,
    return_logits: bool = False,
    pad_to: int | None = None,
) -> Generation:
    """Continues each prompt by up to ``max_new_tokens`` tokens, with a KV cache.

    Greedy (argmax) when ``temperature == 0``; otherwise each token is sampled from
    ``softmax(filter_logits(logits / temperature, top_k, top_p))``. The same ``seed`` gives the
    same sample.

    Args:
      model: a :class:`~archzoo.models.Decoder` (causal or prefix) or an
        :class:`~archzoo.models.EncoderDecoder`.
      prompts: token ids: a list of token-id lists (ragged; left-padded here) or an int array
        ``[B, L]``. Required for a decoder. For an encoder-decoder, optional tokens that the
        decoder is forced through after ``decoder_start_id`` (None: none).
      max_new_tokens: N >= 1.
      temperature: >= 0; 0 is greedy.
      top_k: keep the ``top_k`` most likely tokens when sampling (>= 1), or None.
      top_p: nucleus sampling: keep the smallest set of most likely tokens whose probability
        reaches ``top_p`` (in (0, 1]), or None.
      seed: seed of the sampling keys.
      eos_id: a row stops after emitting this id; later tokens are ``pad_id``. None: never.
      pad_id: the id written after ``eos_id`` and used for the left padding of prompts.
      encoder_inputs: encoder-decoder only, required: the encoder's token ids, a ragged list of
        lists or an int array ``[B, S]``.
      decoder_start_id: encoder-decoder only: the first decoder token (None: ``pad_id``, as in T5).
      prefix: whether the prompt is the bidirectional prefix (its tokens get ``is_input``);
        None: when the model's ``mask`` is ``prefix``. A causal mask ignores ``is_input``;
        decoder only.
      return_logits: also return the logits of every step.
      pad_to: pad a decoder's prompts (on the left) or an encoder-decoder's encoder inputs (on
        the right) to at least this many tokens, so batches of different prompts share one
        compiled shape; None: to the longest.

    Returns:
      a :class:`Generation`: ``tokens [B, N]``, ``lengths [B]``, and ``logits [B, N, V]`` when
      asked.

    Raises:
      ValueError: a token id outside ``[0, V)`` (naming the prompt), an empty prompt or prompt
        list, an argument out of range, or prompt plus new tokens longer than a learned position
        table (``position.max_len``).
    """
    cfg = _check_model(model)
    V = cfg.vocab_size
    _check_options(max_new_tokens, temperature, top_k, top_p, seed)
    pad_id = _check_id(pad_id, "pad_id", V)
    eos_id = None if eos_id is None else _check_id(eos_id, "eos_id", V)
    if model.source_stream is not None:
        rows, sources = _encoder_decoder_rows(cfg, prompts, encoder_inputs, decoder_start_id, pad_id, prefix, max_new_tokens)
        source_tokens, source_facts = _right_pad(sources, pad_id, pad_to)
    else:
        rows = _decoder_rows(cfg, prompts, encoder_inputs, decoder_start_id, max_new_tokens)
        source_tokens = source_facts = None
    bidirectional = cfg.bidirectional_prefix if prefix is None else bool(prefix)
    tokens, prompt_facts = _left_pad(rows, pad_id, is_input=bidirectional and model.source_stream is None, length=None if source_tokens is not None else pad_to)
    graphdef, state = nnx.split(model)
    sampling = None
    if temperature > 0:
        sampling = (
            jnp.float32(temperature),
            None if top_k is None else jnp.int32(top_k),
            None if top_p is None else jnp.float32(top_p),
        )
    out_tokens, lengths, logits = _decode(
        graphdef,
        state,
        tokens,
        prompt_facts,
        source_tokens,
        source_facts,
        sampling,
        jax.random.key(seed),
        jnp.int32(-1 if eos_id is None else eos_id),
        jnp.int32(pad_id),
        max_new_tokens=max_new_tokens,
        return_logits=bool(return_logits),
    )
    return Generation(out_tokens, lengths, logits)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "return_logits"))
def _decode(graphdef, state, tokens_BL, facts, source_BS, source_facts, sampling, key, eos_id, pad_id, *, max_new_tokens, return_logits):
    """Prefill and decode loop; returns tokens ``[B, N]``, lengths ``[B]``, logits ``[B, N, V]``."""
    model = nnx.merge(graphdef, state)
    B, L = tokens_BL.shape
    N = max_new_tokens
    V = model.config.vocab_size
    cache_len = L + N - 1
    cache = model.generation_cache(B, cache_len, None if source_BS is None else (source_BS, source_facts))

    def forward(tokens, facts, cache):
        out = model.decode_step(tokens, facts, cache)
        return out.logits, out.cache

    def choose(logits_BV, step):
        if sampling is None:
            return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
        temperature, top_k, top_p = sampling
        filtered = filter_logits(logits_BV / temperature, top_k, top_p)
        return jax.random.categorical(jax.random.fold_in(key, step), filtered, axis=-1).astype(jnp.int32)

    def emit(carry, logits_BV, step):
        out, lengths, done, logits_buf = carry
        token = jnp.where(done, pad_id, choose(logits_BV, step))
        out = out.at[:, step].set(token)
        lengths = lengths + (~done).astype(jnp.int32)
        done = done | (token == eos_id)
        if return_logits:
            logits_buf = logits_buf.at[:, step].set(logits_BV)
        return (out, lengths, done, logits_buf), token

    logits_BLV, cache = forward(tokens_BL, facts, cache)
    first_position = facts.positions[:, -1] + 1
    carry = (
        jnp.full((B, N), pad_id, jnp.int32),
        jnp.zeros((B,), jnp.int32),
        jnp.zeros((B,), bool),
        jnp.zeros((B, N, V), jnp.float32) if return_logits else None,
    )
    carry, token = emit(carry, logits_BLV[:, -1], 0)

    def cond(loop):
        step, _, _, carry = loop
        return (step < N) & ~jnp.all(carry[2])

    def body(loop):
        step, token, cache, carry = loop
        step_facts = TokenFacts(
            jnp.ones((B, 1), jnp.int32),
            (first_position + step - 1)[:, None],
            jnp.zeros((B, 1), bool),
        )
        logits_B1V, cache = forward(token[:, None], step_facts, cache)
        carry, token = emit(carry, logits_B1V[:, 0], step)
        return step + 1, token, cache, carry

    _, _, _, carry = jax.lax.while_loop(cond, body, (jnp.int32(1), token, cache, carry))
    out, lengths, _, logits_buf = carry
    return out, lengths, logits_buf


def _decoder_rows(cfg, prompts, encoder_inputs, decoder_start_id, max_new_tokens: int) -> list[list[int]]:
    """A decoder's checked prompts."""
    if encoder_inputs is not None:
        raise ValueError("generate(): encoder_inputs is for an encoder-decoder; this model is a decoder")
    if decoder_start_id is not None:
        raise ValueError("generate(): decoder_start_id is for an encoder-decoder; a decoder continues its prompt")
    if prompts is None:
        raise ValueError("generate(): a decoder needs prompts (a list of token-id lists or an int array [B, L])")
    rows = _rows(prompts, "prompts", cfg.vocab_size, allow_empty=False)
    if cfg.position.kind == "learned":
        _check_room(max(len(r) for r in rows), max_new_tokens, cfg.position.max_len, "the prompt")
    return rows


def _encoder_decoder_rows(cfg, prompts, encoder_inputs, decoder_start_id, pad_id: int, prefix, max_new_tokens: int):
    """An encoder-decoder's checked decoder rows (start token + forced prompt) and encoder rows."""
    V, max_len = cfg.vocab_size, cfg.position.max_len
    if encoder_inputs is None:
        raise ValueError("generate(): an encoder-decoder needs encoder_inputs (the encoder's token ids)")
    if prefix:
        raise ValueError("generate(): prefix=True is for a decoder; an encoder-decoder's decoder is causal")
    sources = _rows(encoder_inputs, "encoder_inputs", V, allow_empty=False)
    start = _check_id(pad_id if decoder_start_id is None else decoder_start_id, "decoder_start_id", V)
    forced = [[] for _ in sources] if prompts is None else _rows(prompts, "prompts", V, allow_empty=True)
    if len(forced) != len(sources):
        raise ValueError(f"generate(): {len(forced)} prompts but {len(sources)} encoder_inputs; give one prompt per encoder input")
    rows = [[start] + row for row in forced]
    if cfg.position.kind == "learned":
        longest = max(len(r) for r in sources)
        if longest > max_len:
            raise ValueError(
                f"generate(): an encoder input of {longest} tokens is longer than the learned position table "
                f"(position.max_len={max_len})"
            )
        _check_room(max(len(r) for r in rows), max_new_tokens, max_len, "the decoder start token and prompt")
    return rows, sources


def _left_pad(rows: list[list[int]], pad_id: int, *, is_input: bool, length: int | None = None) -> tuple[jax.Array, TokenFacts]:
    """Left-padded tokens ``[B, L]`` (``L`` the longest row, or ``length`` if longer) and their
    facts: padding segment 0, real tokens segment 1 with positions 0..n-1 from their first real
    token, ``is_input`` on real tokens if asked."""
    L = max(max(len(r) for r in rows), length or 0)
    tokens = np.full((len(rows), L), pad_id, np.int32)
    real = np.zeros((len(rows), L), bool)
    positions = np.zeros((len(rows), L), np.int32)
    for b, row in enumerate(rows):
        n = len(row)
        if n:
            tokens[b, L - n :] = row
            real[b, L - n :] = True
            positions[b, L - n :] = np.arange(n)
    facts = TokenFacts(jnp.asarray(real, jnp.int32), jnp.asarray(positions), jnp.asarray(real & is_input))
    return jnp.asarray(tokens), facts


def _right_pad(rows: list[list[int]], pad_id: int, length: int | None = None) -> tuple[jax.Array, TokenFacts]:
    """Right-padded encoder tokens ``[B, S]`` (at least ``length``) and their facts (padding segment 0)."""
    S = max(max(len(r) for r in rows), length or 0)
    tokens = np.full((len(rows), S), pad_id, np.int32)
    real = np.zeros((len(rows), S), bool)
    for b, row in enumerate(rows):
        tokens[b, : len(row)] = row
        real[b, : len(row)] = True
    positions = np.where(real, np.arange(S)[None], 0).astype(np.int32)
    return jnp.asarray(tokens), TokenFacts(jnp.asarray(real, jnp.int32), jnp.asarray(positions), jnp.zeros((len(rows), S), bool))


def _rows(prompts, name: str, vocab_size: int, *, allow_empty: bool) -> list[list[int]]:
    """Token-id rows from a ragged list of lists or an int array ``[B, L]``, checked."""
    if isinstance(prompts, (np.ndarray, jax.Array)):
        arr = np.asarray(prompts)
        if arr.ndim != 2:
            raise ValueError(f"generate(): {name} as an array must be [batch, length] token ids; got shape {arr.shape}")
        candidates = list(arr)
    elif isinstance(prompts, (list, tuple)):
        candidates = list(prompts)
    else:
        raise ValueError(f"generate(): {name} must be a list of token-id lists or an int array [B, L]; got {type(prompts).__name__}")
    if not candidates:
        raise ValueError(f"generate(): {name} is empty; give at least one prompt")
    rows = []
    for b, row in enumerate(candidates):
        if isinstance(row, numbers.Integral):
            raise ValueError(f"generate(): {name}[{b}] is a single id {row!r}; {name} must be a list of token-id lists (wrap one prompt as [ids])")
        arr = np.asarray(row)
        if arr.size == 0:
            if not allow_empty:
                raise ValueError(f"generate(): {name}[{b}] is empty; every prompt needs at least one token")
            rows.append([])
            continue
        if arr.ndim != 1 or arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"generate(): {name}[{b}] must be a flat sequence of integer token ids; got {arr.dtype} of shape {arr.shape}")
        bad = np.flatnonzero((arr < 0) | (arr >= vocab_size))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"generate(): {name}[{b}][{i}] is token id {int(arr[i])}, outside the vocabulary [0, {vocab_size}) "
                f"(vocab_size={vocab_size})"
            )
        rows.append([int(t) for t in arr])
    return rows


def _check_model(model):
    if isinstance(model, nnx.Module) and callable(getattr(model, "decode_step", None)):
        return model.config
    raise ValueError(
        f"generate(): cannot generate with a model of type {type(model).__name__}; "
        "give a Decoder (causal or prefix) or an EncoderDecoder (an encoder-only model has no decoder)"
    )


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_options(max_new_tokens, temperature, top_k, top_p, seed) -> None:
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise ValueError(f"generate(): max_new_tokens must be an int >= 1; got {max_new_tokens!r}")
    if not isinstance(temperature, numbers.Real) or not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"generate(): temperature must be a finite number >= 0 (0 is greedy); got {temperature!r}")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise ValueError(f"generate(): top_k must be an int >= 1 or None; got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1):
        raise ValueError(f"generate(): top_p must be in (0, 1] or None; got {top_p!r}")
    if not _is_int(seed):
        raise ValueError(f"generate(): seed must be an int; got {seed!r}")


def _check_id(token_id, name: str, vocab_size: int) -> int:
    if not _is_int(token_id) or not 0 <= token_id < vocab_size:
        raise ValueError(f"generate(): {name}={token_id!r} must be a token id in [0, {vocab_size})")
    return int(token_id)


def _check_room(longest_prompt: int, max_new_tokens: int, max_len: int, what: str) -> None:
    if longest_prompt + max_new_tokens > max_len:
        raise ValueError(
            f"generate(): {what} ({longest_prompt} tokens) plus max_new_tokens={max_new_tokens} is longer than the "
            f"learned position table (position.max_len={max_len}); use max_new_tokens <= {max(max_len - longest_prompt, 0)} "
            "or a shorter prompt"
        )
