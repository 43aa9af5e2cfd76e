"""A sweep's runs as points to fit and plot: which runs count, the power laws of each family in
parameters, tokens and compute, where families cross, and IsoFLOP profiles where the runs form
them. What could not be fitted is said in plain-language notes instead of raised.

A run counts when it finished by its budget and has a validation loss. Its point is its
non-embedding parameters ``N`` (Kaplan et al. 2020), the target tokens ``D`` it trained on, the
training FLOPs ``C`` it spent, and its final validation loss (nats per target token).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from archzoo.analysis.fits import (
    Crossover,
    Gap,
    PowerLawFit,
    crossover,
    fit_power_law,
    gap_at,
)
from archzoo.analysis.isoflop import (
    IsoFlopFit,
    IsoFlopParabola,
    fit_isoflop,
    fit_isoflop_parabola,
)
from archzoo.analysis.runs import RunRecord

__all__ = [
    "FAMILY_LABELS",
    "AXES",
    "RunPoint",
    "Comparison",
    "SweepAnalysis",
    "family_label",
    "mask_label",
    "run_points",
    "pareto_frontier",
    "isoflop_budgets",
    "analyse_sweep",
]

FAMILY_LABELS = ("causal decoder", "prefix decoder", "encoder-decoder", "encoder")
AXES = {"N": "non-embedding parameters", "D": "target tokens", "C": "training FLOPs"}
MIN_SIZES = 3  # distinct sizes a power law E + a x^-b needs (three parameters)
ISOFLOP_TOLERANCE = 0.1  # runs whose FLOPs lie within 10% of a group's smallest share a budget


def mask_label(mask) -> str:
    """A run's mask as its facts hold it: ``causal``, ``prefix``, or a plug-in's path with its
    options (``pkg.masks:chunked(size=16)``)."""
    if isinstance(mask, dict):
        options = ", ".join(f"{k}={v!r}" for k, v in mask.items() if k != "path")
        return f"{mask.get('path')}({options})" if options else str(mask.get("path"))
    return "causal" if mask is None else str(mask)


def family_label(facts: dict) -> str:
    """ "causal decoder", "prefix decoder", "encoder-decoder" or "encoder"; a decoder with a mask
    of the user's own: "decoder (its path and options)"."""
    if facts["family"] == "decoder":
        mask = mask_label(facts.get("mask"))
        return f"{mask} decoder" if mask in ("causal", "prefix") else f"decoder ({mask})"
    return {"encoder_decoder": "encoder-decoder"}.get(facts["family"], facts["family"])


@dataclasses.dataclass(frozen=True)
class RunPoint:
    """One finished run as a fit and a plot see it.

    Attributes:
      name: the run's name.
      group: the curve it belongs to: its family label, with the objective in brackets when the
        sweep mixes objectives.
      family: its family label (which decides its colour).
      objective: the objective's name.
      N: non-embedding parameters. D: target tokens trained on. C: training FLOPs spent.
      budget_flops: the FLOP budget it ran to (``budget.value`` for a FLOP budget, else ``C``).
      loss: final validation loss, nats per target token.
      curve: ``[K, 3]`` its validation records: target tokens, FLOPs, loss (nats/target token).
    """

    name: str
    group: str
    family: str
    objective: str
    N: float
    D: float
    C: float
    budget_flops: float
    loss: float
    curve: np.ndarray = dataclasses.field(repr=False, compare=False)

    def x(self, axis: str) -> float:
        return {"N": self.N, "D": self.D, "C": self.C}[axis]


def _skip_reason(record: RunRecord) -> str | None:
    s = record.summary
    if s is None:
        error = getattr(record, "error", None)
        if error:
            return f"failed ({error.get('type', 'error')}: {error.get('message', '')})"
        last = record.metrics[-1].get("step", 0) if record.metrics else 0
        return f"not finished (no summary: still training, or stopped by an error; last logged step {last})"
    if s.get("stopped_by", "budget") != "budget":
        return f"stopped by {s['stopped_by']} at step {s['steps']}, short of its budget"
    if "val_loss_nats" not in s:
        return "has no validation loss (its data had no validation split)"
    return None


