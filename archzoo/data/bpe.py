"""A byte-level BPE trained on the corpus with archzoo's reserved ids, cached on disk; and
:func:`build_tokenizer`, which gives the config's tokenizer: a file, or this BPE.

The cache key hashes the training documents and every setting, so a second run on the same
corpus loads the file instead of training, and any change of corpus or settings trains anew.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import warnings
from pathlib import Path
from typing import Iterable, Sequence

from archzoo.data.config import TokenizerConfig
from archzoo.data.loaders import DataError
from archzoo.data.special import SpecialTokens
from archzoo.data.tokenizer import Tokenizer, TokenizerError, from_tokenizers, open_tokenizer, utf8_bytes

__all__ = ["train_bpe", "bpe_cache_key", "default_cache_dir", "cached_bpe", "build_tokenizer"]

_CACHE_FORMAT = "archzoo-byte-level-bpe-1"


def train_bpe(documents: Iterable[str], vocab_size: int, *, min_frequency: int = 2, special: SpecialTokens | None = None) -> Tokenizer:
    """Trains a byte-level BPE (GPT-2's pre-tokenizer) with the special tokens at their ids.

    Args:
      documents: training text.
      vocab_size: V, reserved ids and the 256 byte tokens included.
      min_frequency: a pair is merged only if it occurs at least this often.
      special: the reserved layout (None = archzoo's).

    Returns:
      A tokenizer whose ids ``0..special.count-1`` are the reserved tokens, then the bytes.

    Raises:
      TokenizerError: ``vocab_size`` below 256 + ``special.count``.
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    special = special or SpecialTokens()
    minimum = 256 + special.count
    if vocab_size < minimum:
        raise TokenizerError(f"vocab_size={vocab_size} is too small: a byte-level BPE needs 256 byte tokens + {special.count} reserved tokens = {minimum}")
    names = sorted(special.names(), key=special.names().get)
    tok = HFTokenizer(models.BPE())
    # No prefix space: the decoder then returns exactly the bytes that were encoded.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=names,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(documents, trainer)
    for name, i in special.names().items():
        assert tok.token_to_id(name) == i, f"reserved token {name} landed at {tok.token_to_id(name)}, not {i}"
    return from_tokenizers(tok, "byte-level BPE")


def bpe_cache_key(documents: Iterable[str], vocab_size: int, min_frequency: int) -> str:
    """Hex SHA-256 of the training documents and every setting that changes the trained BPE."""
    h = hashlib.sha256()
    settings = {"format": _CACHE_FORMAT, "vocab_size": vocab_size, "min_frequency": min_frequency, "special": SpecialTokens().names()}
    h.update(json.dumps(settings, sort_keys=True).encode())
    for doc in documents:
        data = doc.encode("utf-8")
        h.update(struct.pack("<Q", len(data)))
        h.update(data)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/archzoo/tokenizers``, or ``~/.cache/archzoo/tokenizers``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "archzoo" / "tokenizers"


def cached_bpe(documents: Sequence[str], vocab_size: int, *, min_frequency: int = 2, cache_dir: str | Path | None = None) -> Tokenizer:
    """A byte-level BPE for these documents and settings: loaded if cached, else trained and saved.

    Args:
      documents: training text.
      vocab_size: V.
      min_frequency: as :func:`train_bpe`.
      cache_dir: folder of cached tokenizers (None = :func:`default_cache_dir`).

    Returns:
      The tokenizer; its ``name`` is the cached file. A cache folder that cannot be read or
      written is skipped with a warning naming it (the tokenizer is then trained, not saved).
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = bpe_cache_key(documents, vocab_size, min_frequency)
    path = cache_dir / f"bpe-{vocab_size}-{key[:24]}.json"
    try:
        cached = path.is_file()
    except OSError as e:  # a folder this user may not read
        _warn_uncached(cache_dir, e)
        cached = False
    if cached:
        tok = open_tokenizer(path)
        if tok.special != SpecialTokens():  # .special itself raises, naming the file, for a foreign layout
            raise TokenizerError(f"cached tokenizer {path} has another reserved-token layout; delete it to retrain")
        return tok
    tok = train_bpe(documents, vocab_size, min_frequency=min_frequency)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tok.save(partial)
        os.replace(partial, path)  # atomic: processes sharing the cache never read half a file
    except Exception as e:  # OSError from Python; tokenizers raises a bare Exception for the same
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        _warn_uncached(cache_dir, e)
        return tok
    tok.name = str(path)
    return tok


def _warn_uncached(cache_dir: Path, error: Exception) -> None:
    """The run goes on with a freshly trained tokenizer; the next one trains it again."""
    warnings.warn(
        f"tokenizer cache {cache_dir} cannot be used ({error}); the BPE is trained without caching: "
        "set data.tokenizer.cache_dir to a folder this user can write to keep it",
        stacklevel=3,
    )


def _first_bytes(documents: Sequence[str], limit: int | None) -> list[str]:
    """The leading documents up to ``limit`` UTF-8 bytes (the last one cut to fit)."""
    if limit is None:
        return list(documents)
    out, total = [], 0
    for doc in documents:
        size = utf8_bytes(doc)
        if total + size > limit:
            out.append(doc.encode("utf-8")[: limit - total].decode("utf-8", errors="ignore"))
            break
        out.append(doc)
        total += size
    return out


def build_tokenizer(cfg: TokenizerConfig, train_documents: Sequence[str] | None = None) -> Tokenizer:
    """The tokenizer the config asks for.

    Args:
      cfg: the tokenizer section.
      train_documents: the (unsharded) training documents; needed when ``cfg.path`` is None.

    Returns:
      A loaded tokenizer, or a byte-level BPE trained on ``train_documents`` (from the cache
      when the same documents and settings were seen before).
    """
    if cfg.path is not None:
        return open_tokenizer(cfg.path)
    if train_documents is None:
        raise ValueError("training a BPE (tokenizer.path: null) needs the training documents")
    documents = _first_bytes(train_documents, cfg.train_bytes)
    if not any(documents):
        raise DataError("cannot train a tokenizer on empty documents")
    return cached_bpe(documents, cfg.vocab_size, min_frequency=cfg.min_frequency, cache_dir=cfg.cache_dir)
