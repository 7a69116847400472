"""The project's own graph runner: starts the ingest and the six nodes as processes, drives their lifecycle
transitions as the launch file does (configure all, activate from the last node to the source), shows progress,
stops them in pipeline order through the same transitions, and prints a per-zone summary. For machines without
`ros2 launch`; launch/privacy_vision.launch.py starts the same graph from the same config files."""

from __future__ import annotations

import ctypes
import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from privacy_vision.core.analyst_tokens import issue_token
from privacy_vision.core.graph import (
    DRAIN_TIMEOUT_S,
    NODE_NAMES,
    SOURCE_PARAMETERS,
    STOP_MARGIN_S,
    UPSTREAM_WAIT_S,
    check_capture,
    graph_environment,
    pipeline,
    source_node,
    state_paths,
)
from privacy_vision.core.pki import PkiPaths, create_pki, read_pins
from privacy_vision.core.release_schema import noise_dominated
from privacy_vision.monitor import GraphMonitor

_PR_SET_PDEATHSIG = 1
DEMO_ANALYST = "analyst"  # the runner's own read-API token: var/pki/analyst-analyst.token
EXIT_GRACE_S = 3.0  # a finalized node's process exits this quickly
START_TIMEOUT_S = 90.0  # for a node's ~/change_state service to appear and its configure transition to finish


class RunError(RuntimeError):
    """The graph could not be started as configured."""


def _die_with_parent() -> None:
    """Child processes get SIGTERM if the runner dies, so nothing is left orphaned."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class GraphOptions:
    """What `privacy-vision run` was asked for: source, folders, overrides, domain, capture mode."""

    source: str
    config_dir: Path = Path("config")
    var_dir: Path = Path("var")
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> name -> YAML value
    domain_id: int | None = None
    duration_s: float = 0.0
    quiet: bool = False
    capture: str = "camera"  # one of core.graph.CAPTURE_MODES
    composed: bool = False  # all nodes as separate ROS nodes in one process (one executor), instead of one process each


def node_parameters(options: GraphOptions, forced: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Per node -p overrides for the chosen capture mode. In-process capture gives the camera's source
    parameters (as configured for the camera) to the detection node and starts no camera node."""
    try:
        check_capture(options.capture)
    except ValueError as error:
        raise RunError(str(error)) from None
    per_node = {
        node: {"autostart": "false", **forced.get(node, {}), **options.overrides.get(node, {})} for node in NODE_NAMES
    }
    if options.capture == "camera":
        return per_node
    camera = per_node.pop("camera")
    per_node["detection"] = {
        **{k: v for k, v in camera.items() if k in SOURCE_PARAMETERS},
        **per_node["detection"],
        "capture": "in_process",
    }
    return per_node


class ManagedProcess:
    """A child whose output goes to a log file; warnings and errors are echoed to the console."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_path: Path, echo) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "w", buffering=1)  # noqa: SIM115 - open while the process runs; _pump closes it
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.first_lines: list[str] = []
        self._echo = echo
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._log.write(line)
            if len(self.first_lines) < 5:
                self.first_lines.append(line.rstrip())
            if re.search(r"\b(ERROR|WARN(ING)?|Traceback)\b", line):
                self._echo(f"[{self.name}] {line.rstrip()}")
        self._log.close()

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self, timeout_s: float, grace_s: float = 0.0) -> int:
        """Wait grace_s for a process that is exiting on its own (finalized); then SIGINT, and kill after timeout_s."""
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._echo(f"[runner] {self.name} did not stop within {timeout_s:.0f} s; killing it")
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=2.0)
        return self.process.returncode


class Console:
    """One updating progress line on a terminal; periodic plain lines otherwise (CI logs)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stdout.isatty()
        self._lock = threading.Lock()
        self._last_plain = 0.0
        self._line_shown = False

    def message(self, text: str) -> None:
        with self._lock:
            if self._line_shown:
                sys.stdout.write("\r\033[K")
                self._line_shown = False
            print(text, flush=True)

    def progress(self, text: str) -> None:
        if self.quiet:
            return
        with self._lock:
            if self.tty:
                sys.stdout.write("\r\033[K" + text)
                sys.stdout.flush()
                self._line_shown = True
            elif time.monotonic() - self._last_plain >= 5.0:
                self._last_plain = time.monotonic()
                print(text, flush=True)


