"""OpenDP mechanisms calibrated as stated; the ledger never passes its cap and survives restarts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy_vision.core.privacy import IntegerNoise, PrivacyLedger, zcdp_rho_for

SAMPLES = 40_000
# Tolerances below are 5 standard errors: a correct mechanism fails with probability < 1e-6 per check.
Z = 5.0


@pytest.mark.parametrize("epsilon", [0.2, 1.0, 2.0])
def test_discrete_laplace_matches_its_calibrated_scale(epsilon):
    noise = IntegerNoise("discrete_laplace", epsilon)
    draws = np.array(noise.histogram([0] * SAMPLES), dtype=float)
    p = math.exp(-epsilon)  # scale 1/ε: P(k) ∝ exp(-ε|k|)
    variance = 2 * p / (1 - p) ** 2
    kurtosis = 6 + (1 - p) ** 2 / p if p > 0 else 6  # loose upper bound of the excess kurtosis + 3
    assert abs(draws.mean()) < Z * math.sqrt(variance / SAMPLES)
    assert abs(draws.var() - variance) < Z * variance * math.sqrt((kurtosis - 1) / SAMPLES)
    assert np.all(draws == np.round(draws))  # integers: exact sampler, no floating-point artefacts


def test_discrete_gaussian_matches_its_zcdp_scale():
    noise = IntegerNoise("discrete_gaussian", 1.0, 1e-6)
    draws = np.array(noise.histogram([0] * SAMPLES), dtype=float)
    variance = noise.scale**2  # the discrete Gaussian's variance is just below sigma^2 for sigma > 1
    assert abs(draws.var() - variance) < Z * variance * math.sqrt(2 / SAMPLES) + 0.05 * variance
    rho = zcdp_rho_for(1.0, 1e-6)
    assert rho + 2 * math.sqrt(rho * math.log(1e6)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "args, message",
    [
        (("discrete_laplace", 0.0), "epsilon"),
        (("discrete_laplace", -1.0), "epsilon"),
        (("laplace", 1.0), "mechanism"),
        (("discrete_laplace", 1.0, 1e-6), "pure DP"),
        (("discrete_gaussian", 1.0, 0.0), "delta"),
    ],
)
def test_bad_mechanism_settings(args, message):
    with pytest.raises(ValueError, match=message):
        IntegerNoise(*args)


@settings(max_examples=40, deadline=None)
@given(
    cap=st.floats(0.5, 20), charges=st.lists(st.tuples(st.integers(0, 5), st.floats(0.01, 5)), min_size=1, max_size=40)
)
def test_ledger_never_exceeds_its_cap_and_charges_a_configuration_once_a_day(tmp_path_factory, cap, charges):
    ledger = PrivacyLedger(tmp_path_factory.mktemp("ledger") / "l.sqlite", cap)
    charged: set[str] = set()
    for configuration, epsilon in charges:
        name = f"config-{configuration}"
        before = ledger.spent("2026-11-24")
        decision = ledger.try_charge("2026-11-24", name, epsilon, 0.0)
        if name in charged:
            assert decision.granted and ledger.spent("2026-11-24") == before  # already paid for today
            continue
        assert decision.granted == (before + epsilon <= cap * (1 + 1e-9))
        charged |= {name} if decision.granted else set()
        assert ledger.spent("2026-11-24") <= cap * (1 + 1e-9)
        assert ledger.spent("2026-11-24") == pytest.approx(before + (epsilon if decision.granted else 0.0))
    ledger.close()


def test_ledger_persists_and_days_are_separate(tmp_path):
    path = tmp_path / "ledger.sqlite"
    ledger = PrivacyLedger(path, 3.0)
    assert ledger.try_charge("2026-11-24", "a", 2.0, 0).granted
    ledger.close()
    reopened = PrivacyLedger(path, 3.0)
    assert reopened.spent("2026-11-24") == 2.0
    assert reopened.try_charge("2026-11-24", "a", 2.0, 0).granted  # the same configuration again: no new charge
    assert not reopened.try_charge("2026-11-24", "b", 1.5, 0).granted
    assert reopened.try_charge("2026-11-25", "b", 1.5, 0).granted
