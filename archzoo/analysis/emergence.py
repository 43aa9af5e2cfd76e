"""Emergence figures, drawn from the ``evals.jsonl`` of a sweep's runs: every metric of a task
against scale (non-embedding parameters and training FLOPs), one colour per family, with
bootstrap error bars; and every metric against the training step, one line per run.

Discontinuous metrics (exact match, accuracy) and continuous ones (answer log-likelihood, Brier
score, edit distances) stand side by side in one figure, so a reader sees whether a jump is the
model's or the metric's (Schaeffer et al. 2023).

Like :mod:`archzoo.analysis.plots`, figures are built without pyplot; every artist carries a
``gid`` (``emergence:{family}:{metric}:{axis}`` and its error bars ``stderr:...``,
``steps:{run}:{metric}``) by which tests read
the drawn data back.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from archzoo.analysis.plots import DPI, FAMILY_COLOURS, _OTHER_COLOUR, _outside_legend
from archzoo.analysis.runs import RunRecord
from archzoo.analysis.sweep import FAMILY_LABELS, family_label
from archzoo.tasks.metrics import METRICS

__all__ = ["EmergencePoint", "emergence_points", "scale_figure", "steps_figure", "emergence_figures"]

METRIC_LABELS = {
    "exact_match": "exact match",
    "accuracy": "multiple-choice accuracy",
    "answer_logprob_per_token": "answer log-likelihood / token (nats)",
    "brier": "Brier score",
    "token_edit_distance": "token edit distance",
    "digit_edit_distance": "digit edit distance",
}
SCALE_AXES = {"N": "non-embedding parameters N", "C": "training compute C (FLOPs)"}


@dataclasses.dataclass(frozen=True)
class EmergencePoint:
    """One run's value of one metric of one task at one number of shots.

    Attributes:
      run: the run's name.
      family: its family label (``causal decoder``...).
      N: non-embedding parameters; C: training FLOPs it spent.
      step: the step the weights were evaluated at.
      value, stderr: the metric's mean and bootstrap standard error.
      kind: ``discontinuous`` or ``continuous``.
    """

    run: str
    family: str
    N: float
    C: float
    step: int
    value: float
    stderr: float
    kind: str


def emergence_points(records: list[RunRecord]) -> dict[tuple[str, int, str], list[EmergencePoint]]:
    """Per ``(task, shots, metric)``, each finished run's evaluation at its last evaluated step.

    Returns:
      the points, in run order; runs without evaluations (or not finished) are left out.
    """
    out: dict[tuple[str, int, str], list[EmergencePoint]] = {}
    for r in records:
        if not r.finished or not r.evals:
            continue
        last = max(e["step"] for e in r.evals if e.get("step") is not None)
        for e in r.evals:
            if e.get("step") != last:
                continue
            point = EmergencePoint(
                r.name, family_label(r.facts), float(r.facts["non_embedding_params"]), float(r.summary["flops"]), last,
                float(e["value"]), float(e["stderr"]), e.get("kind", ""),
            )
            out.setdefault((e["task"], int(e["shots"]), e["metric"]), []).append(point)
    return out


def _metrics_of(points: dict, task: str, shots: int) -> list[str]:
    order = list(METRIC_LABELS)
    found = {m for (t, k, m) in points if t == task and k == shots}
    return sorted(found, key=lambda m: order.index(m) if m in order else len(order))


def _families(points) -> list[str]:
    found = {p.family for p in points}
    return [f for f in FAMILY_LABELS if f in found] + sorted(found - set(FAMILY_LABELS))


def _metric_title(metric: str, kind: str) -> str:
    spec = METRICS.get(metric)
    better = "" if spec is None else ("higher is better" if spec.higher_is_better else "lower is better")
    return f"{METRIC_LABELS.get(metric, metric)}\n({', '.join(w for w in (kind, better) if w)})"


def scale_figure(points: dict, task: str, shots: int) -> Figure:
    """Every metric of ``task`` at ``shots`` against N (top row) and C (bottom row)."""
    metrics = _metrics_of(points, task, shots)
    fig = Figure(figsize=(3.0 * len(metrics) + 2.0, 6.0), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, len(metrics), squeeze=False)
    fig.suptitle(f"{task}, {shots}-shot: task metrics against scale (final checkpoint of each run; bars: ±1 s.e.)")
    families = []
    for col, metric in enumerate(metrics):
        pts = points[(task, shots, metric)]
        families = _families(pts) if len(_families(pts)) > len(families) else families
        for row, axis in enumerate(("N", "C")):
            ax = axes[row][col]
            for family in _families(pts):
                mine = sorted((p for p in pts if p.family == family), key=lambda p: getattr(p, axis))
                x = np.array([getattr(p, axis) for p in mine])
                line, _, (bars,) = ax.errorbar(
                    x, [p.value for p in mine], yerr=[p.stderr for p in mine], color=FAMILY_COLOURS.get(family, _OTHER_COLOUR),
                    marker="o", ms=4, capsize=2, lw=1.5,
                )
                line.set_gid(f"emergence:{family}:{metric}:{axis}")
                bars.set_gid(f"stderr:{family}:{metric}:{axis}")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())  # labelled minor ticks collide on a short range
            ax.grid(True, alpha=0.3)
            ax.set_xlabel(SCALE_AXES[axis])
            if row == 0:
                ax.set_title(_metric_title(metric, pts[0].kind), fontsize="medium")
    handles = [Line2D([], [], color=FAMILY_COLOURS.get(f, _OTHER_COLOUR), marker="o", lw=1.5) for f in families]
    _outside_legend(axes[0][-1], handles, families, title="family")
    return fig


def steps_figure(records: list[RunRecord], task: str, shots: int) -> Figure | None:
    """Every metric of ``task`` at ``shots`` against the training step, one line per run (darker:
    larger); None when no run evaluated it at two steps or more."""
    series: dict[str, dict[str, list[tuple[int, float, float]]]] = {}
    runs = {}
    for r in records:
        for e in r.evals:
            if e["task"] == task and int(e["shots"]) == shots and e.get("step") is not None:
                series.setdefault(e["metric"], {}).setdefault(r.name, []).append((e["step"], e["value"], e["stderr"]))
                runs[r.name] = r
    if not any(len(v) > 1 for by_run in series.values() for v in by_run.values()):
        return None
    order = list(METRIC_LABELS)
    metrics = sorted(series, key=lambda m: order.index(m) if m in order else len(order))
    fig = Figure(figsize=(3.4 * len(metrics) + 2.6, 3.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    fig.suptitle(f"{task}, {shots}-shot: task metrics during training")
    sizes = {name: float(r.facts["non_embedding_params"]) for name, r in runs.items()}
    ranks = {n: i for i, n in enumerate(sorted(sizes, key=sizes.get))}
    for ax, metric in zip(axes, metrics):
        for name, pts in series[metric].items():
            pts = sorted(pts)
            family = family_label(runs[name].facts)
            shade = 0.35 + 0.65 * (ranks[name] + 1) / len(ranks)
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], color=FAMILY_COLOURS.get(family, _OTHER_COLOUR), alpha=shade,
                marker=".", lw=1.2, gid=f"steps:{name}:{metric}", label=f"{name} ({family})",
            )
        ax.set_xlabel("training step")
        ax.set_title(_metric_title(metric, METRICS[metric].kind if metric in METRICS else ""), fontsize="medium")
        ax.grid(True, alpha=0.3)
    _outside_legend(axes[-1])
    return fig


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def emergence_figures(records: list[RunRecord]) -> dict[str, Figure]:
    """Both figures of every task and number of shots the runs were evaluated on, by file stem
    (``emergence_{task}_{k}shot``, ``training_{task}_{k}shot``)."""
    points = emergence_points(records)
    figures = {}
    for task, shots in sorted({(t, k) for t, k, _ in points}):
        figures[f"emergence_{_slug(task)}_{shots}shot"] = scale_figure(points, task, shots)
        steps = steps_figure(records, task, shots)
        if steps is not None:
            figures[f"training_{_slug(task)}_{shots}shot"] = steps
    return figures
