"""Task metrics, discontinuous and continuous side by side, and their bootstrap standard errors.

Schaeffer et al. (2023) showed that a sharp jump under exact match is often a smooth rise under
a continuous metric; every task therefore reports both kinds:

=========================  ==============  ======  ===================================================
metric                     kind            better  per example
=========================  ==============  ======  ===================================================
exact_match                discontinuous   higher  1 if the greedy answer equals the answer, else 0
accuracy                   discontinuous   higher  1 if the answer has the highest log-likelihood
answer_logprob_per_token   continuous      higher  the answer's log-likelihood per token (nats)
brier                      continuous      lower   sum over choices of (p_choice - 1[correct])^2,
                                                   p = softmax of the choices' log-likelihoods
token_edit_distance        continuous      lower   Levenshtein distance between the greedy answer's
                                                   tokens and the answer's
digit_edit_distance        continuous      lower   the same over characters, for numeric answers
=========================  ==============  ======  ===================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["METRICS", "CHOICE_METRICS", "GENERATION_METRICS", "Metric", "bootstrap_stderr", "brier_score", "edit_distance"]


@dataclass(frozen=True)
class Metric:
    """How a metric reads: ``continuous`` or not, whether higher is better, whether it needs
    choices, a generated answer, or numeric answers."""

    continuous: bool
    higher_is_better: bool
    needs_choices: bool = False
    needs_generation: bool = False
    numeric: bool = False

    @property
    def kind(self) -> str:
        return "continuous" if self.continuous else "discontinuous"


METRICS = {
    "exact_match": Metric(continuous=False, higher_is_better=True, needs_generation=True),
    "accuracy": Metric(continuous=False, higher_is_better=True, needs_choices=True),
    "answer_logprob_per_token": Metric(continuous=True, higher_is_better=True),
    "brier": Metric(continuous=True, higher_is_better=False, needs_choices=True),
    "token_edit_distance": Metric(continuous=True, higher_is_better=False, needs_generation=True),
    "digit_edit_distance": Metric(continuous=True, higher_is_better=False, needs_generation=True, numeric=True),
}
CHOICE_METRICS = {m for m, spec in METRICS.items() if spec.needs_choices}
GENERATION_METRICS = {m for m, spec in METRICS.items() if spec.needs_generation}


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions from ``a`` to ``b``."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def brier_score(choice_logprobs: Sequence[float], answer: int) -> float:
    """Brier (1950) score of the choices' probabilities (softmax of their log-likelihoods)
    against the correct choice: 0 is certain and right, 2 certain and wrong."""
    logp = np.asarray(choice_logprobs, np.float64)
    p = np.exp(logp - logp.max())
    p /= p.sum()
    onehot = np.zeros_like(p)
    onehot[answer] = 1.0
    return float(np.sum((p - onehot) ** 2))


def bootstrap_stderr(values: Sequence[float], resamples: int = 1000, seed: int = 0) -> float:
    """The standard error of the mean of ``values`` by the bootstrap (Efron 1979): the standard
    deviation of the means of ``resamples`` resamples with replacement. 0 for fewer than two
    values."""
    x = np.asarray(values, np.float64)
    if x.size < 2 or resamples < 1:
        return 0.0
    picks = np.random.default_rng(seed).integers(0, x.size, size=(resamples, x.size))
    return float(x[picks].mean(axis=1).std(ddof=1))
