"""A training run, top to bottom: build the state, then a plain loop of steps with logging,
validation and checkpoints (STYLE.md "Modules and the train loop").

Resume: the same command on the same run directory restores the last checkpoint (parameters,
optimizer, data position and budget counters) and continues bit for bit. SIGTERM ends the run
after the step under way: it is scored, logged and saved, and the summary in ``run.json`` says
``stopped_by: sigterm``. One process at a time trains in a run directory. A NaN or infinite
loss stops the run, naming the step, and keeps the last good checkpoint.
"""

from __future__ import annotations

import math
import signal
import time
import traceback

import jax
import numpy as np
from flax import nnx

from archzoo.analysis.runs import write_record
from archzoo.config import ConfigError, to_dict
from archzoo.distributed import announce_failure, exchange, initialize
from archzoo.features.run_data import RunData, build_run_data
from archzoo.layers.kernels import check_backend
from archzoo.models import count_params
from archzoo.sharding import Layout, MeshConfig
from archzoo.train.checkpoints import RunCheckpoints
from archzoo.train.config import RunConfig, resolved
from archzoo.train.flops import train_flops_per_token
from archzoo.train.optimizer import learning_rate
from archzoo.train.rundir import (
    MetricsWriter,
    clear_failure,
    completed_summary,
    hold_run_dir,
    prepare_run_dir,
    record_failure,
)
from archzoo.train.step import init_training

__all__ = ["TrainingError", "train"]


class TrainingError(RuntimeError):
    """A run that had to stop (non-finite loss); says where its last good checkpoint is."""


def _budget_spent(kind: str, counters: dict) -> float:
    return float(counters["step" if kind == "steps" else kind])


def _trim_to_target_budget(batch: dict, stream: str, allowed: int) -> dict:
    """Zeroes the loss weights of target tokens past ``allowed`` (in row order), so a
    target-token budget ends exactly."""
    w = batch[f"{stream}_weights"]
    flat = w.reshape(-1)
    keep = np.cumsum(flat > 0) <= allowed
    batch = dict(batch)
    batch[f"{stream}_weights"] = np.where(keep, flat, 0.0).reshape(w.shape).astype(w.dtype)
    return batch


def _batch_counts(batch: dict, stream: str, streams) -> tuple[int, dict[str, int]]:
    """A batch's target tokens (of the loss ``stream``) and real tokens per stream."""
    targets = int(np.count_nonzero(batch[f"{stream}_weights"]))
    return targets, {s: int(np.count_nonzero(batch[f"{s}_segment_ids"])) for s in streams}


def _advance(counters: dict, targets: int, tokens: dict[str, int], per_token: dict[str, float]) -> dict:
    """The budget counters after a step of ``targets`` target tokens and ``tokens`` real tokens
    per stream, each stream's token costing ``per_token`` training FLOPs."""
    return {
        "step": counters["step"] + 1,
        "target_tokens": counters["target_tokens"] + targets,
        "tokens": counters["tokens"] + sum(tokens.values()),
        "flops": counters["flops"] + float(sum(n * per_token[s] for s, n in tokens.items())),
    }


def _layer_metrics(metrics: dict) -> dict:
    """The layers' auxiliary loss and statistics of a step for ``metrics.jsonl`` (none for a
    dense model): ``aux_loss``, and each statistic by its name (``decoder/3/dropped_fraction``;
    per-expert ones as lists)."""
    stats = jax.device_get(metrics["stats"])
    if not stats:
        return {}
    out = {"aux_loss": float(metrics["aux_loss"])}
    for name, value in stats.items():
        value = np.asarray(value)
        out[name] = float(value) if value.ndim == 0 else [float(v) for v in value.reshape(-1)]
    return out


