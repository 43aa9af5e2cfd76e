"""`archzoo sweep`: plans, trains each run once in its own process, skips finished runs, resumes
interrupted ones, records failures and carries on, writes the sweep table; two sweeps on one
directory share the work; the commands it prints train the runs; submitit's local executor.
Runs are tiny (a few steps on a small corpus the test writes)."""

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archzoo.analysis.runs import load_run
from archzoo.cli import main
from archzoo.config import ConfigError
from archzoo.train.config import load_experiment
from archzoo.train.sweep import _cpu_shares, estimate_run, plan_sweep
from tests.train.test_runs import corpus

ROOT = Path(__file__).resolve().parents[2]


def experiment(tmp_path: Path, *, steps=3, lrs="[1.0e-3, 2.0e-3]", name="exp", out="sweep", extra="") -> Path:
    text = f"""
out_dir: {tmp_path / out}
model: {{vocab_size: 400, d_model: 32, num_layers: 1, attention: {{num_heads: 2}}, mlp: {{d_ff: 64}}, position: {{max_len: 64}}}}
data: {{source: {corpus(tmp_path)}, text_documents: blank_lines, validation_fraction: 0.1, tokenizer: {{vocab_size: 400, cache_dir: {tmp_path / 'tok'}}}}}
objective: {{name: prefix_lm}}
budget: {{kind: steps, value: {steps}}}
train: {{batch_size: 4, seq_len: 32, eval_every: 2, eval_examples: 8, checkpoint_every: 2, progress: false}}
axes:
  - optimizer.lr: {lrs}
{extra}
"""
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def sweep(*args, check=True, **kwargs) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [sys.executable, "-m", "archzoo.cli", "sweep", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, **kwargs,
    )
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def steps_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_sweep_trains_every_run_writes_the_table_and_a_rerun_trains_nothing(tmp_path):
    exp = experiment(tmp_path)
    sweep(exp, "--no-estimate")
    names = [c.name for c in load_experiment(exp).runs]
    assert names == ["lr0.001", "lr0.002"]
    records = [load_run(tmp_path / "sweep" / n) for n in names]
    assert all(r.summary["stopped_by"] == "budget" and r.summary["steps"] == 3 for r in records)
    assert [steps_logged(r.run_dir) for r in records] == [[1, 2, 3]] * 2
    # the table: one row per run, the same numbers as the run directories
    with open(tmp_path / "sweep" / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["run"] for row in rows] == names
    assert [row["axis:optimizer.lr"] for row in rows] == names
    for row, r in zip(rows, records):
        assert row["status"] == "finished"
        assert float(row["val_loss_nats"]) == r.summary["val_loss_nats"]
        assert int(row["non_embedding_params"]) == r.facts["non_embedding_params"]
    jsonl = [json.loads(line) for line in (tmp_path / "sweep" / "sweep.jsonl").read_text().splitlines()]
    assert [j["val_loss_nats"] for j in jsonl] == [r.summary["val_loss_nats"] for r in records]
    assert "| lr0.002 " in (tmp_path / "sweep" / "sweep.md").read_text()
    manifest = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert manifest["experiment_name"] == "exp" and manifest["runs"] == names

    before = {n: (tmp_path / "sweep" / n / "run.json").read_text() for n in names}
    again = sweep(exp, "--no-estimate")
    assert "0 trained, 2 already done" in again.stdout
    assert {n: (tmp_path / "sweep" / n / "run.json").read_text() for n in names} == before


@pytest.mark.slow
def test_a_failing_run_records_its_error_and_the_others_carry_on(tmp_path):
    # lr 1e30: Adam's first update blows the weights up, the loss is not finite at step 2
    exp = experiment(tmp_path, lrs="[1.0e-3, 1.0e+30]")
    p = sweep(exp, "--no-estimate", check=False)
    assert p.returncode == 1
    bad, good = tmp_path / "sweep" / "lr1e+30", tmp_path / "sweep" / "lr0.001"
    assert load_run(good).summary["stopped_by"] == "budget"
    error = json.loads((bad / "error.json").read_text())
    assert error["type"] == "TrainingError" and "at step" in error["message"]
    assert "Traceback (most recent call last)" in (bad / "error.txt").read_text()
    assert "lr1e+30 failed" in p.stderr and str(bad / "error.txt") in p.stderr
    with open(tmp_path / "sweep" / "sweep.csv") as f:
        rows = {row["run"]: row for row in csv.DictReader(f)}
    assert rows["lr1e+30"]["status"] == "failed" and rows["lr1e+30"]["error"] == error["message"]
    assert rows["lr0.001"]["status"] == "finished" and rows["lr0.001"]["error"] == ""


def test_the_estimate_counts_the_steps_a_token_budget_takes(tmp_path):
    exp = experiment(tmp_path, extra="")
    text = exp.read_text().replace("{kind: steps, value: 3}", "{kind: target_tokens, value: 500}")
    exp.write_text(text)
    cfg = load_experiment(exp).runs[0]
    estimate = estimate_run(cfg)
    main(["run", str(exp), "--run", cfg.name])
    assert estimate.steps == load_run(cfg.run_dir).summary["steps"]
    assert estimate.step_seconds > 0
    # the run trims its last batch to the budget; the estimate counts that batch whole
    assert estimate.flops >= load_run(cfg.run_dir).summary["flops"]
    extrapolated = estimate_run(cfg, counted_batches=3)
    assert extrapolated.steps == pytest.approx(estimate.steps, rel=0.5)


