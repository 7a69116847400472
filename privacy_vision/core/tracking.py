"""Motion-only multi-object tracking (ByteTrack association) with floor-plane positions.

Written here rather than taken from Ultralytics or supervision: their ByteTrack classes take their own
result objects, drop tentative tracks from the output and give no velocity, while downstream needs
explicit tentative/confirmed/lost states and floor velocity in m/s. The parts that libraries do
well are used: scipy's Hungarian solver for assignment, OpenCV for the homography. No appearance
features are computed anywhere (they would be biometric).
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from scipy.optimize import linear_sum_assignment

from privacy_vision.core.geometry import Homography
from privacy_vision.core.presence import PresenceCurves, load_calibration


class TrackState(IntEnum):
    """A track's life cycle; a count from the tracks' presence weights (core/presence.py) takes every state."""

    TENTATIVE = 0
    CONFIRMED = 1
    LOST = 2


# ByteTrack's two score thresholds live on the detector's score scale, which differs per backend (quartiles of
# the person scores on PETS and TUD-Campus: YOLOX-nano 0.45 / 0.82, the SSD 0.55 / 0.69, HOG's squashed SVM
# margin 0.69 / 0.93), so each backend has its own pair (track_thresh, new_track_thresh); a pair tuned for one
# scale confirms no track at all on another. yolox, tflite and hog were chosen by
# `bench/tune_tracker.py --backend NAME` (docs/tracker_tuning_NAME.md) on PETS09-S2L1 and TUD-Campus together, the
# shared MOT15 sequences with video: in-sample. The same tool chooses them on each video alone and scores them on
# the other (held out); both figures are in that file and in docs/perception.md. ultralytics is not tuned (no
# YOLO weights can be fetched where this was built) and takes YOLOX's pair: set both for your model.
BACKEND_SCORE_THRESHOLDS: dict[str, tuple[float, float]] = {
    "yolox": (0.7, 0.8),
    "tflite": (0.6, 0.6),
    "hog": (0.6, 0.7),
    "ultralytics": (0.7, 0.8),
}


@dataclass
class TrackerSettings:
    """Defaults suit 10 fps; min_hits was chosen with YOLOX-nano by bench/tune_tracker.py on PETS09-S2L1 and
    TUD-Campus only. The score thresholds default to None: the pair tuned for the backend whose scores arrive."""

    track_thresh: float | None = None  # detections at or above this score are "high" (first association)
    low_thresh: float = 0.1  # detections below this are ignored; one at or above that no track takes starts a track
    new_track_thresh: float | None = None  # confirmation starts with a detection at or above this score
    match_iou: float = 0.2  # minimum IoU for the first association
    low_match_iou: float = 0.5  # minimum IoU for the second (low-score) association
    min_hits: int = 3  # consecutive high matches from a new_track_thresh one before a track is confirmed
    track_buffer_s: float = 3.0  # how long a lost track is kept for re-association
    velocity_window_s: float = 1.0  # floor velocity is the slope of positions over this window
    reassociation_m: float = 2.0  # a lost track takes an unmatched detection this close on the floor (0 = off)

    def score_thresholds(self, backend: str) -> tuple[float, float]:
        """(track_thresh, new_track_thresh) for scores from this backend: the explicit values, else its tuned pair."""
        if self.track_thresh is not None and self.new_track_thresh is not None:
            return self.track_thresh, self.new_track_thresh
        if backend not in BACKEND_SCORE_THRESHOLDS:
            raise ValueError(
                f"no tuned score thresholds for detector backend {backend!r} (known: "
                f"{', '.join(BACKEND_SCORE_THRESHOLDS)}); set track_thresh and new_track_thresh"
            )
        tuned_track, tuned_new = BACKEND_SCORE_THRESHOLDS[backend]
        return (
            tuned_track if self.track_thresh is None else self.track_thresh,
            tuned_new if self.new_track_thresh is None else self.new_track_thresh,
        )

    def validate(self) -> None:
        for name in ("track_thresh", "new_track_thresh"):
            value = getattr(self, name)
            if value is not None and not self.low_thresh <= value <= 1:
                raise ValueError(
                    f"{name} must lie in [low_thresh = {self.low_thresh}, 1] (or be unset: the backend's tuned value)"
                )
        if not 0 <= self.low_thresh <= min(pair[0] for pair in BACKEND_SCORE_THRESHOLDS.values()):
            raise ValueError("low_thresh must lie in [0, every backend's tuned track_thresh]")
        if not 0 < self.match_iou < 1 or not 0 < self.low_match_iou < 1:
            raise ValueError("IoU thresholds must lie in (0, 1)")
        if self.min_hits < 1:
            raise ValueError("min_hits must be ≥ 1")
        if self.track_buffer_s < 0 or self.velocity_window_s <= 0:
            raise ValueError("track_buffer_s must be ≥ 0 and velocity_window_s > 0")
        if self.reassociation_m < 0:
            raise ValueError("reassociation_m must be ≥ 0")


class _KalmanXYAH:
    """Constant-velocity Kalman filter on (cx, cy, aspect, height), as in SORT/ByteTrack."""

    _std_position = 1.0 / 20
    _std_velocity = 1.0 / 160

    def __init__(self, measurement: np.ndarray) -> None:
        self.motion = np.eye(8)
        self.motion[:4, 4:] = np.eye(4)
        self.observation = np.eye(4, 8)
        self.mean = np.concatenate([measurement, np.zeros(4)])
        h = measurement[3]
        std = [
            2 * self._std_position * h,
            2 * self._std_position * h,
            1e-2,
            2 * self._std_position * h,
            10 * self._std_velocity * h,
            10 * self._std_velocity * h,
            1e-5,
            10 * self._std_velocity * h,
        ]
        self.covariance = np.diag(np.square(std))

    def predict(self) -> None:
        h = self.mean[3]
        std = [
            self._std_position * h,
            self._std_position * h,
            1e-2,
            self._std_position * h,
            self._std_velocity * h,
            self._std_velocity * h,
            1e-5,
            self._std_velocity * h,
        ]
        self.mean = self.motion @ self.mean
        self.covariance = self.motion @ self.covariance @ self.motion.T + np.diag(np.square(std))

    def update(self, measurement: np.ndarray) -> None:
        h = self.mean[3]
        std = [self._std_position * h, self._std_position * h, 1e-1, self._std_position * h]
        projected_cov = self.observation @ self.covariance @ self.observation.T + np.diag(np.square(std))
        gain = np.linalg.solve(projected_cov, self.observation @ self.covariance).T
        self.mean = self.mean + gain @ (measurement - self.observation @ self.mean)
        self.covariance = self.covariance - gain @ projected_cov @ gain.T

    def box(self) -> np.ndarray:
        cx, cy, aspect, h = self.mean[:4]
        w = aspect * h
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _xyah(box: np.ndarray) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    return np.array([box[0] + w / 2, box[1] + h / 2, w / max(h, 1e-6), h])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return intersection / np.maximum(area_a[:, None] + area_b[None, :] - intersection, 1e-9)


def _assign(
    tracks: list[Track], boxes: np.ndarray, min_iou: float
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Hungarian assignment on IoU; returns matches (track idx, box idx) and the unmatched of each."""
    if not tracks or len(boxes) == 0:
        return [], list(range(len(tracks))), list(range(len(boxes)))
    iou = iou_matrix(np.array([t.kalman.box() for t in tracks]), boxes)
    rows, cols = linear_sum_assignment(-iou)
    matches = [(r, c) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]
    matched_rows = {r for r, _ in matches}
    matched_cols = {c for _, c in matches}
    return (
        matches,
        [i for i in range(len(tracks)) if i not in matched_rows],
        [j for j in range(len(boxes)) if j not in matched_cols],
    )


