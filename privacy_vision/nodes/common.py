"""What every node shares: typed parameters with descriptors and validation, diagnostics, clean shutdown."""

from __future__ import annotations

import ctypes
import errno
import json
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from lifecycle_msgs.msg import State, TransitionEvent
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterEvent,
    ParameterType,
    SetParametersResult,
)
from rcl_interfaces.srv import GetParameters
from rclpy.duration import Duration
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.experimental import EventsExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_parameter_events
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import RCLError  # rclpy's own error type (rclpy.exceptions does not export it)

from privacy_vision.core import graph
from privacy_vision.core.audit import AuditLog, configuration_digest
from privacy_vision.core.config_check import EXIT_CONFIGURATION_ERROR
from privacy_vision.core.frame_loss import WINDOW_FRAMES, FrameLossCounter
from privacy_vision.core.graph import DIAGNOSTICS_TOPIC, UPSTREAM_WAIT_S, upstream_of
from privacy_vision.core.protocol import KeyFileError
from privacy_vision.core.sources import CaptureLoop, CaptureSettings, SourceError
from privacy_vision.node_main import install_stop_handlers
from privacy_vision_msgs.srv import DataSubjectRequest, Forget

# Topic names from the graph description, relative so that a node namespace applies to them.
IMAGE_TOPIC, DETECTIONS_TOPIC, TRACKS_TOPIC, ANONYMIZED_TOPIC, ANALYTICS_TOPIC = (
    name.lstrip("/")
    for name in (
        graph.IMAGE_TOPIC,
        graph.DETECTIONS_TOPIC,
        graph.TRACKS_TOPIC,
        graph.ANONYMIZED_TOPIC,
        graph.ANALYTICS_TOPIC,
    )
)
ACK_TIMEOUT_S = 2.0  # a deactivating node waits this long for the next node to acknowledge its last messages
QUIET_S = 0.2  # after the upstream finished, its last messages are processed before this node stops
PR_SET_PDEATHSIG = 1
CAPTURE_JOIN_S = 5.0  # a deactivating source node waits this long for the frame in hand

