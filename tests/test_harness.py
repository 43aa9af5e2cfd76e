"""archzoo runs as lm-eval models: lm-eval's accuracy and exact match against archzoo's own
evaluation of the same records, the three request kinds against scoring and one-by-one
generation, and lm-eval's command line with the model registered. Offline: the tasks are local
JSON-lines files the test writes."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import lm_eval
import numpy as np
import pytest
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model, model_registry
from lm_eval.tasks import TaskManager

import archzoo.harness
from archzoo.analysis.evaluate import EvalOptions, evaluate_model
from archzoo.analysis.scoring import load_trained, rolling_logprob, score, score_texts
from archzoo.cli import main as cli_main
from archzoo.harness import ArchzooLM, main
from archzoo.tasks.synthetic import task_examples
from archzoo.tasks.task import load_task
from tests.analysis.test_evaluate import greedy_alone

EXAMPLES = 12
MAX_NEW = 6  # tokens generated per answer, the same in both harnesses

# lm-eval returns the generated text as the model wrote it (with the space before the answer);
# archzoo compares stripped text, so the generation task strips it with lm-eval's
# remove_whitespace filter (str.strip) before exact_match.
TASK_YAMLS = {
    "archzoo_mc": """
task: archzoo_mc
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list: [{{metric: acc}}]
""",
    "archzoo_gen": """
task: archzoo_gen
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: generate_until
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{choices[answer]}}}}"
generation_kwargs: {{until: ["\\n"], max_gen_toks: {max_new}, do_sample: false}}
filter_list:
  - name: strip
    filter: [{{function: remove_whitespace}}, {{function: take_first}}]
metric_list: [{{metric: exact_match}}]
""",
}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def runs(trained_run_dirs):
    return {family: load_trained(path) for family, path in trained_run_dirs.items()}


def _write_tasks(folder: Path, records: list[dict]) -> Path:
    """One JSON-lines file of records, read by two lm-eval task YAMLs and one archzoo task YAML."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "kv.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    for name, text in TASK_YAMLS.items():
        (folder / f"{name}.yaml").write_text(text.format(data=json.dumps(str(data)), max_new=MAX_NEW))
    archzoo_yaml = f"data: kv.jsonl\nmax_new_tokens: {MAX_NEW}\nmetrics: [accuracy, exact_match]\n"
    (folder / "kv.yaml").write_text(archzoo_yaml)
    return folder


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    return _write_tasks(tmp_path_factory.mktemp("tasks"), task_examples("kv-recall", "eval", EXAMPLES))


def _lm_eval(lm, folder: Path, tasks):
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    return lm_eval.simple_evaluate(
        model=lm, tasks=tasks, task_manager=manager, num_fewshot=0, log_samples=True, bootstrap_iters=0
    )


def _one_by_one(run, context: str, max_new: int) -> str:
    """Greedy text after one prompt, generated alone in its batch."""
    return greedy_alone(run, context, max_new, max(run.lengths.values()))


