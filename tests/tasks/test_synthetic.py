"""Synthetic tasks: records are correct by an independent check, splits partition the space, and
training documents never contain an eval or demo problem."""

import functools
import hashlib
import re

import numpy as np
import pytest

from archzoo.tasks.synthetic import (
    SYNTHETIC_TASKS,
    format_example,
    split_of,
    task_examples,
    training_documents,
)

ADDITION = [f"addition-{d}d" for d in range(1, 6)]
STRING_TASKS = ["copy", "reverse", "kv-recall", "induction"]
ALL_TASKS = [*ADDITION, "modular-7", *STRING_TASKS]


def records(task, n=50, seed=0):
    rng = np.random.default_rng(seed)
    return [SYNTHETIC_TASKS[task].generate(rng) for _ in range(n)]


@functools.lru_cache(maxsize=None)
def examples(task, split, n):
    """task_examples at seed 0, shared between tests: exhausting addition-1d takes a while."""
    return tuple(task_examples(task, split, n))


def held_out_contexts(task):
    """Contexts that task_examples hands out for evaluation and demonstrations."""
    eval_n, demo_n = (1000, 1000) if task == "addition-1d" else (300, 150)
    held = [*examples(task, "eval", eval_n), *examples(task, "demo", demo_n)]
    return frozenset(r["context"] for r in held)


def parse_documents(documents, delimiter=" ", separator="\n"):
    """(context, answer text) of every example in the documents; answers hold no delimiter."""
    return [tuple(line.rsplit(delimiter, 1)) for doc in documents for line in doc.split(separator)]


def all_addition_1d_contexts():
    return [f"{a}+{b}=" for a in range(10) for b in range(10)]


# ---------------------------------------------------------------------------------------------
# Independent answers, one per task, each from the context alone.


def no_carry_sum(a, b):
    x, y = str(a), str(b)
    width = max(len(x), len(y))
    return int("".join(str((int(p) + int(q)) % 10) for p, q in zip(x.zfill(width), y.zfill(width))))


def addition_answer(context, digits):
    a, b = map(int, re.fullmatch(r"(\d+)\+(\d+)=", context).groups())
    for x in (a, b):
        assert (0 <= x <= 9) if digits == 1 else (len(str(x)) == digits)
    return a, b, a + b


def kv_pairs(context):
    body, query = context.split("; ")
    pairs = dict(item.split("=") for item in body.split(" "))
    assert query.endswith("?") and len(query) == 2
    return pairs, query[0]


REFERENCE_RULES = {
    "reverse": lambda s: "".join(s[i] for i in range(len(s) - 1, -1, -1)),
    "rotate": lambda s: s[1:] + s[0],
    "sort": lambda s: "".join(sorted(s)),
    "double": lambda s: "".join(ch * 2 for ch in s),
}


def induction_parts(context):
    assert context.endswith(">")
    *pairs, query = context[:-1].split(", ")
    demos = [tuple(p.split(">")) for p in pairs]
    assert len(demos) == 3 and all(len(x) == 4 for x, _ in demos) and len(query) == 4
    consistent = [name for name, rule in REFERENCE_RULES.items() if all(rule(x) == y for x, y in demos)]
    return demos, query, consistent


def correct_answer(task, context):
    """The right continuation recomputed from the context, without the generator's code."""
    if task in ADDITION:
        return str(addition_answer(context, int(task[len("addition-")]))[2])
    if task == "modular-7":
        a, b = map(int, re.fullmatch(r"(\d+)\+(\d+) mod 7=", context).groups())
        assert 0 <= a <= 99 and 0 <= b <= 99
        return str((a + b) % 7)
    if task == "copy":
        return re.fullmatch(r"copy ([a-z]{5}):", context).group(1)
    if task == "reverse":
        return re.fullmatch(r"reverse ([a-z]{5}):", context).group(1)[::-1]
    if task == "kv-recall":
        pairs, key = kv_pairs(context)
        return pairs[key]
    demos, query, consistent = induction_parts(context)
    assert len(consistent) == 1, (context, consistent)
    return REFERENCE_RULES[consistent[0]](query)


# ---------------------------------------------------------------------------------------------
# Records