def _curve(record: RunRecord) -> np.ndarray:
    rows = [
        (m["target_tokens"], m["flops"], m["val_loss_nats"]) for m in record.metrics if "val_loss_nats" in m
    ]
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def run_points(records: list[RunRecord]) -> tuple[list[RunPoint], list[str]]:
    """The points of the runs that count, and a note for each run left out and why."""
    reasons = [(r, _skip_reason(r)) for r in records]
    counted = [r for r, reason in reasons if reason is None]
    notes = [f"run {r.name} skipped: {reason}" for r, reason in reasons if reason is not None]
    mixed = len({r.facts["objective"] for r in counted}) > 1
    points = []
    for r in counted:
        family, s = family_label(r.facts), r.summary
        budget = r.facts.get("budget") or s.get("budget") or {}
        points.append(
            RunPoint(
                name=r.name,
                group=f"{family} ({r.facts['objective']})" if mixed else family,
                family=family,
                objective=r.facts["objective"],
                N=float(r.facts["non_embedding_params"]),
                D=float(s["target_tokens"]),
                C=float(s["flops"]),
                budget_flops=float(budget["value"]) if budget.get("kind") == "flops" else float(s["flops"]),
                loss=float(s["val_loss_nats"]),
                curve=_curve(r),
            )
        )
    order = {label: i for i, label in enumerate(FAMILY_LABELS)}
    points.sort(key=lambda p: (order.get(p.family, len(order)), p.group, p.N, p.C))
    return points, notes


