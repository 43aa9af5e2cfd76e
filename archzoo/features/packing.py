"""Feature converters and packing (DESIGN.md §1).

An objective yields examples ``(inputs, targets)``. A family's feature converter turns one
example into per-token features of one or two streams, and the :class:`Packer` lays examples
side by side in fixed-length rows (next-fit, in order), marking each with a segment id (0 =
padding) and positions restarting at 0, so the mask built from those facts keeps packed examples
apart:

- decoder (causal or prefix): one stream ``inputs ++ targets``, fed shifted right after a start
  token; ``is_input`` flags the positions that read the inputs (the prefix), loss on targets;
- encoder-decoder: the encoder stream reads ``inputs``; the decoder stream reads ``targets``
  shifted right after the start token; loss on targets;
- encoder (MLM): one stream reading the corrupted ``inputs``; loss on the original tokens at
  the example's ``target_positions``.

Every family therefore sees the same target tokens with loss weight 1: the comparison counts the
same targets. A batch is a dict of numpy arrays ``[B, L]`` per stream:
``{stream}_tokens, {stream}_segment_ids, {stream}_positions, {stream}_is_input`` and, for the
stream that carries the loss, ``{stream}_targets, {stream}_weights``.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

__all__ = ["feature_converter", "FEATURE_CONVERTERS", "Packer", "pack_examples", "STREAMS"]

# The streams each family's batch holds, and which carries the loss.
STREAMS = {"decoder": ("decoder",), "encoder_decoder": ("encoder", "decoder"), "encoder": ("encoder",)}
LOSS_STREAM = {"decoder": "decoder", "encoder_decoder": "decoder", "encoder": "encoder"}


def _sequence_targets(example, family: str) -> tuple[np.ndarray, np.ndarray]:
    if getattr(example, "target_positions", None) is not None:
        raise ValueError(f"an MLM example (with target_positions) trains the encoder family, not {family!r}")
    return np.asarray(example.inputs, np.int32), np.asarray(example.targets, np.int32)


def decoder_features(example, start_id: int) -> dict[str, dict[str, np.ndarray]]:
    """One row ``inputs ++ targets`` read shifted right; the prefix is the inputs' positions
    plus the one that predicts the first target (it reads only inputs)."""
    inputs, targets = _sequence_targets(example, "decoder")
    row = np.concatenate([inputs, targets])
    n_in = len(inputs)
    is_input = np.zeros(len(row), bool)
    if n_in:
        is_input[: n_in + 1] = True
    weights = np.concatenate([np.zeros(n_in, np.float32), np.ones(len(targets), np.float32)])
    return {
        "decoder": {
            "tokens": np.concatenate([[start_id], row[:-1]]).astype(np.int32),
            "targets": row,
            "weights": weights,
            "is_input": is_input,
        }
    }


def encoder_decoder_features(example, start_id: int) -> dict[str, dict[str, np.ndarray]]:
    """Encoder reads the inputs; decoder reads the targets shifted right after ``start_id``."""
    inputs, targets = _sequence_targets(example, "encoder_decoder")
    return {
        "encoder": {"tokens": inputs, "is_input": np.ones(len(inputs), bool)},
        "decoder": {
            "tokens": np.concatenate([[start_id], targets])[: len(targets)].astype(np.int32),
            "targets": targets,
            "weights": np.ones(len(targets), np.float32),
            "is_input": np.zeros(len(targets), bool),
        },
    }


def encoder_features(example, start_id: int) -> dict[str, dict[str, np.ndarray]]:
    """MLM: the encoder reads the corrupted inputs; the loss is on the original tokens at the
    example's ``target_positions`` (weight 1 there, 0 elsewhere)."""
    inputs = np.asarray(example.inputs, np.int32)
    positions = getattr(example, "target_positions", None)
    if positions is None:
        raise ValueError("an encoder (MLM) example needs target_positions: use the mlm objective with the encoder family")
    targets = inputs.copy()
    targets[positions] = example.targets
    weights = np.zeros(len(inputs), np.float32)
    weights[positions] = 1.0
    return {"encoder": {"tokens": inputs, "targets": targets, "weights": weights, "is_input": np.ones(len(inputs), bool)}}


FEATURE_CONVERTERS: dict[str, Callable] = {
    "decoder": decoder_features,
    "encoder_decoder": encoder_decoder_features,
    "encoder": encoder_features,
}


