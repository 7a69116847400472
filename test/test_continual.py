"""Binary-tree continual counter: exact without noise, unbiased, and polylog error growth."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy_vision.core.continual import BinaryTreeCounter
from privacy_vision.core.privacy import IntegerNoise


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=200))
def test_prefix_sums_are_exact_when_noise_is_negligible(counts):
    counter = BinaryTreeCounter(horizon=256, epsilon=1e6)
    running = 0
    for count in counts:
        running += count
        assert counter.add(count) == running


def test_horizon_is_enforced():
    counter = BinaryTreeCounter(horizon=2, epsilon=1.0)
    counter.add(1)
    counter.add(1)
    with pytest.raises(ValueError, match="horizon"):
        counter.add(1)


def prefix_errors(horizon: int, runs: int, epsilon: float) -> np.ndarray:
    errors = np.zeros((runs, horizon))
    for run in range(runs):
        counter = BinaryTreeCounter(horizon, epsilon)
        for t in range(horizon):
            errors[run, t] = counter.add(3) - 3 * (t + 1)
    return errors


def test_error_grows_polylogarithmically_not_linearly():
    epsilon, runs = 1.0, 30
    rms = {}
    for horizon in (16, 256, 1024):
        errors = prefix_errors(horizon, runs, epsilon)
        final = errors[:, -1]  # prefix sums within a run share nodes, so test independent runs
        assert abs(final.mean()) < 5 * final.std() / math.sqrt(runs) + 1  # unbiased
        rms[horizon] = float(np.sqrt((errors[:, -1] ** 2).mean()))
    # The same day's budget spent per window instead (ε/T each, summed): RMS grows like T^1.5.
    naive_noise = IntegerNoise("discrete_laplace", epsilon / 1024)
    naive = [sum(naive_noise.histogram([0] * 1024)) for _ in range(runs)]
    naive_rms = float(np.sqrt(np.mean(np.square(naive))))
    assert rms[1024] < naive_rms / 100
    # Polylog: a 64x longer horizon costs far less than 64x (here at most (11/5)^1.5 ≈ 3.3x, with slack).
    assert rms[1024] / rms[16] < 6.0, rms
