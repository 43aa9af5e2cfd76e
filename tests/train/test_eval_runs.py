"""Runs that evaluate tasks while they train: records at the checkpoints and the end, equal to
evaluating the saved checkpoint afterwards; a task mixture in the data; bad eval sections."""

from __future__ import annotations

import json

import pytest

from archzoo.analysis.evaluate import EvalOptions, evaluate_run
from archzoo.analysis.runs import load_run
from archzoo.config import ConfigError
from archzoo.train.config import load_run_configs
from archzoo.train.loop import train
from tests.train.test_runs import config, corpus

EVAL = "eval: {tasks: [copy, addition-1d], shots: [0, 1], examples: 3, bootstrap: 20}"


def _mixture(tmp_path) -> str:
    return (
        f"data: {{mixture: [{{source: {corpus(tmp_path)}, weight: 0.8, text_documents: blank_lines}}, "
        f"{{source: 'task:addition-1d', weight: 0.2}}], validation_fraction: 0.1, "
        f"tokenizer: {{vocab_size: 400, cache_dir: {tmp_path / 'tok'}}}}}"
    )


def test_a_run_evaluates_at_checkpoints_and_the_end_as_eval_would_afterwards(tmp_path):
    path = config(tmp_path, budget="{kind: steps, value: 5}", extra=EVAL)
    text = path.read_text().replace(next(line for line in path.read_text().splitlines() if line.startswith("data:")), _mixture(tmp_path))
    path.write_text(text)
    cfg = load_run_configs(path)[0]
    train(cfg)
    evals = load_run(cfg.run_dir).evals
    # checkpoint_every 2: steps 2 and 4, and the end (5)
    assert sorted({r["step"] for r in evals}) == [2, 4, 5]
    assert {(r["task"], r["shots"]) for r in evals} == {(t, k) for t in ("copy", "addition-1d") for k in (0, 1)}
    at_end = {(r["task"], r["shots"], r["metric"]): r["value"] for r in evals if r["step"] == 5}
    again = evaluate_run(cfg.run_dir, ["copy", "addition-1d"], EvalOptions(shots=[0, 1], bootstrap=20), examples=3)
    assert {(r["task"], r["shots"], r["metric"]): r["value"] for r in again} == pytest.approx(at_end, abs=1e-6)
    assert len(load_run(cfg.run_dir).evals) == len(evals)  # the same step again: replaced
    assert (cfg.run_dir / "evals" / "copy-1shot-step2.jsonl").exists()
    # the eval section changes nothing trained: a finished run with another one is not retrained
    metrics_before = (cfg.run_dir / "metrics.jsonl").read_text()
    other = load_run_configs(path, ["eval.examples=2"])[0]
    assert train(other)["steps"] == 5 and (cfg.run_dir / "metrics.jsonl").read_text() == metrics_before


def test_bad_eval_sections_stop_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"eval.tasks: 'copyy' is neither a built-in task; did you mean 'copy'\?"):
        load_run_configs(config(tmp_path, extra="eval: {tasks: [copyy]}"))
    with pytest.raises(ConfigError, match="eval.tasks: must name at least one task"):
        load_run_configs(config(tmp_path, extra="eval: {tasks: []}"))
    task = tmp_path / "t.yaml"
    (tmp_path / "t.jsonl").write_text(json.dumps({"context": "a", "answer": "b"}) + "\n")
    task.write_text("data: t.jsonl\nshots: [2]\n")
    cfg = load_run_configs(config(tmp_path, name="shots", extra=f"eval: {{tasks: [{task}]}}"))[0]
    with pytest.raises(ConfigError, match="task t: 2-shot prompts need 2 demonstrations, but it names no demonstrations file, so it has 0"):
        train(cfg)
    assert not (cfg.run_dir / "config.yaml").exists()
