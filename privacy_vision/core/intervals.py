"""The 95% interval of every released value, derived in one place.

Release model v2 states each value's noise (the mechanism and the ε of each metric) but no interval. This
module turns that statement into the interval a reader needs next to the value; the terminal summary
(privacy_vision/runner.py), the read API and its CSV export (privacy_vision/cloud/ingest.py), and through
them the dashboard, all call `release_intervals` and nothing else. When a release carries its own
intervals (release model v3), this function reads them instead and every view follows.

The interval covers the noise as drawn: value ± the smallest h with P(|noise| ≤ h) ≥ 95%, cut at the
smallest value the release allows (0, or k for a strict-mode group). The consistency post-processing of
an hour or day cell (core/aggregator.py) usually narrows the true spread, so the interval is conservative
there. A value is *noise-dominated* when its interval is wider than the value itself (2h > value): it
says little beyond "small".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

LEVEL = 0.95
LAPLACE = "discrete_laplace"
MAX_HALF_WIDTH = 10**12  # beyond any count a release can hold (release_schema.MAX_COUNT is 10**9)
GROUP_TIER = "group"  # strict mode: the group's true size is at least k (the hard rule)

# What each metric of a release means, in one line (the terminal summary and the dashboard print these).
MEANINGS = {
    "occupancy": "distinct people in the zone during one window",
    "entries": "people who entered the zone during the hour",
    "exits": "people who left the zone during the hour",
    "direction": "people per heading during the hour (one heading per person: where they moved most)",
    "dwell": "people per time-in-zone class during the hour",
    "footfall": "distinct people in the zone during the UTC day ('site': anywhere on the site)",
    "group": "strict mode: a group of at least k people, released once it was large enough",
}


@dataclass(frozen=True)
class ValueInterval:
    """One released value and its interval."""

    value: int
    low: int
    high: int
    half_width: int
    level: float
    noise_dominated: bool  # the interval is wider than the value (2 × half_width > value)
    variance: float  # of the stated noise: what a sum of several values needs (sum_interval)

    def as_dict(self) -> dict[str, Any]:
        """What the read API adds per value (the value itself and the level are in the row already)."""
        return {
            "low": self.low,
            "high": self.high,
            "half_width": self.half_width,
            "noise_dominated": self.noise_dominated,
            "variance": self.variance,
        }


@lru_cache(maxsize=4096)
def noise_half_width(mechanism: str, epsilon: float, level: float = LEVEL) -> int | None:
    """The smallest h with P(|noise| ≤ h) ≥ level for the noise a release states, or None when this module
    does not know the mechanism's distribution (or the noise is too wide for any count).

    Discrete Laplace at scale 1/ε (core/privacy.py's IntegerNoise, OpenDP's make_laplace on integers) has the
    closed form P(|X| > h) = 2 p^(h+1) / (1 + p), p = e^-ε: O(1) for any ε, where summing the distribution
    would need an array of 60/ε entries. test_intervals checks it against IntegerNoise.distribution.
    """
    if mechanism.rsplit("+", 1)[-1] != LAPLACE or not (math.isfinite(epsilon) and epsilon > 0):
        return None
    p = math.exp(-epsilon)

    def tail(h: int) -> float:
        return 2.0 * math.exp(-epsilon * (h + 1)) / (1.0 + p)

    estimate = math.log((1.0 - level) * (1.0 + p) / 2.0) / -epsilon - 1.0
    if not estimate < MAX_HALF_WIDTH:
        return None
    h = max(0, math.ceil(estimate))
    while tail(h) > 1.0 - level:  # the closed form is exact; these guard its floating-point rounding
        h += 1
    while h > 0 and tail(h - 1) <= 1.0 - level:
        h -= 1
    return h


@lru_cache(maxsize=4096)
def noise_variance(mechanism: str, epsilon: float) -> float | None:
    """Variance of discrete Laplace noise at scale 1/ε: 2p / (1 - p)², p = e^-ε (None where unknown)."""
    if noise_half_width(mechanism, epsilon) is None:
        return None
    p = math.exp(-epsilon)
    return 2.0 * p / (1.0 - p) ** 2 if p < 1.0 else math.inf


def _interval(value: int, half_width: int | None, variance: float | None, floor: int) -> ValueInterval | None:
    if half_width is None or variance is None:
        return None
    return ValueInterval(
        value=value,
        low=max(floor, value - half_width),
        high=value + half_width,
        half_width=half_width,
        level=LEVEL,
        noise_dominated=2 * half_width > value,
        variance=variance,
    )


def sum_interval(intervals: list[ValueInterval]) -> ValueInterval | None:
    """The interval of a sum of released values (a chart's total over several hours): independent noises, so
    the variances add; the half-width is 1.96 standard deviations of the sum (normal approximation, close for
    sums of several values), never less than the widest single one (exact for a single value)."""
    if not intervals:
        return None
    total = sum(interval.value for interval in intervals)
    spread = math.sqrt(sum(interval.variance for interval in intervals))
    half_width = max(max(interval.half_width for interval in intervals), math.ceil(1.959964 * spread))
    return ValueInterval(
        value=total,
        low=max(0, total - half_width),
        high=total + half_width,
        half_width=half_width,
        level=LEVEL,
        noise_dominated=2 * half_width > total,
        variance=sum(interval.variance for interval in intervals),
    )


def release_intervals(release: Mapping[str, Any]) -> dict[str, ValueInterval]:
    """Every value a release (its wire form, core/release_schema.py) shows, by name: 'occupancy', 'entries',
    'exits', 'direction:<heading>', 'dwell:<class>', each with its interval. A "< k" cell shows no value, so it
    has none; a value whose noise this module cannot describe is left out rather than given a wrong interval."""
    if release.get("below_k"):
        return {}
    mechanism = str(release.get("mechanism", ""))
    epsilons = release.get("epsilon_by_metric") or {}
    floor = int(release.get("k", 0)) if release.get("tier") == GROUP_TIER else 0
    values: list[tuple[str, str, Any]] = [("occupancy", "occupancy", release.get("occupancy"))]
    values += [(name, name, release.get(name)) for name in ("entries", "exits") if name in epsilons]
    for metric, field in (("direction", "direction_counts"), ("dwell", "dwell_counts")):
        if metric in epsilons:
            values += [(f"{metric}:{label}", metric, count) for label, count in (release.get(field) or {}).items()]
    intervals = {}
    for name, metric, value in values:
        epsilon = epsilons.get(metric)
        if not isinstance(value, int) or not isinstance(epsilon, (int, float)):
            continue
        epsilon = float(epsilon)
        interval = _interval(value, noise_half_width(mechanism, epsilon), noise_variance(mechanism, epsilon), floor)
        if interval is not None:
            intervals[name] = interval
    return intervals


def format_value(interval: ValueInterval | None, value: int | None = None) -> str:
    """'12 [0–40]~' (noise-dominated), '51 [31–71]', or the bare value where no interval is known."""
    if interval is None:
        return "-" if value is None else f"{value} [interval unknown]"
    mark = "~" if interval.noise_dominated else ""
    return f"{interval.value} [{interval.low}–{interval.high}]{mark}"
