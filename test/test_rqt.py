"""rqt against a running graph (`privacy-vision run`), under Xvfb, each plugin's own classes driven by a probe
(test/rqt_*_probe.py) as a user drives the GUI: the Topic Monitor (rqt_topic) shows /anonymized_tracks and
/zone_analytics with their fields; the Node Graph (rqt_graph) draws the graph's nodes (core.graph.pipeline) and, in
in-process capture, no image topic; Parameter Reconfigure (rqt_reconfigure) sets a valid value on the aggregator
(taken: `ros2 param get` reads it) and an invalid one (refused with the node's own reason, which rqt Console shows;
the node keeps its value).
Each saves a screenshot; `make rqt-screenshots` copies them to docs/img/ (PV_RQT_SCREENSHOTS=DIR).
Skipped with a reason where ../shared/rqt (the rqt bundle) or Xvfb is absent; scripts/setup.sh installs both."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_ros_tools import graph  # noqa: F401 - the running graph fixture (camera capture)

from privacy_vision.core.graph import IMAGE_TOPIC, pipeline
from testkit.core import CONFIG, REPO
from testkit.graph import serving_graph

pytestmark = pytest.mark.graph
VENV = REPO / ".venv"
IMAGE_TYPE = "sensor_msgs/msg/Image"


def require_rqt() -> None:
    if not (REPO.parent / "shared" / "rqt").is_dir():
        pytest.skip("../shared/rqt is absent: rqt is not installed here (scripts/setup.sh installs it from there)")
    if not (VENV / "bin" / "rqt").is_file():
        pytest.fail("../shared/rqt is present but .venv/bin/rqt is missing: run scripts/setup.sh")
    if not shutil.which("xvfb-run"):
        pytest.skip("xvfb-run is missing (apt-get install xvfb; scripts/setup.sh does as root)")


@pytest.fixture(scope="module", autouse=True)
def rqt_installed() -> None:
    """Checked before any graph starts (a module fixture comes before the graphs)."""
    require_rqt()


@pytest.fixture
def in_process_graph(tmp_path_factory, vtest_video):
    """The graph in in-process capture (no camera node, no image topic), for one test only: two graphs at once
    would share this machine's cores."""
    with serving_graph(tmp_path_factory.mktemp("rqt-in-process"), vtest_video, capture="in_process") as running:
        yield running


def rqt_environment(running: dict, tmp: Path) -> dict[str, str]:
    """A ROS user's environment for rqt on the graph's domain (the ros2cli bundle's ament index in .venv)."""
    env = {
        **os.environ,
        "AMENT_PREFIX_PATH": str(VENV),
        "ROS_DOMAIN_ID": running["domain"],
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(CONFIG / "fastdds.xml"),
        "HOME": str(tmp),
        "ROS_LOG_DIR": str(tmp / "log"),
    }
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    for variable in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_PLUGIN_PATH"):  # OpenCV's GUI build points Qt at its own
        env.pop(variable, None)
    return env


def probe(running: dict, tmp: Path, script: str, *args: str) -> dict | list:
    """Run test/SCRIPT under Xvfb against the graph; its last output line is what the plugin showed, as JSON."""
    command = ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", sys.executable, str(REPO / "test" / script), *args]
    env = rqt_environment(running, tmp)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def keep_screenshot(shot: Path, name: str) -> None:
    """A screenshot of at least some content; copied to $PV_RQT_SCREENSHOTS/NAME (make rqt-screenshots)."""
    assert shot.stat().st_size > 10_000, shot
    if os.environ.get("PV_RQT_SCREENSHOTS"):
        shutil.copyfile(shot, Path(os.environ["PV_RQT_SCREENSHOTS"]) / name)


