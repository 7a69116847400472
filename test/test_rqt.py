"""rqt against a running graph (`privacy-vision run`), under Xvfb: the Topic Monitor (rqt_topic's own widget) shows
/anonymized_tracks and /zone_analytics with their fields; a screenshot goes to docs/img/rqt_topic_monitor.png.
Skipped with a reason where ../shared/rqt (the rqt bundle) or Xvfb is absent; scripts/setup.sh installs both."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_ros_tools import graph  # noqa: F401 - the running graph fixture

from testkit.core import CONFIG, REPO

pytestmark = pytest.mark.graph
VENV = REPO / ".venv"
SCREENSHOT = REPO / "docs" / "img" / "rqt_topic_monitor.png"


def require_rqt() -> None:
    if not (REPO.parent / "shared" / "rqt").is_dir():
        pytest.skip("../shared/rqt is absent: rqt is not installed here (scripts/setup.sh installs it from there)")
    if not (VENV / "bin" / "rqt").is_file():
        pytest.fail("../shared/rqt is present but .venv/bin/rqt is missing: run scripts/setup.sh")
    if not shutil.which("xvfb-run"):
        pytest.skip("xvfb-run is missing (apt-get install xvfb; scripts/setup.sh does as root)")


def test_topic_monitor_shows_the_anonymised_topics_with_their_fields(graph, tmp_path):  # noqa: F811
    require_rqt()
    env = {
        **os.environ,
        "AMENT_PREFIX_PATH": str(VENV),
        "ROS_DOMAIN_ID": graph["domain"],
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(CONFIG / "fastdds.xml"),
        "HOME": str(tmp_path),
        "ROS_LOG_DIR": str(tmp_path / "log"),
    }
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    for variable in (
        "QT_QPA_PLATFORM_PLUGIN_PATH",
        "QT_PLUGIN_PATH",
    ):  # OpenCV's GUI build points Qt at its own plugins
        env.pop(variable, None)
    shot = tmp_path / "topic_monitor.png"
    probe = [sys.executable, str(REPO / "test" / "rqt_probe.py"), "/anonymized_tracks,/zone_analytics", "20", str(shot)]
    result = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", *probe], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown["/anonymized_tracks"]["type"] == "privacy_vision_msgs/msg/AnonymizedTracks", shown
    assert {"header", "key_epoch", "grid_size_m", "tracks"} <= set(shown["/anonymized_tracks"]["fields"]), shown
    assert shown["/zone_analytics"]["type"] == "privacy_vision_msgs/msg/ZoneAnalytics", shown
    assert {"release_id", "zone_id", "tier", "values", "lows", "highs", "privacy"} <= set(
        shown["/zone_analytics"]["fields"]
    ), shown
    assert shot.stat().st_size > 10_000
    if os.environ.get("PV_RQT_SCREENSHOT"):
        Path(os.environ["PV_RQT_SCREENSHOT"]).write_bytes(shot.read_bytes())
