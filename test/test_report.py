"""What `privacy-vision run` prints, from made-up reports and releases (no ROS): frame counts compared at one
instant, silent nodes shown as silent, and a summary whose every value carries the interval of the one function."""

from __future__ import annotations

from pathlib import Path

from privacy_vision.core.intervals import format_value, release_intervals
from privacy_vision.core.release_schema import example_release
from privacy_vision.report import FrameCounts, Report, counter_at, format_summary, frame_counts, progress_text


def reports(node: str, samples: list[tuple[float, dict]]) -> list[Report]:
    return [Report(t, {k: str(v) for k, v in values.items()}) for t, values in samples]


def test_counters_are_interpolated_between_reports():
    samples = reports("camera", [(10.0, {"frames": 100}), (11.0, {"frames": 120})])
    assert counter_at(samples, "frames", 10.5) == 110
    assert counter_at(samples, "frames", 9.0) == 100 and counter_at(samples, "frames", 12.0) == 120


def test_frames_read_and_inferred_are_compared_at_one_instant():
    """The camera reported at .9 s, the detector at .2 s: raw, the detector would read ahead of the camera
    (what the old line showed: 'frames 642 | processed 651'); at one instant, nothing is dropped."""
    camera = reports("camera", [(t + 0.9, {"frames": 20 * (t + 1), "dropped_behind_pace": 0}) for t in range(5)])
    detection = reports("detection", [(t + 0.2, {"frames": 20 * t + 6}) for t in range(1, 6)])
    counts = frame_counts({"camera": camera, "detection": detection}, "camera")
    assert counts.read >= counts.inferred and counts.dropped == 0
    assert abs(counts.fps - 20.0) < 0.01
    # a detector that falls behind: what it did not infer beyond the frames in flight is dropped
    slow = reports("detection", [(t + 0.2, {"frames": 5 * t}) for t in range(1, 6)])
    behind = frame_counts({"camera": camera, "detection": slow}, "camera")
    assert behind.dropped == behind.read - behind.inferred - 2 > 50
    # once the graph has stopped nothing is in flight: read = inferred + dropped exactly
    final = frame_counts({"camera": camera, "detection": slow}, "camera", final=True)
    assert final.read == final.inferred + final.dropped


def test_in_process_capture_counts_come_from_the_detection_node():
    detection = reports("detection", [(1.0, {"frames": 40, "source_frames_dropped_behind_pace": 3})])
    assert frame_counts({"detection": detection}, "in_process") == FrameCounts(43, 40, 3, 0.0)


def test_a_silent_node_is_shown_silent_not_frozen():
    """The detector's timer starved for 20-30 s once while frames kept flowing: its count looked live."""
    now = 100.0
    camera = reports("camera", [(now - 0.5, {"frames": 900})])
    detection = reports("detection", [(now - 25.0, {"frames": 39, "backend": "hog"})])
    line = progress_text({"camera": camera, "detection": detection}, "camera", now_s=now)
    assert "hog (no report for 25 s)" in line
    assert "no report" not in progress_text({"camera": camera, "detection": camera}, "camera", now_s=now)
    assert "detector (starting)" in progress_text({"camera": camera}, "camera", now_s=now)


def test_the_summary_shows_each_value_with_the_interval_of_the_one_function(tmp_path):
    windows = [example_release("plaza_west", 1_789_344_000.0 + 20 * i, window_s=20.0) for i in range(6)]
    windows[2] = example_release("plaza_west", 1_789_344_040.0, window_s=20.0, below_k=True)
    hour = example_release("plaza_west", 1_789_344_000.0, tier="hour", window_s=20.0)
    day = example_release("plaza_west", 1_789_344_000.0, tier="day", window_s=20.0)
    text = format_summary([*windows, hour, day], Path("var/ingest.sqlite"), FrameCounts(795, 794, 1, 20.0), "cmd")
    assert "Frames: 795 read, 794 inferred, 1 dropped (0.1%)." in text
    assert format_value(release_intervals(windows[-1])["occupancy"]) in text and "~" in text
    assert "(last 4 of 6 windows; 1 < k)" in text and "20 s windows" in text
    assert f"occupancy, hour 00:00     {format_value(release_intervals(hour)['occupancy'])}" in text
    assert f"footfall, day 2026-09-14   {format_value(release_intervals(day)['footfall'])}" in text
    for meaning in ("occupancy  people present on average", "headings   of those", "footfall   distinct stitched"):
        assert meaning in text
    assert text.splitlines()[-1] == "Open the dashboard on this run: cmd"
    assert "< k" in text and "k = 5" in text
