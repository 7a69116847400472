"""The graph driven the way a ROS 2 user drives it: `ros2 launch`, `ros2 node/topic/param/service/lifecycle`,
`ros2 run`, and stopping `ros2 launch` with Ctrl-C (SIGINT to its process group) or SIGTERM to it alone (what
systemd sends): every release the aggregator made reaches the ingest, no process is left, no log has a traceback.

Skipped with a reason where ../shared/ros2cli (the real ros2 command line) is absent; scripts/setup.sh installs it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml
from ros2cliutil import (
    Ros2Session,
    StateDir,
    count_in,
    finalized,
    launch_arguments,
    outbox_size,
    processes_of,
    short_clip,
    stop_group,
    tracebacks_in,
)

from privacy_vision.core.graph import LAUNCH_SIGKILL_TIMEOUT_S, LAUNCH_SIGTERM_TIMEOUT_S, TOPICS, pipeline

pytestmark = pytest.mark.graph
NODE_PATHS = {f"/{name}" for name in pipeline("camera")}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    session = Ros2Session(tmp_path_factory.mktemp("ros2cli"))
    state = StateDir(session)
    session.state = state
    yield session
    state.close()
    session.close()


class Launch:
    """`ros2 launch privacy_vision privacy_vision.launch.py ...` in its own process group, as from a terminal."""

    def __init__(
        self, session: Ros2Session, name: str, source: Path, state_dir: Path | None = None, **arguments: str
    ) -> None:
        self.session = session
        self.log = session.tmp / f"launch-{name}.log"
        self.started_wall = time.time()
        args = launch_arguments(session.state, source, **arguments)
        if state_dir is not None:
            args = [a if not a.startswith("state_dir:=") else f"state_dir:={state_dir}" for a in args]
        self.process = session.popen(*args, log=self.log)

    def text(self) -> str:
        return self.log.read_text()

    def wait_for_nodes(self) -> None:
        self._expect(self.session.wait_for(lambda: self.session.node_names() >= NODE_PATHS, 180.0))

    def wait_for_releases(self, count: int) -> None:
        """Until the ingest stored this many releases of this launch (the graph runs and delivers)."""
        self._expect(
            self.session.wait_for(lambda: len(self.session.state.stored_since(self.started_wall)) >= count, 180.0, 0.5)
        )

    def _expect(self, happened: bool) -> None:
        """A launch that failed its test is stopped at once: left running, it shared the state directory with the next
        tests' launches and failed them too (stop 24's CI: one failure became five)."""
        if not happened:
            stop_group(self.process, signal.SIGINT, 60.0)
        assert happened, self.text()[-4000:]

    def stop(self, sig: int, whole_group: bool) -> tuple[int, float]:
        started = time.monotonic()
        if whole_group:
            os.killpg(self.process.pid, sig)  # Ctrl-C in a terminal signals the whole foreground process group
        else:
            self.process.send_signal(sig)  # systemd (KillMode=mixed) or `kill PID`: ros2 launch alone
        budget = LAUNCH_SIGTERM_TIMEOUT_S + LAUNCH_SIGKILL_TIMEOUT_S + 20.0
        try:
            code = self.process.wait(timeout=budget)
        finally:
            stop_group(self.process, signal.SIGKILL, 10.0)
        return code, time.monotonic() - started


def check_ordered_stop(launch: Launch, code: int, delivered_to_ingest: bool = True, capture: str = "camera") -> int:
    """The stop went camera -> ... -> uplink; the aggregator's releases are all in the ingest (or, with no ingest,
    all in the outbox); nothing escalated, died, or left a traceback or a process. Returns the release count."""
    text = launch.text()
    assert code == 0, text[-6000:]
    done = finalized(text)
    order = list(pipeline(capture))
    assert set(order) <= set(done), (sorted(done), text[-6000:])
    stamps = [done[name][0] for name in order]
    assert stamps == sorted(stamps), list(zip(order, stamps))
    published = count_in(done["aggregator"][1], "releases published")
    delivered = count_in(done["uplink"][1], "releases delivered")
    stored = launch.session.state.stored_since(launch.started_wall)
    assert published > 0, text[-6000:]
    if delivered_to_ingest:
        assert published == delivered == len(stored) == len(set(stored)), (published, delivered, len(stored))
        assert outbox_size(launch.session.state.path) == 0
    stop = text[
        text.index("stopping the graph in pipeline order")
        if "stopping the graph" in text
        else text.index("source ended") :
    ]
    for bad in ("process has died", "escalating to", "Failed to make transition", "run task was canceled", "orphaned"):
        assert bad not in stop, (bad, stop[-6000:])  # the stop itself (a test may kill a node earlier on purpose)
    assert not tracebacks_in(launch.log, launch.session.log_dir), tracebacks_in(launch.log, launch.session.log_dir)
    left = [
        (pid, command) for pid, command in processes_of(launch.session.tmp) if "privacy-vision-ingest" not in command
    ]
    assert not left, left
    return published


@pytest.fixture(scope="module")
def running(session, vtest_video):
    """`ros2 launch` on the PETS video, looping, with a short window tier so that releases come every few seconds."""
    launch = Launch(session, "running", vtest_video, loop="true", fps="10", window_s="4", k="1")
    launch.wait_for_nodes()
    yield launch
    stop_group(launch.process, signal.SIGINT, 60.0)


def test_node_list_shows_the_six_lifecycle_nodes_active(session, running):
    assert session.wait_for(lambda: session.node_names() >= NODE_PATHS, 60.0), session.node_names()
    for name in NODE_PATHS:
        assert session.wait_for(
            lambda name=name: "active [3]" in session.run("lifecycle", "get", name, check=False).output, 90.0
        ), name


def test_topic_echo_shows_anonymised_tracks_and_analytics(session, running):
    # With the type given (from the graph description), echo subscribes at once instead of asking a daemon that may
    # not have discovered the topic yet ("Could not determine the type for the passed topic").
    types = {topic.name: topic.type for topic in TOPICS}
    tracks = session.run(
        "topic", "echo", "--once", "/anonymized_tracks", types["/anonymized_tracks"], timeout_s=120.0
    ).output
    assert "key_epoch:" in tracks and "grid_size_m: 0.5" in tracks, tracks
    analytics = session.run(
        "topic", "echo", "--once", "/zone_analytics", types["/zone_analytics"], timeout_s=120.0
    ).output
    assert "zone_id:" in analytics and "mechanism: discrete_laplace" in analytics, analytics
    assert "privacy_unit: presence-hour" in analytics or "privacy_unit: stitched-track-day" in analytics, analytics
    assert "lows:" in analytics and "highs:" in analytics, analytics  # every value with its interval


def test_tf_static_places_the_camera_above_the_floor_from_the_homography(session, running):
    """The commands of docs/ros-tools.md "/tf": latched floor -> camera with config's PETS homography, upstream's type
    hash; the tracking node's lost-frame count on /diagnostics and its validated limit."""
    echoed = session.run(
        "topic",
        "echo",
        "--once",
        "--qos-durability",
        "transient_local",
        "--qos-reliability",
        "reliable",
        "/tf_static",
        "tf2_msgs/msg/TFMessage",
        timeout_s=120.0,
    ).stdout
    (transform,) = yaml.safe_load(echoed.split("---")[0])["transforms"]
    assert (transform["header"]["frame_id"], transform["child_frame_id"]) == ("floor", "camera"), echoed
    translation, rotation = transform["transform"]["translation"], transform["transform"]["rotation"]
    assert [translation[a] for a in "xyz"] == pytest.approx([-28.88, -20.01, 7.03], abs=0.01), echoed
    assert [rotation[a] for a in "xyzw"] == pytest.approx([0.6975, -0.3961, 0.2703, -0.5325], abs=1e-4), echoed
    upstream_hash = "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"

    def info() -> str:  # through the ros2 daemon, which may not have discovered the topic yet ("Unknown topic")
        return session.run("topic", "info", "-v", "/tf_static", check=False).output

    assert session.wait_for(lambda: upstream_hash in info(), 60.0), info()
    assert "Durability: TRANSIENT_LOCAL" in info(), info()
    diagnostics = session.run(
        "topic",
        "echo",
        "--once",
        "--filter",
        "m.status[0].name == 'privacy_vision/tracking'",
        "/diagnostics",
        "diagnostic_msgs/msg/DiagnosticArray",
        timeout_s=120.0,
    ).stdout
    assert "key: frames_lost_upstream" in diagnostics and "key: frames_lost_recent_fraction" in diagnostics, diagnostics
    refused = session.run("param", "set", "/tracking", "frame_loss_warn_fraction", "1.5", check=False).output
    assert "Setting parameter failed" in refused and "out of range" in refused, refused
    assert (
        "Set parameter successful" in session.run("param", "set", "/tracking", "frame_loss_warn_fraction", "0.2").output
    )


