"""The one interval function (core/intervals.py): exact for the stated noise, bounded for any ε, and the same
numbers wherever a value is shown (the terminal summary here; the read API, CSV and dashboard in their tests)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from privacy_vision.core.intervals import LEVEL, format_value, noise_half_width, release_intervals
from privacy_vision.core.privacy import IntegerNoise
from privacy_vision.core.release_schema import example_release


@pytest.mark.parametrize("epsilon", [0.015, 0.05, 0.105, 0.2, 0.5, 1.0, 2.0, 7.0])
def test_the_half_width_is_the_smallest_that_holds_95_percent_of_the_stated_noise(epsilon):
    support, probabilities = IntegerNoise("discrete_laplace", epsilon).distribution
    h = noise_half_width("discrete_laplace", epsilon)
    within = lambda width: probabilities[np.abs(support) <= width].sum()  # noqa: E731
    assert within(h) >= LEVEL and (h == 0 or within(h - 1) < LEVEL)


@given(st.floats(min_value=1e-300, max_value=1e6, allow_nan=False))
def test_any_epsilon_gives_a_bounded_answer_at_once(epsilon):
    """Any ε a stored release may state (the schema allows tiny ones): no array of 60/ε entries, no loop over h."""
    h = noise_half_width("discrete_laplace", epsilon)
    assert h is None or (
        0 <= h <= 10**12 and math.isclose(h, math.log(0.05 * (1 + math.exp(-epsilon)) / 2) / -epsilon - 1, abs_tol=1.5)
    )


def test_unknown_noise_gets_no_interval_rather_than_a_wrong_one():
    assert noise_half_width("discrete_gaussian", 1.0) is None
    assert noise_half_width("discrete_laplace", 0.0) is None
    assert release_intervals(example_release(mechanism="discrete_gaussian")) == {}


def test_every_value_of_a_release_has_its_interval():
    window = release_intervals(example_release("hall", tier="window"))
    assert set(window) == {"occupancy"}
    occupancy = window["occupancy"]
    assert (occupancy.value, occupancy.half_width) == (7, 15)  # ε 0.2 per window cell at the defaults
    assert occupancy.low == 0 and occupancy.high == 22 and occupancy.noise_dominated
    hour = release_intervals(example_release("hall", tier="hour"))
    assert {"occupancy", "entries", "exits", "direction:E", "direction:none", "dwell:short"} <= set(hour)
    assert len([name for name in hour if name.startswith("direction:")]) == 9
    assert release_intervals(example_release("hall", tier="hour", below_k=True)) == {}  # nothing is shown
    # a value well above its noise is not noise-dominated
    day = release_intervals(example_release("hall", tier="day", occupancy=5000))["occupancy"]
    assert not day.noise_dominated and day.low == 5000 - day.half_width


def test_a_strict_mode_group_is_never_below_k():
    """Its true size is at least k (the hard rule), so the interval starts there."""
    group = release_intervals(example_release("plaza", tier="group", occupancy=6))["occupancy"]
    assert group.low == example_release("plaza", tier="group")["k"] and group.high == 6 + group.half_width


def test_format_marks_noise_dominated_values():
    hour = release_intervals(example_release("hall", tier="day", occupancy=5000))
    assert format_value(release_intervals(example_release("hall"))["occupancy"]) == "7 [0–22]~"
    assert format_value(hour["occupancy"]).endswith("]") and "~" not in format_value(hour["occupancy"])
    assert format_value(None, 4) == "4 [interval unknown]"


@pytest.mark.parametrize(("count", "epsilon"), [(1, 0.2), (3, 0.105), (24, 0.015), (100, 0.5)])
def test_the_interval_of_a_sum_covers_95_percent_of_its_noise(count, epsilon):
    """Totals over several hours (the dashboard's headings and dwell): the stated variance, the coverage measured
    by drawing the noise from its distribution (IntegerNoise's, not this module's formula)."""
    from privacy_vision.core.intervals import sum_interval

    support, probabilities = IntegerNoise("discrete_laplace", epsilon).distribution
    assert release_intervals(example_release(epsilon_by_metric={"occupancy": epsilon}))[
        "occupancy"
    ].variance == pytest.approx(IntegerNoise("discrete_laplace", epsilon).variance, rel=1e-6)
    one = release_intervals(example_release(occupancy=50, epsilon_by_metric={"occupancy": epsilon}))["occupancy"]
    total = sum_interval([one] * count)
    assert total.value == 50 * count
    draws = np.random.default_rng(7).choice(support, p=probabilities, size=(20000, count)).sum(axis=1)
    coverage = float(np.mean(np.abs(draws) <= total.half_width))
    assert 0.945 <= coverage <= 0.975, coverage
