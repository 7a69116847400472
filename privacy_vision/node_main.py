"""Entry point of every node process: the `<node>_node` console scripts (what `ros2 run` and the launch file
start) and `python -m privacy_vision.node_main NODE` (the runner and the tests); `composed_node` and
`python -m privacy_vision.node_main composed [--capture in_process]` run all the graph's nodes as separate ROS
nodes in one process on one executor (composed mode: one set of client libraries in memory instead of six).

SIGINT and SIGTERM are taken over here, before the ROS client libraries are imported (a second or more on a
loaded machine): a stop request that arrives while a node is still starting (launch shutting down while it
respawns a node, systemd stopping the unit) is then a clean stop, not a KeyboardInterrupt traceback or a
kill by SIGTERM's default action. Nothing here runs at import time.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from privacy_vision.core.graph import CAPTURE_MODES, NODE_NAMES, pipeline

CHECK_FAILED = "configuration error:"  # how `node_main check` starts each line about a node that cannot start
STOP = threading.Event()  # set by SIGINT or SIGTERM once install_stop_handlers() ran


def _request_stop(signum, frame) -> None:
    STOP.set()


def install_stop_handlers() -> threading.Event:
    """SIGINT and SIGTERM only set STOP (idempotent); the node decides how to stop. The launch file starts node
    processes with both blocked, so that one sent while Python was starting is pending: it is delivered here."""
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    return STOP


def run(node: str, args: list[str] | None = None) -> None:
    if node not in NODE_NAMES:
        raise SystemExit(f"unknown node {node!r}: one of {', '.join(NODE_NAMES)}")
    install_stop_handlers()
    importlib.import_module(f"privacy_vision.nodes.{node}").main(args)


def _pipeline_classes(argv: list[str], prog: str, description: str) -> tuple[list, list[str]]:
    """The node classes of the pipeline that --capture picks (no camera node in in_process capture) and the ROS
    arguments (--ros-args ...); the stop handlers are installed before rclpy loads (module docstring)."""
    own, ros = (
        (argv[: argv.index("--ros-args")], argv[argv.index("--ros-args") :]) if "--ros-args" in argv else (argv, [])
    )
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--capture", choices=CAPTURE_MODES, default="camera")
    options = parser.parse_args(own)
    install_stop_handlers()
    nodes = pipeline(options.capture)
    return [importlib.import_module(f"privacy_vision.nodes.{node}").NODE_CLASS for node in nodes], ros


def run_composed(argv: list[str]) -> None:
    """All nodes of the pipeline for the capture mode in this process. Parameters come from params files with one
    section per node (what the launch file and the runner write); --capture picks the pipeline (no camera node
    in in_process capture)."""
    factories, ros = _pipeline_classes(argv, "composed_node", run_composed.__doc__)
    from privacy_vision.nodes.common import run_nodes

    run_nodes(factories, [sys.argv[0], *ros])


def run_check(argv: list[str]) -> int:
    """Configure every node of the pipeline in this process with the given parameters and stop: one line per node
    that cannot start (exit 2), or 'configuration OK'. `privacy-vision run` calls this before it starts anything."""
    factories, ros = _pipeline_classes(argv, "node_main check", run_check.__doc__)
    from privacy_vision.nodes.common import check_nodes

    failures = check_nodes(factories, [sys.argv[0], *ros])
    for node, reason in failures.items():
        print(f"{CHECK_FAILED} node '{node}': {reason}", flush=True)
    if not failures:
        print(f"configuration OK: {len(factories)} nodes", flush=True)
    return 2 if failures else 0


def composed() -> None:
    run_composed(sys.argv[1:])


def _entry(node: str):
    def main() -> None:
        run(node)

    main.__name__ = node
    return main


camera, detection, tracking, anonymizer, aggregator, uplink = (_entry(node) for node in NODE_NAMES)

if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(
            f"usage: python -m privacy_vision.node_main NODE|composed|check [--ros-args ...] (NODE: {', '.join(NODE_NAMES)})"
        )
    if sys.argv[1] == "composed":
        run_composed(sys.argv[2:])
    elif sys.argv[1] == "check":
        sys.exit(run_check(sys.argv[2:]))
    else:
        run(sys.argv[1], [sys.argv[0], *sys.argv[2:]])
