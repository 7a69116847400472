"""Tracks on the floor beside the annotated people, frame by frame, on the shared MOT15 sequences and on the PETS
video: what bench/presence_assumption.py, bench/lineages_per_person.py and the PETS workload of
bench/privacy_utility.py measure on.

Tracks come from the project's tracker (core/tracking.py, default settings) fed either the sequence's official
public detections (ACF; scored with YOLOX's tuned thresholds, as bench/perception.py's tracker benchmark does) or
the shipped YOLOX-nano on vtest.avi (frame k of the video is frame k + 1 of PETS09-S2L1). Every live track is kept
with its state and its presence weight, as the tracking node publishes them: the anonymizer stitches the confirmed
ones into lineages (events) and counts every track in presence by its weight. A track's floor point is where its
last detection put it (Track.floor_xy: a lost track stays where it was last seen); the weights are calibrated for
the scores of the backend named (YOLOX-nano), not for the public detections' ACF scores.

Floor coordinates (metres), for the tracks' foot points (bottom centre of the box) and for the people:
- sequences whose gt.txt carries ground-plane columns (PETS09-S2L1, ETH-Sunnyday): people stand where the gt says;
  tracks are projected with a homography fitted from the gt's foot pixel ↔ world pairs (geometry.Homography.fit).
  One homography for the whole sequence when its median reprojection error is at most STATIC_FIT_M (a fixed
  camera: PETS 2.5 cm), else one per frame fitted on the pairs of that frame and its neighbours (ETH-Sunnyday is
  filmed from a moving platform: one homography is 7 m off, the per-frame fits about 7 cm on held-out people);
- the others (ADL-Rundle-6, KITTI-13, TUD-Campus) have no calibration: image coordinates of the foot point divided
  by a pixels-per-metre scale, the sequence's median annotated box height over PERSON_HEIGHT_M (a stated
  approximation: it ignores perspective, so distances far from the camera are underestimated).
Time is the sequence's own (seqinfo.ini frame rate: PETS 7 fps, although vtest.avi is encoded at 10 fps).
"""

from __future__ import annotations

import configparser
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import perception  # noqa: E402

from privacy_vision.core.geometry import ConfigError, Homography  # noqa: E402
from privacy_vision.core.tracking import ByteTracker, TrackerSettings, TrackState  # noqa: E402

MOT15 = perception.MOT15
SEQUENCES = perception.SEQUENCES
CALIBRATED = ("PETS09-S2L1", "ETH-Sunnyday")
STATIC_FIT_M = 0.1
NEIGHBOUR_FRAMES = 1  # per-frame fits use the frame ± this many frames
PERSON_HEIGHT_M = 1.7
CACHE = REPO / "bench_out"


@dataclass
class Frame:
    """One frame: annotated people and confirmed tracks, with boxes (pixels) and floor points (metres)."""

    number: int  # MOT frame number (1-based)
    stamp_s: float
    people: np.ndarray  # (n, 7): id, x1, y1, x2, y2, floor x, floor y
    tracks: np.ndarray  # (m, 9): track id, x1, y1, x2, y2, floor x, floor y, TrackState, presence weight

    @property
    def confirmed(self) -> np.ndarray:
        return self.tracks[self.tracks[:, 7] == TrackState.CONFIRMED]


@dataclass
class Run:
    """One sequence through one detector and the tracker."""

    name: str
    label: str  # short name for sentences
    sequence: str
    fps: float
    floor: str  # how floor coordinates were obtained, in words
    frames: list[Frame]
    weights_calibrated: bool = False  # the presence weights fit these scores (a shipped detector's own curve)


def report(title: str, lines: list[str], markdown: Path | None) -> None:
    """Print the report, and write it as Markdown under its title where asked."""
    text = "\n".join(lines)
    print(text)
    if markdown:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(f"# {title}\n\n{text}\n")


def seq_info(sequence: str) -> tuple[float, int]:
    parser = configparser.ConfigParser()
    parser.read(MOT15 / sequence / "seqinfo.ini")
    return float(parser["Sequence"]["frameRate"]), int(parser["Sequence"]["seqLength"])


def ground_truth(sequence: str) -> np.ndarray:
    """MOT gt rows that count (column 7 non-zero)."""
    gt = np.loadtxt(MOT15 / sequence / "gt/gt.txt", delimiter=",", ndmin=2)
    return gt[gt[:, 6] != 0]


def feet(boxes: np.ndarray) -> np.ndarray:
    """Bottom centre of x1, y1, x2, y2 boxes."""
    return np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]])


def xyxy(gt: np.ndarray) -> np.ndarray:
    return np.column_stack([gt[:, 2], gt[:, 3], gt[:, 2] + gt[:, 4], gt[:, 3] + gt[:, 5]])


