"""Identity-free presence integration: occupancy, heading and dwell as people present over time.

At every tick (multiples of `Grid.tick_s`) the bodies of the latest frame are taken as they stand. Simultaneous
tracks closer than `same_body_radius_m` on the floor count once (floor non-maximum suppression by weight), each
remaining body adds `round(weight × weight_steps)` ≤ weight_steps units to exactly one bin (heading × dwell class)
of the zone it stands in (zones never overlap), and nothing at all is kept about who it was. So, provided one
person's simultaneous tracks lie within that radius of each other (the measured assumption the DPIA states), a
person adds at most `weight_steps` units per tick whatever the tracker does over time (fragments, reused IDs,
restarts, key rotation), and a presence of D seconds changes each tier's cells by at most
D / tick_s × weight_steps units in L1. Hours are sums of their windows and days sums of their hours, exactly.

Time is the frames' own (media time for recordings); a frame's state holds for the ticks up to `max_frame_gap_s`
after it, later ticks are unobserved. Cells close on the clock (`advance`), so an outage still closes its cells,
each with the ticks actually observed. A process that starts mid-period opens a *segment* of the period from its
first tick, and `flush` ends every open segment at shutdown: the durable store releases each span of time once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from privacy_vision.core.geometry import Zone
from privacy_vision.core.release.grid import DWELL_LABELS, HEADING_LABELS, TIERS, Grid

BINS = len(HEADING_LABELS) * len(DWELL_LABELS)


@dataclass(frozen=True)
class PresenceSettings:
    """How presence is sampled: the same-body radius, how long a frame holds, the weight resolution."""

    same_body_radius_m: float = 0.3  # simultaneous tracks closer than this on the floor are one body
    max_frame_gap_s: float = 2.0  # a frame's bodies hold for the ticks this long after it; later ticks are unobserved
    weight_steps: int = 10  # units one body adds per tick at weight 1 (the weight's resolution)

    def validate(self) -> None:
        if self.same_body_radius_m < 0:
            raise ValueError("same_body_radius_m must be ≥ 0")
        if not self.max_frame_gap_s > 0:
            raise ValueError("max_frame_gap_s must be > 0")
        if not isinstance(self.weight_steps, int) or not 1 <= self.weight_steps <= 1000:
            raise ValueError(f"weight_steps must be an integer from 1 to 1000, got {self.weight_steps}")


@dataclass(frozen=True)
class Body:
    """One track's position at one instant as presence takes it: no identity, only where, which bin and how sure."""

    x_m: float
    y_m: float
    zone_id: str | None
    heading: str  # HEADING_LABELS
    dwell: str  # DWELL_LABELS
    weight: float = 1.0  # in [0, 1]


@dataclass(frozen=True)
class PresenceTotals:
    """True presence of one zone over one segment of one tier's period: units per (heading, dwell) bin."""

    tier: str
    zone_id: str
    period_start_s: float
    segment_start_s: float
    segment_end_s: float
    observed_ticks: int  # ticks of the segment at which a frame held (the rest were unobserved)
    bins: tuple[int, ...]  # heading-major: HEADING_LABELS[i], DWELL_LABELS[j] at i * len(DWELL_LABELS) + j

    @property
    def units(self) -> int:
        return sum(self.bins)


def one_per_body(bodies: Iterable[Body], radius_m: float) -> list[Body]:
    """Floor non-maximum suppression: the heaviest body first, any body within radius_m of a kept one is dropped.
    Hand-written: a dozen points per frame, and no library offers NMS on points with a weight order."""
    kept: list[Body] = []
    for body in sorted(bodies, key=lambda b: -b.weight):
        if all(math.hypot(body.x_m - k.x_m, body.y_m - k.y_m) >= radius_m for k in kept):
            kept.append(body)
    return kept


@dataclass
class _Open:
    """One tier's open segment: its period, where the segment began, and per-zone units so far."""

    period_start: int  # tick index
    segment_start: int
    observed: int
    units: np.ndarray  # zones × BINS


