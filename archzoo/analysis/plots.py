"""Figures of a sweep, drawn from its run directories: final loss against parameters, tokens and
compute with fitted power laws, the compute-optimal frontier, IsoFLOP profiles and training
curves.

Figures are built on :class:`matplotlib.figure.Figure` without pyplot, so importing or calling
this never touches the user's backend. Each ``*_figure`` function returns its figure; only
:func:`plot_sweep` writes files. Every figure colours a family the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from matplotlib import colors, ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from archzoo.analysis.fits import PowerLawFit
from archzoo.analysis.isoflop import IsoFlopFit
from archzoo.analysis.runs import RunRecord
from archzoo.analysis.sweep import (
    AXES,
    Comparison,
    SweepAnalysis,
    analyse_sweep,
    isoflop_budgets,
    pareto_frontier,
)

__all__ = [
    "FAMILY_COLOURS",
    "scaling_figure",
    "frontier_figure",
    "isoflop_figure",
    "curves_figure",
    "sweep_figures",
    "PlotReport",
    "plot_sweep",
    "format_report",
]

FAMILY_COLOURS = {
    "causal decoder": "#1f77b4",
    "prefix decoder": "#ff7f0e",
    "encoder-decoder": "#2ca02c",
    "encoder": "#d62728",
}
_OTHER_COLOUR = "#7f7f7f"
_MARKERS = ("o", "s", "^", "D", "v", "P")  # one per objective, where a sweep mixes them
_DASHES = ("-", "--", ":", "-.")
FIGURE_SIZE = (9.0, 5.0)  # inches
DPI = 100
LOSS_LABEL = "validation loss (nats / target token)"
AXIS_LABELS = {
    "N": "non-embedding parameters N",
    "D": "target tokens D",
    "C": "training compute C (FLOPs)",
}


# --- Styles --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Style:
    colour: str
    marker: str
    dashes: str


def _styles(analysis: SweepAnalysis) -> dict[str, _Style]:
    """Colour by family; marker and line style by objective."""
    objectives = list(dict.fromkeys(p.objective for p in analysis.points))
    styles = {}
    for p in analysis.points:
        k = objectives.index(p.objective)
        colour = FAMILY_COLOURS.get(p.family, _OTHER_COLOUR)
        styles[p.group] = _Style(colour, _MARKERS[k % len(_MARKERS)], _DASHES[k % len(_DASHES)])
    return styles


def _lighter(colour: str, amount: float) -> tuple[float, float, float]:
    """``colour`` mixed with white: 0 keeps it, 1 is white."""
    rgb = np.array(colors.to_rgb(colour))
    return tuple(rgb + (1.0 - rgb) * amount)


def _shades(values, colour: str) -> dict[float, tuple[float, float, float]]:
    """A shade of ``colour`` per distinct value: the smallest lightest, the largest full."""
    distinct = sorted(set(values))
    steps = np.linspace(0.6, 0.0, len(distinct)) if len(distinct) > 1 else [0.0]
    return {v: _lighter(colour, s) for v, s in zip(distinct, steps)}


def _gid(kind: str, name: str) -> str:
    """The id an artist carries (``kind:name``), for tests and for the SVG."""
    return f"{kind}:{name}"


def _new_figure(title: str, panels: int = 1, size=FIGURE_SIZE) -> tuple[Figure, list]:
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0].tolist()
    # One panel: the title over the axes, so a legend beside them cannot run into it.
    (axes[0].set_title if panels == 1 else fig.suptitle)(title)
    return fig, axes


def _log_axes(ax, xlabel: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Losses span less than a decade: labelled minor ticks in plain numbers (2.5, 3, 3.5, 4, 5)
    # read better than a lone 10^0.
    ax.yaxis.set_minor_locator(ticker.LogLocator(subs=(1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 9)))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
    ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%.3g"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(LOSS_LABEL)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)


def _outside_legend(ax, handles=None, labels=None, **kwargs) -> None:
    """A legend to the right of the axes, where it covers no data."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles,
            labels,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            borderaxespad=0.0,
            fontsize="small",
            title_fontsize="small",
            **kwargs,
        )


