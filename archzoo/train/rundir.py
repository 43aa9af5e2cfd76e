"""The run directory: resolved config, metrics as JSON lines, facts for plots, TensorBoard
events and checkpoints (DESIGN.md §4)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from pathlib import Path

import yaml

from archzoo.analysis.runs import ERROR_FILE

__all__ = [
    "MetricsWriter", "RunDirBusy", "RunDirError", "clear_failure", "completed_summary", "hold_run_dir", "plugin_change",
    "prepare_run_dir", "record_failure",
]

LOCK_FILE = "archzoo.lock"  # held (flock) by the one process training in the directory
HOLDER_FILE = "archzoo.pid"  # that process's id, beside the lock: opening a lock may truncate it
TENSORBOARD_DIR = "tensorboard"
FAILURE_FILE = ERROR_FILE  # why the last attempt failed: type, message, the traceback file
TRACEBACK_FILE = "error.txt"

# Everything archzoo writes in a run directory (the tokenizer copy is tokenizer.json or
# tokenizer.model, see Tokenizer.file_name); --overwrite removes these and leaves the rest.
WRITTEN = (
    "config.yaml", "metrics.jsonl", "run.json", "run.json.tmp",
    "facts.json", "facts.tmp", "summary.json", "summary.tmp",  # written before run.json
    "comparison.md", "checkpoints", TENSORBOARD_DIR, "tokenizer.json", "tokenizer.model",
    FAILURE_FILE, TRACEBACK_FILE,
)


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (another config, another process, no write
    access, a broken config.yaml)."""


class RunDirBusy(RunDirError):
    """Another process holds the run directory (it trains that run)."""


def _os_error(run_dir: Path, e: OSError) -> RunDirError:
    where = f" ({e.filename})" if e.filename and str(e.filename) != str(run_dir) else ""
    return RunDirError(
        f"{run_dir}: cannot create or write the run directory: {e.strerror or e}{where}; "
        "choose another out_dir or name, or make it writable"
    )


def _holder(run_dir: Path) -> str:
    try:
        return (run_dir / HOLDER_FILE).read_text().strip() or "unknown"
    except OSError:  # the holder has not written it yet
        return "unknown"


@contextlib.contextmanager
def hold_run_dir(run_dir: Path):
    """Holds the run directory for this process while the block runs (creating the directory).

    Raises:
      RunDirError: another process holds it (naming its pid), or it cannot be created or written.
    """
    from filelock import FileLock, Timeout

    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run directory; choose another name or out_dir")
    created = not run_dir.exists()
    lock = FileLock(run_dir / LOCK_FILE, timeout=0)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:  # before OSError: filelock's Timeout is a TimeoutError
        raise RunDirBusy(
            f"{run_dir} is in use by another archzoo process (pid {_holder(run_dir)}); "
            "wait for it to finish, or stop it (SIGTERM saves a checkpoint) and rerun"
        ) from None
    except OSError as e:
        raise _os_error(run_dir, e) from None
    try:
        try:
            (run_dir / HOLDER_FILE).write_text(f"{os.getpid()}\n")
        except OSError as e:
            raise _os_error(run_dir, e) from None
        yield
    finally:
        with contextlib.suppress(OSError):
            (run_dir / HOLDER_FILE).unlink(missing_ok=True)
        # A run that stopped before writing its config (a data error) leaves no directory behind.
        # Removed while still held: a process that opens the lock meanwhile makes a new lock file
        # (then the directory stays), never shares a lock file about to be unlinked.
        with contextlib.suppress(OSError):
            if created and [p.name for p in run_dir.iterdir()] == [LOCK_FILE]:
                (run_dir / LOCK_FILE).unlink()
                run_dir.rmdir()
        lock.release()


def _dump(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False)


# Keys that change neither the numbers nor the order of work: a run resumes across them. The
# ``eval`` section changes what is measured, not what is trained; the ``mesh`` section where the
# work runs (a sharded step sums in another order: the same numbers within float rounding) and
# ``distributed`` which processes share it;
# ``model.remat`` what the backward pass recomputes instead of keeping (the same numbers);
# ``model.attention.backend`` which kernel computes the same attention (``auto`` picks per device).
# ``plugin_paths`` where Python finds the plug-ins, and ``plugins.<key>.file`` where a plug-in's
# source file is now: its SHA-256 is what says whether it changed.
_NOT_RESULTS = {
    "train.progress", "train.keep_checkpoints", "train.checkpoint_every", "model.remat", "model.attention.backend", "plugin_paths",
}
_NOT_RESULT_SECTIONS = ("eval", "mesh", "distributed")


