"""What every node shares: typed parameters with descriptors and validation, diagnostics, clean shutdown."""
from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any, Callable

import rclpy
from rclpy.experimental import EventsExecutor
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions

IMAGE_TOPIC = "camera/image_raw"
DETECTIONS_TOPIC = "detections"
TRACKS_TOPIC = "tracks"
ANONYMIZED_TOPIC = "anonymized_tracks"
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

    def accept_parameter_updates(self) -> None:
        """Call at the end of __init__: from then on updates go through validate_parameters()."""
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
        try:
            self.validate_parameters(updates)
        except (ValueError, TypeError) as error:
            self.get_logger().warning(f"rejected parameter update {sorted(updates)}: {error}")
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def validate_parameters(self, updates: dict[str, Any]) -> None:
        """Check and apply an update; raise ValueError with the reason to reject it (old values stay)."""

    def current(self, name: str, updates: dict[str, Any]) -> Any:
        return updates[name] if name in updates else self.get_parameter(name).value

    def publish_diagnostic(self, level: int, message: str, values: dict[str, Any]) -> None:
        status = DiagnosticStatus(level=level, name=f"privacy_vision/{self.get_name()}", message=message,
                                  hardware_id=self.get_name(),
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    def finish(self, exit_code: int = 0) -> None:
        self.exit_code = exit_code
        self.finished.set()

    def on_shutdown(self) -> None:
        """Flush state before the process exits (runs with the node still able to publish)."""


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
