"""Leave-one-sequence-out tuning and evaluation of detector + tracker + presence weights on the shared videos.

Two MOT15 sequences have video here (PETS09-S2L1 as vtest.avi, TUD-Campus as its mp4); the other three have only
public ACF detections, so no detector can run on them. Everything chosen on data is chosen here, by one rule:

- score thresholds (track_thresh, new_track_thresh, min_hits): the grid point with the best mean of MOTA and IDF1
  (TrackEval) on the training sequences;
- presence curves (privacy_vision/core/presence.py): isotonic regressions fitted on the training sequences' track
  frames, each labelled by whether the track sits on an annotated person (box IoU >= MATCH_IOU, one track per
  person per frame, Hungarian) with the thresholds just chosen.

Held out: a sequence is scored with what was chosen on the other one. In-sample: chosen on both, scored on each
(this is what ships). Used by bench/tune_tracker.py (writes the shipped calibration) and bench/perception.py.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from perception import IDENTITY, MOT15, PETS_FPS, REPO, detect_video, frame_rate, pets_video, trackeval_scores
from scipy.optimize import linear_sum_assignment

from privacy_vision.core.detectors import DetectorSettings
from privacy_vision.core.geometry import Homography, load_homography
from privacy_vision.core.presence import PresenceCurves, fit_monotone_curve
from privacy_vision.core.tracking import ByteTracker, TrackerSettings, TrackState, iou_matrix

VIDEO_SEQUENCES = ("PETS09-S2L1", "TUD-Campus")
MATCH_IOU = 0.3  # a track "is" an annotated person at this box IoU; the weights are calibrated to that rule
GRID = [
    (track, round(track + margin, 2), hits)
    for track, margin, hits in itertools.product((0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), (0.0, 0.1, 0.2), (3, 5))
    if track + margin <= 1.0
]


@dataclass
class Video:
    """One annotated sequence with frames: where the video is, its rate, its image-to-floor homography."""

    name: str
    path: Path
    fps: float
    homography: Homography


def videos() -> dict[str, Video]:
    return {
        "PETS09-S2L1": Video(
            "PETS09-S2L1", pets_video(), PETS_FPS, load_homography(REPO / "config/homography_pets.yaml")
        ),
        "TUD-Campus": Video("TUD-Campus", MOT15 / "TUD-Campus/TUD-Campus.mp4", frame_rate("TUD-Campus"), IDENTITY),
    }


def annotated_boxes(sequence: str) -> dict[int, np.ndarray]:
    """Frame (1-based) -> the annotated people's boxes (x0, y0, x1, y1) that count (column 7 non-zero)."""
    rows = np.loadtxt(MOT15 / sequence / "gt/gt.txt", delimiter=",", ndmin=2)
    rows = rows[rows[:, 6] != 0]
    boxes = np.column_stack([rows[:, 2], rows[:, 3], rows[:, 2] + rows[:, 4], rows[:, 3] + rows[:, 5]])
    return {int(frame): boxes[rows[:, 0] == frame] for frame in np.unique(rows[:, 0])}


def detect(backend: str, video: Path, input_size: int = 0) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[float]]:
    """(boxes, scores) per frame at the detector's default conf, and detector ms per frame."""
    return detect_video(backend, video, DetectorSettings(backend=backend, input_size=input_size))


@dataclass
class TrackRun:
    """One tracker pass over a sequence: MOT rows of confirmed tracks detected this frame (what MOTA/IDF1/HOTA
    score), and one sample per live track per frame for the presence weights."""

    mot_rows: list[tuple]
    samples: np.ndarray  # columns: frame, confirmed, detected, score, seconds_lost, matched (see SAMPLE_COLUMNS)
    n_frames: int


SAMPLE_COLUMNS = ("frame", "confirmed", "detected", "score", "seconds_lost", "matched")


