"""The data flow of a run up to the model: documents -> token chunks -> objective -> examples
-> feature converter -> packed batches (DESIGN.md §6), with a resumable position.

The order of chunks in an epoch comes from the data seed and the epoch, and each example's
randomness from ``example_rng(seed, epoch, chunk)``, so the stream is a pure function of
(seed, position): :meth:`Pipeline.state` is a few integers plus the packer's pending rows, and a
restored pipeline continues with exactly the batches an uninterrupted one would have produced.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from archzoo.features.packing import STREAMS, Packer, feature_converter, pack_examples
from archzoo.data.splits import permutation
from archzoo.objectives import example_rng

__all__ = ["chunk_documents", "Pipeline", "validation_batches", "auto_chunk_len"]


def chunk_documents(token_docs: Sequence[np.ndarray], chunk_len: int, min_len: int = 2) -> list[np.ndarray]:
    """Splits each tokenized document into consecutive chunks of at most ``chunk_len`` tokens
    (a final chunk shorter than ``min_len`` is dropped)."""
    chunks = []
    for doc in token_docs:
        for start in range(0, len(doc), chunk_len):
            piece = doc[start : start + chunk_len]
            if len(piece) >= min_len:
                chunks.append(np.asarray(piece, np.int32))
    return chunks


def auto_chunk_len(objective_name: str, row_len: int) -> int:
    """A chunk length whose examples fit a row of ``row_len`` for the objective.

    Causal and prefix LM add one eos; span corruption adds about 2 sentinels per 20 tokens at
    its default density (0.15, spans of 3), UL2's extreme denoiser (density 0.5, spans of 3)
    about one per 3 tokens, plus a mode token.
    """
    if objective_name in ("causal_lm", "prefix_lm"):
        return row_len - 1
    if objective_name == "mlm":
        return row_len
    if objective_name == "span_corruption":
        return int((row_len - 2) / 1.12)
    return int((row_len - 3) / 1.35)


class Pipeline:
    """An endless, resumable stream of packed training batches.

    Args:
      chunks: token chunks of the training documents.
      objective: ``objective(tokens, rng) -> Example``.
      family: the model family (picks the feature converter).
      lengths: row length per stream.
      batch_size: rows per micro-batch.
      accumulation_steps: micro-batches per step (batches are ``[A, B, L]``).
      start_id: the decoder start token.
      seed: the data seed.
    """

    def __init__(self, chunks, objective: Callable, family: str, lengths: dict, batch_size: int, accumulation_steps: int, start_id: int, seed: int):
        if not chunks:
            raise ValueError("no training chunks: the training documents are empty after tokenization")
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
        return self.objective(self.chunks[index], example_rng(self.seed, self.epoch, index))

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


def validation_batches(chunks, objective: Callable, family: str, lengths: dict, batch_size: int, start_id: int, seed: int, limit: int | None) -> list[dict]:
    """Validation batches ``[B, L]`` of the first ``limit`` chunks (all when None), with epoch-0
    noise: every family scores the same examples, however many fit its rows."""
    chunks = chunks if limit is None else chunks[:limit]
    examples = (objective(c, example_rng(seed, 0, i)) for i, c in enumerate(chunks))
    return list(pack_examples(examples, family, lengths, batch_size, start_id))
