"""V: how many tracks the tracker makes of one annotated person, as a distribution and by time in view.

    .venv/bin/python bench/tracks_per_person.py

A ground-truth person's box is matched to a confirmed track's box in each frame (Hungarian on IoU, at least 0.5);
V is the number of distinct track IDs matched to a person, over people matched at least once; time in view is
the person's annotated frames over the sequence's capture rate (seqinfo.ini; PETS 7 fps, though vtest.avi plays
at 10). Rows: the five shared MOT15 sequences with their public ACF
detections, and the two videos (PETS09-S2L1, TUD-Campus) through YOLOX-nano; the tracker with its defaults.
Imports nothing newer than the tracker itself, so that it also runs against an older checkout of the package
(PYTHONPATH=OLD_CHECKOUT) for a before/after comparison.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parent))
import perception

MIN_IOU = 0.5
TIME_IN_VIEW_S = (0, 5, 10, 20, 40)  # lower edges of the time-in-view classes, seconds


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x2, y2 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def tracks_of_each_person(gt: np.ndarray, rows: list, fps: float) -> list[tuple[int, float]]:
    """gt: MOT rows (frame, id, x, y, w, h, ...); rows: (frame, track, x1, y1, x2, y2, ...).
    Returns (V, seconds in view) of each person matched at least once."""
    tracks: dict[int, set[int]] = {}
    found = np.asarray(rows, dtype=float)
    for frame in np.unique(gt[:, 0]):
        people = gt[gt[:, 0] == frame]
        boxes = found[found[:, 0] == frame] if len(found) else np.zeros((0, 6))
        if not len(boxes):
            continue
        truth = np.column_stack([people[:, 2], people[:, 3], people[:, 2] + people[:, 4], people[:, 3] + people[:, 5]])
        overlap = box_iou(truth, boxes[:, 2:6])
        for i, j in zip(*linear_sum_assignment(-overlap)):
            if overlap[i, j] >= MIN_IOU:
                tracks.setdefault(int(people[i, 1]), set()).add(int(boxes[j, 1]))
    frames_in_view = {int(p): int((gt[:, 1] == p).sum()) for p in tracks}
    return [(len(ids), frames_in_view[p] / fps) for p, ids in tracks.items()]


def summary(people: list[tuple[int, float]]) -> dict:
    """p50 / p90 / max of V, and mean V with the number of people per time-in-view class."""
    v = np.array([n for n, _ in people])
    seconds = np.array([s for _, s in people])
    classes = {}
    edges = (*TIME_IN_VIEW_S, np.inf)
    for low, high in itertools.pairwise(edges):
        inside = (seconds >= low) & (seconds < high)
        name = f"{low:g}-{high:g} s" if np.isfinite(high) else f"≥ {low:g} s"
        classes[name] = (float(v[inside].mean()) if inside.any() else None, int(inside.sum()))
    return {
        "people": len(v),
        "mean": float(v.mean()),
        "p50": float(np.percentile(v, 50)),
        "p90": float(np.percentile(v, 90)),
        "max": int(v.max()),
        "by_time_in_view": classes,
    }


def annotated(sequence: str) -> np.ndarray:
    gt = np.loadtxt(perception.MOT15 / sequence / "gt/gt.txt", delimiter=",", ndmin=2)
    return gt[gt[:, 6] != 0]


def public_detection_rows(sequence: str) -> list[tuple]:
    gt = annotated(sequence)
    return perception.run_bytetrack(
        perception.load_detections(sequence), int(gt[:, 0].max()), perception.frame_rate(sequence)
    )


def video_rows(sequence: str, video: Path, fps: float, homography) -> list[tuple]:
    detections, _ = perception.detect_video("yolox", video)
    return perception.track_video(detections, fps, homography, backend="yolox")[0]


def measure() -> dict[str, dict]:
    """Label -> summary, for the five public-detection sequences and the two videos."""
    from privacy_vision.core.geometry import load_homography

    results = {}
    for sequence in perception.SEQUENCES:
        people = tracks_of_each_person(
            annotated(sequence), public_detection_rows(sequence), perception.frame_rate(sequence)
        )
        results[f"{sequence} (public detections)"] = summary(people)
    videos = {
        "PETS09-S2L1": (
            perception.pets_video(),
            perception.PETS_FPS,
            load_homography(perception.REPO / "config/homography_pets.yaml"),
        ),
        "TUD-Campus": (
            perception.MOT15 / "TUD-Campus/TUD-Campus.mp4",
            perception.frame_rate("TUD-Campus"),
            perception.IDENTITY,
        ),
    }
    for sequence, (video, fps, homography) in videos.items():
        rows = video_rows(sequence, video, fps, homography)  # tracked at the video's rate, in view at the capture's
        people = tracks_of_each_person(annotated(sequence), rows, perception.frame_rate(sequence))
        results[f"{sequence} (YOLOX-nano video)"] = summary(people)
    return results


def markdown(results: dict[str, dict]) -> list[str]:
    classes = list(next(iter(results.values()))["by_time_in_view"])
    lines = [
        "| sequence | people | V mean | p50 | p90 | max | " + " | ".join(f"V in view {c}" for c in classes) + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(classes),
    ]
    for name, r in results.items():
        cells = [f"{mean:.2f} ({n})" if mean is not None else "- (0)" for mean, n in r["by_time_in_view"].values()]
        lines.append(
            f"| {name} | {r['people']} | {r['mean']:.2f} | {r['p50']:g} | {r['p90']:g} | {r['max']} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def main() -> None:
    print("\n".join(markdown(measure())))
    print("(V in view: mean V (people) of the people whose annotated time in view falls in the class)")


if __name__ == "__main__":
    main()
