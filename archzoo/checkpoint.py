"""Saving and restoring model weights with orbax, and the checksum record that tells an intact
checkpoint folder from a corrupted one."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import orbax.checkpoint as ocp
from flax import nnx

__all__ = ["save_weights", "restore_weights", "RECORD_SUFFIX", "record_path", "write_record", "check_record"]

RECORD_SUFFIX = ".sha256.json"


def record_path(folder: Path) -> Path:
    """The checksum record of a checkpoint folder: beside it, named ``<folder>.sha256.json``."""
    return folder.with_name(folder.name + RECORD_SUFFIX)


def _file_digests(folder: Path) -> dict[str, dict]:
    """Size and sha256 of every file under ``folder``, by path relative to it."""
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256")
            size = f.tell()
        digests[path.relative_to(folder).as_posix()] = {"bytes": size, "sha256": digest.hexdigest()}
    return digests


def write_record(folder: Path) -> Path:
    """Records the size and sha256 of every file of a finished checkpoint folder.

    The record is written to a temporary name and renamed into place, so a kill leaves either no
    record or a whole one.

    Returns:
      the record's path.
    """
    record = record_path(folder)
    tmp = record.with_name(record.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"files": _file_digests(folder)}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, record)
    return record


def check_record(folder: Path) -> str | None:
    """Checks a checkpoint folder against its record (which must exist).

    Returns:
      None when every file is as recorded; otherwise what differs, in a few words per file.
    """
    record = record_path(folder)
    try:
        saved = json.loads(record.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its checksum record {record.name} is unreadable ({e})"
    now = _file_digests(folder)
    problems = [f"{name} is missing" for name in saved if name not in now]
    problems += [f"{name} was not there when it was saved" for name in now if name not in saved]
    for name in sorted(set(saved) & set(now)):
        was, found = saved[name], now[name]
        if was["bytes"] != found["bytes"]:
            problems.append(f"{name} holds {found['bytes']} bytes, {was['bytes']} when it was saved")
        elif was["sha256"] != found["sha256"]:
            problems.append(f"{name} differs from its recorded sha256")
    if not problems:
        return None
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def save_weights(model: nnx.Module, path: str | Path) -> Path:
    """Writes the model's parameters and buffers to an orbax checkpoint folder, with its
    checksum record beside it."""
    path = Path(path).absolute()
    record_path(path).unlink(missing_ok=True)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, nnx.state(model), force=True)
    write_record(path)
    return path


def restore_weights(model: nnx.Module, path: str | Path) -> nnx.Module:
    """Restores weights saved by :func:`save_weights` into a model of the same config.

    Raises:
      FileNotFoundError: nothing at ``path``.
      ValueError: the folder's files differ from its checksum record (a folder without one,
        saved before records were kept, is restored unverified).
    """
    path = Path(path).absolute()
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    problem = check_record(path) if record_path(path).exists() else None
    if problem is not None:
        raise ValueError(f"the checkpoint at {path} is corrupted ({problem}); write it again")
    abstract = nnx.state(model)
    with ocp.StandardCheckpointer() as ckpt:
        state = ckpt.restore(path, abstract)
    nnx.update(model, state)
    return model
