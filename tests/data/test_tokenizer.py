"""Trained BPE reserves the special ids and round-trips any text; its cache is hit and missed as it should;
local tokenizer files load with their roles found by name."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import archzoo.data.bpe as bpe_module
from archzoo.data import (
    DataError,
    SpecialTokens,
    TokenizerConfig,
    TokenizerError,
    build_tokenizer,
    cached_bpe,
    embedded_documents,
    open_tokenizer,
    train_bpe,
    utf8_bytes,
)

SPECIAL = SpecialTokens()


@pytest.fixture(scope="module")
def docs():
    return embedded_documents()[:12]  # about 150 kB: trains in a fraction of a second


@pytest.fixture(scope="module")
def bpe(docs):
    return train_bpe(docs, 600)


def test_reserved_tokens_sit_at_their_ids_then_the_bytes(bpe, tmp_path):
    assert bpe.special == SPECIAL
    assert bpe.vocab_size == 600
    path = tmp_path / "tokenizer.json"
    bpe.save(path)
    saved = json.loads(path.read_text())
    added = {t["content"]: t["id"] for t in saved["added_tokens"]}
    assert added == SPECIAL.names()
    assert all(t["special"] for t in saved["added_tokens"])
    vocab = saved["model"]["vocab"]
    # The 256 byte symbols of the byte-level alphabet come right after the reserved ids.
    byte_ids = sorted(i for tok, i in vocab.items() if len(tok) == 1)
    assert byte_ids == list(range(SPECIAL.count, SPECIAL.count + 256))
    for name, i in SPECIAL.names().items():
        assert bpe.decode([i]) == name
        assert bpe.is_special(i)
    assert not bpe.is_special(SPECIAL.count)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_round_trip_any_text(bpe, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert all(SPECIAL.count <= i < bpe.vocab_size for i in ids)


def test_special_names_in_text_stay_text(bpe):
    text = "<pad></s><s><mask>[R][S][X]<extra_id_0> and <extra_id_99>"
    ids = bpe.encode(text)
    assert not any(bpe.is_special(i) for i in ids)
    assert bpe.decode(ids) == text
    assert bpe.decode([SPECIAL.bos] + ids + [SPECIAL.eos]) == "<s>" + text + "</s>"


def test_encode_batch_matches_encode(bpe, docs):
    texts = docs[:3] + ["", "naïve café — 日本語 🙂\r\n"]
    assert bpe.encode_batch(texts) == [bpe.encode(t) for t in texts]
    # Merges learned on English compress English: fewer ids than bytes.
    assert len(bpe.encode(docs[0])) < utf8_bytes(docs[0]) / 2


def test_utf8_bytes():
    assert utf8_bytes("") == 0
    assert utf8_bytes("abc") == 3
    assert utf8_bytes("é") == 2
    assert utf8_bytes("日本") == 6
    assert utf8_bytes("🙂") == 4


def test_vocab_too_small_is_refused(docs):
    with pytest.raises(TokenizerError, match="vocab_size=300.*256 byte tokens \\+ 107 reserved tokens = 363"):
        train_bpe(docs[:1], 300)


def test_cache_hit_and_miss(docs, tmp_path, monkeypatch):
    calls = []
    real_train = bpe_module.train_bpe

    def counting_train(*args, **kwargs):
        calls.append(kwargs.get("min_frequency"))
        return real_train(*args, **kwargs)

    monkeypatch.setattr(bpe_module, "train_bpe", counting_train)
    cfg = TokenizerConfig(vocab_size=500, cache_dir=str(tmp_path))
    first = build_tokenizer(cfg, docs)
    assert len(calls) == 1
    files = sorted(tmp_path.glob("*.json"))
    assert [str(f) for f in files] == [first.name]
    mtime = files[0].stat().st_mtime_ns

    second = build_tokenizer(cfg, docs)
    assert len(calls) == 1, "second call retrained instead of loading the cache"
    assert second.name == first.name and files[0].stat().st_mtime_ns == mtime
    assert second.special == SPECIAL
    assert second.encode_batch(docs[:2]) == first.encode_batch(docs[:2])

    build_tokenizer(TokenizerConfig(vocab_size=520, cache_dir=str(tmp_path)), docs)
    build_tokenizer(TokenizerConfig(vocab_size=500, min_frequency=3, cache_dir=str(tmp_path)), docs)
    build_tokenizer(cfg, docs[:-1])
    build_tokenizer(TokenizerConfig(vocab_size=500, train_bytes=20_000, cache_dir=str(tmp_path)), docs)
    assert len(calls) == 5
    assert len(list(tmp_path.glob("*.json"))) == 5


def test_train_bytes_keeps_a_prefix(docs, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(bpe_module, "cached_bpe", lambda d, *a, **k: seen.append(d))
    build_tokenizer(TokenizerConfig(train_bytes=utf8_bytes(docs[0]) + 5), ["é" * 10] + docs)
    (used,) = seen
    assert used[0] == "é" * 10
    assert utf8_bytes("".join(used)) <= utf8_bytes(docs[0]) + 5
    assert used[1] == docs[0][: len(used[1])] and len(used) == 2


def test_trained_tokenizer_file_loads_with_archzoo_layout(bpe, tmp_path):
    path = tmp_path / "tokenizer.json"
    bpe.save(path)
    loaded = open_tokenizer(path)
    assert loaded.special == SPECIAL
    text = "Mr. Darcy — 日本 🙂"
    assert loaded.encode(text) == bpe.encode(text)
    folder = open_tokenizer(tmp_path)
    assert folder.encode(text) == bpe.encode(text)


def _word_level(tmp_path, vocab, filename="tokenizer.json"):
    """A tokenizer.json written with the tokenizers library: whitespace words, fixed ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / filename
    tok.save(str(path))
    return path


