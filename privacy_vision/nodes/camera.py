"""Camera node: reads a video file, image folder, V4L2 device or stream URL and publishes raw frames."""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from sensor_msgs.msg import Image

from privacy_vision.core.imaging import frame_to_fields, zero_message_data
from privacy_vision.nodes.common import (IMAGE_QOS, IMAGE_TOPIC, OK, WARN, PrivacyVisionNode, apply_capture_updates, declare_capture,
                                         run_node, seconds_to_stamp)


class CameraNode(PrivacyVisionNode):
    def __init__(self) -> None:
        super().__init__("camera")
        self.capture = declare_capture(self)
        self.frame_id = self.declare("frame_id", "camera", "frame_id of published images", read_only=True)
        self.wait_for_subscriber_s = self.declare("wait_for_subscriber_s", 10.0, "recorded sources: wait this long for a subscriber before the first frame (0 = no wait)", minimum=0.0, maximum=600.0, read_only=True)
        self.publisher = self.create_publisher(Image, IMAGE_TOPIC, IMAGE_QOS)
        self._thread = threading.Thread(target=self._publish_loop, name="camera-publisher", daemon=True)
        self._thread.start()
        self.create_timer(1.0, self._report)
        self._started = time.monotonic()
        self.accept_parameter_updates()
        self.get_logger().info(f"publishing {self.capture.source.kind} source on /{IMAGE_TOPIC} (source fps {self.capture.source.source_fps:.1f})")

    @property
    def published(self) -> int:
        return self.capture.delivered

    def validate_parameters(self, updates: dict[str, Any]) -> None:
        apply_capture_updates(self.capture, updates)

    def _wait_for_subscriber(self) -> None:
        """A recorded source would otherwise lose its first frames while discovery completes."""
        if self.capture.source.is_live or not self.wait_for_subscriber_s:
            return
        deadline = time.monotonic() + self.wait_for_subscriber_s
        while self.publisher.get_subscription_count() == 0 and time.monotonic() < deadline and not self.capture.stop.is_set():
            time.sleep(0.05)
        if self.publisher.get_subscription_count() == 0:
            self.get_logger().warning(f"no subscriber on /{IMAGE_TOPIC} after {self.wait_for_subscriber_s:g} s; publishing anyway")
        else:
            time.sleep(0.2)  # let the matched reader finish its own side of the handshake

    def _publish_loop(self) -> None:
        self._wait_for_subscriber()
        self.capture.run(self._publish)
        self.publish_diagnostic(OK, "end of stream", {"frames": self.published})
        self.finish(0)

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
        self.publish_diagnostic(level, "streaming", {"frames": self.published, "fps": f"{self.published / elapsed:.2f}",
                                                     "skipped_unreadable": source.skipped_corrupt, "source_kind": source.kind})

    def on_shutdown(self) -> None:
        self.capture.stop.set()
        self._thread.join(timeout=2.0)
        self.capture.close()


def main(args: list[str] | None = None) -> None:
    run_node(CameraNode, args)


if __name__ == "__main__":
    main()
