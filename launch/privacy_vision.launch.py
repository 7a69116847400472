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
launch started (kept under state_dir/runtime/), except after a configuration error: a node that exits with code 2
(a bad parameter, a missing file or source) ends the launch with one line naming it and a non-zero exit, as does a
params, zones or homography file that is missing or not valid YAML (checked before any node starts). A recorded
source (file or folder, loop:=false) ends the launch when it ends. Discovery is limited to this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST plus the Fast DDS
profile in config/). The ingest itself runs in the cloud (`privacy-vision-ingest`), not here.
"""

import functools
import os
import re
import shutil
import signal
import threading
import time
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
from launch.event_handlers import OnProcessExit, OnProcessIO, OnProcessStart
from launch.events import Shutdown, matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.ros_adapters import get_ros_node
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import GetState

from launch import LaunchDescription
from privacy_vision.core.config_check import (
    EXIT_CONFIGURATION_ERROR,
    check_cross_node,
    merged,
    read_params_file,
    read_yaml_file,
    strict_mode_overrides,
)
from privacy_vision.core.geometry import ConfigError
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
COMPOSED = "composed"  # the process of composed:=true (all nodes in one)
ERROR_LINE = re.compile(r"\[ERROR\] \[[\d.]+\] \[([\w.]+)\]: (.*)")  # a node's ERROR log line: its name, message
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
FORCED_EXIT_S = 5.0  # after a second stop signal, ros2 launch exits at the latest this long after it


class LaunchConfigurationError(RuntimeError):
    """The launch cannot run as configured; launch prints the message as one line and exits non-zero."""


# Launch argument -> (node, parameter): empty means "as in the params file".
PARAMETER_ARGUMENTS = {
    "loop": ("camera", "loop"),
    "fps": ("camera", "fps"),
    "max_frames": ("camera", "max_frames"),
    "model": ("detection", "model"),
    "onnx_model": ("detection", "onnx_model"),
    "window_s": ("anonymizer", "window_s"),
    "k": ("aggregator", "k"),
    "epsilon": ("aggregator", "epsilon_per_presence_hour"),
    "events_epsilon": ("aggregator", "epsilon_events_per_track_day"),
    "groups_per_day": ("anonymizer", "groups_per_day"),
}


def _nodes(context):
    try:
        return _graph(context)
    except ConfigError as error:
        raise LaunchConfigurationError(f"privacy_vision: {error}") from None


def _graph(context):
    share = Path(get_package_share_directory("privacy_vision"))
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    config = Path(value("config_dir") or share / "config")
    params_file = Path(value("params_file") or config / "params.yaml").expanduser()
    state = state_paths(Path(value("state_dir")).expanduser().resolve())
    pins_file = state["pki"] / "pins.txt"
    pins = [p for p in value("pins").split(",") if p] or (pins_file.read_text().split() if pins_file.is_file() else [])
    if not pins:
        raise ConfigError(
            f"no SPKI pins: pass pins:=PRIMARY,BACKUP or create {pins_file} with "
            f"'ros2 run privacy_vision privacy-vision pki --out {state['pki']}'"
        )
    capture = value("capture")
    if capture not in CAPTURE_MODES:
        raise ConfigError(f"capture:={capture} is not one of {CAPTURE_MODES}")
    # Every file the nodes read is checked before any node starts: a missing or broken one is one line, not a node
    # crash-looping (or, for the params file, launch_ros silently running on built-in defaults).
    params = read_params_file(params_file)
    files = {
        "zones_file": Path(value("zones_file") or config / "zones.yaml").expanduser(),
        "homography_file": Path(value("homography_file") or config / "homography_pets.yaml").expanduser(),
    }
    for argument, path in files.items():
        read_yaml_file(path, argument)
    # Runtime changes are kept for respawns within this launch only: a new launch starts from the configured values.
    shutil.rmtree(state["runtime"], ignore_errors=True)
    overrides = {
        "camera": {"source": value("source")},
        "tracking": {"homography_file": str(files["homography_file"].resolve())},
        "anonymizer": {"zones_file": str(files["zones_file"].resolve())},
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
            overrides.setdefault(node, {})[parameter] = argument_value(argument, value(argument))
    if value("mode") == "strict":  # one argument for the two settings that only work together
        groups = argument_value("groups_per_day", value("groups_per_day")) if value("groups_per_day") else None
        for node, values in strict_mode_overrides(params, groups).items():
            overrides.setdefault(node, {}).update(values)
    elif value("mode"):
        overrides.setdefault("aggregator", {})["mode"] = value("mode")
    check_cross_node(merged(params, overrides))
    composed = value("composed").lower() in ("true", "1")
    # Separate processes: this file drives each node's lifecycle; composed: the process configures and activates its
    # nodes itself, in the same order (the source last).
    common = {
        "audit_dir": str(state["audit"]),
        "audit_key_file": str(state["pki"] / "audit.key"),
        "autostart": composed,
    }
    if capture == "in_process":  # the detection node reads the source: no camera node, no image topic
        camera = {**camera_parameters(params), **overrides.pop("camera")}
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
            *Exits(source).handlers({COMPOSED: process}),
            OpaqueFunction(function=stop_requests_stop_in_order),
        ]
    actions = {
        name: StoppableLifecycleNode(
            package="privacy_vision",
            executable=f"{name}_node",
            name=name,
            namespace="",
            parameters=[str(params_file), parameters(name)],
            **escalation,
        )
        for name in pipeline(capture)
    }
    return [
        *actions.values(),
        *Startup(actions, source).handlers(),
        *Exits(source).handlers(actions),
        OpaqueFunction(function=stop_requests_stop_in_order),
    ]


def argument_value(argument: str, text: str):
    """A launch argument's value as YAML (what `ros2 param set` takes), or ConfigError naming the argument."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"launch argument {argument}:={text} is not a valid value") from None


