"""Scaling-law fits (power laws, Chinchilla approach 3, IsoFLOP profiles) recover the laws that
generated their data, and say so with honest intervals."""

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import special

from archzoo.analysis.fits import (
    PowerLawFit,
    crossover,
    fit_chinchilla,
    fit_power_law,
    gap_at,
    hoffmann_grid,
)
from archzoo.analysis.isoflop import fit_isoflop, fit_isoflop_parabola

# The power law of the examples: E 1.7, a 400, b 0.3 over C in 1e15..1e21 FLOPs.
E_TRUE, A_TRUE, B_TRUE = 1.7, 400.0, 0.3
# Besiroglu et al. 2024, the refit of Hoffmann et al. 2022's approach 3.
CHINCHILLA = dict(E=1.82, A=482.0, B=2085.4, alpha=0.348, beta=0.366)


def power_law(x, E, a, b):
    return E + a * x ** (-b)


def noisy_power_law(points, sigma, seed, E=E_TRUE, a=A_TRUE, b=B_TRUE):
    C = np.geomspace(1e15, 1e21, points)
    rng = np.random.default_rng(seed)
    return C, power_law(C, E, a, b) * np.exp(rng.normal(0.0, sigma, points))


def chinchilla_runs(sigma, seed):
    N, D = np.meshgrid(np.geomspace(1e7, 1e10, 6), np.geomspace(1e9, 1e12, 6))
    N, D = N.ravel(), D.ravel()
    p = CHINCHILLA
    loss = p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]
    return N, D, loss * np.exp(np.random.default_rng(seed).normal(0.0, sigma, N.size))


# Twenty points spread over Hoffmann et al.'s 4500-point grid keep the Chinchilla tests fast.
FEW_STARTS = hoffmann_grid()[::225]


def test_fits_import_neither_jax_nor_flax_nor_the_rest_of_archzoo():
    code = "import sys, json, archzoo.analysis.isoflop; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    loaded = set(json.loads(out.splitlines()[-1]))
    archzoo_modules = {m for m in loaded if m.startswith("archzoo")}
    assert archzoo_modules == {
        "archzoo",
        "archzoo.analysis",
        "archzoo.analysis.fits",
        "archzoo.analysis.isoflop",
    }
    assert not {m for m in loaded if m.split(".")[0] in ("jax", "flax")}


# --- Power law -----------------------------------------------------------------------------------


def test_a_power_law_without_noise_is_recovered_to_optimiser_precision():
    C = np.geomspace(1e15, 1e21, 12)
    fit = fit_power_law(C, power_law(C, E_TRUE, A_TRUE, B_TRUE), bootstrap=0)
    assert fit.E == pytest.approx(E_TRUE, rel=1e-6)
    assert fit.b == pytest.approx(B_TRUE, rel=1e-4)
    assert fit.a == pytest.approx(A_TRUE, rel=1e-3)


def test_a_noisy_power_law_is_recovered_within_tolerance():
    # Over 1e15..1e21 the reducible term falls from 0.13 to 2e-4 nats, so multiplicative noise of
    # 1e-4 is already a sizeable share of it at large C: a and b trade off, the curve does not.
    # Over seeds 0..19 the worst errors were 1.4e-4 (E, relative), 0.028 (b), 0.94 (log a) and 7%
    # (the reducible curve); the tolerances leave room above those.
    C, loss = noisy_power_law(12, sigma=1e-4, seed=0)
    fit = fit_power_law(C, loss, bootstrap=0)
    assert fit.E == pytest.approx(E_TRUE, rel=1e-3)
    assert fit.b == pytest.approx(B_TRUE, abs=0.05)
    assert abs(np.log(fit.a / A_TRUE)) < 1.2
    reducible_true = A_TRUE * C ** (-B_TRUE)
    np.testing.assert_allclose(fit.predict(C) - fit.E, reducible_true, rtol=0.15, atol=2e-4)


