"""What every node shares: typed parameters with descriptors and validation, diagnostics, clean shutdown."""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any, Callable

import rclpy
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.experimental import EventsExecutor
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions

from privacy_vision.core.audit import AuditLog, configuration_digest
from privacy_vision.core.protocol import KeyFileError
from privacy_vision.core.sources import CaptureLoop, CaptureSettings, SourceError
from privacy_vision_msgs.srv import DataSubjectRequest, Forget

IMAGE_TOPIC = "camera/image_raw"
DETECTIONS_TOPIC = "detections"
TRACKS_TOPIC = "tracks"
ANONYMIZED_TOPIC = "anonymized_tracks"
CELL_TOTALS_TOPIC = "cell_totals"
ANALYTICS_TOPIC = "zone_analytics"
DIAGNOSTICS_TOPIC = "/diagnostics"

IMAGE_QOS = qos_profile_sensor_data  # best effort, keep last; depth set per publisher (1)
RELIABLE_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=50)

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class PrivacyVisionNode(Node):
    """Base node: declare() for parameters, validate_parameters() hook, diagnostics, finish()."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.exit_code = 0
        self.finished = threading.Event()
        self._diagnostics = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        audit_dir = self.declare("audit_dir", "var/audit", "folder of the tamper-evident audit log (shared by all nodes)", read_only=True)
        audit_key = self.declare("audit_key_file", "var/pki/audit.key", "hex HMAC key of the audit log, mode 600", read_only=True)
        try:
            self.audit = AuditLog.from_key_file(audit_dir, audit_key)
        except KeyFileError as error:
            raise StartupError(name, f"audit log: {error}") from None
        self.privacy_parameters: set[str] = set()  # changes to these are audit-logged (old -> new)
        self.dpia_parameters: set[str] = set()  # reported on /diagnostics for the live DPIA

    def offer_personal_data_services(self) -> None:
        """~/forget and ~/data_subject_request for a node that holds per-person state in memory."""
        self.create_service(Forget, "~/forget", self._on_forget)
        self.create_service(DataSubjectRequest, "~/data_subject_request", self._on_data_subject_request)

    def personal_data_summary(self) -> dict[str, Any]:
        """What per-person data this node holds right now (counts and categories, never the data)."""
        raise NotImplementedError

    def erase_personal_data(self) -> dict[str, Any]:
        """Purge per-person state now; returns what was purged (counts)."""
        raise NotImplementedError

    def _on_forget(self, request: Forget.Request, response: Forget.Response) -> Forget.Response:
        purged = self.erase_personal_data()
        self.audit.append("forget_request", self.get_name(), reason=request.reason[:200], **purged)
        self.get_logger().info(f"forget request: {purged}")
        response.success = True
        response.key_epoch = int(purged.get("key_epoch", 0))
        response.message = json.dumps(purged)
        return response

    def _on_data_subject_request(self, request: DataSubjectRequest.Request, response: DataSubjectRequest.Response) -> DataSubjectRequest.Response:
        kind = request.request_type.strip().lower()
        if not request.request_id.strip() or kind not in ("access", "erasure"):
            response.success = False
            response.message = "request_id must be set and request_type must be 'access' or 'erasure'"
            return response
        answer = {"component": self.get_name(), "request_type": kind, **self.personal_data_summary()}
        if kind == "erasure":
            answer["purged"] = self.erase_personal_data()
        self.audit.append("data_subject_request", self.get_name(), request_id=request.request_id[:100], request_type=kind,
                          holds_personal_data=bool(answer.get("holds_personal_data")), purged=answer.get("purged", {}))
        response.success = True
        response.message = "answered from the node's live state"
        response.response_json = json.dumps(answer, default=str)
        return response

    def accept_parameter_updates(self) -> None:
        """Call at the end of __init__: audits the configuration in force at start (start-time overrides
        such as `--set aggregator.epsilon_per_track_day=100` included), then routes updates through validate_parameters()."""
        everything = {name: _plain(parameter.value) for name, parameter in self.get_parameters_by_prefix("").items()}
        relevant = sorted(self.privacy_parameters | self.dpia_parameters)
        self.audit.append("configuration_at_start", self.get_name(), parameters={name: everything[name] for name in relevant},
                          all_parameters_sha256=configuration_digest(everything), parameter_count=len(everything))
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def declare(self, name: str, default: Any, description: str, *, read_only: bool = False,
                minimum: float | None = None, maximum: float | None = None) -> Any:
        descriptor = ParameterDescriptor(description=description, read_only=read_only)
        if minimum is not None or maximum is not None:
            if isinstance(default, bool) or not isinstance(default, (int, float)):
                raise TypeError(f"range given for non-numeric parameter {name}")
            if isinstance(default, int):
                descriptor.integer_range = [IntegerRange(from_value=int(minimum), to_value=int(maximum), step=0)]
            else:
                descriptor.floating_point_range = [FloatingPointRange(from_value=float(minimum), to_value=float(maximum), step=0.0)]
        return self.declare_parameter(name, default, descriptor).value

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        updates = {p.name: p.value for p in parameters}
        previous = {name: self.get_parameter(name).value for name in updates if self.has_parameter(name)}
        try:
            self.validate_parameters(updates)
        except (ValueError, TypeError) as error:
            self.get_logger().warning(f"rejected parameter update {sorted(updates)}: {error}")
            return SetParametersResult(successful=False, reason=str(error))
        for name in sorted(set(updates) & self.privacy_parameters):
            self.audit.append("parameter_changed", self.get_name(), parameter=name,
                              old=_plain(previous.get(name)), new=_plain(updates[name]))
        return SetParametersResult(successful=True)

    def validate_parameters(self, updates: dict[str, Any]) -> None:
        """Check and apply an update; raise ValueError with the reason to reject it (old values stay)."""

    def current(self, name: str, updates: dict[str, Any]) -> Any:
        return updates[name] if name in updates else self.get_parameter(name).value

    def publish_diagnostic(self, level: int, message: str, values: dict[str, Any]) -> None:
        # Privacy-relevant parameters ride along, so the live DPIA can read what is in force.
        settings = {f"param.{name}": json.dumps(_plain(self.get_parameter(name).value)) for name in sorted(self.dpia_parameters)}
        status = DiagnosticStatus(level=level, name=f"privacy_vision/{self.get_name()}", message=message,
                                  hardware_id=self.get_name(),
                                  values=[KeyValue(key=k, value=str(v)) for k, v in {**values, **settings}.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    def finish(self, exit_code: int = 0) -> None:
        self.exit_code = exit_code
        self.finished.set()

    def on_shutdown(self) -> None:
        """Flush state before the process exits (runs with the node still able to publish)."""


def _plain(value: Any) -> Any:
    """Parameter values as JSON-friendly scalars or lists for the audit log."""
    return list(value) if isinstance(value, (list, tuple)) or hasattr(value, "tolist") else value


def stamp_to_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_stamp(seconds: float, stamp) -> Any:
    stamp.sec = int(seconds)
    stamp.nanosec = int(round((seconds - int(seconds)) * 1e9)) % 1_000_000_000
    return stamp


def run_node(factory: Callable[[], PrivacyVisionNode], args: list[str] | None = None) -> None:
    """Spin until SIGINT/SIGTERM or the node finishes, then flush and exit with the node's code.

    rclpy's own signal handler would shut the context down at once, leaving no chance to publish
    the last window; our handler only sets a flag.
    """
    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    exit_code = 1
    node = None
    try:
        node = factory()
        executor = EventsExecutor()
        executor.add_node(node)
        while not stop.is_set() and not node.finished.is_set():
            executor.spin_once(timeout_sec=0.1)
        node.on_shutdown()
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        exit_code = node.exit_code
    except StartupError as error:
        print(f"[{error.node_name}] ERROR: {error}", file=sys.stderr, flush=True)
        exit_code = 2
    except (InvalidParameterValueException, InvalidParameterTypeException) as error:
        # A params file or -p override outside a parameter's declared type or range.
        print(f"ERROR: invalid parameter at start-up: {error}; fix config/params.yaml or the override", file=sys.stderr, flush=True)
        exit_code = 2
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    sys.exit(exit_code)


class StartupError(RuntimeError):
    """A configuration problem found at start-up; the node exits with a clear message (code 2)."""

    def __init__(self, node_name: str, message: str) -> None:
        super().__init__(message)
        self.node_name = node_name


def declare_capture(node: PrivacyVisionNode) -> CaptureLoop:
    """The source parameters shared by the camera node and the detection node's in-process capture."""
    settings = CaptureSettings(
        source=node.declare("source", "", "video file, image folder, /dev/videoN or camera index, or rtsp/http/GStreamer URL", read_only=True),
        loop=node.declare("loop", False, "restart a file or folder at its end"),
        fps=node.declare("fps", 0.0, "capture rate limit in frames/s; 0 = the source's own rate for files, as fast as possible otherwise", minimum=0.0, maximum=240.0),
        max_frames=node.declare("max_frames", 0, "stop after this many frames (0 = no limit)", minimum=0, maximum=2**31 - 1),
        resize_width=node.declare("resize_width", 0, "resize frames to this width keeping aspect (0 = native)", minimum=0, maximum=7680, read_only=True),
    )

    def log(level: str, message: str) -> None:
        # rclpy refuses one call site logging at different severities: one line per level.
        if level == "error":
            node.get_logger().error(message)
        elif level == "warning":
            node.get_logger().warning(message)
        else:
            node.get_logger().info(message)

    def on_dropped(attempt: int) -> None:
        node.publish_diagnostic(WARN, "source dropped, reconnecting", {"attempt": attempt})

    try:
        return CaptureLoop(settings, log, on_dropped)
    except SourceError as error:
        raise StartupError(node.get_name(), str(error)) from None


def apply_capture_updates(capture: CaptureLoop, updates: dict[str, Any]) -> None:
    if "loop" in updates:
        capture.set_loop(bool(updates["loop"]))
    if "fps" in updates:
        capture.settings.fps = float(updates["fps"])
    if "max_frames" in updates:
        capture.settings.max_frames = int(updates["max_frames"])


def declare_wait_for_subscriber(node: PrivacyVisionNode) -> float:
    return node.declare("wait_for_subscriber_s", 10.0, "recorded sources: wait this long for a subscriber before the first frame (0 = no wait)",
                        minimum=0.0, maximum=600.0, read_only=True)


def wait_for_subscriber(node: PrivacyVisionNode, publisher, capture: CaptureLoop, timeout_s: float) -> None:
    """A recorded source would otherwise lose its first frames while discovery completes."""
    if capture.source.is_live or not timeout_s:
        return
    deadline = time.monotonic() + timeout_s
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline and not capture.stop.is_set():
        time.sleep(0.05)
    if publisher.get_subscription_count() == 0:
        node.get_logger().warning(f"no subscriber on {publisher.topic_name} after {timeout_s:g} s; publishing anyway")
    else:
        time.sleep(0.2)  # let the matched reader finish its own side of the handshake
