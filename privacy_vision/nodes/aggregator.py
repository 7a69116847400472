"""Aggregator node: the anonymizer's closed segments in (~/release_cells), OpenDP noise drawn once, each release
recorded durably (with its ledger charge) before it is acknowledged and published; the uplink sends it from the
same store. It refuses, never crashes: a store or audit failure is an ERROR and the anonymizer keeps the totals."""

from __future__ import annotations

import uuid
from typing import Any

from privacy_vision.core.audit import AuditBroken, entries_of
from privacy_vision.core.camera_pose import FLOOR_FRAME
from privacy_vision.core.release.events import EventTotals
from privacy_vision.core.release.grid import EVENTS_KIND, GROUP_KIND, PRESENCE_KIND, Context, Grid
from privacy_vision.core.release.mechanisms import MODES, ReleaseSettings
from privacy_vision.core.release.presence import PresenceTotals
from privacy_vision.core.release.releaser import CAP, RELEASED, Release, Releaser
from privacy_vision.core.release.store import AUDIT_CHARGE_EVENT, AUDIT_RELEASE_EVENT, ReleaseStore, StoreMismatch
from privacy_vision.core.release.strict import GroupTotals
from privacy_vision.core.release_schema import wire_from_release
from privacy_vision.core.uplink import OutboxFull, OutboxUnavailable
from privacy_vision.nodes.common import (
    ANALYTICS_TOPIC,
    ERROR,
    LATCHED_QOS,
    OK,
    WARN,
    ParameterSpec,
    PeerParameter,
    PrivacyVisionNode,
    StartupError,
    run_node,
)
from privacy_vision.nodes.live_dpia import LiveDpia
from privacy_vision_msgs.msg import CellTotals, PrivacyParameters, ZoneAnalytics
from privacy_vision_msgs.srv import ReleaseCells

# The releaser's settings (core/release/mechanisms.py ReleaseSettings), all changeable at runtime and audit-logged.
RELEASE_PARAMETERS = {
    "epsilon_per_presence_hour": ParameterSpec(
        "DP epsilon of one hour of a person's presence, all presence tiers and metrics together", 0.001, 10000.0
    ),
    "presence_tier_shares": ParameterSpec("shares of epsilon_per_presence_hour for the tiers window, hour, day"),
    "hour_metric_shares": ParameterSpec("shares of the hour tier's epsilon: occupancy, heading, dwell"),
    "epsilon_events_per_track_day": ParameterSpec(
        "DP epsilon of one stitched track's day of footfall, entries and exits", 0.001, 1000.0
    ),
    "event_metric_shares": ParameterSpec("shares of the events' epsilon: footfall, entries, exits (0 = not released)"),
    "k": ParameterSpec(
        "display rule on noisy values: a release whose noisy head count is below k is shown as '< k'", 1, 1000
    ),
    "daily_epsilon_cap": ParameterSpec(
        "epsilon per stitched-track-day the ledger allows per device day over all bound instances", 0.001, 1e6
    ),
    "mode": ParameterSpec(
        f"release mode: one of {MODES} (strict: only groups of at least k; needs anonymizer groups_per_day ≥ 1)"
    ),
    "strict_epsilon_per_track_day": ParameterSpec("strict mode: epsilon per stitched track and day", 0.001, 1000.0),
    "strict_delta": ParameterSpec("strict mode: delta per stitched-track-day, as the proof states it", 1e-12, 1e-3),
    "strict_test_share": ParameterSpec("strict mode: share of a group's epsilon for its threshold test", 0.01, 0.99),
}


