"""Raw topics cannot be discovered from another host: a second network namespace joined by a veth pair."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from testkit.core import REPO, free_domain_id
from testkit.graph import run_graph, stored_releases

pytestmark = pytest.mark.graph
PROBE = str(REPO / "test" / "netns_probe.py")
TALKER = """
import rclpy, time
from std_msgs.msg import String
rclpy.init(); node = rclpy.create_node('talker'); pub = node.create_publisher(String, 'control_topic', 10)
end = time.time() + float(__import__('sys').argv[1])
while time.time() < end:
    pub.publish(String(data='x')); rclpy.spin_once(node, timeout_sec=0.2)
"""


def _ip(*args: str, namespace: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)


@pytest.fixture
def other_host():
    """Namespace 'the other host' with a veth link to this one (10.203.N.0/24)."""
    tag = os.getpid() % 200
    namespace, here, there = f"pvtest{tag}", f"pvh{tag}", f"pvo{tag}"
    try:
        _ip("netns", "add", namespace)
    except (subprocess.CalledProcessError, FileNotFoundError) as error:
        pytest.skip(f"cannot create a network namespace here ({error}); needs root and iproute2")
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", namespace)
        _ip("addr", "add", f"10.203.{tag}.1/24", "dev", here)
        _ip("link", "set", here, "up")
        _ip("addr", "add", f"10.203.{tag}.2/24", "dev", there, namespace=namespace)
        _ip("link", "set", there, "up", namespace=namespace)
        _ip("link", "set", "lo", "up", namespace=namespace)
        _ip("route", "add", "default", "dev", there, namespace=namespace)
        yield namespace
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def probe_from(namespace: str, domain: int, seconds: float) -> subprocess.Popen:
    # The remote subscriber uses ROS defaults (discovery on the subnet), as an intruder would.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FASTDDS_DEFAULT_PROFILES_FILE", "ROS_AUTOMATIC_DISCOVERY_RANGE")
    }
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SUBNET"
    return subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, PROBE, str(domain), str(seconds)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_control_a_default_ros_talker_is_visible_from_the_other_host(other_host):
    domain = free_domain_id()
    env = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="SUBNET")
    talker = subprocess.Popen([sys.executable, "-c", TALKER, "15"], env=env)
    try:
        probe = probe_from(other_host, domain, 8)
        out, err = probe.communicate(timeout=60)
    finally:
        talker.kill()
        talker.wait()
    assert "/control_topic" in json.loads(out), err  # so the probe below really could see topics


def test_graph_topics_stay_on_this_host_while_analytics_reach_the_ingest(other_host, tmp_path, vtest_video):
    domain = free_domain_id()
    probe = probe_from(other_host, domain, 25)
    code, output, local = run_graph(
        tmp_path,
        str(vtest_video),
        ["--max-frames", "80", "--fps", "20", "--set", "anonymizer.window_s=4", "--set", "aggregator.k=1"],
        probe_domain=domain,
    )
    out, _err = probe.communicate(timeout=90)
    remote_topics = json.loads(out)
    assert code == 0, output
    assert "/camera/image_raw" in local.topic_types and "/tracks" in local.topic_types  # they existed here
    for topic in ("/camera/image_raw", "/detections", "/tracks", "/anonymized_tracks", "/zone_analytics"):
        assert topic not in remote_topics, (topic, remote_topics)
    assert stored_releases(tmp_path / "var"), output