def test_power_law_bootstrap_intervals_hold_the_truth_and_shrink_with_more_points():
    fits = {
        n: fit_power_law(*noisy_power_law(n, sigma=3e-4, seed=1), bootstrap=100, seed=0) for n in (12, 48)
    }
    for fit in fits.values():
        assert fit.E_interval[0] <= E_TRUE <= fit.E_interval[1]
        assert fit.a_interval[0] <= A_TRUE <= fit.a_interval[1]
        assert fit.b_interval[0] <= B_TRUE <= fit.b_interval[1]

    def width(interval):
        return interval[1] - interval[0]

    for name in ("E_interval", "b_interval"):
        assert width(getattr(fits[48], name)) < width(getattr(fits[12], name)), name


def test_predict_interval_is_the_percentile_of_the_bootstrap_curves_and_holds_the_truth():
    C, loss = noisy_power_law(12, sigma=3e-4, seed=2)
    fit = fit_power_law(C, loss, bootstrap=50, seed=0)
    at = np.array([1e15, 1e17, 1e19, 1e21])
    lo, hi = fit.predict_interval(at)
    for i, x in enumerate(at):
        curves = [power_law(x, *row) for row in fit.bootstrap_params]  # one bootstrap fit at a time
        assert lo[i] == pytest.approx(np.percentile(curves, 2.5), rel=1e-12)
        assert hi[i] == pytest.approx(np.percentile(curves, 97.5), rel=1e-12)
    assert np.all(lo <= power_law(at, E_TRUE, A_TRUE, B_TRUE))
    assert np.all(power_law(at, E_TRUE, A_TRUE, B_TRUE) <= hi)


# --- Chinchilla ----------------------------------------------------------------------------------


def huber_objective_by_hand(N, D, loss, E, A, B, alpha, beta, delta=1e-3):
    predicted = np.log(E + A / N**alpha + B / D**beta)
    return special.huber(delta, predicted - np.log(loss)).sum()


def test_chinchilla_without_noise_is_recovered_to_optimiser_precision():
    N, D, loss = chinchilla_runs(sigma=0.0, seed=0)
    fit = fit_chinchilla(N, D, loss, bootstrap=0, starts=FEW_STARTS)
    for name, value in CHINCHILLA.items():
        assert getattr(fit, name) == pytest.approx(value, rel=1e-4), name


def test_noisy_chinchilla_is_recovered_and_its_optimum_is_not_cut_short():
    N, D, loss = chinchilla_runs(sigma=2e-3, seed=0)
    fit = fit_chinchilla(N, D, loss, bootstrap=0, starts=FEW_STARTS)
    # Over seeds 0..9 the worst errors were 0.4% (E), 0.003 (alpha), 0.008 (beta), 5% (A) and 16%
    # (B: the coefficient trades off against its exponent); the tolerances leave room above those.
    assert fit.E == pytest.approx(CHINCHILLA["E"], rel=0.01)
    assert fit.alpha == pytest.approx(CHINCHILLA["alpha"], abs=0.02)
    assert fit.beta == pytest.approx(CHINCHILLA["beta"], abs=0.02)
    assert fit.A == pytest.approx(CHINCHILLA["A"], rel=0.3)
    assert fit.B == pytest.approx(CHINCHILLA["B"], rel=0.3)
    # Noise moves the minimum off the generating parameters, so a search run to the end finds an
    # objective no higher than theirs (Besiroglu et al. 2024: the original fit stopped early).
    assert fit.objective <= huber_objective_by_hand(N, D, loss, **CHINCHILLA)
    assert fit.objective == pytest.approx(
        huber_objective_by_hand(N, D, loss, fit.E, fit.A, fit.B, fit.alpha, fit.beta), rel=1e-12
    )
    assert fit.starts == len(FEW_STARTS)


