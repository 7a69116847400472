"""Reads the nodes' /diagnostics for the runner's progress line (no per-person data is read)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from privacy_vision.nodes.common import DIAGNOSTICS_TOPIC


class GraphMonitor:
    def __init__(self, domain_id: int, config_dir: Path) -> None:
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
        return (f"frames {self.value('camera', 'frames')} | processed {processed} ({fps:.1f} fps, "
                f"{self.value('detection', 'inference_ms_median')} ms/inference) | people tracked "
                f"{self.value('tracking', 'confirmed_tracks')} | releases {self.value('aggregator', 'releases')} "
                f"({self.value('aggregator', 'below_k')} below k) | sent {self.value('uplink', 'delivered')}, "
                f"queued {self.value('uplink', 'queued')}")

    def wait_until_quiet(self, timeout_s: float) -> None:
        """Let frames already in flight through the detector before the pipeline is stopped."""
        deadline = time.monotonic() + timeout_s
        last, still_since = self.processed_frames(), time.monotonic()
        while time.monotonic() < deadline:
            self.spin_for(0.2)
            current = self.processed_frames()
            if current != last:
                last, still_since = current, time.monotonic()
            elif time.monotonic() - still_since >= 1.2:
                return

    def close(self) -> None:
        self._executor.shutdown()
        self._node.destroy_node()
        rclpy.shutdown(context=self._context)