def _archzoo_eval(run, folder: Path):
    """archzoo's own evaluation of the task in ``folder``: metric values and per-example samples."""
    task = load_task(str(folder / "kv.yaml"))
    opts = EvalOptions(shots=[0], batch_size=4)
    row = max(run.lengths.values())
    records, samples = evaluate_model(run.model, run.tokenizer, [task], opts, start_id=run.start_id, row_len=row)
    return {r["metric"]: r["value"] for r in records}, samples[(task.name, 0)]


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_accuracy_and_exact_match_equal_archzoos_own_evaluation(runs, tmp_path, family):
    run = runs[family]
    # Six training steps teach these models no kv-recall answer. Half the records get the model's
    # own greedy answer as the correct choice (archzoo's generation, which tests/analysis/
    # test_evaluate.py checks against one-by-one decoding), so that exact match is not 0 and each
    # harness's cut and strip has to be right. The encoder-decoder answers only spaces, and
    # lm-eval cannot read an empty choice (its task setup indexes choice[0]): there nothing is
    # planted and exact match is 0 both ways.
    records = task_examples("kv-recall", "eval", EXAMPLES)
    _, first = _archzoo_eval(run, _write_tasks(tmp_path / "plain", records))
    planted = 0
    for r, sample in zip(records[: EXAMPLES // 2], first):
        if sample["generated"]:
            r["choices"][r["answer"]] = sample["generated"]
            assert len(set(r["choices"])) == len(r["choices"])
            planted += 1
    assert planted == EXAMPLES // 2 or family == "encoder_decoder"
    folder = _write_tasks(tmp_path / "planted", records)
    ours, ours_samples = _archzoo_eval(run, folder)
    assert ours["exact_match"] >= planted / EXAMPLES
    results = _lm_eval(ArchzooLM(str(run.run_dir), batch_size=4), folder, ["archzoo_mc", "archzoo_gen"])
    mc = sorted(results["samples"]["archzoo_mc"], key=lambda s: s["doc_id"])
    gen = sorted(results["samples"]["archzoo_gen"], key=lambda s: s["doc_id"])
    assert len(mc) == len(gen) == len(ours_samples) == EXAMPLES
    for theirs, mine in zip(mc, ours_samples):
        assert [a[1] for a in theirs["arguments"]] == [" " + c for c in mine["choices"]]  # the same requests
        lls = [resp[0][0] for resp in theirs["resps"]]
        np.testing.assert_allclose(lls, mine["choice_logprobs_nats"], rtol=1e-5, atol=1e-5)
        assert int(np.argmax(lls)) == mine["chosen"]
    # the text each harness compares with the answer
    assert [s["filtered_resps"][0] for s in gen] == [s["generated"] for s in ours_samples]
    assert results["results"]["archzoo_mc"]["acc,none"] == ours["accuracy"]
    assert results["results"]["archzoo_gen"]["exact_match,strip"] == ours["exact_match"]


def _requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=0) for a in args]


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_loglikelihood_and_rolling_equal_archzoo_scoring(runs, family):
    run = runs[family]
    lm = ArchzooLM(run, batch_size="auto")
    pairs = [("the quick brown", " fox"), ("a lazy", " dog while her"), ("", " sister reads letters")]
    got = lm.loglikelihood(_requests("loglikelihood", pairs))
    want = score_texts(run, pairs, batch_size=lm.batch_size)
    assert got == [(s.logprob_nats, s.greedy) for s in want]
    # a short text is one request with an empty context; a long one is scored in windows
    short = "the fire in winter."
    long = " ".join(["the quick brown fox jumps over a lazy dog"] * 8)
    assert len(run.tokenizer.encode(long)) > max(run.lengths.values())
    rolled = lm.loglikelihood_rolling(_requests("loglikelihood_rolling", [(short,), (long,)]))
    row = max(run.lengths.values())
    [alone] = score(run.model, [([], run.tokenizer.encode(short))], start_id=run.start_id, row_len=row)
    assert rolled[0] == pytest.approx(alone.logprob_nats, abs=1e-5)
    [windows] = rolling_logprob(run, [long])
    assert windows.tokens == len(run.tokenizer.encode(long))
    assert rolled[1] == pytest.approx(float(np.sum(windows.token_logprobs)), abs=1e-5)
    assert rolled[1] < rolled[0] < 0


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_generate_until_groups_and_batches_as_one_by_one_decoding(runs, family):
    run = runs[family]
    lm = ArchzooLM(run, batch_size=2)
    longer = {"until": [], "max_gen_toks": 8, "do_sample": False}
    shorter = {"until": [], "max_gen_toks": 3}
    # kv-recall prompts are longer than a decoder's room for a prompt, so they are cut from the left
    first, second, third = (r["context"] for r in task_examples("kv-recall", "eval", 3))
    args = [(first, longer), (second, shorter), (third, longer)]
    got = lm.generate_until(_requests("generate_until", args))
    assert got == [_one_by_one(run, c, g["max_gen_toks"]) for c, g in args]


