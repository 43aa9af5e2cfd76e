"""The data flow of a run up to the model: documents -> token chunks -> objective -> examples
-> feature converter -> packed batches (DESIGN.md §6), with a resumable position.

The order of chunks in an epoch comes from the data seed and the epoch, and each example's
randomness from ``example_rng(seed, epoch, chunk)``, so the stream is a pure function of
(seed, position): :meth:`Pipeline.state` is a few integers plus the packer's pending rows, and a
restored pipeline continues with exactly the batches an uninterrupted one would have produced.

A chunk knows whether it ends its document, and the objective is told: eos is a target where a
document ends, not wherever a chunk is cut (else it would sit at the same position in every full
row, and a model would learn it from the position alone).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from archzoo.config import invalid
from archzoo.data.loaders import DataError
from archzoo.features.packing import STREAMS, Packer, feature_converter, pack_examples
from archzoo.data.splits import permutation
from archzoo.objectives import example_rng

__all__ = [
    "MIN_CHUNK_LEN",
    "Chunks",
    "chunk_documents",
    "Pipeline",
    "validation_batches",
    "auto_chunk_len",
    "check_row_lengths",
    "row_lengths",
]

# An example needs a token to read and one to predict (and span corruption one kept, one dropped).
MIN_CHUNK_LEN = 2


def _tokens(n: int) -> str:
    return f"{n} token" if n == 1 else f"{n} tokens"


@dataclass(frozen=True)
class Chunks:
    """Token chunks of some documents, in document order.

    Attributes:
      tokens: int32 ``[<= chunk_len]`` per chunk.
      ends_document: per chunk, whether it is its document's last (its targets then end with eos).
      num_documents: how many documents they were cut from (too short ones make no chunk).
    """

    tokens: tuple[np.ndarray, ...]
    ends_document: tuple[bool, ...]
    num_documents: int

    def __len__(self) -> int:
        return len(self.tokens)

    def too_short(self, split: str) -> str:
        """Says that none of the documents made a chunk (for an error message)."""
        return f"the {self.num_documents} {split} documents are all shorter than {_tokens(MIN_CHUNK_LEN)} after tokenization"


def _check_chunk_len(chunk_len: int, min_len: int) -> None:
    if chunk_len < min_len:
        raise invalid(
            "train.chunk_len",
            f"chunks of {_tokens(chunk_len)} are too short: a chunk needs at least {_tokens(min_len)} (one to read, one to predict)",
        )


def chunk_documents(token_docs: Sequence[np.ndarray], chunk_len: int, min_len: int = MIN_CHUNK_LEN) -> Chunks:
    """Cuts each tokenized document into consecutive chunks of at most ``chunk_len`` tokens.

    A document shorter than ``min_len`` makes no chunk. A last chunk that would be shorter than
    ``min_len`` takes tokens from the one before it, so every token of a longer document is in
    one chunk, and its last chunk is marked as its end.

    Raises:
      ConfigError: ``chunk_len`` below ``min_len``, naming ``train.chunk_len``.
    """
    _check_chunk_len(chunk_len, min_len)
    tokens, ends = [], []
    for doc in token_docs:
        n = len(doc)
        if n < min_len:
            continue
        bounds = [*range(0, n, chunk_len), n]
        if bounds[-1] - bounds[-2] < min_len:
            bounds[-2] = n - min_len
        tokens += [np.asarray(doc[a:b], np.int32) for a, b in itertools.pairwise(bounds)]
        ends += [False] * (len(bounds) - 2) + [True]
    return Chunks(tuple(tokens), tuple(ends), len(token_docs))


# Per objective, (tokens it adds, tokens per chunk token) in its longest example: causal and
# prefix LM add one eos; span corruption about 2 sentinels per 20 tokens at its default density
# (0.15, spans of 3) plus eos; UL2's extreme denoiser (density 0.5, spans of 3) about one
# sentinel per 3 tokens, plus a mode token and eos.
_GROWTH = {
    "causal_lm": (1, 1.0),
    "prefix_lm": (1, 1.0),
    "mlm": (0, 1.0),
    "span_corruption": (2, 1.12),
    "ul2": (3, 1.35),
}


def _fitting_chunk_len(objective_name, row_len: int) -> int:
    # a plug-in objective (ObjectivePlugin) says its own growth
    added, per_token = getattr(objective_name, "growth", None) or _GROWTH[objective_name]
    return int((row_len - added) / per_token)


def auto_chunk_len(objective_name: str, row_len: int, *, key: str = "train.seq_len") -> int:
    """A chunk length whose examples fit a row of ``row_len`` for the objective.

    Args:
      objective_name: a key of ``archzoo.objectives.OBJECTIVES``, or an
        :class:`~archzoo.objectives.ObjectivePlugin`.
      row_len: the shortest row of the family.
      key: the config key that sets ``row_len``, for the error.

    Raises:
      ConfigError: rows too short for a chunk of MIN_CHUNK_LEN tokens, naming ``key`` and the
        shortest row that would do.
    """
    chunk_len = _fitting_chunk_len(objective_name, row_len)
    if chunk_len < MIN_CHUNK_LEN:
        minimum = next(
            r for r in itertools.count(row_len + 1) if _fitting_chunk_len(objective_name, r) >= MIN_CHUNK_LEN
        )
        raise invalid(
            key,
            f"rows of {_tokens(row_len)} are too short for {objective_name}: its shortest example (from a chunk of "
            f"{_tokens(MIN_CHUNK_LEN)}) needs rows of at least {_tokens(minimum)}",
        )
    return chunk_len


def check_row_lengths(objective_name: str, family: str, train) -> None:
    """Checks a run's rows and chunks against its objective before any data is read.

    Args:
      objective_name: the objective.
      family: the model family.
      train: the run's ``TrainConfig`` (``seq_len``, ``encoder_len``, ``decoder_len``, ``chunk_len``).

    Raises:
      ConfigError: naming ``train.chunk_len`` for chunks too short to make an example, or the
        row key (``train.seq_len``, ``train.encoder_len``, ``train.decoder_len``) whose rows
        cannot hold the objective's shortest example when the chunk length is chosen from them.
    """
    if train.chunk_len is not None:
        _check_chunk_len(train.chunk_len, MIN_CHUNK_LEN)
        return
    # The chunk length is chosen from the shortest stream, so each must hold the shortest example.
    for stream, length in row_lengths(family, train).items():
        own = f"{stream}_len" if family == "encoder_decoder" else None
        key = f"train.{own}" if own and getattr(train, own) is not None else "train.seq_len"
        auto_chunk_len(objective_name, length, key=key)


def row_lengths(family: str, train) -> dict[str, int]:
    """Row length of each stream of ``family`` from a ``TrainConfig`` (``seq_len``, and
    ``encoder_len`` / ``decoder_len`` for an encoder-decoder)."""
    if family == "encoder_decoder":
        return {"encoder": train.encoder_len or train.seq_len, "decoder": train.decoder_len or train.seq_len}
    return {STREAMS[family][0]: train.seq_len}


class Pipeline:
    """An endless, resumable stream of packed training batches.

    Args:
      chunks: token chunks of the training documents (from :func:`chunk_documents`).
      objective: ``objective(tokens, rng, ends_document=...) -> Example``.
      family: the model family (picks the feature converter).
      lengths: row length per stream.
      batch_size: rows per micro-batch.
      accumulation_steps: micro-batches per step (batches are ``[A, B, L]``).
      start_id: the decoder start token.
      seed: the data seed.
    """

    def __init__(
        self,
        chunks: Chunks,
        objective: Callable,
        family: str,
        lengths: dict,
        batch_size: int,
        accumulation_steps: int,
        start_id: int,
        seed: int,
    ):
        if not len(chunks):
            raise DataError(f"no training example: {chunks.too_short('training')}")
        self.chunks = chunks
        self.objective = objective
        self.features_of = feature_converter(family)
        self.start_id = start_id
        self.seed = seed
        self.accumulation_steps = accumulation_steps
        self.packer = Packer({s: lengths[s] for s in STREAMS[family]}, batch_size)
        self.epoch = 0
        self.cursor = 0
        self._order = permutation(len(chunks), seed * 1_000_003 + self.epoch)

    def _next_example(self):
        if self.cursor == len(self.chunks):
            self.epoch += 1
            self.cursor = 0
            self._order = permutation(len(self.chunks), self.seed * 1_000_003 + self.epoch)
        index = self._order[self.cursor]
        self.cursor += 1
        rng = example_rng(self.seed, self.epoch, index)
        return self.objective(self.chunks.tokens[index], rng, ends_document=self.chunks.ends_document[index])

    def _next_micro_batch(self) -> dict:
        while True:
            batch = self.packer.add(self.features_of(self._next_example(), self.start_id))
            if batch is not None:
                return batch

    def next_batch(self) -> dict:
        """The next step's batch: arrays ``[A, B, L]``."""
        micro = [self._next_micro_batch() for _ in range(self.accumulation_steps)]
        return {k: np.stack([m[k] for m in micro]) for k in micro[0]}

    def state(self) -> dict:
        """JSON-serialisable position of the stream."""
        return {"epoch": self.epoch, "cursor": self.cursor, "packer": self.packer.state()}

    def restore(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = permutation(len(self.chunks), self.seed * 1_000_003 + self.epoch)
        self.packer.restore(state["packer"])


def validation_batches(
    chunks: Chunks,
    objective: Callable,
    family: str,
    lengths: dict,
    batch_size: int,
    start_id: int,
    seed: int,
    limit: int | None,
) -> list[dict]:
    """Validation batches ``[B, L]`` of the first ``limit`` chunks (all when None), with epoch-0
    noise: every family scores the same examples, however many fit its rows.

    Raises:
      DataError: documents were held out but none of them makes a chunk.
    """
    if chunks.num_documents and not len(chunks):
        raise DataError(
            f"no validation example: {chunks.too_short('validation')}; hold out more documents (data.validation_count) "
            "or set data.validation_fraction: 0 to train without validation"
        )
    pairs = list(zip(chunks.tokens, chunks.ends_document))[:limit]
    examples = (
        objective(tokens, example_rng(seed, 0, i), ends_document=ends)
        for i, (tokens, ends) in enumerate(pairs)
    )
    return list(pack_examples(examples, family, lengths, batch_size, start_id))