def _run_facts(cfg: RunConfig, data: RunData, n) -> dict:
    """The facts of ``run.json``: what a plot or a fit needs to know besides the metrics."""
    facts = {
        "family": cfg.model.family,
        "mask": to_dict(cfg.model.mask),
        "objective": cfg.objective.label,
        "params": n.total,
        "non_embedding_params": n.non_embedding,
        "active_params": n.active,
    }
    # per token of the stream with the loss (decoder tokens of an encoder-decoder), and of the others
    for stream, flops in train_flops_per_token(cfg.model, data.lengths).items():
        facts["flops_per_token" if stream == data.loss_stream else f"flops_per_{stream}_token"] = flops
    facts.update(
        vocab_size=data.tokenizer.vocab_size,
        # every training row starts with this token (decoders: before inputs ++ targets); a
        # prompt for generation should start with it too
        start_id=data.special.pad,
        row_lengths=data.lengths,
        chunk_len=data.chunk_len,
        budget={"kind": cfg.budget.kind, "value": cfg.budget.value},
    )
    return facts


def _task_evaluation(cfg: RunConfig):
    """The run's tasks and evaluation options (``eval`` section), or None."""
    if cfg.eval is None:
        return None
    from archzoo.analysis.evaluate import EvalOptions, check_shots
    from archzoo.tasks.task import load_task

    e = cfg.eval
    opts = EvalOptions(shots=e.shots, seed=e.seed, batch_size=e.batch_size, bootstrap=e.bootstrap)
    tasks = [load_task(spec, examples=e.examples, seed=e.seed) for spec in e.tasks]
    check_shots(tasks, opts)
    return tasks, opts


def _layout(cfg: RunConfig) -> Layout | None:
    """The run's mesh over every device (None without a ``mesh`` section), checked against the
    batch: its rows must split evenly over the mesh's batch axes and the processes."""
    if cfg.mesh is None and jax.process_count() == 1:
        return None
    layout = Layout.of(cfg.mesh or MeshConfig(data=-1))  # several processes: data parallel by default
    layout.check_rows(cfg.train.batch_size, "train.batch_size", jax.process_count())
    return layout


def _own_pipeline_state(cfg: RunConfig, meta: dict, processes: int, me: int) -> dict:
    """This process's data position from a checkpoint's metadata.

    Raises:
      ConfigError: the checkpoint was written by another number of processes (each read its own
        shard of the documents, so the data order cannot go on with another count).
    """
    saved = meta.get("pipelines", [meta["pipeline"]])
    if len(saved) != processes:
        raise ConfigError(
            f"{cfg.run_dir}: its checkpoints were written by {len(saved)} process{'es' if len(saved) > 1 else ''}, "
            f"each reading its own shard of the data; resume it with {len(saved)} (this is {processes}), or pass --overwrite"
        )
    return saved[me]


def _progress_bar(cfg: RunConfig, counters: dict, progress: bool | None):
    if not (progress if progress is not None else cfg.train.progress):
        return None
    from tqdm import tqdm

    budget = cfg.budget
    return tqdm(
        total=budget.value,
        initial=_budget_spent(budget.kind, counters),
        desc=cfg.name,
        unit=budget.kind.replace("_", " "),
        dynamic_ncols=True,
        leave=True,
        mininterval=1.0,
    )


def _non_finite_error(
    cfg: RunConfig, step: int, loss: float, grad_norm: float, last_checkpoint: int | None
) -> TrainingError:
    checkpoints = cfg.run_dir / "checkpoints"
    if last_checkpoint is not None:
        where = f"the last good checkpoint is step {last_checkpoint} in {checkpoints}"
    else:
        where = "no checkpoint was saved before it"
    what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {grad_norm}"
    return TrainingError(
        f"{cfg.name}: {what} at step {step}; {where}. The same command would replay it exactly: "
        "change the config (lower optimizer.lr, check the data) and rerun with --overwrite"
    )


