"""Running the whole graph with `privacy-vision run` while watching its topics (test_graph.py, test_isolation.py)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from testkit.core import REPO, free_domain_id
from testkit.ros import RosProbe


def run_graph(tmp: Path, source: str, extra: list[str], probe_domain: int | None = None):
    """Run `privacy-vision run` in a subprocess, watching its topics from this process meanwhile."""
    domain = probe_domain or free_domain_id()
    command = [
        sys.executable,
        "-m",
        "privacy_vision.cli",
        "run",
        "--source",
        source,
        "--var-dir",
        str(tmp / "var"),
        "--domain-id",
        str(domain),
        "--quiet",
        *extra,
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    probe = RosProbe(domain)
    try:
        while process.poll() is None:
            probe.watch_topics()
            probe.spin_for(0.2)
        output = process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
        probe.close()
    return process.returncode, output, probe


@contextmanager
def serving_graph(tmp: Path, video: Path, capture: str = "camera") -> Iterator[dict]:
    """The whole graph on the PETS video, looping, releasing every 4 s, until the block ends (the graph that the ROS
    tools' and rqt's tests inspect): yields its folder, domain, state folder and log."""
    domain = free_domain_id()
    log = tmp / "run.log"
    command = [sys.executable, "-m", "privacy_vision.cli", "run", "--source", str(video), "--capture", capture]
    command += ["--var-dir", str(tmp / "var"), "--domain-id", str(domain), "--quiet", "--fps", "10"]
    command += ["--set", "camera.loop=true", "--set", "anonymizer.window_s=4", "--set", "aggregator.k=1"]
    process = subprocess.Popen(command, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not released(tmp / "var") and time.monotonic() < deadline and process.poll() is None:
            time.sleep(1)
        assert released(tmp / "var"), log.read_text()[-4000:]
        yield {"tmp": tmp, "domain": str(domain), "var": tmp / "var", "log": log, "capture": capture}
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)


def released(var: Path) -> bool:
    try:
        return bool(stored_releases(var))
    except sqlite3.Error:
        return False


def stored_releases(var: Path) -> list[dict]:
    with sqlite3.connect(str(var / "ingest.sqlite")) as db:
        return [json.loads(row[0]) for row in db.execute("SELECT body FROM releases")]
