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

__all__ = ["DataConfig", "TokenizerConfig", "Format", "TextDocuments"]

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

    def __post_init__(self):
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
