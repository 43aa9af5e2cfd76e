"""Read a corpus into documents (strings): text files, JSON lines, Parquet, ``save_to_disk`` folders.

Every reader checks its input at the edge: a missing path, an empty corpus, a bad JSON line or a
missing field raises :class:`DataError` naming the file, and the line or row where there is one.
Documents come back in a fixed order: files in sorted path order, rows in file order.
"""

from __future__ import annotations

import bz2
import contextlib
import glob
import gzip
import json
import lzma
from pathlib import Path
from typing import IO, Callable, Iterator

__all__ = [
    "DataError",
    "resolve_paths",
    "detect_format",
    "read_text",
    "read_jsonl",
    "read_parquet",
    "read_hf_disk",
    "read_documents",
]

_COMPRESSED = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}
_SUFFIX_FORMAT = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


class DataError(ValueError):
    """A problem with the data a user pointed at: names the path, and the line or row if known."""


def _open_text(path: Path) -> IO[str]:
    """Opens a UTF-8 text file, decompressing ``.gz``, ``.xz`` and ``.bz2`` by suffix."""
    opener: Callable = _COMPRESSED.get(path.suffix, open)
    return opener(path, "rt", encoding="utf-8", newline=None)


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turns a failure to read or decode ``path`` inside the block into a DataError naming it."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None


def _suffix(path: Path) -> str:
    """The suffix that names the format, under a compression suffix: ``a.jsonl.gz`` -> ``.jsonl``."""
    if path.suffix in _COMPRESSED:
        path = path.with_suffix("")
    return path.suffix.lower()


def _is_hf_disk(path: Path) -> bool:
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def resolve_paths(source: str | Path) -> list[Path]:
    """The files a source names: one file, one folder, or every file matching a glob (sorted).

    Args:
      source: a path or a glob pattern (``*``, ``?``, ``[...]``, ``**``).

    Returns:
      The matching paths in sorted order (a folder is returned as itself), each file once: of
      paths that resolve to the same file (symlinks), only the first is kept.

    Raises:
      DataError: nothing exists at ``source`` or nothing matches the glob.
    """
    text = str(source)
    if glob.has_magic(text):
        paths = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not paths:
            raise DataError(f"no files match {text}")
        # Symlinks are followed, so a file and a link to it would be two documents (one could
        # land in training and the other in validation); the first path in sorted order stays.
        unique = {}
        for p in paths:
            unique.setdefault(p.resolve(), p)
        return list(unique.values())
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"corpus not found: {path}")
    return [path]


def detect_format(paths: list[Path]) -> str:
    """The format that file suffixes name: ``text``, ``jsonl``, ``parquet`` or ``hf_disk``.

    Args:
      paths: output of :func:`resolve_paths`.

    Returns:
      One format for all paths.

    Raises:
      DataError: a plain folder, or files whose suffixes name different formats.
    """
    if len(paths) == 1 and paths[0].is_dir():
        if _is_hf_disk(paths[0]):
            return "hf_disk"
        raise DataError(f"{paths[0]} is a folder without state.json or dataset_dict.json; give a glob such as {paths[0] / '*.txt'}")
    formats = {_SUFFIX_FORMAT.get(_suffix(p), "text") for p in paths}
    if len(formats) > 1:
        raise DataError(f"files of different formats ({', '.join(sorted(formats))}) match {paths[0].parent}; set format or narrow the glob")
    return formats.pop()


def read_text(paths: list[Path], documents: str = "file") -> list[str]:
    """Reads UTF-8 text files (optionally compressed).

    Args:
      paths: the files, read in this order.
      documents: ``file``: each file's whole text is one document, exactly as stored (line
        endings become ``\\n``). ``blank_lines``: each maximal run of non-blank lines is one
        document, its lines joined by ``\\n``.

    Returns:
      The documents.
    """
    out = []
    for path in paths:
        with _reading(path), _open_text(path) as f:
            text = f.read()
        if documents == "file":
            out.append(text)
            continue
        block: list[str] = []
        for line in text.split("\n") + [""]:
            if line.strip():
                block.append(line)
            elif block:
                out.append("\n".join(block))
                block = []
    return out


def read_jsonl(paths: list[Path], field: str) -> list[str]:
    """Reads JSON-lines files: one object per non-blank line, its ``field`` a string document.

    Args:
      paths: the files, read in this order.
      field: the key whose value is the document.

    Returns:
      The documents.

    Raises:
      DataError: naming file and line for a line that is not a JSON object, or whose ``field``
        is missing or not a string.
    """
    out = []
    for path in paths:
        with _reading(path), _open_text(path) as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}, line {number}: not valid JSON: {e.msg} (column {e.colno})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}, line {number}: expected a JSON object with a {field!r} field, got {type(record).__name__}")
                if field not in record:
                    keys = ", ".join(repr(k) for k in list(record)[:10]) or "none"
                    raise DataError(f"{path}, line {number}: no field {field!r} (keys: {keys}); set data.field")
                value = record[field]
                if not isinstance(value, str):
                    raise DataError(f"{path}, line {number}: field {field!r} must be a string, got {type(value).__name__}")
                out.append(value)
    return out


