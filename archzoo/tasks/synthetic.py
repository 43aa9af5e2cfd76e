"""Built-in synthetic tasks, generated offline from a seed, on which small models show emergence curves.

Each task draws one example at a time as a task record::

    {"context": "37+58=", "choices": ["95", "85", "96", "105"], "answer": 0}

where ``choices[answer]`` is the correct continuation. Contexts are short ASCII and never end
with a space: the evaluator joins context and answer with its delimiter (:func:`format_example`).

A task is also a pretraining data source, so its example space is cut once and for all, by a
keyed hash of the context and independently of any seed, into ``"eval"`` (20 %), ``"demo"``
(10 %, demonstrations for few-shot prompts) and ``"train"`` (70 %). :func:`training_documents`
writes only train examples, so no evaluation or demonstration problem is ever seen in training.

Typical use::

    from archzoo.tasks.synthetic import task_examples, training_documents

    eval_records = task_examples("addition-3d", "eval", 500)
    demo_records = task_examples("addition-3d", "demo", 8)
    documents = training_documents("addition-3d", 1000, seed=0)
"""

from __future__ import annotations

import difflib
import functools
import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = [
    "SyntheticTask",
    "SYNTHETIC_TASKS",
    "SPLITS",
    "split_of",
    "task_examples",
    "training_documents",
    "format_example",
    "closest_task",
]

SPLITS = ("eval", "demo", "train")

# Buckets in [0, 100) of the context's keyed hash: [0, 20) eval, [20, 30) demo, the rest train.
_EVAL_BUCKETS, _DEMO_BUCKETS = 20, 10

_LETTERS = "abcdefghijklmnopqrstuvwxyz"

# A draw that adds nothing new this many times in a row means a small space is exhausted.
_STALL_DRAWS = 10_000


@dataclass(frozen=True)
class SyntheticTask:
    """One synthetic task: a name, what it asks, and a seeded generator of task records.

    Attributes:
      name: the key in :data:`SYNTHETIC_TASKS`.
      description: one line saying what the model must do.
      numeric: True when answers are numbers, so a per-digit edit distance is meaningful.
      generate: draws one record ``{"context", "choices", "answer"}`` from a numpy Generator.
    """

    name: str
    description: str
    numeric: bool
    generate: Callable[[np.random.Generator], dict]


def _record(rng: np.random.Generator, context: str, correct: str, distractors: list[str]) -> dict:
    """A task record with the correct choice and its distractors in a seeded-random order.

    Args:
      rng: the generator that draws the order.
      context: the prompt, without a trailing space.
      correct: the correct continuation.
      distractors: wrong continuations, distinct from each other and from ``correct``.

    Returns:
      ``{"context": context, "choices": [...], "answer": index of correct}``.
    """
    candidates = [correct, *distractors]
    assert len(set(candidates)) == len(candidates), candidates
    order = [int(i) for i in rng.permutation(len(candidates))]
    return {"context": context, "choices": [candidates[i] for i in order], "answer": order.index(0)}


def _draw_letters(rng: np.random.Generator, n: int, *, distinct: bool = False) -> str:
    """``n`` random lowercase letters (all different when ``distinct``)."""
    return "".join(_LETTERS[int(i)] for i in rng.choice(26, size=n, replace=not distinct))


def _change_one_letter(rng: np.random.Generator, s: str) -> str:
    """``s`` with one random position replaced by a different random letter."""
    position = int(rng.integers(len(s)))
    # Adding 1..25 modulo 26 never gives back the same letter.
    letter = _LETTERS[(_LETTERS.index(s[position]) + int(rng.integers(1, 26))) % 26]
    return s[:position] + letter + s[position + 1 :]


def _rotate_left(s: str) -> str:
    return s[1:] + s[:1]


# ---------------------------------------------------------------------------------------------
# Arithmetic


def _sum_without_carry(a: int, b: int) -> int:
    """The digit-wise sum modulo 10, the answer of someone who forgets every carry."""
    total, place = 0, 1
    while a or b:
        total += ((a % 10 + b % 10) % 10) * place
        a, b, place = a // 10, b // 10, place * 10
    return total


def _addition_near_misses(a: int, b: int) -> list[int]:
    """Plausible wrong sums: one digit of the sum moved by one, the sum off by ten, no carry.

    Args:
      a, b: the operands.

    Returns:
      At least three distinct non-negative integers different from ``a + b``, sorted.
    """
    total = a + b
    digits = str(total)
    misses = {total + 10, total - 10, _sum_without_carry(a, b)}
    for k, digit in enumerate(int(c) for c in reversed(digits)):
        if digit < 9:
            misses.add(total + 10**k)
        # Lowering a leading 1 would drop a digit, which looks like no sum of these operands.
        leading_one = k == len(digits) - 1 and digit == 1 and len(digits) > 1
        if digit > 0 and not leading_one:
            misses.add(total - 10**k)
    misses = {m for m in misses if m >= 0 and m != total}
    # Only tiny sums (0+0 has just 1 and 10) run short; fill with the next integers up.
    step = 1
    while len(misses) < 3:
        misses.add(total + step)
        step += 1
    return sorted(misses)


