"""Seeded shuffling, the validation split held out by document, and sharding across processes.

Orders come from hashing ``(seed, index)`` rather than from a random generator, so a split is
the same on every machine and every numpy version.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Sequence, TypeVar

from archzoo.data.config import DataConfig, MixtureSource
from archzoo.data.embedded import embedded_documents
from archzoo.data.loaders import DataError, read_documents
from archzoo.data.tokenizer import utf8_bytes

__all__ = [
    "Splits",
    "permutation",
    "shuffle_documents",
    "shard_documents",
    "split_validation",
    "load_documents",
    "load_splits",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Splits:
    """Training and validation documents (disjoint by document; a one-document corpus is cut in two).

    Attributes:
      train: training documents, in training order.
      validation: held-out documents, in corpus order.
    """

    train: tuple[str, ...]
    validation: tuple[str, ...]

    def shard(self, process_index: int, process_count: int) -> Splits:
        """This process's share of both splits (see :func:`shard_documents`).

        Args:
          process_index: ``jax.process_index()``.
          process_count: ``jax.process_count()``.

        Returns:
          The training and validation documents this process reads.

        Raises:
          DataError: fewer training documents than processes.
        """
        if process_count > len(self.train):
            raise DataError(
                f"{len(self.train)} training documents cannot feed {process_count} processes; use a larger corpus or fewer processes"
            )
        return Splits(
            train=tuple(shard_documents(self.train, process_index, process_count)),
            validation=tuple(shard_documents(self.validation, process_index, process_count)),
        )


def permutation(n: int, seed: int) -> list[int]:
    """A permutation of ``range(n)`` fixed by ``seed``.

    Args:
      n: how many items.
      seed: any integer that fits in 64 bits.

    Returns:
      The indices ``0..n-1`` sorted by a keyed hash of ``(seed, index)``.
    """
    key = struct.pack("<q", seed)
    return sorted(
        range(n), key=lambda i: hashlib.blake2b(struct.pack("<q", i), digest_size=8, key=key).digest()
    )


def shuffle_documents(documents: Sequence[T], seed: int) -> list[T]:
    """The documents in an order fixed by ``seed`` (a permutation: nothing dropped or repeated).

    Args:
      documents: any sequence.
      seed: e.g. ``data.seed + epoch`` for a new order each epoch.

    Returns:
      A new list.
    """
    return [documents[i] for i in permutation(len(documents), seed)]


def shard_documents(documents: Sequence[T], process_index: int, process_count: int) -> list[T]:
    """This process's share of the documents: every ``process_count``-th, from ``process_index``.

    The shards of all processes are disjoint and together hold every document; their sizes
    differ by at most one.

    Args:
      documents: the same sequence on every process.
      process_index: ``jax.process_index()``.
      process_count: ``jax.process_count()``.

    Returns:
      The documents at indices ``process_index, process_index + process_count, ...``.
    """
    if process_count < 1:
        raise ValueError(f"process_count must be >= 1, got {process_count}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
    return list(documents[process_index::process_count])


def _validation_size(n: int, fraction: float, count: int | None) -> int:
    if count is not None:
        return count
    if fraction <= 0:
        return 0
    return max(1, round(fraction * n))


# A held-out document is usable with this many characters besides whitespace: an example needs
# a token to read and one to predict.
MIN_USABLE_CHARS = 2
_WITHOUT_VALIDATION = "or set data.validation_fraction: 0 to train without validation"
_HOW_TO_SPLIT = (
    "make several documents (data.text_documents: blank_lines reads each paragraph as one, or a glob "
    f"reads several files), {_WITHOUT_VALIDATION}"
)


def _usable(document: str) -> bool:
    return len(document.strip()) >= MIN_USABLE_CHARS


def _split_one_document(text: str, fraction: float, source: str) -> Splits:
    """Holds out the last ``fraction`` of a single document's text, cut at the first line start
    at or after that point (else the last one before it)."""
    goal = round(len(text) * (1 - fraction))
    newline = text.find("\n", max(goal - 1, 0), len(text) - 1)  # a line must start after it
    if newline < 0:
        newline = text.rfind("\n", 0, max(goal - 1, 0))
    train, held_out = text[: newline + 1], text[newline + 1 :]
    if newline < 0 or not (_usable(train) and _usable(held_out)):
        why = (
            "has no line break to cut at"
            if newline < 0
            else "cannot be cut at a line break into two parts that both hold text"
        )
        raise DataError(
            f"{source}: the corpus is one document, whose last lines validation_fraction={fraction} would hold out, but it {why}; {_HOW_TO_SPLIT}"
        )
    return Splits(train=(train,), validation=(held_out,))


def split_validation(
    documents: Sequence[str],
    *,
    seed: int,
    fraction: float = 0.0,
    count: int | None = None,
    shuffle: bool = True,
    source: str = "corpus",
) -> Splits:
    """Holds out whole documents for validation, chosen by ``seed``.

    A corpus of one document (a single text file read whole) has no document to spare: with a
    ``fraction``, the last lines of its text are held out instead (see ``DataConfig``).

    Args:
      documents: the whole corpus, in corpus order.
      seed: fixes which documents are held out and the training order.
      fraction: share of documents held out (at least one when > 0), if ``count`` is None.
      count: exactly this many documents held out.
      shuffle: put the training documents in seeded order (else corpus order).
      source: names the corpus in errors.

    Returns:
      Disjoint training and validation documents that together hold the corpus.

    Raises:
      DataError: the split would leave no training document, or its validation documents hold
        no usable text (fewer than MIN_USABLE_CHARS characters besides whitespace each).
    """
    n = len(documents)
    k = _validation_size(n, fraction, count)
    if n == 1 and k == 1 and count is None:
        return _split_one_document(documents[0], fraction, source)
    if k >= n:
        asked = f"validation_count={count}" if count is not None else f"validation_fraction={fraction}"
        if n == 1:
            raise DataError(
                f"{source}: {asked} holds out whole documents, and the corpus is one document; use validation_fraction (its last lines are held out), {_HOW_TO_SPLIT}"
            )
        raise DataError(f"{source}: {asked} holds out {k} of {n} documents, leaving none for training")
    order = permutation(n, seed)
    held_out = sorted(order[:k])
    train = order[k:] if shuffle else sorted(order[k:])
    splits = Splits(
        train=tuple(documents[i] for i in train), validation=tuple(documents[i] for i in held_out)
    )
    if k and not any(_usable(d) for d in splits.validation):
        shown = ", ".join(repr(d[:20]) for d in splits.validation[:3]) + (", ..." if k > 3 else "")
        raise DataError(
            f"{source}: the validation split holds no usable text ({k} held-out documents: {shown}; none has "
            f"{MIN_USABLE_CHARS} characters besides whitespace); hold out more documents (data.validation_count), "
            f"others (data.seed), {_WITHOUT_VALIDATION}"
        )
    return splits


def load_documents(cfg: DataConfig | MixtureSource) -> list[str]:
    """Every document of the configured corpus, in corpus order.

    Args:
      cfg: the data section, or one text source of its mixture.

    Returns:
      The documents.

    Raises:
      DataError: a missing path, a bad file or an empty corpus, naming the path.
    """
    if cfg.source == "embedded":
        return embedded_documents()
    return read_documents(cfg.source, cfg.format, cfg.field, cfg.text_documents)


def load_splits(cfg: DataConfig) -> Splits:
    """Loads the configured corpus and holds out its validation documents.

    Every process computes the same split. Train the tokenizer on ``splits.train``, then keep
    this process's documents with ``splits.shard(jax.process_index(), jax.process_count())``.

    Args:
      cfg: the data section.

    Returns:
      All training and validation documents.

    Raises:
      DataError: as :func:`load_documents`, or when the split leaves no training document.
    """
    if cfg.mixture is not None:
        return _mixture_splits(cfg)
    return split_validation(
        load_documents(cfg),
        seed=cfg.seed,
        fraction=cfg.validation_fraction,
        count=cfg.validation_count,
        shuffle=cfg.shuffle,
        source=cfg.source,
    )


def _bytes(documents) -> int:
    return sum(utf8_bytes(d) for d in documents)


def _mixture_splits(cfg: DataConfig) -> Splits:
    """The splits of a data mixture (``DataConfig.mixture``): per-source validation, training
    bytes shared by weight."""
    from archzoo.tasks.synthetic import training_documents

    total_weight = sum(m.weight for m in cfg.mixture)
    texts = {}
    for i, m in enumerate(cfg.mixture):
        if m.is_task:
            continue
        documents = load_documents(m)
        # each text source has its own held-out documents, seeded apart
        texts[i] = split_validation(
            documents, seed=cfg.seed + i, fraction=cfg.validation_fraction, count=cfg.validation_count, shuffle=cfg.shuffle, source=m.source
        )
    # The most text the weights allow without repeating a document of any text source.
    scale = min(_bytes(sp.train) / (cfg.mixture[i].weight / total_weight) for i, sp in texts.items())
    train, validation = [], []
    for i, m in enumerate(cfg.mixture):
        goal = scale * m.weight / total_weight
        if m.is_task:
            probe = training_documents(m.task_name, 16, seed=cfg.seed + i, examples_per_document=m.examples_per_document)
            n = max(1, round(goal / (_bytes(probe) / len(probe))))
            train += training_documents(m.task_name, n, seed=cfg.seed + i, examples_per_document=m.examples_per_document)
            continue
        taken, used = [], 0
        for d in texts[i].train:  # already in seeded order: a prefix is a seeded sample
            if used >= goal * (1 - 1e-9):
                break
            taken.append(d)
            used += utf8_bytes(d)
        train += taken
        validation += texts[i].validation
    order = permutation(len(train), cfg.seed) if cfg.shuffle else range(len(train))
    return Splits(train=tuple(train[j] for j in order), validation=tuple(validation))