class PresenceIntegrator:
    """Integrates bodies over ticks into window cells, rolls windows into hours and hours into days."""

    def __init__(self, zones: list[Zone], grid: Grid, settings: PresenceSettings, start_s: float) -> None:
        grid.validate()
        settings.validate()
        self.zones, self.grid, self.settings = zones, grid, settings
        self._zone_index = {zone.zone_id: i for i, zone in enumerate(zones)}
        self._next = math.ceil(start_s / grid.tick_s - 1e-9)  # the next tick index to integrate
        self._state_stamp: float | None = None
        self._state = np.zeros((len(zones), BINS), dtype=np.int64)
        self._open: dict[str, _Open] = {}
        self.unobserved_ticks = 0

    @property
    def frontier_s(self) -> float:
        """Every tick before this instant has been integrated (and may already be released)."""
        return self._next * self.grid.tick_s

    def observe(self, stamp_s: float, bodies: Iterable[Body]) -> list[PresenceTotals]:
        """A frame: ticks before it are integrated with the previous frame's bodies, then its bodies hold."""
        closed = self._integrate_until(stamp_s)
        self._state_stamp = stamp_s
        self._state = np.zeros_like(self._state)
        steps = self.settings.weight_steps
        for body in one_per_body(bodies, self.settings.same_body_radius_m):
            zone = self._zone_index.get(body.zone_id) if body.zone_id is not None else None
            units = round(min(max(body.weight, 0.0), 1.0) * steps)
            if zone is not None and units:
                bin_index = HEADING_LABELS.index(body.heading) * len(DWELL_LABELS) + DWELL_LABELS.index(body.dwell)
                self._state[zone, bin_index] += units
        return closed

    def advance(self, now_s: float) -> list[PresenceTotals]:
        """The clock moved on without a frame: integrate up to now_s - max_frame_gap_s (a frame still in flight may
        hold for the ticks after that) and close the cells that ended."""
        return self._integrate_until(now_s - self.settings.max_frame_gap_s)

    def flush(self, now_s: float) -> list[PresenceTotals]:
        """Shutdown: integrate up to now_s and end every open segment there (partial periods)."""
        closed = self._integrate_until(now_s)
        for tier in TIERS:  # windows roll into hours, hours into days
            if tier in self._open:
                closed.extend(self._close(tier, self._next))
        return closed

    def _integrate_until(self, until_s: float) -> list[PresenceTotals]:
        """Integrate every tick instant before until_s, a span at a time (a long outage costs one step per period)."""
        end = math.ceil(until_s / self.grid.tick_s - 1e-9)
        closed: list[PresenceTotals] = []
        window_ticks = self.grid.ticks("window")
        while self._next < end:
            closed.extend(self._roll(self._next))
            window = self._open["window"]
            stop = min(end, window.period_start + window_ticks)
            held = self._held_ticks(self._next, stop)
            window.observed += held
            window.units += held * self._state
            self.unobserved_ticks += stop - self._next - held
            self._next = stop
        if self._next == end and end % window_ticks == 0:
            closed.extend(self._roll(self._next))  # a period that just ended closes now, not at the next tick
        return closed

    def _held_ticks(self, start: int, stop: int) -> int:
        """Ticks in [start, stop) at which the current frame holds: at or after its stamp, within max_frame_gap_s."""
        if self._state_stamp is None:
            return 0
        tick = self.grid.tick_s
        first = max(start, math.ceil(self._state_stamp / tick - 1e-9))
        last = min(stop, math.ceil((self._state_stamp + self.settings.max_frame_gap_s) / tick - 1e-9))
        return max(0, last - first)

    def _roll(self, tick: int) -> list[PresenceTotals]:
        """Close the cells whose period ended before this tick and open the ones it begins."""
        closed: list[PresenceTotals] = []
        for tier in TIERS:
            cell = self._open.get(tier)
            if cell is not None and tick >= cell.period_start + self.grid.ticks(tier):
                closed.extend(self._close(tier, cell.period_start + self.grid.ticks(tier)))
        for tier in TIERS:
            if tier not in self._open:
                period = self.grid.ticks(tier)
                self._open[tier] = _Open(
                    tick // period * period, tick, 0, np.zeros((len(self.zones), BINS), dtype=np.int64)
                )
        return closed

    def _close(self, tier: str, end: int) -> list[PresenceTotals]:
        cell = self._open.pop(tier)
        coarser = TIERS[TIERS.index(tier) + 1] if tier != TIERS[-1] else None
        if coarser in self._open:  # nesting: an hour is the sum of its windows, a day of its hours
            self._open[coarser].observed += cell.observed
            self._open[coarser].units += cell.units
        if end <= cell.segment_start:
            return []
        tick = self.grid.tick_s
        return [
            PresenceTotals(
                tier,
                zone.zone_id,
                cell.period_start * tick,
                cell.segment_start * tick,
                end * tick,
                cell.observed,
                tuple(int(v) for v in cell.units[i]),
            )
            for i, zone in enumerate(self.zones)
        ]
