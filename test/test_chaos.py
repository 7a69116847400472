"""Chaos through `ros2 launch`: kill -9 of random nodes while the graph runs on a looping clip with short windows
(launch respawns them), then a clean Ctrl-C. Nothing released is lost or sent twice, no span of time is released
twice, and every ledger charge is in the audit log. (bench/chaos.py runs the same checks over many more kills.)"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time

import pytest
from ros2cliutil import Ros2Session, StateDir, launch_arguments, node_pid, stop_group

from privacy_vision.core.audit import AuditLog, entries_of, verify
from privacy_vision.core.graph import STATE_STORES, pipeline
from privacy_vision.core.protocol import load_key_file
from privacy_vision.core.release.store import AUDIT_CHARGE_EVENT

pytestmark = pytest.mark.graph
KILLS = 8


def released_spans(store) -> list[tuple]:
    with sqlite3.connect(str(store)) as db:
        return db.execute(
            "SELECT release_id, kind, tier, zone, instance, segment_start, segment_end FROM released"
        ).fetchall()


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
    store = state.path / STATE_STORES["releases"]
    spans = released_spans(store)
    with sqlite3.connect(str(state.ingest_db)) as db:
        stored = [
            row[0] for row in db.execute("SELECT release_id FROM releases WHERE received_at <= ?", (stopped_wall,))
        ]
    with sqlite3.connect(str(store)) as db:
        queued = [row[0] for row in db.execute("SELECT release_id FROM outbox")]
    released = [span[0] for span in spans]
    assert len(stored) == len(set(stored)), "a release stored twice by the ingest"
    assert set(stored) | set(queued) == set(released) and not set(stored) & set(queued), (
        len(released),
        len(stored),
        len(queued),
    )  # every release recorded is in the ingest or still queued: nothing lost, nothing invented
    for a in spans:
        for b in spans:
            if a[0] < b[0] and a[1:5] == b[1:5]:
                assert a[6] <= b[5] or b[6] <= a[5], ("a span released twice", a, b)
    key = load_key_file(state.path / "pki" / "audit.key")
    assert verify(state.path / STATE_STORES["audit"], key).ok
    audited = entries_of(AuditLog(state.path / STATE_STORES["audit"], key), {AUDIT_CHARGE_EVENT})
    with sqlite3.connect(str(store)) as db:
        charges = db.execute("SELECT instance, configuration, epsilon FROM charges").fetchall()
    assert sorted((e["data"]["instance"], e["data"]["configuration"], e["data"]["epsilon"]) for e in audited) == sorted(
        charges
    ), "the ledger's charges and the audit log's differ"
    summary = {"kills": kills, "released": len(released), "stored": len(stored), "queued": len(queued)}
    print(json.dumps(summary))
