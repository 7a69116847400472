"""The whole graph as separate processes: analytics reach the ingest over TLS, pixels stay on one link."""

from __future__ import annotations

import itertools
import re

import pytest

from privacy_vision.core import graph
from privacy_vision.core.intervals import format_value, release_intervals
from testkit.core import REPO
from testkit.graph import run_graph, stored_releases
from testkit.ros import pixel_like_fields

pytestmark = pytest.mark.graph
IMAGE_TYPE = "sensor_msgs/msg/Image"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, vtest_video):
    tmp = tmp_path_factory.mktemp("graph")
    code, output, probe = run_graph(
        tmp,
        str(vtest_video),
        [
            "--max-frames",
            "100",
            "--fps",
            "20",
            "--set",
            "anonymizer.window_s=4",
            "--set",
            "aggregator.k=1",
            "--set",
            "aggregator.epsilon_per_presence_hour=4000.0",
            "--set",
            "aggregator.epsilon_events_per_track_day=40.0",
            "--set",
            "aggregator.daily_epsilon_cap=400.0",
        ],
    )  # large ε: values checkable
    return code, output, probe, tmp / "var"


def test_analytics_reach_the_ingest_over_tls(demo_run):
    code, output, _, var = demo_run
    assert code == 0, output
    releases = stored_releases(var)
    assert releases, output
    zones = {r["zone_id"] for r in releases} - {"site"}
    assert zones == {"plaza_west", "plaza_centre", "plaza_east"}
    assert {(r["kind"], r["tier"]) for r in releases if r["zone_id"] == "site"} == {("events", "day")}
    for release in releases:
        unit = {"presence": ("presence-hour", 4000.0), "events": ("stitched-track-day", 40.0)}[release["kind"]]
        assert (release["privacy_unit"], release["epsilon_unit"]) == (unit[0], pytest.approx(unit[1]))
        assert release["mechanism"] == "discrete_laplace" and release["k"] == 1 and release["window_s"] == 4.0
        assert sum(release["epsilon_by_metric"].values()) == pytest.approx(release["epsilon_cell"])
        for value in release["values"].values():  # every value carries its interval
            assert value["low"] <= max(value["value"], 0.0) <= value["high"] or value["high"] == 0.0
    # every cell of the public grid is released, empty ones included: each zone has its hour and day cells
    assert {(r["zone_id"], r["kind"], r["tier"]) for r in releases if r["tier"] != "window"} >= {
        (z, kind, t) for z in zones for kind, t in (("presence", "hour"), ("presence", "day"), ("events", "day"))
    }
    # the summary: frames, every value with its interval from the one function, what each metric means, the dashboard
    assert re.search(r"Frames: 100 read, (\d+) inferred, (\d+) dropped", output), output
    assert f"Released by this run and stored by the ingest: {len(releases)} releases of 4 zones" in output
    for release in (r for r in releases if r["tier"] == "day" and not r["below_k"]):
        name = "footfall" if release["kind"] == "events" else "occupancy"
        assert format_value(release_intervals(release)[name]) in output
    assert "occupancy  people present on average" in output
    assert output.rstrip().endswith(
        f"Open the dashboard on this run: .venv/bin/privacy-vision dashboard --var-dir {var}"
    )
    assert any(r["kind"] == "presence" and r["values"]["occupancy"]["low"] > 0 for r in releases), releases
    uplink_log = next((var / "logs").glob("*/uplink.log")).read_text()
    assert "sending to https://127.0.0.1:" in uplink_log
    # the read side is open to the runner's analyst token only, and the runner says where it is
    assert "dashboard while the graph runs: https://127.0.0.1:" in output and "analyst-analyst.token" in output
    assert (var / "pki" / "analyst-analyst.token").read_text().startswith("pva_")
    ingest_log = next((var / "logs").glob("*/ingest.log")).read_text()
    assert "read API and dashboard: https://" in ingest_log
    # finding 7: the runner's device posts with its own key (no registration: runtime changes stay possible)
    assert "admitting 1 devices (0 with a registered privacy configuration)" in ingest_log
    assert (var / "pki" / "devices" / "device-1.key").read_text() != (var / "pki" / "device.key").read_text()


