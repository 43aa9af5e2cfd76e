"""Scaling-law fits over plain arrays: a power law in one size, the Chinchilla law in two, and
where two fitted power laws cross.

Inputs are numpy arrays of run sizes and final losses (nats/token), one entry per run;
uncertainty comes from the bootstrap over runs (resampling runs with replacement, refitting).
Only numpy and scipy are imported, so a notebook can use this without jax.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import NamedTuple

import numpy as np
from scipy import optimize

__all__ = [
    "PowerLawFit",
    "fit_power_law",
    "ChinchillaFit",
    "fit_chinchilla",
    "hoffmann_grid",
    "Crossover",
    "crossover",
    "Gap",
    "gap_at",
]

_PERCENTILES = (2.5, 97.5)  # a 95% percentile interval


# --- Input checks ------------------------------------------------------------------------------


def _positive_finite(name: str, values) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of one value per run, got shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{name} must be finite; entries {np.flatnonzero(bad).tolist()} are not")
    bad = array <= 0
    if bad.any():
        raise ValueError(f"{name} must be positive; entries {np.flatnonzero(bad).tolist()} are <= 0")
    return array


def _check_runs(
    arrays: dict[str, np.ndarray], sizes: tuple[str, ...], num_params: int, min_distinct: int = 2
) -> None:
    """Equal lengths, at least ``num_params`` runs and ``min_distinct`` distinct values of each
    of ``sizes`` (also what every bootstrap resample is drawn to hold, so fewer would never end)."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"mismatched lengths: {lengths}; give one value per run in each")
    n = next(iter(lengths.values()))
    if n < num_params:
        raise ValueError(f"{n} points are fewer than the {num_params} parameters of the fit")
    for name in sizes:
        distinct = np.unique(arrays[name])
        if len(distinct) == 1:
            raise ValueError(
                f"all {name} are equal ({arrays[name][0]:g}): a single distinct size cannot fit a "
                f"trend in {name}"
            )
        if len(distinct) < min_distinct:
            shown = ", ".join(f"{v:g}" for v in distinct)
            raise ValueError(
                f"{name} has {len(distinct)} distinct values ({shown}); the fit needs {min_distinct}"
            )


def _check_bootstrap(bootstrap: int) -> None:
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0 resamples, got {bootstrap}")


def _resamples(rng: np.random.Generator, n: int, count: int, sizes: list[np.ndarray], min_distinct: int):
    """Yields ``count`` index arrays of ``n`` runs drawn with replacement; a draw with fewer than
    ``min_distinct`` distinct values of some size (too few to pin its trend) is drawn again."""
    made = 0
    while made < count:
        idx = rng.integers(0, n, size=n)
        if all(len(np.unique(s[idx])) >= min_distinct for s in sizes):
            made += 1
            yield idx


def _bootstrap_refits(
    refit, n: int, count: int, seed: int, sizes: list[np.ndarray], min_distinct: int, width: int
) -> np.ndarray:
    """``[count, width]`` refits, ``refit(idx)`` on each of ``count`` resamples of the ``n`` runs
    (see :func:`_resamples`); a refit that failed (None) is a row of NaN, kept so the draw order
    holds."""
    rows = []
    for idx in _resamples(np.random.default_rng(seed), n, count, sizes, min_distinct):
        params = refit(idx)
        rows.append(np.full(width, np.nan) if params is None else params)
    return np.reshape(rows, (-1, width))