def feature_converter(family: str) -> Callable:
    """The feature function of a family: ``example, start_id -> {stream: {field: array}}``."""
    if family not in FEATURE_CONVERTERS:
        raise ValueError(f"no feature converter for family {family!r}; valid: {', '.join(FEATURE_CONVERTERS)}")
    return FEATURE_CONVERTERS[family]


_FIELDS = {"tokens": np.int32, "targets": np.int32, "weights": np.float32, "is_input": bool, "segment_ids": np.int32, "positions": np.int32}


class Packer:
    """Packs per-example features into batches of ``batch_size`` rows, next-fit and in order.

    Args:
      lengths: row length of each stream, e.g. ``{"encoder": 256, "decoder": 128}``.
      batch_size: rows per batch.

    An example goes into the current row if every stream has room, else it opens a new row; a
    full batch is returned by :meth:`add`. State is plain data (:meth:`state`,
    :meth:`restore`), so a data iterator can be checkpointed mid-batch.
    """

    def __init__(self, lengths: dict[str, int], batch_size: int):
        self.lengths = dict(lengths)
        self.batch_size = batch_size
        self._rows: list[list[dict]] = []  # rows of the batch being filled: lists of example features

    def _used(self, row: list[dict], stream: str) -> int:
        return sum(len(next(iter(f[stream].values()))) for f in row)

    def _fits(self, row: list[dict], features: dict) -> bool:
        return all(self._used(row, s) + len(next(iter(features[s].values()))) <= self.lengths[s] for s in self.lengths)

    def add(self, features: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray] | None:
        """Adds one example's features; returns a completed batch when one fills up."""
        for s, cap in self.lengths.items():
            n = len(next(iter(features[s].values())))
            if n > cap:
                raise ValueError(
                    f"an example has {n} {s} tokens but the {s} row holds {cap}; "
                    "lower train.chunk_len or raise train.seq_len (train.encoder_len / train.decoder_len)"
                )
        if self._rows and self._fits(self._rows[-1], features):
            self._rows[-1].append(features)
            return None
        if len(self._rows) == self.batch_size:
            batch = self._assemble(self._rows)
            self._rows = [[features]]
            return batch
        self._rows.append([features])
        return None

    def flush(self) -> dict[str, np.ndarray] | None:
        """The partial batch (padded rows), or None when empty."""
        if not self._rows:
            return None
        batch = self._assemble(self._rows)
        self._rows = []
        return batch

    def _assemble(self, rows: list[list[dict]]) -> dict[str, np.ndarray]:
        batch = {}
        for stream, L in self.lengths.items():
            fields = set().union(*(f[stream].keys() for row in rows for f in row)) | {"segment_ids", "positions"}
            arrays = {k: np.zeros((self.batch_size, L), _FIELDS[k]) for k in fields}
            for r, row in enumerate(rows):
                at = 0
                for seg, features in enumerate(row, start=1):
                    part = features[stream]
                    n = len(next(iter(part.values())))
                    for k, v in part.items():
                        arrays[k][r, at : at + n] = v
                    arrays["segment_ids"][r, at : at + n] = seg
                    arrays["positions"][r, at : at + n] = np.arange(n)
                    at += n
            batch.update({f"{stream}_{k}": v for k, v in arrays.items()})
        return batch

    def state(self) -> list:
        """The pending rows as plain lists (JSON-serialisable)."""
        return [[{s: {k: v.tolist() for k, v in f.items()} for s, f in ex.items()} for ex in row] for row in self._rows]

    def restore(self, state: list) -> None:
        """Restores pending rows saved by :meth:`state`."""
        self._rows = [[{s: {k: np.asarray(v, _FIELDS[k]) for k, v in f.items()} for s, f in ex.items()} for ex in row] for row in state]


def pack_examples(examples: Iterable, family: str, lengths: dict[str, int], batch_size: int, start_id: int, *, flush: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """Converts and packs a stream of examples into batches for ``family``."""
    features_of = feature_converter(family)
    packer = Packer({s: lengths[s] for s in STREAMS[family]}, batch_size)
    for example in examples:
        batch = packer.add(features_of(example, start_id))
        if batch is not None:
            yield batch
    if flush:
        last = packer.flush()
        if last is not None:
            yield last