def train(cfg: RunConfig, *, overwrite: bool = False, progress: bool | None = None, allow_plugin_change: bool = False) -> dict:
    """Trains one run to its budget (or to a SIGTERM), writing its run directory.

    Args:
      cfg: the run.
      overwrite: replace a run directory that holds a different config.
      progress: show a progress bar (default: ``cfg.train.progress``).
      allow_plugin_change: resume a run although a plug-in's source changed since it started
        (otherwise refused, naming the plug-in).

    Returns:
      the run's summary (also written to ``run.json``, beside its facts). A run of this config
      that already spent its budget in ``cfg.run_dir`` is not trained again: its summary is
      returned as it stands (unless ``overwrite``).

    A run that fails after taking its directory leaves ``error.json`` (type, message) and
    ``error.txt`` (the traceback) there; the next attempt removes them.

    Raises:
      RunDirError: the directory holds another run, another process trains in it, it cannot be
        written, or its config.yaml is broken.
      TrainingError: the loss became NaN or infinite.
    """
    initialize(cfg.distributed)
    try:
        if jax.process_index() != 0:  # process 0 holds and writes the directory; the others follow it
            done = exchange("done", None)[0]
            return done if done is not None else _train(cfg, overwrite, progress, allow_plugin_change)
        with hold_run_dir(cfg.run_dir):
            config = resolved(cfg)
            done = None if overwrite else completed_summary(cfg.run_dir, config)
            exchange("done", done)
            if done is not None:
                return done
            try:
                return _train(cfg, overwrite, progress, allow_plugin_change)
            except Exception as e:
                record_failure(cfg.run_dir, config, type(e).__name__, str(e), "".join(traceback.format_exception(e)))
                raise
    except BaseException as e:  # the other processes stop at their next exchange, naming this failure
        announce_failure(f"{type(e).__name__}: {e}")
        raise