# --- Final loss against N, D, C ----------------------------------------------------------------


def _tex_number(value: float) -> str:
    """``value`` to 3 significant digits as mathtext: ``1.56\\times10^{3}`` for 1.56e+03."""
    text = f"{value:.3g}"
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return rf"{mantissa}\times10^{{{int(exponent)}}}"


def _fit_label(group: str, axis: str, fit: PowerLawFit) -> str:
    return rf"{group}: ${_tex_number(fit.E)} + {_tex_number(fit.a)}\,{axis}^{{-{fit.b:.3f}}}$"


def _draw_fit(ax, fit: PowerLawFit, lo: float, hi: float, style: _Style, group: str) -> Line2D:
    x = np.geomspace(lo, hi, 200)
    (line,) = ax.plot(x, fit.predict(x), color=style.colour, linestyle=style.dashes, gid=_gid("fit", group))
    if len(fit.bootstrap_params):
        band_lo, band_hi = fit.predict_interval(x)
        ax.fill_between(x, band_lo, band_hi, color=style.colour, alpha=0.15, lw=0, gid=_gid("band", group))
    return line


def _mark_crossings(ax, comparison: Comparison, row: int) -> int:
    """Marks the pair's crossings, their labels from label row ``row`` down (rows stagger the
    labels of crossings that lie close); returns the next free row."""
    a, b = comparison.names
    for k, (C, (lo, hi)) in enumerate(zip(comparison.crossover.crossings, comparison.crossover.intervals)):
        gid = _gid("crossover", f"{a}|{b}|{k}")
        ax.axvline(C, color="black", linestyle=":", lw=1.2, gid=gid)
        if np.isfinite(lo) and np.isfinite(hi):
            ax.axvspan(
                lo, hi, color="black", alpha=0.06, lw=0, gid=_gid("crossover-interval", f"{a}|{b}|{k}")
            )
        ax.annotate(
            f"{a} = {b}\nC ≈ {C:.2g}",
            xy=(C, 0.98 - 0.09 * (row % 6)),
            xycoords=("data", "axes fraction"),
            xytext=(3, 0),
            textcoords="offset points",
            va="top",
            fontsize="x-small",
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )
        row += 1
    return row


def scaling_figure(analysis: SweepAnalysis, axis: str) -> Figure:
    """Final validation loss against ``axis`` (``"N"``, ``"D"`` or ``"C"``) on log-log axes: a
    scatter of the runs per group, the fitted ``E + a x^-b`` over the group's measured range with
    its 95% bootstrap band, and (in compute) the crossings of each pair with their intervals."""
    fig, (ax,) = _new_figure(
        rf"Final validation loss against {AXES[axis]}, fitted $L = E + a\,{axis}^{{-b}}$"
    )
    styles = _styles(analysis)
    handles, labels = [], []
    for group in analysis.groups:
        points, style = analysis.of(group), styles[group]
        x = np.array([p.x(axis) for p in points])
        fit = analysis.fits[group].get(axis)
        dots = ax.scatter(
            x,
            [p.loss for p in points],
            color=style.colour,
            marker=style.marker,
            s=28,
            zorder=3,
            gid=_gid("points", group),
        )
        if fit is None:
            handles.append(dots)
            labels.append(f"{group} (too few sizes to fit)")
        else:
            handles.append((dots, _draw_fit(ax, fit, x.min(), x.max(), style, group)))
            labels.append(_fit_label(group, axis, fit))
    if axis == "C":
        row = 0
        for comparison in analysis.comparisons:
            row = _mark_crossings(ax, comparison, row)
    losses = [p.loss for p in analysis.points]
    if losses:  # the runs set the view; a wide band past the smallest run would flatten them
        ax.set_ylim(min(losses) / 1.12, max(losses) * 1.12)
    _log_axes(ax, AXIS_LABELS[axis])
    _outside_legend(ax, handles, labels, title="runs and fit (band: 95% bootstrap)")
    return fig


# --- Training curves and their frontier ----------------------------------------------------------


_CURVE_COLUMNS = {"D": 0, "C": 1}


