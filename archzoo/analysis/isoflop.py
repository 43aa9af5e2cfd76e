"""IsoFLOP profiles (Hoffmann et al. 2022, approach 2): at each FLOP budget, a parabola of final
loss in ``log N`` whose minimum is that budget's compute-optimal size; then ``N_opt ∝ C^a`` and
``D_opt ∝ C^b`` fitted across budgets in log space.

Inputs are numpy arrays, one entry per run, as in :mod:`archzoo.analysis.fits`; intervals come
from the bootstrap over runs within each budget.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from archzoo.analysis.fits import (
    _check_bootstrap,
    _check_runs,
    _interval,
    _positive_finite,
    _resamples,
)

__all__ = ["IsoFlopParabola", "fit_isoflop_parabola", "IsoFlopFit", "fit_isoflop"]

_MIN_SIZES = 3  # a parabola has three coefficients


@dataclasses.dataclass(frozen=True)
class IsoFlopParabola:
    """``L = c0 + c1 u + c2 u^2`` over ``u = ln N - log_N0`` at one budget of ``C`` FLOPs.

    ``N_opt`` is its minimum, ``loss_opt`` the loss there, ``D_opt`` the tokens at ``N_opt``;
    ``N_range`` the smallest and largest size trained at this budget.
    """

    C: float
    log_N0: float
    coefficients: tuple[float, float, float]
    N_opt: float
    D_opt: float
    loss_opt: float
    N_range: tuple[float, float]

    def predict(self, N) -> np.ndarray:
        """The parabola's loss (nats) at ``N`` parameters (any shape)."""
        u = np.log(np.asarray(N, dtype=np.float64)) - self.log_N0
        c0, c1, c2 = self.coefficients
        return c0 + c1 * u + c2 * u * u

    @property
    def inside(self) -> bool:
        """Whether the minimum lies within the sizes trained (else it is extrapolated)."""
        return self.N_range[0] <= self.N_opt <= self.N_range[1]


def _vertex(log_N, loss, log_D):
    """``(log_N0, (c0, c1, c2), ln N_opt, ln D_opt or None, loss_opt)`` of the least-squares
    parabola, or None where it opens downward (no minimum)."""
    log_N0 = float(np.mean(log_N))
    u = log_N - log_N0
    c2, c1, c0 = np.polyfit(u, loss, 2)
    if not c2 > 0:
        return None
    u_opt = -c1 / (2 * c2)
    # Tokens at N_opt: ln D is close to linear in ln N along one budget (D = C / flops_per_token),
    # so the runs' own tokens are interpolated there rather than assuming C = 6 N D.
    log_D_opt = None if log_D is None else float(np.polyval(np.polyfit(u, log_D, 1), u_opt))
    return log_N0, (float(c0), float(c1), float(c2)), log_N0 + u_opt, log_D_opt, c0 - c1 * c1 / (4 * c2)


def _check_sizes(C: float, N: np.ndarray) -> None:
    distinct = np.unique(N)
    if len(distinct) < _MIN_SIZES:
        shown = ", ".join(f"{v:.3g}" for v in distinct)
        raise ValueError(
            f"the C = {C:.3g} FLOP budget has {len(distinct)} distinct sizes (N = {shown}); an IsoFLOP "
            f"parabola needs {_MIN_SIZES}"
        )


def fit_isoflop_parabola(C: float, N, loss, *, D=None) -> IsoFlopParabola:
    """The parabola of ``loss`` in ``ln N`` over runs that spent one budget of ``C`` FLOPs.

    Args:
      C: the budget, FLOPs.
      N: ``[R]`` parameters of each run (3 or more distinct).
      loss: ``[R]`` final loss of each run, nats/token.
      D: ``[R]`` training tokens of each run; ``D_opt`` is then ``ln D`` fitted linearly in
        ``ln N`` and read at ``N_opt``. Without it, ``D_opt = C / (6 N_opt)``.

    Returns:
      the parabola and its minimum.

    Raises:
      ValueError: fewer than 3 distinct sizes, non-positive values, or a parabola that opens
        downward (the sizes do not bracket a minimum).
    """
    N = _positive_finite("N", N)
    loss = _positive_finite("loss", loss)
    D = None if D is None else _positive_finite("D", D)
    if not (np.isfinite(C) and C > 0):
        raise ValueError(f"C must be a positive, finite budget in FLOPs, got {C}")
    _check_runs({"N": N, "loss": loss} | ({} if D is None else {"D": D}), (), num_params=3)
    _check_sizes(C, N)
    found = _vertex(np.log(N), loss, None if D is None else np.log(D))
    if found is None:
        raise ValueError(
            f"the parabola of the C = {C:.3g} FLOP budget opens downward: its sizes "
            f"({N.min():.3g}..{N.max():.3g}) do not bracket a minimum of the loss"
        )
    log_N0, coefficients, log_N_opt, log_D_opt, loss_opt = found
    N_opt = float(np.exp(log_N_opt))
    D_opt = C / (6.0 * N_opt) if log_D_opt is None else float(np.exp(log_D_opt))
    return IsoFlopParabola(
        C=float(C),
        log_N0=log_N0,
        coefficients=coefficients,
        N_opt=N_opt,
        D_opt=D_opt,
        loss_opt=float(loss_opt),
        N_range=(float(N.min()), float(N.max())),
    )


