"""The runner's ROS side: reads the nodes' /diagnostics for the progress line (no per-person data is read) and
drives their lifecycle transitions through each node's ~/change_state service."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from privacy_vision.core.graph import DIAGNOSTICS_TOPIC, source_node


class GraphMonitor:
    def __init__(self, domain_id: int, config_dir: Path, capture: str = "camera") -> None:
        self.source = source_node(capture)  # the node whose 'frames' count the frames read
        from privacy_vision.runner import graph_environment

        os.environ.update({k: v for k, v in graph_environment(config_dir, domain_id).items()
                           if k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE", "ROS_DOMAIN_ID")})
        self._context = Context()
        rclpy.init(context=self._context, domain_id=domain_id)
        self._node = Node("privacy_vision_monitor", context=self._context)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self.values: dict[str, dict[str, str]] = {}
        self._node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics, 50)
        self._rate_samples: list[tuple[float, int]] = []
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
        for status in message.status:
            self.values[status.hardware_id] = {kv.key: kv.value for kv in status.values}

    def value(self, node: str, key: str, default: str = "0") -> str:
        return self.values.get(node, {}).get(key, default)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._executor.spin_once(timeout_sec=0.05)

    def processed_frames(self) -> int:
        return int(self.value("detection", "frames"))

    def progress_line(self) -> str:
        self.spin_for(0.05)
        now, processed = time.monotonic(), self.processed_frames()
        self._rate_samples = [(t, n) for t, n in self._rate_samples if now - t <= 5.0] + [(now, processed)]
        (t0, n0), (t1, n1) = self._rate_samples[0], self._rate_samples[-1]
        fps = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
        return (f"frames {self.value(self.source, 'frames')} | processed {processed} ({fps:.1f} fps, "
                f"{self.value('detection', 'inference_ms_median')} ms/inference, {self.value('detection', 'backend', 'detector starting')}) | people tracked "
                f"{self.value('tracking', 'confirmed_tracks')} | releases {self.value('aggregator', 'releases')} "
                f"({self.value('aggregator', 'below_k')} below k) | sent {self.value('uplink', 'delivered')}, "
                f"queued {self.value('uplink', 'queued')}")

    def close(self) -> None:
        self._executor.shutdown()
        self._node.destroy_node()
        rclpy.shutdown(context=self._context)
