"""Per-zone, per-window statistics over distinct people, released with k-anonymity and DP."""
from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable

from privacy_vision.core.continual import BinaryTreeCounter
from privacy_vision.core.anonymizer import DIRECTIONS_8, NO_DIRECTION, AnonymizedRecord
from privacy_vision.core.geometry import Zone
from privacy_vision.core.privacy import IntegerNoise, PrivacyLedger

DWELL_LABELS = ("short", "medium", "long")
DIRECTION_LABELS = (*DIRECTIONS_8, NO_DIRECTION)
# occupancy, direction histogram, dwell histogram, entries, exits: each person changes each by at
# most 1 (one dominant direction, one dwell bin, at most one entry and one exit per window).
RELEASED_METRICS = 5


@dataclass
class AggregatorSettings:
    window_s: float = 60.0
    k: int = 5
    epsilon: float = 1.0
    delta: float = 0.0
    mechanism: str = "discrete_laplace"
    daily_epsilon_cap: float = 2000.0
    privacy_unit: str = "person-window"
    dwell_thresholds_s: tuple[float, float] = (30.0, 120.0)
    boundary_hysteresis_m: float = 0.25
    footfall_epsilon_per_day: float = 1.0  # ε of each zone's cumulative daily footfall counter (0 = off)

    def validate(self) -> None:
        if self.window_s <= 0:
            raise ValueError("window_s must be > 0")
        if self.k < 1:
            raise ValueError("k must be ≥ 1")
        if not self.epsilon > 0:
            raise ValueError("epsilon must be > 0")
        if self.daily_epsilon_cap < self.epsilon:
            raise ValueError("daily_epsilon_cap must be ≥ epsilon (otherwise nothing can ever be released)")
        short, medium = self.dwell_thresholds_s
        if not 0 < short < medium:
            raise ValueError("dwell_thresholds_s must be two increasing durations > 0")
        if self.boundary_hysteresis_m < 0:
            raise ValueError("boundary_hysteresis_m must be ≥ 0")
        if self.footfall_epsilon_per_day < 0:
            raise ValueError("footfall_epsilon_per_day must be ≥ 0 (0 turns the daily footfall counter off)")


@dataclass
class Release:
    """One zone-window release; the values are final and are never re-drawn."""

    release_id: str
    zone_id: str
    window_start_s: float
    window_end_s: float
    suppressed: bool
    occupancy: int
    direction_counts: dict[str, int]
    dwell_counts: dict[str, int]
    entries: int
    exits: int
    mechanism: str
    epsilon: float
    delta: float
    k: int
    privacy_unit: str
    window_s: float
    epsilon_spent_today: float
    daily_epsilon_cap: float
    cumulative_footfall_today: int
    footfall_epsilon_per_day: float


@dataclass
class _PersonInZone:
    first_seen_s: float
    last_seen_s: float
    directions: Counter = field(default_factory=Counter)
    entered: bool = False
    exited: bool = False