def _draw_curves(ax, analysis: SweepAnalysis, axis: str, alpha: float, lw: float) -> None:
    """Every run's validation curve against ``axis``, lighter for smaller N within its group."""
    styles = _styles(analysis)
    column = _CURVE_COLUMNS[axis]
    for group in analysis.groups:
        points, style = analysis.of(group), styles[group]
        shade = _shades([p.N for p in points], style.colour)
        for p in points:
            ax.plot(
                p.curve[:, column],
                p.curve[:, 2],
                color=shade[p.N],
                linestyle=style.dashes,
                lw=lw,
                alpha=alpha,
                gid=_gid("curve", p.name),
            )


def _group_handles(analysis: SweepAnalysis, lw: float = 2.0) -> list[Line2D]:
    styles = _styles(analysis)
    return [
        Line2D([], [], color=styles[g].colour, linestyle=styles[g].dashes, lw=lw, label=g)
        for g in analysis.groups
    ]


def curves_figure(analysis: SweepAnalysis, axis: str) -> Figure:
    """Validation loss during training against target tokens (``"D"``) or FLOPs (``"C"``), one
    line per run, coloured by family and lighter for smaller models."""
    what = {"D": "target tokens", "C": "training FLOPs"}[axis]
    fig, (ax,) = _new_figure(f"Validation loss during training against {what}")
    _draw_curves(ax, analysis, axis, alpha=0.9, lw=1.3)
    _log_axes(ax, {"D": "target tokens seen", "C": "training compute spent (FLOPs)"}[axis])
    _outside_legend(ax, _group_handles(analysis), [*analysis.groups], title="lighter: smaller N")
    return fig


def frontier_figure(analysis: SweepAnalysis) -> Figure:
    """Every run's validation curve against FLOPs (thin), and per group the compute-optimal
    frontier (bold): the validation points no run of the group beat with as few or fewer FLOPs."""
    fig, (ax,) = _new_figure("Compute-optimal frontier: lower envelope of the validation curves")
    _draw_curves(ax, analysis, "C", alpha=0.45, lw=0.9)
    styles = _styles(analysis)
    for group in analysis.groups:
        curves = [p.curve[:, 1:] for p in analysis.of(group)]
        frontier = pareto_frontier(np.concatenate(curves))
        style = styles[group]
        ax.plot(
            frontier[:, 0],
            frontier[:, 1],
            color=style.colour,
            linestyle=style.dashes,
            lw=2.6,
            label=f"{group} frontier",
            gid=_gid("frontier", group),
        )
    _log_axes(ax, AXIS_LABELS["C"])
    _outside_legend(ax, title="thin: each run")
    return fig


# --- IsoFLOP profiles --------------------------------------------------------------------------


def _draw_profiles(ax, analysis: SweepAnalysis, group: str, style: _Style) -> None:
    """One group's IsoFLOP panel: its runs, parabola and minimum at each budget, darker for more
    compute."""
    points, parabolas = analysis.of(group), analysis.parabolas[group]
    budgets = isoflop_budgets(points)
    shade = _shades([p.C for p in parabolas], style.colour)
    for parabola in parabolas:
        colour, name = shade[parabola.C], f"{group}|{parabola.C:.6g}"
        members = [p for p, C in zip(points, budgets) if C == parabola.C]
        ax.scatter(
            [p.N for p in members],
            [p.loss for p in members],
            color=colour,
            s=22,
            zorder=3,
            gid=_gid("isoflop-points", name),
        )
        lo, hi = parabola.N_range
        N = np.geomspace(min(lo, parabola.N_opt) / 1.3, max(hi, parabola.N_opt) * 1.3, 200)
        ax.plot(
            N,
            parabola.predict(N),
            color=colour,
            lw=1.4,
            label=f"C = {parabola.C:.2g}",
            gid=_gid("parabola", name),
        )
        ax.plot(
            [parabola.N_opt],
            [parabola.loss_opt],
            marker="x",
            color="black",
            ms=7,
            mew=1.5,
            gid=_gid("optimum", name),
        )
    ax.set_xscale("log")
    ax.set_xlabel(AXIS_LABELS["N"])
    ax.set_ylabel("final " + LOSS_LABEL)
    ax.set_title(group, fontsize="medium")
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize="x-small", title="budget (FLOPs); x: minimum", title_fontsize="x-small")


