"""Per-zone, per-window statistics over distinct people, released with k-anonymity and DP."""
from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable

import numpy as np

from privacy_vision.core.continual import BinaryTreeCounter
from privacy_vision.core.anonymizer import DIRECTIONS_8, NO_DIRECTION, AnonymizedRecord
from privacy_vision.core.geometry import Zone
from privacy_vision.core.privacy import IntegerNoise, PrivacyLedger

DWELL_LABELS = ("short", "medium", "long")
DIRECTION_LABELS = (*DIRECTIONS_8, NO_DIRECTION)
# Each person changes each metric by at most 1 in a window (one dominant direction, one dwell bin, at
# most one entry and one exit), so each gets its own share of the window's ε at sensitivity 1.
METRICS = ("occupancy", "direction", "dwell", "entries", "exits")


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
    epsilon_split: tuple[float, ...] = (0.4, 0.4, 0.1, 0.05, 0.05)  # shares of ε, in METRICS order
    suppression_delta: float = 1e-5  # P[a group of exactly k passes the noisy threshold]

    def validate(self) -> None:
        if self.window_s <= 0:
            raise ValueError("window_s must be > 0")
        if self.k < 1:
            raise ValueError("k must be ≥ 1")
        if not self.epsilon > 0 or not math.isfinite(self.epsilon):
            raise ValueError("epsilon must be a finite number > 0")
        if self.daily_epsilon_cap < self.epsilon:
            raise ValueError("daily_epsilon_cap must be ≥ epsilon (otherwise nothing can ever be released)")
        short, medium = self.dwell_thresholds_s
        if not 0 < short < medium:
            raise ValueError("dwell_thresholds_s must be two increasing durations > 0")
        if self.boundary_hysteresis_m < 0:
            raise ValueError("boundary_hysteresis_m must be ≥ 0")
        if self.footfall_epsilon_per_day < 0:
            raise ValueError("footfall_epsilon_per_day must be ≥ 0 (0 turns the daily footfall counter off)")
        if len(self.epsilon_split) != len(METRICS) or not all(w > 0 and math.isfinite(w) for w in self.epsilon_split):
            raise ValueError(f"epsilon_split must be {len(METRICS)} positive shares, one per metric {METRICS}")
        if not 0 < self.suppression_delta <= 0.01:
            raise ValueError("suppression_delta must be in (0, 0.01]: it is the chance that a group of exactly k is released")

    def metric_budgets(self) -> dict[str, tuple[float, float]]:
        """(ε, δ) of each metric: the split normalised to the window's ε and δ."""
        total = sum(self.epsilon_split)
        return {name: (self.epsilon * w / total, self.delta * w / total) for name, w in zip(METRICS, self.epsilon_split)}


@dataclass(frozen=True)
class ZoneStatistics:
    """One zone-window's statistics, true or released."""

    occupancy: int
    directions: tuple[int, ...]  # in DIRECTION_LABELS order
    dwell: tuple[int, ...]  # in DWELL_LABELS order
    entries: int
    exits: int

    @classmethod
    def empty(cls) -> "ZoneStatistics":
        return cls(0, (0,) * len(DIRECTION_LABELS), (0,) * len(DWELL_LABELS), 0, 0)


class ReleaseMechanism:
    """k-anonymity with a noisy threshold, DP noise per metric, then post-processing only.

    Guarantee per zone-window, privacy unit person-window: (ε, δ_mech + δ_supp)-DP. A group below k is
    never released (hard rule); a group at or above k is released only when its noisy occupancy reaches
    k + margin, where the margin makes P[release | exactly k people] ≤ δ_supp. That boundary (k-1 vs k
    people) is the only place the hard rule leaks, so it costs δ_supp and nothing else; above it the
    decision is a function of the DP output.
    """

    def __init__(self, settings: AggregatorSettings) -> None:
        settings.validate()
        self.settings = settings
        self.budgets = settings.metric_budgets()
        self.noise = {name: IntegerNoise(settings.mechanism, eps, delta) for name, (eps, delta) in self.budgets.items()}
        self.threshold = settings.k + self.noise["occupancy"].margin_for(settings.suppression_delta)
        self.delta = settings.delta + settings.suppression_delta

    def release(self, true: ZoneStatistics) -> ZoneStatistics | None:
        """The released statistics, or None when the group is suppressed."""
        noisy_occupancy = self.noise["occupancy"].count(true.occupancy)
        if true.occupancy < self.settings.k or noisy_occupancy < self.threshold:
            return None
        noisy_directions = self.noise["direction"].histogram(true.directions)
        noisy_dwell = self.noise["dwell"].histogram(true.dwell)
        occupancy, (directions, dwell) = consistent_counts(
            [(noisy_occupancy, self.noise["occupancy"].variance),
             (sum(noisy_directions), len(noisy_directions) * self.noise["direction"].variance),
             (sum(noisy_dwell), len(noisy_dwell) * self.noise["dwell"].variance)],
            [noisy_directions, noisy_dwell])
        return ZoneStatistics(occupancy, tuple(directions), tuple(dwell),
                              max(0, self.noise["entries"].count(true.entries)), max(0, self.noise["exits"].count(true.exits)))


