"""The ROS user's own tools against a running graph (`privacy-vision run`): `privacy-vision record` writes an MCAP file
that mcap-ros2-support reads back, with only the allowed topics, and refuses pixels, detections, tracks and true totals;
per-person recordings need --per-person, are audit-logged and deleted after their retention; the DPIA lists the
recordings; `privacy-vision foxglove` serves the same topics on loopback to a Foxglove WebSocket client; a late
subscriber gets the latched /zone_analytics at once."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from privacy_vision.core.graph import RECORD_NEVER, TOPICS, recordable
from privacy_vision.core.recordings import recordings
from testkit.core import REPO
from testkit.graph import serving_graph, stored_releases

pytestmark = pytest.mark.graph
ALLOWED = {topic.name for topic in recordable()}
REFUSED_TYPES = {topic.type for topic in TOPICS if topic.recording == RECORD_NEVER}


def cli(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "privacy_vision.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout_s
    )
    result.output = result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def graph(tmp_path_factory, vtest_video):
    """The whole graph (camera capture) on the PETS video, until the module's tests are done."""
    with serving_graph(tmp_path_factory.mktemp("rostools"), vtest_video) as running:
        yield running


def read_mcap(path: Path) -> tuple[dict[str, str], dict[str, list]]:
    """Schema name per topic, and the decoded messages per topic."""
    types, messages = {}, {}
    with open(path, "rb") as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        for schema, channel, _, decoded in reader.iter_decoded_messages():
            types[channel.topic] = schema.name
            messages.setdefault(channel.topic, []).append(decoded)
    return types, messages


def test_record_takes_only_what_may_leave_the_device_and_the_dpia_lists_it(graph):
    out = graph["tmp"] / "default.mcap"
    # Cells the ingest holds were published before the recorder starts (a window may close up to a tick before its
    # nominal end, so period_end_s says nothing about when it was published).
    published_before = {(r["zone_id"], r["tier"], r["period_start_s"]) for r in stored_releases(graph["var"])}
    result = cli(
        "record", "--domain-id", graph["domain"], "--var-dir", str(graph["var"]), "--out", str(out), "--duration", "15"
    )
    assert result.returncode == 0, result.output
    types, messages = read_mcap(out)
    assert set(types) == ALLOWED == {"/zone_analytics", "/diagnostics", "/tf_static"}, types
    (static,) = messages["/tf_static"]  # latched: published once at the tracking node's start, before the recorder
    assert [(t.header.frame_id, t.child_frame_id) for t in static.transforms] == [("floor", "camera")]
    assert not set(types.values()) & REFUSED_TYPES
    analytics = messages["/zone_analytics"]
    assert analytics and all(m.privacy.mechanism for m in analytics), len(analytics)
    # Latched: releases made before the recorder joined arrived at once.
    recorded = {(m.zone_id, m.tier, m.period_start_s) for m in analytics}
    assert recorded & published_before, (sorted(published_before), sorted(recorded))
    assert len(messages["/diagnostics"]) > 10
    counts = {t: len(m) for t, m in messages.items()}
    assert f"/zone_analytics {counts['/zone_analytics']} messages" in result.output, (counts, result.output)
    entry = next(e for e in recordings(graph["var"] / "audit") if e.path == str(out))
    assert entry.messages == sum(counts.values()) and not entry.per_person and entry.expires_at is None
    dpia = cli("dpia", "--var-dir", str(graph["var"])).output
    assert f"- {out}: /zone_analytics, /diagnostics, /tf_static; kept until no limit" in dpia, dpia


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("/camera/image_raw", "is never recorded"),
        ("/detections", "is never recorded"),
        ("/tracks", "is never recorded"),
        ("/cell_totals", "not a topic of the privacy_vision graph"),  # true totals travel by a service only
        ("/anonymized_tracks", "record it only with --per-person"),
        ("/somewhere_else", "not a topic of the privacy_vision graph"),
    ],
)
def test_record_refuses_pixels_boxes_tracks_true_totals_and_unflagged_per_person_topics(graph, topic, reason):
    out = graph["tmp"] / f"refused-{topic.strip('/')}.mcap"
    result = cli("record", "--domain-id", graph["domain"], "--var-dir", str(graph["var"]), "--topic", topic)
    assert result.returncode != 0 and reason in result.output, result.output
    assert not out.exists()


