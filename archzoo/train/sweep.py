"""Sweeps: every run of an experiment, each in its own process and its own run directory.

``archzoo sweep experiments/NAME.yaml`` plans the runs (sizes, parameters, FLOPs, a time
estimate from a few measured steps), then starts one ``archzoo run EXPERIMENT --run NAME``
process per run that has not spent its budget, ``jobs`` at a time, each on its own share of the
CPU cores. A run is trained by whichever process holds its directory's lock, so two sweeps on
one directory never train the same run; a finished run is never trained again; an interrupted
one resumes from its checkpoint; a failed one leaves ``error.json`` and ``error.txt`` in its
directory and the others carry on. The sweep directory (the runs' ``out_dir``) holds the run
directories, ``sweep.json`` (which experiment, which runs, their axis values) and the sweep
table (``sweep.csv``, ``sweep.jsonl``, ``sweep.md``).

Processes are started by a launcher: local subprocesses, or `submitit
<https://github.com/facebookincubator/submitit>`_ (SLURM jobs, or its local executor where
there is no SLURM). ``--print-commands`` prints the same commands for any other scheduler.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from archzoo.analysis.runs import SWEEP_FILE, RecordError, is_run_dir, load_run, sweep_manifest, write_text_atomic
from archzoo.config import ConfigError
from archzoo.train.config import Experiment, RunConfig, resolved
from archzoo.train.rundir import _same_run, plugin_change, record_failure

__all__ = [
    "EXIT_BUSY",
    "SWEEP_FILE",
    "Estimate",
    "PlannedRun",
    "SweepResult",
    "estimate_run",
    "format_plan",
    "plan_sweep",
    "run_command",
    "run_sweep",
]

LOG_DIR = "logs"  # one log per run when several run at once
EXIT_BUSY = 75  # `archzoo run --run NAME`: another process holds that run's directory (EX_TEMPFAIL)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What one run will cost, from one real batch and a few timed steps.

    Attributes:
      steps: steps to spend the budget.
      step_seconds: measured seconds per step (after compilation).
      compile_seconds: the first step (trace, compile, run).
      flops: training FLOPs of the whole run.
    """

    steps: int
    step_seconds: float
    compile_seconds: float
    flops: float

    @property
    def seconds(self) -> float:
        return self.compile_seconds + self.steps * self.step_seconds


@dataclasses.dataclass
class PlannedRun:
    """One run of a sweep and where it stands.

    Attributes:
      cfg: its config.
      axes: its axis values' names by dotted key.
      status: ``done`` (budget spent), ``partial`` (interrupted: it resumes), ``failed`` (the
        last attempt failed: it is tried again), ``new``.
      step: steps already trained.
      params, non_embedding_params, active_params: exact parameter counts (active: an MoE
        layer's chosen experts, not all of them).
      estimate: its cost (None until estimated).
    """

    cfg: RunConfig
    axes: dict[str, str]
    status: str
    step: int
    params: int
    non_embedding_params: int
    active_params: int
    estimate: Estimate | None = None

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def remaining_seconds(self) -> float:
        if self.estimate is None or self.status == "done":
            return 0.0
        left = max(self.estimate.steps - self.step, 0)
        return self.estimate.compile_seconds + left * self.estimate.step_seconds


def sweep_dir_of(experiment: Experiment) -> Path:
    """The one directory holding every run of the experiment (the runs' ``out_dir``)."""
    dirs = sorted({c.out_dir for c in experiment.runs})
    if len(dirs) != 1:
        raise ConfigError(f"{experiment.path}: the runs of one sweep share one out_dir; these name {dirs}")
    return Path(dirs[0])


def _status(cfg: RunConfig) -> tuple[str, int]:
    run_dir = cfg.run_dir
    if not is_run_dir(run_dir):
        return "new", 0
    try:
        record = load_run(run_dir)
    except RecordError:
        return "partial", 0
    step = record.metrics[-1]["step"] if record.metrics else 0
    if record.spent_budget:
        return "done", record.summary["steps"]
    return ("failed" if record.error else "partial"), step


