"""Chaos benchmark: the graph under `ros2 launch` on a looping clip, kill -9 of random nodes (launch respawns them),
then a full-disk phase, then a corrupt-file phase, then a clean Ctrl-C; the same checks as test/test_chaos.py over
many more faults, printed as figures. The device's state (release store, outbox, audit log, keys) lies on its own
tmpfs (root only; without the right to mount, the full-disk phase is skipped and says so).

    .venv/bin/python bench/chaos.py                      # 100 kills, then the corrupt-file phase
    .venv/bin/python bench/chaos.py --kills 20 --seed 3  # a shorter run

Checks: every release recorded in the release store is in the ingest or still queued (nothing lost, nothing
invented), none stored twice, no span of time released twice, the ledger's charges are the audit log's, the audit
log verifies. Full disk: the state's file system filled while the graph runs (writes fail with ENOSPC in every
node), held, then freed: nothing may be lost once space returns. Corrupt file: the release store is replaced by garbage while the aggregator is down (it must refuse to
release, loudly, until restored from the audit log; the releases that were only in that file are counted apart).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))
sys.path.insert(0, str(REPO))

from ros2cliutil import Ros2Session, StateDir, chaos_figures, launch_arguments, node_pid, stop_group  # noqa: E402

from privacy_vision.core.graph import STATE_STORES, pipeline  # noqa: E402
from testkit.core import fill_up, small_filesystem  # noqa: E402

VIDEO = REPO.parent / "shared" / "data" / "video" / "vtest.avi"


def kill_phase(session: Ros2Session, state: StateDir, kills: int, rng: random.Random, started: float) -> list[str]:
    killed = []
    nodes = list(pipeline("camera"))
    for n in range(kills):
        node = rng.choice(nodes)
        pid = node_pid(session.tmp, node)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed.append(node)
        time.sleep(rng.uniform(3.0, 9.0))
        if (n + 1) % 10 == 0:
            print(
                f"[chaos] {n + 1} of {kills} kills; {len(state.stored_since(started))} releases in the ingest",
                flush=True,
            )
    return killed


def full_disk_phase(session: Ros2Session, state: StateDir, hold_s: float, started: float) -> dict:
    """Fill the state's file system, hold it full while the graph runs, free it and let the backlog drain."""
    before = len(state.stored_since(started))
    filler = fill_up(state.path)
    time.sleep(hold_s)
    during = len(state.stored_since(started)) - before
    filler.unlink()
    time.sleep(hold_s)
    return {"held_full_s": hold_s, "ingest_gained_while_full": during}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--full-disk-s", type=float, default=30.0, help="how long the state's disk is held full")
    parser.add_argument("--tmp", default=str(REPO / "bench_out" / "chaos"))
    args = parser.parse_args()
    tmp = Path(args.tmp) / time.strftime("%Y%m%d-%H%M%S")
    tmp.mkdir(parents=True)
    session = Ros2Session(tmp)
    (tmp / "state").mkdir()
    disk = contextlib.ExitStack()
    try:
        disk.enter_context(small_filesystem(tmp / "state", 64 * 1024))
        own_disk = True
    except PermissionError as error:
        print(f"[chaos] {error}: the full-disk phase is skipped", flush=True)
        own_disk = False
    state = StateDir(session)
    log = tmp / "launch.log"
    started = time.time()
    launch = session.popen(*launch_arguments(state, VIDEO, loop="true", fps="10", window_s="4", k="1"), log=log)
    rng = random.Random(args.seed)
    results: dict = {"seed": args.seed, "load_average_at_start": os.getloadavg()[0]}
    try:
        if not session.wait_for(lambda: len(state.stored_since(started)) >= 3, 300.0, 1.0):
            print(log.read_text()[-4000:])
            return 1
        killed = kill_phase(session, state, args.kills, rng, started)
        results["kills"] = {node: killed.count(node) for node in pipeline("camera")}
        if own_disk:
            print(f"[chaos] full-disk phase: the state's file system full for {args.full_disk_s:.0f} s", flush=True)
            results["full_disk"] = full_disk_phase(session, state, args.full_disk_s, started)
        else:
            results["full_disk"] = "skipped: mounting a tmpfs needs root"
        print(
            "[chaos] corrupt-file phase: the release store replaced by garbage while the aggregator is down", flush=True
        )
        store = state.path / STATE_STORES["releases"]
        pid = node_pid(session.tmp, "aggregator")
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)  # held, so that launch does not respawn it before the file is swapped
            store.write_bytes(os.urandom(4096))
            os.kill(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGCONT)
            time.sleep(15.0)
            aggregator_log = "\n".join(p.read_text(errors="replace") for p in tmp.rglob("aggregator*"))
            results["corrupt_store_refused_loudly"] = "releasing is refused" in log.read_text() or (
                "not intact" in log.read_text() or "not intact" in aggregator_log
            )
            restore = subprocess.run(
                [
                    str(REPO / ".venv/bin/python"),
                    "-m",
                    "privacy_vision.cli",
                    "releases",
                    "restore",
                    "--store",
                    str(store),
                    "--audit-dir",
                    str(state.path / STATE_STORES["audit"]),
                    "--audit-key",
                    str(state.path / "pki" / "audit.key"),
                ],
                capture_output=True,
                text=True,
            )
            results["restore"] = (restore.stdout + restore.stderr).strip()[-300:]
            time.sleep(15.0)  # the aggregator looks at a refused store again every 10 s
        else:
            results["corrupt_store_refused_loudly"] = "not run: no aggregator process"
    finally:
        results["launch_ended_before_the_stop"] = launch.poll() is not None
        code = stop_group(launch, signal.SIGINT, 120.0)
        stopped = time.time()
        state.close()
        session.close()
        if own_disk:
            check_state = tmp / "state-copy"
            shutil.copytree(state.path, check_state)
            disk.close()
            state.path = check_state
    results["launch_exit_code"] = code
    results.update(chaos_figures(state, stopped))
    print(json.dumps(results, indent=2))
    return 0 if results["lost"] == results["stored_twice"] == results["spans_released_twice"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
