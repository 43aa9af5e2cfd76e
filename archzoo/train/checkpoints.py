"""A run's training checkpoints: orbax saves of the training state and its JSON metadata, each
sealed by a checksum record once finished, and a resume that skips corrupted ones.

On resume, step folders are tried newest first:

- a folder with a record is trusted only if every file matches it (a flipped byte, a cut file or
  broken metadata JSON all show up here, before orbax reads a byte);
- a folder without a record was saved before records were kept, or the process died between
  orbax's commit and the record. Orbax's commit marker (on a local disk, the rename from the
  temporary ``<step>.orbax-checkpoint-tmp-*`` name) says the save finished, so it is restored
  unverified, with a warning; if orbax cannot restore it, it is skipped like a corrupted one.
  Unfinished saves keep the temporary name: orbax never lists them, and opening the folder
  removes them.

Skipped folders move to ``checkpoints/corrupted/`` (kept for inspection, and out of the way of
the steps the resumed run saves again), each named in a warning on stderr.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import threading
from pathlib import Path

import orbax.checkpoint as ocp

from archzoo.checkpoint import RECORD_SUFFIX, check_record, record_path, write_record
from archzoo.train.rundir import RunDirError

__all__ = ["CheckpointError", "Restored", "RunCheckpoints", "read_params"]


class CheckpointError(RunDirError):
    """No checkpoint of a run directory can be resumed from."""


@dataclasses.dataclass(frozen=True)
class Restored:
    """A checkpoint read back: its step, the arrays (as the template) and the JSON metadata."""

    step: int
    state: dict
    meta: dict


def _warn(message: str) -> None:
    print(f"archzoo: warning: {message}", file=sys.stderr, flush=True)


class RunCheckpoints:
    """The ``checkpoints`` folder of a run directory, with asynchronous saves.

    Args:
      directory: the folder (created if missing).
      keep: how many of the newest checkpoints to keep.
      primary: whether this process tidies the folder (removes unfinished saves, writes the
        checksum records, moves corrupted steps aside): process 0 of several, which all save
        and restore their own shards through orbax.
    """

    def __init__(self, directory: Path, keep: int, *, primary: bool = True):
        self.directory = Path(directory).absolute()
        self.primary = primary
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True)
        if primary:
            # what a kill during a save or its record leaves behind (orbax's own cleanup would
            # run in a thread, racing the restore)
            for name in ocp.step.tmp_checkpoints(self.directory) if self.directory.is_dir() else ():
                shutil.rmtree(self.directory / name)
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        if primary:
            for unfinished_record in self.directory.glob(f"*{RECORD_SUFFIX}.tmp"):
                unfinished_record.unlink()
            self._drop_orphan_records()
        self._sealer: threading.Thread | None = None
        self._sealer_error: BaseException | None = None

    def _step_folder(self, step: int) -> Path:
        return self.directory / str(step)

    def latest_step(self) -> int | None:
        """The newest step saved (finished or in flight), or None."""
        return self._manager.latest_step()

    def save(self, step: int, state: dict, meta: dict) -> None:
        """Starts saving ``state`` (a pytree of arrays) and ``meta`` (JSON data) as ``step``; a
        thread seals the folder with its record as soon as orbax has finished it."""
        self._wait_for_seal()
        if self.primary:
            record_path(self._step_folder(step)).unlink(missing_ok=True)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self._manager.save(step, args=args, force=True)
        if not self.primary:
            return
        # Sealing at once, not at the next save, keeps short the time a kill leaves the newest
        # checkpoint without a record.
        self._sealer = threading.Thread(target=self._seal, args=(step,), daemon=True)
        self._sealer.start()

    def _seal(self, step: int) -> None:
        """Waits for orbax to finish ``step`` and records the checksums of its folder."""
        try:
            self._manager.wait_until_finished()
            if self._step_folder(step).is_dir():
                write_record(self._step_folder(step))
            # orbax deletes folders past ``keep`` but knows nothing of their records
            self._drop_orphan_records()
        except BaseException as e:  # raised again in the main thread
            self._sealer_error = e

    def _drop_orphan_records(self) -> None:
        for record in self.directory.glob("*" + RECORD_SUFFIX):
            if not record.with_name(record.name.removesuffix(RECORD_SUFFIX)).is_dir():
                record.unlink()

    def _wait_for_seal(self) -> None:
        if self._sealer is not None:
            self._sealer.join()
            self._sealer = None
        self._manager.wait_until_finished()
        if self._sealer_error is not None:
            error, self._sealer_error = self._sealer_error, None
            raise error

    def _move_aside(self, step: int) -> Path:
        corrupted = self.directory / "corrupted"
        corrupted.mkdir(exist_ok=True)
        target, n = corrupted / str(step), 1
        while target.exists():
            target, n = corrupted / f"{step}.{n}", n + 1
        folder = self._step_folder(step)
        # The folder first: a kill between the two renames leaves a record with no folder (removed
        # when the folder is next opened), never a bad folder without its record.
        folder.rename(target)
        if record_path(folder).exists():
            record_path(folder).rename(record_path(target))
        return target

    def _restore(self, step: int, template: dict):
        """The checkpoint of ``step`` read back, or why it cannot be."""
        folder = self._step_folder(step)
        verified = record_path(folder).exists()
        if verified:
            problem = check_record(folder)
            if problem is not None:
                return None, problem
        else:
            _warn(
                f"checkpoint step {step} in {self.directory} has no checksum record (saved before records "
                "were kept, or stopped before it was written); restoring it unverified"
            )
        args = ocp.args.Composite(state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore())
        try:
            restored = self._manager.restore(step, args=args)
        except Exception as e:
            if verified:  # its files are as saved: a failure here is not corruption
                raise
            # an unrecorded folder may be broken anywhere: skipped like a corrupted one
            first_line = (str(e).splitlines() or [""])[0][:200]
            return None, f"orbax cannot restore it: {type(e).__name__}: {first_line}"
        return Restored(step, restored.state, restored.meta), None

    def restore_latest(self, template: dict) -> Restored | None:
        """Restores the newest intact checkpoint, moving newer corrupted ones aside.

        Args:
          template: a pytree like the saved ``state`` (its arrays give shapes, dtypes and
            shardings).

        Returns:
          the checkpoint, or None when the folder holds none.

        Raises:
          CheckpointError: every checkpoint is corrupted (the manager is closed first).
        """
        skipped: list[tuple[int, str]] = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            restored, problem = self._restore(step, template)
            if restored is None:
                skipped.append((step, problem))
                continue
            for bad, why in skipped if self.primary else ():
                target = self._move_aside(bad)
                _warn(
                    f"checkpoint step {bad} in {self.directory} is corrupted ({why}); "
                    f"moved it to {target} and resuming from step {step}"
                )
            if skipped:
                self._manager.reload()
            return restored
        if skipped:
            self.close()
            reasons = "; ".join(f"step {step}: {why}" for step, why in skipped)
            raise CheckpointError(
                f"no intact checkpoint to resume from in {self.directory} ({reasons}); "
                "move that folder away, or pass --overwrite, to start the run afresh"
            )
        return None

    def close(self) -> None:
        """Waits for the save in flight and its record, and closes the manager."""
        self._wait_for_seal()
        self._manager.close()


def read_params(directory: Path, template, step: int | None = None) -> tuple[int, object]:
    """Reads the trained parameters of a run's checkpoint without writing anything (a run may
    still be training in the directory).

    Step folders are tried newest first (or only ``step``); one whose files differ from its
    checksum record is skipped with a warning, one without a record is read unverified.

    Args:
      directory: the run's ``checkpoints`` folder.
      template: a pytree like the saved ``params`` (shapes and dtypes).
      step: the step to read; None: the newest intact one.

    Returns:
      ``(step, params)``.

    Raises:
      CheckpointError: no finished checkpoint (or not ``step``), or none intact.
    """
    directory = Path(directory).absolute()
    steps = sorted((int(p.name) for p in directory.glob("*") if p.name.isdigit() and (p / "state").is_dir()), reverse=True)
    if step is not None:
        if step not in steps:
            have = ", ".join(map(str, sorted(steps))) or "none"
            raise CheckpointError(f"{directory}: no finished checkpoint of step {step} (steps saved: {have})")
        steps = [step]
    if not steps:
        raise CheckpointError(
            f"{directory.parent}: no finished checkpoint to read (a run saves one every train.checkpoint_every "
            "steps and at its end); train it first, or wait for its first checkpoint"
        )
    problems = []
    for s in steps:
        folder = directory / str(s)
        if record_path(folder).exists():
            problem = check_record(folder)
            if problem is not None:
                _warn(f"checkpoint step {s} in {directory} is corrupted ({problem}); skipping it")
                problems.append(f"step {s}: {problem}")
                continue
        item = {"params": template}
        args = ocp.args.PyTreeRestore(item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)
        with ocp.PyTreeCheckpointer() as checkpointer:
            restored = checkpointer.restore(folder / "state", args=args)
        return s, restored["params"]
    raise CheckpointError(f"{directory}: no intact checkpoint ({'; '.join(problems)})")
