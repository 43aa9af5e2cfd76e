"""Checkpoint integrity: a corrupted newest checkpoint is skipped for the newest intact one, with a
warning naming both; none intact is one error naming the folder. Whole-run tests share one finished
6-step run (checkpoints at steps 4 and 6), copied afresh for each test."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import archzoo
from archzoo.analysis.runs import write_record
from archzoo.checkpoint import restore_weights, save_weights
from archzoo.cli import main
from archzoo.train.checkpoints import CheckpointError, RunCheckpoints
from archzoo.train.config import load_run_configs
from archzoo.train.loop import train
from tests.train.test_runs import config, metrics


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run's config path and a pristine copy of its run directory."""
    base = tmp_path_factory.mktemp("finished")
    path = config(base, budget="{kind: steps, value: 6}")
    cfg = load_run_configs(path)[0]
    train(cfg)
    shutil.copytree(cfg.run_dir, base / "pristine")
    return path, cfg.run_dir, base / "pristine"


@pytest.fixture
def run(finished):
    """The finished run's directory as a kill just after its last checkpoint leaves it: every
    checkpoint saved, the summary not yet written (a finished run is not trained again)."""
    path, run_dir, pristine = finished
    shutil.rmtree(run_dir)
    shutil.copytree(pristine, run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    write_record(run_dir, record["facts"], None)
    return path, run_dir


def _largest_file(folder: Path) -> Path:
    """The biggest file under ``folder``: at these sizes array data, never metadata."""
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _flip_bytes(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))
    return path


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _break_json(path: Path) -> Path:
    path.write_text(path.read_text()[:5])
    return path


def _saved_arrays(run_dir: Path, step: int) -> dict:
    """Every array of a checkpoint, read without a template."""
    with ocp.StandardCheckpointer() as ckpt:
        state = ckpt.restore((run_dir / "checkpoints" / str(step) / "state").absolute())
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(state)}


# Each breaks one file of a step folder and returns it. Before checksums, the first restored
# garbage without a word, the second ended in a long orbax traceback, the third in
# "json.decoder.JSONDecodeError: Unterminated string".
CORRUPTIONS = {
    "flipped array bytes": lambda folder: _flip_bytes(_largest_file(folder / "state")),
    "truncated array file": lambda folder: _truncate(_largest_file(folder / "state")),
    "broken metadata JSON": lambda folder: _break_json(folder / "meta" / "metadata"),
}


@pytest.mark.slow
@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_corrupted_newest_checkpoint_falls_back_to_the_previous_one(run, corruption, capsys):
    path, run_dir = run
    uninterrupted = metrics(run_dir)
    want = _saved_arrays(run_dir, 6)
    bad = CORRUPTIONS[corruption](run_dir / "checkpoints" / "6")
    summary = train(load_run_configs(path)[0])
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "checkpoint step 6" in line]
    assert len(warning) == 1 and "corrupted" in warning[0] and "resuming from step 4" in warning[0], err
    assert str(run_dir / "checkpoints") in warning[0] and "--overwrite" not in err
    assert bad.relative_to(run_dir / "checkpoints" / "6").as_posix() in warning[0]
    # steps 5 and 6 were trained again from step 4: the run ends as the uninterrupted one did
    assert summary["steps"] == 6 and metrics(run_dir) == uninterrupted
    got = _saved_arrays(run_dir, 6)
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    assert (run_dir / "checkpoints" / "corrupted" / "6").is_dir()


