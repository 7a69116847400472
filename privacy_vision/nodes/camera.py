"""Camera node: reads a video file, image folder, V4L2 device or stream URL and publishes raw frames."""
from __future__ import annotations

import threading
import time
from typing import Any

from sensor_msgs.msg import Image

from privacy_vision.core.imaging import frame_to_fields
from privacy_vision.core.sources import FrameSource, SourceError
from privacy_vision.nodes.common import IMAGE_QOS, IMAGE_TOPIC, OK, WARN, PrivacyVisionNode, StartupError, run_node, seconds_to_stamp

RECONNECT_MAX_DELAY_S = 30.0


class CameraNode(PrivacyVisionNode):
    def __init__(self) -> None:
        super().__init__("camera")
        self.source_uri = self.declare("source", "", "video file, image folder, /dev/videoN or camera index, or rtsp/http/GStreamer URL", read_only=True)
        self.loop = self.declare("loop", False, "restart a file or folder at its end")
        self.fps = self.declare("fps", 0.0, "publishing rate limit in frames/s; 0 = the source's own rate for files, as fast as possible otherwise", minimum=0.0, maximum=240.0)
        self.max_frames = self.declare("max_frames", 0, "stop after this many frames (0 = no limit)", minimum=0, maximum=2**31 - 1)
        self.resize_width = self.declare("resize_width", 0, "resize frames to this width keeping aspect (0 = native)", minimum=0, maximum=7680, read_only=True)
        self.frame_id = self.declare("frame_id", "camera", "frame_id of published images", read_only=True)
        self.wait_for_subscriber_s = self.declare("wait_for_subscriber_s", 10.0, "recorded sources: wait this long for a subscriber before the first frame (0 = no wait)", minimum=0.0, maximum=600.0, read_only=True)
        if not self.source_uri:
            raise StartupError(self.get_name(), "parameter 'source' is empty: set it to a video file, image folder, device or URL")
        try:
            self.source = FrameSource(self.source_uri, loop=self.loop, resize_width=self.resize_width)
        except SourceError as error:
            raise StartupError(self.get_name(), str(error)) from None
        self.publisher = self.create_publisher(Image, IMAGE_TOPIC, IMAGE_QOS)
        self.published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish_loop, name="camera-publisher", daemon=True)
        self._thread.start()
        self.create_timer(1.0, self._report)
        self._started = time.monotonic()
        self.accept_parameter_updates()
        self.get_logger().info(f"publishing {self.source.kind} source on /{IMAGE_TOPIC} (source fps {self.source.source_fps:.1f})")

    def validate_parameters(self, updates: dict[str, Any]) -> None:
        if "loop" in updates:
            self.loop = bool(updates["loop"])
            self.source.loop = self.loop and not self.source.is_live
        if "fps" in updates:
            self.fps = float(updates["fps"])
        if "max_frames" in updates:
            self.max_frames = int(updates["max_frames"])

    def _frame_period(self) -> float:
        rate = self.fps or (0.0 if self.source.is_live else self.source.source_fps)
        return 1.0 / rate if rate > 0 else 0.0

    def _wait_for_subscriber(self) -> None:
        """A recorded source would otherwise lose its first frames while discovery completes."""
        if self.source.is_live or not self.wait_for_subscriber_s:
            return
        deadline = time.monotonic() + self.wait_for_subscriber_s
        while self.publisher.get_subscription_count() == 0 and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.05)
        if self.publisher.get_subscription_count() == 0:
            self.get_logger().warning(f"no subscriber on /{IMAGE_TOPIC} after {self.wait_for_subscriber_s:g} s; publishing anyway")
        else:
            time.sleep(0.2)  # let the matched reader finish its own side of the handshake

    def _publish_loop(self) -> None:
        self._wait_for_subscriber()
        attempt = 0
        while not self._stop.is_set():
            try:
                self._stream()
            except SourceError as error:
                self.get_logger().error(str(error))
            if not self.source.is_live or self._stop.is_set() or self._limit_reached():
                break
            attempt += 1
            delay = min(RECONNECT_MAX_DELAY_S, 0.5 * 2 ** attempt)
            self.get_logger().warning(f"live source dropped; reconnecting in {delay:.1f} s (attempt {attempt})")
            self.publish_diagnostic(WARN, "source dropped, reconnecting", {"attempt": attempt})
            if self._stop.wait(delay):
                break
            try:
                self.source.reopen()
                attempt = 0
            except SourceError as error:
                self.get_logger().error(str(error))
        self.get_logger().info(f"end of stream after {self.published} frames ({self.source.skipped_corrupt} unreadable images skipped)")
        self.publish_diagnostic(OK, "end of stream", {"frames": self.published})
        self.finish(0)

    def _limit_reached(self) -> bool:
        return 0 < self.max_frames <= self.published

    def _stream(self) -> None:
        start_wall = time.time()
        next_due = time.monotonic()
        skipped_before = self.source.skipped_corrupt
        for frame in self.source.frames():
            if self._stop.is_set() or self._limit_reached():
                return
            if self.source.skipped_corrupt != skipped_before:
                skipped_before = self.source.skipped_corrupt
                self.get_logger().warning(f"skipped an unreadable image ({skipped_before} so far)")
            period = self._frame_period()
            if period:
                delay = next_due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_due = time.monotonic()
                next_due += period
            message = Image(**frame_to_fields(frame.image))
            frame.image.fill(0)
            message.header.frame_id = self.frame_id
            if self.source.is_live or not self.source.source_fps:
                stamp = time.time()
            else:
                # Recorded sources carry media time so windows match the recording, whatever the playback speed.
                stamp = start_wall + frame.index / self.source.source_fps
            seconds_to_stamp(stamp, message.header.stamp)
            self.publisher.publish(message)
            self.published += 1

    def _report(self) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        level = OK if self.source.skipped_corrupt == 0 else WARN
        self.publish_diagnostic(level, "streaming", {"frames": self.published, "fps": f"{self.published / elapsed:.2f}",
                                                     "skipped_unreadable": self.source.skipped_corrupt, "source_kind": self.source.kind})

    def on_shutdown(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.source.close()


def main(args: list[str] | None = None) -> None:
    run_node(CameraNode, args)


if __name__ == "__main__":
    main()
