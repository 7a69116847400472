"""A read-only tap on the running graph for the ROS user's tools (`privacy-vision record`, `privacy-vision foxglove`):
joins the graph's domain with its DDS settings, subscribes to the chosen topics as raw CDR bytes (no decoding, so
what is recorded or served is byte for byte what the nodes published), with each topic's durability from the graph
description (a latched topic's last messages arrive at once), and refuses a topic whose live type is never
recorded."""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from privacy_vision.core.graph import TopicSpec
from privacy_vision.core.recordings import check_type, ros2msg_schema
from privacy_vision.graph_client import GraphClient

DISCOVERY_S = 2.0  # time for discovery to list the live topics before their types are checked
TAP_DEPTH = 1000


def share_dirs() -> list[Path]:
    """Where the message definitions are: the share/ of every ROS prefix in AMENT_PREFIX_PATH, and this venv's."""
    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return [*(prefix / "share" for prefix in prefixes), Path(sys.prefix) / "share"]


def message_class(type_name: str):
    package, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def qos_for(topic: TopicSpec) -> QoSProfile:
    return QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE,
        history=HistoryPolicy.KEEP_LAST,
        depth=TAP_DEPTH,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if topic.latched else DurabilityPolicy.VOLATILE,
    )


class GraphTap:
    """Subscribes to `topics` on the graph; `on_message(topic, cdr_bytes, receive_time_ns)` for each message."""

    def __init__(
        self,
        domain_id: int,
        config_dir: Path,
        topics: tuple[TopicSpec, ...],
        on_message: Callable[[str, bytes, int], None],
        name: str,
    ) -> None:
        self.client = GraphClient(domain_id, config_dir, name=name)
        self.topics = topics
        self.schemas = {topic.name: ros2msg_schema(topic.type, share_dirs()) for topic in topics}
        self.client.spin_for(DISCOVERY_S)
        self.check_live_types()
        for topic in topics:
            self.client.node.create_subscription(
                message_class(topic.type),
                topic.name,
                lambda data, topic=topic.name: on_message(topic, data, time.time_ns()),
                qos_for(topic),
                raw=True,
            )

    def check_live_types(self) -> None:
        """RecordingRefused if a chosen topic carries a type that is never recorded (or not the described one)."""
        live = dict(self.client.node.get_topic_names_and_types())
        for topic in self.topics:
            for type_name in live.get(topic.name, []):
                check_type(topic.name, type_name)

    def spin_for(self, seconds: float) -> None:
        self.client.spin_for(seconds)

    def close(self) -> None:
        self.client.close()
