"""Release model v2: every cell of the public grid gets OpenDP noise; k is applied to the noisy value.

Input is the true totals of each cell after the anonymizer bounded every track's contribution (at most
L cells per tier per UTC day, one person, heading and dwell value per cell: core/contributions.py).
Each cell's metrics get exact discrete Laplace noise at sensitivity 1, so one track-day costs
Σ_tiers L × ε_cell, composed with OpenDP's privacy maps. The ledger charges that once per configuration
and UTC day, so a normal day never runs out. Everything after the noise (consistency between a cell's
metrics and across tiers, rounding, the "< k" marker) is post-processing.

Strict mode ("no group below k", literally) releases no grid cell. Each zone's pending group (the tracks
that joined it since its last release; a track joins at most L groups a day) is offered at every window
end to a sparse-vector test (AboveThreshold) against k plus a margin; a group is released, over its own
period, only when the noisy test passes *and* its true size is at least k. That hard rule is the only
source of δ: the margin makes a pass at a true size of k - 1 that unlikely.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import opendp.prelude as dp
from scipy import optimize

from release_v2.contributions import (
    DAY_S,
    DIRECTION_LABELS,
    DWELL_LABELS,
    GROUP_TIER,
    NESTED_IN,
    TIERS,
    CellTotals,
    ContributionSettings,
)
from release_v2.privacy import BudgetDecision, IntegerNoise, PrivacyLedger

MECHANISM = "discrete_laplace"
PRIVACY_UNIT = "track-day"
HOUR_METRICS = ("occupancy", "direction", "dwell", "entries", "exits")
MODES = ("default", "strict")
STRICT_MECHANISM = "sparse_vector+discrete_laplace"


@dataclass
class AggregatorSettings:
    """The privacy settings of the releases (ε, its shares, k, cap, mode), validated before any use."""

    epsilon_per_track_day: float = 2.0
    tier_shares: tuple[float, float, float] = (0.4, 0.45, 0.15)  # of epsilon_per_track_day, in TIERS order
    hour_metric_shares: tuple[float, ...] = (0.5, 0.35, 0.05, 0.05, 0.05)  # of an hour cell's ε, in HOUR_METRICS order
    k: int = 5
    daily_epsilon_cap: float = 6.0  # ε per track-day the ledger allows in one UTC day, over all configurations
    mode: str = "default"
    strict_delta: float = 1e-6  # strict mode: δ per track-day, spent only by the hard rule "true size ≥ k"
    strict_test_share: float = 0.5  # strict mode: share of a group's ε for the sparse-vector test (the rest: its count)

    def validate(self) -> None:
        if not math.isfinite(self.epsilon_per_track_day) or self.epsilon_per_track_day <= 0:
            raise ValueError(f"epsilon_per_track_day must be a finite number > 0, got {self.epsilon_per_track_day}")
        for name, shares, count in (
            ("tier_shares", self.tier_shares, len(TIERS)),
            ("hour_metric_shares", self.hour_metric_shares, len(HOUR_METRICS)),
        ):
            if len(shares) != count or not all(math.isfinite(w) and w > 0 for w in shares):
                raise ValueError(f"{name} must be {count} positive shares, got {list(shares)}")
        if self.k < 1:
            raise ValueError("k must be ≥ 1")
        if not self.daily_epsilon_cap >= self.epsilon_per_track_day:
            raise ValueError(
                f"daily_epsilon_cap ({self.daily_epsilon_cap:g}) must be ≥ epsilon_per_track_day ({self.epsilon_per_track_day:g}), "
                "otherwise nothing can ever be released"
            )
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 0 < self.strict_delta < 1e-3:
            raise ValueError(
                f"strict_delta must be > 0 and < 0.001 (it is a failure probability per track-day), got {self.strict_delta}"
            )
        if not 0 < self.strict_test_share < 1:
            raise ValueError(f"strict_test_share must be between 0 and 1 (exclusive), got {self.strict_test_share}")

    def metric_epsilons(self, tier: str, cells_per_day: int) -> dict[str, float]:
        """ε of each metric of one cell: the tier's share of the track-day budget over its L cells."""
        cell = self.epsilon_per_track_day * self.tier_shares[TIERS.index(tier)] / sum(self.tier_shares) / cells_per_day
        if tier != "hour":
            return {"occupancy": cell}
        total = sum(self.hour_metric_shares)
        return {name: cell * w / total for name, w in zip(HOUR_METRICS, self.hour_metric_shares)}


