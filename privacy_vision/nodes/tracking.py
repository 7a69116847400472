"""Tracking node: motion-only ByteTrack association, foot points projected to floor metres."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import numpy as np
from geometry_msgs.msg import Quaternion, TransformStamped, Vector3
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage

from privacy_vision.core.camera_pose import CAMERA_FRAME, FLOOR_FRAME, CameraPose, camera_pose
from privacy_vision.core.geometry import ConfigError, Homography, load_homography
from privacy_vision.core.graph import TF_STATIC_TOPIC
from privacy_vision.core.tracking import ByteTracker, TrackerSettings, TrackState, unreused_first_id
from privacy_vision.nodes.common import (
    DETECTIONS_TOPIC,
    ERROR,
    OK,
    RELIABLE_QOS,
    TRACKS_TOPIC,
    PrivacyVisionNode,
    StartupError,
    run_node,
    stamp_to_seconds,
)
from privacy_vision_msgs.msg import Detections, Track, Tracks

# What tf2's StaticTransformBroadcaster offers: a late rviz, Foxglove or `ros2 topic echo` gets the transform at once.
TF_STATIC_QOS = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

# ROS parameters cannot be unset: this value of a score threshold stands for None in TrackerSettings,
# i.e. the pair tuned for the backend that produced the detections.
BACKEND_TUNED = -1.0
SCORE_THRESHOLDS = ("track_thresh", "new_track_thresh")

TRACKER_PARAMETERS = {
    "track_thresh": (
        "detections at or above this score are matched first (ByteTrack high set); "
        "-1 = the value tuned for the detector backend named on /detections",
        -1.0,
        1.0,
    ),
    "low_thresh": (
        "detections below this score are ignored; one at or above it that no track takes starts a tentative track",
        0.0,
        1.0,
    ),
    "new_track_thresh": (
        "a track's confirmation starts with a detection at or above this score; "
        "-1 = the value tuned for the detector backend named on /detections",
        -1.0,
        1.0,
    ),
    "match_iou": ("minimum IoU of the first association", 0.01, 0.99),
    "low_match_iou": ("minimum IoU of the low-score association", 0.01, 0.99),
    "min_hits": (
        "consecutive high matches, the first at new_track_thresh, before a track is confirmed "
        "(every track, tentative ones too, carries a presence_weight on /tracks)",
        1,
        100,
    ),
    "track_buffer_s": ("seconds a lost track is kept for re-association", 0.0, 60.0),
    "velocity_window_s": ("floor velocity is fitted over this many seconds of positions", 0.1, 10.0),
    "reassociation_m": (
        "a lost track takes an unmatched detection this close on the floor, metres (0 = off)",
        0.0,
        10.0,
    ),
}


class TrackingNode(PrivacyVisionNode):
    """Motion-only tracks in floor metres from the detections; no appearance features are kept."""

    def __init__(self, **node_options: Any) -> None:
        super().__init__("tracking", **node_options)

    def configure(self) -> None:
        homography_file = self.declare(
            "homography_file",
            "",
            "YAML with 'homography' (3x3 image->floor) or 'pairs' [u, v, x_m, y_m]",
            read_only=True,
        )
        homography_values = self.declare(
            "homography",
            [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "3x3 image->floor matrix, used when homography_file is empty",
            read_only=True,
        )
        try:
            homography = (
                load_homography(homography_file) if homography_file else Homography.from_values(homography_values)
            )
        except ConfigError as error:
            raise StartupError(self.get_name(), str(error)) from None
        self._publish_camera_pose(homography)
        defaults = TrackerSettings()
        values = {}
        for f in fields(TrackerSettings):
            description, minimum, maximum = TRACKER_PARAMETERS[f.name]
            default = getattr(defaults, f.name)
            values[f.name] = self.declare(
                f.name, BACKEND_TUNED if default is None else default, description, minimum=minimum, maximum=maximum
            )
        try:
            self.tracker = ByteTracker(TrackerSettings(**settings_values(values)), homography, unreused_first_id())
        except ValueError as error:
            raise StartupError(self.get_name(), str(error)) from None
        self.backend = ""  # the detector backend of the last /detections message
        self.unreadable_frames = 0
        self.dpia_parameters = {"track_buffer_s"}
        self.publisher = self.create_data_publisher(Tracks, TRACKS_TOPIC, RELIABLE_QOS)
        self.create_subscription(Detections, DETECTIONS_TOPIC, self._on_detections, RELIABLE_QOS)
        self.frames = 0
        self.create_timer(1.0, self._report)

    def _publish_camera_pose(self, homography: Homography) -> None:
        """floor -> camera on /tf_static, where the homography and the intrinsics determine it (otherwise the reason
        is on /diagnostics and the log: the tracks do not need it)."""
        principal_point = self.declare(
            "camera_principal_point_px",
            [384.0, 288.0],
            "image pixel [u, v] of the optical axis, for the floor -> camera transform on /tf_static (the image centre; "
            "the default is that of the 768x576 PETS frames of config/homography_pets.yaml)",
            read_only=True,
        )
        focal_px = self.declare(
            "camera_focal_px",
            0.0,
            "focal length in pixels for the floor -> camera transform on /tf_static; 0 = estimated from the homography "
            "(square pixels, no skew)",
            minimum=0.0,
            maximum=100000.0,
            read_only=True,
        )
        if len(principal_point) != 2:
            raise StartupError(self.get_name(), f"camera_principal_point_px needs [u, v], got {list(principal_point)}")
        try:
            self.camera: CameraPose | None = camera_pose(homography, tuple(principal_point), focal_px)
            self.no_camera_pose = ""
        except ConfigError as error:
            self.camera, self.no_camera_pose = None, f"no {TF_STATIC_TOPIC}: {error}"
            self.get_logger().warning(self.no_camera_pose)
            return
        transform = TransformStamped(child_frame_id=CAMERA_FRAME)
        transform.header.frame_id = FLOOR_FRAME
        transform.header.stamp = self.get_clock().now().to_msg()
        x, y, z = (float(v) for v in self.camera.position_m)
        transform.transform.translation = Vector3(x=x, y=y, z=z)
        transform.transform.rotation = Quaternion(**dict(zip("xyzw", self.camera.quaternion_xyzw())))
        self.tf_static = self.create_publisher(TFMessage, TF_STATIC_TOPIC, TF_STATIC_QOS)
        self.tf_static.publish(TFMessage(transforms=[transform]))
        self.get_logger().info(
            f"{TF_STATIC_TOPIC}: camera at ({x:.2f}, {y:.2f}, {z:.2f}) m in the floor frame, focal "
            f"{self.camera.focal_px:.0f} px ({'estimated from the homography' if self.camera.estimated_focal else 'set'})"
        )

    def _settings_after(self, updates: dict[str, Any]) -> TrackerSettings:
        known = {k: v for k, v in updates.items() if k in TRACKER_PARAMETERS}
        return replace(self.tracker.settings, **settings_values(known))

    def validate_parameters(self, updates: dict[str, Any]) -> None:
        self._settings_after(updates).validate()

    def apply_parameters(self, updates: dict[str, Any]) -> None:
        self.tracker.settings = self._settings_after(updates)

    def _on_detections(self, message: Detections) -> None:
        if not self.accepting(message):
            return
        boxes = np.array([[d.x_min, d.y_min, d.x_max, d.y_max] for d in message.detections]).reshape(-1, 4)
        scores = np.array([d.confidence for d in message.detections])
        try:
            tracks = self.tracker.update(stamp_to_seconds(message.header.stamp), boxes, scores, message.backend)
        except ValueError as error:  # a backend with no tuned thresholds: its scores cannot be read
            self.unreadable_frames += 1
            self.get_logger().error(f"/detections frame dropped: {error}", throttle_duration_sec=10.0)
            return
        self.backend = message.backend
        self.frames += 1
        out = Tracks(header=message.header, image_width=message.image_width, image_height=message.image_height)
        out.tracks = [
            Track(
                track_id=t.track_id,
                state=int(t.state),
                x_m=t.floor_xy[0],
                y_m=t.floor_xy[1],
                vx_mps=t.floor_velocity[0],
                vy_mps=t.floor_velocity[1],
                box=[float(v) for v in t.box],
                age_frames=t.age_frames,
                presence_weight=t.presence_weight,
            )
            for t in tracks
        ]
        self.publisher.publish(out)

    def personal_data_summary(self) -> dict:
        states = [TrackState(t.state).name.lower() for t in self.tracker.tracks]
        return {
            "holds_personal_data": bool(states),
            "live_tracks": {s: states.count(s) for s in sorted(set(states))},
            "categories": "motion-only tracks in memory: box, floor position and velocity; no appearance features",
            "retention": f"a lost track is dropped after {self.tracker.settings.track_buffer_s} s",
        }

    def erase_personal_data(self) -> dict:
        count = len(self.tracker.tracks)
        self.tracker.reset()
        return {"tracks_purged": count}

    def summary(self) -> str:
        return f"{self.frames} frames tracked"

    def _report(self) -> None:
        confirmed = sum(t.state == TrackState.CONFIRMED for t in self.tracker.tracks)
        report = {"frames": self.frames, "confirmed_tracks": confirmed, "all_tracks": len(self.tracker.tracks)}
        if self.unreadable_frames:
            report["frames_dropped_unknown_backend"] = self.unreadable_frames
        if self.camera is not None:
            report["camera_height_m"] = f"{self.camera.position_m[2]:.2f}"
            report["camera_focal_px"] = f"{self.camera.focal_px:.0f}"
        if self.backend:
            report["score_thresholds"] = "track {} / new track {} for {}".format(
                *self.tracker.settings.score_thresholds(self.backend), self.backend
            )
            report["presence_weights"] = (
                f"calibrated for {self.backend}"
                if self.backend in self.tracker.presence
                else f"no calibration for {self.backend}: confirmed tracks count 1, others 0"
            )
        self.publish_diagnostic(
            ERROR if self.unreadable_frames else OK,
            f"tracking{'; ' + self.no_camera_pose if self.no_camera_pose else ''}",
            report,
        )


def settings_values(parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameter values → TrackerSettings fields: a score threshold of -1 is None (the backend's tuned value);
    other negative thresholds are refused."""
    for name in SCORE_THRESHOLDS:
        if name in parameters and parameters[name] < 0 and parameters[name] != BACKEND_TUNED:
            raise ValueError(f"{name} must be -1 (the value tuned for the detector backend) or a score in [0, 1]")
    return {
        name: None if name in SCORE_THRESHOLDS and value == BACKEND_TUNED else value
        for name, value in parameters.items()
    }


NODE_CLASS = TrackingNode  # what node_main runs for this graph node, alone or composed


def main(args: list[str] | None = None) -> None:
    run_node(NODE_CLASS, args)


if __name__ == "__main__":
    main()