def test_the_running_graph_is_the_one_described(demo_run):
    """Every topic of the graph description (core/graph.py) exists with its type; only the camera topic carries images."""
    _, _output, probe, _ = demo_run
    image_topics = {topic for topic, types in probe.topic_types.items() if IMAGE_TYPE in types}
    assert image_topics == {"/camera/image_raw"}, probe.topic_types
    for topic in graph.topics("camera"):
        assert probe.topic_types.get(topic.name) == {topic.type}, (topic.name, sorted(probe.topic_types))
    assert graph.DIAGNOSTICS_TOPIC in probe.topic_types


def test_no_message_after_detection_holds_pixel_data(demo_run):
    _, _, probe, _ = demo_run
    checked = 0
    for topic, messages in probe.received.items():
        for message in messages:
            assert not pixel_like_fields(message), (topic, pixel_like_fields(message))
            checked += 1
    assert len(probe.received.get("/detections", [])) > 10
    assert len(probe.received.get("/anonymized_tracks", [])) > 10
    assert checked > 50


def test_anonymized_topic_carries_no_tracker_ids_or_speed(demo_run):
    _, _, probe, _ = demo_run
    tracks = [t for m in probe.received["/anonymized_tracks"] for t in m.tracks]
    assert tracks
    for track in tracks:
        assert set(track.get_fields_and_field_types()) == {
            "privacy_id",
            "cell_x_m",
            "cell_y_m",
            "size_category",
            "direction",
        }
        assert len(track.privacy_id) == 32
        assert (track.cell_x_m / 0.25) % 2 == pytest.approx(1.0)  # a 0.5 m cell centre
    for message in probe.received["/anonymized_tracks"]:
        assert message.header.stamp.nanosec == 0 and message.header.stamp.sec % 5 == 0  # rounded to 5 s


def test_in_process_capture_has_no_image_topic_at_all(tmp_path, vtest_video):
    """One argument: the detection node reads the video itself; no camera node, no sensor_msgs/Image anywhere."""
    code, output, probe = run_graph(
        tmp_path, str(vtest_video), ["--capture", "in_process", "--max-frames", "60", "--fps", "20"]
    )
    assert code == 0, output
    assert "(in_process capture)" in output
    assert not [topic for topic, types in probe.topic_types.items() if IMAGE_TYPE in types], probe.topic_types
    assert "/camera/image_raw" not in probe.topic_types
    logs = next((tmp_path / "var" / "logs").glob("*"))
    assert not (logs / "camera.log").exists()
    detection_log = (logs / "detection.log").read_text()
    assert "in-process capture of a file source: no image topic" in detection_log
    # every source frame was inferred or, when inference fell a period behind the pace, dropped and counted; how many
    # of each depends on the machine's load (42 of 60 were inferred on a busy one), so only the sum is asserted
    assert frames_accounted_for(detection_log) == 60, detection_log[-2000:]
    assert probe.received.get("/detections") and probe.received.get("/anonymized_tracks")  # the pipeline ran


def frames_accounted_for(log: str) -> int:
    """Frames the source delivered plus those dropped behind its pace, from its end-of-stream line."""
    match = re.search(r"end of stream after (\d+) frames \((\d+) dropped behind the source's pace", log)
    assert match, "no end-of-stream line"
    return int(match.group(1)) + int(match.group(2))


