"""Noise and accounting: OpenDP samplers, and the guarantee each configuration states.

Presence (identity-free, presence.py): every tier's cells form one integer vector per metric; one person's presence
over an hour changes each such vector by at most `hour_units` (3600 / tick_s × weight_steps) in L1, so the
presence-hour costs the OpenDP composition of every metric's measurement at that distance. A D-second visit costs
the same composition at D / tick_s × weight_steps (linear in D: w-event privacy over the person's presence).

Events (per stitched track, events.py): a lineage changes the day's footfall vector by at most m + 1, the entries
and exits vectors by at most m each; the three measurements take different distances, so their OpenDP maps are
summed (basic composition) rather than composed at one distance.

Strict mode: AboveThreshold for monotone queries (Lyu, Su & Li 2017, Alg. 7) per pending group plus a noisy count.
OpenDP 0.16 has no sparse-vector measurement: its ε is stated here by hand; the counts' maps are OpenDP's.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import opendp.prelude as dp

from privacy_vision.core.release.grid import DAY_S, HOUR_S, TIERS, Grid

dp.enable_features("contrib")

MECHANISM = "discrete_laplace"
STRICT_MECHANISM = "sparse_vector+discrete_laplace"
PRESENCE_UNIT = "presence-hour"
EVENTS_UNIT = "stitched-track-day"
PRESENCE_METRICS = {"window": ("occupancy",), "hour": ("occupancy", "heading", "dwell"), "day": ("occupancy",)}
EVENT_METRICS = ("footfall", "entries", "exits")
MODES = ("default", "strict")


class IntegerNoise:
    """Exact discrete Laplace noise on integers and integer vectors (OpenDP's sampler), and its exact law."""

    def __init__(self, scale: float) -> None:
        if not scale > 0 or not math.isfinite(scale):
            raise ValueError(f"noise scale must be a finite number > 0, got {scale}")
        self.scale = scale
        self.scalar = dp.m.make_laplace(dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=scale)
        self.vector = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int), scale=scale)

    def count(self, value: int) -> int:
        return int(self.scalar(int(value)))

    def histogram(self, values: Sequence[int]) -> list[int]:
        return [int(v) for v in self.vector([int(v) for v in values])]

    def epsilon(self, distance: int) -> float:
        """OpenDP's privacy map: ε for inputs that differ by `distance` in L1."""
        return float(self.vector.map(int(distance)))


