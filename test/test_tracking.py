"""ByteTrack-class tracker: states, ID stability, floor positions and velocity."""

from __future__ import annotations

import numpy as np
import pytest

from privacy_vision.core.geometry import Homography
from privacy_vision.core.tracking import BACKEND_SCORE_THRESHOLDS, ByteTracker, TrackerSettings, TrackState

PIXELS_PER_METRE = 100.0
HOMOGRAPHY = Homography(np.diag([1 / PIXELS_PER_METRE, 1 / PIXELS_PER_METRE, 1.0]))


def box_at(x: float, y: float) -> list[float]:
    return [x - 20, y - 80, x + 20, y]  # foot point at (x, y)


def test_a_walking_person_keeps_one_id_and_gets_floor_velocity():
    tracker = ByteTracker(TrackerSettings(), HOMOGRAPHY)
    states = []
    for frame in range(30):
        tracks = tracker.update(frame * 0.1, np.array([box_at(100 + 10 * frame, 300)]), np.array([0.9]))
        states.append(tracks[0].state)
    assert {t.track_id for t in tracker.tracks} == {1}
    hits = TrackerSettings().min_hits
    assert states[hits - 2] == TrackState.TENTATIVE and states[hits - 1] == TrackState.CONFIRMED
    (track,) = tracker.tracks
    assert track.floor_xy == pytest.approx((3.9, 3.0), abs=0.05)
    assert track.floor_velocity == pytest.approx((1.0, 0.0), abs=0.05)  # 10 px/frame at 10 fps = 1 m/s


def test_a_single_flash_never_becomes_confirmed():
    tracker = ByteTracker(TrackerSettings(), HOMOGRAPHY)
    tracker.update(0.0, np.array([box_at(100, 300)]), np.array([0.9]))
    assert tracker.update(0.1, np.zeros((0, 4)), np.zeros(0)) == []


def test_low_score_boxes_keep_a_track_alive_through_occlusion():
    tracker = ByteTracker(TrackerSettings(), HOMOGRAPHY)
    for frame in range(6):
        tracker.update(frame * 0.1, np.array([box_at(100 + 5 * frame, 300)]), np.array([0.9]))
    for frame in range(6, 11):  # partially occluded: the detector is unsure
        tracks = tracker.update(frame * 0.1, np.array([box_at(100 + 5 * frame, 300)]), np.array([0.3]))
        assert tracks[0].state == TrackState.CONFIRMED and tracks[0].track_id == 1


def test_a_lost_track_is_recovered_then_dropped_after_its_buffer():
    tracker = ByteTracker(TrackerSettings(track_buffer_s=1.0), HOMOGRAPHY)
    for frame in range(6):
        tracker.update(frame * 0.1, np.array([box_at(200, 300)]), np.array([0.9]))
    tracker.update(0.6, np.zeros((0, 4)), np.zeros(0))
    assert tracker.tracks[0].state == TrackState.LOST
    tracks = tracker.update(0.7, np.array([box_at(201, 300)]), np.array([0.9]))
    assert tracks[0].track_id == 1 and tracks[0].state == TrackState.CONFIRMED
    for frame in range(8, 30):
        tracker.update(frame * 0.1, np.zeros((0, 4)), np.zeros(0))
    assert tracker.tracks == []


