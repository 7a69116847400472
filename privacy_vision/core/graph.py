"""One description of the privacy_vision graph (pure Python, no rclpy): the nodes in pipeline order, which of
them hold per-person state, the topics with what they carry and whether they leave the device, where each state
store lives under the state directory, and the stop budget that the nodes, the launch file and the runner share.

The runner, the launch file, the node processes, the monitor, both command lines, the compliance code and the
package test read this module instead of keeping their own lists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

CAPTURE_MODES = ("camera", "in_process")  # camera node + image topic, or the detection node reads the source itself


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph, as the runner, launch file, CLIs and compliance code need to know it."""

    name: str
    does: str
    upstream: str | None  # the node whose output this one consumes (camera capture); it stops after that one
    personal_data: str  # per-person data held in memory ("" = none); such nodes answer forget and data-subject requests
    answers_requests: bool  # offers ~/forget and ~/data_subject_request (a node without personal data says so)
    dpia_settings: bool  # the live DPIA reads its parameters (its get_parameters service)


NODES: tuple[NodeSpec, ...] = (
    NodeSpec("camera", "reads the source and publishes frames", None, "", False, False),
    NodeSpec(
        "detection",
        "person boxes from frames; zeroes every frame buffer",
        "camera",
        "camera frames, zeroed after inference (retention_frames)",
        True,
        True,
    ),
    NodeSpec(
        "tracking",
        "motion-only tracks, foot points in floor metres",
        "detection",
        "live tracks: tracker ID, box, floor position and velocity",
        True,
        True,
    ),
    NodeSpec(
        "anonymizer",
        "keyed rotating IDs, grid cells; true totals of the open segments (presence, events per stitched track)",
        "tracking",
        "per live lineage (stitched tracks, memory only): its zone stays and arrival times, the zones and groups it "
        "counted in today; the in-memory ID key",
        True,
        True,
    ),
    NodeSpec(
        "aggregator",
        "OpenDP noise once per released span, intervals, durable release store and ledger",
        "anonymizer",
        "",
        True,
        True,
    ),
    NodeSpec("uplink", "sends the release store's outbox over pinned, signed HTTPS", "aggregator", "", False, True),
)
NODE_NAMES = tuple(node.name for node in NODES)
REQUEST_NODES = tuple(
    node.name for node in NODES if node.answers_requests
)  # forget / data-subject requests go to these
PERSONAL_DATA_NODES = tuple(node.name for node in NODES if node.personal_data)
DPIA_NODES = tuple(node.name for node in NODES if node.dpia_settings)  # the live DPIA needs each one's settings


