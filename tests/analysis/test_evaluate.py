"""Task evaluation of trained runs: metrics against a brute-force recomputation from plain
forward passes and one-by-one greedy decoding, evals.jsonl records, the eval and generate
commands and their errors."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from archzoo.analysis.evaluate import EvalOptions, evaluate_model, evaluate_run
from archzoo.analysis.runs import load_run
from archzoo.analysis.scoring import load_trained
from archzoo.cli import main
from archzoo.generation import generate
from archzoo.masks import facts
from archzoo.tasks.task import load_task


@pytest.fixture(scope="module")
def runs(trained_run_dirs, tmp_path_factory):
    """Copies of the shared trained runs (these tests write evals into them)."""
    import shutil

    tmp = tmp_path_factory.mktemp("eval")
    return {family: Path(shutil.copytree(path, tmp / family)) for family, path in trained_run_dirs.items()}


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


ROW = 32


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, *args):
    return nnx.merge(graphdef, state)(*args)


def _padded(row, length=ROW):
    """One row right-padded with segment 0: its tokens and facts."""
    tokens, segments = np.zeros((1, length), np.int32), np.zeros((1, length), np.int32)
    tokens[0, : len(row)], segments[0, : len(row)] = row, 1
    return tokens, segments


def _brute_logprob(run, context: str, continuation: str) -> float:
    """log p(continuation | context) from one plain forward pass of the sequence alone in its
    row, the context cut from the left to fit a row of ROW tokens."""
    ctx, cont = run.tokenizer.encode(context), run.tokenizer.encode(continuation)
    graphdef, state = nnx.split(run.model)
    if run.family == "decoder":
        ctx = ctx[max(len(ctx) + len(cont) - ROW, 0) :]
        row = [run.start_id] + ctx + cont[:-1]
        tokens, segments = _padded(row)
        is_input = np.zeros((1, ROW), bool)
        is_input[0, : len(ctx) + 1] = run.model.config.mask == "prefix"
        logp = _log_softmax(_forward(graphdef, state, tokens, facts(segments, is_input=is_input))[0])[len(ctx) : len(row)]
    else:
        (enc, enc_seg), (dec, dec_seg) = _padded(ctx[-ROW:]), _padded([run.start_id] + cont[:-1])
        logp = _log_softmax(_forward(graphdef, state, enc, dec, facts(enc_seg), facts(dec_seg))[0])[: len(cont)]
    return float(logp[np.arange(len(cont)), cont].sum())


def greedy_alone(run, prompt: str, max_new: int, row: int) -> str:
    """The greedy text after one prompt, generated alone in its batch, eos dropped. The prompt is
    cut to fit a row of ``row`` tokens and padded to that room (test_generate proves padding
    changes nothing), so every prompt shares one compiled shape."""
    ids = run.tokenizer.encode(prompt)
    eos = run.tokenizer.roles["eos"]
    if run.family == "decoder":  # the row holds the prompt and the answer
        room = row - max_new
        out = generate(run.model, [([run.start_id] + ids)[-room:]], max_new_tokens=max_new, eos_id=eos, pad_to=room)
    else:
        encoder = dict(encoder_inputs=[ids[-row:]], decoder_start_id=run.start_id)
        out = generate(run.model, max_new_tokens=max_new, eos_id=eos, pad_to=row, **encoder)
    tokens = np.asarray(out.tokens)[0, : int(out.lengths[0])]
    return run.tokenizer.decode([int(t) for t in tokens if t != eos])


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_metrics_equal_a_brute_force_recomputation(runs, family):
    run = load_trained(runs[family])
    task = load_task("kv-recall", examples=4)
    shots = (0, 2) if family == "decoder" else (2,)
    records, samples = evaluate_model(
        run.model, run.tokenizer, [task], EvalOptions(shots=shots, batch_size=3), start_id=run.start_id, row_len=ROW, step=run.step
    )
    by = {(r["shots"], r["metric"]): r for r in records}
    assert {m for _, m in by} == set(task.metrics) and {k for k, _ in by} == set(shots)
    from archzoo.tasks.task import build_prompt

    max_new = max(len(run.tokenizer.encode(" " + r.answer_text)) for r in task.examples) + 2
    for k in shots:
        acc, logp, exact = [], [], []
        for i, r in enumerate(task.examples):
            prompt = build_prompt(task, i, k)
            lls = [_brute_logprob(run, prompt, " " + c) for c in r.choices]
            np.testing.assert_allclose(samples[(task.name, k)][i]["choice_logprobs_nats"], lls, rtol=1e-4, atol=1e-4)
            acc.append(float(np.argmax(lls) == r.answer_index))
            logp.append(lls[r.answer_index] / len(run.tokenizer.encode(" " + r.answer_text)))
            exact.append(float(greedy_alone(run, prompt, max_new, ROW).split("\n")[0].strip() == r.answer_text))
        assert by[(k, "accuracy")]["value"] == pytest.approx(np.mean(acc))
        assert by[(k, "answer_logprob_per_token")]["value"] == pytest.approx(np.mean(logp), abs=1e-4)
        assert by[(k, "exact_match")]["value"] == pytest.approx(np.mean(exact))
        assert by[(k, "exact_match")]["kind"] == "discontinuous" and by[(k, "brier")]["kind"] == "continuous"
    assert all(r["step"] == 6 and r["scoring"] == "log-likelihood" and r["n"] == 4 for r in records)


def test_eval_writes_evals_jsonl_and_a_rerun_replaces_its_records(runs, capsys):
    run_dir = runs["decoder"]
    assert main(["eval", str(run_dir), "--tasks", "copy,addition-1d", "--examples", "5", "--shots", "0,1", "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out
    assert "exact_match" in printed and "addition-1d" in printed and "± is the bootstrap standard error" in printed
    first = load_run(run_dir).evals
    assert {(r["task"], r["shots"]) for r in first} == {("copy", 0), ("copy", 1), ("addition-1d", 0), ("addition-1d", 1)}
    assert main(["eval", str(run_dir), "--tasks", "copy", "--examples", "5", "--shots", "0", "--bootstrap", "50"]) == 0
    again = load_run(run_dir).evals
    assert len(again) == len(first)  # the same task, shots and step: replaced, not appended
    samples = [json.loads(line) for line in (run_dir / "evals" / "copy-1shot-step6.jsonl").read_text().splitlines()]
    assert len(samples) == 5 and {"prompt", "answer", "generated", "choice_logprobs_nats"} <= set(samples[0])


def test_eval_and_generate_errors(runs, tmp_path, capsys):
    assert main(["eval", str(runs["decoder"]), "--tasks", "copyy"]) == 2
    assert "unknown task 'copyy'; did you mean 'copy'?" in capsys.readouterr().err
    assert main(["eval", str(runs["decoder"]), "--tasks", "copy", "--shots", "0,100", "--examples", "2"]) == 2
    assert "100-shot prompts need 100 demonstrations" in capsys.readouterr().err
    empty = tmp_path / "started"
    empty.mkdir()
    (empty / "config.yaml").write_text((runs["decoder"] / "config.yaml").read_text())
    (empty / "run.json").write_text((runs["decoder"] / "run.json").read_text())
    assert main(["eval", str(empty), "--tasks", "copy"]) == 2
    assert "no finished checkpoint to read" in capsys.readouterr().err
    assert main(["generate", str(empty)]) == 2
    assert "no finished checkpoint" in capsys.readouterr().err
    assert main(["generate", str(runs["decoder"]), "--step", "5"]) == 2
    assert "no finished checkpoint of step 5 (steps saved: 4, 6)" in capsys.readouterr().err


def test_generate_prints_the_greedy_continuation(runs, capsys):
    run = load_trained(runs["decoder"])
    assert main(["generate", str(runs["decoder"]), "--prompt", "the quick", "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr().out.rstrip("\n")
    ids = run.tokenizer.encode("the quick")
    out = generate(run.model, [[run.start_id] + ids], max_new_tokens=6, eos_id=run.tokenizer.roles["eos"])
    expected = run.tokenizer.decode([int(t) for t in np.asarray(out.tokens)[0, : int(out.lengths[0])] if t != run.tokenizer.roles["eos"]])
    assert printed == "the quick" + expected
    assert main(["generate", str(runs["decoder"]), "--prompt", "the", "--temperature", "0.9", "--top-p", "0.9", "--samples", "2"]) == 0
    printed = capsys.readouterr().out
    # two samples, seeded apart (a sample may itself hold line breaks)
    assert printed.startswith("[1.1] the") and printed.count("\n[1.2] the") == 1
    first, second = printed.split("\n[1.2] ")
    assert first[len("[1.1] ") :] != second.rstrip("\n")


def test_evaluate_run_reads_a_chosen_checkpoint(runs):
    records = evaluate_run(runs["encoder_decoder"], ["modular-7"], EvalOptions(shots=[0], bootstrap=10), step=4, examples=4)
    assert {r["step"] for r in records} == {4} and {r["family"] for r in records} == {"encoder_decoder"}


def test_an_encoder_is_scored_by_pseudo_log_likelihood_and_says_so(tmp_path):
    from archzoo.data.bpe import build_tokenizer
    from archzoo.data.config import TokenizerConfig
    from archzoo.models import build
    from archzoo.tasks.synthetic import training_documents

    tokenizer = build_tokenizer(TokenizerConfig(vocab_size=400, cache_dir=str(tmp_path)), training_documents("copy", 50))
    model = build(family="encoder", vocab_size=400, d_model=32, num_layers=2, attention={"num_heads": 4}, mlp={"d_ff": 64}, seed=2)
    task = load_task("copy", examples=3)
    records, samples = evaluate_model(model, tokenizer, [task], EvalOptions(shots=[0], bootstrap=10), start_id=0, row_len=32)
    assert {r["scoring"] for r in records} == {"pseudo-log-likelihood"}
    # an encoder cannot generate: the likelihood metrics only
    assert {r["metric"] for r in records} == {"accuracy", "answer_logprob_per_token", "brier"}
    mask = tokenizer.roles["mask"]
    for i, r in enumerate(task.examples):
        ctx = tokenizer.encode(r.context)
        lls = []
        for choice in r.choices:
            cont = tokenizer.encode(" " + choice)
            total = 0.0
            for j in range(len(cont)):  # each continuation token masked in turn
                row = ctx + cont
                row[len(ctx) + j] = mask
                tokens, segments = _padded(row)
                total += _log_softmax(_forward(*nnx.split(model), tokens, facts(segments))[0])[len(ctx) + j, cont[j]]
            lls.append(total)
        np.testing.assert_allclose(samples[("copy", 0)][i]["choice_logprobs_nats"], lls, rtol=1e-4, atol=1e-4)
