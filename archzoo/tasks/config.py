"""The ``eval`` section of a run config: task evaluation at checkpoints and at the end of a run,
so emergence over training steps is recorded as well as over scale."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from archzoo.config import invalid

__all__ = ["EvalConfig"]


@dataclass(frozen=True)
class EvalConfig:
    """Which tasks a run evaluates while it trains (records go to its ``evals.jsonl``).

    Attributes:
      tasks: built-in task names (``addition-2d``) or task YAML paths.
      shots: numbers of demonstrations (None: each task's own).
      examples: examples per task (a built-in task draws this many; a file's first ones).
      every: evaluate every N steps (None: at every checkpoint); always at the end.
      seed: demonstrations, built-in examples and bootstrap resamples.
      batch_size: rows per scoring pass and prompts per generation pass.
      bootstrap: resamples behind each standard error.
    """

    tasks: tuple[str, ...] = ()
    shots: tuple[int, ...] | None = None
    examples: int = 200
    every: int | None = None
    seed: int = 0
    batch_size: int = 16
    bootstrap: int = 1000

    def __post_init__(self):
        from archzoo.tasks.synthetic import SYNTHETIC_TASKS, closest_task

        if not self.tasks:
            raise invalid("eval.tasks", "must name at least one task (a built-in name or a task YAML path)")
        for spec in self.tasks:
            if spec not in SYNTHETIC_TASKS and not Path(spec).is_file():
                close = closest_task(spec)
                hint = f"; did you mean {close!r}?" if close else ""
                raise invalid("eval.tasks", f"{spec!r} is neither a built-in task{hint} nor a task file (built-in: {', '.join(SYNTHETIC_TASKS)})")
        if self.shots is not None and (not self.shots or any(k < 0 for k in self.shots)):
            raise invalid("eval.shots", f"must be a non-empty list of numbers >= 0, or null; got {self.shots}")
        for name in ("examples", "batch_size"):
            if getattr(self, name) < 1:
                raise invalid(f"eval.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.every is not None and self.every < 1:
            raise invalid("eval.every", f"must be >= 1 or null (at every checkpoint), got {self.every}")
        if self.bootstrap < 0:
            raise invalid("eval.bootstrap", f"must be >= 0, got {self.bootstrap}")