# Whether a topic may be recorded (`privacy-vision record`) or served to a viewer (`privacy-vision foxglove`).
RECORD_ALLOWED = "allowed"  # by default: it may leave the device, or holds no per-person data
RECORD_PER_PERSON = "per_person"  # only when asked for explicitly, audit-logged, with a retention limit
RECORD_NEVER = "never"  # refused whatever is asked: pixels, boxes, tracks, true totals


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the graph: its type, who publishes and reads it, what it carries, whether it leaves the device,
    whether it may be recorded, and whether its publisher keeps its last messages for late subscribers (latched)."""

    name: str
    type: str
    publisher: str
    subscribers: tuple[str, ...]
    carries: str
    leaves_device: str = ""  # how it leaves the device; "" = it never does
    recording: str = RECORD_NEVER
    latched: bool = False  # transient local: a late `ros2 topic echo`, rqt, recorder or viewer gets the last messages
    per_frame: bool = False  # one message per camera frame, stamped with the frame's time: gaps are lost frames


IMAGE_TOPIC = "/camera/image_raw"
DETECTIONS_TOPIC = "/detections"
TRACKS_TOPIC = "/tracks"
ANONYMIZED_TOPIC = "/anonymized_tracks"
ANALYTICS_TOPIC = "/zone_analytics"
# True per-segment totals travel from the anonymizer to the aggregator through this service only (never a topic):
# the anonymizer keeps each until the aggregator has recorded its release durably.
RELEASE_CELLS_SERVICE = "/aggregator/release_cells"
TRUE_TOTALS_TYPE = "privacy_vision_msgs/msg/CellTotals"  # what that service carries: never recorded or shown
TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        IMAGE_TOPIC,
        "sensor_msgs/msg/Image",
        "camera",
        ("detection",),
        "camera frames (pixels) from the camera node to the detection node; a local ROS topic, so any process on this device "
        "that joins the ROS domain can subscribe to it (e.g. `ros2 topic echo /camera/image_raw`); the detection node zeroes "
        "its copy after inference, copies held by the middleware or by other subscribers are outside its control",
        per_frame=True,
    ),
    TopicSpec(
        DETECTIONS_TOPIC,
        "privacy_vision_msgs/msg/Detections",
        "detection",
        ("tracking",),
        "person boxes in image pixels, per frame",
        per_frame=True,
    ),
    TopicSpec(
        TRACKS_TOPIC,
        "privacy_vision_msgs/msg/Tracks",
        "tracking",
        ("anonymizer",),
        "motion-only tracks: tracker ID, floor position and velocity, box",
        per_frame=True,
    ),
    TopicSpec(
        ANONYMIZED_TOPIC,
        "privacy_vision_msgs/msg/AnonymizedTracks",
        "anonymizer",
        (),
        "rotating keyed IDs, grid cells, size class, heading sector (nothing links two key epochs)",
        recording=RECORD_PER_PERSON,
    ),
    TopicSpec(
        ANALYTICS_TOPIC,
        "privacy_vision_msgs/msg/ZoneAnalytics",
        "aggregator",
        ("uplink",),
        "released spans: DP presence (window, hour, day), events per stitched track (day), strict-mode groups; each "
        "value with its 95% interval",
        leaves_device="the same releases, from the durable release store, via the uplink (HTTPS, pinned, signed)",
        recording=RECORD_ALLOWED,
        latched=True,
    ),
)
TOPIC_NAMES = tuple(topic.name for topic in TOPICS)
DIAGNOSTICS_TOPIC = "/diagnostics"  # every node's health and counters (read by the runner's monitor)
DIAGNOSTICS_CARRIES = (
    "every node's health and counters on /diagnostics, once a second, local only (any process on this device can read "
    "it): among them the tracking node's exact count of confirmed tracks in view (a live people count), frame and "
    "release counters; no identifiers, positions or pixels"
)
TF_STATIC_TOPIC = "/tf_static"  # tf2's static transforms: latched, as tf2's StaticTransformBroadcaster publishes
# Topics of ROS's own conventions besides the pipeline's, for tools: what every node reports, and where the camera is.
TOOL_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        DIAGNOSTICS_TOPIC,
        "diagnostic_msgs/msg/DiagnosticArray",
        "every node",
        (),
        DIAGNOSTICS_CARRIES,
        recording=RECORD_ALLOWED,
    ),
    TopicSpec(
        TF_STATIC_TOPIC,
        "tf2_msgs/msg/TFMessage",
        "tracking",
        (),
        "the floor -> camera transform derived from the homography (configuration, no person data)",
        recording=RECORD_ALLOWED,
        latched=True,
    ),
)


def recordable(per_person: bool = False) -> tuple[TopicSpec, ...]:
    """The topics a recorder or viewer may take: those allowed by default, with `per_person` also the per-person ones."""
    allowed = {RECORD_ALLOWED, RECORD_PER_PERSON} if per_person else {RECORD_ALLOWED}
    return tuple(topic for topic in (*TOPICS, *TOOL_TOPICS) if topic.recording in allowed)


def never_recorded_types() -> frozenset[str]:
    """Message types refused under any topic name (a remapped image topic, or true totals a foreign node publishes,
    are still refused)."""
    return frozenset({TRUE_TOTALS_TYPE, *(topic.type for topic in TOPICS if topic.recording == RECORD_NEVER)})


# What a process needs to join the graph: the domain and the DDS transport settings the nodes run with.
DDS_ENVIRONMENT = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE", "ROS_DOMAIN_ID")

# State stores, relative to the state directory (`privacy-vision run --var-dir`, launch `state_dir`).
STATE_STORES = {
    "pki": "pki",  # device HMAC key, audit key, CA, ingest certificate, pins.txt
    "audit": "audit",  # tamper-evident audit log (all nodes)
    # released spans, ledger charges and strict thresholds (aggregator) and the outbox the uplink sends from
    "releases": "releases.sqlite",
    "runtime": "runtime",  # runtime parameter changes kept for respawned nodes (launch)
    "ingest": "ingest.sqlite",  # the local ingest of `privacy-vision run` (the cloud's own store elsewhere)
    "logs": "logs",  # node logs of `privacy-vision run`
}

RUN_ANALYST = "analyst"  # `privacy-vision run` issues this analyst's read-API token: <state>/pki/analyst-analyst.token

# Camera parameters that the detection node takes in the in-process capture mode.
SOURCE_PARAMETERS = ("source", "loop", "fps", "max_frames", "resize_width", "frame_id", "wait_for_subscriber_s")

# Stop budget. On a stop request every node waits for its upstream node to finish (its lifecycle state 'finalized',
# or gone from the graph) for at most UPSTREAM_WAIT_S, then deactivates (hands on what it still holds) and shuts
# down; the uplink then drains for its drain_timeout_s. ros2 launch escalates SIGINT -> SIGTERM -> SIGKILL; the launch
# file sets these timeouts on every node so that the whole ordered stop fits before SIGKILL (SIGTERM is taken as
# the same stop request).
UPSTREAM_WAIT_S = 8.0
DRAIN_TIMEOUT_S = 4.0
STOP_MARGIN_S = 3.0
LAUNCH_SIGTERM_TIMEOUT_S = 10.0
LAUNCH_SIGKILL_TIMEOUT_S = 10.0


def node(name: str) -> NodeSpec:
    for spec in NODES:
        if spec.name == name:
            return spec
    raise KeyError(f"no node {name!r} in the graph: {', '.join(NODE_NAMES)}")


def check_capture(capture: str) -> str:
    if capture not in CAPTURE_MODES:
        raise ValueError(f"capture must be one of {CAPTURE_MODES}, got {capture!r}")
    return capture


def pipeline(capture: str = "camera") -> tuple[str, ...]:
    """The nodes that run, in pipeline order (also the stop order); in-process capture has no camera node."""
    return NODE_NAMES if check_capture(capture) == "camera" else NODE_NAMES[1:]


def source_node(capture: str = "camera") -> str:
    """The node that reads the source: the graph ends when its recording ends."""
    return pipeline(capture)[0]


def upstream_of(name: str, capture: str = "camera") -> str | None:
    upstream = node(name).upstream
    return upstream if upstream in pipeline(capture) else None


def topics(capture: str = "camera") -> tuple[TopicSpec, ...]:
    """The topics of the running graph: in-process capture publishes no image topic."""
    return tuple(topic for topic in TOPICS if topic.publisher in pipeline(capture))


def frame_topic_into(name: str, upstream: str | None) -> str | None:
    """The per-frame topic that node `name` receives from its upstream node, whose gaps it counts as lost frames."""
    for topic in TOPICS:
        if topic.per_frame and topic.publisher == upstream and name in topic.subscribers:
            return topic.name
    return None


def leaves_device() -> dict[str, str]:
    return {topic.name: topic.leaves_device for topic in TOPICS if topic.leaves_device}


def state_paths(state_dir: Path | str) -> dict[str, Path]:
    root = Path(state_dir).expanduser()
    return {store: root / relative for store, relative in STATE_STORES.items()}


def graph_environment(config_dir: Path, domain_id: int) -> dict[str, str]:
    """The environment of the graph's processes: this process's own, with local discovery, the shipped Fast DDS
    profile and the domain (the runner starts the nodes with it; monitors and clients join with its DDS_ENVIRONMENT)."""
    env = dict(os.environ)
    env.update(
        {
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "FASTDDS_DEFAULT_PROFILES_FILE": str((Path(config_dir) / "fastdds.xml").resolve()),
            "ROS_DOMAIN_ID": str(domain_id),
            "PYTHONUNBUFFERED": "1",
            "RCUTILS_COLORIZED_OUTPUT": "0",
        }
    )
    return env


def parse_overrides(items: list[str], params_file: Path) -> dict[str, dict[str, str]]:
    """NODE.PARAM=VALUE pairs (the command lines' --set) checked against params.yaml; ValueError names a bad one.
    Values stay YAML text: the nodes themselves take an integer for a double."""
    defaults = yaml.safe_load(params_file.read_text()) if params_file.is_file() else {}
    overrides: dict[str, dict[str, str]] = {}
    for item in items:
        key, separator, value = item.partition("=")
        node_name, dot, name = key.partition(".")
        if not separator or not dot or node_name not in NODE_NAMES or not name:
            raise ValueError(
                f"--set expects NODE.PARAMETER=VALUE with NODE one of {', '.join(NODE_NAMES)}; got {item!r}"
            )
        known = (defaults.get(node_name) or {}).get("ros__parameters", {})
        if name not in known:
            raise ValueError(f"--set: node '{node_name}' has no parameter '{name}' (known: {', '.join(sorted(known))})")
        overrides.setdefault(node_name, {})[name] = typed_override(f"{node_name}.{name}", value, known[name])
    return overrides


def typed_override(name: str, text: str, default: object) -> str:
    """The YAML text of an override with the type of the parameter's value in params.yaml, or ValueError. This check
    cannot be left to the nodes: when a second params file gives a parameter another type, ROS's parser keeps the
    first file's value without a word (`--set aggregator.k=abc` ran with k = 5). A string parameter takes any text."""
    if isinstance(default, str):
        return yaml.safe_dump(text, default_style='"').strip()
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text

    def fits(value: object, default: object) -> bool:
        if isinstance(default, bool) or isinstance(value, bool):
            return type(value) is type(default)
        if isinstance(default, float):
            return isinstance(value, (int, float))
        if isinstance(default, list):
            return isinstance(value, list) and all(fits(item, default[0]) for item in value) if default else True
        return type(value) is type(default)

    if not fits(value, default):
        kind = {bool: "true or false", int: "an integer", float: "a number", list: "a list like [1, 2]"}
        raise ValueError(
            f"--set {name}={text}: expected {kind.get(type(default), type(default).__name__)} (params.yaml: {default!r})"
        )
    return text