def test_node_graph_shows_no_image_topic_in_in_process_capture(in_process_graph, tmp_path):
    """First in the module: its graph stops before the camera graph of the other tests starts."""
    shown = node_graph(in_process_graph, tmp_path)
    assert "camera" not in shown["nodes"], shown
    assert {"/detections", "/tracks", "/anonymized_tracks", "/zone_analytics"} <= set(shown["topics"]), shown
    assert IMAGE_TYPE not in shown["topics"].values() and IMAGE_TOPIC not in shown["topics"], shown
    keep_screenshot(tmp_path / "node_graph.png", "rqt_node_graph.png")


def test_topic_monitor_shows_the_anonymised_topics_with_their_fields(graph, tmp_path):  # noqa: F811
    shot = tmp_path / "topic_monitor.png"
    shown = probe(graph, tmp_path, "rqt_probe.py", "/anonymized_tracks,/zone_analytics", "20", str(shot))
    assert shown["/anonymized_tracks"]["type"] == "privacy_vision_msgs/msg/AnonymizedTracks", shown
    assert {"header", "key_epoch", "grid_size_m", "tracks"} <= set(shown["/anonymized_tracks"]["fields"]), shown
    assert shown["/zone_analytics"]["type"] == "privacy_vision_msgs/msg/ZoneAnalytics", shown
    assert {"release_id", "zone_id", "tier", "values", "lows", "highs", "privacy"} <= set(
        shown["/zone_analytics"]["fields"]
    ), shown
    keep_screenshot(shot, "rqt_topic_monitor.png")


def node_graph(running: dict, tmp: Path) -> dict:
    """What rqt_graph draws once every node of the pipeline is in it: node names, and each topic with its type."""
    expected = pipeline(running["capture"])
    shown = probe(running, tmp, "rqt_graph_probe.py", ",".join(expected), "60", str(tmp / "node_graph.png"))
    assert set(expected) <= set(shown["nodes"]), shown
    return shown


def test_node_graph_shows_the_six_nodes_and_the_image_topic_in_camera_capture(graph, tmp_path):  # noqa: F811
    """The control for the in-process test: with a camera node, rqt_graph does draw the image topic."""
    shown = node_graph(graph, tmp_path)
    assert len(pipeline("camera")) == 6 and set(pipeline("camera")) <= set(shown["nodes"]), shown
    assert shown["topics"].get(IMAGE_TOPIC) == IMAGE_TYPE, shown


def test_parameter_reconfigure_takes_a_valid_value_and_shows_the_nodes_reason_for_an_invalid_one(graph, tmp_path):  # noqa: F811
    env = rqt_environment(graph, tmp_path)

    def ros2_param_get(name: str) -> str:
        command = [str(VENV / "bin" / "ros2"), "param", "get", "--no-daemon", "--spin-time", "5", "/aggregator", name]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120).stdout.strip()

    budget = float(ros2_param_get("epsilon_events_per_track_day").split()[-1])  # the cap may not go below it
    valid, invalid = float(ros2_param_get("daily_epsilon_cap").split()[-1]) + budget, budget / 2  # a change, a refusal
    shot = tmp_path / "parameter_reconfigure.png"
    shown = probe(
        graph, tmp_path, "rqt_reconfigure_probe.py", "/aggregator", "daily_epsilon_cap", f"{valid},{invalid}", str(shot)
    )
    typed = shown["typed"]
    taken, refused = typed
    assert "successful" in taken and "successful" in refused, (
        f"no answer from the node to the plugin's request: {typed}"
    )
    assert taken["successful"] and float(taken["shown"]) == valid, typed
    assert not refused["successful"], typed
    assert f"daily_epsilon_cap ({invalid:g}) must be ≥ the ε per stitched-track-day" in refused["reason"], typed
    assert any(refused["reason"] in line for line in shown["console"]), shown["console"]  # rqt Console shows it
    assert ros2_param_get("daily_epsilon_cap") == f"Double value is: {valid}", "the refused value was taken"
    keep_screenshot(shot, "rqt_parameter_reconfigure.png")
