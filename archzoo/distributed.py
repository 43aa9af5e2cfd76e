"""Several processes training one run: ``jax.distributed`` joins them, one mesh spans their
devices, each process reads its own shard of the training documents, and process 0 writes the
run directory (metrics, records, the tokenizer) while every process takes part in the
checkpoints (orbax writes each process's shards).

Where the settings come from, first found wins: the ``ARCHZOO_COORDINATOR`` (``host:port`` of
process 0), ``ARCHZOO_NUM_PROCESSES`` and ``ARCHZOO_PROCESS_ID`` environment variables, then the
run config's ``distributed`` section (:class:`DistributedConfig`). A ``distributed`` section
with no coordinator anywhere lets JAX detect the cluster (SLURM, Open MPI, TPU pods).

The processes also agree, through the coordinator's key-value store (host memory, no device
work), on what each step's batch holds: each posts its rows' token counts and whether it was
asked to stop, so the budget counters and a SIGTERM stop are the same on every process without
waiting for the device.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass

import jax

from archzoo.config import ConfigError, invalid

__all__ = ["DistributedConfig", "DistributedError", "initialize", "settings", "exchange", "announce_failure"]


class DistributedError(RuntimeError):
    """The processes of a run could not be joined (an unreachable coordinator, late start)."""


@dataclass(frozen=True)
class DistributedConfig:
    """How this process joins the others of a run (the environment overrides each key).

    Attributes:
      coordinator: ``host:port`` where process 0 serves the coordination service.
      num_processes: how many processes train the run.
      process_id: this process's index in ``[0, num_processes)``; usually given per process by
        ``ARCHZOO_PROCESS_ID`` rather than in a shared file.
      timeout_s: how long to wait for the coordinator and for every process to join.
      heartbeat_s: how long the coordination service waits to hear from a process before it
        counts it dead and ends the others (JAX's ``heartbeat_timeout_seconds``): after a kill -9
        of one process, the rest end within about this long instead of waiting for it.
    """

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    timeout_s: int = 120
    heartbeat_s: int = 100

    def __post_init__(self):
        if self.coordinator is not None:
            _host_port(self.coordinator, "distributed.coordinator")
        if self.num_processes is not None and self.num_processes < 1:
            raise invalid("distributed.num_processes", f"must be >= 1, got {self.num_processes}")
        if self.process_id is not None and self.process_id < 0:
            raise invalid("distributed.process_id", f"must be >= 0, got {self.process_id}")
        if self.timeout_s < 1:
            raise invalid("distributed.timeout_s", f"must be >= 1, got {self.timeout_s}")
        if self.heartbeat_s < 1:
            raise invalid("distributed.heartbeat_s", f"must be >= 1, got {self.heartbeat_s}")


def _host_port(address: str, key: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise invalid(key, f"expected host:port (process 0's address and a free port), got {address!r}")
    return host, int(port)


def settings(cfg: DistributedConfig | None) -> DistributedConfig | None:
    """The settings in force: the environment's ``ARCHZOO_*`` variables over ``cfg``; None when
    neither asks for several processes."""
    env = {
        "coordinator": os.environ.get("ARCHZOO_COORDINATOR"),
        "num_processes": os.environ.get("ARCHZOO_NUM_PROCESSES"),
        "process_id": os.environ.get("ARCHZOO_PROCESS_ID"),
    }
    if cfg is None and not any(env.values()):
        return None
    values = {} if cfg is None else asdict(cfg)
    for key, value in env.items():
        if value is None:
            continue
        if key != "coordinator":
            if not value.isdigit():
                raise ConfigError(f"ARCHZOO_{key.upper()}: expected a non-negative integer, got {value!r}")
            value = int(value)
        values[key] = value
    return DistributedConfig(**values)


def initialize(cfg: DistributedConfig | None) -> None:
    """Joins this process to the run's others (``jax.distributed.initialize``), once.

    Before asking JAX, a process other than 0 waits (up to ``timeout_s``) until the coordinator
    accepts connections: JAX itself aborts the whole process when it cannot reach it.

    Raises:
      DistributedError: the coordinator cannot be reached in time, or JAX already started in
        this process (the processes must be joined before any JAX work).
      ConfigError: missing or inconsistent settings.
    """
    cfg = settings(cfg)
    if cfg is None or jax.distributed.is_initialized():
        return
    if cfg.coordinator is None:  # the cluster's own environment (SLURM, MPI, TPU) says it all
        jax.distributed.initialize(initialization_timeout=cfg.timeout_s, heartbeat_timeout_seconds=cfg.heartbeat_s)
        return
    if cfg.num_processes is None or cfg.process_id is None:
        raise ConfigError(
            f"distributed: coordinator {cfg.coordinator} is given but not "
            f"{'num_processes' if cfg.num_processes is None else 'process_id'}; set it (ARCHZOO_NUM_PROCESSES, ARCHZOO_PROCESS_ID)"
        )
    if cfg.process_id >= cfg.num_processes:
        raise ConfigError(f"distributed.process_id={cfg.process_id} is not below num_processes={cfg.num_processes}")
    if cfg.process_id != 0:
        _wait_for(cfg.coordinator, cfg.timeout_s, cfg.process_id, cfg.num_processes)
    try:
        jax.distributed.initialize(
            cfg.coordinator, cfg.num_processes, cfg.process_id, initialization_timeout=cfg.timeout_s, heartbeat_timeout_seconds=cfg.heartbeat_s
        )
    except RuntimeError as e:
        raise DistributedError(
            f"process {cfg.process_id} of {cfg.num_processes} cannot join the run: {e}; the processes must be joined "
            "before any JAX work (set ARCHZOO_COORDINATOR, ARCHZOO_NUM_PROCESSES and ARCHZOO_PROCESS_ID, or call "
            "archzoo.distributed.initialize first)"
        ) from None


def _wait_for(address: str, timeout_s: int, process_id: int, num_processes: int) -> None:
    host, port = _host_port(address, "distributed.coordinator")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"process {process_id} of {num_processes}: the coordinator at {address} could not be reached within "
                    f"{timeout_s} s ({e.strerror or e}); start process 0 there, or check distributed.coordinator "
                    "(ARCHZOO_COORDINATOR)"
                ) from None
            time.sleep(0.2)


def _client():
    from jax._src import distributed  # the client orbax uses too; jax exposes no public handle

    return distributed.global_state.client


def announce_failure(message: str) -> None:
    """Tells the other processes of the run that this one failed (``message`` names why): each
    stops at its next :func:`exchange` with that message instead of waiting for this process
    until the exchange's timeout. Does nothing in a run of one process or when the coordinator
    is already gone."""
    if jax.process_count() == 1:
        return
    try:
        _client().key_value_set(f"archzoo/failed/{jax.process_index()}", message[:2000], allow_overwrite=True)
    except Exception:  # the coordinator went first: the others learn it from their own client
        pass


def _failures(client) -> list[tuple[int, str]]:
    """``(process, message)`` of every process that announced a failure."""
    return sorted((int(key.rsplit("/", 1)[1]), value) for key, value in client.key_value_dir_get("archzoo/failed/"))


_exchanges = [0]  # how many exchanges this process made: every process makes them in the same order


def exchange(tag: str, value, timeout_s: int = 600) -> list:
    """Every process's ``value`` (JSON data) for the next exchange, in process order: each posts
    its own to the coordinator's key-value store and reads the others' (host memory, no device
    work). One process: ``[value]``.

    Every process must call it at the same points, in the same order (``tag`` names the point
    in errors and keys). It waits up to ``timeout_s`` for the others, and stops as soon as one
    of them announces a failure (:func:`announce_failure`).

    Raises:
      DistributedError: another process failed (its message is quoted), the coordinator is
        gone, or an answer did not come within ``timeout_s``.
    """
    n = jax.process_count()
    if n == 1:
        return [value]
    client = _client()
    me, seq = jax.process_index(), _exchanges[0]
    _exchanges[0] += 1
    client.key_value_set(f"archzoo/{seq}/{me}", json.dumps(value))
    deadline = time.monotonic() + timeout_s

    def read(i: int):
        while True:
            try:
                answer = client.blocking_key_value_get(f"archzoo/{seq}/{i}", 1000)
            except Exception as e:  # not yet (a deadline of its own), or the coordinator is gone
                try:
                    failed = _failures(client)
                except Exception:
                    raise DistributedError(f"process {me}: the coordinator went away at {tag} ({e})") from None
                if failed:
                    who, why = failed[0]
                    raise DistributedError(f"process {me} stops at {tag}: process {who} failed: {why}") from None
                if time.monotonic() >= deadline:
                    raise DistributedError(f"process {me}: no answer from process {i} at {tag} within {timeout_s} s ({e})") from None
                continue
            return json.loads(answer)

    values = [value if i == me else read(i) for i in range(n)]
    if seq >= 2:  # every process has read exchange seq - 2 before posting seq - 1, which this one has read
        client.key_value_delete(f"archzoo/{seq - 2}/{me}")
    return values
