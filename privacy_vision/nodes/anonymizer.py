"""Anonymizer node: confirmed tracks → keyed rotating IDs, grid cells, size class, heading (no speed); and the
per-track contribution bound of the release grid, whose cell totals (no identifiers) go to the aggregator."""

from __future__ import annotations

import time
from typing import Any

from privacy_vision.core.anonymizer import Anonymizer, AnonymizerSettings, TrackSample, round_time
from privacy_vision.core.contributions import (
    GROUP_TIER,
    TIERS,
    TRACK_GONE_AFTER_S,
    CellTotals,
    ContributionBounder,
    ContributionSettings,
)
from privacy_vision.core.geometry import ConfigError, load_zones, overlapping_zones
from privacy_vision.nodes.common import (
    ANALYTICS_TOPIC,
    ANONYMIZED_TOPIC,
    CELL_TOTALS_TOPIC,
    OK,
    RELIABLE_QOS,
    TRACKS_TOPIC,
    ParameterSpec,
    PeerParameter,
    PrivacyVisionNode,
    StartupError,
    run_node,
    seconds_to_stamp,
    stamp_to_seconds,
)
from privacy_vision_msgs.msg import AnonymizedTrack, AnonymizedTracks, Track, Tracks, ZoneAnalytics
from privacy_vision_msgs.msg import CellTotals as CellTotalsMessage

# The anonymizer's settings (core/anonymizer.py) and the contribution bound's (core/contributions.py): all changeable at
# runtime and audit-logged.
ANONYMIZER_PARAMETERS = {
    "grid_size_m": ParameterSpec("floor positions are snapped to cells of this size (metres)", 0.05, 10.0),
    "time_precision_s": ParameterSpec("timestamps are floored to this precision (seconds)", 0.0, 3600.0),
    "rotation_interval_s": ParameterSpec(
        "privacy-ID key lifetime; IDs of two key periods cannot be linked", 1.0, 86400.0
    ),
    "direction_sectors": ParameterSpec("heading sectors: 4 or 8", 4, 8),
    "min_speed_mps": ParameterSpec("below this floor speed the direction is 'none'", 0.0, 5.0),
    "size_thresholds": ParameterSpec("box height / frame height limits of small and medium"),
}
CONTRIBUTION_PARAMETERS = {
    "window_s": ParameterSpec("period of the window tier in seconds; must divide an hour", 1.0, 3600.0),
    "cells_per_day": ParameterSpec(f"L: cells one track may count in per UTC day, per tier ({', '.join(TIERS)})"),
    "dwell_thresholds_s": ParameterSpec("dwell bins: short below the first, long from the second (seconds)"),
    "boundary_hysteresis_m": ParameterSpec("distance from a zone edge needed to count an entry or exit", 0.0, 5.0),
    "groups_per_day": ParameterSpec(
        "strict mode (aggregator mode 'strict'): pending groups one track may join per UTC day; 0 = none formed",
        0,
        1000,
    ),
}