def _interval(samples: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of the finite ``samples`` (failed refits are NaN rows)."""
    samples = samples[np.isfinite(samples)]
    if len(samples) == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(samples, _PERCENTILES)
    return (float(lo), float(hi))


# --- L(x) = E + a x^-b -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """``L(x) = E + a * x**-b``, with 95% bootstrap intervals.

    ``bootstrap_params`` is ``[S, 3]``: ``(E, a, b)`` refitted on each of ``S`` resamples of the
    runs, in draw order (so two fits made with the same seed over the same number of runs
    resampled the same run indices, which :func:`crossover` pairs); a refit that failed is a
    row of NaN, kept so the order holds.
    """

    E: float
    a: float
    b: float
    E_interval: tuple[float, float]
    a_interval: tuple[float, float]
    b_interval: tuple[float, float]
    bootstrap_params: np.ndarray = dataclasses.field(repr=False, compare=False)

    def predict(self, x) -> np.ndarray:
        """The fitted loss (nats) at sizes ``x`` (any shape)."""
        x = np.asarray(x, dtype=np.float64)
        return self.E + self.a * x ** (-self.b)

    def predict_interval(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise 2.5 and 97.5 percentiles of the bootstrap fits' losses at ``x``."""
        if len(self.bootstrap_params) == 0:
            raise ValueError("predict_interval needs bootstrap fits; fit with bootstrap > 0")
        x = np.asarray(x, dtype=np.float64)
        E, a, b = (p.reshape((-1,) + (1,) * x.ndim) for p in self.bootstrap_params.T)
        losses = E + a * x ** (-b)  # [S, *x.shape]
        lo, hi = np.nanpercentile(losses, _PERCENTILES, axis=0)
        return lo, hi


def _power_law_residuals(p, log_x, log_loss):
    E, log_a, b = p
    return np.log(E + np.exp(log_a - b * log_x)) - log_loss


def _power_law_jacobian(p, log_x, log_loss):
    E, log_a, b = p
    term = np.exp(log_a - b * log_x)
    model = E + term
    return np.stack([1.0 / model, term / model, -log_x * term / model], axis=1)


def _least_squares_power_law(start, log_x, log_loss):
    return optimize.least_squares(
        _power_law_residuals,
        start,
        jac=_power_law_jacobian,
        bounds=([0.0, -np.inf, 0.0], [np.inf, np.inf, np.inf]),  # E >= 0, b >= 0
        args=(log_x, log_loss),
        method="trf",
        xtol=1e-12,
        ftol=1e-12,
        gtol=1e-12,
        max_nfev=2000,
    )


def _power_law_starts(log_x, loss):
    """Starting points ``(E, log a, b)`` spanning no floor to a floor just under the lowest loss,
    and shallow to steep exponents; ``log a`` is then the mean of ``log(L - E)``."""
    for e_frac, b in itertools.product((0.0, 0.5, 0.9), (0.05, 0.2, 0.5, 1.0)):
        E = e_frac * loss.min()
        log_a = np.mean(np.log(loss - E) + b * log_x)
        yield np.array([E, log_a, b])


def _fit_power_law_once(log_x, log_loss, starts) -> np.ndarray | None:
    best = None
    for start in starts:
        try:
            result = _least_squares_power_law(start, log_x, log_loss)
        except (ValueError, FloatingPointError):
            continue
        if np.all(np.isfinite(result.x)) and (best is None or result.cost < best.cost):
            best = result
    return None if best is None else best.x


def fit_power_law(x, loss, *, bootstrap: int = 1000, seed: int = 0) -> PowerLawFit:
    """Fits ``L(x) = E + a x^-b`` (E >= 0, a > 0, b > 0) by least squares on ``log L``.

    Sizes are centred on their geometric mean inside the fit (``a`` then barely trades off
    against ``b``); the point fit starts from a small grid and keeps the lowest cost, and each
    bootstrap refit starts from the point fit.

    Args:
      x: ``[R]`` compute (FLOPs), parameters or tokens of each of ``R`` runs.
      loss: ``[R]`` final loss of each run, nats/token.
      bootstrap: number of resamples of the runs (with replacement) for the intervals; 0 for none
        (the intervals are then NaN).
      seed: seed of the resampling.

    Returns:
      the fit, with 95% percentile intervals for ``E``, ``a`` and ``b``.
    """
    x = _positive_finite("x", x)
    loss = _positive_finite("loss", loss)
    # Three parameters: through two distinct sizes any floor E fits exactly.
    _check_runs({"x": x, "loss": loss}, ("x",), num_params=3, min_distinct=3)
    _check_bootstrap(bootstrap)

    log_x0 = np.mean(np.log(x))
    log_x = np.log(x) - log_x0
    log_loss = np.log(loss)
    best = _fit_power_law_once(log_x, log_loss, _power_law_starts(log_x, loss))
    if best is None:
        raise RuntimeError("no starting point gave a finite power-law fit")

    def refit(idx):
        return _fit_power_law_once(log_x[idx], log_loss[idx], [best])

    samples = _bootstrap_refits(refit, len(x), bootstrap, seed, [x], min_distinct=3, width=3)

    def natural(p):  # (E, log a', b) over centred sizes -> (E, a, b) over raw sizes
        E, log_a, b = p.T
        return np.stack([E, np.exp(log_a + b * log_x0), b], axis=-1)

    E, a, b = natural(best)
    with np.errstate(over="ignore"):
        boot = natural(samples)
    boot[~np.all(np.isfinite(boot), axis=1)] = np.nan  # a refit so steep that a overflows
    return PowerLawFit(
        E=float(E),
        a=float(a),
        b=float(b),
        E_interval=_interval(boot[:, 0]),
        a_interval=_interval(boot[:, 1]),
        b_interval=_interval(boot[:, 2]),
        bootstrap_params=boot,
    )


# --- L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, approach 3) ------------------------


@dataclasses.dataclass(frozen=True)
class ChinchillaFit:
    """``L(N, D) = E + A / N**alpha + B / D**beta``, with 95% bootstrap intervals.

    ``bootstrap_params`` is ``[S, 5]``: ``(E, A, B, alpha, beta)`` per resample. ``objective`` is
    the summed Huber loss at the fit; ``starts`` how many grid points L-BFGS started from.
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    E_interval: tuple[float, float]
    A_interval: tuple[float, float]
    B_interval: tuple[float, float]
    alpha_interval: tuple[float, float]
    beta_interval: tuple[float, float]
    objective: float
    starts: int
    bootstrap_params: np.ndarray = dataclasses.field(repr=False, compare=False)

    def predict(self, N, D) -> np.ndarray:
        """The fitted loss (nats) at ``N`` parameters and ``D`` tokens (broadcast together)."""
        N = np.asarray(N, dtype=np.float64)
        D = np.asarray(D, dtype=np.float64)
        return self.E + self.A * N ** (-self.alpha) + self.B * D ** (-self.beta)

    # Compute-optimal allocation under C = 6 N D (Hoffmann et al. 2022, eq. 4):
    # N*(C) = G (C/6)^a, D*(C) = G^-1 (C/6)^b, G = (alpha A / (beta B))^(1/(alpha+beta)).
    @property
    def a(self) -> float:
        """Exponent of ``N*(C) ∝ C^a``: ``beta / (alpha + beta)``."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of ``D*(C) ∝ C^b``: ``alpha / (alpha + beta)``."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        """``(alpha A / (beta B))^(1 / (alpha + beta))``."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def compute_optimal(self, C) -> tuple[np.ndarray, np.ndarray]:
        """``(N*, D*)``: the parameters and tokens that minimise the fitted loss at ``C`` FLOPs."""
        C = np.asarray(C, dtype=np.float64)
        return self.G * (C / 6.0) ** self.a, (C / 6.0) ** self.b / self.G

    def exponent_intervals(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """95% bootstrap intervals of ``a`` and ``b``."""
        alpha, beta = self.bootstrap_params[:, 3], self.bootstrap_params[:, 4]
        return _interval(beta / (alpha + beta)), _interval(alpha / (alpha + beta))


def hoffmann_grid() -> np.ndarray:
    """``[4500, 5]`` starting points ``(log A, log B, log E, alpha, beta)``: the grid of Hoffmann
    et al. 2022, appendix D.2 (alpha, beta in 0..2 by 0.5; e in -1..1 by 0.5; a, b in 0..25 by 5)."""
    exponents = np.arange(0.0, 2.01, 0.5)
    e = np.arange(-1.0, 1.01, 0.5)
    ab = np.arange(0.0, 25.1, 5.0)
    grid = itertools.product(ab, ab, e, exponents, exponents)
    return np.array(list(grid), dtype=np.float64)


def _huber_objective(theta, log_N, log_D, log_loss, delta):
    """Summed Huber loss of ``LSE(a - alpha log N, b - beta log D, e) - log L``, and its gradient."""
    log_A, log_B, log_E, alpha, beta = theta
    t_N = log_A - alpha * log_N
    t_D = log_B - beta * log_D
    top = np.maximum(np.maximum(t_N, t_D), log_E)  # log-sum-exp, shifted by the largest term
    w_N, w_D, w_E = np.exp(t_N - top), np.exp(t_D - top), np.exp(log_E - top)
    total = w_N + w_D + w_E
    r = top + np.log(total) - log_loss
    abs_r = np.abs(r)
    value = np.sum(np.where(abs_r <= delta, 0.5 * r * r, delta * (abs_r - 0.5 * delta)))
    psi = np.clip(r, -delta, delta) / total  # d huber / d r, times the softmax denominator
    g_N, g_D = psi * w_N, psi * w_D
    grad = np.array([g_N.sum(), g_D.sum(), (psi * w_E).sum(), -(g_N @ log_N), -(g_D @ log_D)])
    return value, grad


def _lbfgs(start, log_N, log_D, log_loss, delta):
    # Besiroglu et al. 2024: Hoffmann et al.'s fit stopped early; with delta = 1e-3 the gradient is
    # tiny, so the default tolerances end the search far from the minimum. Tolerances here are
    # near machine precision and the iteration budget is generous.
    return optimize.minimize(
        _huber_objective,
        start,
        args=(log_N, log_D, log_loss, delta),
        jac=True,
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-15, "maxiter": 10_000, "maxfun": 20_000, "maxcor": 20},
    )


def _best_of(starts, log_N, log_D, log_loss, delta) -> tuple[np.ndarray, float] | None:
    best_x, best_f = None, np.inf
    for start in starts:
        result = _lbfgs(start, log_N, log_D, log_loss, delta)
        if np.all(np.isfinite(result.x)) and result.fun < best_f:
            best_x, best_f = result.x, float(result.fun)
    return None if best_x is None else (best_x, best_f)


def fit_chinchilla(
    N,
    D,
    loss,
    *,
    delta: float = 1e-3,
    bootstrap: int = 1000,
    seed: int = 0,
    starts: np.ndarray | None = None,
) -> ChinchillaFit:
    """Fits ``L(N, D) = E + A/N^alpha + B/D^beta`` as Hoffmann et al. 2022, approach 3.

    Minimises the Huber loss (``delta``) of ``log L_hat - log L`` with
    ``log L_hat = LSE(a - alpha log N, b - beta log D, e)``, ``A, B, E = exp(a, b, e)``, by
    L-BFGS-B from every starting point, keeping the lowest objective over the whole grid
    (Besiroglu et al. 2024). The Huber losses are summed over runs, not averaged: the minimiser is
    the same and the gradient is not shrunk by the number of runs. Each bootstrap refit starts
    from the point fit.

    Args:
      N: ``[R]`` parameters of each run.
      D: ``[R]`` training tokens of each run.
      loss: ``[R]`` final loss of each run, nats/token.
      delta: Huber threshold on the log-loss residual.
      bootstrap: resamples of the runs for the intervals; 0 for none (intervals NaN).
      seed: seed of the resampling.
      starts: ``[K, 5]`` starting points ``(log A, log B, log E, alpha, beta)``; default
        :func:`hoffmann_grid` (4500 points, about a minute for a few dozen runs).

    Returns:
      the fit, with 95% percentile intervals for each parameter.
    """
    N = _positive_finite("N", N)
    D = _positive_finite("D", D)
    loss = _positive_finite("loss", loss)
    _check_runs({"N": N, "D": D, "loss": loss}, ("N", "D"), num_params=5)
    _check_bootstrap(bootstrap)
    if not delta > 0:
        raise ValueError(f"delta must be a positive Huber threshold, got {delta}")
    starts = hoffmann_grid() if starts is None else np.atleast_2d(np.asarray(starts, np.float64))
    if starts.shape[1:] != (5,) or len(starts) == 0:
        raise ValueError(
            f"starts must be [K, 5] rows of (log A, log B, log E, alpha, beta), got {starts.shape}"
        )

    log_N, log_D, log_loss = np.log(N), np.log(D), np.log(loss)
    found = _best_of(starts, log_N, log_D, log_loss, delta)
    if found is None:
        raise RuntimeError("no starting point gave a finite Chinchilla fit")
    best, objective = found

    def refit(idx):
        found = _best_of([best], log_N[idx], log_D[idx], log_loss[idx], delta)
        return None if found is None else found[0]

    samples = _bootstrap_refits(refit, len(N), bootstrap, seed, [N, D], min_distinct=2, width=5)

    def natural(theta):  # (log A, log B, log E, alpha, beta) -> (E, A, B, alpha, beta)
        log_A, log_B, log_E, alpha, beta = theta.T
        return np.stack([np.exp(log_E), np.exp(log_A), np.exp(log_B), alpha, beta], axis=-1)

    E, A, B, alpha, beta = natural(best)
    boot = natural(samples)
    return ChinchillaFit(
        E=float(E),
        A=float(A),
        B=float(B),
        alpha=float(alpha),
        beta=float(beta),
        E_interval=_interval(boot[:, 0]),
        A_interval=_interval(boot[:, 1]),
        B_interval=_interval(boot[:, 2]),
        alpha_interval=_interval(boot[:, 3]),
        beta_interval=_interval(boot[:, 4]),
        objective=objective,
        starts=len(starts),
        bootstrap_params=boot,
    )


# --- Where two power laws in compute cross ---------------------------------------------------------


def _curve_gap(params_a, params_b, x):
    """``L_a(x) - L_b(x)`` for parameter rows ``(E, a, b)``."""
    (Ea, aa, ba), (Eb, ab, bb) = params_a, params_b
    return (Ea + aa * x ** (-ba)) - (Eb + ab * x ** (-bb))


def _crossings(params_a, params_b, log_grid) -> list[float]:
    """Every ``x`` on the grid's span where the two curves cross: sign changes of the gap between
    neighbouring grid points, each refined by Brent's method in ``log x``."""
    gap = _curve_gap(params_a, params_b, np.exp(log_grid))
    sign = np.sign(gap)
    found = [float(np.exp(log_grid[i])) for i in np.flatnonzero(sign == 0)]
    for i in np.flatnonzero(sign[:-1] * sign[1:] < 0):
        root = optimize.brentq(
            lambda t: _curve_gap(params_a, params_b, np.exp(t)), log_grid[i], log_grid[i + 1], xtol=1e-12
        )
        found.append(float(np.exp(root)))
    return sorted(found)


@dataclasses.dataclass(frozen=True)
class Crossover:
    """Where fitted loss curves of ``names[0]`` and ``names[1]`` cross within ``x_range``.

    ``crossings`` are the point fits' crossings, ascending; ``intervals`` the 95% bootstrap
    interval of each (from every crossing bootstrap pair, its crossing nearest in ``log x``);
    ``fraction_crossing`` the share of bootstrap pairs that cross anywhere in the range.
    ``lower_first`` names the curve with the lower loss at the low end of the range; with no
    crossing it is lower over the whole range.
    """

    names: tuple[str, str]
    x_range: tuple[float, float]
    crossings: tuple[float, ...]
    intervals: tuple[tuple[float, float], ...]
    fraction_crossing: float
    lower_first: str

    @property
    def dominant(self) -> str | None:
        """The name of the curve that is lower over the whole range, or None if they cross."""
        return None if self.crossings else self.lower_first

    def __str__(self) -> str:
        lo, hi = self.x_range
        first = self.lower_first
        second = self.names[1] if first == self.names[0] else self.names[0]
        if np.isnan(self.fraction_crossing):
            share = "no bootstrap fits to say how sure"
        else:
            share = f"{self.fraction_crossing:.0%} of bootstrap pairs cross in C = {lo:.3g}..{hi:.3g}"
        if not self.crossings:
            return (
                f"{first} has lower loss than {second} over all of C = {lo:.3g}..{hi:.3g} "
                f"(the fitted curves do not cross; {share})."
            )
        where = "; ".join(
            f"C = {c:.3g} (95% CI {ci_lo:.3g}..{ci_hi:.3g})"
            for c, (ci_lo, ci_hi) in zip(self.crossings, self.intervals)
        )
        count = "once" if len(self.crossings) == 1 else f"{len(self.crossings)} times"
        return (
            f"{first} and {second} cross {count}, at {where}; {first} has lower loss below the first "
            f"crossing and {second} above it ({share})."
        )


def _check_pair(fit_a: PowerLawFit, fit_b: PowerLawFit) -> None:
    if len(fit_a.bootstrap_params) != len(fit_b.bootstrap_params):
        raise ValueError(
            f"the fits have {len(fit_a.bootstrap_params)} and {len(fit_b.bootstrap_params)} bootstrap "
            "fits; pairing by index needs the same number (fit both with the same bootstrap and seed)"
        )


def crossover(
    fit_a: PowerLawFit,
    fit_b: PowerLawFit,
    *,
    x_range: tuple[float, float],
    names: tuple[str, str] = ("A", "B"),
    grid_points: int = 512,
) -> Crossover:
    """Where two power laws over compute cross in ``x_range``, with bootstrap intervals.

    Bootstrap fit ``i`` of ``fit_a`` is paired with bootstrap fit ``i`` of ``fit_b``.

    Args:
      fit_a, fit_b: power-law fits over compute (FLOPs).
      x_range: ``(low, high)`` compute to search, FLOPs.
      names: what to call the two curves in the sentence.
      grid_points: log-spaced points scanned for sign changes before refining each; two crossings
        within one grid step, or curves that touch without crossing, are not reported.

    Returns:
      every crossing of the point fits, or the statement that one curve dominates.
    """
    low, high = (float(v) for v in x_range)
    if not (np.isfinite(low) and np.isfinite(high) and 0 < low < high):
        raise ValueError(f"x_range must be (low, high) with 0 < low < high, got {x_range}")
    _check_pair(fit_a, fit_b)
    log_grid = np.linspace(np.log(low), np.log(high), grid_points)
    point_a, point_b = (fit_a.E, fit_a.a, fit_a.b), (fit_b.E, fit_b.a, fit_b.b)
    crossings = _crossings(point_a, point_b, log_grid)

    boot_crossings = [
        _crossings(pa, pb, log_grid)
        for pa, pb in zip(fit_a.bootstrap_params, fit_b.bootstrap_params)
        if np.all(np.isfinite(pa)) and np.all(np.isfinite(pb))
    ]
    crossing_pairs = [c for c in boot_crossings if c]
    pairs = len(boot_crossings)
    fraction = len(crossing_pairs) / pairs if pairs else float("nan")

    intervals = []
    for c in crossings:
        nearest = [min(cs, key=lambda v: abs(np.log(v / c))) for cs in crossing_pairs]
        intervals.append(_interval(np.log(nearest)))
    intervals = [tuple(float(np.exp(v)) for v in ci) for ci in intervals]

    lower_first = names[0] if _curve_gap(point_a, point_b, low) < 0 else names[1]
    return Crossover(
        names=tuple(names),
        x_range=(low, high),
        crossings=tuple(crossings),
        intervals=tuple(intervals),
        fraction_crossing=fraction,
        lower_first=lower_first,
    )


class Gap(NamedTuple):
    """How far A is ahead of B (lower loss) at one compute, in nats, with a 95% interval."""

    nats: float  # the gap between the two point fits
    lo: float
    hi: float


def gap_at(fit_a: PowerLawFit, fit_b: PowerLawFit, x: float) -> Gap:
    """``L_b(x) - L_a(x)`` in nats: positive when A has the lower loss at compute ``x``.

    Reads "at C = x, A is ahead of B by ``nats`` (95% CI ``lo``..``hi``)": ``nats`` is the gap of
    the point fits, the interval the 2.5/97.5 percentiles over bootstrap fits paired by index.
    """
    x = float(x)
    if not (np.isfinite(x) and x > 0):
        raise ValueError(f"x must be a positive, finite compute, got {x}")
    _check_pair(fit_a, fit_b)
    point = -_curve_gap((fit_a.E, fit_a.a, fit_a.b), (fit_b.E, fit_b.a, fit_b.b), x)
    boot = -_curve_gap(fit_a.bootstrap_params.T, fit_b.bootstrap_params.T, x)
    lo, hi = _interval(boot)
    return Gap(nats=float(point), lo=lo, hi=hi)
