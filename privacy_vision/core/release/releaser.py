"""Totals in, noise drawn once, post-processing, one durable transaction, a release out.

The aggregator calls `release` for every closed segment the anonymizer hands over. A release is made only once
its span is recorded in the store (store.py) together with any ledger charge, so an acknowledgement to the
anonymizer always means "durable": a span already released is acknowledged without a second draw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from privacy_vision.core.release.estimates import Estimate, Term, total
from privacy_vision.core.release.events import EventTotals
from privacy_vision.core.release.grid import (
    DWELL_LABELS,
    EVENTS_KIND,
    GROUP_KIND,
    GROUP_TIER,
    HEADING_LABELS,
    PRESENCE_KIND,
    TIERS,
    Context,
    Grid,
)
from privacy_vision.core.release.mechanisms import (
    EVENTS_UNIT,
    MECHANISM,
    PRESENCE_UNIT,
    STRICT_MECHANISM,
    EventAccount,
    PresenceAccount,
    ReleaseSettings,
    StrictAccount,
)
from privacy_vision.core.release.postprocess import combine, consistent
from privacy_vision.core.release.presence import PresenceTotals
from privacy_vision.core.release.store import Charge, Recorded, ReleaseStore, SpanKey
from privacy_vision.core.release.strict import GroupTotals
from privacy_vision.core.release_schema import release_bytes

RELEASED, DUPLICATE, WITHHELD, PENDING, CAP = "released", "duplicate", "withheld", "pending", "cap"


@dataclass
class Release:
    """One released span: unbiased values with their noise, and the guarantee they were made under."""

    release_id: str
    kind: str  # presence, events or group
    zone_id: str
    tier: str
    period_start_s: float
    period_end_s: float
    segment_start_s: float
    segment_end_s: float
    coverage: float  # share of the whole period observed
    below_k: bool  # the noisy head count (footfall) is below k: displays show "< k" (the values still travel)
    values: dict[str, Estimate]
    floor: float  # what the true values are known to be at least (0; k for a strict-mode group)
    mechanism: str
    privacy_unit: str
    epsilon_unit: float  # ε per presence-hour (presence) or per stitched-track-day (events, groups)
    epsilon_cell: float  # the most one person (presence: over the observed span) or lineage can cost through it
    delta: float
    epsilon_by_metric: dict[str, float]
    k: int
    mode: str
    window_s: float
    bound: int  # events: zones per lineage-day; groups: groups per lineage-day; presence: 0 (identity-free)
    epsilon_spent_today: float
    daily_epsilon_cap: float
    configuration: str

    @property
    def complete(self) -> bool:
        return bool(self.coverage >= 1.0 - 1e-9)


@dataclass
class Outcome:
    """What became of one segment's totals: the release, or why there is none; `acknowledged` unless it must be
    offered again (storage failed: the caller keeps the totals)."""

    status: str
    release: Release | None = None
    group_released: tuple[str, float, float] | None = None  # strict mode: (zone, start, end) of a released group
    spent: Recorded | None = field(default=None, repr=False)


class Releaser:
    """Noise, post-processing and the durable record of every release; one per aggregator."""

    def __init__(self, settings: ReleaseSettings, store: ReleaseStore, new_id: Callable[[], str]) -> None:
        self.store = store
        self._new_id = new_id
        self._accounts: dict[tuple, object] = {}
        self.reconfigure(settings)

    def reconfigure(self, settings: ReleaseSettings) -> None:
        """New settings apply to the next release (validated first, the old ones kept on error)."""
        settings.validate()
        self.settings = settings
        self._accounts.clear()
        self.store.daily_epsilon_cap = settings.daily_epsilon_cap

    def presence_account(self, context: Context) -> PresenceAccount:
        return self._account(
            ("presence", context.grid, context.weight_steps), PresenceAccount, context.grid, context.weight_steps
        )

    def event_account(self, zones_per_day: int) -> EventAccount:
        return self._account(("events", zones_per_day), EventAccount, zones_per_day)

    def strict_account(self, groups_per_day: int, window_s: float) -> StrictAccount:
        return self._account(("strict", groups_per_day, window_s), StrictAccount, groups_per_day, window_s)

    def _account(self, key: tuple, factory, *args):
        if key not in self._accounts:
            self._accounts[key] = factory(self.settings, *args)
        return self._accounts[key]

    def release(self, totals: PresenceTotals | EventTotals | GroupTotals, context: Context) -> Outcome:
        strict = self.settings.mode == "strict"
        if isinstance(totals, GroupTotals):
            return self._group(totals, context) if strict else Outcome(WITHHELD)
        if strict:
            return Outcome(WITHHELD)  # strict mode releases groups only
        if isinstance(totals, PresenceTotals):
            return self._presence(totals, context)
        return self._events(totals, context)

    # -- presence --------------------------------------------------------------------------------------
    def _presence(self, totals: PresenceTotals, context: Context) -> Outcome:
        account = self.presence_account(context)
        release_id = self._new_id()
        tier, steps = totals.tier, context.weight_steps
        values: dict[str, Estimate] = {}
        head_count = Estimate(0.0, ())
        if totals.observed_ticks:
            noise = account.noise
            own = self._draw(noise[tier, "occupancy"], totals.units, f"{release_id}/occupancy")
            estimates = [own]
            finer = self._finer_head_count(totals, context)
            if finer is not None:
                estimates.append(finer)
            headings = dwells = []
            if tier == "hour":
                width = len(DWELL_LABELS)
                heading_true = [sum(totals.bins[i * width : (i + 1) * width]) for i in range(len(HEADING_LABELS))]
                dwell_true = [sum(totals.bins[j::width]) for j in range(width)]
                headings = self._draw_vector(noise[tier, "heading"], heading_true, f"{release_id}/heading")
                dwells = self._draw_vector(noise[tier, "dwell"], dwell_true, f"{release_id}/dwell")
                estimates += [total(headings), total(dwells)]
            head_count = combine(estimates)
            per_person = 1.0 / (steps * totals.observed_ticks)  # units → people present on average
            values["occupancy"] = head_count * per_person
            if tier == "hour":
                for label, estimate in zip(HEADING_LABELS, consistent(headings, head_count)):
                    values[f"heading.{label}"] = estimate * per_person
                for label, estimate in zip(DWELL_LABELS, consistent(dwells, head_count)):
                    values[f"dwell.{label}"] = estimate * per_person
        key = SpanKey(
            PRESENCE_KIND, tier, totals.zone_id, totals.period_start_s, totals.segment_start_s, totals.segment_end_s
        )
        observed_units = totals.observed_ticks * steps
        epsilons = {metric: noise.epsilon(observed_units) for (t, metric), noise in account.noise.items() if t == tier}
        release = self._release(
            release_id,
            key,
            context.grid,
            coverage=totals.observed_ticks / context.grid.ticks(tier),
            values=values,
            head=None,  # people present on average are no head count: k applies to footfall and groups
            mechanism=MECHANISM,
            unit=PRESENCE_UNIT,
            epsilon_unit=account.epsilon_per_presence_hour,
            epsilon_by_metric=epsilons,
            delta=0.0,
            bound=0,
            configuration=account.configuration_id,
        )
        stored = {
            **_terms(head_count),
            "span": key.segment_end_s - key.segment_start_s,
            "units_observed": observed_units,
        }
        return self._record(release, key, stored, [])

    def _finer_head_count(self, totals: PresenceTotals, context: Context) -> Estimate | None:
        """The sum of the finer tier's released head counts when they tile this segment exactly (unbiased)."""
        finer_tier = TIERS[TIERS.index(totals.tier) - 1] if totals.tier != TIERS[0] else None
        if finer_tier is None:
            return None
        stored = self.store.head_counts(
            PRESENCE_KIND, finer_tier, totals.zone_id, totals.segment_start_s, totals.segment_end_s
        )
        covered = sum(item.get("span", 0.0) for item in stored)
        if not stored or abs(covered - (totals.segment_end_s - totals.segment_start_s)) > 1e-6:
            return None
        if any(item.get("units_observed") is None for item in stored):
            return None
        parts = [_estimate(item) for item in stored]
        if sum(item["units_observed"] for item in stored) != totals.observed_ticks * context.weight_steps:
            return None  # the finer spans did not observe the same ticks (a finer release was lost): not nested
        # An unobserved finer span holds exactly 0 (no draw, no terms); an observed one without terms was restored
        # from the audit log without its values: then the finer tier does not tile this segment.
        observed = [part for part, item in zip(parts, stored) if item["units_observed"]]
        return total(parts) if all(part.terms for part in observed) else None

    # -- events ----------------------------------------------------------------------------------------
    def _events(self, totals: EventTotals, context: Context) -> Outcome:
        account = self.event_account(totals.zones_per_day)
        release_id = self._new_id()
        values = {
            metric: self._draw(noise, getattr(totals, metric), f"{release_id}/{metric}")
            for metric, noise in account.noise.items()
        }
        key = SpanKey(
            EVENTS_KIND,
            "day",
            totals.zone_id,
            totals.period_start_s,
            totals.segment_start_s,
            totals.segment_end_s,
            totals.bound_instance,
        )
        release = self._release(
            release_id,
            key,
            context.grid,
            coverage=totals.observed_s / context.grid.period_s("day"),
            values=values,
            head=values.get("footfall"),
            mechanism=MECHANISM,
            unit=EVENTS_UNIT,
            epsilon_unit=account.epsilon_per_track_day,
            epsilon_by_metric={metric: noise.epsilon(1) for metric, noise in account.noise.items()},
            delta=0.0,
            bound=totals.zones_per_day,
            configuration=account.configuration_id,
        )
        charge = Charge(totals.bound_instance, account.configuration_id, account.epsilon_per_track_day)
        return self._record(release, key, {}, [charge])

    # -- strict mode -----------------------------------------------------------------------------------
    def _group(self, totals: GroupTotals, context: Context) -> Outcome:
        s = self.settings
        account = self.strict_account(totals.groups_per_day, context.grid.window_s)
        charge = Charge(totals.bound_instance, account.configuration_id, account.epsilon_per_track_day)
        spent = self.store.charge([charge])  # the test spends its ε whether or not the group passes
        if not spent.stored:
            return Outcome(CAP, spent=spent)
        threshold = self.store.strict_threshold(
            totals.bound_instance,
            totals.zone_id,
            totals.period_start_s,
            account.configuration_id,
            lambda: account.threshold_noise.count(account.threshold),
        )
        if account.query_noise.count(totals.size) < threshold or totals.size < s.k:
            return Outcome(PENDING)
        release_id = self._new_id()
        size = self._draw(account.count_noise, totals.size, f"{release_id}/size")
        key = SpanKey(
            GROUP_KIND,
            GROUP_TIER,
            totals.zone_id,
            totals.period_start_s,
            totals.period_start_s,
            totals.period_end_s,
            totals.bound_instance,
        )
        release = self._release(
            release_id,
            key,
            context.grid,
            coverage=1.0,
            values={"size": size},
            head=None,
            mechanism=STRICT_MECHANISM,
            unit=EVENTS_UNIT,
            epsilon_unit=account.epsilon_per_track_day,
            epsilon_by_metric={"test": account.epsilon_test, "size": account.epsilon_group - account.epsilon_test},
            delta=account.delta,
            bound=totals.groups_per_day,
            configuration=account.configuration_id,
            floor=float(s.k),
            period_end_s=totals.period_end_s,
        )
        outcome = self._record(release, key, {}, [charge])
        if outcome.status == RELEASED:
            outcome.group_released = (totals.zone_id, totals.period_start_s, totals.period_end_s)
        return outcome

    # -- shared ----------------------------------------------------------------------------------------
    @staticmethod
    def _draw(noise, true_value: int, noise_id: str) -> Estimate:
        return Estimate.draw(noise.count(true_value), noise_id, noise.scale)

    @staticmethod
    def _draw_vector(noise, true_values: list[int], noise_id: str) -> list[Estimate]:
        return [Estimate.draw(v, f"{noise_id}/{i}", noise.scale) for i, v in enumerate(noise.histogram(true_values))]

    def _release(
        self,
        release_id: str,
        key: SpanKey,
        grid: Grid,
        *,
        coverage: float,
        values: dict[str, Estimate],
        head: Estimate | None,
        mechanism: str,
        unit: str,
        epsilon_unit: float,
        epsilon_by_metric: dict[str, float],
        delta: float,
        bound: int,
        configuration: str,
        floor: float = 0.0,
        period_end_s: float | None = None,
    ) -> Release:
        s = self.settings
        return Release(
            release_id=release_id,
            kind=key.kind,
            zone_id=key.zone_id,
            tier=key.tier,
            period_start_s=key.period_start_s,
            period_end_s=period_end_s if period_end_s is not None else key.period_start_s + grid.period_s(key.tier),
            segment_start_s=key.segment_start_s,
            segment_end_s=key.segment_end_s,
            coverage=float(min(1.0, max(0.0, coverage))),
            below_k=head is not None and head.value < s.k,
            values=values,
            floor=floor,
            mechanism=mechanism,
            privacy_unit=unit,
            epsilon_unit=epsilon_unit,
            epsilon_cell=sum(epsilon_by_metric.values()),
            delta=delta,
            epsilon_by_metric=epsilon_by_metric,
            k=s.k,
            mode=s.mode,
            window_s=grid.window_s,
            bound=bound,
            epsilon_spent_today=0.0,
            daily_epsilon_cap=s.daily_epsilon_cap,
            configuration=configuration,
        )

    def _record(self, release: Release, key: SpanKey, head_count: dict, charges: list[Charge]) -> Outcome:
        release.epsilon_spent_today = self.store.spent_after(charges)
        recorded = self.store.record(
            key, release.release_id, release_bytes(release), head_count, release.configuration, charges
        )
        if recorded.reason == "overlap":
            return Outcome(DUPLICATE, spent=recorded)
        if recorded.reason == "cap":
            return Outcome(CAP, spent=recorded)
        return Outcome(RELEASED, release, spent=recorded)


def _terms(head_count: Estimate) -> dict:
    """A head count's value and noise terms, as stored for the next tier's nesting."""
    return {
        "value": head_count.value,
        "terms": [[t.noise_id, t.scale, t.coefficient] for t in head_count.terms],
    }


def _estimate(stored: dict) -> Estimate:
    return Estimate(stored["value"], tuple(Term(i, s, c) for i, s, c in stored["terms"]))