# Best effort, keep last 1: a detector that was busy takes the newest frame, never a queue of stale ones (with the
# sensor-data profile's depth 5, frames queued during yolov8n's warm-up gave p99 latency 335-377 ms at 10 fps).
IMAGE_QOS = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
RELIABLE_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=50)
# /zone_analytics is latched (transient local; core/graph.py): a late `ros2 topic echo`, rqt, recorder or viewer gets the
# last releases at once instead of waiting for the next window (15 min by default). 200 holds a window end's cells
# (window + hour + day tiers for each zone, plus the site) for up to 60 zones. The uplink and the anonymizer keep
# volatile subscriptions (compatible with it): a respawned uplink must not store releases it already delivered.
LATCHED_QOS = QoSProfile(
    reliability=ReliabilityPolicy.RELIABLE,
    history=HistoryPolicy.KEEP_LAST,
    depth=200,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
RELIABLE_DEEP_QOS = QoSProfile(
    reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1000
)  # a burst of closed cells

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
FRAME_LOSS_PARAMETER = "frame_loss_warn_fraction"


@dataclass(frozen=True)
class ParameterSpec:
    """A parameter that sets the same-named field of a core settings dataclass: what it means and its range."""

    description: str
    minimum: float | None = None
    maximum: float | None = None
    read_only: bool = False  # takes effect at start only (e.g. the release grid of open segments)


class PrivacyVisionNode(LifecycleNode):
    """Base node: a ROS 2 lifecycle node (rclpy.lifecycle) with declare() for parameters, validate_parameters() and
    apply_parameters() hooks, diagnostics, and the ordered stop.

    unconfigured --configure--> inactive: configure() declares the node's parameters and opens its files, keys,
    model and source; --activate--> active: activate() starts the data flowing (data publishers are lifecycle
    publishers); --deactivate--> inactive: deactivate() stops the flow and hands on what the node still holds
    (frames zeroed, open cells closed), then the next node acknowledges the last messages; --shutdown-->
    finalized: release() closes files and the process exits. With `autostart` (the default) the node configures
    and activates itself; the launch file and `privacy-vision run` set it false and drive the transitions.

    A stop request (SIGINT, SIGTERM, the source's end) is an ordered stop: the node waits until its upstream node
    (core/graph.py) has reached 'finalized' or left the graph, at most `stop_wait_s`, then takes its own shutdown
    transition. Whoever sends the signals (launch, a terminal, systemd, the runner), the graph stops in pipeline order.
    """

    def __init__(self, name: str, **node_options: Any) -> None:
        super().__init__(name, **node_options)
        self.exit_code = 0
        self.failure = ""  # why the last transition failed, in one line (the configuration check prints it)
        self.finished = threading.Event()  # finalized (or configuration failed): the process may exit
        self.source_ended = threading.Event()  # set by a node that reads a source when the recording ends
        self._diagnostics = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._data_publishers: list = []  # reliable lifecycle publishers whose last messages must be acknowledged
        self.audit: AuditLog | None = None
        self._audited: dict[str, Any] = {}  # privacy parameters' values in force, as last audit-logged
        self.privacy_parameters: set[str] = set()  # changes to these are audit-logged (old -> new)
        self.dpia_parameters: set[str] = set()  # what the DPIA states: recorded in the audit log at start
        self.autostart = self.declare(
            "autostart",
            True,
            "configure and activate at start; false: a lifecycle manager (the launch "
            "file, privacy-vision run) drives the transitions",
            read_only=True,
        )
        self.stop_wait_s = self.declare(
            "stop_wait_s",
            UPSTREAM_WAIT_S,
            "on a stop request, wait at most this long for the upstream node to finish before stopping",
            minimum=0.0,
            maximum=600.0,
            read_only=True,
        )
        # Accepted runtime changes (`ros2 param set`) are kept here, so a respawned node comes back with them.
        self.runtime_parameters_file = self.declare(
            "runtime_parameters_file",
            "",
            "YAML where accepted runtime parameter changes are kept and restored from at start "
            "(the launch file sets one per node and launch; empty: not kept)",
            read_only=True,
        )
        # An integer for a double parameter (`ros2 param set /aggregator epsilon_per_track_day 2`) is taken as that double.
        self.add_pre_set_parameters_callback(self._integers_as_doubles)
        self._stop_requested_at: float | None = None
        self._upstream_done_at: float | None = None
        self._upstream_finalized = False
        self._upstream_seen = False  # listed in the ROS graph (or heard from) at least once
        self._upstream_checked_at = 0.0
        self.dropped_while_inactive = 0
        self.frame_loss: FrameLossCounter | None = None  # frames lost on the per-frame topic from upstream, if any
        self.frame_topic = ""

    # -- what each node implements -----------------------------------------------------------------
    def configure(self) -> None:
        """Declare parameters, open files, keys, model and source; create publishers, subscriptions, services."""

    def activate(self) -> None:
        """Start the data flowing (a source node starts reading)."""

    def deactivate(self) -> None:
        """Stop the flow and publish what the node still holds; the base class then waits for acknowledgements."""

    def release(self) -> None:
        """Close files and connections at shutdown."""

    def ready_to_stop(self) -> bool:
        """Polled in the ordered stop, between executor spins, before the shutdown transition: a node that must
        hand something on through a service (the anonymizer's last segments) returns False until it has."""
        return True

    def upstream(self) -> str | None:
        """The node whose output this node consumes (it stops after that one)."""
        return upstream_of(self.get_name())

    def summary(self) -> str:
        """One line for the log when the node is finalized."""
        return ""

    # -- lifecycle transitions -----------------------------------------------------------------------
    def state_label(self) -> str:
        return self._state_machine.current_state[1]

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("configure", self._configure)

    def _configure(self) -> None:
        audit_dir = self.declare(
            "audit_dir", "var/audit", "folder of the tamper-evident audit log (shared by all nodes)", read_only=True
        )
        audit_key = self.declare(
            "audit_key_file", "var/pki/audit.key", "hex HMAC key of the audit log, mode 600", read_only=True
        )
        self._unaudited: list[tuple[str, dict]] = []  # entries the audit log could not take yet: see _retry_audit
        try:
            self.audit = AuditLog.from_key_file(audit_dir, audit_key)
            self.audit.check_writable()
        except KeyFileError as error:
            raise StartupError(self.get_name(), f"audit log: {error}") from None
        except (OSError, ValueError) as error:  # exit 2 ends a launch; a full disk exits 1 and is respawned
            raise startup_error_of(self.get_name(), f"audit log: {error}", error) from None
        self.configure()
        self._count_lost_frames()
        if graph.node(self.get_name()).answers_requests:
            self.offer_personal_data_services()
        upstream = self.upstream()
        if upstream:
            self.create_subscription(TransitionEvent, f"/{upstream}/transition_event", self._on_upstream_transition, 10)
        self.accept_parameter_updates()

    def _count_lost_frames(self) -> None:
        """A node fed frame by frame (core/graph.py) counts the frames its link lost, on /diagnostics."""
        topic = graph.frame_topic_into(self.get_name(), self.upstream())
        if topic is None:
            return
        self.declare(
            FRAME_LOSS_PARAMETER,
            0.05,
            f"/diagnostics turns WARN when more than this fraction of the frames of {topic} was lost over the last "
            f"{WINDOW_FRAMES} frames (gaps in the frames' stamps)",
            minimum=0.0,
            maximum=1.0,
        )
        self.frame_loss, self.frame_topic = FrameLossCounter(), topic

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        outcome = super().on_activate(state)  # lifecycle publishers first: the flow may start at once
        return self._transition("activate", self.activate) if outcome == TransitionCallbackReturn.SUCCESS else outcome

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        outcome = self._transition("deactivate", self._hand_on)
        super().on_deactivate(state)
        return outcome

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        def shut_down() -> None:
            if state.label == "active":
                self._hand_on()
                super(PrivacyVisionNode, self).on_deactivate(state)
            if state.label != "unconfigured":
                self.release()

        outcome = self._transition("shutdown", shut_down)
        if state.label != "unconfigured":
            self._retry_audit()
            if self._unaudited:
                events = sorted({event for event, _ in self._unaudited})
                self.get_logger().error(
                    f"{len(self._unaudited)} audit entries ({', '.join(events)}) could not be written before the stop: "
                    "the audit log failed (a full disk?); they are not recorded"
                )
        summary = self.summary() if state.label != "unconfigured" else ""  # a stop before configure: nothing to count
        self.get_logger().info(f"finalized{': ' + summary if summary else ''}")
        self.finished.set()
        return outcome

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error("cleanup is not supported: shut the node down and start it again to reconfigure it")
        return TransitionCallbackReturn.FAILURE

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"a transition from '{state.label}' failed; the node shuts down")
        self.fail(1)
        return TransitionCallbackReturn.FAILURE  # -> finalized

    def _hand_on(self) -> None:
        self.deactivate()
        for publisher in self._data_publishers:
            if not publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S)):
                self.get_logger().warning(
                    f"the last messages on {publisher.topic_name} were not all acknowledged within {ACK_TIMEOUT_S:g} s"
                )

    def _transition(self, what: str, action: Callable[[], None]) -> TransitionCallbackReturn:
        """Run a transition's work; every failure is logged with its reason (rclpy would turn it into a silent ERROR)
        and kept in `failure` as one line."""
        try:
            action()
            return TransitionCallbackReturn.SUCCESS
        except StartupFault as error:
            self.failure = str(error)
            self.get_logger().error(f"{self.failure} (a fault, not the configuration: exit 1, launch starts it again)")
            self.fail(1)
        except StartupError as error:
            self.failure = str(error)
            self.get_logger().error(self.failure)
            self.fail(EXIT_CONFIGURATION_ERROR)
        except (InvalidParameterValueException, InvalidParameterTypeException) as error:
            # A params file or -p override outside a parameter's declared type or range.
            self.failure = f"invalid parameter at start-up: {error}; fix the params file or the override"
            self.get_logger().error(self.failure)
            self.fail(EXIT_CONFIGURATION_ERROR)
        except Exception as error:
            self.failure = f"{what} failed: {type(error).__name__}: {error}"
            self.get_logger().error(f"{what} failed:\n{traceback.format_exc()}")
            self.fail(1)
        return TransitionCallbackReturn.FAILURE

    def fail(self, exit_code: int) -> None:
        """The node cannot go on: the process exits with this code."""
        self.exit_code = max(self.exit_code, exit_code)
        self.finished.set()

    def accepting(self, message: Any) -> bool:
        """Messages are processed while the node is active; one that arrives otherwise is counted and dropped
        (in the ordered stop none does: the upstream node finished first)."""
        if self.state_label() == "active":
            if self.frame_loss is not None:
                self.frame_loss.observe(stamp_to_seconds(message.header.stamp))
            return True
        self.dropped_while_inactive += 1
        if self.dropped_while_inactive == 1:
            self.get_logger().warning(
                f"a {type(message).__name__} arrived while the node is {self.state_label()}: dropped (counted on /diagnostics)"
            )
        return False

    # -- the ordered stop ----------------------------------------------------------------------------
    def create_data_publisher(self, message_type, topic: str, qos):
        """A lifecycle publisher whose last messages are waited for (acknowledged) when the node deactivates."""
        publisher = self.create_lifecycle_publisher(message_type, topic, qos)
        if qos.reliability == ReliabilityPolicy.RELIABLE:
            self._data_publishers.append(publisher)
        return publisher

    def _on_upstream_transition(self, message: TransitionEvent) -> None:
        self._upstream_seen = True
        self._upstream_finalized = message.goal_state.id == State.PRIMARY_STATE_FINALIZED

    def request_stop(self, reason: str) -> None:
        if self._stop_requested_at is not None or self.finished.is_set():
            return
        self._stop_requested_at = time.monotonic()
        upstream = self.upstream() if self.state_label() != "unconfigured" else None
        self.get_logger().info(
            f"stop requested ({reason}): "
            + (
                f"stopping after /{upstream} has finished (at most {self.stop_wait_s:g} s)"
                if upstream
                else "stopping now"
            )
        )

    def step(self) -> None:
        """Between callbacks: notice the end of the source, and move an ordered stop on."""
        if self.source_ended.is_set() and self._stop_requested_at is None and self.state_label() == "active":
            self.request_stop("the source ended")
        now = time.monotonic()
        upstream = self.upstream() if self.state_label() != "unconfigured" else None
        upstream_listed = None
        if upstream is not None and (self._stop_requested_at is not None or now - self._upstream_checked_at >= 1.0):
            self._upstream_checked_at = now
            upstream_listed = upstream in self.get_node_names()
            self._upstream_seen |= upstream_listed
        if self._stop_requested_at is None or self.finished.is_set():
            return
        if self._upstream_done_at is None:
            # Gone means seen before and no longer listed: a node not discovered yet may still be starting.
            if upstream is None or self._upstream_finalized or (self._upstream_seen and not upstream_listed):
                self._upstream_done_at = now
            elif now - self._stop_requested_at >= self.stop_wait_s:
                self.get_logger().warning(
                    f"/{upstream} has not finished {self.stop_wait_s:g} s after the stop request; stopping anyway"
                )
                self._upstream_done_at = now - QUIET_S
            else:
                return
        # The upstream's last messages are processed meanwhile; then the node hands on what it still holds.
        if now - self._upstream_done_at >= QUIET_S and self.ready_to_stop():
            self.trigger_shutdown()

    def offer_personal_data_services(self) -> None:
        """~/forget and ~/data_subject_request, for the nodes the graph description names (core/graph.py)."""
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

    def _on_data_subject_request(
        self, request: DataSubjectRequest.Request, response: DataSubjectRequest.Response
    ) -> DataSubjectRequest.Response:
        kind = request.request_type.strip().lower()
        if not request.request_id.strip() or kind not in ("access", "erasure"):
            response.success = False
            response.message = "request_id must be set and request_type must be 'access' or 'erasure'"
            return response
        answer = {"component": self.get_name(), "request_type": kind, **self.personal_data_summary()}
        if kind == "erasure":
            answer["purged"] = self.erase_personal_data()
        self.audit.append(
            "data_subject_request",
            self.get_name(),
            request_id=request.request_id[:100],
            request_type=kind,
            holds_personal_data=bool(answer.get("holds_personal_data")),
            purged=answer.get("purged", {}),
        )
        response.success = True
        response.message = "answered from the node's live state"
        response.response_json = json.dumps(answer, default=str)
        return response

    def accept_parameter_updates(self) -> None:
        """Once configured: audits the configuration in force at start (start-time overrides
        such as `--set aggregator.epsilon_per_track_day=100` included), then takes updates in three steps, as the
        ros2/demos parameter examples do: validate the whole batch with no side effect (on_set: a rejected batch leaves
        no trace), then, once rclpy has stored the values, apply them, write the audit entries and keep them for a
        respawn (post_set). Runtime changes kept from an earlier run of this node (a respawn) take the same path."""
        everything = {name: _plain(parameter.value) for name, parameter in self.get_parameters_by_prefix("").items()}
        relevant = sorted(self.privacy_parameters | self.dpia_parameters)
        try:
            self.audit.append(
                "configuration_at_start",
                self.get_name(),
                parameters={name: everything[name] for name in relevant},
                all_parameters_sha256=configuration_digest(everything),
                parameter_count=len(everything),
            )
        except (OSError, ValueError) as error:  # exit 2 ends a launch; a full disk exits 1 and is respawned
            raise startup_error_of(
                self.get_name(),
                f"the audit log cannot record the configuration at start ({error}); "
                "repair it ('privacy-vision audit verify') or free its disk, then start again",
                error,
            ) from None
        self.create_timer(2.0, self._retry_audit)
        self._audited = {
            name: everything[name] for name in self.privacy_parameters
        }  # in force: the 'old' of the next change
        self.add_on_set_parameters_callback(self._validate_update)
        self.add_post_set_parameters_callback(self._commit_update)
        if not self.runtime_parameters_file:
            return
        kept = load_runtime_parameters(self.runtime_parameters_file)
        if not kept:
            return
        results = self.set_parameters([Parameter(name, value=value) for name, value in kept.items()])
        refused = {name: result.reason for name, result in zip(kept, results) if not result.successful}
        if refused:
            raise StartupError(
                self.get_name(),
                f"runtime parameter changes kept in {self.runtime_parameters_file} are refused: {refused}",
            )
        self.get_logger().info(
            f"restored runtime parameter changes from {self.runtime_parameters_file}: {sorted(kept)}"
        )

    def _validate_update(self, parameters: list[Parameter]) -> SetParametersResult:
        updates = {p.name: p.value for p in parameters}
        try:
            if set(updates) & self.privacy_parameters:  # such a change must be audited: refused while it cannot be
                try:
                    self.audit.check_writable()
                except (OSError, ValueError) as error:
                    raise ValueError(f"the audit log cannot record this change ({error}): refused") from None
            self.validate_parameters(updates)
        except (ValueError, TypeError) as error:
            self.get_logger().warning(f"rejected parameter update {sorted(updates)}: {error}")
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def _commit_update(self, parameters: list[Parameter]) -> None:
        updates = {p.name: p.value for p in parameters}
        self.apply_parameters(updates)
        for name in sorted(set(updates) & self.privacy_parameters):
            new = _plain(updates[name])
            self._unaudited.append(
                ("parameter_changed", {"parameter": name, "old": self._audited.get(name), "new": new})
            )
            self._audited[name] = new
        self._retry_audit()
        if self.runtime_parameters_file:
            store_runtime_parameters(
                self.runtime_parameters_file, {name: _plain(value) for name, value in updates.items()}
            )

    def audit_or_retry(self, event: str, **data: Any) -> None:
        """An audit entry written now, or, while the audit log cannot take it (a full disk), kept in order and tried
        again every 2 s with an ERROR on the log and /diagnostics: never a crash of the node."""
        self._unaudited.append((event, data))
        self._retry_audit()

    def _retry_audit(self) -> None:
        """Write the audit entries kept (applied changes, events); a failure (a disk that filled after the check) is
        an ERROR on the log and /diagnostics and is tried again every 2 s, never a crash."""
        while self._unaudited:
            event, data = self._unaudited[0]
            try:
                self.audit.append(event, self.get_name(), **data)
            except (OSError, ValueError) as error:
                message = f"audit log failing: {len(self._unaudited)} entries not yet recorded ({error})"
                self.get_logger().error(message, throttle_duration_sec=30.0)
                self.publish_diagnostic(ERROR, message, {"unaudited_entries": len(self._unaudited)})
                return
            self._unaudited.pop(0)

    def _integers_as_doubles(self, parameters: list[Parameter]) -> list[Parameter]:
        return [
            as_declared_type(p, self.describe_parameter(p.name).type) if self.has_parameter(p.name) else p
            for p in parameters
        ]

    def declare(
        self,
        name: str,
        default: Any,
        description: str,
        *,
        read_only: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
        step: int = 0,
    ) -> Any:
        """Declare with a descriptor; an integer range may have a step (values minimum + k * step only)."""
        descriptor = ParameterDescriptor(description=description, read_only=read_only)
        override = self._parameter_overrides.get(name)  # -p NAME:=2, a params file or launch: 2 for a double is 2.0
        if override is not None:
            self._parameter_overrides[name] = as_declared_type(
                override, Parameter.Type.from_parameter_value(default).value
            )
        if minimum is not None or maximum is not None:
            if isinstance(default, bool) or not isinstance(default, (int, float)):
                raise TypeError(f"range given for non-numeric parameter {name}")
            if isinstance(default, int):
                descriptor.integer_range = [IntegerRange(from_value=int(minimum), to_value=int(maximum), step=step)]
            else:
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(minimum), to_value=float(maximum), step=0.0)
                ]
        return self.declare_parameter(name, default, descriptor).value

    def declare_settings(self, defaults: Any, specs: dict[str, ParameterSpec]) -> dict[str, Any]:
        """One parameter per entry of `specs`, defaulting to the same-named field of `defaults` (a core settings
        dataclass); returns the values as that dataclass holds them (lists as tuples)."""
        values = {}
        for name, spec in specs.items():
            default = getattr(defaults, name)
            value = self.declare(
                name,
                list(default) if isinstance(default, tuple) else default,
                spec.description,
                minimum=spec.minimum,
                maximum=spec.maximum,
                read_only=spec.read_only,
            )
            values[name] = tuple(value) if isinstance(default, tuple) else value
        return values

    def validate_parameters(self, updates: dict[str, Any]) -> None:
        """Check a batch of updates against the node's state without changing anything; raise ValueError with the
        reason to reject the whole batch (the declared types and ranges are checked before, by rclpy)."""

    def apply_parameters(self, updates: dict[str, Any]) -> None:
        """Put a validated batch into effect (the new values are already stored)."""

    def current(self, name: str, updates: dict[str, Any]) -> Any:
        """The value `name` will have once the batch `updates` is in force."""
        return updates[name] if name in updates else self.get_parameter(name).value

    def publish_diagnostic(self, level: int, message: str, values: dict[str, Any]) -> None:
        """Health and counters on /diagnostics (the live DPIA reads parameters through the parameter services); a
        node fed frame by frame adds its lost-frame counts, and WARN while the recent lost fraction is over its limit."""
        if self.frame_loss is not None:
            fraction, limit = self.frame_loss.lost_fraction(), self.get_parameter(FRAME_LOSS_PARAMETER).value
            values = {
                **values,
                "frames_lost_upstream": self.frame_loss.lost,
                "frames_lost_recent_fraction": f"{fraction:.3f}",
                "frame_stream_breaks": self.frame_loss.breaks,
            }
            if fraction > limit:
                level = max(level, WARN)
                message = f"{message}; {fraction:.0%} of the recent frames on {self.frame_topic} lost (over {limit:g})"
        status = DiagnosticStatus(
            level=level,
            name=f"privacy_vision/{self.get_name()}",
            message=message,
            hardware_id=self.get_name(),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)


