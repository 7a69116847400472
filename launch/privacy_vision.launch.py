"""Launch the privacy_vision graph on a real ROS 2 install (Jazzy/Kilted):

    ros2 launch privacy_vision privacy_vision.launch.py source:=/dev/video0 \
        ingest_url:=https://ingest.example.com/v1/releases state_dir:=/var/lib/privacy_vision

The same config files as `privacy-vision run`; nodes that crash are respawned. Discovery is limited
to this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST plus the Fast DDS profile in config/).
The ingest itself runs in the cloud (`privacy-vision-ingest`), not here.
"""
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

NODES = ("camera", "detection", "tracking", "anonymizer", "aggregator", "uplink")


def _nodes(context):
    share = Path(get_package_share_directory("privacy_vision"))
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    config = Path(value("config_dir") or share / "config")
    state = Path(value("state_dir")).expanduser()
    pins_file = state / "pki" / "pins.txt"
    pins = [p for p in value("pins").split(",") if p] or (pins_file.read_text().split() if pins_file.is_file() else [])
    if not pins:
        raise RuntimeError(f"no SPKI pins: pass pins:=PRIMARY,BACKUP or create {pins_file} with 'privacy-vision pki --out {state / 'pki'}'")
    overrides = {
        "camera": {"source": value("source")},
        "tracking": {"homography_file": str(config / "homography_pets.yaml")},
        "anonymizer": {"zones_file": value("zones_file") or str(config / "zones.yaml")},
        "aggregator": {"ledger_path": str(state / "privacy_ledger.sqlite")},
        "uplink": {"ingest_url": value("ingest_url"), "pins": pins, "ca_file": value("ca_file") or str(state / "pki" / "ca.crt"),
                   "key_file": str(state / "pki" / "device.key"), "outbox_path": str(state / "outbox.sqlite")},
    }
    audit = {"audit_dir": str(state / "audit"), "audit_key_file": str(state / "pki" / "audit.key")}
    return [
        Node(package="privacy_vision", executable=f"{name}_node", name=name, output="screen", respawn=True, respawn_delay=2.0,
             parameters=[str(config / "params.yaml"), {**audit, **overrides.get(name, {})}])
        for name in NODES
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("source", description="video file, image folder, /dev/videoN, camera index or stream URL"),
        DeclareLaunchArgument("config_dir", default_value="", description="folder with params.yaml, zones.yaml, fastdds.xml (default: the package's)"),
        DeclareLaunchArgument("zones_file", default_value="", description="zones YAML (default: config_dir/zones.yaml)"),
        DeclareLaunchArgument("state_dir", default_value="~/.local/state/privacy_vision", description="keys, outbox and ledger"),
        DeclareLaunchArgument("ingest_url", default_value="https://127.0.0.1:8443/v1/releases", description="ingest endpoint"),
        DeclareLaunchArgument("pins", default_value="", description="comma-separated SPKI pins (default: state_dir/pki/pins.txt)"),
        DeclareLaunchArgument("ca_file", default_value="", description="CA of the ingest certificate (default: state_dir/pki/ca.crt)"),
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                               str(Path(get_package_share_directory("privacy_vision")) / "config" / "fastdds.xml")),
        OpaqueFunction(function=_nodes),
    ])
