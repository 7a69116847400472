"""Launch the privacy_vision graph on a real ROS 2 install (Jazzy/Kilted):

    ros2 launch privacy_vision privacy_vision.launch.py source:=/dev/video0 \
        ingest_url:=https://ingest.example.com/v1/releases state_dir:=/var/lib/privacy_vision

The same config files as `privacy-vision run`. The six nodes are lifecycle nodes: this file configures each
one when its process starts and activates it once configured, the source node last (once every other node is
active), through launch_ros lifecycle events. A stop (Ctrl-C, SIGINT or SIGTERM to ros2 launch, the end of a
recording) becomes an ordered stop: launch signals every node, and each one shuts down (deactivate: hand on what
it holds; shutdown: close its files) after its upstream node has finished, so the graph stops camera -> detection
-> tracking -> anonymizer -> aggregator -> uplink and the uplink stores every release before it exits. The
escalation timeouts on each node leave room for that (core/graph.py: the stop budget).

composed:=true runs all nodes as separate ROS nodes in one process on one executor (`composed_node`): less memory,
no isolation; that process configures and activates its nodes itself in the same order, and stops them in the same
order. Nodes (or the composed process) that crash are respawned with their configured parameters and the runtime changes accepted since this
launch started (kept under state_dir/runtime/). A recorded source (file or folder, loop:=false) ends the launch
when it ends. Discovery is limited to this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST plus the Fast DDS
profile in config/). The ingest itself runs in the cloud (`privacy-vision-ingest`), not here.
"""

import functools
import shutil
import signal
import threading
from pathlib import Path

import launch.logging
import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
    TimerAction,
)
from launch.event_handlers import OnProcessExit, OnProcessStart
from launch.events import Shutdown, matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.ros_adapters import get_ros_node
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import GetState

from launch import LaunchDescription
from privacy_vision.core.graph import (
    CAPTURE_MODES,
    LAUNCH_SIGKILL_TIMEOUT_S,
    LAUNCH_SIGTERM_TIMEOUT_S,
    SOURCE_PARAMETERS,
    pipeline,
    source_node,
    state_paths,
)

SOURCE_START_TIMEOUT_S = 90.0  # the source node starts anyway (with a warning) if other nodes are not active by then
GET_STATE_TIMEOUT_S = 2.0

# Launch argument -> (node, parameter): empty means "as in the params file".
PARAMETER_ARGUMENTS = {
    "loop": ("camera", "loop"),
    "fps": ("camera", "fps"),
    "max_frames": ("camera", "max_frames"),
    "model": ("detection", "model"),
    "onnx_model": ("detection", "onnx_model"),
    "homography_file": ("tracking", "homography_file"),
    "zones_file": ("anonymizer", "zones_file"),
    "window_s": ("anonymizer", "window_s"),
    "k": ("aggregator", "k"),
    "epsilon": ("aggregator", "epsilon_per_track_day"),
}