# Fields added to the config since run directories were first written, with the value that
# trains as a directory without them did: an older run resumes under the newer code.
_ADDED_FIELDS = {
    "model.scan_layers": False,
    "model.encoder_mask": "full",
    "model.mlp.kind": "standard",
    "model.moe.router_logits": "linear",
}


def _lookup(config: dict, key: str):
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def _result_changes(old: dict, config: dict) -> list[str]:
    """The dotted keys where ``config`` trains differently from ``old``, sorted."""

    def added_as_before(k):
        return k in _ADDED_FIELDS and _lookup(old, k) is _MISSING and _lookup(config, k) == _ADDED_FIELDS[k]

    return sorted(
        k
        for k in _diff(old, config) - _NOT_RESULTS
        if k.split(".", 1)[0] not in _NOT_RESULT_SECTIONS
        and not (k.startswith("plugins.") and k.endswith(".file"))
        and not added_as_before(k)
    )


def _plugin_changes(old: dict, config: dict, changed: list[str]) -> str | None:
    """When only plug-in sources changed: a sentence naming each, else None."""
    if not changed or not all(k.startswith("plugins.") for k in changed):
        return None
    keys = sorted({k[len("plugins."):].rsplit(".", 1)[0] for k in changed})
    now, then = config.get("plugins", {}), old.get("plugins", {})
    parts = []
    for key in keys:
        new, was = now.get(key, {}), then.get(key, {})
        parts.append(
            f"{key}: {new.get('path') or was.get('path')} ({new.get('file') or was.get('file')}) has sha256 "
            f"{str(new.get('sha256'))[:12]}, the run was trained with {str(was.get('sha256'))[:12]}"
        )
    return "; ".join(parts)


