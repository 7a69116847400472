"""Perception benchmarks on real data; writes a Markdown report and PNG plots.

    .venv/bin/python bench/perception.py [--out bench_out] [--parts tracker,video,sizes,speed]

1. tracker: our ByteTrack-class tracker vs SORT on the MOT15 public detections of five sequences (TrackEval HOTA,
   CLEAR, Identity), the ACF-scale thresholds chosen leave one sequence out, beside the SORT paper's figures.
2. video: detector + tracker + presence weights on the two sequences with video (PETS09-S2L1, TUD-Campus) for each
   offline backend, held out beside in-sample (bench/holdout.py, bench/perception_video.py): AP@0.5, recall at the
   thresholds in use, count MAE and bias, MOTA / IDF1 / HOTA, tracks per person.
3. sizes: the YOLOX input size (416 to 832): accuracy, held-out count bias and ms per frame in a bare loop, one run.
4. speed: a bare OpenCV read+detect loop vs the six-node graph with a camera node and with in-process capture; per-node
   CPU and memory; latency from frame capture to track.
5. latency: only the 10 fps latency runs, repeated (--latency-repeats) for each layout in turn, so one load spike
   does not decide a p99.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MOT15 = SHARED / "data/mot15"
SEQUENCES = ("ADL-Rundle-6", "ETH-Sunnyday", "KITTI-13", "PETS09-S2L1", "TUD-Campus")
sys.path.insert(0, str(REPO / "bench"))

import trackeval  # noqa: E402
from sort_reference import Sort  # noqa: E402

from privacy_vision.core.geometry import Homography, load_homography  # noqa: E402
from privacy_vision.core.graph import NODE_NAMES  # noqa: E402
from privacy_vision.core.tracking import ByteTracker, TrackerSettings, TrackState  # noqa: E402

# SORT paper (Bewley et al. 2016), Table 1, 2D MOT 2015 *test* set with Faster R-CNN detections.
SORT_PUBLISHED = {"MOTA": 33.4, "MOTP": 72.1, "ID switches": 1001}
IDENTITY = Homography(np.eye(3))


def frame_rate(sequence: str) -> float:
    parser = configparser.ConfigParser()
    parser.read(MOT15 / sequence / "seqinfo.ini")
    return float(parser["Sequence"]["frameRate"])


def load_detections(sequence: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    rows = np.loadtxt(MOT15 / sequence / "det/det.txt", delimiter=",", ndmin=2)
    frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for frame in np.unique(rows[:, 0]).astype(int):
        r = rows[rows[:, 0] == frame]
        frames[frame] = (np.column_stack([r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5]]), r[:, 6])
    return frames


def run_bytetrack(frames: dict, n_frames: int, fps: float, settings: TrackerSettings | None = None) -> list[tuple]:
    tracker = ByteTracker(settings or TrackerSettings(), IDENTITY)
    output = []
    for frame in range(1, n_frames + 1):
        boxes, scores = frames.get(frame, (np.zeros((0, 4)), np.zeros(0)))
        stamp = frame / fps
        for track in tracker.update(stamp, boxes, scores):
            if track.state == TrackState.CONFIRMED and track.last_update_s == stamp:
                output.append((frame, track.track_id, *track.box))
    return output


def run_sort(frames: dict, n_frames: int) -> list[tuple]:
    sort = Sort()
    output = []
    for frame in range(1, n_frames + 1):
        boxes, _ = frames.get(frame, (np.zeros((0, 4)), np.zeros(0)))
        for track_id, box in sort.update(boxes):
            output.append((frame, track_id, *box))
    return output


def trackeval_scores(
    results: dict[str, dict[str, list[tuple]]], sequences: tuple[str, ...] = SEQUENCES
) -> dict[str, dict[str, dict]]:
    """HOTA, CLEAR (MOTA) and Identity (IDF1) from TrackEval's MOT15 evaluation of each tracker's rows."""
    root = Path(tempfile.mkdtemp(prefix="pv-trackeval-"))
    gt_root = root / "gt" / "MOT15-train"
    for sequence in sequences:
        (gt_root / sequence / "gt").mkdir(parents=True)
        (gt_root / sequence / "gt/gt.txt").symlink_to(MOT15 / sequence / "gt/gt.txt")
        (gt_root / sequence / "seqinfo.ini").symlink_to(MOT15 / sequence / "seqinfo.ini")
    (root / "seqmap.txt").write_text("name\n" + "\n".join(sequences) + "\n")
    for tracker, per_sequence in results.items():
        folder = root / "trackers" / "MOT15-train" / tracker / "data"
        folder.mkdir(parents=True)
        for sequence, rows in per_sequence.items():
            (folder / f"{sequence}.txt").write_text(
                "".join(
                    f"{f},{i},{x0:.2f},{y0:.2f},{x1 - x0:.2f},{y1 - y0:.2f},1,-1,-1,-1\n"
                    for f, i, x0, y0, x1, y1 in rows
                )
            )
    evaluator = trackeval.Evaluator(
        {
            **trackeval.Evaluator.get_default_eval_config(),
            "PRINT_RESULTS": False,
            "PRINT_CONFIG": False,
            "OUTPUT_SUMMARY": False,
            "OUTPUT_DETAILED": False,
            "PLOT_CURVES": False,
            "USE_PARALLEL": False,
            "TIME_PROGRESS": False,
        }
    )
    dataset = trackeval.datasets.MotChallenge2DBox(
        {
            **trackeval.datasets.MotChallenge2DBox.get_default_dataset_config(),
            "GT_FOLDER": str(root / "gt"),
            "TRACKERS_FOLDER": str(root / "trackers"),
            "BENCHMARK": "MOT15",
            "SPLIT_TO_EVAL": "train",
            "SEQMAP_FILE": str(root / "seqmap.txt"),
            "TRACKERS_TO_EVAL": list(results),
            "PRINT_CONFIG": False,
        }
    )
    metrics = [
        trackeval.metrics.HOTA(),
        trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
        trackeval.metrics.Identity({"PRINT_CONFIG": False}),
    ]
    output, _ = evaluator.evaluate([dataset], metrics)
    scores: dict[str, dict[str, dict]] = {}
    for tracker in results:
        per_sequence = output["MotChallenge2DBox"][tracker]
        scores[tracker] = {}
        for sequence in (*sequences, "COMBINED_SEQ"):
            values = per_sequence[sequence]["pedestrian"]
            scores[tracker][sequence] = {
                "HOTA": 100 * float(np.mean(values["HOTA"]["HOTA"])),
                "MOTA": 100 * values["CLEAR"]["MOTA"],
                "IDF1": 100 * values["Identity"]["IDF1"],
                "IDSW": int(values["CLEAR"]["IDSW"]),
                "FP": int(values["CLEAR"]["CLR_FP"]),
                "FN": int(values["CLEAR"]["CLR_FN"]),
                "MT": int(values["CLEAR"]["MT"]),
                "GT_IDs": int(values["CLEAR"]["MT"] + values["CLEAR"]["PT"] + values["CLEAR"]["ML"]),
            }
    return scores


# ByteTrack's thresholds live on the detector's score scale. The product defaults suit YOLOX-nano (tuned by
# bench/tune_tracker.py on the two videos' YOLOX scores); the MOT15 ACF scores run higher (median 0.96-0.99). The ACF
# pair is therefore chosen here, leave one sequence out: for each sequence, the point of this grid with the best
# mean of MOTA and IDF1 on the other four.
ACF_GRID = [(track, new) for track in (0.6, 0.7, 0.8, 0.9) for new in (track, round(track + 0.1, 2)) if new <= 1.0]
PUBLIC_ONLY = ("ADL-Rundle-6", "ETH-Sunnyday", "KITTI-13")  # public detections, no video: never tuned on


def tracker_benchmark(report: list[str], plots: dict) -> None:
    print("[tracker] MOT15 public detections, 5 sequences", flush=True)
    grid: dict[str, dict[str, list[tuple]]] = {f"acf-{t}-{n}": {} for t, n in ACF_GRID}
    rows: dict[str, dict[str, list[tuple]]] = {"ours-defaults": {}, "ours-acf-held-out": {}}
    sort_rows: dict[str, list[tuple]] = {}
    for sequence in SEQUENCES:
        frames = load_detections(sequence)
        n_frames = int(np.loadtxt(MOT15 / sequence / "gt/gt.txt", delimiter=",", ndmin=2)[:, 0].max())
        fps = frame_rate(sequence)
        rows["ours-defaults"][sequence] = run_bytetrack(frames, n_frames, fps)
        sort_rows[sequence] = run_sort(frames, n_frames)
        for track, new in ACF_GRID:
            settings = TrackerSettings(track_thresh=track, new_track_thresh=new)
            grid[f"acf-{track}-{new}"][sequence] = run_bytetrack(frames, n_frames, fps, settings)
    grid_scores = trackeval_scores(grid)

    def best(sequences: tuple[str, ...]) -> str:
        return max(grid, key=lambda k: np.mean([grid_scores[k][s][m] for s in sequences for m in ("MOTA", "IDF1")]))

    chosen = {s: best(tuple(other for other in SEQUENCES if other != s)) for s in SEQUENCES}
    for sequence, point in chosen.items():
        rows["ours-acf-held-out"][sequence] = grid[point][sequence]
    in_sample = best(SEQUENCES)
    rows["ours-acf-in-sample"] = grid[in_sample]
    rows["SORT"] = sort_rows
    names = {
        "ours-defaults": "ours, default thresholds (YOLOX scale; tuned on the two videos)",
        "ours-acf-held-out": "ours, ACF thresholds chosen on the other four sequences (held out)",
        "ours-acf-in-sample": "ours, ACF thresholds {}/{} chosen on all five (in-sample)".format(
            *in_sample.split("-")[1:]
        ),
        "SORT": "SORT (paper's algorithm, nothing tuned)",
    }
    report.append("## 1. Tracker on MOT15 public detections (TrackEval: HOTA, CLEAR, Identity)\n")
    report.append(
        "ACF thresholds held out per sequence: "
        + ", ".join(f"{s} {'/'.join(chosen[s].split('-')[1:])}" for s in SEQUENCES)
        + f". {', '.join(PUBLIC_ONLY)} have no video: the default thresholds never saw them (held out); PETS09-S2L1 "
        "and TUD-Campus are the videos the defaults were tuned on (with YOLOX's scores, not these).\n"
    )
    report.append("| sequence | tracker | HOTA | MOTA % | IDF1 % | ID switches | FP | FN | mostly tracked |")
    report.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for group, sequences in (("overall, five sequences", SEQUENCES), ("the three without video", PUBLIC_ONLY)):
        scores = trackeval_scores(rows, sequences)
        for sequence in (*sequences, "COMBINED_SEQ") if group.startswith("overall") else ("COMBINED_SEQ",):
            for tracker, per_sequence in scores.items():
                v = per_sequence[sequence]
                label = group if sequence == "COMBINED_SEQ" else sequence
                report.append(
                    f"| {label} | {names[tracker]} | {v['HOTA']:.1f} | {v['MOTA']:.1f} | {v['IDF1']:.1f} | "
                    f"{v['IDSW']} | {v['FP']} | {v['FN']} | {v['MT']}/{v['GT_IDs']} |"
                )
        if group.startswith("overall"):
            plots["tracker"] = {
                names[t]: (v["COMBINED_SEQ"]["MOTA"], v["COMBINED_SEQ"]["IDF1"], v["COMBINED_SEQ"]["HOTA"])
                for t, v in scores.items()
            }
        for tracker, per_sequence in scores.items():
            v = per_sequence["COMBINED_SEQ"]
            print(f"  {group}, {names[tracker]}: HOTA {v['HOTA']:.1f} MOTA {v['MOTA']:.1f} IDF1 {v['IDF1']:.1f}")
    report.append(
        f"\nPublished beside it: SORT paper, 2D MOT 2015 *test* set with its own Faster R-CNN detections: "
        f"MOTA {SORT_PUBLISHED['MOTA']}, MOTP {SORT_PUBLISHED['MOTP']}, {SORT_PUBLISHED['ID switches']} ID switches "
        "(other sequences and detections, so only the side-by-side rows above compare like with like).\n"
    )


PETS_FPS = 10.0  # vtest.avi plays at 10 fps; frame k is MOT15 PETS09-S2L1 frame k + 1


def detect_video(backend: str, video: Path, settings=None) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[float]]:
    """The backend's (boxes, scores) for every frame of a video, and inference ms per frame; `settings` (a
    DetectorSettings) for anything but the defaults, e.g. the YOLOX input size."""
    from privacy_vision.core.detectors import DetectorSettings, create_detector
    from privacy_vision.core.sources import FrameSource

    detector, _ = create_detector(settings or DetectorSettings(backend=backend))
    detections, timings = [], []
    source = FrameSource(str(video))
    for frame in source.frames():
        started = time.perf_counter()
        detections.append(detector.detect(frame.image))
        timings.append((time.perf_counter() - started) * 1000)
    source.close()
    return detections, timings


def track_video(
    detections: list[tuple[np.ndarray, np.ndarray]],
    fps: float,
    homography: Homography,
    settings: TrackerSettings | None = None,
    backend: str = "yolox",
) -> tuple[list[tuple], list[tuple]]:
    """Confirmed tracks as MOT rows in the image (updated this frame) and on the floor (every confirmed track)."""
    tracker = ByteTracker(settings or TrackerSettings(), homography)
    image_rows, floor_rows = [], []
    for index, (boxes, scores) in enumerate(detections):
        stamp = index / fps
        for track in tracker.update(stamp, boxes, scores, backend):
            if track.state == TrackState.CONFIRMED:
                if track.last_update_s == stamp:
                    image_rows.append((index + 1, track.track_id, *track.box))
                floor_rows.append((index + 1, track.track_id, *track.floor_xy))
    return image_rows, floor_rows


def run_pets(backend: str) -> tuple[list[tuple], list[tuple], list[float]]:
    """Detector + tracker over the whole video; returns track rows (image), floor rows, inference ms."""
    detections, timings = detect_video(backend, pets_video())
    image_rows, floor_rows = track_video(
        detections, PETS_FPS, load_homography(REPO / "config/homography_pets.yaml"), backend=backend
    )
    return image_rows, floor_rows, timings


def pets_video() -> Path:
    local = REPO / "data/vtest.avi"
    return local if local.is_file() else SHARED / "data/video/vtest.avi"


SPEED_FRAMES = 300


# (label, backend, model): the Ultralytics row runs yolov8n built from its YAML (random weights: the
# compute per frame is that of real yolov8n, the boxes are meaningless), since weights cannot be fetched here.
SPEED_BACKENDS = (
    ("yolox", "yolox", ""),
    ("tflite", "tflite", ""),
    ("hog", "hog", ""),
    ("ultralytics yolov8n (YAML)", "ultralytics", "yolov8n.yaml"),
)


def bare_detector_fps(backend: str, model: str, input_size: int = 0) -> tuple[float, float]:
    """What a user would write without ROS: read the video with OpenCV and detect, in one loop (decode included)."""
    import cv2

    from privacy_vision.core.detectors import DetectorSettings, create_detector

    settings = DetectorSettings(backend=backend, model=model or DetectorSettings().model, input_size=input_size)
    detector, _ = create_detector(settings)
    capture = cv2.VideoCapture(str(pets_video()))
    for _ in range(10):
        detector.detect(capture.read()[1])  # warm-up
    timings = []
    started = time.perf_counter()
    for _ in range(SPEED_FRAMES):
        t0 = time.perf_counter()
        ok, frame = capture.read()
        if not ok:
            raise RuntimeError(f"{pets_video()} ended before {SPEED_FRAMES + 10} frames")
        detector.detect(frame)
        timings.append(time.perf_counter() - t0)
    capture.release()
    return SPEED_FRAMES / (time.perf_counter() - started), 1000 * statistics.median(timings)


def graph_run(
    fps: float, frames: int, backend: str, model: str = "", capture: str = "camera", composed: bool = False
) -> dict:
    """Run the whole graph; measure /tracks throughput, capture→track latency and per-process CPU/RSS."""
    import psutil
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from privacy_vision_msgs.msg import Tracks
    from testkit.core import free_domain_id
    from testkit.ros import RosProbe

    domain = free_domain_id()
    var = Path(tempfile.mkdtemp(prefix="pv-speed-"))
    command = [
        sys.executable,
        "-m",
        "privacy_vision.cli",
        "run",
        "--source",
        str(pets_video()),
        "--fps",
        str(fps),
        "--max-frames",
        str(frames),
        "--var-dir",
        str(var),
        "--domain-id",
        str(domain),
        "--quiet",
        "--capture",
        capture,
        "--set",
        f"detection.backend={backend}",
        "--set",
        "camera.loop=true",
    ] + (["--set", f"detection.model={model}"] if model else [])
    if composed:
        command.append("--composed")
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    probe = RosProbe(domain)
    arrivals: list[tuple[float, float]] = []
    probe.node.create_subscription(
        Tracks,
        "tracks",
        lambda m: arrivals.append((time.time(), m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)),
        QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE),
    )
    samples: dict[str, list[tuple[float, float]]] = {}
    watched: dict[int, tuple[str, psutil.Process]] = {}
    last_sample = 0.0
    while process.poll() is None:
        probe.spin_for(0.05)
        flowing = bool(arrivals) and time.time() - arrivals[-1][0] < 0.3
        if flowing and time.monotonic() - last_sample >= 0.5:
            last_sample = time.monotonic()
            for child in psutil.Process(process.pid).children(recursive=True):
                if child.pid not in watched:
                    name = process_name(child.cmdline())
                    if name:
                        watched[child.pid] = (name, child)
                        child.cpu_percent(None)
                        continue
                if child.pid in watched:
                    name, handle = watched[child.pid]
                    with contextlib.suppress(psutil.NoSuchProcess):
                        samples.setdefault(name, []).append(
                            (handle.cpu_percent(None), handle.memory_info().rss / 2**20)
                        )
    output = process.stdout.read()
    probe.close()
    if process.returncode != 0 or len(arrivals) < 10:
        raise RuntimeError(
            f"graph run failed ({process.returncode}, {len(arrivals)} track messages):\n{output[-3000:]}"
        )
    steady = arrivals[5:]
    span = steady[-1][0] - steady[0][0]
    latencies = [1000 * (arrived - stamp) for arrived, stamp in steady]
    return {
        "fps": (len(steady) - 1) / span if span > 0 else 0.0,
        "messages": len(arrivals),
        "latency_median_ms": statistics.median(latencies),
        "latency_p99_ms": float(np.percentile(latencies, 99)),
        "nodes": {n: (statistics.median(c for c, _ in v), max(m for _, m in v)) for n, v in samples.items() if v},
    }


def process_name(cmdline: list[str]) -> str | None:
    """'camera' ... 'uplink' for `-m privacy_vision.node_main NODE`, 'composed' for all nodes in one, 'ingest'."""
    if "privacy_vision.node_main" in cmdline:
        return cmdline[cmdline.index("privacy_vision.node_main") + 1]
    return "ingest" if "privacy_vision.cloud.ingest" in cmdline else None


# (label, capture, composed): the graph layouts measured beside the bare loop.
GRAPH_LAYOUTS = (
    ("graph, camera node", "camera", False),
    ("graph, in-process capture", "in_process", False),
    ("composed graph (one process), in-process capture", "in_process", True),
)


def selected_backends(labels: list[str]) -> list[tuple[str, str, str]]:
    return [row for row in SPEED_BACKENDS if row[0] in labels]


def speed_benchmark(report: list[str], labels: list[str], seconds: float, realtime_frames: int) -> None:
    report.append("## 4. Speed (each backend: three graph layouts, each right after its own bare loop, in one run)\n")
    report.append(
        "Bare loop: OpenCV reads and decodes vtest.avi and the same detector runs, in one loop (load: the 1-minute "
        "load average of the machine then). Graphs: the camera "
        f"(or the in-process capture) offers twice the bare rate (≤ 240 fps) for at least {seconds:g} s; latency: capture → "
        f"/tracks at the source's 10 fps ({realtime_frames} frames); CPU and RSS: the device's processes (the local ingest "
        "excluded), CPU flat out, RSS peak, summed over processes.\n"
    )
    report.append(
        "| backend | run | fps | ratio to bare | latency at 10 fps, median / p99 | CPU % (sum) | RSS MiB (sum) |"
    )
    report.append("|---|---|---:|---:|---:|---:|---:|")
    node_tables = []
    for label, backend, model in selected_backends(labels):
        print(f"[speed] {label}: bare loop vs " + ", ".join(layout for layout, _, _ in GRAPH_LAYOUTS), flush=True)
        # The bare loop runs right before each graph layout, so a ratio compares two runs minutes apart at most
        # on a machine whose load drifts; the load average at each bare run is reported beside it.
        for layout, capture, composed in GRAPH_LAYOUTS:
            bare_fps, bare_ms = bare_detector_fps(backend, model)
            load = os.getloadavg()[0]
            offered = min(240.0, 2 * bare_fps)
            flat_out = graph_run(offered, max(SPEED_FRAMES, int(seconds * offered)), backend, model, capture, composed)
            realtime = graph_run(10.0, realtime_frames, backend, model, capture, composed)
            device = {name: value for name, value in flat_out["nodes"].items() if name != "ingest"}
            print(
                f"  {layout}: {flat_out['fps']:.1f} fps (bare {bare_fps:.1f}), RSS {sum(m for _, m in device.values()):.0f} MiB",
                flush=True,
            )
            report.append(
                f"| {label} | bare loop ({bare_ms:.1f} ms/frame, load {load:.1f}) | {bare_fps:.1f} | 1.00 | - | - | - |"
            )
            report.append(
                f"| {label} | {layout} | {flat_out['fps']:.1f} | {flat_out['fps'] / bare_fps:.2f} | "
                f"{realtime['latency_median_ms']:.1f} / {realtime['latency_p99_ms']:.1f} ms | "
                f"{sum(c for c, _ in device.values()):.0f} | {sum(m for _, m in device.values()):.0f} |"
            )
            node_tables.append((f"{label}, {layout}", flat_out, realtime))
    for label, flat_out, realtime in node_tables:
        report.append(
            f"\nPer process, {label} (median CPU % of one core flat out and at 10 fps; peak resident memory):\n"
        )
        report.append("| process | CPU % flat out | CPU % at 10 fps | RSS MiB |\n|---|---:|---:|---:|")
        for name in (*NODE_NAMES, "composed", "ingest"):
            if name in flat_out["nodes"]:
                cpu, rss = flat_out["nodes"][name]
                slow = realtime["nodes"].get(name, (float("nan"), 0))[0]
                report.append(f"| {name} | {cpu:.0f} | {slow:.0f} | {rss:.0f} |")
    report.append("")


def write_plot(plots: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("tracker", "pets_counts") if k in plots]
    if not panels:
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.2), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        if panel == "tracker":
            names = list(plots["tracker"])
            values = np.array([plots["tracker"][n] for n in names])
            x = np.arange(3)
            for i, name in enumerate(names):
                axis.bar(x + i * 0.8 / len(names), values[i], width=0.8 / len(names), label=name)
            axis.set_xticks(x + 0.4 - 0.4 / len(names), ["MOTA", "IDF1", "HOTA"])
            axis.set_title("MOT15 public detections, 5 sequences (TrackEval)")
            axis.legend(fontsize=8)
        else:
            for name, counts in plots["pets_counts"].items():
                axis.plot(
                    np.arange(len(counts)) / PETS_FPS,
                    counts,
                    label=name,
                    linewidth=1.5 if name == "ground truth" else 1,
                )
            axis.set_xlabel("seconds into vtest.avi")
            axis.set_ylabel("people in frame")
            axis.set_title("PETS 2009 (YOLOX-nano): expected count vs annotated people")
            axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def latency_benchmark(report: list[str], labels: list[str], repeats: int, frames: int) -> None:
    report.append(f"## 5. Latency at the source's 10 fps, {repeats} repeats per layout ({frames} frames each)\n")
    report.append(
        "Capture stamp → /tracks arrival, median / p99 per run; the layouts alternate within each repeat, so drift in "
        "the machine's load falls on all of them.\n"
    )
    report.append("| backend | repeat | " + " | ".join(layout for layout, _, _ in GRAPH_LAYOUTS) + " |")
    report.append("|---|---:|" + "---:|" * len(GRAPH_LAYOUTS))
    for label, backend, model in selected_backends(labels):
        for repeat in range(1, repeats + 1):
            cells = []
            for layout, capture, composed in GRAPH_LAYOUTS:
                run = graph_run(10.0, frames, backend, model, capture, composed)
                cells.append(f"{run['latency_median_ms']:.1f} / {run['latency_p99_ms']:.1f} ms")
                print(f"[latency] {label}, {layout}, repeat {repeat}: {cells[-1]}", flush=True)
            report.append(f"| {label} | {repeat} | " + " | ".join(cells) + " |")
    report.append("")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_out")
    parser.add_argument("--parts", default="tracker,video,sizes,speed")
    parser.add_argument(
        "--speed-backends",
        default=",".join(label for label, _, _ in SPEED_BACKENDS),
        help="comma-separated labels of the speed rows to run",
    )
    parser.add_argument(
        "--speed-seconds", type=float, default=15.0, help="each flat-out graph run lasts at least this long"
    )
    parser.add_argument(
        "--speed-realtime-frames", type=int, default=300, help="frames of each run at the source's 10 fps (latency)"
    )
    parser.add_argument("--latency-repeats", type=int, default=3, help="repeats of each layout in the latency part")
    args = parser.parse_args()
    if not MOT15.is_dir():
        print(f"{MOT15} not found: the benchmarks need ../shared beside the repository", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = [
        "# privacy_vision perception benchmarks\n",
        f"Command: `.venv/bin/python bench/perception.py {' '.join(sys.argv[1:])}`\n",
    ]
    plots: dict = {}
    parts = args.parts.split(",")
    if "tracker" in parts:
        tracker_benchmark(report, plots)
    if "video" in parts or "sizes" in parts:
        import perception_video  # imports this module: loaded here, not at the top

        if "video" in parts:
            perception_video.video_benchmark(report, plots)
        if "sizes" in parts:
            perception_video.sizes_benchmark(report)
    if "speed" in parts:
        speed_benchmark(report, args.speed_backends.split(","), args.speed_seconds, args.speed_realtime_frames)
    if "latency" in parts:
        latency_benchmark(report, args.speed_backends.split(","), args.latency_repeats, args.speed_realtime_frames)
    write_plot(plots, out / "perception.png")
    (out / "perception.md").write_text("\n".join(report) + "\n")
    print("\n".join(report))
    print(f"\nreport written to {out / 'perception.md'} and {out / 'perception.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