@dataclass(frozen=True)
class ReleaseSettings:
    """What sets the noise of the releases, the display rule k, the events' daily cap and the mode."""

    # Defaults chosen by `bench/privacy_utility.py --tune` (docs/privacy_utility.md): footfall gets the least ε that
    # keeps a small shop's daily footfall within ±10% in 95% of draws at m = 3 zones, presence the most that keeps a
    # 15-minute visit at ε ≤ 1 in total, split to favour the worse-served occupancy target (the small shop's hour).
    epsilon_per_presence_hour: float = 2.0  # all presence metrics and tiers together, per hour of a person's presence
    presence_tier_shares: tuple[float, float, float] = (0.3, 0.68, 0.02)  # window, hour, day (normalised)
    hour_metric_shares: tuple[float, float, float] = (0.9, 0.06, 0.04)  # occupancy, heading, dwell (normalised)
    epsilon_events_per_track_day: float = 0.5  # footfall, entries and exits together, per stitched track and day
    event_metric_shares: tuple[float, float, float] = (1.0, 0.0, 0.0)  # footfall, entries, exits; 0 = not released
    k: int = 5  # display rule on noisy values: a cell whose noisy head count is below k is shown as "< k"
    daily_epsilon_cap: float = 2.0  # ε per stitched-track-day the ledger allows per device day (all bound instances)
    mode: str = "default"
    strict_epsilon_per_track_day: float = 1.0  # strict mode: groups' tests and counts per stitched track and day
    strict_delta: float = 1e-6  # strict mode: the δ stated per stitched-track-day (the proof's, not a margin's)
    strict_test_share: float = 0.5  # strict mode: share of a group's ε for its threshold test

    def validate(self) -> None:
        for name in ("epsilon_per_presence_hour", "epsilon_events_per_track_day", "strict_epsilon_per_track_day"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        for name, shares, positive in (
            ("presence_tier_shares", self.presence_tier_shares, True),
            ("hour_metric_shares", self.hour_metric_shares, True),
            ("event_metric_shares", self.event_metric_shares, False),
        ):
            if len(shares) != 3 or not all(math.isfinite(w) and (w > 0 if positive else w >= 0) for w in shares):
                raise ValueError(
                    f"{name} must be 3 {'positive' if positive else 'non-negative'} shares, got {list(shares)}"
                )
        if not sum(self.event_metric_shares) > 0:
            raise ValueError("event_metric_shares must give a positive share to at least one event metric")
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be an integer ≥ 1, got {self.k}")
        budget = self.strict_epsilon_per_track_day if self.mode == "strict" else self.epsilon_events_per_track_day
        if not self.daily_epsilon_cap >= budget:
            raise ValueError(
                f"daily_epsilon_cap ({self.daily_epsilon_cap:g}) must be ≥ the ε per stitched-track-day of one bound "
                f"instance ({budget:g}), otherwise no event or group can ever be released"
            )
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 0 < self.strict_delta < 1e-3:
            raise ValueError(f"strict_delta must be > 0 and < 0.001, got {self.strict_delta}")
        if not 0 < self.strict_test_share < 1:
            raise ValueError(f"strict_test_share must be between 0 and 1 (exclusive), got {self.strict_test_share}")


def configuration_id(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def _normalised(shares: Sequence[float]) -> list[float]:
    total = sum(shares)
    return [w / total for w in shares]


class PresenceAccount:
    """The presence metrics' noise per tier and metric, and what a presence of D seconds costs."""

    def __init__(self, settings: ReleaseSettings, grid: Grid, weight_steps: int) -> None:
        self.grid, self.weight_steps = grid, weight_steps
        self.hour_units = round(HOUR_S / grid.tick_s) * weight_steps
        tier_shares = dict(zip(TIERS, _normalised(settings.presence_tier_shares)))
        hour_shares = dict(zip(PRESENCE_METRICS["hour"], _normalised(settings.hour_metric_shares)))
        self.epsilon_by_metric: dict[tuple[str, str], float] = {}
        self.noise: dict[tuple[str, str], IntegerNoise] = {}
        for tier, metrics in PRESENCE_METRICS.items():
            for metric in metrics:
                epsilon = (
                    settings.epsilon_per_presence_hour
                    * tier_shares[tier]
                    * (hour_shares[metric] if tier == "hour" else 1.0)
                )
                self.noise[tier, metric] = IntegerNoise(self.hour_units / epsilon)
        # One person's presence-hour moves every metric's vector by at most hour_units (L1): OpenDP composes them.
        self.measurement = dp.c.make_composition([noise.vector for noise in self.noise.values()])
        self.epsilon_per_presence_hour = float(self.measurement.map(self.hour_units))
        for key, noise in self.noise.items():
            self.epsilon_by_metric[key] = noise.epsilon(self.hour_units)
        self.configuration_id = configuration_id(
            {
                "unit": PRESENCE_UNIT,
                "epsilon_per_presence_hour": settings.epsilon_per_presence_hour,
                "presence_tier_shares": list(settings.presence_tier_shares),
                "hour_metric_shares": list(settings.hour_metric_shares),
                **asdict(grid),
                "weight_steps": weight_steps,
            }
        )

    def epsilon_for_presence(self, seconds: float) -> float:
        """ε of a presence of this many seconds, all tiers and metrics (OpenDP's map of the composition)."""
        return float(self.measurement.map(round(seconds / self.grid.tick_s) * self.weight_steps))

    def epsilon_cell(self, tier: str) -> float:
        """ε of one whole cell of the tier for a person present all of its period (all its metrics)."""
        units = self.grid.ticks(tier) * self.weight_steps
        return sum(self.noise[tier, metric].epsilon(units) for metric in PRESENCE_METRICS[tier])

    def epsilon_of_tier_per_presence_hour(self, tier: str) -> float:
        return sum(self.epsilon_by_metric[tier, metric] for metric in PRESENCE_METRICS[tier])


class EventAccount:
    """The event metrics' noise (day tier), and what one stitched track costs per day and bound instance."""

    def __init__(self, settings: ReleaseSettings, zones_per_day: int) -> None:
        self.zones_per_day = zones_per_day
        self.distance = {"footfall": zones_per_day + 1, "entries": zones_per_day, "exits": zones_per_day}
        shares = dict(zip(EVENT_METRICS, _normalised(settings.event_metric_shares)))
        self.noise: dict[str, IntegerNoise] = {}
        for metric in EVENT_METRICS:
            if shares[metric] > 0:
                epsilon = settings.epsilon_events_per_track_day * shares[metric]
                self.noise[metric] = IntegerNoise(self.distance[metric] / epsilon)
        # Different distances per metric: the OpenDP maps are summed (basic composition).
        self.epsilon_by_metric = {metric: noise.epsilon(self.distance[metric]) for metric, noise in self.noise.items()}
        self.epsilon_per_track_day = sum(self.epsilon_by_metric.values())
        self.configuration_id = configuration_id(
            {
                "unit": EVENTS_UNIT,
                "epsilon_events_per_track_day": settings.epsilon_events_per_track_day,
                "event_metric_shares": list(settings.event_metric_shares),
                "zones_per_day": zones_per_day,
            }
        )


class StrictAccount:
    """Strict mode's noise and its cost per stitched-track-day: each of a lineage's L groups a day is one
    AboveThreshold instance (ε_test) plus, when it passes, one noisy count (ε_count); the hard rule adds δ."""

    def __init__(self, settings: ReleaseSettings, groups_per_day: int, window_s: float) -> None:
        per_group = settings.strict_epsilon_per_track_day / groups_per_day
        self.groups_per_day = groups_per_day
        self.epsilon_test = per_group * settings.strict_test_share
        # Threshold and query noise both at scale 2/ε_test (one more lineage raises each query of an instance by 0
        # or 1, and a group only grows until its release: monotone queries).
        self.threshold_noise = IntegerNoise(2 / self.epsilon_test)
        self.query_noise = IntegerNoise(2 / self.epsilon_test)
        self.count_noise = IntegerNoise(1 / (per_group - self.epsilon_test))
        self.epsilon_group = self.epsilon_test + self.count_noise.epsilon(1)
        self.epsilon_per_track_day = groups_per_day * self.epsilon_group
        # The hard rule (never release a true size below k) departs from the pure-DP test only when a group of k - 1
        # passes: P ≤ δ_test per test. Over a lineage's groups and a day's tests that is δ_base, and the proof's
        # (ε, δ) statement for the test is then δ = (1 + e^ε_test) × δ_base: the margin is chosen so that this δ,
        # the one stated, is strict_delta.
        tests_per_day = round(DAY_S / window_s)
        self.delta = settings.strict_delta
        delta_base = self.delta / (1 + math.exp(self.epsilon_test))
        self.margin = gate_margin(self.query_noise, self.threshold_noise, delta_base / groups_per_day / tests_per_day)
        self.threshold = settings.k + self.margin
        self.configuration_id = configuration_id(
            {
                "mechanism": STRICT_MECHANISM,
                "strict_epsilon_per_track_day": settings.strict_epsilon_per_track_day,
                "strict_test_share": settings.strict_test_share,
                "strict_delta": settings.strict_delta,
                "k": settings.k,
                "window_s": window_s,
                "groups_per_day": groups_per_day,
            }
        )


def gate_margin(query: IntegerNoise, threshold: IntegerNoise, delta_per_test: float) -> int:
    """Smallest m ≥ 0 with P[ν - ρ ≥ m + 1] ≤ δ_test (ν, ρ the query and threshold noise): a group of k - 1 then
    passes a test against k + m with at most that probability."""
    reach = int(math.ceil(60 * max(query.scale, threshold.scale))) + 60
    support = np.arange(-reach, reach + 1)
    law = [np.exp(-np.abs(support) / noise.scale) for noise in (query, threshold)]
    query_p, threshold_p = (weights / weights.sum() for weights in law)
    difference = np.convolve(query_p, threshold_p[::-1])
    values = np.arange(-2 * reach, 2 * reach + 1)
    tail = np.cumsum(difference[::-1])[::-1]  # tail[i] = P[ν - ρ ≥ values[i]]
    allowed = values[(values >= 1) & (tail <= delta_per_test)]
    if not len(allowed):
        raise ValueError(f"strict mode: no threshold margin reaches δ {delta_per_test:.3g} per test with this noise")
    return int(allowed.min()) - 1