def _train(cfg: RunConfig, overwrite: bool, progress: bool | None, allow_plugin_change: bool = False) -> dict:
    """:func:`train`, once process 0 holds the run directory (every process runs it)."""
    run_dir, budget = cfg.run_dir, cfg.budget
    wall_start = time.perf_counter()
    primary, processes = jax.process_index() == 0, jax.process_count()
    check_backend(cfg.model.attention.backend)
    layout = _layout(cfg)

    # -- data, checked against the config before the run directory takes it ----------------------
    data = build_run_data(
        cfg.data, cfg.objective, cfg.model, cfg.train, accumulation_steps=cfg.optimizer.accumulation_steps
    )
    evaluation = _task_evaluation(cfg)  # its tasks read (and checked) before the directory is taken
    if primary:
        resuming = prepare_run_dir(run_dir, resolved(cfg), overwrite, allow_plugin_change)
        clear_failure(run_dir)
        data.tokenizer.save(run_dir / data.tokenizer.file_name)
    resuming = exchange("prepared", resuming if primary else None)[0]
    pipeline, stream = data.pipeline, data.loss_stream
    rows = cfg.train.batch_size // processes  # this process's block of each validation batch
    me = jax.process_index()

    # -- model and optimizer, sharded over the mesh when the run has one ------------------------
    t = init_training(cfg.model, cfg.optimizer, seed=cfg.train.seed, layout=layout)
    graphdef, params, rest, opt_state = t.graphdef, t.params, t.rest, t.opt_state
    train_step, eval_step, put_batch, model = t.train_step, t.eval_step, t.put_batch, t.model
    validation = [put_batch({k: v[me * rows : (me + 1) * rows] for k, v in b.items()}, 0) for b in data.validation]
    moe = cfg.model.moe
    noisy = moe is not None and (moe.jitter > 0 or moe.noise > 0)

    def step_key(step: int):  # the routers' training noise: a function of the seed and the step, so resume replays it
        return jax.random.fold_in(jax.random.key(cfg.train.seed), step) if noisy else None

    n = count_params(model)
    facts = _run_facts(cfg, data, n)
    if primary:
        write_record(run_dir, facts)

    counters = {"step": 0, "target_tokens": 0, "tokens": 0, "flops": 0.0}
    manager = RunCheckpoints(run_dir / "checkpoints", cfg.train.keep_checkpoints, primary=primary)
    restored = manager.restore_latest({"params": params, "opt_state": opt_state}) if resuming else None
    resume_step = restored.step if restored is not None else None
    if restored is not None:
        params, opt_state = restored.state["params"], restored.state["opt_state"]
        counters = restored.meta["counters"]
        pipeline.restore(_own_pipeline_state(cfg, restored.meta, processes, me))
        # the wall time of the attempts before, up to that checkpoint (none recorded before archzoo kept it)
        wall_start -= restored.meta.get("wall_seconds", 0.0)
    writer = MetricsWriter(run_dir, resume_step if resume_step is not None else (0 if resuming else None)) if primary else None

    def save(step: int) -> None:
        meta = {"counters": counters, "pipeline": pipeline.state(), "wall_seconds": time.perf_counter() - wall_start}
        if processes > 1:  # each process's own position in its shard, in process order
            meta["pipelines"] = exchange("pipeline", meta["pipeline"])
        manager.save(step, {"params": params, "opt_state": opt_state}, meta)

    def evaluate() -> dict:
        if not data.validation:
            return {}
        loss_sum = tokens = 0.0
        for b in validation:
            s, t = eval_step(params, rest, b)
            loss_sum, tokens = loss_sum + float(s), tokens + float(t)
        loss = loss_sum / max(tokens, 1.0)
        return {
            "val_loss_nats": loss,
            "val_bits_per_byte": loss_sum / math.log(2) / max(data.validation_bytes, 1),
        }

    def evaluate_tasks(step: int) -> None:
        """Scores the tasks at ``step`` and writes them. With several processes, each holding part
        of the parameters, every process gathers a whole copy to its host, process 0 evaluates it
        alone on its own device, and the others wait for it at an exchange (a failure there is
        announced, so they do not wait out the timeout)."""
        from archzoo.analysis.evaluate import evaluate_model, write_results

        tasks, opts = evaluation
        state = (params, rest)
        if processes > 1:
            from jax.experimental import multihost_utils

            state = multihost_utils.process_allgather(state, tiled=True)
        if primary:
            model = nnx.merge(graphdef, *state)
            row_len = max(data.lengths.values())
            records, samples = evaluate_model(model, data.tokenizer, tasks, opts, start_id=data.special.pad, row_len=row_len, step=step)
            write_results(run_dir, records, samples, step)
        exchange("tasks", None, timeout_s=24 * 3600)

    per_token = train_flops_per_token(cfg.model, data.lengths)  # per real token of each stream

    def advance(counters: dict, batch: dict, sigterm: bool) -> tuple[dict, dict, int, bool]:
        """The counters after a step on ``batch`` (this process's rows; with several processes
        the others' counts come through the coordinator), the batch trimmed to a target-token
        budget, its real tokens, and whether any process was asked to stop."""
        targets, tokens = _batch_counts(batch, stream, per_token)
        every = exchange("step", {"targets": targets, "tokens": tokens, "sigterm": sigterm})
        if budget.kind == "target_tokens":  # exactly the budget, in global row order: process 0's rows first
            allowed = int(budget.value - counters["target_tokens"])
            before = sum(c["targets"] for c in every[:me])
            batch = _trim_to_target_budget(batch, stream, max(allowed - before, 0))
            targets = min(sum(c["targets"] for c in every), allowed)
        else:
            targets = sum(c["targets"] for c in every)
        tokens = {s: sum(c["tokens"][s] for c in every) for s in per_token}
        return _advance(counters, targets, tokens, per_token), batch, sum(tokens.values()), any(c["sigterm"] for c in every)

    stop = {"sigterm": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(sigterm=True))
    bar = _progress_bar(cfg, counters, progress) if primary else None
    last_eval: dict = {}
    stopped_by, val_step = None, None
    # The host never waits on the device for a step it has not dispatched the next one after: a
    # step's loss is read once the following step is queued, except at the steps that validate,
    # save or end, which are read at once (their parameters are needed before the next update).
    pending = None  # the dispatched step not read yet: (metrics, its record so far, tokens, dispatched at)
    busy_since = time.perf_counter()  # when the device last started on work the host waits for

    def finish(p) -> dict:
        """Reads step ``p``'s metrics from the device: its record, after the finiteness check."""
        nonlocal busy_since
        metrics, known, tokens, dispatched = p
        loss, grad_norm = float(metrics["loss_nats"]), float(metrics["grad_norm"])
        now = time.perf_counter()
        seconds, busy_since = now - max(busy_since, dispatched), now
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            raise _non_finite_error(cfg, known["step"], loss, grad_norm, manager.latest_step())
        return {**known, "loss_nats": loss, "grad_norm": grad_norm, "tokens_per_s": tokens / seconds, **_layer_metrics(metrics)}

    def log(record: dict, last: bool = False) -> None:
        if writer is None:  # only process 0 writes
            return
        if record["step"] % cfg.train.log_every == 0 or last or "val_loss_nats" in record:
            writer.write(record)
        if bar is not None:
            spent = record["step"] if budget.kind == "steps" else record[budget.kind]
            bar.update(spent - bar.n)
            bar.set_postfix(loss=f"{record['loss_nats']:.3f}", tok_s=f"{record['tokens_per_s']:,.0f}", refresh=False)

    try:
        # -- the loop -------------------------------------------------------------------------------
        while _budget_spent(budget.kind, counters) < budget.value:
            lr = learning_rate(cfg.optimizer, _budget_spent(budget.kind, counters) / budget.value)
            step = counters["step"] + 1
            counters_after, batch, tokens, sigterm = advance(counters, pipeline.next_batch(), stop["sigterm"])
            dispatched = time.perf_counter()
            params, opt_state, metrics = train_step(params, rest, opt_state, put_batch(batch), lr, step_key(step))
            if pending is not None:
                log(finish(pending))
                pending = None
            counters = counters_after
            spent = {k: counters[k] for k in ("target_tokens", "tokens", "flops")}
            pending = (metrics, {"step": step, "lr": lr, **spent}, tokens, dispatched)
            # A SIGTERM ends the run at this step: saved, and scored for the summary. Its metrics
            # lines are the ones an uninterrupted run writes, so a resumed run's file equals one.
            done = _budget_spent(budget.kind, counters) >= budget.value
            stopped_by = "sigterm" if sigterm and not done else None  # at the last step: the budget
            validate = step % cfg.train.eval_every == 0 or done or stopped_by
            checkpoint = step % cfg.train.checkpoint_every == 0 or done or stopped_by
            tasks = evaluation is not None and (step % (cfg.eval.every or cfg.train.checkpoint_every) == 0 or done)
            if not (validate or checkpoint or tasks):
                continue
            record, pending = finish(pending), None
            if validate:
                last_eval, val_step = evaluate(), step
                if not stopped_by or step % cfg.train.eval_every == 0:
                    record.update(last_eval)
            log(record, last=done)
            if checkpoint:
                save(step)
            if tasks:
                evaluate_tasks(step)
            busy_since = time.perf_counter()  # validation, saving and tasks are not the next step's time
            if stopped_by:
                break
        if not last_eval:  # resumed at the end (or never stepped): score the final weights
            last_eval, val_step = evaluate(), counters["step"]
    finally:
        signal.signal(signal.SIGTERM, previous)
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        manager.close()  # last: a failed save in flight raises here, after the rest is closed

    summary = {
        "name": cfg.name,
        "family": cfg.model.family,
        "mask": to_dict(cfg.model.mask),
        "params": n.total,
        "steps": counters["step"],
        "target_tokens": counters["target_tokens"],
        "tokens": counters["tokens"],
        "flops": counters["flops"],
        "budget": {"kind": budget.kind, "value": budget.value},
        "stopped_by": stopped_by or "budget",
        **last_eval,
        "val_step": val_step if last_eval else None,  # the step the validation numbers are from
        "wall_seconds": time.perf_counter() - wall_start,
    }
    if primary:
        write_record(run_dir, facts, summary)
    return summary
