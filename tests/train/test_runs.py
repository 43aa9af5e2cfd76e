"""Whole runs: determinism, exact budgets, resume after SIGKILL, SIGTERM, NaN, run-directory
and corpus errors. Runs are tiny (a few steps on a small corpus the test writes)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archzoo.cli import main
from archzoo.train.config import load_run_configs
from archzoo.train.loop import TrainingError, train

ROOT = Path(__file__).resolve().parents[2]
WORDS = "the quick brown fox jumps over a lazy dog while her sister reads letters by the fire in winter".split()


def corpus(tmp_path: Path) -> Path:
    import random

    rng = random.Random(0)
    paras = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 80))) + "." for _ in range(60)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(paras) + "\n")
    return path


def config(tmp_path: Path, name="r", family="decoder", budget="{kind: steps, value: 6}", extra="") -> Path:
    text = f"""
name: {name}
out_dir: {tmp_path / 'runs'}
model: {{family: {family}, vocab_size: 400, d_model: 32, num_layers: 2, attention: {{num_heads: 4}}, mlp: {{d_ff: 64}}, position: {{max_len: 64}}}}
data: {{source: {corpus(tmp_path)}, text_documents: blank_lines, validation_fraction: 0.1, tokenizer: {{vocab_size: 400, cache_dir: {tmp_path / 'tok'}}}}}
objective: {{name: prefix_lm}}
budget: {budget}
train: {{batch_size: 4, seq_len: 32, eval_every: 3, eval_examples: 8, checkpoint_every: 2, progress: false}}
{extra}
"""
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def metrics(run_dir: Path, drop=("tokens_per_s",)) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]


def test_same_seed_gives_bitwise_identical_metrics_and_a_run_directory(tmp_path):
    cfg = load_run_configs(config(tmp_path))[0]
    train(cfg)
    first = metrics(cfg.run_dir)
    facts = json.loads((cfg.run_dir / "run.json").read_text())["facts"]
    assert {"params", "non_embedding_params", "active_params", "flops_per_token", "family", "objective"} <= set(facts)
    assert (cfg.run_dir / "config.yaml").exists() and list((cfg.run_dir / "tensorboard").iterdir())
    assert sorted(int(p.name) for p in (cfg.run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [4, 6]
    other = load_run_configs(config(tmp_path, name="r2"))[0]
    train(other)
    assert [m["step"] for m in first] == list(range(1, 7))
    assert first == metrics(other.run_dir)
    assert "val_loss_nats" in first[2] and "val_bits_per_byte" in first[-1]


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_target_token_budget_ends_exactly(tmp_path, family):
    cfg = load_run_configs(config(tmp_path, family=family, budget="{kind: target_tokens, value: 1234}"))[0]
    summary = train(cfg)
    assert summary["target_tokens"] == 1234 and summary["budget"] == {"kind": "target_tokens", "value": 1234}
    assert metrics(cfg.run_dir)[-1]["target_tokens"] == 1234


@pytest.mark.slow
def test_flops_budget_stops_at_the_first_step_past_it(tmp_path):
    cfg = load_run_configs(config(tmp_path, budget="{kind: flops, value: 2.0e9}"))[0]
    summary = train(cfg)
    rows = metrics(cfg.run_dir)
    assert rows[-1]["flops"] >= 2.0e9 > rows[-2]["flops"] and summary["stopped_by"] == "budget"


def _run_cli(args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "archzoo.cli", "run", *args], cwd=ROOT, env=env, **kw)


@pytest.mark.slow
def test_sigkill_then_resume_ends_bitwise_equal(tmp_path):
    budget = "{kind: steps, value: 30}"
    reference = load_run_configs(config(tmp_path, name="ref", budget=budget))[0]
    train(reference)
    path = config(tmp_path, name="killed", budget=budget)
    proc = _run_cli([str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "runs" / "killed"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once a checkpoint exists and training is under way
        if (run_dir / "metrics.jsonl").exists() and len((run_dir / "metrics.jsonl").read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len((run_dir / "metrics.jsonl").read_text().splitlines())
    assert 0 < done < 30, "the kill must land mid-run"
    assert main(["run", str(path)]) == 0
    assert metrics(run_dir) == metrics(reference.run_dir)


@pytest.mark.slow
def test_sigterm_saves_at_the_step_under_way_exits_143_and_resumes_to_the_uninterrupted_run(tmp_path):
    budget = "{kind: steps, value: 40}"
    reference = load_run_configs(config(tmp_path, name="ref", budget=budget))[0]
    train(reference)
    path = config(tmp_path, name="term", budget=budget)
    proc = _run_cli([str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run_dir = tmp_path / "runs" / "term"
    deadline = time.time() + 120
    while time.time() < deadline and not ((run_dir / "metrics.jsonl").exists() and (run_dir / "metrics.jsonl").read_text().count("\n") >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    summary = json.loads((run_dir / "run.json").read_text())["summary"]
    assert summary["stopped_by"] == "sigterm" and summary["steps"] < 40, "the signal must land mid-run"
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == summary["steps"] == summary["val_step"]
    # the stop wrote no line an uninterrupted run would not write, so the resumed run ends equal
    assert main(["run", str(path)]) == 0
    assert metrics(run_dir) == metrics(reference.run_dir)


def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = load_run_configs(config(tmp_path, extra="optimizer: {lr: 1.0e+30, warmup_fraction: 0.0, clip_norm: null}", budget="{kind: steps, value: 50}"))[0]
    with pytest.raises(TrainingError, match=r"the loss is (nan|inf) at step (\d+)") as e:
        train(cfg)
    assert "run the same command to resume" in str(e.value) or "no checkpoint was saved" in str(e.value)
    for p in (cfg.run_dir / "checkpoints").iterdir():
        if p.name.isdigit():
            assert int(p.name) < int(str(e.value).split("at step ")[1].split(";")[0])


def test_a_run_directory_with_another_config_is_refused(tmp_path, capsys):
    path = config(tmp_path, budget="{kind: steps, value: 2}")
    assert main(["run", str(path)]) == 0
    assert main(["run", str(path), "train.batch_size=2"]) == 1
    err = capsys.readouterr().err
    assert "holds a run with a different config" in err and "train.batch_size" in err and "--overwrite" in err
    assert main(["run", str(path), "train.batch_size=2", "--overwrite"]) == 0


def test_missing_and_empty_corpus_name_the_path(tmp_path, capsys):
    path = config(tmp_path)
    text = path.read_text()
    path.write_text(text.replace(str(tmp_path / "corpus.txt"), str(tmp_path / "nowhere.txt")))
    assert main(["run", str(path)]) == 2
    assert str(tmp_path / "nowhere.txt") in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("")
    path.write_text(text.replace(str(tmp_path / "corpus.txt"), str(tmp_path / "empty.txt")))
    assert main(["run", str(path), "--overwrite"]) == 2
    assert str(tmp_path / "empty.txt") in capsys.readouterr().err


def test_unknown_key_in_a_run_config_names_file_line_and_suggestion(tmp_path, capsys):
    path = config(tmp_path, extra="optimiser: {lr: 0.1}")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}, line 9" in err and "did you mean 'optimizer'" in err


def test_rerunning_a_finished_run_keeps_its_validation_numbers(tmp_path):
    path = config(tmp_path, budget="{kind: steps, value: 3}")
    cfg = load_run_configs(path)[0]
    first = train(cfg)
    again = train(cfg)
    assert again["steps"] == 3 and again["val_loss_nats"] == first["val_loss_nats"]
    assert len(metrics(cfg.run_dir)) == 3


def test_budget_and_row_checks_name_the_key(tmp_path):
    from archzoo.config import ConfigError

    with pytest.raises(ConfigError, match="budget.value: a target_tokens budget counts whole target tokens"):
        load_run_configs(config(tmp_path, budget="{kind: target_tokens, value: 300.5}"))
    with pytest.raises(ConfigError, match=r"train.seq_len: rows of 32 tokens need 32 learned positions but model.position.max_len=16"):
        load_run_configs(config(tmp_path), ["model.position.max_len=16"])


def test_no_validation_split_reports_no_validation_loss(tmp_path):
    cfg = load_run_configs(config(tmp_path, budget="{kind: steps, value: 2}"), ["data.validation_fraction=0.0"])[0]
    summary = train(cfg)
    assert "val_loss_nats" not in summary and all("val_loss_nats" not in m for m in metrics(cfg.run_dir))


def test_the_run_directory_keeps_a_loadable_copy_of_the_tokenizer(tmp_path):
    from archzoo.data.tokenizer import open_tokenizer

    cfg = load_run_configs(config(tmp_path, budget="{kind: steps, value: 1}"))[0]
    train(cfg)
    copy = open_tokenizer(cfg.run_dir / "tokenizer.json")
    text = "the quick brown fox"
    from archzoo.data.bpe import build_tokenizer
    from archzoo.data.splits import load_splits

    original = build_tokenizer(cfg.data.tokenizer, load_splits(cfg.data).train)
    assert copy.encode(text) == original.encode(text) and copy.vocab_size == original.vocab_size


def test_a_longer_run_compiles_nothing_more(tmp_path):
    """After its first step the loop reuses what it compiled: a run of 7 steps traces and
    compiles as many computations as a run of 3 (a per-step retrace, a step whose inputs change
    shape, dtype or sharding, or a per-step eager op of a new shape would add to the longer
    run's count). A first run fills the caches of eager operations both then share."""
    import jax

    counts = {}
    events = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration")

    def count(event, *args, **kwargs):
        if event in events:
            counts[event] = counts.get(event, 0) + 1

    train_section = "train: {batch_size: 4, seq_len: 32, eval_every: 100, eval_examples: 8, checkpoint_every: 100, progress: false}"
    seen = []
    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        for name, steps in (("warm", 3), ("short", 3), ("long", 7)):
            path = config(tmp_path, name=name, budget=f"{{kind: steps, value: {steps}}}")
            text = path.read_text()
            path.write_text(text[: text.index("train: {")] + train_section + "\n")
            counts.clear()
            train(load_run_configs(path)[0])
            seen.append(dict(counts))
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    # (a step read back from the persistent compilation cache is traced, not compiled)
    assert seen[1] == seen[2] and seen[1].get(events[0], 0) > 0, seen