class PeerParameter:
    """Another node's parameter as this node last heard it, for settings of two nodes that only work together (strict
    mode and groups_per_day): read once through the peer's get_parameters service (as `ros2 param get` does, retried
    each second until it answers), then kept current from /parameter_events, where rclpy announces every change.
    `value` is None while the peer has not answered (a check then lets the change through: a node restoring its
    settings after a respawn must not fail on a peer still starting). Nothing here blocks: a callback reads `value`."""

    def __init__(self, node: PrivacyVisionNode, peer: str, name: str) -> None:
        self.peer, self.name = f"/{peer.strip('/')}", name
        self.value: Any = None
        self._client = node.create_client(GetParameters, f"{self.peer}/get_parameters")
        self._pending = None
        node.create_subscription(ParameterEvent, "/parameter_events", self._on_event, qos_profile_parameter_events)
        node.create_timer(1.0, self._ask)

    def _ask(self) -> None:
        if self.value is not None or self._pending is not None or not self._client.service_is_ready():
            return
        self._pending = self._client.call_async(GetParameters.Request(names=[self.name]))
        self._pending.add_done_callback(self._answered)

    def _answered(self, future) -> None:
        self._pending = None
        result = future.result() if not future.cancelled() else None
        if result is not None and result.values and self.value is None:
            self.value = parameter_value_to_python(result.values[0])

    def _on_event(self, event: ParameterEvent) -> None:
        if event.node != self.peer:
            return
        for parameter in (*event.new_parameters, *event.changed_parameters):
            if parameter.name == self.name:
                self.value = parameter_value_to_python(parameter.value)


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
    """One node in this process (what the `<node>_node` executables run)."""
    run_nodes([factory], args)