def _check_column(field: str, columns: list[str], where: str) -> None:
    """Raises DataError naming ``where`` and the columns it has when ``field`` is not one of them."""
    if field not in columns:
        raise DataError(f"{where}: no column {field!r} (columns: {', '.join(columns)}); set data.field")


def _column_strings(table, field: str, where: str) -> list[str]:
    """The string column ``field`` of an Arrow table, refusing other types and nulls."""
    import pyarrow as pa

    _check_column(field, table.column_names, where)
    column = table.column(field)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise DataError(f"{where}: column {field!r} must hold strings, got {column.type}")
    values = column.to_pylist()
    if column.null_count:
        row = values.index(None)
        raise DataError(f"{where}, row {row}: column {field!r} is null")
    return values


def read_parquet(paths: list[Path], field: str) -> list[str]:
    """Reads the string column ``field`` of Parquet files.

    Args:
      paths: the files, read in this order.
      field: the column whose values are the documents.

    Returns:
      The documents, in row order.

    Raises:
      DataError: naming the file for an unreadable file or a missing or non-string column, and
        the row for a null value.
    """
    import pyarrow.parquet as pq

    out = []
    for path in paths:
        try:
            schema = pq.read_schema(path)
            _check_column(field, schema.names, str(path))
            table = pq.read_table(path, columns=[field])
        except DataError:
            raise
        except Exception as e:  # pyarrow raises several types for a file that is not Parquet
            raise DataError(f"{path}: cannot read as Parquet: {e}") from None
        out.extend(_column_strings(table, field, str(path)))
    return out


def _read_arrow(path: Path):
    """One Arrow file as written by ``datasets`` (IPC stream), or an Arrow IPC file."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        try:
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_file(source).read_all()


def read_hf_disk(folder: Path, field: str) -> list[str]:
    """Reads a folder written by ``datasets.Dataset.save_to_disk`` (or a ``DatasetDict``'s).

    Args:
      folder: a ``Dataset`` folder (with ``state.json``), or a ``DatasetDict`` folder (with
        ``dataset_dict.json``), whose ``train`` split is read; point at ``folder/<split>`` for
        another split.
      field: the column whose values are the documents.

    Returns:
      The documents, in row order.

    Raises:
      DataError: naming the folder or Arrow file for a missing layout file, split or column.
    """
    folder = Path(folder)
    if (folder / "dataset_dict.json").is_file() and not (folder / "state.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text()).get("splits", [])
        if "train" not in splits:
            raise DataError(f"{folder}: a DatasetDict without a 'train' split (splits: {', '.join(splits)}); point data.source at {folder}/<split>")
        folder = folder / "train"
    state_path = folder / "state.json"
    if not state_path.is_file():
        raise DataError(f"{folder}: not a save_to_disk folder (no state.json)")
    try:
        state = json.loads(state_path.read_text())
        files = [folder / entry["filename"] for entry in state["_data_files"]]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{state_path}: unexpected layout ({e!r})") from None
    out = []
    for path in files:
        if not path.is_file():
            raise DataError(f"{path}: listed in {state_path} but missing")
        try:
            table = _read_arrow(path)
        except Exception as e:  # pyarrow raises several types for a file that is not Arrow
            raise DataError(f"{path}: cannot read as Arrow: {e}") from None
        out.extend(_column_strings(table, field, str(path)))
    return out


def read_documents(source: str | Path, format: str = "auto", field: str = "text", text_documents: str = "file") -> list[str]:
    """Reads every document of a corpus on disk.

    Args:
      source: a file, a glob, or a ``save_to_disk`` folder.
      format: ``auto``, ``text``, ``jsonl``, ``parquet`` or ``hf_disk``.
      field: JSON key or column holding the text (``jsonl``, ``parquet``, ``hf_disk``).
      text_documents: ``file`` or ``blank_lines`` (``text`` only; see :func:`read_text`).

    Returns:
      The documents: files in sorted path order, rows in file order.

    Raises:
      DataError: a missing path, a bad file, or a corpus with no text, naming the path.
    """
    paths = resolve_paths(source)
    if format == "auto":
        format = detect_format(paths)
    if format == "hf_disk":
        if len(paths) != 1 or not paths[0].is_dir():
            raise DataError(f"format hf_disk needs one save_to_disk folder, got {source}")
        documents = read_hf_disk(paths[0], field)
    else:
        folders = [p for p in paths if p.is_dir()]
        if folders:
            raise DataError(f"{folders[0]} is a folder; format {format} reads files (give a glob such as {folders[0] / '*'})")
        if format == "text":
            documents = read_text(paths, text_documents)
        elif format == "jsonl":
            documents = read_jsonl(paths, field)
        elif format == "parquet":
            documents = read_parquet(paths, field)
        else:
            raise DataError(f"unknown format {format!r} for {source}; valid: auto, text, jsonl, parquet, hf_disk")
    if not any(d.strip() for d in documents):
        count = f"{len(documents)} document" + ("" if len(documents) == 1 else "s")
        raise DataError(f"empty corpus: {source} holds no text ({count}, all empty or whitespace)")
    return documents