def test_compute_optimal_allocation_matches_its_closed_form_and_a_search_along_the_budget():
    N, D, loss = chinchilla_runs(sigma=1e-3, seed=3)
    fit = fit_chinchilla(N, D, loss, bootstrap=0, starts=FEW_STARTS)
    alpha, beta = CHINCHILLA["alpha"], CHINCHILLA["beta"]
    assert fit.a == pytest.approx(beta / (alpha + beta), abs=0.01)
    assert fit.b == pytest.approx(alpha / (alpha + beta), abs=0.01)
    assert fit.a + fit.b == pytest.approx(1.0, abs=1e-12)

    for C in (1e20, 1e22, 1e24):
        N_opt, D_opt = fit.compute_optimal(C)
        assert 6 * N_opt * D_opt == pytest.approx(C, rel=1e-12)
        candidates = np.geomspace(N_opt / 100, N_opt * 100, 200_001)  # every N the budget allows
        best = candidates[np.argmin(fit.predict(candidates, C / (6 * candidates)))]
        assert N_opt == pytest.approx(best, rel=1e-3)


def test_chinchilla_bootstrap_intervals_hold_the_generating_parameters():
    N, D, loss = chinchilla_runs(sigma=2e-3, seed=1)
    fit = fit_chinchilla(N, D, loss, bootstrap=40, seed=0, starts=FEW_STARTS)
    for name, value in CHINCHILLA.items():
        lo, hi = getattr(fit, f"{name}_interval")
        assert lo <= value <= hi, (name, lo, value, hi)
    (a_lo, a_hi), (b_lo, b_hi) = fit.exponent_intervals()
    alpha, beta = CHINCHILLA["alpha"], CHINCHILLA["beta"]
    assert a_lo <= beta / (alpha + beta) <= a_hi
    assert b_lo <= alpha / (alpha + beta) <= b_hi


# --- Crossover -----------------------------------------------------------------------------------


def exact_fit(E, a, b):
    """A PowerLawFit of known parameters with no bootstrap fits."""
    return PowerLawFit(E, a, b, (E, E), (a, a), (b, b), bootstrap_params=np.empty((0, 3)))


def crossing_partner(C_cross, E, b):
    """The ``a`` that makes ``E + a C^-b`` meet the reference law at ``C_cross``."""
    return (power_law(C_cross, E_TRUE, A_TRUE, B_TRUE) - E) * C_cross**b


def test_two_power_laws_built_to_cross_at_a_known_compute_are_found_crossing_there():
    # A: the reference law; B: a lower floor and a shallower slope, meeting A at 1e18 FLOPs.
    C_cross, E_b, b_b = 1e18, 1.6, 0.2
    a_b = crossing_partner(C_cross, E_b, b_b)
    exact = crossover(exact_fit(E_TRUE, A_TRUE, B_TRUE), exact_fit(E_b, a_b, b_b), x_range=(1e15, 1e21))
    assert len(exact.crossings) == 1
    assert exact.crossings[0] == pytest.approx(C_cross, rel=1e-9)

    fit_a = fit_power_law(*noisy_power_law(12, sigma=3e-4, seed=4), bootstrap=50, seed=0)
    fit_b = fit_power_law(*noisy_power_law(12, sigma=3e-4, seed=5, E=E_b, a=a_b, b=b_b), bootstrap=50, seed=0)
    found = crossover(fit_a, fit_b, x_range=(1e15, 1e21), names=("dense", "MoE"))
    assert len(found.crossings) == 1
    assert abs(np.log10(found.crossings[0] / C_cross)) < 0.05  # 12%; 0.01 decades seen over 10 seeds
    lo, hi = found.intervals[0]
    assert lo <= C_cross <= hi
    assert found.fraction_crossing > 0.9
    assert found.dominant is None
    # B is higher at low compute (its reducible term is larger there), so A leads first.
    assert found.lower_first == "dense"
    sentence = str(found)
    where = f"C = {found.crossings[0]:.3g} (95% CI {lo:.3g}..{hi:.3g})"
    assert sentence.startswith(f"dense and MoE cross once, at {where}")
    assert "dense has lower loss below the first crossing and MoE above it" in sentence


