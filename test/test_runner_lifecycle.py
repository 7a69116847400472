"""The runner's start-up through the nodes' lifecycle (issue 20, finding 11): under load a lost lifecycle reply left
tracking and the anonymizer inactive, and the runner printed "graph started" for a run that produced nothing."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from privacy_vision import runner as runner_module
from privacy_vision.core.graph import pipeline
from privacy_vision.monitor import GraphMonitor
from privacy_vision.runner import GraphOptions, GraphRunner, RunError
from testkit.core import CONFIG, free_domain_id, start_node, stop

pytestmark = pytest.mark.graph  # the runner and its monitor load rclpy

FROM = {"configure": "unconfigured", "activate": "inactive"}
TO = {"configure": "inactive", "activate": "active"}


class LossyGraph(GraphMonitor):
    """The lifecycle services of a graph as the runner sees them: a transition taken with its reply lost, a request
    lost before it reached the node, one the node refuses (it failed), or a node that never answers its state."""

    def __init__(self, lost=(), dropped=(), refused=(), silent=()) -> None:
        self.states = dict.fromkeys(pipeline("camera"), "unconfigured")
        self.requests: list[tuple[str, str]] = []
        self.lost, self.dropped, self.refused, self.silent = set(lost), set(dropped), set(refused), set(silent)
        self.failed: set[str] = set()  # nodes that refused a transition

    def get_state(self, node: str, timeout_s: float) -> str:
        return "" if node in self.silent else self.states[node]

    def request_transition(self, node, transition, timeout_s, alive) -> bool | None:
        self.requests.append((node, transition))
        if (node, transition) in self.dropped:
            self.dropped.discard((node, transition))  # lost on the way, once
            return None
        if self.states[node] != FROM[transition] or (node, transition) in self.refused:
            self.failed.add(node)
            return False
        self.states[node] = TO[transition]
        return None if (node, transition) in self.lost else True

    def spin_for(self, seconds: float) -> None:
        time.sleep(min(seconds, 0.01))


class Process:
    """A node process that runs, or (`exits`) ends with code 2 once a transition of it failed, as a node whose
    configuration fails does."""

    log_path = Path("node.log")

    def __init__(self, graph: LossyGraph, node: str, exits: bool) -> None:
        self.graph, self.node, self.exits = graph, node, exits

    def poll(self) -> int | None:
        return 2 if self.exits and self.node in self.graph.failed else None


def bring_up(tmp_path, monkeypatch, graph: LossyGraph, exiting: tuple[str, ...] = ()) -> None:
    monkeypatch.setattr(runner_module, "START_TIMEOUT_S", 1.0)
    monkeypatch.setattr(runner_module, "EXIT_GRACE_S", 0.2)
    runner = GraphRunner(GraphOptions(source="video.avi", var_dir=tmp_path / "var"))
    runner.monitor = graph
    runner.processes = {node: Process(graph, node, node in exiting) for node in graph.states}
    runner._bring_up()


def test_finding_11_a_lost_reply_is_found_by_asking_the_state(tmp_path, monkeypatch):
    graph = LossyGraph(lost={("tracking", "configure"), ("anonymizer", "activate")}, dropped={("uplink", "activate")})
    bring_up(tmp_path, monkeypatch, graph)
    assert set(graph.states.values()) == {"active"}, graph.states
    assert graph.requests.count(("tracking", "configure")) == 1  # the state said it was done: not asked again
    assert graph.requests.count(("uplink", "activate")) == 2  # the request that never arrived was made again


@pytest.mark.parametrize(
    "graph, reason",
    [
        (LossyGraph(refused={("anonymizer", "activate")}), "node 'anonymizer' did not reach active"),
        (LossyGraph(silent={"tracking"}), "node 'tracking' did not reach inactive"),
    ],
)
def test_finding_11_a_node_that_never_gets_active_stops_the_run_by_name(tmp_path, monkeypatch, graph, reason):
    with pytest.raises(RunError, match=reason) as error:
        bring_up(tmp_path, monkeypatch, graph)
    last = "inactive" if "anonymizer" in reason else "no answer to ~/get_state"
    assert f"last state: {last}" in str(error.value)


def test_a_node_that_fails_its_configuration_and_exits_is_left_to_the_run_loop(tmp_path, monkeypatch):
    """Its exit code is reported while the others go on (a configuration error is the node's to state), and its
    configure is never asked twice (a second one fails on parameters already declared)."""
    graph = LossyGraph(refused={("anonymizer", "configure")})
    bring_up(tmp_path, monkeypatch, graph, exiting=("anonymizer",))
    assert graph.requests.count(("anonymizer", "configure")) == 1
    assert graph.states["anonymizer"] == "unconfigured" and graph.states["uplink"] == "active"


def test_finding_11_the_monitor_reaches_a_state_whatever_became_of_the_replies(tmp_path):
    """A real node: configured by someone else (the reply the runner waited for never came), then frozen (SIGSTOP: no
    answer at all), then running again."""
    domain = free_domain_id()
    process = start_node("tracking", domain, {"autostart": "false"}, tmp_path / "tracking.log")
    monitor = GraphMonitor(domain, CONFIG)
    alive = lambda: process.poll() is None  # noqa: E731
    try:
        assert monitor.change_state("tracking", "configure", 90.0, alive)  # the transition happened
        assert not monitor.change_state("tracking", "configure", 10.0, alive)  # asking again is refused: inactive
        assert monitor.reach("tracking", "configure", 30.0, alive) == (True, "inactive")
        process.send_signal(signal.SIGSTOP)
        assert monitor.reach("tracking", "activate", 2.0, alive) == (False, "")
        process.send_signal(signal.SIGCONT)
        assert monitor.reach("tracking", "activate", 60.0, alive) == (True, "active")
    finally:
        process.send_signal(signal.SIGCONT)
        monitor.close()
        stop(process)