class Exits:
    """What a node process's exit means for the launch. Code 0 from the source node (the end of a recording, or
    max_frames) ends the launch in order. EXIT_CONFIGURATION_ERROR (a bad parameter, a missing file or source) ends it
    with one line naming the node and its reason (its last ERROR line), instead of a respawn every few seconds that
    cannot succeed. Any other code is a crash: launch respawns the process after respawn_delay (the shutdown cancels a
    pending respawn)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.last_error: dict[str, str] = {}

    def handlers(self, processes: dict[str, Node]) -> list:
        entities = []
        for name, process in processes.items():
            entities.append(
                RegisterEventHandler(
                    OnProcessIO(target_action=process, on_stderr=functools.partial(self._output, name))
                )
            )
            entities.append(
                RegisterEventHandler(OnProcessExit(target_action=process, on_exit=functools.partial(self._exit, name)))
            )
        return entities

    def _output(self, process: str, event) -> None:
        for line in event.text.decode(errors="replace").splitlines():
            if match := ERROR_LINE.search(line):
                self.last_error[process] = (
                    f"the {match.group(1)} node stopped on a configuration error: {match.group(2)}"
                )

    def _exit(self, process: str, event, context) -> list | None:
        if context.is_shutdown:
            return None
        if event.returncode == 0 and process in (self.source, COMPOSED):
            return [EmitEvent(event=Shutdown(reason=f"the {self.source} node's source ended"))]
        if event.returncode == EXIT_CONFIGURATION_ERROR:
            reason = self.last_error.get(process, f"the {process} process stopped on a configuration error (see above)")
            raise LaunchConfigurationError(
                f"privacy_vision: {reason} (exit code {EXIT_CONFIGURATION_ERROR}, not respawned; fix it and launch again)"
            )
        return None


def unless_stopping(context, call, *args) -> None:
    """Run a start-up call on a worker thread of launch. A stop may come at any moment: launch_ros then destroys its
    node (and every client) under the thread, whose exception would end ros2 launch with exit 1 ("cannot use
    Destroyable because destruction was requested"). Once launch is shutting down that is the stop, not a fault: the
    thread simply ends. launch_ros destroys its node on the Shutdown event, possibly just before launch marks the
    shutdown, so a failure waits up to GET_STATE_TIMEOUT_S for that mark before it counts as a fault."""
    try:
        call(*args)
    except Exception:
        deadline = time.monotonic() + GET_STATE_TIMEOUT_S
        while not context.is_shutdown and time.monotonic() < deadline:
            time.sleep(0.05)
        if not context.is_shutdown:
            raise


class StoppableLifecycleNode(LifecycleNode):
    """launch_ros's lifecycle node action, with its transition requests ended quietly by a stop (unless_stopping):
    a Ctrl-C 2 s into start-up ended the launch with exit 1 (a fresh-clone CI run; 4 of 29 random early stops here)."""

    def _call_change_state(self, request, context) -> None:
        unless_stopping(context, super()._call_change_state, request, context)


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
        new process serves would be lost, and launch_ros would wait for its answer forever. A stop may come at any
        moment: launch_ros then destroys its node (and this client) under this thread, which simply ends."""
        unless_stopping(context, self._configure_once_serving, name, context)

    def _configure_once_serving(self, name: str, context) -> None:
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
                if future.result().current_state.id == State.PRIMARY_STATE_UNCONFIGURED and not context.is_shutdown:
                    event = ChangeState(
                        lifecycle_node_matcher=matches_action(self.actions[name]),
                        transition_id=Transition.TRANSITION_CONFIGURE,
                    )
                    context.asyncio_loop.call_soon_threadsafe(context.emit_event_sync, event)
                return
        finally:
            if not context.is_shutdown:
                node.destroy_client(client)

    def _transition(self, name: str, context) -> list | None:
        if context.is_shutdown:  # a node still finishing its transition as the stop began: nothing more to ask
            return None
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
    and orphans them (ros2/launch#666). A second SIGINT or SIGTERM ends ros2 launch at once (launch's own SIGTERM
    handling, then a forced exit if that does not end it within FORCED_EXIT_S); the nodes still running then stop
    by themselves, in order (each asks for SIGTERM on its parent's death).

    launch offers no public hook for its signal handling, so its signal manager (launch.utilities.signal_management,
    launch 3.x) is reached directly; where it is absent, a warning says so. The signals reach that manager through
    Python's wakeup fd only: rclpy's own handlers (installed by launch_ros, they would shut its context down under
    the start-up thread) are removed, and Python-level handlers that do nothing replace the default ones, so that no
    KeyboardInterrupt is raised inside one of launch's tasks (one raised in a respawn task left launch waiting forever)."""
    from launch.utilities.signal_management import AsyncSafeSignalManager
    from rclpy.signals import uninstall_signal_handlers

    logger = launch.logging.get_logger("privacy_vision")
    get_ros_node(context)  # launch_ros starts rclpy (and its signal handlers) here; they are removed below
    manager = getattr(AsyncSafeSignalManager, "_AsyncSafeSignalManager__current", None)
    if manager is None:
        logger.warning(
            "launch's signal manager was not found: SIGTERM ends ros2 launch at once (the nodes then stop by themselves)"
        )
        return None
    requested: list[str] = []
    terminate = None  # launch's own SIGTERM handler: cancels its run task

    def on_stop_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if requested:
            logger.warning(f"{name} again: ending ros2 launch now; the nodes still running stop by themselves")
            forced = threading.Timer(FORCED_EXIT_S, os._exit, (1,))
            forced.daemon = True  # only if launch has not ended by then
            forced.start()
            if terminate is not None:
                terminate(signum)
            return
        requested.append(name)
        logger.info(f"{name}: stopping the graph in pipeline order (each node after its upstream has finished)")
        context.emit_event_sync(Shutdown(reason=f"{name} received", due_to_sigint=False))

    manager.handle(signal.SIGINT, on_stop_signal)
    terminate = manager.handle(signal.SIGTERM, on_stop_signal)
    uninstall_signal_handlers()
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: None)  # Python-level no-ops: the wakeup fd still tells the manager
    # Node processes start with the stop signals blocked (the mask is inherited through exec) and unblock them once
    # their own handlers are in place (node_main): a stop that arrives while Python is still starting (launch
    # stopping right after a respawn) waits for the handler instead of killing the interpreter with a traceback. The
    # launch itself keeps receiving them on a thread that does not block them.
    threading.Thread(target=threading.Event().wait, name="privacy_vision-signals", daemon=True).start()
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    return None


def camera_parameters(params: dict[str, dict]) -> dict:
    """The camera section of the params file, for the detection node when it captures in process."""
    return {k: v for k, v in params.get("camera", {}).items() if k in SOURCE_PARAMETERS}


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
                "k",
                default_value="",
                description="display rule: a noisy footfall below k is shown as '< k' (strict mode: groups of at least k)",
            ),
            DeclareLaunchArgument(
                "epsilon",
                default_value="",
                description="DP epsilon per presence-hour (aggregator.epsilon_per_presence_hour)",
            ),
            DeclareLaunchArgument(
                "events_epsilon",
                default_value="",
                description="DP epsilon per stitched-track-day of the events (aggregator.epsilon_events_per_track_day)",
            ),
            DeclareLaunchArgument(
                "mode",
                default_value="",
                description="release mode (aggregator.mode): strict also sets anonymizer.groups_per_day (the params "
                "file's if ≥ 1, else 1, or groups_per_day:=N), the two settings that only work together",
            ),
            DeclareLaunchArgument(
                "groups_per_day",
                default_value="",
                description="strict mode: pending groups one track may join per UTC day (anonymizer.groups_per_day)",
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