def consistent_counts(estimates: list[tuple[int, float]], histograms: list[list[int]]) -> tuple[int, list[list[int]]]:
    """Post-processing of noisy outputs: one total from several unbiased estimates of it (inverse-variance
    weighted: the occupancy and the sums of the histograms over the same people), then each histogram
    projected onto {h ≥ 0, Σh = total} (least squares) and rounded keeping the sum."""
    weights = [1.0 / variance for _, variance in estimates]
    total = max(0, round(sum(w * value for w, (value, _) in zip(weights, estimates)) / sum(weights)))
    return total, [round_keeping_sum(project_to_simplex(np.asarray(h, dtype=float), total)) for h in histograms]


def project_to_simplex(values: np.ndarray, total: float) -> np.ndarray:
    """Euclidean projection onto {x ≥ 0, Σx = total} (Duchi et al. 2008). Hand-written: neither NumPy
    nor SciPy has it, and it is a sort and a cumulative sum."""
    if total <= 0:
        return np.zeros_like(values)
    ordered = np.sort(values)[::-1]
    cumulative = np.cumsum(ordered) - total
    ranks = np.arange(1, len(values) + 1)
    last = ranks[ordered - cumulative / ranks > 0][-1]
    return np.maximum(values - cumulative[last - 1] / last, 0.0)


def round_keeping_sum(values: np.ndarray) -> list[int]:
    """Integers with the same (integer) sum: floor, then the largest remainders get the rest."""
    floors = np.floor(values)
    missing = int(round(values.sum() - floors.sum()))
    order = np.argsort(-(values - floors), kind="stable")
    floors[order[:missing]] += 1
    return [int(v) for v in floors]


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
    delta: float  # the whole release's δ: the mechanism's plus the noisy threshold's
    k: int
    privacy_unit: str
    window_s: float
    epsilon_spent_today: float
    daily_epsilon_cap: float
    cumulative_footfall_today: int
    footfall_epsilon_per_day: float
    epsilon_by_metric: dict[str, float]
    suppression_delta: float
    release_threshold: int  # noisy occupancy needed for a release (k plus the δ margin)


@dataclass
class _DailyFootfall:
    """A zone's counter for one day, with the noisy threshold fixed when its ε and δ were charged."""

    counter: BinaryTreeCounter
    threshold: int
    true_total: int = 0


@dataclass
class _PersonInZone:
    first_seen_s: float
    last_seen_s: float
    directions: Counter = field(default_factory=Counter)
    entered: bool = False
    exited: bool = False