def _optimum_band(fit: IsoFlopFit, C: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Pointwise 95% percentile band of the bootstrap lines ``N_opt(C)``, or None without them."""
    rows = fit.bootstrap_params[np.all(np.isfinite(fit.bootstrap_params), axis=1)]
    if len(rows) == 0:
        return None
    log_N = rows[:, :1] + rows[:, 1:2] * np.log(C)  # [S, len(C)]
    lo, hi = np.percentile(log_N, (2.5, 97.5), axis=0)
    return np.exp(lo), np.exp(hi)


def _draw_optima(ax, analysis: SweepAnalysis, styles: dict[str, _Style]) -> None:
    """The panel of each budget's minimum ``N_opt`` against compute, with ``N_opt ∝ C^a``."""
    for group, fit in analysis.isoflop.items():
        style = styles[group]
        C = np.array([p.C for p in fit.parabolas])
        ax.scatter(
            C,
            [p.N_opt for p in fit.parabolas],
            color=style.colour,
            marker=style.marker,
            zorder=3,
            gid=_gid("n-opt-points", group),
        )
        grid = np.geomspace(C.min(), C.max(), 100)
        lo, hi = fit.a_interval
        ax.plot(
            grid,
            fit.compute_optimal(grid)[0],
            color=style.colour,
            linestyle=style.dashes,
            label=f"{group}: a = {fit.a:.3f} ({lo:.3f}..{hi:.3f})",
            gid=_gid("n-opt-fit", group),
        )
        band = _optimum_band(fit, grid)
        if band is not None:
            ax.fill_between(grid, *band, color=style.colour, alpha=0.15, lw=0, gid=_gid("n-opt-band", group))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(AXIS_LABELS["C"])
    ax.set_ylabel(r"compute-optimal parameters $N_{opt}$")
    ax.set_title(r"$N_{opt} \propto C^{a}$ (95% bootstrap band)", fontsize="medium")
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize="x-small")


def isoflop_figure(analysis: SweepAnalysis) -> Figure | None:
    """IsoFLOP profiles (Hoffmann et al. 2022, approach 2), or None when no group has a budget
    with 3 or more sizes: per group a panel of final loss against N at each budget with its
    parabola and minimum; and a panel of the minima ``N_opt`` against compute with the fitted
    ``N_opt ∝ C^a`` and its 95% bootstrap band."""
    groups = list(analysis.parabolas)
    if not groups:
        return None
    panels = len(groups) + (1 if analysis.isoflop else 0)
    size = (4.2 * panels + 1.5, 4.6)
    fig, axes = _new_figure("IsoFLOP profiles: final loss against size at fixed compute", panels, size)
    styles = _styles(analysis)
    for ax, group in zip(axes, groups):
        _draw_profiles(ax, analysis, group, styles[group])
    if analysis.isoflop:
        _draw_optima(axes[-1], analysis, styles)
    return fig


# --- Writing and reporting -----------------------------------------------------------------------


def sweep_figures(analysis: SweepAnalysis) -> dict[str, Figure]:
    """Every figure the analysis can fill, by file stem; none when no run counts."""
    if not analysis.points:
        return {}
    figures = {
        "loss_vs_params": scaling_figure(analysis, "N"),
        "loss_vs_tokens": scaling_figure(analysis, "D"),
        "loss_vs_flops": scaling_figure(analysis, "C"),
        "frontier": frontier_figure(analysis),
        "curves_tokens": curves_figure(analysis, "D"),
        "curves_flops": curves_figure(analysis, "C"),
    }
    isoflop = isoflop_figure(analysis)
    if isoflop is not None:
        figures["isoflop"] = isoflop
    return figures