def test_two_crossings_are_both_reported():
    # c + a1 x^-0.5 - a2 x^-0.25 = 0 at x1 and x2: linear in (a1, a2) for a fixed floor gap c.
    x1, x2, c = 1e16, 1e19, 0.01
    a1, a2 = np.linalg.solve([[x1**-0.5, -(x1**-0.25)], [x2**-0.5, -(x2**-0.25)]], [-c, -c])
    assert a1 > 0 and a2 > 0
    found = crossover(exact_fit(1.7 + c, a1, 0.5), exact_fit(1.7, a2, 0.25), x_range=(1e14, 1e21))
    assert found.crossings == pytest.approx((x1, x2), rel=1e-9)
    assert found.lower_first == "B"
    assert "cross 2 times" in str(found)
    assert "no bootstrap fits to say how sure" in str(found)


def test_a_pair_that_never_crosses_in_range_reports_dominance_and_the_gap():
    fit_a = fit_power_law(*noisy_power_law(12, sigma=3e-4, seed=6), bootstrap=50, seed=0)
    fit_b = fit_power_law(*noisy_power_law(12, sigma=3e-4, seed=7, E=E_TRUE + 0.1), bootstrap=50, seed=0)
    found = crossover(fit_a, fit_b, x_range=(1e15, 1e21))
    assert found.crossings == ()
    assert found.dominant == "A"
    assert found.fraction_crossing < 0.05
    assert str(found).startswith("A has lower loss than B over all of C = 1e+15..1e+21")

    # The laws differ only in their floor, so B is behind A by 0.1 nats at every compute.
    gap, lo, hi = gap_at(fit_a, fit_b, 1e18)
    assert gap == pytest.approx(0.1, abs=0.002)
    assert lo <= 0.1 <= hi
    behind, _, _ = gap_at(fit_b, fit_a, 1e18)
    assert behind == pytest.approx(-gap, abs=1e-12)


# --- Bad input -----------------------------------------------------------------------------------

C12 = np.geomspace(1e15, 1e21, 12)
L12 = power_law(C12, E_TRUE, A_TRUE, B_TRUE)


@pytest.mark.parametrize(
    "x, loss, message",
    [
        (C12[:2], L12[:2], "2 points are fewer than the 3 parameters"),
        (C12, np.where(np.arange(12) == 3, 0.0, L12), "loss must be positive; entries [3]"),
        (C12, np.where(np.arange(12) == 4, -1.0, L12), "loss must be positive; entries [4]"),
        (C12, np.where(np.arange(12) == 5, np.nan, L12), "loss must be finite; entries [5]"),
        (np.where(np.arange(12) == 0, np.inf, C12), L12, "x must be finite; entries [0]"),
        (np.where(np.arange(12) == 1, 0.0, C12), L12, "x must be positive; entries [1]"),
        (C12[:11], L12, "mismatched lengths: {'x': 11, 'loss': 12}"),
        (np.full(12, 1e18), L12, "all x are equal (1e+18): a single distinct size"),
    ],
)
def test_bad_power_law_input_names_the_problem(x, loss, message):
    with pytest.raises(ValueError) as raised:
        fit_power_law(x, loss, bootstrap=0)
    assert message in str(raised.value)


