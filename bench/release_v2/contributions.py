"""Per-track contribution bounding and the true per-cell totals it yields (no noise here).

The release grid is public: zones × periods of three tiers (a short window, the hour, the UTC day).
The privacy unit is the track-day, so each track's contribution must be bounded *before* noise: at most
L cells per tier per day, at most one person per cell, one heading and one dwell value per cell. That
bound needs the track's identity across key rotation, so it lives here, in the node that holds the
track (the anonymizer), and what leaves it is only per-cell totals: no identifier, no start time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from privacy_vision.core.anonymizer import DIRECTIONS_8, NO_DIRECTION, AnonymizedRecord

if TYPE_CHECKING:  # annotations only: the ingest reads this module's tiers and labels without OpenCV or Shapely
    from privacy_vision.core.geometry import Zone

TIERS = ("window", "hour", "day")
GROUP_TIER = "group"  # strict mode: a zone's pending people over a variable period, released once large enough
HOUR_S = 3600.0
DAY_S = 86400.0
NESTED_IN = {"window": "hour", "hour": "day"}  # admission to a cell needs admission to the enclosing coarser cell
SITE_ZONE = "site"  # the day tier also counts the whole site (inside any zone)
DWELL_LABELS = ("short", "medium", "long")
DIRECTION_LABELS = (*DIRECTIONS_8, NO_DIRECTION)
# A track absent this long is over (the tracker drops lost tracks after seconds and never reuses an ID).
TRACK_GONE_AFTER_S = 60.0


@dataclass
class ContributionSettings:
    """The per-track contribution bound of the release grid (cells per tier and day, window, dwell bins)."""

    window_s: float = 900.0  # the short tier; it must divide the hour so that windows nest in hours
    cells_per_day: tuple[int, int, int] = (4, 3, 6)  # L: cells a track may count in per UTC day, per tier (TIERS order)
    dwell_thresholds_s: tuple[float, float] = (30.0, 120.0)
    boundary_hysteresis_m: float = 0.25
    groups_per_day: int = 0  # strict mode: pending groups a track may join per UTC day (0 = no group totals)

    def validate(self) -> None:
        if not 0 < self.window_s <= HOUR_S or not math.isclose(
            HOUR_S / self.window_s, round(HOUR_S / self.window_s), abs_tol=1e-9
        ):
            raise ValueError(f"window_s must divide an hour (e.g. 900, 600, 300, 60), got {self.window_s:g}")
        if len(self.cells_per_day) != len(TIERS) or not all(isinstance(n, int) and n >= 1 for n in self.cells_per_day):
            raise ValueError(
                f"cells_per_day must be {len(TIERS)} integers ≥ 1 (L per tier: {', '.join(TIERS)}), got {list(self.cells_per_day)}"
            )
        short, medium = self.dwell_thresholds_s
        if not 0 < short < medium:
            raise ValueError("dwell_thresholds_s must be two increasing durations > 0")
        if self.boundary_hysteresis_m < 0:
            raise ValueError("boundary_hysteresis_m must be ≥ 0")
        if not isinstance(self.groups_per_day, int) or self.groups_per_day < 0:
            raise ValueError(f"groups_per_day must be an integer ≥ 0 (0 = strict mode off), got {self.groups_per_day}")

    def period_s(self, tier: str) -> float:
        return {"window": self.window_s, "hour": HOUR_S, "day": DAY_S}[tier]

    def bound(self, tier: str) -> int:
        return self.cells_per_day[TIERS.index(tier)]


@dataclass(frozen=True)
class CellTotals:
    """True totals of one cell (zone × period of a tier) over the tracks admitted to it."""

    tier: str
    zone_id: str
    period_start_s: float
    period_end_s: float
    complete: bool  # False for a period cut short by a shutdown
    occupancy: int
    directions: tuple[int, ...]  # DIRECTION_LABELS order, one heading per track
    dwell: tuple[int, ...]  # DWELL_LABELS order, one dwell value per track
    entries: int
    exits: int


@dataclass
class _Presence:
    """One track in one cell: at most one unit of each metric comes out of it."""

    directions: Counter = field(default_factory=Counter)
    longest_stay_s: float = 0.0
    entered: bool = False
    exited: bool = False


@dataclass
class _Group:
    """Strict mode: the tracks that joined a zone's pending group since it (re)started."""

    start_s: float
    members: set[int] = field(default_factory=set)


@dataclass
class _Track:
    day: int
    last_seen_s: float
    admitted: dict[str, set[tuple[str, float]]] = field(default_factory=lambda: {tier: set() for tier in TIERS})
    earlier: tuple[int, ...] = (
        0,
        0,
        0,
        0,
    )  # cells counted today before the track's state was retired (TIERS order, then groups)
    groups: int = 0  # pending groups joined today
    inside: dict[str, bool] = field(default_factory=dict)  # debounced (hysteresis) state per zone
    stay_since_s: dict[str, float] = field(default_factory=dict)


