"""Scoring continuations under a trained model, the same way for every family (DESIGN.md §7).

A request is a pair ``(context, continuation)`` of token-id lists. It becomes the pretraining
example ``Example(inputs=context, targets=continuation)`` and goes through the family's own
feature converter (:mod:`archzoo.features.packing`), so each family reads it as it read its
training data:

- causal decoder: one row ``start, context, continuation`` with the loss on the continuation;
- prefix decoder: the same row, the context (with the start token) being the bidirectional
  prefix (``is_input``);
- encoder-decoder: the context is the encoder's input, the continuation the decoder's target
  after the start token;
- encoder (MLM): no left-to-right likelihood exists, so the score is the pseudo-log-likelihood
  (Salazar et al. 2020): each continuation token masked in turn, scored from the other tokens.
  :data:`SCORING` names which one a family gets, and results say so.

Requests are packed side by side into fixed-length rows (the mask keeps them apart, as in
training) and scored in batches of one shape, so the forward pass compiles once. A context too
long for the row loses tokens from its left; a continuation must fit whole.

Example::

    run = load_trained("runs/gpt-small")
    [s] = score_texts(run, [("The capital of France is", " Paris")])
    s.logprob_nats, s.tokens, s.greedy
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from archzoo.features.packing import FEATURE_CONVERTERS, LOSS_STREAM, STREAMS, Packer
from archzoo.objectives.example import Example

__all__ = ["SCORING", "ContinuationScore", "TrainedRun", "load_trained", "score", "score_texts", "rolling_logprob"]

# What a family's score is: the log-likelihood of the continuation, or (encoders, which read
# every token at once) the pseudo-log-likelihood.
SCORING = {"decoder": "log-likelihood", "encoder_decoder": "log-likelihood", "encoder": "pseudo-log-likelihood"}


@dataclasses.dataclass(frozen=True)
class ContinuationScore:
    """The score of one continuation.

    Attributes:
      logprob_nats: the continuation's log-likelihood (natural log, summed over its tokens);
        for an encoder the pseudo-log-likelihood.
      token_logprobs: float ``[T]``, the log-probability of each continuation token.
      greedy: every continuation token is the model's most likely token at its place.
      truncated: context tokens dropped from the left to fit the row.
    """

    logprob_nats: float
    token_logprobs: np.ndarray
    greedy: bool
    truncated: int = 0

    @property
    def tokens(self) -> int:
        return int(self.token_logprobs.size)

    @property
    def logprob_per_token(self) -> float:
        return self.logprob_nats / max(self.tokens, 1)


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A run directory's model with the weights of one checkpoint, and its tokenizer.

    Attributes:
      run_dir: the directory.
      config: its :class:`~archzoo.train.config.RunConfig`.
      model: the model, weights restored.
      tokenizer: the run's tokenizer.
      step: the checkpoint's step.
      start_id: the token every training row starts with (``facts.start_id``).
      lengths: row length per stream of the run's training rows.
    """

    run_dir: Path
    config: object
    model: nnx.Module
    tokenizer: object
    step: int
    start_id: int
    lengths: dict

    @property
    def family(self) -> str:
        return self.model.config.family

    @property
    def name(self) -> str:
        return self.config.name


def load_trained(run_dir: str | Path, step: int | None = None) -> TrainedRun:
    """Loads a run directory's model (newest intact checkpoint, or ``step``) and tokenizer.

    Nothing in the directory is written, so a run may be evaluated while it trains.

    Raises:
      RecordError: the directory holds no run (no ``run.json``), or its record is unreadable.
      CheckpointError: no finished checkpoint (or none of ``step``).
    """
    from archzoo.analysis.runs import RecordError, load_run
    from archzoo.data.tokenizer import open_tokenizer
    from archzoo.features.pipeline import row_lengths
    from archzoo.models import build
    from archzoo.train.checkpoints import read_params
    from archzoo.train.config import from_resolved

    run_dir = Path(run_dir)
    record = load_run(run_dir)
    if not record.config:
        raise RecordError(f"{run_dir}: no config.yaml: not a run directory archzoo wrote")
    cfg = from_resolved(record.config)
    model = build(cfg.model, seed=cfg.train.seed)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    step, params = read_params(run_dir / "checkpoints", params, step)
    model = nnx.merge(graphdef, params, rest)
    tokenizer_files = [run_dir / name for name in ("tokenizer.json", "tokenizer.model") if (run_dir / name).exists()]
    if not tokenizer_files:
        raise RecordError(f"{run_dir}: its tokenizer (tokenizer.json or tokenizer.model) is missing")
    tokenizer = open_tokenizer(tokenizer_files[0])
    start_id = int(record.facts.get("start_id", tokenizer.special.pad))
    return TrainedRun(run_dir, cfg, model, tokenizer, step, start_id, row_lengths(cfg.model.family, cfg.train))