@pytest.mark.slow
def test_no_intact_checkpoint_is_one_error_naming_the_folder(run, capsys):
    path, run_dir = run
    for step in (4, 6):
        _flip_bytes(_largest_file(run_dir / "checkpoints" / str(step) / "state"))
    assert main(["run", str(path)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and err[0].startswith("archzoo run: error: no intact checkpoint")
    assert str(run_dir / "checkpoints") in err[0] and "step 6:" in err[0] and "step 4:" in err[0]
    # nothing was moved: the folder is as the user left it
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == ["4", "6"]


# -- the checkpoint folder on its own: tiny pytrees, no training --------------------------------


def _state(step: int) -> dict:
    return {"w": np.arange(4096, dtype=np.float32).reshape(64, 64) * step, "b": np.full((5,), step, np.int32)}


def _save_steps(directory: Path, steps, keep: int = 3) -> None:
    checkpoints = RunCheckpoints(directory, keep)
    for step in steps:
        checkpoints.save(step, _state(step), {"counters": {"step": step}})
    checkpoints.close()


def _restore(directory: Path, keep: int = 3):
    checkpoints = RunCheckpoints(directory, keep)
    try:
        return checkpoints.restore_latest(_state(0))
    finally:
        checkpoints.close()


def test_an_intact_checkpoint_restores_exactly_and_reading_it_changes_no_file(tmp_path, capsys):
    _save_steps(tmp_path / "c", [2, 4])
    record = json.loads((tmp_path / "c" / "4.sha256.json").read_text())
    restored = _restore(tmp_path / "c")
    assert restored.step == 4 and restored.meta == {"counters": {"step": 4}}
    for k, v in _state(4).items():
        np.testing.assert_array_equal(restored.state[k], v)
    assert json.loads((tmp_path / "c" / "4.sha256.json").read_text()) == record
    from archzoo.checkpoint import check_record

    assert check_record(tmp_path / "c" / "4") is None and capsys.readouterr().err == ""


def test_records_follow_the_kept_checkpoints(tmp_path):
    _save_steps(tmp_path / "c", [2, 4, 6], keep=2)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["4", "4.sha256.json", "6", "6.sha256.json"]


def test_a_checkpoint_without_a_record_is_restored_unverified_with_a_warning(tmp_path, capsys):
    _save_steps(tmp_path / "c", [2, 4])
    (tmp_path / "c" / "4.sha256.json").unlink()
    restored = _restore(tmp_path / "c")
    assert restored.step == 4
    err = capsys.readouterr().err
    assert "checkpoint step 4" in err and "no checksum record" in err and "unverified" in err


def test_a_broken_checkpoint_without_a_record_falls_back(tmp_path, capsys):
    _save_steps(tmp_path / "c", [2, 4])
    (tmp_path / "c" / "4.sha256.json").unlink()
    _break_json(tmp_path / "c" / "4" / "state" / "_METADATA")
    restored = _restore(tmp_path / "c")
    assert restored.step == 2
    np.testing.assert_array_equal(restored.state["w"], _state(2)["w"])
    err = capsys.readouterr().err
    assert "checkpoint step 4" in err and "orbax cannot restore it" in err and "resuming from step 2" in err
    assert "Traceback" not in err


def test_an_unfinished_save_is_ignored_and_removed(tmp_path, capsys):
    _save_steps(tmp_path / "c", [2])
    # what a kill during orbax's save of step 4 leaves: the temporary folder, never renamed
    unfinished = tmp_path / "c" / "4.orbax-checkpoint-tmp-1234567890"
    shutil.copytree(tmp_path / "c" / "2", unfinished)
    # and a kill while writing a record: its temporary file
    half_record = tmp_path / "c" / "2.sha256.json.tmp"
    half_record.write_text('{"files": {"_CHECKPOINT')
    restored = _restore(tmp_path / "c")
    assert restored.step == 2 and capsys.readouterr().err == ""
    assert not unfinished.exists() and not half_record.exists()


def test_an_unreadable_record_counts_as_corruption(tmp_path, capsys):
    _save_steps(tmp_path / "c", [2, 4])
    _break_json(tmp_path / "c" / "4.sha256.json")
    assert _restore(tmp_path / "c").step == 2
    assert "4.sha256.json is unreadable" in capsys.readouterr().err


FILE_CHANGES = {
    "flipped bytes": lambda folder: _flip_bytes(_largest_file(folder / "state")),
    "truncated manifest": lambda folder: _truncate(folder / "state" / "manifest.ocdbt"),
    "broken array metadata": lambda folder: _break_json(folder / "state" / "_METADATA"),
    "broken step metadata": lambda folder: _break_json(folder / "_CHECKPOINT_METADATA"),
    "missing file": lambda folder: (folder / "meta" / "metadata").unlink() or folder / "meta" / "metadata",
}


@pytest.mark.parametrize("change", FILE_CHANGES)
def test_any_changed_file_skips_the_checkpoint(tmp_path, change, capsys):
    _save_steps(tmp_path / "c", [2, 4])
    bad = FILE_CHANGES[change](tmp_path / "c" / "4")
    restored = _restore(tmp_path / "c")
    assert restored.step == 2 and restored.meta == {"counters": {"step": 2}}
    np.testing.assert_array_equal(restored.state["b"], _state(2)["b"])
    err = capsys.readouterr().err
    name = bad.relative_to(tmp_path / "c" / "4").as_posix()
    assert f"checkpoint step 4 in {tmp_path / 'c'} is corrupted ({name}" in err
    assert "resuming from step 2" in err


def test_every_checkpoint_corrupted_raises_naming_the_folder(tmp_path):
    _save_steps(tmp_path / "c", [2, 4])
    for step in (2, 4):
        _flip_bytes(tmp_path / "c" / str(step) / "meta" / "metadata")
    with pytest.raises(CheckpointError) as e:
        _restore(tmp_path / "c")
    want = f"no intact checkpoint to resume from in {tmp_path / 'c'} (step 4: meta/metadata differs"
    assert str(e.value).startswith(want)
    assert "step 2: meta/metadata differs" in str(e.value)


# -- model weights (archzoo convert --checkpoint) ------------------------------------------------


def test_corrupted_weights_are_refused_naming_the_folder_and_file(tmp_path):
    cfg = dict(d_model=32, attention={"num_heads": 4}, mlp={"d_ff": 64}, num_layers=2, vocab_size=256)
    save_weights(archzoo.build(**cfg, seed=1), tmp_path / "ckpt")
    data = _flip_bytes(_largest_file(tmp_path / "ckpt"))
    with pytest.raises(ValueError) as e:
        restore_weights(archzoo.build(**cfg, seed=2), tmp_path / "ckpt")
    name = data.relative_to(tmp_path / "ckpt").as_posix()
    assert str(tmp_path / "ckpt") in str(e.value) and f"{name} differs from its recorded sha256" in str(e.value)


def _tiny_state(width: int) -> dict:
    return {"w": np.arange(width, dtype=np.float32), "b": np.ones((2,), np.float32)}


def test_a_verified_checkpoint_that_orbax_cannot_read_is_an_error_not_corruption(tmp_path):
    # its files match the record, so a restore failure (here: a template with another tree) is the
    # caller's, and the checkpoint stays where it is
    checkpoints = RunCheckpoints(tmp_path / "checkpoints", keep=2)
    checkpoints.save(1, _tiny_state(4), {"step": 1})
    checkpoints.close()
    reopened = RunCheckpoints(tmp_path / "checkpoints", keep=2)
    with pytest.raises(Exception) as e:
        reopened.restore_latest({"w": np.zeros((4,), np.float32), "c": np.zeros((2,), np.float32)})
    assert not isinstance(e.value, CheckpointError)
    assert (tmp_path / "checkpoints" / "1").is_dir() and not (tmp_path / "checkpoints" / "corrupted").exists()
    reopened.close()


def test_a_kill_between_the_two_renames_of_a_corrupted_checkpoint_never_leaves_it_unrecorded(tmp_path, monkeypatch):
    checkpoints = RunCheckpoints(tmp_path / "checkpoints", keep=3)
    for step in (1, 2):
        checkpoints.save(step, _tiny_state(4), {"step": step})
    checkpoints.close()
    _flip_bytes(_largest_file(tmp_path / "checkpoints" / "2" / "state"))
    renamed = []
    real_rename = Path.rename

    def rename_then_die(self, target):
        real_rename(self, target)
        renamed.append(self.name)
        raise KeyboardInterrupt  # the process dies after the first rename

    monkeypatch.setattr(Path, "rename", rename_then_die)
    with pytest.raises(KeyboardInterrupt):
        RunCheckpoints(tmp_path / "checkpoints", keep=3).restore_latest(_tiny_state(4))
    monkeypatch.undo()
    # whatever was moved first, step 2 must not be left in place without its record
    folder = tmp_path / "checkpoints" / "2"
    assert not folder.exists() or (tmp_path / "checkpoints" / "2.sha256.json").exists(), renamed
    reopened = RunCheckpoints(tmp_path / "checkpoints", keep=3)
    assert reopened.restore_latest(_tiny_state(4)).step == 1
    reopened.close()
