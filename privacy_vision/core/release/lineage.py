"""Stitched tracks ("lineages") and their zone stays: what the event metrics count and the dwell class reads.

A tracker fragments one person into several tracks (measured on MOT15: 2.1 tracks per person on average, more the
longer they stay). A new track born close to where a track was just lost, shortly after, continues that track's
lineage: it inherits its zone stays, its arrival times and its event counters. The rule is conservative on
purpose: merging two different people's tracks only undercounts an event metric, never overcounts one person.
Lineages live in memory only and are identified by a counter that is never written anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from privacy_vision.core.geometry import Zone
from privacy_vision.core.release.grid import DWELL_LABELS


@dataclass(frozen=True)
class LineageSettings:
    """How tracks are stitched and how zone stays are debounced."""

    stitch_radius_m: float = 1.0  # a new track this close to where a track was lost continues its lineage ...
    stitch_window_s: float = 3.0  # ... if it is born at most this long after that track was last seen
    boundary_hysteresis_m: float = 0.25  # a change of zone state counts only once this far from the edge
    dwell_thresholds_s: tuple[float, float] = (30.0, 120.0)  # short below the first, long from the second
    gone_after_s: float = 60.0  # a lineage unseen this long is dropped (its track cannot come back)

    def validate(self) -> None:
        if self.stitch_radius_m < 0 or self.stitch_window_s < 0:
            raise ValueError("stitch_radius_m and stitch_window_s must be ≥ 0 (0 = no stitching)")
        if self.boundary_hysteresis_m < 0:
            raise ValueError("boundary_hysteresis_m must be ≥ 0")
        short, medium = self.dwell_thresholds_s
        if not 0 < short < medium:
            raise ValueError("dwell_thresholds_s must be two increasing durations > 0")
        if self.gone_after_s < self.stitch_window_s:
            raise ValueError("gone_after_s must be at least stitch_window_s")


@dataclass(frozen=True)
class TrackPoint:
    """One confirmed track at one instant: its tracker key (never reused), floor position and heading label."""

    track_key: int
    x_m: float
    y_m: float
    heading: str
    weight: float = 1.0  # how sure the tracker is that this is a person now, in [0, 1] (Track.presence_weight)
    confirmed: bool = True  # tentative and lost tracks count in presence by their weight, never in events


@dataclass
class Lineage:
    """One stitched track: where it was last, and its debounced state and arrival time per zone."""

    lineage_id: int
    last_seen_s: float
    x_m: float
    y_m: float
    tracks: set[int] = field(default_factory=set)
    inside: dict[str, bool] = field(default_factory=dict)
    arrived_s: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Observation:
    """A lineage at one instant: the zones it is in (debounced) and the crossings it made since the last one."""

    lineage_id: int
    point: TrackPoint
    zone_id: str | None  # the zone it stands in now (zones do not overlap), None outside every zone
    dwell: str  # DWELL_LABELS: time since it arrived in that zone
    entered: tuple[str, ...]
    exited: tuple[str, ...]


class Lineages:
    """Stitches tracks into lineages and follows each lineage's zone stays."""

    def __init__(self, zones: list[Zone], settings: LineageSettings) -> None:
        settings.validate()
        self.zones = zones
        self.settings = settings
        self._by_track: dict[int, Lineage] = {}
        self._lineages: dict[int, Lineage] = {}
        self._next_id = 0
        self.stitched = 0  # tracks that continued a lineage (a measure of fragmentation, no identity)

    def observe(self, stamp_s: float, points: Iterable[TrackPoint]) -> list[Observation]:
        points = list(points)
        present = {point.track_key for point in points}
        self._drop_gone(stamp_s)
        observations = []
        for point in points:
            lineage = self._by_track.get(point.track_key) or self._attach(stamp_s, point, present)
            lineage.last_seen_s, lineage.x_m, lineage.y_m = stamp_s, point.x_m, point.y_m
            observations.append(self._zones_of(stamp_s, lineage, point))
        return observations

    def _attach(self, stamp_s: float, point: TrackPoint, present: set[int]) -> Lineage:
        s = self.settings
        best, best_distance = None, math.inf
        for lineage in self._lineages.values():
            if lineage.tracks & present or stamp_s - lineage.last_seen_s > s.stitch_window_s:
                continue  # still carried by a track in this frame, or lost too long ago
            distance = math.hypot(point.x_m - lineage.x_m, point.y_m - lineage.y_m)
            if distance <= s.stitch_radius_m and distance < best_distance:
                best, best_distance = lineage, distance
        if best is None:
            best = Lineage(self._next_id, stamp_s, point.x_m, point.y_m)
            self._lineages[best.lineage_id] = best
            self._next_id += 1
        else:
            self.stitched += 1
        best.tracks.add(point.track_key)
        self._by_track[point.track_key] = best
        return best

    def _zones_of(self, stamp_s: float, lineage: Lineage, point: TrackPoint) -> Observation:
        standing_in, entered, exited = None, [], []
        for zone in self.zones:
            inside_now = zone.contains(point.x_m, point.y_m)
            previous = lineage.inside.get(zone.zone_id)
            state = inside_now
            near_edge = zone.boundary_distance(point.x_m, point.y_m) <= self.settings.boundary_hysteresis_m
            if previous is not None and previous != inside_now and near_edge:
                state = previous  # a crossing counts only once clear of the edge
            lineage.inside[zone.zone_id] = state
            if state and not previous:
                lineage.arrived_s[zone.zone_id] = stamp_s
            if previous is not None and previous != state:
                (entered if state else exited).append(zone.zone_id)
            if inside_now:
                standing_in = zone.zone_id
        arrived = lineage.arrived_s.get(standing_in, stamp_s) if standing_in else stamp_s
        return Observation(
            lineage.lineage_id, point, standing_in, self.dwell_class(stamp_s - arrived), tuple(entered), tuple(exited)
        )

    def dwell_class(self, stay_s: float) -> str:
        short, medium = self.settings.dwell_thresholds_s
        return DWELL_LABELS[0] if stay_s < short else DWELL_LABELS[1] if stay_s < medium else DWELL_LABELS[2]

    def _drop_gone(self, stamp_s: float) -> None:
        for lineage_id in [
            i for i, g in self._lineages.items() if stamp_s - g.last_seen_s > self.settings.gone_after_s
        ]:
            lineage = self._lineages.pop(lineage_id)
            for track in lineage.tracks:
                self._by_track.pop(track, None)

    def forget(self) -> int:
        """Drop every lineage (a data-subject request): what follows starts new lineages."""
        held = len(self._lineages)
        self._lineages.clear()
        self._by_track.clear()
        return held

    def held(self) -> int:
        return len(self._lineages)
