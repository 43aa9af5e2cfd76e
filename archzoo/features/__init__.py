"""The data side of a run after the objective: feature converters (architecture-agnostic examples
-> packed model batches per family), the resumable chunk -> objective -> pack -> batches
pipeline, and :func:`build_run_data`, which puts a run's data side together (DESIGN.md §6)."""

from archzoo.features.packing import FEATURE_CONVERTERS, STREAMS, LOSS_STREAM, Packer, feature_converter, pack_examples
from archzoo.features.pipeline import (
    Chunks,
    Pipeline,
    auto_chunk_len,
    check_row_lengths,
    chunk_documents,
    row_lengths,
    validation_batches,
)
from archzoo.features.run_data import RunData, build_run_data, target_bytes

__all__ = [
    "FEATURE_CONVERTERS",
    "STREAMS",
    "LOSS_STREAM",
    "Packer",
    "feature_converter",
    "pack_examples",
    "Chunks",
    "Pipeline",
    "auto_chunk_len",
    "check_row_lengths",
    "chunk_documents",
    "validation_batches",
    "RunData",
    "build_run_data",
    "row_lengths",
    "target_bytes",
]
