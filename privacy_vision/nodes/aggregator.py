"""Aggregator node: OpenDP noise on every cell of the public release grid, k on noisy values, daily ledger."""

from __future__ import annotations

import time
import uuid
from typing import Any

from privacy_vision.core.aggregator import MODES, AggregatorSettings, Bounds, CellReleaser, Release
from privacy_vision.core.contributions import TIERS, CellTotals
from privacy_vision.core.privacy import PrivacyLedger
from privacy_vision.nodes.common import (
    ANALYTICS_TOPIC,
    CELL_TOTALS_TOPIC,
    ERROR,
    LATCHED_QOS,
    OK,
    RELIABLE_DEEP_QOS,
    WARN,
    ParameterSpec,
    PeerParameter,
    PrivacyVisionNode,
    StartupError,
    run_node,
    seconds_to_stamp,
    stamp_to_seconds,
)
from privacy_vision.nodes.live_dpia import LiveDpia
from privacy_vision_msgs.msg import CellTotals as CellTotalsMessage
from privacy_vision_msgs.msg import PrivacyParameters, ZoneAnalytics

# The releaser's settings (core/aggregator.py AggregatorSettings), all changeable at runtime and audit-logged.
RELEASE_PARAMETERS = {
    "epsilon_per_track_day": ParameterSpec(
        "DP epsilon of one track's whole UTC day (all tiers, all cells)", 0.001, 100.0
    ),
    "tier_shares": ParameterSpec(f"shares of epsilon_per_track_day for the tiers {', '.join(TIERS)} (normalised)"),
    "hour_metric_shares": ParameterSpec(
        "shares of an hour cell's epsilon: occupancy, direction, dwell, entries, exits"
    ),
    "k": ParameterSpec("cells whose noisy occupancy is below k are shown as '< k'", 1, 1000),
    "daily_epsilon_cap": ParameterSpec(
        "epsilon per track-day the ledger allows per UTC day over all configurations", 0.001, 1e6
    ),
    "mode": ParameterSpec(
        f"release mode: one of {MODES} (strict: only groups of at least k people; needs anonymizer groups_per_day ≥ 1)"
    ),
    "strict_delta": ParameterSpec("strict mode: delta per track-day of the hard rule 'true size ≥ k'", 1e-12, 1e-3),
    "strict_test_share": ParameterSpec("strict mode: share of a group's epsilon for its threshold test", 0.01, 0.99),
}


def message_from_release(release: Release) -> ZoneAnalytics:
    """A release as the message the uplink turns back into it (nodes/uplink.py: release_from_message)."""
    message = ZoneAnalytics(
        release_id=release.release_id,
        zone_id=release.zone_id,
        tier=release.tier,
        complete=release.complete,
        below_k=release.below_k,
        occupancy=release.occupancy,
        entries=release.entries,
        exits=release.exits,
        entries_today=release.entries_today,
        direction_labels=list(release.direction_counts),
        direction_counts=list(release.direction_counts.values()),
        dwell_labels=list(release.dwell_counts),
        dwell_counts=list(release.dwell_counts.values()),
    )
    message.header.frame_id = "floor"
    seconds_to_stamp(release.period_start_s, message.period_start)
    seconds_to_stamp(release.period_end_s, message.period_end)
    message.privacy = PrivacyParameters(
        mechanism=release.mechanism,
        privacy_unit=release.privacy_unit,
        epsilon_cell=release.epsilon_cell,
        epsilon_track_day=release.epsilon_track_day,
        delta_track_day=release.delta_track_day,
        cells_per_day=release.cells_per_day,
        window_s=release.window_s,
        k=release.k,
        mode=release.mode,
        epsilon_spent_today=release.epsilon_spent_today,
        daily_epsilon_cap=release.daily_epsilon_cap,
        metric_names=list(release.epsilon_by_metric),
        metric_epsilons=list(release.epsilon_by_metric.values()),
    )
    return message


