"""Data mixtures: byte shares follow the weights, task sources never carry a held-out problem,
validation comes from the text sources, bad mixtures are named."""

from __future__ import annotations

import pytest

from archzoo.config import ConfigError, from_dict
from archzoo.data.config import DataConfig
from archzoo.data.splits import load_splits
from archzoo.tasks.synthetic import split_of, task_examples
from archzoo.train.config import load_run_configs

WORDS = "the quick brown fox jumps over a lazy dog while her sister reads letters by the fire".split()


def _corpus(tmp_path, n=80):
    import random

    rng = random.Random(1)
    paras = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) + "." for _ in range(n)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(paras) + "\n")
    return str(path)


def _mixture(tmp_path, *tasks, text_weight=0.8, **extra):
    sources = [{"source": _corpus(tmp_path), "weight": text_weight, "text_documents": "blank_lines"}]
    sources += [{"source": f"task:{name}", "weight": w} for name, w in tasks]
    return from_dict(DataConfig, {"mixture": sources, "validation_fraction": 0.1, **extra})


def _task_lines(documents):
    """(context, answer) of every line that reads as a task example (the text has no '=', ':' or '>')."""
    out = []
    for d in documents:
        for line in d.split("\n"):
            if any(mark in line for mark in "=:>?"):
                context, answer = line.rsplit(" ", 1)
                out.append((context, answer))
    return out


def test_byte_shares_follow_the_weights(tmp_path):
    cfg = _mixture(tmp_path, ("addition-2d", 0.15), ("copy", 0.05))
    splits = load_splits(cfg)
    nbytes = lambda docs: sum(len(d.encode()) for d in docs)  # noqa: E731
    total = nbytes(splits.train)
    additions = [d for d in splits.train if "+" in d]
    copies = [d for d in splits.train if d.startswith("copy ")]
    text = [d for d in splits.train if d not in set(additions) | set(copies)]
    # text is cut at a document, a task at a whole document: within one document's bytes
    assert nbytes(additions) / total == pytest.approx(0.15, abs=0.01)
    assert nbytes(copies) / total == pytest.approx(0.05, abs=0.01)
    assert nbytes(text) / total == pytest.approx(0.80, abs=0.01)
    assert load_splits(cfg) == splits  # deterministic


def test_held_out_task_problems_never_reach_training(tmp_path):
    # addition-1d has 100 problems in all: every eval and demonstration one is known
    cfg = _mixture(tmp_path, ("addition-1d", 0.3), ("kv-recall", 0.2))
    splits = load_splits(cfg)
    lines = _task_lines(splits.train)
    contexts = {c for c, _ in lines}
    held_out = {r["context"] for split in ("eval", "demo") for r in task_examples("addition-1d", split, 1000)}
    assert len(held_out) == 28
    assert contexts.isdisjoint(held_out)
    trained_additions = {c for c in contexts if "+" in c}
    assert len(trained_additions) == 72  # the train problems, all of them, and nothing else
    assert all(split_of("addition-1d", c) == "train" for c in trained_additions)
    kv = {c for c in contexts if c.endswith("?")}
    assert kv and all(split_of("kv-recall", c) == "train" for c in kv)
    assert kv.isdisjoint(r["context"] for split in ("eval", "demo") for r in task_examples("kv-recall", split, 3000))
    # validation holds text only, none of it in training
    assert not _task_lines(splits.validation) and set(splits.validation).isdisjoint(splits.train)


def test_bad_mixtures_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"mixture\[1\].source: 'task:revers' names no built-in task; did you mean task:reverse\?"):
        _mixture(tmp_path, ("revers", 0.1))
    with pytest.raises(ConfigError, match="needs at least one text source besides tasks"):
        from_dict(DataConfig, {"mixture": [{"source": "task:copy"}]})
    with pytest.raises(ConfigError, match="move data.source='x.txt' into it"):
        from_dict(DataConfig, {"source": "x.txt", "mixture": [{"source": "embedded"}]})
    with pytest.raises(ConfigError, match=r"mixture\[0\].weight: must be > 0"):
        from_dict(DataConfig, {"mixture": [{"source": "embedded", "weight": 0}]})
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  mixture:\n    - {source: embedded, weight: 0.9}\n    - {source: 'task:copy', wieght: 0.1}\n")
    with pytest.raises(ConfigError, match=r"run.yaml, line 4: unknown key 'data.mixture\[1\].wieght'.*did you mean 'data.mixture\[1\].weight'\?"):
        load_run_configs(path)
