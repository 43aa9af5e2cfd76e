"""Prompted tasks: a JSON-lines file of examples and a small YAML beside it, or a built-in
synthetic task, and the zero- and k-shot prompts built from them (DESIGN.md §7).

A task file holds one example per line::

    {"context": "Q: 2+2=", "choices": ["4", "5", "3"], "answer": 0}   # multiple choice
    {"context": "Q: 2+2=", "answer": "4"}                              # free-form answer

(``prompt`` is accepted for ``context``). The task's YAML names the files and the format::

    name: arithmetic            # default: the YAML file's stem
    data: arithmetic.jsonl      # the evaluation examples (paths relative to the YAML)
    demonstrations: arithmetic-demos.jsonl   # the examples k-shot prompts draw from
    template: "{context}"       # the question, from the record's fields
    delimiter: " "              # between a question and its answer
    separator: "\\n"             # between the demonstrations and the question
    metrics: [exact_match, accuracy, brier, answer_logprob_per_token, token_edit_distance]
    numeric: false              # answers are numbers: adds digit_edit_distance
    shots: [0, 3]

A k-shot prompt is k demonstrations, each ``template + delimiter + answer``, then the question,
joined by ``separator``; the demonstrations are drawn without replacement, from the seed and the
example's index only, so every model sees the same prompts.
"""

from __future__ import annotations

import difflib
import json
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from archzoo.config import ConfigError, from_dict, invalid, load_yaml
from archzoo.tasks.metrics import CHOICE_METRICS, METRICS
from archzoo.tasks.synthetic import SYNTHETIC_TASKS, closest_task, task_examples

__all__ = ["Record", "Task", "TaskConfig", "TaskError", "build_prompt", "load_task", "read_records", "task_names"]

# Demonstrations drawn for a built-in task: enough for any few-shot prompt.
BUILTIN_DEMONSTRATIONS = 64


class TaskError(ConfigError):
    """A task that cannot be read or used as asked: names the file and line, or the task."""


@dataclass(frozen=True)
class Record:
    """One example of a task.

    Attributes:
      fields: the JSON object as read (the template formats these).
      answer_text: the correct answer (``choices[answer]`` for multiple choice).
      choices: the candidate answers, or None for a free-form answer.
      answer_index: the correct choice's index, or None.
    """

    fields: dict
    answer_text: str
    choices: tuple[str, ...] | None = None
    answer_index: int | None = None

    @property
    def context(self) -> str:
        return self.fields["context"]