@dataclasses.dataclass(frozen=True)
class PlotReport:
    """What :func:`plot_sweep` drew and found.

    Attributes:
      files: the PNG and SVG files written, in pairs.
      runs: names of the runs drawn and fitted.
      fits: per group (family label, with the objective where a sweep mixes them), per axis
        ``"N"``, ``"D"``, ``"C"``: the fitted power law ``E + a x^-b`` with its intervals.
      crossovers: per pair of groups fitted in compute, where they cross or which leads (its
        ``str`` is the sentence).
      isoflop: per group with IsoFLOP profiles at 2 or more budgets, ``N_opt ∝ C^a``, ``D_opt ∝ C^b``.
      notes: what could not be drawn or fitted, and why.
    """

    files: tuple[Path, ...]
    runs: tuple[str, ...]
    fits: dict[str, dict[str, PowerLawFit]]
    crossovers: tuple[Comparison, ...]
    isoflop: dict[str, IsoFlopFit]
    notes: tuple[str, ...]


def plot_sweep(
    records: list[RunRecord], out_dir: str | Path, *, bootstrap: int = 1000, seed: int = 0
) -> PlotReport:
    """Fits a sweep's runs and writes each of its figures as ``out_dir/<name>.png`` and ``.svg``:
    the scaling figures, and the emergence figures of every task the runs were evaluated on
    (:mod:`archzoo.analysis.emergence`).

    Args:
      records: the runs (``load_sweep``); unfinished, failed and interrupted runs are skipped
        with a note.
      out_dir: where the figures go (created when there is something to draw).
      bootstrap: resamples of the runs behind every interval (0 for no bands or intervals).
      seed: seed of the resampling.

    Returns:
      the report. With no finished run nothing is written (``files`` is empty) and the notes say
      why; nothing is raised.
    """
    from archzoo.analysis.emergence import emergence_figures

    analysis = analyse_sweep(records, bootstrap=bootstrap, seed=seed)
    # task metrics against scale and steps, where the runs were evaluated (evals.jsonl)
    figures = {**sweep_figures(analysis), **emergence_figures(records)}
    files = []
    if figures:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        for suffix, metadata in ((".png", None), (".svg", {"Date": None})):  # no date: same bytes again
            path = out_dir / f"{name}{suffix}"
            fig.savefig(path, dpi=DPI, metadata=metadata)
            files.append(path)
    return PlotReport(
        files=tuple(files),
        runs=tuple(p.name for p in analysis.points),
        fits=analysis.fits,
        crossovers=analysis.comparisons,
        isoflop=analysis.isoflop,
        notes=analysis.notes,
    )


def _with_interval(value: float, interval: tuple[float, float], digits: int = 3) -> str:
    lo, hi = interval
    if np.isnan(lo):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}g} ({lo:.{digits}g}..{hi:.{digits}g})"


def format_report(report: PlotReport) -> str:
    """The report as a text block for the console: fits, IsoFLOP exponents, crossovers, notes,
    files."""
    lines = [f"{len(report.runs)} runs fitted and drawn"]
    rows = [("group", "x", "E (95% CI)", "a", "b (95% CI)")]
    for group, fits in report.fits.items():
        for axis, fit in fits.items():
            rows.append(
                (
                    group,
                    axis,
                    _with_interval(fit.E, fit.E_interval),
                    f"{fit.a:.3g}",
                    _with_interval(fit.b, fit.b_interval),
                )
            )
    if len(rows) > 1:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["", "Power laws L = E + a·x^-b (x: N parameters, D target tokens, C FLOPs)"]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if report.isoflop:
        lines += ["", "IsoFLOP (Hoffmann et al. 2022, approach 2): N_opt ∝ C^a, D_opt ∝ C^b"]
        for group, fit in report.isoflop.items():
            tokens = "tokens of the runs" if fit.tokens_from == "runs" else "C / 6N"
            lines.append(
                f"  {group}: a = {_with_interval(fit.a, fit.a_interval)}, b = {_with_interval(fit.b, fit.b_interval)}"
                f" over {len(fit.parabolas)} budgets (D_opt from {tokens})"
            )
    for title, items in (("Crossovers", [str(c) for c in report.crossovers]), ("Notes", report.notes)):
        if items:
            lines += ["", title] + [f"  - {item}" for item in items]
    lines += ["", "Files" if report.files else "Files: none written"]
    lines += [f"  {path}" for path in report.files]
    return "\n".join(lines)
