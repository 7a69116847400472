"""SORT (Bewley et al., ICIP 2016) as the paper describes it, as the baseline for the tracker benchmark:
Kalman filter on [u, v, s, r] with constant velocity, Hungarian assignment on IoU with IoU_min = 0.3,
tracks deleted after max_age = 1 missed frame, output after min_hits = 3. Benchmark code only: the
product tracker is privacy_vision.core.tracking."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from privacy_vision.core.tracking import iou_matrix


def _to_z(box: np.ndarray) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    return np.array([box[0] + w / 2, box[1] + h / 2, w * h, w / max(h, 1e-6)])


def _to_box(x: np.ndarray) -> np.ndarray:
    w = np.sqrt(max(x[2] * x[3], 1e-6))
    h = x[2] / w
    return np.array([x[0] - w / 2, x[1] - h / 2, x[0] + w / 2, x[1] + h / 2])


class _SortTrack:
    def __init__(self, box: np.ndarray, track_id: int) -> None:
        self.F = np.eye(7)
        self.F[0, 4] = self.F[1, 5] = self.F[2, 6] = 1
        self.H = np.eye(4, 7)
        self.R = np.diag([1.0, 1.0, 10.0, 10.0])
        self.P = np.diag([10.0, 10.0, 10.0, 10.0, 1e4, 1e4, 1e4])
        self.Q = np.diag([1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 1e-4])
        self.x = np.concatenate([_to_z(box), np.zeros(3)])
        self.id = track_id
        self.time_since_update = 0
        self.hit_streak = 0

    def predict(self) -> np.ndarray:
        if self.x[6] + self.x[2] <= 0:
            self.x[6] = 0
        self.x = self.F @ self.x
        self.P = self.F @ self.P @ self.F.T + self.Q
        if self.time_since_update > 0:
            self.hit_streak = 0
        self.time_since_update += 1
        return _to_box(self.x)

    def update(self, box: np.ndarray) -> None:
        self.time_since_update = 0
        self.hit_streak += 1
        y = _to_z(box) - self.H @ self.x
        S = self.H @ self.P @ self.H.T + self.R
        K = self.P @ self.H.T @ np.linalg.inv(S)
        self.x = self.x + K @ y
        self.P = (np.eye(7) - K @ self.H) @ self.P


class Sort:
    """The reference SORT tracker (Bewley et al. 2016), to compare our ByteTracker with on the same detections."""

    def __init__(self, max_age: int = 1, min_hits: int = 3, iou_threshold: float = 0.3) -> None:
        self.max_age, self.min_hits, self.iou_threshold = max_age, min_hits, iou_threshold
        self.tracks: list[_SortTrack] = []
        self.frame_count = 0
        self._next_id = 1

    def update(self, boxes: np.ndarray) -> list[tuple[int, np.ndarray]]:
        self.frame_count += 1
        predicted = np.array([t.predict() for t in self.tracks]).reshape(-1, 4)
        keep = np.all(np.isfinite(predicted), axis=1)
        self.tracks = [t for t, k in zip(self.tracks, keep) if k]
        predicted = predicted[keep]
        matched_tracks, matched_boxes = set(), set()
        if len(self.tracks) and len(boxes):
            iou = iou_matrix(boxes, predicted)
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= self.iou_threshold:
                    self.tracks[c].update(boxes[r])
                    matched_tracks.add(c)
                    matched_boxes.add(r)
        for index, box in enumerate(boxes):
            if index not in matched_boxes:
                self.tracks.append(_SortTrack(box, self._next_id))
                self._next_id += 1
        output = []
        for track in self.tracks:
            if track.time_since_update < 1 and (track.hit_streak >= self.min_hits or self.frame_count <= self.min_hits):
                output.append((track.id, _to_box(track.x)))
        self.tracks = [t for t in self.tracks if t.time_since_update <= self.max_age]
        return output
