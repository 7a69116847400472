"""The anonymizer's side of the release model: true totals of the open segments, in memory only.

Tracks (floor positions, headings, weights, never-reused tracker keys) go in; closed segments' true totals come
out, for the aggregator to noise and release. Staff exclusion areas are cut first: a point inside one contributes
nothing to any metric. Nothing here is written to disk, and nothing that leaves carries an identifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from privacy_vision.core.geometry import Zone, overlapping_zones
from privacy_vision.core.release.events import EventCounter, EventSettings, EventTotals
from privacy_vision.core.release.grid import DWELL_LABELS, Context, Grid
from privacy_vision.core.release.lineage import Lineages, LineageSettings, TrackPoint
from privacy_vision.core.release.presence import Body, PresenceIntegrator, PresenceSettings, PresenceTotals
from privacy_vision.core.release.strict import GroupTotals, PendingGroups

Totals = PresenceTotals | EventTotals | GroupTotals


@dataclass(frozen=True)
class TotalsSettings:
    """Everything the anonymizer enforces before noise: grid, presence sampling, stitching, bounds."""

    grid: Grid = field(default_factory=Grid)
    presence: PresenceSettings = field(default_factory=PresenceSettings)
    lineage: LineageSettings = field(default_factory=LineageSettings)
    events: EventSettings = field(default_factory=EventSettings)
    groups_per_day: int = 0  # strict mode: groups one lineage may join per day (0 = no groups formed)

    def validate(self) -> None:
        self.grid.validate()
        self.presence.validate()
        self.lineage.validate()
        self.events.validate()
        if not isinstance(self.groups_per_day, int) or self.groups_per_day < 0:
            raise ValueError(f"groups_per_day must be an integer ≥ 0 (0 = strict mode off), got {self.groups_per_day}")

    @classmethod
    def from_values(
        cls,
        window_s: float,
        tick_s: float,
        weight_steps: int,
        same_body_radius_m: float,
        max_frame_gap_s: float,
        stitch_radius_m: float,
        stitch_window_s: float,
        boundary_hysteresis_m: float,
        dwell_thresholds_s: tuple[float, float],
        zones_per_day: int,
        groups_per_day: int,
    ) -> TotalsSettings:
        """From the flat parameter names the anonymizer node declares."""
        return cls(
            Grid(window_s, tick_s),
            PresenceSettings(same_body_radius_m, max_frame_gap_s, weight_steps),
            LineageSettings(stitch_radius_m, stitch_window_s, boundary_hysteresis_m, tuple(dwell_thresholds_s)),
            EventSettings(zones_per_day),
            groups_per_day,
        )

    @property
    def context(self) -> Context:
        return Context(self.grid, self.presence.weight_steps, self.events.zones_per_day, self.groups_per_day)


class TrueTotals:
    """Lineages, presence, events and strict-mode groups of one zone layout, fed frame by frame."""

    def __init__(self, zones: list[Zone], exclusions: list[Zone], settings: TotalsSettings, start_s: float) -> None:
        if overlapping := overlapping_zones(zones):
            raise ValueError(
                f"zones {overlapping} overlap: a person there would count twice at one instant; make them disjoint"
            )
        settings.validate()
        self.zones, self.exclusions, self.settings, self.start_s = zones, exclusions, settings, start_s
        self.lineages = Lineages(zones, settings.lineage)
        self.presence = PresenceIntegrator(zones, settings.grid, settings.presence, start_s)
        self.events = EventCounter(zones, settings.events, start_s, settings.presence.max_frame_gap_s)
        self.groups = self._new_groups(settings, start_s)

    def observe(self, stamp_s: float, points: list[TrackPoint]) -> list[Totals]:
        """One frame's tracks: confirmed ones are stitched into lineages (events, dwell); every track counts in
        presence by its weight (tentative and lost ones too: that is what makes the count unbiased), one per body."""
        points = [p for p in points if not any(area.contains(p.x_m, p.y_m) for area in self.exclusions)]
        observations = self.lineages.observe(stamp_s, [p for p in points if p.confirmed])
        bodies = [
            Body(o.point.x_m, o.point.y_m, o.zone_id, o.point.heading, o.dwell, o.point.weight) for o in observations
        ] + [
            Body(p.x_m, p.y_m, self._zone_of(p), p.heading, DWELL_LABELS[0], p.weight)
            for p in points
            if not p.confirmed
        ]
        closed = self._with_group_offers(self.presence.observe(stamp_s, bodies))
        closed += self.events.observe(stamp_s, observations)
        if self.groups is not None:
            self.groups.observe(stamp_s, observations)
        return closed

    def _zone_of(self, point: TrackPoint) -> str | None:
        return next((zone.zone_id for zone in self.zones if zone.contains(point.x_m, point.y_m)), None)

    def advance(self, now_s: float) -> list[Totals]:
        """The clock moved on (no frame needed): close what ended."""
        closed = self._with_group_offers(self.presence.advance(now_s))
        return closed + self.events.advance(now_s - self.settings.presence.max_frame_gap_s)

    def flush(self, now_s: float) -> list[Totals]:
        """Shutdown: every open segment ends now."""
        return self._with_group_offers(self.presence.flush(now_s)) + self.events.flush(now_s)

    def _new_groups(self, settings: TotalsSettings, start_s: float) -> PendingGroups | None:
        """Strict mode's groups span whole windows of the public grid: the first starts at its window's start."""
        if not settings.groups_per_day:
            return None
        return PendingGroups(self.zones, settings.groups_per_day, settings.grid.period_start("window", start_s))

    def _with_group_offers(self, closed: list[PresenceTotals]) -> list[Totals]:
        """Strict mode: every closed window (its period's end, also for a partial one) offers each zone's pending
        group to the sparse-vector test."""
        offers: list[Totals] = []
        if self.groups is not None:
            window = self.settings.grid.window_s
            for end in sorted({t.period_start_s + window for t in closed if t.tier == "window"}):
                offers += self.groups.offers(end)
        return [*closed, *offers]

    def reconfigure(self, settings: TotalsSettings, now_s: float) -> list[Totals]:
        """New settings from now on. The grid and the weight resolution hold open segments, so they change only at a
        start; a new event or group bound begins a new bound instance (charged again)."""
        settings.validate()
        if (settings.grid, settings.presence.weight_steps) != (self.settings.grid, self.settings.presence.weight_steps):
            raise ValueError("window_s, tick_s and weight_steps take effect at the next start (open segments use them)")
        closed: list[Totals] = []
        self.presence.settings = settings.presence
        self.lineages.settings = settings.lineage
        if settings.events != self.settings.events:
            closed = self.events.new_bound_instance(now_s)
            self.events.settings = settings.events
        if settings.groups_per_day != self.settings.groups_per_day:
            self.groups = self._new_groups(settings, now_s)
        self.settings = settings
        return closed

    def group_released(self, zone_id: str, start_s: float, end_s: float) -> None:
        if self.groups is not None:
            self.groups.released(zone_id, start_s, end_s)

    def forget(self, now_s: float) -> tuple[int, list[Totals]]:
        """A data-subject request: drop every lineage; event and group bounds continue under a new bound instance
        (charged again), so a forgotten lineage can never count twice under one bound. Presence holds no identity."""
        dropped = self.lineages.forget()
        closed = self.events.new_bound_instance(now_s)
        if self.groups is not None:
            self.groups.forget()
        return dropped, closed


@dataclass(frozen=True)
class TotalsValues:
    """The flat view of TotalsSettings: one anonymizer parameter per field (params.yaml, the DPIA)."""

    window_s: float = 900.0
    tick_s: float = 1.0
    weight_steps: int = 10
    same_body_radius_m: float = 0.3
    max_frame_gap_s: float = 2.0
    stitch_radius_m: float = 1.0
    stitch_window_s: float = 3.0
    boundary_hysteresis_m: float = 0.25
    dwell_thresholds_s: tuple[float, float] = (30.0, 120.0)
    zones_per_day: int = 3
    groups_per_day: int = 0

    def settings(self) -> TotalsSettings:
        return TotalsSettings.from_values(**{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_parameters(cls, parameters: dict) -> TotalsValues:
        """From a node's parameter values (unknown names ignored, missing ones at their defaults)."""
        names = {f.name for f in fields(cls)}
        return cls(**{n: tuple(v) if isinstance(v, list) else v for n, v in parameters.items() if n in names})
