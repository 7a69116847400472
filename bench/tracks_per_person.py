"""V: how many tracks the tracker makes of one annotated person (a person whose track breaks into V pieces
gets V × ε per track-day). The DPIA's per person-day figure uses the largest V measured here.

    .venv/bin/python bench/tracks_per_person.py

A ground-truth person's box is matched to a track box in each frame (Hungarian on IoU, at least 0.5); V
is the mean number of distinct track IDs matched to a person, over people matched at least once. Rows:
the five shared MOT15 sequences with their public detections, and the PETS video through the default
detector (backend auto) and the tracker with its default parameters.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parent))
import perception

MIN_IOU = 0.5


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x2, y2 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def tracks_per_person(gt: np.ndarray, rows: list) -> tuple[float, int]:
    """gt: MOT rows (frame, id, x, y, w, h, ...); rows: (frame, track, x1, y1, x2, y2, ...). Returns (V, people)."""
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
    return float(np.mean([len(ids) for ids in tracks.values()])), len(tracks)


def main() -> None:
    results = []
    for sequence in perception.SEQUENCES:
        gt = np.loadtxt(perception.MOT15 / sequence / "gt/gt.txt", delimiter=",")
        gt = gt[gt[:, 6] != 0] if gt.shape[1] > 6 else gt
        rows = perception.run_bytetrack(
            perception.load_detections(sequence), int(gt[:, 0].max()), perception.frame_rate(sequence)
        )
        v, people = tracks_per_person(gt, rows)
        results.append((v, people))
        print(f"{sequence:<22} V = {v:.2f} over {people} people (public detections + tracker)", flush=True)
    mean = sum(v * n for v, n in results) / sum(n for _, n in results)
    print(f"{'MOT15, five sequences':<22} V = {mean:.2f} (people-weighted mean)")
    gt = np.loadtxt(perception.MOT15 / "PETS09-S2L1/gt/gt.txt", delimiter=",")
    boxes, _, _ = perception.run_pets("auto")
    v, people = tracks_per_person(gt, boxes)
    print(f"{'PETS09-S2L1 video':<22} V = {v:.2f} over {people} people (detector 'auto' + tracker)")


if __name__ == "__main__":
    main()
