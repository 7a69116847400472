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
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from privacy_vision.core.analyst_tokens import issue_token
from privacy_vision.core.graph import (
    DRAIN_TIMEOUT_S,
    NODE_NAMES,
    RUN_ANALYST,
    SOURCE_PARAMETERS,
    STOP_MARGIN_S,
    UPSTREAM_WAIT_S,
    check_capture,
    graph_environment,
    pipeline,
    source_node,
    state_paths,
)
from privacy_vision.core.pki import PkiPaths, create_device_key, create_pki, read_pins
from privacy_vision.monitor import TRANSITION_TARGETS, GraphMonitor
from privacy_vision.node_main import CHECK_FAILED
from privacy_vision.report import FrameCounts, format_summary

_PR_SET_PDEATHSIG = 1
EXIT_GRACE_S = 3.0  # a finalized node's process exits this quickly
CHECK_TIMEOUT_S = 120.0  # the configuration check: one process configures every node (model and source included)
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
        self.final_frames: FrameCounts | None = None
        self.per_node: dict[str, dict[str, str]] = {}  # each node's -p overrides of this run
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
        if not pki.analyst_token(RUN_ANALYST).is_file():
            issue_token(pki.analyst_tokens, pki.analyst_token(RUN_ANALYST), RUN_ANALYST)
        device_key = self._provision_device(pki)
        env = graph_environment(config, self.domain_id)
        self.check_configuration(pki, device_key, env)
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
                f"{self._device_id()}={device_key}",
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
            f"analyst token in {pki.analyst_token(RUN_ANALYST)})"
        )
        parameters = self._write_parameters(
            self.log_dir / "parameters.yaml", pki, device_key, f"https://127.0.0.1:{port}/v1/releases", self.state
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
            self.processes = dict.fromkeys(self.per_node, process)
        else:
            self.processes = {
                node: ManagedProcess(
                    node,
                    [sys.executable, "-m", "privacy_vision.node_main", node, *ros_args],
                    env,
                    self.log_dir / f"{node}.log",
                    self.console.message,
                )
                for node in self.per_node
            }
        self.monitor = GraphMonitor(self.domain_id, config, self.options.capture)
        self._bring_up()
        layout = "in one process (composed)" if self.options.composed else "as separate processes"
        self.console.message(
            f"graph started: ingest + {len(self.per_node)} nodes {layout} ({self.options.capture} capture) on "
            f"ROS_DOMAIN_ID={self.domain_id} (logs in {self.log_dir})"
        )

    def _write_parameters(
        self, path: Path, pki: PkiPaths, device_key: Path, ingest_url: str, state: dict[str, Path]
    ) -> Path:
        """One section per node on top of params.yaml: the source, the uplink's endpoint and keys, and every state
        store under `state` (the run's --var-dir; a scratch folder for the configuration check). It serves one node
        per process and all of them in one process (composed) alike."""
        pins = ",".join(f'"{pin}"' for pin in read_pins(pki))
        forced = {
            "camera": {"source": self.options.source},
            "uplink": {
                "ingest_url": ingest_url,
                "pins": f"[{pins}]",
                "ca_file": str(pki.ca_cert),
                "key_file": str(device_key),
                "outbox_path": str(state["releases"]),
            },
            # Every state file lives under --var-dir: the release store (ledger) too, so separate runs never share a
            # budget.
            "aggregator": {"release_store": str(state["releases"])},
        }
        audit = {"audit_dir": str(state["audit"]), "audit_key_file": str(pki.audit_key)}
        self.per_node = node_parameters(self.options, forced)
        path.write_text(
            yaml.safe_dump(
                {
                    node: {"ros__parameters": {**audit, **{k: yaml.safe_load(v) for k, v in values.items()}}}
                    for node, values in self.per_node.items()
                }
            )
        )
        return path

    def check_configuration(self, pki: PkiPaths, device_key: Path, env: dict[str, str]) -> None:
        """Before anything starts: every node configured once in one short process with this run's parameters
        (types, ranges, settings, source opened and decoded, model, zones, homography, keys), its state stores in
        a scratch folder. A failure is one line per node and a RunError (exit 2)."""
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="privacy-vision-check-") as scratch:
            parameters = self._write_parameters(
                Path(scratch) / "parameters.yaml",
                pki,
                device_key,
                "https://127.0.0.1:9/v1/releases",
                state_paths(scratch),
            )
            command = [sys.executable, "-m", "privacy_vision.node_main", "check", "--capture", self.options.capture]
            command += ["--ros-args", "--params-file", str(self.options.config_dir / "params.yaml")]
            command += ["--params-file", str(parameters), "--log-level", "fatal"]
            log = self.log_dir / "check.log"
            try:
                result = subprocess.run(
                    command,
                    env={**env, "ROS_AUTOMATIC_DISCOVERY_RANGE": "OFF"},  # the check's nodes meet nobody
                    capture_output=True,
                    text=True,
                    timeout=CHECK_TIMEOUT_S,
                    preexec_fn=_die_with_parent,
                )
            except subprocess.TimeoutExpired:
                raise RunError(f"the configuration check took over {CHECK_TIMEOUT_S:.0f} s; see {log}") from None
        log.write_text(result.stdout + result.stderr)
        failures = [line for line in result.stdout.splitlines() if line.startswith(CHECK_FAILED)]
        if failures or result.returncode != 0:
            for line in failures:
                self.console.message(f"[runner] {line}")
            raise RunError(
                f"nothing was started: fix the configuration above (check log: {log})"
                if failures
                else f"the configuration check failed (code {result.returncode}): "
                f"{(result.stderr.strip().splitlines() or ['no output'])[-1][:300]} (check log: {log})"
            )
        self.console.message(f"configuration checked in {time.monotonic() - started:.1f} s")

    @property
    def source_node(self) -> str:
        """The node that reads the source; the run ends when it does."""
        return source_node(self.options.capture)

    def _bring_up(self) -> None:
        """The lifecycle transitions the launch file drives: configure every node, then activate them from the last in
        the pipeline to the first, the source node last, so that no frame flows before its receivers are there. A node
        whose process exits meanwhile is reported (by the run loop, with its exit code); a node that cannot be configured
        stops the run before anything is activated; a node that runs but never reaches active (a lifecycle reply lost
        under load, a stuck transition) is a RunError naming it, never a "graph started" that produces nothing."""
        assert self.monitor is not None
        nodes = pipeline(self.options.capture)
        configured = [node for node in nodes if self._reach(node, "configure")]
        failed = [node for node in nodes if node not in configured]
        if failed and not self.interrupted.is_set():  # what the check could not see (a device gone since, a full disk)
            for node in failed:
                self.console.message(
                    f"[runner] node '{node}' could not be configured: {self._last_error(self.processes[node])}"
                )
            raise RunError("nothing was activated; stopping (see the node logs in " + str(self.log_dir) + ")")
        for node in reversed(configured):
            self._reach(node, "activate")

    def _reach(self, node: str, transition: str) -> bool:
        assert self.monitor is not None
        process = self.processes[node]
        if self.interrupted.is_set():
            return False

        def running() -> bool:  # a Ctrl-C ends the wait too
            return process.poll() is None and not self.interrupted.is_set()

        reached, state = self.monitor.reach(node, transition, START_TIMEOUT_S, running)
        exits_by = time.monotonic() + EXIT_GRACE_S  # a node whose configuration fails exits (StartupError, code 2)
        while not reached and process.poll() is None and time.monotonic() < exits_by:
            time.sleep(0.1)
        if reached or process.poll() is not None or self.interrupted.is_set():
            return reached
        raise RunError(
            f"node '{node}' did not reach {TRANSITION_TARGETS[transition]} (start-up timeout {START_TIMEOUT_S:.0f} s; "
            f"last state: {state or 'no answer to ~/get_state'}); the graph is stopped (log: {process.log_path})"
        )

    def _transition(self, node: str, transition: str, timeout_s: float) -> bool:
        assert self.monitor is not None
        process = self.processes[node]
        return not self.interrupted.is_set() and self.monitor.change_state(
            node, transition, timeout_s, lambda: process.poll() is None
        )

    def _device_id(self) -> str:
        return self.options.overrides.get("uplink", {}).get("device_id", "device-1")

    def _provision_device(self, pki: PkiPaths) -> Path:
        """The device's own key (pki/devices/DEVICE.key, kept across runs). No configuration is registered for it: the
        local ingest checks plausible ranges only, so a runtime change made during the run (`ros2 param set`, audited)
        is not refused; a fleet's ingest registers each device (docs/faults.md)."""
        try:
            return create_device_key(pki, self._device_id())[0]
        except ValueError as error:
            raise RunError(str(error)) from None

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
            self.monitor.spin_for(0.5)  # the nodes' final reports
            self.final_frames = self.monitor.frame_counts()
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
        return format_summary(self.stored_releases(), self.ingest_db, self.final_frames, self.dashboard_command())

    def dashboard_command(self) -> str:
        """The command that opens this run's store in the dashboard (read-only), as a user would type it here."""
        script = Path(sys.executable).parent / "privacy-vision"
        try:
            command = str(script.relative_to(Path.cwd())) if script.is_file() else "privacy-vision"
        except ValueError:
            command = str(script)
        var_dir = "" if self.options.var_dir == Path("var") else f" --var-dir {self.options.var_dir}"
        return f"{command} dashboard{var_dir}"