class AnonymizerNode(PrivacyVisionNode):
    """The last node that knows track identity: pseudonyms out, and the per-track bound kept in."""

    def __init__(self, **node_options: Any) -> None:
        super().__init__("anonymizer", **node_options)

    def configure(self) -> None:
        settings = AnonymizerSettings(**self.declare_settings(AnonymizerSettings(), ANONYMIZER_PARAMETERS))
        zones_file = self.declare(
            "zones_file", "", "YAML with zone polygons in floor metres (the release grid's zones)", read_only=True
        )
        contribution = ContributionSettings(**self.declare_settings(ContributionSettings(), CONTRIBUTION_PARAMETERS))
        try:
            self.anonymizer = Anonymizer(settings, time.time())
            if not zones_file:
                raise ConfigError("parameter 'zones_file' is empty: point it at a zones YAML (see config/zones.yaml)")
            zones = load_zones(zones_file)
            self.bounder = ContributionBounder(zones, contribution)
        except (ConfigError, ValueError) as error:
            raise StartupError(self.get_name(), str(error)) from None
        for first, second in overlapping_zones(zones):
            self.get_logger().warning(
                f"zones {first} and {second} overlap: a person in both counts in both (still within the bound L)"
            )
        self.privacy_parameters = {*ANONYMIZER_PARAMETERS, *CONTRIBUTION_PARAMETERS}
        self.dpia_parameters = set(self.privacy_parameters)
        self.publisher = self.create_data_publisher(AnonymizedTracks, ANONYMIZED_TOPIC, RELIABLE_QOS)
        self.cells_publisher = self.create_data_publisher(CellTotalsMessage, CELL_TOTALS_TOPIC, RELIABLE_QOS)
        self.create_subscription(Tracks, TRACKS_TOPIC, self._on_tracks, RELIABLE_QOS)
        # Strict mode: a released group restarts its zone's group. Releases are public, so reading them adds nothing.
        self.create_subscription(ZoneAnalytics, ANALYTICS_TOPIC, self._on_release, RELIABLE_QOS)
        self.aggregator_mode = PeerParameter(self, "aggregator", "mode")  # strict mode needs groups_per_day ≥ 1
        self.frames = 0
        self.cells_closed = 0
        self.create_timer(1.0, self._report)

    def _settings_after(self, updates: dict[str, Any]) -> tuple[AnonymizerSettings, ContributionSettings | None]:
        """The anonymizer's and (None when unchanged) the contribution bound's settings once `updates` is in force."""
        changes = {name: tuple(value) if isinstance(value, (list, tuple)) else value for name, value in updates.items()}
        contribution = {name: value for name, value in changes.items() if name in CONTRIBUTION_PARAMETERS}
        anonymizer = AnonymizerSettings(
            **{
                **self.anonymizer.settings.__dict__,
                **{n: v for n, v in changes.items() if n not in CONTRIBUTION_PARAMETERS},
            }
        )
        return anonymizer, ContributionSettings(
            **{**self.bounder.settings.__dict__, **contribution}
        ) if contribution else None

    def validate_parameters(self, updates: dict[str, Any]) -> None:
        if updates.get("groups_per_day") == 0 and self.aggregator_mode.value == "strict":
            raise ValueError(
                "the aggregator is in strict mode, which releases only groups: set /aggregator mode default first"
            )
        anonymizer, contribution = self._settings_after(updates)
        anonymizer.validate()
        if contribution is not None:
            self.bounder.check(contribution)

    def apply_parameters(self, updates: dict[str, Any]) -> None:
        anonymizer, contribution = self._settings_after(updates)
        if contribution is not None:
            self.bounder.reconfigure(contribution)
        self.anonymizer.settings = anonymizer
        if "rotation_interval_s" in updates:
            self.anonymizer.key.rotation_interval_s = anonymizer.rotation_interval_s

    def _on_tracks(self, message: Tracks) -> None:
        if not self.accepting(message):
            return
        now = time.time()
        if self.anonymizer.key.rotate_if_due(now):
            self.get_logger().info(f"privacy key rotated on schedule (epoch {self.anonymizer.key.epoch})")
            self.audit.append("key_rotated", self.get_name(), reason="schedule", epoch=self.anonymizer.key.epoch)
        height = max(message.image_height, 1)
        out = AnonymizedTracks(
            key_epoch=self.anonymizer.key.epoch, grid_size_m=float(self.anonymizer.settings.grid_size_m)
        )
        out.header.frame_id = "floor"
        seconds_to_stamp(
            round_time(stamp_to_seconds(message.header.stamp), self.anonymizer.settings.time_precision_s),
            out.header.stamp,
        )
        confirmed = [
            TrackSample(t.track_id, t.x_m, t.y_m, t.vx_mps, t.vy_mps, (t.box[3] - t.box[1]) / height)
            for t in message.tracks
            if t.state == Track.STATE_CONFIRMED
        ]
        records = self.anonymizer.anonymize_frame(confirmed)
        for record in records:
            out.tracks.append(
                AnonymizedTrack(
                    privacy_id=record.privacy_id,
                    cell_x_m=record.cell_x_m,
                    cell_y_m=record.cell_y_m,
                    size_category=record.size_category,
                    direction=record.direction,
                )
            )
        self.frames += 1
        self.publisher.publish(out)
        closed = self.bounder.observe(
            stamp_to_seconds(message.header.stamp), [(t.track_id, r) for t, r in zip(confirmed, records)]
        )
        self._publish_cells(closed)

    def _on_release(self, message: ZoneAnalytics) -> None:
        if message.tier == GROUP_TIER:
            self.bounder.close_group(
                message.zone_id, stamp_to_seconds(message.period_start), stamp_to_seconds(message.period_end)
            )

    def _publish_cells(self, closed: list[CellTotals]) -> None:
        settings = self.bounder.settings
        for totals in closed:
            message = CellTotalsMessage(
                tier=totals.tier,
                zone_id=totals.zone_id,
                complete=totals.complete,
                occupancy=totals.occupancy,
                direction_counts=list(totals.directions),
                dwell_counts=list(totals.dwell),
                entries=totals.entries,
                exits=totals.exits,
                window_s=float(settings.window_s),
                cells_per_day=list(settings.cells_per_day),
                groups_per_day=settings.groups_per_day,
            )
            message.header.frame_id = "floor"
            message.header.stamp = self.get_clock().now().to_msg()
            seconds_to_stamp(totals.period_start_s, message.period_start)
            seconds_to_stamp(totals.period_end_s, message.period_end)
            self.cells_publisher.publish(message)
            self.cells_closed += 1

    def personal_data_summary(self) -> dict:
        held = self.bounder.tracks_held()
        return {
            "holds_personal_data": held > 0,
            "key_epoch": self.anonymizer.key.epoch,
            "tracks_held": held,
            "rotation_interval_s": self.anonymizer.settings.rotation_interval_s,
            "categories": "per live track (tracker ID, memory only): the release cells it counted in today, its zone stays, "
            f"the open cells' heading and dwell; dropped {TRACK_GONE_AFTER_S:g} s after the track ends. "
            "IDs come from an in-memory key that is never stored",
        }

    def erase_personal_data(self) -> dict:
        epoch = self.anonymizer.forget(time.time())
        tracks = self.bounder.forget()
        self.get_logger().info(
            f"privacy key rotated on request (epoch {epoch}); per-track state of {tracks} tracks dropped"
        )
        return {"key_rotated": True, "key_epoch": epoch, "tracks_purged": tracks}

    def _report(self) -> None:
        self.publish_diagnostic(
            OK,
            "anonymizing",
            {"frames": self.frames, "key_epoch": self.anonymizer.key.epoch, "cells_closed": self.cells_closed},
        )

    def deactivate(self) -> None:
        """Close the open cells (partial periods) so that the aggregator releases what was observed."""
        self._publish_cells(self.bounder.flush())

    def summary(self) -> str:
        return f"{self.frames} frames anonymised, {self.cells_closed} cells closed"


NODE_CLASS = AnonymizerNode  # what node_main runs for this graph node, alone or composed


def main(args: list[str] | None = None) -> None:
    run_node(NODE_CLASS, args)


if __name__ == "__main__":
    main()