def _check_request(i: int, context, continuation, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    ctx, cont = np.asarray(context, np.int64).reshape(-1), np.asarray(continuation, np.int64).reshape(-1)
    if cont.size == 0:
        raise ValueError(f"score(): request {i} has an empty continuation; there is nothing to score")
    for what, ids in (("context", ctx), ("continuation", cont)):
        bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
        if bad.size:
            raise ValueError(f"score(): request {i}: {what}[{bad[0]}] is token id {ids[bad[0]]}, outside [0, {vocab_size})")
    return ctx.astype(np.int32), cont.astype(np.int32)


def _examples(family: str, requests, row_len: int, mask_id: int | None):
    """The examples that score the requests, each tagged with its request's index, and the
    context tokens each request lost to the row."""
    examples, owners, truncated = [], [], []
    for i, (ctx, cont) in enumerate(requests):
        # decoder: start, context, continuation[:-1]; encoder: context, continuation; an
        # encoder-decoder's context has the encoder row to itself
        if len(cont) > row_len:
            raise ValueError(f"score(): request {i}: its continuation of {len(cont)} tokens does not fit a row of {row_len}")
        room = row_len if family == "encoder_decoder" else row_len - len(cont)
        dropped = max(len(ctx) - room, 0)
        ctx = ctx[dropped:]
        truncated.append(dropped)
        if family == "encoder":
            if mask_id is None:
                raise ValueError("score(): an encoder's pseudo-log-likelihood needs mask_id (the tokenizer's mask token)")
            row = np.concatenate([ctx, cont])
            for j in range(len(cont)):
                at = len(ctx) + j
                corrupted = row.copy()
                corrupted[at] = mask_id
                examples.append(Example(corrupted, row[at : at + 1], np.asarray([at])))
                owners.append(i)
        else:
            examples.append(Example(ctx, cont))
            owners.append(i)
    return examples, owners, truncated


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _token_scores(graphdef, state, batch):
    """Per token of the loss stream: the target's log-probability and whether it is the argmax."""
    model = nnx.merge(graphdef, state)
    stream = model.config.loss_stream
    logits = model.forward(**model.batch_inputs(batch)).logits.astype(jnp.float32)
    targets = batch[f"{stream}_targets"]
    logprobs = jax.nn.log_softmax(logits, axis=-1)
    target_logprob = jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
    # the target is the argmax when no token scores higher (ties count as greedy)
    greedy = target_logprob >= jnp.max(logprobs, axis=-1)
    return target_logprob, greedy


def _row_len(model, requests, row_len: int | None) -> int:
    cfg = model.config
    limit = cfg.position.max_len if cfg.position.kind == "learned" else None
    if row_len is not None:
        if limit is not None and row_len > limit:
            raise ValueError(f"score(): row_len={row_len} is longer than the learned position table (position.max_len={limit})")
        return row_len
    longest = max(len(c) + len(t) + 1 for c, t in requests)
    rounded = -(-longest // 64) * 64  # a few shapes, so few compiles
    return min(rounded, limit) if limit is not None else rounded


def score(
    model: nnx.Module,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    start_id: int,
    mask_id: int | None = None,
    batch_size: int = 8,
    row_len: int | None = None,
) -> list[ContinuationScore]:
    """Scores continuations given contexts, packed and batched.

    Args:
      model: any archzoo model (its family says how it reads a request; see the module doc).
      requests: ``(context, continuation)`` pairs of token-id lists; the continuation must not be
        empty, the context may be.
      start_id: the token every training row started with (``TrainedRun.start_id``).
      mask_id: the mask token; needed by an encoder (pseudo-log-likelihood), unused by the
        other families.
      batch_size: rows per forward pass.
      row_len: tokens per row (each stream of an encoder-decoder); None: the longest request
        rounded up to a multiple of 64, at most the learned position table.

    Returns:
      one :class:`ContinuationScore` per request, in order.

    Raises:
      ValueError: an empty continuation, a token id outside the vocabulary, a continuation
        longer than a row, or an encoder without ``mask_id``.
    """
    cfg = model.config
    family = cfg.family
    if not requests:
        return []
    checked = [_check_request(i, c, t, cfg.vocab_size) for i, (c, t) in enumerate(requests)]
    L = _row_len(model, checked, row_len)
    examples, owners, truncated = _examples(family, checked, L, mask_id)
    stream = LOSS_STREAM[family]
    convert = FEATURE_CONVERTERS[family]
    packer = Packer({s: L for s in STREAMS[family]}, batch_size)
    graphdef, state = nnx.split(model)
    pieces: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in checked]
    queue = iter(owners)

    def read(batch):
        logprob, greedy = jax.device_get(_token_scores(graphdef, state, {k: jnp.asarray(v) for k, v in batch.items()}))
        # next-fit packing keeps the order: examples fill rows, and segments within a row, in turn
        for b in range(batch[f"{stream}_segment_ids"].shape[0]):
            segs, weights = batch[f"{stream}_segment_ids"][b], batch[f"{stream}_weights"][b]
            for s in range(1, int(segs.max(initial=0)) + 1):
                picked = (segs == s) & (weights > 0)
                pieces[next(queue)].append((logprob[b][picked], greedy[b][picked]))

    for example in examples:
        batch = packer.add(convert(example, start_id))
        if batch is not None:
            read(batch)
    last = packer.flush()
    if last is not None:
        read(last)
    scores = []
    for i, parts in enumerate(pieces):
        logprobs = np.concatenate([p[0] for p in parts]).astype(np.float64)
        greedy = bool(all(p[1].all() for p in parts))
        scores.append(ContinuationScore(float(logprobs.sum()), logprobs, greedy, truncated[i]))
    return scores


def score_texts(run: TrainedRun, pairs: Sequence[tuple[str, str]], *, batch_size: int = 8) -> list[ContinuationScore]:
    """:func:`score` on text: each context and continuation encoded on its own by the run's
    tokenizer (a continuation usually starts with its delimiter, as in ``" Paris"``), in rows of
    the run's training length."""
    contexts = run.tokenizer.encode_batch([c for c, _ in pairs])
    continuations = run.tokenizer.encode_batch([t for _, t in pairs])
    return score(
        run.model,
        list(zip(contexts, continuations)),
        start_id=run.start_id,
        mask_id=run.tokenizer.roles.get("mask"),
        batch_size=batch_size,
        row_len=max(run.lengths.values()),
    )


def rolling_logprob(run: TrainedRun, texts: Sequence[str], *, batch_size: int = 8) -> list[ContinuationScore]:
    """The log-likelihood of whole texts (perplexity evaluation), each token scored once.

    A text longer than a row is cut into windows of half a row, each scored after as many of the
    tokens before it as fit (the row's other half or more), so every token but the first
    window's sees at least half a row of context.

    Returns:
      one score per text, its ``token_logprobs`` covering every token of the text.
    """
    row = max(run.lengths.values())
    window = max(row // 2, 1)
    requests, owners = [], []
    for i, ids in enumerate(run.tokenizer.encode_batch(list(texts))):
        if not ids:
            raise ValueError(f"rolling_logprob(): text {i} encodes to no tokens")
        for at in range(0, len(ids), window):
            requests.append((ids[:at], ids[at : at + window]))
            owners.append(i)
    scores = score(run.model, requests, start_id=run.start_id, mask_id=run.tokenizer.roles.get("mask"), batch_size=batch_size, row_len=row)
    windows: list[list[ContinuationScore]] = [[] for _ in texts]
    for s, i in zip(scores, owners):
        windows[i].append(s)
    out = []
    for mine in windows:
        logprobs = np.concatenate([s.token_logprobs for s in mine])
        out.append(ContinuationScore(float(logprobs.sum()), logprobs, all(s.greedy for s in mine)))
    return out