def test_param_set_takes_an_integer_for_a_double_and_refuses_with_the_real_reason(session, running):
    ok = session.run("param", "set", "/aggregator", "epsilon_per_presence_hour", "2", check=False)
    assert "Set parameter successful" in ok.output, ok.output
    assert "Double value is: 2.0" in session.run("param", "get", "/aggregator", "epsilon_per_presence_hour").output
    refused = session.run("param", "set", "/aggregator", "epsilon_per_presence_hour", "-1", check=False)
    assert "Setting parameter failed" in refused.output and "out of range" in refused.output, refused.output
    refused = session.run("param", "set", "/anonymizer", "direction_sectors", "6", check=False)
    assert "Setting parameter failed" in refused.output and "4 or 8" in refused.output, refused.output
    refused = session.run("param", "set", "/aggregator", "release_store", "/tmp/elsewhere.sqlite", check=False)
    assert "read-only" in refused.output, refused.output
    assert "Double value is: 2.0" in session.run("param", "get", "/aggregator", "epsilon_per_presence_hour").output


def test_service_calls_forget_data_subject_request_and_dpia(session, running):
    forget = session.run(
        "service", "call", "/anonymizer/forget", "privacy_vision_msgs/srv/Forget", "{reason: 'ros2cli test'}"
    ).output
    assert "success=True" in forget and "key_rotated" in forget, forget
    access = session.run(
        "service",
        "call",
        "/tracking/data_subject_request",
        "privacy_vision_msgs/srv/DataSubjectRequest",
        "{request_id: 'REQ-7', request_type: 'access'}",
    ).output
    assert "success=True" in access and "live_tracks" in access, access
    refused = session.run(
        "service",
        "call",
        "/tracking/data_subject_request",
        "privacy_vision_msgs/srv/DataSubjectRequest",
        "{request_id: '', request_type: 'access'}",
    ).output
    assert "success=False" in refused and "request_id must be set" in refused, refused
    dpia = session.run(
        "service",
        "call",
        "/aggregator/generate_dpia",
        "privacy_vision_msgs/srv/GenerateDpia",
        "{format: 'markdown'}",
        timeout_s=90.0,
    ).output
    assert "success=True" in dpia and "/zone_analytics" in dpia, dpia[:3000]


