"""Camera node: reads a video file, image folder, V4L2 device or stream URL and publishes raw frames."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sensor_msgs.msg import Image

from privacy_vision.core.imaging import frame_to_fields, zero_message_data
from privacy_vision.nodes.common import (
    IMAGE_QOS,
    IMAGE_TOPIC,
    OK,
    WARN,
    CaptureThread,
    PrivacyVisionNode,
    apply_capture_updates,
    declare_capture,
    declare_wait_for_subscriber,
    run_node,
    seconds_to_stamp,
)


class CameraNode(PrivacyVisionNode):
    """Reads the source and publishes frames, for the camera capture mode (the only node that publishes pixels)."""

    def __init__(self, **node_options: Any) -> None:
        super().__init__("camera", **node_options)

    def configure(self) -> None:
        self.capture = declare_capture(self)
        self.frame_id = self.declare("frame_id", "camera", "frame_id of published images", read_only=True)
        wait_for_subscriber_s = declare_wait_for_subscriber(self)
        self.publisher = self.create_lifecycle_publisher(Image, IMAGE_TOPIC, IMAGE_QOS)
        self.reader = CaptureThread(self, self.capture, self.publisher, wait_for_subscriber_s, self._publish)
        self.create_timer(1.0, self._report)
        self._started = time.monotonic()
        self.get_logger().info(
            f"{self.capture.source.kind} source on {IMAGE_TOPIC} (source fps {self.capture.source.source_fps:.1f}); "
            "frames flow once the node is active"
        )

    def activate(self) -> None:
        self.reader.start()

    def deactivate(self) -> None:
        self.reader.stop()
        self._report()  # the final counts, for whoever shows them (the runner's summary)

    def release(self) -> None:
        self.capture.close()

    def summary(self) -> str:
        return f"{self.published} frames published"

    @property
    def published(self) -> int:
        return self.capture.delivered

    def apply_parameters(self, updates: dict[str, Any]) -> None:
        apply_capture_updates(self.capture, updates)

    def _publish(self, image: np.ndarray, stamp: float) -> None:
        message = Image(**frame_to_fields(image))
        image.fill(0)
        message.header.frame_id = self.frame_id
        seconds_to_stamp(stamp, message.header.stamp)
        try:
            self.publisher.publish(message)
        finally:
            zero_message_data(message)  # the middleware has its own copy now; ours held the frame

    def _report(self) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        source = self.capture.source
        level = OK if source.skipped_corrupt == 0 else WARN
        self.publish_diagnostic(
            level,
            "streaming",
            {
                "frames": self.published,
                "fps": f"{self.published / elapsed:.2f}",
                "skipped_unreadable": source.skipped_corrupt,
                "source_kind": source.kind,
                "dropped_behind_pace": self.capture.skipped_late,
            },
        )


NODE_CLASS = CameraNode  # what node_main runs for this graph node, alone or composed


def main(args: list[str] | None = None) -> None:
    run_node(NODE_CLASS, args)


if __name__ == "__main__":
    main()