class ContributionBounder:
    """Admits each track to at most L cells per tier per UTC day and accumulates the cells' true totals.

    Admission is nested (NESTED_IN): a track counts in a window cell only if it counts in the enclosing hour
    cell, and in an hour cell only if it counts in the zone's day cell, so people of a window shown as "< k"
    are still counted by the hour. Memory only; keyed by tracker ID,
    which the tracker never reuses, so key rotation does not reset a track's count.
    """

    def __init__(self, zones: list[Zone], settings: ContributionSettings) -> None:
        settings.validate()
        self.zones = zones
        self.settings = settings
        self._tracks: dict[int, _Track] = {}
        self._excluded: tuple[int, set[int]] = (-1, set())  # (day, tracks that were live at a forget request)
        # Tracks unseen for TRACK_GONE_AFTER_S keep only their cell counts until midnight, so that a track that
        # does come back cannot start a fresh budget (its open-cell presences still prevent a double count).
        self._retired: dict[int, tuple[int, tuple[int, ...]]] = {}
        self._open: dict[str, tuple[float, dict[str, dict[int, _Presence]]]] = {}
        self._groups: dict[str, _Group] = {}  # strict mode only; restarted by close_group() and at midnight

    def check(self, settings: ContributionSettings) -> None:
        """ValueError when reconfigure(settings) would refuse them now; changes nothing."""
        settings.validate()
        if settings.window_s != self.settings.window_s and "window" in self._open:
            raise ValueError("window_s cannot change while a window is open: flush first")

    def reconfigure(self, settings: ContributionSettings) -> None:
        """New bounds apply from now on; counts already made today still count against them."""
        self.check(settings)
        self.settings = settings
        if not settings.groups_per_day:
            self._groups.clear()

    def observe(self, stamp_s: float, records: Iterable[tuple[int, AnonymizedRecord]]) -> list[CellTotals]:
        """Add one frame's (track ID, record) pairs; returns the totals of every cell this stamp closed."""
        closed = self._advance(stamp_s)
        day = int(stamp_s // DAY_S)
        if self._excluded[0] != day:
            self._excluded = (day, set())
            self._retired = {}
        for track_id in [tid for tid, t in self._tracks.items() if stamp_s - t.last_seen_s > TRACK_GONE_AFTER_S]:
            track = self._tracks.pop(track_id)
            self._retired[track_id] = (track.day, self._counts(track))
        for track_id, record in records:
            if track_id in self._excluded[1]:
                continue
            track = self._tracks.get(track_id)
            if track is None or track.day != day:
                retired_day, earlier = self._retired.pop(track_id, (day, _Track.earlier))
                track = self._tracks[track_id] = _Track(
                    day, stamp_s, earlier=earlier if retired_day == day else _Track.earlier
                )
            track.last_seen_s = stamp_s
            in_any_zone = False
            for zone in self.zones:
                in_any_zone |= self._observe_in_zone(track_id, track, zone, stamp_s, record)
            if in_any_zone:
                self._presence(track_id, track, "day", SITE_ZONE)
        return closed

    def _observe_in_zone(
        self, track_id: int, track: _Track, zone: Zone, stamp_s: float, record: AnonymizedRecord
    ) -> bool:
        inside_now = zone.contains(record.cell_x_m, record.cell_y_m)
        previous = track.inside.get(zone.zone_id)
        state = inside_now
        near_edge = zone.boundary_distance(record.cell_x_m, record.cell_y_m) <= self.settings.boundary_hysteresis_m
        if (
            previous is not None and previous != inside_now and near_edge
        ):  # a crossing counts only once clear of the edge
            state = previous
        track.inside[zone.zone_id] = state
        if state:
            track.stay_since_s.setdefault(zone.zone_id, stamp_s)
        else:
            track.stay_since_s.pop(zone.zone_id, None)
        crossed = previous is not None and previous != state
        # Presence (occupancy, heading, dwell) is where the person is now; the hysteresis only debounces
        # crossings, so someone standing just inside the edge still counts as there.
        if inside_now:
            day = self._presence(track_id, track, "day", zone.zone_id)
            if day is not None:
                day.directions[record.direction] += 1
        if inside_now or crossed:
            hour = self._presence(track_id, track, "hour", zone.zone_id)
            if hour is not None:
                if inside_now:
                    hour.directions[record.direction] += 1
                    hour.longest_stay_s = max(
                        hour.longest_stay_s, stamp_s - track.stay_since_s.get(zone.zone_id, stamp_s)
                    )
                    window = self._presence(track_id, track, "window", zone.zone_id)
                    if window is not None:
                        window.directions[record.direction] += 1
                if crossed:
                    hour.entered |= state
                    hour.exited |= not state
        if inside_now:
            self._join_group(track_id, track, zone.zone_id)
        return inside_now

    def _join_group(self, track_id: int, track: _Track, zone_id: str) -> None:
        group = self._groups.get(zone_id)
        if (
            group is None
            or track_id in group.members
            or track.groups + track.earlier[len(TIERS)] >= self.settings.groups_per_day
        ):
            return
        group.members.add(track_id)
        track.groups += 1

    def close_group(self, zone_id: str, start_s: float, end_s: float) -> bool:
        """The aggregator released the zone's group [start_s, end_s]: a new group starts at end_s. Tracks still
        in the zone join it as a new group (one more of their groups_per_day). False for an unknown group."""
        group = self._groups.get(zone_id)
        if group is None or abs(group.start_s - start_s) > 1e-6:  # periods travel as ROS stamps (nanoseconds)
            return False
        self._groups[zone_id] = _Group(end_s)
        return True

    def _group_totals(self, end_s: float, complete: bool) -> list[CellTotals]:
        empty = tuple(0 for _ in DIRECTION_LABELS), tuple(0 for _ in DWELL_LABELS)
        return [
            CellTotals(GROUP_TIER, zone_id, group.start_s, end_s, complete, len(group.members), *empty, 0, 0)
            for zone_id, group in self._groups.items()
        ]

    def _presence(self, track_id: int, track: _Track, tier: str, zone_id: str) -> _Presence | None:
        """The track's presence in the open cell of this tier, admitting it if its budget allows and it counts in
        the enclosing cell of the coarser tier (so a coarser count is never below a finer one)."""
        start, cells = self._open[tier]
        admitted = track.admitted[tier]
        if (zone_id, start) not in admitted:
            coarser = NESTED_IN.get(tier)
            if coarser and (zone_id, self._open[coarser][0]) not in track.admitted[coarser]:
                return None
            if len(admitted) + track.earlier[TIERS.index(tier)] >= self.settings.bound(tier):
                return None
            admitted.add((zone_id, start))
        return cells[zone_id].setdefault(track_id, _Presence())

    @staticmethod
    def _counts(track: _Track) -> tuple[int, ...]:
        cells = (len(track.admitted[tier]) + earlier for tier, earlier in zip(TIERS, track.earlier))
        return (*cells, track.groups + track.earlier[len(TIERS)])

    def _advance(self, stamp_s: float) -> list[CellTotals]:
        closed = []
        for tier in TIERS:
            period = self.settings.period_s(tier)
            start = math.floor(stamp_s / period) * period
            if tier in self._open and stamp_s >= self._open[tier][0] + period:
                end = self._open[tier][0] + period
                closed.extend(self._close(tier, complete=True))
                if tier == "window":  # each pending group is offered to the aggregator's test at every window end
                    closed.extend(self._group_totals(end, complete=True))
                elif tier == "day":  # groups never span midnight: the ledger and the bound are per UTC day
                    self._groups.clear()
            if tier not in self._open:
                zones = [zone.zone_id for zone in self.zones] + ([SITE_ZONE] if tier == "day" else [])
                self._open[tier] = (start, {zone_id: {} for zone_id in zones})
        if self.settings.groups_per_day and not self._groups:
            self._groups = {zone.zone_id: _Group(self._open["window"][0]) for zone in self.zones}
        return closed

    def _close(self, tier: str, complete: bool) -> list[CellTotals]:
        start, cells = self._open.pop(tier)
        end = start + self.settings.period_s(tier)
        return [self._totals(tier, zone_id, start, end, complete, people) for zone_id, people in cells.items()]

    def _totals(
        self, tier: str, zone_id: str, start: float, end: float, complete: bool, people: dict[int, _Presence]
    ) -> CellTotals:
        present = [p for p in people.values() if p.directions]
        headings = Counter(p.directions.most_common(1)[0][0] for p in present)
        short, medium = self.settings.dwell_thresholds_s
        dwell = Counter(
            "short" if p.longest_stay_s < short else "medium" if p.longest_stay_s < medium else "long" for p in present
        )
        return CellTotals(
            tier,
            zone_id,
            start,
            end,
            complete,
            len(present),
            tuple(headings.get(label, 0) for label in DIRECTION_LABELS),
            tuple(dwell.get(label, 0) for label in DWELL_LABELS),
            sum(p.entered for p in people.values()),
            sum(p.exited for p in people.values()),
        )

    def flush(self) -> list[CellTotals]:
        """Close every open cell now (shutdown): partial periods are released, marked incomplete; pending groups
        get a last test."""
        groups = (
            self._group_totals(self._open["window"][0] + self.settings.window_s, complete=False)
            if "window" in self._open
            else []
        )
        return [totals for tier in TIERS if tier in self._open for totals in self._close(tier, complete=False)] + groups

    def forget(self) -> int:
        """Drop all per-track state. Tracks live now may not count again today: forgetting their counts
        must not hand them a fresh budget (only their tracker IDs are kept, until midnight)."""
        live = set(self._tracks) | set(self._retired)
        for _, cells in self._open.values():
            for people in cells.values():
                live |= set(people)
                people.clear()
        for group in self._groups.values():
            live |= group.members
            group.members.clear()
        day = int(self._open["day"][0] // DAY_S) if "day" in self._open else self._excluded[0]
        self._excluded = (day, (self._excluded[1] if day == self._excluded[0] else set()) | live)
        self._tracks.clear()
        self._retired.clear()
        return len(live)

    def tracks_held(self) -> int:
        return len(self._tracks)
