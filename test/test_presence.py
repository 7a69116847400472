"""Presence weights: calibrated, monotone, in [0, 1] for every track in every state; start and count are separate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy_vision.core.geometry import Homography
from privacy_vision.core.presence import (
    CALIBRATION_FILE,
    MonotoneCurve,
    PresenceCurves,
    fit_monotone_curve,
    load_calibration,
)
from privacy_vision.core.tracking import BACKEND_SCORE_THRESHOLDS, ByteTracker, TrackerSettings, TrackState

HOMOGRAPHY = Homography(np.diag([0.01, 0.01, 1.0]))


def box_at(x: float, y: float = 300.0) -> list[float]:
    return [x - 20, y - 80, x + 20, y]


def is_monotone(values, increasing: bool) -> bool:
    steps = np.diff(values)
    return bool(np.all(steps >= 0) if increasing else np.all(steps <= 0))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1, allow_nan=False), st.booleans()), min_size=1, max_size=200),
    st.booleans(),
)
def test_the_fitted_curve_is_monotone_and_a_probability(samples, increasing):
    x = np.array([value for value, _ in samples])
    matched = np.array([hit for _, hit in samples], dtype=float)
    curve = fit_monotone_curve(x, matched, increasing=increasing)
    assert all(0.0 <= y <= 1.0 for y in curve.y)
    grid = np.linspace(-0.5, 1.5, 101)
    assert is_monotone(curve(grid), increasing)
    # Calibrated in total: over the samples the curve averages to the share matched (isotonic regression keeps it).
    assert np.mean(curve(np.round(x, 4))) == pytest.approx(matched.mean(), abs=1e-3)


def test_the_fit_recovers_a_known_probability():
    rng = np.random.default_rng(7)
    scores = rng.uniform(0, 1, 20000)
    matched = rng.uniform(0, 1, scores.size) < scores**2  # P(person | score) = score²
    curve = fit_monotone_curve(scores, matched)
    for score in (0.2, 0.5, 0.8):
        assert curve(score) == pytest.approx(score**2, abs=0.05)


def test_curves_refuse_what_is_not_a_monotone_probability():
    with pytest.raises(ValueError, match="monotone"):
        MonotoneCurve((0.1, 0.5, 0.9), (0.2, 0.8, 0.4))
    with pytest.raises(ValueError, match=r"y in \[0, 1\]"):
        MonotoneCurve((0.1, 0.9), (0.2, 1.2))
    with pytest.raises(ValueError, match="ascending"):
        MonotoneCurve((0.9, 0.1), (0.2, 0.4))


def test_the_shipped_calibration_is_monotone_and_says_where_it_came_from():
    document = json.loads(CALIBRATION_FILE.read_text())
    entry = document["backends"]["yolox"]
    assert entry["command"].startswith(".venv/bin/python bench/tune_tracker.py --backend yolox")
    assert set(entry["fitted_on"]) == {"PETS09-S2L1", "TUD-Campus"}
    assert (entry["thresholds"]["track_thresh"], entry["thresholds"]["new_track_thresh"]) == BACKEND_SCORE_THRESHOLDS[
        "yolox"
    ]
    curves = load_calibration()["yolox"]
    assert is_monotone(curves.detected_confirmed.y, True) and is_monotone(curves.detected_tentative.y, True)
    assert is_monotone(curves.lost.y, False)
    assert curves.lost(60.0) < curves.lost(0.0)  # a track lost for long stands for (almost) nobody


def test_a_broken_calibration_file_is_a_clear_error(tmp_path):
    broken = tmp_path / "presence_calibration.json"
    broken.write_text('{"backends": {"yolox": {"lost": {"x": [0, 1], "y": [0.5]}}}}')
    with pytest.raises(ValueError, match=f"{broken} is unreadable.*tune_tracker.py --write-calibration"):
        load_calibration(broken)


STEP = st.lists(
    st.tuples(st.floats(50, 700), st.floats(60, 500), st.floats(0.0, 1.0)), min_size=0, max_size=6
)  # (x, y, score) of the boxes of one frame


@settings(max_examples=40, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=25), st.sampled_from(["yolox", "tflite", "hog", "ultralytics"]))
def test_every_track_weight_lies_in_zero_one_whatever_the_detections(frames, backend):
    tracker = ByteTracker(TrackerSettings(), HOMOGRAPHY)
    calibrated = backend in tracker.presence
    for index, boxes in enumerate(frames):
        tracks = tracker.update(
            index * 0.1,
            np.array([box_at(x, y) for x, y, _ in boxes]).reshape(-1, 4),
            np.array([score for *_, score in boxes]),
            backend,
        )
        for track in tracks:
            assert 0.0 <= track.presence_weight <= 1.0
            if not calibrated:  # no curves for this backend: the count of old, confirmed tracks only
                assert track.presence_weight == float(track.state == TrackState.CONFIRMED)


def test_a_person_seen_only_at_low_scores_is_counted_but_never_confirmed():
    """Starting a track is not confirming it: a detection below new_track_thresh starts a tentative track that
    carries its calibrated weight, while confirmation (the MOT output) keeps ByteTrack's rule."""
    curves = PresenceCurves(
        detected_confirmed=MonotoneCurve((0.1, 0.9), (0.5, 1.0)),
        detected_tentative=MonotoneCurve((0.1, 0.9), (0.1, 0.9)),
        lost=MonotoneCurve((0.0, 1.0), (0.6, 0.0)),
    )
    tracker = ByteTracker(TrackerSettings(track_buffer_s=2.0), HOMOGRAPHY, presence={"yolox": curves})
    track_thresh, new_track_thresh = BACKEND_SCORE_THRESHOLDS["yolox"]
    low = (track_thresh + 0.1) / 2  # below both thresholds
    for frame in range(10):
        (track,) = tracker.update(frame * 0.1, np.array([box_at(100 + 5 * frame)]), np.array([low]))
        assert track.state == TrackState.TENTATIVE and track.track_id == 1
        assert track.presence_weight == pytest.approx(float(curves.detected_tentative(low)))
    for frame in range(10, 13):  # now seen well: confirmation starts at new_track_thresh, same ID
        (track,) = tracker.update(frame * 0.1, np.array([box_at(100 + 5 * frame)]), np.array([new_track_thresh]))
    assert track.state == TrackState.CONFIRMED and track.track_id == 1
    assert track.presence_weight == pytest.approx(float(curves.detected_confirmed(new_track_thresh)))
    weights = []
    for frame in range(13, 40):  # hidden: the weight follows the lost curve, then the track is dropped
        tracks = tracker.update(frame * 0.1, np.zeros((0, 4)), np.zeros(0))
        weights += [t.presence_weight for t in tracks]
    assert weights[0] == pytest.approx(float(curves.lost(0.1))) and is_monotone(weights, False)
    assert tracker.tracks == []
