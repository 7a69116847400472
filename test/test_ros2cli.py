"""The graph driven the way a ROS 2 user drives it: `ros2 launch`, `ros2 node/topic/param/service`, `ros2 run`,
and stopping `ros2 launch` with Ctrl-C (SIGINT to its process group) or SIGTERM (what systemd sends).

Skipped with a reason where ../shared/ros2cli (the real ros2 command line) is absent; scripts/setup.sh installs it."""
from __future__ import annotations

import os
import signal

import pytest

from ros2cliutil import Ros2Session, StateDir, launch_arguments, processes_of, short_clip, stop_group, tracebacks_in

pytestmark = pytest.mark.graph


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    session = Ros2Session(tmp_path_factory.mktemp("ros2cli"))
    state = StateDir(session)
    session.state = state
    yield session
    state.close()
    session.close()


@pytest.fixture(scope="module")
def running(session, vtest_video):
    """`ros2 launch` on the PETS video, looping, with a short window tier so that releases come every few seconds."""
    log = session.tmp / "launch-running.log"
    launch = session.popen(*launch_arguments(session.state, vtest_video, loop="true", fps="10", window_s="4", k="1"), log=log)
    expected = {"/camera", "/detection", "/tracking", "/anonymizer", "/aggregator", "/uplink"}
    assert session.wait_for(lambda: expected <= session.node_names(), 180.0), log.read_text()
    launch.log = log
    yield launch
    stop_group(launch, signal.SIGINT, 60.0)


def test_node_list_shows_the_six_nodes(session, running):
    expected = {"/camera", "/detection", "/tracking", "/anonymizer", "/aggregator", "/uplink"}
    assert session.wait_for(lambda: expected <= session.node_names(), 60.0), session.node_names()


def test_param_set_takes_an_integer_for_a_double_and_refuses_with_the_real_reason(session, running):
    ok = session.run("param", "set", "/aggregator", "epsilon_per_track_day", "2", check=False)
    assert "Set parameter successful" in ok.output, ok.output
    assert "Double value is: 2.0" in session.run("param", "get", "/aggregator", "epsilon_per_track_day").stdout
    refused = session.run("param", "set", "/aggregator", "epsilon_per_track_day", "-1", check=False)
    assert "Setting parameter failed" in refused.output and "out of range" in refused.output, refused.output
    refused = session.run("param", "set", "/anonymizer", "direction_sectors", "6", check=False)
    assert "Setting parameter failed" in refused.output and "4 or 8" in refused.output, refused.output
    refused = session.run("param", "set", "/aggregator", "ledger_path", "/tmp/elsewhere.sqlite", check=False)
    assert "read-only" in refused.output, refused.output
    assert "Double value is: 2.0" in session.run("param", "get", "/aggregator", "epsilon_per_track_day").stdout


def test_a_respawned_node_keeps_the_runtime_changes_of_this_launch(session, running):
    assert "Set parameter successful" in session.run("param", "set", "/aggregator", "k", "3").stdout
    pids = [pid for pid, command in processes_of(session.tmp) if "aggregator_node" in command]
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)  # a crash: launch respawns the node after respawn_delay
    assert session.wait_for(lambda: any("aggregator_node" in command and pid != pids[0] for pid, command in processes_of(session.tmp)), 60.0)
    assert session.wait_for(lambda: "Integer value is: 3" in session.run("param", "get", "/aggregator", "k", check=False).stdout, 90.0), \
        running.log.read_text()[-3000:]
    assert "restored runtime parameter changes" in running.log.read_text()


def test_a_recording_with_loop_false_ends_the_launch(session, vtest_video):
    clip = short_clip(vtest_video, session.tmp / "clip.avi", 40)
    log = session.tmp / "launch-clip.log"
    launch = session.popen(*launch_arguments(session.state, clip, loop="false", fps="20", window_s="4", k="1"), log=log)
    try:
        code = launch.wait(timeout=240)
    finally:
        stop_group(launch, signal.SIGKILL, 10.0)
    text = log.read_text()
    assert code == 0, text
    assert "end of stream after 40 frames" in text, text
    assert text.count("[camera_node-1]: process started") == 1, text  # the finished recording was not respawned
    assert not processes_of(session.tmp / "clip.avi"), processes_of(session.tmp)
    assert not tracebacks_in(log), tracebacks_in(log)