def plan_sweep(experiment: Experiment, *, overwrite: bool = False, allow_plugin_change: bool = False) -> list[PlannedRun]:
    """Where each run of ``experiment`` stands, after checking the sweep directory is its own.

    Raises:
      ConfigError: the runs do not share one out_dir; the directory holds another experiment's
        sweep, runs this experiment does not plan, or a run of another config (unless
        ``overwrite``), naming them.
    """
    from archzoo.models import count_params

    sweep_dir = sweep_dir_of(experiment)
    manifest = sweep_manifest(sweep_dir)
    if manifest and manifest.get("experiment_name") != experiment.name:
        raise ConfigError(
            f"{sweep_dir} holds the sweep of experiment {manifest.get('experiment')!r}, not of {str(experiment.path)!r}; "
            "give this experiment another out_dir, or move that sweep away"
        )
    planned = {c.name for c in experiment.runs}
    if sweep_dir.is_dir():
        strangers = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and is_run_dir(p) and p.name not in planned)
        if strangers:
            raise ConfigError(
                f"{sweep_dir} holds runs that {experiment.path} does not plan: {', '.join(strangers[:8])}"
                f"{' ...' if len(strangers) > 8 else ''}; they belong to another experiment (or to axis values "
                "since removed): give this experiment another out_dir, or move them away"
            )
    written = {c.name: resolved(c) for c in experiment.runs if (c.run_dir / "config.yaml").exists()}  # hashes each plug-in's source
    differ = [c.name for c in experiment.runs if c.name in written and not _same_run(c.run_dir, written[c.name])]
    changed = {c.name: plugin_change(c.run_dir, written[c.name]) for c in experiment.runs if c.name in differ}
    plugin_only = [name for name, why in changed.items() if why]
    if plugin_only and not overwrite and not allow_plugin_change:
        raise ConfigError(
            f"{sweep_dir}: a plug-in changed since runs {', '.join(plugin_only[:8])} were trained ({changed[plugin_only[0]]}); "
            "restore it, pass --allow-plugin-change to resume them anyway, or --overwrite to train them afresh"
        )
    if allow_plugin_change:
        differ = [name for name in differ if name not in plugin_only]
    if differ and not overwrite:
        raise ConfigError(
            f"{sweep_dir}: runs {', '.join(differ[:8])} hold another config than {experiment.path} gives them; "
            "pass --overwrite to train them afresh, or give this experiment another out_dir"
        )
    runs = []
    for cfg in experiment.runs:
        status, step = ("new", 0) if cfg.name in differ else _status(cfg)
        n = count_params(cfg.model)
        runs.append(PlannedRun(cfg, experiment.axes.get(cfg.name, {}), status, step, n.total, n.non_embedding, n.active))
    return runs


def write_manifest(experiment: Experiment, runs: list[PlannedRun]) -> None:
    """``sweep.json``: which experiment, its runs in order and their axis values (atomically)."""
    sweep_dir = sweep_dir_of(experiment)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "experiment": str(experiment.path),
        "experiment_name": experiment.name,
        "runs": [r.name for r in runs],
        "axes": {r.name: r.axes for r in runs},
        "estimates": {r.name: dataclasses.asdict(r.estimate) for r in runs if r.estimate is not None},
    }
    write_text_atomic(sweep_dir / SWEEP_FILE, json.dumps(record, indent=2))


# -- estimates ------------------------------------------------------------------------------------


def _estimate_key(cfg: RunConfig) -> str:
    """What a step's time depends on: the model, the data and the batch shape (not lr or seed)."""
    data = resolved(cfg)
    key = {k: data[k] for k in ("model", "data", "objective", "train", "budget")}
    key["train"] = {k: v for k, v in key["train"].items() if k not in ("seed", "progress", "eval_every", "checkpoint_every", "log_every", "keep_checkpoints")}
    key["accumulation"] = cfg.optimizer.accumulation_steps
    return json.dumps(key, sort_keys=True)


