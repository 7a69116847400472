"""The one place that reads intervals (core/intervals.py): every value of a release with the interval it states,
the noise-dominated mark of the release schema, and the interval of a total that covers 95% of its noise (the
terminal summary here; the read API, CSV and dashboard in their tests use the same functions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privacy_vision.core.intervals import ValueInterval, format_value, release_intervals, sum_interval
from privacy_vision.core.release_schema import example_release, noise_dominated


def test_every_value_of_a_release_has_the_interval_it_states():
    for tier, names in [
        ("window", {"occupancy"}),
        ("hour", {"occupancy", "heading.E", "heading.none", "dwell.short", "dwell.long"}),
        ("day", {"footfall"}),
        ("group", {"size"}),
    ]:
        release = example_release("hall", tier=tier)
        intervals = release_intervals(release)
        assert names <= set(intervals) and set(intervals) == set(release["values"]), tier
        for name, interval in intervals.items():
            stated = release["values"][name]
            assert (interval.value, interval.low, interval.high) == (stated["value"], stated["low"], stated["high"])
            assert interval.half_width == pytest.approx(stated["high"] - stated["value"])
            shown = {**stated, "value": max(0.0, stated["value"])}  # as the value is shown
            assert interval.noise_dominated == noise_dominated(shown)
    below = release_intervals(example_release(values={"occupancy": {"value": -40.0, "low": 0.0, "high": 31.0}}))
    assert below["occupancy"].noise_dominated  # shown as 0 [0–31]: wider than the value


def test_format_marks_noise_dominated_values_and_shows_no_negative_count():
    wide = ValueInterval(3.0, 0.0, 12.0, 9.0, True)
    assert format_value(wide) == "3.0 [0.0–12.0]~"
    assert format_value(ValueInterval(51.0, 31.2, 70.8, 19.8, False)) == "51.0 [31.2–70.8]"
    assert format_value(ValueInterval(-1.5, 0.0, 6.0, 7.5, True)).startswith("0.0 [")  # unbiased, below 0 by noise
    assert format_value(None) == "-"


@pytest.mark.parametrize("count", [1, 2, 3, 24, 100])
def test_the_interval_of_a_total_covers_95_percent_of_its_noise(count):
    """Totals over hours (the dashboard's headings and dwell): Laplace noise drawn at the scale each half-width
    states (the 95% quantile of |Laplace(b)| is b·ln 20), the total's interval checked for its coverage."""
    scale = 4.0
    half = scale * math.log(20)
    values = [ValueInterval(10.0, 10.0 - half, 10.0 + half, half, True)] * count
    total = sum_interval(values)
    assert total.value == 10.0 * count and total.half_width >= half
    draws = np.random.default_rng(7).laplace(0.0, scale, size=(20000, count)).sum(axis=1)
    coverage = float(np.mean(np.abs(draws) <= total.half_width))
    assert 0.945 <= coverage <= 0.99, coverage
    assert sum_interval([]) is None
