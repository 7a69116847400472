"""The runner's ROS side: reads the nodes' /diagnostics for the progress line (no per-person data is read) and
drives their lifecycle transitions through each node's ~/change_state service."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

from privacy_vision.core.graph import DIAGNOSTICS_TOPIC
from privacy_vision.graph_client import GraphClient
from privacy_vision.report import FrameCounts, Report, frame_counts, progress_text

REPORTS_KEPT = 10  # per node: enough to interpolate counters and measure rates over a few seconds

REPLY_TIMEOUT_S = 10.0  # for one lifecycle request or state query; the next query finds out what happened
TRANSITION_SOURCES = {"configure": "unconfigured", "activate": "inactive"}
TRANSITION_TARGETS = {"configure": "inactive", "activate": "active"}
IN_TRANSITION = {"configuring", "activating", "deactivating", "cleaningup", "shuttingdown", "errorprocessing"}


class GraphMonitor:
    """The runner's view of the graph: the progress line from /diagnostics and the lifecycle transitions it drives."""

    def __init__(self, domain_id: int, config_dir: Path, capture: str = "camera") -> None:
        self.capture = capture
        self._client = GraphClient(domain_id, config_dir, "privacy_vision_monitor")
        self._node = self._client.node
        self.reports: dict[str, collections.deque[Report]] = collections.defaultdict(
            lambda: collections.deque(maxlen=REPORTS_KEPT)
        )
        self._node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics, 50)
        self._lifecycle_clients: dict[str, object] = {}
        self._state_clients: dict[str, object] = {}

    def change_state(self, node: str, transition: str, timeout_s: float, alive: Callable[[], bool]) -> bool:
        """Ask /NODE/change_state for a transition by label (configure, activate, shutdown); True when it succeeded.
        Waits for the service while `alive()` (the node's process runs); False on a refusal, an exit or a timeout."""
        return self.request_transition(node, transition, timeout_s, alive) is True

    def request_transition(
        self, node: str, transition: str, timeout_s: float, alive: Callable[[], bool]
    ) -> bool | None:
        """change_state's answer: True (done), False (the node refused: the transition failed) or None (no answer:
        no service, the process ended, or the reply was lost)."""
        client = self._lifecycle_clients.get(node)
        if client is None:
            client = self._lifecycle_clients[node] = self._node.create_client(ChangeState, f"/{node}/change_state")
        deadline = time.monotonic() + timeout_s
        while not client.service_is_ready():
            if not alive() or time.monotonic() >= deadline:
                return None
            self.spin_for(0.1)
        future = client.call_async(ChangeState.Request(transition=Transition(label=transition)))
        while not future.done():
            if not alive() or time.monotonic() >= deadline:
                future.cancel()
                return None
            self.spin_for(0.05)
        return bool(future.result().success)

    def get_state(self, node: str, timeout_s: float) -> str:
        """The label of the node's lifecycle state from /NODE/get_state, or '' when it does not answer in time."""
        client = self._state_clients.get(node)
        if client is None:
            client = self._state_clients[node] = self._node.create_client(GetState, f"/{node}/get_state")
        deadline = time.monotonic() + timeout_s
        while not client.service_is_ready():
            if time.monotonic() >= deadline:
                return ""
            self.spin_for(0.1)
        future = client.call_async(GetState.Request())
        while not future.done():
            if time.monotonic() >= deadline:
                future.cancel()
                return ""
            self.spin_for(0.05)
        return future.result().current_state.label

    def reach(self, node: str, transition: str, timeout_s: float, alive: Callable[[], bool]) -> tuple[bool, str]:
        """Bring the node through `transition` (configure, activate) to its target state, asking for its state before
        and after each request: a reply lost under load (the node took the transition, the runner never heard) is
        found by the next query, and a request that got no answer is made again; one the node refused (it failed)
        is not. Returns whether the node got there and its last known state ('' when it never answered)."""
        target = TRANSITION_TARGETS[transition]
        deadline = time.monotonic() + timeout_s
        state = ""
        while alive() and (left := deadline - time.monotonic()) > 0:
            state = self.get_state(node, min(REPLY_TIMEOUT_S, left)) or state
            if state == target:
                return True, state
            if state == TRANSITION_SOURCES[transition]:
                answer = self.request_transition(node, transition, min(REPLY_TIMEOUT_S, max(left, 0.1)), alive)
                if answer is False:  # refused: done already (an earlier reply was lost), or failed
                    state = self.get_state(node, REPLY_TIMEOUT_S) or state
                    return state == target, state
            elif state and state not in IN_TRANSITION:
                return False, state  # finalized, or another state this transition cannot leave
            else:
                self.spin_for(0.2)  # not answering yet, or in the middle of a transition
        return False, state

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        stamp = message.header.stamp.sec + message.header.stamp.nanosec * 1e-9
        for status in message.status:
            reports = self.reports[status.hardware_id]
            if not reports or stamp >= reports[-1].stamp_s:
                reports.append(Report(stamp, {kv.key: kv.value for kv in status.values}))

    def spin_for(self, seconds: float) -> None:
        self._client.spin_for(seconds)

    def progress_line(self) -> str:
        self.spin_for(0.05)
        return progress_text(self.reports, self.capture)

    def frame_counts(self) -> FrameCounts | None:
        """Once the graph has stopped: the nodes' last reports, nothing in flight."""
        return frame_counts(self.reports, self.capture, final=True)

    def close(self) -> None:
        self._client.close()
