"""Run directories as records (DESIGN.md §12): one versioned ``run.json`` of facts and summary,
written by the training loop and read back here with the config and the metrics.

``run.json``::

    {"schema_version": 1,
     "facts": {"family": ..., "params": ..., "flops_per_token": ..., ...},   # written at the start
     "summary": {"steps": ..., "target_tokens": ..., "val_loss_nats": ..., "stopped_by": ...}}
                                                                              # null until it ends

Run directories written before the record (``facts.json`` and ``summary.json``, schema 0) load
as the same record.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

__all__ = ["RECORD_FILE", "SCHEMA_VERSION", "RecordError", "RunRecord", "load_run", "load_sweep", "sweep_axes", "write_evals", "write_record"]

SCHEMA_VERSION = 1
RECORD_FILE = "run.json"
ERROR_FILE = "error.json"  # written by a failed attempt, removed by the next one
SWEEP_FILE = "sweep.json"  # in a sweep directory: the experiment, its runs and their axis values
_OLD_FILES = ("facts.json", "summary.json")  # schema 0

# What every record holds; a plot or a table may rely on these.
FACT_FIELDS = ("family", "mask", "objective", "params", "non_embedding_params", "active_params", "flops_per_token")
SUMMARY_FIELDS = ("name", "steps", "target_tokens", "tokens", "flops", "stopped_by", "wall_seconds")


class RecordError(ValueError):
    """A run directory whose record is missing, unreadable or of an unknown schema; names the
    file and the field."""


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """Everything a run directory says about its run.

    Attributes:
      run_dir: the directory.
      config: the resolved run config (``config.yaml``) as plain data.
      facts: parameters, FLOPs per token, family, objective, row lengths, budget (``run.json``).
      summary: how the run ended (steps, tokens, FLOPs, validation loss, ``stopped_by``), or None
        while it has not ended.
      metrics: the ``metrics.jsonl`` records, one per logged step.
      evals: task evaluation records (``evals.jsonl``), empty when none were run.
      error: why the last attempt failed (``error.json``: type, message, the traceback file), or
        None.
    """

    run_dir: Path
    config: dict
    facts: dict
    summary: dict | None
    metrics: list[dict]
    evals: list[dict]
    error: dict | None = None

    @property
    def name(self) -> str:
        return self.config.get("name") or self.run_dir.name

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def spent_budget(self) -> bool:
        """The run ended by spending its budget (not stopped early by a signal)."""
        return self.summary is not None and self.summary.get("stopped_by") == "budget"


def write_text_atomic(path: Path, text: str) -> None:
    """Writes ``path`` through a temporary file and a rename, so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_record(run_dir: Path, facts: dict, summary: dict | None = None) -> None:
    """Writes ``run.json`` atomically."""
    record = {"schema_version": SCHEMA_VERSION, "facts": facts, "summary": summary}
    write_text_atomic(Path(run_dir) / RECORD_FILE, json.dumps(record, indent=2, sort_keys=True))


EVALS_FILE = "evals.jsonl"


def write_evals(run_dir: Path, records: list[dict]) -> Path:
    """Adds task evaluation records to the run's ``evals.jsonl``, replacing earlier records of
    the same task, shots and step (a rerun of the same evaluation); atomically."""
    path = Path(run_dir) / EVALS_FILE
    replaced = {(r["task"], r["shots"], r["step"]) for r in records}
    kept = [r for r in _jsonl(path) if (r.get("task"), r.get("shots"), r.get("step")) not in replaced]
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept + list(records)))
    return path


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise RecordError(f"{path}: cannot read it: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError(f"{path}: not valid JSON ({e})") from None


def _need(path: Path, data, section: str, fields: tuple[str, ...]) -> dict:
    if not isinstance(data, dict):
        raise RecordError(f"{path}: field {section!r} must be a mapping, got {type(data).__name__}")
    missing = [f for f in fields if f not in data]
    if missing:
        raise RecordError(f"{path}: field {section}.{missing[0]} is missing (a record holds {', '.join(fields)})")
    return data


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise RecordError(f"{path}, line {n}: not valid JSON ({e.msg})") from None
    return records


def _facts_and_summary(run_dir: Path) -> tuple[dict, dict | None]:
    path = run_dir / RECORD_FILE
    if path.exists():
        record = _read_json(path)
        if not isinstance(record, dict) or "schema_version" not in record:
            raise RecordError(f"{path}: field 'schema_version' is missing")
        version = record["schema_version"]
        if version != SCHEMA_VERSION:
            raise RecordError(
                f"{path}: field 'schema_version' is {version!r}; this archzoo reads schema {SCHEMA_VERSION} "
                "(and run directories with facts.json and summary.json)"
            )
        facts = _need(path, record.get("facts"), "facts", FACT_FIELDS)
        summary = record.get("summary")
        return facts, None if summary is None else _need(path, summary, "summary", SUMMARY_FIELDS)
    facts_path, summary_path = (run_dir / f for f in _OLD_FILES)
    if not facts_path.exists():
        raise RecordError(f"{run_dir}: no {RECORD_FILE} (nor facts.json): not a run directory, or its run never started")
    facts = _need(facts_path, _read_json(facts_path), "facts", FACT_FIELDS)
    if not summary_path.exists():
        return facts, None
    return facts, _need(summary_path, _read_json(summary_path), "summary", SUMMARY_FIELDS)


def load_run(run_dir: str | Path) -> RunRecord:
    """The record of one run directory.

    Raises:
      RecordError: no record, an unreadable file, a missing field or an unknown schema version,
        naming the file and the field.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RecordError(f"{run_dir}: not a directory")
    config_path = run_dir / "config.yaml"
    try:
        config = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise RecordError(f"{config_path}{where}: not valid YAML") from None
    facts, summary = _facts_and_summary(run_dir)
    error_path = run_dir / ERROR_FILE
    error = _read_json(error_path) if error_path.exists() else None
    return RunRecord(
        run_dir, config or {}, facts, summary, _jsonl(run_dir / "metrics.jsonl"), _jsonl(run_dir / EVALS_FILE), error
    )


def is_run_dir(path: Path) -> bool:
    return (path / RECORD_FILE).exists() or (path / _OLD_FILES[0]).exists()


def load_sweep(sweep_dir: str | Path) -> list[RunRecord]:
    """The records of every run directory directly under ``sweep_dir``, by name.

    Raises:
      RecordError: ``sweep_dir`` holds no run directory, or one of them cannot be read.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise RecordError(f"{sweep_dir}: not a directory")
    runs = [load_run(p) for p in sorted(sweep_dir.iterdir()) if p.is_dir() and is_run_dir(p)]
    if not runs:
        raise RecordError(f"{sweep_dir}: holds no run directory (none has {RECORD_FILE})")
    return runs


def sweep_manifest(sweep_dir: str | Path) -> dict | None:
    """The sweep directory's ``sweep.json`` (the experiment, its runs, their axis values and
    estimates), or None in a directory that no sweep wrote.

    Raises:
      RecordError: ``sweep.json`` is unreadable or not a sweep record.
    """
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.exists():
        return None
    record = _read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("axes"), dict):
        raise RecordError(f"{path}: field 'axes' is missing or not a mapping")
    return record


def sweep_axes(sweep_dir: str | Path) -> dict[str, dict[str, str]]:
    """Per run name, its axis values' names by dotted key, from ``sweep.json`` (empty for a
    directory that no sweep wrote)."""
    manifest = sweep_manifest(sweep_dir)
    return manifest["axes"] if manifest else {}