@dataclass(frozen=True)
class Bounds:
    """The contribution bound the anonymizer enforced, as stated in its cell totals."""

    window_s: float
    cells_per_day: tuple[int, int, int]
    groups_per_day: int = 0  # strict mode: pending groups one track may join per UTC day

    def of(self, tier: str) -> int:
        return self.groups_per_day if tier == GROUP_TIER else self.cells_per_day[TIERS.index(tier)]


class CellMechanism:
    """OpenDP measurements of one tier's cell: one per metric, each at sensitivity 1."""

    def __init__(self, tier: str, epsilons: dict[str, float]) -> None:
        self.tier = tier
        self.epsilons = epsilons
        self.noise = {name: IntegerNoise(MECHANISM, epsilon) for name, epsilon in epsilons.items()}
        # Composition of the metric measurements: one track changes each metric's vector by at most 1 (L1).
        self.measurement = dp.c.make_composition([noise.vector_measurement for noise in self.noise.values()])
        self.epsilon = float(self.measurement.map(1))


class TrackDayAccount:
    """ε per track-day: L_tier copies of each tier's cell measurement, composed by OpenDP."""

    def __init__(self, settings: AggregatorSettings, bounds: Bounds) -> None:
        self.cells = {tier: CellMechanism(tier, settings.metric_epsilons(tier, bounds.of(tier))) for tier in TIERS}
        self.measurement = dp.c.make_composition(
            [self.cells[tier].measurement for tier in TIERS for _ in range(bounds.of(tier))]
        )
        self.epsilon = float(self.measurement.map(1))
        # What the ledger charges once per day: everything that sets the noise, and the bound.
        facts = {
            "mechanism": MECHANISM,
            "epsilon_per_track_day": settings.epsilon_per_track_day,
            "tier_shares": list(settings.tier_shares),
            "hour_metric_shares": list(settings.hour_metric_shares),
            "window_s": bounds.window_s,
            "cells_per_day": list(bounds.cells_per_day),
        }
        self.configuration_id = configuration_id(facts)
        self.delta = 0.0
        self.mechanism = MECHANISM


