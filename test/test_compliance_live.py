"""Compliance against the running graph: live DPIA follows a parameter change, data-subject requests and
forget through the services, then the audit log verifies, holds no per-person fields, and one edited
byte makes `audit verify` fail at that entry."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from testkit.core import REPO, free_domain_id
from testkit.ros import ParameterClient, RosProbe

pytestmark = pytest.mark.graph
FORBIDDEN = (
    "box",
    "bbox",
    "x_m",
    "y_m",
    "cell_x_m",
    "cell_y_m",
    "position",
    "track_id",
    "privacy_id",
    "pixels",
    "image",
)


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "privacy_vision.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_live_compliance_and_audit_trail(tmp_path, vtest_video):
    domain = free_domain_id()
    var = tmp_path / "var"
    # The video loops until the test has finished talking to the graph, then Ctrl-C stops it in order.
    graph = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "privacy_vision.cli",
            "run",
            "--source",
            str(vtest_video),
            "--fps",
            "10",
            "--var-dir",
            str(var),
            "--domain-id",
            str(domain),
            "--quiet",
            "--duration",
            "240",
            "--set",
            "anonymizer.window_s=10",
            "--set",
            "camera.loop=true",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    probe = RosProbe(domain)
    try:
        params = ParameterClient(probe, "aggregator")
        probe.spin_for(4.0)  # frames flowing, diagnostics carrying every node's settings
        first = json.loads(cli("dpia", "--domain-id", str(domain), "--format", "json").stdout)
        assert first["configuration_source"] == "live" and first["privacy_guarantee"]["k"]["k"] == 5
        assert (
            "/camera/image_raw" in first["data_flows"]["topics"] and first["data_flows"]["uplink_pins_configured"] == 2
        )
        assert first["risks"] == []
        assert params.set("k", 3).successful
        probe.spin_for(1.5)
        changed = cli("dpia", "--domain-id", str(domain)).stdout
        assert "k = 3:" in changed and "not k-anonymity" in changed  # a display rule: the DPIA says so
        assert params.set("epsilon_per_presence_hour", 8.0).successful
        probe.spin_for(1.5)
        weak = cli("dpia", "--domain-id", str(domain)).stdout
        assert "ε = 8 per presence-hour" in weak and "| aggregator.epsilon_per_presence_hour | 8.0 | high |" in weak

        access = json.loads(
            cli(
                "dsr",
                "--type",
                "access",
                "--request-id",
                "REQ-ACCESS-1",
                "--domain-id",
                str(domain),
                "--var-dir",
                str(var),
                "--audit-key",
                str(var / "pki/audit.key"),
            ).stdout
        )
        assert set(access["live_state"]) == {"detection", "tracking", "anonymizer", "aggregator"}
        assert all("status" not in answer for answer in access["live_state"].values()), access
        assert access["live_state"]["tracking"]["holds_personal_data"] is True
        erasure = json.loads(
            cli(
                "dsr",
                "--type",
                "erasure",
                "--request-id",
                "REQ-ERASE-1",
                "--domain-id",
                str(domain),
                "--var-dir",
                str(var),
                "--audit-key",
                str(var / "pki/audit.key"),
            ).stdout
        )
        assert erasure["live_state"]["anonymizer"]["purged"]["key_rotated"] is True
        assert "tracks_purged" in erasure["live_state"]["tracking"]["purged"]
        assert "no record in them refers to a person" in erasure["not_erasable"]
        assert 'anonymizer: {"key_rotated": true' in cli("forget", "--domain-id", str(domain)).stdout
        probe.spin_for(11.0)  # at least one full 10 s window is released after the changes
    finally:
        probe.close()
        graph.send_signal(signal.SIGINT)
        output = graph.communicate(timeout=180)[0]
    assert graph.returncode == 130 and "stopping the graph in pipeline order" in output, output

    verify = cli("audit", "verify", "--dir", str(var / "audit"), "--key", str(var / "pki/audit.key"))
    assert "audit log OK" in verify.stdout
    entries = [
        json.loads(line)
        for path in sorted((var / "audit").glob("audit-*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    events = {e["event"] for e in entries}
    assert {
        "frames",
        "release_sent",
        "parameter_changed",
        "data_subject_request",
        "forget_request",
        "dpia_generated",
        "release_recorded",
        "budget_charged",
    } <= events, events
    change = next(e for e in entries if e["event"] == "parameter_changed")
    assert (change["data"]["parameter"], change["data"]["old"], change["data"]["new"]) == ("k", 5, 3)
    # Finding 9: a start-time override (--set anonymizer.window_s=10) is in the audit log, with a digest of all settings.
    started = {e["source"]: e["data"] for e in entries if e["event"] == "configuration_at_start"}
    assert {"camera", "detection", "tracking", "anonymizer", "aggregator", "uplink"} <= set(started), set(started)
    assert started["anonymizer"]["parameters"]["window_s"] == 10.0 and started["aggregator"]["parameters"]["k"] == 5
    assert all(
        len(data["all_parameters_sha256"]) == 64 and data["parameter_count"] > len(data["parameters"])
        for data in started.values()
    )
    assert any(e["event"] == "data_subject_request" and e["data"].get("request_id") == "REQ-ERASE-1" for e in entries)
    sent = [e for e in entries if e["event"] == "release_sent"]
    assert sent and all(
        {"zone", "tier", "kind", "mechanism", "epsilon_cell", "epsilon_unit", "k"} <= set(e["data"]) for e in sent
    )
    # every release sent was recorded (with its span) by the aggregator first, and its charge is audited too
    recorded = {e["data"]["release_id"] for e in entries if e["event"] == "release_recorded"}
    assert {e["data"]["release_id"] for e in sent} <= recorded

    def keys(value):
        if isinstance(value, dict):
            for key, inner in value.items():
                yield key
                yield from keys(inner)
        elif isinstance(value, list):
            for inner in value:
                yield from keys(inner)

    assert not {k for e in entries for k in keys(e["data"])} & set(FORBIDDEN)

    log_file = sorted((var / "audit").glob("audit-*.jsonl"))[0]
    raw = bytearray(log_file.read_bytes())
    third_line_start = raw.index(b"\n", raw.index(b"\n") + 1) + 1
    position = raw.index(b'"event":"', third_line_start) + len(b'"event":"')
    raw[position] = ord("X") if raw[position] != ord("X") else ord("Y")
    log_file.write_bytes(bytes(raw))
    broken = cli("audit", "verify", "--dir", str(var / "audit"), "--key", str(var / "pki/audit.key"), check=False)
    assert broken.returncode == 1 and f"{log_file.name}:3: HMAC mismatch" in broken.stdout, broken.stdout