class FloorMap:
    """Image → floor metres for one sequence, per frame (see the module docstring for the three cases)."""

    def __init__(self, sequence: str, gt: np.ndarray) -> None:
        self.sequence = sequence
        self.static: Homography | None = None
        self.per_frame: dict[int, Homography] = {}
        self.scale: float | None = None
        pixels = feet(xyxy(gt))
        if sequence not in CALIBRATED:
            self.scale = float(np.median(gt[:, 5])) / PERSON_HEIGHT_M
            self.description = (
                f"no calibration: image coordinates / {self.scale:.0f} px per m (median annotated box height "
                f"{np.median(gt[:, 5]):.0f} px = {PERSON_HEIGHT_M:g} m)"
            )
            return
        world = gt[:, 7:9]
        homography, median = Homography.fit(pixels, world)
        if median <= STATIC_FIT_M:
            self.static = homography
            self.description = (
                f"one homography fitted on {len(gt)} gt foot↔world pairs (median error {median * 100:.1f} cm)"
            )
            return
        frames = gt[:, 0].astype(int)
        errors = []
        for frame in np.unique(frames):
            near = np.abs(frames - frame) <= NEIGHBOUR_FRAMES
            if near.sum() >= 5:
                with np.errstate(all="ignore"):
                    try:
                        self.per_frame[int(frame)], error = Homography.fit(pixels[near], world[near])
                        errors.append(error)
                    except ConfigError:
                        continue
        self._known = np.array(sorted(self.per_frame))
        self.description = (
            f"one homography per frame from the gt pairs of frames f ± {NEIGHBOUR_FRAMES} (moving camera; a single "
            f"fit is {median:.1f} m off), median in-sample error {np.median(errors) * 100:.1f} cm"
        )

    def project(self, frame: int, pixels: np.ndarray) -> np.ndarray:
        if not len(pixels):
            return np.zeros((0, 2))
        if self.scale is not None:
            return pixels / self.scale
        if self.static is not None:
            return self.static.project(pixels)
        nearest = int(self._known[np.argmin(np.abs(self._known - frame))])
        return self.per_frame[nearest].project(pixels)

    def people(self, frame: int, rows: np.ndarray) -> np.ndarray:
        """Floor positions of the annotated people: the gt's own where it has them."""
        if self.scale is None:
            return rows[:, 7:9]
        return self.project(frame, feet(xyxy(rows)))


def tracker_homography(floor: FloorMap) -> Homography:
    """What the tracker's floor re-association sees: the fitted homography of a fixed camera, else pixels (the
    re-association gate, 2 "metres", is then 2 pixels: effectively off, as in bench/perception.py)."""
    return floor.static if floor.static is not None else perception.IDENTITY


def track(
    detections: dict[int, tuple[np.ndarray, np.ndarray]],
    n_frames: int,
    fps: float,
    homography: Homography,
    backend: str = "yolox",
) -> dict[int, np.ndarray]:
    """Every live track per frame: (m, 9) track id, x1, y1, x2, y2, foot pixel at its last detection (u, v), state,
    presence weight."""
    tracker = ByteTracker(TrackerSettings(), homography)
    last_foot: dict[int, tuple[float, float]] = {}
    out = {}
    for frame in range(1, n_frames + 1):
        boxes, scores = detections.get(frame, (np.zeros((0, 4)), np.zeros(0)))
        rows = []
        for t in tracker.update(frame / fps, boxes, scores, backend):
            if t.last_update_s == frame / fps or t.track_id not in last_foot:
                last_foot[t.track_id] = ((t.box[0] + t.box[2]) / 2, t.box[3])
            rows.append([t.track_id, *t.box, *last_foot[t.track_id], int(t.state), t.presence_weight])
        out[frame] = np.array(rows, dtype=float).reshape(-1, 9)
    return out


def assemble(name: str, label: str, sequence: str, tracks: dict[int, np.ndarray]) -> Run:
    fps, n_frames = seq_info(sequence)
    gt = ground_truth(sequence)
    floor = FloorMap(sequence, gt)
    frames = []
    for frame in range(1, n_frames + 1):
        rows = gt[gt[:, 0] == frame]
        people = np.column_stack([rows[:, 1], xyxy(rows), floor.people(frame, rows)]) if len(rows) else np.zeros((0, 7))
        found = tracks.get(frame, np.zeros((0, 9)))
        on_floor = floor.project(frame, found[:, 5:7])
        columns = [found[:, :5], on_floor, found[:, 7:9]]
        frames.append(Frame(frame, (frame - 1) / fps, people, np.column_stack(columns).reshape(-1, 9)))
    return Run(name, label, sequence, fps, floor.description, frames)


def public_run(sequence: str) -> Run:
    """The sequence's public detections through the tracker."""
    fps, n_frames = seq_info(sequence)
    floor = FloorMap(sequence, ground_truth(sequence))
    tracks = track(perception.load_detections(sequence), n_frames, fps, tracker_homography(floor))
    return assemble(f"{sequence}, public detections + tracker", f"{sequence} public detections", sequence, tracks)


def pets_video_run(backend: str = "yolox") -> Run:
    """vtest.avi through a real detector (cached in bench_out/ by backend and video size) and the tracker."""
    video = perception.pets_video()
    cache = CACHE / f"pets_{backend}_{video.stat().st_size}.npz"
    if cache.is_file():
        stored = np.load(cache)
        detections = {
            int(frame): (stored[f"boxes_{frame}"], stored[f"scores_{frame}"])
            for frame in stored["frames"]  # 1-based MOT frame numbers
        }
    else:
        started = time.monotonic()
        print(
            f"[pets] running {backend} on {video.name} (cached in {cache.name} afterwards)", file=sys.stderr, flush=True
        )
        found, _ = perception.detect_video(backend, video)
        detections = {index + 1: (np.asarray(b).reshape(-1, 4), np.asarray(s)) for index, (b, s) in enumerate(found)}
        CACHE.mkdir(exist_ok=True)
        np.savez_compressed(
            cache,
            frames=np.array(sorted(detections)),
            **{f"boxes_{f}": b for f, (b, _) in detections.items()},
            **{f"scores_{f}": s for f, (_, s) in detections.items()},
        )
        print(f"[pets] {len(found)} frames detected in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    sequence = "PETS09-S2L1"
    fps, n_frames = seq_info(sequence)
    floor = FloorMap(sequence, ground_truth(sequence))
    tracks = track(detections, n_frames, fps, tracker_homography(floor), backend)
    run = assemble(
        f"PETS09-S2L1 video (vtest.avi), {backend} + tracker", f"PETS video with {backend}", sequence, tracks
    )
    run.weights_calibrated = True
    return run