def run_tracker(
    detections: list, video: Video, truth: dict[int, np.ndarray], settings: TrackerSettings, backend: str
) -> TrackRun:
    tracker = ByteTracker(settings, video.homography, presence={})  # weights come from the samples afterwards
    mot_rows, samples = [], []
    for index, (boxes, scores) in enumerate(detections):
        stamp = index / video.fps
        tracks = tracker.update(stamp, boxes, scores, backend)
        people = truth.get(index + 1, np.zeros((0, 4)))
        matched = np.zeros(len(tracks))
        if len(tracks) and len(people):
            overlap = iou_matrix(people, np.array([t.box for t in tracks]))
            rows, cols = linear_sum_assignment(-overlap)
            matched[cols[overlap[rows, cols] >= MATCH_IOU]] = 1
        for track, hit in zip(tracks, matched):
            detected = track.last_update_s == stamp
            confirmed = track.state == TrackState.CONFIRMED
            samples.append((index + 1, confirmed, detected, track.score, stamp - track.last_update_s, hit))
            if confirmed and detected:
                mot_rows.append((index + 1, track.track_id, *track.box))
    return TrackRun(mot_rows, np.array(samples, dtype=float).reshape(-1, len(SAMPLE_COLUMNS)), len(detections))


def fit_presence(runs: list[TrackRun]) -> PresenceCurves:
    """The three curves of core/presence.py from the samples of these runs."""
    samples = np.concatenate([run.samples for run in runs])
    _, confirmed, detected, score, lost_s, matched = samples.T
    groups = {
        "detected_confirmed": (detected == 1) & (confirmed == 1),
        "detected_tentative": (detected == 1) & (confirmed == 0),
        "lost": detected == 0,
    }
    return PresenceCurves(
        detected_confirmed=fit_monotone_curve(
            score[groups["detected_confirmed"]], matched[groups["detected_confirmed"]]
        ),
        detected_tentative=fit_monotone_curve(
            score[groups["detected_tentative"]], matched[groups["detected_tentative"]]
        ),
        lost=fit_monotone_curve(lost_s[groups["lost"]], matched[groups["lost"]], increasing=False),
    )


def presence_weights(run: TrackRun, curves: PresenceCurves) -> np.ndarray:
    """What ByteTracker gives each sample's track with these curves."""
    _, confirmed, detected, score, lost_s, _ = run.samples.T
    return np.array(
        [curves.weight(bool(c), s if d else None, g) for c, d, s, g in zip(confirmed, detected, score, lost_s)]
    )


def people_per_frame(truth: dict[int, np.ndarray], n_frames: int) -> np.ndarray:
    return np.array([len(truth.get(frame, ())) for frame in range(1, n_frames + 1)])


def per_frame(run: TrackRun, values: np.ndarray) -> np.ndarray:
    return np.bincount(run.samples[:, 0].astype(int), weights=values, minlength=run.n_frames + 1)[1:]