def estimate_run(cfg: RunConfig, *, timed_steps: int = 2, counted_batches: int = 256) -> Estimate:
    """Times a few training steps of ``cfg`` on its first real batch, and counts the steps its
    budget takes by walking its batches: exactly when the budget ends within
    ``counted_batches``, else extrapolated from their mean."""
    from archzoo.features.run_data import build_run_data
    from archzoo.models import build
    from archzoo.train.flops import train_flops_per_token
    from archzoo.train.loop import _advance, _batch_counts, _budget_spent
    from archzoo.train.step import time_train_steps

    data = build_run_data(cfg.data, cfg.objective, cfg.model, cfg.train, accumulation_steps=cfg.optimizer.accumulation_steps)
    budget = cfg.budget
    first = batch = data.pipeline.next_batch()
    counters = {"step": 0, "target_tokens": 0, "tokens": 0, "flops": 0.0}
    per_token = train_flops_per_token(cfg.model, data.lengths)
    while True:
        counters = _advance(counters, *_batch_counts(batch, data.loss_stream, per_token), per_token)
        if _budget_spent(budget.kind, counters) >= budget.value or counters["step"] >= counted_batches:
            break
        batch = data.pipeline.next_batch()
    spent = _budget_spent(budget.kind, counters)
    steps = counters["step"] if spent >= budget.value else math.ceil(budget.value / spent * counters["step"])
    flops = counters["flops"] * steps / counters["step"]
    model = build(cfg.model, seed=cfg.train.seed)
    first_seconds, times = time_train_steps(model, cfg.optimizer, first, timed_steps, cfg.optimizer.lr)
    step_seconds = min(times)
    return Estimate(steps, step_seconds, max(first_seconds - step_seconds, 0.0), flops)


def estimate_runs(runs: list[PlannedRun], known: dict | None = None, report=None) -> None:
    """Fills in every run's estimate, timing each distinct (model, data, batch) once; estimates
    in ``known`` (``sweep.json`` of an earlier plan, by run name) are reused."""
    cache: dict[str, Estimate] = {}
    for r in runs:
        old = (known or {}).get(r.name)
        if old is not None:
            r.estimate = Estimate(**old)
            continue
        key = _estimate_key(r.cfg)
        if key not in cache:
            if report:
                report(f"estimating {r.name} ...")
            cache[key] = estimate_run(r.cfg)
        r.estimate = cache[key]


