"""Helpers for tests that talk to real node processes over DDS."""
from __future__ import annotations

import fcntl
import importlib
import os
import random
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Callable

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from privacy_vision.core.graph import graph_environment

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config"


_HELD_DOMAINS: list = []  # open lock files: a domain stays ours until this test process exits


def free_domain_id() -> int:
    """A ROS domain no other test process on this host holds (an exclusive lock file per domain): random
    picks alone let two concurrent test runs talk to each other's graphs."""
    folder = Path(tempfile.gettempdir()) / "privacy_vision_ros_domains"
    folder.mkdir(exist_ok=True)
    for domain in random.sample(range(110, 201), 91):
        handle = open(folder / f"{domain}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _HELD_DOMAINS.append(handle)
        return domain
    raise RuntimeError("every ROS domain from 110 to 200 is held by another test process on this host: wait for them to end")


def node_environment(domain_id: int) -> dict[str, str]:
    return graph_environment(CONFIG, domain_id)


def start_node(name: str, domain_id: int, parameters: dict[str, str], log_path: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "privacy_vision.node_main", name, "--ros-args", "--params-file", str(CONFIG / "params.yaml")]
    parameters = {"audit_dir": str(log_path.parent / "audit"), **parameters}
    for key, value in parameters.items():
        command += ["-p", f"{key}:={value}"]
    log = open(log_path, "w")
    return subprocess.Popen(command, cwd=REPO, env=node_environment(domain_id), stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen, timeout_s: float = 15.0) -> int:
    if process.poll() is None:
        process.send_signal(2)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def message_class(type_name: str):
    package, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


class RosProbe:
    """A node in the test process, on the graph's domain and transport settings."""

    def __init__(self, domain_id: int) -> None:
        os.environ.update({k: v for k, v in node_environment(domain_id).items()
                           if k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE", "ROS_DOMAIN_ID")})
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node(f"test_probe_{random.randint(0, 10**6)}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = {}
        self.topic_types: dict[str, set[str]] = {}
        self._subscribed: set[str] = set()

    def spin_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return condition()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def watch_topics(self, skip_types: tuple[str, ...] = ("sensor_msgs/msg/Image",)) -> None:
        """Record every topic's types; subscribe to the others with the publishers' reliability."""
        for topic, types in self.node.get_topic_names_and_types():
            self.topic_types.setdefault(topic, set()).update(types)
            if topic in self._subscribed or any(t in skip_types for t in types):
                continue
            self._subscribed.add(topic)
            self.received[topic] = []
            publishers = self.node.get_publishers_info_by_topic(topic)
            reliable = publishers and all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
            qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
            self.node.create_subscription(message_class(types[0]), topic, self.received[topic].append, qos)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def pixel_like_fields(message, path: str = "") -> list[str]:
    """Paths of fields that could carry image content: byte arrays beyond a few bytes, or any Image."""
    found = []
    type_name = type(message).__module__ + "." + type(message).__name__
    if "sensor_msgs" in type_name and ("Image" in type_name):
        return [path or type_name]
    for field in getattr(message, "get_fields_and_field_types", lambda: {})():
        value = getattr(message, field)
        where = f"{path}.{field}" if path else field
        if isinstance(value, (bytes, bytearray)) or (isinstance(value, array) and value.typecode in "bB"):
            if len(value) > 16:
                found.append(where)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                if hasattr(item, "get_fields_and_field_types"):
                    found += pixel_like_fields(item, f"{where}[{index}]")
        elif hasattr(value, "get_fields_and_field_types"):
            found += pixel_like_fields(value, where)
    return found


RELIABLE_QOS_FOR_TESTS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