def test_strict_mode_releases_only_groups_and_restarts_them_through_the_analytics_topic(tmp_path, vtest_video):
    """Strict mode through the real nodes: group totals from the anonymizer, the sparse-vector test in the
    aggregator, the release read back by the anonymizer so that the next group starts where this one ended."""
    code, output, _probe = run_graph(
        tmp_path,
        str(vtest_video),
        [
            "--max-frames",
            "300",
            "--fps",
            "20",
            "--set",
            "anonymizer.window_s=2",
            "--set",
            "anonymizer.groups_per_day=3",
            "--set",
            "aggregator.mode=strict",
            "--set",
            "aggregator.k=2",
            "--set",
            "aggregator.strict_epsilon_per_track_day=300.0",
            "--set",
            "aggregator.daily_epsilon_cap=1000.0",
        ],
    )  # large ε: a margin of a few people, so the short clip fills groups
    assert code == 0, output
    releases = stored_releases(tmp_path / "var")
    assert releases and {r["tier"] for r in releases} == {"group"}, output
    for release in releases:
        assert release["mode"] == "strict" and release["mechanism"] == "sparse_vector+discrete_laplace"
        assert release["values"]["size"]["low"] >= 2 and release["kind"] == "group"
        assert release["delta"] == pytest.approx(1e-6) and release["epsilon_unit"] == pytest.approx(300.0)
    by_zone: dict[str, list[tuple[float, float]]] = {}
    for release in sorted(releases, key=lambda r: r["period_start_s"]):
        by_zone.setdefault(release["zone_id"], []).append((release["period_start_s"], release["period_end_s"]))
    # each zone's groups follow each other: the anonymizer restarted the group at the released end
    assert any(len(periods) > 1 for periods in by_zone.values()), by_zone
    for periods in by_zone.values():
        assert all(end == pytest.approx(next_start) for (_, end), (next_start, _) in itertools.pairwise(periods)), (
            periods
        )
    assert "strict mode:" in output


def test_missing_video_is_a_clear_error(tmp_path):
    code, output, _ = run_graph(tmp_path, str(tmp_path / "no-such-video.avi"), ["--max-frames", "10"])
    assert code != 0
    assert "neither an existing file or folder" in output
    assert "Traceback" not in output


def test_unreadable_video_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00AVI this is not a video")
    code, output, _ = run_graph(tmp_path, str(broken), ["--max-frames", "10"])
    assert code != 0
    assert "broken.avi" in output and ("cannot open" in output or "cannot read" in output)
    assert "Traceback" not in output


def test_empty_zones_file_stops_the_run_before_it_starts(tmp_path, vtest_video):
    """Once the graph ran on without the anonymizer; the configuration check now names the file before any start."""
    config = tmp_path / "config"
    config.mkdir()
    for name in ("params.yaml", "fastdds.xml", "homography_pets.yaml"):
        (config / name).write_text((REPO / "config" / name).read_text())
    (config / "zones.yaml").write_text("zones: []\n")
    code, output, probe = run_graph(
        tmp_path,
        str(vtest_video),
        ["--max-frames", "80", "--config-dir", str(config), "--set", f"anonymizer.zones_file={config / 'zones.yaml'}"],
    )
    assert code == 2, output
    line = next(line for line in output.splitlines() if "configuration error: node 'anonymizer'" in line)
    assert "no zones defined" in line and "nothing was started" in output
    assert not any(probe.received.values()), "no node ran"


def test_composed_graph_delivers_every_release_from_one_process(tmp_path, vtest_video):
    """--composed: the six nodes in one process on one executor; the source's end stops them in pipeline order in that
    process, and everything the aggregator released is in the ingest."""
    code, output, _probe = run_graph(
        tmp_path,
        str(vtest_video),
        [
            "--composed",
            "--max-frames",
            "60",
            "--fps",
            "20",
            "--set",
            "anonymizer.window_s=4",
            "--set",
            "aggregator.k=1",
        ],
    )
    assert code == 0, output
    assert "6 nodes in one process (composed)" in output
    logs = next((tmp_path / "var" / "logs").glob("*"))
    assert sorted(p.name for p in logs.glob("*.log")) == ["check.log", "composed.log", "ingest.log"]
    log = (logs / "composed.log").read_text()
    done = {
        m.group(2): (float(m.group(1)), m.group(3))
        for m in re.finditer(r"\[(\d+\.\d+)\] \[(\w+)\]: finalized: (.*)", log)
    }
    assert list(done) == list(graph.NODE_NAMES), log  # finalized in pipeline order
    assert [t for t, _ in done.values()] == sorted(t for t, _ in done.values())
    published = int(re.match(r"(\d+) releases published", done["aggregator"][1]).group(1))
    delivered = int(re.match(r"(\d+) releases delivered", done["uplink"][1]).group(1))
    assert published > 0 and published == delivered == len(stored_releases(tmp_path / "var")), (published, delivered)
    assert "Traceback" not in log and "Traceback" not in output