def test_a_lost_track_is_found_again_on_the_floor_after_a_long_gap():
    tracker = ByteTracker(TrackerSettings(), HOMOGRAPHY)
    for frame in range(10):  # walking right at 1 m/s
        tracker.update(frame * 0.1, np.array([box_at(100 + 10 * frame, 300)]), np.array([0.9]))
    for frame in range(10, 18):  # missed for 0.8 s: IoU with the stale box is zero by then
        tracker.update(frame * 0.1, np.zeros((0, 4)), np.zeros(0))
    tracks = tracker.update(1.8, np.array([box_at(100 + 10 * 18, 300)]), np.array([0.9]))
    assert [t.track_id for t in tracks] == [1] and tracks[0].state == TrackState.CONFIRMED
    far = ByteTracker(TrackerSettings(), HOMOGRAPHY)
    for frame in range(10):
        far.update(frame * 0.1, np.array([box_at(100 + 10 * frame, 300)]), np.array([0.9]))
    far.update(1.0, np.zeros((0, 4)), np.zeros(0))
    tracks = far.update(1.1, np.array([box_at(700, 300)]), np.array([0.9]))  # 5 m away: someone else
    assert {t.track_id for t in tracks} == {1, 2}


def test_two_people_crossing_apart_keep_distinct_ids():
    tracker = ByteTracker(TrackerSettings(), HOMOGRAPHY)
    for frame in range(20):
        boxes = np.array([box_at(100 + 8 * frame, 300), box_at(600 - 8 * frame, 500)])
        tracker.update(frame * 0.1, boxes, np.array([0.9, 0.8]))
    assert sorted(t.track_id for t in tracker.tracks) == [1, 2]
    velocities = sorted(t.floor_velocity[0] for t in tracker.tracks)
    assert velocities == pytest.approx([-0.8, 0.8], abs=0.05)


def _confirmed_after_walk(settings: TrackerSettings, score: float, backend: str) -> int:
    tracker = ByteTracker(settings, HOMOGRAPHY)
    for frame in range(10):
        tracks = tracker.update(frame * 0.1, np.array([box_at(100 + 5 * frame, 300)]), np.array([score]), backend)
    return sum(t.state == TrackState.CONFIRMED for t in tracks)


@pytest.mark.parametrize("backend", sorted(BACKEND_SCORE_THRESHOLDS))
def test_each_backend_starts_tracks_on_its_own_score_scale(backend):
    _, new_track = BACKEND_SCORE_THRESHOLDS[backend]
    assert _confirmed_after_walk(TrackerSettings(), min(1.0, new_track + 0.01), backend) == 1
    assert _confirmed_after_walk(TrackerSettings(), new_track - 0.01, backend) == 0


def test_the_ssd_scale_gets_tracks_where_yolox_thresholds_would_give_none():
    ssd_new = BACKEND_SCORE_THRESHOLDS["tflite"][1]
    typical_ssd_score = ssd_new + 0.02
    assert typical_ssd_score < BACKEND_SCORE_THRESHOLDS["yolox"][1]  # the bug: the SSD fallback confirmed nothing
    assert _confirmed_after_walk(TrackerSettings(), typical_ssd_score, "yolox") == 0
    assert _confirmed_after_walk(TrackerSettings(), typical_ssd_score, "tflite") == 1


def test_explicit_thresholds_override_the_backend_and_unknown_backends_need_them():
    settings = TrackerSettings(track_thresh=0.3, new_track_thresh=0.35)
    assert settings.score_thresholds("yolox") == settings.score_thresholds("a-custom-detector") == (0.3, 0.35)
    assert TrackerSettings(new_track_thresh=0.95).score_thresholds("yolox") == (
        BACKEND_SCORE_THRESHOLDS["yolox"][0],
        0.95,
    )
    with pytest.raises(ValueError, match="a-custom-detector"):
        ByteTracker(TrackerSettings(), HOMOGRAPHY).update(
            0.0, np.array([box_at(100, 300)]), np.array([0.9]), "a-custom-detector"
        )


@pytest.mark.parametrize(
    "changes",
    [
        {"track_thresh": 0.05, "low_thresh": 0.1},
        {"new_track_thresh": 1.5},
        {"min_hits": 0},
        {"match_iou": 1.5},
        {"low_thresh": 0.99},
    ],
)
def test_bad_settings_are_rejected(changes):
    with pytest.raises(ValueError):
        ByteTracker(TrackerSettings(**changes), HOMOGRAPHY)