def prepare_run_dir(run_dir: Path, config: dict, overwrite: bool, allow_plugin_change: bool = False) -> bool:
    """Creates the run directory or checks it belongs to this config.

    Args:
      run_dir: the run's directory.
      config: the resolved config.
      overwrite: start afresh in a directory that holds a run (this config's or another's).
      allow_plugin_change: resume although a plug-in's source file changed since the run
        started (its new hash is recorded).

    Returns:
      True when the directory already held this run (resume), False when it starts fresh.

    Raises:
      RunDirError: the directory holds a different config or an unreadable config.yaml and
        ``overwrite`` is False, it is not an archzoo run directory, or it cannot be written.
    """
    path = run_dir / "config.yaml"
    try:
        if path.exists():
            old = _read_config(path, overwrite)
            changed = _result_changes(old, config)
            plugin_change = _plugin_changes(old, config, changed)
            if (not changed or (plugin_change and allow_plugin_change)) and not overwrite:
                path.write_text(_dump(config))
                return True
            if plugin_change and not overwrite:
                raise RunDirError(
                    f"{run_dir}: a plug-in changed since this run was trained ({plugin_change}); resuming would train on "
                    "with other code. Restore it, pass --allow-plugin-change to resume anyway, or --overwrite to start afresh"
                )
            if not overwrite:
                raise RunDirError(
                    f"{run_dir} holds a run with a different config (differs at: {', '.join(changed[:6]) or 'format'}); "
                    "choose another name or out_dir, or pass --overwrite to replace it"
                )
            _remove_written(run_dir)
        elif run_dir.exists() and any(p.name not in (LOCK_FILE, HOLDER_FILE, FAILURE_FILE, TRACEBACK_FILE) for p in run_dir.iterdir()):
            raise RunDirError(
                f"{run_dir} exists, is not empty and holds no archzoo run (no config.yaml); choose another name or out_dir"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(_dump(config))
    except OSError as e:
        raise _os_error(run_dir, e) from None
    return False


def _same_run(run_dir: Path, config: dict) -> bool:
    """Whether ``run_dir`` holds a run of ``config`` (its config.yaml reads and matches)."""
    try:
        old = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(old, dict) and not _result_changes(old, config)


def plugin_change(run_dir: Path, config: dict) -> str | None:
    """When ``run_dir`` holds a run of ``config`` but for plug-in sources that changed since:
    a sentence naming each changed plug-in; else None."""
    try:
        old = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    if not isinstance(old, dict):
        return None
    return _plugin_changes(old, config, _result_changes(old, config))


def completed_summary(run_dir: Path, config: dict) -> dict | None:
    """The summary of a run of ``config`` that already spent its budget in ``run_dir``, or None
    (no such run, another config, or a run that was interrupted, failed or is still going)."""
    from archzoo.analysis.runs import RecordError, load_run

    if not _same_run(run_dir, config):
        return None
    try:
        record = load_run(run_dir)
    except RecordError:
        return None
    return record.summary if record.spent_budget else None


def record_failure(run_dir: Path, config: dict, kind: str, message: str, traceback_text: str) -> None:
    """Writes why a run of ``config`` failed into its directory: ``error.json`` (type, message,
    time) and the whole traceback in ``error.txt``, also when it failed before writing its config
    there (a data error); never into a directory that holds another run."""
    import datetime

    if (run_dir / "config.yaml").exists() and not _same_run(run_dir, config):
        return
    if run_dir.exists() and not run_dir.is_dir():
        return
    with contextlib.suppress(OSError):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / TRACEBACK_FILE).write_text(traceback_text)
        record = {
            "type": kind,
            "message": message,
            "traceback": TRACEBACK_FILE,
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        (run_dir / FAILURE_FILE).write_text(json.dumps(record, indent=2) + "\n")


def clear_failure(run_dir: Path) -> None:
    """Removes the record of an earlier failed attempt (a new attempt is under way)."""
    for name in (FAILURE_FILE, TRACEBACK_FILE):
        with contextlib.suppress(OSError):
            (run_dir / name).unlink(missing_ok=True)


def _read_config(path: Path, overwrite: bool) -> dict:
    """The config a run directory holds; with ``overwrite``, an unreadable one counts as another."""
    try:
        old = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        if overwrite:
            return {}
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise RunDirError(
            f"{path}{where}: the run directory's config is not readable YAML ({problem}); "
            "restore it, or pass --overwrite to replace the run"
        ) from None
    return {} if old is None else old


def _remove_written(run_dir: Path) -> None:
    """Removes what archzoo wrote in ``run_dir`` (see WRITTEN), nothing the user put there."""
    for name in WRITTEN:
        p = run_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _diff(a, b, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = set()
        for k in set(a) | set(b):
            out |= _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return set() if a == b else {prefix.rstrip(".")}


class MetricsWriter:
    """Appends metrics to ``metrics.jsonl`` and a TensorBoard event file.

    On resume, lines after the restored step are dropped first, so the file ends as an
    uninterrupted run's would; the TensorBoard events are written afresh from the lines kept
    (an event file cannot be cut at a step, and a kill leaves events past the checkpoint).
    """

    def __init__(self, run_dir: Path, resume_step: int | None):
        from tensorboardX import SummaryWriter

        self.path = run_dir / "metrics.jsonl"
        kept = []
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                    if record["step"] > resume_step:
                        break
                except (json.JSONDecodeError, KeyError):  # a line cut short by a kill
                    break
                kept.append((line, record))
        self.path.write_text("".join(line + "\n" for line, _ in kept))
        self._file = open(self.path, "a")
        shutil.rmtree(run_dir / TENSORBOARD_DIR, ignore_errors=True)
        self._tb = SummaryWriter(str(run_dir / TENSORBOARD_DIR))
        for _, record in kept:
            self._scalars(record)

    def write(self, record: dict) -> None:
        """One JSON line (and one scalar per numeric field in TensorBoard)."""
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()
        self._scalars(record)

    def _scalars(self, record: dict) -> None:
        for k, v in record.items():
            values = enumerate(v) if isinstance(v, list) else [(None, v)]  # a list: one scalar per entry (per expert)
            for i, x in values:
                if k != "step" and isinstance(x, (int, float)) and math.isfinite(x):
                    self._tb.add_scalar(k if i is None else f"{k}/{i}", x, record["step"])

    def close(self) -> None:
        self._file.close()
        self._tb.close()
