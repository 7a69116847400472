"""Every released value with its 95% interval, read in one place.

A release (model v3, core/release_schema.py) carries each value with its 95% interval (`values`: value, low,
high; the method in `interval`). The terminal summary (privacy_vision/report.py), the read API and its CSV
(privacy_vision/cloud/release_views.py) and, through the API, the dashboard all take the intervals from
`release_intervals` and the interval of a total from `sum_interval`, so they always agree.

A value is *noise-dominated* when its interval is wider than the value itself (release_schema.noise_dominated):
it says little beyond "about this much noise".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from privacy_vision.core.release_schema import noise_dominated

LEVEL = 0.95
Z_95 = 1.959964  # a 95% half-width is this many standard deviations of a normal approximation

# What each metric of a release means, in one line (the terminal summary and the dashboard show these).
MEANINGS = {
    "occupancy": "people present on average over the observed part of the period (identity-free)",
    "heading": "of those, how many were moving each way ('none': standing), over the hour",
    "dwell": "of those, how many had been in the zone a short, medium or long time, over the hour",
    "footfall": "distinct stitched tracks seen in the zone that UTC day (a broken track can count twice)",
    "entries": "stitched tracks that entered the zone that day",
    "exits": "stitched tracks that left the zone that day",
    "size": "strict mode: a group of at least k people, released once it was large enough",
}


@dataclass(frozen=True)
class ValueInterval:
    """One released value and its 95% interval."""

    value: float
    low: float
    high: float
    half_width: float  # high - value: the interval's upper half, which no floor cuts
    noise_dominated: bool

    def as_dict(self) -> dict[str, Any]:
        """What the read API adds per value (the value itself is in the release already)."""
        return {
            "low": self.low,
            "high": self.high,
            "half_width": self.half_width,
            "noise_dominated": self.noise_dominated,
        }


def release_intervals(release: Mapping[str, Any]) -> dict[str, ValueInterval]:
    """Every value a release carries, by metric name ('occupancy', 'heading.E', 'dwell.short', 'footfall',
    'entries', 'exits', 'size'), with the interval the release states. A cell shown as "< k" still carries its
    values (sums over cells stay unbiased); whoever shows it decides not to show them."""
    intervals = {}
    for name, estimate in (release.get("values") or {}).items():
        value, low, high = float(estimate["value"]), float(estimate["low"]), float(estimate["high"])
        intervals[name] = ValueInterval(value, low, high, max(0.0, high - value), _dominated(value, low, high))
    return intervals


def _dominated(value: float, low: float, high: float) -> bool:
    """release_schema.noise_dominated, with the value as it is shown: an unbiased value that noise took below 0 is
    shown as 0, so its interval [0, high] is wider than it whenever high > 0 (the schema's |value| would call
    -40 with [0, 31] informative)."""
    return noise_dominated({"value": max(0.0, value), "low": low, "high": high})


def sum_interval(intervals: Sequence[ValueInterval]) -> ValueInterval | None:
    """The interval of a total of released values (a chart's heading or dwell over several hours): independent
    noises, so the half-widths add in quadrature (normal approximation, each half-width taken as 1.96 standard
    deviations), never less than the widest single one (exact for a single value); cut at 0."""
    if not intervals:
        return None
    total = sum(interval.value for interval in intervals)
    half_width = max(
        max(interval.half_width for interval in intervals),
        math.sqrt(sum(interval.half_width**2 for interval in intervals)),
    )
    low, high = max(0.0, total - half_width), total + half_width
    return ValueInterval(total, low, high, half_width, _dominated(total, low, high))


def format_value(interval: ValueInterval | None) -> str:
    """ "3.2 [0.0–9.8]~" (noise-dominated) or "51.0 [31.2–70.8]"; an unbiased value below 0 by noise is shown as 0."""
    if interval is None:
        return "-"
    mark = "~" if interval.noise_dominated else ""
    return f"{max(0.0, interval.value):.1f} [{interval.low:.1f}–{interval.high:.1f}]{mark}"
