"""Empirical privacy audit: run the release mechanism on neighbouring inputs (one person added) many
times and lower-bound ε from how differently the outputs fall. A correct mechanism keeps the bound
below the claimed ε; the bound must also come close, or the audit would have no power."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta

from privacy_vision.core.aggregator import AggregatorSettings, Bounds, TrackDayAccount
from privacy_vision.core.privacy import IntegerNoise

DRAWS = 200_000
# Documented false-failure rate: all the Clopper-Pearson bounds of one audit hold together with
# probability ≥ 1 − 1e-4 (Bonferroni over every threshold event and direction tested).
FAMILY_ERROR = 1e-4


def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    low = beta.ppf(alpha, successes, trials - successes + 1) if successes > 0 else 0.0
    high = beta.ppf(1 - alpha, successes + 1, trials - successes) if successes < trials else 1.0
    return float(low), float(high)


def epsilon_lower_bound(outputs_d: np.ndarray, outputs_neighbour: np.ndarray) -> float:
    """max over threshold events {output ≥ t} of ln(P_lower[D'] / P_upper[D]), both directions."""
    best = 0.0
    thresholds = range(
        int(min(outputs_d.min(), outputs_neighbour.min())), int(max(outputs_d.max(), outputs_neighbour.max())) + 1
    )
    alpha = FAMILY_ERROR / (4 * len(thresholds))  # two bounds per event, two directions
    for t in thresholds:
        for first, second in ((outputs_neighbour, outputs_d), (outputs_d, outputs_neighbour)):
            p_low, _ = clopper_pearson(int((first >= t).sum()), len(first), alpha)
            _, q_high = clopper_pearson(int((second >= t).sum()), len(second), alpha)
            if p_low > 0 and q_high > 0:
                best = max(best, math.log(p_low / q_high))
    return best


@pytest.mark.parametrize("epsilon_per_track_day, tier", [(2.0, "window"), (4.0, "hour")])
def test_occupancy_release_respects_its_stated_epsilon(epsilon_per_track_day, tier):
    """Neighbouring inputs differ by one track; the bound (tested in test_release_model) lets it add at most 1."""
    account = TrackDayAccount(AggregatorSettings(epsilon_per_track_day=epsilon_per_track_day), Bounds(900.0, (4, 3, 6)))
    cell = account.cells[tier]
    claimed = cell.epsilons["occupancy"]
    noise = cell.noise["occupancy"]
    occupancy, neighbour = 20, 21
    outputs_d = np.array(noise.histogram([occupancy] * DRAWS))
    outputs_n = np.array(noise.histogram([neighbour] * DRAWS))
    bound = epsilon_lower_bound(outputs_d, outputs_n)
    assert bound <= claimed, f"empirical ε lower bound {bound:.3f} exceeds the claimed {claimed:.3f}"
    assert bound >= 0.5 * claimed, f"audit too weak: bound {bound:.3f} for claimed {claimed:.3f}"


def test_audit_catches_a_mechanism_weaker_than_claimed():
    """The same audit against noise calibrated for twice the claimed ε must flag it."""
    claimed = 0.2
    leaky = IntegerNoise("discrete_laplace", 2 * claimed)
    bound = epsilon_lower_bound(np.array(leaky.histogram([20] * DRAWS)), np.array(leaky.histogram([21] * DRAWS)))
    assert bound > claimed
