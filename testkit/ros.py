"""Helpers for tests and benchmarks that talk to real node processes over DDS (these load rclpy)."""

from __future__ import annotations

import importlib
import os
import random
import time
from array import array
from collections.abc import Callable

import rclpy
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from privacy_vision.core.graph import DDS_ENVIRONMENT
from testkit.core import node_environment


def message_class(type_name: str):
    package, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


class RosProbe:
    """A node in the test process, on the graph's domain and transport settings."""

    def __init__(self, domain_id: int) -> None:
        os.environ.update({k: v for k, v in node_environment(domain_id).items() if k in DDS_ENVIRONMENT})
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
            qos = QoSProfile(
                depth=1000, reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
            )
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


def _value(python_value) -> ParameterValue:
    if isinstance(python_value, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=python_value)
    if isinstance(python_value, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=python_value)
    if isinstance(python_value, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=python_value)
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=python_value)


class ParameterClient:
    """What `ros2 param set/get` does: the node's rcl_interfaces parameter services."""

    def __init__(self, probe: RosProbe, node: str) -> None:
        self.probe = probe
        self.set_client = probe.node.create_client(SetParameters, f"/{node}/set_parameters")
        self.get_client = probe.node.create_client(GetParameters, f"/{node}/get_parameters")
        assert probe.spin_until(
            lambda: self.set_client.service_is_ready() and self.get_client.service_is_ready(), 60.0
        ), f"parameter services of /{node} did not appear"

    def _call(self, client, request):
        future = client.call_async(request)
        assert self.probe.spin_until(future.done, 10.0)
        return future.result()

    def set(self, name: str, value):
        result = self._call(
            self.set_client, SetParameters.Request(parameters=[Parameter(name=name, value=_value(value))])
        )
        return result.results[0]

    def get(self, name: str):
        value = self._call(self.get_client, GetParameters.Request(names=[name])).values[0]
        return {
            ParameterType.PARAMETER_DOUBLE: value.double_value,
            ParameterType.PARAMETER_INTEGER: value.integer_value,
            ParameterType.PARAMETER_STRING: value.string_value,
        }[value.type]