def test_sampling_stop_strings_and_seeds(runs):
    run = runs["decoder"]
    lm = ArchzooLM(run, batch_size=4, seed=3)
    context = ["the quick brown"]
    greedy = {"until": [], "max_gen_toks": 12}
    hot = {**greedy, "do_sample": True, "temperature": 5.0}

    def gen(options, model=lm):
        return model.generate_until(_requests("generate_until", [(c, options) for c in context]))[0]

    assert gen({**hot, "top_k": 1}) == gen(greedy)
    # Greedy text of these runs is mostly spaces, so stop strings are tested on a seeded sample:
    # two characters it is sure to emit, the later one listed first.
    text = gen(hot)
    assert text != gen(greedy)  # 12 draws at temperature 5 over 400 tokens are not all greedy
    assert gen(hot, ArchzooLM(run, seed=3)) == text
    firsts = {}
    for at, ch in enumerate(text):
        firsts.setdefault(ch, at)
    stops = sorted((at, ch) for ch, at in firsts.items() if at > 0)
    assert len(stops) >= 2, f"sampled text {text!r} has too few distinct characters to test stop strings"
    (early, a), (_, b) = stops[0], stops[-1]
    cut = gen({**hot, "until": [b, a]})
    assert cut == text[:early] and a not in cut


def test_an_encoder_run_cannot_generate_and_bad_batch_sizes_are_refused(runs):
    from archzoo.models import build

    run = runs["decoder"]
    encoder_cfg = dataclasses.replace(run.model.config, family="encoder")
    encoder_run = dataclasses.replace(run, model=build(encoder_cfg, seed=0))
    message = f"run decoder \\({run.run_dir}\\) is an encoder model and cannot generate"
    with pytest.raises(ValueError, match=message):
        ArchzooLM(encoder_run).generate_until(_requests("generate_until", [("the", {"until": ["\n"]})]))
    assert ArchzooLM(run, batch_size="8").batch_size == 8
    assert ArchzooLM(run, batch_size="auto:4").batch_size == archzoo.harness.DEFAULT_BATCH_SIZE
    for bad in (0, "big", None):
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1 or 'auto'"):
            ArchzooLM(run, batch_size=bad)


def test_registered_once_beside_lm_evals_own_models():
    assert get_model("archzoo") is ArchzooLM
    assert "hf" in model_registry and "vllm" in model_registry  # ours did not hide lm-eval's own models
    archzoo.harness._register()  # a second registration is harmless
    assert get_model("archzoo") is ArchzooLM


def test_without_lm_eval_the_import_error_says_what_to_install(monkeypatch):
    for name in [m for m in sys.modules if m == "lm_eval" or m.startswith("lm_eval.")]:
        monkeypatch.setitem(sys.modules, name, None)
    spec = importlib.util.spec_from_file_location("harness_without_lm_eval", archzoo.harness.__file__)
    with pytest.raises(ImportError, match=r'pip install "archzoo\[lm-eval\]"'):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


@pytest.mark.slow
def test_the_command_line_writes_the_accuracy_of_the_python_api(runs, tasks, tmp_path, capsys):
    run = runs["decoder"]
    out = tmp_path / "out"
    argv = ["--model", "archzoo", "--model_args", f"run_dir={run.run_dir}", "--tasks", "archzoo_mc"]
    argv += ["--include_path", str(tasks), "--output_path", str(out), "--batch_size", "4"]
    before = list(sys.argv)
    assert cli_main(["lm-eval", *argv]) == 0  # archzoo lm-eval ...
    assert sys.argv == before
    [written] = out.rglob("results_*.json")
    acc = json.loads(written.read_text())["results"]["archzoo_mc"]["acc,none"]
    api = _lm_eval(ArchzooLM(run, batch_size=4), tasks, ["archzoo_mc"])
    assert acc == api["results"]["archzoo_mc"]["acc,none"]
    assert "archzoo_mc" in capsys.readouterr().out  # lm-eval's results table
    assert main(["--model", "archzoo", "--no_such_flag"]) == 2