@pytest.mark.parametrize("task", ALL_TASKS)
def test_records_follow_the_schema_and_the_marked_choice_is_correct(task):
    batch = records(task)
    n_choices = 7 if task == "modular-7" else 4
    for r in batch:
        assert set(r) == {"context", "choices", "answer"}
        context, choices, answer = r["context"], r["choices"], r["answer"]
        assert isinstance(answer, int) and 0 <= answer < n_choices
        assert len(choices) == n_choices and len(set(choices)) == n_choices
        assert all(isinstance(c, str) and c and c.isascii() and " " not in c for c in choices)
        assert context.isascii() and context == context.strip() and len(context) < 80
        assert choices[answer] == correct_answer(task, context), r
    if task == "modular-7":
        assert all(r["choices"] == [str(i) for i in range(7)] for r in batch)
    else:
        # Every position holds the answer somewhere in 50 shuffles, so position is no cue.
        assert {r["answer"] for r in batch} == set(range(4))


def test_only_arithmetic_tasks_are_numeric():
    assert {name for name, task in SYNTHETIC_TASKS.items() if task.numeric} == {*ADDITION, "modular-7"}
    assert set(SYNTHETIC_TASKS) == set(ALL_TASKS)
    assert all(task.name == name and task.description for name, task in SYNTHETIC_TASKS.items())


@pytest.mark.parametrize("task", ADDITION)
def test_addition_distractors_are_near_misses(task):
    digits = int(task[len("addition-")])
    for r in records(task, n=200):
        a, b, total = addition_answer(r["context"], digits)
        for i, choice in enumerate(r["choices"]):
            if i == r["answer"]:
                continue
            assert re.fullmatch(r"0|[1-9]\d*", choice), choice
            miss = int(choice)
            gap = abs(miss - total)
            # One digit moved by one or the sum off by ten is a power of ten away; small sums may
            # need the next integers up.
            power_of_ten = str(gap) == "1" + "0" * (len(str(gap)) - 1)
            assert miss == no_carry_sum(a, b) or power_of_ten or gap <= 3, (r, miss)


def test_string_distractors_are_the_named_near_misses():
    for r in records("copy"):
        s = r["choices"][r["answer"]]
        wrong = set(r["choices"]) - {s}
        assert s[::-1] in wrong and s[1:] + s[0] in wrong
        assert any(sum(p != q for p, q in zip(w, s)) == 1 for w in wrong)
    for r in records("reverse"):
        s = re.fullmatch(r"reverse ([a-z]{5}):", r["context"]).group(1)
        answer = s[::-1]
        wrong = set(r["choices"]) - {answer}
        assert s in wrong and answer[1:] + answer[0] in wrong
        assert any(sum(p != q for p, q in zip(w, answer)) == 1 for w in wrong)


def test_kv_recall_keys_are_distinct_and_choices_are_context_values():
    for r in records("kv-recall"):
        pairs, key = kv_pairs(r["context"])
        assert len(pairs) == 6 and len(r["context"].split("; ")[0].split(" ")) == 6
        assert all(re.fullmatch(r"[a-z]", k) and re.fullmatch(r"\d", v) for k, v in pairs.items())
        assert key in pairs and set(r["choices"]) <= set(pairs.values())


def test_induction_distractors_are_the_other_rules_applied_to_the_query():
    seen_rules = set()
    for r in records("induction", n=80):
        _, query, consistent = induction_parts(r["context"])
        seen_rules.update(consistent)
        assert set(r["choices"]) == {rule(query) for rule in REFERENCE_RULES.values()}
    assert seen_rules == set(REFERENCE_RULES)


# ---------------------------------------------------------------------------------------------
# Determinism and splits


@pytest.mark.parametrize("task", ALL_TASKS)
def test_examples_are_fixed_by_the_seed(task):
    first = task_examples(task, "eval", 10, seed=1)
    assert len(first) == 10
    assert task_examples(task, "eval", 10, seed=1) == first
    assert task_examples(task, "eval", 10, seed=2) != first
    docs = training_documents(task, 3, seed=1)
    assert training_documents(task, 3, seed=1) == docs
    assert training_documents(task, 3, seed=2) != docs