def test_external_tokenizer_json_maps_roles_and_names_what_is_missing(tmp_path):
    vocab = {"[PAD]": 0, "[UNK]": 1, "hello": 2, "world": 3, "[MASK]": 4, "[SEP]": 5}
    path = _word_level(tmp_path, vocab)
    tok = open_tokenizer(path)
    assert tok.encode("hello world hello") == [2, 3, 2]
    assert tok.vocab_size == 6
    assert tok.roles == {"pad": 0, "mask": 4}
    assert tok.sentinels == ()
    tok.require(["pad", "mask"], "the MLM objective")
    with pytest.raises(TokenizerError) as e:
        tok.require(["pad", "eos"], "the causal LM objective")
    message = str(e.value)
    assert "the causal LM objective needs eos" in message and str(path) in message and "pad=0" in message
    with pytest.raises(TokenizerError, match="sentinels"):
        tok.require(["sentinels"], "span corruption")
    with pytest.raises(TokenizerError, match="lacks eos, bos, mode_r, mode_s, mode_x, sentinels"):
        _ = tok.special

    # A folder's special_tokens_map.json names tokens the usual names would miss.
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"eos_token": {"content": "[SEP]"}, "pad_token": "[PAD]"}))
    assert open_tokenizer(tmp_path).roles == {"pad": 0, "eos": 5, "mask": 4}


def test_t5_style_descending_sentinels_are_found_but_not_archzoo_layout(tmp_path):
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "<extra_id_1>": 4, "<extra_id_0>": 5}
    tok = open_tokenizer(_word_level(tmp_path, vocab))
    assert tok.roles == {"pad": 0, "eos": 1}
    assert tok.sentinels == (5, 4)
    with pytest.raises(TokenizerError, match="lacks bos, mask"):
        _ = tok.special


def test_sentencepiece_model_loads(tmp_path):
    import sentencepiece

    lines = [doc for doc in embedded_documents()[:3]]
    (tmp_path / "train.txt").write_text("\n".join(lines))
    sentencepiece.SentencePieceTrainer.train(
        input=str(tmp_path / "train.txt"), model_prefix=str(tmp_path / "sp"), vocab_size=300, user_defined_symbols=["<mask>"], minloglevel=2
    )
    tok = open_tokenizer(tmp_path / "sp.model")
    reference = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    # SentencePiece's defaults: unk 0, bos 1, eos 2, no pad; user symbols follow.
    assert tok.roles == {"eos": 2, "bos": 1, "mask": 3}
    assert tok.missing(["pad", "eos", "mask"]) == ["pad"]
    text = "It is a truth universally acknowledged."
    assert tok.encode(text) == reference.encode(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == 300


def test_missing_or_bad_tokenizer_file_is_named(tmp_path):
    with pytest.raises(DataError, match="tokenizer not found") as e:
        build_tokenizer(TokenizerConfig(path=str(tmp_path / "nope.json")))
    assert str(tmp_path / "nope.json") in str(e.value)
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{}")
    with pytest.raises(DataError, match="cannot read as a tokenizer.json") as e:
        open_tokenizer(bad)
    assert str(bad) in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no tokenizer.json") as e:
        open_tokenizer(empty)
    assert str(empty) in str(e.value)


def test_cached_bpe_default_dir_follows_xdg(tmp_path, monkeypatch, docs):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    tok = cached_bpe(docs[:2], 400)
    assert tok.name.startswith(str(tmp_path / "archzoo" / "tokenizers"))


def _refuse_writes_under(monkeypatch, folder):
    """What the OS tells a user without write permission on ``folder`` (root writes anyway)."""
    import errno
    import pathlib

    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.is_relative_to(folder) and not self.exists():
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)


@pytest.mark.parametrize("blocked", ["read_only", "under_a_file"])
def test_an_unwritable_cache_trains_without_it_and_warns_naming_the_path(docs, tmp_path, monkeypatch, blocked):
    import os

    if blocked == "read_only":
        folder = tmp_path / "readonly"
        folder.mkdir()
        folder.chmod(0o555)
        if os.access(folder, os.W_OK):
            _refuse_writes_under(monkeypatch, folder)
        cache = folder / "tokenizers"
    else:
        (tmp_path / "plain_file").write_text("not a folder")
        cache = tmp_path / "plain_file" / "tokenizers"
    with pytest.warns(UserWarning) as caught:
        tok = build_tokenizer(TokenizerConfig(vocab_size=400, cache_dir=str(cache)), docs[:2])
    (warning,) = caught
    message = str(warning.message)
    assert str(cache) in message and "data.tokenizer.cache_dir" in message and "\n" not in message
    assert tok.special == SPECIAL
    reference = train_bpe(docs[:2], 400)
    assert tok.encode_batch(docs[2:4]) == reference.encode_batch(docs[2:4])
    if blocked == "read_only":
        folder.chmod(0o755)
