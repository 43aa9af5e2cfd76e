"""Emergence figures draw what evals.jsonl holds: each test reads the artists back by their gid
and compares them with the records."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib import colors

from archzoo.analysis.emergence import emergence_figures, emergence_points, scale_figure, steps_figure
from archzoo.analysis.plots import FAMILY_COLOURS, plot_sweep
from archzoo.analysis.runs import load_sweep
from tests.analysis.test_plots import FAMILIES, write_run

SIZES = [1e5, 4e5, 1.6e6]
METRICS = {"exact_match": "discontinuous", "brier": "continuous"}
EVAL_STEPS = (20, 40)  # write_run's runs take 40 steps


def _evals(run_dir, N, offset, rng):
    """Exact match jumps between the two larger sizes; the Brier score falls smoothly."""
    rows = []
    for step in EVAL_STEPS:
        scale = np.log10(N) + np.log10(step / 40)
        for shots in (0, 3):
            values = {"exact_match": float(scale > 6.0) * 0.8 + offset, "brier": 1.2 - 0.3 * scale + offset + shots * 0.01}
            for metric, kind in METRICS.items():
                rows.append(
                    {"task": "addition-2d", "shots": shots, "metric": metric, "value": values[metric],
                     "stderr": float(rng.uniform(0.01, 0.05)), "step": step, "kind": kind, "n": 100}
                )
    (run_dir / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def sweep(tmp_path):
    rng = np.random.default_rng(0)
    for label, offset in (("causal decoder", 0.0), ("encoder-decoder", 0.05)):
        family, mask, _ = FAMILIES[label]
        for N in SIZES:
            name = f"{label.replace(' ', '-')}-{N:.0e}"
            write_run(tmp_path, name, family=family, mask=mask, N=N, D=20 * N, loss_of=lambda n, d: 3.0, rng=rng)
            _evals(tmp_path / name, N, offset, rng)
    # a run that has not finished is left out of the scale figure
    write_run(tmp_path, "running", N=3e6, D=6e7, loss_of=lambda n, d: 3.0, rng=rng, summary=None)
    _evals(tmp_path / "running", 3e6, 0.0, rng)
    return tmp_path


def _artist(fig, gid):
    found = [a for ax in fig.axes for a in ax.get_children() if a.get_gid() == gid]
    assert len(found) == 1, f"{gid}: {len(found)} artists"
    return found[0]


def test_scale_figure_draws_every_runs_final_evaluation_by_family(sweep):
    records = load_sweep(sweep)
    points = emergence_points(records)
    fig = scale_figure(points, "addition-2d", 3)
    for label in ("causal decoder", "encoder-decoder"):
        for metric in METRICS:
            for axis in ("N", "C"):
                line = _artist(fig, f"emergence:{label}:{metric}:{axis}")
                expected = []
                for r in sorted((r for r in records if r.finished and r.facts["family"] == FAMILIES[label][0]),
                                key=lambda r: r.facts["non_embedding_params"]):
                    [e] = [e for e in r.evals if e["step"] == 40 and e["shots"] == 3 and e["metric"] == metric]
                    x = r.facts["non_embedding_params"] if axis == "N" else r.summary["flops"]
                    expected.append((x, e["value"], e["stderr"]))
                np.testing.assert_allclose(line.get_xdata(), [x for x, _, _ in expected])
                np.testing.assert_allclose(np.asarray(line.get_ydata(), float), [v for _, v, _ in expected])
                # error bars: one vertical segment per run, ±1 standard error
                segments = _artist(fig, f"stderr:{label}:{metric}:{axis}").get_segments()
                np.testing.assert_allclose([s[1][1] - s[0][1] for s in segments], [2 * e for _, _, e in expected])
                assert colors.to_hex(line.get_color()) == FAMILY_COLOURS[label]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["exact match\n(discontinuous, higher is better)", "Brier score\n(continuous, lower is better)"]


def test_steps_figure_draws_each_run_over_training(sweep):
    records = load_sweep(sweep)
    fig = steps_figure(records, "addition-2d", 0)
    for r in records:
        for metric in METRICS:
            line = _artist(fig, f"steps:{r.name}:{metric}")
            mine = sorted((e["step"], e["value"]) for e in r.evals if e["shots"] == 0 and e["metric"] == metric)
            np.testing.assert_allclose(line.get_xdata(), [s for s, _ in mine])
            np.testing.assert_allclose(line.get_ydata(), [v for _, v in mine])


@pytest.mark.slow
def test_plot_writes_emergence_figures_beside_the_scaling_ones(sweep, tmp_path):
    report = plot_sweep(load_sweep(sweep), tmp_path / "plots", bootstrap=0)
    names = {p.name for p in report.files}
    for stem in ("emergence_addition-2d_0shot", "emergence_addition-2d_3shot", "training_addition-2d_0shot", "loss_vs_params"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert set(emergence_figures(load_sweep(sweep))) == {
        "emergence_addition-2d_0shot", "emergence_addition-2d_3shot", "training_addition-2d_0shot", "training_addition-2d_3shot"
    }