def test_bad_chinchilla_input_names_the_problem():
    N, D, loss = chinchilla_runs(sigma=0.0, seed=0)
    cases = [
        ((N[:4], D[:4], loss[:4]), "4 points are fewer than the 5 parameters"),
        ((N, D[:-1], loss), "mismatched lengths: {'N': 36, 'D': 35, 'loss': 36}"),
        ((np.full_like(N, 1e8), D, loss), "all N are equal (1e+08): a single distinct size"),
        ((N, np.full_like(D, 1e10), loss), "all D are equal (1e+10): a single distinct size"),
        ((N, D, -loss), "loss must be positive"),
        ((N, D * np.nan, loss), "D must be finite"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError) as raised:
            fit_chinchilla(*args, bootstrap=0, starts=FEW_STARTS)
        assert message in str(raised.value), message
    with pytest.raises(ValueError, match="delta must be a positive Huber threshold"):
        fit_chinchilla(N, D, loss, delta=0.0, bootstrap=0, starts=FEW_STARTS)


def test_bad_crossover_input_names_the_problem():
    fit = fit_power_law(*noisy_power_law(12, sigma=3e-4, seed=0), bootstrap=5)
    other = fit_power_law(*noisy_power_law(12, sigma=3e-4, seed=1), bootstrap=6)
    with pytest.raises(ValueError, match="x_range must be"):
        crossover(fit, fit, x_range=(1e21, 1e15))
    with pytest.raises(ValueError, match="5 and 6 bootstrap fits"):
        crossover(fit, other, x_range=(1e15, 1e21))
    with pytest.raises(ValueError, match="x must be a positive, finite compute"):
        gap_at(fit, fit, 0.0)


# --- IsoFLOP profiles (approach 2) -------------------------------------------------------------------

ISO_BUDGETS = np.geomspace(1e18, 1e21, 4)


def chinchilla_optimum(C):
    """``N*`` of :data:`CHINCHILLA` at ``C = 6 N D`` FLOPs, the closed form of ChinchillaFit."""
    p = CHINCHILLA
    G = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    return G * (C / 6) ** (p["beta"] / (p["alpha"] + p["beta"]))


def isoflop_runs(sigma, seed, offsets=None, flops_per_token=6.0):
    """Seven sizes per budget over one decade either side of ``N*(C) * 10^offset``, trained on
    ``D = C / (flops_per_token * N)`` tokens; losses from the Chinchilla law with noise."""
    offsets = np.zeros(len(ISO_BUDGETS)) if offsets is None else offsets
    C = np.repeat(ISO_BUDGETS, 7)
    decades = np.linspace(-1.0, 1.0, 7)
    N = np.concatenate([chinchilla_optimum(c) * 10 ** (o + decades) for c, o in zip(ISO_BUDGETS, offsets)])
    D = C / (flops_per_token * N)
    p = CHINCHILLA
    loss = p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]
    return C, N, D, loss * np.exp(np.random.default_rng(seed).normal(0.0, sigma, N.size))


A_OPT = CHINCHILLA["beta"] / (CHINCHILLA["alpha"] + CHINCHILLA["beta"])
B_OPT = CHINCHILLA["alpha"] / (CHINCHILLA["alpha"] + CHINCHILLA["beta"])


def test_isoflop_without_noise_recovers_the_exponents_and_each_budgets_optimum():
    # With the sizes placed alike around each budget's optimum, every profile has the same shape
    # in log N, so its parabola's minimum is off by the same factor at every budget and the
    # exponents come out exact. That factor is what a parabola costs on a curve that is not one:
    # 1.2% here, over a decade either side.
    C, N, D, loss = isoflop_runs(sigma=0.0, seed=0, offsets=np.full(4, 0.3))
    fit = fit_isoflop(C, N, loss, D=D, bootstrap=0)
    assert fit.a == pytest.approx(A_OPT, rel=1e-9)
    assert fit.b == pytest.approx(B_OPT, rel=1e-9)
    assert [p.C for p in fit.parabolas] == list(ISO_BUDGETS)
    p = CHINCHILLA
    for parabola in fit.parabolas:
        # the true optimum along the budget, by search over every N it allows
        candidates = np.geomspace(parabola.N_range[0], parabola.N_range[1], 200_001)
        along = (
            p["E"] + p["A"] / candidates ** p["alpha"] + p["B"] / (parabola.C / (6 * candidates)) ** p["beta"]
        )
        assert parabola.N_opt == pytest.approx(candidates[np.argmin(along)], rel=0.02)
        assert parabola.inside
        # the parabola's own minimum, by search along its curve
        assert parabola.N_opt == pytest.approx(candidates[np.argmin(parabola.predict(candidates))], rel=1e-4)
        assert parabola.loss_opt == pytest.approx(parabola.predict(parabola.N_opt), rel=1e-12)
        assert 6 * parabola.N_opt * parabola.D_opt == pytest.approx(parabola.C, rel=1e-9)
    N_opt, D_opt = fit.compute_optimal(ISO_BUDGETS)
    np.testing.assert_allclose(N_opt, [p.N_opt for p in fit.parabolas], rtol=1e-9)
    np.testing.assert_allclose(D_opt, [p.D_opt for p in fit.parabolas], rtol=1e-9)