def _nodes(context):
    share = Path(get_package_share_directory("privacy_vision"))
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    config = Path(value("config_dir") or share / "config")
    params_file = Path(value("params_file") or config / "params.yaml")
    state = state_paths(Path(value("state_dir")).expanduser().resolve())
    pins_file = state["pki"] / "pins.txt"
    pins = [p for p in value("pins").split(",") if p] or (pins_file.read_text().split() if pins_file.is_file() else [])
    if not pins:
        raise RuntimeError(
            f"no SPKI pins: pass pins:=PRIMARY,BACKUP or create {pins_file} with "
            f"'ros2 run privacy_vision privacy-vision pki --out {state['pki']}'"
        )
    capture = value("capture")
    if capture not in CAPTURE_MODES:
        raise RuntimeError(f"capture:={capture} is not one of {CAPTURE_MODES}")
    # Runtime changes are kept for respawns within this launch only: a new launch starts from the configured values.
    shutil.rmtree(state["runtime"], ignore_errors=True)
    overrides = {
        "camera": {"source": value("source")},
        "tracking": {"homography_file": str(config / "homography_pets.yaml")},
        "anonymizer": {"zones_file": str(config / "zones.yaml")},
        "aggregator": {"release_store": str(state["releases"])},
        "uplink": {
            "ingest_url": value("ingest_url"),
            "pins": pins,
            "ca_file": value("ca_file") or str(state["pki"] / "ca.crt"),
            "key_file": str(state["pki"] / "device.key"),
            "outbox_path": str(state["releases"]),
        },
    }
    for argument, (node, parameter) in PARAMETER_ARGUMENTS.items():
        if value(argument) != "":
            overrides.setdefault(node, {})[parameter] = yaml.safe_load(value(argument))
    composed = value("composed").lower() in ("true", "1")
    # Separate processes: this file drives each node's lifecycle; composed: the process configures and activates its
    # nodes itself, in the same order (the source last).
    common = {
        "audit_dir": str(state["audit"]),
        "audit_key_file": str(state["pki"] / "audit.key"),
        "autostart": composed,
    }
    if capture == "in_process":  # the detection node reads the source: no camera node, no image topic
        camera = {**camera_parameters(params_file), **overrides.pop("camera")}
        overrides["detection"] = {**camera, **overrides.get("detection", {}), "capture": "in_process"}
    source = source_node(capture)

    def parameters(name: str) -> dict:
        return {**common, "runtime_parameters_file": str(state["runtime"] / f"{name}.yaml"), **overrides.get(name, {})}

    escalation = {
        "respawn": True,
        "respawn_delay": 2.0,
        "output": "screen",
        "sigterm_timeout": str(LAUNCH_SIGTERM_TIMEOUT_S),
        "sigkill_timeout": str(LAUNCH_SIGKILL_TIMEOUT_S),
    }
    if composed:  # all nodes as separate ROS nodes in one process, one executor
        sections = state["runtime"] / "composed_parameters.yaml"
        sections.parent.mkdir(parents=True, exist_ok=True)
        sections.write_text(yaml.safe_dump({name: {"ros__parameters": parameters(name)} for name in pipeline(capture)}))
        process = Node(
            package="privacy_vision",
            executable="composed_node",
            arguments=["--capture", capture],
            parameters=[str(params_file), str(sections)],
            **escalation,
        )
        return [
            process,
            RegisterEventHandler(
                OnProcessExit(target_action=process, on_exit=functools.partial(end_with_source, source))
            ),
            OpaqueFunction(function=stop_requests_stop_in_order),
        ]
    actions = {
        name: LifecycleNode(
            package="privacy_vision",
            executable=f"{name}_node",
            name=name,
            namespace="",
            parameters=[str(params_file), parameters(name)],
            **escalation,
        )
        for name in pipeline(capture)
    }
    source_ended = OnProcessExit(target_action=actions[source], on_exit=functools.partial(end_with_source, source))
    return [
        *actions.values(),
        *Startup(actions, source).handlers(),
        RegisterEventHandler(source_ended),
        OpaqueFunction(function=stop_requests_stop_in_order),
    ]


def end_with_source(source: str, event, context) -> list | None:
    """A source that ended by itself (exit code 0: end of a recording, or max_frames) ends the launch; a crash (any
    other code) is respawned. The respawn waits respawn_delay, and the shutdown cancels it."""
    if event.returncode != 0 or context.is_shutdown:
        return None
    return [EmitEvent(event=Shutdown(reason=f"the {source} node's source ended"))]


