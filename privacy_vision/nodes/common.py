"""What every node shares: typed parameters with descriptors and validation, diagnostics, clean shutdown."""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import rclpy
import yaml
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.experimental import EventsExecutor
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions

from privacy_vision.core.audit import AuditLog, configuration_digest
from privacy_vision.core.protocol import KeyFileError
from privacy_vision.core.sources import CaptureLoop, CaptureSettings, SourceError
from privacy_vision.node_main import install_stop_handlers
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
        # Accepted runtime changes (`ros2 param set`) are kept here, so a respawned node comes back with them.
        self.runtime_parameters_file = self.declare(
            "runtime_parameters_file", "", "YAML where accepted runtime parameter changes are kept and restored from at start "
            "(the launch file sets one per node and launch; empty: not kept)", read_only=True)
        # An integer for a double parameter (`ros2 param set /aggregator epsilon_per_track_day 2`) is taken as that double.
        self.add_pre_set_parameters_callback(self._integers_as_doubles)

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
        such as `--set aggregator.epsilon_per_track_day=100` included), then routes updates through validate_parameters();
        runtime changes kept from an earlier run of this node (a respawn) are applied again, through the same validation."""
        everything = {name: _plain(parameter.value) for name, parameter in self.get_parameters_by_prefix("").items()}
        relevant = sorted(self.privacy_parameters | self.dpia_parameters)
        self.audit.append("configuration_at_start", self.get_name(), parameters={name: everything[name] for name in relevant},
                          all_parameters_sha256=configuration_digest(everything), parameter_count=len(everything))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._keep_runtime_changes)
        if not self.runtime_parameters_file:
            return
        kept = load_runtime_parameters(self.runtime_parameters_file)
        if not kept:
            return
        results = self.set_parameters([Parameter(name, value=value) for name, value in kept.items()])
        refused = {name: result.reason for name, result in zip(kept, results) if not result.successful}
        if refused:
            raise StartupError(self.get_name(), f"runtime parameter changes kept in {self.runtime_parameters_file} are refused: {refused}")
        self.get_logger().info(f"restored runtime parameter changes from {self.runtime_parameters_file}: {sorted(kept)}")

    def _keep_runtime_changes(self, parameters: list[Parameter]) -> None:
        if self.runtime_parameters_file:
            store_runtime_parameters(self.runtime_parameters_file, {p.name: _plain(p.value) for p in parameters})

    def _integers_as_doubles(self, parameters: list[Parameter]) -> list[Parameter]:
        return [as_declared_type(p, self.describe_parameter(p.name).type) if self.has_parameter(p.name) else p for p in parameters]

    def declare(self, name: str, default: Any, description: str, *, read_only: bool = False,
                minimum: float | None = None, maximum: float | None = None) -> Any:
        descriptor = ParameterDescriptor(description=description, read_only=read_only)
        override = self._parameter_overrides.get(name)  # -p NAME:=2, a params file or launch: 2 for a double is 2.0
        if override is not None:
            self._parameter_overrides[name] = as_declared_type(override, Parameter.Type.from_parameter_value(default).value)
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


def as_declared_type(parameter: Parameter, declared_type: int) -> Parameter:
    """An integer (or integer array) given for a double (or double array) parameter, as that double; anything
    else unchanged, so that rclpy's own type check names a real mismatch."""
    if declared_type == ParameterType.PARAMETER_DOUBLE and parameter.type_ == Parameter.Type.INTEGER:
        return Parameter(parameter.name, Parameter.Type.DOUBLE, float(parameter.value))
    if declared_type == ParameterType.PARAMETER_DOUBLE_ARRAY and parameter.type_ == Parameter.Type.INTEGER_ARRAY:
        return Parameter(parameter.name, Parameter.Type.DOUBLE_ARRAY, [float(v) for v in parameter.value])
    return parameter


def load_runtime_parameters(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        return {}
    values = yaml.safe_load(file.read_text()) or {}
    if not isinstance(values, dict):
        raise StartupError("runtime parameters", f"{path} is not a mapping of parameter names to values")
    return values


def store_runtime_parameters(path: str, changes: dict[str, Any]) -> None:
    """Merge accepted changes into the file atomically (write a temporary file, then rename)."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    values = {**load_runtime_parameters(path), **changes}
    temporary = file.with_suffix(file.suffix + ".tmp")
    temporary.write_text(yaml.safe_dump(values, sort_keys=True))
    temporary.replace(file)


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
    stop = install_stop_handlers()  # already in place when started through privacy_vision.node_main
    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
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
        # Done: a late stop request (launch escalating, a second Ctrl-C) must not kill the interpreter while it exits.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
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
