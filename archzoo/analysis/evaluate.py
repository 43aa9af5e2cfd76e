"""Task evaluation of a model: every metric of every task, at every number of shots, from the
scores of :mod:`archzoo.analysis.scoring` and greedy generation (DESIGN.md §7).

One task at ``k`` shots gives one record per metric::

    {"task": "addition-2d", "shots": 3, "metric": "exact_match", "value": 0.41, "stderr": 0.03,
     "n": 200, "kind": "discontinuous", "higher_is_better": true, "step": 1200,
     "scoring": "log-likelihood", "family": "decoder", "source": "builtin", "seed": 0}

``archzoo eval RUN_DIR`` and the ``eval`` section of a run config write these to the run's
``evals.jsonl``, and each example's prompt, answer, greedy answer and choice scores to
``evals/{task}-{k}shot-step{step}.jsonl`` so a user can read what the model wrote.

How each metric is measured (per example; values are means with bootstrap standard errors):

- likelihood metrics score ``(prompt, delimiter + answer)`` (one request per choice);
- generation metrics decode greedily after the prompt, up to the task's separator (or eos),
  and compare the stripped text with the answer. An encoder (MLM) cannot generate: its tasks
  report the likelihood metrics only (pseudo-log-likelihood), and the records say so.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from archzoo.analysis.scoring import SCORING, score
from archzoo.tasks.metrics import METRICS, bootstrap_stderr, brier_score, edit_distance
from archzoo.tasks.task import Task, TaskError, build_prompt, load_task

__all__ = ["EvalOptions", "check_shots", "evaluate_model", "evaluate_run", "generate_texts", "task_table", "write_results"]

# Generation batches are padded to this many prompts, and prompts to a multiple of this many
# tokens, so a task compiles the decode loop once.
_PROMPT_BUCKET = 32


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """How tasks are evaluated.

    Attributes:
      shots: numbers of demonstrations (None: each task's own ``shots``).
      seed: the draw of few-shot demonstrations and of bootstrap resamples.
      batch_size: rows per scoring pass and prompts per generation pass.
      bootstrap: resamples behind each standard error.
    """

    shots: tuple[int, ...] | None = None
    seed: int = 0
    batch_size: int = 16
    bootstrap: int = 1000

    def __post_init__(self):
        if self.shots is not None:
            if not self.shots or any(int(k) != k or k < 0 for k in self.shots):
                raise TaskError(f"shots must be numbers >= 0, got {list(self.shots)}")
            object.__setattr__(self, "shots", tuple(int(k) for k in self.shots))
        if self.batch_size < 1:
            raise TaskError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.bootstrap < 0:
            raise TaskError(f"bootstrap must be >= 0, got {self.bootstrap}")


def generate_texts(
    model, tokenizer, prompts: Sequence[str], *, start_id: int, room: int, max_new: int, batch_size: int,
    temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None, seed: int = 0,
) -> list[str]:
    """The text a model writes after each prompt, up to eos or ``max_new`` tokens (eos removed).

    A decoder's prompt is the start token and the prompt's tokens, cut from the left to ``room``
    tokens; an encoder-decoder encodes the prompt (its last ``room`` tokens) and decodes from the
    start token. Batches are padded to ``batch_size`` prompts and prompts to a multiple of 32
    tokens, so a call compiles the decode loop once.

    Args:
      model: a decoder or an encoder-decoder.
      tokenizer: its tokenizer.
      prompts: the texts to continue.
      start_id: the token every training row started with.
      room: prompt tokens kept.
      max_new: tokens generated at most.
      batch_size: prompts per generation pass.
      temperature, top_k, top_p: sampling (temperature 0: greedy); see :func:`~archzoo.generation.generate`.
      seed: the first batch's sampling seed; batch ``i`` uses ``seed + i * batch_size``.

    Returns:
      one decoded text per prompt.
    """
    from archzoo.generation import generate

    decoder_only = model.source_stream is None
    ids = tokenizer.encode_batch(list(prompts))
    rows = [([start_id] + p)[-room:] if decoder_only else (p[-room:] or [start_id]) for p in ids]
    pad_to = min(-(-max(len(p) for p in rows) // _PROMPT_BUCKET) * _PROMPT_BUCKET, room)
    eos = tokenizer.roles.get("eos")
    batch = min(batch_size, len(rows))
    texts = []
    for at in range(0, len(rows), batch):
        chunk = rows[at : at + batch]
        padded = chunk + [chunk[0]] * (batch - len(chunk))  # one shape for every batch
        kwargs = dict(prompts=padded) if decoder_only else dict(encoder_inputs=padded, decoder_start_id=start_id)
        gen = generate(
            model, max_new_tokens=max_new, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed + at,
            eos_id=eos, pad_to=pad_to, **kwargs,
        )
        tokens, lengths = np.asarray(gen.tokens), np.asarray(gen.lengths)
        for b in range(len(chunk)):
            texts.append(tokenizer.decode([int(t) for t in tokens[b, : lengths[b]] if eos is None or t != eos]))
    return texts


def _generate_answers(model, tokenizer, prompts: list[str], task: Task, *, start_id: int, row_len: int, batch_size: int) -> list[str]:
    """The greedy answer after each prompt: decoded text up to the separator, stripped."""
    cfg = task.config
    answers = [r.answer_text for r in task.examples]
    max_new = cfg.max_new_tokens or max(len(ids) for ids in tokenizer.encode_batch([cfg.delimiter + a for a in answers])) + 2
    room = row_len - max_new if model.source_stream is None else row_len  # a decoder's row holds prompt and answer
    if room < 2:
        raise TaskError(f"task {task.name}: answers of {max_new} tokens leave no room for a prompt in rows of {row_len}")
    texts = generate_texts(model, tokenizer, prompts, start_id=start_id, room=room, max_new=max_new, batch_size=batch_size)
    return [t.split(cfg.separator)[0].strip() for t in texts]


def _task_records(model, tokenizer, task: Task, shots: int, opts: EvalOptions, *, start_id: int, row_len: int):
    """Per-metric values of every example of ``task`` at ``shots``, and the per-example samples."""
    cfg = task.config
    prompts = [build_prompt(task, i, shots, opts.seed) for i in range(len(task.examples))]
    requests, owners = [], []
    for i, r in enumerate(task.examples):
        for j, text in enumerate(r.choices if r.choices is not None else (r.answer_text,)):
            requests.append((prompts[i], cfg.delimiter + text))
            owners.append((i, j))
    contexts = tokenizer.encode_batch([c for c, _ in requests])
    continuations = tokenizer.encode_batch([t for _, t in requests])
    scores = score(
        model, list(zip(contexts, continuations)), start_id=start_id, mask_id=tokenizer.roles.get("mask"),
        batch_size=opts.batch_size, row_len=row_len,
    )
    per_example: list[list] = [[] for _ in task.examples]
    for (i, _), s in zip(owners, scores):
        per_example[i].append(s)
    wanted = task.metrics
    can_generate = callable(getattr(model, "decode_step", None))  # an encoder has no decoder
    generated = None
    if can_generate and any(METRICS[m].needs_generation for m in wanted):
        generated = _generate_answers(model, tokenizer, prompts, task, start_id=start_id, row_len=row_len, batch_size=opts.batch_size)
    values = {m: [] for m in wanted if can_generate or not METRICS[m].needs_generation}
    samples = []
    for i, (r, s) in enumerate(zip(task.examples, per_example)):
        correct = s[r.answer_index] if r.choices is not None else s[0]
        sample = {"index": i, "prompt": prompts[i], "answer": r.answer_text, "answer_logprob_nats": correct.logprob_nats}
        if r.choices is not None:
            lls = [c.logprob_nats for c in s]
            sample.update(choices=list(r.choices), choice_logprobs_nats=lls, chosen=int(np.argmax(lls)))
        if generated is not None:
            sample["generated"] = generated[i]
        for m in values:
            if m == "accuracy":
                v = float(sample["chosen"] == r.answer_index)
            elif m == "brier":
                v = brier_score(sample["choice_logprobs_nats"], r.answer_index)
            elif m == "answer_logprob_per_token":
                v = correct.logprob_per_token
            elif m == "exact_match":
                v = float(generated[i] == r.answer_text.strip())
            elif m == "token_edit_distance":
                v = float(edit_distance(tokenizer.encode(generated[i]), tokenizer.encode(r.answer_text.strip())))
            else:  # digit_edit_distance
                v = float(edit_distance(generated[i], r.answer_text.strip()))
            values[m].append(v)
        samples.append(sample)
    return values, samples


def check_shots(tasks: Sequence[Task], opts: EvalOptions) -> None:
    """Refuses a number of shots above a task's demonstrations (before anything is scored).

    Raises:
      TaskError: naming the task, the shots and its demonstrations file.
    """
    for task in tasks:
        for shots in opts.shots if opts.shots is not None else task.config.shots:
            task.check_shots(shots)


def evaluate_model(model, tokenizer, tasks: Sequence[Task], opts: EvalOptions | None = None, *, start_id: int, row_len: int, step: int | None = None):
    """Evaluates ``model`` on ``tasks``.

    Args:
      model: any archzoo model.
      tokenizer: its tokenizer.
      tasks: loaded tasks (:func:`~archzoo.tasks.task.load_task`).
      opts: shots, seed, batch size, bootstrap resamples.
      start_id: the token every training row started with.
      row_len: tokens per row (the run's training row length).
      step: the training step the weights are from (written into the records).

    Returns:
      ``(records, samples)``: one record per task, shots and metric (see the module docstring),
      and per ``(task, shots)`` the examples' samples.

    Raises:
      TaskError: more shots than a task has demonstrations, or answers too long for the rows.
    """
    opts = opts or EvalOptions()
    family = model.config.family
    check_shots(tasks, opts)
    records, samples = [], {}
    for task in tasks:
        for shots in opts.shots if opts.shots is not None else task.config.shots:
            values, task_samples = _task_records(model, tokenizer, task, shots, opts, start_id=start_id, row_len=row_len)
            samples[(task.name, shots)] = task_samples
            for metric, vals in values.items():
                spec = METRICS[metric]
                records.append(
                    {
                        "task": task.name,
                        "shots": shots,
                        "metric": metric,
                        "value": float(np.mean(vals)),
                        "stderr": bootstrap_stderr(vals, opts.bootstrap, opts.seed),
                        "n": len(vals),
                        "kind": spec.kind,
                        "higher_is_better": spec.higher_is_better,
                        "step": step,
                        "scoring": SCORING[family],
                        "family": family,
                        "source": task.source,
                        "seed": opts.seed,
                    }
                )
    return records, samples


def write_results(run_dir: Path, records: list[dict], samples: dict, step: int | None) -> list[Path]:
    """Writes an evaluation of ``step`` into a run directory: its records into ``evals.jsonl``
    (replacing earlier ones of the same task, shots and step) and each ``(task, shots)``'s
    samples to ``evals/{task}-{k}shot-step{step}.jsonl``.

    Returns:
      the files written.
    """
    from archzoo.analysis.runs import write_evals

    paths = [write_evals(run_dir, records)]
    folder = Path(run_dir) / "evals"
    folder.mkdir(exist_ok=True)
    for (task, shots), rows in samples.items():
        path = folder / f"{task}-{shots}shot-step{step}.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(path)
        paths.append(path)
    return paths


def evaluate_run(
    run_dir: str | Path,
    tasks: Sequence[Task | str],
    opts: EvalOptions | None = None,
    *,
    step: int | None = None,
    examples: int | None = None,
) -> list[dict]:
    """Evaluates a run directory's checkpoint (the newest intact one, or ``step``) on tasks, and
    writes ``evals.jsonl`` (replacing earlier records of the same task, shots and step) and the
    samples.

    Args:
      run_dir: a run directory with a finished checkpoint.
      tasks: loaded tasks, or built-in task names and task YAML paths to load.
      opts: shots, seed, batch size, bootstrap resamples.
      step: the checkpoint to evaluate (None: the newest).
      examples: at most this many examples per task (for the tasks loaded here).

    Returns:
      the records written.

    Raises:
      TaskError: an unknown task or a bad task file, before the model is loaded.
      RecordError, CheckpointError: not a run directory, or no finished checkpoint.
    """
    from archzoo.analysis.scoring import load_trained

    opts = opts or EvalOptions()
    tasks = [t if isinstance(t, Task) else load_task(t, examples=examples, seed=opts.seed) for t in tasks]
    check_shots(tasks, opts)
    run = load_trained(run_dir, step)
    records, samples = evaluate_model(
        run.model, run.tokenizer, tasks, opts, start_id=run.start_id, row_len=max(run.lengths.values()), step=run.step
    )
    write_results(run.run_dir, records, samples, run.step)
    return records


def task_table(records: Sequence[dict]) -> str:
    """A plain-text table of eval records: one row per task and shots, one column per metric."""
    metrics = [m for m in METRICS if any(r["metric"] == m for r in records)]
    rows = {}
    for r in records:
        rows.setdefault((r["task"], r["shots"], r["step"]), {})[r["metric"]] = r
    header = ["task", "shots", "step", *(f"{m} {'↑' if METRICS[m].higher_is_better else '↓'}" for m in metrics)]
    table = [header]
    for (task, shots, step), by_metric in rows.items():
        cells = [task, str(shots), str(step)]
        for m in metrics:
            r = by_metric.get(m)
            cells.append("" if r is None else f"{r['value']:.3f} ± {r['stderr']:.3f}")
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in table]
    return "\n".join(lines) + "\n(↑ higher is better, ↓ lower is better; ± is the bootstrap standard error)"
