"""Task files, prompts and metrics: the formats read back, bad input named by file and line,
k-shot prompts built deterministically, metrics against brute force."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from archzoo.tasks.metrics import bootstrap_stderr, brier_score, edit_distance
from archzoo.tasks.task import TaskError, build_prompt, load_task, read_records


def _write_task(tmp_path, lines, demos=None, extra=""):
    data = tmp_path / "t.jsonl"
    data.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    demo_key = ""
    if demos is not None:
        (tmp_path / "d.jsonl").write_text("".join(json.dumps(d) + "\n" for d in demos))
        demo_key = "demonstrations: d.jsonl\n"
    path = tmp_path / "arith.yaml"
    path.write_text(f"data: t.jsonl\n{demo_key}template: 'Q: {{context}}'\ndelimiter: ' A:'\nseparator: \"\\n\"\n{extra}")
    return path


MC = {"context": "2+2=", "choices": ["4", "5", "3"], "answer": 0}
FREE = {"prompt": "3+4=", "answer": 7}


def test_a_task_file_reads_both_kinds_of_example(tmp_path):
    task = load_task(str(_write_task(tmp_path, [MC, FREE])))
    assert task.name == "arith" and len(task.examples) == 2
    mc, free = task.examples
    assert mc.choices == ("4", "5", "3") and mc.answer_text == "4" and mc.answer_index == 0
    assert free.choices is None and free.answer_text == "7" and free.context == "3+4="
    assert not task.multiple_choice
    assert task.metrics == ["exact_match", "answer_logprob_per_token", "token_edit_distance"]
    only_mc = load_task(str(_write_task(tmp_path, [MC, MC], extra="numeric: true\n")))
    assert set(only_mc.metrics) == {"exact_match", "accuracy", "answer_logprob_per_token", "brier", "token_edit_distance", "digit_edit_distance"}


@pytest.mark.parametrize(
    "line, message",
    [
        ({"choices": ["a", "b"], "answer": 0}, r"t.jsonl, line 2: field 'context' \(or 'prompt'\) is missing"),
        ({"context": "x"}, r"t.jsonl, line 2: field 'answer' is missing"),
        ({"context": "x", "choices": ["a", "b"], "answer": 2}, r"t.jsonl, line 2: field 'answer' is 2, out of range for 2 choices \(0..1\)"),
        ({"context": "x", "choices": ["a", "b"], "answer": "a"}, r"line 2: field 'answer' must be the index of the correct choice"),
        ({"context": "x", "choices": "ab", "answer": 0}, r"line 2: field 'choices' must be a list of at least 2 strings"),
        ('{"context": "x", "answer": ', r"t.jsonl, line 2: not valid JSON"),
        ("[1, 2]", r"t.jsonl, line 2: an example must be a JSON object"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line(tmp_path, line, message):
    with pytest.raises(TaskError, match=message):
        load_task(str(_write_task(tmp_path, [MC, line])))


def test_bad_task_yaml_and_names(tmp_path):
    with pytest.raises(TaskError, match=r"unknown task 'adition-2d'; did you mean 'addition-2d'\?"):
        load_task("adition-2d")
    with pytest.raises(TaskError, match="task file not found"):
        load_task(str(tmp_path / "missing.yaml"))
    with pytest.raises(Exception, match=r"arith.yaml, line 5: unknown key 'metric' in TaskConfig; did you mean 'metrics'"):
        load_task(str(_write_task(tmp_path, [MC], extra="metric: [accuracy]\n")))
    with pytest.raises(Exception, match=r"unknown metric 'acuracy'; did you mean 'accuracy'"):
        load_task(str(_write_task(tmp_path, [MC], extra="metrics: [acuracy]\n")))
    with pytest.raises(TaskError, match="metric 'brier' needs 'choices' in every example"):
        load_task(str(_write_task(tmp_path, [MC, FREE], extra="metrics: [brier]\n")))
    (tmp_path / "t.jsonl").write_text("\n")
    with pytest.raises(TaskError, match="t.jsonl: holds no example"):
        read_records(tmp_path / "t.jsonl")


def test_k_shot_prompts_draw_distinct_demonstrations_deterministically(tmp_path):
    demos = [{"context": f"{i}+1=", "answer": str(i + 1)} for i in range(6)]
    task = load_task(str(_write_task(tmp_path, [MC, FREE], demos)))
    assert build_prompt(task, 0, 0) == "Q: 2+2="
    prompt = build_prompt(task, 1, 3, seed=5)
    lines = prompt.split("\n")
    assert len(lines) == 4 and lines[-1] == "Q: 3+4="
    shown = [line for line in lines[:3]]
    assert len(set(shown)) == 3 and all(s in {f"Q: {i}+1= A:{i + 1}" for i in range(6)} for s in shown)
    assert build_prompt(task, 1, 3, seed=5) == prompt
    assert len({build_prompt(task, 1, 3, seed=s) for s in range(8)}) > 1
    with pytest.raises(TaskError, match="task arith: 7-shot prompts need 7 demonstrations, but d.jsonl holds 6"):
        build_prompt(task, 0, 7)


def test_builtin_tasks_carry_their_demonstrations():
    task = load_task("addition-3d", examples=30)
    assert len(task.examples) == 30 and len(task.demonstrations) == 64 and task.config.numeric
    assert {r.context for r in task.examples}.isdisjoint(r.context for r in task.demonstrations)
    assert "digit_edit_distance" in task.metrics and task.source == "builtin"
    assert load_task("copy").metrics.count("digit_edit_distance") == 0


def _levenshtein_brute(a, b):
    """The edit distance by breadth-first search over single edits (tiny alphabets only)."""
    alphabet = sorted(set(a) | set(b))
    frontier, seen, d = {tuple(a)}, {tuple(a)}, 0
    while tuple(b) not in frontier:
        nxt = set()
        for s in frontier:
            for i in range(len(s) + 1):
                for c in alphabet:
                    nxt.add(s[:i] + (c,) + s[i:])
                    if i < len(s):
                        nxt.add(s[:i] + (c,) + s[i + 1 :])
                if i < len(s):
                    nxt.add(s[:i] + s[i + 1 :])
        frontier = nxt - seen
        seen |= frontier
        d += 1
    return d


def test_edit_distance_against_search():
    for a, b in itertools.product(["", "1", "12", "121", "2211"], repeat=2):
        assert edit_distance(a, b) == _levenshtein_brute(a, b), (a, b)
    assert edit_distance([5, 6, 7], [5, 7]) == 1


def test_brier_and_bootstrap():
    assert brier_score([0.0, -1e9], 0) == pytest.approx(0.0)
    assert brier_score([-1e9, 0.0], 0) == pytest.approx(2.0)
    p = np.exp([-1.0, -2.0, -0.5]) / np.exp([-1.0, -2.0, -0.5]).sum()
    assert brier_score([-1.0, -2.0, -0.5], 1) == pytest.approx((p[0]) ** 2 + (p[1] - 1) ** 2 + p[2] ** 2)
    x = np.random.default_rng(0).integers(0, 2, 400).astype(float)
    # the bootstrap standard error of a mean approaches the analytic one, sd / sqrt(n)
    assert bootstrap_stderr(x, 4000) == pytest.approx(x.std(ddof=1) / np.sqrt(x.size), rel=0.08)
    assert bootstrap_stderr([1.0]) == 0.0
