"""Noisy values that know their noise: a value plus the linear combination of independent noise draws in it.

Every released number is the true value plus Σ cᵢ Zᵢ, where each Zᵢ is one discrete Laplace draw of a stated
scale (mechanisms.py) and the coefficients come from post-processing (postprocess.py) that uses only public facts.
So each value's 95% interval follows from public parameters alone: exact for a single draw, and for a combination
the 95% quantile of |Σ cᵢ Zᵢ| computed by simulating the stated law (a fixed seed, so the same configuration always
states the same interval). Hand-written: no library carries noise terms through linear post-processing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
EXACT_METHOD = "exact discrete Laplace quantile"
SIMULATED_METHOD = "95% quantile of the stated noise law, 400k simulated draws"
SIMULATION_DRAWS = 400_000


@dataclass(frozen=True)
class Term:
    """One independent noise draw (by id) with its discrete Laplace scale and its coefficient in a value."""

    noise_id: str
    scale: float
    coefficient: float


@dataclass(frozen=True)
class Estimate:
    """An unbiased noisy value and the noise terms in it."""

    value: float
    terms: tuple[Term, ...]

    @classmethod
    def draw(cls, noisy: int, noise_id: str, scale: float) -> Estimate:
        return cls(float(noisy), (Term(noise_id, scale, 1.0),))

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(self.value + other.value, _merge(self.terms + other.terms))

    def __sub__(self, other: Estimate) -> Estimate:
        return self + other * -1.0

    def __mul__(self, factor: float) -> Estimate:
        return Estimate(
            self.value * factor, tuple(Term(t.noise_id, t.scale, t.coefficient * factor) for t in self.terms)
        )

    __rmul__ = __mul__

    @property
    def variance(self) -> float:
        return sum(t.coefficient**2 * laplace_variance(t.scale) for t in self.terms)

    def half_width(self) -> float:
        """Half the width of the symmetric 95% interval of the noise."""
        return noise_half_width(tuple(sorted((abs(t.coefficient), t.scale) for t in self.terms if t.coefficient)))

    def interval(self) -> tuple[float, float]:
        """The 95% interval, intersected with [0, ∞): every quantity released is a count or a mean of people, so the
        true value is ≥ 0 and the intersection keeps the coverage."""
        h = self.half_width()
        return max(0.0, self.value - h), max(0.0, self.value + h)

    @property
    def method(self) -> str:
        return EXACT_METHOD if len(self.terms) <= 1 else SIMULATED_METHOD


def total(estimates: Iterable[Estimate]) -> Estimate:
    result = Estimate(0.0, ())
    for estimate in estimates:
        result = result + estimate
    return result


def _merge(terms: tuple[Term, ...]) -> tuple[Term, ...]:
    merged: dict[str, Term] = {}
    for term in terms:
        known = merged.get(term.noise_id)
        merged[term.noise_id] = (
            term if known is None else Term(term.noise_id, term.scale, known.coefficient + term.coefficient)
        )
    return tuple(t for t in merged.values() if t.coefficient != 0.0)


def laplace_variance(scale: float) -> float:
    """Var of the discrete Laplace with p = exp(-1/scale): 2p / (1 - p)²."""
    p = math.exp(-1.0 / scale)
    return 2 * p / (1 - p) ** 2


def exact_half_width(scale: float) -> int:
    """Smallest integer h with P[|Z| > h] = 2 p^(h+1) / (1 + p) ≤ 1 - LEVEL."""
    p = math.exp(-1.0 / scale)
    return max(0, math.ceil(math.log((1 - LEVEL) * (1 + p) / 2) / math.log(p) - 1 - 1e-12))


def noise_half_width(terms: tuple[tuple[float, float], ...]) -> float:
    """95% half-width of Σ cᵢ Zᵢ for (|cᵢ|, scaleᵢ) pairs; exact for one term, simulated for several."""
    if not terms:
        return 0.0
    if len(terms) == 1:
        coefficient, scale = terms[0]
        return coefficient * exact_half_width(scale)
    groups: dict[tuple[float, float], int] = {}
    for coefficient, scale in terms:  # terms with one coefficient and scale: their sum is one negative binomial draw
        key = (round(coefficient, 12), scale)
        groups[key] = groups.get(key, 0) + 1
    return _simulated_half_width(tuple(sorted((c, s, n) for (c, s), n in groups.items())))


@functools.lru_cache(maxsize=4096)
def _simulated_half_width(groups: tuple[tuple[float, float, int], ...]) -> float:
    """n iid discrete Laplace draws sum to the difference of two negative binomials (of geometric failures), so each
    group of equal terms costs one pair of draws: exact sampling of the stated law, a fixed seed."""
    rng = np.random.default_rng(20261203)  # public law, fixed seed: not privacy noise, an interval width
    draws = np.zeros(SIMULATION_DRAWS)
    for coefficient, scale, count in groups:
        success = -math.expm1(-1.0 / scale)
        draws += coefficient * (
            rng.negative_binomial(count, success, SIMULATION_DRAWS).astype(float)
            - rng.negative_binomial(count, success, SIMULATION_DRAWS)
        )
    return float(np.quantile(np.abs(draws), LEVEL, method="higher"))
