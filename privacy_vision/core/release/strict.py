"""Strict mode's pending groups: "no group below k", taken literally, per stitched track.

Each zone has one pending group: the lineages that stood in the zone since its last release. A lineage joins at most
`groups_per_day` groups per day under one bound instance (a restart starts a new instance, charged again). At every
window end the group's true size is offered to the aggregator's sparse-vector test (releaser.py); a released group
restarts the zone's group at the end of its period.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field

from privacy_vision.core.geometry import Zone
from privacy_vision.core.release.grid import DAY_S, utc_day
from privacy_vision.core.release.lineage import Observation


@dataclass(frozen=True)
class GroupTotals:
    """A zone's pending group at a window end: its true size (distinct lineages), under one bound instance."""

    zone_id: str
    period_start_s: float  # the group's start
    period_end_s: float  # the window end it is offered at
    size: int
    groups_per_day: int
    bound_instance: str


@dataclass
class _Group:
    start_s: float
    members: set[int] = field(default_factory=set)


class PendingGroups:
    """One pending group per zone; a lineage joins at most groups_per_day groups a day."""

    def __init__(self, zones: list[Zone], groups_per_day: int, start_s: float) -> None:
        if not isinstance(groups_per_day, int) or groups_per_day < 1:
            raise ValueError(f"groups_per_day must be an integer ≥ 1 for strict mode, got {groups_per_day}")
        self.groups_per_day = groups_per_day
        self.epoch = secrets.token_hex(8)
        self._zones = [zone.zone_id for zone in zones]
        self._day_start = math.floor(start_s / DAY_S) * DAY_S
        self._groups = {zone: _Group(start_s) for zone in self._zones}
        self._joined: dict[int, int] = {}  # lineage -> groups joined today

    def observe(self, stamp_s: float, observations: list[Observation]) -> None:
        self._roll_day(stamp_s)
        for seen in observations:
            group = self._groups.get(seen.zone_id) if seen.zone_id is not None else None
            if group is None or seen.lineage_id in group.members or stamp_s < group.start_s:
                continue
            if self._joined.get(seen.lineage_id, 0) < self.groups_per_day:
                group.members.add(seen.lineage_id)
                self._joined[seen.lineage_id] = self._joined.get(seen.lineage_id, 0) + 1

    def offers(self, window_end_s: float) -> list[GroupTotals]:
        """Every zone's pending group, offered to the test at a window end (groups never span midnight)."""
        instance = f"{self.epoch}:{utc_day(self._day_start)}"
        offered = [
            GroupTotals(zone, group.start_s, window_end_s, len(group.members), self.groups_per_day, instance)
            for zone, group in self._groups.items()
            if window_end_s > group.start_s
        ]
        self._roll_day(window_end_s)
        return offered

    def released(self, zone_id: str, start_s: float, end_s: float) -> bool:
        """The aggregator released the zone's group [start_s, end_s]: a new group starts at end_s."""
        group = self._groups.get(zone_id)
        if group is None or abs(group.start_s - start_s) > 1e-6:
            return False
        self._groups[zone_id] = _Group(end_s)
        return True

    def _roll_day(self, stamp_s: float) -> None:
        if stamp_s >= self._day_start + DAY_S:
            self._day_start = math.floor(stamp_s / DAY_S) * DAY_S
            self._groups = {zone: _Group(self._day_start) for zone in self._zones}
            self._joined = {}

    def forget(self) -> None:
        """A data-subject request: every pending group restarts under a new bound instance."""
        self.epoch = secrets.token_hex(8)
        self._groups = {zone: _Group(group.start_s) for zone, group in self._groups.items()}
        self._joined = {}