@dataclass
class Track:
    """One tracked person: motion state only (Kalman box, floor position), no appearance."""

    track_id: int
    kalman: _KalmanXYAH
    score: float
    state: TrackState = TrackState.TENTATIVE
    streak: int = 0  # tentative: consecutive high matches since one at new_track_thresh (0 = confirmation not begun)
    presence_weight: float = 0.0  # people this track stands for now, in [0, 1] (core/presence.py)
    age_frames: int = 1
    last_update_s: float = 0.0
    floor_history: deque = field(default_factory=lambda: deque(maxlen=64))
    floor_xy: tuple[float, float] = (0.0, 0.0)
    floor_velocity: tuple[float, float] = (0.0, 0.0)

    @property
    def box(self) -> np.ndarray:
        return self.kalman.box()


def unreused_first_id() -> int:
    """The first track ID of a tracker process: a random 32-bit epoch in the high half, so that a restarted tracker
    never reuses an earlier process's IDs (two processes collide with probability 2^-32), and the anonymizer's
    lineages and pseudonyms never mix two people across a respawn."""
    return (secrets.randbits(32) << 32) | 1


class ByteTracker:
    """Motion-only ByteTrack association with floor positions, so that people are counted without appearance features.

    Starting a track is not confirming it: every detection at or above low_thresh that no track takes starts a
    tentative track, which carries a presence weight (so a person whose scores stay low is still counted, by the
    calibrated probability that a person is there) but is confirmed only by ByteTrack's rule: min_hits consecutive
    matches at or above track_thresh, the first at or above new_track_thresh. Confirmed tracks (the tracker's MOT
    output) are therefore the same as ByteTrack's; the extra tentative tracks only add to the count.
    """

    def __init__(
        self,
        settings: TrackerSettings,
        homography: Homography,
        first_id: int = 1,
        presence: dict[str, PresenceCurves] | None = None,
    ) -> None:
        settings.validate()
        self.settings = settings
        self.homography = homography
        self.presence = load_calibration() if presence is None else presence
        self.tracks: list[Track] = []
        self._next_id = first_id
        self._thresholds = (1.0, 1.0)

    def update(self, stamp_s: float, boxes: np.ndarray, scores: np.ndarray, backend: str = "yolox") -> list[Track]:
        """Advance one frame; boxes are (N, 4) x_min, y_min, x_max, y_max pixels, scores on the score scale of
        the detector `backend` (the shipped YOLOX-nano unless said), which picks the tuned thresholds."""
        s = self.settings
        track_thresh, _ = self._thresholds = s.score_thresholds(backend)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        high = scores >= track_thresh
        low = (scores >= s.low_thresh) & ~high
        high_boxes, high_scores = boxes[high], scores[high]
        low_boxes, low_scores = boxes[low], scores[low]

        for track in self.tracks:
            if track.state == TrackState.LOST:
                track.kalman.mean[7] = 0.0  # as ByteTrack: a lost box keeps its size instead of shrinking away
            track.kalman.predict()
            track.age_frames += 1

        active = [t for t in self.tracks if t.state != TrackState.TENTATIVE]
        tentative = [t for t in self.tracks if t.state == TrackState.TENTATIVE]

        matches, unmatched_active, unmatched_high = _assign(active, high_boxes, s.match_iou)
        for ti, di in matches:
            self._hit(active[ti], high_boxes[di], high_scores[di], stamp_s)
        unmatched_active, unmatched_high = self._reassociate_on_floor(
            active, unmatched_active, high_boxes, high_scores, unmatched_high, stamp_s
        )

        # Second association: still-tracked (not lost) tracks take the low-score boxes (occlusions).
        remaining = [active[i] for i in unmatched_active if active[i].state == TrackState.CONFIRMED]
        matches_low, unmatched_remaining, unmatched_low = _assign(remaining, low_boxes, s.low_match_iou)
        for ti, di in matches_low:
            self._hit(remaining[ti], low_boxes[di], low_scores[di], stamp_s)
        for i in unmatched_remaining:
            remaining[i].state = TrackState.LOST

        # Tentative tracks take what is left, high and low; a low match keeps a tentative track (and its weight)
        # but restarts its confirmation (_hit), as ByteTrack would have dropped it and started anew later.
        leftover_boxes = np.concatenate([high_boxes[unmatched_high], low_boxes[unmatched_low]])
        leftover_scores = np.concatenate([high_scores[unmatched_high], low_scores[unmatched_low]])
        matches_new, unmatched_tentative, unmatched_left = _assign(tentative, leftover_boxes, s.match_iou)
        for ti, di in matches_new:
            self._hit(tentative[ti], leftover_boxes[di], leftover_scores[di], stamp_s)
        dropped = {id(tentative[i]) for i in unmatched_tentative}

        self.tracks = [
            t
            for t in self.tracks
            if id(t) not in dropped
            and not (t.state == TrackState.LOST and stamp_s - t.last_update_s > s.track_buffer_s)
        ]
        for di in unmatched_left:
            self._start(leftover_boxes[di], leftover_scores[di], stamp_s)
        curves = self.presence.get(backend)
        for track in self.tracks:
            track.presence_weight = self._presence_weight(track, curves, stamp_s)
        return list(self.tracks)

    @staticmethod
    def _presence_weight(track: Track, curves: PresenceCurves | None, stamp_s: float) -> float:
        """The calibrated weight; without curves for the backend, the count of old: 1 when confirmed, else 0."""
        confirmed = track.state == TrackState.CONFIRMED
        if curves is None:
            return 1.0 if confirmed else 0.0
        detected = track.last_update_s == stamp_s
        return curves.weight(confirmed, track.score if detected else None, stamp_s - track.last_update_s)

    def _reassociate_on_floor(
        self,
        active: list[Track],
        unmatched_active: list[int],
        boxes: np.ndarray,
        scores: np.ndarray,
        unmatched_boxes: list[int],
        stamp_s: float,
    ) -> tuple[list[int], list[int]]:
        """Recover lost tracks by where they should be on the floor, when the box moved too far for IoU.

        A missed detection of a few frames otherwise splits one person into two IDs, and distinct-people
        counts downstream double. Motion only: predicted floor position against the detection's foot point.
        """
        lost = [i for i in unmatched_active if active[i].state == TrackState.LOST]
        if not self.settings.reassociation_m or not lost or not unmatched_boxes:
            return unmatched_active, unmatched_boxes
        candidates = boxes[unmatched_boxes]
        feet = self.homography.project(np.column_stack([(candidates[:, 0] + candidates[:, 2]) / 2, candidates[:, 3]]))
        cost = np.full((len(lost), len(unmatched_boxes)), np.inf)
        for row, index in enumerate(lost):
            track = active[index]
            gap = max(0.0, stamp_s - track.last_update_s)
            predicted = np.array(track.floor_xy) + np.array(track.floor_velocity) * gap
            distances = np.linalg.norm(feet - predicted, axis=1)
            gate = self.settings.reassociation_m * (1.0 + gap)
            cost[row] = np.where(distances <= gate, distances, np.inf)
        finite = np.where(np.isfinite(cost), cost, 1e9)
        rows, cols = linear_sum_assignment(finite)
        taken_tracks, taken_boxes = set(), set()
        for r, c in zip(rows, cols):
            if np.isfinite(cost[r, c]):
                self._hit(active[lost[r]], boxes[unmatched_boxes[c]], scores[unmatched_boxes[c]], stamp_s)
                taken_tracks.add(lost[r])
                taken_boxes.add(unmatched_boxes[c])
        return (
            [i for i in unmatched_active if i not in taken_tracks],
            [j for j in unmatched_boxes if j not in taken_boxes],
        )

    def reset(self) -> None:
        """Forget every track (data-subject erasure)."""
        self.tracks = []

    def _start(self, box: np.ndarray, score: float, stamp_s: float) -> None:
        track = Track(self._next_id, _KalmanXYAH(_xyah(box)), float(score), last_update_s=stamp_s)
        self._next_id += 1
        track.streak = int(score >= self._thresholds[1])
        if track.streak and self.settings.min_hits <= 1:
            track.state = TrackState.CONFIRMED
        self._update_floor(track, stamp_s)
        self.tracks.append(track)

    def _hit(self, track: Track, box: np.ndarray, score: float, stamp_s: float) -> None:
        track.kalman.update(_xyah(box))
        track.score = float(score)
        track.last_update_s = stamp_s
        if track.state == TrackState.TENTATIVE:
            track_thresh, new_track_thresh = self._thresholds
            if track.streak and score >= track_thresh:
                track.streak += 1
            else:
                track.streak = int(score >= new_track_thresh)
        if track.state == TrackState.LOST or (
            track.state == TrackState.TENTATIVE and track.streak >= self.settings.min_hits
        ):
            track.state = TrackState.CONFIRMED
        self._update_floor(track, stamp_s)

    def _update_floor(self, track: Track, stamp_s: float) -> None:
        x_min, _, x_max, y_max = track.box
        foot = self.homography.project(np.array([[(x_min + x_max) / 2, y_max]]))[0]
        track.floor_xy = (float(foot[0]), float(foot[1]))
        history = track.floor_history
        history.append((stamp_s, foot[0], foot[1]))
        while history and stamp_s - history[0][0] > self.settings.velocity_window_s:
            history.popleft()
        if len(history) >= 2:
            samples = np.array(history)
            times = samples[:, 0] - samples[:, 0].mean()
            spread = float(np.dot(times, times))
            if spread > 0:
                vx = float(np.dot(times, samples[:, 1] - samples[:, 1].mean()) / spread)
                vy = float(np.dot(times, samples[:, 2] - samples[:, 2].mean()) / spread)
                track.floor_velocity = (vx, vy)