def totals_from_message(cell: CellTotals) -> tuple[PresenceTotals | EventTotals | GroupTotals, Context]:
    """The inverse of the anonymizer node's cell_message."""
    context = Context(Grid(cell.window_s, cell.tick_s), cell.weight_steps, cell.zones_per_day, cell.groups_per_day)
    if cell.kind == PRESENCE_KIND:
        totals = PresenceTotals(
            cell.tier,
            cell.zone_id,
            cell.period_start_s,
            cell.segment_start_s,
            cell.segment_end_s,
            cell.observed_ticks,
            tuple(int(v) for v in cell.bins),
        )
    elif cell.kind == EVENTS_KIND:
        totals = EventTotals(
            cell.zone_id,
            cell.period_start_s,
            cell.segment_start_s,
            cell.segment_end_s,
            cell.footfall,
            cell.entries,
            cell.exits,
            cell.zones_per_day,
            cell.bound_instance,
            cell.observed_s,
        )
    elif cell.kind == GROUP_KIND:
        totals = GroupTotals(
            cell.zone_id, cell.period_start_s, cell.period_end_s, cell.size, cell.groups_per_day, cell.bound_instance
        )
    else:
        raise ValueError(f"unknown kind of totals {cell.kind!r}")
    return totals, context


def message_from_release(release: Release) -> ZoneAnalytics:
    """A release as the local topic carries it (the same values and intervals as on the wire)."""
    wire = wire_from_release(release)
    values = wire["values"]
    message = ZoneAnalytics(
        release_id=release.release_id,
        kind=release.kind,
        zone_id=release.zone_id,
        tier=release.tier,
        period_start_s=release.period_start_s,
        period_end_s=release.period_end_s,
        segment_start_s=release.segment_start_s,
        segment_end_s=release.segment_end_s,
        coverage=release.coverage,
        complete=release.complete,
        below_k=release.below_k,
        value_names=list(values),
        values=[v["value"] for v in values.values()],
        lows=[v["low"] for v in values.values()],
        highs=[v["high"] for v in values.values()],
        interval=wire["interval"],
    )
    message.header.frame_id = FLOOR_FRAME
    message.privacy = PrivacyParameters(
        mechanism=release.mechanism,
        privacy_unit=release.privacy_unit,
        epsilon_unit=release.epsilon_unit,
        epsilon_cell=release.epsilon_cell,
        delta=release.delta,
        metric_names=list(release.epsilon_by_metric),
        metric_epsilons=list(release.epsilon_by_metric.values()),
        k=release.k,
        mode=release.mode,
        window_s=release.window_s,
        bound=release.bound,
        epsilon_spent_today=release.epsilon_spent_today,
        daily_epsilon_cap=release.daily_epsilon_cap,
        configuration=release.configuration,
    )
    return message


