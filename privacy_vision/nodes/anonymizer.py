"""Anonymizer node: confirmed tracks → keyed rotating IDs, grid cells, size class, heading; no speed."""
from __future__ import annotations

import time
from typing import Any

from privacy_vision.core.anonymizer import TRACK_GONE_AFTER_S, Anonymizer, AnonymizerSettings, TrackSample, round_time
from privacy_vision_msgs.msg import AnonymizedTrack, AnonymizedTracks, Track, Tracks
from privacy_vision.nodes.common import (ANONYMIZED_TOPIC, OK, RELIABLE_QOS, TRACKS_TOPIC, PrivacyVisionNode, StartupError,
                                         run_node, seconds_to_stamp, stamp_to_seconds)


class AnonymizerNode(PrivacyVisionNode):
    def __init__(self) -> None:
        super().__init__("anonymizer")
        d = AnonymizerSettings()
        settings = AnonymizerSettings(
            grid_size_m=self.declare("grid_size_m", d.grid_size_m, "floor positions are snapped to cells of this size (metres)", minimum=0.05, maximum=10.0),
            time_precision_s=self.declare("time_precision_s", d.time_precision_s, "timestamps are floored to this precision (seconds)", minimum=0.0, maximum=3600.0),
            rotation_interval_s=self.declare("rotation_interval_s", d.rotation_interval_s, "privacy-ID key lifetime; IDs of two key periods cannot be linked", minimum=1.0, maximum=86400.0),
            direction_sectors=self.declare("direction_sectors", d.direction_sectors, "heading sectors: 4 or 8", minimum=4, maximum=8),
            min_speed_mps=self.declare("min_speed_mps", d.min_speed_mps, "below this floor speed the direction is 'none'", minimum=0.0, maximum=5.0),
            size_thresholds=tuple(self.declare("size_thresholds", list(d.size_thresholds), "box height / frame height limits of small and medium")),
        )
        try:
            self.anonymizer = Anonymizer(settings, time.time())
        except ValueError as error:
            raise StartupError(self.get_name(), str(error)) from None
        self.privacy_parameters = {"grid_size_m", "time_precision_s", "rotation_interval_s", "direction_sectors", "min_speed_mps", "size_thresholds"}
        self.dpia_parameters = set(self.privacy_parameters)
        self.publisher = self.create_publisher(AnonymizedTracks, ANONYMIZED_TOPIC, RELIABLE_QOS)
        self.create_subscription(Tracks, TRACKS_TOPIC, self._on_tracks, RELIABLE_QOS)
        self.offer_personal_data_services()
        self.frames = 0
        self.create_timer(1.0, self._report)
        self.accept_parameter_updates()

    def validate_parameters(self, updates: dict[str, Any]) -> None:
        changes = dict(updates)
        if "size_thresholds" in changes:
            changes["size_thresholds"] = tuple(changes["size_thresholds"])
        candidate = AnonymizerSettings(**{**self.anonymizer.settings.__dict__, **changes})
        candidate.validate()
        self.anonymizer.settings = candidate
        if "rotation_interval_s" in updates:
            self.anonymizer.key.rotation_interval_s = candidate.rotation_interval_s

    def _on_tracks(self, message: Tracks) -> None:
        now = time.time()
        if self.anonymizer.key.rotate_if_due(now):
            self.get_logger().info(f"privacy key rotated on schedule (epoch {self.anonymizer.key.epoch})")
            self.audit.append("key_rotated", self.get_name(), reason="schedule", epoch=self.anonymizer.key.epoch)
        height = max(message.image_height, 1)
        out = AnonymizedTracks(key_epoch=self.anonymizer.key.epoch, grid_size_m=float(self.anonymizer.settings.grid_size_m))
        out.header.frame_id = "floor"
        seconds_to_stamp(round_time(stamp_to_seconds(message.header.stamp), self.anonymizer.settings.time_precision_s), out.header.stamp)
        confirmed = [TrackSample(t.track_id, t.x_m, t.y_m, t.vx_mps, t.vy_mps, (t.box[3] - t.box[1]) / height)
                     for t in message.tracks if t.state == Track.STATE_CONFIRMED]
        for record in self.anonymizer.anonymize_frame(stamp_to_seconds(message.header.stamp), confirmed):
            out.tracks.append(AnonymizedTrack(privacy_id=record.privacy_id, cell_x_m=record.cell_x_m, cell_y_m=record.cell_y_m,
                                              size_category=record.size_category, direction=record.direction,
                                              present_since_s=record.present_since_s))
        self.frames += 1
        self.publisher.publish(out)

    def personal_data_summary(self) -> dict:
        return {"holds_personal_data": False, "key_epoch": self.anonymizer.key.epoch,
                "rotation_interval_s": self.anonymizer.settings.rotation_interval_s,
                "note": "IDs are computed from tracker IDs under an in-memory key that is never stored; the only per-track state is "
                        f"each live track's start time (memory only, dropped {TRACK_GONE_AFTER_S:g} s after the track ends)"}

    def erase_personal_data(self) -> dict:
        epoch = self.anonymizer.forget(time.time())
        self.get_logger().info(f"privacy key rotated on request (epoch {epoch})")
        return {"key_rotated": True, "key_epoch": epoch}

    def _report(self) -> None:
        self.publish_diagnostic(OK, "anonymizing", {"frames": self.frames, "key_epoch": self.anonymizer.key.epoch})


def main(args: list[str] | None = None) -> None:
    run_node(AnonymizerNode, args)


if __name__ == "__main__":
    main()
