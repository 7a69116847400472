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

FROM = {"configure": "unconfigured", "activate": "inactive"}
TO = {"configure": "inactive", "activate": "active"}


class LossyGraph(GraphMonitor):
    """The lifecycle services of a graph as the runner sees them: a transition can be taken with its reply lost,
    refused without a word, or a node can stop answering its state queries."""

    def __init__(self, lost: set[tuple[str, str]], stuck: set[tuple[str, str]], silent: set[str]) -> None:
        self.states = dict.fromkeys(pipeline("camera"), "unconfigured")
        self.requests: list[tuple[str, str]] = []
        self.lost, self.stuck, self.silent = lost, stuck, silent

    def get_state(self, node: str, timeout_s: float) -> str:
        return "" if node in self.silent else self.states[node]

    def change_state(self, node, transition, timeout_s, alive) -> bool:
        self.requests.append((node, transition))
        if self.states[node] != FROM[transition] or (node, transition) in self.stuck:
            return False
        self.states[node] = TO[transition]
        return (node, transition) not in self.lost

    def spin_for(self, seconds: float) -> None:
        time.sleep(min(seconds, 0.01))


class Running:
    """A node process that keeps running."""

    log_path = Path("node.log")

    def poll(self) -> None:
        return None


def bring_up(tmp_path, monkeypatch, graph: LossyGraph) -> None:
    monkeypatch.setattr(runner_module, "START_TIMEOUT_S", 1.0)
    runner = GraphRunner(GraphOptions(source="video.avi", var_dir=tmp_path / "var"))
    runner.monitor = graph
    runner.processes = {node: Running() for node in graph.states}
    runner._bring_up()


def test_finding_11_a_lost_reply_is_found_by_asking_the_state(tmp_path, monkeypatch):
    graph = LossyGraph(lost={("tracking", "configure"), ("anonymizer", "activate")}, stuck=set(), silent=set())
    bring_up(tmp_path, monkeypatch, graph)
    assert set(graph.states.values()) == {"active"}, graph.states
    assert graph.requests.count(("tracking", "configure")) == 1  # the state said it was done: not asked again


@pytest.mark.parametrize(
    "stuck, silent, reason",
    [
        (
            {("anonymizer", "activate")},
            set(),
            "node 'anonymizer' never reached active within 1 s (last state: inactive)",
        ),
        (
            set(),
            {"tracking"},
            "node 'tracking' never reached inactive within 1 s (last state: no answer to ~/get_state)",
        ),
    ],
)
def test_finding_11_a_node_that_never_gets_active_stops_the_run_by_name(tmp_path, monkeypatch, stuck, silent, reason):
    graph = LossyGraph(lost=set(), stuck=stuck, silent=silent)
    with pytest.raises(RunError, match="never reached") as error:
        bring_up(tmp_path, monkeypatch, graph)
    assert reason in str(error.value)


@pytest.mark.graph
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