@dataclasses.dataclass(frozen=True)
class IsoFlopFit:
    """``N_opt = N_coefficient * C^a`` and ``D_opt = D_coefficient * C^b`` through the minima of
    one IsoFLOP parabola per budget, with 95% bootstrap intervals of ``a`` and ``b``.

    ``tokens_from`` says where ``D_opt`` came from: ``"runs"`` (their tokens, read at ``N_opt``) or
    ``"C/6N"``. ``bootstrap_params`` is ``[S, 4]``: ``(ln N_coefficient, a, ln D_coefficient, b)``
    per resample; a resample in which some parabola opened downward is a row of NaN.
    """

    parabolas: tuple[IsoFlopParabola, ...]
    a: float
    b: float
    a_interval: tuple[float, float]
    b_interval: tuple[float, float]
    N_coefficient: float
    D_coefficient: float
    tokens_from: str
    bootstrap_params: np.ndarray = dataclasses.field(repr=False, compare=False)

    def compute_optimal(self, C) -> tuple[np.ndarray, np.ndarray]:
        """``(N_opt, D_opt)`` of the fitted lines at ``C`` FLOPs (any shape)."""
        C = np.asarray(C, dtype=np.float64)
        return self.N_coefficient * C**self.a, self.D_coefficient * C**self.b


def _lines(log_C, log_N_opt, log_D_opt) -> np.ndarray:
    """``(ln k_N, a, ln k_D, b)``: least-squares lines of ``ln N_opt`` and ``ln D_opt`` in ``ln C``."""
    a, log_kN = np.polyfit(log_C, log_N_opt, 1)
    b, log_kD = np.polyfit(log_C, log_D_opt, 1)
    return np.array([log_kN, a, log_kD, b])


def fit_isoflop(C, N, loss, *, D=None, bootstrap: int = 1000, seed: int = 0) -> IsoFlopFit:
    """Fits IsoFLOP profiles and the compute-optimal exponents (Hoffmann et al. 2022, approach 2).

    Runs with equal ``C`` form one budget. Each budget's parabola is fitted as
    :func:`fit_isoflop_parabola` says; ``ln N_opt`` and ``ln D_opt`` are then fitted by straight
    lines in ``ln C``. Each bootstrap draw resamples the runs of every budget with replacement
    (redrawing until each holds 3 distinct sizes) and refits parabolas and lines.

    Args:
      C: ``[R]`` the FLOP budget of each run.
      N: ``[R]`` parameters of each run.
      loss: ``[R]`` final loss of each run, nats/token.
      D: ``[R]`` training tokens of each run, or None for ``D_opt = C / (6 N_opt)``.
      bootstrap: resamples for the intervals; 0 for none (intervals NaN).
      seed: seed of the resampling.

    Returns:
      the parabolas (ascending ``C``) and the fitted exponents.

    Raises:
      ValueError: fewer than 2 budgets, a budget with fewer than 3 distinct sizes, a parabola
        without a minimum, or bad values.
    """
    C = _positive_finite("C", C)
    N = _positive_finite("N", N)
    loss = _positive_finite("loss", loss)
    D = None if D is None else _positive_finite("D", D)
    _check_runs({"C": C, "N": N, "loss": loss} | ({} if D is None else {"D": D}), (), num_params=1)
    _check_bootstrap(bootstrap)
    budgets = np.unique(C)
    if len(budgets) < 2:
        raise ValueError(f"IsoFLOP exponents need 2 or more FLOP budgets; all runs have C = {C[0]:.3g}")
    members = [np.flatnonzero(C == c) for c in budgets]
    for c, idx in zip(budgets, members):
        _check_sizes(c, N[idx])

    def parabolas(picks):
        return [
            fit_isoflop_parabola(c, N[idx], loss[idx], D=None if D is None else D[idx])
            for c, idx in zip(budgets, picks)
        ]

    point = parabolas(members)
    log_C = np.log(budgets)

    def lines(found):
        return _lines(log_C, np.log([p.N_opt for p in found]), np.log([p.D_opt for p in found]))

    log_kN, a, log_kD, b = lines(point)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(bootstrap):
        picks = [idx[next(_resamples(rng, len(idx), 1, [N[idx]], _MIN_SIZES))] for idx in members]
        try:
            rows.append(lines(parabolas(picks)))
        except ValueError:  # a resampled parabola opened downward
            rows.append(np.full(4, np.nan))
    boot = np.reshape(rows, (-1, 4))
    return IsoFlopFit(
        parabolas=tuple(point),
        a=float(a),
        b=float(b),
        a_interval=_interval(boot[:, 1]),
        b_interval=_interval(boot[:, 3]),
        N_coefficient=float(np.exp(log_kN)),
        D_coefficient=float(np.exp(log_kD)),
        tokens_from="C/6N" if D is None else "runs",
        bootstrap_params=boot,
    )
