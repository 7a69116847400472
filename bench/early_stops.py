"""Early-stop benchmark: `ros2 launch` on the looping PETS video, Ctrl-C (SIGINT to its process group) at a random
moment of start-up while lifecycle transitions are in flight, again and again; every stop must end the launch with
exit 0 and no traceback. test_launch_errors tries seven fixed moments; this tries many random ones.

    .venv/bin/python bench/early_stops.py                         # 30 stops between 1.0 and 3.5 s, about 6 minutes
    .venv/bin/python bench/early_stops.py --stops 10 --seed 3

Prints one line per stop, then the figures as JSON; exits 1 if any stop did not end with exit 0 and a clean log.
Each launch runs with --debug, so a failing stop's log (kept under --tmp) has launch's own traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))
sys.path.insert(0, str(REPO))

from ros2cliutil import Ros2Session, StateDir, launch_arguments, stop_group  # noqa: E402

VIDEO = REPO.parent / "shared" / "data" / "video" / "vtest.avi"
FAULTS = ("Caught exception", "Traceback", "InvalidHandle", "never retrieved")


def one_stop(session: Ros2Session, log: Path, after_s: float) -> tuple[int | str, list[str]]:
    """Start, stop after after_s, and return the exit code (or "hang") with the fault markers its log shows."""
    args = launch_arguments(session.state, VIDEO, loop="true", fps="10")
    process = session.popen(args[0], "--debug", *args[1:], log=log)
    time.sleep(after_s)
    os.killpg(process.pid, signal.SIGINT)
    try:
        code: int | str = process.wait(timeout=120)
    except Exception:
        stop_group(process, signal.SIGKILL, 10.0)
        code = "hang"
    text = log.read_text(errors="replace")
    return code, [fault for fault in FAULTS if fault in text]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stops", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--earliest-s", type=float, default=1.0)
    parser.add_argument("--latest-s", type=float, default=3.5)
    parser.add_argument("--tmp", default=str(REPO / "bench_out" / "early_stops"))
    args = parser.parse_args()
    tmp = Path(args.tmp) / time.strftime("%Y%m%d-%H%M%S")
    tmp.mkdir(parents=True)
    session = Ros2Session(tmp)
    session.state = StateDir(session)
    rng = random.Random(args.seed)
    results: dict = {"seed": args.seed, "load_average_at_start": os.getloadavg()[0], "stops": 0, "failed": []}
    try:
        for index in range(args.stops):
            after_s = rng.uniform(args.earliest_s, args.latest_s)
            log = tmp / f"stop-{index}.log"
            code, faults = one_stop(session, log, after_s)
            print(f"[early-stops] {index + 1}/{args.stops}: Ctrl-C after {after_s:.2f} s: exit {code} {faults or ''}")
            results["stops"] += 1
            if code != 0 or faults:
                results["failed"].append(
                    {"after_s": round(after_s, 2), "exit": code, "faults": faults, "log": str(log)}
                )
            time.sleep(2.0)  # the ros2 daemon forgets the last graph's nodes
    finally:
        session.state.close()
        session.close()
    results["exit_0_and_clean"] = results["stops"] - len(results["failed"])
    print(json.dumps(results, indent=2))
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
