"""Detection node: people boxes from frames; every frame buffer is zeroed right after inference."""

from __future__ import annotations

import collections
import time
from typing import Any

import numpy as np
from sensor_msgs.msg import Image

from privacy_vision.core.detectors import (
    BACKENDS,
    YOLOX_INPUT_SIZES,
    DetectorError,
    DetectorSettings,
    create_detector,
    fallback_warning,
)
from privacy_vision.core.imaging import ImageFormatError, buffer_as_bgr, zero_message_data
from privacy_vision.nodes.common import (
    DETECTIONS_TOPIC,
    IMAGE_QOS,
    IMAGE_TOPIC,
    OK,
    RELIABLE_QOS,
    WARN,
    CaptureThread,
    PrivacyVisionNode,
    StartupError,
    apply_capture_updates,
    declare_capture,
    declare_wait_for_subscriber,
    run_node,
    seconds_to_stamp,
)
from privacy_vision_msgs.msg import Detection, Detections

CAPTURE_MODES = ("topic", "in_process")
REPORT_PERIOD_S = 1.0  # counters on /diagnostics at least this often while frames flow


class DetectionNode(PrivacyVisionNode):
    """Person boxes from frames; zeroes every frame buffer after inference so that no pixels outlive it."""

    def __init__(self, **node_options: Any) -> None:
        super().__init__("detection", **node_options)
        self.capture = None

    def configure(self) -> None:
        defaults = DetectorSettings()
        self.settings = DetectorSettings(
            backend=self.declare(
                "backend",
                defaults.backend,
                f"detector backend: one of {BACKENDS}; auto picks the best available",
                read_only=True,
            ),
            model=self.declare(
                "model",
                defaults.model,
                "Ultralytics weights (.pt) or model YAML (random weights, tests only)",
                read_only=True,
            ),
            onnx_model=self.declare(
                "onnx_model",
                defaults.onnx_model,
                "YOLOX-format ONNX export, any size (empty: the YOLOX-nano shipped with the package)",
                read_only=True,
            ),
            tflite_model=self.declare(
                "tflite_model",
                defaults.tflite_model,
                "TFLite SSD model path (empty: PRIVACY_VISION_TFLITE_MODEL or ../shared/models)",
                read_only=True,
            ),
            conf=self.declare(
                "conf",
                defaults.conf,
                "lowest detection score published (the tracker splits high/low itself)",
                minimum=0.01,
                maximum=1.0,
            ),
            iou=self.declare("iou", defaults.iou, "NMS IoU threshold (all backends)", minimum=0.05, maximum=0.95),
            imgsz=self.declare(
                "imgsz",
                defaults.imgsz,
                "inference size in pixels (ultralytics)",
                minimum=32,
                maximum=4096,
                read_only=True,
            ),
            device=self.declare(
                "device", defaults.device, "inference device for ultralytics: cpu, cuda:0, ...", read_only=True
            ),
            max_det=self.declare("max_det", defaults.max_det, "maximum people per frame", minimum=1, maximum=1000),
            input_size=self.declare(
                "input_size",
                defaults.input_size,
                "YOLOX input side in pixels, a multiple of 32 (0 = the model's own, 416 for the shipped YOLOX-nano); "
                "larger finds more small people and costs time (docs/perception.md)",
                minimum=0,
                maximum=YOLOX_INPUT_SIZES.stop - 1,
                step=YOLOX_INPUT_SIZES.step,
                read_only=True,
            ),
            num_threads=self.declare(
                "num_threads",
                defaults.num_threads,
                "CPU threads for the yolox and tflite backends",
                minimum=1,
                maximum=64,
                read_only=True,
            ),
        )
        self.capture_mode = self.declare(
            "capture",
            "topic",
            f"one of {CAPTURE_MODES}: frames from /{IMAGE_TOPIC} (camera node), or read "
            "from 'source' in this process so that no image topic exists",
            read_only=True,
        )
        if self.capture_mode not in CAPTURE_MODES:
            raise StartupError(
                self.get_name(), f"parameter 'capture' must be one of {CAPTURE_MODES}, got {self.capture_mode!r}"
            )
        self.capture = declare_capture(self) if self.capture_mode == "in_process" else None
        if self.capture is not None:
            self.frame_id = self.declare(
                "frame_id", "camera", "frame_id of detections from in-process capture", read_only=True
            )
            wait_for_subscriber_s = declare_wait_for_subscriber(self)
        self.retention_frames = self.declare(
            "retention_frames",
            0,
            "frames kept in memory after inference before zeroing (0 = zero at once)",
            minimum=0,
            maximum=30,
        )
        audit_interval_s = self.declare(
            "audit_interval_s",
            60.0,
            "frames processed/destroyed are audit-logged in totals per this interval",
            minimum=1.0,
            maximum=86400.0,
            read_only=True,
        )
        self.privacy_parameters = {"retention_frames"}
        self.dpia_parameters = {"retention_frames", "backend", "capture"}
        self._audit_counts = {"frames_processed": 0, "frames_destroyed": 0, "malformed_frames_dropped": 0}
        try:
            self.detector, skipped = create_detector(self.settings)
        except DetectorError as error:
            raise StartupError(self.get_name(), str(error)) from None
        for reason in skipped:
            self.get_logger().info(f"backend skipped: {reason}")
        self.fallback = fallback_warning(self.settings, self.detector, skipped)
        if self.fallback:
            self.get_logger().warning(self.fallback)
        self.get_logger().info(f"using detector backend '{self.detector.name}'")
        self._retained: collections.deque[tuple[np.ndarray, ...]] = collections.deque()
        self.last_buffers: tuple[np.ndarray, ...] = ()  # the most recent frame's buffers, for the zeroing test
        self.publisher = self.create_data_publisher(Detections, DETECTIONS_TOPIC, RELIABLE_QOS)
        self.frames = 0
        self.rejected = 0
        self.inference_ms: collections.deque[float] = collections.deque(maxlen=100)
        self._reported_at = 0.0
        self.create_timer(REPORT_PERIOD_S, self._report)
        self.create_timer(audit_interval_s, self._audit_frames)
        if self.capture is None:
            self.create_subscription(Image, IMAGE_TOPIC, self._on_image, IMAGE_QOS)
        else:
            self.reader = CaptureThread(self, self.capture, self.publisher, wait_for_subscriber_s, self._on_captured)
            self.get_logger().info(f"in-process capture of a {self.capture.source.kind} source: no image topic")

    def upstream(self) -> str | None:
        return None if self.capture is not None else super().upstream()

    def activate(self) -> None:
        if self.capture is not None:
            self.reader.start()

    def deactivate(self) -> None:
        """The frame in hand is finished (in-process capture stops first); every retained frame is zeroed."""
        if self.capture is not None:
            self.reader.stop()
        retention, self.retention_frames = self.retention_frames, 0
        self._destroy_retained()
        self.retention_frames = retention
        self._audit_frames()
        self._report()  # the final counts, for whoever shows them (the runner's summary)

    def release(self) -> None:
        if self.capture is not None:
            self.capture.close()

    def summary(self) -> str:
        return f"{self.frames} frames inferred and zeroed, {self.rejected} malformed frames dropped"

    def apply_parameters(self, updates: dict[str, Any]) -> None:
        if self.capture is not None:
            apply_capture_updates(self.capture, updates)
        for name in ("conf", "iou", "max_det"):
            if name in updates:
                setattr(self.settings, name, updates[name])
        if "retention_frames" in updates:
            self.retention_frames = int(updates["retention_frames"])
            self._destroy_retained()

    def _on_image(self, message: Image) -> None:
        if not self.accepting(message):
            zero_message_data(message)
            return
        try:
            image, raw = buffer_as_bgr(message.height, message.width, message.encoding, message.step, message.data)
        except ImageFormatError as error:
            self.rejected += 1
            self._audit_counts["malformed_frames_dropped"] += 1
            self.get_logger().error(f"dropped a malformed frame ({error}); {self.rejected} dropped so far")
            return
        self._detect_and_publish(image, (raw, image), message.header)

    def _on_captured(self, image: np.ndarray, stamp: float) -> None:
        header = Detections().header
        header.frame_id = self.frame_id
        seconds_to_stamp(stamp, header.stamp)
        self._detect_and_publish(image, (image,), header)

    def _detect_and_publish(self, image: np.ndarray, buffers: tuple[np.ndarray, ...], header) -> None:
        """Detect, then zero (or retain) every buffer that held this frame, whatever happened."""
        height, width = image.shape[:2]
        try:
            started = time.perf_counter()
            boxes, scores = self.detector.detect(image)
            elapsed_ms = (time.perf_counter() - started) * 1000.0
        finally:
            self._retain_or_zero(buffers)
        self.inference_ms.append(elapsed_ms)
        self.frames += 1
        self._audit_counts["frames_processed"] += 1
        out = Detections(
            header=header,
            image_width=width,
            image_height=height,
            backend=self.detector.name,
            inference_ms=float(elapsed_ms),
        )
        out.detections = [
            Detection(x_min=float(b[0]), y_min=float(b[1]), x_max=float(b[2]), y_max=float(b[3]), confidence=float(s))
            for b, s in zip(boxes, scores)
        ]
        self.publisher.publish(out)
        if time.monotonic() - self._reported_at >= REPORT_PERIOD_S:
            # While frames keep the executor busy its 1 s timer can starve for tens of seconds (seen with HOG at
            # 200 ms a frame): the counts then go out from here, so /diagnostics never shows a stale count.
            self._report()

    def _retain_or_zero(self, buffers: tuple[np.ndarray, ...]) -> None:
        self.last_buffers = buffers
        self._retained.append(buffers)
        self._destroy_retained()

    def _destroy_retained(self) -> None:
        while len(self._retained) > self.retention_frames:
            zero_buffers(self._retained.popleft())
            self._audit_counts["frames_destroyed"] += 1

    def personal_data_summary(self) -> dict:
        return {
            "holds_personal_data": bool(self._retained),
            "frames_in_memory": len(self._retained),
            "categories": "camera frames, zeroed after inference",
            "retention_frames": self.retention_frames,
        }

    def erase_personal_data(self) -> dict:
        count = len(self._retained)
        while self._retained:
            zero_buffers(self._retained.popleft())
            self._audit_counts["frames_destroyed"] += 1
        return {"frames_destroyed": count}

    def _report(self) -> None:
        self._reported_at = time.monotonic()
        samples = list(self.inference_ms)  # one C-level copy: the capture thread may append meanwhile
        median_ms = float(np.median(samples)) if samples else 0.0
        level = WARN if self.rejected or self.fallback else OK
        message = f"backend {self.detector.name}" + (f": {self.fallback}" if self.fallback else "")
        self.publish_diagnostic(
            level,
            message,
            {
                "backend": self.detector.name,
                "frames": self.frames,
                "inference_ms_median": f"{median_ms:.1f}",
                "malformed_frames_dropped": self.rejected,
                "frames_retained": len(self._retained),
                **(
                    {"source_frames_dropped_behind_pace": self.capture.skipped_late} if self.capture is not None else {}
                ),
            },
        )

    def _audit_frames(self) -> None:
        if any(self._audit_counts.values()):
            self.audit_or_retry(
                "frames",
                backend=self.detector.name,
                retention_frames=self.retention_frames,
                **self._audit_counts,
            )
            self._audit_counts = dict.fromkeys(self._audit_counts, 0)


def zero_buffers(buffers: tuple[np.ndarray, ...]) -> None:
    for buffer in buffers:
        buffer.fill(0)


NODE_CLASS = DetectionNode  # what node_main runs for this graph node, alone or composed


def main(args: list[str] | None = None) -> None:
    run_node(NODE_CLASS, args)


if __name__ == "__main__":
    main()
