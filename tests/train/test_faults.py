"""The run command under faults: SIGTERM in an experiment, two processes on one run directory,
unwritable and broken run directories, --overwrite next to the user's files, TensorBoard after a
SIGKILL resume."""

import builtins
import errno
import io
import json
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from archzoo.cli import main
from tests.train.test_runs import _run_cli, config, metrics


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {path} had {n} lines")
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {n} lines in {timeout} s")


def _checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


# -- SIGTERM in an experiment -------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_stops_the_whole_experiment_and_the_table_shows_the_stop_step(tmp_path):
    runs = "runs: [{name: a}, {name: b, budget: {kind: steps, value: 4}}]"
    path = config(tmp_path, name="exp", budget="{kind: steps, value: 100000}", extra=runs)
    proc = _run_cli([str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_a, run_b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    _wait_for_lines(run_a / "metrics.jsonl", 4, proc)
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 143, err
    assert not (run_b / "run.json").exists(), "the next run must not start after SIGTERM"
    summary = json.loads((run_a / "run.json").read_text())["summary"]
    assert summary["stopped_by"] == "sigterm" and _checkpoint_steps(run_a)[-1] == summary["steps"]
    # validation at the step it stopped at, not the last scheduled evaluation before it
    assert summary["val_step"] == summary["steps"]
    scheduled = [r["val_loss_nats"] for r in metrics(run_a) if "val_loss_nats" in r]  # eval_every: 3
    if scheduled and summary["steps"] % 3:  # a stale summary would repeat the last scheduled value
        assert summary["val_loss_nats"] != scheduled[-1]
    row = next(line for line in out.splitlines() if line.startswith("| a "))
    assert f"interrupted at step {summary['steps']}" in row and f"{summary['val_loss_nats']:.4f}" in row
    assert "SIGTERM" in err and "resume" in err


# -- one process per run directory -------------------------------------------------------------


@pytest.mark.slow
def test_a_second_process_on_a_run_directory_is_refused_naming_the_holder(tmp_path):
    path = config(tmp_path, name="busy", budget="{kind: steps, value: 100000}")
    run_dir = tmp_path / "runs" / "busy"
    first = _run_cli([str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = None
    try:
        _wait_for_lines(run_dir / "metrics.jsonl", 2, first)
        second = _run_cli([str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _, err = second.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("the second process trained on a run directory in use")
        assert second.returncode != 0
        assert str(run_dir) in err and f"pid {first.pid}" in err and len(err.strip().splitlines()) == 1, err
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=120)
    steps = [m["step"] for m in metrics(run_dir)]
    assert steps == list(range(1, len(steps) + 1))


# -- unwritable and broken run directories ------------------------------------------------------


@pytest.fixture
def read_only(monkeypatch):
    """Makes a directory read-only. A normal user gets chmod 0o555. Root passes over permission
    bits, so for root the calls that write under the directory (os.mkdir, os.open and open with
    a writing mode) are monkeypatched to fail with EACCES, as the kernel would for anyone else."""
    chmodded = []

    def make(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o555)
            chmodded.append(path)
            return
        root = path.resolve()

        def inside(p) -> bool:
            return isinstance(p, (str, os.PathLike)) and Path(os.fsdecode(p)).resolve().is_relative_to(root)

        def refuse(p):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(p))

        real_mkdir, real_os_open, real_open = os.mkdir, os.open, builtins.open

        def mkdir(p, *a, **k):
            return refuse(p) if inside(p) else real_mkdir(p, *a, **k)

        def os_open(p, flags, *a, **k):
            writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
            return refuse(p) if writes and inside(p) else real_os_open(p, flags, *a, **k)

        def open_(p, mode="r", *a, **k):
            return refuse(p) if any(c in mode for c in "wax+") and inside(p) else real_open(p, mode, *a, **k)

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", open_)

    yield make
    for path in chmodded:
        path.chmod(0o755)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_an_output_directory_under_a_file_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "blocker").write_text("a file, not a directory")
    path = config(tmp_path, budget="{kind: steps, value: 1}")
    text = path.read_text().replace(f"out_dir: {tmp_path / 'runs'}", f"out_dir: {tmp_path / 'blocker' / 'runs'}")
    path.write_text(text)
    assert main(["run", str(path)]) != 0
    assert str(tmp_path / "blocker" / "runs" / "r") in _one_error_line(capsys)


def test_a_read_only_output_directory_is_one_line_naming_it(tmp_path, capsys, read_only):
    path = config(tmp_path, budget="{kind: steps, value: 1}")
    (tmp_path / "runs").mkdir()
    read_only(tmp_path / "runs")
    assert main(["run", str(path)]) != 0
    err = _one_error_line(capsys)
    assert str(tmp_path / "runs" / "r") in err and "ermission denied" in err


def test_a_read_only_run_directory_is_one_line_naming_it(tmp_path, capsys, read_only):
    path = config(tmp_path, budget="{kind: steps, value: 1}")
    assert main(["run", str(path)]) == 0
    capsys.readouterr()
    read_only(tmp_path / "runs" / "r")
    assert main(["run", str(path)]) != 0
    err = _one_error_line(capsys)
    assert str(tmp_path / "runs" / "r") in err and "ermission denied" in err


def test_a_broken_config_yaml_in_a_run_directory_names_the_file_and_line(tmp_path, capsys):
    path = config(tmp_path, budget="{kind: steps, value: 1}")
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("name: r\nmodel: {family: decoder\ntrain: [\n")
    assert main(["run", str(path)]) != 0
    err = _one_error_line(capsys)
    assert f"{run_dir / 'config.yaml'}, line " in err and "--overwrite" in err
    assert main(["run", str(path), "--overwrite"]) == 0  # --overwrite replaces it


# -- --overwrite removes only what archzoo wrote -------------------------------------------------


@pytest.mark.slow
def test_overwrite_keeps_the_users_files(tmp_path):
    path = config(tmp_path, budget="{kind: steps, value: 4}")
    assert main(["run", str(path)]) == 0
    run_dir = tmp_path / "runs" / "r"
    (run_dir / "notes.md").write_text("why this run")
    (run_dir / "plots").mkdir()
    (run_dir / "plots" / "loss.png").write_bytes(b"\x89PNG")
    written = {p.name for p in run_dir.iterdir()} - {"notes.md", "plots"}
    # (this process takes the directory a second time: the first run released it)
    assert main(["run", str(path), "budget.value=2", "--overwrite"]) == 0
    assert (run_dir / "notes.md").read_text() == "why this run"
    assert (run_dir / "plots" / "loss.png").read_bytes() == b"\x89PNG"
    assert [m["step"] for m in metrics(run_dir)] == [1, 2] and _checkpoint_steps(run_dir) == [2]
    assert {p.name for p in run_dir.iterdir()} - {"notes.md", "plots"} == written


# -- TensorBoard after a SIGKILL resume ---------------------------------------------------------


def _tensorboard_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every scalar ``tag`` in the run's event files: TFRecord framing (length,
    its CRC, the record, its CRC) read by hand, each record an Event protocol buffer."""
    from tensorboardX.proto.event_pb2 import Event

    found = []
    for path in sorted((run_dir / "tensorboard").iterdir()):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            found += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
    return sorted(found)


@pytest.mark.slow
def test_tensorboard_holds_each_step_once_after_a_sigkill_resume(tmp_path):
    path = config(tmp_path, name="killed", budget="{kind: steps, value: 30}")
    run_dir = tmp_path / "runs" / "killed"
    proc = _run_cli([str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_lines(run_dir / "metrics.jsonl", 5, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < len(metrics(run_dir)) < 30, "the kill must land mid-run"
    assert main(["run", str(path)]) == 0
    want = [(m["step"], pytest.approx(m["loss_nats"], rel=1e-6)) for m in metrics(run_dir)]
    assert [m["step"] for m in metrics(run_dir)] == list(range(1, 31))
    assert _tensorboard_scalars(run_dir, "loss_nats") == want