def pareto_frontier(points: np.ndarray) -> np.ndarray:
    """The points ``[K, 2]`` of ``(compute, loss)`` that no other point beats with as little or
    less compute, ascending in compute: the lower envelope of the training curves."""
    points = points[np.lexsort((points[:, 1], points[:, 0]))]
    best_before = np.concatenate([[np.inf], np.minimum.accumulate(points[:, 1])[:-1]])
    return points[points[:, 1] < best_before]


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Two groups' power laws in compute over the compute both measured: where they cross (or
    which is lower throughout) and the gap between them at both ends of the range."""

    crossover: Crossover
    gaps: tuple[tuple[float, Gap], tuple[float, Gap]]  # (C, names[0] ahead of names[1]) at low, high

    @property
    def names(self) -> tuple[str, str]:
        return self.crossover.names

    def _ahead(self, C: float, gap: Gap) -> str:
        first, second = self.names
        if gap.nats < 0:
            first, second, gap = second, first, Gap(-gap.nats, -gap.hi, -gap.lo)
        if np.isnan(gap.lo):
            ci = "no interval"
        else:
            ci = f"95% CI {gap.lo:.3g}..{gap.hi:.3g}" + (
                ", which includes 0" if gap.lo <= 0 <= gap.hi else ""
            )
        return f"At C = {C:.3g}, {first} is ahead of {second} by {gap.nats:.3g} nats ({ci})"

    def __str__(self) -> str:
        c = self.crossover
        lo, hi = c.x_range
        ends = ". ".join(self._ahead(C, gap) for C, gap in self.gaps)
        if np.isnan(c.fraction_crossing):
            share = "no bootstrap fits to say how sure"
        else:
            share = f"{c.fraction_crossing:.0%} of bootstrap pairs cross in it"
        if not c.crossings:
            loser = c.names[1] if c.lower_first == c.names[0] else c.names[0]
            return (
                f"{c.lower_first} is ahead of {loser} over all of C = {lo:.3g}..{hi:.3g} ({share}). {ends}."
            )
        where = ", ".join(
            f"C = {x:.3g} ({'no interval' if np.isnan(ci_lo) else f'95% CI {ci_lo:.3g}..{ci_hi:.3g}'})"
            for x, (ci_lo, ci_hi) in zip(c.crossings, c.intervals)
        )
        return (
            f"{c.names[0]} and {c.names[1]} cross at {where} within C = {lo:.3g}..{hi:.3g} ({share}). {ends}."
        )


@dataclasses.dataclass(frozen=True)
class SweepAnalysis:
    """What a sweep's runs say.

    Attributes:
      points: the runs that count, ordered by family, group and size.
      groups: the group labels in that order.
      fits: per group, per axis ``"N"``, ``"D"``, ``"C"``, the power law ``E + a x^-b`` (missing
        where the group has fewer than 3 distinct values on that axis).
      comparisons: per pair of groups with fits in compute, where they cross or which leads.
      parabolas: per group, the IsoFLOP parabola of each budget with 3 or more sizes.
      isoflop: per group with 2 or more such budgets, ``N_opt ∝ C^a`` and ``D_opt ∝ C^b``.
      notes: what was left out or could not be fitted, and why.
    """

    points: tuple[RunPoint, ...]
    groups: tuple[str, ...]
    fits: dict[str, dict[str, PowerLawFit]]
    comparisons: tuple[Comparison, ...]
    parabolas: dict[str, tuple[IsoFlopParabola, ...]]
    isoflop: dict[str, IsoFlopFit]
    notes: tuple[str, ...]

    def of(self, group: str) -> list[RunPoint]:
        return [p for p in self.points if p.group == group]


def _fit_axes(points: list[RunPoint], bootstrap: int, seed: int) -> tuple[dict[str, PowerLawFit], str | None]:
    fits, missing = {}, []
    loss = np.array([p.loss for p in points])
    for axis in AXES:
        x = np.array([p.x(axis) for p in points])
        distinct = len(np.unique(x))
        if distinct < MIN_SIZES:
            missing.append(f"{distinct} distinct {axis}")
            continue
        try:
            fits[axis] = fit_power_law(x, loss, bootstrap=bootstrap, seed=seed)
        except (ValueError, RuntimeError) as e:
            missing.append(f"{axis} ({e})")
    if not missing:
        return fits, None
    group = points[0].group
    return fits, (
        f"{group}: {', '.join(missing)}; a power law E + a·x^-b needs {MIN_SIZES} distinct sizes, so "
        f"its runs are drawn without a fitted curve there"
    )


def _compare(name_a: str, name_b: str, analysis_fits, points) -> tuple[Comparison | None, str | None]:
    fit_a, fit_b = (analysis_fits[n].get("C") for n in (name_a, name_b))
    if fit_a is None or fit_b is None:
        lacking = name_a if fit_a is None else name_b
        return None, f"no crossover of {name_a} and {name_b}: {lacking} has no fit in compute"
    ranges = [[p.C for p in points if p.group == n] for n in (name_a, name_b)]
    low, high = max(min(r) for r in ranges), min(max(r) for r in ranges)
    if not low < high:
        return None, (
            f"no crossover of {name_a} and {name_b}: the compute they measured does not overlap "
            f"({min(ranges[0]):.3g}..{max(ranges[0]):.3g} and {min(ranges[1]):.3g}..{max(ranges[1]):.3g} FLOPs)"
        )
    found = crossover(fit_a, fit_b, x_range=(low, high), names=(name_a, name_b))
    return Comparison(found, tuple((C, gap_at(fit_a, fit_b, C)) for C in (low, high))), None


def isoflop_budgets(points: list[RunPoint]) -> np.ndarray:
    """The FLOP budget of each point's IsoFLOP group: points sorted by ``budget_flops`` join a
    group while within :data:`ISOFLOP_TOLERANCE` of its smallest; a group's budget is the geometric
    mean of its members'."""
    values = np.array([p.budget_flops for p in points])
    budgets = np.empty_like(values)
    order = np.argsort(values)
    start = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or values[order[i]] > values[order[start]] * (1 + ISOFLOP_TOLERANCE):
            members = order[start:i]
            group = values[members]
            same = np.all(group == group[0])  # a FLOP budget: keep its value to the bit
            budgets[members] = group[0] if same else np.exp(np.mean(np.log(group)))
            start = i
    return budgets