class Startup:
    """Drives the start-up transitions with launch_ros lifecycle events: each node is configured when its process
    starts (again after a respawn) and activated once configured; the source node is activated last, once every
    other node is active, so that no frame flows before its receivers are there."""

    def __init__(self, actions: dict, source: str) -> None:
        self.actions, self.source = actions, source
        self.active: set[str] = set()
        self.source_configured = False
        self.source_activated = False
        self.logger = launch.logging.get_logger("privacy_vision")

    def handlers(self) -> list:
        entities = []
        for name, action in self.actions.items():
            entities.append(
                RegisterEventHandler(
                    OnProcessStart(target_action=action, on_start=functools.partial(self._started, name))
                )
            )
            entities.append(
                RegisterEventHandler(
                    OnStateTransition(
                        target_lifecycle_node=action,
                        entities=[OpaqueFunction(function=functools.partial(self._transition, name))],
                    )
                )
            )
        entities.append(
            TimerAction(period=SOURCE_START_TIMEOUT_S, actions=[OpaqueFunction(function=self._start_source_anyway)])
        )
        return entities

    def _change(self, name: str, transition: int) -> EmitEvent:
        return EmitEvent(
            event=ChangeState(lifecycle_node_matcher=matches_action(self.actions[name]), transition_id=transition)
        )

    def _started(self, name: str, event, context) -> None:
        self.active.discard(name)
        if name == self.source:
            self.source_configured = self.source_activated = False
        context.add_completion_future(
            context.asyncio_loop.run_in_executor(None, self._configure_when_serving, name, context)
        )

    def _configure_when_serving(self, name: str, context) -> None:
        """Emit the configure request once the new process answers ~/get_state. After a respawn, launch's client
        may still be matched to the dead process's service (until its DDS lease expires): a request sent before the
        new process serves would be lost, and launch_ros would wait for its answer forever."""
        node = get_ros_node(context)
        client = node.create_client(GetState, f"/{name}/get_state")
        try:
            while not context.is_shutdown:
                if not client.wait_for_service(timeout_sec=1.0):
                    continue
                answered = threading.Event()
                future = client.call_async(GetState.Request())
                future.add_done_callback(lambda _, answered=answered: answered.set())
                if not answered.wait(GET_STATE_TIMEOUT_S):
                    future.cancel()
                    continue
                if future.result().current_state.id == State.PRIMARY_STATE_UNCONFIGURED:
                    event = ChangeState(
                        lifecycle_node_matcher=matches_action(self.actions[name]),
                        transition_id=Transition.TRANSITION_CONFIGURE,
                    )
                    context.asyncio_loop.call_soon_threadsafe(context.emit_event_sync, event)
                return
        finally:
            node.destroy_client(client)

    def _transition(self, name: str, context) -> list | None:
        event = context.locals.event
        if event.start_state == "configuring" and event.goal_state == "inactive":
            if name != self.source:
                return [self._change(name, Transition.TRANSITION_ACTIVATE)]
            self.source_configured = True
        elif event.goal_state == "active":
            self.active.add(name)
        else:
            self.active.discard(name)
        waiting = set(self.actions) - {self.source} - self.active
        if self.source_configured and not self.source_activated and not waiting and not context.is_shutdown:
            return self._activate_source()
        return None

    def _activate_source(self) -> list:
        self.source_activated = True
        return [self._change(self.source, Transition.TRANSITION_ACTIVATE)]

    def _start_source_anyway(self, context) -> list | None:
        waiting = sorted(set(self.actions) - {self.source} - self.active)
        if self.source_activated or not self.source_configured or context.is_shutdown:
            return None
        self.logger.warning(
            f"{', '.join(waiting)} not active after {SOURCE_START_TIMEOUT_S:g} s; starting the {self.source} node anyway"
        )
        return self._activate_source()


def stop_requests_stop_in_order(context) -> None:
    """SIGINT and SIGTERM to ros2 launch both become a launch shutdown that signals every node, and each node stops
    after its upstream (see the module docstring). Without this, launch leaves the nodes alone on a SIGINT sent to it
    only (it assumes a terminal sent one to the whole group), and SIGTERM (what systemd sends) cancels launch at once
    and orphans them (ros2/launch#666). launch offers no public hook for its signal handling, so its signal manager
    (launch.utilities.signal_management, launch 3.x) is reached directly; where it is absent, a warning says so, and
    the nodes still stop in order when launch dies (each asks for SIGTERM on its parent's death)."""
    from launch.utilities.signal_management import AsyncSafeSignalManager

    logger = launch.logging.get_logger("privacy_vision")
    get_ros_node(context)  # rclpy's own handlers are in place first; ours replace them for SIGTERM below
    manager = getattr(AsyncSafeSignalManager, "_AsyncSafeSignalManager__current", None)
    if manager is None:
        logger.warning(
            "launch's signal manager was not found: SIGTERM ends ros2 launch at once (the nodes then stop by themselves)"
        )
        return None
    requested: list[str] = []

    def on_stop_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if requested:
            logger.warning(f"{name} again: the graph is already stopping in pipeline order")
            return
        requested.append(name)
        logger.info(f"{name}: stopping the graph in pipeline order (each node after its upstream has finished)")
        context.emit_event_sync(Shutdown(reason=f"{name} received", due_to_sigint=False))

    manager.handle(signal.SIGINT, on_stop_signal)
    manager.handle(signal.SIGTERM, on_stop_signal)
    signal.signal(
        signal.SIGTERM, lambda *_: None
    )  # a Python-level handler, so that SIGTERM reaches the manager (not its default action)
    return None


