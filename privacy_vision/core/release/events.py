"""Event metrics (footfall, entries, exits) per stitched track: the only metrics that need a track's identity.

Each lineage (lineage.py) counts at most once in the site's footfall and in at most `zones_per_day` zones per day
(footfall, and an entry and an exit in each of those zones), so one lineage changes the day's event vectors by at
most zones_per_day + 1 (footfall), zones_per_day (entries) and zones_per_day (exits) in L1. That bound lives in
memory: a restart begins a new *bound instance* (a fresh random epoch), which the ledger charges again, so a
respawn can never hand a lineage a fresh bound for free. A person is several lineages when stitching fails; the
DPIA states the measured lineages per person, never a mean as a bound.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field

from privacy_vision.core.geometry import Zone
from privacy_vision.core.release.grid import DAY_S, SITE_ZONE, utc_day
from privacy_vision.core.release.lineage import Observation

EVENT_METRICS = ("footfall", "entries", "exits")


@dataclass(frozen=True)
class EventSettings:
    """The per-lineage bound of the event metrics."""

    zones_per_day: int = 3  # m: zones one lineage may count in per day (the site counts once besides); a visitor
    # crossing more zones than m drops out of the later zones' footfall (an undercount): m = 3 covers a small shop's
    # entrance, shelves and checkout, a store with more zones per visit needs its own m (docs/privacy_utility.md)

    def validate(self) -> None:
        if not isinstance(self.zones_per_day, int) or not 1 <= self.zones_per_day <= 100:
            raise ValueError(f"zones_per_day must be an integer from 1 to 100, got {self.zones_per_day}")


@dataclass(frozen=True)
class EventTotals:
    """True event counts of one zone (or the site) over one segment of a day, under one bound instance."""

    zone_id: str
    period_start_s: float
    segment_start_s: float
    segment_end_s: float
    footfall: int
    entries: int
    exits: int
    zones_per_day: int
    bound_instance: str  # "<epoch>:<day>": the bound this process enforced on that day
    observed_s: float  # seconds of the segment with frames no more than max_frame_gap_s apart


@dataclass
class _Counted:
    """What one lineage has counted today."""

    zones: set[str] = field(default_factory=set)
    site: bool = False


class EventCounter:
    """Counts footfall, entries and exits per zone-day, at most m zones per lineage and day."""

    def __init__(self, zones: list[Zone], settings: EventSettings, start_s: float, max_frame_gap_s: float) -> None:
        settings.validate()
        self.zones = [zone.zone_id for zone in zones]
        self.settings = settings
        self.max_frame_gap_s = max_frame_gap_s
        self._last_stamp: float | None = None
        self._observed_s = 0.0
        self.epoch = secrets.token_hex(8)  # a new bound instance per process start: the ledger charges it
        self._day_start = math.floor(start_s / DAY_S) * DAY_S
        self._segment_start = start_s
        self._counted: dict[int, _Counted] = {}
        self._totals = {zone: [0, 0, 0] for zone in (*self.zones, SITE_ZONE)}

    def observe(self, stamp_s: float, observations: list[Observation]) -> list[EventTotals]:
        closed = self.advance(stamp_s)
        if stamp_s < self._segment_start:  # the clock stepped back before this segment: never count into a closed one
            return closed
        if self._last_stamp is not None and 0 < stamp_s - self._last_stamp <= self.max_frame_gap_s:
            self._observed_s += stamp_s - self._last_stamp
        self._last_stamp = stamp_s
        for seen in observations:
            counted = self._counted.setdefault(seen.lineage_id, _Counted())
            if seen.zone_id is not None and not counted.site:
                counted.site = True
                self._totals[SITE_ZONE][0] += 1
            new_zone = seen.zone_id is not None and seen.zone_id not in counted.zones
            if new_zone and len(counted.zones) < self.settings.zones_per_day:
                counted.zones.add(seen.zone_id)
                self._totals[seen.zone_id][0] += 1
            for zone in seen.entered:
                if zone in counted.zones:
                    self._totals[zone][1] += 1
            for zone in seen.exited:
                if zone in counted.zones:
                    self._totals[zone][2] += 1
        return closed

    def advance(self, now_s: float) -> list[EventTotals]:
        """The day ended (on the clock): release it and start the next with fresh per-lineage bounds."""
        if now_s < self._day_start + DAY_S:
            return []
        closed = self._close(self._day_start + DAY_S)
        self._day_start = math.floor(now_s / DAY_S) * DAY_S
        self._segment_start = self._day_start
        return closed

    def flush(self, now_s: float) -> list[EventTotals]:
        """Shutdown: the day's segment ends now (a restart continues the day under a new bound instance)."""
        closed = self.advance(now_s)
        return closed + self._close(max(now_s, self._segment_start))

    def _close(self, end_s: float) -> list[EventTotals]:
        totals, observed = self._totals, self._observed_s
        self._totals = {zone: [0, 0, 0] for zone in totals}
        self._counted, self._observed_s = {}, 0.0
        if end_s <= self._segment_start:
            return []
        instance = f"{self.epoch}:{utc_day(self._day_start)}"
        return [
            EventTotals(
                zone,
                self._day_start,
                self._segment_start,
                end_s,
                *counts,
                self.settings.zones_per_day,
                instance,
                min(observed, end_s - self._segment_start),
            )
            for zone, counts in totals.items()
        ]

    def new_bound_instance(self, now_s: float) -> list[EventTotals]:
        """A data-subject request drops every lineage: end today's segment now and count what follows under a new
        bound instance (which the ledger charges), so a forgotten lineage can never count twice under one bound."""
        closed = self.flush(now_s)
        self.epoch = secrets.token_hex(8)
        self._segment_start = max(now_s, self._segment_start)
        return closed
