"""Launch the privacy_vision graph on a real ROS 2 install (Jazzy/Kilted):

    ros2 launch privacy_vision privacy_vision.launch.py source:=/dev/video0 \
        ingest_url:=https://ingest.example.com/v1/releases state_dir:=/var/lib/privacy_vision

The same config files as `privacy-vision run`. Nodes that crash are respawned with their configured
parameters and the runtime changes accepted since this launch started (kept under state_dir/runtime/).
A recorded source (file or folder, loop:=false) ends the launch when it ends. Discovery is limited to
this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST plus the Fast DDS profile in config/). The ingest
itself runs in the cloud (`privacy-vision-ingest`), not here.
"""
import shutil
from pathlib import Path

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler, SetEnvironmentVariable
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from privacy_vision.runner import CAMERA_SOURCE_PARAMETERS, CAPTURE_MODES, NODES

# Launch argument -> (node, parameter): empty means "as in the params file".
PARAMETER_ARGUMENTS = {
    "loop": ("camera", "loop"), "fps": ("camera", "fps"), "max_frames": ("camera", "max_frames"),
    "model": ("detection", "model"), "onnx_model": ("detection", "onnx_model"),
    "homography_file": ("tracking", "homography_file"), "zones_file": ("anonymizer", "zones_file"),
    "window_s": ("anonymizer", "window_s"), "k": ("aggregator", "k"), "epsilon": ("aggregator", "epsilon_per_track_day"),
}


def _nodes(context):
    share = Path(get_package_share_directory("privacy_vision"))
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    config = Path(value("config_dir") or share / "config")
    params_file = Path(value("params_file") or config / "params.yaml")
    state = Path(value("state_dir")).expanduser().resolve()
    pins_file = state / "pki" / "pins.txt"
    pins = [p for p in value("pins").split(",") if p] or (pins_file.read_text().split() if pins_file.is_file() else [])
    if not pins:
        raise RuntimeError(f"no SPKI pins: pass pins:=PRIMARY,BACKUP or create {pins_file} with "
                           f"'ros2 run privacy_vision privacy-vision pki --out {state / 'pki'}'")
    capture = value("capture")
    if capture not in CAPTURE_MODES:
        raise RuntimeError(f"capture:={capture} is not one of {CAPTURE_MODES}")
    # Runtime changes are kept for respawns within this launch only: a new launch starts from the configured values.
    runtime = state / "runtime"
    shutil.rmtree(runtime, ignore_errors=True)
    overrides = {
        "camera": {"source": value("source")},
        "tracking": {"homography_file": str(config / "homography_pets.yaml")},
        "anonymizer": {"zones_file": str(config / "zones.yaml")},
        "aggregator": {"ledger_path": str(state / "privacy_ledger.sqlite")},
        "uplink": {"ingest_url": value("ingest_url"), "pins": pins, "ca_file": value("ca_file") or str(state / "pki" / "ca.crt"),
                   "key_file": str(state / "pki" / "device.key"), "outbox_path": str(state / "outbox.sqlite")},
    }
    for argument, (node, parameter) in PARAMETER_ARGUMENTS.items():
        if value(argument) != "":
            overrides.setdefault(node, {})[parameter] = yaml.safe_load(value(argument))
    common = {"audit_dir": str(state / "audit"), "audit_key_file": str(state / "pki" / "audit.key")}
    nodes = NODES
    if capture == "in_process":  # the detection node reads the source: no camera node, no image topic
        nodes = NODES[1:]
        camera = {**camera_parameters(params_file), **overrides.pop("camera")}
        overrides["detection"] = {**camera, **overrides.get("detection", {}), "capture": "in_process"}
    source_node = nodes[0]

    def parameters(name: str) -> list:
        return [str(params_file), {**common, "runtime_parameters_file": str(runtime / f"{name}.yaml"), **overrides.get(name, {})}]

    actions = {name: Node(package="privacy_vision", executable=f"{name}_node", name=name, output="screen", respawn=True,
                          respawn_delay=2.0, parameters=parameters(name))
               for name in nodes}
    # A source that ended by itself (exit code 0: end of a recording, or max_frames) ends the launch; a crash (any
    # other code) is respawned. The respawn waits respawn_delay, and the shutdown cancels it.
    source_ended = OnProcessExit(target_action=actions[source_node], on_exit=lambda event, _: [
        EmitEvent(event=Shutdown(reason=f"the {source_node} node's source ended"))] if event.returncode == 0 else None)
    return [*actions.values(), RegisterEventHandler(source_ended)]


def camera_parameters(params_file: Path) -> dict:
    """The camera section of the params file, for the detection node when it captures in process."""
    camera = yaml.safe_load(params_file.read_text())["camera"]["ros__parameters"]
    return {k: v for k, v in camera.items() if k in CAMERA_SOURCE_PARAMETERS}


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory("privacy_vision"))
    return LaunchDescription([
        DeclareLaunchArgument("source", description="video file, image folder, /dev/videoN, camera index or stream URL"),
        DeclareLaunchArgument("capture", default_value="camera", choices=list(CAPTURE_MODES),
                              description="camera: camera node + /camera/image_raw (needed for your own camera driver); "
                                          "in_process: the detection node reads the source, no image topic exists"),
        DeclareLaunchArgument("config_dir", default_value="", description="folder with params.yaml, zones.yaml, homography_pets.yaml, fastdds.xml (default: the package's)"),
        DeclareLaunchArgument("params_file", default_value="", description="node parameters (default: config_dir/params.yaml)"),
        DeclareLaunchArgument("zones_file", default_value="", description="zones YAML (default: config_dir/zones.yaml)"),
        DeclareLaunchArgument("homography_file", default_value="", description="image->floor homography YAML (default: config_dir/homography_pets.yaml)"),
        DeclareLaunchArgument("model", default_value="", description="Ultralytics weights for the detector (default: the params file's)"),
        DeclareLaunchArgument("onnx_model", default_value="", description="your own YOLOX-format ONNX export (default: the shipped YOLOX-nano)"),
        DeclareLaunchArgument("loop", default_value="", description="true: replay a recorded file or folder at its end; false: the launch ends with it"),
        DeclareLaunchArgument("fps", default_value="", description="source rate limit in frames/s (0: the file's own rate)"),
        DeclareLaunchArgument("max_frames", default_value="", description="stop the source after this many frames (0: no limit)"),
        DeclareLaunchArgument("window_s", default_value="", description="period of the window tier in seconds (must divide an hour)"),
        DeclareLaunchArgument("k", default_value="", description="cells whose noisy occupancy is below k are shown as '< k'"),
        DeclareLaunchArgument("epsilon", default_value="", description="DP epsilon per track-day (aggregator.epsilon_per_track_day)"),
        DeclareLaunchArgument("state_dir", default_value="~/.local/state/privacy_vision", description="keys, outbox, ledger, audit log, runtime parameter changes"),
        DeclareLaunchArgument("ingest_url", default_value="https://127.0.0.1:8443/v1/releases", description="ingest endpoint"),
        DeclareLaunchArgument("pins", default_value="", description="comma-separated SPKI pins (default: state_dir/pki/pins.txt)"),
        DeclareLaunchArgument("ca_file", default_value="", description="CA of the ingest certificate (default: state_dir/pki/ca.crt)"),
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", str(share / "config" / "fastdds.xml")),
        OpaqueFunction(function=_nodes),
    ])