def _generate_addition(rng: np.random.Generator, *, digits: int) -> dict:
    """``"{a}+{b}="`` with uniform ``digits``-digit operands (0..9 for one digit)."""
    low = 0 if digits == 1 else 10 ** (digits - 1)
    a, b = (int(x) for x in rng.integers(low, 10**digits, size=2))
    misses = _addition_near_misses(a, b)
    picked = rng.choice(len(misses), size=3, replace=False)
    return _record(rng, f"{a}+{b}=", str(a + b), [str(misses[int(i)]) for i in picked])


def _generate_modular_7(rng: np.random.Generator) -> dict:
    """``"{a}+{b} mod 7="`` with a, b in 0..99; the choices are the seven residues in order."""
    a, b = (int(x) for x in rng.integers(0, 100, size=2))
    return {"context": f"{a}+{b} mod 7=", "choices": [str(r) for r in range(7)], "answer": (a + b) % 7}


# ---------------------------------------------------------------------------------------------
# Strings


def _generate_copy(rng: np.random.Generator) -> dict:
    """``"copy {s}:"`` with five random letters; the answer is ``s``."""
    while True:
        s = _draw_letters(rng, 5)
        distractors = [s[::-1], _change_one_letter(rng, s), _rotate_left(s)]
        # Palindromes and repeated letters make distractors collide: draw another string.
        if len({s, *distractors}) == 4:
            return _record(rng, f"copy {s}:", s, distractors)


def _generate_reverse(rng: np.random.Generator) -> dict:
    """``"reverse {s}:"`` with five random letters; the answer is ``s`` reversed."""
    while True:
        s = _draw_letters(rng, 5)
        reversed_s = s[::-1]
        distractors = [s, _change_one_letter(rng, reversed_s), _rotate_left(reversed_s)]
        if len({reversed_s, *distractors}) == 4:
            return _record(rng, f"reverse {s}:", reversed_s, distractors)


def _generate_kv_recall(rng: np.random.Generator) -> dict:
    """``"a=4 f=9 q=2 m=7 c=1 z=3; f?"``: six distinct keys with digit values, one queried."""
    keys = _draw_letters(rng, 6, distinct=True)
    values = [str(int(v)) for v in rng.integers(0, 10, size=6)]
    # Values may repeat, but the choices come from them: four different ones must appear.
    while len(set(values)) < 4:
        values = [str(int(v)) for v in rng.integers(0, 10, size=6)]
    query = int(rng.integers(6))
    correct = values[query]
    others = sorted(set(values) - {correct})
    picked = rng.choice(len(others), size=3, replace=False)
    pairs = " ".join(f"{k}={v}" for k, v in zip(keys, values))
    return _record(rng, f"{pairs}; {keys[query]}?", correct, [others[int(i)] for i in picked])


# The induction rules, one line each; a context's three demonstrations fix which one applies.
_INDUCTION_RULES: dict[str, Callable[[str], str]] = {
    "reverse": lambda s: s[::-1],
    "rotate": _rotate_left,
    "sort": lambda s: "".join(sorted(s)),
    "double": lambda s: "".join(c + c for c in s),
}


def _generate_induction(rng: np.random.Generator) -> dict:
    """``"abcd>dcba, mnop>ponm, wxyz>zyxw, efgh>"``: infer the rule from three pairs, apply it."""
    rules = list(_INDUCTION_RULES.values())
    rule = rules[int(rng.integers(len(rules)))]
    while True:
        inputs = [_draw_letters(rng, 4, distinct=True) for _ in range(3)]
        # Demonstrations that another rule also explains would make the answer ambiguous.
        if sum(all(r(x) == rule(x) for x in inputs) for r in rules) == 1:
            break
    while True:
        query = _draw_letters(rng, 4, distinct=True)
        outputs = {r(query) for r in rules}
        if query not in inputs and len(outputs) == len(rules):
            break
    demonstrations = ", ".join(f"{x}>{rule(x)}" for x in inputs)
    correct = rule(query)
    distractors = [r(query) for r in rules if r is not rule]
    return _record(rng, f"{demonstrations}, {query}>", correct, distractors)


def _addition_task(digits: int) -> SyntheticTask:
    return SyntheticTask(
        name=f"addition-{digits}d",
        description=f"add two {digits}-digit numbers",
        numeric=True,
        generate=functools.partial(_generate_addition, digits=digits),
    )


SYNTHETIC_TASKS: dict[str, SyntheticTask] = {
    **{f"addition-{d}d": _addition_task(d) for d in range(1, 6)},
    "modular-7": SyntheticTask("modular-7", "add two numbers below 100 modulo 7", True, _generate_modular_7),
    "copy": SyntheticTask("copy", "repeat five letters", False, _generate_copy),
    "reverse": SyntheticTask("reverse", "reverse five letters", False, _generate_reverse),
    "kv-recall": SyntheticTask(
        "kv-recall", "recall the value of a key listed in the context", False, _generate_kv_recall
    ),
    "induction": SyntheticTask(
        "induction", "infer a string rule from three demonstrations and apply it", False, _generate_induction
    ),
}