def test_a_respawned_node_keeps_the_runtime_changes_of_this_launch(session, running):
    assert "Set parameter successful" in session.run("param", "set", "/tracking", "match_iou", "0.3").output
    pids = [pid for pid, command in processes_of(session.tmp) if "tracking_node" in command]
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)  # a crash: launch respawns the node after respawn_delay and configures it again
    assert session.wait_for(
        lambda: any("tracking_node" in command and pid != pids[0] for pid, command in processes_of(session.tmp)), 60.0
    )
    assert session.wait_for(
        lambda: "active [3]" in session.run("lifecycle", "get", "/tracking", check=False).output, 120.0
    ), running.text()[-3000:]
    assert "Double value is: 0.3" in session.run("param", "get", "/tracking", "match_iou").output
    assert "restored runtime parameter changes" in running.text()


def test_ctrl_c_stops_in_pipeline_order_and_every_release_reaches_the_ingest(session, running):
    running.wait_for_releases(3)
    code, took = running.stop(signal.SIGINT, whole_group=True)
    check_ordered_stop(running, code)
    assert took < LAUNCH_SIGTERM_TIMEOUT_S, took  # no escalation needed


def test_sigterm_to_ros2_launch_alone_stops_in_order_and_orphans_nothing(session, vtest_video):
    launch = Launch(session, "sigterm", vtest_video, loop="true", fps="10", window_s="4", k="1")
    launch.wait_for_releases(3)
    code, took = launch.stop(signal.SIGTERM, whole_group=False)
    check_ordered_stop(launch, code)
    assert "SIGTERM: stopping the graph in pipeline order" in launch.text()
    assert took < LAUNCH_SIGTERM_TIMEOUT_S, took


