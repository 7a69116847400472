"""Aggregator node: per-zone window statistics with k-anonymity and OpenDP noise under a daily ledger."""
from __future__ import annotations

import json
import os
from typing import Any

from privacy_vision.core.aggregator import DIRECTION_LABELS, DWELL_LABELS, METRICS, AggregatorSettings, Release, ZoneWindowAggregator
from privacy_vision.core.anonymizer import AnonymizedRecord
from privacy_vision.core.geometry import ConfigError, load_zones
from privacy_vision.core.privacy import MECHANISMS, PrivacyLedger
from diagnostic_msgs.msg import DiagnosticArray

from privacy_vision.core.compliance import build_dpia, dpia_json, render_markdown, system_facts
from privacy_vision_msgs.msg import AnonymizedTracks, PrivacyParameters, ZoneAnalytics
from privacy_vision_msgs.srv import GenerateDpia
from privacy_vision.nodes.common import (ANALYTICS_TOPIC, ANONYMIZED_TOPIC, DIAGNOSTICS_TOPIC, ERROR, OK, RELIABLE_QOS, PrivacyVisionNode,
                                         StartupError, run_node, seconds_to_stamp, stamp_to_seconds)

RUNTIME_SETTINGS = ("window_s", "k", "epsilon", "delta", "mechanism", "daily_epsilon_cap", "dwell_thresholds_s", "boundary_hysteresis_m",
                    "footfall_epsilon_per_day", "epsilon_split", "suppression_delta")


