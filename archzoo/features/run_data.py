"""The data side of one run, put together: corpus -> tokenizer -> objective -> chunks -> the
training pipeline and the validation batches (DESIGN.md §6).

It reads the run's config sections and the corpus and writes nothing, so every check of the
config against the data happens here, before the run directory takes the config.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from archzoo.config import ConfigError
from archzoo.data.bpe import build_tokenizer
from archzoo.data.splits import load_splits
from archzoo.features.packing import LOSS_STREAM
from archzoo.features.pipeline import Pipeline, auto_chunk_len, chunk_documents, row_lengths, validation_batches
from archzoo.objectives import build_objective

__all__ = ["RunData", "build_run_data", "target_bytes"]


@dataclasses.dataclass(frozen=True)
class RunData:
    """What a run trains and validates on.

    Attributes:
      tokenizer: the run's tokenizer (trained on, or read for, the training documents).
      lengths: row length per stream of the family (``{"decoder": 256}``).
      chunk_len: tokens of text per chunk handed to the objective.
      loss_stream: the stream whose targets carry the loss.
      pipeline: the resumable stream of packed training batches.
      validation: packed validation batches (empty without held-out documents).
      validation_bytes: UTF-8 bytes of the validation targets' text (for bits per byte).
    """

    tokenizer: Any
    lengths: dict[str, int]
    chunk_len: int
    loss_stream: str
    pipeline: Pipeline
    validation: list[dict]
    validation_bytes: int

    @property
    def special(self):
        return self.tokenizer.special


def target_bytes(batches: list[dict], stream: str, tokenizer) -> int:
    """UTF-8 bytes of the target text of ``batches`` (special tokens count none)."""
    total = 0
    for b in batches:
        for tokens, weights, segs in zip(
            b[f"{stream}_targets"], b[f"{stream}_weights"], b[f"{stream}_segment_ids"]
        ):
            for s in np.unique(segs[segs > 0]):
                picked = (segs == s) & (weights > 0)
                ids = [int(t) for t in tokens[picked] if not tokenizer.special.is_special(int(t))]
                total += tokenizer.num_bytes(tokenizer.decode(ids)) if ids else 0
    return total


def build_run_data(
    data_cfg, objective_cfg, model_cfg, train, *, accumulation_steps: int, process_index: int | None = None, process_count: int | None = None
) -> RunData:
    """The tokenizer, pipeline and validation batches of a run, as one process of
    ``process_count`` reads them (default: this process of ``jax.distributed``).

    The process reads its own shard of the training documents and makes
    ``train.batch_size / process_count`` rows per micro-batch, its part of the global batch.
    Validation is the same for every process: all held-out documents, in batches of
    ``train.batch_size`` rows (each process feeds its own block of each batch's rows).

    Args:
      data_cfg: the run's ``DataConfig`` (corpus, split, tokenizer).
      objective_cfg: its ``ObjectiveConfig``.
      model_cfg: its ``ModelConfig`` (family and vocabulary size).
      train: its ``TrainConfig`` (row lengths, chunk length, batch size, eval examples).
      accumulation_steps: micro-batches per step.
      process_index, process_count: whose shard (None: ``jax.process_index()`` and
        ``jax.process_count()``).

    Raises:
      ConfigError: the tokenizer's vocabulary does not fit ``model.vocab_size``, or rows are too
        short for the objective.
      DataError: the corpus cannot be read or split, or holds no usable text.
    """
    import jax  # the process index picks this process's shard of the training documents

    splits = load_splits(data_cfg)
    # The tokenizer sees every training document; each process then reads its own shard.
    tokenizer = build_tokenizer(data_cfg.tokenizer, splits.train)
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if train.batch_size % count:
        raise ConfigError(f"train.batch_size={train.batch_size} rows cannot be split evenly over {count} processes; make it a multiple of {count}")
    mine = splits.shard(index, count)
    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise ConfigError(
            f"model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer's vocabulary "
            f"({tokenizer.vocab_size}); raise model.vocab_size"
        )
    if objective_cfg.name == "mlm" and objective_cfg.mlm.vocab_size is None:
        objective_cfg = dataclasses.replace(
            objective_cfg, mlm=dataclasses.replace(objective_cfg.mlm, vocab_size=tokenizer.vocab_size)
        )
    objective = build_objective(objective_cfg, tokenizer.special)

    family = model_cfg.family
    lengths = row_lengths(family, train)
    chunk_len = train.chunk_len or auto_chunk_len(objective_cfg.name, min(lengths.values()))

    def chunks(texts):
        return chunk_documents([np.asarray(t, np.int32) for t in tokenizer.encode_batch(texts)], chunk_len)

    start_id = tokenizer.special.pad
    pipeline = Pipeline(
        chunks(mine.train),
        objective,
        family,
        lengths,
        train.batch_size // count,
        accumulation_steps,
        start_id,
        data_cfg.seed,
    )
    validation = validation_batches(
        chunks(splits.validation),
        objective,
        family,
        lengths,
        train.batch_size,
        start_id,
        data_cfg.seed,
        train.eval_examples,
    )
    stream = LOSS_STREAM[family]
    return RunData(
        tokenizer,
        lengths,
        chunk_len,
        stream,
        pipeline,
        validation,
        target_bytes(validation, stream, tokenizer),
    )