def camera_parameters(params_file: Path) -> dict:
    """The camera section of the params file, for the detection node when it captures in process."""
    camera = yaml.safe_load(params_file.read_text())["camera"]["ros__parameters"]
    return {k: v for k, v in camera.items() if k in SOURCE_PARAMETERS}


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory("privacy_vision"))
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "source", description="video file, image folder, /dev/videoN, camera index or stream URL"
            ),
            DeclareLaunchArgument(
                "capture",
                default_value="camera",
                choices=list(CAPTURE_MODES),
                description="camera: camera node + /camera/image_raw (needed for your own camera driver); "
                "in_process: the detection node reads the source, no image topic exists",
            ),
            DeclareLaunchArgument(
                "composed",
                default_value="false",
                choices=["true", "false"],
                description="true: all nodes as separate ROS nodes in one process on one executor (less memory; a crash "
                "stops them all); false: one process per node (isolation)",
            ),
            DeclareLaunchArgument(
                "config_dir",
                default_value="",
                description="folder with params.yaml, zones.yaml, homography_pets.yaml, fastdds.xml (default: the package's)",
            ),
            DeclareLaunchArgument(
                "params_file", default_value="", description="node parameters (default: config_dir/params.yaml)"
            ),
            DeclareLaunchArgument(
                "zones_file", default_value="", description="zones YAML (default: config_dir/zones.yaml)"
            ),
            DeclareLaunchArgument(
                "homography_file",
                default_value="",
                description="image->floor homography YAML (default: config_dir/homography_pets.yaml)",
            ),
            DeclareLaunchArgument(
                "model",
                default_value="",
                description="Ultralytics weights for the detector (default: the params file's)",
            ),
            DeclareLaunchArgument(
                "onnx_model",
                default_value="",
                description="your own YOLOX-format ONNX export (default: the shipped YOLOX-nano)",
            ),
            DeclareLaunchArgument(
                "loop",
                default_value="",
                description="true: replay a recorded file or folder at its end; false: the launch ends with it",
            ),
            DeclareLaunchArgument(
                "fps", default_value="", description="source rate limit in frames/s (0: the file's own rate)"
            ),
            DeclareLaunchArgument(
                "max_frames", default_value="", description="stop the source after this many frames (0: no limit)"
            ),
            DeclareLaunchArgument(
                "window_s", default_value="", description="period of the window tier in seconds (must divide an hour)"
            ),
            DeclareLaunchArgument(
                "k", default_value="", description="cells whose noisy occupancy is below k are shown as '< k'"
            ),
            DeclareLaunchArgument(
                "epsilon", default_value="", description="DP epsilon per track-day (aggregator.epsilon_per_track_day)"
            ),
            DeclareLaunchArgument(
                "state_dir",
                default_value="~/.local/state/privacy_vision",
                description="keys, release store (releases, ledger, outbox), audit log, runtime parameter changes",
            ),
            DeclareLaunchArgument(
                "ingest_url", default_value="https://127.0.0.1:8443/v1/releases", description="ingest endpoint"
            ),
            DeclareLaunchArgument(
                "pins", default_value="", description="comma-separated SPKI pins (default: state_dir/pki/pins.txt)"
            ),
            DeclareLaunchArgument(
                "ca_file", default_value="", description="CA of the ingest certificate (default: state_dir/pki/ca.crt)"
            ),
            SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"),
            SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", str(share / "config" / "fastdds.xml")),
            OpaqueFunction(function=_nodes),
        ]
    )
