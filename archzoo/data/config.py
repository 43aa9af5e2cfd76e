"""The data section of a run config: which corpus, how it is split, which tokenizer.

Defaults need no network and no files: the embedded corpus and a byte-level BPE trained on it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Literal

from archzoo.config import invalid
from archzoo.data.special import SpecialTokens

__all__ = ["DataConfig", "MixtureSource", "TokenizerConfig", "Format", "TextDocuments", "TASK_PREFIX"]

# A mixture source ``task:NAME`` is a built-in synthetic task's training documents.
TASK_PREFIX = "task:"

Format = Literal["auto", "text", "jsonl", "parquet", "hf_disk"]
TextDocuments = Literal["file", "blank_lines"]


def _check_choice(name: str, value, choices_type) -> None:
    choices = typing.get_args(choices_type)
    if value not in choices:
        raise invalid(name, f"{value!r} is not one of {', '.join(repr(c) for c in choices)}")


@dataclass(frozen=True)
class TokenizerConfig:
    """Which tokenizer turns documents into ids.

    Attributes:
      path: None trains a byte-level BPE on the training documents (cached on disk). Otherwise a
        ``tokenizer.json`` file, a folder holding one (its ``special_tokens_map.json`` or
        ``tokenizer_config.json`` names the special tokens when present), or a SentencePiece
        ``.model`` file.
      vocab_size: size of a trained BPE vocabulary, reserved tokens and the 256 byte tokens
        included. A small corpus can stop short of it: read ``Tokenizer.vocab_size``.
      min_frequency: a pair is merged only if it occurs at least this often.
      train_bytes: train on the first training documents up to this many UTF-8 bytes
        (None = all of them); the training documents are already shuffled by the data seed.
      cache_dir: where trained tokenizers are kept, keyed by a hash of corpus and settings.
        None = ``$XDG_CACHE_HOME/archzoo/tokenizers`` (``~/.cache/archzoo/tokenizers``). A
        folder that cannot be written is skipped with a warning: the BPE is trained every run.
    """

    path: str | None = None
    vocab_size: int = 4096
    min_frequency: int = 2
    train_bytes: int | None = None
    cache_dir: str | None = None

    def __post_init__(self):
        if self.path is not None and not self.path.strip():
            raise invalid("path", "must be a tokenizer.json file, a folder holding one, a SentencePiece .model file, or null to train a BPE")
        minimum = 256 + SpecialTokens().count
        if self.path is None and self.vocab_size < minimum:
            raise invalid(
                "vocab_size",
                f"a byte-level BPE needs at least {minimum} ids (256 bytes + {SpecialTokens().count} reserved tokens), got {self.vocab_size}",
            )
        if self.min_frequency < 1:
            raise invalid("min_frequency", f"must be >= 1, got {self.min_frequency}")
        if self.train_bytes is not None and self.train_bytes < 1:
            raise invalid("train_bytes", f"must be >= 1 or null (all training documents), got {self.train_bytes}")


@dataclass(frozen=True)
class MixtureSource:
    """One source of a data mixture.

    Attributes:
      source: ``embedded``, a path, glob or dataset folder (as ``DataConfig.source``), or
        ``task:NAME``, a built-in synthetic task (``task:addition-3d``): its training
        documents, which never hold one of its evaluation or demonstration problems.
      weight: the source's share of the training text, in UTF-8 bytes (weights are
        normalised over the mixture).
      format, field, text_documents: how a file source is read (as in ``DataConfig``).
      examples_per_document: a task source's examples per document, one per line.
    """

    source: str = "embedded"
    weight: float = 1.0
    format: Format = "auto"
    field: str = "text"
    text_documents: TextDocuments = "file"
    examples_per_document: int = 8

    def __post_init__(self):
        if not self.source.strip():
            raise invalid("source", "must be 'embedded', a path, glob or dataset folder, or task:NAME")
        if not (self.weight > 0):
            raise invalid("weight", f"must be > 0, got {self.weight}")
        _check_choice("format", self.format, Format)
        _check_choice("text_documents", self.text_documents, TextDocuments)
        if self.examples_per_document < 1:
            raise invalid("examples_per_document", f"must be >= 1, got {self.examples_per_document}")
        if self.is_task:
            from archzoo.tasks.synthetic import SYNTHETIC_TASKS, closest_task

            name = self.task_name
            if name not in SYNTHETIC_TASKS:
                close = closest_task(name)
                hint = f"; did you mean {TASK_PREFIX}{close}?" if close else ""
                raise invalid("source", f"{self.source!r} names no built-in task{hint} (tasks: {', '.join(SYNTHETIC_TASKS)})")

    @property
    def is_task(self) -> bool:
        return self.source.startswith(TASK_PREFIX)

    @property
    def task_name(self) -> str:
        return self.source[len(TASK_PREFIX) :]


@dataclass(frozen=True)
class DataConfig:
    """Where the documents come from and how they are split.

    Attributes:
      source: ``"embedded"`` (the corpus shipped with archzoo, no network needed), or a path: a
        file, a glob (``data/*.jsonl``), or a folder written by ``datasets``' ``save_to_disk``.
      format: ``text``, ``jsonl``, ``parquet``, ``hf_disk``, or ``auto`` (from the file suffix;
        a folder with ``state.json`` or ``dataset_dict.json`` is ``hf_disk``). ``.gz``, ``.xz``
        and ``.bz2`` text and JSON-lines files are read compressed.
      field: the JSON key, Parquet column or dataset column that holds the text.
      text_documents: for text files, ``file`` (each file is one document) or ``blank_lines``
        (each run of non-blank lines is one document).
      validation_fraction: share of documents held out for validation (0 = none). A corpus of
        one document (a single text file read whole) holds out the last lines of its text
        instead: the share ``validation_fraction`` of its characters, cut at a line start.
      validation_count: when set, exactly this many documents are held out instead.
      seed: fixes the validation split and the order of the training documents.
      shuffle: shuffle the training documents (the validation split is seeded either way).
      tokenizer: the tokenizer section.
      mixture: several sources blended by weight (None: ``source`` alone). Each text source
        holds out its own validation documents and is cut down, never repeated, so that the
        shares of training bytes follow the weights; a task source writes as many documents as
        its weight asks and adds none to validation (its held-out problems are the evaluation
        tasks). ``source``, ``format``, ``field`` and ``text_documents`` are then unused.
    """

    source: str = "embedded"
    format: Format = "auto"
    field: str = "text"
    text_documents: TextDocuments = "file"
    validation_fraction: float = 0.05
    validation_count: int | None = None
    seed: int = 0
    shuffle: bool = True
    tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)
    mixture: tuple[MixtureSource, ...] | None = None

    def __post_init__(self):
        if self.mixture is not None:
            if not self.mixture:
                raise invalid("mixture", "must list at least one source, or be null")
            if all(m.is_task for m in self.mixture):
                raise invalid("mixture", "needs at least one text source besides tasks (its share sets how much text there is)")
            if self.source != "embedded" or self.format != "auto":
                raise invalid("mixture", f"lists every source: move data.source={self.source!r} into it (with its weight)")
        if not self.source.strip():
            raise invalid("source", "must be 'embedded' or a path, glob or dataset folder")
        _check_choice("format", self.format, Format)
        _check_choice("text_documents", self.text_documents, TextDocuments)
        if self.source == "embedded" and self.format != "auto":
            raise invalid("format", f"the embedded corpus has its own format; leave format as 'auto', got {self.format!r}")
        if not self.field:
            raise invalid("field", "must name the JSON key, Parquet column or dataset column holding the text")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise invalid("validation_fraction", f"must be in [0, 1), got {self.validation_fraction}")
        if self.validation_count is not None and self.validation_count < 0:
            raise invalid("validation_count", f"must be >= 0 or null (use validation_fraction), got {self.validation_count}")
        if self.seed < 0:
            raise invalid("seed", f"must be >= 0, got {self.seed}")