@pytest.mark.parametrize("task", ALL_TASKS)
def test_each_split_returns_only_its_own_distinct_examples(task):
    # addition-1d holds only 7 demo problems; ask for fewer so no call has to exhaust the split.
    n = 6 if task == "addition-1d" else 30
    by_split = {split: task_examples(task, split, n, seed=4) for split in ("eval", "demo", "train")}
    for split, batch in by_split.items():
        contexts = [r["context"] for r in batch]
        assert len(contexts) == len(set(contexts)) == n
        assert all(split_of(task, c) == split for c in contexts)
    assert not {r["context"] for r in by_split["eval"]} & {r["context"] for r in by_split["demo"]}


def test_split_is_the_documented_keyed_hash():
    # The partition must never move between releases, or old checkpoints would have seen eval problems.
    for task, context in [("addition-2d", "37+58="), ("copy", "copy abcde:"), ("induction", "x")]:
        digest = hashlib.blake2b(context.encode(), key=task.encode(), digest_size=8).digest()
        bucket = int.from_bytes(digest, "big") % 100
        assert split_of(task, context) == ("eval" if bucket < 20 else "demo" if bucket < 30 else "train")


def test_split_sizes_are_about_twenty_ten_and_seventy_percent():
    contexts = [f"{a}+{b}=" for a in range(10, 100) for b in range(10, 100)]
    splits = [split_of("addition-2d", c) for c in contexts]
    for split, share in (("eval", 0.2), ("demo", 0.1), ("train", 0.7)):
        assert abs(splits.count(split) / len(contexts) - share) < 0.02, split


def test_a_small_space_returns_every_problem_of_the_split_and_no_more():
    for split in ("eval", "demo"):
        expected = {c for c in all_addition_1d_contexts() if split_of("addition-1d", c) == split}
        got = [r["context"] for r in examples("addition-1d", split, 1000)]
        assert len(got) == len(set(got)) == len(expected) < 1000
        assert set(got) == expected
    # The same short list on a fresh call.
    assert task_examples("addition-1d", "eval", 1000) == list(examples("addition-1d", "eval", 1000))


# ---------------------------------------------------------------------------------------------
# The guarantee: training never shows an eval or demo problem


@pytest.mark.parametrize("task", ALL_TASKS)
def test_training_documents_hold_no_eval_or_demo_example(task):
    documents = training_documents(task, 200, seed=3)
    examples = parse_documents(documents)
    assert len(documents) == 200 and len(examples) == 200 * 8
    contexts = {context for context, _ in examples}
    assert not contexts & held_out_contexts(task)
    assert all(split_of(task, c) == "train" for c in contexts)
    assert all(answer == correct_answer(task, context) for context, answer in examples)


def test_addition_1d_training_documents_use_only_train_problems():
    train = {c for c in all_addition_1d_contexts() if split_of("addition-1d", c) == "train"}
    contexts = {context for context, _ in parse_documents(training_documents("addition-1d", 200, seed=3))}
    assert contexts <= train
    # 1600 draws from about 70 problems reach all of them; a missing one would mean a skewed sampler.
    assert contexts == train


def test_documents_use_the_given_delimiter_separator_and_count():
    documents = training_documents(
        "kv-recall", 4, seed=0, examples_per_document=3, delimiter=" -> ", separator="\n\n"
    )
    examples = parse_documents(documents, delimiter=" -> ", separator="\n\n")
    assert len(examples) == 12
    for context, answer in examples:
        assert format_example(context, answer, " -> ") == context + " -> " + answer
        assert answer == correct_answer("kv-recall", context)


# ---------------------------------------------------------------------------------------------
# Errors


def test_an_unknown_task_name_suggests_the_closest_and_lists_all():
    for call in (
        lambda: task_examples("addtion-2d", "eval", 1),
        lambda: training_documents("addtion-2d", 1),
        lambda: split_of("addtion-2d", "1+2="),
    ):
        with pytest.raises(ValueError, match="did you mean 'addition-2d'") as error:
            call()
        assert "'addtion-2d'" in str(error.value) and "kv-recall" in str(error.value)


def test_an_unknown_split_is_refused():
    with pytest.raises(ValueError, match="'test'.*eval, demo, train"):
        task_examples("copy", "test", 1)
