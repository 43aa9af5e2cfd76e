"""A training run, top to bottom: build the state, then a plain loop of steps with logging,
validation and checkpoints (STYLE.md "Modules and the train loop").

Resume: the same command on the same run directory restores the last checkpoint (parameters,
optimizer, data position and budget counters) and continues bit for bit. SIGTERM ends the run
after the step under way: it is scored, logged and saved, and ``summary.json`` says
``stopped_by: sigterm``. One process at a time trains in a run directory. A NaN or infinite
loss stops the run, naming the step, and keeps the last good checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from pathlib import Path

import jax
import numpy as np

from archzoo.config import ConfigError
from archzoo.features.packing import LOSS_STREAM, STREAMS
from archzoo.data.bpe import build_tokenizer
from archzoo.data.splits import load_splits
from archzoo.models import build, count_params
from archzoo.objectives import build_objective
from archzoo.train.checkpoints import RunCheckpoints
from archzoo.train.config import RunConfig, resolved
from archzoo.train.flops import forward_flops_per_token, train_flops
from archzoo.train.optimizer import learning_rate
from archzoo.features.pipeline import Pipeline, auto_chunk_len, chunk_documents, validation_batches
from archzoo.train.rundir import MetricsWriter, hold_run_dir, prepare_run_dir, write_json
from archzoo.train.step import make_eval_step, make_train_step, split_model

__all__ = ["train", "TrainingError", "row_lengths"]


class TrainingError(RuntimeError):
    """A run that had to stop (non-finite loss); says where its last good checkpoint is."""


def row_lengths(cfg: RunConfig) -> dict[str, int]:
    """Row length of each stream of the run's family."""
    t = cfg.train
    if cfg.model.family == "encoder_decoder":
        return {"encoder": t.encoder_len or t.seq_len, "decoder": t.decoder_len or t.seq_len}
    return {STREAMS[cfg.model.family][0]: t.seq_len}


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


def _target_bytes(batches: list[dict], stream: str, tokenizer, special) -> int:
    """UTF-8 bytes of the target text of validation batches (for bits per byte)."""
    total = 0
    for b in batches:
        for tokens, weights, segs in zip(b[f"{stream}_targets"], b[f"{stream}_weights"], b[f"{stream}_segment_ids"]):
            for s in np.unique(segs[segs > 0]):
                ids = [int(t) for t, w, g in zip(tokens, weights, segs) if g == s and w > 0 and not special.is_special(int(t))]
                total += tokenizer.num_bytes(tokenizer.decode(ids)) if ids else 0
    return total


def train(cfg: RunConfig, *, overwrite: bool = False, progress: bool | None = None) -> dict:
    """Trains one run to its budget (or to a SIGTERM), writing its run directory.

    Args:
      cfg: the run.
      overwrite: replace a run directory that holds a different config.
      progress: show a progress bar (default: ``cfg.train.progress``).

    Returns:
      the run's summary (also written to ``summary.json``).

    Raises:
      RunDirError: the directory holds another run, another process trains in it, it cannot be
        written, or its config.yaml is broken.
      TrainingError: the loss became NaN or infinite.
    """
    with hold_run_dir(cfg.run_dir):
        return _train(cfg, overwrite, progress)