class AggregatorNode(PrivacyVisionNode):
    """The only producer of what leaves the device; holds no per-person state."""

    def __init__(self, **node_options: Any) -> None:
        super().__init__("aggregator", **node_options)

    def configure(self) -> None:
        ledger_path = self.declare(
            "ledger_path", "var/privacy_ledger.sqlite", "SQLite file of the daily privacy-budget ledger", read_only=True
        )
        settings = AggregatorSettings(**self.declare_settings(AggregatorSettings(), RELEASE_PARAMETERS))
        self.declare("privacy_unit", "track-day", "what one DP neighbour differs in", read_only=True)
        try:
            self.releaser = CellReleaser(
                settings, PrivacyLedger(ledger_path, settings.daily_epsilon_cap), lambda: str(uuid.uuid4()), time.time
            )
        except ValueError as error:
            raise StartupError(self.get_name(), str(error)) from None
        self.privacy_parameters = set(RELEASE_PARAMETERS)
        self.dpia_parameters = self.privacy_parameters | {"privacy_unit"}
        self.anonymizer_groups = PeerParameter(self, "anonymizer", "groups_per_day")  # strict mode needs its groups
        self.live_dpia = LiveDpia(self, lambda event, **data: self.audit.append(event, self.get_name(), **data))
        self.publisher = self.create_data_publisher(ZoneAnalytics, ANALYTICS_TOPIC, LATCHED_QOS)
        self.create_subscription(CellTotalsMessage, CELL_TOTALS_TOPIC, self._on_cell, RELIABLE_DEEP_QOS)
        self.released = 0
        self.below_k = 0
        self._cap_logged_day: str | None = None
        self.create_timer(1.0, self._report)
        self.get_logger().info(
            f"epsilon {settings.epsilon_per_track_day:g} per track-day over the tiers {', '.join(TIERS)}, k={settings.k} on noisy values, "
            f"daily cap {settings.daily_epsilon_cap:g}"
        )

    @staticmethod
    def _changes(updates: dict[str, Any]) -> dict[str, Any]:
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
            AggregatorSettings(**{**self.releaser.settings.__dict__, **changes}).validate()

    def apply_parameters(self, updates: dict[str, Any]) -> None:
        if changes := self._changes(updates):
            self.releaser.reconfigure(AggregatorSettings(**{**self.releaser.settings.__dict__, **changes}))
            self.get_logger().info(f"privacy parameters updated: {changes}")

    def deactivate(self) -> None:
        """Nothing to close here: the aggregator holds no open cell (the anonymizer closed its cells when it deactivated,
        before this node's turn, and each was released on arrival); the base class then waits until the uplink has
        acknowledged every release."""

    def summary(self) -> str:
        return f"{self.released} releases published ({self.below_k} below k)"

    def _on_cell(self, message: CellTotalsMessage) -> None:
        if not self.accepting(message):
            return
        totals = CellTotals(
            message.tier,
            message.zone_id,
            stamp_to_seconds(message.period_start),
            stamp_to_seconds(message.period_end),
            message.complete,
            message.occupancy,
            tuple(message.direction_counts),
            tuple(message.dwell_counts),
            message.entries,
            message.exits,
        )
        release = self.releaser.release(
            totals, Bounds(message.window_s, tuple(int(n) for n in message.cells_per_day), int(message.groups_per_day))
        )
        if release is not None:
            self._publish(release)
        if self.releaser.strict_without_groups and totals.tier == TIERS[0]:
            self.get_logger().warning(
                "strict mode, but the anonymizer forms no groups: nothing is released until anonymizer groups_per_day ≥ 1"
            )
        day = self.releaser.cap_reached_day
        if day and day != self._cap_logged_day:
            self._cap_logged_day = day
            self.get_logger().error(
                f"daily epsilon cap {self.releaser.settings.daily_epsilon_cap:g} reached for {day}: "
                "this configuration cannot be charged again today (too many changes of the privacy settings)"
            )
            self.publish_diagnostic(ERROR, "daily privacy budget exhausted", {"day": day})
            self.audit.append(
                "budget_cap_reached",
                self.get_name(),
                day=day,
                daily_epsilon_cap=self.releaser.settings.daily_epsilon_cap,
            )

    def _publish(self, release: Release) -> None:
        message = message_from_release(release)
        message.header.stamp = self.get_clock().now().to_msg()
        self.publisher.publish(message)
        self.released += 1
        self.below_k += release.below_k

    def personal_data_summary(self) -> dict:
        return {
            "holds_personal_data": False,
            "categories": "none: the aggregator receives per-cell totals without identifiers; per-track state is in the anonymizer",
        }

    def erase_personal_data(self) -> dict:
        return {"per_person_records_held": 0}

    def _report(self) -> None:
        if self.releaser.cap_reached_day:
            self.publish_diagnostic(
                ERROR, "daily privacy budget exhausted", {"releases": self.released, "below_k": self.below_k}
            )
        elif self.releaser.strict_without_groups:
            self.publish_diagnostic(
                WARN, "strict mode without groups: set anonymizer groups_per_day ≥ 1", {"releases": self.released}
            )
        else:
            self.publish_diagnostic(OK, "aggregating", {"releases": self.released, "below_k": self.below_k})


NODE_CLASS = AggregatorNode  # what node_main runs for this graph node, alone or composed


def main(args: list[str] | None = None) -> None:
    run_node(NODE_CLASS, args)


if __name__ == "__main__":
    main()
