"""Seeded shuffles are permutations, shards partition the documents, validation is held out by document."""

import json

import pytest

from archzoo.data import DataConfig, DataError, Splits, load_splits, permutation, shard_documents, shuffle_documents, split_validation

DOCS = [f"document {i}" for i in range(23)]


@pytest.mark.parametrize("n", [0, 1, 2, 23, 200])
def test_permutation_is_a_permutation_fixed_by_seed(n):
    p = permutation(n, seed=5)
    assert sorted(p) == list(range(n))
    assert permutation(n, seed=5) == p


def test_shuffle_depends_on_seed_and_keeps_every_document():
    a = shuffle_documents(DOCS, seed=0)
    assert sorted(a) == sorted(DOCS)
    assert shuffle_documents(DOCS, seed=0) == a
    # 23! orders: two seeds agreeing, or a seed leaving the corpus order, would be a bug.
    assert shuffle_documents(DOCS, seed=1) != a
    assert a != DOCS


@pytest.mark.parametrize("count", [1, 2, 3, 5, 23, 30])
def test_shards_partition_the_documents(count):
    shards = [shard_documents(DOCS, i, count) for i in range(count)]
    # Reference: document j belongs to process j mod count.
    for i, shard in enumerate(shards):
        assert shard == [d for j, d in enumerate(DOCS) if j % count == i]
    assert sorted(d for s in shards for d in s) == sorted(DOCS)
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("index, count", [(2, 2), (-1, 2), (0, 0)])
def test_bad_process_index_is_refused(index, count):
    with pytest.raises(ValueError, match="process_"):
        shard_documents(DOCS, index, count)


@pytest.mark.parametrize("fraction, count, expected", [(0.1, None, 2), (0.5, None, 12), (0.01, None, 1), (0.0, None, 0), (0.9, 4, 4)])
def test_validation_is_disjoint_covering_and_stable(fraction, count, expected):
    s = split_validation(DOCS, seed=3, fraction=fraction, count=count)
    assert len(s.validation) == expected
    assert not set(s.train) & set(s.validation)
    assert sorted(s.train + s.validation) == sorted(DOCS)
    assert split_validation(DOCS, seed=3, fraction=fraction, count=count) == s
    # Validation keeps corpus order; the same documents are held out whether or not training is shuffled.
    assert list(s.validation) == [d for d in DOCS if d in s.validation]
    unshuffled = split_validation(DOCS, seed=3, fraction=fraction, count=count, shuffle=False)
    assert unshuffled.validation == s.validation
    assert list(unshuffled.train) == [d for d in DOCS if d in s.train]


def test_validation_follows_the_seed():
    held = {seed: split_validation(DOCS, seed=seed, count=5).validation for seed in range(4)}
    assert len(set(held.values())) > 1


def test_validation_that_leaves_no_training_is_refused():
    with pytest.raises(DataError, match="validation_count=3.*leaving none"):
        split_validation(DOCS[:3], seed=0, count=3, source="tiny.jsonl")
    with pytest.raises(DataError, match="tiny.jsonl"):
        split_validation(DOCS[:1], seed=0, fraction=0.5, source="tiny.jsonl")


def test_load_splits_then_shard(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    cfg = DataConfig(source=str(path), validation_count=4, seed=9)
    splits = load_splits(cfg)
    assert splits == split_validation(DOCS, seed=9, count=4)
    mine = [splits.shard(i, 3) for i in range(3)]
    assert all(isinstance(m, Splits) for m in mine)
    assert sorted(d for m in mine for d in m.train) == sorted(splits.train)
    assert sorted(d for m in mine for d in m.validation) == sorted(splits.validation)
    with pytest.raises(DataError, match="19 training documents cannot feed 20 processes"):
        splits.shard(0, 20)


BOOK = "".join(f"Line {i} of the only document, with some words in it.\n" for i in range(200))


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.5])
def test_a_single_document_holds_out_its_last_lines(tmp_path, fraction):
    path = tmp_path / "book.txt"
    path.write_text(BOOK)
    splits = load_splits(DataConfig(source=str(path), validation_fraction=fraction))
    (train,), (held_out,) = splits.train, splits.validation
    assert train + held_out == BOOK
    # Reference: the cut is the first line start at or after (1 - fraction) of the text.
    goal = round(len(BOOK) * (1 - fraction))
    starts = [i for i in range(1, len(BOOK)) if BOOK[i - 1] == "\n"]
    assert len(train) == min(s for s in starts if s >= goal)
    assert load_splits(DataConfig(source=str(path), validation_fraction=fraction, seed=7)) == splits


def test_a_single_document_is_whole_for_training_without_validation(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(BOOK)
    assert load_splits(DataConfig(source=str(path), validation_fraction=0.0)) == Splits(train=(BOOK,), validation=())


@pytest.mark.parametrize(
    "text, settings, asked",
    [
        ("one line and no line break to cut at", {}, "validation_fraction=0.05"),
        (BOOK, {"validation_count": 1}, "validation_count=1"),
        ("first line\n \n", {"validation_fraction": 0.4}, "validation_fraction=0.4"),
    ],
)
def test_a_single_document_that_cannot_be_cut_says_how_to_split_it(tmp_path, text, settings, asked):
    path = tmp_path / "book.txt"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        load_splits(DataConfig(source=str(path), **settings))
    message = str(e.value)
    assert str(path) in message and asked in message and "text_documents: blank_lines" in message
    assert "validation_fraction: 0" in message


def test_a_validation_split_without_usable_text_names_the_corpus(tmp_path):
    docs = ["x", " \n", "a longer document that could be validated on", "and another one"]
    seed = next(s for s in range(100) if sorted(permutation(len(docs), s)[:2]) == [0, 1])
    path = tmp_path / "short.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    with pytest.raises(DataError) as e:
        load_splits(DataConfig(source=str(path), validation_count=2, seed=seed))
    message = str(e.value)
    assert str(path) in message and "no usable text" in message and "'x'" in message
    assert "data.validation_count" in message and "validation_fraction: 0" in message
    # One usable held-out document is enough.
    other = next(s for s in range(100) if sorted(permutation(len(docs), s)[:2]) == [0, 2])
    assert load_splits(DataConfig(source=str(path), validation_count=2, seed=other)).validation == (docs[0], docs[2])