def _train(cfg: RunConfig, overwrite: bool, progress: bool | None) -> dict:
    """:func:`train`, once this process holds the run directory."""
    run_dir = cfg.run_dir
    wall_start = time.perf_counter()
    if jax.process_count() > 1:
        raise ConfigError("archzoo run trains on one process; multi-host training (a mesh over several processes) is not wired into the loop yet")

    # -- data: corpus -> tokenizer -> objective -> converter -> packed batches -----------------
    splits = load_splits(cfg.data)
    # The tokenizer sees every training document; each process then reads its own shard.
    tokenizer = build_tokenizer(cfg.data.tokenizer, splits.train)
    splits = splits.shard(jax.process_index(), jax.process_count())
    special = tokenizer.special
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's vocabulary ({tokenizer.vocab_size}); raise model.vocab_size")
    objective_cfg = cfg.objective
    if objective_cfg.name == "mlm" and objective_cfg.mlm.vocab_size is None:
        objective_cfg = dataclasses.replace(objective_cfg, mlm=dataclasses.replace(objective_cfg.mlm, vocab_size=tokenizer.vocab_size))
    objective = build_objective(objective_cfg, special)
    # Only now, with the config checked against the data, does the run directory take it.
    resuming = prepare_run_dir(run_dir, resolved(cfg), overwrite)
    lengths = row_lengths(cfg)
    chunk_len = cfg.train.chunk_len or auto_chunk_len(cfg.objective.name, min(lengths.values()))
    family = cfg.model.family
    train_chunks = chunk_documents([np.asarray(t, np.int32) for t in tokenizer.encode_batch(splits.train)], chunk_len)
    val_chunks = chunk_documents([np.asarray(t, np.int32) for t in tokenizer.encode_batch(splits.validation)], chunk_len)
    pipeline = Pipeline(train_chunks, objective, family, lengths, cfg.train.batch_size, cfg.optimizer.accumulation_steps, special.pad, cfg.data.seed)
    stream = LOSS_STREAM[family]
    val = validation_batches(val_chunks, objective, family, lengths, cfg.train.batch_size, special.pad, cfg.data.seed, cfg.train.eval_examples)
    val_bytes = _target_bytes(val, stream, tokenizer, special)
    tokenizer.save(run_dir / tokenizer.file_name)

    # -- model and optimizer --------------------------------------------------------------------
    model = build(cfg.model, seed=cfg.train.seed)
    graphdef, params, rest = split_model(model)
    train_step, tx = make_train_step(graphdef, cfg.optimizer)
    eval_step = make_eval_step(graphdef)
    opt_state = tx.init(params)
    n = count_params(model)
    context = lengths.get("decoder", lengths.get("encoder"))
    facts = {
        "family": family,
        "mask": cfg.model.mask,
        "objective": cfg.objective.name,
        "params": n.total,
        "non_embedding_params": n.non_embedding,
        "active_params": n.total,
        # training FLOPs per token of the stream with the loss (decoder tokens of an encoder-decoder)
        "flops_per_token": 3 * forward_flops_per_token(cfg.model, stream=stream, context=context, memory=lengths.get("encoder", 0) if family == "encoder_decoder" else 0),
        **({"flops_per_encoder_token": 3 * forward_flops_per_token(cfg.model, stream="encoder", context=lengths["encoder"])} if family == "encoder_decoder" else {}),
        "vocab_size": tokenizer.vocab_size,
        # every training row starts with this token (decoders: before inputs ++ targets); a
        # prompt for generation should start with it too
        "start_id": special.pad,
        "row_lengths": lengths,
        "chunk_len": chunk_len,
        "budget": {"kind": cfg.budget.kind, "value": cfg.budget.value},
    }
    write_json(run_dir / "facts.json", facts)

    counters = {"step": 0, "target_tokens": 0, "tokens": 0, "flops": 0.0}
    manager = RunCheckpoints(run_dir / "checkpoints", cfg.train.keep_checkpoints)
    restored = manager.restore_latest({"params": params, "opt_state": opt_state}) if resuming else None
    resume_step = restored.step if restored is not None else None
    if restored is not None:
        params, opt_state = restored.state["params"], restored.state["opt_state"]
        counters = restored.meta["counters"]
        pipeline.restore(restored.meta["pipeline"])
    writer = MetricsWriter(run_dir, resume_step if resume_step is not None else (0 if resuming else None))

    def save(step: int) -> None:
        manager.save(step, {"params": params, "opt_state": opt_state}, {"counters": counters, "pipeline": pipeline.state()})

    def evaluate() -> dict:
        if not val:
            return {}
        loss_sum = tokens = 0.0
        for b in val:
            s, t = eval_step(params, rest, b)
            loss_sum, tokens = loss_sum + float(s), tokens + float(t)
        loss = loss_sum / max(tokens, 1.0)
        return {"val_loss_nats": loss, "val_bits_per_byte": loss_sum / math.log(2) / max(val_bytes, 1)}

    stop = {"sigterm": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(sigterm=True))
    budget = cfg.budget
    bar = None
    if progress if progress is not None else cfg.train.progress:
        from tqdm import tqdm

        bar = tqdm(total=budget.value, initial=_budget_spent(budget.kind, counters), desc=cfg.name, unit=budget.kind.replace("_", " "), dynamic_ncols=True, leave=True, mininterval=1.0)
    last_eval: dict = {}
    try:
        # -- the loop -------------------------------------------------------------------------------
        while _budget_spent(budget.kind, counters) < budget.value:
            batch = pipeline.next_batch()
            if budget.kind == "target_tokens":
                batch = _trim_to_target_budget(batch, stream, int(budget.value - counters["target_tokens"]))
            lr = learning_rate(cfg.optimizer, _budget_spent(budget.kind, counters) / budget.value)
            t0 = time.perf_counter()
            params, opt_state, metrics = train_step(params, rest, opt_state, batch, lr)
            loss, grad_norm = float(metrics["loss_nats"]), float(metrics["grad_norm"])
            seconds = time.perf_counter() - t0
            step = counters["step"] + 1
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                last = manager.latest_step()
                where = f"the last good checkpoint is step {last} in {run_dir / 'checkpoints'}" if last is not None else "no checkpoint was saved before it"
                what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {grad_norm}"
                raise TrainingError(
                    f"{cfg.name}: {what} at step {step}; {where}. The same command would replay it exactly: "
                    "change the config (lower optimizer.lr, check the data) and rerun with --overwrite"
                )
            tokens = int(sum(np.count_nonzero(batch[f"{s}_segment_ids"]) for s in STREAMS[family]))
            flops = sum(train_flops(cfg.model, {k: v[a] for k, v in batch.items()}) for a in range(cfg.optimizer.accumulation_steps))
            counters = {
                "step": step,
                "target_tokens": counters["target_tokens"] + int(np.count_nonzero(batch[f"{stream}_weights"])),
                "tokens": counters["tokens"] + tokens,
                "flops": counters["flops"] + flops,
            }
            record = {
                "step": step,
                "loss_nats": loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "target_tokens": counters["target_tokens"],
                "tokens": counters["tokens"],
                "flops": counters["flops"],
                "tokens_per_s": tokens / seconds,
            }
            # A SIGTERM ends the run at this step: scored, logged and saved like the last one.
            stopping = stop["sigterm"]
            done = _budget_spent(budget.kind, counters) >= budget.value or stopping
            if step % cfg.train.eval_every == 0 or done:
                last_eval = evaluate()
                record.update(last_eval)
            if step % cfg.train.log_every == 0 or done or "val_loss_nats" in record:
                writer.write(record)
            if step % cfg.train.checkpoint_every == 0 or done:
                save(step)
            if bar is not None:
                bar.update(_budget_spent(budget.kind, counters) - bar.n)
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens / seconds:,.0f}", refresh=False)
            if stopping:
                break
        if not last_eval:  # resumed at the end (or never stepped): score the final weights
            last_eval = evaluate()
    finally:
        signal.signal(signal.SIGTERM, previous)
        manager.close()
        writer.close()
        if bar is not None:
            bar.close()

    summary = {
        "name": cfg.name,
        "family": family,
        "mask": cfg.model.mask,
        "params": n.total,
        "steps": counters["step"],
        "target_tokens": counters["target_tokens"],
        "tokens": counters["tokens"],
        "flops": counters["flops"],
        "budget": {"kind": budget.kind, "value": budget.value},
        "stopped_by": "sigterm" if stop["sigterm"] else "budget",
        **({k: v for k, v in last_eval.items()} if last_eval else {}),
        "wall_seconds": time.perf_counter() - wall_start,
    }
    write_json(run_dir / "summary.json", summary)
    return summary
