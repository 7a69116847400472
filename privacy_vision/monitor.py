"""The runner's ROS side: reads the nodes' /diagnostics for the progress line (no per-person data is read) and
drives their lifecycle transitions through each node's ~/change_state service."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState

from privacy_vision.core.graph import DIAGNOSTICS_TOPIC
from privacy_vision.graph_client import GraphClient
from privacy_vision.report import FrameCounts, Report, frame_counts, progress_text

REPORTS_KEPT = 10  # per node: enough to interpolate counters and measure rates over a few seconds


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

    def change_state(self, node: str, transition: str, timeout_s: float, alive: Callable[[], bool]) -> bool:
        """Ask /NODE/change_state for a transition by label (configure, activate, shutdown); True when it succeeded.
        Waits for the service while `alive()` (the node's process runs); False on a refusal, an exit or a timeout."""
        client = self._lifecycle_clients.get(node)
        if client is None:
            client = self._lifecycle_clients[node] = self._node.create_client(ChangeState, f"/{node}/change_state")
        deadline = time.monotonic() + timeout_s
        while not client.service_is_ready():
            if not alive() or time.monotonic() >= deadline:
                return False
            self.spin_for(0.1)
        future = client.call_async(ChangeState.Request(transition=Transition(label=transition)))
        while not future.done():
            if not alive() or time.monotonic() >= deadline:
                future.cancel()
                return False
            self.spin_for(0.05)
        return bool(future.result().success)

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