class ZoneWindowStatistics:
    """True per-zone statistics of consecutive windows, from anonymised records (no privacy applied)."""

    def __init__(self, zones: list[Zone], window_s: float, dwell_thresholds_s: tuple[float, float], boundary_hysteresis_m: float) -> None:
        self.zones = zones
        self.window_s = window_s
        self.dwell_thresholds_s = dwell_thresholds_s
        self.boundary_hysteresis_m = boundary_hysteresis_m
        self.window_start_s: float | None = None
        self._people: dict[str, dict[str, _PersonInZone]] = {zone.zone_id: {} for zone in zones}
        # (zone, privacy id) -> (inside with hysteresis, last stamp seen); pruned at window close
        self._inside: dict[tuple[str, str], tuple[bool, float]] = {}
        # (zone, privacy id) -> start of the continuous stay in the zone; outlives windows
        self._zone_since: dict[tuple[str, str], float] = {}

    def observe(self, stamp_s: float, records: Iterable[AnonymizedRecord]) -> list[tuple[float, float, dict[str, ZoneStatistics]]]:
        """Add one frame's records; returns (start, end, statistics per zone) of each window this stamp closed."""
        closed = []
        if self.window_start_s is None:
            self.window_start_s = math.floor(stamp_s / self.window_s) * self.window_s
        while stamp_s >= self.window_start_s + self.window_s:
            closed.append(self.close_window())
        for record in records:
            for zone in self.zones:
                self._observe_in_zone(zone, stamp_s, record)
        return closed

    def _observe_in_zone(self, zone: Zone, stamp_s: float, record: AnonymizedRecord) -> None:
        key = (zone.zone_id, record.privacy_id)
        inside_now = zone.contains(record.cell_x_m, record.cell_y_m)
        previous = self._inside.get(key, (None, 0.0))[0]
        state = inside_now
        if previous is not None and previous != inside_now:  # a crossing counts only once clear of the edge
            if zone.boundary_distance(record.cell_x_m, record.cell_y_m) <= self.boundary_hysteresis_m:
                state = previous
        self._inside[key] = (state, stamp_s)
        people = self._people[zone.zone_id]
        if previous is not None and previous != state:
            person = people.setdefault(record.privacy_id, _PersonInZone(stamp_s, stamp_s))
            if state:
                person.entered = True
            else:
                person.exited = True
        if not state:
            self._zone_since.pop(key, None)
        elif key not in self._zone_since:
            # Seen crossing in: the stay starts now. First seen already inside (a new track, or an ID
            # renewed by key rotation): the stay started when the track did, so rotation does not cut
            # dwell short.
            since = record.present_since_s if previous is None and record.present_since_s is not None else stamp_s
            self._zone_since[key] = min(since, stamp_s)
        # Presence (occupancy, heading) is where the person is now; the hysteresis only debounces the
        # crossings, so someone standing just inside the edge still counts as there.
        if inside_now:
            person = people.setdefault(record.privacy_id, _PersonInZone(stamp_s, stamp_s))
            person.last_seen_s = stamp_s
            person.directions[record.direction] += 1

    def close_window(self) -> tuple[float, float, dict[str, ZoneStatistics]]:
        start = self.window_start_s if self.window_start_s is not None else 0.0
        end = start + self.window_s
        statistics = {zone.zone_id: self._statistics(zone.zone_id) for zone in self.zones}
        self._people = {zone.zone_id: {} for zone in self.zones}
        self._inside = {key: value for key, value in self._inside.items() if value[1] >= start}
        self._zone_since = {key: value for key, value in self._zone_since.items() if key in self._inside}
        self.window_start_s = end
        return start, end, statistics

    def _statistics(self, zone_id: str) -> ZoneStatistics:
        people = self._people[zone_id]
        present = {pid: p for pid, p in people.items() if p.directions}
        directions = Counter(p.directions.most_common(1)[0][0] for p in present.values())
        short, medium = self.dwell_thresholds_s
        dwell = Counter(
            "short" if d < short else "medium" if d < medium else "long"
            for d in (p.last_seen_s - self._zone_since.get((zone_id, pid), p.first_seen_s) for pid, p in present.items())
        )
        return ZoneStatistics(
            occupancy=len(present),
            directions=tuple(directions.get(label, 0) for label in DIRECTION_LABELS),
            dwell=tuple(dwell.get(label, 0) for label in DWELL_LABELS),
            entries=sum(p.entered for p in people.values()),
            exits=sum(p.exited for p in people.values()),
        )

    def open_window_people(self) -> dict[str, int]:
        return {zone_id: len(people) for zone_id, people in self._people.items()}

    def purge(self) -> None:
        """Drop all per-person state (forget request)."""
        self._people = {zone.zone_id: {} for zone in self.zones}
        self._inside.clear()
        self._zone_since.clear()