def test_noisy_isoflop_recovers_the_exponents_within_tolerance_and_its_intervals_hold_them():
    # Budgets whose sizes sit up to 0.3 decades off the optimum, unlike each other, and 0.2% noise:
    # over seeds 0..19 the worst error of a (and of b = 1 - a) was 0.005, and every one of 10
    # 100-draw intervals held the truth. The tolerance leaves room above that.
    offsets = np.random.default_rng(1000).uniform(-0.3, 0.3, len(ISO_BUDGETS))
    C, N, D, loss = isoflop_runs(sigma=2e-3, seed=0, offsets=offsets)
    fit = fit_isoflop(C, N, loss, D=D, bootstrap=100, seed=0)
    assert fit.a == pytest.approx(A_OPT, abs=0.015)
    assert fit.b == pytest.approx(B_OPT, abs=0.015)
    assert fit.a_interval[0] <= A_OPT <= fit.a_interval[1]
    assert fit.b_interval[0] <= B_OPT <= fit.b_interval[1]
    assert fit.bootstrap_params.shape == (100, 4)
    assert fit.tokens_from == "runs"


def test_isoflop_reads_tokens_from_the_runs_rather_than_assuming_six_flops_per_parameter():
    # Runs that spend 8 FLOPs per parameter and token: their tokens at the minimum are C / (8 N),
    # which C / (6 N) would overstate by a third.
    C, N, D, loss = isoflop_runs(sigma=0.0, seed=0, flops_per_token=8.0)
    from_runs = fit_isoflop(C, N, loss, D=D, bootstrap=0)
    assumed = fit_isoflop(C, N, loss, bootstrap=0)
    assert assumed.tokens_from == "C/6N"
    for p, q in zip(from_runs.parabolas, assumed.parabolas):
        assert p.N_opt == q.N_opt
        assert 8 * p.N_opt * p.D_opt == pytest.approx(p.C, rel=1e-9)
        assert q.D_opt == pytest.approx(p.D_opt * 8 / 6, rel=1e-9)


def test_bad_isoflop_input_names_the_problem():
    C, N, D, loss = isoflop_runs(sigma=0.0, seed=0)
    two_sizes = np.isin(np.arange(len(C)), [0, 1])  # budget 1e18 keeps two runs
    keep = ~((C == ISO_BUDGETS[0]) & ~two_sizes)
    with pytest.raises(ValueError, match=r"the C = 1e\+18 FLOP budget has 2 distinct sizes .* needs 3"):
        fit_isoflop(C[keep], N[keep], loss[keep], bootstrap=0)
    one = C == ISO_BUDGETS[0]
    with pytest.raises(ValueError, match=r"2 or more FLOP budgets; all runs have C = 1e\+18"):
        fit_isoflop(C[one], N[one], loss[one], bootstrap=0)
    with pytest.raises(ValueError, match="opens downward"):
        fit_isoflop_parabola(1e18, N[one], -(loss[one] - 10.0))
    with pytest.raises(ValueError, match="loss must be positive"):
        fit_isoflop(C, N, -loss, bootstrap=0)
    with pytest.raises(ValueError, match="mismatched lengths"):
        fit_isoflop(C, N, loss, D=D[:-1], bootstrap=0)
    # A power law through two distinct sizes is underdetermined (and could never be resampled).
    with pytest.raises(ValueError, match=r"x has 2 distinct values \(1e\+15, 1e\+16\); the fit needs 3"):
        fit_power_law([1e15, 1e15, 1e16], [3.0, 3.1, 2.5], bootstrap=10)
