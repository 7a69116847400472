"""Chaos through `ros2 launch`: kill -9 of random nodes while the graph runs on a looping clip with short windows
(launch respawns them), then a clean Ctrl-C. Nothing released is lost or sent twice, no span of time is released
twice, and every ledger charge is in the audit log. (bench/chaos.py runs the same checks over many more kills.)"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest
from ros2cliutil import Ros2Session, StateDir, chaos_figures, launch_arguments, node_pid, stop_group

from privacy_vision.core.graph import pipeline

pytestmark = pytest.mark.graph
KILLS = 8


def test_kill_9_of_random_nodes_loses_nothing_and_releases_nothing_twice(tmp_path, vtest_video):
    session = Ros2Session(tmp_path)
    state = StateDir(session)
    log = tmp_path / "launch-chaos.log"
    started = time.time()
    launch = session.popen(*launch_arguments(state, vtest_video, loop="true", fps="10", window_s="4", k="1"), log=log)
    rng = random.Random(int(os.environ.get("PV_CHAOS_SEED", "20261203")))
    kills = []
    try:
        assert session.wait_for(lambda: len(state.stored_since(started)) >= 3, 240.0, 0.5), log.read_text()[-4000:]
        nodes = list(pipeline("camera"))
        for node in rng.sample(nodes, len(nodes)) + [rng.choice(nodes) for _ in range(KILLS - len(nodes))]:
            pid = node_pid(tmp_path, node)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                kills.append(node)
            time.sleep(rng.uniform(4.0, 8.0))
        before = len(state.stored_since(started))
        assert session.wait_for(lambda: len(state.stored_since(started)) >= before + 6, 240.0, 0.5), log.read_text()[
            -4000:
        ]  # respawned and releasing again
    finally:
        code = stop_group(launch, signal.SIGINT, 90.0)
        stopped_wall = time.time()
        state.close()
        session.close()
    assert len(kills) >= KILLS - 2 and "aggregator" in kills and "anonymizer" in kills, kills
    assert code == 0, log.read_text()[-6000:]
    figures = chaos_figures(state, stopped_wall)
    assert figures["stored_twice"] == 0, "a release stored twice by the ingest"
    # every release recorded is in the ingest or still queued: nothing lost, nothing invented
    assert figures["lost"] == figures["restored_keys_without_values"] == figures["invented"] == 0, figures
    assert figures["in_ingest_and_queued"] == 0, figures
    assert figures["spans_released_twice"] == 0, ("a span released twice", figures)
    assert figures["audit_log_ok"], figures["audit_log"]
    assert figures["ledger_equals_audit_log"], "the ledger's charges and the audit log's differ"
    summary = {
        "kills": kills,
        "released": figures["released"],
        "stored": figures["in_ingest"],
        "queued": figures["still_queued"],
    }
    print(json.dumps(summary))
