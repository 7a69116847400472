"""Package layout checks: the launch file, entry points and config files agree with each other."""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET

import yaml

from rosutil import REPO

NODES = ("camera", "detection", "tracking", "anonymizer", "aggregator", "uplink")


def test_launch_file_starts_every_node_with_respawn_and_local_discovery():
    source = (REPO / "launch/privacy_vision.launch.py").read_text()
    tree = ast.parse(source)  # launch/launch_ros are not installable here; the file must still be valid Python
    assert "generate_launch_description" in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "respawn=True" in source and '"ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"' in source
    assert "from privacy_vision.runner import CAMERA_SOURCE_PARAMETERS, CAPTURE_MODES, NODES" in source  # the runner's own lists
    assert 'DeclareLaunchArgument("capture"' in source and 'DeclareLaunchArgument("onnx_model"' in source
    assert 'executable=f"{name}_node"' in source


def test_entry_points_match_the_launch_executables():
    setup = (REPO / "setup.py").read_text()
    assert 'f"{node}_node = {PACKAGE}.node_main:{node}"' in setup
    from privacy_vision import node_main

    for node in NODES:
        assert callable(getattr(node_main, node))
        assert (REPO / f"privacy_vision/nodes/{node}.py").read_text().count("def main(") == 1


def test_every_parameter_has_a_comment_and_a_node():
    text = (REPO / "config/params.yaml").read_text()
    params = yaml.safe_load(text)
    assert set(params) == set(NODES)
    for line in text.splitlines():
        if re.match(r"^    \w+:", line):
            assert "#" in line, f"parameter without a comment: {line}"


def test_interface_package_is_complete():
    root = ET.parse(REPO / "msg/package.xml").getroot()
    assert root.findtext("name") == "privacy_vision_msgs"
    cmake = (REPO / "msg/CMakeLists.txt").read_text()
    for path in sorted((REPO / "msg").glob("*/*.msg")) + sorted((REPO / "msg").glob("*/*.srv")):
        assert f'"{path.parent.name}/{path.name}"' in cmake, path
    assert "rosidl_interface_packages" in (REPO / "msg/package.xml").read_text()


def test_fastdds_profile_keeps_dds_on_this_host():
    xml = (REPO / "config/fastdds.xml").read_text()
    assert "<address>127.0.0.1</address>" in xml and "<useBuiltinTransports>false</useBuiltinTransports>" in xml