def test_a_recording_with_loop_false_ends_the_launch(session, vtest_video):
    clip = short_clip(vtest_video, session.tmp / "clip.avi", 40)
    launch = Launch(session, "clip", clip, loop="false", fps="20", window_s="4", k="1")
    try:
        code = launch.process.wait(timeout=240)
    finally:
        stop_group(launch.process, signal.SIGKILL, 10.0)
    check_ordered_stop(launch, code)
    text = launch.text()
    # the launch ended by itself once the recording did: every frame delivered or dropped behind the pace and counted
    # (how many of each depends on the machine's load: 39 of 40 were delivered on a busy one)
    ended = re.search(r"end of stream after (\d+) frames \((\d+) dropped behind the source's pace", text)
    assert ended and int(ended.group(1)) + int(ended.group(2)) == 40, text[-3000:]
    assert "[camera]: stop requested (the source ended)" in text
    assert text.count("[camera_node-1]: process started") == 1, text  # the finished recording was not respawned


def test_with_no_ingest_reachable_the_uplink_keeps_its_releases_and_is_not_killed(session, vtest_video):
    state = session.tmp / "state-offline"
    shutil.copytree(session.state.path / "pki", state / "pki")
    launch = Launch(
        session,
        "offline",
        vtest_video,
        state_dir=state,
        loop="true",
        fps="10",
        window_s="4",
        k="1",
        ingest_url="https://127.0.0.1:9/v1/releases",
    )  # nothing listens on the discard port
    launch.wait_for_nodes()
    assert session.wait_for(lambda: "delivery failed, retrying" in launch.text(), 180.0), launch.text()[-4000:]
    code, took = launch.stop(signal.SIGINT, whole_group=True)
    published = check_ordered_stop(launch, code, delivered_to_ingest=False)
    assert outbox_size(state) == published  # every release is kept for the next start
    assert f"{published} releases stay in the outbox" in launch.text()
    assert took < LAUNCH_SIGTERM_TIMEOUT_S + LAUNCH_SIGKILL_TIMEOUT_S, took


def test_composed_in_process_capture_one_process_no_image_topic_same_ordered_stop(session, vtest_video):
    """composed:=true capture:=in_process: five nodes in one process, no camera node and no image topic; Ctrl-C stops
    them in pipeline order and every release reaches the ingest."""
    launch = Launch(
        session,
        "composed",
        vtest_video,
        composed="true",
        capture="in_process",
        loop="true",
        fps="10",
        window_s="4",
        k="1",
    )
    launch.wait_for_releases(3)
    expected = NODE_PATHS - {"/camera"}  # the ros2 daemon's view fills in over a few seconds: poll it
    assert session.wait_for(lambda: expected <= (names := session.node_names()) and "/camera" not in names, 90.0), (
        session.node_names()
    )
    assert "/camera/image_raw" not in session.run("topic", "list").output.split()
    node_processes = [
        command for _, command in processes_of(session.tmp) if "privacy_vision/" in command and "ingest" not in command
    ]
    assert len(node_processes) == 1 and "composed_node" in node_processes[0], node_processes
    code, took = launch.stop(signal.SIGINT, whole_group=True)
    check_ordered_stop(launch, code, capture="in_process")
    assert took < LAUNCH_SIGTERM_TIMEOUT_S, took