class GraphRunner:
    """Runs the graph without `ros2 launch`: ingest and node processes, lifecycle transitions, ordered stop, summary."""

    def __init__(self, options: GraphOptions) -> None:
        self.options = options
        self.console = Console(options.quiet)
        self.processes: dict[str, ManagedProcess] = {}
        self.ingest: ManagedProcess | None = None
        self.state = state_paths(options.var_dir)  # every state file lives under --var-dir (core/graph.py)
        self.ingest_db = self.state["ingest"].resolve()
        self.domain_id = options.domain_id if options.domain_id is not None else random.randint(1, 101)
        self.log_dir = self.state["logs"] / time.strftime("%Y%m%d-%H%M%S")
        self.started_wall = 0.0
        self.monitor: GraphMonitor | None = None
        self.interrupted = threading.Event()

    # -- start-up ---------------------------------------------------------------------------
    def start(self) -> None:
        config = self.options.config_dir
        for required in ("params.yaml", "zones.yaml", "fastdds.xml"):
            if not (config / required).is_file():
                raise RunError(
                    f"{config / required} not found; pass --config-dir pointing at the project's config/ folder"
                )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        pki = PkiPaths(self.state["pki"])
        if not pki.complete():
            primary, backup = create_pki(pki.root)
            self.console.message(
                f"created device key, CA and ingest certificate in {pki.root} (pins {primary}, backup {backup})"
            )
        if not pki.analyst_token(DEMO_ANALYST).is_file():
            issue_token(pki.analyst_tokens, pki.analyst_token(DEMO_ANALYST), DEMO_ANALYST)
        env = graph_environment(config, self.domain_id)
        self.started_wall = time.time()
        self.ingest = ManagedProcess(
            "ingest",
            [
                sys.executable,
                "-m",
                "privacy_vision.cloud.ingest",
                "--port",
                "0",
                "--cert",
                str(pki.server_cert),
                "--key",
                str(pki.server_key),
                "--db",
                str(self.ingest_db),
                "--device-key",
                f"{self._device_id()}={pki.device_key}",
                "--analyst-tokens",
                str(pki.analyst_tokens),
            ],
            env,
            self.log_dir / "ingest.log",
            self.console.message,
        )
        port = self._wait_for_ingest_port()
        self.console.message(
            f"dashboard while the graph runs: https://127.0.0.1:{port}/ (CA {pki.ca_cert}; "
            f"analyst token in {pki.analyst_token(DEMO_ANALYST)})"
        )
        pins = ",".join(f'"{pin}"' for pin in read_pins(pki))
        uplink = {
            "ingest_url": f"https://127.0.0.1:{port}/v1/releases",
            "pins": f"[{pins}]",
            "ca_file": str(pki.ca_cert),
            "key_file": str(pki.device_key),
            "outbox_path": str(self.state["releases"]),
        }
        # Every state file lives under --var-dir: the release store (ledger) too, so separate runs never share a budget.
        forced = {
            "camera": {"source": self.options.source},
            "uplink": uplink,
            "aggregator": {"release_store": str(self.state["releases"])},
        }
        audit = {"audit_dir": str(self.state["audit"]), "audit_key_file": str(pki.audit_key)}
        # One section per node in a params file of this run, on top of params.yaml: it serves one node per process
        # and all of them in one process (composed) alike.
        per_node = node_parameters(self.options, forced)
        parameters = self.log_dir / "parameters.yaml"
        parameters.write_text(
            yaml.safe_dump(
                {
                    node: {"ros__parameters": {**audit, **{k: yaml.safe_load(v) for k, v in values.items()}}}
                    for node, values in per_node.items()
                }
            )
        )
        ros_args = ["--ros-args", "--params-file", str(config / "params.yaml"), "--params-file", str(parameters)]
        if self.options.composed:
            command = [
                sys.executable,
                "-m",
                "privacy_vision.node_main",
                "composed",
                "--capture",
                self.options.capture,
                *ros_args,
            ]
            process = ManagedProcess("composed", command, env, self.log_dir / "composed.log", self.console.message)
            self.processes = dict.fromkeys(per_node, process)
        else:
            self.processes = {
                node: ManagedProcess(
                    node,
                    [sys.executable, "-m", "privacy_vision.node_main", node, *ros_args],
                    env,
                    self.log_dir / f"{node}.log",
                    self.console.message,
                )
                for node in per_node
            }
        self.monitor = GraphMonitor(self.domain_id, config, self.options.capture)
        self._bring_up()
        layout = "in one process (composed)" if self.options.composed else "as separate processes"
        self.console.message(
            f"graph started: ingest + {len(per_node)} nodes {layout} ({self.options.capture} capture) on "
            f"ROS_DOMAIN_ID={self.domain_id} (logs in {self.log_dir})"
        )

    @property
    def source_node(self) -> str:
        """The node that reads the source; the run ends when it does."""
        return source_node(self.options.capture)

    def _bring_up(self) -> None:
        """The lifecycle transitions the launch file drives: configure every node, then activate them from the last in
        the pipeline to the first, the source node last, so that no frame flows before its receivers are there. A node
        that cannot be configured is reported (by the run loop, with its exit code) and the others go on."""
        assert self.monitor is not None
        nodes = pipeline(self.options.capture)
        configured = [node for node in nodes if self._transition(node, "configure", START_TIMEOUT_S)]
        for node in reversed(configured):
            if not self._transition(node, "activate", START_TIMEOUT_S):
                self.console.message(f"[runner] node '{node}' did not activate (see {self.processes[node].log_path})")

    def _transition(self, node: str, transition: str, timeout_s: float) -> bool:
        assert self.monitor is not None
        process = self.processes[node]
        return not self.interrupted.is_set() and self.monitor.change_state(
            node, transition, timeout_s, lambda: process.poll() is None
        )

    def _device_id(self) -> str:
        return self.options.overrides.get("uplink", {}).get("device_id", "device-1")

    def _wait_for_ingest_port(self, timeout_s: float = 20.0) -> int:
        assert self.ingest is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.ingest.first_lines:
                match = re.search(r"listening on https://[^:]+:(\d+)/", line)
                if match:
                    return int(match.group(1))
            if self.ingest.poll() is not None:
                raise RunError(f"the ingest server exited at start-up: {' | '.join(self.ingest.first_lines)}")
            time.sleep(0.05)
        raise RunError(f"the ingest server did not start within {timeout_s:.0f} s (see {self.ingest.log_path})")

    # -- running ----------------------------------------------------------------------------
    def run(self) -> int:
        interrupted = self.interrupted
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
        exit_code = 0
        try:
            self.start()
            assert self.monitor is not None
            reported: set[str] = set()
            while True:
                self.console.progress(self.monitor.progress_line())
                source = self.processes[self.source_node]
                for process in set(self.processes.values()) - {source}:
                    code = process.poll()
                    if code not in (None, 0) and process.name not in reported:
                        # Like a launch file without respawn: report loudly, keep the rest running.
                        reported.add(process.name)
                        exit_code = 1
                        self.console.message(
                            f"[runner] node '{process.name}' exited with code {code}: {self._last_error(process)} "
                            f"(other nodes keep running; log: {process.log_path})"
                        )
                source_code = source.poll()
                if interrupted.is_set():
                    self.console.message("[runner] interrupted: stopping the graph in pipeline order")
                    exit_code = 130
                    break
                if source_code is not None:
                    if source_code != 0:
                        exit_code = 1
                        self.console.message(
                            f"[runner] {self.source_node} failed (code {source_code}): {self._last_error(source)}"
                        )
                    break
                if self.options.duration_s and time.time() - self.started_wall >= self.options.duration_s:
                    break
                time.sleep(0.25)
        except RunError as error:
            self.console.message(f"[runner] {error}")
            exit_code = 2
        finally:
            signal.signal(signal.SIGINT, lambda *_: self.console.message("[runner] still stopping; please wait"))
            self.shutdown()
            signal.signal(signal.SIGINT, previous)
        if exit_code != 2:
            self.console.message(self.summary())
        return exit_code

    def _last_error(self, process: ManagedProcess) -> str:
        lines = process.log_path.read_text().splitlines() if process.log_path.exists() else []
        errors = [line for line in lines if "ERROR" in line]
        return errors[-1] if errors else (lines[-1] if lines else "no output")

    def shutdown(self) -> None:
        """The ordered stop, as under `ros2 launch`: every node gets SIGINT, waits until its upstream node has
        finished, hands on what it still holds (the anonymizer its last segments, through the aggregator's service,
        while its executor still spins) and shuts down; the processes are then waited for in pipeline order."""
        nodes = pipeline(self.options.capture)
        processes = list(dict.fromkeys(self.processes[name] for name in nodes if name in self.processes))
        for process in processes:
            if process.poll() is None:
                process.process.send_signal(signal.SIGINT)
        for process in processes:
            timeout_s = UPSTREAM_WAIT_S * len(nodes) + DRAIN_TIMEOUT_S + STOP_MARGIN_S
            code = process.stop(timeout_s=timeout_s, grace_s=timeout_s)
            if code not in (0, None, -signal.SIGINT):
                self.console.message(f"[runner] {process.name} stopped with code {code}")
        if self.monitor is not None:
            self.monitor.spin_for(0.3)
            self.console.progress(self.monitor.progress_line())
            self.monitor.close()
            self.monitor = None
        if self.ingest is not None:
            self.ingest.stop(timeout_s=10.0)

    # -- results ----------------------------------------------------------------------------
    def stored_releases(self) -> list[dict]:
        if not self.ingest_db.exists():
            return []
        with sqlite3.connect(str(self.ingest_db)) as db:
            rows = db.execute(
                "SELECT body FROM releases WHERE received_at >= ? ORDER BY window_start, zone_id", (self.started_wall,)
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def summary(self) -> str:
        releases = self.stored_releases()
        return format_summary(releases, self.ingest_db)


def shown(estimate: dict, below_k: bool) -> str:
    """A released value as a person reads it: value and 95% interval, "< k" or marked noise-dominated."""
    if below_k:
        return "< k"
    text = f"{max(0.0, estimate['value']):.1f} [{estimate['low']:.1f}-{estimate['high']:.1f}]"
    return text + (" ~noise" if noise_dominated(estimate) else "")


def format_summary(releases: list[dict], store: Path) -> str:
    """Per zone: people present on average over the run (day tier) and in the last hour, the hour's top heading,
    the day's footfall; every value with its 95% interval."""
    header = f"{'zone':<16}{'occupancy (run)':>24}{'occupancy (hour)':>24}  {'top heading':<12}{'footfall':>24}"
    lines = [
        "",
        "Per-zone analytics received by the ingest (DP values with their 95% intervals; '~noise': the interval is "
        "wider than the value; '< k': the noisy head count is below k):",
        header,
        "-" * len(header),
    ]
    zones = sorted({r["zone_id"] for r in releases})
    for zone in zones:
        mine = [r for r in releases if r["zone_id"] == zone]

        def last(kind: str, tier: str, metric: str, rows: list[dict] = mine) -> str:
            found = [r for r in rows if r["kind"] == kind and r["tier"] == tier and metric in r["values"]]
            return shown(found[-1]["values"][metric], found[-1]["below_k"]) if found else "-"

        hours = [r for r in mine if r["kind"] == "presence" and r["tier"] == "hour" and r["values"]]
        headings = {
            name.split(".", 1)[1]: value["value"]
            for name, value in (hours[-1]["values"].items() if hours else ())
            if name.startswith("heading.")
        }
        top = max(headings, key=headings.get) if headings else "-"
        lines.append(
            f"{zone:<16}{last('presence', 'day', 'occupancy'):>24}{last('presence', 'hour', 'occupancy'):>24}  "
            f"{top:<12}{last('events', 'day', 'footfall'):>24}"
        )
        groups = [r for r in mine if r["tier"] == "group"]
        if groups:
            lines.append(
                f"{'':<16}strict mode: {len(groups)} groups released: "
                + ", ".join(
                    f"{shown(r['values']['size'], False)} people over {r['period_end_s'] - r['period_start_s']:.0f} s"
                    for r in groups
                )
            )
    if not zones:
        lines.append("(no releases reached the ingest)")
    lines += [
        "occupancy: people present on average over the observed part of the period (identity-free);",
        "footfall: distinct stitched tracks seen in the zone that day (per track, so a broken track can count twice);",
        "top heading: the hour's most frequent direction of movement ('none' = standing).",
    ]
    presence = next((r for r in releases if r["kind"] == "presence"), None)
    events = next((r for r in releases if r["kind"] != "presence"), None)
    if presence or events:
        parts = []
        if presence:
            parts.append(f"ε={presence['epsilon_unit']:.3g} per presence-hour (identity-free)")
        if events:
            delta = f", δ={events['delta']:.3g}" if events["delta"] else ""
            parts.append(f"ε={events['epsilon_unit']:.3g}{delta} per stitched-track-day")
        first = presence or events
        lines.append(
            f"guarantee: {', '.join(parts)}; k={first['k']} shown on noisy values ({first['mode']} mode); "
            f"ε per stitched-track-day charged today {max(r['epsilon_spent_today'] for r in releases):.3g} of "
            f"{first['daily_epsilon_cap']:g}"
        )
    lines.append(f"analytics stored in {store} ({len(releases)} releases this run)")
    return "\n".join(lines)