def configuration_id(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


class StrictAccount:
    """Strict mode's noise and its cost per track-day. A track joins at most L groups a day; each group is one
    AboveThreshold instance (ε_test) and, when it passes, one noisy count (ε_count); the hard rule adds δ."""

    def __init__(self, settings: AggregatorSettings, bounds: Bounds) -> None:
        groups = bounds.groups_per_day
        if groups < 1:
            raise ValueError("strict mode needs the anonymizer to form groups: set anonymizer groups_per_day ≥ 1")
        per_group = settings.epsilon_per_track_day / groups
        self.epsilon_test = per_group * settings.strict_test_share
        # AboveThreshold for monotone queries (Lyu, Su & Li 2017, Alg. 7 with c = 1): threshold and query noise both
        # at scale 2/ε_test. A group's size only grows until its release, and one more track raises every query of
        # its instance by 0 or 1, so the queries are monotone. OpenDP 0.16 has no sparse-vector measurement: its
        # map (ε_test per instance) is stated here by hand; the counts' maps are OpenDP's.
        self.threshold_noise = IntegerNoise(MECHANISM, self.epsilon_test / 2)
        self.query_noise = IntegerNoise(MECHANISM, self.epsilon_test / 2)
        self.count_noise = IntegerNoise(MECHANISM, per_group - self.epsilon_test)
        counts = dp.c.make_composition([self.count_noise.vector_measurement] * groups)
        self.epsilon_group = self.epsilon_test + float(self.count_noise.vector_measurement.map(1))
        self.epsilon = groups * self.epsilon_test + float(counts.map(1))
        self.delta = settings.strict_delta
        tests_per_day = round(DAY_S / bounds.window_s)
        self.margin = gate_margin(
            self.query_noise, self.threshold_noise, settings.strict_delta / groups / tests_per_day
        )
        self.threshold = settings.k + self.margin
        self.mechanism = STRICT_MECHANISM
        self.configuration_id = configuration_id(
            {
                "mechanism": STRICT_MECHANISM,
                "epsilon_per_track_day": settings.epsilon_per_track_day,
                "strict_test_share": settings.strict_test_share,
                "strict_delta": settings.strict_delta,
                "k": settings.k,
                "window_s": bounds.window_s,
                "groups_per_day": groups,
            }
        )


def gate_margin(query: IntegerNoise, threshold: IntegerNoise, delta_per_test: float) -> int:
    """Smallest m ≥ 0 with P[ν - ρ ≥ m + 1] ≤ δ_test: then a group of k - 1 passes a test against k + m with at
    most that probability, and the hard rule (never release below k) differs from the pure-DP test on at most
    δ_test per test (union bound over a day's tests of each of the track's L groups)."""
    support, query_p = query.distribution
    threshold_support, threshold_p = threshold.distribution
    difference = np.convolve(query_p, threshold_p[::-1])  # the noise is symmetric, so ν - ρ has this law
    values = np.arange(support[0] - threshold_support[-1], support[-1] - threshold_support[0] + 1)
    tail = np.cumsum(difference[::-1])[::-1]  # tail[i] = P[ν - ρ ≥ values[i]]
    allowed = values[(values >= 1) & (tail <= delta_per_test)]
    if not len(allowed):
        raise ValueError(f"strict mode: no threshold margin reaches δ {delta_per_test:.3g} per test with this noise")
    return int(allowed.min()) - 1


@dataclass
class Release:
    """One cell's release; its values are final and are never re-drawn."""

    release_id: str
    zone_id: str
    tier: str
    period_start_s: float
    period_end_s: float
    complete: bool
    below_k: bool  # shown as "< k": the noisy occupancy was below k, every value is withheld
    occupancy: int
    direction_counts: dict[str, int]
    dwell_counts: dict[str, int]
    entries: int
    exits: int
    entries_today: int  # the zone's released hourly entries since midnight UTC (a sum of released values)
    mechanism: str
    epsilon_cell: float
    epsilon_track_day: float
    delta_track_day: float
    epsilon_by_metric: dict[str, float]
    k: int
    privacy_unit: str
    cells_per_day: int  # L of this tier
    window_s: float
    epsilon_spent_today: float
    daily_epsilon_cap: float
    mode: str


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


def within_finer_tier(estimate: int, variance: float, finer: list[int], finer_variance: float) -> int:
    """Distinct people do not add up over time, but a coarser cell holds at least as many as each of its finer
    cells: admission is nested (a track counts in a window only if it counts in the hour, in an hour only if it
    counts in the day), so that holds for the bounded counts too. "At most their sum" does not: a track clipped
    from the finer tier by its L still counts in the coarser one. Weighted least squares over the coarse
    estimate and the finer noisy values under those constraints (SLSQP: a small quadratic programme); the
    finer cells were already released, so only the coarse value changes."""
    if not finer:
        return estimate
    observed = np.array([estimate, *finer], dtype=float)
    weights = 1.0 / np.array([variance] + [finer_variance] * len(finer))
    constraints = [{"type": "ineq", "fun": lambda x: x[0] - x[1:]}]
    result = optimize.minimize(
        lambda x: float(np.sum(weights * (x - observed) ** 2)),
        observed,
        jac=lambda x: 2 * weights * (x - observed),
        bounds=[(0, None)] * len(observed),
        constraints=constraints,
        method="SLSQP",
    )
    if not result.success:
        raise RuntimeError(f"tier consistency did not converge: {result.message}")
    return max(0, round(float(result.x[0])))


def utc_day(stamp_s: float) -> str:
    return datetime.fromtimestamp(stamp_s, tz=UTC).strftime("%Y-%m-%d")


@dataclass
class _Day:
    finer: dict[tuple[str, str, float], list[int]] = field(
        default_factory=dict
    )  # (tier, zone, period) -> finer noisy occupancies
    finer_variance: dict[tuple[str, str, float], float] = field(default_factory=dict)
    entries: dict[str, int] = field(default_factory=dict)


class CellReleaser:
    """Noise on every cell, post-processing, the daily ledger charge; one instance per aggregator."""

    def __init__(
        self, settings: AggregatorSettings, ledger: PrivacyLedger, new_id: Callable[[], str], clock: Callable[[], float]
    ) -> None:
        self.ledger = ledger
        self._new_id = new_id
        self._clock = clock
        self._accounts: dict[Bounds, TrackDayAccount | StrictAccount] = {}
        self._days: dict[str, _Day] = {}
        self._groups: dict[
            str, tuple[float, int]
        ] = {}  # strict mode: zone -> (open group's start, its noisy threshold)
        self._released_until: dict[str, float] = {}  # strict mode: zone -> end of its last released group
        self.cap_reached_day: str | None = None
        self.strict_without_groups = False  # strict mode while the anonymizer forms no groups: nothing can be released
        self.reconfigure(settings)

    def reconfigure(self, settings: AggregatorSettings) -> None:
        """Apply new settings (validated first, the old ones kept on error); a change charges again today."""
        settings.validate()
        self.settings = settings
        self._accounts.clear()
        self._groups.clear()  # new noise: each open group starts a new test instance under the new account
        self.ledger.daily_epsilon_cap = settings.daily_epsilon_cap

    def account(self, bounds: Bounds) -> TrackDayAccount | StrictAccount:
        if bounds not in self._accounts:
            self._accounts[bounds] = (
                StrictAccount(self.settings, bounds)
                if self.settings.mode == "strict"
                else TrackDayAccount(self.settings, bounds)
            )
        return self._accounts[bounds]

    def release(self, totals: CellTotals, bounds: Bounds) -> Release | None:
        """The cell's release; None when the mode releases no such cell (grid cells in strict mode, groups in the
        default mode, a group that has not passed its test) or today's cap refuses this configuration's charge."""
        self.strict_without_groups = self.settings.mode == "strict" and bounds.groups_per_day < 1
        if self.strict_without_groups or (totals.tier == GROUP_TIER) != (self.settings.mode == "strict"):
            return None
        account = self.account(bounds)
        day = utc_day(totals.period_start_s)
        decision = self.ledger.try_charge(day, account.configuration_id, account.epsilon, self._clock())
        if not decision.granted:
            self.cap_reached_day = day
            return None
        if isinstance(account, StrictAccount):
            return self._release_group(totals, bounds, account, decision)
        return self._release_cell(totals, bounds, account, decision)

    def _release_group(
        self, totals: CellTotals, bounds: Bounds, account: StrictAccount, decision: BudgetDecision
    ) -> Release | None:
        """One AboveThreshold step for the zone's pending group; a new group start begins a new instance."""
        s = self.settings
        zone = totals.zone_id
        if totals.period_start_s < self._released_until.get(zone, -math.inf):
            return None  # the anonymizer has not yet seen that this group was released
        start, threshold = self._groups.get(zone, (None, 0))
        if start != totals.period_start_s:
            start, threshold = totals.period_start_s, account.threshold_noise.count(account.threshold)
            self._groups[zone] = (start, threshold)
        if account.query_noise.count(totals.occupancy) < threshold or totals.occupancy < s.k:
            return None
        del self._groups[zone]
        self._released_until[zone] = totals.period_end_s
        # The hard rule guarantees a true size ≥ k, so showing at least k is post-processing of what is public.
        occupancy = max(s.k, account.count_noise.count(totals.occupancy))
        return Release(
            release_id=self._new_id(),
            zone_id=zone,
            tier=GROUP_TIER,
            period_start_s=totals.period_start_s,
            period_end_s=totals.period_end_s,
            complete=totals.complete,
            below_k=False,
            occupancy=occupancy,
            direction_counts={},
            dwell_counts={},
            entries=0,
            exits=0,
            entries_today=0,
            mechanism=STRICT_MECHANISM,
            epsilon_cell=account.epsilon_group,
            epsilon_track_day=account.epsilon,
            delta_track_day=account.delta,
            epsilon_by_metric={"test": account.epsilon_test, "occupancy": account.epsilon_group - account.epsilon_test},
            k=s.k,
            privacy_unit=PRIVACY_UNIT,
            cells_per_day=bounds.groups_per_day,
            window_s=bounds.window_s,
            epsilon_spent_today=decision.spent_today,
            daily_epsilon_cap=decision.cap,
            mode=s.mode,
        )

    def _release_cell(
        self, totals: CellTotals, bounds: Bounds, account: TrackDayAccount, decision: BudgetDecision
    ) -> Release:
        s = self.settings
        day = utc_day(totals.period_start_s)
        self._days = {d: v for d, v in self._days.items() if d == day}
        today = self._days.setdefault(day, _Day())
        cell = account.cells[totals.tier]
        occupancy, directions, dwell, entries, exits = self._noisy(cell, totals)
        key = (totals.tier, totals.zone_id, totals.period_start_s)
        if key in today.finer:
            occupancy = within_finer_tier(
                occupancy, cell.noise["occupancy"].variance, today.finer.pop(key), today.finer_variance.pop(key)
            )
            if directions:
                directions, dwell = (
                    round_keeping_sum(project_to_simplex(np.asarray(h, dtype=float), occupancy))
                    for h in (directions, dwell)
                )
        if totals.tier in NESTED_IN:
            coarser = NESTED_IN[totals.tier]
            period_s = ContributionSettings(window_s=bounds.window_s).period_s(coarser)
            parent = (coarser, totals.zone_id, math.floor(totals.period_start_s / period_s) * period_s)
            today.finer.setdefault(parent, []).append(occupancy)
            today.finer_variance[parent] = cell.noise["occupancy"].variance
        below_k = occupancy < s.k
        if totals.tier == "hour" and not below_k:
            today.entries[totals.zone_id] = today.entries.get(totals.zone_id, 0) + entries
        shown = 0 if below_k else 1
        return Release(
            release_id=self._new_id(),
            zone_id=totals.zone_id,
            tier=totals.tier,
            period_start_s=totals.period_start_s,
            period_end_s=totals.period_end_s,
            complete=totals.complete,
            below_k=below_k,
            occupancy=occupancy * shown,
            direction_counts={label: v * shown for label, v in zip(DIRECTION_LABELS, directions)},
            dwell_counts={label: v * shown for label, v in zip(DWELL_LABELS, dwell)},
            entries=entries * shown,
            exits=exits * shown,
            entries_today=today.entries.get(totals.zone_id, 0),
            mechanism=MECHANISM,
            epsilon_cell=cell.epsilon,
            epsilon_track_day=account.epsilon,
            delta_track_day=0.0,
            epsilon_by_metric=dict(cell.epsilons),
            k=s.k,
            privacy_unit=PRIVACY_UNIT,
            cells_per_day=bounds.of(totals.tier),
            window_s=bounds.window_s,
            epsilon_spent_today=decision.spent_today,
            daily_epsilon_cap=decision.cap,
            mode=s.mode,
        )

    @staticmethod
    def _noisy(cell: CellMechanism, totals: CellTotals) -> tuple[int, list[int], list[int], int, int]:
        noise = cell.noise
        noisy_occupancy = noise["occupancy"].count(totals.occupancy)
        if cell.tier != "hour":
            return max(0, noisy_occupancy), [], [], 0, 0
        noisy_directions = noise["direction"].histogram(totals.directions)
        noisy_dwell = noise["dwell"].histogram(totals.dwell)
        occupancy, (directions, dwell) = consistent_counts(
            [
                (noisy_occupancy, noise["occupancy"].variance),
                (sum(noisy_directions), len(noisy_directions) * noise["direction"].variance),
                (sum(noisy_dwell), len(noisy_dwell) * noise["dwell"].variance),
            ],
            [noisy_directions, noisy_dwell],
        )
        return (
            occupancy,
            directions,
            dwell,
            max(0, noise["entries"].count(totals.entries)),
            max(0, noise["exits"].count(totals.exits)),
        )
