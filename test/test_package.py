"""Package layout checks: the launch file, entry points and config files agree with each other."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import yaml

from privacy_vision.core.graph import (
    DRAIN_TIMEOUT_S,
    LAUNCH_SIGKILL_TIMEOUT_S,
    LAUNCH_SIGTERM_TIMEOUT_S,
    STOP_MARGIN_S,
    UPSTREAM_WAIT_S,
)
from privacy_vision.core.graph import NODE_NAMES as NODES
from testkit.core import REPO

# What issue 12 asks the launch file to take (besides the pins and CA, which have defaults under state_dir).
LAUNCH_ARGUMENTS = (
    "source",
    "capture",
    "params_file",
    "zones_file",
    "homography_file",
    "model",
    "onnx_model",
    "window_s",
    "k",
    "epsilon",
    "state_dir",
    "ingest_url",
    "loop",
    "fps",
    "max_frames",
    "composed",
)


def test_launch_file_starts_every_node_as_a_lifecycle_node_with_respawn_and_local_discovery():
    source = (REPO / "launch/privacy_vision.launch.py").read_text()
    tree = ast.parse(source)
    assert "generate_launch_description" in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert '"respawn": True' in source and '"ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"' in source
    assert (
        "from privacy_vision.core.graph import" in source and "pipeline(capture)" in source
    )  # the one graph description
    assert "LifecycleNode(" in source and 'executable=f"{name}_node"' in source
    assert (
        '"sigterm_timeout": str(LAUNCH_SIGTERM_TIMEOUT_S)' in source
        and '"sigkill_timeout": str(LAUNCH_SIGKILL_TIMEOUT_S)' in source
    )
    declared = {
        call.args[0].value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "DeclareLaunchArgument" and call.args
    }
    assert set(LAUNCH_ARGUMENTS) <= declared, set(LAUNCH_ARGUMENTS) - declared


def test_the_graph_description_matches_the_package():
    """core/graph.py is what the other modules read: it must agree with params.yaml, the interfaces and the nodes."""
    from privacy_vision.core import graph

    assert (
        tuple(yaml.safe_load((REPO / "config/params.yaml").read_text())) == graph.NODE_NAMES
    )  # same nodes, same order
    assert [graph.upstream_of(name) for name in graph.NODE_NAMES] == [
        None,
        *graph.NODE_NAMES[:-1],
    ]  # a chain in pipeline order
    assert graph.pipeline("in_process") == graph.NODE_NAMES[1:] and graph.upstream_of("detection", "in_process") is None
    assert [t.name for t in graph.topics("in_process")] == [t.name for t in graph.TOPICS if t.name != graph.IMAGE_TOPIC]
    for topic in graph.TOPICS:
        package, kind, name = topic.type.split("/")
        if package == "privacy_vision_msgs":
            assert (REPO / "msg" / kind / f"{name}.msg").is_file(), topic
        assert topic.publisher in graph.NODE_NAMES and set(topic.subscribers) <= set(graph.NODE_NAMES), topic
        assert topic.carries, topic
    assert graph.leaves_device() == {
        "/zone_analytics": graph.leaves_device()["/zone_analytics"]
    }  # only the analytics leave
    sources = {name: (REPO / f"privacy_vision/nodes/{name}.py").read_text() for name in graph.NODE_NAMES}
    for spec in graph.NODES:  # a node that answers requests says what it holds; one that holds personal data answers
        assert ("def personal_data_summary" in sources[spec.name]) == spec.answers_requests, spec.name
        assert spec.answers_requests or not spec.personal_data, spec.name
    assert set(graph.STATE_STORES) >= {"pki", "audit", "releases", "runtime"}


def test_the_ordered_stop_fits_before_launch_kills_a_node():
    """Every node gets the stop request at once; the uplink waits at most UPSTREAM_WAIT_S for the aggregator,
    then drains for drain_timeout_s; launch sends SIGKILL at sigterm + sigkill timeouts (SIGTERM is the same request)."""
    assert UPSTREAM_WAIT_S + DRAIN_TIMEOUT_S + STOP_MARGIN_S <= LAUNCH_SIGTERM_TIMEOUT_S + LAUNCH_SIGKILL_TIMEOUT_S
    params = yaml.safe_load((REPO / "config/params.yaml").read_text())
    assert params["uplink"]["ros__parameters"]["drain_timeout_s"] == DRAIN_TIMEOUT_S


def test_entry_points_match_the_launch_executables():
    setup = (REPO / "setup.py").read_text()
    assert (
        'f"{node}_node = {PACKAGE}.node_main:{node}"' in setup
        and 'f"composed_node = {PACKAGE}.node_main:composed"' in setup
    )
    from privacy_vision import node_main

    assert callable(node_main.composed)
    for node in NODES:
        assert callable(getattr(node_main, node))
        assert (REPO / f"privacy_vision/nodes/{node}.py").read_text().count("def main(") == 1


def test_the_edge_side_never_loads_the_cloud_side():
    """Every module outside privacy_vision/cloud (nodes, runner, CLIs, core) imports in a fresh interpreter without
    loading a privacy_vision.cloud module: the device ships no ingest code path."""
    root = REPO / "privacy_vision"
    edge = [
        ".".join(("privacy_vision", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        for path in sorted(root.rglob("*.py"))
        if "cloud" not in path.relative_to(root).parts
    ]
    assert {
        "privacy_vision.runner",
        "privacy_vision.cli",
        "privacy_vision.monitor",
        "privacy_vision.nodes.uplink",
    } <= set(edge)
    code = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('privacy_vision.cloud')))"
    )
    result = subprocess.run([sys.executable, "-c", code, *edge], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


# A meta-path finder that refuses rclpy, as on a machine without the ROS client libraries.
WITHOUT_RCLPY = """
import importlib, importlib.abc, sys
class NoRclpy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "rclpy" or name.startswith("rclpy."):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, NoRclpy())
sys.path.insert(0, "test")
for name in sys.argv[1:]:
    importlib.import_module(name)
"""


def test_tests_of_the_pure_core_import_without_rclpy():
    """Every test module that starts no ROS graph (not marked `graph`), with conftest.py and its helpers, loads
    with rclpy blocked: the core, the cloud side and their tests need no ROS install."""
    modules = ["conftest"] + [
        path.stem
        for path in sorted((REPO / "test").glob("test_*.py"))
        if not re.search(r"^pytestmark = pytest\.mark\.graph", path.read_text(), re.M)
    ]
    assert {"test_compliance", "test_package", "test_release_model", "test_ingest"} <= set(modules)
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_RCLPY, *modules], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


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


def test_a_pip_install_puts_both_commands_on_path(tmp_path):
    """setup.cfg sends scripts to lib/privacy_vision for colcon (`ros2 run privacy_vision privacy-vision`); a pip
    install must still put privacy-vision and privacy-vision-ingest in the environment's bin/."""
    source, wheels, prefix = tmp_path / "src", tmp_path / "wheels", tmp_path / "prefix"
    # Built from a copy: an in-tree build leaves an egg-info that the venv (which has the repository on its path) takes for an install.
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "var", "data", "bench_out", "*.egg-info", "__pycache__"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(wheels.glob("privacy_vision-*.whl"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            "--prefix",
            str(prefix),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    for command in ("privacy-vision", "privacy-vision-ingest"):
        script = prefix / "bin" / command
        assert script.is_file(), sorted(p.name for p in (prefix / "bin").iterdir())
        result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "usage:" in result.stdout, result.stdout + result.stderr
