"""The public release grid: tiers, their periods, the presence tick and the labels of the histograms.

Everything here is public (it depends on no person): the grid is fixed in advance, so releasing a cell reveals
nothing by its existence, only by its noisy values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from privacy_vision.core.anonymizer import DIRECTIONS_8, NO_DIRECTION

TIERS = ("window", "hour", "day")
GROUP_TIER = "group"  # strict mode: a zone's pending people over a variable period, released once large enough
HOUR_S = 3600.0
DAY_S = 86400.0
SITE_ZONE = "site"  # event metrics: the whole site (inside any zone), counted once per stitched track
HEADING_LABELS = (*DIRECTIONS_8, NO_DIRECTION)  # NO_DIRECTION: stationary (below the anonymizer's minimum speed)
DWELL_LABELS = ("short", "medium", "long")  # time since the body's stitched track arrived in the zone
PRESENCE_KIND, EVENTS_KIND, GROUP_KIND = "presence", "events", "group"


@dataclass(frozen=True)
class Grid:
    """The window tier's period and the presence tick (both public, both fixed for a configuration)."""

    window_s: float = 900.0  # the short tier; it must divide the hour so that windows nest in hours
    tick_s: float = 1.0  # presence is sampled at multiples of this; it must divide the window

    def validate(self) -> None:
        if not 0 < self.window_s <= HOUR_S or not _divides(self.window_s, HOUR_S):
            raise ValueError(f"window_s must divide an hour (e.g. 900, 600, 300, 60), got {self.window_s:g}")
        if not 0 < self.tick_s <= self.window_s or not _divides(self.tick_s, self.window_s):
            raise ValueError(f"tick_s must divide window_s ({self.window_s:g} s), got {self.tick_s:g}")

    def period_s(self, tier: str) -> float:
        return {"window": self.window_s, "hour": HOUR_S, "day": DAY_S}[tier]

    def period_start(self, tier: str, stamp_s: float) -> float:
        period = self.period_s(tier)
        return math.floor(stamp_s / period) * period

    def ticks(self, tier: str) -> int:
        """Tick instants in one whole period of the tier."""
        return round(self.period_s(tier) / self.tick_s)


def _divides(part: float, whole: float) -> bool:
    return math.isclose(whole / part, round(whole / part), abs_tol=1e-9)


def utc_day(stamp_s: float) -> str:
    return datetime.fromtimestamp(stamp_s, tz=UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Context:
    """The public facts the anonymizer enforced for a segment: grid, weight resolution, per-lineage bounds (the
    aggregator's accounts are built from them)."""

    grid: Grid
    weight_steps: int
    zones_per_day: int
    groups_per_day: int