@dataclass(frozen=True)
class TaskConfig:
    """A task's YAML (see the module docstring).

    Attributes:
      name: the task's name in results (default: the YAML file's stem).
      data: the JSON-lines file of evaluation examples, relative to the YAML.
      demonstrations: the JSON-lines file k-shot prompts draw from (None: zero-shot only).
      template: the question, a ``str.format`` template over the record's fields.
      delimiter: text between a question and its answer.
      separator: text between the demonstrations and the question; also where a generated
        answer ends.
      metrics: what to measure (:data:`~archzoo.tasks.metrics.METRICS`); None: every metric
        that applies (the choice metrics need ``choices`` in every record).
      numeric: the answers are numbers (adds ``digit_edit_distance``).
      max_new_tokens: tokens generated for an answer (None: the longest answer's tokens + 2).
      shots: the numbers of demonstrations to evaluate with.
    """

    name: str | None = None
    data: str | None = None
    demonstrations: str | None = None
    template: str = "{context}"
    delimiter: str = " "
    separator: str = "\n"
    metrics: tuple[str, ...] | None = None
    numeric: bool = False
    max_new_tokens: int | None = None
    shots: tuple[int, ...] = (0,)

    def __post_init__(self):
        if self.data is None:
            raise invalid("data", "must name the JSON-lines file of the task's examples (relative to the YAML)")
        for m in self.metrics or ():
            if m not in METRICS:
                close = difflib.get_close_matches(m, list(METRICS), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise invalid("metrics", f"unknown metric {m!r}{hint} (metrics: {', '.join(METRICS)})")
        if any(s < 0 for s in self.shots) or not self.shots:
            raise invalid("shots", f"must be a non-empty list of numbers >= 0, got {self.shots}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise invalid("max_new_tokens", f"must be >= 1 or null, got {self.max_new_tokens}")
        _template_fields(self.template)


def _template_fields(template: str) -> set[str]:
    """The record fields a template names."""
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f}
    except ValueError as e:
        raise invalid("template", f"is not a format template ({e})") from None


@dataclass(frozen=True)
class Task:
    """A loaded task.

    Attributes:
      name: its name in results.
      config: its settings.
      examples: the evaluation examples.
      demonstrations: the examples few-shot prompts draw from.
      source: the YAML file, or ``builtin`` for a synthetic task.
    """

    name: str
    config: TaskConfig
    examples: tuple[Record, ...]
    demonstrations: tuple[Record, ...]
    source: str

    @property
    def multiple_choice(self) -> bool:
        return all(r.choices is not None for r in self.examples)

    @property
    def metrics(self) -> list[str]:
        """The metrics measured: the configured ones, or every one that applies."""
        if self.config.metrics is not None:
            return list(self.config.metrics)
        return [m for m, spec in METRICS.items() if (self.multiple_choice or m not in CHOICE_METRICS) and (self.config.numeric or not spec.numeric)]

    def question(self, record: Record) -> str:
        return self.config.template.format(**record.fields)

    def check_shots(self, shots: int) -> None:
        """Refuses more shots than the task has demonstrations.

        Raises:
          TaskError: naming the task, the shots and where its demonstrations come from.
        """
        if shots <= len(self.demonstrations):
            return
        if self.source == "builtin":
            where = "its demonstration split holds"
        elif self.config.demonstrations:
            where = f"{self.config.demonstrations} holds"
        else:
            where = "it names no demonstrations file, so it has"
        raise TaskError(f"task {self.name}: {shots}-shot prompts need {shots} demonstrations, but {where} {len(self.demonstrations)}")


def _record(fields, where: str) -> Record:
    if not isinstance(fields, dict):
        raise TaskError(f"{where}: an example must be a JSON object, got {type(fields).__name__}")
    fields = dict(fields)
    if "context" not in fields and "prompt" in fields:
        fields["context"] = fields["prompt"]
    if not isinstance(fields.get("context"), str):
        what = "is missing" if "context" not in fields else f"must be a string, got {fields['context']!r}"
        raise TaskError(f"{where}: field 'context' (or 'prompt') {what}")
    if "answer" not in fields:
        raise TaskError(f"{where}: field 'answer' is missing (a choice index with 'choices', else the answer text)")
    answer = fields["answer"]
    choices = fields.get("choices")
    if choices is None:
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            raise TaskError(f"{where}: field 'answer' must be the answer text (or a choice index with 'choices'), got {answer!r}")
        return Record(fields, str(answer))
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise TaskError(f"{where}: field 'choices' must be a list of at least 2 strings, got {choices!r}")
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise TaskError(f"{where}: field 'answer' must be the index of the correct choice (an integer), got {answer!r}")
    if not 0 <= answer < len(choices):
        raise TaskError(f"{where}: field 'answer' is {answer}, out of range for {len(choices)} choices (0..{len(choices) - 1})")
    return Record(fields, choices[answer], tuple(choices), answer)


def read_records(path: str | Path) -> tuple[Record, ...]:
    """The examples of a JSON-lines task file (blank lines skipped).

    Raises:
      TaskError: a missing or unreadable file, a line that is not JSON, a missing field, an
        answer index out of range; naming the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskError(f"{path}: task file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(f"{path}: cannot read it ({e})") from None
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}, line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
        records.append(_record(fields, f"{path}, line {n}"))
    if not records:
        raise TaskError(f"{path}: holds no example")
    return tuple(records)


def task_names() -> list[str]:
    """The built-in tasks' names."""
    return list(SYNTHETIC_TASKS)


def _builtin(name: str, examples: int, seed: int) -> Task:
    synthetic = SYNTHETIC_TASKS[name]
    cfg = TaskConfig(name=name, data="builtin", demonstrations="builtin", numeric=synthetic.numeric, shots=(0, 3))
    return Task(
        name,
        cfg,
        tuple(_record(r, f"{name} example {i}") for i, r in enumerate(task_examples(name, "eval", examples, seed))),
        tuple(_record(r, f"{name} demonstration {i}") for i, r in enumerate(task_examples(name, "demo", BUILTIN_DEMONSTRATIONS, seed))),
        "builtin",
    )


def _from_yaml(path: Path, examples: int | None) -> Task:
    data = load_yaml(path)
    cfg = from_dict(TaskConfig, data)
    name = cfg.name or path.stem
    records = read_records(path.parent / cfg.data)
    demos = read_records(path.parent / cfg.demonstrations) if cfg.demonstrations else ()
    task = Task(name, cfg, records[:examples] if examples else records, demos, str(path))
    missing = sorted(_template_fields(cfg.template) - set(records[0].fields))
    if missing:
        raise TaskError(f"{path}, line {data.lines.get('template', '?')}: template names field {missing[0]!r}, which the examples of {cfg.data} lack")
    if cfg.metrics:
        wrong = [m for m in cfg.metrics if m in CHOICE_METRICS]
        if wrong and not task.multiple_choice:
            raise TaskError(f"{path}: metric {wrong[0]!r} needs 'choices' in every example of {cfg.data}")
    return task


def load_task(spec: str, *, examples: int | None = None, seed: int = 0) -> Task:
    """A built-in task by name, or a task YAML by path.

    Args:
      spec: a built-in name (``addition-3d``; see :func:`task_names`) or a path to a task YAML.
      examples: at most this many evaluation examples (a built-in task generates this many;
        None: 200 for a built-in, all of a file's).
      seed: a built-in task's draw of examples and demonstrations.

    Raises:
      TaskError: an unknown name (with the closest match), or a bad task file.
    """
    path = Path(spec)
    if spec in SYNTHETIC_TASKS:
        return _builtin(spec, examples or 200, seed)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise TaskError(f"{path}: task file not found")
        return _from_yaml(path, examples)
    close = closest_task(spec)
    hint = f"; did you mean {close!r}?" if close else ""
    raise TaskError(f"unknown task {spec!r}{hint} (built-in tasks: {', '.join(task_names())}; or give a task YAML path)")


def build_prompt(task: Task, index: int, shots: int, seed: int = 0) -> str:
    """The prompt of example ``index`` with ``shots`` demonstrations.

    Raises:
      TaskError: more shots than the task has demonstrations.
    """
    record = task.examples[index]
    question = task.question(record)
    if shots == 0:
        return question
    task.check_shots(shots)
    demos = task.demonstrations
    picked = np.random.default_rng([seed, shots, index]).choice(len(demos), size=shots, replace=False)
    cfg = task.config
    shown = [task.question(demos[i]) + cfg.delimiter + demos[i].answer_text for i in picked]
    return cfg.separator.join([*shown, question])