def test_per_person_recording_is_audit_logged_and_deleted_after_its_retention(graph):
    out = graph["tmp"] / "per-person.mcap"
    result = cli(
        "record",
        *("--domain-id", graph["domain"], "--var-dir", str(graph["var"]), "--out", str(out)),
        *("--topic", "/anonymized_tracks", "--per-person", "--retention-hours", "0.002", "--duration", "8"),
    )
    assert result.returncode == 0, result.output
    types, messages = read_mcap(out)
    assert set(types) == {"/anonymized_tracks"} and messages["/anonymized_tracks"], types
    entry = next(e for e in recordings(graph["var"] / "audit") if e.path == str(out))
    assert entry.per_person and entry.expires_at is not None
    dpia = json.loads(cli("dpia", "--var-dir", str(graph["var"]), "--format", "json").stdout)
    assert any(r["setting"] == "recording" and r["value"] == str(out) for r in dpia["risks"]), dpia["risks"]
    time.sleep(max(0.0, entry.expires_at - time.time()) + 0.5)
    result = cli(
        "record",
        "--domain-id",
        graph["domain"],
        "--var-dir",
        str(graph["var"]),
        "--duration",
        "1",
        "--out",
        str(graph["tmp"] / "after.mcap"),
    )
    assert f"deleted {out} (its retention limit has passed)" in result.output, result.output
    assert not out.exists()
    assert next(e for e in recordings(graph["var"] / "audit") if e.path == str(out)).deleted


async def foxglove_session(url: str, topic: str, timeout_s: float) -> tuple[list[dict], bytes | None]:
    """A Foxglove WebSocket client: the advertised channels, then one message of `topic` after subscribing."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, protocols=["foxglove.sdk.v1", "foxglove.websocket.v1"]) as ws,
    ):
        channels: list[dict] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = await ws.receive(timeout=timeout_s)
            if message.type == aiohttp.WSMsgType.TEXT:
                body = json.loads(message.data)
                if body.get("op") == "advertise":
                    channels += body["channels"]
                    wanted = [c for c in channels if c["topic"] == topic]
                    if wanted:
                        subscribe = {"op": "subscribe", "subscriptions": [{"id": 7, "channelId": wanted[0]["id"]}]}
                        await ws.send_str(json.dumps(subscribe))
            elif message.type == aiohttp.WSMsgType.BINARY and message.data[0] == 0x01:
                subscription = struct.unpack_from("<I", message.data, 1)[0]
                assert subscription == 7
                return channels, message.data[13:]
            elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
        return channels, None


def test_foxglove_serves_the_allowed_topics_on_loopback_to_a_protocol_client(graph):
    log = graph["tmp"] / "foxglove.log"
    command = [sys.executable, "-m", "privacy_vision.cli", "foxglove", "--domain-id", graph["domain"]]
    command += ["--var-dir", str(graph["var"]), "--port", "0"]
    process = subprocess.Popen(command, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (match := re.search(r"on ws://127\.0\.0\.1:(\d+)", log.read_text())) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert match, log.read_text()
        port = int(match.group(1))
        listening = Path("/proc/net/tcp").read_text()
        assert f"0100007F:{port:04X}" in listening and f"00000000:{port:04X}" not in listening  # loopback only
        channels, payload = asyncio.run(foxglove_session(f"ws://127.0.0.1:{port}", "/zone_analytics", 60.0))
        assert {c["topic"] for c in channels} == ALLOWED, channels
        for channel in channels:
            assert channel["encoding"] == "cdr" and channel["schemaEncoding"] == "ros2msg", channel
        assert {c["schemaName"] for c in channels} == {t.type for t in recordable()}
        assert payload, "no /zone_analytics message served"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert "Traceback" not in log.read_text(), log.read_text()