def run_nodes(factories: list[Callable[[], PrivacyVisionNode]], args: list[str] | None = None) -> None:
    """Nodes in this process on one executor, until every one is finalized; exits with the worst exit code.

    SIGINT/SIGTERM only set a flag (rclpy's own handler would shut the context down at once, leaving no
    chance to hand on the last window): every node then takes its ordered stop. Nodes with autostart are
    configured, then activated from the last in the pipeline to the first, so nothing flows before its
    receiver is there.
    """
    stop = install_stop_handlers()  # already in place when started through privacy_vision.node_main
    _die_with_parent()
    try:
        rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    except RCLError as error:  # a params file rcl cannot parse, a malformed --ros-args: one line, not a traceback
        reason = " ".join(str(error).split())
        print(f"[ERROR] [{time.time():.9f}] [rcl]: the ROS arguments were refused: {reason}", file=sys.stderr)
        sys.exit(EXIT_CONFIGURATION_ERROR)
    nodes: list[PrivacyVisionNode] = []
    exit_code = 1
    try:
        if not stop.is_set():
            nodes = [factory() for factory in factories]
        executor = EventsExecutor()
        for node in nodes:
            executor.add_node(node)
        starting = [node for node in nodes if node.autostart]
        for node in starting:
            node.trigger_configure()
        for node in reversed(starting):
            if node.state_label() == "inactive":
                node.trigger_activate()
        while not all(node.finished.is_set() for node in nodes):
            executor.spin_once(timeout_sec=0.05)
            # The graph in this process ends with its source (composed mode): the others take their ordered stop.
            source_done = any(node.source_ended.is_set() and node.finished.is_set() for node in nodes)
            for node in nodes:
                if stop.is_set():
                    node.request_stop("SIGINT/SIGTERM")
                elif source_done:
                    node.request_stop("the source in this process ended")
                node.step()
        deadline = time.monotonic() + 0.3  # the last transition events and acknowledgements leave the process
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        exit_code = max((node.exit_code for node in nodes), default=0)
    finally:
        for node in nodes:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        # Done: a late stop request (launch escalating, a second Ctrl-C) must not kill the interpreter while it exits.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(exit_code)


