"""A short-lived ROS node of our own on the graph's domain, with the graph's DDS settings and a private context (so it
never touches the default one): the runner's monitor and the compliance commands call the nodes' services through it."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from privacy_vision.core.graph import DDS_ENVIRONMENT, graph_environment


class GraphClient:
    """Joins the graph on `domain_id` for service calls and subscriptions; close() leaves it."""

    def __init__(self, domain_id: int, config_dir: Path, name: str = "privacy_vision_cli") -> None:
        os.environ.update({k: v for k, v in graph_environment(config_dir, domain_id).items() if k in DDS_ENVIRONMENT})
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node(f"{name}_{uuid.uuid4().hex[:6]}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def call(self, service_type, name: str, request, timeout_s: float = 20.0):
        """The response of service `name`, or None when it is not there or does not answer within timeout_s."""
        client = self.node.create_client(service_type, name)
        deadline = time.monotonic() + timeout_s
        while not client.service_is_ready() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.1)
        if not client.service_is_ready():
            return None
        future = client.call_async(request)
        while not future.done() and time.monotonic() < deadline + timeout_s:
            self.executor.spin_once(timeout_sec=0.1)
        return future.result() if future.done() else None

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