@pytest.mark.slow
def test_two_sweeps_on_one_directory_train_each_run_once(tmp_path):
    exp = experiment(tmp_path, steps=6)
    command = [sys.executable, "-m", "archzoo.cli", "sweep", str(exp), "--no-estimate", "--no-progress"]
    procs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    for name in ("lr0.001", "lr0.002"):
        run_dir = tmp_path / "sweep" / name
        assert steps_logged(run_dir) == [1, 2, 3, 4, 5, 6]  # a second trainer would append or rewrite
        assert load_run(run_dir).summary["steps"] == 6
    # between them every run was trained once: a sweep that found a run held or done skips it
    trained = sum(int(o[0].split(" trained")[0].rsplit(": ", 1)[1]) for o in outs)
    assert trained >= 2


def test_printed_commands_train_the_runs_still_to_train(tmp_path):
    exp = experiment(tmp_path)
    p = sweep(exp, "train.batch_size=2", "--print-commands")
    lines = p.stdout.strip().splitlines()
    assert lines == [shlex.join(["archzoo", "run", str(exp), "train.batch_size=2", "--run", n]) for n in ("lr0.001", "lr0.002")]
    args = shlex.split(lines[1])[1:]
    assert main(args) == 0
    record = load_run(tmp_path / "sweep" / "lr0.002")
    assert record.summary["stopped_by"] == "budget" and record.config["train"]["batch_size"] == 2
    assert sweep(exp, "train.batch_size=2", "--print-commands").stdout.strip().splitlines() == lines[:1]


@pytest.mark.slow
def test_submitit_launcher_trains_the_runs_with_its_local_executor(tmp_path):
    pytest.importorskip("submitit")
    exp = experiment(tmp_path)
    p = sweep(exp, "--no-estimate", "--no-progress", "--launcher", "submitit", "--launcher-arg", "cluster=local", "--launcher-arg", "timeout_min=10")
    assert "2 trained" in p.stdout
    for name in ("lr0.001", "lr0.002"):
        assert load_run(tmp_path / "sweep" / name).summary["steps"] == 3
    assert list((tmp_path / "sweep" / "submitit").iterdir())  # submitit's own job folders


@pytest.mark.slow
def test_kill_9_of_the_sweep_then_the_same_command_finishes_it_without_retraining(tmp_path):
    exp = experiment(tmp_path, steps=40)
    first, second = tmp_path / "sweep" / "lr0.001", tmp_path / "sweep" / "lr0.002"
    proc = subprocess.Popen(
        [sys.executable, "-m", "archzoo.cli", "sweep", str(exp), "--no-estimate", "--no-progress"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        done = (first / "run.json").exists() and load_run(first).finished
        if done and (second / "metrics.jsonl").exists() and len(steps_logged(second)) >= 5:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the sweep did not reach its second run in time")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = (first / "metrics.jsonl").read_text(), (first / "run.json").read_text()
    sweep(exp, "--no-estimate", "--no-progress")
    assert ((first / "metrics.jsonl").read_text(), (first / "run.json").read_text()) == finished
    assert steps_logged(second) == list(range(1, 41))
    assert load_run(second).summary["stopped_by"] == "budget"


def test_a_sweep_directory_holding_another_experiments_runs_is_refused(tmp_path):
    a = experiment(tmp_path, name="a")
    b = experiment(tmp_path, name="b", lrs="[5.0e-3]")
    main(["run", str(b)])
    with pytest.raises(ConfigError, match=r"does not plan: lr0.005.*another experiment"):
        plan_sweep(load_experiment(a))
    (tmp_path / "sweep" / "lr0.005").rename(tmp_path / "elsewhere")
    (tmp_path / "sweep" / "sweep.json").write_text(json.dumps({"experiment": "b.yaml", "experiment_name": "b", "axes": {}}))
    with pytest.raises(ConfigError, match=r"holds the sweep of experiment 'b.yaml'"):
        plan_sweep(load_experiment(a))


def test_a_run_of_another_config_is_refused_unless_overwrite(tmp_path):
    exp = experiment(tmp_path, lrs="[1.0e-3]")
    main(["run", str(exp)])
    changed = load_experiment(exp, ["train.batch_size=2"])
    with pytest.raises(ConfigError, match=r"runs lr0.001 hold another config.*--overwrite"):
        plan_sweep(changed)
    assert [r.status for r in plan_sweep(changed, overwrite=True)] == ["new"]
    assert [r.status for r in plan_sweep(load_experiment(exp))] == ["done"]


def test_an_unknown_run_name_gets_a_suggestion(tmp_path, capsys):
    exp = experiment(tmp_path)
    assert main(["run", str(exp), "--run", "lr0.0001"]) == 2
    err = capsys.readouterr().err
    assert "--run 'lr0.0001' is not a run of it; did you mean 'lr0.001'?" in err and "lr0.002" in err


def test_jobs_get_disjoint_shares_of_the_cores():
    cores = os.sched_getaffinity(0)
    for jobs in (1, 2, len(cores)):
        shares = _cpu_shares(jobs)
        assert len(shares) == jobs
        assert all(s and s <= cores for s in shares)
        assert all(len(s) == max(len(cores) // jobs, 1) for s in shares)
        if jobs <= len(cores):
            assert len(set().union(*shares)) == sum(len(s) for s in shares)  # disjoint
