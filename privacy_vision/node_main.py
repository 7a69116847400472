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


def run_composed(argv: list[str]) -> None:
    """All nodes of the pipeline for the capture mode in this process. Parameters come from params files with one
    section per node (what the launch file and the runner write); --capture picks the pipeline (no camera node
    in in_process capture)."""
    own, ros = (
        (argv[: argv.index("--ros-args")], argv[argv.index("--ros-args") :]) if "--ros-args" in argv else (argv, [])
    )
    parser = argparse.ArgumentParser(prog="composed_node", description=run_composed.__doc__)
    parser.add_argument("--capture", choices=CAPTURE_MODES, default="camera")
    options = parser.parse_args(own)
    install_stop_handlers()
    from privacy_vision.nodes.common import (
        run_nodes,  # after the handlers: loading rclpy takes a while (module docstring)
    )

    factories = [
        importlib.import_module(f"privacy_vision.nodes.{node}").NODE_CLASS for node in pipeline(options.capture)
    ]
    run_nodes(factories, [sys.argv[0], *ros])


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
            f"usage: python -m privacy_vision.node_main NODE|composed [--ros-args ...] (NODE: {', '.join(NODE_NAMES)})"
        )
    if sys.argv[1] == "composed":
        run_composed(sys.argv[2:])
    else:
        run(sys.argv[1], [sys.argv[0], *sys.argv[2:]])