# ---------------------------------------------------------------------------------------------
# Splits and sampling


def closest_task(name: str) -> str | None:
    """The built-in task name closest in spelling to ``name`` (for an error's suggestion), or None."""
    close = difflib.get_close_matches(name, list(SYNTHETIC_TASKS), n=1)
    return close[0] if close else None


def _task(task_name: str) -> SyntheticTask:
    """The task of that name, or a ValueError that suggests the closest name and lists them all."""
    if task_name in SYNTHETIC_TASKS:
        return SYNTHETIC_TASKS[task_name]
    close = closest_task(task_name)
    hint = f"; did you mean {close!r}?" if close else ""
    raise ValueError(f"unknown synthetic task {task_name!r}{hint} Valid names: {', '.join(SYNTHETIC_TASKS)}")


def _stream(task_name: str, purpose: str) -> int:
    """A stable 64-bit integer for ``(task_name, purpose)``; python's ``hash`` is salted per process."""
    digest = hashlib.blake2b(f"{task_name}/{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _rng(task_name: str, purpose: str, seed: int) -> np.random.Generator:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng([int(seed), _stream(task_name, purpose)])


def split_of(task_name: str, context: str) -> str:
    """Which split a context belongs to, fixed by a keyed hash of the context and no seed.

    Args:
      task_name: a key of :data:`SYNTHETIC_TASKS`; it keys the hash.
      context: the example's context string.

    Returns:
      ``"eval"``, ``"demo"`` or ``"train"``.

    Raises:
      ValueError: an unknown task name.
    """
    _task(task_name)
    digest = hashlib.blake2b(context.encode(), key=task_name.encode(), digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") % 100
    if bucket < _EVAL_BUCKETS:
        return "eval"
    if bucket < _EVAL_BUCKETS + _DEMO_BUCKETS:
        return "demo"
    return "train"


def task_examples(task_name: str, split: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` records of one split with distinct contexts, deterministic from ``(task_name, split, seed)``.

    Records are drawn from the task's generator and those of other splits are rejected. A small
    space may hold fewer than ``n`` distinct contexts in the split (addition-1d has 100 problems,
    about 20 of them eval): drawing stops after ``200 * n + 10000`` draws, or after 10000 draws
    in a row that add nothing new, and returns what it found, so the list can be shorter than
    ``n`` but is still the same on every call.

    Args:
      task_name: a key of :data:`SYNTHETIC_TASKS`.
      split: ``"eval"``, ``"demo"`` or ``"train"``.
      n: how many records to return at most.
      seed: a non-negative integer.

    Returns:
      Up to ``n`` records ``{"context", "choices", "answer"}``, in draw order.

    Raises:
      ValueError: an unknown task name or split, a negative ``n`` or seed.
    """
    task = _task(task_name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = _rng(task_name, split, seed)
    records: list[dict] = []
    seen: set[str] = set()
    stalled = 0
    for _ in range(200 * n + 10_000):
        if len(records) == n or stalled == _STALL_DRAWS:
            break
        record = task.generate(rng)
        context = record["context"]
        if context in seen or split_of(task_name, context) != split:
            stalled += 1
            continue
        seen.add(context)
        records.append(record)
        stalled = 0
    return records


def format_example(context: str, answer_text: str, delimiter: str = " ") -> str:
    """One example as text: the context, the delimiter, the answer.

    Args:
      context: the record's context (no trailing space).
      answer_text: the continuation, e.g. ``record["choices"][record["answer"]]``.
      delimiter: what separates them; the evaluator uses the same one.

    Returns:
      ``context + delimiter + answer_text``.
    """
    return f"{context}{delimiter}{answer_text}"


def training_documents(
    task_name: str,
    n_documents: int,
    seed: int = 0,
    examples_per_document: int = 8,
    delimiter: str = " ",
    separator: str = "\n",
) -> list[str]:
    """Pretraining documents made of train-split examples only, deterministic from the seed.

    Examples may repeat across and within documents (addition-1d has about 70 train problems).
    No example of the eval or demo split ever appears.

    Args:
      task_name: a key of :data:`SYNTHETIC_TASKS`.
      n_documents: how many documents.
      seed: a non-negative integer.
      examples_per_document: examples in each document.
      delimiter: between an example's context and its answer (see :func:`format_example`).
      separator: between the examples of a document.

    Returns:
      ``n_documents`` strings of ``examples_per_document`` examples joined by ``separator``.

    Raises:
      ValueError: an unknown task name, a negative count or seed.
    """
    task = _task(task_name)
    if n_documents < 0 or examples_per_document < 1:
        raise ValueError(
            "n_documents must be >= 0 and examples_per_document >= 1, "
            f"got {n_documents} and {examples_per_document}"
        )
    rng = _rng(task_name, "documents", seed)
    documents = []
    for _ in range(n_documents):
        examples = []
        while len(examples) < examples_per_document:
            record = task.generate(rng)
            context = record["context"]
            if split_of(task_name, context) == "train":
                examples.append(format_example(context, record["choices"][record["answer"]], delimiter))
        documents.append(separator.join(examples))
    return documents