class AggregatorNode(PrivacyVisionNode):
    def __init__(self) -> None:
        super().__init__("aggregator")
        d = AggregatorSettings()
        zones_file = self.declare("zones_file", "", "YAML with zone polygons in floor metres", read_only=True)
        ledger_path = self.declare("ledger_path", "var/privacy_ledger.sqlite", "SQLite file of the daily privacy-budget ledger", read_only=True)
        settings = AggregatorSettings(
            window_s=self.declare("window_s", d.window_s, "length of a release window in seconds", minimum=1.0, maximum=86400.0),
            k=self.declare("k", d.k, "k-anonymity: minimum distinct people for a zone-window to be released", minimum=1, maximum=1000),
            epsilon=self.declare("epsilon", d.epsilon, "DP epsilon per zone-window release, split across its metrics", minimum=0.001, maximum=100.0),
            delta=self.declare("delta", d.delta, "DP delta per release (0 for discrete_laplace)", minimum=0.0, maximum=0.001),
            mechanism=self.declare("mechanism", d.mechanism, f"noise mechanism: one of {MECHANISMS}"),
            daily_epsilon_cap=self.declare("daily_epsilon_cap", d.daily_epsilon_cap, "releases stop for the day when this total epsilon is reached", minimum=0.001, maximum=1e6),
            privacy_unit=self.declare("privacy_unit", d.privacy_unit, "what one DP neighbour differs in", read_only=True),
            dwell_thresholds_s=tuple(self.declare("dwell_thresholds_s", list(d.dwell_thresholds_s), "dwell bins: short below the first, long from the second (seconds)")),
            footfall_epsilon_per_day=self.declare("footfall_epsilon_per_day", d.footfall_epsilon_per_day, "ε per day of each zone's cumulative footfall counter (binary tree; 0 = off)", minimum=0.0, maximum=100.0),
            epsilon_split=tuple(self.declare("epsilon_split", list(d.epsilon_split), f"shares of epsilon for {', '.join(METRICS)} (normalised)")),
            suppression_delta=self.declare("suppression_delta", d.suppression_delta, "chance that a group of exactly k passes the noisy threshold (sets the threshold margin)", minimum=1e-12, maximum=0.01),
            boundary_hysteresis_m=self.declare("boundary_hysteresis_m", d.boundary_hysteresis_m, "distance from a zone edge needed to count an entry or exit", minimum=0.0, maximum=5.0),
        )
        try:
            zones = load_zones(zones_file) if zones_file else None
            if zones is None:
                raise ConfigError("parameter 'zones_file' is empty: point it at a zones YAML (see config/zones.yaml)")
            self.aggregator = ZoneWindowAggregator(zones, settings, PrivacyLedger(ledger_path, settings.daily_epsilon_cap))
        except (ConfigError, ValueError) as error:
            raise StartupError(self.get_name(), str(error)) from None
        self.privacy_parameters = set(RUNTIME_SETTINGS)
        self.dpia_parameters = self.privacy_parameters | {"privacy_unit"}
        self.offer_personal_data_services()
        self._live_parameters: dict[str, dict] = {}
        self.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics, 50)
        self.create_service(GenerateDpia, "~/generate_dpia", self._on_generate_dpia)
        self.publisher = self.create_publisher(ZoneAnalytics, ANALYTICS_TOPIC, RELIABLE_QOS)
        self.create_subscription(AnonymizedTracks, ANONYMIZED_TOPIC, self._on_tracks, RELIABLE_QOS)
        self.released = 0
        self.suppressed = 0
        self._cap_logged_day: str | None = None
        self.create_timer(1.0, self._report)
        self.accept_parameter_updates()
        self.get_logger().info(f"{len(zones)} zones, window {settings.window_s:g} s, k={settings.k}, epsilon={settings.epsilon:g} ({settings.mechanism}), "
                               f"released from a noisy occupancy of {self.aggregator.mechanism.threshold} (delta {self.aggregator.mechanism.delta:g})")

    def validate_parameters(self, updates: dict[str, Any]) -> None:
        changes = {k: v for k, v in updates.items() if k in RUNTIME_SETTINGS}
        if not changes:
            return
        for name in ("dwell_thresholds_s", "epsilon_split"):
            if name in changes:
                changes[name] = tuple(changes[name])
        self.aggregator.reconfigure(AggregatorSettings(**{**self.aggregator.settings.__dict__, **changes}))
        self.get_logger().info(f"privacy parameters updated: {changes}")

    def _on_tracks(self, message: AnonymizedTracks) -> None:
        records = [AnonymizedRecord(t.privacy_id, t.cell_x_m, t.cell_y_m, t.size_category, t.direction, t.present_since_s) for t in message.tracks]
        self._publish(self.aggregator.observe(stamp_to_seconds(message.header.stamp), records))

    def _publish(self, releases: list[Release]) -> None:
        for release in releases:
            message = ZoneAnalytics(release_id=release.release_id, zone_id=release.zone_id, suppressed=release.suppressed,
                                    occupancy=release.occupancy, entries=release.entries, exits=release.exits,
                                    cumulative_footfall_today=release.cumulative_footfall_today,
                                    direction_labels=list(DIRECTION_LABELS),
                                    direction_counts=[release.direction_counts[label] for label in DIRECTION_LABELS],
                                    dwell_labels=list(DWELL_LABELS), dwell_counts=[release.dwell_counts[label] for label in DWELL_LABELS])
            message.header.frame_id = "floor"
            message.header.stamp = self.get_clock().now().to_msg()
            seconds_to_stamp(release.window_start_s, message.window_start)
            seconds_to_stamp(release.window_end_s, message.window_end)
            message.privacy = PrivacyParameters(mechanism=release.mechanism, epsilon=release.epsilon, delta=release.delta, k=release.k,
                                                privacy_unit=release.privacy_unit, window_s=release.window_s,
                                                epsilon_spent_today=release.epsilon_spent_today, daily_epsilon_cap=release.daily_epsilon_cap,
                                                footfall_epsilon_per_day=release.footfall_epsilon_per_day,
                                                metric_names=list(release.epsilon_by_metric),
                                                metric_epsilons=list(release.epsilon_by_metric.values()),
                                                suppression_delta=release.suppression_delta,
                                                release_threshold=release.release_threshold)
            self.publisher.publish(message)
            self.released += 1
            self.suppressed += release.suppressed
        day = self.aggregator.cap_reached_day
        if day and day != self._cap_logged_day:
            self._cap_logged_day = day
            self.get_logger().error(f"daily epsilon cap {self.aggregator.settings.daily_epsilon_cap:g} reached for {day}: no more releases today")
            self.publish_diagnostic(ERROR, "daily privacy budget exhausted", {"day": day})
            self.audit.append("budget_cap_reached", self.get_name(), day=day, daily_epsilon_cap=self.aggregator.settings.daily_epsilon_cap)

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            values = {kv.key[6:]: json.loads(kv.value) for kv in status.values if kv.key.startswith("param.")}
            if values:
                self._live_parameters[status.hardware_id] = values

    def _on_generate_dpia(self, request: GenerateDpia.Request, response: GenerateDpia.Response) -> GenerateDpia.Response:
        """DPIA from the parameters the nodes report live (their /diagnostics) and this node's own."""
        fmt = request.format.strip().lower() or "markdown"
        if fmt not in ("markdown", "json"):
            response.success, response.message = False, "format must be 'markdown' or 'json'"
            return response
        params = {node: dict(values) for node, values in self._live_parameters.items()}
        params["aggregator"] = {name: self.get_parameter(name).value for name in self.dpia_parameters}
        topics = {name: list(types) for name, types in self.get_topic_names_and_types()
                  if not name.startswith(("/rosout", "/parameter_events", "/diagnostics"))}
        facts = system_facts(dict(os.environ), topics, float(params.get("uplink", {}).get("ingest_retention_days", 90.0)), "live")
        dpia = build_dpia(params, facts)
        missing = sorted({"detection", "tracking", "anonymizer", "uplink"} - set(params))
        response.success = True
        response.message = f"nodes not reporting (their settings are missing from the document): {missing}" if missing else "complete"
        response.document = render_markdown(dpia) if fmt == "markdown" else dpia_json(dpia)
        self.audit.append("dpia_generated", self.get_name(), format=fmt, risks=len(dpia["risks"]), missing_nodes=missing)
        return response

    def personal_data_summary(self) -> dict:
        people = self.aggregator.open_window_people()
        return {"holds_personal_data": any(people.values()), "people_in_open_window": people,
                "categories": "per-zone sets of rotating privacy IDs for the open window, dropped when it is released",
                "open_window_start_s": self.aggregator.window_start_s}

    def erase_personal_data(self) -> dict:
        people = sum(self.aggregator.open_window_people().values())
        self.aggregator.purge()
        return {"window_entries_purged": people}

    def _report(self) -> None:
        level = ERROR if self.aggregator.cap_reached_day else OK
        self.publish_diagnostic(level, "aggregating", {"releases": self.released, "suppressed": self.suppressed,
                                                       "window_start": self.aggregator.window_start_s})

    def on_shutdown(self) -> None:
        """Release the open (partial) window so no observed data is lost at shutdown."""
        self._publish(self.aggregator.close_window())


def main(args: list[str] | None = None) -> None:
    run_node(AggregatorNode, args)


if __name__ == "__main__":
    main()