def _isoflop(points: list[RunPoint], bootstrap: int, seed: int):
    """The group's parabolas, its IsoFLOP fit (or None), and notes."""
    budgets = isoflop_budgets(points)
    N = np.array([p.N for p in points])
    loss = np.array([p.loss for p in points])
    D = np.array([p.D for p in points])
    group, notes, parabolas = points[0].group, [], []
    for C in np.unique(budgets):
        at = budgets == C
        if len(np.unique(N[at])) < MIN_SIZES:
            continue
        try:
            parabolas.append(fit_isoflop_parabola(C, N[at], loss[at], D=D[at]))
        except ValueError as e:
            notes.append(f"{group}: {e}; that budget is left out of the IsoFLOP fit")
    if not parabolas:
        return (), None, []
    small = sorted({f"{C:.3g}" for C in budgets if 1 < len(np.unique(N[budgets == C])) < MIN_SIZES})
    if small:
        notes.append(
            f"{group}: budgets C = {', '.join(small)} FLOPs have fewer than {MIN_SIZES} sizes; no IsoFLOP "
            "parabola there"
        )
    for p in parabolas:
        if not p.inside:
            notes.append(
                f"{group}: the C = {p.C:.3g} parabola's minimum N = {p.N_opt:.3g} lies outside the sizes "
                f"trained ({p.N_range[0]:.3g}..{p.N_range[1]:.3g}): extrapolated"
            )
    if len(parabolas) < 2:
        notes.append(f"{group}: one IsoFLOP budget only (C = {parabolas[0].C:.3g}); N_opt ∝ C^a needs 2")
        return tuple(parabolas), None, notes
    used = np.isin(budgets, [p.C for p in parabolas])
    fit = fit_isoflop(budgets[used], N[used], loss[used], D=D[used], bootstrap=bootstrap, seed=seed)
    return fit.parabolas, fit, notes


def analyse_sweep(records: list[RunRecord], *, bootstrap: int = 1000, seed: int = 0) -> SweepAnalysis:
    """The fits, crossings, IsoFLOP profiles and notes of a sweep's run records.

    Args:
      records: the runs (``load_sweep``); unfinished, interrupted and failed runs are left out
        with a note each.
      bootstrap: resamples of the runs behind every interval (0 for none).
      seed: seed of the resampling, the same for every fit so that crossings pair draws.

    Returns:
      the analysis; a sweep with nothing to fit returns empty fits and notes saying why.
    """
    points, notes = run_points(records)
    if not points:
        notes.append(
            f"no finished runs with a validation loss among the {len(records)} given: nothing to fit or draw"
            if records
            else "no runs given: nothing to fit or draw"
        )
        return SweepAnalysis((), (), {}, (), {}, {}, tuple(notes))
    groups = tuple(dict.fromkeys(p.group for p in points))
    fits, parabolas, isoflop = {}, {}, {}
    for group in groups:
        members = [p for p in points if p.group == group]
        fits[group], note = _fit_axes(members, bootstrap, seed)
        notes += [note] if note else []
        floorless = [axis for axis, fit in fits[group].items() if fit.E < 0.01 * min(p.loss for p in members)]
        if floorless:
            notes.append(
                f"{group}: the fit in {', '.join(floorless)} puts the irreducible loss E at or near 0 (a pure power law "
                "fits as well): its runs do not pin E, so read E and its interval as unknown, and b as the "
                "slope over the measured range"
            )
        parabolas[group], fit, isoflop_notes = _isoflop(members, bootstrap, seed)
        notes += isoflop_notes
        if parabolas[group] and fits[group]:
            notes.append(
                f"{group}: its runs form IsoFLOP profiles, so its power laws in N, D and C pass through runs "
                "of different budgets; read the IsoFLOP figure for how size should grow with compute"
            )
        if fit is not None:
            isoflop[group] = fit
    if not any(parabolas.values()):
        notes.append(f"no IsoFLOP groups ({MIN_SIZES} or more sizes at one FLOP budget): no IsoFLOP profile")
    parabolas = {g: p for g, p in parabolas.items() if p}

    comparisons = []
    if len(groups) == 1:
        notes.append(f"one family only ({groups[0]}): no crossovers")
    for a, b in itertools.combinations(groups, 2):
        found, note = _compare(a, b, fits, points)
        comparisons += [found] if found else []
        notes += [note] if note else []
    return SweepAnalysis(tuple(points), groups, fits, tuple(comparisons), parabolas, isoflop, tuple(notes))