class ZoneWindowAggregator:
    """Window statistics released through the k rule and DP noise, charged to the daily ledger."""

    def __init__(self, zones: list[Zone], settings: AggregatorSettings, ledger: PrivacyLedger) -> None:
        self.zones = zones
        self.ledger = ledger
        self.windows = ZoneWindowStatistics(zones, settings.window_s, settings.dwell_thresholds_s, settings.boundary_hysteresis_m)
        self.reconfigure(settings)
        self.cap_reached_day: str | None = None
        self._footfall: dict[tuple[str, str], _DailyFootfall] = {}

    def reconfigure(self, settings: AggregatorSettings) -> None:
        """Apply new settings (validated first); the open window's people are kept."""
        self.mechanism = ReleaseMechanism(settings)
        self.settings = settings
        self.ledger.daily_epsilon_cap = settings.daily_epsilon_cap
        self.windows.window_s = settings.window_s
        self.windows.dwell_thresholds_s = settings.dwell_thresholds_s
        self.windows.boundary_hysteresis_m = settings.boundary_hysteresis_m

    @property
    def window_start_s(self) -> float | None:
        return self.windows.window_start_s

    def observe(self, stamp_s: float, records: Iterable[AnonymizedRecord]) -> list[Release]:
        """Add one frame's records; returns the releases of any windows that this stamp closed."""
        return [release for closed in self.windows.observe(stamp_s, records) for release in self._release_window(*closed)]

    def close_window(self) -> list[Release]:
        """Release every zone of the current window (also used to flush on shutdown)."""
        if self.windows.window_start_s is None:
            return []
        return self._release_window(*self.windows.close_window())

    def _release_window(self, start: float, end: float, statistics: dict[str, ZoneStatistics]) -> list[Release]:
        return [r for zone in self.zones if (r := self._release_zone(zone.zone_id, start, end, statistics[zone.zone_id])) is not None]

    def _release_zone(self, zone_id: str, start: float, end: float, true: ZoneStatistics) -> Release | None:
        s = self.settings
        release_id = str(uuid.uuid4())
        day = datetime.fromtimestamp(start, tz=timezone.utc).strftime("%Y-%m-%d")
        decision = self.ledger.try_spend(day, release_id, s.epsilon, self.mechanism.delta, time.time())
        if not decision.granted:
            self.cap_reached_day = day
            return None
        footfall = self._footfall_today(zone_id, day, true.entries)
        released = self.mechanism.release(true)
        shown = released or ZoneStatistics.empty()
        return Release(
            release_id=release_id,
            zone_id=zone_id,
            window_start_s=start,
            window_end_s=end,
            suppressed=released is None,
            occupancy=shown.occupancy,
            direction_counts=dict(zip(DIRECTION_LABELS, shown.directions)),
            dwell_counts=dict(zip(DWELL_LABELS, shown.dwell)),
            entries=shown.entries,
            exits=shown.exits,
            mechanism=s.mechanism,
            epsilon=s.epsilon,
            delta=self.mechanism.delta,
            k=s.k,
            privacy_unit=s.privacy_unit,
            window_s=s.window_s,
            epsilon_spent_today=self.ledger.spent(day),
            daily_epsilon_cap=decision.cap,
            cumulative_footfall_today=footfall,
            footfall_epsilon_per_day=s.footfall_epsilon_per_day,
            epsilon_by_metric={name: eps for name, (eps, _) in self.mechanism.budgets.items()},
            suppression_delta=s.suppression_delta,
            release_threshold=self.mechanism.threshold,
        )

    def _footfall_today(self, zone_id: str, day: str, entries: int) -> int:
        """Advance the zone's daily counter by this window's entries; its ε is charged once per day."""
        epsilon = self.settings.footfall_epsilon_per_day
        if not epsilon:
            return 0
        footfall = self._footfall.get((zone_id, day))
        if footfall is None or footfall.counter.steps >= footfall.counter.horizon:
            charge = self.ledger.try_spend(day, f"footfall-{zone_id}-{day}-{uuid.uuid4()}", epsilon, self.settings.suppression_delta, time.time())
            if not charge.granted:
                self.cap_reached_day = day
                return 0
            counter = BinaryTreeCounter(math.ceil(86400 / self.settings.window_s), epsilon)
            footfall = _DailyFootfall(counter, self.settings.k + counter.margin_for(self.settings.suppression_delta))
            self._footfall = {key: value for key, value in self._footfall.items() if key[1] == day}
            self._footfall[(zone_id, day)] = footfall
        noisy = footfall.counter.add(entries)
        footfall.true_total += entries
        # The k rule of the windows with its own noisy threshold: a total below k is never released, and
        # one of exactly k passes at any step of the day with probability ≤ suppression_delta.
        return noisy if footfall.true_total >= self.settings.k and noisy >= footfall.threshold else 0

    def open_window_people(self) -> dict[str, int]:
        return self.windows.open_window_people()

    def purge(self) -> None:
        """Drop all per-person state of the open window (forget request)."""
        self.windows.purge()
