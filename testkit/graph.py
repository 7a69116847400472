"""Running the whole graph with `privacy-vision run` while watching its topics (test_graph.py, test_isolation.py)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
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


def stored_releases(var: Path) -> list[dict]:
    with sqlite3.connect(str(var / "ingest.sqlite")) as db:
        return [json.loads(row[0]) for row in db.execute("SELECT body FROM releases")]
