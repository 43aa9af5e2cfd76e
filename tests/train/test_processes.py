"""Two processes on localhost (CPU, gloo collectives) train one run together: their losses are
those of one process fed the same global batches, their checkpoint reads back in one process,
and after a kill -9 of one of them the same two commands resume the run to the same losses."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from flax import nnx

from archzoo.analysis.evaluate import EvalOptions, evaluate_run
from archzoo.analysis.runs import load_run
from archzoo.distributed import DistributedConfig, DistributedError, initialize
from archzoo.features.run_data import build_run_data
from archzoo.train.checkpoints import read_params
from archzoo.train.config import load_run_configs
from archzoo.train.optimizer import learning_rate
from archzoo.train.step import init_training
from tests.train.test_runs import ROOT, config, metrics

STEPS = 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_pair(path, port: int) -> list[subprocess.Popen]:
    procs = []
    for i in range(2):
        env = {**os.environ, "ARCHZOO_COORDINATOR": f"127.0.0.1:{port}", "ARCHZOO_NUM_PROCESSES": "2", "ARCHZOO_PROCESS_ID": str(i)}
        # one CPU device per process (the mesh spans both), compiled without LLVM's optimisations
        # (half the compile time; the numbers are the reference's within the test's tolerance)
        env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
        cmd = [sys.executable, "-m", "archzoo.cli", "run", str(path), "--no-table", "--no-progress"]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def reference(cfg, steps: int):
    """One process fed the global batches the two make (process 0's rows, then process 1's):
    the losses of each step and the parameters after the last."""
    shards = [
        build_run_data(cfg.data, cfg.objective, cfg.model, cfg.train, accumulation_steps=1, process_index=i, process_count=2)
        for i in range(2)
    ]
    t = init_training(cfg.model, cfg.optimizer, seed=cfg.train.seed)
    params, opt_state, losses = t.params, t.opt_state, []
    for step in range(steps):
        local = [d.pipeline.next_batch() for d in shards]
        batch = {k: np.concatenate([b[k] for b in local], axis=1) for k in local[0]}
        params, opt_state, m = t.train_step(params, t.rest, opt_state, batch, learning_rate(cfg.optimizer, step / cfg.budget.value))
        losses.append(float(m["loss_nats"]))
    return losses, params


@pytest.mark.slow
def test_two_processes_train_as_one_with_the_global_batch_and_resume_after_a_kill_9(tmp_path):
    # task evaluation at the end: process 0 scores a whole copy of the parameters
    # and a heartbeat short enough that process 0 ends by itself soon after its peer's kill
    extra = f"eval: {{tasks: [copy], shots: [1], examples: 3, every: {STEPS}}}\ndistributed: {{heartbeat_s: 10}}"
    path = config(tmp_path, budget=f"{{kind: steps, value: {STEPS}}}", extra=extra)
    cfg = load_run_configs(path)[0]
    expected, expected_params = reference(cfg, STEPS)

    # a pair, one of which is killed as soon as a checkpoint is sealed
    procs = start_pair(path, free_port())
    record = cfg.run_dir / "checkpoints"
    deadline = time.monotonic() + 240
    while not list(record.glob("*.sha256.json")) and time.monotonic() < deadline and procs[1].poll() is None:
        time.sleep(0.02)
    if procs[1].poll() is not None:
        out, err = procs[1].communicate()
        pytest.fail(f"process 1 ended before a checkpoint was sealed: {err[-3000:]}")
    os.kill(procs[1].pid, signal.SIGKILL)
    try:  # the coordination service counts the silent peer dead after heartbeat_s and ends it
        _, err = procs[0].communicate(timeout=60)  # JAX's default heartbeat is 100 s
    except subprocess.TimeoutExpired:
        procs[0].kill()
        procs[1].communicate()
        pytest.fail(f"process 0 still waits for its killed peer 60 s after the kill: {procs[0].communicate()[1][-3000:]}")
    assert procs[0].returncode != 0, err[-3000:]
    procs[1].communicate()
    summary = json.loads((cfg.run_dir / "run.json").read_text()).get("summary")
    assert summary is None, "the pair finished before the kill: nothing to resume"

    # the same two commands resume it to the end
    procs = start_pair(path, free_port())
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    lines = metrics(cfg.run_dir)
    assert [m["step"] for m in lines] == list(range(1, STEPS + 1))  # written once, by process 0
    # float32 sums over a batch split across two processes: equal within rounding
    assert [m["loss_nats"] for m in lines] == pytest.approx(expected, rel=1e-5)

    # the checkpoint the two wrote reads back in this one process
    model = nnx.eval_shape(lambda: init_training(cfg.model, cfg.optimizer, seed=0).model)
    step, params = read_params(cfg.run_dir / "checkpoints", nnx.state(model, nnx.Param))
    assert step == STEPS
    for a, b in zip(nnx.to_flat_state(params), nnx.to_flat_state(expected_params)):
        np.testing.assert_allclose(np.asarray(a[1][...]), np.asarray(b[1][...]), rtol=1e-4, atol=1e-6, err_msg=str(a[0]))

    # its task scores are those of evaluating the checkpoint afterwards in one process
    evals = load_run(cfg.run_dir).evals
    assert {r["step"] for r in evals} == {STEPS}
    again = evaluate_run(cfg.run_dir, ["copy"], EvalOptions(shots=[1]), examples=3)
    assert {(r["metric"], r["value"]) for r in again} == {(r["metric"], r["value"]) for r in evals}


def test_a_coordinator_that_cannot_be_reached_is_an_error_after_the_timeout_not_a_hang():
    cfg = DistributedConfig(coordinator=f"127.0.0.1:{free_port()}", num_processes=2, process_id=1, timeout_s=1)
    t0 = time.monotonic()
    with pytest.raises(DistributedError, match=r"process 1 of 2: the coordinator at 127.0.0.1:\d+ could not be reached within 1 s"):
        initialize(cfg)
    assert time.monotonic() - t0 < 30


def test_distributed_settings_are_checked_at_the_edge(tmp_path, monkeypatch):
    from archzoo.config import ConfigError
    from archzoo.distributed import settings

    with pytest.raises(ConfigError, match=r"distributed.coordinator: expected host:port"):
        DistributedConfig(coordinator="localhost")
    with pytest.raises(ConfigError, match=r"distributed.heartbeat_s.*must be >= 1, got 0"):
        DistributedConfig(heartbeat_s=0)
    monkeypatch.setenv("ARCHZOO_NUM_PROCESSES", "two")
    with pytest.raises(ConfigError, match=r"ARCHZOO_NUM_PROCESSES: expected a non-negative integer, got 'two'"):
        settings(None)
    monkeypatch.setenv("ARCHZOO_NUM_PROCESSES", "2")
    monkeypatch.setenv("ARCHZOO_PROCESS_ID", "1")
    monkeypatch.setenv("ARCHZOO_COORDINATOR", "10.0.0.1:1234")
    assert settings(DistributedConfig(timeout_s=5)) == DistributedConfig("10.0.0.1:1234", 2, 1, 5)


def test_when_process_0_fails_before_training_process_1_stops_naming_its_error(tmp_path):
    """Process 0 refuses the run directory (its config.yaml is broken); process 1, waiting for
    it at the first exchange, stops with process 0's error instead of waiting out the timeout."""
    path = config(tmp_path)
    cfg = load_run_configs(path)[0]
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "config.yaml").write_text("model: [unclosed\n")
    procs = start_pair(path, free_port())
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] != [0, 0]
    assert "config.yaml" in errs[0], errs[0][-2000:]
    last = errs[1].strip().splitlines()[-1]  # one line, no traceback
    assert last.startswith("archzoo run: error: process 1 stops at prepared: process 0 failed: RunDirError: "), errs[1][-2000:]
    assert "config.yaml, line 2" in last