def count_errors(estimate: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {"mae": float(np.mean(np.abs(estimate - truth))), "bias": float(np.mean(estimate - truth))}


def counts(run: TrackRun, curves: PresenceCurves, truth: dict[int, np.ndarray]) -> dict[str, dict[str, float]]:
    """Count error per frame of: the presence weights of every live track (the count to use); the weights of the
    confirmed tracks only (so the difference is what confirmation costs); confirmed tracks detected this frame,
    one each (the count of old)."""
    true = people_per_frame(truth, run.n_frames)
    weights = presence_weights(run, curves)
    _, confirmed, detected, *_ = run.samples.T
    return {
        "weights, all tracks": count_errors(per_frame(run, weights), true),
        "weights, confirmed tracks only": count_errors(per_frame(run, weights * confirmed), true),
        "confirmed tracks (old count)": count_errors(per_frame(run, confirmed * detected), true),
    }


def label(point: tuple[float, float, int]) -> str:
    return "t{:.1f}_n{:.1f}_h{}".format(*point)


@dataclass
class Fold:
    """What was chosen on `trained_on` and how it scores on each sequence in `scored`."""

    trained_on: tuple[str, ...]
    point: tuple[float, float, int]
    curves: PresenceCurves


def grid_search(
    detections: dict[str, list], backend: str, progress: bool = True
) -> tuple[dict[str, dict[str, TrackRun]], dict[str, dict[str, dict]]]:
    """Every grid point on every sequence: tracker runs and their TrackEval scores."""
    all_videos, runs = videos(), {}
    truths = {name: annotated_boxes(name) for name in detections}
    for point in GRID:
        settings = TrackerSettings(track_thresh=point[0], new_track_thresh=point[1], min_hits=point[2])
        runs[label(point)] = {
            name: run_tracker(frames, all_videos[name], truths[name], settings, backend)
            for name, frames in detections.items()
        }
    if progress:
        print(f"[holdout] {backend}: scoring {len(GRID)} grid points with TrackEval", flush=True)
    scores = trackeval_scores({k: {s: r.mot_rows for s, r in v.items()} for k, v in runs.items()}, tuple(detections))
    return runs, scores


def choose(scores: dict[str, dict[str, dict]], sequences: tuple[str, ...]) -> tuple[float, float, int]:
    """The grid point with the best mean of MOTA and IDF1 over `sequences` (ties: the first in GRID)."""

    def objective(point: tuple[float, float, int]) -> float:
        values = scores[label(point)]
        return float(np.mean([values[s][m] for s in sequences for m in ("MOTA", "IDF1")]))

    return max(GRID, key=objective)


def folds(runs: dict[str, dict[str, TrackRun]], scores: dict, sequences: tuple[str, ...]) -> dict[str, Fold]:
    """'held out' fold for each sequence (trained on the others) and 'in-sample' (trained on all)."""
    result = {}
    for held_out in sequences:
        train = tuple(s for s in sequences if s != held_out)
        point = choose(scores, train)
        result[held_out] = Fold(train, point, fit_presence([runs[label(point)][s] for s in train]))
    point = choose(scores, sequences)
    result["in-sample"] = Fold(sequences, point, fit_presence([runs[label(point)][s] for s in sequences]))
    return result


def average_precision(detections: list, truth: dict[int, np.ndarray], min_iou: float = 0.5) -> float:
    """VOC-style AP (all-point interpolation) for person boxes; frames are 1-based in `truth`."""
    scores, hits = precision_recall_samples(detections, truth, min_iou)
    total = sum(len(boxes) for boxes in truth.values())
    order = np.argsort(-scores, kind="stable")
    true_positives = np.cumsum(hits[order])
    recall = true_positives / total
    precision = true_positives / np.arange(1, len(order) + 1)
    envelope = np.maximum.accumulate(np.r_[precision, 0.0][::-1])[::-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * envelope[:-1]))


def recall_precision_at(detections: list, truth: dict[int, np.ndarray], threshold: float) -> tuple[float, float]:
    scores, hits = precision_recall_samples(detections, truth, 0.5)
    kept = scores >= threshold
    total = sum(len(boxes) for boxes in truth.values())
    return float(hits[kept].sum() / total), float(hits[kept].mean()) if kept.any() else 0.0


def precision_recall_samples(detections: list, truth: dict[int, np.ndarray], min_iou: float):
    """Each detection's score and whether it is a true positive: greedy by score within a frame, each annotated
    person taken once, the best-overlapping free one at IoU >= min_iou (as the VOC evaluation)."""
    scores, hits = [], []
    for index, (boxes, frame_scores) in enumerate(detections):
        people = truth.get(index + 1, np.zeros((0, 4)))
        taken = np.zeros(len(people), dtype=bool)
        overlap = iou_matrix(boxes, people) if len(people) and len(boxes) else np.zeros((len(boxes), len(people)))
        for k in np.argsort(-frame_scores, kind="stable"):
            free = np.where(taken, -1.0, overlap[k]) if len(people) else np.zeros(0)
            best = int(np.argmax(free)) if len(free) else -1
            hit = best >= 0 and free[best] >= min_iou
            if hit:
                taken[best] = True
            scores.append(frame_scores[k])
            hits.append(hit)
    return np.array(scores, dtype=float), np.array(hits, dtype=float)
