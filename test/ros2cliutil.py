"""Helpers for tests that drive the graph the way a ROS 2 user does: the real `ros2` command line
(launch, run, node, topic, param, service, lifecycle) from ../shared/ros2cli, installed by scripts/setup.sh."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from privacy_vision.core.audit import AuditLog, entries_of, verify
from privacy_vision.core.graph import STATE_STORES
from privacy_vision.core.protocol import load_key_file
from privacy_vision.core.release.store import AUDIT_CHARGE_EVENT
from testkit.core import CONFIG, REPO, free_domain_id

VENV = REPO / ".venv"
ROS2 = VENV / "bin" / "ros2"
BUNDLE = REPO.parent / "shared" / "ros2cli"


def require_ros2cli() -> Path:
    if not BUNDLE.is_dir():
        pytest.skip(
            f"{BUNDLE} is absent: the real ros2 command line is not installed here (scripts/setup.sh installs it from there)"
        )
    if not ROS2.is_file() or not (VENV / "lib" / "privacy_vision" / "camera_node").is_file():
        pytest.fail(f"{BUNDLE} is present but {ROS2} or the registered package is missing: run scripts/setup.sh")
    return ROS2


SERVICE_WAIT_TIMED_OUT = "Wait for service timed out"
SERVICE_WAIT_TRIES = 4


class Ros2Session:
    """One ROS domain, log folder and state folder; runs `ros2 ...` commands with a user's environment."""

    def __init__(self, tmp: Path) -> None:
        require_ros2cli()
        self.tmp = tmp
        self.domain = free_domain_id()
        self.log_dir = tmp / "roslog"
        (tmp / "tmp").mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "AMENT_PREFIX_PATH": str(VENV),
            "ROS_DOMAIN_ID": str(self.domain),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "FASTDDS_DEFAULT_PROFILES_FILE": str(CONFIG / "fastdds.xml"),
            "ROS_LOG_DIR": str(self.log_dir),
            "TMPDIR": str(tmp / "tmp"),
            "PYTHONUNBUFFERED": "1",
            "RCUTILS_COLORIZED_OUTPUT": "0",
        }
        self.env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)  # let the wheels' bootstrapper set LD_LIBRARY_PATH itself

    def run(self, *args: str, timeout_s: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
        """`ros2 ARGS...`; the result's `output` is stdout and stderr together (the CLI prints failures on stderr).
        `ros2 param` waits a fixed 5 s for a node's parameter services; on a loaded machine discovery can take longer,
        so that wait (never the node's answer) is tried again, as a user would."""
        for _ in range(SERVICE_WAIT_TRIES):
            try:
                result = subprocess.run(
                    [str(ROS2), *args], env=self.env, capture_output=True, text=True, timeout=timeout_s
                )
            except subprocess.TimeoutExpired:
                if check:
                    raise
                # A CLI call that hangs (seen under load: `ros2 lifecycle get` stuck for 60 s) is a failed call, so
                # that a poll (wait_for) tries again within its own deadline.
                result = subprocess.CompletedProcess(
                    args, returncode=-9, stdout="", stderr=f"ros2 timed out after {timeout_s:g} s"
                )
            result.output = result.stdout + result.stderr
            if SERVICE_WAIT_TIMED_OUT not in result.output:
                break
        if check and result.returncode != 0:
            raise AssertionError(f"ros2 {' '.join(args)} failed ({result.returncode}):\n{result.output}")
        return result

    def popen(self, *args: str, log: Path) -> subprocess.Popen:
        """A long-running `ros2 ...` in its own process group, as a terminal would start it."""
        return subprocess.Popen(
            [str(ROS2), *args], env=self.env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_for(self, condition, timeout_s: float, every_s: float = 1.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(every_s)
        return condition()

    def node_names(self) -> set[str]:
        """`ros2 node list` (through the ros2 daemon, which keeps discovering between calls: poll it)."""
        return set(self.run("node", "list", check=False).stdout.split())

    def close(self) -> None:
        self.run("daemon", "stop", check=False, timeout_s=30.0)


class StateDir:
    """Keys made with `ros2 run privacy_vision privacy-vision pki` and an ingest started with
    `ros2 run privacy_vision privacy-vision-ingest` on a free loopback port."""

    def __init__(self, session: Ros2Session) -> None:
        self.path = session.tmp / "state"
        self.session = session
        result = session.run("run", "privacy_vision", "privacy-vision", "pki", "--out", str(self.path / "pki"))
        assert "pins:" in result.stdout, result.stdout
        pki = self.path / "pki"
        self.ingest_db = session.tmp / "ingest.sqlite"
        self.ingest_log = session.tmp / "ingest.log"
        self.ingest = session.popen(
            "run",
            "privacy_vision",
            "privacy-vision-ingest",
            "--port",
            "0",
            "--cert",
            str(pki / "server.crt"),
            "--key",
            str(pki / "server.key"),
            "--db",
            str(self.ingest_db),
            "--device-key",
            f"device-1={pki / 'device.key'}",
            log=self.ingest_log,
        )
        assert session.wait_for(lambda: "listening on" in self.ingest_log.read_text(), 60.0, 0.2), (
            self.ingest_log.read_text()
        )
        port = re.search(r"listening on https://127\.0\.0\.1:(\d+)/", self.ingest_log.read_text()).group(1)
        self.ingest_url = f"https://127.0.0.1:{port}/v1/releases"

    def close(self) -> None:
        stop_group(self.ingest, signal.SIGINT, 20.0)

    def stored_since(self, since_wall: float) -> list[str]:
        """Release ids the ingest stored since this time."""
        if not self.ingest_db.exists():
            return []
        with sqlite3.connect(str(self.ingest_db)) as db:
            return [
                row[0] for row in db.execute("SELECT release_id FROM releases WHERE received_at >= ?", (since_wall,))
            ]


def outbox_size(state_dir: Path) -> int:
    with sqlite3.connect(str(state_dir / STATE_STORES["releases"])) as db:
        return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]


FINALIZED = re.compile(r"\[INFO\] \[(\d+\.\d+)\] \[(\w+)\]: finalized(?:: (.*))?")


def finalized(log_text: str) -> dict[str, tuple[float, str]]:
    """Each node's 'finalized' line: node -> (its own timestamp, summary)."""
    return {m.group(2): (float(m.group(1)), m.group(3) or "") for m in FINALIZED.finditer(log_text)}


def count_in(summary: str, what: str) -> int:
    match = re.search(rf"(\d+) {what}", summary)
    assert match, (what, summary)
    return int(match.group(1))


def stop_group(process: subprocess.Popen, sig: int, timeout_s: float) -> int:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def launch_arguments(state: StateDir, source: Path, **arguments: str) -> list[str]:
    base = {"source": str(source), "state_dir": str(state.path), "ingest_url": state.ingest_url}
    return [
        "launch",
        "privacy_vision",
        "privacy_vision.launch.py",
        *(f"{k}:={v}" for k, v in {**base, **arguments}.items()),
    ]


def short_clip(video: Path, out: Path, frames: int) -> Path:
    """The first frames of the PETS video as a short recording (its own end of file, 10 fps)."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    writer = None
    for _ in range(frames):
        ok, image = capture.read()
        assert ok
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (image.shape[1], image.shape[0]))
        writer.write(image)
    writer.release()
    capture.release()
    return out


def processes_of(tmp: Path) -> list[tuple[int, str]]:
    """(pid, command line) of live processes that mention this test's folder (node processes carry it in their
    parameters-file paths, launch and the ingest in their arguments)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(tmp) in command:
            found.append((int(proc.name), command[:300]))
    return found


def tracebacks_in(*roots: Path) -> list[str]:
    hits = []
    for root in roots:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            text = path.read_text(errors="replace")
            if "Traceback" in text:
                hits.append(f"{path}: {text[text.index('Traceback') :][:1500]}")
    return hits


def node_pid(tmp: Path, node: str) -> int | None:
    """The pid of this test's process of `node` (launch names its executable NODE_node), if one runs."""
    pids = [pid for pid, command in processes_of(tmp) if f"{node}_node" in command]
    return pids[0] if pids else None


def chaos_figures(state: StateDir, stopped_wall: float) -> dict:
    """What a chaos run left, as figures (test_chaos asserts them, bench/chaos.py prints them): every release recorded
    in the release store is in the ingest or still queued (keys restored from the audit log after a destroyed store
    are counted apart: their values were only in that file), none invented or stored twice, no span of time released
    twice, the ledger's charges equal the audit log's, and the audit log verifies."""
    store = state.path / STATE_STORES["releases"]
    with sqlite3.connect(str(store)) as db:
        spans = db.execute(
            "SELECT release_id, kind, tier, zone, instance, segment_start, segment_end FROM released"
        ).fetchall()
        restored = {row[0] for row in db.execute("SELECT release_id FROM released WHERE head_count = '{}'")}
        queued = {row[0] for row in db.execute("SELECT release_id FROM outbox")}
        charges = sorted(db.execute("SELECT instance, configuration, epsilon FROM charges").fetchall())
    with sqlite3.connect(str(state.ingest_db)) as db:
        stored = [r[0] for r in db.execute("SELECT release_id FROM releases WHERE received_at <= ?", (stopped_wall,))]
    released = {span[0] for span in spans}
    overlapping = sum(
        1
        for i, a in enumerate(spans)
        for b in spans[i + 1 :]
        if a[1:5] == b[1:5] and not (a[6] <= b[5] or b[6] <= a[5])
    )
    key = load_key_file(state.path / "pki" / "audit.key")
    audit_dir = state.path / STATE_STORES["audit"]
    audited = sorted(
        (e["data"]["instance"], e["data"]["configuration"], e["data"]["epsilon"])
        for e in entries_of(AuditLog(audit_dir, key), {AUDIT_CHARGE_EVENT})
    )
    verdict = verify(audit_dir, key)
    return {
        "released": len(released),
        "in_ingest": len(stored),
        "still_queued": len(queued),
        "in_ingest_and_queued": len(set(stored) & queued),
        "restored_keys_without_values": len(restored - set(stored)),
        "lost": len(released - set(stored) - queued - restored),
        "invented": len(set(stored) - released),
        "stored_twice": len(stored) - len(set(stored)),
        "spans_released_twice": overlapping,
        "charges": len(charges),
        "charges_not_audited": len(set(charges) - set(audited)),
        "ledger_equals_audit_log": charges == audited,
        "audit_log_ok": verdict.ok,
        "audit_log": str(verdict),
    }