# -- the plan, as the user reads it ----------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_plan(experiment: Experiment, runs: list[PlannedRun], jobs: int) -> str:
    """The plan as a table: one row per run, then the totals."""
    axis_keys = list(dict.fromkeys(k for r in runs for k in r.axes))
    header = ["run", "family", "params", "non-emb", "active", "steps", "FLOPs", "est. time", "status"]
    rows = [header]
    for r in runs:
        mask = r.cfg.model.mask
        fam = r.cfg.model.family + ("" if mask == "causal" else f" ({mask})")
        e = r.estimate
        status = r.status if r.status != "partial" else f"resume at step {r.step}"
        rows.append([
            r.name, fam, f"{r.params:,}", f"{r.non_embedding_params:,}", f"{r.active_params:,}",
            f"{e.steps:,}" if e else "-", f"{e.flops:.2e}" if e else "-", _duration(r.remaining_seconds) if e else "-",
            status,
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i in (0, 1, 8) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    todo = [r for r in runs if r.status != "done"]
    total = sum(r.remaining_seconds for r in runs)
    head = (
        f"sweep {experiment.name}: {len(runs)} runs in {sweep_dir_of(experiment)} "
        f"(axes: {', '.join(axis_keys) or 'none'}); {len(runs) - len(todo)} done, {len(todo)} to train"
    )
    if not todo:
        tail = "nothing to train"
    elif not all(r.estimate for r in todo):
        tail = "no time estimate (--no-estimate)"
    else:
        tail = (
            f"estimated time: {_duration(total / max(min(jobs, len(todo)), 1))} with {jobs} job(s) "
            "(from 2 timed steps per model; evaluation, checkpoints and process start add to it)"
        )
    return "\n".join([head, *lines, tail])


# -- launching -------------------------------------------------------------------------------------


def run_command(experiment: Experiment, name: str, overrides: list[str], *, python: bool = False) -> list[str]:
    """The command that trains one run of the experiment (``archzoo run EXPERIMENT --run NAME``)."""
    head = [sys.executable, "-m", "archzoo.cli"] if python else ["archzoo"]
    return [*head, "run", str(experiment.path), *overrides, "--run", name]


def _cpu_shares(jobs: int) -> list[set[int]]:
    """The cores of this process, divided into ``jobs`` disjoint shares (the last ones may
    share when there are fewer cores than jobs)."""
    cores = sorted(os.sched_getaffinity(0))
    per = max(len(cores) // jobs, 1)
    return [set(cores[(i * per) % len(cores):][:per]) for i in range(jobs)]


def _thread_env(threads: int) -> dict:
    """BLAS and OpenMP pools of a child sized to its share of cores (XLA's CPU pool follows the
    process's CPU affinity, which the launcher sets)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTEROP_THREADS", "TF_NUM_INTRAOP_THREADS"):
        env[var] = str(threads)
    return env


def _die_with_parent() -> None:
    """In a child, before exec: SIGTERM when the sweep process dies (even by kill -9), so the
    run saves its checkpoint and frees its directory instead of training on unwatched."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _LocalJob:
    """One run as a local subprocess pinned to a share of the cores."""

    def __init__(self, command: list[str], cores: set[int], log: Path | None):
        self._log = open(log, "ab") if log is not None else None

        def setup():
            os.sched_setaffinity(0, cores)
            _die_with_parent()

        with warnings.catch_warnings():
            # the child only pins itself and execs a fresh `archzoo run`: none of JAX's threads is needed in it
            warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
            self.process = subprocess.Popen(
                command, env=_thread_env(len(cores)), preexec_fn=setup,
                stdout=self._log, stderr=subprocess.STDOUT if self._log else None,
            )

    def poll(self) -> int | None:
        rc = self.process.poll()
        if rc is not None and self._log:
            self._log.close()
        return rc

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.process.send_signal(signal.SIGTERM)


class _SubmititJob:
    """One run as a submitit job (SLURM, or submitit's local executor)."""

    def __init__(self, executor, command: list[str]):
        import submitit

        self.job = executor.submit(submitit.helpers.CommandFunction(command, verbose=False))

    def poll(self) -> int | None:
        if not self.job.done():
            return None
        try:
            self.job.result()
        except Exception as e:  # submitit re-raises the job's failure here
            text = str(e)
            return EXIT_BUSY if f"status {EXIT_BUSY}" in text or f"code {EXIT_BUSY}" in text else 1
        return 0

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.job.cancel()


def submitit_executor(folder: Path, params: dict):
    """A submitit AutoExecutor writing its logs under ``folder`` (SLURM where ``srun`` is
    found, submitit's local executor otherwise; ``cluster=local`` forces the latter)."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher submitit needs the submitit package: pip install 'archzoo[slurm]'") from None
    params = dict(params)
    executor = submitit.AutoExecutor(folder=str(folder), cluster=params.pop("cluster", None))
    try:
        executor.update_parameters(**params)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"--launcher-arg: {e}") from None
    return executor


@dataclasses.dataclass
class SweepResult:
    """How a sweep ended: runs it trained to the end, found done, saw fail, or found held by
    another process; ``stopped`` when a SIGTERM ended it early."""

    trained: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    busy: list[str] = dataclasses.field(default_factory=list)
    stopped: bool = False


def _failure_message(run: PlannedRun, rc: int, log: Path | None) -> str:
    """The failed run's own message (``error.json``), or how its process ended (a kill, an
    out-of-memory), which is then recorded in its directory."""
    path = run.cfg.run_dir / "error.json"
    if path.exists():
        with contextlib.suppress(OSError, json.JSONDecodeError):
            return json.loads(path.read_text())["message"]
    how = f"killed by signal {signal.Signals(-rc).name}" if rc < 0 and -rc in signal.Signals._value2member_map_ else f"exit status {rc}"
    message = f"its process ended with {how} before recording an error" + (f"; its output is in {log}" if log else "")
    record_failure(run.cfg.run_dir, resolved(run.cfg), "ProcessExit", message, message + "\n")
    return message


def run_sweep(
    experiment: Experiment,
    runs: list[PlannedRun],
    overrides: list[str],
    *,
    jobs: int = 1,
    launcher: str = "local",
    launcher_params: dict | None = None,
    overwrite: bool = False,
    progress: bool = True,
    allow_plugin_change: bool = False,
) -> SweepResult:
    """Trains every run of the plan that has not spent its budget, ``jobs`` at a time.

    Runs whose directory another process holds are tried again once the others are done, then
    reported as busy. A SIGTERM stops the runs under way (each saves its checkpoint) and starts
    no more.
    """
    sweep_dir = sweep_dir_of(experiment)
    result = SweepResult(skipped=[r.name for r in runs if r.status == "done"])
    queue = [r for r in runs if r.status != "done"]
    if not queue:
        return result
    executor = submitit_executor(sweep_dir / "submitit", launcher_params or {}) if launcher == "submitit" else None
    shares = _cpu_shares(jobs)
    free = list(range(jobs))
    quiet = jobs > 1 or launcher != "local"
    extra = [
        *overrides, "--no-table", *(["--overwrite"] if overwrite else []), *(["--no-progress"] if quiet or not progress else []),
        *(["--allow-plugin-change"] if allow_plugin_change else []),
    ]
    if quiet:
        (sweep_dir / LOG_DIR).mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[PlannedRun, object, int, Path | None]] = {}
    retried: set[str] = set()
    stop = {"sigterm": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(sigterm=True))
    bar = _SweepProgress(runs, jobs, enabled=progress)
    try:
        while queue or running:
            if stop["sigterm"] and not result.stopped:
                result.stopped = True
                for _, job, _, _ in running.values():
                    job.stop()
                queue.clear()
            while queue and free and not result.stopped:
                run = queue.pop(0)
                slot = free.pop(0)
                log = sweep_dir / LOG_DIR / f"{run.name}.log" if quiet else None
                command = run_command(experiment, run.name, extra, python=True)
                job = _SubmititJob(executor, command) if executor else _LocalJob(command, shares[slot], log)
                running[run.name] = (run, job, slot, log)
                bar.started(run.name)
            time.sleep(0.2)
            for name, (run, job, slot, log) in list(running.items()):
                rc = job.poll()
                if rc is None:
                    continue
                del running[name]
                free.append(slot)
                if rc == 0:
                    run.status = "done"
                    result.trained.append(name)
                elif rc == EXIT_BUSY and name not in retried and not result.stopped:
                    retried.add(name)
                    queue.append(run)  # held by another process: once more, after the others
                elif rc == EXIT_BUSY:
                    result.busy.append(name)
                elif result.stopped:
                    run.status = "partial"
                else:
                    run.status = "failed"
                    result.failed[name] = _failure_message(run, rc, log)
                bar.ended(run)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for _, job, _, _ in running.values():
            job.stop()
        bar.close()
    return result


class _SweepProgress:
    """The whole sweep's progress: runs done of total, the runs under way, and an ETA from the
    estimates, scaled by how long the runs finished so far took against theirs.

    With one job it is a line before and after each run (whose own bar goes between); with
    several (their bars off) it is one live bar.
    """

    def __init__(self, runs: list[PlannedRun], jobs: int, enabled: bool):
        self.runs, self.jobs, self.enabled = runs, jobs, enabled
        self.now: dict[str, float] = {}
        self.left = {r.name for r in runs if r.status != "done"}  # still to end in this sweep
        self.actual = self.expected = 0.0
        self.bar = None
        if enabled and jobs > 1:
            from tqdm import tqdm

            self.bar = tqdm(total=len(runs), initial=self._done(), desc="sweep", unit="run", dynamic_ncols=True,
                            bar_format="{desc}: {n_fmt}/{total_fmt} runs |{bar}| {postfix}", leave=True)

    def _done(self) -> int:
        return sum(r.status == "done" for r in self.runs)

    def _eta(self) -> str:
        ratio = self.actual / self.expected if self.expected else 1.0
        left = sum(r.remaining_seconds for r in self.runs if r.name in self.left) * ratio / self.jobs
        return _duration(left)

    def started(self, name: str) -> None:
        self.now[name] = time.perf_counter()
        self._show(f"training {name}")

    def ended(self, run: PlannedRun) -> None:
        start = self.now.pop(run.name, None)
        self.left.discard(run.name)
        if run.status == "done" and start is not None and run.estimate is not None:
            self.actual += time.perf_counter() - start
            self.expected += run.estimate.seconds
        if self.bar is not None and run.status == "done":
            self.bar.update(1)
        took = f" in {_duration(time.perf_counter() - start)}" if start is not None else ""
        self._show(f"{run.name} {run.status}{took}")

    def _show(self, event: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(f"now: {', '.join(self.now) or '-'} · ETA {self._eta()}")
        else:
            print(f"[sweep {self._done()}/{len(self.runs)} done · ETA {self._eta()}] {event}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def check_launcher_params(pairs: list[str]) -> dict:
    """``--launcher-arg key=value`` strings as submitit parameters (numbers read as numbers)."""
    import yaml

    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--launcher-arg: expected KEY=VALUE, got {pair!r}")
        params[key] = yaml.safe_load(value)
    return params


def format_commands(experiment: Experiment, runs: list[PlannedRun], overrides: list[str]) -> str:
    """One shell command per run still to train, for any scheduler."""
    return "\n".join(shlex.join(run_command(experiment, r.name, overrides)) for r in runs if r.status != "done")