def check_nodes(factories: list[Callable[[], PrivacyVisionNode]], args: list[str]) -> dict[str, str]:
    """Configure each node in this process and shut it down again: parameter types and ranges, settings, source,
    model, zones, homography, keys. Returns why each node that failed did, in one line; nothing flows. The
    caller points the state stores (audit log, ledger, outbox) at a scratch folder, so a check leaves no trace."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    failures: dict[str, str] = {}
    try:
        for factory in factories:
            node = factory()
            try:
                if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                    failures[node.get_name()] = node.failure or "configure failed (see the log above)"
                elif node.trigger_shutdown() != TransitionCallbackReturn.SUCCESS:
                    failures[node.get_name()] = node.failure or "shutdown after the check failed"
            finally:
                node.destroy_node()
    finally:
        rclpy.shutdown()
    return failures


def _die_with_parent() -> None:
    """SIGTERM (a stop request) when the parent dies, e.g. `ros2 launch` killed with SIGKILL: no orphaned node."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class StartupError(RuntimeError):
    """A configuration problem found at start-up; the node exits with a clear message (EXIT_CONFIGURATION_ERROR)."""

    def __init__(self, node_name: str, message: str) -> None:
        super().__init__(message)
        self.node_name = node_name


class StartupFault(StartupError):
    """A fault of the device at start-up, not of its configuration (a full disk): the node exits 1, so that launch
    starts it again after its respawn delay and the node comes back once the fault is gone."""


DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def startup_error_of(node_name: str, message: str, error: Exception) -> StartupError:
    """A full disk is a StartupFault (retried by a respawn); anything else a configuration error (exit 2)."""
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        return StartupFault(node_name, message)
    return StartupError(node_name, message)


def declare_capture(node: PrivacyVisionNode) -> CaptureLoop:
    """The source parameters shared by the camera node and the detection node's in-process capture."""
    settings = CaptureSettings(
        source=node.declare(
            "source",
            "",
            "video file, image folder, /dev/videoN or camera index, or rtsp/http/GStreamer URL",
            read_only=True,
        ),
        loop=node.declare("loop", False, "restart a file or folder at its end"),
        fps=node.declare(
            "fps",
            0.0,
            "capture rate limit in frames/s; 0 = the source's own rate for files, as fast as possible otherwise",
            minimum=0.0,
            maximum=240.0,
        ),
        max_frames=node.declare(
            "max_frames", 0, "stop after this many frames (0 = no limit)", minimum=0, maximum=2**31 - 1
        ),
        resize_width=node.declare(
            "resize_width",
            0,
            "resize frames to this width keeping aspect (0 = native)",
            minimum=0,
            maximum=7680,
            read_only=True,
        ),
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


class CaptureThread:
    """The source loop of a node that reads a source (the camera, or the detection node capturing in process):
    started by activate, stopped by deactivate; the natural end of a recording (or max_frames) sets the node's
    source_ended, which starts its ordered stop."""

    def __init__(
        self,
        node: PrivacyVisionNode,
        capture: CaptureLoop,
        publisher,
        wait_for_subscriber_s: float,
        handle: Callable[[Any, float], None],
    ) -> None:
        self.node, self.capture, self.publisher, self.handle = node, capture, publisher, handle
        self.wait_for_subscriber_s = wait_for_subscriber_s
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.capture.stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.node.get_name()}-capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        wait_for_subscriber(self.node, self.publisher, self.capture, self.wait_for_subscriber_s)
        self.capture.run(self.handle)
        if not self.capture.stop.is_set():
            self.node.publish_diagnostic(OK, "end of stream", {"frames": self.capture.delivered})
            self.node.source_ended.set()

    def stop(self) -> None:
        self.capture.stop.set()
        if self._thread is not None:
            self._thread.join(timeout=CAPTURE_JOIN_S)
            if self._thread.is_alive():
                self.node.get_logger().warning(f"the capture thread did not stop within {CAPTURE_JOIN_S:g} s")


def apply_capture_updates(capture: CaptureLoop, updates: dict[str, Any]) -> None:
    if "loop" in updates:
        capture.set_loop(bool(updates["loop"]))
    if "fps" in updates:
        capture.settings.fps = float(updates["fps"])
    if "max_frames" in updates:
        capture.settings.max_frames = int(updates["max_frames"])


def declare_wait_for_subscriber(node: PrivacyVisionNode) -> float:
    return node.declare(
        "wait_for_subscriber_s",
        10.0,
        "recorded sources: wait this long for a subscriber before the first frame (0 = no wait)",
        minimum=0.0,
        maximum=600.0,
        read_only=True,
    )


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