class ZoneWindowAggregator:
    """Accumulates anonymised records into the current window and releases each zone at its end."""

    def __init__(self, zones: list[Zone], settings: AggregatorSettings, ledger: PrivacyLedger) -> None:
        self.zones = zones
        self.ledger = ledger
        self.reconfigure(settings)
        self.window_start_s: float | None = None
        self._people: dict[str, dict[str, _PersonInZone]] = {zone.zone_id: {} for zone in zones}
        # (zone, privacy id) -> (inside with hysteresis, last stamp seen); pruned at window close
        self._inside: dict[tuple[str, str], tuple[bool, float]] = {}
        self.cap_reached_day: str | None = None
        self._footfall: dict[tuple[str, str], BinaryTreeCounter] = {}
        self._footfall_true: dict[tuple[str, str], int] = {}

    def reconfigure(self, settings: AggregatorSettings) -> None:
        """Apply new settings (validated first); the open window's people are kept."""
        settings.validate()
        self.noise = IntegerNoise(settings.mechanism, settings.epsilon / RELEASED_METRICS, settings.delta / RELEASED_METRICS)
        self.settings = settings
        self.ledger.daily_epsilon_cap = settings.daily_epsilon_cap

    def observe(self, stamp_s: float, records: Iterable[AnonymizedRecord]) -> list[Release]:
        """Add one frame's records; returns the releases of any windows that this stamp closed."""
        releases: list[Release] = []
        if self.window_start_s is None:
            self.window_start_s = math.floor(stamp_s / self.settings.window_s) * self.settings.window_s
        while stamp_s >= self.window_start_s + self.settings.window_s:
            releases.extend(self.close_window())
        for record in records:
            for zone in self.zones:
                self._observe_in_zone(zone, stamp_s, record)
        return releases

    def _observe_in_zone(self, zone: Zone, stamp_s: float, record: AnonymizedRecord) -> None:
        key = (zone.zone_id, record.privacy_id)
        inside_now = zone.contains(record.cell_x_m, record.cell_y_m)
        previous = self._inside.get(key, (None, 0.0))[0]
        far_from_edge = zone.boundary_distance(record.cell_x_m, record.cell_y_m) > self.settings.boundary_hysteresis_m
        state = inside_now if previous is None or far_from_edge else previous
        self._inside[key] = (state, stamp_s)
        people = self._people[zone.zone_id]
        if previous is not None and previous != state:
            person = people.setdefault(record.privacy_id, _PersonInZone(stamp_s, stamp_s))
            if state:
                person.entered = True
            else:
                person.exited = True
        if state:
            person = people.setdefault(record.privacy_id, _PersonInZone(stamp_s, stamp_s))
            person.last_seen_s = stamp_s
            person.directions[record.direction] += 1

    def close_window(self) -> list[Release]:
        """Release every zone of the current window (also used to flush on shutdown)."""
        if self.window_start_s is None:
            return []
        start = self.window_start_s
        end = start + self.settings.window_s
        releases = [r for zone in self.zones if (r := self._release_zone(zone.zone_id, start, end)) is not None]
        self._people = {zone.zone_id: {} for zone in self.zones}
        self._inside = {key: value for key, value in self._inside.items() if value[1] >= start}
        self.window_start_s = end
        return releases

    def _true_statistics(self, zone_id: str) -> tuple[int, Counter, Counter, int, int]:
        people = self._people[zone_id].values()
        present = [p for p in people if p.directions]
        directions = Counter(p.directions.most_common(1)[0][0] for p in present)
        short, medium = self.settings.dwell_thresholds_s
        dwell = Counter(
            "short" if d < short else "medium" if d < medium else "long"
            for d in (p.last_seen_s - p.first_seen_s for p in present)
        )
        entries = sum(p.entered for p in people)
        exits = sum(p.exited for p in people)
        return len(present), directions, dwell, entries, exits

    def _release_zone(self, zone_id: str, start: float, end: float) -> Release | None:
        s = self.settings
        release_id = str(uuid.uuid4())
        day = datetime.fromtimestamp(start, tz=timezone.utc).strftime("%Y-%m-%d")
        decision = self.ledger.try_spend(day, release_id, s.epsilon, s.delta, time.time())
        if not decision.granted:
            self.cap_reached_day = day
            return None
        occupancy, directions, dwell, entries, exits = self._true_statistics(zone_id)
        footfall = self._footfall_today(zone_id, day, entries)
        noisy_occupancy = self.noise.count(occupancy)
        # k-anonymity over distinct people: a group below k is never released, and a group at or
        # above k is released only when its *noisy* count also passes k, so the decision does not
        # reveal the exact count (it depends on the exact count only through the DP output).
        suppressed = occupancy < s.k or noisy_occupancy < s.k
        if suppressed:
            noisy_directions = [0] * len(DIRECTION_LABELS)
            noisy_dwell = [0] * len(DWELL_LABELS)
            noisy_entries = noisy_exits = 0
            noisy_occupancy = 0
        else:
            noisy_directions = self.noise.histogram([directions.get(label, 0) for label in DIRECTION_LABELS])
            noisy_dwell = self.noise.histogram([dwell.get(label, 0) for label in DWELL_LABELS])
            noisy_entries = self.noise.count(entries)
            noisy_exits = self.noise.count(exits)
        # Post-processing only: clamp to ≥ 0 (does not touch the privacy guarantee).
        return Release(
            release_id=release_id,
            zone_id=zone_id,
            window_start_s=start,
            window_end_s=end,
            suppressed=suppressed,
            occupancy=max(0, noisy_occupancy),
            direction_counts={label: max(0, v) for label, v in zip(DIRECTION_LABELS, noisy_directions)},
            dwell_counts={label: max(0, v) for label, v in zip(DWELL_LABELS, noisy_dwell)},
            entries=max(0, noisy_entries),
            exits=max(0, noisy_exits),
            mechanism=s.mechanism,
            epsilon=s.epsilon,
            delta=s.delta,
            k=s.k,
            privacy_unit=s.privacy_unit,
            window_s=s.window_s,
            epsilon_spent_today=self.ledger.spent(day),
            daily_epsilon_cap=decision.cap,
            cumulative_footfall_today=footfall,
            footfall_epsilon_per_day=s.footfall_epsilon_per_day,
        )

    def _footfall_today(self, zone_id: str, day: str, entries: int) -> int:
        """Advance the zone's daily counter by this window's entries; its ε is charged once per day."""
        epsilon = self.settings.footfall_epsilon_per_day
        if not epsilon:
            return 0
        counter = self._footfall.get((zone_id, day))
        if counter is None or counter.steps >= counter.horizon:
            charge = self.ledger.try_spend(day, f"footfall-{zone_id}-{day}-{uuid.uuid4()}", epsilon, 0.0, time.time())
            if not charge.granted:
                self.cap_reached_day = day
                return 0
            counter = BinaryTreeCounter(math.ceil(86400 / self.settings.window_s), epsilon)
            self._footfall = {key: value for key, value in self._footfall.items() if key[1] == day}
            self._footfall_true = {key: value for key, value in self._footfall_true.items() if key[1] == day}
            self._footfall[(zone_id, day)] = counter
        noisy = counter.add(entries)
        true = self._footfall_true[(zone_id, day)] = self._footfall_true.get((zone_id, day), 0) + entries
        # The same k rule as the windows: a running total of fewer than k people is not released.
        return noisy if true >= self.settings.k and noisy >= self.settings.k else 0

    def open_window_people(self) -> dict[str, int]:
        return {zone_id: len(people) for zone_id, people in self._people.items()}

    def purge(self) -> None:
        """Drop all per-person state of the open window (forget request)."""
        self._people = {zone.zone_id: {} for zone in self.zones}
        self._inside.clear()