class AggregatorNode(PrivacyVisionNode):
    """The only producer of what leaves the device; holds no per-person state."""

    def __init__(self, **node_options: Any) -> None:
        super().__init__("aggregator", **node_options)

    def configure(self) -> None:
        store_path = self.declare(
            "release_store",
            "var/releases.sqlite",
            "SQLite release store: released spans, ledger charges, the outbox the uplink sends from",
            read_only=True,
        )
        max_outbox = self.declare(
            "max_outbox",
            100000,
            "releases waiting for the ingest at most; beyond it new releases are refused (the anonymizer keeps them)",
            minimum=1,
            maximum=10_000_000,
            read_only=True,
        )
        settings = ReleaseSettings(**self.declare_settings(ReleaseSettings(), RELEASE_PARAMETERS))
        try:
            settings.validate()
            store = ReleaseStore(store_path, settings.daily_epsilon_cap, max_outbox)
        except (ValueError, OSError) as error:
            raise StartupError(self.get_name(), str(error)) from None
        if store.recovered_from is not None:
            self.get_logger().error(
                f"the release store was not intact ({store.corruption}); moved aside to {store.recovered_from}"
            )
            self.audit.append(
                "release_store_recovered",
                self.get_name(),
                reason=store.corruption[:300],
                moved_to=str(store.recovered_from),
            )
        self.releaser = Releaser(settings, store, lambda: str(uuid.uuid4()))
        self.refusing = self._check_store(store)
        self.privacy_parameters = set(RELEASE_PARAMETERS)
        self.dpia_parameters = self.privacy_parameters | {"max_outbox"}
        self.anonymizer_groups = PeerParameter(self, "anonymizer", "groups_per_day")  # strict mode needs its groups
        self.live_dpia = LiveDpia(self, lambda event, **data: self.audit.append(event, self.get_name(), **data))
        self.publisher = self.create_data_publisher(ZoneAnalytics, ANALYTICS_TOPIC, LATCHED_QOS)
        self.create_service(ReleaseCells, "~/release_cells", self._on_cells)
        self.released = self.below_k = self.duplicates = self._ticks = 0
        self.strict_without_groups = False
        self.audit_error = ""
        self.store_error = ""
        self._cap_logged_day: str | None = None
        self._timer = self.create_timer(1.0, self._tick)
        self.get_logger().info(
            f"epsilon {settings.epsilon_per_presence_hour:g} per presence-hour, {settings.epsilon_events_per_track_day:g} "
            f"per stitched-track-day (cap {settings.daily_epsilon_cap:g} a day), k={settings.k} shown on noisy values"
        )

    def _check_store(self, store: ReleaseStore) -> str:
        """The store must hold everything the audit log says was released or charged (deleting or editing the
        ledger must not reset the budget); a mismatch refuses every release, loudly, until it is restored."""
        problem = self._store_problem(store)
        if problem:
            self.get_logger().error(problem)
            self.audit_or_retry("release_store_refused", reason=problem[:500])
        return problem

    def _store_problem(self, store: ReleaseStore) -> str:
        try:
            store.check_against_audit(entries_of(self.audit, {AUDIT_RELEASE_EVENT, AUDIT_CHARGE_EVENT}))
        except (StoreMismatch, AuditBroken) as error:
            return str(error)
        return ""

    def _changes(self, updates: dict[str, Any]) -> dict[str, Any]:
        return {
            name: tuple(value) if isinstance(value, (list, tuple)) else value
            for name, value in updates.items()
            if name in RELEASE_PARAMETERS
        }

    def validate_parameters(self, updates: dict[str, Any]) -> None:
        if updates.get("mode") == "strict" and self.anonymizer_groups.value == 0:
            raise ValueError(
                "strict mode needs anonymizer groups_per_day ≥ 1 (it is 0): set it first, or launch with mode:=strict"
            )
        if changes := self._changes(updates):
            ReleaseSettings(**{**self.releaser.settings.__dict__, **changes}).validate()

    def apply_parameters(self, updates: dict[str, Any]) -> None:
        if changes := self._changes(updates):
            self.releaser.reconfigure(ReleaseSettings(**{**self.releaser.settings.__dict__, **changes}))
            self.get_logger().info(f"privacy parameters updated: {changes}")

    # -- releases ----------------------------------------------------------------------------------------
    def _on_cells(self, request: ReleaseCells.Request, response: ReleaseCells.Response) -> ReleaseCells.Response:
        store = self.releaser.store
        store.checkpoint_each_commit = False  # each release is durable at its commit; the copy-safe checkpoint once
        try:
            response.statuses = [self._release(cell) for cell in request.cells]
        finally:
            store.checkpoint_each_commit = True
            if self.state_label() == "active":
                store.checkpoint()
                self._audit_committed_or_retry()
        # Unknown (-1) unless active: the store is closed at shutdown, and the anonymizer asks again later.
        response.released_until_s = self.releaser.store.released_until() if self.state_label() == "active" else -1.0
        return response

    def _release(self, cell: CellTotals) -> str:
        """One segment: released (durably, then published) or why not; "failed: ..." asks the anonymizer to keep it."""
        if self.state_label() != "active":
            return f"failed: the aggregator is {self.state_label()}"
        if self.refusing:
            return f"failed: {self.refusing[:300]}"
        self.strict_without_groups = self.releaser.settings.mode == "strict" and not cell.groups_per_day
        try:
            totals, context = totals_from_message(cell)
            outcome = self.releaser.release(totals, context)
        except (OutboxFull, OutboxUnavailable) as error:
            self.store_error = str(error)
            self.get_logger().error(f"release refused: {error}")
            return f"failed: {error}"
        except ValueError as error:  # totals that no account accepts (a foreign client): acknowledged, never released
            self.get_logger().error(f"segment refused: {error}")
            return f"invalid: {error}"
        self.store_error = ""
        if outcome.status == RELEASED:
            self._publish(outcome.release)
        elif outcome.status == CAP:
            self._cap_reached(outcome.spent.device_day)
        else:
            self.duplicates += outcome.status == "duplicate"
        return outcome.status

    def _publish(self, release: Release) -> None:
        message = message_from_release(release)
        message.header.stamp = self.get_clock().now().to_msg()
        self.publisher.publish(message)
        self.released += 1
        self.below_k += release.below_k

    def _cap_reached(self, day: str) -> None:
        if day == self._cap_logged_day:
            return
        self._cap_logged_day = day
        cap = self.releaser.settings.daily_epsilon_cap
        self.audit_or_retry("budget_cap_reached", day=day, daily_epsilon_cap=cap)
        self.get_logger().error(
            f"daily epsilon cap {cap:g} reached for {day}: events of further bound instances (restarts, forget "
            "requests, changed bounds) are not released today"
        )

    def _tick(self) -> None:
        """Write the audit entries still due (what the audit log refused after a commit), look again at a refused
        store every 10 s (restored, releasing resumes), then report."""
        self._ticks += 1
        if self.releaser.store.checkpoint_error:
            self.releaser.store.checkpoint()  # tried again each second until the disk takes it
        try:
            if self.refusing and self._ticks % 10 == 0 and not self._store_problem(self.releaser.store):
                self.refusing = ""
                self.get_logger().info("the release store agrees with the audit log again: releasing resumes")
                self.audit_or_retry("release_store_accepted")
            self._audit_committed()
        except Exception as error:  # a full disk or a tampered head: ERROR, retried at the next tick
            self.audit_error = f"{type(error).__name__}: {error}"
        self._report()

    def _audit_committed(self) -> None:
        """The audit entries of committed releases and charges: `releases restore` rebuilds a destroyed store from
        them, so a key committed but not yet audited could be released again after a restore."""
        for event, data in self.releaser.store.unaudited():
            self.audit.append(event, self.get_name(), **data)
            self.releaser.store.mark_audited(event, data)
        self.audit_error = ""

    def _audit_committed_or_retry(self) -> None:
        """Right after each batch's commit (written on the tick alone, a destroyed store lost up to a second of keys:
        bench/chaos.py found 3); what the audit log refuses now is ERROR and retried on the tick."""
        try:
            self._audit_committed()
        except Exception as error:  # a full disk or a tampered head, as on the tick
            self.audit_error = f"{type(error).__name__}: {error}"

    def _report(self) -> None:
        values = {"releases": self.released, "below_k": self.below_k, "duplicates_refused": self.duplicates}
        day, spent = self.releaser.store.spent_today()
        values |= {"device_day": day, "epsilon_spent_today": f"{spent:.4g}"}
        if self.refusing:
            self.publish_diagnostic(ERROR, f"releasing refused: {self.refusing[:200]}", values)
        elif problem := self.store_error or self.releaser.store.checkpoint_error:
            self.publish_diagnostic(ERROR, f"release store failing: {problem[:200]}", values)
        elif self.audit_error:
            self.publish_diagnostic(ERROR, f"audit log failing (retried): {self.audit_error[:200]}", values)
        elif self.strict_without_groups:
            self.publish_diagnostic(
                WARN, "strict mode, but the anonymizer forms no groups (groups_per_day 0): nothing is released", values
            )
        elif self._cap_logged_day == day:
            self.publish_diagnostic(WARN, "daily epsilon cap reached: events of new bound instances withheld", values)
        else:
            self.publish_diagnostic(OK, "aggregating", values)

    def personal_data_summary(self) -> dict:
        return {
            "holds_personal_data": False,
            "categories": "none: segments' totals arrive without identifiers and are released or kept only as noisy values",
        }

    def erase_personal_data(self) -> dict:
        return {"per_person_records_held": 0}

    def summary(self) -> str:
        return f"{self.released} releases published ({self.below_k} below k, {self.duplicates} duplicates refused)"

    def release(self) -> None:
        self.destroy_timer(self._timer)
        self._tick()  # the last commits' audit entries
        self.releaser.store.close()


NODE_CLASS = AggregatorNode  # what node_main runs for this graph node, alone or composed


def main(args: list[str] | None = None) -> None:
    run_node(NODE_CLASS, args)


if __name__ == "__main__":
    main()
